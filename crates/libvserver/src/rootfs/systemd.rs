//! What a guest's systemd finds mounted when it starts as pid 1, per systemd's container
//! interface (systemd.io/CONTAINER_INTERFACE) and what systemd-nspawn sets up: without
//! CAP_SYS_ADMIN it can mount nothing itself, and it skips what is already mounted.
//!
//! Made in the guest's mount namespace after /proc, /sys and /dev ([`super::enter_guest_root`]),
//! before the masks, in this order:
//! 1. /sys/fs/cgroup: the guest's cgroup namespace as a writable cgroup2 file system (the
//!    delegated tree, see [`crate::cgroup::DELEGATED_LEAF`]), or for an older systemd on a host
//!    with only cgroup v1 a tmpfs with the v1 hierarchies (`name=systemd` writable, the
//!    controllers read-only, as nspawn does);
//! 2. /run (tmpfs, mode 0755), /run/lock (tmpfs, noexec) and, when the guest's systemd would
//!    mount one itself (tmp.mount), /tmp (tmpfs, mode 1777);
//! 3. /run/host/container-manager (`vserver`), a boot id of its own over
//!    /proc/sys/kernel/random/boot_id, and /run/host/notify, the host's notify socket (the
//!    guest's systemd sends READY=1 there when it has booted: sd_notify(3)).

use super::{ensure_dir, m, move_mount, open_tree_clone};
use nix::mount::MsFlags;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// The name systemd's `container=` and `/run/host/container-manager` give for us
/// (`systemd-detect-virt` then says `container-other`).
pub const CONTAINER_MANAGER: &str = "vserver";
/// Where the guest finds the notify socket (`NOTIFY_SOCKET`), as in systemd-nspawn.
pub const NOTIFY_SOCKET_PATH: &str = "/run/host/notify";

/// Options of the tmpfs on /run (systemd-nspawn's limits: a fifth of RAM, 800k inodes; what
/// the guest writes there is charged to its memory cgroup).
const RUN_OPTIONS: &str = "mode=0755,size=20%,nr_inodes=800k";
/// Options of the tmpfs on /run/lock (Debian's run-lock.mount).
const RUN_LOCK_OPTIONS: &str = "mode=1777,size=5M";
/// Options of the tmpfs on /tmp (systemd's tmp.mount).
const TMP_OPTIONS: &str = "mode=1777,size=50%,nr_inodes=1m";

/// How /sys/fs/cgroup looks inside a systemd guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupView {
    /// The guest's cgroup namespace as cgroup2, writable: systemd's unified mode (required
    /// from systemd 256 on, and what every cgroup v2 or hybrid host gives).
    Unified,
    /// A read-only tmpfs holding the host's v1 hierarchies as seen from the guest's cgroup
    /// namespace: systemd's legacy mode, for hosts without cgroup v2 (and systemd older than
    /// 232 on hybrid hosts).
    Legacy(Vec<LegacyHierarchy>),
}

/// One cgroup v1 hierarchy in a [`CgroupView::Legacy`] view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyHierarchy {
    /// Directory below /sys/fs/cgroup (`cpu,cpuacct`, `systemd`).
    pub dir: String,
    /// mount(2) data naming the hierarchy (`cpu,cpuacct`, `none,name=systemd`).
    pub options: String,
    /// Writable (only `name=systemd`, which enforces nothing).
    pub writable: bool,
    /// Symlinks to `dir` for each controller of a co-mounted hierarchy (`cpu`, `cpuacct`).
    pub links: Vec<String>,
}

impl LegacyHierarchy {
    /// The view of a v1 hierarchy with `controllers` (as [`crate::cgroup::Hierarchy::V1`]
    /// lists them: `cpu`, `name=systemd`).
    pub fn of(controllers: &[String]) -> LegacyHierarchy {
        let names: Vec<&str> = controllers
            .iter()
            .map(|c| c.strip_prefix("name=").unwrap_or(c))
            .collect();
        let named = controllers.iter().any(|c| c.starts_with("name="));
        LegacyHierarchy {
            dir: names.join(","),
            options: if named {
                format!("none,{}", controllers.join(","))
            } else {
                controllers.join(",")
            },
            writable: controllers.iter().any(|c| c == "name=systemd"),
            links: if names.len() > 1 {
                names.iter().map(|n| n.to_string()).collect()
            } else {
                Vec::new()
            },
        }
    }
}

/// What to mount for a systemd guest (see the module documentation).
#[derive(Debug, Clone)]
pub struct SystemdMounts {
    /// How /sys/fs/cgroup looks.
    pub cgroup: CgroupView,
    /// Mount a tmpfs on /tmp.
    pub tmp: bool,
    /// Host path of the notify socket bound on [`NOTIFY_SOCKET_PATH`]; opened by the guest's
    /// first process ([`open_notify`]) while the host's tree is still visible.
    pub notify: Option<PathBuf>,
}

/// A detached copy of the notify socket's mount at `path` (open_tree(2)), to be attached
/// inside the guest by [`mount_all`]. Called in the new mount namespace before pivot_root and,
/// in a user namespace, while the process still has the host's uid (the run directory is
/// root's, mode 0700).
///
/// Errors: the path and the OS error.
pub fn open_notify(path: &std::path::Path) -> Result<OwnedFd, String> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{} contains NUL", path.display()))?;
    let tree = open_tree_clone(libc::AT_FDCWD, &c, 0)
        .map_err(|e| format!("open_tree the notify socket {}: {e}", path.display()))?;
    // Read-only: sending to the socket works, chmod or utimes of the host's inode do not.
    super::set_tree_attrs(
        &tree,
        super::MOUNT_ATTR_RDONLY
            | super::MOUNT_ATTR_NOSUID
            | super::MOUNT_ATTR_NODEV
            | super::MOUNT_ATTR_NOEXEC,
        None,
    )
    .map_err(|e| format!("make the notify socket's mount read-only: {e}"))?;
    Ok(tree)
}

