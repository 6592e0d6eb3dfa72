//! The guest's file system view, built inside its new mount namespace.
//!
//! The guest root is bind-mounted (nodev: device nodes in the guest tree are inert) and made
//! the root with pivot_root(".", ".") so no directory is needed in the guest tree and the old
//! root is detached at once. Only then are /proc, /sys and /dev mounted, by absolute paths that
//! can no longer resolve outside the guest root, whatever symlinks the guest planted.
//! Man pages: pivot_root(2), mount(2), proc(5), devpts in Documentation/filesystems/devpts.rst.

pub mod oci;
pub mod systemd;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

mod masks;
pub use masks::{
    apply_masks, masked_dirs, parse_mountinfo, verify_masks, MountEntry, MASKED_DIRS,
    PROC_MASKED_FILES, READONLY_PATHS,
};

/// Options of a guest's devpts: its own instance, and at most [`DEVPTS_MAX`] ptys, so that one
/// guest cannot take every pty of `kernel.pty.max` from the others (the host keeps
/// `kernel.pty.reserve` for its own instance).
pub const DEVPTS_OPTIONS: &str = "newinstance,ptmxmode=0666,mode=0620,gid=5,max=1024";
/// Most ptys one guest may hold at once (devpts `max=`).
pub const DEVPTS_MAX: u32 = 1024;

/// Character devices of a guest's /dev: (name, major, minor).
const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

pub(crate) fn m(
    src: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    mount(src, target, fstype, flags, data).map_err(|e| {
        format!(
            "mount {} on {target}: {e}",
            fstype.or(src).unwrap_or("bind")
        )
    })
}

/// Open a new pty master in the current mount namespace's devpts: `/dev/pts/ptmx`, resolved
/// without following any symlink (a guest's `/dev/ptmx` is its own to replace), opened
/// without blocking and checked to be the multiplexer (character device 5:2) of a devpts
/// file system (statfs(2) `DEVPTS_SUPER_MAGIC`); see pts(4). The fd is blocking on return.
///
/// Errors: a text naming what is missing or wrong.
pub(crate) fn open_ptmx() -> Result<OwnedFd, String> {
    use nix::fcntl::{fcntl, openat2, FcntlArg, OFlag, OpenHow, ResolveFlag};
    const DEVPTS_SUPER_MAGIC: i64 = 0x1cd1;
    let root = nix::fcntl::open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("open /: {e}"))?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(&root, "dev/pts/ptmx", how).map_err(|e| {
        format!("open /dev/pts/ptmx (a devpts at /dev/pts, no symlinks on the way): {e}")
    })?;
    let st = nix::sys::stat::fstat(&fd).map_err(|e| format!("stat /dev/pts/ptmx: {e}"))?;
    let fs = nix::sys::statfs::fstatfs(&fd).map_err(|e| format!("statfs /dev/pts/ptmx: {e}"))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR
        || nix::sys::stat::major(st.st_rdev) != 5
        || nix::sys::stat::minor(st.st_rdev) != 2
        || fs.filesystem_type().0 as i64 != DEVPTS_SUPER_MAGIC
    {
        return Err(String::from(
            "/dev/pts/ptmx is not the pty multiplexer of a devpts",
        ));
    }
    fcntl(&fd, FcntlArg::F_SETFL(OFlag::O_RDWR)).map_err(|e| format!("fcntl ptmx: {e}"))?;
    Ok(fd)
}

/// A new pty pair from the current mount namespace's devpts ([`open_ptmx`]): (master,
/// slave), both close-on-exec, the slave unlocked and opened from the master (TIOCGPTPEER,
/// never by a path; see ioctl_tty(2)).
///
/// Errors: a text naming the step and the OS error.
pub(crate) fn open_pty_pair() -> Result<(OwnedFd, OwnedFd), String> {
    use std::os::fd::FromRawFd;
    let master = open_ptmx()?;
    let mut unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK takes a pointer to int; master is a ptmx fd.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) } != 0 {
        return Err(format!("unlock the pty: {}", nix::errno::Errno::last()));
    }
    // SAFETY: TIOCGPTPEER on our master returns a new fd or -1.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(format!("open the pty peer: {}", nix::errno::Errno::last()));
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok((master, unsafe { OwnedFd::from_raw_fd(slave) }))
}

