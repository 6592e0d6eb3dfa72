//! Joining a running context: the one protocol behind `vserver NAME exec|suexec|enter` and
//! `vserver-oci exec` (a new context is made by [`super::spawn`]).
//!
//! Three processes, so that nothing of the host's power is ever visible inside the context:
//! 1. the **client** (the caller, host pid namespace) has opened every host file it needs and
//!    joined the context's mount, IPC, UTS, network and cgroup namespaces before calling
//!    [`join`];
//! 2. the **intermediate**, forked here, becomes non-dumpable, dies with the client
//!    (PR_SET_PDEATHSIG), joins the init's pid namespace (and time namespace when it differs
//!    from ours) while still host root, puts the command's stdio on 0, 1 and 2, closes every
//!    other fd but the protocol's pipes and the ones the front end keeps, runs the front end's
//!    `intermediate` steps (user namespace, limits, reductions) and forks;
//! 3. the **command**, born in the context's pid namespace, writes nothing and waits for the
//!    client's go byte; by then the client has written its pid into the context's cgroups and
//!    run its host-side steps. It then starts a session (taking the terminal as its
//!    controlling one when asked) and runs the front end's `command` steps, which end in
//!    execve(2) and report failures on the error pipe.
//!
//! The intermediate reaps the command only after the go byte, so the pid the client writes
//! into cgroup.procs is the command's (a zombie at worst), never a process that reused it.
//! Then it exits with the command's status (128 + signal when killed), or at once when
//! detached.

use super::{child, clone, sync};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

/// What the protocol needs to know of the context and the command.
pub struct JoinPlan<'a> {
    /// pidfd of the context's init (pidfd_open(2)).
    pub init: &'a OwnedFd,
    /// Join the init's pid namespace (false when the context shares ours).
    pub pidns: bool,
    /// Join the init's time namespace (for the children: the command), when it differs from
    /// ours; compared by the client before it joined the mount namespace (whose /proc may
    /// not show the client).
    pub timens: bool,
    /// Fds put on the command's stdin, stdout and stderr (dup2 in the intermediate); None
    /// keeps the client's own.
    pub stdio: Option<[RawFd; 3]>,
    /// Make stdin (a terminal) the command's controlling terminal (TIOCSCTTY, tty_ioctl(4)).
    pub controlling_tty: bool,
    /// Fds above 2 the command keeps open (passed fds, the terminal); everything else but the
    /// protocol's pipes is closed in the intermediate.
    pub keep: Vec<RawFd>,
    /// The cgroup.procs files (opened by the client in the host's mount namespace) the
    /// command's pid is written into before it may run.
    pub procs: Vec<File>,
    /// The command dies with the intermediate (PR_SET_PDEATHSIG), so that killing the client
    /// kills it too (`vserver NAME exec`), instead of living on (`vserver-oci exec`).
    pub dies_with_client: bool,
    /// The intermediate exits once the command is released, instead of waiting for it
    /// (`vserver-oci exec --detach`: the command is reparented to the caller's subreaper).
    pub detach: bool,
}

/// The processes [`join`] made, as the client holds them.
pub struct Joined {
    /// The intermediate (our child): its exit status is the command's.
    pub mid: nix::unistd::Pid,
    /// pidfd of the intermediate.
    pub mid_fd: OwnedFd,
    /// The command's host pid.
    pub cmd_pid: i32,
    /// pidfd of the command, opened while the intermediate still held it unreaped.
    pub cmd_fd: OwnedFd,
    /// Read end of the error pipe: EOF once the command reached execve(2), else one message.
    pub err: OwnedFd,
}

impl Joined {
    /// Kill the intermediate and the command and reap the intermediate (the command dies with
    /// it when `dies_with_client`, else it is killed through its pidfd).
    pub fn abort(&self) {
        let _ = clone::pidfd_kill(self.cmd_fd.as_fd(), libc::SIGKILL);
        let _ = clone::pidfd_kill(self.mid_fd.as_fd(), libc::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.mid, None);
    }

