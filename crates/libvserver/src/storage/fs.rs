//! What the file system under a guest can do, and the primitives the storage commands use:
//! btrfs subvolumes (btrfs-subvolume(8)), reflink clones (`FICLONE`, ioctl_ficlone(2)), block
//! sharing of identical files (`FIDEDUPERANGE`, ioctl_fideduperange(2)) and extent maps
//! (`FS_IOC_FIEMAP`, Documentation/filesystems/fiemap.rst).

use std::fs;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The file systems the storage commands tell apart (statfs(2) `f_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// btrfs: subvolumes, snapshots, reflinks.
    Btrfs,
    /// xfs: reflinks when made with `mkfs.xfs -m reflink=1` (the default since xfsprogs 5.1).
    Xfs,
    /// ext2/3/4: neither.
    Ext4,
    /// tmpfs: neither.
    Tmpfs,
    /// overlayfs.
    Overlay,
    /// Anything else, with its magic number.
    Other(i64),
}

impl std::fmt::Display for FsKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsKind::Btrfs => write!(f, "btrfs"),
            FsKind::Xfs => write!(f, "xfs"),
            FsKind::Ext4 => write!(f, "ext4"),
            FsKind::Tmpfs => write!(f, "tmpfs"),
            FsKind::Overlay => write!(f, "overlayfs"),
            FsKind::Other(m) => write!(f, "a file system with magic {m:#x}"),
        }
    }
}

/// The file system holding `path` (statfs(2)).
///
/// Errors: statfs failed (the path does not exist, ...).
pub fn fs_kind(path: &Path) -> Result<FsKind, String> {
    let st =
        nix::sys::statfs::statfs(path).map_err(|e| format!("statfs {}: {e}", path.display()))?;
    use nix::sys::statfs as s;
    let t = st.filesystem_type();
    Ok(if t == s::BTRFS_SUPER_MAGIC {
        FsKind::Btrfs
    } else if t == s::XFS_SUPER_MAGIC {
        FsKind::Xfs
    } else if t == s::EXT4_SUPER_MAGIC {
        FsKind::Ext4
    } else if t == s::TMPFS_MAGIC {
        FsKind::Tmpfs
    } else if t == s::OVERLAYFS_SUPER_MAGIC {
        FsKind::Overlay
    } else {
        FsKind::Other(t.0 as i64)
    })
}

/// True if `path` is the top directory of a btrfs subvolume (inode 256 on btrfs).
pub fn is_subvolume(path: &Path) -> bool {
    fs::symlink_metadata(path)
        .map(|m| m.is_dir() && m.ino() == 256)
        .unwrap_or(false)
        && fs_kind(path) == Ok(FsKind::Btrfs)
}

/// Run `cmd` and return its standard output; `what` names the step in errors, which carry
/// the command's standard error.
pub(super) fn run_output(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    run_output(cmd, what).map(drop)
}

/// Create the directory `path` as a btrfs subvolume (`btrfs subvolume create`).
///
/// Errors: btrfs(8) failed or is missing (package btrfs-progs).
pub fn create_subvolume(path: &Path) -> Result<(), String> {
    run(
        Command::new("btrfs")
            .args(["-q", "subvolume", "create"])
            .arg(path),
        &format!("btrfs subvolume create {}", path.display()),
    )
}

/// Snapshot the subvolume `src` as `dst` (`btrfs subvolume snapshot [-r]`).
///
/// Errors: btrfs(8) failed.
pub fn snapshot_subvolume(src: &Path, dst: &Path, readonly: bool) -> Result<(), String> {
    let mut c = Command::new("btrfs");
    c.args(["-q", "subvolume", "snapshot"]);
    if readonly {
        c.arg("-r");
    }
    run(
        c.arg(src).arg(dst),
        &format!(
            "btrfs subvolume snapshot {} {}",
            src.display(),
            dst.display()
        ),
    )
}

/// Remove the tree `path`: `btrfs subvolume delete` for a subvolume (after removing any
/// subvolumes nested in it), otherwise a recursive removal that never follows symlinks
/// (std's `remove_dir_all`). Refuses a mount point and anything with a mount below it.
///
/// Errors: the path is (or holds) a mount point, or the removal failed.
pub fn remove_tree(path: &Path) -> Result<(), String> {
    let md = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("stat {}: {e}", path.display())),
    };
    if !md.is_dir() {
        return fs::remove_file(path).map_err(|e| format!("remove {}: {e}", path.display()));
    }
    if let Some(m) = mounts_below(path).first() {
        return Err(format!(
            "{} is mounted (on {}); stop what uses it first",
            m.display(),
            path.display()
        ));
    }
    if is_subvolume(path) {
        // Its quota group goes with it (a deleted subvolume leaves a stale one behind).
        let qgroup = Command::new("btrfs")
            .args(["inspect-internal", "rootid"])
            .arg(path)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        let parent = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let destroy = || {
            if let Some(id) = &qgroup {
                let _ = Command::new("btrfs")
                    .args(["qgroup", "destroy", &format!("0/{id}")])
                    .arg(&parent)
                    .output();
            }
        };
        let delete = || {
            run(
                Command::new("btrfs")
                    .args(["-q", "subvolume", "delete"])
                    .arg(path),
                &format!("btrfs subvolume delete {}", path.display()),
            )
        };
        let deleted = delete();
        if deleted.is_ok() {
            destroy();
            return Ok(());
        }
        // Subvolumes nested in it (guest root can make them, read-only ones too, with
        // unprivileged ioctls): made writable and removed first, then the subvolume itself.
        set_writable(path);
        for n in nested_subvolumes(path) {
            set_writable(&n);
            remove_tree(&n)?;
        }
        let r = delete();
        if r.is_ok() {
            destroy();
        }
        return r;
    }
    fs::remove_dir_all(path).map_err(|e| format!("remove {}: {e}", path.display()))
}

/// Clear the read-only property of a btrfs subvolume (`btrfs property set -ts PATH ro false`).
fn set_writable(path: &Path) {
    let _ = Command::new("btrfs")
        .args(["property", "set", "-ts"])
        .arg(path)
        .args(["ro", "false"])
        .output();
}

/// The subvolumes below the subvolume `top` that are not inside another one below it (a walk
/// that never follows symlinks).
fn nested_subvolumes(top: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![top.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            let p = e.path();
            if is_subvolume(&p) {
                found.push(p);
            } else {
                stack.push(p);
            }
        }
    }
    found
}

/// The whole disk (major, minor) holding `path`: the device of the mount it is on (for file
/// systems with anonymous device numbers, such as btrfs, the mount's source device), and for a
/// partition its disk (block throttling works on disks). None when there is no block device
/// (tmpfs, overlayfs, network file systems).
pub fn block_device_of(path: &Path) -> Option<(u32, u32)> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    // mountinfo: id parent MAJ:MIN root mountpoint opts... - fstype source superopts
    let (mm, source) = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let mp = PathBuf::from(unescape_mount(f.get(4)?));
            let dash = f.iter().position(|x| *x == "-")?;
            path.starts_with(&mp)
                .then(|| (mp, f[2].to_string(), f.get(dash + 2).map(|s| s.to_string())))
        })
        .max_by_key(|(mp, _, _)| mp.components().count())
        .map(|(_, mm, src)| (mm, src))?;
    let (mut major, mut minor) = mm
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))?;
    if major == 0 {
        let src = source?;
        if !src.starts_with("/dev/") {
            return None;
        }
        let rdev = std::os::unix::fs::MetadataExt::rdev(&fs::metadata(&src).ok()?);
        (major, minor) = (libc::major(rdev), libc::minor(rdev));
        if major == 0 {
            return None;
        }
    }
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if sys.join("partition").exists() {
        let parent = fs::read_to_string(sys.join("../dev")).ok()?;
        let (a, b) = parent.trim().split_once(':')?;
        return Some((a.parse().ok()?, b.parse().ok()?));
    }
    Some((major, minor))
}

/// Walk a tree a guest controls without ever leaving it: every directory and regular file
/// under `root` is opened relative to its parent's descriptor with `O_NOFOLLOW` (files also
/// `O_NONBLOCK`), only after `want(rel, stat)` agrees (`rel` is the path inside the tree,
/// `/a/b`; `stat` from fstatat without following), and handed to `visit(rel, fd, stat)` with
/// the stat of the open descriptor, which must still be the same inode of the same type.
/// Directories on another device (mount points, nested btrfs subvolumes) are not entered;
/// symlinks, devices, FIFOs and sockets are never opened. `root` itself is visited first,
/// with `rel` empty. A directory `want` refuses is not entered.
///
/// Errors: `root` cannot be opened, or `visit` failed (its error is returned).
pub fn walk_in_root(
    root: &Path,
    want: &mut dyn FnMut(&str, &nix::sys::stat::FileStat) -> bool,
    visit: &mut dyn FnMut(&str, &OwnedFd, &nix::sys::stat::FileStat) -> Result<(), String>,
) -> Result<(), String> {
    walk_in_root_all(root, want, visit, &mut |_, _, _, _| Ok(()))
}

/// An entry [`walk_in_root_all`] does not open: (path inside the tree, descriptor of its
/// directory, its name there, its stat from fstatat without following).
pub type OtherEntry<'a> = dyn FnMut(&str, &OwnedFd, &std::ffi::CStr, &nix::sys::stat::FileStat) -> Result<(), String>
    + 'a;

/// [`walk_in_root`], and every entry it does not open (symlinks, devices, FIFOs, sockets, and
/// directories on another device) goes to `other` with its parent directory's descriptor and
/// its name, for calls relative to that descriptor that do not follow it (fchownat(2) with
/// `AT_SYMLINK_NOFOLLOW`). `want` is asked about those too.
///
/// Errors: as [`walk_in_root`], or `other` failed.
pub fn walk_in_root_all(
    root: &Path,
    want: &mut dyn FnMut(&str, &nix::sys::stat::FileStat) -> bool,
    visit: &mut dyn FnMut(&str, &OwnedFd, &nix::sys::stat::FileStat) -> Result<(), String>,
    other: &mut OtherEntry<'_>,
) -> Result<(), String> {
    use nix::fcntl::{openat, AtFlags, OFlag};
    use nix::sys::stat::{fstat, fstatat, Mode, SFlag};
    let kind =
        |st: &nix::sys::stat::FileStat| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    let rootfd = nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("open {}: {e}", root.display()))?;
    let rst = fstat(&rootfd).map_err(|e| format!("stat {}: {e}", root.display()))?;
    visit("", &rootfd, &rst)?;
    let mut stack: Vec<(OwnedFd, String)> = vec![(rootfd, String::new())];
    while let Some((dfd, rel)) = stack.pop() {
        let Ok(mut dir) = dfd
            .try_clone()
            .map_err(drop)
            .and_then(|d| nix::dir::Dir::from_fd(d).map_err(drop))
        else {
            continue;
        };
        let names: Vec<_> = dir
            .iter()
            .flatten()
            .filter(|e| !matches!(e.file_name().to_bytes(), b"." | b".."))
            .map(|e| e.file_name().to_owned())
            .collect();
        for name in names {
            let child = format!("{rel}/{}", name.to_string_lossy());
            let Ok(st) = fstatat(&dfd, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue;
            };
            let is_dir = kind(&st) == SFlag::S_IFDIR;
            if !want(&child, &st) {
                continue;
            }
            if !(is_dir || kind(&st) == SFlag::S_IFREG) || (is_dir && st.st_dev != rst.st_dev) {
                other(&child, &dfd, name.as_c_str(), &st)?;
                continue;
            }
            let flags = OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC
                | if is_dir {
                    OFlag::O_DIRECTORY
                } else {
                    OFlag::O_NONBLOCK
                };
            let Ok(fd) = openat(&dfd, name.as_c_str(), flags, Mode::empty()) else {
                continue;
            };
            // Still the entry looked at: not swapped between the stat and the open.
            let Ok(st2) = fstat(&fd) else { continue };
            if st2.st_ino != st.st_ino || kind(&st2) != kind(&st) {
                continue;
            }
            visit(&child, &fd, &st2)?;
            if is_dir {
                stack.push((fd, child));
            }
        }
    }
    Ok(())
}

/// Mount points at or below `path` (from /proc/self/mountinfo).
pub fn mounts_below(path: &Path) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mount(m)))
        .filter(|m| m.starts_with(path))
        .collect()
}

fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

const FICLONE: libc::c_ulong = 0x4004_9409;
const FIDEDUPERANGE: libc::c_ulong = 0xc018_9436;
const FS_IOC_FIEMAP: libc::c_ulong = 0xc020_660b;

/// Make `dst` share all blocks of `src` (FICLONE): a copy that costs no space until written.
///
/// Errors: the file system cannot (EOPNOTSUPP, EINVAL) or the files are on different mounts
/// (EXDEV).
pub fn clone_file(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> std::io::Result<()> {
    // SAFETY: FICLONE takes the source fd as its integer argument; both fds are open.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[repr(C)]
struct DedupeRange {
    src_offset: u64,
    src_length: u64,
    dest_count: u16,
    reserved1: u16,
    reserved2: u32,
    info: DedupeInfo,
}

#[repr(C)]
struct DedupeInfo {
    dest_fd: i64,
    dest_offset: u64,
    bytes_deduped: u64,
    status: i32,
    reserved: u32,
}

/// Outcome of [`dedupe_file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dedupe {
    /// All `len` bytes now share the source's blocks.
    Shared,
    /// The contents differ (the kernel compared them); nothing changed.
    Differs,
}

/// Make the first `len` bytes of `dst` share the blocks of `src` where both hold the same bytes
/// (FIDEDUPERANGE, in steps of at most 16 MiB). The kernel compares the data under lock, so a
/// hash collision or a concurrent write can never make `dst` change content. `dst` may be open
/// read-only (the caller has CAP_SYS_ADMIN).
///
/// Errors: the ioctl failed (EOPNOTSUPP without reflinks, EXDEV across mounts, ...).
pub fn dedupe_file(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, len: u64) -> std::io::Result<Dedupe> {
    const STEP: u64 = 16 << 20;
    let mut off = 0;
    while off < len {
        let n = STEP.min(len - off);
        let mut arg = DedupeRange {
            src_offset: off,
            src_length: n,
            dest_count: 1,
            reserved1: 0,
            reserved2: 0,
            info: DedupeInfo {
                dest_fd: dst.as_raw_fd() as i64,
                dest_offset: off,
                bytes_deduped: 0,
                status: 0,
                reserved: 0,
            },
        };
        // SAFETY: `arg` is a file_dedupe_range with room for its one info record, alive for
        // the call; the kernel writes only into that record.
        let r = unsafe { libc::ioctl(src.as_raw_fd(), FIDEDUPERANGE as _, &mut arg) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        match arg.info.status {
            0 => {}
            1 => return Ok(Dedupe::Differs),
            e => return Err(std::io::Error::from_raw_os_error(-e)),
        }
        if arg.info.bytes_deduped == 0 {
            return Err(std::io::Error::other("the kernel shared no bytes"));
        }
        off += arg.info.bytes_deduped;
    }
    Ok(Dedupe::Shared)
}

/// The physical extents of a file as (logical offset, physical offset, length) in bytes
/// (FS_IOC_FIEMAP with FIEMAP_FLAG_SYNC), or None when the map is unusable for comparisons
/// (more than 64 extents, or extents whose place is not known yet or is inline).
pub fn extents(fd: BorrowedFd<'_>) -> Option<Vec<(u64, u64, u64)>> {
    const N: usize = 64;
    #[repr(C)]
    struct Extent {
        logical: u64,
        physical: u64,
        length: u64,
        reserved64: [u64; 2],
        flags: u32,
        reserved: [u32; 3],
    }
    #[repr(C)]
    struct Fiemap {
        start: u64,
        length: u64,
        flags: u32,
        mapped: u32,
        count: u32,
        reserved: u32,
        extents: [Extent; N],
    }
    // SAFETY: all-zero is a valid value of these plain integer structs.
    let mut m: Box<Fiemap> = Box::new(unsafe { std::mem::zeroed() });
    m.length = u64::MAX;
    m.flags = 1; // FIEMAP_FLAG_SYNC
    m.count = N as u32;
    // SAFETY: `m` is a struct fiemap followed by room for `count` extents.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FIEMAP as _, &mut *m) };
    if r < 0 || m.mapped as usize > N {
        return None;
    }
    let ext = &m.extents[..m.mapped as usize];
    if ext.is_empty() || ext.last().map(|e| e.flags & 1 == 0).unwrap_or(true) {
        return None; // FIEMAP_EXTENT_LAST missing: more than N extents
    }
    // UNKNOWN, DELALLOC, ENCODED, NOT_ALIGNED, DATA_INLINE, DATA_TAIL.
    if ext
        .iter()
        .any(|e| e.flags & (0x2 | 0x4 | 0x8 | 0x100 | 0x200 | 0x400) != 0)
    {
        return None;
    }
    Some(
        ext.iter()
            .map(|e| (e.logical, e.physical, e.length))
            .collect(),
    )
}

/// True if files in the directory `dir` can share blocks: btrfs always, xfs when made with
/// reflink=1 (tried with a clone of a scratch file), nothing else.
///
/// Errors: `dir` cannot be examined or written.
pub fn supports_reflink(dir: &Path) -> Result<bool, String> {
    match fs_kind(dir)? {
        FsKind::Btrfs => Ok(true),
        FsKind::Xfs => {
            let a = dir.join(format!(".reflink-test-{}", std::process::id()));
            let b = dir.join(format!(".reflink-test-{}.2", std::process::id()));
            let r = (|| -> std::io::Result<bool> {
                use std::os::fd::AsFd;
                // The source of a clone must be open for reading.
                let fa = fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&a)?;
                std::io::Write::write_all(&mut &fa, &[0u8; 4096])?;
                let fb = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&b)?;
                Ok(clone_file(fa.as_fd(), fb.as_fd()).is_ok())
            })();
            let _ = fs::remove_file(&a);
            let _ = fs::remove_file(&b);
            r.map_err(|e| format!("try a reflink in {}: {e}", dir.display()))
        }
        _ => Ok(false),
    }
}

