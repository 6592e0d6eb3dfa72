//! `vserver NAME stop`: pre-stop script, the init's stop action, the kill sequence (TERM, wait
//! `stop.kill_timeout` seconds, KILL of the whole cgroup), wait for the monitor's cleanup,
//! post-stop script. Every wait is bounded.

use super::state::GuestLock;
use super::{failed, scripts, Guest, GuestError};
use crate::context::clone::{pidfd_kill, pidfd_open};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

/// Wait until the process behind `pidfd` has exited, at most `timeout`. True if it exited.
pub fn wait_exit(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) if n > 0 => return true,
            Err(nix::errno::Errno::EINTR) => {}
            _ if left.is_zero() => return false,
            _ => {}
        }
    }
}

/// Run the guest's `init.stop_command` inside it, waiting at most `timeout`; a command still
/// running then is killed (its exec client dies, and PDEATHSIG takes the command with it).
fn run_stop_command(g: &Guest, timeout: Duration) {
    let req = super::exec::ExecRequest::command(g.config.init.stop_command.clone());
    // SAFETY: single-threaded; the child only runs our exec path and exits.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let code = super::exec::exec(g, &req).unwrap_or(1);
            // SAFETY: leave without running the parent's atexit handlers.
            unsafe { libc::_exit(code.clamp(0, 255)) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            if let Ok(fd) = pidfd_open(child.as_raw()) {
                if !wait_exit(&fd, timeout) {
                    let _ = pidfd_kill(fd.as_fd(), libc::SIGKILL);
                }
            }
            let _ = nix::sys::wait::waitpid(child, None);
        }
        Err(_) => {}
    }
}

/// Outcome of a stop.
#[derive(Debug, Default)]
pub struct Stopped {
    /// False when the guest was not running (nothing done).
    pub was_running: bool,
    /// True when SIGKILL was needed.
    pub killed: bool,
    /// Non-fatal problems (failing scripts).
    pub warnings: Vec<String>,
}

/// Stop guest `g`. A stopped guest is not an error (`was_running` is false).
///
/// Errors: lock or cgroup failures; the processes are killed in any case.
pub fn stop(g: &Guest) -> Result<Stopped, GuestError> {
    let rd = g.run_dir();
    let _lock = GuestLock::acquire(&rd)
        .map_err(|e| failed(&g.name, format!("lock {}: {e}", rd.file("lock").display())))?;
    crate::testhook::init();
    crate::testhook::pause("stop-locked");
    let mut out = Stopped::default();
    let Some(st) = g.running() else {
        // A context id used by someone else is not ours to clean: leave it alone.
        match super::repair(g) {
            Ok(()) | Err(GuestError::XidInUse { .. }) => return Ok(out),
            Err(e) => return Err(e),
        }
    };
    out.was_running = true;
    let _ = std::fs::write(rd.file("stopping"), b"");
    // The marker goes away however this stop ends (it tells the monitor not to run post-stop).
    struct Marker(std::path::PathBuf);
    impl Drop for Marker {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _marker = Marker(rd.file("stopping"));
    if let Err(e) = scripts::run(g, "pre-stop") {
        out.warnings.push(e.to_string());
    }
    let monitor = if st.monitor_alive() {
        pidfd_open(st.monitor_pid).ok()
    } else {
        None
    };
    let init = pidfd_open(st.init_pid)
        .map_err(|e| failed(&g.name, format!("open pid {}: {e}", st.init_pid)))?;
    // Re-check identity now that the pidfd pins the process.
    if st.init_alive() {
        let cg = g.cgroup_of(st.xid)?;
        // A suspended guest must run again to handle its stop command and signals.
        let _ = cg.freeze(false);
        let kill_timeout = g.config.stop.kill_timeout_secs(st.systemd);
        if g.config.init.style == crate::config::InitStyle::Plain
            && !st.systemd
            && !g.config.init.stop_command.is_empty()
        {
            let limit = Duration::from_secs(u64::from(kill_timeout.max(1)));
            run_stop_command(g, limit);
        }
        // systemd halts on SIGRTMIN+3 (SIGTERM would make it re-execute itself).
        let sig = g
            .config
            .stop
            .signal
            .as_deref()
            .and_then(|s| crate::config::parse_signal_name(s).ok())
            .unwrap_or(if st.systemd {
                libc::SIGRTMIN() + 3
            } else {
                libc::SIGTERM
            });
        if st.systemd {
            let _ = std::fs::write(rd.file(super::systemd::BOOT_STATE_FILE), "stopping\n");
        }
        let _ = pidfd_kill(init.as_fd(), sig);
        crate::testhook::pause("stop-signalled");
        if g.config.init.style == crate::config::InitStyle::Plain && !st.systemd {
            cg.signal_all(nix::sys::signal::Signal::SIGTERM);
        }
        if !wait_exit(&init, Duration::from_secs(u64::from(kill_timeout))) {
            out.killed = true;
            cg.kill_all();
            let _ = pidfd_kill(init.as_fd(), libc::SIGKILL);
            wait_exit(&init, Duration::from_secs(5));
        }
    }
    let cleaned = monitor
        .as_ref()
        .map(|m| wait_exit(m, Duration::from_secs(10)))
        .unwrap_or(false);
    if !cleaned || rd.read_state().is_some() {
        super::repair(g)?;
    }
    // On a systemd host the guest's scope goes once its monitor has: systemd removes it a
    // moment later, and a stop returns when it has (a start right after registers it anew).
    if let Ok(cg) = g.cgroup_of(st.xid) {
        cg.wait_scope_gone(Duration::from_secs(5));
    }
    let _ = std::fs::remove_file(rd.file("stopping"));
    for stage in ["post-stop", "postpost-stop"] {
        if let Err(e) = scripts::run(g, stage) {
            out.warnings.push(e.to_string());
        }
    }
    Ok(out)
}