/// Make sure `p` is a directory (create it if missing) and not a symlink.
pub(crate) fn ensure_dir(p: &str) -> Result<(), String> {
    match std::fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => Err(format!(
            "{p} in the guest is not a directory (a symlink or file there is refused)"
        )),
        Err(_) => std::fs::create_dir(p).map_err(|e| format!("create {p} in the guest: {e}")),
    }
}

/// Bind `path` onto itself read-only, with every mount below it (a recursive clone made
/// read-only, nosuid, nodev and noexec by mount_setattr(2) with AT_RECURSIVE, then attached
/// over `path`); skipped when `path` does not exist. The result is checked in
/// /proc/self/mountinfo: the mount at `path` and each one under it must be read-only.
///
/// Errors: the path and the OS error of the failing step, or a mount left writable.
pub(crate) fn bind_readonly(path: &str) -> Result<(), String> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    // mountinfo names the resolved path.
    let real = std::fs::canonicalize(path)
        .map_err(|e| format!("resolve {path}: {e}"))?
        .to_string_lossy()
        .into_owned();
    let c = std::ffi::CString::new(real.as_str())
        .map_err(|_| format!("read-only path {path} contains NUL"))?;
    let tree = open_tree_clone(libc::AT_FDCWD, &c, libc::AT_RECURSIVE as libc::c_uint)
        .map_err(|e| format!("open_tree {path}: {e}"))?;
    set_tree_attrs(
        &tree,
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        None,
    )
    .map_err(|e| format!("make {path} read-only: {e}"))?;
    move_mount(&tree, &real)?;
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("read /proc/self/mountinfo to check {path}: {e}"))?;
    // The clone is the topmost mount at the path; it and its descendants must be read-only
    // (the hidden mount it covers, and that one's submounts, are still listed).
    let entries = masks::parse_mountinfo(&text);
    let Some(top) = entries.iter().rev().find(|e| e.mount_point == real) else {
        return Err(format!(
            "{path} has no mount of its own after the read-only bind"
        ));
    };
    let mut tree = vec![top];
    let mut i = 0;
    while i < tree.len() {
        let id = tree[i].id;
        tree.extend(entries.iter().filter(|e| e.parent == id && e.id != id));
        i += 1;
    }
    if let Some(w) = tree.iter().find(|e| !e.readonly()) {
        return Err(format!(
            "{} is still writable after the read-only bind of {path}",
            w.mount_point
        ));
    }
    Ok(())
}

/// True if the file system holding `path` is mounted read-only.
pub(crate) fn is_readonly(path: &str) -> bool {
    nix::sys::statvfs::statvfs(path)
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false)
}

/// The file systems the engine builds in every root, in the order [`enter_guest_root`] makes
/// them (an OCI config may give another: [`crate::context::OciExtras::engine_order`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineMount {
    /// A fresh procfs on /proc, with the LXCFS views over it.
    Proc,
    /// sysfs (or a read-only bind of the host's) on /sys.
    Sys,
    /// The minimal /dev: tmpfs, nodes, devpts, shm, mqueue, console.
    Dev,
}

/// The engine's own order of [`EngineMount`]s.
pub const ENGINE_ORDER: [EngineMount; 3] = [EngineMount::Proc, EngineMount::Sys, EngineMount::Dev];

