//! `vserver NAME build -m host|skeleton|rootfs`: make a guest root and write `NAME.toml`.
//!
//! - `host`: a guest from the host's own distribution in about a second. It *shares* the host's
//!   `/usr` (and `/bin`, `/lib`... where they are not symlinks into `/usr`) through read-only
//!   bind mounts made at start, and gets its own *copy* of `/etc` with the host's secrets and
//!   identity removed (password hashes, ssh host keys, TLS private keys, machine-id, fstab,
//!   vserver's own configs), its own `/var` with the package database, and empty `/root`,
//!   `/home`, `/tmp`. Host package upgrades reach the guest at once; the guest cannot install
//!   packages into `/usr`. A backup of the guest directory holds only its own files.
//! - `skeleton`: the bare directory tree plus config, then an optional command run with
//!   `VSERVER_ROOT` set (to fill it).
//! - `rootfs --source DIR|TARBALL`: copy an existing tree, or unpack a tarball with tar(1).
//!
//! A failed build removes only what it created; `--force` renames an existing root and config
//! to `*.~EPOCH~` first, as util-vserver does.

use super::fs::{self as sfs, FsKind};
use super::progress::Progress;
use crate::config::{
    self, parse_cidr, validate_hostname, validate_ifname, GuestConfig, InitStyle, InterfaceConfig,
    MountConfig,
};
use crate::guest::state::now_unix;
use crate::paths::{validate_guest_name, Paths};
use std::fs;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A build failure; the message names the guest, the step and the path.
#[derive(Debug, thiserror::Error)]
#[error("{name}: build failed: {message}")]
pub struct BuildError {
    /// Guest name.
    pub name: String,
    /// What failed.
    pub message: String,
}

/// The build method and its arguments.
#[derive(Debug, Clone)]
pub enum BuildMethod {
    /// From the host's distribution (shared /usr, sanitised copy of /etc).
    Host,
    /// Bare tree, then `command` (may be empty).
    Skeleton {
        /// Command run after the tree is made, with VSERVER_ROOT set.
        command: Vec<String>,
    },
    /// Copy of a directory or contents of a tarball.
    Rootfs {
        /// Directory or tarball (tar, tar.gz, tar.xz, tar.zst).
        source: PathBuf,
    },
    /// util-vserver's `template`: the contents of a tarball (tar, tar.gz, tar.xz, tar.zst).
    Template {
        /// The tarball.
        tarball: PathBuf,
    },
    /// A Debian or Ubuntu tree made by debootstrap(8) (`--variant=minbase`), booting systemd
    /// unless another init style is asked for ([`DEBOOTSTRAP_SYSTEMD`] are added to `include`).
    Debootstrap {
        /// Suite or code name: `bookworm`, `stable`, `jammy`...
        dist: String,
        /// Mirror URL; default the first of the host's apt sources, else deb.debian.org.
        mirror: Option<String>,
        /// More packages to install (debootstrap's `--include`).
        include: Vec<String>,
    },
    /// A copy of another guest (or of a directory) with a fresh identity.
    Clone {
        /// A configured guest's name, or a directory.
        source: String,
    },
    /// A copy of a directory made by rsync(1) (`-aHAXS --numeric-ids`).
    Rsync {
        /// Source directory (a local path or an rsync source such as `host:/dir`).
        source: String,
    },
    /// A guest sharing the root of guest `base` read-only through overlayfs, with its own
    /// private upper layer at `ROOT.overlay/upper`.
    TemplateGuest {
        /// The base guest's name.
        base: String,
    },
}

/// Packages a debootstrap guest gets besides `--include` unless another init style than
/// systemd, or another init package, is asked for: what a stock Debian server boots with
/// (systemd as /sbin/init, the system bus that logind and systemctl's clients use, and the
/// PAM module that gives logins a logind session).
pub const DEBOOTSTRAP_SYSTEMD: &[&str] = &["systemd-sysv", "dbus", "libpam-systemd"];

/// Options of `vserver NAME build`.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Guest name.
    pub name: String,
    /// Method.
    pub method: BuildMethod,
    /// Context id; None assigns the lowest free one from 40000.
    pub context: Option<u32>,
    /// Host name; default the guest name.
    pub hostname: Option<String>,
    /// Interfaces as `[MODE:][DEV:]IP/PREFIX[,IP/PREFIX...]` ([`parse_interface_arg`]).
    pub interfaces: Vec<String>,
    /// Masquerade the outbound traffic of the veth interfaces (NAT).
    pub nat: bool,
    /// MTU in bytes of the veth and macvlan interfaces.
    pub mtu: Option<u32>,
    /// Port forwards as `HOST_PORT:GUEST_PORT[/tcp|/udp]` ([`parse_forward_arg`]).
    pub forwards: Vec<String>,
    /// Init style; default builtin.
    pub init_style: Option<InitStyle>,
    /// Guest root; default ROOTBASE/NAME.
    pub root: Option<PathBuf>,
    /// Move an existing root and config aside instead of refusing.
    pub force: bool,
    /// Disk quota (`"2G"`).
    pub disk_size: Option<String>,
    /// How the quota is enforced; None picks one ([`super::quota::auto_backend`]).
    pub disk_backend: Option<config::DiskBackend>,
    /// Write `userns = true`: the guest runs in its own user namespace.
    pub userns: bool,
}

/// Parse `--interface [MODE:][DEV:]IP/PREFIX[,IP/PREFIX...]`: MODE is `veth` (default),
/// `macvlan` or `classic`; DEV is the bridge (veth), the host NIC (macvlan) or the host interface
/// that carries the addresses (classic). IPv6 addresses contain ':', so a part is taken as DEV
/// only when the whole rest does not parse as addresses by itself.
pub fn parse_interface_arg(s: &str) -> Result<InterfaceConfig, String> {
    if s.is_empty() {
        return Err(String::from(
            "empty; give [MODE:][DEV:]IP/PREFIX[,IP/PREFIX...] or none",
        ));
    }
    if s.ends_with(',') || s.contains(",,") {
        return Err(String::from("an empty address (a stray comma?)"));
    }
    let addrs_ok = |t: &str| !t.is_empty() && t.split(',').all(|a| parse_cidr(a).is_ok());
    let mut rest = s;
    let mut mode = config::NetMode::Veth;
    if let Some((m, r)) = rest.split_once(':') {
        let m = match m {
            "veth" => Some(config::NetMode::Veth),
            "macvlan" => Some(config::NetMode::Macvlan),
            "classic" => Some(config::NetMode::Classic),
            _ => None,
        };
        if let Some(m) = m {
            mode = m;
            rest = r;
        }
    }
    let mut dev = None;
    if !addrs_ok(rest) {
        if let Some((d, r)) = rest.split_once(':') {
            if validate_ifname(d).is_ok() && addrs_ok(r) {
                dev = Some(d.to_string());
                rest = r;
            }
        }
    }
    if !addrs_ok(rest) {
        // Say what is wrong with the part that is not an address list.
        let parts: Vec<&str> = s.splitn(3, ':').collect();
        let known = ["veth", "macvlan", "classic"];
        if parts.len() == 3
            && !known.contains(&parts[0])
            && validate_ifname(parts[0]).is_ok()
            && !parts[0].chars().all(|c| c.is_ascii_hexdigit())
        {
            return Err(format!(
                "unknown mode '{}' (veth, macvlan or classic)",
                parts[0]
            ));
        }
    }
    for a in rest.split(',') {
        parse_cidr(a)?;
    }
    let (bridge, dev) = match mode {
        config::NetMode::Veth => (dev.unwrap_or_else(config::default_bridge), None),
        _ => (config::default_bridge(), dev),
    };
    Ok(InterfaceConfig {
        mode,
        address: config::StrList(rest.split(',').map(String::from).collect()),
        bridge,
        dev,
        gateway: Default::default(),
        name: None,
        nat: false,
        mtu: None,
    })
}

