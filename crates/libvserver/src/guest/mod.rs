//! The guest lifecycle: load, start, stop, status, exec/enter. One process-building path
//! ([`crate::context`]) serves start and exec.

pub mod console;
pub mod exec;
pub mod group;
pub mod limits;
pub mod network;
pub mod scripts;
pub mod start;
pub mod state;
pub mod stop;
pub mod systemd;

use crate::cgroup::{CgroupError, CgroupLayout, GuestCgroup};
use crate::config::{self, ConfigError, GuestConfig};
use crate::paths::{validate_guest_name, Paths};
use state::{RunDir, RunState};
use std::path::PathBuf;

/// An error of a lifecycle operation; every message starts with the guest's name.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The name is not a valid guest name.
    #[error("{0}")]
    BadName(String),
    /// No configuration file for this guest.
    #[error("{name}: no such guest: {path} does not exist (build it with 'vserver {name} build')")]
    Unknown {
        /// Guest name.
        name: String,
        /// Expected config file.
        path: PathBuf,
    },
    /// The configuration file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The guest is not running.
    #[error("{0} is not running")]
    NotRunning(String),
    /// The guest is already running.
    #[error("{name} is already running at context {xid}")]
    AlreadyRunning {
        /// Guest name.
        name: String,
        /// Context id.
        xid: u32,
    },
    /// Another guest uses the same context id.
    #[error("{name}: cannot start: context {xid} is already used by {other}")]
    XidInUse {
        /// Guest name.
        name: String,
        /// Context id.
        xid: u32,
        /// Who has it (guest name and config path, or "a running context").
        other: String,
    },
    /// A hook script failed.
    #[error("{name}: {stage} script {path} failed: {message}")]
    Script {
        /// Guest name.
        name: String,
        /// One of [`scripts::STAGES`].
        stage: &'static str,
        /// Script path.
        path: PathBuf,
        /// Exit status or OS error.
        message: String,
    },
    /// A cgroup operation failed.
    #[error("{name}: {source}")]
    Cgroup {
        /// Guest name.
        name: String,
        /// Cause.
        source: CgroupError,
    },
    /// Something else failed; the message names the step and path.
    #[error("{name}: {message}")]
    Failed {
        /// Guest name.
        name: String,
        /// What failed, on which path, with the OS error.
        message: String,
    },
}

/// Shorthand for a [`GuestError::Failed`].
pub(crate) fn failed(name: &str, message: impl Into<String>) -> GuestError {
    GuestError::Failed {
        name: name.to_string(),
        message: message.into(),
    }
}

/// A configured guest.
#[derive(Debug, Clone)]
pub struct Guest {
    /// Guest name.
    pub name: String,
    /// Host paths in use.
    pub paths: Paths,
    /// Parsed `NAME.toml` (or the equivalent of a util-vserver configuration).
    pub config: GuestConfig,
    /// For a util-vserver configuration (`NAME.conf`, `NAME/`): one line per key without an
    /// equivalent. Empty for NAME.toml.
    pub warnings: Vec<String>,
}

impl Guest {
    /// Load guest `name` from `paths.config_dir`: `NAME.toml`, else a util-vserver
    /// configuration (`NAME.conf` or the directory `NAME/`, see [`config::legacy`]).
    ///
    /// Errors: bad name, unknown guest, invalid configuration.
    pub fn load(paths: &Paths, name: &str) -> Result<Guest, GuestError> {
        validate_guest_name(name).map_err(GuestError::BadName)?;
        let path = paths.config_file(name);
        if !path.exists() {
            if let Some(legacy) = config::legacy::load(&paths.config_dir, name) {
                let l = legacy?;
                return Ok(Guest {
                    name: name.into(),
                    paths: paths.clone(),
                    config: l.config,
                    warnings: l
                        .warnings
                        .into_iter()
                        .map(|w| format!("{}: {w}", l.source.display()))
                        .collect(),
                });
            }
            return Err(GuestError::Unknown {
                name: name.into(),
                path,
            });
        }
        let config = config::load_guest_config(&path)?;
        Ok(Guest {
            name: name.into(),
            paths: paths.clone(),
            config,
            warnings: Vec::new(),
        })
    }

