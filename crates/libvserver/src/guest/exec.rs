//! `vserver NAME exec|suexec|enter`: a new process inside a running guest.
//!
//! The three-process protocol of [`crate::context::join`], shared with `vserver-oci exec`:
//! 1. the client (host pid namespace, invisible to the guest) opens the guest's cgroup files,
//!    compiles its seccomp filter, joins the guest's mount, IPC, UTS, network and cgroup
//!    namespaces, reads the user from the guest's passwd, and opens a pty from the guest's
//!    devpts (`enter`) or pipes (`exec`): the command never gets a host fd;
//! 2. the intermediate, still invisible, joins the guest's pid and time namespaces, then (this
//!    module's steps) sets the guest's nice level, I/O priority and rlimits, joins the guest's
//!    user namespace when it has one (and becomes uid/gid 0 there), drops the bounding set,
//!    takes a fresh session keyring, loads the seccomp filter, drops its effective
//!    capabilities to the guest's, becomes non-dumpable and forks;
//! 3. the command, born in the guest's pid namespace already in its final state, waits until
//!    the client has moved it into the guest's cgroups, then execs.
//!
//! The client relays the terminal or the pipes and forwards INT, TERM, HUP, QUIT, USR1 and
//! USR2; killing it kills the intermediate and the command (PDEATHSIG).

use super::{failed, Guest, GuestError};
use crate::context::child::{self, UserSpec};
use crate::context::clone::{pidfd_kill, pidfd_open};
use crate::context::join::{self, JoinPlan, Joined};
use crate::context::{sync, Payload};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// What to run in the guest.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// Program and arguments; empty with `tty` means the guest's login shell.
    pub argv: Vec<String>,
    /// User name or numeric uid inside the guest (`suexec`); None is root.
    pub user: Option<String>,
    /// Allocate a pty from the guest's devpts (`enter`).
    pub tty: bool,
}

impl ExecRequest {
    /// Run `argv` as root without a pty.
    pub fn command(argv: Vec<String>) -> ExecRequest {
        ExecRequest {
            argv,
            user: None,
            tty: false,
        }
    }
}

/// Find `user` (name or number) in passwd/group text; returns (uid, gid, groups, home, shell).
pub fn lookup_user(passwd: &str, group: &str, user: &str) -> Option<(UserSpec, String, String)> {
    let numeric = !user.is_empty() && user.chars().all(|c| c.is_ascii_digit());
    let mut found = None;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            continue;
        }
        // A number is a uid, never a name: a guest cannot shadow uid 1000 with a user "1000".
        let hit = if numeric { f[2] == user } else { f[0] == user };
        if hit {
            found = Some((
                f[0].to_string(),
                f[2].parse().ok()?,
                f[3].parse().ok()?,
                f[5].to_string(),
                f[6].to_string(),
            ));
            break;
        }
    }
    let (name, uid, gid, home, shell) = match found {
        Some(x) => x,
        None => {
            let uid: u32 = user.parse().ok()?;
            (
                String::new(),
                uid,
                uid,
                "/".to_string(),
                "/bin/sh".to_string(),
            )
        }
    };
    let mut groups = vec![gid];
    for line in group.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 4 && !name.is_empty() && f[3].split(',').any(|m| m == name) {
            if let Ok(g) = f[2].parse() {
                if !groups.contains(&g) {
                    groups.push(g);
                }
            }
        }
    }
    Some((UserSpec { uid, gid, groups }, home, shell))
}

/// Read at most 1 MiB of a guest file, refusing symlinks, FIFOs and devices (a hostile guest
/// must not make the host-side client hang or read elsewhere).
fn read_small(path: &str) -> String {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut s = String::new();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path);
    if let Ok(f) = f {
        if f.metadata().map(|m| m.is_file()).unwrap_or(false) {
            let _ = f.take(1 << 20).read_to_string(&mut s);
        }
    }
    s
}