/// In a fresh mount namespace: pivot into `root` and build /proc, /sys, /dev and the masks.
/// `console`, if given, is bind-mounted on /dev/console; `systemd`, for a guest whose init is
/// systemd, adds what it needs ([`systemd::mount_all`], with the notify socket's tree).
///
/// Errors: one line naming the step, the path and the OS error.
pub fn enter_guest_root(
    root: &Path,
    binds: &[BindMount],
    proc_views: &[BindMount],
    console: Option<&OwnedFd>,
    userns: Option<UsernsTrees>,
    oci: Option<&crate::context::OciExtras>,
    systemd: Option<(&systemd::SystemdMounts, Option<OwnedFd>)>,
) -> Result<(), String> {
    // An OCI container's binds come from host paths: detached while the host is visible.
    let oci_binds = match oci {
        Some(x) => oci::open_binds(&x.mounts, x.rootfs_slave)
            .map_err(|(i, e)| oci::field_error(x, i, e))?,
        None => Vec::new(),
    };
    let (root_tree, bind_fds) = match userns {
        Some(t) => (Some((t.root, t.root_dir)), t.binds),
        None => (
            None,
            binds.iter().map(open_bind).collect::<Result<Vec<_>, _>>()?,
        ),
    };
    if bind_fds.len() != binds.len() {
        return Err(format!(
            "{} bind mounts were prepared for {} configured",
            bind_fds.len(),
            binds.len()
        ));
    }
    let view_fds = proc_views
        .iter()
        .map(open_bind)
        .collect::<Result<Vec<_>, _>>()?;
    // The console lives on the host's devpts, which is gone after pivot_root: detach it now.
    let console_tree = match console {
        Some(c) => {
            // The fd names the mount of the host's namespace; clone it by path in ours.
            let path = std::fs::read_link(format!("/proc/self/fd/{}", c.as_raw_fd()))
                .map_err(|e| format!("find the console's path: {e}"))?;
            let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
                .map_err(|_| String::from("console path contains NUL"))?;
            Some(
                open_tree_clone(libc::AT_FDCWD, &cpath, 0)
                    .map_err(|e| format!("open_tree the console {}: {e}", path.display()))?,
            )
        }
        None => None,
    };
    let root_s = root
        .to_str()
        .ok_or_else(|| format!("guest root {} is not UTF-8", root.display()))?;
    // In a user namespace, proc and sysfs may only be mounted while instances of them that are
    // fully visible are still in the mount namespace (the host's, until pivot_root; see
    // mount_too_revealing in fs/namespace.c): they are made now and attached after
    // pivot_root. Device nodes cannot be made there (mknod needs CAP_MKNOD on the host): the
    // host's are bound instead.
    let early = match root_tree {
        Some(_) => Some(EarlyMounts::make()?),
        None => None,
    };
    let propagation = if oci.is_some_and(|x| x.rootfs_slave) {
        MsFlags::MS_SLAVE
    } else {
        MsFlags::MS_PRIVATE
    };
    m(None, "/", None, MsFlags::MS_REC | propagation, None)?;
    match &root_tree {
        // Made by the parent (host root): idmapped, or a plain copy of a shifted tree; nodev.
        // Attached on the root directory by descriptor (its path may not be searchable by
        // the guest's root), and entered through the tree's own descriptor.
        Some((tree, dir)) => {
            let dir = dir
                .as_ref()
                .ok_or_else(|| format!("{root_s} was not opened"))?;
            move_mount_fd(tree, dir).map_err(|e| format!("attach the guest root {root_s}: {e}"))?;
            nix::unistd::fchdir(tree).map_err(|e| format!("enter the guest root {root_s}: {e}"))?;
        }
        None => {
            m(
                Some(root_s),
                root_s,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            m(
                None,
                root_s,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NODEV,
                None,
            )?;
        }
    }
    if root_tree.is_none() {
        nix::unistd::chdir(root).map_err(|e| format!("chdir {root_s}: {e}"))?;
    }
    drop(root_tree);
    crate::testhook::pause("child-pre-pivot");
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root into {root_s}: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detach the host root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    // Bind targets are resolved here, with "/" the guest root: no symlink leads out of it.
    for (b, fd) in binds.iter().zip(&bind_fds) {
        attach_bind(fd, &b.target)?;
        if b.readonly && !is_readonly(&b.target) {
            return Err(format!("{} is writable after its read-only bind", b.target));
        }
    }
    drop(bind_fds);
    crate::testhook::pause("child-mounts");

    // /proc (with the views over it), /sys and /dev, in the order an OCI config lists them
    // (runtime-spec: mounts are made in order), else in this one.
    let order = oci
        .map(|x| x.engine_order.as_slice())
        .filter(|o| !o.is_empty())
        .unwrap_or(&ENGINE_ORDER);
    for which in order {
        match which {
            EngineMount::Proc => {
                ensure_dir("/proc")?;
                match &early {
                    Some(e) => move_mount(&e.proc, "/proc")?,
                    None => m(
                        Some("proc"),
                        "/proc",
                        Some("proc"),
                        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                        None,
                    )?,
                }
                // The guest's own view of memory, CPUs and load where LXCFS serves one: its
                // files replace the host-wide ones (each target is a file of the fresh procfs).
                for (b, fd) in proc_views.iter().zip(&view_fds) {
                    move_mount(fd, &b.target)?;
                }
                crate::testhook::pause("child-proc");
            }
            EngineMount::Sys => {
                ensure_dir("/sys")?;
                match &early {
                    Some(e) => {
                        move_mount(&e.sys, "/sys")?;
                        // The host's cgroup trees came with its /sys: hidden unless the config
                        // mounts the container's own there (as crun hides them).
                        if e.sys_is_host_bind && !oci.is_some_and(|x| x.cgroup_mount) {
                            m(
                                Some("tmpfs"),
                                "/sys/fs/cgroup",
                                Some("tmpfs"),
                                MsFlags::MS_RDONLY
                                    | MsFlags::MS_NOSUID
                                    | MsFlags::MS_NODEV
                                    | MsFlags::MS_NOEXEC,
                                Some("mode=555,size=4k"),
                            )?;
                        }
                    }
                    None => m(
                        Some("sysfs"),
                        "/sys",
                        Some("sysfs"),
                        MsFlags::MS_NOSUID
                            | MsFlags::MS_NODEV
                            | MsFlags::MS_NOEXEC
                            | MsFlags::MS_RDONLY,
                        None,
                    )?,
                }
            }
            EngineMount::Dev => {
                build_dev(
                    console_tree.as_ref(),
                    early.as_ref().map(|e| e.devices.as_slice()),
                )?;
                crate::testhook::pause("child-dev");
            }
        }
    }
    drop(view_fds);
    if let Some((s, notify)) = systemd {
        systemd::mount_all(s, notify)?;
    }
    if let Some(x) = oci {
        // Read before any mount of config.json can cover it.
        let cgroups = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("read /proc/self/cgroup: {e}"))?;
        oci::attach(&x.mounts, oci_binds).map_err(|(i, e)| oci::field_error(x, i, e))?;
        oci::make_devices(&x.devices)?;
        if x.cgroup_mount {
            oci::cgroup_mount(x.cgroupns, &cgroups)?;
        }
    }
    apply_masks()?;
    verify_masks()?;
    if let Some(x) = oci {
        oci::mask_paths(&x.masked, &x.readonly)?;
        if x.readonly_root {
            oci::readonly_root()?;
        }
        if let Some(recursive) = x.rootfs_unbindable {
            let rec = if recursive {
                MsFlags::MS_REC
            } else {
                MsFlags::empty()
            };
            m(None, "/", None, MsFlags::MS_UNBINDABLE | rec, None)?;
        }
    }
    Ok(())
}