    /// Read the error pipe until EOF: empty once the command reached execve(2), else its
    /// report. Blocks while the command is set up (a command stopped before its execve blocks
    /// this until it is continued or killed).
    pub fn report(&self) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match nix::unistd::read(&self.err, &mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Wait for the intermediate; its status as a shell reports it (128 + signal).
    ///
    /// Errors: waitpid(2) failures.
    pub fn wait(&self) -> Result<i32, nix::errno::Errno> {
        loop {
            match nix::sys::wait::waitpid(self.mid, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => return Ok(c),
                Ok(nix::sys::wait::WaitStatus::Signaled(_, s, _)) => return Ok(128 + s as i32),
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and skips the parent's atexit handlers.
    unsafe { libc::_exit(code) }
}

/// Most milliseconds the client waits for the command's pid (the intermediate's steps before
/// its fork take well under a second).
const PID_HANDOVER_MS: u16 = 30_000;

/// Run the protocol: fork the intermediate and through it the command, write the command into
/// `plan.procs`, call `host(cmd_pid)` (host-side steps such as oom_score_adj or a pid file),
/// then release the command. `intermediate` runs in the intermediate after the pid namespace
/// join and the fd cleanup, before the fork (an error fails the exec); `command` runs in the
/// command after the go byte and must end in execve(2) or [`child::fail`] on the error fd.
///
/// Must be called single-threaded. On error nothing of the exec is left running.
///
/// Errors: one line naming the failed step (pipe, fork, pid hand-over, cgroup write, the
/// intermediate's own report, or what `host` returned).
pub fn join(
    plan: JoinPlan<'_>,
    intermediate: &mut dyn FnMut(&OwnedFd) -> Result<(), String>,
    command: &mut dyn FnMut(OwnedFd) -> std::convert::Infallible,
    host: &mut dyn FnMut(i32) -> Result<(), String>,
) -> Result<Joined, String> {
    let (err_r, err_w) = sync::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (go_r, go_w) = sync::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (pid_r, pid_w) = sync::pipe().map_err(|e| format!("pipe: {e}"))?;
    let client = nix::unistd::getpid();
    // SAFETY: single-threaded (the caller's contract); the child runs only the code below.
    let fork = unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))?;
    let nix::unistd::ForkResult::Parent { child: mid } = fork else {
        drop((err_r, go_w, pid_r));
        run_intermediate(&plan, client, intermediate, command, err_w, go_r, pid_w)
    };
    drop((err_w, go_r, pid_w));
    let mid_fd = match clone::pidfd_open(mid.as_raw()) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = nix::sys::signal::kill(mid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(mid, None);
            return Err(format!("open pid {mid}: {e}"));
        }
    };
    let kill_mid = || {
        let _ = clone::pidfd_kill(mid_fd.as_fd(), libc::SIGKILL);
        let _ = nix::sys::wait::waitpid(mid, None);
    };
    let mut b = [0u8; 4];
    // The pid comes right after the intermediate's quick steps; a bound keeps a filter that
    // fakes its write and close from holding this client forever.
    let ready = {
        let mut fds = [nix::poll::PollFd::new(
            pid_r.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        matches!(
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(PID_HANDOVER_MS)),
            Ok(n) if n > 0
        )
    };
    if !ready || nix::unistd::read(&pid_r, &mut b).unwrap_or(0) != 4 {
        // No command pid (the intermediate failed, or a hostile seccomp filter refused its
        // write): end the intermediate and close our go pipe first, so that a command it may
        // have forked sees EOF there and lets go of the error pipe read below.
        drop(go_w);
        kill_mid();
        let report = sync::read_to_end(err_r);
        return Err(if report.is_empty() {
            String::from("the exec helper died")
        } else {
            report
        });
    }
    let cmd_pid = i32::from_ne_bytes(b);
    // The intermediate does not reap the command before our go: this pid is still the command.
    let cmd_fd = match clone::pidfd_open(cmd_pid) {
        Ok(fd) => fd,
        Err(e) => {
            kill_mid();
            return Err(format!("open pid {cmd_pid}: {e}"));
        }
    };
    let joined = Joined {
        mid,
        mid_fd,
        cmd_pid,
        cmd_fd,
        err: err_r,
    };
    for mut f in plan.procs {
        if let Err(e) = f.write_all(cmd_pid.to_string().as_bytes()) {
            joined.abort();
            return Err(format!("move the command into the cgroup: {e}"));
        }
    }
    if let Err(e) = host(cmd_pid) {
        joined.abort();
        return Err(e);
    }
    // One go byte for the command, one for the intermediate.
    let _ = nix::unistd::write(&go_w, b"GG");
    Ok(joined)
}

/// Step 2. Never returns.
#[allow(clippy::too_many_arguments)]
fn run_intermediate(
    plan: &JoinPlan<'_>,
    client: nix::unistd::Pid,
    intermediate: &mut dyn FnMut(&OwnedFd) -> Result<(), String>,
    command: &mut dyn FnMut(OwnedFd) -> std::convert::Infallible,
    err: OwnedFd,
    go: OwnedFd,
    pid_w: OwnedFd,
) -> ! {
    // Nothing of this process may be read or traced from the context (/proc/PID/fd would show
    // the host's files the client holds): non-dumpable (ptrace(2) access mode checks).
    let _ = nix::sys::prctl::set_dumpable(false);
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if nix::unistd::getppid() != client {
        exit_now(1);
    }
    // As host root, before any user namespace: the pid namespace (and the time namespace, for
    // the children) of the init.
    let mut ns = nix::sched::CloneFlags::empty();
    if plan.pidns {
        ns |= nix::sched::CloneFlags::CLONE_NEWPID;
    }
    if plan.timens {
        ns |= nix::sched::CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);
    }
    if !ns.is_empty() {
        if let Err(e) = nix::sched::setns(plan.init.as_fd(), ns) {
            child::fail(&err, &format!("join the pid namespace of the init: {e}"));
        }
    }
    if let Some(fds) = plan.stdio {
        for (src, dst) in fds.into_iter().zip(0..) {
            // SAFETY: dup2 onto the standard fds from fds we hold.
            if unsafe { libc::dup2(src, dst) } < 0 {
                child::fail(
                    &err,
                    &format!("dup2 to fd {dst}: {}", nix::errno::Errno::last()),
                );
            }
        }
    }
    // The init's pidfd stays for the front end's steps (its user namespace) and goes before
    // the fork: the command holds no host fd but its own.
    let mut keep = plan.keep.clone();
    keep.extend([
        err.as_raw_fd(),
        go.as_raw_fd(),
        pid_w.as_raw_fd(),
        plan.init.as_raw_fd(),
    ]);
    keep.extend(crate::testhook::fd());
    if let Err(e) = clone::close_all_but(&keep) {
        child::fail(&err, &format!("close inherited fds: {e}"));
    }
    // A session of its own before the front end's steps (which may load a seccomp filter that
    // refuses setsid): the command is born outside the caller's session and without its
    // controlling terminal, whatever it may do later (TIOCSTI into the administrator's shell).
    let _ = nix::unistd::setsid();
    if let Err(e) = intermediate(&err) {
        child::fail(&err, &e);
    }
    // A change of credentials there (root of a user namespace) cleared the parent-death
    // signal (prctl(2)): set it again, then make sure the client did not die meanwhile.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if nix::unistd::getppid() != client {
        exit_now(1);
    }
    // SAFETY: closing our copy of the init's pidfd; this process never returns, so its OwnedFd
    // is never dropped (no double close).
    unsafe { libc::close(plan.init.as_raw_fd()) };
    // SAFETY: single-threaded; the child only sets itself up and execs.
    match unsafe { nix::unistd::fork() } {
        Err(e) => child::fail(&err, &format!("fork the command: {e}")),
        Ok(nix::unistd::ForkResult::Child) => {
            // Step 3.
            drop(pid_w);
            if plan.dies_with_client {
                // SAFETY: prctl with integer arguments.
                // (Its parent is outside its pid namespace, so getppid(2) shows 0: no check.
                // An intermediate that died first died with the client, and the go pipe is
                // then at EOF.)
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            }
            crate::testhook::pause("exec-command-born");
            if !sync::wait_go(&go) {
                // The client gone (nobody reads this), or a filter that keeps the go from
                // being read: say so rather than end silently.
                child::fail(
                    &err,
                    "the command was never released (its go byte could not be read)",
                );
            }
            drop(go);
            let _ = nix::unistd::setsid();
            if plan.controlling_tty {
                // SAFETY: TIOCSCTTY on our stdin, a terminal, in our new session.
                unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
            }
            match command(err) {}
        }
        Ok(nix::unistd::ForkResult::Parent { child: cmd }) => {
            let _ = nix::unistd::write(&pid_w, &cmd.as_raw().to_ne_bytes());
            drop(pid_w);
            drop(err);
            // The command's pid stays reserved (as a zombie at worst) until the client has
            // written it into the cgroups: no reaping before our go.
            let released = sync::wait_go(&go);
            drop(go);
            // SAFETY: closing our copies of the standard fds; the command keeps its own.
            unsafe {
                libc::close(0);
                libc::close(1);
                libc::close(2);
            }
            if released && plan.detach {
                exit_now(0);
            }
            // Bounded: under the container's filter EINTR may be forged (see sync::MAX_EINTR).
            let mut interrupted = 0;
            loop {
                match nix::sys::wait::waitpid(cmd, None) {
                    Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => exit_now(c),
                    Ok(nix::sys::wait::WaitStatus::Signaled(_, s, _)) => exit_now(128 + s as i32),
                    // EINTR, or a result that says nothing (a filter returning 0 reads as
                    // StillAlive): bounded alike.
                    Err(nix::errno::Errno::EINTR) | Ok(_) if interrupted < sync::MAX_EINTR => {
                        interrupted += 1
                    }
                    _ => exit_now(1),
                }
            }
        }
    }
}