/// Parse `--forward HOST_PORT:GUEST_PORT[/tcp|/udp]`.
pub fn parse_forward_arg(s: &str) -> Result<config::ForwardConfig, String> {
    let (ports, protocol) = s.split_once('/').unwrap_or((s, "tcp"));
    let (h, g) = ports
        .split_once(':')
        .ok_or_else(|| format!("'{s}' is not HOST_PORT:GUEST_PORT[/tcp|/udp]"))?;
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("'{p}' is not a port (1-65535)"))
    };
    if protocol != "tcp" && protocol != "udp" {
        return Err(format!("'{protocol}' is neither tcp nor udp"));
    }
    Ok(config::ForwardConfig {
        host_port: port(h)?,
        guest_port: port(g)?,
        protocol: protocol.to_string(),
    })
}

/// Context ids taken: (id, by whom) for every configured guest but `except`, and every live
/// reservation of another guest. Reservations are read before the configs: a build finishing
/// meanwhile writes its NAME.toml before it drops its reservation, so one of the two is seen
/// (read the other way round, a config not yet written and a reservation just dropped made two
/// parallel builds take the same id). Only [`reserve_xid`] calls this, under its lock.
fn used_xids(paths: &Paths, except: &str) -> Vec<(u32, String)> {
    let mut used: Vec<(u32, String)> = Vec::new();
    let this_boot = boot_id();
    for e in std::fs::read_dir(reservations_dir(paths))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Some(x) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // A reservation dropped while we read it is gone (its config holds the id now).
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let mut fields = text.split_whitespace();
        let (name, pid, boot) = (
            fields.next().unwrap_or(""),
            fields.next().unwrap_or(""),
            fields.next(),
        );
        // Written in an earlier boot (the host crashed during a build): its pid may name an
        // unrelated process of this boot.
        let earlier_boot = boot.is_some_and(|b| Some(b) != this_boot.as_deref());
        let dead = earlier_boot
            || pid.parse::<i32>().is_ok_and(|p| {
                p <= 0 || nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_err()
            });
        if dead {
            let _ = std::fs::remove_file(e.path());
        } else if name != except {
            used.push((
                x,
                format!("guest {name}, being built or imported (pid {pid})"),
            ));
        }
    }
    used.extend(
        crate::guest::configured_guests(paths)
            .iter()
            .filter(|(n, _)| n != except)
            .filter_map(|(n, p)| {
                config::load_guest_config(p)
                    .ok()
                    .map(|c| (c.context, format!("guest {n} ({})", p.display())))
            }),
    );
    used
}

/// syncfs(2) the file system holding `root` (every dirty page of it, not only the tree's).
///
/// Errors: the root cannot be opened, or syncfs fails (an I/O error writing back).
fn sync_tree(root: &Path) -> Result<(), String> {
    let f = fs::File::open(root).map_err(|e| format!("open {}: {e}", root.display()))?;
    nix::unistd::syncfs(&f).map_err(|e| format!("syncfs {}: {e}", root.display()))
}

/// This boot's id (/proc/sys/kernel/random/boot_id, random(4)); None where it cannot be read.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

fn reservations_dir(paths: &Paths) -> std::path::PathBuf {
    paths.config_dir.join(".xid-reserved")
}

/// A context id held for a guest being built or imported, from allocation until its NAME.toml
/// is written (then the config holds it): `CONFIG/.xid-reserved/XID` with "NAME PID BOOT_ID".
/// Removed when dropped; a reservation whose process died, or that an earlier boot wrote (a
/// host crash during the build), is dropped by the next allocation.
pub struct XidReservation {
    /// The context id.
    pub xid: u32,
    file: std::path::PathBuf,
}

impl Drop for XidReservation {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Allocate a context id for guest `name` atomically across processes (parallel builds and
/// imports got the same one): under an exclusive flock(2) of `CONFIG/.xid-reserved/lock`,
/// `wanted` (checked free) or the lowest free id from 40000 is reserved.
///
/// Errors: `wanted` is used by another guest or reservation (named); the reservation cannot be
/// written.
pub fn reserve_xid(
    paths: &Paths,
    name: &str,
    wanted: Option<u32>,
) -> Result<XidReservation, String> {
    use std::os::fd::AsRawFd;
    let dir = reservations_dir(paths);
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .map_err(|e| format!("open {}: {e}", dir.join("lock").display()))?;
    // SAFETY: flock on a live fd we own; released when `lock` is dropped.
    while unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Err(format!(
                "lock {}: {}",
                dir.display(),
                std::io::Error::last_os_error()
            ));
        }
    }
    let used = used_xids(paths, name);
    let xid = match wanted {
        Some(x) => {
            if let Some((_, by)) = used.iter().find(|(u, _)| *u == x) {
                return Err(format!("context {x} is already used by {by}"));
            }
            x
        }
        None => (config::XID_AUTO_START..=config::XID_MAX_STATIC)
            .find(|x| !used.iter().any(|(u, _)| u == x))
            .ok_or_else(|| String::from("no free context id left"))?,
    };
    let file = dir.join(xid.to_string());
    let boot = boot_id().unwrap_or_default();
    std::fs::write(&file, format!("{name} {} {boot}\n", std::process::id()))
        .map_err(|e| format!("write {}: {e}", file.display()))?;
    drop(lock);
    Ok(XidReservation { xid, file })
}