/// Restores the host terminal mode when dropped.
pub(crate) struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    pub(crate) fn enter() -> RawMode {
        let stdin = std::io::stdin();
        match nix::sys::termios::tcgetattr(&stdin) {
            Ok(orig) => {
                let mut raw = orig.clone();
                nix::sys::termios::cfmakeraw(&mut raw);
                let _ =
                    nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &raw);
                RawMode(Some(orig))
            }
            Err(_) => RawMode(None),
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

fn copy_winsize(from: i32, to: i32) {
    // SAFETY: winsize is plain data; both ioctls take a pointer to it.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to, libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Standard streams of the command: a guest pty (`enter`) or three pipes (`exec`).
enum Stdio {
    Pty {
        master: OwnedFd,
        slave: OwnedFd,
    },
    Pipes {
        child: [OwnedFd; 3],
        stdin_w: OwnedFd,
        stdout_r: OwnedFd,
        stderr_r: OwnedFd,
    },
}

fn pipes(name: &str) -> Result<Stdio, GuestError> {
    let p = || sync::pipe().map_err(|e| failed(name, format!("pipe: {e}")));
    let (in_r, in_w) = p()?;
    let (out_r, out_w) = p()?;
    let (err_r, err_w) = p()?;
    Ok(Stdio::Pipes {
        child: [in_r, out_w, err_w],
        stdin_w: in_w,
        stdout_r: out_r,
        stderr_r: err_r,
    })
}

fn exit_now(code: i32) -> ! {
    // SAFETY: leave a forked helper without running the parent's atexit handlers.
    unsafe { libc::_exit(code) }
}

/// The guest `g` as `vserver NAME enter` of a stopped guest starts it: a maintenance run, as
/// `systemd-nspawn -D` without `-b` gives a shell. Its init is vserver's builtin one with no
/// command (so none of the guest's services run, whatever its init style); network, limits,
/// bounding set and seccomp filter are the guest's. Returns the guest as started (stop it
/// with [`super::stop::stop`] of this value when the shell ends), or None when someone else
/// started the guest meanwhile (enter it as it is, and leave it running).
///
/// Errors: as [`super::start::start`].
pub fn start_for_maintenance(g: &Guest) -> Result<Option<Guest>, GuestError> {
    let mut m = g.clone();
    m.config.init = crate::config::InitConfig {
        style: crate::config::InitStyle::Builtin,
        ..Default::default()
    };
    m.config.stop.on_reboot = crate::config::GuestAction::Stop;
    m.config.stop.on_halt = crate::config::GuestAction::Stop;
    m.config.stop.signal = None;
    m.config.stop.kill_timeout = None;
    match super::start::start(&m) {
        Ok(_) => {
            let _ = std::fs::write(
                m.run_dir().file(super::state::MAINTENANCE_MARK),
                format!("{}\n", std::process::id()),
            );
            Ok(Some(m))
        }
        Err(GuestError::AlreadyRunning { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Run a command in running guest `g`; returns its exit status (128 + signal if killed).
///
/// Errors: [`GuestError::NotRunning`], or a setup failure naming the step.
pub fn exec(g: &Guest, req: &ExecRequest) -> Result<i32, GuestError> {
    let name = g.name.as_str();
    let st = g
        .running()
        .ok_or_else(|| GuestError::NotRunning(g.name.clone()))?;
    let init = pidfd_open(st.init_pid)
        .map_err(|e| failed(name, format!("open pid {}: {e}", st.init_pid)))?;
    if !st.init_alive() {
        return Err(GuestError::NotRunning(g.name.clone()));
    }
    let cg = g.cgroup_of(st.xid)?;
    if cg.is_frozen() {
        return Err(failed(
            name,
            format!("is suspended; 'vserver {name} resume' first"),
        ));
    }
    // Where the init is: a systemd guest keeps no process in its context's own cgroup.
    let procs = cg
        .open_procs_files_of(st.init_pid)
        .map_err(|source| GuestError::Cgroup {
            name: g.name.clone(),
            source,
        })?;
    let (cap_drop, seccomp) = super::start::security_of(g, st.systemd)?;
    // The guest's own user namespace, if it has one (from the running init, not NAME.toml,
    // which may have changed since the start).
    let userns_base = if in_own_userns(st.init_pid) {
        Some(crate::security::userns::host_base(st.xid).map_err(|m| failed(name, m))?)
    } else {
        None
    };
    crate::testhook::init();
    // Read while /proc/self is still ours: the intermediate scrubs its copy of our argv and
    // environment, so the command never shows the host's command line inside the guest.
    let area = child::arg_env_area().ok();
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWCGROUP;
    nix::sched::setns(init.as_fd(), flags).map_err(|e| {
        failed(
            name,
            format!("join the namespaces of pid {}: {e}", st.init_pid),
        )
    })?;
    crate::testhook::pause("exec-joined");
    // From here on "/" is the guest's root: every path below resolves inside the guest.
    let (user, home, shell) = match &req.user {
        None => (None, "/root".to_string(), String::new()),
        Some(u) => {
            let (spec, home, shell) =
                lookup_user(&read_small("/etc/passwd"), &read_small("/etc/group"), u).ok_or_else(
                    || failed(name, format!("no user '{u}' in the guest's /etc/passwd")),
                )?;
            (Some(spec), home, shell)
        }
    };
    let argv: Vec<String> = if req.argv.is_empty() {
        let sh = if !shell.is_empty() {
            shell
        } else {
            ["/bin/bash", "/bin/sh"]
                .iter()
                .find(|p| std::path::Path::new(p).exists())
                .unwrap_or(&"/bin/sh")
                .to_string()
        };
        vec![sh, "-l".to_string()]
    } else {
        req.argv.clone()
    };
    let term = std::env::var("TERM").unwrap_or_else(|_| "linux".into());
    let mut extra: Vec<(&str, &str)> = vec![("HOME", home.as_str())];
    if req.tty {
        extra.push(("TERM", term.as_str()));
    }
    let payload = Payload::Exec {
        argv: argv
            .iter()
            .filter_map(|a| CString::new(a.as_str()).ok())
            .collect(),
        env: child::guest_env(&extra),
    };
    let stdio = if req.tty {
        let (master, slave) = crate::rootfs::open_pty_pair()
            .map_err(|e| failed(name, format!("{e} in the guest")))?;
        if let Some(base) = userns_base {
            // The pty belongs to the user it runs for and the tty group (gid 5), as the guest
            // sees them; made by host root, it would show as nobody's inside.
            let uid = user.as_ref().map(|u| u.uid).unwrap_or(0);
            nix::unistd::fchown(
                &slave,
                Some(nix::unistd::Uid::from_raw(base.saturating_add(uid))),
                Some(nix::unistd::Gid::from_raw(base + 5)),
            )
            .map_err(|e| failed(name, format!("give the pty to the guest: {e}")))?;
        }
        copy_winsize(0, master.as_raw_fd());
        Stdio::Pty { master, slave }
    } else {
        pipes(name)?
    };
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        set.add(s);
    }
    set.thread_block()
        .map_err(|e| failed(name, format!("block signals: {e}")))?;
    let (fds, controlling_tty) = match &stdio {
        Stdio::Pty { slave, .. } => ([slave.as_raw_fd(); 3], true),
        Stdio::Pipes { child, .. } => (
            [
                child[0].as_raw_fd(),
                child[1].as_raw_fd(),
                child[2].as_raw_fd(),
            ],
            false,
        ),
    };
    let plan = JoinPlan {
        init: &init,
        pidns: true,
        timens: true,
        stdio: Some(fds),
        controlling_tty,
        keep: Vec::new(),
        procs,
        dies_with_client: true,
        detach: false,
    };
    let rlimits = super::start::rlimits_of(g, st.systemd);
    let (nice, ioprio) = (g.config.limits.nice, super::start::ioprio_of(g));
    let userns = userns_base.is_some();
    let mut reduce = |_: &OwnedFd| -> Result<(), String> {
        reduce_intermediate(
            &init, &cap_drop, &seccomp, area, nice, ioprio, &rlimits, userns,
        )
    };
    let mut run = |err: OwnedFd| -> std::convert::Infallible {
        let _ = set.thread_unblock();
        let _ = nix::unistd::chdir(home.as_str()).or_else(|_| nix::unistd::chdir("/"));
        // SAFETY: umask only changes this process's file creation mask.
        unsafe { libc::umask(0o022) };
        crate::testhook::pause("exec-pre-exec");
        child::exec_as(user.as_ref(), &payload, &err)
    };
    let joined =
        join::join(plan, &mut reduce, &mut run, &mut |_| Ok(())).map_err(|m| failed(name, m))?;
    let abort = |msg: String| -> GuestError {
        joined.abort();
        failed(name, msg)
    };
    let sfd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| abort(format!("signalfd: {e}")))?;
    // Bounded and interruptible: a guest may stop the command before it execs.
    let Joined {
        mid_fd,
        cmd_fd,
        err,
        ..
    } = &joined;
    if let Err(msg) = wait_report(err, &sfd, mid_fd, std::time::Duration::from_secs(10)) {
        return Err(abort(msg));
    }
    match stdio {
        Stdio::Pty { master, slave } => {
            drop(slave);
            relay(mid_fd, cmd_fd, &sfd, Streams::Pty(&master));
        }
        Stdio::Pipes {
            child,
            stdin_w,
            stdout_r,
            stderr_r,
        } => {
            drop(child);
            relay(
                mid_fd,
                cmd_fd,
                &sfd,
                Streams::Pipes {
                    stdin_w: Some(stdin_w),
                    stdout_r: &stdout_r,
                    stderr_r: &stderr_r,
                },
            );
        }
    }
    joined
        .wait()
        .map_err(|e| failed(name, format!("wait: {e}")))
}

/// The guest's steps in the intermediate (see [`join`]): its nice level, I/O priority and
/// rlimits while it still has the host's CAP_SYS_NICE and CAP_SYS_RESOURCE, then its user
/// namespace (uid/gid 0 there), the bounding set, a fresh session keyring, the seccomp filter
/// and the guest's effective capabilities; non-dumpable, the host's command line scrubbed. The
/// command forked next is born in that state.
#[allow(clippy::too_many_arguments)]
fn reduce_intermediate(
    init: &OwnedFd,
    cap_drop: &[::caps::Capability],
    seccomp: &crate::security::seccomp::SeccompProgram,
    area: Option<[usize; 4]>,
    nice: Option<i32>,
    ioprio: Option<u32>,
    rlimits: &[child::Rlimit],
    userns: bool,
) -> Result<(), String> {
    if let Some(n) = nice {
        child::set_nice(n)?;
    }
    if let Some(v) = ioprio {
        child::set_ioprio(v)?;
    }
    child::set_rlimits(rlimits)?;
    if userns {
        nix::sched::setns(init.as_fd(), CloneFlags::CLONE_NEWUSER)
            .map_err(|e| format!("join the guest's user namespace: {e}"))?;
        crate::security::userns::become_root_inside()?;
    }
    crate::security::caps::apply_bounding(cap_drop, false)?;
    crate::security::keyring::fresh_session_keyring()
        .map_err(|e| format!("join a fresh session keyring: {e}"))?;
    seccomp
        .load()
        .map_err(|e| format!("load the seccomp filter: {e}"))?;
    crate::security::caps::apply_bounding(cap_drop, true)?;
    let _ = nix::sys::prctl::set_dumpable(false);
    if let Some(a) = area {
        child::scrub_arg_env(a, b"vserver-exec");
    }
    Ok(())
}

/// Wait until the command has exec'd (EOF on the error pipe), reporting its setup error, the
/// intermediate's death, an interrupting signal or `limit` running out.
fn wait_report(
    err_r: &OwnedFd,
    sfd: &SignalFd,
    mid: &OwnedFd,
    limit: std::time::Duration,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + limit;
    let mut report = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!(
                "the command did not start within {} s (stopped inside the guest?)",
                limit.as_secs()
            ));
        }
        let mut fds = [
            PollFd::new(err_r.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(mid.as_fd(), PollFlags::POLLIN),
        ];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Err(nix::errno::Errno::EINTR) | Ok(0) => continue,
            Err(e) => return Err(format!("poll: {e}")),
            Ok(_) => {}
        }
        let ev: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        if !ev[0].is_empty() {
            match nix::unistd::read(err_r, &mut buf) {
                Ok(0) => {
                    return if report.is_empty() {
                        Ok(())
                    } else {
                        Err(String::from_utf8_lossy(&report).into_owned())
                    };
                }
                Ok(n) => report.extend_from_slice(&buf[..n]),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(format!("read the exec report: {e}")),
            }
            continue;
        }
        if !ev[1].is_empty() {
            if let Ok(Some(si)) = sfd.read_signal() {
                if si.ssi_signo as i32 != libc::SIGWINCH {
                    return Err(format!(
                        "interrupted by signal {} before the command started",
                        si.ssi_signo
                    ));
                }
            }
        }
        if !ev[2].is_empty() {
            return Err(if report.is_empty() {
                String::from("the exec helper died before the command started")
            } else {
                String::from_utf8_lossy(&report).into_owned()
            });
        }
    }
}

/// What the client copies.
enum Streams<'a> {
    /// stdin → master, master → stdout.
    Pty(&'a OwnedFd),
    /// stdin → stdin_w, stdout_r → stdout, stderr_r → stderr.
    Pipes {
        stdin_w: Option<OwnedFd>,
        stdout_r: &'a OwnedFd,
        stderr_r: &'a OwnedFd,
    },
}

/// What one read-and-copy step did.
enum Copied {
    /// Data was copied (or the read would block).
    Data,
    /// The source reached its end.
    Eof,
    /// Writing to our own stdout/stderr failed (EPIPE: nobody reads us any more).
    WriteFailed,
}

fn copy_once(from: &OwnedFd, to: i32, buf: &mut [u8]) -> Copied {
    match nix::unistd::read(from, buf) {
        Ok(n) if n > 0 => {
            let mut off = 0;
            while off < n {
                // SAFETY: writing a slice we own to an fd number we were given.
                let w = unsafe { libc::write(to, buf[off..n].as_ptr().cast(), n - off) };
                if w < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
                    continue;
                }
                if w <= 0 {
                    return Copied::WriteFailed;
                }
                off += w as usize;
            }
            Copied::Data
        }
        Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => Copied::Data,
        _ => Copied::Eof,
    }
}