    /// Load guest `name` to stop it: if NAME.toml is invalid (or gone) but the guest runs, its
    /// run state still describes it (context id, root, veths), so an administrator can always
    /// stop a guest. Returns the guest and the configuration error that was worked around.
    ///
    /// Errors: as [`Guest::load`] when the guest does not run either.
    pub fn load_for_stop(
        paths: &Paths,
        name: &str,
    ) -> Result<(Guest, Option<GuestError>), GuestError> {
        match Guest::load(paths, name) {
            Ok(g) => Ok((g, None)),
            Err(e @ (GuestError::Config(_) | GuestError::Unknown { .. })) => {
                let st = RunDir::new(&paths.run_dir, name)
                    .read_state()
                    .filter(|s| s.init_alive())
                    .ok_or(e)?;
                let mut config: GuestConfig = toml::from_str(&format!("context = {}", st.xid))
                    .map_err(|e| failed(name, format!("internal: {e}")))?;
                config.root = Some(st.root.clone());
                let g = Guest {
                    name: name.to_string(),
                    paths: paths.clone(),
                    config,
                    warnings: Vec::new(),
                };
                let why = Guest::load(paths, name).err();
                Ok((g, why))
            }
            Err(e) => Err(e),
        }
    }

    /// Guest root on the host.
    pub fn root(&self) -> PathBuf {
        self.config
            .root
            .clone()
            .unwrap_or_else(|| self.paths.default_root(&self.name))
    }

    /// Runtime directory.
    pub fn run_dir(&self) -> RunDir {
        RunDir::new(&self.paths.run_dir, &self.name)
    }

    /// `file` in the guest's log directory `LOG/NAME/` (`console.log`, `console.log.1`,
    /// `monitor.log`, `monitor.log.1`), kept across host reboots.
    pub fn log_file(&self, file: &str) -> std::path::PathBuf {
        self.paths.guest_log_dir(&self.name).join(file)
    }

    /// The guest's cgroup on this host.
    pub fn cgroup(&self) -> Result<GuestCgroup, GuestError> {
        self.cgroup_of(self.config.context)
    }

    /// The cgroup of context `xid` (a running guest keeps the id it started with, even if
    /// NAME.toml was edited since).
    pub fn cgroup_of(&self, xid: u32) -> Result<GuestCgroup, GuestError> {
        let layout = CgroupLayout::detect_cached().map_err(|source| GuestError::Cgroup {
            name: self.name.clone(),
            source,
        })?;
        Ok(GuestCgroup::new(&layout, xid))
    }

    /// The running state, if the guest's init is alive.
    pub fn running(&self) -> Option<RunState> {
        self.run_dir().read_state().filter(|s| s.init_alive())
    }

    /// The guest's configured addresses (`ADDR/PREFIX`).
    pub fn addresses(&self) -> Vec<String> {
        self.config
            .interface
            .iter()
            .flat_map(|i| i.address.0.iter().cloned())
            .collect()
    }

    /// Host-side veth name of interface `index`: `vs<xid>-<index>` (at most 15 bytes).
    pub fn veth_name(&self, index: usize) -> String {
        format!("vs{}-{index}", self.config.context)
    }
}