/// chcontext: keep the host's tree, but give the new pid namespace its own /proc.
pub fn fresh_proc_only() -> Result<(), String> {
    m(None, "/", None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)?;
    m(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )
}

/// A minimal /dev on tmpfs: null zero full random urandom tty, devpts (newinstance) with ptmx,
/// shm, mqueue, the fd links and the console. `host_devices`, when given (a user namespace,
/// where mknod is refused), are detached copies of the host's nodes in [`DEVICES`] order,
/// bound onto empty files instead of making nodes.
fn build_dev(console: Option<&OwnedFd>, host_devices: Option<&[OwnedFd]>) -> Result<(), String> {
    ensure_dir("/dev")?;
    m(
        Some("tmpfs"),
        "/dev",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=755,size=1024k"),
    )?;
    // SAFETY: umask only changes this process's file creation mask.
    let old = unsafe { libc::umask(0) };
    for (i, (name, major, minor)) in DEVICES.iter().enumerate() {
        let p = format!("/dev/{name}");
        if let Some(devs) = host_devices {
            let tree = devs.get(i).ok_or_else(|| format!("no host node for {p}"))?;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o666)
                .open(&p)
                .map_err(|e| format!("create {p}: {e}"))?;
            move_mount(tree, &p)?;
            continue;
        }
        mknod(
            p.as_str(),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(*major, *minor),
        )
        .map_err(|e| format!("mknod {p}: {e}"))?;
    }
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    for d in ["/dev/pts", "/dev/shm", "/dev/mqueue"] {
        std::fs::create_dir(d).map_err(|e| format!("create {d}: {e}"))?;
    }
    m(
        Some("devpts"),
        "/dev/pts",
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(DEVPTS_OPTIONS),
    )?;
    m(
        Some("shm"),
        "/dev/shm",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;
    m(
        Some("mqueue"),
        "/dev/mqueue",
        Some("mqueue"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    for (link, target) in [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, link).map_err(|e| format!("symlink {link}: {e}"))?;
    }
    if let Some(tree) = console {
        std::fs::File::create("/dev/console").map_err(|e| format!("create /dev/console: {e}"))?;
        move_mount(tree, "/dev/console")?;
    }
    Ok(())
}

/// LXCFS's files that replace host-wide figures in a guest's /proc (lxcfs(1)). Not `stat`:
/// the kernel's own shifts `btime` by the guest's time namespace (its boot), LXCFS's copies
/// the host's, which made every START column of `ps` inside the host's boot time.
pub const LXCFS_PROC_FILES: &[&str] = &["meminfo", "cpuinfo", "swaps", "diskstats", "loadavg"];

/// Where LXCFS is mounted: the first `fuse.lxcfs` mount in `mounts_text` (the text of
/// /proc/self/mounts), without touching it (a stalled LXCFS blocks whoever stats its files).
pub fn lxcfs_mount(mounts_text: &str) -> Option<std::path::PathBuf> {
    mounts_text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == "fuse.lxcfs").then(|| std::path::PathBuf::from(f[1]))
    })
}

