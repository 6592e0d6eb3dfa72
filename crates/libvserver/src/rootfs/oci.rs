//! The mounts and device nodes of an OCI `config.json` beyond the /proc, /sys and /dev the
//! engine builds for every container. Bind sources are host paths: they are detached with
//! open_tree(2) before pivot_root; every target is resolved and created after pivot_root, where
//! no path leads out of the root (as for guests' binds). Options follow mount(8)'s words.

use super::{is_readonly, m};
use nix::mount::MsFlags;
use std::os::fd::OwnedFd;

/// One mount of config.json, already sorted into a bind or a new file system.
#[derive(Debug, Clone, PartialEq)]
pub enum SpecMount {
    /// A host file or directory bound in.
    Bind {
        /// Absolute host path.
        source: String,
        /// Absolute path inside.
        target: String,
        /// `rbind`: with the mounts below the source.
        recursive: bool,
        /// mount_setattr(2) MOUNT_ATTR_* bits set on the top mount only (`ro`, `nosuid`,
        /// `nodev`, `noexec`, `nosymfollow`, `nodiratime`, an atime mode), as mount(8) and runc
        /// apply them to a bind: the mounts below an `rbind` keep theirs.
        attrs: u64,
        /// MOUNT_ATTR_* bits the words cleared (`rw`, `suid`, `dev`, `exec` ...; the atime
        /// mask when an atime mode is set): they undo an earlier word; on the mount only the
        /// atime mask is cleared (a read-only source stays read-only, as with runc).
        clear: u64,
        /// Bits set on the top mount and every mount below it (`rro`, `rnosuid` ...: the
        /// recursive words of mount(8) and the runtime spec).
        rattrs: u64,
        /// Bits cleared on every mount of the tree (`rrw`, `rsuid` ...).
        rclear: u64,
    },
    /// A new file system (`tmpfs`, `mqueue`, ...).
    Fs {
        /// File system type.
        fstype: String,
        /// Source (device or name).
        source: String,
        /// Absolute path inside.
        target: String,
        /// mount(2) flags.
        flags: u64,
        /// Options that are not flags (`mode=755,size=65536k`).
        data: String,
    },
}

impl SpecMount {
    /// The path inside the container.
    pub fn target(&self) -> &str {
        match self {
            SpecMount::Bind { target, .. } | SpecMount::Fs { target, .. } => target,
        }
    }
}

/// A device node of `linux.devices`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceNode {
    /// Absolute path under /dev.
    pub path: String,
    /// S_IFCHR, S_IFBLK or S_IFIFO.
    pub kind: libc::mode_t,
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// mount(8) option words that are flags: (word, flag, set (true) or clear).
const FLAG_WORDS: &[(&str, MsFlags, bool)] = &[
    ("ro", MsFlags::MS_RDONLY, true),
    ("rw", MsFlags::MS_RDONLY, false),
    ("nosuid", MsFlags::MS_NOSUID, true),
    ("suid", MsFlags::MS_NOSUID, false),
    ("nodev", MsFlags::MS_NODEV, true),
    ("dev", MsFlags::MS_NODEV, false),
    ("noexec", MsFlags::MS_NOEXEC, true),
    ("exec", MsFlags::MS_NOEXEC, false),
    ("sync", MsFlags::MS_SYNCHRONOUS, true),
    ("async", MsFlags::MS_SYNCHRONOUS, false),
    ("dirsync", MsFlags::MS_DIRSYNC, true),
    ("noatime", MsFlags::MS_NOATIME, true),
    ("atime", MsFlags::MS_NOATIME, false),
    ("nodiratime", MsFlags::MS_NODIRATIME, true),
    ("diratime", MsFlags::MS_NODIRATIME, false),
    ("relatime", MsFlags::MS_RELATIME, true),
    ("norelatime", MsFlags::MS_RELATIME, false),
    ("strictatime", MsFlags::MS_STRICTATIME, true),
    ("nostrictatime", MsFlags::MS_STRICTATIME, false),
    ("mand", MsFlags::MS_MANDLOCK, true),
    ("nomand", MsFlags::MS_MANDLOCK, false),
    ("lazytime", MsFlags::MS_LAZYTIME, true),
    ("nolazytime", MsFlags::MS_LAZYTIME, false),
    ("iversion", MsFlags::MS_I_VERSION, true),
    ("noiversion", MsFlags::MS_I_VERSION, false),
    ("silent", MsFlags::MS_SILENT, true),
    ("loud", MsFlags::MS_SILENT, false),
    // mount(8)'s "rw,suid,dev,exec,auto,nouser,async": nothing to set on a new mount.
    ("defaults", MsFlags::empty(), true),
];