/// Build a guest. `progress` receives one line per step.
///
/// Errors: [`BuildError`]; what the build created is removed again.
pub fn build(
    paths: &Paths,
    o: &BuildOptions,
    progress: &mut dyn Progress,
) -> Result<GuestConfig, BuildError> {
    let err = |m: String| BuildError {
        name: o.name.clone(),
        message: m,
    };
    crate::testhook::init();
    validate_guest_name(&o.name).map_err(err)?;
    if let Some(h) = &o.hostname {
        validate_hostname(h).map_err(err)?;
    }
    let cfg_path = paths.config_file(&o.name);
    let root = o
        .root
        .clone()
        .unwrap_or_else(|| paths.default_root(&o.name));
    if !root.is_absolute() {
        return Err(err(format!(
            "guest root {} must be an absolute path",
            root.display()
        )));
    }
    let mut interfaces = Vec::new();
    // `--interface none`: loopback only (the same as no --interface), said explicitly.
    if o.interfaces.iter().any(|i| i == "none") && o.interfaces.len() > 1 {
        return Err(err(String::from(
            "--interface none (loopback only) cannot be combined with other interfaces",
        )));
    }
    for i in o.interfaces.iter().filter(|i| *i != "none") {
        let mut ifc = parse_interface_arg(i).map_err(|m| err(format!("--interface {i}: {m}")))?;
        // util-vserver's `--interface eth0:IP/24` names a NIC: say so now, not at start.
        if ifc.mode == config::NetMode::Veth {
            if let Ok(mut nl) = crate::net::netlink::Netlink::open() {
                crate::guest::network::bridge_use(&mut nl, &ifc.bridge)
                    .map_err(|m| err(format!("--interface {i}: {m}")))?;
            }
        }
        ifc.nat = o.nat && ifc.mode == config::NetMode::Veth;
        if ifc.mode != config::NetMode::Classic {
            ifc.mtu = o.mtu;
        }
        interfaces.push(ifc);
    }
    if o.nat && !interfaces.iter().any(|i| i.nat) {
        return Err(err(String::from("--nat needs a veth --interface")));
    }
    if !o.forwards.is_empty() && !interfaces.iter().any(|i| i.mode == config::NetMode::Veth) {
        return Err(err(String::from("--forward needs a veth --interface")));
    }
    let mut forwards = Vec::new();
    for f in &o.forwards {
        forwards.push(parse_forward_arg(f).map_err(|m| err(format!("--forward {f}: {m}")))?);
    }
    if let Some(x) = o.context {
        if !(config::XID_MIN..=config::XID_MAX_STATIC).contains(&x) {
            return Err(err(format!(
                "--context {x} is out of range {}-{}",
                config::XID_MIN,
                config::XID_MAX_STATIC
            )));
        }
    }
    // Held until NAME.toml is written (to the end of this function): a parallel build
    // never gets the same id.
    let reservation = reserve_xid(paths, &o.name, o.context).map_err(err)?;
    let xid = reservation.xid;
    let plan = plan_method(paths, o, &root).map_err(err)?;
    if let Some(other) = super::manage::other_guest_at(paths, &o.name, &root) {
        return Err(err(format!(
            "{} is (or is in, or holds) the root of guest {other}",
            root.display()
        )));
    }
    // The disk quota's size and backend, checked before anything is made.
    if let Some(sz) = &o.disk_size {
        match config::parse_size(sz) {
            Ok(b) if b >= (16 << 20) && b != u64::MAX => {}
            Ok(_) => return Err(err(format!("--disk-size {sz}: at least 16M"))),
            Err(m) => return Err(err(format!("--disk-size {sz}: {m}"))),
        }
    }
    let backend = match (&o.disk_size, o.disk_backend) {
        (None, Some(b)) => {
            return Err(err(format!("--disk-backend {b} needs --disk-size")));
        }
        (None, None) => None,
        (Some(_), Some(b)) => Some(b),
        (Some(_), None) => Some(super::quota::auto_backend(nearest_existing(&root))),
    };
    let image = backend == Some(config::DiskBackend::Image);
    match backend {
        Some(config::DiskBackend::Project) => {
            super::quota::check_project(nearest_existing(&root)).map_err(err)?
        }
        Some(config::DiskBackend::Btrfs)
            if sfs::fs_kind(nearest_existing(&root)).ok() != Some(FsKind::Btrfs) =>
        {
            return Err(err(format!(
                "--disk-backend btrfs: {} is not on btrfs",
                root.display()
            )));
        }
        _ => {}
    }
    let exists = |p: &Path| fs::symlink_metadata(p).is_ok();
    let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
    if exists(&cfg_path) || exists(&root) {
        if !o.force {
            return Err(err(format!(
                "{} or {} already exists; use --force to move them aside",
                cfg_path.display(),
                root.display()
            )));
        }
        let running = crate::guest::state::RunDir::new(&paths.run_dir, &o.name)
            .read_state()
            .map(|st| st.init_alive())
            .unwrap_or(false);
        if running {
            return Err(err(format!(
                "{} is running; stop it before rebuilding it",
                o.name
            )));
        }
        let stamp = now_unix();
        let img = super::disk::image_path(&root);
        let (ovl, snaps) = (
            super::overlay::overlay_dir(&root),
            super::snapshot::snapshot_dir(&root),
        );
        for p in [&cfg_path, &root, &img, &ovl, &snaps] {
            if !exists(p) {
                continue;
            }
            // A name no earlier --force used, even within the same second.
            let aside = (0..)
                .map(|i| match i {
                    0 => PathBuf::from(format!("{}.~{stamp}~", p.display())),
                    i => PathBuf::from(format!("{}.~{stamp}.{i}~", p.display())),
                })
                .find(|a| !exists(a))
                .unwrap_or_else(|| PathBuf::from(format!("{}.~{stamp}.x~", p.display())));
            if let Err(e) = fs::rename(p, &aside) {
                // Put back what was already moved: a failed build loses nothing.
                for (from, to) in moved.iter().rev() {
                    let _ = fs::rename(to, from);
                }
                return Err(err(format!("move {} aside: {e}", p.display())));
            }
            progress.line(&format!("moved {} to {}", p.display(), aside.display()));
            moved.push((p.to_path_buf(), aside));
        }
    }
    fs::create_dir_all(&paths.config_dir)
        .map_err(|e| err(format!("create {}: {e}", paths.config_dir.display())))?;
    if let Some(parent) = root.parent() {
        make_root_parent(paths, parent, progress).map_err(err)?;
    }
    let parent_fs = root
        .parent()
        .and_then(|p| sfs::fs_kind(p).ok())
        .unwrap_or(FsKind::Other(0));
    // On btrfs a guest root is a subvolume of its own (snapshots, quota groups); a clone of a
    // subvolume is a snapshot of it.
    let made = match &plan {
        _ if image || parent_fs != FsKind::Btrfs || matches!(plan, Plan::Base { .. }) => {
            fs::create_dir(&root).map_err(|e| format!("create {}: {e}", root.display()))
        }
        Plan::Clone { root: src, .. } if sfs::is_subvolume(src) => {
            progress.line(&format!("snapshotting {}", src.display()));
            sfs::snapshot_subvolume(src, &root, false)
        }
        _ => sfs::create_subvolume(&root),
    };
    made.map_err(err)?;
    let _ = fs::set_permissions(&root, fs::Permissions::from_mode(0o755));
    let img = super::disk::image_path(&root);
    if let (Some(sz), true) = (&o.disk_size, image) {
        let made = config::parse_size(sz)
            .and_then(|b| {
                if b < (16 << 20) {
                    Err(String::from("a disk image needs at least 16M"))
                } else {
                    Ok(b)
                }
            })
            .and_then(|bytes| super::disk::create_image(&img, bytes, None))
            .and_then(|()| super::disk::mount_image(&img, &root));
        if let Err(m) = made {
            let _ = super::disk::unmount(&root);
            let _ = fs::remove_file(&img);
            let _ = fs::remove_dir(&root);
            return Err(err(format!("--disk-size {sz}: {m}")));
        }
        progress.line(&format!("made a {sz} disk image {}", img.display()));
        let _ = fs::set_permissions(&root, fs::Permissions::from_mode(0o755));
    }
    let hostname = o.hostname.clone().unwrap_or_else(|| o.name.clone());
    let mut cfg = GuestConfig {
        context: xid,
        hostname: Some(hostname.clone()),
        domainname: None,
        root: o.root.clone(),
        mark: Vec::new(),
        depends: Vec::new(),
        disabled: false,
        userns: o.userns,
        interface: interfaces,
        forward: forwards,
        accounting_interval: 60,
        capabilities: Default::default(),
        init: config::InitConfig {
            style: o.init_style.unwrap_or_default(),
            ..Default::default()
        },
        stop: Default::default(),
        mount: Vec::new(),
        limits: Default::default(),
        rlimits: Default::default(),
        seccomp: Default::default(),
        disk: crate::config::DiskConfig {
            size: o.disk_size.clone(),
            backend,
            ..Default::default()
        },
    };
    let filled = match (&o.method, &plan) {
        (BuildMethod::Host, _) => build_host(&root, &mut cfg, o.init_style, progress),
        (BuildMethod::Skeleton { command }, _) => build_skeleton(&root, &o.name, command, progress),
        (BuildMethod::Rootfs { source }, _) => build_rootfs(&root, source, progress),
        (BuildMethod::Template { tarball }, _) => build_rootfs(&root, tarball, progress),
        (
            BuildMethod::Debootstrap {
                dist,
                mirror,
                include,
            },
            _,
        ) => {
            let mut pkgs = include.clone();
            // An init of the user's choice (sysvinit-core, runit-init, openrc) replaces ours.
            let own_init = pkgs.iter().any(|p| {
                ["sysvinit-core", "runit-init", "openrc", "systemd-sysv"].contains(&p.as_str())
            });
            if !own_init && matches!(o.init_style, None | Some(InitStyle::Systemd)) {
                for p in DEBOOTSTRAP_SYSTEMD {
                    if !pkgs.iter().any(|x| x == p) {
                        pkgs.push(p.to_string());
                    }
                }
            }
            build_debootstrap(&root, dist, mirror.as_deref(), &pkgs, progress)
        }
        (BuildMethod::Rsync { source }, _) => build_rsync(&root, source, progress),
        (_, Plan::Clone { root: src, config }) => {
            build_clone(&root, src, config.as_ref(), &mut cfg, o, progress)
        }
        (_, Plan::Base { base, config }) => {
            build_template_guest(&root, base, config, &mut cfg, o, progress)
        }
        (BuildMethod::Clone { .. } | BuildMethod::TemplateGuest { .. }, Plan::Plain) => {
            Err(String::from("internal: no plan for the method"))
        }
    }
    .map(|()| {
        // A tree that boots systemd gets the systemd style, unless the user chose one (or the
        // guest it was cloned from had one): from a debootstrap, a tarball or a copy.
        let detect = matches!(
            o.method,
            BuildMethod::Rootfs { .. }
                | BuildMethod::Template { .. }
                | BuildMethod::Debootstrap { .. }
                | BuildMethod::Rsync { .. }
                | BuildMethod::Skeleton { .. }
        ) || matches!(plan, Plan::Clone { config: None, .. });
        if detect && o.init_style.is_none() {
            let plain = config::InitConfig {
                style: InitStyle::Plain,
                ..Default::default()
            };
            if crate::guest::systemd::boots_systemd(&root, &plain) {
                cfg.init.style = InitStyle::Systemd;
                progress.line("the tree boots systemd: init style systemd");
            }
        }
        if matches!(o.method, BuildMethod::Host) && o.init_style.is_none() {
            // The host's own init style: the guest starts its services as the host does.
            if let Some((style, why)) = host_init_style() {
                cfg.init.style = style;
                progress.line(&format!("{why}: init style {style:?}").to_lowercase());
            }
        }
        if cfg.stop.kill_timeout.is_none() {
            // A plain guest whose /sbin/init is systemd is stopped as one too.
            let systemd = crate::guest::systemd::boots_systemd(&root, &cfg.init);
            cfg.stop.kill_timeout = Some(cfg.stop.kill_timeout_secs(systemd));
        }
    })
    .and_then(|()| {
        // A template guest's identity goes into its upper layer, through the mounted overlay.
        let _mounted = match &plan {
            Plan::Base { .. } => Some(super::overlay::MountGuard::mount(&cfg, paths, &root)?),
            _ => None,
        };
        // Every tree that may come with another machine's identity gets its own: a
        // debootstrap's is made fresh by its own package scripts, a host build copies none.
        if !matches!(
            o.method,
            BuildMethod::Host | BuildMethod::Debootstrap { .. }
        ) {
            drop_inherited_identity(&root, progress)?;
        }
        if !matches!(o.method, BuildMethod::Debootstrap { .. }) {
            fresh_ssh_host_keys(&root, &hostname, progress)?;
        }
        write_identity(&root, &hostname, &cfg)
    })
    .and_then(|()| {
        if matches!(
            backend,
            Some(config::DiskBackend::Project | config::DiskBackend::Btrfs)
        ) {
            progress.line(&format!(
                "disk quota {} by {} quota",
                o.disk_size.as_deref().unwrap_or(""),
                backend.unwrap_or_default()
            ));
        }
        super::quota::apply(&cfg.disk, &root, xid, true)
    })
    .and_then(|()| {
        cfg.validate()
            .map_err(|fe| format!("{}: {}", config::key_path_string(&fe.path), fe.message))?;
        // The tree reaches the disk before the config that says the guest exists: after a
        // host crash a guest is either whole or a root without a config (which the next
        // build names), never a config over files the crash emptied.
        sync_tree(&root)?;
        crate::testhook::pause("build-synced");
        crate::paths::write_atomically(&cfg_path, &cfg.to_toml(&o.name))
            .map_err(|e| format!("write {}: {e}", cfg_path.display()))
    });
    if image {
        // The image is mounted only while the guest runs.
        if let Err(m) = super::disk::unmount(&root) {
            progress.line(&format!("warning: {m}"));
        }
    }
    if let Err(m) = filled {
        // Only what this build made: the root directory it created, its disk image and the
        // config it wrote.
        if image {
            let _ = fs::remove_file(&img);
        }
        if let Err(e) = sfs::remove_tree(&root) {
            progress.line(&format!("warning: {e}"));
        }
        if matches!(plan, Plan::Base { .. }) {
            let _ = sfs::remove_tree(&super::overlay::overlay_dir(&root));
        }
        let _ = fs::remove_file(&cfg_path);
        // And what --force moved aside comes back.
        for (from, to) in moved.iter().rev() {
            let _ = fs::rename(to, from);
        }
        return Err(err(m));
    }
    progress.line(&format!(
        "guest {} built at {} with context {xid}; config {}",
        o.name,
        root.display(),
        cfg_path.display()
    ));
    Ok(cfg)
}

