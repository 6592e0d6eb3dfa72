//! vserver's built-in init: pid 1 of guests without their own init (style `builtin`) and of
//! `sysv` guests. It reaps every orphan, runs the guest's start command and forwards HUP, USR1,
//! USR2 and QUIT to it. On TERM, INT or PWR from the host (or INT and PWR from inside) it shuts
//! the guest down: the stop command, then SIGTERM to every process of the guest, and it exits
//! once none is left (SIGKILL to what remains after `stop.kill_timeout`). Signals sent from
//! inside the guest follow busybox init's conventions: TERM reboots, USR2 powers off, USR1
//! halts, each after the same shutdown, through reboot(2) (which the monitor turns into the
//! guest's `on_reboot` / `on_halt`); a reboot or halt the guest may not do is ignored.

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
    /// Seconds the shutdown waits for the guest's processes after SIGTERM before SIGKILL.
    pub kill_timeout: u32,
    /// A reboot from inside (TERM sent by a guest process) restarts the guest
    /// (`on_reboot` is not `ignore`).
    pub reboot_allowed: bool,
    /// A poweroff or halt from inside (USR2, USR1) stops it (`on_halt` is not `ignore`).
    pub halt_allowed: bool,
    /// Start `command` again when it ends (`init.restart`).
    pub restart: crate::config::RestartPolicy,
}

/// The SysV plan: run `/etc/init.d/rc RUNLEVEL` (or the `S*` scripts of `/etc/rcN.d`) at boot
/// and runlevel 0's `K*` scripts at stop, as util-vserver's `sysv` style.
pub fn sysv_plan(runlevel: u8, env: Vec<CString>) -> InitPlan {
    let start = format!(
        "if [ -x /etc/init.d/rc ]; then exec /etc/init.d/rc {runlevel}; fi; \
         for s in /etc/rc{runlevel}.d/S*; do [ -x \"$s\" ] && \"$s\" start; done; exit 0"
    );
    // Stop what the runlevel started, once, in rc0's order (the stop links of services it
    // never started, such as those a host build disabled, are not run).
    let stop = format!(
        "for s in /etc/rc0.d/K*; do n=${{s#/etc/rc0.d/K??}}; \
         set -- /etc/rc{runlevel}.d/S??\"$n\"; [ -e \"$1\" ] || continue; \
         [ -x \"$s\" ] && \"$s\" stop; done; exit 0"
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
        ..Default::default()
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

/// Reap every exited child; returns true when no child is left. The main command's end is
/// recorded in `ended` (its status as a shell reports it: 128 + signal when killed).
fn reap(main: &mut Option<i32>, ended: &mut Option<i32>) -> bool {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return false,
            Ok(s) => {
                if let Some(p) = s.pid() {
                    if Some(p.as_raw()) == *main {
                        *main = None;
                        *ended = Some(match s {
                            WaitStatus::Exited(_, c) => c,
                            WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
                            _ => 1,
                        });
                    }
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return true, // ECHILD: nobody left
        }
    }
}

/// True while a process other than this init lives in its pid namespace (`/proc` is the
/// guest's own procfs): exec'd processes are not its children, but must end before it does
/// (its exit kills them with SIGKILL).
fn others_left() -> bool {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten().any(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|p| p != 1)
            })
        })
        .unwrap_or(false)
}

/// The main command ended with `code`: start it again when `init.restart` says so and the
/// burst allows ([`crate::config::RESTART_BURST`] within
/// [`crate::config::RESTART_WINDOW_SECS`]); each decision is said on the console (the guest's
/// log). Returns the new command's pid.
fn restart_if_asked(
    plan: &InitPlan,
    code: i32,
    restarts: &mut Vec<std::time::Instant>,
) -> Option<i32> {
    use crate::config::{RestartPolicy, RESTART_BURST, RESTART_WINDOW_SECS};
    let wanted = match plan.restart {
        RestartPolicy::No => false,
        RestartPolicy::OnFailure => code != 0,
        RestartPolicy::Always => true,
    };
    eprintln!("vserver-init: the service ended with status {code}");
    if !wanted {
        return None;
    }
    let window = std::time::Duration::from_secs(RESTART_WINDOW_SECS);
    restarts.retain(|t| t.elapsed() < window);
    if restarts.len() >= RESTART_BURST as usize {
        eprintln!(
            "vserver-init: {RESTART_BURST} restarts within {RESTART_WINDOW_SECS} s: not restarting it"
        );
        return None;
    }
    restarts.push(std::time::Instant::now());
    eprintln!("vserver-init: restarting the service ({})", restarts.len());
    plan.command.as_deref().and_then(|c| spawn(c, &plan.env))
}

