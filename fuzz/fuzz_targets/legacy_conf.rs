//! util-vserver's NAME.conf (a shell-assignment file) as hostile input: the line lexer and the
//! whole reader never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        let _ = libvserver::config::legacy::shell_assignment(line);
    }
    // The reader takes a path: a file of this process's own in /dev/shm.
    let dir = std::env::temp_dir().join(format!("vserver-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let p = dir.join("g.conf");
    if std::fs::write(&p, text).is_ok() {
        let _ = libvserver::config::legacy::load_conf_with_root(&p, "g", &dir.join("none"));
    }
});