/// Where LXCFS is mounted, if it runs: [`lxcfs_mount`] when it serves `proc/meminfo`. The
/// check may block as long as LXCFS does: the engine asks [`probe_lxcfs`] instead.
pub fn lxcfs_dir(mounts_text: &str) -> Option<std::path::PathBuf> {
    lxcfs_mount(mounts_text).filter(|d| d.join("proc/meminfo").exists())
}

/// Which of [`LXCFS_PROC_FILES`] LXCFS at `dir` serves, asked by a child process that is
/// killed after `limit`: LXCFS is one daemon for every guest and the host, and any of them can
/// stall it (issue 16), so a start never waits on it longer than that. None when it did not
/// answer in time (or the child could not be made). Call single-threaded.
pub fn probe_lxcfs(dir: &Path, limit: std::time::Duration) -> Option<Vec<&'static str>> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
    // SAFETY: single-threaded (the caller's contract); the child only stats and exits.
    match unsafe { nix::unistd::fork() }.ok()? {
        nix::unistd::ForkResult::Child => {
            drop(r);
            crate::testhook::pause("lxcfs-probe");
            let answer: Vec<u8> = LXCFS_PROC_FILES
                .iter()
                .map(|f| {
                    if dir.join("proc").join(f).exists() {
                        b'1'
                    } else {
                        b'0'
                    }
                })
                .collect();
            let _ = nix::unistd::write(&w, &answer);
            // SAFETY: leave the forked child without the parent's atexit handlers.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(w);
            let deadline = std::time::Instant::now() + limit;
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            while got.len() < LXCFS_PROC_FILES.len() {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
                let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(&r), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => break,
                    Ok(_) => {}
                }
                match nix::unistd::read(&r, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            // A child stuck in a FUSE request dies on SIGKILL (the wait is killable).
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(child, None);
            (got.len() == LXCFS_PROC_FILES.len()).then(|| {
                LXCFS_PROC_FILES
                    .iter()
                    .zip(got)
                    .filter(|(_, b)| *b == b'1')
                    .map(|(f, _)| *f)
                    .collect()
            })
        }
    }
}

/// A host directory to bind into the guest: detached with open_tree(2) while the host tree is
/// still visible, attached with move_mount(2) after pivot_root, at a target resolved in-root.
pub struct BindMount {
    /// Absolute host path.
    pub source: std::path::PathBuf,
    /// Absolute path inside the guest.
    pub target: String,
    /// Read-only (also nosuid, nodev).
    pub readonly: bool,
}

/// open_tree(2) with OPEN_TREE_CLONE: a detached copy of the mount at `path` (relative to
/// `dirfd`; an empty path with AT_EMPTY_PATH means the file `dirfd` itself), made private
/// (every mount of the copy, by mount_setattr(2) `propagation = MS_PRIVATE`): a copy of a
/// shared host mount is otherwise a peer of it, so that mounts made below it inside a guest or
/// container would appear on the host (and stay there) and the host's would appear inside.
///
/// Errors: open_tree's or mount_setattr's errno.
pub(crate) fn open_tree_clone(
    dirfd: i32,
    path: &std::ffi::CStr,
    extra: libc::c_uint,
) -> Result<OwnedFd, nix::errno::Errno> {
    open_tree_clone_as(dirfd, path, extra, libc::MS_PRIVATE)
}