fn set_nonblocking(fd: &OwnedFd) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    if let Ok(fl) = fcntl(fd, FcntlArg::F_GETFL) {
        let _ = fcntl(
            fd,
            FcntlArg::F_SETFL(OFlag::from_bits_retain(fl) | OFlag::O_NONBLOCK),
        );
    }
}

/// Relay the streams and forward signals to the command until the intermediate exits.
///
/// Input to the command is buffered and written without blocking, so a command that does not
/// read cannot stall the relay of its output; when nobody reads our stdout any more the command
/// gets SIGPIPE, as it would on a direct pipe.
fn relay(mid: &OwnedFd, cmd: &OwnedFd, sfd: &SignalFd, mut streams: Streams<'_>) {
    let tty_in = nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
    let is_pty = matches!(streams, Streams::Pty(_));
    let _raw = if is_pty && tty_in {
        Some(RawMode::enter())
    } else {
        None
    };
    match &streams {
        Streams::Pty(m) => set_nonblocking(m),
        Streams::Pipes {
            stdin_w: Some(w), ..
        } => set_nonblocking(w),
        Streams::Pipes { .. } => {}
    }
    let stdin = std::io::stdin();
    let mut stdin_open = true;
    let mut out_open = [true, true];
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    let mut done = false;
    // When a piped stdin ends, the shell on the pty gets ^D; a shell that flushed its input
    // while starting never sees it, so it is hung up a second later.
    let mut eof_at: Option<std::time::Instant> = None;
    loop {
        let (outs, input): (Vec<&OwnedFd>, Option<&OwnedFd>) = match &streams {
            Streams::Pty(m) => (vec![*m], Some(*m)),
            Streams::Pipes {
                stdout_r,
                stderr_r,
                stdin_w,
            } => (vec![*stdout_r, *stderr_r], stdin_w.as_ref()),
        };
        let mut fds = vec![
            PollFd::new(mid.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        let mut which = Vec::new();
        for (i, o) in outs.iter().enumerate() {
            if out_open[i] {
                fds.push(PollFd::new(o.as_fd(), PollFlags::POLLIN));
                which.push(i);
            }
        }
        let stdin_slot = if stdin_open && pending.is_empty() && !done {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            Some(fds.len() - 1)
        } else {
            None
        };
        let out_slot = match input {
            Some(w) if !pending.is_empty() && !done => {
                fds.push(PollFd::new(w.as_fd(), PollFlags::POLLOUT));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        let timeout = if done {
            PollTimeout::ZERO
        } else if eof_at.is_some() {
            PollTimeout::from(200u16)
        } else {
            PollTimeout::NONE
        };
        if let Some(t) = eof_at {
            if t.elapsed() > std::time::Duration::from_secs(1) {
                let _ = pidfd_kill(cmd.as_fd(), libc::SIGHUP);
                eof_at = None;
            }
        }
        match poll(&mut fds, timeout) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
            Ok(0) if done => break,
            Ok(_) => {}
        }
        let ev: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        let mut any_out = false;
        for (k, i) in which.iter().enumerate() {
            if !ev[2 + k].is_empty() {
                let to = if *i == 0 { 1 } else { 2 };
                match copy_once(outs[*i], to, &mut buf) {
                    Copied::Data => any_out = true,
                    Copied::Eof => out_open[*i] = false,
                    Copied::WriteFailed => {
                        out_open[*i] = false;
                        let _ = pidfd_kill(cmd.as_fd(), libc::SIGPIPE);
                    }
                }
            }
        }
        if let (Some(slot), Some(w)) = (out_slot, input) {
            if !ev[slot].is_empty() {
                match nix::unistd::write(w, &pending) {
                    Ok(n) => {
                        pending.drain(..n);
                    }
                    Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
                    // The command closed its input: drop what it will never read.
                    Err(_) => {
                        pending.clear();
                        stdin_open = false;
                    }
                }
            }
        }
        if let Some(slot) = stdin_slot {
            if !ev[slot].is_empty() {
                match nix::unistd::read(&stdin, &mut buf) {
                    Ok(n) if n > 0 => pending.extend_from_slice(&buf[..n]),
                    Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
                    _ => {
                        stdin_open = false;
                        match &mut streams {
                            Streams::Pty(_) if !tty_in => {
                                // EOF on a non-terminal stdin: the pty's EOF character.
                                pending.push(4);
                                eof_at = Some(std::time::Instant::now());
                            }
                            Streams::Pty(_) => {}
                            Streams::Pipes { stdin_w, .. } => *stdin_w = None,
                        }
                    }
                }
            }
        }
        if !ev[1].is_empty() {
            while let Ok(Some(si)) = sfd.read_signal() {
                let sig = si.ssi_signo as i32;
                if sig == libc::SIGWINCH {
                    if let Streams::Pty(m) = &streams {
                        copy_winsize(0, m.as_raw_fd());
                    }
                } else if sig == libc::SIGTERM && is_pty {
                    // A terminal session that is told to end sees its terminal hang up (an
                    // interactive shell ignores SIGTERM).
                    let _ = pidfd_kill(cmd.as_fd(), libc::SIGHUP);
                    let _ = pidfd_kill(cmd.as_fd(), libc::SIGTERM);
                } else {
                    let _ = pidfd_kill(cmd.as_fd(), sig);
                }
            }
        }
        if !ev[0].is_empty() {
            // The command has ended: drain what is already buffered, then stop (background
            // processes that keep the pipes open must not keep the client waiting).
            done = true;
        }
        if done && (!any_out || !out_open.iter().any(|o| *o)) {
            break;
        }
    }
}

/// True if process `pid` runs in a user namespace other than ours (a `userns` guest's init).
fn in_own_userns(pid: i32) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(format!("/proc/{pid}/ns/user")),
        std::fs::metadata("/proc/self/ns/user"),
    ) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) != (b.dev(), b.ino()),
        _ => false,
    }
}