/// Copy the tree `src` to `dst` (which must not exist) with cp(1) `-a`: owners, modes,
/// timestamps, hardlinks, symlinks, device nodes, xattrs, ACLs and file capabilities; sparse
/// files stay sparse. `reflink`: Some(true) shares blocks or fails, Some(false) never, None
/// shares them where the file system can.
///
/// Errors: cp failed; its message is included.
pub fn copy_tree_cp(src: &Path, dst: &Path, reflink: Option<bool>) -> Result<(), String> {
    let mut c = Command::new("cp");
    c.arg("-a").arg("--no-target-directory");
    c.arg(match reflink {
        Some(true) => "--reflink=always",
        Some(false) => "--reflink=never",
        None => "--reflink=auto",
    });
    run(
        c.arg("--").arg(src).arg(dst),
        &format!("copy {} to {}", src.display(), dst.display()),
    )
}

/// Bytes and files below `path` (apparent sizes of regular files; not following symlinks,
/// not crossing mount points).
pub fn tree_size(path: &Path) -> (u64, u64) {
    // Through the hostile-tree walker: a running guest swapping a directory for a symlink
    // cannot make the count wander into host directories.
    let acc = std::cell::Cell::new((0u64, 0u64));
    let add = |bytes: u64| {
        let (b, n) = acc.get();
        acc.set((b + bytes, n + 1));
    };
    let _ = walk_in_root_all(
        path,
        &mut |rel, st| {
            let kind = st.st_mode & libc::S_IFMT;
            if kind == libc::S_IFDIR {
                return true;
            }
            if !rel.is_empty() {
                add(if kind == libc::S_IFREG {
                    st.st_size as u64
                } else {
                    0
                });
            }
            false
        },
        &mut |_, _, _| Ok(()),
        &mut |_, _, _, _| Ok(()),
    );
    acc.get()
}

