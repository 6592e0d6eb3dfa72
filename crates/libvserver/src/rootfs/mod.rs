//! The guest's file system view, built inside its new mount namespace.
//!
//! The guest root is bind-mounted (nodev: device nodes in the guest tree are inert) and made
//! the root with pivot_root(".", ".") so no directory is needed in the guest tree and the old
//! root is detached at once. Only then are /proc, /sys and /dev mounted, by absolute paths that
//! can no longer resolve outside the guest root, whatever symlinks the guest planted.
//! Man pages: pivot_root(2), mount(2), proc(5), devpts in Documentation/filesystems/devpts.rst.

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use std::os::fd::{AsRawFd, OwnedFd};
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

fn m(
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

/// Make sure `p` is a directory (create it if missing) and not a symlink.
fn ensure_dir(p: &str) -> Result<(), String> {
    match std::fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => Err(format!(
            "{p} in the guest is not a directory (a symlink or file there is refused)"
        )),
        Err(_) => std::fs::create_dir(p).map_err(|e| format!("create {p} in the guest: {e}")),
    }
}

/// True if the file system holding `path` is mounted read-only.
fn is_readonly(path: &str) -> bool {
    nix::sys::statvfs::statvfs(path)
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false)
}

/// In a fresh mount namespace: pivot into `root` and build /proc, /sys, /dev and the masks.
/// `console`, if given, is bind-mounted on /dev/console.
///
/// Errors: one line naming the step, the path and the OS error.
pub fn enter_guest_root(
    root: &Path,
    binds: &[BindMount],
    proc_views: &[BindMount],
    console: Option<&OwnedFd>,
) -> Result<(), String> {
    let bind_fds = binds.iter().map(open_bind).collect::<Result<Vec<_>, _>>()?;
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
    m(None, "/", None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)?;
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
    nix::unistd::chdir(root).map_err(|e| format!("chdir {root_s}: {e}"))?;
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

    ensure_dir("/proc")?;
    m(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    // The guest's own view of memory, CPUs and load where LXCFS serves one: its files replace
    // the host-wide ones (each target is a file of the fresh procfs).
    for (b, fd) in proc_views.iter().zip(&view_fds) {
        move_mount(fd, &b.target)?;
    }
    drop(view_fds);
    crate::testhook::pause("child-proc");
    ensure_dir("/sys")?;
    m(
        Some("sysfs"),
        "/sys",
        Some("sysfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
        None,
    )?;
    build_dev(console_tree.as_ref())?;
    crate::testhook::pause("child-dev");
    apply_masks()?;
    verify_masks()
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
/// shm, mqueue, the fd links and the console.
fn build_dev(console: Option<&OwnedFd>) -> Result<(), String> {
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
    for (name, major, minor) in DEVICES {
        let p = format!("/dev/{name}");
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

/// LXCFS's files that replace host-wide figures in a guest's /proc (lxcfs(1)).
pub const LXCFS_PROC_FILES: &[&str] = &[
    "meminfo",
    "cpuinfo",
    "stat",
    "swaps",
    "diskstats",
    "loadavg",
];

/// Where LXCFS is mounted, if it runs: the first `fuse.lxcfs` mount in `mounts_text`
/// (the text of /proc/self/mounts) that serves `proc/meminfo`.
pub fn lxcfs_dir(mounts_text: &str) -> Option<std::path::PathBuf> {
    mounts_text
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "fuse.lxcfs").then(|| std::path::PathBuf::from(f[1]))
        })
        .filter(|d| d.join("proc/meminfo").exists())
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
/// `dirfd`; an empty path with AT_EMPTY_PATH means the file `dirfd` itself).
fn open_tree_clone(
    dirfd: i32,
    path: &std::ffi::CStr,
    extra: libc::c_uint,
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
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Detach a recursive copy of `b.source` as a mount fd with its attributes set.
fn open_bind(b: &BindMount) -> Result<OwnedFd, String> {
    let src = std::ffi::CString::new(b.source.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("mount source {} contains NUL", b.source.display()))?;
    let fd = open_tree_clone(libc::AT_FDCWD, &src, libc::AT_RECURSIVE as libc::c_uint)
        .map_err(|e| format!("open_tree {}: {e}", b.source.display()))?;
    if b.readonly {
        // MOUNT_ATTR_RDONLY | NOSUID | NODEV (linux/mount.h).
        set_mount_attr(&fd, 0x1 | 0x2 | 0x4, true)
            .map_err(|e| format!("make {} read-only: {e}", b.source.display()))?;
    }
    Ok(fd)
}

/// mount_setattr(2): set the `MOUNT_ATTR_*` bits `attr_set` on the (detached) mount `fd`, on
/// every mount below it too when `recursive`.
fn set_mount_attr(fd: &OwnedFd, attr_set: u64, recursive: bool) -> Result<(), nix::errno::Errno> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: empty path with AT_EMPTY_PATH targets the fd; attr is a valid mount_attr.
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

/// Attach a detached mount at `target` (resolved in the current root), creating it as a
/// directory when missing.
fn attach_bind(fd: &OwnedFd, target: &str) -> Result<(), String> {
    ensure_dir(target)?;
    move_mount(fd, target)
}

fn move_mount(fd: &OwnedFd, target: &str) -> Result<(), String> {
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