/// The init style of a guest built from this host, when it is not the builtin one: `systemd`
/// when the host's `/sbin/init` is systemd, `sysv` when the host boots sysvinit's rc scripts
/// (`/etc/init.d/rc` present), with the reason to print.
fn host_init_style() -> Option<(InitStyle, &'static str)> {
    let plain = config::InitConfig {
        style: InitStyle::Plain,
        ..Default::default()
    };
    if crate::guest::systemd::boots_systemd(Path::new("/"), &plain) {
        Some((InitStyle::Systemd, "the host boots systemd"))
    } else if Path::new("/etc/init.d/rc").is_file() {
        Some((InitStyle::Sysv, "the host boots sysv rc scripts"))
    } else {
        None
    }
}

/// The nearest existing directory at or above `p` (for checks on a path not made yet).
fn nearest_existing(p: &Path) -> &Path {
    let mut q = p;
    while fs::symlink_metadata(q).is_err() {
        match q.parent() {
            Some(r) => q = r,
            None => break,
        }
    }
    q
}

/// Make the directory `parent` that will hold a guest root: missing directories are created
/// mode 0700, the root base is made 0700 (the barrier: host users must not reach into guest
/// roots, where guest root can plant setuid binaries; util-vserver made /vservers mode 000 for
/// the same reason), and an existing directory open to other users gets a warning line.
///
/// Errors: a directory cannot be created or the root base cannot be chmod'ed.
pub fn make_root_parent(
    paths: &Paths,
    parent: &Path,
    progress: &mut dyn Progress,
) -> Result<(), String> {
    let mut missing = Vec::new();
    let mut p = parent;
    while fs::symlink_metadata(p).is_err() {
        missing.push(p.to_path_buf());
        match p.parent() {
            Some(q) => p = q,
            None => break,
        }
    }
    for d in missing.iter().rev() {
        match fs::create_dir(d) {
            Ok(()) => fs::set_permissions(d, fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("chmod 0700 {}: {e}", d.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("create {}: {e}", d.display())),
        }
    }
    if parent == paths.root_base {
        fs::set_permissions(parent, fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("chmod 0700 {}: {e}", parent.display()))?;
    } else if !missing.iter().any(|m| m == parent)
        && fs::metadata(parent)
            .map(|m| m.mode() & 0o007 != 0)
            .unwrap_or(false)
    {
        progress.line(&format!(
            "warning: {} is open to other users; make it mode 0700 so they cannot run the \
             guest's setuid files",
            parent.display()
        ));
    }
    Ok(())
}

/// What a method needs resolved before anything is created.
enum Plan {
    /// Nothing beyond the method's own arguments.
    Plain,
    /// Clone: the source root, and the source guest's config when it is a guest.
    Clone {
        root: PathBuf,
        config: Option<GuestConfig>,
    },
    /// Template guest: the base guest's name and config.
    Base { base: String, config: GuestConfig },
}

/// Check a method's arguments and resolve its source (before the build creates anything).
fn plan_method(paths: &Paths, o: &BuildOptions, root: &Path) -> Result<Plan, String> {
    match &o.method {
        BuildMethod::Clone { source } => {
            if validate_guest_name(source).is_ok() && paths.config_file(source).exists() {
                let g = crate::guest::Guest::load(paths, source).map_err(|e| e.to_string())?;
                if g.config.disk.template.is_some() || g.config.disk.uses_image() {
                    return Err(format!(
                        "guest {source} keeps its files in an overlay or a disk image; clone a \
                         guest with a plain root (or build another template guest on its base)"
                    ));
                }
                let src = g.root();
                if g.running().is_some() {
                    return Err(format!(
                        "guest {source} is running; stop it first so the copy is consistent"
                    ));
                }
                Ok(Plan::Clone {
                    root: src,
                    config: Some(g.config),
                })
            } else {
                let src = PathBuf::from(source);
                if !src.is_absolute() || !src.is_dir() {
                    return Err(format!(
                        "--source {source} is neither a configured guest nor an absolute directory"
                    ));
                }
                if src == root || root.starts_with(&src) {
                    return Err(format!("--source {source} holds the new root itself"));
                }
                refuse_running_tree(paths, &src)?;
                Ok(Plan::Clone {
                    root: src,
                    config: None,
                })
            }
        }
        BuildMethod::TemplateGuest { base } => {
            validate_guest_name(base)?;
            if base == &o.name {
                return Err(String::from("a guest cannot be its own template"));
            }
            if o.disk_size.is_some() {
                return Err(String::from(
                    "--disk-size does not apply to a template guest (its files live in \
                     ROOT.overlay/upper beside the base)",
                ));
            }
            let g = crate::guest::Guest::load(paths, base).map_err(|e| e.to_string())?;
            if g.config.disk.template.is_some() {
                return Err(format!(
                    "guest {base} is itself a template guest (of {}); build on that base",
                    g.config.disk.template.as_deref().unwrap_or("?")
                ));
            }
            if g.config.disk.uses_image() {
                return Err(format!(
                    "guest {base} lives on a disk image; a base must be a plain directory"
                ));
            }
            if g.running().is_some() {
                return Err(format!(
                    "guest {base} is running; a base must not change under its guests, stop it first"
                ));
            }
            Ok(Plan::Base {
                base: base.clone(),
                config: g.config,
            })
        }
        BuildMethod::Debootstrap { dist, .. } => {
            if dist.is_empty()
                || !dist
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
            {
                return Err(format!("--dist '{dist}' is not a suite name"));
            }
            Ok(Plan::Plain)
        }
        BuildMethod::Rootfs { source } if source.is_dir() => {
            refuse_running_tree(paths, source)?;
            Ok(Plan::Plain)
        }
        BuildMethod::Rsync { source } if Path::new(source).is_absolute() => {
            refuse_running_tree(paths, Path::new(source))?;
            Ok(Plan::Plain)
        }
        _ => Ok(Plan::Plain),
    }
}

/// Refuse to copy `src` when it is, holds or lies in the root of a running guest: the guest
/// could swap directories for symlinks under a copy made by path.
fn refuse_running_tree(paths: &Paths, src: &Path) -> Result<(), String> {
    for (n, _) in crate::guest::configured_guests(paths) {
        if let Ok(g) = crate::guest::Guest::load(paths, &n) {
            let r = g.root();
            if (r.starts_with(src) || src.starts_with(&r)) && g.running().is_some() {
                return Err(format!(
                    "--source {} is (or holds, or is in) the root of running guest {n}; stop \
                     it first",
                    src.display()
                ));
            }
        }
    }
    Ok(())
}

/// The mirror of the host's first apt source, else deb.debian.org.
fn default_mirror() -> String {
    let mut texts = Vec::new();
    if let Ok(t) = fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut ps: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        ps.sort();
        for p in ps {
            if let Ok(t) = fs::read_to_string(p) {
                texts.push(t);
            }
        }
    }
    for t in texts {
        for l in t.lines().map(str::trim) {
            let url = if let Some(rest) = l.strip_prefix("URIs:") {
                rest.split_whitespace().next()
            } else if let Some(rest) = l.strip_prefix("deb ") {
                rest.split_whitespace().find(|w| w.contains("://"))
            } else {
                None
            };
            if let Some(u) = url {
                if (u.starts_with("http://") || u.starts_with("https://"))
                    && !u.contains("security")
                {
                    return u.to_string();
                }
            }
        }
    }
    String::from("http://deb.debian.org/debian")
}