/// Open `rel` (a path inside a guest tree, relative or absolute: both are taken from the guest
/// root) with openat2(2) `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`, so no
/// symlink, `..` or mount point leads out of `root`; the last component is never followed
/// (O_NOFOLLOW). `flags` are open(2) flags (O_CLOEXEC is added), `mode` the creation mode.
///
/// Errors: openat2's (ELOOP for a final symlink, EXDEV for a mount crossing, ENOSYS before
/// Linux 5.6) with the path in the message.
pub fn open_in_root(
    root: &Path,
    rel: &str,
    flags: i32,
    mode: u32,
) -> Result<std::fs::File, String> {
    let dir = std::fs::File::open(root).map_err(|e| format!("open {}: {e}", root.display()))?;
    openat2_in(&dir, root, rel, flags | libc::O_NOFOLLOW, mode)
}

/// openat2(2) of `rel` below the open directory `dir` (the tree `root`, for messages) with
/// `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`; `flags` are open(2) flags
/// (O_CLOEXEC is added), `mode` the creation mode (with O_CREAT).
fn openat2_in(
    dir: &std::fs::File,
    root: &Path,
    rel: &str,
    flags: i32,
    mode: u32,
) -> Result<std::fs::File, String> {
    use std::os::fd::FromRawFd;
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    const RESOLVE_NO_XDEV: u64 = 0x01;
    const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
    const RESOLVE_IN_ROOT: u64 = 0x10;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: if flags & libc::O_CREAT != 0 {
            u64::from(mode)
        } else {
            0
        },
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
    };
    let c = std::ffi::CString::new(rel)
        .map_err(|_| format!("{rel} in {} contains NUL", root.display()))?;
    // SAFETY: valid dirfd, NUL-terminated path and a properly sized open_how.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            std::os::fd::AsRawFd::as_raw_fd(dir),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(format!(
            "open {rel} inside {}: {}",
            root.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { std::fs::File::from_raw_fd(fd as i32) })
}