/// [`open_tree_clone`] with the propagation type of the copy: MS_PRIVATE, or MS_SLAVE (the
/// host's later mounts below the source appear in the copy, none made in it reach the host).
pub(crate) fn open_tree_clone_as(
    dirfd: i32,
    path: &std::ffi::CStr,
    extra: libc::c_uint,
    propagation: libc::c_ulong,
) -> Result<OwnedFd, nix::errno::Errno> {
    use std::os::fd::FromRawFd;
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
    // SAFETY: valid NUL-terminated path; returns a new fd we own or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            dirfd,
            path.as_ptr(),
            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | extra,
        )
    };
    if fd < 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: fd is a fresh mount fd owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    set_tree_propagation(&fd, propagation)?;
    Ok(fd)
}

/// mount_setattr(2) on every mount of the detached tree `fd`: propagation type `propagation`
/// (MS_PRIVATE, MS_SLAVE, MS_SHARED or MS_UNBINDABLE; mount_namespaces(7)).
pub(crate) fn set_tree_propagation(
    fd: &OwnedFd,
    propagation: libc::c_ulong,
) -> Result<(), nix::errno::Errno> {
    mount_setattr(fd, 0, 0, propagation, None, true)
}

/// mount_setattr(2) (the `struct mount_attr` of linux/mount.h) on the detached mount `fd`, or
/// on every mount of its tree when `recursive`: set `attr_set`, clear `attr_clr`, propagation
/// type `propagation` (0: unchanged), idmapped through `userns` when given.
fn mount_setattr(
    fd: &OwnedFd,
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns: Option<BorrowedFd<'_>>,
    recursive: bool,
) -> Result<(), nix::errno::Errno> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set,
        attr_clr,
        propagation,
        userns_fd: userns.map(|u| u.as_raw_fd() as u64).unwrap_or(0),
    };
    let flags = libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: empty path with AT_EMPTY_PATH targets the fd; attr is a valid mount_attr of the
    // size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    nix::errno::Errno::result(r).map(drop)
}

/// mount_setattr(2) attribute: read-only.
pub(crate) const MOUNT_ATTR_RDONLY: u64 = 1;
/// mount_setattr(2) attribute: set-user-ID bits and file capabilities ignored.
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 2;
/// mount_setattr(2) attribute: device nodes cannot be opened.
pub(crate) const MOUNT_ATTR_NODEV: u64 = 4;
/// mount_setattr(2) attribute: no program execution.
pub(crate) const MOUNT_ATTR_NOEXEC: u64 = 8;
/// mount_setattr(2) atime mode mask (relatime is 0 in it).
pub(crate) const MOUNT_ATTR_ATIME_MASK: u64 = 0x70;
/// mount_setattr(2) atime mode: never update access times.
pub(crate) const MOUNT_ATTR_NOATIME: u64 = 0x10;
/// mount_setattr(2) atime mode: always update access times.
pub(crate) const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
/// mount_setattr(2) attribute: no access times on directories.
pub(crate) const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
/// mount_setattr(2) attribute: symlinks are not followed in path resolution.
pub(crate) const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;
/// mount_setattr(2) attribute: owners mapped through the user namespace `userns_fd`.
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// mount_setattr(2) on every mount of the detached tree `fd`: set `attrs`, and idmap it through
/// the user namespace `userns` when given (Documentation/filesystems/idmappings.rst).
pub(crate) fn set_tree_attrs(
    fd: &OwnedFd,
    attrs: u64,
    userns: Option<BorrowedFd<'_>>,
) -> Result<(), nix::errno::Errno> {
    let idmap = if userns.is_some() {
        MOUNT_ATTR_IDMAP
    } else {
        0
    };
    mount_setattr(fd, attrs | idmap, 0, 0, userns, true)
}

/// Detach a recursive copy of `b.source` as a mount fd with its attributes set.
fn open_bind(b: &BindMount) -> Result<OwnedFd, String> {
    let src = std::ffi::CString::new(b.source.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("mount source {} contains NUL", b.source.display()))?;
    let fd = open_tree_clone(libc::AT_FDCWD, &src, libc::AT_RECURSIVE as libc::c_uint)
        .map_err(|e| format!("open_tree {}: {e}", b.source.display()))?;
    if b.readonly {
        set_tree_attrs(
            &fd,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            None,
        )
        .map_err(|e| format!("make {} read-only: {e}", b.source.display()))?;
    }
    Ok(fd)
}