/// Run `cmd`, passing each line of its output to `progress.update` as a transient note.
fn run_with_progress(
    mut cmd: Command,
    what: &str,
    progress: &mut dyn Progress,
    total: Option<u64>,
    count: &dyn Fn(&str) -> Option<u64>,
) -> Result<(), String> {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("run {:?}: {e}", cmd.get_program()))?;
    let stderr = child.stderr.take();
    let errs = std::thread::spawn(move || {
        let mut v = String::new();
        if let Some(mut e) = stderr {
            let _ = std::io::Read::read_to_string(&mut e, &mut v);
        }
        v
    });
    progress.begin(what, total, "");
    let mut last = 0;
    // debootstrap says why it failed on stdout ("E: Couldn't find these debs: ...").
    let mut out_errors: Vec<String> = Vec::new();
    if let Some(out) = child.stdout.take() {
        let mut r = std::io::BufReader::new(out);
        let mut buf = Vec::new();
        // rsync's progress ends lines with \r.
        loop {
            buf.clear();
            let n = r.read_until(b'\n', &mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            for part in buf.split(|b| *b == b'\r') {
                let line = String::from_utf8_lossy(part).trim().to_string();
                if line.is_empty() {
                    continue;
                }
                if let Some(c) = count(&line) {
                    last = c;
                }
                if line.starts_with("E:") && out_errors.len() < 5 {
                    out_errors.push(line.clone());
                }
                progress.update(last, &line);
            }
        }
    }
    let st = child.wait().map_err(|e| format!("wait: {e}"))?;
    progress.end();
    let mut err_text = errs.join().unwrap_or_default();
    for e in out_errors {
        err_text.push('\n');
        err_text.push_str(&e);
    }
    if !st.success() {
        let tail: Vec<&str> = err_text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .rev()
            .take(5)
            .collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!("{what} failed ({st}): {}", tail.join(" / ")));
    }
    Ok(())
}

fn build_debootstrap(
    root: &Path,
    dist: &str,
    mirror: Option<&str>,
    include: &[String],
    progress: &mut dyn Progress,
) -> Result<(), String> {
    let mirror = mirror.map(str::to_string).unwrap_or_else(default_mirror);
    for p in include {
        if p.is_empty()
            || p.starts_with('-')
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.:~_".contains(c))
        {
            return Err(format!("--include: '{p}' is not a package name"));
        }
    }
    let with = if include.is_empty() {
        String::new()
    } else {
        format!(" with {}", include.join(", "))
    };
    progress.line(&format!("debootstrap {dist} from {mirror} (minbase){with}"));
    let mut c = Command::new("debootstrap");
    c.arg("--variant=minbase");
    if !include.is_empty() {
        c.arg(format!("--include={}", include.join(",")));
    }
    c.arg(dist).arg(root).arg(&mirror).env("LC_ALL", "C");
    run_with_progress(c, "debootstrap", progress, None, &|_| None)?;
    // debootstrap leaves the host's name and resolver; the build writes the guest's identity.
    make_dirs(root)
}

fn build_rsync(root: &Path, source: &str, progress: &mut dyn Progress) -> Result<(), String> {
    let local = Path::new(source);
    if local.is_absolute() && !local.is_dir() {
        return Err(format!("--source {source} is not a directory"));
    }
    let total = if local.is_absolute() {
        Some(sfs::tree_size(local).0)
    } else {
        None
    };
    progress.line(&format!("rsync {source}"));
    let mut c = Command::new("rsync");
    c.args([
        "-aHAXS",
        "--numeric-ids",
        "--one-file-system",
        "--info=progress2",
        "--no-inc-recursive",
    ])
    .arg(format!("{}/", source.trim_end_matches('/')))
    .arg(format!("{}/", root.display()));
    // "  1,234,567  12%  ..." : the bytes copied so far come first.
    run_with_progress(c, "rsync", progress, total, &|l| {
        l.split_whitespace()
            .next()
            .and_then(|n| n.replace(',', "").parse().ok())
    })?;
    make_dirs(root)
}

fn build_clone(
    root: &Path,
    src: &Path,
    src_cfg: Option<&GuestConfig>,
    cfg: &mut GuestConfig,
    o: &BuildOptions,
    progress: &mut dyn Progress,
) -> Result<(), String> {
    // A btrfs snapshot already holds the files; anything else is copied (reflinked where the
    // file system can).
    let snapshotted = fs::read_dir(root)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if !snapshotted {
        let (bytes, _) = sfs::tree_size(src);
        progress.line(&format!(
            "copying {} ({}; shared blocks where the file system can)",
            src.display(),
            crate::stats::format::format_size(bytes)
        ));
        sfs::copy_tree_cp(src, root, None)?;
    }
    if let Some(sc) = src_cfg {
        // What makes the clone behave like its source; identity and addresses are its own.
        cfg.mark = sc.mark.clone();
        cfg.capabilities = sc.capabilities.clone();
        if o.init_style.is_none() {
            cfg.init = sc.init.clone();
        }
        cfg.stop = sc.stop.clone();
        cfg.mount = sc.mount.clone();
        cfg.limits = sc.limits.clone();
        cfg.rlimits = sc.rlimits.clone();
        cfg.disk.unify_exclude = sc.disk.unify_exclude.clone();
        if !sc.interface.is_empty() && o.interfaces.is_empty() {
            progress.line(
                "note: the source's interfaces were not copied (their addresses are the \
                 source's); give --interface for the clone's own",
            );
        }
    }
    make_dirs(root)
}

