//! Guests whose init is systemd: telling them apart, deciding what their start needs, their
//! readiness (the notify socket) and their state (`systemctl` inside).
//!
//! systemd runs in a guest as in any container (systemd.io/CONTAINER_INTERFACE): it learns
//! `container=vserver` from its environment, finds /run, /run/lock, /tmp and a writable
//! cgroup tree already mounted ([`crate::rootfs::systemd`]), sends READY=1 to
//! `$NOTIFY_SOCKET` when it has booted, and halts on SIGRTMIN+3. The guest's root keeps the
//! secure bounding set plus CAP_SETPCAP (units with CapabilityBoundingSet= need it to lower
//! their own bounding set); sandboxing that needs CAP_SYS_ADMIN (PrivateTmp=, ProtectSystem=)
//! is skipped by systemd itself, which then runs the unit without it.

use super::{failed, Guest, GuestError};
use crate::cgroup::{CgroupLayout, Hierarchy};
use crate::config::{InitConfig, InitStyle};
use crate::rootfs::systemd::{CgroupView, LegacyHierarchy};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

/// The first systemd release that refuses cgroup v1 (it needs the unified hierarchy).
pub const FIRST_V2_ONLY: u32 = 256;
/// systemd releases before this one cannot run on the unified hierarchy (they boot only on
/// v1-only hosts here).
pub const FIRST_UNIFIED: u32 = 232;
/// Name of the file in the run directory holding the init's boot state as the monitor saw it:
/// `starting`, `ready` or `stopping`.
pub const BOOT_STATE_FILE: &str = "boot";
/// Name of the notify socket in the run directory.
pub const NOTIFY_FILE: &str = "notify";

/// What a systemd guest's start needs, decided on the host before the spawn.
#[derive(Debug, Clone)]
pub struct SystemdPlan {
    /// systemd's version in the guest tree (from `libsystemd-shared-NNN.so`), when found.
    pub version: Option<u32>,
    /// How /sys/fs/cgroup looks inside.
    pub cgroup: CgroupView,
    /// Pre-mount a tmpfs on /tmp: the guest's systemd would mount one (tmp.mount is wanted by
    /// local-fs.target and not masked) and no `[[mount]]` of the guest targets /tmp.
    pub tmp: bool,
}

/// Whether guest `g` (root `root`) boots systemd: style `systemd`, or style `plain` whose init
/// (`init.command` or `/sbin/init`, resolved inside the root) is systemd; then what its start
/// needs on this host (`layout`). Writes a machine-id when the guest has none.
///
/// Errors: a host whose cgroups cannot run this guest's systemd (v1 only, systemd 256 or
/// later), or a machine-id that cannot be written.
pub fn plan(
    g: &Guest,
    root: &Path,
    layout: &CgroupLayout,
) -> Result<Option<SystemdPlan>, GuestError> {
    if !boots_systemd(root, &g.config.init) {
        return Ok(None);
    }
    let version = version_in(root);
    let cgroup = cgroup_view(layout, version).map_err(|m| failed(&g.name, m))?;
    let tmp =
        !g.config.mount.iter().any(|m| m.target == Path::new("/tmp")) && wants_tmp_mount(root);
    ensure_machine_id(root).map_err(|m| failed(&g.name, m))?;
    Ok(Some(SystemdPlan {
        version,
        cgroup,
        tmp,
    }))
}