/// Status of a guest, for `vserver NAME status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// Guest name.
    pub name: String,
    /// Context id.
    pub xid: u32,
    /// Running or not.
    pub running: bool,
    /// Number of processes.
    pub processes: usize,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Host pid of the guest's init.
    pub init_pid: Option<i32>,
    /// Whether the monitor is alive (false after it was killed; `stop` still works).
    pub monitor_alive: bool,
    /// Guest addresses.
    pub addresses: Vec<String>,
    /// Network traffic so far (kept across restarts until `reset-accounting`).
    pub traffic: network::Traffic,
    /// Interfaces as configured, one line each: `eth0: veth on vsbr0, nat`.
    pub interfaces: Vec<String>,
    /// Port forwards as `HOST_PORT -> GUEST_PORT/PROTOCOL`.
    pub forwards: Vec<String>,
    /// Suspended (`vserver NAME suspend`).
    pub suspended: bool,
    /// Running for a maintenance shell (`vserver NAME enter` of a stopped guest: vserver's
    /// builtin init, none of the guest's services); stopped when that shell ends.
    pub maintenance: bool,
    /// Memory the guest uses now (bytes, page cache included: what its memory limit counts);
    /// None when stopped or without a memory controller.
    pub memory_bytes: Option<u64>,
    /// Limits in force (from NAME.toml).
    pub limits: crate::config::LimitsConfig,
    /// Use of the guest's disk image while it runs (`[disk] size` set).
    pub disk: Option<crate::storage::disk::DiskUsage>,
    /// A running guest whose init is systemd: its own state (`starting`, `running`,
    /// `degraded`, ...) and failed units, asked inside ([`systemd::state`]).
    pub systemd: Option<systemd::SystemdState>,
}

/// Status of `g`.
pub fn status(g: &Guest) -> Result<Status, GuestError> {
    let st = g.running();
    let (processes, suspended, memory_bytes) = match &st {
        Some(s) => {
            let cg = g.cgroup_of(s.xid)?;
            (cg.pids().len(), cg.is_frozen(), cg.memory_usage())
        }
        None => (0, false, None),
    };
    Ok(Status {
        name: g.name.clone(),
        xid: st.as_ref().map(|s| s.xid).unwrap_or(g.config.context),
        running: st.is_some(),
        maintenance: st.is_some() && g.run_dir().file(state::MAINTENANCE_MARK).exists(),
        processes,
        uptime_secs: st
            .as_ref()
            .map(|s| state::now_unix().saturating_sub(s.started_unix))
            .unwrap_or(0),
        init_pid: st.as_ref().map(|s| s.init_pid),
        monitor_alive: st.as_ref().map(|s| s.monitor_alive()).unwrap_or(false),
        addresses: match &st {
            Some(s) => s.addresses.clone(),
            None => g.addresses(),
        },
        traffic: network::traffic(g),
        interfaces: network::describe_interfaces(g),
        forwards: g
            .config
            .forward
            .iter()
            .map(|f| format!("{} -> {}/{}", f.host_port, f.guest_port, f.protocol))
            .collect(),
        suspended,
        memory_bytes,
        limits: g.config.limits.clone(),
        disk: crate::storage::quota::usage(
            &g.config.disk,
            &g.root(),
            g.config.context,
            st.is_some(),
        ),
        systemd: match &st {
            Some(s) if s.systemd && !suspended => Some(systemd::state(g)),
            _ => None,
        },
    })
}

/// Guests configured in `paths.config_dir`, sorted by name: (name, config path) for every
/// `NAME.toml`, and for util-vserver configurations (`NAME.conf`, `NAME/`) without one.
pub fn configured_guests(paths: &Paths) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(&paths.config_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            let file = p.file_name()?.to_str()?.to_string();
            let name = match (file.strip_suffix(".toml"), file.strip_suffix(".conf")) {
                (Some(n), _) => n.to_string(),
                (None, Some(n)) if !paths.config_file(n).exists() => n.to_string(),
                _ if p.is_dir() && !paths.config_file(&file).exists() => {
                    config::legacy::find(&paths.config_dir, &file)?;
                    file
                }
                _ => return None,
            };
            validate_guest_name(&name).ok()?;
            Some((name, p))
        })
        .collect();
    v.sort();
    v.dedup_by(|a, b| a.0 == b.0);
    v
}