/// A detached recursive copy of the mount tree at `path` (open_tree(2) `OPEN_TREE_CLONE |
/// AT_RECURSIVE`), made `nodev` and, when `readonly`, read-only and nosuid too; idmapped
/// through the user namespace `userns` when given (mount_setattr(2) `MOUNT_ATTR_IDMAP`, which
/// needs CAP_SYS_ADMIN on the host and a file system that supports it: ext4, xfs, btrfs,
/// tmpfs since Linux 6.3, overlayfs since 5.19). The caller attaches it with move_mount(2),
/// possibly in another mount namespace.
///
/// Errors: the path, the step and the OS error (EINVAL: the file system cannot be idmapped).
pub fn detached_tree(
    path: &Path,
    userns: Option<BorrowedFd<'_>>,
    nodev: bool,
    readonly: bool,
) -> Result<OwnedFd, String> {
    let src = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("mount source {} contains NUL", path.display()))?;
    let fd = open_tree_clone(libc::AT_FDCWD, &src, libc::AT_RECURSIVE as libc::c_uint)
        .map_err(|e| format!("open_tree {}: {e}", path.display()))?;
    let mut attrs = if nodev { MOUNT_ATTR_NODEV } else { 0 };
    if readonly {
        attrs |= MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    }
    if attrs != 0 || userns.is_some() {
        set_tree_attrs(&fd, attrs, userns).map_err(|e| {
            if userns.is_some() {
                format!("idmapped mount of {}: {e}", path.display())
            } else {
                format!("set mount attributes of {}: {e}", path.display())
            }
        })?;
    }
    Ok(fd)
}

/// The detached mounts a guest in its own user namespace gets from its parent (host root):
/// its root (idmapped, or a plain copy of a tree shifted on disk) and one tree per
/// [`BindMount`], in order.
pub struct UsernsTrees {
    /// The guest root, nodev.
    pub root: OwnedFd,
    /// The bind mounts' sources.
    pub binds: Vec<OwnedFd>,
    /// The guest root directory in the child's mount namespace (`O_PATH`), where the root
    /// tree is attached; opened by the child while it still has the host's uid.
    pub root_dir: Option<OwnedFd>,
}

/// Mounts a user-namespace guest makes before pivot_root (see [`enter_guest_root`]).
struct EarlyMounts {
    proc: OwnedFd,
    sys: OwnedFd,
    /// `sys` is a bind of the host's /sys (sysfs could not be made: no network namespace of
    /// its own), which brings the host's cgroup mounts along.
    sys_is_host_bind: bool,
    devices: Vec<OwnedFd>,
}