/// Words runc knows that mean nothing for a mount made anew here: ignored (not passed to the
/// file system as data, which would refuse them).
const IGNORED_WORDS: &[&str] = &["remount", "auto", "noauto", "user", "nouser", "nofail"];

/// mount(8) option words of a bind that set or clear a mount attribute: (word, set, clear).
/// Each also has a recursive form, `r` + word (`rro`, `rnosuid`).
const ATTR_WORDS: &[(&str, u64, u64)] = {
    use super::{
        MOUNT_ATTR_ATIME_MASK as AT, MOUNT_ATTR_NODEV as DEV, MOUNT_ATTR_NODIRATIME as DIRA,
        MOUNT_ATTR_NOEXEC as EX, MOUNT_ATTR_NOSUID as SUID, MOUNT_ATTR_NOSYMFOLLOW as SYM,
        MOUNT_ATTR_RDONLY as RO,
    };
    &[
        ("ro", RO, 0),
        ("rw", 0, RO),
        ("nosuid", SUID, 0),
        ("suid", 0, SUID),
        ("nodev", DEV, 0),
        ("dev", 0, DEV),
        ("noexec", EX, 0),
        ("exec", 0, EX),
        ("nosymfollow", SYM, 0),
        ("symfollow", 0, SYM),
        ("nodiratime", DIRA, 0),
        ("diratime", 0, DIRA),
        ("noatime", super::MOUNT_ATTR_NOATIME, AT),
        ("relatime", 0, AT),
        ("strictatime", super::MOUNT_ATTR_STRICTATIME, AT),
    ]
};

/// Propagation words: accepted and ignored (every bind is a private copy, or a slave of its
/// source when `linux.rootfsPropagation` is slave/rslave; never shared with the host).
const PROPAGATION_WORDS: &[&str] = &[
    "private",
    "rprivate",
    "slave",
    "rslave",
    "shared",
    "rshared",
    "unbindable",
    "runbindable",
];

/// Sort one config.json mount (`kind` as given, `options` mount(8) words) into a
/// [`SpecMount`]. On a bind, the flag words apply to its top mount and their recursive forms
/// (`rro`, `rnosuid` ...) to every mount of it; other words (`mode=755`, `size=`) mean
/// nothing to a bind and are ignored, as runc ignores them.
///
/// Errors: `tmpcopyup` (not supported).
pub fn parse_mount(
    kind: &str,
    source: &str,
    target: &str,
    options: &[String],
) -> Result<SpecMount, String> {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    let mut bind = kind == "bind";
    let mut recursive = false;
    let (mut attrs, mut clear, mut rattrs, mut rclear) = (0u64, 0u64, 0u64, 0u64);
    let attr_word = |w: &str| ATTR_WORDS.iter().find(|(x, _, _)| *x == w);
    for o in options {
        if o == "bind" {
            bind = true;
        } else if o == "rbind" {
            bind = true;
            recursive = true;
        } else if PROPAGATION_WORDS.contains(&o.as_str()) || IGNORED_WORDS.contains(&o.as_str()) {
            continue;
        } else if o == "tmpcopyup" {
            return Err(String::from(
                "'tmpcopyup' (copying the directory's files into a new tmpfs) is not supported",
            ));
        } else if let Some((_, set, clr)) = o.strip_prefix('r').and_then(attr_word) {
            // Recursive attribute words: only a bind has mounts below it.
            rattrs = (rattrs & !clr) | set;
            rclear = (rclear & !set) | clr;
            continue;
        }
        if let Some((_, set, clr)) = attr_word(o) {
            attrs = (attrs & !clr) | set;
            clear = (clear & !set) | clr;
        }
        if let Some((_, f, on)) = FLAG_WORDS.iter().find(|(w, _, _)| w == o) {
            if *on {
                flags |= *f;
            } else {
                flags &= !*f;
            }
        } else if !["bind", "rbind"].contains(&o.as_str())
            && !PROPAGATION_WORDS.contains(&o.as_str())
        {
            data.push(o.clone());
        }
    }
    if bind {
        return Ok(SpecMount::Bind {
            source: source.to_string(),
            target: target.to_string(),
            recursive,
            attrs,
            clear,
            rattrs,
            rclear,
        });
    }
    // Recursive attribute words mean nothing to a new file system (it has no mounts below
    // it yet): ignored, as runc ignores them.
    let _ = (rattrs, rclear);
    Ok(SpecMount::Fs {
        fstype: kind.to_string(),
        source: if source.is_empty() { kind } else { source }.to_string(),
        target: target.to_string(),
        flags: flags.bits(),
        data: data.join(","),
    })
}

