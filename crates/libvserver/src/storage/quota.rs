//! Disk quotas of guests on the host's file system (the image backend is [`super::disk`]):
//!
//! - **project quotas** (ext4, xfs): every file and directory of the guest gets project id =
//!   its context id, directories with the inherit flag so new files follow
//!   (`FS_IOC_FSSETXATTR`, ioctl_iflags(2), Documentation/filesystems/ext4 and xfs quota docs),
//!   and the limits are set with quotactl_fd(2) `Q_SETQUOTA` on `PRJQUOTA`. `df` inside shows
//!   the limit (statfs of a directory with the inherit flag reports its project's quota).
//!   The file system must have project quotas on: ext4 `tune2fs -O project,quota DEV` then
//!   mount option `prjquota`; xfs mount option `prjquota` (for / on the kernel command line,
//!   `rootflags=prjquota`). The guests' seccomp filter refuses the ioctls that would change a
//!   project id or clear the inherit flag.
//! - **btrfs quota groups**: the guest root is a subvolume (build makes it one on btrfs);
//!   `btrfs quota enable` and `btrfs qgroup limit SIZE ROOT` (btrfs-qgroup(8)) limit its
//!   referenced space. No inode limit; `df` inside shows the whole file system. Guests cannot
//!   make subvolumes of their own (seccomp), which would be outside the group.

use super::fs::{self as sfs, FsKind};
use crate::config::{parse_size, DiskBackend, DiskConfig};
use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;

const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
const FS_XFLAG_PROJINHERIT: u32 = 0x200;
const PRJQUOTA: i32 = 2;
const Q_GETQUOTA: i32 = 0x80_0007;
const Q_SETQUOTA: i32 = 0x80_0008;
const QIF_BLIMITS: u32 = 1;
const QIF_ILIMITS: u32 = 4;

#[repr(C)]
#[derive(Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
struct IfDqblk {
    bhardlimit: u64,
    bsoftlimit: u64,
    curspace: u64,
    ihardlimit: u64,
    isoftlimit: u64,
    curinodes: u64,
    btime: u64,
    itime: u64,
    valid: u32,
}

fn qcmd(cmd: i32, kind: i32) -> i32 {
    (cmd << 8) | (kind & 0xff)
}

/// quotactl_fd(2) on the file system of `fd` for project `id`.
fn quotactl_fd(fd: &OwnedFd, cmd: i32, id: u32, q: &mut IfDqblk) -> std::io::Result<()> {
    // SAFETY: `q` is a struct if_dqblk alive for the call; the kernel reads or fills it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            fd.as_raw_fd(),
            qcmd(cmd, PRJQUOTA) as libc::c_uint,
            id as libc::c_uint,
            q as *mut IfDqblk,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn open_dir(p: &Path) -> Result<OwnedFd, String> {
    nix::fcntl::open(
        p,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("open {}: {e}", p.display()))
}

/// The command that turns project quotas on for the file system of `root`, for messages.
fn enable_hint(kind: FsKind) -> &'static str {
    match kind {
        FsKind::Xfs => {
            "mount it with the option prjquota (in /etc/fstab; for / add rootflags=prjquota \
             to the kernel command line) and reboot or mount it afresh"
        }
        _ => {
            "unmount it, run tune2fs -O project,quota DEVICE, and mount it with the option \
             prjquota (in /etc/fstab)"
        }
    }
}

/// Check that the file system of `root` enforces project quotas.
///
/// Errors: not ext4 or xfs, or project quotas are off (with the command that turns them on).
pub fn check_project(root: &Path) -> Result<(), String> {
    let kind = sfs::fs_kind(root)?;
    if !matches!(kind, FsKind::Ext4 | FsKind::Xfs) {
        return Err(format!(
            "{} is on {kind}: project quotas need ext4 or xfs",
            root.display()
        ));
    }
    let fd = open_dir(root)?;
    let mut q = IfDqblk::default();
    quotactl_fd(&fd, Q_GETQUOTA, 0, &mut q).map_err(|e| {
        format!(
            "{} is on {kind} without project quotas ({e}); to use them, {}",
            root.display(),
            enable_hint(kind)
        )
    })
}