impl EarlyMounts {
    fn make() -> Result<EarlyMounts, String> {
        let proc = new_fs_mount(
            "proc",
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        )?;
        let ro = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
        // sysfs needs the network namespace to be owned by the user namespace: a container
        // that keeps the host's network namespace gets a read-only recursive bind of the
        // host's /sys instead, as runc gives it (the masks go over it as over a sysfs).
        let (sys, sys_is_host_bind) = match new_fs_mount("sysfs", ro) {
            Ok(fd) => (fd, false),
            Err(e) if e.contains("EPERM") => {
                let fd = open_tree_clone(libc::AT_FDCWD, c"/sys", libc::AT_RECURSIVE as u32)
                    .map_err(|b| format!("{e}; bind the host's /sys instead: {b}"))?;
                change_mount_attrs(&fd, ro, 0, true)
                    .map_err(|b| format!("make the bind of the host's /sys read-only: {b}"))?;
                (fd, true)
            }
            Err(e) => return Err(e),
        };
        let devices = DEVICES
            .iter()
            .map(|(name, _, _)| {
                let p = std::ffi::CString::new(format!("/dev/{name}"))
                    .map_err(|_| String::from("device name contains NUL"))?;
                open_tree_clone(libc::AT_FDCWD, &p, 0)
                    .map_err(|e| format!("open_tree the host's /dev/{name}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EarlyMounts {
            proc,
            sys,
            sys_is_host_bind,
            devices,
        })
    }
}

/// A new, detached instance of file system `fstype` (fsopen(2), fsconfig(2)
/// `FSCONFIG_CMD_CREATE`, fsmount(2)) with mount attributes `attrs` (`MOUNT_ATTR_*`).
///
/// Errors: the step and the OS error.
fn new_fs_mount(fstype: &str, attrs: u64) -> Result<OwnedFd, String> {
    use std::os::fd::FromRawFd;
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    let name = std::ffi::CString::new(fstype).map_err(|_| String::from("fs type contains NUL"))?;
    // SAFETY: valid C string; returns a new fd we own or -1.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) };
    if fs < 0 {
        return Err(format!("fsopen {fstype}: {}", nix::errno::Errno::last()));
    }
    // SAFETY: fs is a fresh fd owned by nobody else.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as i32) };
    // SAFETY: FSCONFIG_CMD_CREATE takes no key or value.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if r < 0 {
        return Err(format!(
            "create a {fstype} instance: {}",
            nix::errno::Errno::last()
        ));
    }
    // SAFETY: plain syscall on our fs context fd; returns a new mount fd or -1.
    let mnt = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) };
    if mnt < 0 {
        return Err(format!("fsmount {fstype}: {}", nix::errno::Errno::last()));
    }
    // SAFETY: a fresh mount fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(mnt as i32) })
}

/// mount_setattr(2): set the `MOUNT_ATTR_*` bits `attr_set` on the (detached) mount `fd`, on
/// every mount below it too when `recursive`.
fn set_mount_attr(fd: &OwnedFd, attr_set: u64, recursive: bool) -> Result<(), nix::errno::Errno> {
    change_mount_attrs(fd, attr_set, 0, recursive)
}

/// mount_setattr(2): set the `MOUNT_ATTR_*` bits `attr_set` and clear `attr_clr` on the mount
/// `fd`, on every mount below it too when `recursive`. An atime mode (`MOUNT_ATTR_NOATIME`,
/// `MOUNT_ATTR_STRICTATIME`, relatime = 0) replaces the mount's when `attr_clr` holds
/// `MOUNT_ATTR__ATIME`.
///
/// Errors: the OS error (EPERM for a flag locked by a user namespace).
pub(crate) fn change_mount_attrs(
    fd: &OwnedFd,
    attr_set: u64,
    attr_clr: u64,
    recursive: bool,
) -> Result<(), nix::errno::Errno> {
    mount_setattr(fd, attr_set, attr_clr, 0, None, recursive)
}

/// Attach a detached mount at `target` (resolved in the current root), creating it as a
/// directory when missing.
fn attach_bind(fd: &OwnedFd, target: &str) -> Result<(), String> {
    ensure_dir(target)?;
    move_mount(fd, target)
}

/// move_mount(2) of the detached tree `fd` onto the directory or file `dir` (both by
/// descriptor).
pub(crate) fn move_mount_fd(fd: &OwnedFd, dir: &OwnedFd) -> Result<(), nix::errno::Errno> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    // SAFETY: both fds are valid; empty C strings with the EMPTY_PATH flags name the fds.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd.as_raw_fd(),
            c"".as_ptr(),
            dir.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(())
}

pub(crate) fn move_mount(fd: &OwnedFd, target: &str) -> Result<(), String> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    let t = std::ffi::CString::new(target)
        .map_err(|_| format!("mount target {target} contains NUL"))?;
    // SAFETY: fd is a detached mount; both paths are valid C strings.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(format!(
            "attach the mount at {target} in the guest: {}",
            nix::errno::Errno::last()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lxcfs_mount_is_found_only_when_it_serves_meminfo() {
        let dir = std::env::temp_dir().join(format!("lxcfs-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("proc")).unwrap();
        let mounts = format!(
            "proc /proc proc rw 0 0\nlxcfs {} fuse.lxcfs rw 0 0\n",
            dir.display()
        );
        assert_eq!(lxcfs_dir(&mounts), None, "no meminfo yet");
        std::fs::write(dir.join("proc/meminfo"), "MemTotal: 1 kB\n").unwrap();
        assert_eq!(lxcfs_dir(&mounts), Some(dir.clone()));
        assert_eq!(lxcfs_dir("proc /proc proc rw 0 0\n"), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