/// Before pivot_root: detach the source of every bind (None for other mounts), with its
/// attributes set, as a private copy, or a slave of the source when `slave`
/// (`rootfsPropagation` `slave`/`rslave`): never a peer of a shared host mount, so that nothing
/// mounted in the container reaches the host.
///
/// Errors: the source path and the OS error.
pub fn open_binds(
    mounts: &[SpecMount],
    slave: bool,
) -> Result<Vec<Option<OwnedFd>>, (usize, String)> {
    mounts
        .iter()
        .enumerate()
        .map(|(i, mnt)| -> Result<Option<OwnedFd>, (usize, String)> {
            open_bind(mnt, slave).map_err(|e| (i, e))
        })
        .collect()
}

/// `error` of the `i`th mount of `x`, prefixed with its config field (`mounts[3]`).
pub fn field_error(x: &crate::context::OciExtras, i: usize, error: String) -> String {
    match x.mount_fields.get(i) {
        Some(f) => format!("{f}: {error}"),
        None => error,
    }
}

fn open_bind(mnt: &SpecMount, slave: bool) -> Result<Option<OwnedFd>, String> {
    let SpecMount::Bind {
        source,
        recursive,
        attrs,
        clear,
        rattrs,
        rclear,
        ..
    } = mnt
    else {
        return Ok(None);
    };
    let c = std::ffi::CString::new(source.as_str())
        .map_err(|_| format!("bind source {source} contains NUL"))?;
    let extra = if *recursive {
        libc::AT_RECURSIVE as libc::c_uint
    } else {
        0
    };
    let propagation = if slave {
        libc::MS_SLAVE
    } else {
        libc::MS_PRIVATE
    };
    let fd = super::open_tree_clone_as(libc::AT_FDCWD, &c, extra, propagation)
        .map_err(|e| format!("open_tree {source}: {e}"))?;
    // The whole tree first, then the top mount (`rbind,rro,nosuid`: everything read-only,
    // the top nosuid too).
    if *rattrs | *rclear != 0 {
        super::change_mount_attrs(&fd, *rattrs, *rclear, true)
            .map_err(|e| format!("set the attributes of the mounts of {source}: {e}"))?;
    }
    // Plain clearing words (`rw`, `suid`, `dev`, `exec`) only undo an earlier word of the same
    // list: a bind of a read-only host mount stays read-only, as with runc. An atime mode
    // replaces the mount's.
    let top_clear = clear & super::MOUNT_ATTR_ATIME_MASK;
    if *attrs | top_clear != 0 {
        super::change_mount_attrs(&fd, *attrs, top_clear, false)
            .map_err(|e| format!("set the attributes of the bind of {source}: {e}"))?;
    }
    Ok(Some(fd))
}

