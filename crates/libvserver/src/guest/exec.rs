//! `vserver NAME exec|suexec|enter`: a new process inside a running guest.
//!
//! The caller opens the guest's cgroup files and compiles its seccomp filter on the host, joins
//! every namespace of the guest's init with one setns(2) on a pidfd, then clone3s the command
//! into the guest's cgroup. The command gets the guest's bounding set and seccomp filter, a
//! fresh pty from the guest's own devpts for `enter`, and dies with the caller (PDEATHSIG).
//! The caller relays the terminal and forwards INT, TERM, HUP, QUIT, USR1 and USR2.

use super::{failed, Guest, GuestError};
use crate::context::child::{self, UserSpec};
use crate::context::clone::{self, pidfd_kill, pidfd_open, Forked};
use crate::context::{sync, Payload};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

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
    let mut found = None;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            continue;
        }
        if f[0] == user || f[2] == user {
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

fn read_small(path: &str) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(1 << 20).read_to_string(&mut s);
    }
    s
}

/// Open a new pty pair in the current mount namespace's devpts: (master, slave).
fn open_guest_pty(name: &str) -> Result<(OwnedFd, OwnedFd), GuestError> {
    let master = nix::fcntl::open(
        "/dev/ptmx",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| failed(name, format!("open /dev/ptmx in the guest: {e}")))?;
    let st =
        nix::sys::stat::fstat(&master).map_err(|e| failed(name, format!("fstat ptmx: {e}")))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR
        || nix::sys::stat::major(st.st_rdev) != 5
        || nix::sys::stat::minor(st.st_rdev) != 2
    {
        return Err(failed(
            name,
            "/dev/ptmx in the guest is not the pty multiplexer",
        ));
    }
    let mut unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK takes a pointer to int; master is a ptmx fd.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) } != 0 {
        return Err(failed(
            name,
            format!("unlock pty: {}", nix::errno::Errno::last()),
        ));
    }
    // SAFETY: TIOCGPTPEER opens the slave without a path lookup; returns a new fd or -1.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY,
        )
    };
    if slave < 0 {
        return Err(failed(
            name,
            format!("open the pty slave: {}", nix::errno::Errno::last()),
        ));
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok((master, unsafe { OwnedFd::from_raw_fd(slave) }))
}

/// Restores the host terminal mode when dropped.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enter() -> RawMode {
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
    let cg = g.cgroup()?;
    let cg_fd = cg.open_unified().map_err(|source| GuestError::Cgroup {
        name: g.name.clone(),
        source,
    })?;
    let procs = cg
        .open_procs_files(cg_fd.is_some())
        .map_err(|source| GuestError::Cgroup {
            name: g.name.clone(),
            source,
        })?;
    let (cap_drop, seccomp) = super::start::security_of(g)?;
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWCGROUP;
    nix::sched::setns(init.as_fd(), flags).map_err(|e| {
        failed(
            name,
            format!("join the namespaces of pid {}: {e}", st.init_pid),
        )
    })?;
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
    let pty = if req.tty {
        Some(open_guest_pty(name)?)
    } else {
        None
    };
    if let Some((m, _)) = &pty {
        copy_winsize(0, m.as_raw_fd());
    }
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
    let (err_r, err_w) = sync::pipe().map_err(|e| failed(name, format!("pipe: {e}")))?;
    let forked = clone::clone3_fork(0, cg_fd.as_ref().map(|f| f.as_fd()))
        .or_else(|_| clone::clone3_fork(0, None))
        .map_err(|e| failed(name, format!("clone3 into the guest: {e}")))?;
    match forked {
        Forked::Child => {
            drop(err_r);
            let _ = set.thread_unblock();
            for mut f in procs {
                let _ = f.write_all(b"0");
            }
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            if let Some((m, s)) = pty {
                drop(m);
                if let Err(e) = child::make_stdio_terminal(&s) {
                    child::fail(&err_w, &e);
                }
            }
            let _ = nix::unistd::chdir(if user.is_some() {
                home.as_str()
            } else {
                "/root"
            })
            .or_else(|_| nix::unistd::chdir("/"));
            child::finish(&cap_drop, Some(&seccomp), user.as_ref(), &payload, err_w)
        }
        Forked::Parent { pidfd, .. } => {
            drop(err_w);
            let report = sync::read_to_end(err_r);
            if !report.is_empty() {
                let _ = clone::wait_pidfd(pidfd.as_fd());
                return Err(failed(name, report));
            }
            let sfd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
                .map_err(|e| failed(name, format!("signalfd: {e}")))?;
            let master = pty.map(|(m, s)| {
                drop(s);
                m
            });
            relay(&pidfd, &sfd, master.as_ref());
            let code =
                clone::wait_pidfd(pidfd.as_fd()).map_err(|e| failed(name, format!("wait: {e}")))?;
            Ok(code)
        }
    }
}

/// Relay stdin/stdout with the pty (if any) and forward signals until the command exits.
fn relay(pidfd: &OwnedFd, sfd: &SignalFd, master: Option<&OwnedFd>) {
    let _raw = if master.is_some() && nix::unistd::isatty(std::io::stdin()).unwrap_or(false) {
        Some(RawMode::enter())
    } else {
        None
    };
    let stdin = std::io::stdin();
    let mut stdin_open = master.is_some();
    let mut master_open = master.is_some();
    let mut buf = [0u8; 8192];
    loop {
        let mut fds = vec![
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(m) = master {
            if master_open {
                fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            }
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        if let Err(e) = poll(&mut fds, PollTimeout::NONE) {
            if e == nix::errno::Errno::EINTR {
                continue;
            }
            break;
        }
        let ev: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        let mut i = 2;
        if let Some(m) = master {
            if master_open {
                if !ev[i].is_empty() {
                    match nix::unistd::read(m, &mut buf) {
                        Ok(n) if n > 0 => {
                            let mut out = std::io::stdout();
                            let _ = out.write_all(&buf[..n]);
                            let _ = out.flush();
                        }
                        _ => master_open = false,
                    }
                }
                i += 1;
            }
            if stdin_open && !ev[i].is_empty() {
                match nix::unistd::read(&stdin, &mut buf) {
                    Ok(n) if n > 0 => {
                        let _ = nix::unistd::write(m, &buf[..n]);
                    }
                    // EOF on a non-terminal stdin: send the pty's EOF character.
                    _ => {
                        stdin_open = false;
                        let _ = nix::unistd::write(m, &[4u8]);
                    }
                }
            }
        }
        if !ev[1].is_empty() {
            while let Ok(Some(si)) = sfd.read_signal() {
                let sig = si.ssi_signo as i32;
                if sig == libc::SIGWINCH {
                    if let Some(m) = master {
                        copy_winsize(0, m.as_raw_fd());
                    }
                } else {
                    let _ = pidfd_kill(pidfd.as_fd(), sig);
                }
            }
        }
        if !ev[0].is_empty() {
            // The command exited: drain what it printed last.
            if let Some(m) = master {
                while master_open {
                    let mut f = [PollFd::new(m.as_fd(), PollFlags::POLLIN)];
                    if !matches!(poll(&mut f, PollTimeout::ZERO), Ok(n) if n > 0) {
                        break;
                    }
                    match nix::unistd::read(m, &mut buf) {
                        Ok(n) if n > 0 => {
                            let _ = std::io::stdout().write_all(&buf[..n]);
                        }
                        _ => master_open = false,
                    }
                }
                let _ = std::io::stdout().flush();
            }
            break;
        }
    }
}