/// The guest path (absolute, as the guest sees it) that `rel` leads to inside the tree
/// `root`, following symlinks the way the guest would: openat2(2) `RESOLVE_IN_ROOT |
/// RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`, then the path the kernel reports for the result.
///
/// Errors: the path does not resolve (missing, a loop) or lies outside the root.
pub fn resolve_in_root(root: &Path, rel: &str) -> Result<String, String> {
    let link = |f: &std::fs::File| {
        std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(f)
        ))
        .map_err(|e| format!("resolve {rel} inside {}: {e}", root.display()))
    };
    let dir = std::fs::File::open(root).map_err(|e| format!("open {}: {e}", root.display()))?;
    let top = link(&dir)?;
    let at = link(&openat2_in(&dir, root, rel, libc::O_PATH, 0)?)?;
    let inside = at
        .strip_prefix(&top)
        .map_err(|_| format!("{rel} leads out of {}", root.display()))?;
    Ok(format!("/{}", inside.display()))
}

/// The target of the symlink `rel` inside the tree `root` (its last component is not
/// followed; the others resolve in-root); None when it is not a symlink.
pub fn read_link_in_root(root: &Path, rel: &str) -> Option<String> {
    let f = open_in_root(root, rel, libc::O_PATH, 0).ok()?;
    nix::fcntl::readlinkat(&f, "")
        .ok()
        .map(|t| t.to_string_lossy().into_owned())
}