/// Resolve `target` (absolute, inside the container; after pivot_root) by descriptor, one
/// component at a time, each opened `O_PATH | O_NOFOLLOW` below the one before: a symlink
/// anywhere is refused, never followed, so a volume a sibling container shares cannot swap a
/// component for a symlink between a check and the mount. Missing directories are made with
/// mkdirat(2), a missing file (`is_dir` false) with openat(2) `O_CREAT | O_EXCL`. A target on
/// procfs (but the files LXCFS replaces) or sysfs is refused. Returns an `O_PATH` descriptor
/// of the target, to mount on.
///
/// Errors: the component, what it is, and the OS error.
fn open_target(target: &str, is_dir: bool) -> Result<OwnedFd, String> {
    use nix::errno::Errno;
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::Mode;
    let dir_flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut cur = nix::fcntl::open("/", dir_flags, Mode::empty())
        .map_err(|e| format!("open / in the container: {e}"))?;
    let comps: Vec<&str> = target.split('/').filter(|c| !c.is_empty()).collect();
    let mut path = String::new();
    for (i, c) in comps.iter().enumerate() {
        path.push('/');
        path.push_str(c);
        if *c == ".." || *c == "." {
            return Err(format!("{target}: '{c}' in a mount target"));
        }
        let last = i + 1 == comps.len();
        if last && !is_dir {
            let file = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let fd = match openat(&cur, *c, file, Mode::empty()) {
                Err(Errno::ENOENT) => {
                    let made = openat(
                        &cur,
                        *c,
                        OFlag::O_WRONLY
                            | OFlag::O_CREAT
                            | OFlag::O_EXCL
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o644),
                    )
                    .map_err(|e| format!("create {path} in the container: {e}"))?;
                    drop(made);
                    openat(&cur, *c, file, Mode::empty())
                }
                other => other,
            }
            .map_err(|e| format!("open {path} in the container: {e}"))?;
            let st = nix::sys::stat::fstat(&fd).map_err(|e| format!("stat {path}: {e}"))?;
            let kind = st.st_mode & libc::S_IFMT;
            if kind == libc::S_IFLNK || kind == libc::S_IFDIR {
                return Err(format!(
                    "{path} in the container is a symlink or directory, not a file"
                ));
            }
            cur = fd;
            break;
        }
        let next = match openat(&cur, *c, dir_flags, Mode::empty()) {
            Err(Errno::ENOENT) => {
                nix::sys::stat::mkdirat(&cur, *c, Mode::from_bits_truncate(0o755))
                    .or_else(|e| if e == Errno::EEXIST { Ok(()) } else { Err(e) })
                    .map_err(|e| format!("create {path} in the container: {e}"))?;
                openat(&cur, *c, dir_flags, Mode::empty())
            }
            other => other,
        }
        .map_err(|e| match e {
            Errno::ENOTDIR | Errno::ELOOP => {
                format!("{path} in the container is a symlink or not a directory (refused)")
            }
            e => format!("open {path} in the container: {e}"),
        })?;
        cur = next;
    }
    use nix::sys::statfs::{PROC_SUPER_MAGIC, SYSFS_MAGIC};
    let fs = nix::sys::statfs::fstatfs(&cur)
        .map_err(|e| format!("statfs {target}: {e}"))?
        .filesystem_type();
    let proc_ok = crate::oci::check::PROC_MOUNT_ALLOWED.contains(&path.as_str());
    if (fs == PROC_SUPER_MAGIC && !proc_ok) || fs == SYSFS_MAGIC {
        return Err(format!(
            "{target} resolves onto /proc or /sys, where nothing of config.json is mounted"
        ));
    }
    Ok(cur)
}

/// After pivot_root (and the engine's /proc, /sys, /dev): attach every mount in order, at
/// targets resolved inside the root. `binds` is [`open_binds`]'s result.
///
/// Errors: the step, the path and the OS error.
pub fn attach(mounts: &[SpecMount], binds: Vec<Option<OwnedFd>>) -> Result<(), (usize, String)> {
    for (i, (mnt, fd)) in mounts.iter().zip(binds).enumerate() {
        attach_one(mnt, fd).map_err(|e| (i, e))?;
    }
    Ok(())
}

fn attach_one(mnt: &SpecMount, fd: Option<OwnedFd>) -> Result<(), String> {
    match (mnt, fd) {
        (
            SpecMount::Bind {
                target,
                attrs,
                rattrs,
                ..
            },
            Some(fd),
        ) => {
            let is_dir = nix::sys::stat::fstat(&fd)
                .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                .unwrap_or(true);
            let at = open_target(target, is_dir)?;
            super::move_mount_fd(&fd, &at)
                .map_err(|e| format!("attach the mount at {target} in the container: {e}"))?;
            let ro = nix::sys::statvfs::fstatvfs(&fd)
                .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
                .unwrap_or(false);
            if (attrs | rattrs) & super::MOUNT_ATTR_RDONLY != 0 && !ro {
                return Err(format!("{target} is writable after its read-only bind"));
            }
        }
        (
            SpecMount::Fs {
                fstype,
                source,
                target,
                flags,
                data,
            },
            _,
        ) => {
            let at = open_target(target, true)?;
            // mount(2) on the descriptor (its /proc/self/fd link), not on the path again.
            use std::os::fd::AsRawFd;
            let by_fd = format!("/proc/self/fd/{}", at.as_raw_fd());
            nix::mount::mount(
                Some(source.as_str()),
                by_fd.as_str(),
                Some(fstype.as_str()),
                MsFlags::from_bits_truncate(*flags),
                (!data.is_empty()).then_some(data.as_str()),
            )
            .map_err(|e| format!("mount {fstype} on {target}: {e}"))?;
        }
        (SpecMount::Bind { target, .. }, None) => {
            return Err(format!("no detached source for the bind on {target}"));
        }
    }
    Ok(())
}

