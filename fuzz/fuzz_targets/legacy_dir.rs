//! util-vserver's per-guest directory layout (/etc/vservers/NAME/: context, uts/nodename,
//! interfaces/N/ip, flags, bcapabilities, ...) as hostile input. The input describes a tree:
//! records `path NUL content NUL`; paths are made relative and kept inside a private
//! directory. The reader never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("vserver-fuzz-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let mut parts = data.split(|b| *b == 0);
    while let (Some(path), Some(content)) = (parts.next(), parts.next()) {
        let Ok(path) = std::str::from_utf8(path) else {
            continue;
        };
        // Only plain relative components: the fuzzer must not write outside its directory.
        let comps: Vec<&str> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != "." && *c != "..")
            .take(4)
            .collect();
        if comps.is_empty() {
            continue;
        }
        let p = comps.iter().fold(dir.clone(), |p, c| p.join(c));
        if let Some(parent) = p.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = std::fs::write(&p, content);
    }
    let _ = libvserver::config::legacy::load_dir(&dir, "g");
});