/// How /sys/fs/cgroup looks for a guest whose systemd has `version` on a host with `layout`:
/// the unified view wherever the host has a v2 hierarchy (hybrid hosts included: systemd
/// manages the guest's v2 tree, the limits stay on the v1 hierarchies), the legacy view only
/// on a v1-only host. The version comes from the guest's tree, which its root controls: it
/// may refuse a start, never open the v1 hierarchies (where nothing bounds the cgroups a
/// guest makes) on a host that has v2. A systemd older than [`FIRST_UNIFIED`] therefore does
/// not boot on v2 and hybrid hosts.
///
/// Errors: a v1-only host and a systemd that needs cgroup v2 ([`FIRST_V2_ONLY`] or later).
pub fn cgroup_view(layout: &CgroupLayout, version: Option<u32>) -> Result<CgroupView, String> {
    let has_v2 = layout.hierarchies.iter().any(Hierarchy::is_v2);
    let legacy: Vec<LegacyHierarchy> = layout
        .hierarchies
        .iter()
        .filter_map(|h| match h {
            Hierarchy::V1 { controllers, .. } => Some(LegacyHierarchy::of(controllers)),
            Hierarchy::V2 { .. } => None,
        })
        .collect();
    match version {
        Some(v) if !has_v2 && v >= FIRST_V2_ONLY => Err(format!(
            "its systemd {v} needs cgroup v2, and this host mounts only cgroup v1 hierarchies; \
             boot the host with systemd.unified_cgroup_hierarchy=1 (or give the guest a systemd \
             older than {FIRST_V2_ONLY})"
        )),
        _ if !has_v2 => Ok(CgroupView::Legacy(legacy)),
        _ => Ok(CgroupView::Unified),
    }
}

/// Whether the init of `init` in the tree `root` is systemd: style `systemd`, or `plain`
/// with `init.command[0]` (default `/sbin/init`) leading, through symlinks resolved inside
/// the root, to a program `systemd` in a directory `systemd` (`/lib/systemd/systemd`).
pub fn boots_systemd(root: &Path, init: &InitConfig) -> bool {
    match init.style {
        InitStyle::Systemd => true,
        InitStyle::Plain => {
            let prog = init
                .command
                .first()
                .map(String::as_str)
                .unwrap_or("/sbin/init");
            crate::storage::fs::resolve_in_root(root, prog)
                .is_ok_and(|p| p.ends_with("/systemd/systemd"))
        }
        InitStyle::Builtin | InitStyle::Sysv => false,
    }
}

/// systemd's version in the tree `root`: the NNN of `libsystemd-shared-NNN.so` (or
/// `-NNN.x.so`) in the directories distributions put it (`usr/lib/systemd`,
/// `usr/lib/<triplet>/systemd`, `usr/lib64/systemd`), read inside the root.
pub fn version_in(root: &Path) -> Option<u32> {
    let mut dirs = vec![
        "usr/lib/systemd".to_string(),
        "usr/lib64/systemd".to_string(),
    ];
    if let Ok(d) =
        crate::storage::fs::open_in_root(root, "usr/lib", libc::O_DIRECTORY | libc::O_RDONLY, 0)
    {
        // A tree is the guest's: a few multiarch directories at most are looked at.
        for name in list_dir(&d)
            .into_iter()
            .filter(|n| n.contains("-linux-"))
            .take(8)
        {
            dirs.push(format!("usr/lib/{name}/systemd"));
        }
    }
    dirs.iter().find_map(|dir| {
        let d = crate::storage::fs::open_in_root(root, dir, libc::O_DIRECTORY | libc::O_RDONLY, 0)
            .ok()?;
        list_dir(&d)
            .iter()
            .find_map(|n| parse_shared_lib_version(n))
    })
}