/// What a shutdown ends in./// What a shutdown ends in.
#[derive(Clone, Copy, PartialEq)]
enum Ending {
    /// Exit 0 (a stop from the host).
    Exit,
    /// reboot(2) with this command (from inside: restart, power off, halt).
    Reboot(libc::c_int),
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
    let mut ending: Option<(Ending, std::time::Instant)> = None;
    let mut ended: Option<i32> = None;
    let mut restarts: Vec<std::time::Instant> = Vec::new();
    loop {
        if let Some((end, since)) = ending {
            // Done once every process is gone; SIGKILL to what outlives the timeout.
            if reap(&mut main, &mut ended) && !others_left() {
                match end {
                    Ending::Exit => std::process::exit(0),
                    Ending::Reboot(cmd) => {
                        // SAFETY: reboot(2) with a valid command; in a pid namespace it ends
                        // this init with SIGHUP (restart) or SIGINT (halt, power off).
                        unsafe { libc::reboot(cmd) };
                        std::process::exit(0);
                    }
                }
            }
            if since.elapsed() > std::time::Duration::from_secs(u64::from(plan.kill_timeout.max(1)))
            {
                let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
            }
            let mut fds = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&sfd),
                nix::poll::PollFlags::POLLIN,
            )];
            if !matches!(
                nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16)),
                Ok(n) if n > 0
            ) {
                continue;
            }
        }
        let Ok(Some(info)) = sfd.read_signal() else {
            continue;
        };
        let sig = Signal::try_from(info.ssi_signo as i32).unwrap_or(Signal::SIGCHLD);
        // A signal from the host (outside the pid namespace) carries sender pid 0.
        let from_inside = info.ssi_pid != 0;
        let wanted = match sig {
            Signal::SIGCHLD => {
                reap(&mut main, &mut ended);
                if let Some(code) = ended.take() {
                    if ending.is_none() {
                        main = restart_if_asked(plan, code, &mut restarts);
                    }
                }
                None
            }
            Signal::SIGTERM if from_inside => plan
                .reboot_allowed
                .then_some(Ending::Reboot(libc::RB_AUTOBOOT)),
            Signal::SIGUSR2 if from_inside => plan
                .halt_allowed
                .then_some(Ending::Reboot(libc::RB_POWER_OFF)),
            Signal::SIGUSR1 if from_inside => plan
                .halt_allowed
                .then_some(Ending::Reboot(libc::RB_HALT_SYSTEM)),
            Signal::SIGTERM | Signal::SIGINT | Signal::SIGPWR => Some(Ending::Exit),
            other => {
                if let Some(p) = main {
                    let _ = kill(Pid::from_raw(p), other);
                }
                None
            }
        };
        if let (Some(end), None) = (wanted, ending) {
            ending = Some((end, std::time::Instant::now()));
            if let Some(stop) = &plan.stop_command {
                if let Some(p) = spawn(stop, &plan.env) {
                    let _ = waitpid(Pid::from_raw(p), None);
                }
            }
            // kill(-1) from pid 1 reaches every other process of the pid namespace.
            let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
            let _ = kill(Pid::from_raw(-1), Signal::SIGCONT);
        } else if let (Some(Ending::Exit), Some((Ending::Reboot(_), since))) = (wanted, ending) {
            // A stop from the host wins over a reboot in progress.
            ending = Some((Ending::Exit, since));
        }
    }
}