/// The backend `--disk-backend auto` picks for a new guest root in `parent`: btrfs quota
/// groups on btrfs, project quotas on ext4/xfs that enforce them, else an image.
pub fn auto_backend(parent: &Path) -> DiskBackend {
    match sfs::fs_kind(parent) {
        Ok(FsKind::Btrfs) => DiskBackend::Btrfs,
        Ok(FsKind::Ext4 | FsKind::Xfs) if check_project(parent).is_ok() => DiskBackend::Project,
        _ => DiskBackend::Image,
    }
}

fn set_projid(fd: &OwnedFd, id: u32, inherit: bool) -> std::io::Result<()> {
    let mut a = FsXattr::default();
    // SAFETY: FS_IOC_FSGETXATTR fills a struct fsxattr we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSGETXATTR as _, &mut a) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    a.projid = id;
    if inherit {
        a.xflags |= FS_XFLAG_PROJINHERIT;
    }
    // SAFETY: FS_IOC_FSSETXATTR reads the struct fsxattr we pass.
    if unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSSETXATTR as _, &a) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Give every directory and regular file under `root` project id `id` (directories also the
/// inherit flag). The walk opens each entry relative to its parent with `O_NOFOLLOW`, never
/// leaves the tree or crosses a mount, and skips symlinks, devices, FIFOs and sockets (they
/// cannot be opened safely; they hold no data blocks). Returns the number of entries set.
///
/// Errors: the root cannot be opened, or the kernel refused the project id.
pub fn set_project_tree(root: &Path, id: u32) -> Result<u64, String> {
    let mut n = 0;
    sfs::walk_in_root(root, &mut |_, _| true, &mut |rel, fd, st| {
        let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
        set_projid(fd, id, is_dir)
            .map_err(|e| format!("set project id {id} on {}{rel}: {e}", root.display()))?;
        n += 1;
        Ok(())
    })?;
    Ok(n)
}

/// Set the limits of project `id` on the file system of `root`: `bytes` (rounded up to KiB)
/// and `inodes` (None: no limit), hard and soft alike.
///
/// Errors: project quotas are off there (see [`check_project`]) or quotactl failed.
pub fn set_project_limits(
    root: &Path,
    id: u32,
    bytes: u64,
    inodes: Option<u64>,
) -> Result<(), String> {
    check_project(root)?;
    let fd = open_dir(root)?;
    let kib = bytes.div_ceil(1024);
    let mut q = IfDqblk {
        bhardlimit: kib,
        bsoftlimit: kib,
        ihardlimit: inodes.unwrap_or(0),
        isoftlimit: inodes.unwrap_or(0),
        valid: QIF_BLIMITS | QIF_ILIMITS,
        ..Default::default()
    };
    quotactl_fd(&fd, Q_SETQUOTA, id, &mut q)
        .map_err(|e| format!("set the quota of project {id} on {}: {e}", root.display()))
}

/// Use and limits of project `id` on the file system of `root`.
pub fn project_usage(root: &Path, id: u32) -> Option<super::disk::DiskUsage> {
    let fd = open_dir(root).ok()?;
    let mut q = IfDqblk::default();
    quotactl_fd(&fd, Q_GETQUOTA, id, &mut q).ok()?;
    Some(super::disk::DiskUsage {
        used_bytes: q.curspace,
        total_bytes: q.bhardlimit * 1024,
        used_inodes: q.curinodes,
        total_inodes: q.ihardlimit,
    })
}

/// `btrfs ARGS... PATH` (btrfs-progs), its standard output.
fn btrfs(args: &[&str], path: &Path, what: &str) -> Result<String, String> {
    sfs::run_output(Command::new("btrfs").args(args).arg(path), what)
}

/// Turn quotas on for the btrfs holding `root` (if off) and limit the referenced space of the
/// subvolume `root` to `bytes`.
///
/// Errors: `root` is not a btrfs subvolume, or btrfs(8) failed.
pub fn set_btrfs_limit(root: &Path, bytes: u64) -> Result<(), String> {
    if !sfs::is_subvolume(root) {
        return Err(format!(
            "{} is not a btrfs subvolume (build makes guest roots subvolumes on btrfs)",
            root.display()
        ));
    }
    if btrfs(
        &["qgroup", "show", "-f", "--raw"],
        root,
        "btrfs qgroup show",
    )
    .is_err()
    {
        btrfs(&["quota", "enable"], root, "btrfs quota enable")?;
    }
    // By the group's id, through a path outside the subvolume: the ioctl on a path inside it
    // is charged to the group and fails with EDQUOT once the guest is over its limit, which
    // is exactly when an administrator raises it.
    let id = btrfs(
        &["inspect-internal", "rootid"],
        root,
        "btrfs inspect-internal rootid",
    )?;
    let id = id.trim();
    let parent = root.parent().unwrap_or(Path::new("/"));
    let group = format!("0/{id}");
    btrfs(
        &["qgroup", "limit", &bytes.to_string(), &group],
        parent,
        &format!("btrfs qgroup limit {bytes} {group} {}", parent.display()),
    )
    .map(drop)
}

/// Referenced bytes and limit of the quota group of the subvolume `root`.
pub fn btrfs_usage(root: &Path) -> Option<super::disk::DiskUsage> {
    let out = btrfs(
        &["qgroup", "show", "-re", "-f", "--raw", "--sync"],
        root,
        "qgroup show",
    )
    .or_else(|_| {
        btrfs(
            &["qgroup", "show", "-re", "-f", "--raw"],
            root,
            "qgroup show",
        )
    })
    .ok()?;
    // qgroupid rfer excl max_rfer max_excl [path]
    let l = out.lines().find(|l| l.trim_start().starts_with("0/"))?;
    let f: Vec<&str> = l.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(super::disk::DiskUsage {
        used_bytes: num(1)?,
        total_bytes: num(3).unwrap_or(0),
        used_inodes: 0,
        total_inodes: 0,
    })
}

/// Apply the quota of a guest rooted at `root` with context id `xid` (project or btrfs
/// backends; the image backend is its own file system): at build, with `tree` the whole
/// existing tree gets the project id; at start only the limits are (re)set.
///
/// Errors: those of [`set_project_tree`], [`set_project_limits`], [`set_btrfs_limit`].
pub fn apply(disk: &DiskConfig, root: &Path, xid: u32, tree: bool) -> Result<(), String> {
    let Some(size) = &disk.size else {
        return Ok(());
    };
    let bytes = parse_size(size)?;
    if tree
        && matches!(
            disk.quota_backend(),
            Some(DiskBackend::Project | DiskBackend::Btrfs)
        )
    {
        let (used, _) = sfs::tree_size(root);
        if used >= bytes {
            return Err(format!(
                "the guest's files take {} already, more than the disk quota of {size}; give \
                 a larger --disk-size",
                crate::stats::format::format_size(used)
            ));
        }
    }
    match disk.quota_backend() {
        Some(DiskBackend::Project) => {
            check_project(root)?;
            if tree {
                set_project_tree(root, xid)?;
            }
            set_project_limits(root, xid, bytes, disk.inodes)
        }
        Some(DiskBackend::Btrfs) => set_btrfs_limit(root, bytes),
        _ => Ok(()),
    }
}

/// Use and limit of the guest's disk quota, by backend (the image's file system when it is
/// mounted; None without a quota).
pub fn usage(
    disk: &DiskConfig,
    root: &Path,
    xid: u32,
    running: bool,
) -> Option<super::disk::DiskUsage> {
    match disk.quota_backend()? {
        DiskBackend::Image => running.then(|| super::disk::usage(root)).flatten(),
        DiskBackend::Project => project_usage(root, xid),
        DiskBackend::Btrfs => btrfs_usage(root),
    }
}