/// The NNN of `libsystemd-shared-NNN.so` or `libsystemd-shared-NNN.x.so`.
pub fn parse_shared_lib_version(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix("libsystemd-shared-")?
        .strip_suffix(".so")?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Names in the directory `dir` (an open directory handle), at most 4096.
fn list_dir(dir: &std::fs::File) -> Vec<String> {
    let Ok(d) = nix::dir::Dir::from_fd(match nix::unistd::dup(dir.as_fd()) {
        Ok(fd) => fd,
        Err(_) => return Vec::new(),
    }) else {
        return Vec::new();
    };
    d.into_iter()
        .flatten()
        .take(4096)
        .filter_map(|e| e.file_name().to_str().ok().map(str::to_string))
        .filter(|n| n != "." && n != "..")
        .collect()
}

/// Whether the guest's systemd would mount a tmpfs on /tmp at boot: `tmp.mount` is wanted by
/// local-fs.target (in /usr/lib, /lib or /etc) and not masked in /etc/systemd/system.
pub fn wants_tmp_mount(root: &Path) -> bool {
    use crate::storage::fs::open_in_root;
    let exists = |p: &str| open_in_root(root, p, libc::O_PATH, 0).is_ok();
    let masked = crate::storage::fs::read_link_in_root(root, "etc/systemd/system/tmp.mount")
        .is_some_and(|p| p == "/dev/null");
    !masked
        && [
            "usr/lib/systemd/system/local-fs.target.wants/tmp.mount",
            "lib/systemd/system/local-fs.target.wants/tmp.mount",
            "etc/systemd/system/local-fs.target.wants/tmp.mount",
        ]
        .iter()
        .any(|p| exists(p))
}

/// Give the guest a machine-id (etc/machine-id, 32 hex digits) when it has none or an empty
/// one: systemd would otherwise make a new one at every boot, and without CAP_SYS_ADMIN it
/// cannot mount it over /etc/machine-id. `uninitialized` (an image asking for first-boot
/// setup) is left for systemd.
///
/// Errors: the file cannot be written inside the root.
pub fn ensure_machine_id(root: &Path) -> Result<(), String> {
    use std::io::Read;
    let mut text = String::new();
    // Non-blocking: a FIFO planted there must not hang the start.
    if let Ok(f) = crate::storage::fs::open_in_root(
        root,
        "etc/machine-id",
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
        0,
    ) {
        if f.metadata().is_ok_and(|m| m.is_file()) {
            let _ = f.take(128).read_to_string(&mut text);
        }
    }
    if !text.trim().is_empty() {
        return Ok(());
    }
    let mut id = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut id))
        .map_err(|e| format!("read /dev/urandom: {e}"))?;
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    crate::storage::fs::write_in_root(root, "etc/machine-id", format!("{hex}\n").as_bytes())
}

/// The host's end of a guest's notify socket (sd_notify(3)): a datagram socket bound at
/// `RUN/NAME/notify`, which the guest finds at /run/host/notify.
pub struct NotifySocket {
    fd: OwnedFd,
}

impl NotifySocket {
    /// Bind a fresh socket at `path` (a stale one is replaced), mode 0600, owned by
    /// `owner` (uid, gid) when given: the guest's root in its user namespace, which must be
    /// allowed to send.
    ///
    /// Errors: the path and the OS error.
    pub fn bind(path: &Path, owner: Option<(u32, u32)>) -> Result<NotifySocket, String> {
        use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, UnixAddr};
        let _ = std::fs::remove_file(path);
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(|e| format!("notify socket: {e}"))?;
        let addr = UnixAddr::new(path).map_err(|e| format!("{}: {e}", path.display()))?;
        bind(fd.as_raw_fd(), &addr).map_err(|e| format!("bind {}: {e}", path.display()))?;
        // A small queue: a guest flooding it loses datagrams instead of host memory.
        let _ = nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::RcvBuf, &32768);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("chmod {}: {e}", path.display()))?;
        if let Some((u, g)) = owner {
            std::os::unix::fs::chown(path, Some(u), Some(g))
                .map_err(|e| format!("chown {}: {e}", path.display()))?;
        }
        Ok(NotifySocket { fd })
    }

    /// The socket, to poll.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Read every queued message (at most 64, each cut at 4 KiB) and what they say.
    pub fn drain(&self) -> Notified {
        let mut n = Notified::default();
        let mut buf = [0u8; 4096];
        for _ in 0..64 {
            match nix::sys::socket::recv(
                self.fd.as_raw_fd(),
                &mut buf,
                nix::sys::socket::MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(len) => n.merge(parse_notify(&buf[..len])),
                Err(_) => break,
            }
        }
        n
    }
}

/// What notify messages said (sd_notify(3) assignments, one per line).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Notified {
    /// READY=1: startup finished.
    pub ready: bool,
    /// STOPPING=1: shutdown began.
    pub stopping: bool,
    /// The last STATUS= text (control characters dropped, at most 200 characters).
    pub status: Option<String>,
}

impl Notified {
    fn merge(&mut self, o: Notified) {
        self.ready |= o.ready;
        self.stopping |= o.stopping;
        if o.status.is_some() {
            self.status = o.status;
        }
    }
}