/// Remove the identity a copied tree carries from its source (another machine, a tarball, a
/// guest): its ssh host keys (`etc/ssh/ssh_host_*`, new ones are made by
/// [`fresh_ssh_host_keys`]), D-Bus's own machine-id file and systemd's random seed. The
/// machine-id, host name and hosts file are written afresh by [`write_identity`].
///
/// Errors: `etc/ssh` is a symlink, or a key cannot be removed (naming it).
fn drop_inherited_identity(root: &Path, progress: &mut dyn Progress) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    // Directories are opened inside the root (no symlink or mount leads out, a symlinked
    // directory itself is refused) and entries removed relative to them, never through a path
    // a running base guest could change meanwhile.
    let dir = |rel: &str| match sfs::open_in_root(root, rel, libc::O_DIRECTORY | libc::O_RDONLY, 0)
    {
        Ok(d) => Ok(Some(d)),
        Err(_) if sfs::open_in_root(root, rel, libc::O_PATH, 0).is_err() => Ok(None),
        Err(m) => Err(format!("{m}; refusing to touch it")),
    };
    let unlink = |d: &fs::File, name: &str, only_files: bool| -> Result<bool, String> {
        let c = std::ffi::CString::new(name).map_err(|_| format!("bad name {name:?}"))?;
        // SAFETY: fstatat/unlinkat on a directory fd we own and a NUL-terminated name.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstatat(
                d.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            ) != 0
            {
                return Ok(false);
            }
            if only_files && st.st_mode & libc::S_IFMT != libc::S_IFREG {
                return Ok(false);
            }
            if libc::unlinkat(d.as_raw_fd(), c.as_ptr(), 0) != 0 {
                return Err(format!(
                    "remove {name} in the guest: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        Ok(true)
    };
    let mut removed = 0;
    if let Some(ssh) = dir("etc/ssh")? {
        let names: Vec<String> = fs::read_dir(format!("/proc/self/fd/{}", ssh.as_raw_fd()))
            .map_err(|e| format!("list etc/ssh in the guest: {e}"))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("ssh_host_"))
            .collect();
        for n in names {
            if unlink(&ssh, &n, false)? {
                removed += 1;
            }
        }
    }
    if removed > 0 {
        progress.line(&format!(
            "removed the {removed} ssh host key files the tree came with"
        ));
    }
    // D-Bus's own copy (Debian's is a symlink to /etc/machine-id: kept) and the random seed.
    for (d, f) in [
        ("var/lib/dbus", "machine-id"),
        ("var/lib/systemd", "random-seed"),
    ] {
        if let Ok(Some(d)) = dir(d) {
            unlink(&d, f, true)?;
        }
    }
    Ok(())
}

fn build_template_guest(
    root: &Path,
    base: &str,
    base_cfg: &GuestConfig,
    cfg: &mut GuestConfig,
    o: &BuildOptions,
    progress: &mut dyn Progress,
) -> Result<(), String> {
    let ovl = super::overlay::overlay_dir(root);
    for d in [ovl.clone(), ovl.join("upper"), ovl.join("work")] {
        fs::create_dir(&d).map_err(|e| format!("create {}: {e}", d.display()))?;
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("chmod {}: {e}", d.display()))?;
    }
    // The upper layer's top directory is the guest's "/": world-readable like any root.
    let _ = fs::set_permissions(ovl.join("upper"), fs::Permissions::from_mode(0o755));
    cfg.disk.template = Some(base.to_string());
    cfg.mount = base_cfg.mount.clone();
    cfg.capabilities = base_cfg.capabilities.clone();
    if o.init_style.is_none() {
        cfg.init = base_cfg.init.clone();
    }
    progress.line(&format!(
        "sharing the root of {base} read-only; this guest's changes go to {}",
        ovl.join("upper").display()
    ));
    Ok(())
}

const SKELETON_DIRS: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("etc", 0o755),
    ("root", 0o700),
    ("home", 0o755),
    ("tmp", 0o1777),
    ("run", 0o755),
    ("var", 0o755),
    ("var/log", 0o755),
    ("var/tmp", 0o1777),
    ("var/lib", 0o755),
    ("var/cache", 0o755),
    ("var/spool", 0o755),
    ("mnt", 0o755),
    ("opt", 0o755),
    ("srv", 0o755),
];

/// True if some component of `rel` below `root` is a symlink or not a directory (a source tree
/// may point `var` at a host path; the build must not create or write anything through it).
fn leaves_root(root: &Path, rel: &str) -> bool {
    let mut p = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for (i, c) in parts.iter().enumerate() {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => return true,
            Ok(m) if !m.is_dir() && i + 1 < parts.len() => return true,
            _ => {}
        }
    }
    false
}

fn make_dirs(root: &Path) -> Result<(), String> {
    for (d, mode) in SKELETON_DIRS {
        if leaves_root(root, d) {
            return Err(format!(
                "{}/{d} in the guest tree is (or is under) a symlink; refusing to create it",
                root.display()
            ));
        }
        let p = root.join(d);
        if fs::symlink_metadata(&p).is_err() {
            fs::create_dir(&p).map_err(|e| format!("create {}: {e}", p.display()))?;
            fs::set_permissions(&p, fs::Permissions::from_mode(*mode))
                .map_err(|e| format!("chmod {}: {e}", p.display()))?;
        }
    }
    Ok(())
}

/// Paths under /etc never copied into a host-built guest (secrets and host identity).
pub const HOST_ETC_EXCLUDES: &[&str] = &[
    "shadow-",
    "gshadow-",
    "passwd-",
    "group-",
    "subuid-",
    "subgid-",
    ".pwd.lock",
    "ssh/ssh_host_",
    "ssl/private",
    // The host's self-signed certificate (its name; the key stays in ssl/private).
    "ssl/certs/ssl-cert-snakeoil.pem",
    "machine-id",
    "vservers",
    "krb5.keytab",
    "NetworkManager/system-connections",
    "wireguard",
    "openvpn",
    "ipsec.secrets",
    "ipsec.d/private",
    "ppp/chap-secrets",
    "ppp/pap-secrets",
    "letsencrypt",
    "security/opasswd",
    "samba/smbpasswd",
    "sudoers.d/",
    "docker/key.json",
    "ldap.secret",
];

fn excluded(rel: &str) -> bool {
    HOST_ETC_EXCLUDES
        .iter()
        .any(|x| rel == *x || rel.starts_with(x) || (x.ends_with('/') && rel.starts_with(x)))
}

/// Copy the tree `src` to `dst` (which must not exist): directories, regular files, symlinks,
/// with modes and owners; sockets, fifos and devices are skipped. `skip(rel)` excludes paths.
pub fn copy_tree(src: &Path, dst: &Path, skip: &dyn Fn(&str) -> bool) -> Result<u64, String> {
    fn walk(
        src: &Path,
        dst: &Path,
        rel: &str,
        skip: &dyn Fn(&str) -> bool,
        n: &mut u64,
    ) -> Result<(), String> {
        let md = fs::symlink_metadata(src).map_err(|e| format!("stat {}: {e}", src.display()))?;
        let ft = md.file_type();
        if ft.is_symlink() {
            let t = fs::read_link(src).map_err(|e| format!("readlink {}: {e}", src.display()))?;
            std::os::unix::fs::symlink(&t, dst)
                .map_err(|e| format!("symlink {}: {e}", dst.display()))?;
        } else if ft.is_dir() {
            fs::create_dir(dst).map_err(|e| format!("create {}: {e}", dst.display()))?;
            let mut entries: Vec<_> = fs::read_dir(src)
                .map_err(|e| format!("read {}: {e}", src.display()))?
                .flatten()
                .collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let name = e.file_name();
                let r = if rel.is_empty() {
                    name.to_string_lossy().into_owned()
                } else {
                    format!("{rel}/{}", name.to_string_lossy())
                };
                if skip(&r) {
                    continue;
                }
                walk(&src.join(&name), &dst.join(&name), &r, skip, n)?;
            }
            lchown(dst, Some(md.uid()), Some(md.gid()))
                .map_err(|e| format!("chown {}: {e}", dst.display()))?;
            fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))
                .map_err(|e| format!("chmod {}: {e}", dst.display()))?;
        } else if ft.is_file() {
            fs::copy(src, dst).map_err(|e| format!("copy {}: {e}", src.display()))?;
        } else {
            return Ok(());
        }
        // Owner first: chown(2) clears the setuid and setgid bits the mode then sets.
        lchown(dst, Some(md.uid()), Some(md.gid()))
            .map_err(|e| format!("chown {}: {e}", dst.display()))?;
        if ft.is_file() {
            fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))
                .map_err(|e| format!("chmod {}: {e}", dst.display()))?;
        }
        *n += 1;
        Ok(())
    }
    let mut n = 0;
    walk(src, dst, "", skip, &mut n)?;
    Ok(n)
}

