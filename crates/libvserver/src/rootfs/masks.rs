//! Masked and read-only parts of a guest's /proc and /sys, applied after /proc, /sys and /dev
//! are built and checked again against the mount table before the guest runs (fail closed).
//!
//! Method (runc after CVE-2025-31133, bubblewrap's habit of checking every mount):
//! - the mask source is the runtime's own /dev/null, opened once `O_PATH|O_NOFOLLOW` and
//!   required to be the character device 1:3, then cloned with open_tree(2) for each target;
//! - every target is opened `O_PATH` with openat2(2) `RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|
//!   RESOLVE_NO_XDEV` below a handle of the freshly mounted procfs or sysfs (checked with
//!   fstatfs), and mounts are attached to that fd (move_mount(2) `MOVE_MOUNT_T_EMPTY_PATH`):
//!   no path string is handed to mount(2);
//! - masked directories get a read-only tmpfs with `nr_blocks=1,nr_inodes=1` (fsopen(2));
//! - read-only paths are bind-mounted onto themselves with `MOUNT_ATTR_RDONLY` (and nosuid,
//!   nodev, noexec), recursively;
//! - only an absent target (ENOENT) is skipped; any other failure aborts the start;
//! - [`verify_masks`] then re-reads /proc/self/mountinfo and stats every target.

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, major, minor, Mode, SFlag};
use nix::sys::statfs::{fstatfs, FsType, PROC_SUPER_MAGIC, SYSFS_MAGIC};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Files of /proc and /sys hidden behind /dev/null: kernel memory and symbols, keys,
/// scheduler and timer internals (side channels, Docker CVE-2015-3630), interrupt counts
/// (newer Docker); and, found readable by guest root in a review (it keeps DAC_OVERRIDE and
/// DAC_READ_SEARCH): the physical page flags and counts, kernel heap and vmalloc layouts, the
/// crash-dump layout (a KASLR hint) and the kernel's build configuration.
pub const PROC_MASKED_FILES: &[&str] = &[
    "/proc/kcore",
    "/proc/kallsyms",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/latency_stats",
    "/proc/interrupts",
    "/proc/kpageflags",
    "/proc/kpagecount",
    "/proc/kpagecgroup",
    "/proc/vmallocinfo",
    "/proc/slabinfo",
    "/proc/config.gz",
    "/sys/kernel/vmcoreinfo",
];
/// Directories hidden behind an empty read-only tmpfs: ACPI, sound and SCSI controls, firmware
/// tables (EFI variables among them), and the RAPL energy counters (PLATYPUS, CVE-2020-8694).
/// Plus every `/sys/devices/system/cpu/cpuN/thermal_throttle` ([`masked_dirs`]).
pub const MASKED_DIRS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
/// Paths made read-only (sysctls, sysrq, irq and bus settings of the host kernel).
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Options of the tmpfs over a masked directory: no room for a single block or a second inode.
const MASK_TMPFS_OPTIONS: &[(&str, &str)] =
    &[("nr_blocks", "1"), ("nr_inodes", "1"), ("mode", "0555")];

/// [`MASKED_DIRS`] plus the `thermal_throttle` directory of each CPU in `sys` (the guest's
/// /sys; a parameter so the listing is testable on a fake tree).
pub fn masked_dirs(sys: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = MASKED_DIRS.iter().map(|s| s.to_string()).collect();
    let mut cpus: Vec<String> = std::fs::read_dir(sys.join("devices/system/cpu"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.strip_prefix("cpu").is_some_and(is_number))
        .filter(|n| {
            sys.join("devices/system/cpu")
                .join(n)
                .join("thermal_throttle")
                .is_dir()
        })
        .collect();
    cpus.sort();
    v.extend(
        cpus.into_iter()
            .map(|c| format!("/sys/devices/system/cpu/{c}/thermal_throttle")),
    );
    v
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A handle of the procfs or sysfs mounted at `path` (`/proc` or `/sys`), refused unless its
/// file system type is `want`.
fn fs_root(path: &str, want: FsType) -> Result<OwnedFd, String> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("open {path} for the masks: {e}"))?;
    let st = fstatfs(&fd).map_err(|e| format!("statfs {path}: {e}"))?;
    if st.filesystem_type() != want {
        return Err(format!(
            "{path} is not the {} the runtime mounted (type {:#x}): masks refused",
            if want == PROC_SUPER_MAGIC {
                "procfs"
            } else {
                "sysfs"
            },
            st.filesystem_type().0
        ));
    }
    Ok(fd)
}

