//! Test-only pause points in the build, start, exec and stop paths.
//!
//! A race defense (a guest swapping a path for a symlink between a check and a use) or a crash
//! repair (the tool killed half-way) is only proven when a test can stop the runtime at the
//! right step. With `VSERVER_PAUSE_AT=STEP` and `VSERVER_PAUSE_FILE=PATH` in the environment of
//! a `vserver` command, the process that reaches step `STEP` appends the line `paused STEP PID`
//! to `PATH` (PID as the host sees it when it can tell, else its own pid) and waits until some
//! line `resume STEP` follows in the file; the test meanwhile swaps a path, or SIGKILLs the
//! process. Without both variables [`pause`] costs one check of a static.
//!
//! The file is opened once, in [`init`], before any new namespace exists, so the pause also
//! works after pivot_root; it is close-on-exec and closed with every other inherited fd before a
//! guest program runs. A pause gives up after [`PAUSE_LIMIT`] and goes on.
//!
//! Step names (each one is a `pause` call): `start-locked` (start holds the guest lock, nothing
//! made yet), `start-cgroup` (cgroups made, no process), `start-monitor` (monitor forked, state
//! not yet written), `child-go` (guest child released, namespaces made), `child-pre-pivot`
//! (guest root bind-mounted, before pivot_root), `child-mounts` (after pivot_root, binds
//! resolved), `child-proc` (after /proc is mounted), `child-dev` (after /dev is built, before
//! masks), `child-pre-exec` (setup done, before the guest program), `start-running` (state
//! written, start about to return), `stop-locked` (stop holds the lock), `stop-signalled` (the
//! guest has its stop signal), `repair-links-gone` (cleanup after the guest ended, by the
//! monitor, stop or the next start: links and nft rules gone, cgroup and state not yet),
//! `exec-joined` (exec client joined the guest's namespaces), `exec-pre-exec` (the exec'd
//! command, in the guest's pid namespace and reduced, before its execve), `oci-pre-exec` (an
//! OCI container's init after `start`, or a process of `vserver-oci exec`, with its user and
//! capability sets, before its execve), `build-synced` (a build's tree made and synced to disk,
//! its context id reserved, NAME.toml not yet written), `lxcfs-probe` (the child of `start` that asks LXCFS which
//! /proc files it serves, before it asks).

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Longest a pause waits for its `resume` line.
pub const PAUSE_LIMIT: Duration = Duration::from_secs(120);

struct Hook {
    step: String,
    file: std::fs::File,
}

static HOOK: OnceLock<Option<Hook>> = OnceLock::new();

/// Read `VSERVER_PAUSE_AT` and `VSERVER_PAUSE_FILE` and open the file (append, close-on-exec).
/// Call before creating namespaces; later calls do nothing. Errors opening the file are
/// ignored (no pause then).
pub fn init() {
    HOOK.get_or_init(|| {
        let step = std::env::var("VSERVER_PAUSE_AT").ok()?;
        let path = std::env::var_os("VSERVER_PAUSE_FILE")?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .ok()?;
        Some(Hook { step, file })
    });
}

/// The pause file's descriptor, for code that closes every other fd (it is close-on-exec).
pub fn fd() -> Option<std::os::fd::RawFd> {
    use std::os::fd::AsRawFd;
    HOOK.get()?.as_ref().map(|h| h.file.as_raw_fd())
}

/// The pid of this process in the namespace of the mounted /proc (the host's until the guest's
/// procfs is mounted), else getpid(2).
fn visible_pid() -> u32 {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(std::process::id)
}

/// Pause here if this is the configured step (see the module doc). Async-signal-safe enough for
/// a forked child of a single-threaded parent: no allocation but the message line.
pub fn pause(step: &str) {
    let Some(Some(h)) = HOOK.get() else { return };
    if h.step != step {
        return;
    }
    let mut f = &h.file;
    let _ = writeln!(f, "paused {step} {}", visible_pid());
    let want = format!("resume {step}\n");
    let started = Instant::now();
    let mut text = String::new();
    while started.elapsed() < PAUSE_LIMIT {
        text.clear();
        if f.seek(SeekFrom::Start(0)).is_ok()
            && f.read_to_string(&mut text).is_ok()
            && text.contains(&want)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