/// Create the device nodes of `linux.devices` (after /dev is built), each by descriptor: its
/// directory resolved as mount targets are (no symlink followed), whatever is there unlinked
/// (a directory is refused), the node made with exactly `mode` (umask cleared), then opened
/// without following and checked to be the node just made before it is given its owner.
///
/// Errors: the path and the OS error.
pub fn make_devices(devices: &[DeviceNode]) -> Result<(), String> {
    use nix::errno::Errno;
    use std::os::fd::AsRawFd;
    for d in devices {
        let (parent, name) = d
            .path
            .rsplit_once('/')
            .ok_or_else(|| format!("device path {} is not absolute", d.path))?;
        if name.is_empty() || name == "." || name == ".." {
            return Err(format!("device path {} names no file", d.path));
        }
        let dir = open_target(if parent.is_empty() { "/" } else { parent }, true)?;
        let c = std::ffi::CString::new(name)
            .map_err(|_| format!("device path {} contains NUL", d.path))?;
        // SAFETY: a valid C string relative to a directory fd we own.
        if unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) } != 0 {
            let e = Errno::last();
            if e != Errno::ENOENT {
                return Err(format!("replace {} in the container: {e}", d.path));
            }
        }
        let dev = libc::makedev(d.major as u32, d.minor as u32);
        // The setup process is single-threaded: the umask is ours alone to clear.
        // SAFETY: plain syscalls with integer arguments and a valid C string.
        let r = unsafe {
            let old = libc::umask(0);
            let r = libc::mknodat(dir.as_raw_fd(), c.as_ptr(), d.kind | (d.mode & 0o7777), dev);
            libc::umask(old);
            r
        };
        if r != 0 {
            return Err(format!("mknod {}: {}", d.path, Errno::last()));
        }
        let node = nix::fcntl::openat(
            &dir,
            name,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| format!("open {} in the container: {e}", d.path))?;
        let st = nix::sys::stat::fstat(&node).map_err(|e| format!("stat {}: {e}", d.path))?;
        if st.st_mode & libc::S_IFMT != d.kind || (d.kind != libc::S_IFIFO && st.st_rdev != dev) {
            return Err(format!(
                "{} in the container was replaced while it was made",
                d.path
            ));
        }
        // SAFETY: an O_PATH fd we own, the empty path with AT_EMPTY_PATH.
        if unsafe {
            libc::fchownat(
                node.as_raw_fd(),
                c"".as_ptr(),
                d.uid,
                d.gid,
                libc::AT_EMPTY_PATH,
            )
        } != 0
        {
            return Err(format!("chown {}: {}", d.path, Errno::last()));
        }
    }
    Ok(())
}

/// Remount the root read-only (bind remount keeps its other flags: nodev).
///
/// Errors: the OS error.
pub fn readonly_root() -> Result<(), String> {
    m(
        None,
        "/",
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
        None,
    )?;
    if !is_readonly("/") {
        return Err(String::from(
            "the root is still writable after the read-only remount",
        ));
    }
    Ok(())
}