/// The handles of the guest's /proc and /sys.
struct Roots {
    proc: OwnedFd,
    sys: OwnedFd,
}

impl Roots {
    fn open() -> Result<Roots, String> {
        Ok(Roots {
            proc: fs_root("/proc", PROC_SUPER_MAGIC)?,
            sys: fs_root("/sys", SYSFS_MAGIC)?,
        })
    }

    /// Open `target` (`/proc/...` or `/sys/...`) `O_PATH` beneath its file system's handle,
    /// following no symlink and crossing no mount. `Ok(None)`: the target does not exist.
    fn open_target(&self, target: &str) -> Result<Option<OwnedFd>, String> {
        let (dir, rel) = if let Some(r) = target.strip_prefix("/proc/") {
            (&self.proc, r)
        } else if let Some(r) = target.strip_prefix("/sys/") {
            (&self.sys, r)
        } else {
            return Err(format!("mask target {target} is outside /proc and /sys"));
        };
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_XDEV,
            );
        match openat2(dir, rel, how) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(format!("open mask target {target}: {e}")),
        }
    }
}

/// The runtime's /dev/null as mask source: opened without following a symlink and refused
/// unless it is the character device 1:3 (a symlink to a procfs file, a regular file or a
/// missing node would turn the mask into a writable procfs file or a silent no-op).
fn null_source() -> Result<OwnedFd, String> {
    let fd = nix::fcntl::open(
        "/dev/null",
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("open /dev/null as the mask source: {e}"))?;
    let st = fstat(&fd).map_err(|e| format!("stat /dev/null: {e}"))?;
    let is_chr = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR;
    if !is_chr || (major(st.st_rdev), minor(st.st_rdev)) != (1, 3) {
        return Err(format!(
            "/dev/null is not the character device 1:3 (mode {:o}, device {}:{}): masks refused",
            st.st_mode,
            major(st.st_rdev),
            minor(st.st_rdev)
        ));
    }
    Ok(fd)
}

/// Mask, make read-only, in the order of the lists. Errors: the path and the OS error.
pub fn apply_masks() -> Result<(), String> {
    let roots = Roots::open()?;
    let null = null_source()?;
    for f in PROC_MASKED_FILES {
        let Some(target) = roots.open_target(f)? else {
            continue;
        };
        let clone = open_tree(null.as_fd(), libc::AT_EMPTY_PATH as libc::c_uint)
            .map_err(|e| format!("clone /dev/null to mask {f}: {e}"))?;
        attach(&clone, &target).map_err(|e| format!("mask {f} with /dev/null: {e}"))?;
    }
    for d in masked_dirs(std::path::Path::new("/sys")) {
        let Some(target) = roots.open_target(&d)? else {
            continue;
        };
        let st = fstat(&target).map_err(|e| format!("stat {d}: {e}"))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
            return Err(format!("mask target {d} is not a directory"));
        }
        let tmpfs = empty_readonly_tmpfs().map_err(|e| format!("tmpfs to mask {d}: {e}"))?;
        attach(&tmpfs, &target).map_err(|e| format!("mask {d} with a tmpfs: {e}"))?;
    }
    for p in READONLY_PATHS {
        let Some(target) = roots.open_target(p)? else {
            continue;
        };
        let clone = open_tree(
            target.as_fd(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
        )
        .map_err(|e| format!("bind {p} for read-only: {e}"))?;
        super::set_mount_attr(&clone, READONLY_ATTRS, true)
            .map_err(|e| format!("make {p} read-only: {e}"))?;
        attach(&clone, &target).map_err(|e| format!("attach read-only {p}: {e}"))?;
    }
    Ok(())
}

