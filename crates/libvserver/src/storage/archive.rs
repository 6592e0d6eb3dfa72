//! `vserver NAME export FILE|-` and `vserver NAME import FILE|-`: a guest as one stream, to
//! back it up or move it between hosts (`vserver web1 export - | ssh other vserver web1 import -`).
//!
//! The stream is a POSIX (pax) tar compressed with zstd, made and read by GNU tar(1) and
//! zstd(1): first the member `vserver-export.toml` (the guest's NAME.toml without its host
//! path), then the guest's files under `root/`, with owners as numbers, modes, hardlinks,
//! sparse files, device nodes, xattrs, POSIX ACLs and file capabilities (`security.capability`).
//! A template guest or disk-image guest is exported with its files as the guest sees them,
//! and imported as a guest with a plain root.
//!
//! Import extracts into a staging directory beside the new root (only the two expected
//! members; GNU tar refuses names with `..` and absolute names, and defers symlinks that could
//! lead out), reads the config, then renames the tree into place: a failed import leaves
//! nothing behind.

use super::fs as sfs;
use super::progress::Progress;
use crate::config::{self, GuestConfig};
use crate::guest::state::GuestLock;
use crate::guest::Guest;
use crate::paths::{validate_guest_name, Paths};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The name of the config member of an export stream.
pub const CONFIG_MEMBER: &str = "vserver-export.toml";

/// `trusted.*` attributes are the host's own (vserver's userns marker, overlayfs's): never
/// carried in or out of a stream.
const TAR_COMMON: &[&str] = &[
    "--xattrs",
    "--xattrs-include=*",
    "--xattrs-exclude=trusted.*",
    "--acls",
    "--numeric-owner",
];

/// Copy everything from `from` to `to`, reporting bytes to `progress`.
fn pump(
    from: &mut dyn Read,
    to: &mut dyn Write,
    progress: &mut dyn Progress,
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..k])?;
        n += k as u64;
        progress.update(n, "");
    }
    to.flush()?;
    Ok(n)
}