/// Replace the regular file `rel` inside the guest tree `root` with `data`, resolving every
/// component in-root ([`open_in_root`]); a symlink, FIFO, device or socket there is removed
/// first (never written through), a directory is an error.
///
/// Errors: as [`open_in_root`], or the write's.
pub fn write_in_root(root: &Path, rel: &str, data: &[u8]) -> Result<(), String> {
    write_in_root_mode(root, rel, data, 0o644)
}

/// [`write_in_root`] with the file's permission bits `mode` (set on the open file, so an
/// existing file gets them too).
///
/// Errors: as [`write_in_root`].
pub fn write_in_root_mode(root: &Path, rel: &str, data: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;
    match open_in_root(root, rel, libc::O_PATH, 0) {
        Ok(f) => {
            let md = f
                .metadata()
                .map_err(|e| format!("stat {rel} in {}: {e}", root.display()))?;
            if md.is_dir() {
                return Err(format!("{rel} in {} is a directory", root.display()));
            }
        }
        Err(e) if e.contains("(os error 2)") => {}
        Err(e) => return Err(e),
    }
    // Whatever is not a regular file goes: unlink relative to its parent, resolved in-root.
    let (parent, base) = match rel.trim_end_matches('/').rsplit_once('/') {
        Some((p, b)) => (if p.is_empty() { "/" } else { p }, b),
        None => (".", rel),
    };
    let pdir = open_in_root(root, parent, libc::O_DIRECTORY | libc::O_RDONLY, 0)?;
    let cbase = std::ffi::CString::new(base).map_err(|_| format!("{rel} contains NUL"))?;
    // SAFETY: stat is plain data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid dirfd, C string and stat buffer.
    let r = unsafe {
        libc::fstatat(
            std::os::fd::AsRawFd::as_raw_fd(&pdir),
            cbase.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 && st.st_mode & libc::S_IFMT != libc::S_IFREG {
        // SAFETY: as above.
        if unsafe { libc::unlinkat(std::os::fd::AsRawFd::as_raw_fd(&pdir), cbase.as_ptr(), 0) } != 0
        {
            return Err(format!(
                "replace {rel} in {}: {}",
                root.display(),
                std::io::Error::last_os_error()
            ));
        }
    }
    let mut f = open_in_root(
        root,
        rel,
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        mode & 0o600,
    )?;
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {rel} in {}: {e}", root.display()))?;
    f.write_all(data)
        .map_err(|e| format!("write {rel} in {}: {e}", root.display()))
}
