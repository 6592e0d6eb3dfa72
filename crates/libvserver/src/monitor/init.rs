//! vserver's built-in init: pid 1 of guests without their own init (style `builtin`) and of
//! `sysv` guests. It reaps every orphan, runs the guest's start command, forwards HUP, USR1,
//! USR2 and QUIT to it, and on TERM, INT or PWR runs the stop command, signals every process of
//! the guest with SIGTERM and exits when none is left.

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::ffi::CString;
use std::os::unix::process::CommandExt;

/// What the built-in init runs.
#[derive(Debug, Clone, Default)]
pub struct InitPlan {
    /// Started at boot; None: the init only reaps until it is told to stop.
    pub command: Option<Vec<CString>>,
    /// Run (and waited for) when the init is told to stop, before everything gets SIGTERM.
    pub stop_command: Option<Vec<CString>>,
    /// Environment of both commands.
    pub env: Vec<CString>,
}

/// The SysV plan: run `/etc/init.d/rc RUNLEVEL` (or the `S*` scripts of `/etc/rcN.d`) at boot
/// and runlevel 0's `K*` scripts at stop, as util-vserver's `sysv` style.
pub fn sysv_plan(runlevel: u8, env: Vec<CString>) -> InitPlan {
    let start = format!(
        "if [ -x /etc/init.d/rc ]; then exec /etc/init.d/rc {runlevel}; fi; \
         for s in /etc/rc{runlevel}.d/S*; do [ -x \"$s\" ] && \"$s\" start; done; exit 0"
    );
    let stop = String::from(
        "for s in /etc/rc0.d/K* /etc/rc6.d/K*; do [ -x \"$s\" ] && \"$s\" stop; done; exit 0",
    );
    let sh = |s: String| {
        ["/bin/sh", "-c", &s]
            .iter()
            .filter_map(|a| CString::new(*a).ok())
            .collect::<Vec<_>>()
    };
    InitPlan {
        command: Some(sh(start)),
        stop_command: Some(sh(stop)),
        env,
    }
}

fn spawn(argv: &[CString], env: &[CString]) -> Option<i32> {
    let (prog, args) = argv.split_first()?;
    let mut cmd = std::process::Command::new(prog.to_string_lossy().as_ref());
    cmd.args(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .env_clear();
    for kv in env {
        let s = kv.to_string_lossy();
        if let Some((k, v)) = s.split_once('=') {
            cmd.env(k, v);
        }
    }
    // SAFETY: reset_signals and setsid are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            crate::context::child::reset_signals();
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    match cmd.spawn() {
        Ok(c) => Some(c.id() as i32),
        Err(e) => {
            eprintln!("vserver-init: cannot start {}: {e}", prog.to_string_lossy());
            None
        }
    }
}

/// Reap every exited child; returns (main command exited, no child left).
fn reap(main: &mut Option<i32>) -> bool {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return false,
            Ok(s) => {
                if let Some(p) = s.pid() {
                    if Some(p.as_raw()) == *main {
                        *main = None;
                    }
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return true, // ECHILD: nobody left
        }
    }
}

/// Run as pid 1 of a guest. Never returns; exits 0 after a requested stop.
pub fn run(plan: &InitPlan) -> ! {
    let _ = nix::sys::prctl::set_name(c"vserver-init");
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGPWR,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGQUIT,
    ] {
        set.add(s);
    }
    let _ = set.thread_block();
    let sfd = match SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vserver-init: signalfd: {e}");
            // SAFETY: _exit is always safe.
            unsafe { libc::_exit(1) }
        }
    };
    let mut main = plan.command.as_deref().and_then(|c| spawn(c, &plan.env));
    let mut stopping = false;
    loop {
        let Ok(Some(info)) = sfd.read_signal() else {
            continue;
        };
        let sig = Signal::try_from(info.ssi_signo as i32).unwrap_or(Signal::SIGCHLD);
        match sig {
            Signal::SIGCHLD => {
                if reap(&mut main) && stopping {
                    std::process::exit(0);
                }
            }
            Signal::SIGTERM | Signal::SIGINT | Signal::SIGPWR => {
                if !stopping {
                    stopping = true;
                    if let Some(stop) = &plan.stop_command {
                        if let Some(p) = spawn(stop, &plan.env) {
                            let _ = waitpid(Pid::from_raw(p), None);
                        }
                    }
                    // kill(-1) from pid 1 reaches every other process of the pid namespace.
                    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
                    let _ = kill(Pid::from_raw(-1), Signal::SIGCONT);
                }
                if reap(&mut main) {
                    std::process::exit(0);
                }
            }
            other => {
                if let Some(p) = main {
                    let _ = kill(Pid::from_raw(p), other);
                }
            }
        }
    }
}