/// Run `argv` as root in running guest `g` and return what it wrote to stdout (at most 64 KiB),
/// or None when it could not run, failed or took longer than `limit` (it is then killed). Its
/// stdin is empty and its stderr discarded. For host-side queries of a guest (status); the
/// output is the guest's and must be treated as untrusted.
pub fn capture(g: &Guest, argv: &[&str], limit: std::time::Duration) -> Option<String> {
    use std::io::Read;
    let (out_r, out_w) = sync::pipe().ok()?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .ok()?;
    let req = ExecRequest::command(argv.iter().map(|s| s.to_string()).collect());
    // SAFETY: the caller is single-threaded; the child only runs the exec path and exits.
    match unsafe { nix::unistd::fork() }.ok()? {
        nix::unistd::ForkResult::Child => {
            // SAFETY: dup2 onto our own standard fds from fds we hold.
            unsafe {
                libc::dup2(null.as_raw_fd(), 0);
                libc::dup2(out_w.as_raw_fd(), 1);
                libc::dup2(null.as_raw_fd(), 2);
            }
            drop(out_r);
            let code = exec(g, &req).unwrap_or(127);
            exit_now(code.clamp(0, 255))
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(out_w);
            let pidfd = pidfd_open(child.as_raw()).ok();
            let deadline = std::time::Instant::now() + limit;
            let mut out = Vec::new();
            let mut f = std::fs::File::from(out_r);
            let mut timed_out = false;
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    timed_out = true;
                    break;
                }
                let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
                let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => break,
                    Ok(_) => {}
                }
                let mut buf = [0u8; 8192];
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) if out.len() < 65536 => out.extend_from_slice(&buf[..n]),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            if timed_out {
                if let Some(p) = &pidfd {
                    let _ = pidfd_kill(p.as_fd(), libc::SIGKILL);
                }
            }
            let status = nix::sys::wait::waitpid(child, None);
            match status {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) if !timed_out => {
                    Some(String::from_utf8_lossy(&out).into_owned())
                }
                _ => None,
            }
        }
    }
}