/// The container's cgroups on /sys/fs/cgroup, read-only, as the host lays them out: cgroup
/// v2 alone on a v2 host; on a v1 or hybrid host a tmpfs holding one cgroup v1 mount per
/// hierarchy (symlinks for co-mounted controllers, as `cpu` -> `cpu,cpuacct`) and the v2 one
/// at `unified`, as runc does. `text` is /proc/self/cgroup, read from the fresh procfs before
/// any mount of config.json was made, which lists the hierarchies. Each shows the
/// container's own cgroup as its root: with a cgroup namespace (`own_ns`) that is what a new
/// mount shows, without one the container's directory is cut out of the new mount and put in
/// its place, so that the host's other cgroups stay out of sight (runc binds it likewise).
///
/// Errors: the mount and the OS error.
pub fn cgroup_mount(own_ns: bool, text: &str) -> Result<(), String> {
    let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // (controllers, path) per hierarchy: "" names cgroup v2.
    let entries: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.splitn(3, ':').collect();
            (f.len() == 3).then(|| (f[1].to_string(), f[2].to_string()))
        })
        .collect();
    let own = |ctl: &str| -> Result<(), String> {
        let target = if ctl.is_empty() {
            if entries.iter().any(|(c, _)| !c.is_empty()) {
                String::from("/sys/fs/cgroup/unified")
            } else {
                String::from("/sys/fs/cgroup")
            }
        } else {
            format!("/sys/fs/cgroup/{}", ctl.trim_start_matches("name="))
        };
        let path = entries
            .iter()
            .find(|(c, _)| c == ctl)
            .map(|(_, p)| p.as_str())
            .unwrap_or("/");
        if own_ns {
            Ok(())
        } else {
            only_subtree(&target, path)
        }
    };
    let v1: Vec<String> = entries
        .iter()
        .filter(|(c, _)| !c.is_empty())
        .map(|(c, _)| c.clone())
        .collect();
    let v2 = entries.iter().any(|(c, _)| c.is_empty());
    if !std::fs::symlink_metadata("/sys/fs/cgroup").is_ok_and(|m| m.is_dir()) {
        return Err(String::from("/sys/fs/cgroup is missing in the fresh sysfs"));
    }
    if v1.is_empty() {
        if v2 {
            if let Err(e) = m(Some("cgroup2"), "/sys/fs/cgroup", Some("cgroup2"), ro, None) {
                // The host's /sys bound in (a user namespace without a network namespace of
                // its own) brings the host's cgroup2 mount there, and the kernel refuses the
                // same file system twice on one mount point: cover it first.
                if !e.contains("EBUSY") {
                    return Err(e);
                }
                m(
                    Some("tmpfs"),
                    "/sys/fs/cgroup",
                    Some("tmpfs"),
                    ro,
                    Some("mode=755,size=4k"),
                )?;
                m(Some("cgroup2"), "/sys/fs/cgroup", Some("cgroup2"), ro, None)?;
            }
            own("")?;
        }
        return Ok(());
    }
    m(
        Some("tmpfs"),
        "/sys/fs/cgroup",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755,size=64k"),
    )?;
    for ctl in &v1 {
        let dir = ctl.trim_start_matches("name=");
        let target = format!("/sys/fs/cgroup/{dir}");
        std::fs::create_dir(&target).map_err(|e| format!("create {target}: {e}"))?;
        let opts = if ctl.starts_with("name=") {
            format!("none,{ctl}")
        } else {
            ctl.clone()
        };
        m(Some("cgroup"), &target, Some("cgroup"), ro, Some(&opts))?;
        own(ctl)?;
        if dir.contains(',') {
            for part in dir.split(',') {
                let link = format!("/sys/fs/cgroup/{part}");
                if std::fs::symlink_metadata(&link).is_err() {
                    std::os::unix::fs::symlink(dir, &link)
                        .map_err(|e| format!("symlink {link}: {e}"))?;
                }
            }
        }
    }
    if v2 {
        std::fs::create_dir("/sys/fs/cgroup/unified")
            .map_err(|e| format!("create /sys/fs/cgroup/unified: {e}"))?;
        m(
            Some("cgroup2"),
            "/sys/fs/cgroup/unified",
            Some("cgroup2"),
            ro,
            None,
        )?;
        own("")?;
    }
    m(
        None,
        "/sys/fs/cgroup",
        None,
        MsFlags::MS_REMOUNT | ro,
        Some("mode=755,size=64k"),
    )
}

/// Replace the cgroup mount at `target` by its directory `path` (a path of
/// /proc/self/cgroup, absolute in that hierarchy): opened below the mount without following
/// anything out of it, cloned, the whole mount detached, the clone attached in its place.
fn only_subtree(target: &str, path: &str) -> Result<(), String> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return Ok(());
    }
    let top = nix::fcntl::open(
        target,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("open {target}: {e}"))?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    let dir = openat2(&top, rel, how).map_err(|e| format!("open {target}/{rel}: {e}"))?;
    let tree = super::open_tree_clone(
        std::os::fd::AsRawFd::as_raw_fd(&dir),
        c"",
        libc::AT_EMPTY_PATH as libc::c_uint,
    )
    .map_err(|e| format!("clone {target}/{rel}: {e}"))?;
    drop((dir, top));
    nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| format!("detach {target}: {e}"))?;
    super::move_mount(&tree, target)
}

