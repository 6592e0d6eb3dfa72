//! Runtime state of a guest under `RUN/NAME/`: `lock` (flock(2)), `state.json` (written by the
//! monitor once the guest runs), `console.log`, `monitor.log`, `last-exit`, `stopping`.

use crate::context::clone::{proc_start_time, same_process};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// What `state.json` holds about a running guest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunState {
    /// Guest name.
    pub name: String,
    /// Context id.
    pub xid: u32,
    /// Guest root on the host.
    pub root: PathBuf,
    /// Host pid of the guest's pid 1.
    pub init_pid: i32,
    /// Its start time (clock ticks after boot), to tell it from a reused pid.
    pub init_start: u64,
    /// Host pid of the monitor.
    pub monitor_pid: i32,
    /// Its start time (clock ticks after boot).
    pub monitor_start: u64,
    /// Wall clock start, seconds since the Unix epoch.
    pub started_unix: u64,
    /// Host-side veth names.
    pub veths: Vec<String>,
    /// Guest addresses (`ADDR/PREFIX`).
    pub addresses: Vec<String>,
    /// Classic guests: `(host interface, ADDR/PREFIX)` that the start added and stop removes.
    #[serde(default)]
    pub classic_addresses: Vec<(String, String)>,
    /// Host ports forwarded to the guest, as `PORT/PROTOCOL`.
    #[serde(default)]
    pub forwards: Vec<String>,
    /// The init is systemd (stopped with SIGRTMIN+3, its cgroups delegated, its state read
    /// with systemctl).
    #[serde(default)]
    pub systemd: bool,
}

impl RunState {
    /// True while the guest's init is the process recorded here.
    pub fn init_alive(&self) -> bool {
        same_process(self.init_pid, self.init_start)
    }

    /// True while the monitor is the process recorded here.
    pub fn monitor_alive(&self) -> bool {
        same_process(self.monitor_pid, self.monitor_start)
    }
}

/// `RUN/NAME/maintenance`: present while the guest runs for `vserver NAME enter` of a stopped
/// guest (vserver's builtin init, none of its services); holds the pid of that `enter`.
pub const MAINTENANCE_MARK: &str = "maintenance";

/// Files of one guest's runtime directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// `RUN/NAME`.
    pub dir: PathBuf,
}

impl RunDir {
    /// The runtime directory of guest `name` under `run_dir`.
    pub fn new(run_dir: &Path, name: &str) -> RunDir {
        RunDir {
            dir: run_dir.join(name),
        }
    }

    /// Create it (mode 0700; parents too).
    pub fn create(&self) -> std::io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
    }

    /// `state.json`.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Read `state.json`; None if absent or unreadable (then the guest is not running).
    pub fn read_state(&self) -> Option<RunState> {
        let s = fs::read_to_string(self.state_path()).ok()?;
        serde_json::from_str(&s).ok()
    }

    /// Write `state.json` atomically (temp file + rename).
    pub fn write_state(&self, st: &RunState) -> std::io::Result<()> {
        let tmp = self.dir.join("state.json.tmp");
        let mut f = fs::File::create(&tmp)?;
        f.write_all(
            serde_json::to_string_pretty(st)
                .map_err(std::io::Error::other)?
                .as_bytes(),
        )?;
        f.sync_all()?;
        fs::rename(tmp, self.state_path())
    }

    /// Remove `state.json` (missing is fine), and the mark of a maintenance run with it.
    pub fn remove_state(&self) {
        let _ = fs::remove_file(self.state_path());
        let _ = fs::remove_file(self.file(MAINTENANCE_MARK));
    }

    /// Path of a file in the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// An exclusive flock(2) on `RUN/NAME/lock`; released when dropped or when the process dies.
#[derive(Debug)]
pub struct GuestLock {
    file: fs::File,
}

impl GuestLock {
    /// Take the lock, waiting for another vserver command on the same guest to finish.
    ///
    /// Errors: the lock file cannot be created or locked.
    pub fn acquire(rd: &RunDir) -> std::io::Result<GuestLock> {
        rd.create()?;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(rd.file("lock"))?;
        loop {
            // SAFETY: flock on a live fd we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(GuestLock { file });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Take the lock if nobody holds it; None if another command holds it.
    ///
    /// Errors: the lock file cannot be created or locked for another reason.
    pub fn try_acquire(rd: &RunDir) -> std::io::Result<Option<GuestLock>> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(rd.file("lock"))?;
        // SAFETY: flock on a live fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Some(GuestLock { file }));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(e)
        }
    }

    /// The lock file's descriptor (to keep it open across a close of everything else).
    pub(crate) fn raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// Close the lock's fd in a forked child without unlocking the parent's lock.
    pub fn forget_in_child(self) {
        drop(self.file);
    }
}

/// Wall clock now, seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Start time of process `pid` (clock ticks after boot), 0 if unknown.
pub fn start_of(pid: i32) -> u64 {
    proc_start_time(pid).unwrap_or(0)
}

/// Every running guest found under `run_dir`: (name, state) for each `NAME/state.json` whose
/// init is alive.
pub fn running_guests(run_dir: &Path) -> Vec<RunState> {
    let mut v: Vec<RunState> = fs::read_dir(run_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| RunDir { dir: e.path() }.read_state())
        .filter(|s| s.init_alive())
        .collect();
    v.sort_by_key(|s| s.xid);
    v
}