/// MOUNT_ATTR_RDONLY | NOSUID | NODEV | NOEXEC (linux/mount.h).
const READONLY_ATTRS: u64 = 0x1 | 0x2 | 0x4 | 0x8;

/// open_tree(2) `OPEN_TREE_CLONE` of the file or directory `fd` (flags: AT_EMPTY_PATH and
/// maybe AT_RECURSIVE).
fn open_tree(fd: BorrowedFd<'_>, flags: libc::c_uint) -> Result<OwnedFd, Errno> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    // SAFETY: an empty NUL-terminated path with AT_EMPTY_PATH names `fd`; returns a new fd.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            fd.as_raw_fd(),
            c"".as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | flags,
        )
    };
    // SAFETY: r is a fresh fd owned by nobody else when non-negative.
    Errno::result(r).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// move_mount(2) of the detached mount `mnt` onto the file or directory `target` (an O_PATH fd).
fn attach(mnt: &OwnedFd, target: &OwnedFd) -> Result<(), Errno> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    // SAFETY: both fds are valid, both paths empty NUL-terminated strings.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    Errno::result(r).map(drop)
}

/// A detached, read-only (nosuid, nodev, noexec) tmpfs with [`MASK_TMPFS_OPTIONS`], made with
/// fsopen(2), fsconfig(2) and fsmount(2).
fn empty_readonly_tmpfs() -> Result<OwnedFd, Errno> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    // SAFETY: valid NUL-terminated name; returns a new fd or -1.
    let fs = Errno::result(unsafe {
        libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), FSOPEN_CLOEXEC)
    })?;
    // SAFETY: fs is a fresh fd we own.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as i32) };
    for (k, v) in MASK_TMPFS_OPTIONS {
        let (k, v) = (
            std::ffi::CString::new(*k).map_err(|_| Errno::EINVAL)?,
            std::ffi::CString::new(*v).map_err(|_| Errno::EINVAL)?,
        );
        // SAFETY: fs is an fs context fd; key and value are valid C strings.
        Errno::result(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0,
            )
        })?;
    }
    // SAFETY: as above; CMD_CREATE takes no key or value.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: fs is a created fs context; returns a new mount fd or -1.
    let m = Errno::result(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            READONLY_ATTRS as libc::c_uint,
        )
    })?;
    // SAFETY: m is a fresh mount fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(m as i32) })
}

/// One line of /proc/PID/mountinfo (proc(5)): mount point, per-mount options, fs type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Mount id (field 1).
    pub id: u64,
    /// Id of the parent mount (field 2; the mount's own id for the root of the tree).
    pub parent: u64,
    /// Mount point, octal escapes (`\040`) decoded.
    pub mount_point: String,
    /// Per-mount options (`ro,nosuid,...`).
    pub options: Vec<String>,
    /// File system type (after the ` - ` separator).
    pub fstype: String,
}

impl MountEntry {
    /// True if the mount is read-only.
    pub fn readonly(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse the text of a mountinfo file; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let fstype = right.split(' ').next()?;
            Some(MountEntry {
                id: f.first()?.parse().ok()?,
                parent: f.get(1)?.parse().ok()?,
                mount_point: unescape(f.get(4)?),
                options: f.get(5)?.split(',').map(str::to_string).collect(),
                fstype: fstype.to_string(),
            })
        })
        .collect()
}

/// The topmost mount at `path` in `entries` (later lines are mounted over earlier ones).
fn top_mount<'a>(entries: &'a [MountEntry], path: &str) -> Option<&'a MountEntry> {
    entries.iter().rev().find(|e| e.mount_point == path)
}

/// True if statvfs(2) of `path` reports ST_RDONLY.
fn st_rdonly(path: &str) -> bool {
    nix::sys::statvfs::statvfs(path)
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false)
}