/// config.json's `maskedPaths` (a file gets /dev/null bound on it, a directory an empty
/// read-only tmpfs) and `readonlyPaths` (bound read-only onto themselves), beyond the
/// engine's own lists; missing paths are skipped; every result is checked.
///
/// Errors: the path and the OS error, or a mask that did not take.
pub fn mask_paths(masked: &[String], readonly: &[String]) -> Result<(), String> {
    // What the engine masked for every container already ([`super::apply_masks`]) is not
    // mounted over a second time (one mountinfo entry each, as with runc).
    let dirs = super::masks::masked_dirs(std::path::Path::new("/sys"));
    let engine_masked = |p: &str| {
        let p = p.trim_end_matches('/');
        super::masks::PROC_MASKED_FILES.contains(&p) || dirs.iter().any(|d| d == p)
    };
    let engine_readonly = |p: &str| super::masks::READONLY_PATHS.contains(&p.trim_end_matches('/'));
    for p in masked {
        if engine_masked(p) {
            continue;
        }
        let Ok(md) = std::fs::symlink_metadata(p) else {
            continue;
        };
        if md.is_dir() {
            m(
                Some("tmpfs"),
                p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0,nr_inodes=1"),
            )?;
            if !is_readonly(p) {
                return Err(format!("{p} is still writable after masking"));
            }
        } else {
            m(Some("/dev/null"), p, None, MsFlags::MS_BIND, None)?;
            let ok = std::fs::metadata(p)
                .map(|md| {
                    use std::os::unix::fs::FileTypeExt;
                    md.file_type().is_char_device()
                })
                .unwrap_or(false);
            if !ok {
                return Err(format!("{p} is not masked"));
            }
        }
    }
    for p in readonly {
        if engine_readonly(p) || engine_masked(p) {
            continue;
        }
        super::bind_readonly(p)?;
        if std::fs::symlink_metadata(p).is_ok() && !is_readonly(p) {
            return Err(format!("{p} is still writable after the read-only bind"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options_become_flags_data_or_bind_attributes() {
        let t = parse_mount(
            "tmpfs",
            "tmpfs",
            "/run",
            &s(&["nosuid", "mode=755", "size=1m"]),
        )
        .unwrap();
        assert_eq!(
            t,
            SpecMount::Fs {
                fstype: "tmpfs".into(),
                source: "tmpfs".into(),
                target: "/run".into(),
                flags: MsFlags::MS_NOSUID.bits(),
                data: "mode=755,size=1m".into()
            }
        );
        let b = parse_mount(
            "none",
            "/src",
            "/dst",
            &s(&["rbind", "ro", "nosuid", "rprivate"]),
        )
        .unwrap();
        use crate::rootfs::{MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};
        assert_eq!(
            b,
            SpecMount::Bind {
                source: "/src".into(),
                target: "/dst".into(),
                recursive: true,
                attrs: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID,
                clear: 0,
                rattrs: 0,
                rclear: 0,
            }
        );
        // Recursive words reach every mount; a later word undoes an earlier one; data
        // options mean nothing to a bind.
        let r = parse_mount(
            "bind",
            "/a",
            "/b",
            &s(&["rbind", "rro", "rnodev", "rw", "mode=755", "rdev"]),
        )
        .unwrap();
        assert_eq!(
            r,
            SpecMount::Bind {
                source: "/a".into(),
                target: "/b".into(),
                recursive: true,
                attrs: 0,
                clear: MOUNT_ATTR_RDONLY,
                rattrs: MOUNT_ATTR_RDONLY,
                rclear: MOUNT_ATTR_NODEV,
            }
        );
        // On a new file system: recursive words and mount(8)'s no-ops are ignored, not data.
        let t = parse_mount("tmpfs", "tmpfs", "/b", &s(&["rro", "defaults", "lazytime"])).unwrap();
        assert!(
            matches!(t, SpecMount::Fs { ref data, .. } if data.is_empty()),
            "{t:?}"
        );
        assert!(parse_mount("tmpfs", "tmpfs", "/b", &s(&["tmpcopyup"])).is_err());
    }
}