/// Parse one notify datagram.
pub fn parse_notify(msg: &[u8]) -> Notified {
    let mut n = Notified::default();
    for line in String::from_utf8_lossy(msg).lines() {
        match line.split_once('=') {
            Some(("READY", "1")) => n.ready = true,
            Some(("STOPPING", "1")) => n.stopping = true,
            Some(("STATUS", v)) => {
                n.status = Some(v.chars().filter(|c| !c.is_control()).take(200).collect())
            }
            _ => {}
        }
    }
    n
}

/// The state of a running systemd guest, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SystemdState {
    /// `starting` (not ready yet), `running`, `degraded`, `stopping`, ... (systemctl
    /// is-system-running's words), or `unknown` when the guest did not answer.
    pub state: String,
    /// Names of the failed units.
    pub failed_units: Vec<String>,
}

/// Ask the running guest `g`'s systemd for its state: `starting` until the monitor saw
/// READY=1, else `systemctl show` and, with failed units, `systemctl list-units --failed`
/// run inside the guest (5 s for both; the output is the guest's, so only plain words and
/// unit names are taken from it).
pub fn state(g: &Guest) -> SystemdState {
    let boot = std::fs::read_to_string(g.run_dir().file(BOOT_STATE_FILE)).unwrap_or_default();
    match boot.trim() {
        "starting" => {
            return SystemdState {
                state: "starting".into(),
                failed_units: Vec::new(),
            }
        }
        "stopping" => {
            return SystemdState {
                state: "stopping".into(),
                failed_units: Vec::new(),
            }
        }
        _ => {}
    }
    // One budget for both questions.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let left = || deadline.saturating_duration_since(std::time::Instant::now());
    let word = |s: &str| {
        !s.is_empty() && s.len() <= 32 && s.chars().all(|c| c.is_ascii_lowercase() || c == '-')
    };
    let show = super::exec::capture(
        g,
        &[
            "systemctl",
            "show",
            "--property=SystemState",
            "--property=NFailedUnits",
        ],
        left(),
    )
    .unwrap_or_default();
    let mut state = String::from("unknown");
    let mut nfailed = 0u32;
    for line in show.lines() {
        match line.split_once('=') {
            Some(("SystemState", v)) if word(v) => state = v.to_string(),
            Some(("NFailedUnits", v)) => nfailed = v.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    let mut failed_units = Vec::new();
    if nfailed > 0 {
        let list = super::exec::capture(
            g,
            &[
                "systemctl",
                "list-units",
                "--state=failed",
                "--plain",
                "--no-legend",
                "--no-pager",
            ],
            left(),
        )
        .unwrap_or_default();
        failed_units = list
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|u| is_unit_name(u))
            .take(100)
            .map(str::to_string)
            .collect();
    }
    SystemdState {
        state,
        failed_units,
    }
}

/// A plausible systemd unit name (systemd.unit(5)): at most 256 characters of letters, digits
/// and `:-_.\@`, with a suffix.
pub fn is_unit_name(s: &str) -> bool {
    s.len() <= 256
        && s.contains('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_library_versions() {
        assert_eq!(
            parse_shared_lib_version("libsystemd-shared-252.so"),
            Some(252)
        );
        assert_eq!(
            parse_shared_lib_version("libsystemd-shared-257.13-1.so"),
            Some(257)
        );
        assert_eq!(parse_shared_lib_version("libsystemd-shared.so"), None);
        assert_eq!(parse_shared_lib_version("libsystemd-core-257.so"), None);
    }

    #[test]
    fn notify_messages() {
        let n = parse_notify(b"READY=1\nSTATUS=Startup finished in 1.2s.\n");
        assert!(n.ready && !n.stopping);
        assert_eq!(n.status.as_deref(), Some("Startup finished in 1.2s."));
        let n = parse_notify(b"STOPPING=1\nSTATUS=\x1b[31mx");
        assert!(n.stopping && !n.ready);
        assert_eq!(n.status.as_deref(), Some("[31mx"));
        assert_eq!(parse_notify(b"READY=0\nX=1"), Notified::default());
    }

    #[test]
    fn cgroup_views_by_host_and_version() {
        let v1 = |c: &[&str]| Hierarchy::V1 {
            mount: format!("/sys/fs/cgroup/{}", c.join(",")).into(),
            controllers: c.iter().map(|x| x.to_string()).collect(),
        };
        let v2 = Hierarchy::V2 {
            mount: "/sys/fs/cgroup/unified".into(),
        };
        let hybrid = CgroupLayout {
            hierarchies: vec![v2.clone(), v1(&["memory"]), v1(&["name=systemd"])],
            systemd_scopes: false,
        };
        let v1only = CgroupLayout {
            hierarchies: vec![v1(&["memory"]), v1(&["name=systemd"])],
            systemd_scopes: false,
        };
        let v2only = CgroupLayout {
            hierarchies: vec![v2],
            systemd_scopes: false,
        };
        for l in [&hybrid, &v2only] {
            for v in [Some(252), Some(257), None] {
                assert_eq!(cgroup_view(l, v), Ok(CgroupView::Unified));
            }
        }
        let e = cgroup_view(&v1only, Some(257)).unwrap_err();
        assert!(e.contains("systemd 257 needs cgroup v2"), "{e}");
        let Ok(CgroupView::Legacy(list)) = cgroup_view(&v1only, Some(252)) else {
            panic!("no legacy view for systemd 252 on a v1 host")
        };
        assert_eq!(list.len(), 2);
        assert!(list.iter().any(|h| h.dir == "systemd" && h.writable));
        // The guest's tree never opens the v1 hierarchies where v2 exists.
        assert_eq!(cgroup_view(&hybrid, Some(219)), Ok(CgroupView::Unified));
        assert_eq!(cgroup_view(&v2only, Some(219)), Ok(CgroupView::Unified));
    }

    #[test]
    fn unit_names() {
        assert!(is_unit_name("nginx.service"));
        assert!(is_unit_name("getty@tty1.service"));
        assert!(!is_unit_name("\u{25cf}"));
        assert!(!is_unit_name("nginx"));
        assert!(!is_unit_name("a b.service"));
    }

    #[test]
    fn detection_in_a_tree() {
        let root = std::env::temp_dir().join(format!("vs-sd-detect-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in [
            "sbin",
            "usr/lib/systemd/system/local-fs.target.wants",
            "usr/lib/x86_64-linux-gnu/systemd",
            "etc/systemd/system",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("usr/lib/systemd/systemd"), b"").unwrap();
        std::os::unix::fs::symlink("/usr/lib/systemd/systemd", root.join("sbin/init")).unwrap();
        std::fs::write(
            root.join("usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-257.so"),
            b"",
        )
        .unwrap();
        let plain = InitConfig {
            style: InitStyle::Plain,
            ..Default::default()
        };
        assert!(boots_systemd(&root, &plain));
        assert_eq!(version_in(&root), Some(257));
        let sysv = InitConfig {
            style: InitStyle::Sysv,
            ..Default::default()
        };
        assert!(!boots_systemd(&root, &sysv));
        let other = InitConfig {
            style: InitStyle::Plain,
            command: vec!["/bin/sh".into()],
            ..Default::default()
        };
        assert!(!boots_systemd(&root, &other));
        assert!(!wants_tmp_mount(&root));
        std::fs::write(
            root.join("usr/lib/systemd/system/local-fs.target.wants/tmp.mount"),
            b"",
        )
        .unwrap();
        assert!(wants_tmp_mount(&root));
        std::os::unix::fs::symlink("/dev/null", root.join("etc/systemd/system/tmp.mount")).unwrap();
        assert!(!wants_tmp_mount(&root));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        ensure_machine_id(&root).unwrap();
        let id = std::fs::read_to_string(root.join("etc/machine-id")).unwrap();
        assert_eq!(id.trim().len(), 32);
        ensure_machine_id(&root).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("etc/machine-id")).unwrap(),
            id,
            "an existing machine-id is kept"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