/// Replace every password hash in shadow-format text by `*` (no password login).
pub fn strip_password_hashes(text: &str) -> String {
    text.lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split(':').collect();
            if f.len() > 1 && !f[1].is_empty() {
                f[1] = "*";
            }
            f.join(":")
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn build_host(
    root: &Path,
    cfg: &mut GuestConfig,
    init_style: Option<InitStyle>,
    progress: &mut dyn Progress,
) -> Result<(), String> {
    progress.line("making the directory tree");
    make_dirs(root)?;
    fs::create_dir(root.join("usr")).map_err(|e| format!("create {}/usr: {e}", root.display()))?;
    cfg.mount.push(MountConfig {
        source: "/usr".into(),
        target: "/usr".into(),
        readonly: true,
    });
    for d in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let hp = Path::new("/").join(d);
        match fs::symlink_metadata(&hp) {
            Ok(md) if md.file_type().is_symlink() => {
                let t =
                    fs::read_link(&hp).map_err(|e| format!("readlink {}: {e}", hp.display()))?;
                std::os::unix::fs::symlink(t, root.join(d))
                    .map_err(|e| format!("symlink {d}: {e}"))?;
            }
            Ok(md) if md.is_dir() => {
                fs::create_dir(root.join(d)).map_err(|e| format!("create {d}: {e}"))?;
                cfg.mount.push(MountConfig {
                    source: hp.clone(),
                    target: hp,
                    readonly: true,
                });
            }
            _ => {}
        }
    }
    progress.line("copying /etc without the host's secrets");
    fs::remove_dir(root.join("etc")).map_err(|e| format!("prepare etc: {e}"))?;
    copy_tree(Path::new("/etc"), &root.join("etc"), &excluded)?;
    for f in ["shadow", "gshadow"] {
        let p = root.join("etc").join(f);
        if let Ok(t) = fs::read_to_string(&p) {
            fs::write(&p, strip_password_hashes(&t))
                .map_err(|e| format!("write {}: {e}", p.display()))?;
        }
    }
    fs::write(
        root.join("etc/fstab"),
        "# guest file systems are set up by vserver\n",
    )
    .map_err(|e| format!("write etc/fstab: {e}"))?;
    let _ = fs::remove_file(root.join("etc/mtab"));
    std::os::unix::fs::symlink("../proc/self/mounts", root.join("etc/mtab"))
        .map_err(|e| format!("symlink etc/mtab: {e}"))?;
    // The host's services stay the host's: the guest starts what a fresh server would.
    let services = super::services::reset_host_services_by_dpkg(root)?;
    if !services.disabled.is_empty() {
        progress.line(&format!(
            "the host's own services left disabled in the guest: {} (enable one inside with \
             systemctl enable NAME)",
            services
                .disabled
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !services.enabled.is_empty() {
        progress.line(&format!(
            "enabled in the guest: {}",
            services
                .enabled
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if matches!(init_style, Some(InitStyle::Builtin | InitStyle::Plain)) {
        progress.line(&format!(
            "note: init style {} starts none of the guest's services (init.command runs one)",
            if init_style == Some(InitStyle::Builtin) {
                "builtin"
            } else {
                "plain"
            }
        ));
    }
    // A persistent journal where the host keeps one (systemd's default on Debian).
    if Path::new("/var/log/journal").is_dir() {
        let j = root.join("var/log/journal");
        fs::create_dir_all(&j).map_err(|e| format!("create {}: {e}", j.display()))?;
    }
    progress.line("copying the package database");
    for d in ["var/lib/dpkg", "var/lib/apt", "var/lib/ucf"] {
        let src = Path::new("/").join(d);
        if src.is_dir() {
            copy_tree(&src, &root.join(d), &|_| false)?;
        }
    }
    for (l, t) in [("var/run", "/run"), ("var/lock", "/run/lock")] {
        let _ = std::os::unix::fs::symlink(t, root.join(l));
    }
    Ok(())
}

fn build_skeleton(
    root: &Path,
    name: &str,
    command: &[String],
    progress: &mut dyn Progress,
) -> Result<(), String> {
    make_dirs(root)?;
    if let Some((prog, args)) = command.split_first() {
        progress.line(&format!("running {prog}"));
        let st = Command::new(prog)
            .args(args)
            .env("VSERVER_ROOT", root)
            .env("VSERVER_NAME", name)
            .current_dir(root)
            .status()
            .map_err(|e| format!("run {prog}: {e}"))?;
        if !st.success() {
            return Err(format!("{prog} exited with {st}"));
        }
    }
    Ok(())
}

fn build_rootfs(root: &Path, source: &Path, progress: &mut dyn Progress) -> Result<(), String> {
    let md = fs::metadata(source).map_err(|e| format!("source {}: {e}", source.display()))?;
    if md.is_dir() {
        let (bytes, files) = sfs::tree_size(source);
        progress.line(&format!(
            "copying {} ({files} files, {}; shared blocks where the file system can)",
            source.display(),
            crate::stats::format::format_size(bytes)
        ));
        // Into the existing root (it may be the mount point of the guest's disk image), with
        // cp -a: owners, modes with setuid bits, hardlinks, xattrs, ACLs, file capabilities.
        sfs::copy_tree_cp(source, root, None)?;
        super::shift::forget_foreign_marker(root)?;
        fs::set_permissions(root, fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(|e| format!("chmod {}: {e}", root.display()))?;
        let n = remove_device_nodes(root)?;
        if n > 0 {
            progress.line(&format!(
                "removed {n} device nodes from the copy (a guest gets its own /dev)"
            ));
        }
    } else {
        progress.line(&format!("unpacking {}", source.display()));
        let st = Command::new("tar")
            .arg("-xpf")
            .arg(source)
            .arg("-C")
            .arg(root)
            .args([
                "--numeric-owner",
                "--xattrs",
                "--xattrs-include=*",
                // The host's own attributes (vserver's userns marker, overlayfs's) are never
                // taken from an untrusted tarball.
                "--xattrs-exclude=trusted.*",
                "--acls",
                "--exclude=./dev/*",
                "--exclude=dev/*",
            ])
            .status()
            .map_err(|e| format!("run tar: {e}"))?;
        if !st.success() {
            return Err(format!("tar could not unpack {} ({st})", source.display()));
        }
        let n = remove_device_nodes(root)?;
        if n > 0 {
            progress.line(&format!(
                "removed {n} device nodes from the unpacked tree (a guest gets its own /dev)"
            ));
        }
    }
    make_dirs(root)
}

/// Remove block and character device nodes under `root` (without following symlinks); returns
/// how many were removed.
fn remove_device_nodes(root: &Path) -> Result<usize, String> {
    use std::os::unix::fs::FileTypeExt;
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir)
            .map_err(|e| format!("read {}: {e}", dir.display()))?
            .flatten()
        {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_block_device() || ft.is_char_device() {
                fs::remove_file(e.path())
                    .map_err(|er| format!("remove device {}: {er}", e.path().display()))?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Key types `ssh-keygen -A` makes (Debian's sshd loads these).
const SSH_KEY_TYPES: &[&str] = &["rsa", "ecdsa", "ed25519"];

/// Give a guest that has an sshd configuration but no host keys (a clone, whose source's keys
/// were removed; a host build, which never copies the host's) its own: made by the host's
/// ssh-keygen(1) in a private temporary directory, then written into the guest with in-root
/// resolution (private keys mode 0600). Without ssh-keygen on the host, says how to make them
/// inside instead.
///
/// Errors: a key that cannot be made or written.
fn fresh_ssh_host_keys(
    root: &Path,
    hostname: &str,
    progress: &mut dyn Progress,
) -> Result<(), String> {
    use super::fs::{open_in_root, write_in_root_mode};
    if open_in_root(root, "etc/ssh/sshd_config", libc::O_PATH, 0).is_err() {
        return Ok(());
    }
    let have =
        |t: &str| open_in_root(root, &format!("etc/ssh/ssh_host_{t}_key"), libc::O_PATH, 0).is_ok();
    if SSH_KEY_TYPES.iter().any(|t| have(t)) {
        return Ok(());
    }
    let mut rnd = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut rnd))
        .map_err(|e| format!("read /dev/urandom: {e}"))?;
    let tmp = std::env::temp_dir().join(format!(
        "vserver-sshkeys-{}",
        rnd.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ));
    fs::create_dir(&tmp).map_err(|e| format!("create {}: {e}", tmp.display()))?;
    struct Gone(PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let _gone = Gone(tmp.clone());
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("chmod {}: {e}", tmp.display()))?;
    for t in SSH_KEY_TYPES {
        let key = tmp.join(format!("ssh_host_{t}_key"));
        let made = Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-t", t, "-C"])
            .arg(format!("root@{hostname}"))
            .arg("-f")
            .arg(&key)
            .stdin(std::process::Stdio::null())
            .output();
        match made {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                return Err(format!(
                    "ssh-keygen -t {t}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                progress.line(
                    "no ssh-keygen on the host: make the guest's ssh host keys inside \
                     (ssh-keygen -A)",
                );
                return Ok(());
            }
            Err(e) => return Err(format!("run ssh-keygen: {e}")),
        }
        for (suffix, mode) in [("", 0o600), (".pub", 0o644)] {
            let name = format!("ssh_host_{t}_key{suffix}");
            let data = fs::read(tmp.join(&name))
                .map_err(|e| format!("read {}: {e}", tmp.join(&name).display()))?;
            write_in_root_mode(root, &format!("etc/ssh/{name}"), &data, mode)?;
        }
    }
    progress.line("made the guest's own ssh host keys");
    Ok(())
}

/// Write the guest's own identity: hostname, hosts, a fresh machine-id.
fn write_identity(root: &Path, hostname: &str, cfg: &GuestConfig) -> Result<(), String> {
    let etc = root.join("etc");
    if fs::symlink_metadata(&etc)
        .map(|m| !m.is_dir())
        .unwrap_or(true)
    {
        return Err(format!("{} is not a directory", etc.display()));
    }
    // Never write through a symlink, FIFO or device the source tree planted: every component
    // is resolved inside the guest root.
    let w = |f: &str, data: String| {
        super::fs::write_in_root(root, &format!("etc/{f}"), data.as_bytes())
    };
    w("hostname", format!("{hostname}\n"))?;
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for i in &cfg.interface {
        for a in &i.address.0 {
            if let Some((a, _)) = a.split_once('/') {
                hosts.push_str(&format!("{a}\t{hostname}\n"));
            }
        }
    }
    if cfg.interface.is_empty() {
        hosts.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    w("hosts", hosts)?;
    let mut id = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut id))
        .map_err(|e| format!("read /dev/urandom: {e}"))?;
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    w("machine-id", format!("{hex}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reservation written in an earlier boot (a host crash during a build) holds nothing,
    /// even when its pid names a live process of this boot; one of this boot does.
    #[test]
    fn a_reservation_of_an_earlier_boot_is_dropped() {
        let dir = std::env::temp_dir().join(format!("vs-resv-{}", std::process::id()));
        let paths = Paths {
            config_dir: dir.join("etc"),
            root_base: dir.join("root"),
            run_dir: dir.join("run"),
            log_dir: dir.join("log"),
        };
        let resv = reservations_dir(&paths);
        std::fs::create_dir_all(&resv).unwrap();
        let me = std::process::id();
        std::fs::write(
            resv.join("40007"),
            format!("old {me} 00000000-0000-0000-0000-000000000000\n"),
        )
        .unwrap();
        let r = reserve_xid(&paths, "new", Some(40007)).expect("the stale reservation is dropped");
        assert_eq!(r.xid, 40007);
        let text = std::fs::read_to_string(resv.join("40007")).unwrap();
        assert!(text.starts_with(&format!("new {me} ")), "{text}");
        // This boot's reservation of a live process holds.
        let e = reserve_xid(&paths, "other", Some(40007)).map(|r| r.xid);
        assert!(e.as_ref().is_err_and(|m| m.contains("guest new")), "{e:?}");
        drop(r);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn interface_args() {
        use config::NetMode;
        let i = parse_interface_arg("10.77.0.2/24").unwrap();
        assert_eq!(
            (i.address.0.as_slice(), i.bridge.as_str(), i.mode),
            (&["10.77.0.2/24".to_string()][..], "vsbr0", NetMode::Veth)
        );
        let i = parse_interface_arg("br9:10.0.0.5/16").unwrap();
        assert_eq!(i.bridge, "br9");
        let i = parse_interface_arg("fd00::2/64").unwrap();
        assert_eq!(i.address.0, ["fd00::2/64"]);
        // "2001" would be a valid interface name, but the whole parses as an address.
        let i = parse_interface_arg("2001:db8::1/64").unwrap();
        assert_eq!((i.address.0.len(), i.bridge.as_str()), (1, "vsbr0"));
        let i = parse_interface_arg("veth:br9:10.0.0.5/16,fd00::5/64").unwrap();
        assert_eq!((i.bridge.as_str(), i.address.0.len()), ("br9", 2));
        let i = parse_interface_arg("macvlan:eth1:192.168.1.50/24").unwrap();
        assert_eq!((i.mode, i.dev.as_deref()), (NetMode::Macvlan, Some("eth1")));
        let i = parse_interface_arg("classic:10.1.2.3/32").unwrap();
        assert_eq!((i.mode, i.dev), (NetMode::Classic, None));
        assert!(parse_interface_arg("10.0.0.5").is_err());
        let e = parse_interface_arg("bogus:thing:10.0.0.5/24").unwrap_err();
        assert!(e.contains("unknown mode 'bogus'"), "{e}");
        let e = parse_interface_arg("br0:10.0.0.5/24,").unwrap_err();
        assert!(e.contains("stray comma"), "{e}");
        assert!(parse_interface_arg("").unwrap_err().contains("empty"));
        let f = parse_forward_arg("8080:80").unwrap();
        assert_eq!(
            (f.host_port, f.guest_port, f.protocol.as_str()),
            (8080, 80, "tcp")
        );
        assert_eq!(parse_forward_arg("53:5353/udp").unwrap().protocol, "udp");
        assert!(parse_forward_arg("0:80").is_err());
        assert!(parse_forward_arg("80").is_err());
        assert!(parse_forward_arg("1:2/sctp").is_err());
    }

    #[test]
    fn hashes_are_stripped() {
        let t = strip_password_hashes(
            "root:$6$abc$def:19000:0:99999:7:::\nbin:*:19000::::::\nx::1::::::",
        );
        assert!(t.starts_with("root:*:19000"));
        assert!(!t.contains("$6$"));
        assert!(t.contains("x::1"));
    }

    #[test]
    fn secrets_are_excluded() {
        assert!(excluded("shadow-"));
        assert!(excluded("ssh/ssh_host_ed25519_key"));
        assert!(excluded("ssl/private"));
        assert!(excluded("vservers"));
        assert!(!excluded("passwd"));
        assert!(!excluded("ssh/sshd_config"));
    }
}