/// Mount what `s` describes, with "/" the guest root (after pivot_root). `notify` is the tree
/// of [`open_notify`].
///
/// Errors: one line naming the step, the path and the OS error.
pub fn mount_all(s: &SystemdMounts, notify: Option<OwnedFd>) -> Result<(), String> {
    let common = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // /sys is a fresh sysfs, read-only and without guest symlinks: fs/cgroup is its own.
    match &s.cgroup {
        CgroupView::Unified => m(
            Some("cgroup2"),
            "/sys/fs/cgroup",
            Some("cgroup2"),
            common,
            None,
        )?,
        CgroupView::Legacy(list) => {
            m(
                Some("tmpfs"),
                "/sys/fs/cgroup",
                Some("tmpfs"),
                common,
                Some("mode=0755,size=64k"),
            )?;
            for h in list {
                let dir = format!("/sys/fs/cgroup/{}", h.dir);
                ensure_dir(&dir)?;
                let mut flags = common;
                if !h.writable {
                    flags |= MsFlags::MS_RDONLY;
                }
                m(
                    Some("cgroup"),
                    &dir,
                    Some("cgroup"),
                    flags,
                    Some(&h.options),
                )?;
                for l in &h.links {
                    std::os::unix::fs::symlink(&h.dir, format!("/sys/fs/cgroup/{l}"))
                        .map_err(|e| format!("symlink /sys/fs/cgroup/{l}: {e}"))?;
                }
            }
            m(
                None,
                "/sys/fs/cgroup",
                None,
                MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | common,
                Some("mode=0755,size=64k"),
            )?;
        }
    }
    ensure_dir("/run")?;
    m(
        Some("tmpfs"),
        "/run",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(RUN_OPTIONS),
    )?;
    ensure_dir("/run/lock")?;
    m(
        Some("tmpfs"),
        "/run/lock",
        Some("tmpfs"),
        common,
        Some(RUN_LOCK_OPTIONS),
    )?;
    if s.tmp {
        ensure_dir("/tmp")?;
        m(
            Some("tmpfs"),
            "/tmp",
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_STRICTATIME,
            Some(TMP_OPTIONS),
        )?;
    }
    ensure_dir("/run/host")?;
    write_new(
        "/run/host/container-manager",
        &format!("{CONTAINER_MANAGER}\n"),
        0o444,
    )?;
    boot_id()?;
    if let Some(tree) = notify {
        write_new(NOTIFY_SOCKET_PATH, "", 0o600)?;
        move_mount(&tree, NOTIFY_SOCKET_PATH)?;
    }
    Ok(())
}

/// Give the guest a boot id of its own: /proc/sys/kernel/random/boot_id is the host's, and
/// journald tells boots apart by it (`journalctl -b`, `--list-boots`). A fresh random UUID in
/// a file of the new /run tmpfs is bound read-only over it (as systemd-nspawn does), then the
/// file's name is removed.
fn boot_id() -> Result<(), String> {
    use std::io::Read;
    const SRC: &str = "/run/.vserver-boot-id";
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| format!("read /dev/urandom: {e}"))?;
    // A version 4 UUID (RFC 4122).
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    let id = format!(
        "{}-{}-{}-{}-{}\n",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    );
    write_new(SRC, &id, 0o444)?;
    let c = std::ffi::CString::new(SRC).map_err(|_| String::from("NUL in a path"))?;
    let tree =
        open_tree_clone(libc::AT_FDCWD, &c, 0).map_err(|e| format!("open_tree {SRC}: {e}"))?;
    super::set_tree_attrs(
        &tree,
        super::MOUNT_ATTR_RDONLY | super::MOUNT_ATTR_NOSUID | super::MOUNT_ATTR_NODEV,
        None,
    )
    .map_err(|e| format!("make the boot id read-only: {e}"))?;
    move_mount(&tree, "/proc/sys/kernel/random/boot_id")?;
    std::fs::remove_file(SRC).map_err(|e| format!("remove {SRC}: {e}"))
}

/// Create `path` (which must not exist: it is on a fresh tmpfs) with `data` and `mode`.
fn write_new(path: &str, data: &str, mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("create {path}: {e}"))?;
    f.write_all(data.as_bytes())
        .map_err(|e| format!("write {path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_views_of_v1_hierarchies() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let sd = LegacyHierarchy::of(&s(&["name=systemd"]));
        assert_eq!(
            (sd.dir.as_str(), sd.options.as_str(), sd.writable),
            ("systemd", "none,name=systemd", true)
        );
        assert!(sd.links.is_empty());
        let cpu = LegacyHierarchy::of(&s(&["cpu", "cpuacct"]));
        assert_eq!(
            (cpu.dir.as_str(), cpu.options.as_str(), cpu.writable),
            ("cpu,cpuacct", "cpu,cpuacct", false)
        );
        assert_eq!(cpu.links, s(&["cpu", "cpuacct"]));
        let mem = LegacyHierarchy::of(&s(&["memory"]));
        assert_eq!((mem.dir.as_str(), mem.writable), ("memory", false));
    }
}