/// Fail closed: after the whole setup, every mask and read-only path that exists must show in
/// /proc/self/mountinfo as a mount of its own (a masked directory: a read-only tmpfs; a
/// read-only path: a read-only mount) and pass the matching stat check: masked files are the
/// character device 1:3, masked directories empty and ST_RDONLY, read-only paths ST_RDONLY;
/// /sys is read-only.
pub fn verify_masks() -> Result<(), String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("read /proc/self/mountinfo to check the masks: {e}"))?;
    let entries = parse_mountinfo(&text);
    let exists = |p: &str| std::fs::symlink_metadata(p).is_ok();
    for f in PROC_MASKED_FILES.iter().filter(|f| exists(f)) {
        if top_mount(&entries, f).is_none() {
            return Err(format!("{f} is not masked (no mount in mountinfo)"));
        }
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let md = std::fs::symlink_metadata(f).map_err(|e| format!("stat {f}: {e}"))?;
        if !md.file_type().is_char_device() || (major(md.rdev()), minor(md.rdev())) != (1, 3) {
            return Err(format!("{f} is not masked by /dev/null (1:3)"));
        }
    }
    for d in masked_dirs(std::path::Path::new("/sys"))
        .iter()
        .filter(|d| exists(d))
    {
        match top_mount(&entries, d) {
            Some(e) if e.fstype == "tmpfs" && e.readonly() => {}
            other => return Err(format!("{d} is not masked by a read-only tmpfs: {other:?}")),
        }
        let empty = std::fs::read_dir(d)
            .map(|mut r| r.next().is_none())
            .unwrap_or(false);
        if !st_rdonly(d) || !empty {
            return Err(format!(
                "{d} is not an empty read-only directory after masking"
            ));
        }
    }
    for p in READONLY_PATHS.iter().filter(|p| exists(p)) {
        match top_mount(&entries, p) {
            Some(e) if e.readonly() => {}
            other => return Err(format!("{p} is not mounted read-only: {other:?}")),
        }
        if !st_rdonly(p) {
            return Err(format!("{p} is still writable after the read-only mount"));
        }
    }
    if !st_rdonly("/sys") {
        return Err(String::from("/sys is writable after the read-only mount"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse_with_escapes_and_optional_fields() {
        let text = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw
30 22 0:40 / /proc/acpi ro,nosuid,nodev,noexec - tmpfs tmpfs ro,nr_blocks=1
31 22 0:5 /null /proc/kcore rw,nosuid - tmpfs tmpfs rw
32 1 0:50 / /a\\040b rw - ext4 /dev/sda1 rw
broken line
";
        let e = parse_mountinfo(text);
        assert_eq!(e.len(), 4);
        assert_eq!(e[1].mount_point, "/proc/acpi");
        assert!(e[1].readonly() && e[1].fstype == "tmpfs");
        assert!(!e[2].readonly());
        assert_eq!(e[3].mount_point, "/a b");
        assert_eq!(top_mount(&e, "/proc/acpi"), Some(&e[1]));
        assert_eq!(top_mount(&e, "/proc/keys"), None);
    }

    #[test]
    fn thermal_throttle_dirs_are_listed_per_cpu() {
        let dir = std::env::temp_dir().join(format!("masks-test-{}", std::process::id()));
        for c in ["cpu0", "cpu1", "cpufreq", "cpu2"] {
            std::fs::create_dir_all(dir.join("devices/system/cpu").join(c)).unwrap();
        }
        for c in ["cpu0", "cpu1", "cpufreq"] {
            std::fs::create_dir_all(
                dir.join("devices/system/cpu")
                    .join(c)
                    .join("thermal_throttle"),
            )
            .unwrap();
        }
        let v = masked_dirs(&dir);
        assert_eq!(&v[..MASKED_DIRS.len()], MASKED_DIRS);
        assert_eq!(
            &v[MASKED_DIRS.len()..],
            [
                "/sys/devices/system/cpu/cpu0/thermal_throttle",
                "/sys/devices/system/cpu/cpu1/thermal_throttle"
            ]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