/// True if any of `pids` runs in `g`'s root (its root directory is the same inode as the guest
/// root): they are this guest's, left by an interrupted start, not another guest's.
pub(crate) fn runs_in_root(g: &Guest, pids: &[i32]) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(root) = std::fs::metadata(g.root()) else {
        return false;
    };
    pids.iter().any(|p| {
        std::fs::metadata(format!("/proc/{p}/root"))
            .map(|m| m.dev() == root.dev() && m.ino() == root.ino())
            .unwrap_or(false)
    })
}

/// File in the run directory naming the port-forward relay of the current run: `PID START`
/// (START in clock ticks since boot, field 22 of proc_pid_stat(5)).
const RELAY_FILE: &str = "relay";

/// Record the relay the monitor forked (pid `pid`) so that a later cleanup can end it.
pub(crate) fn record_relay(rd: &state::RunDir, pid: i32) {
    if let Some(start) = crate::context::clone::proc_start_time(pid) {
        let _ = std::fs::write(rd.file(RELAY_FILE), format!("{pid} {start}\n"));
    }
}

/// End the relay of a dead run, if it still lives, and wait (up to 10 s) until it is gone:
/// it dies with its monitor (`PR_SET_PDEATHSIG`), but a start right after a crash must not
/// find the forwarded ports still bound. The record names the process by pid and start time,
/// so a reused pid is never signalled.
fn end_relay(rd: &state::RunDir) {
    use crate::context::clone;
    let path = rd.file(RELAY_FILE);
    let Ok(s) = std::fs::read_to_string(&path) else {
        return;
    };
    let mut words = s.split_whitespace();
    let pid = words.next().and_then(|w| w.parse::<i32>().ok());
    let start = words.next().and_then(|w| w.parse::<u64>().ok());
    if let (Some(pid), Some(start)) = (pid, start) {
        if let Ok(fd) = clone::pidfd_open(pid) {
            if clone::same_process(pid, start) {
                let _ = clone::pidfd_kill(std::os::fd::AsFd::as_fd(&fd), libc::SIGKILL);
                let _ = stop::wait_exit(&fd, std::time::Duration::from_secs(10));
            }
        }
    }
    let _ = std::fs::remove_file(path);
}

/// Remove what a dead run of this guest left behind: its processes, cgroup, host veths and
/// state file. Safe to call on a clean guest. It never touches another guest: processes in
/// `vservers/<xid>` that do not run in this guest's root belong to someone else with the same
/// context id, and the repair is refused.
///
/// Errors: [`GuestError::XidInUse`] for a foreign context; cgroup failures.
pub fn repair(g: &Guest) -> Result<(), GuestError> {
    let rd = g.run_dir();
    let st = rd.read_state();
    if st.as_ref().map(|s| s.init_alive()).unwrap_or(false) {
        return Ok(());
    }
    let xid = st.as_ref().map(|s| s.xid).unwrap_or(g.config.context);
    let cg = g.cgroup_of(xid)?;
    let pids = cg.pids();
    if !pids.is_empty() && !runs_in_root(g, &pids) {
        rd.remove_state();
        return Err(GuestError::XidInUse {
            name: g.name.clone(),
            xid,
            other: String::from(
                "another running context (see vserver-stat); nothing of it was touched",
            ),
        });
    }
    end_relay(&rd);
    // Before the cgroup goes: a classic guest's traffic counters live on it.
    network::teardown(g, xid, st.as_ref());
    crate::testhook::pause("repair-links-gone");
    cg.remove().map_err(|source| GuestError::Cgroup {
        name: g.name.clone(),
        source,
    })?;
    if g.config.disk.uses_image() || g.config.disk.template.is_some() {
        crate::storage::disk::unmount(&g.root())
            .map_err(|m| failed(&g.name, format!("disk: {m}")))?;
    }
    rd.remove_state();
    for f in [systemd::BOOT_STATE_FILE, systemd::NOTIFY_FILE] {
        let _ = std::fs::remove_file(rd.file(f));
    }
    Ok(())
}