/// The first bytes of an export stream, enough to hold its config member (at most 1 MiB; less
/// when the stream ends first or a read fails, which the pump after it reports).
fn read_head(from: &mut dyn Read) -> Vec<u8> {
    const HEAD: usize = 1 << 20;
    let mut head = vec![0u8; HEAD];
    let mut n = 0;
    while n < HEAD {
        match from.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                // A config is small: stop once the first member is whole.
                if config_in_head(&head[..n]).is_some() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    head.truncate(n);
    head
}

/// The text of the stream's config member when it is the first member and wholly in `head`
/// (tar(5), PAX headers included).
fn config_in_head(head: &[u8]) -> Option<String> {
    let mut ar = tar::Archive::new(std::io::Cursor::new(head));
    let mut first = ar.entries().ok()?.next()?.ok()?;
    if first.path().ok()?.as_os_str() != CONFIG_MEMBER || first.size() > 1 << 19 {
        return None;
    }
    let mut text = String::new();
    first.read_to_string(&mut text).ok()?;
    (text.len() as u64 == first.size()).then_some(text)
}

fn stderr_of(c: &mut std::process::Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = c.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s.lines()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Write guest `g` as an export stream to `out` (a file path, or None for standard output).
/// A running guest is copied live (with a warning line); a stopped one is locked against
/// starts while it is read.
///
/// Errors: tar or zstd failed (their messages are included), the output cannot be written.
/// A failed export to a file removes the partial file.
pub fn export(g: &Guest, out: Option<&Path>, progress: &mut dyn Progress) -> Result<u64, String> {
    let rd = g.run_dir();
    let lock = GuestLock::acquire(&rd).map_err(|e| format!("lock: {e}"))?;
    let _lock = if g.running().is_some() {
        progress.line(&format!(
            "warning: {} is running; files written during the export may be caught half-way",
            g.name
        ));
        drop(lock);
        None
    } else {
        Some(lock)
    };
    let root = g.root();
    let _mount = super::overlay::MountGuard::mount(&g.config, &g.paths, &root)?;
    let mut cfg = g.config.clone();
    cfg.root = None;
    cfg.disk.template = None;
    // A scratch directory only root can reach (not the shared /tmp); those of exports that
    // were killed go first.
    if let Ok(entries) = std::fs::read_dir(rd.file("")) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = n
                .strip_prefix("export-")
                .and_then(|p| p.parse::<i32>().ok())
            {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let meta = rd.file(&format!("export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&meta);
    std::fs::create_dir(&meta).map_err(|e| format!("create {}: {e}", meta.display()))?;
    let cleanup_meta = scopeguard(meta.clone());
    std::fs::write(meta.join(CONFIG_MEMBER), cfg.to_toml(&g.name))
        .map_err(|e| format!("write {}: {e}", meta.join(CONFIG_MEMBER).display()))?;
    let partial = out.map(|p| PathBuf::from(format!("{}.partial", p.display())));
    let sink: Stdio = match &partial {
        // 0600: a whole guest tree (its /etc/shadow, its keys) is not for every host user.
        Some(p) => {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(p)
                .map_err(|e| format!("create {}: {e}", p.display()))?
                .into()
        }
        None => Stdio::inherit(),
    };
    let result = (|| -> Result<u64, String> {
        let mut tar = Command::new("tar")
            .args([
                "--create",
                "--file=-",
                "--format=posix",
                "--sparse",
                "--one-file-system",
            ])
            .args(TAR_COMMON)
            .arg("-C")
            .arg(&meta)
            .arg(CONFIG_MEMBER)
            .arg("-C")
            .arg(&root)
            .args([
                "--transform=s,^\\./,root/,S",
                "--transform=s,^\\.$,root,S",
                ".",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("run tar: {e}"))?;
        let mut zstd = Command::new("zstd")
            .args(["-q", "-T0", "-c"])
            .stdin(Stdio::piped())
            .stdout(sink)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("run zstd: {e}"))?;
        progress.begin("export", Some(sfs::tree_size(&root).0), "bytes");
        let mut from = tar.stdout.take().expect("piped");
        let mut to = zstd.stdin.take().expect("piped");
        let pumped = pump(&mut from, &mut to, progress);
        drop(to);
        progress.end();
        let tar_err = stderr_of(&mut tar);
        let tst = tar.wait().map_err(|e| format!("wait tar: {e}"))?;
        let zerr = stderr_of(&mut zstd);
        let zst = zstd.wait().map_err(|e| format!("wait zstd: {e}"))?;
        let n = pumped.map_err(|e| format!("write the stream: {e}"))?;
        if !tst.success() {
            return Err(format!(
                "tar of {} failed ({tst}): {tar_err}",
                root.display()
            ));
        }
        if !zst.success() {
            return Err(format!("zstd failed ({zst}): {zerr}"));
        }
        Ok(n)
    })();
    drop(cleanup_meta);
    match (&result, &partial, out) {
        (Ok(_), Some(p), Some(o)) => std::fs::rename(p, o)
            .map_err(|e| format!("rename {} to {}: {e}", p.display(), o.display()))?,
        (Err(_), Some(p), _) => {
            let _ = std::fs::remove_file(p);
        }
        _ => {}
    }
    result
}

/// Removes a scratch directory on drop.
struct ScopeGuard(PathBuf);

fn scopeguard(p: PathBuf) -> ScopeGuard {
    ScopeGuard(p)
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Options of an import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The new guest's name.
    pub name: String,
    /// The stream: a file, or None for standard input.
    pub input: Option<PathBuf>,
    /// Take the lowest free context id when the stream's is used here.
    pub renumber: bool,
    /// Use this context id.
    pub context: Option<u32>,
    /// Guest root; default ROOTBASE/NAME.
    pub root: Option<PathBuf>,
    /// Keep what the stream's config grants on this host ([`untrusted_config`]): for streams
    /// from one's own hosts.
    pub trust_config: bool,
}

/// Make guest `o.name` from an export stream. Returns its config (as written to NAME.toml).
///
/// Errors: the name or root exists, the stream's context id is in use (without `renumber`
/// or `context`), the stream is not an export (names the missing member), tar or zstd failed,
/// the config in the stream is invalid (names the key). Nothing is left behind on error.
pub fn import(
    paths: &Paths,
    o: &ImportOptions,
    progress: &mut dyn Progress,
) -> Result<GuestConfig, String> {
    validate_guest_name(&o.name)?;
    for p in [
        paths.config_file(&o.name),
        paths.config_dir.join(format!("{}.conf", o.name)),
        paths.config_dir.join(&o.name),
    ] {
        if std::fs::symlink_metadata(&p).is_ok() {
            return Err(format!(
                "guest {} exists already ({}); import under another name",
                o.name,
                p.display()
            ));
        }
    }
    let root = o
        .root
        .clone()
        .unwrap_or_else(|| paths.default_root(&o.name));
    if !root.is_absolute() {
        return Err(format!("root {} must be an absolute path", root.display()));
    }
    if std::fs::symlink_metadata(&root).is_ok() {
        return Err(format!("{} exists already", root.display()));
    }
    if let Some(x) = o.context {
        check_context_free(paths, &o.name, x)?;
    }
    if let Some(other) = super::manage::other_guest_at(paths, &o.name, &root) {
        return Err(format!(
            "{} is (or is in, or holds) the root of guest {other}",
            root.display()
        ));
    }
    let parent = root.parent().unwrap_or(Path::new("/")).to_path_buf();
    super::build::make_root_parent(paths, &parent, progress)?;
    std::fs::create_dir_all(&paths.config_dir)
        .map_err(|e| format!("create {}: {e}", paths.config_dir.display()))?;
    let stage = parent.join(format!(".{}.import-{}", o.name, std::process::id()));
    std::fs::create_dir(&stage).map_err(|e| format!("create {}: {e}", stage.display()))?;
    let _ = std::fs::set_permissions(
        &stage,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700),
    );
    let r = import_staged(paths, o, &root, &stage, progress);
    let _ = sfs::remove_tree(&stage.join("root"));
    let _ = std::fs::remove_dir_all(&stage);
    r
}

/// Remove from `cfg` what an untrusted stream must not decide on this host: host bind mounts,
/// added capabilities, network interfaces and forwarded host ports, start-group marks and
/// dependencies, rlimits (which can raise limits), restarts on halt or reboot, a stop timeout
/// above the default, and priorities above the default (negative nice, best-effort I/O above
/// level 4, CPU and I/O weights above 100). Other limits, dropped capabilities, host name and
/// init stay. Returns one description per removed key.
pub fn untrusted_config(cfg: &mut GuestConfig) -> Vec<String> {
    let mut d = Vec::new();
    if !cfg.mount.is_empty() {
        let m: Vec<String> = cfg
            .mount
            .iter()
            .map(|m| format!("{}:{}", m.source.display(), m.target.display()))
            .collect();
        d.push(format!("mount {}", m.join(", ")));
        cfg.mount.clear();
    }
    if !cfg.capabilities.add.is_empty() {
        d.push(format!(
            "capabilities.add {}",
            cfg.capabilities.add.join(", ")
        ));
        cfg.capabilities.add.clear();
    }
    if !cfg.seccomp.allow.is_empty() {
        d.push(format!("seccomp.allow {}", cfg.seccomp.allow.join(", ")));
        cfg.seccomp.allow.clear();
    }
    if !cfg.interface.is_empty() {
        let a: Vec<String> = cfg
            .interface
            .iter()
            .flat_map(|i| i.address.0.iter().cloned())
            .collect();
        d.push(format!("interface ({})", a.join(", ")));
        cfg.interface.clear();
    }
    if !cfg.forward.is_empty() {
        let f: Vec<String> = cfg
            .forward
            .iter()
            .map(|f| format!("{}:{}/{}", f.host_port, f.guest_port, f.protocol))
            .collect();
        d.push(format!("forward {}", f.join(", ")));
        cfg.forward.clear();
    }
    if !cfg.mark.is_empty() {
        d.push(format!("mark {}", cfg.mark.join(", ")));
        cfg.mark.clear();
    }
    if !cfg.depends.is_empty() {
        d.push(format!("depends {}", cfg.depends.join(", ")));
        cfg.depends.clear();
    }
    if !cfg.rlimits.is_empty() {
        let r: Vec<String> = cfg.rlimits.keys().cloned().collect();
        d.push(format!("rlimits {}", r.join(", ")));
        cfg.rlimits.clear();
    }
    let defaults = crate::config::StopConfig::default();
    if cfg.stop.on_reboot != defaults.on_reboot || cfg.stop.on_halt != defaults.on_halt {
        d.push(String::from("stop.on_reboot/on_halt"));
        cfg.stop.on_reboot = defaults.on_reboot;
        cfg.stop.on_halt = defaults.on_halt;
    }
    // What would hold a stop (and its lock) longer than the default.
    let longest = defaults.kill_timeout_secs(cfg.init.style == crate::config::InitStyle::Systemd);
    if let Some(t) = cfg.stop.kill_timeout.filter(|t| *t > longest) {
        d.push(format!("stop.kill_timeout {t}"));
        cfg.stop.kill_timeout = None;
    }
    // Priorities above the host's defaults: a negative nice, best-effort I/O above the
    // default level 4, CPU and I/O weights above the default 100.
    let l = &mut cfg.limits;
    if l.nice.is_some_and(|n| n < 0) {
        d.push(format!("limits.nice {}", l.nice.unwrap_or(0)));
        l.nice = None;
    }
    if let Some(v) = l.ionice.as_deref() {
        if crate::config::parse_ionice(v).is_ok_and(|p| p >> 13 == 2 && p & 7 < 4) {
            d.push(format!("limits.ionice {v}"));
            l.ionice = None;
        }
    }
    for (name, w) in [
        ("cpu_weight", &mut l.cpu_weight),
        ("io_weight", &mut l.io_weight),
    ] {
        if w.is_some_and(|v| v > 100) {
            d.push(format!("limits.{name} {}", w.unwrap_or(0)));
            *w = None;
        }
    }
    d
}

fn check_context_free(paths: &Paths, name: &str, x: u32) -> Result<(), String> {
    if !(config::XID_MIN..=config::XID_MAX_STATIC).contains(&x) {
        return Err(format!(
            "context {x} is out of range {}-{}",
            config::XID_MIN,
            config::XID_MAX_STATIC
        ));
    }
    for (other, p) in crate::guest::configured_guests(paths) {
        if other != name
            && config::load_guest_config(&p)
                .map(|c| c.context == x)
                .unwrap_or(false)
        {
            return Err(format!(
                "context {x} is used by guest {other} ({})",
                p.display()
            ));
        }
    }
    Ok(())
}

fn import_staged(
    paths: &Paths,
    o: &ImportOptions,
    root: &Path,
    stage: &Path,
    progress: &mut dyn Progress,
) -> Result<GuestConfig, String> {
    let sroot = stage.join("root");
    if sfs::fs_kind(stage) == Ok(sfs::FsKind::Btrfs) {
        sfs::create_subvolume(&sroot)?;
    } else {
        std::fs::create_dir(&sroot).map_err(|e| format!("create {}: {e}", sroot.display()))?;
    }
    let mut zstd = Command::new("zstd");
    zstd.args(["-q", "-d", "-c"]);
    match &o.input {
        Some(f) => {
            if !f.is_file() {
                return Err(format!("{} is not a file", f.display()));
            }
            zstd.arg("--").arg(f);
        }
        None => {
            zstd.stdin(Stdio::inherit());
        }
    }
    let mut zstd = zstd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run zstd: {e}"))?;
    let mut tar = Command::new("tar")
        .args([
            "--extract",
            "--file=-",
            "--same-owner",
            "--same-permissions",
            "--delay-directory-restore",
        ])
        .args(TAR_COMMON)
        .arg("-C")
        .arg(stage)
        .args([CONFIG_MEMBER, "root"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run tar: {e}"))?;
    progress.begin("import", None, "bytes");
    let mut from = zstd.stdout.take().expect("piped");
    let mut to = tar.stdin.take().expect("piped");
    // The config comes first in an export: a context clash is refused before the rest of a
    // large stream is read.
    let head = read_head(&mut from);
    if let Some(text) = config_in_head(&head) {
        if let Ok(cfg) = config::parse_guest_config(Path::new(CONFIG_MEMBER), &text) {
            if o.context.is_none() && !o.renumber {
                if let Err(m) = check_context_free(paths, &o.name, cfg.context) {
                    drop(to);
                    drop(from);
                    let _ = zstd.kill();
                    let _ = tar.kill();
                    let _ = zstd.wait();
                    let _ = tar.wait();
                    progress.end();
                    return Err(format!("{m}; give --renumber or --context N"));
                }
            }
        }
    }
    let pumped = to
        .write_all(&head)
        .and_then(|()| pump(&mut from, &mut to, progress).map(|n| n + head.len() as u64));
    drop(to);
    drop(from);
    progress.end();
    let zerr = stderr_of(&mut zstd);
    let zst = zstd.wait().map_err(|e| format!("wait zstd: {e}"))?;
    let terr = stderr_of(&mut tar);
    let tst = tar.wait().map_err(|e| format!("wait tar: {e}"))?;
    if !zst.success() {
        return Err(format!("the stream is not zstd data ({zst}): {zerr}"));
    }
    if !tst.success() {
        return Err(format!(
            "tar could not unpack the stream ({tst}): {terr} (an export of vserver holds \
             {CONFIG_MEMBER} and root/)"
        ));
    }
    pumped.map_err(|e| format!("read the stream: {e}"))?;
    // The stream may have replaced the root directory by a symlink (to a host directory).
    if !std::fs::symlink_metadata(&sroot)
        .map(|m| m.is_dir())
        .unwrap_or(false)
    {
        return Err(String::from(
            "the stream's root/ is not a directory; not an export of vserver",
        ));
    }
    let cfg_file = stage.join(CONFIG_MEMBER);
    if !std::fs::symlink_metadata(&cfg_file)
        .map(|m| m.is_file())
        .unwrap_or(false)
    {
        return Err(format!(
            "the stream's {CONFIG_MEMBER} is not a regular file; not an export of vserver"
        ));
    }
    let mut cfg = config::load_guest_config(&cfg_file).map_err(|e| e.to_string())?;
    // Reserved until NAME.toml is written (the end of this function): a parallel build or
    // import never gets the same id.
    let reservation = match o.context {
        Some(x) => super::build::reserve_xid(paths, &o.name, Some(x))?,
        None => match check_context_free(paths, &o.name, cfg.context)
            .and_then(|()| super::build::reserve_xid(paths, &o.name, Some(cfg.context)))
        {
            Ok(r) => r,
            Err(_) if o.renumber => super::build::reserve_xid(paths, &o.name, None)?,
            Err(m) => return Err(format!("{m}; give --renumber or --context N")),
        },
    };
    let xid = reservation.xid;
    if xid != cfg.context {
        progress.line(&format!("context {} -> {xid}", cfg.context));
    }
    cfg.context = xid;
    cfg.root = o.root.clone();
    cfg.disk.template = None;
    if let Some(sz) = cfg.disk.size.take() {
        progress.line(&format!(
            "warning: the guest had a disk quota of {sz} ({}); it is imported as a plain \
             directory without one",
            cfg.disk.backend.unwrap_or_default()
        ));
        cfg.disk.inodes = None;
        cfg.disk.backend = None;
    }
    if o.trust_config {
        // What the stream's config grants on this host: said, so the administrator can check it.
        for m in &cfg.mount {
            progress.line(&format!(
                "warning: the imported config bind-mounts the host's {} on {} in the guest{}",
                m.source.display(),
                m.target.display(),
                if m.readonly {
                    " (read-only)"
                } else {
                    " (writable)"
                }
            ));
        }
        if !cfg.capabilities.add.is_empty() {
            progress.line(&format!(
                "warning: the imported config adds capabilities: {}",
                cfg.capabilities.add.join(", ")
            ));
        }
        if !cfg.seccomp.allow.is_empty() {
            progress.line(&format!(
                "warning: the imported config allows system calls: {}",
                cfg.seccomp.allow.join(", ")
            ));
        }
    } else {
        let dropped = untrusted_config(&mut cfg);
        if !dropped.is_empty() {
            progress.line(&format!(
                "left out of the stream's config (what it would grant on this host; check it and \
                 import with --trust-config to keep it, or set it in NAME.toml): {}",
                dropped.join("; ")
            ));
        }
    }
    cfg.validate().map_err(|fe| {
        format!(
            "{}: {}: {}",
            CONFIG_MEMBER,
            config::key_path_string(&fe.path),
            fe.message
        )
    })?;
    std::fs::rename(&sroot, root)
        .map_err(|e| format!("move {} to {}: {e}", sroot.display(), root.display()))?;
    let cfg_path = paths.config_file(&o.name);
    // Whole or absent (fsync'd, renamed), under the guest's config lock.
    let written = paths
        .lock_config(&o.name)
        .and_then(|_lock| crate::paths::write_atomically(&cfg_path, &cfg.to_toml(&o.name)));
    if let Err(e) = written {
        let _ = std::fs::rename(root, &sroot);
        return Err(format!("write {}: {e}", cfg_path.display()));
    }
    Ok(cfg)
}
