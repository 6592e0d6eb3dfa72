//! The per-guest monitor: a small host process, parent of the guest's init. It copies the
//! console to `LOG/NAME/console.log`, reaps the init, records its exit in `last-exit`, and
//! cleans up (cgroup, veths, state) when the guest ends, whether stopped or by itself.

pub mod init;

use crate::guest::state::{now_unix, RunDir};
use crate::guest::Guest;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

/// Largest console log before it is rotated to `console.log.1`, bytes.
pub const CONSOLE_LOG_MAX: u64 = 1 << 20;

/// The console log: kept open, rotated to `console.log.1` past [`CONSOLE_LOG_MAX`] bytes.
struct ConsoleLog {
    file: Option<std::fs::File>,
    size: u64,
}

impl ConsoleLog {
    fn append(&mut self, g: &Guest, data: &[u8]) {
        let path = g.log_file("console.log");
        if self.file.is_none() || self.size > CONSOLE_LOG_MAX {
            if self.size > CONSOLE_LOG_MAX {
                let _ = std::fs::rename(&path, g.log_file("console.log.1"));
            }
            self.file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .ok();
            self.size = self
                .file
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .map(|m| m.len())
                .unwrap_or(0);
        }
        if let Some(f) = &mut self.file {
            if f.write_all(data).is_ok() {
                self.size += data.len() as u64;
            }
        }
    }
}

/// Most restarts from inside within [`RESTART_WINDOW_SECS`]; past them a reboot stops the guest
/// (a guest rebooting in a loop must not keep the host busy starting it).
pub const MAX_RESTARTS: usize = 5;
/// The window of [`MAX_RESTARTS`], seconds.
pub const RESTART_WINDOW_SECS: u64 = 60;

/// Record a restart in `RUN/NAME/restarts` and tell whether the limit is exceeded (then the
/// guest stays stopped and the monitor log says why).
fn restart_storm(g: &Guest, rd: &RunDir) -> bool {
    let now = now_unix();
    let path = rd.file("restarts");
    let mut recent: Vec<u64> = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .filter(|t| now.saturating_sub(*t) < RESTART_WINDOW_SECS)
        .collect();
    if recent.len() >= MAX_RESTARTS {
        eprintln!(
            "{}: {} restarts from inside within {RESTART_WINDOW_SECS} s: leaving the guest stopped",
            g.name,
            recent.len()
        );
        return true;
    }
    recent.push(now);
    let text: Vec<String> = recent.iter().map(|t| t.to_string()).collect();
    let _ = std::fs::write(&path, text.join(" "));
    false
}

/// A systemd guest's boot as the monitor follows it: the start waits on `report` until the
/// guest's systemd sends READY=1 on `notify` ("OK"), or its init ends, or `deadline` passes
/// (then the guest is halted with SIGRTMIN+3, killed after `kill_timeout`, and the start
/// fails with the reason and the console's last lines). Once READY=1 has come the monitor
/// closes its end of the notify socket: the guest's later messages fail at once (systemd
/// ignores that) instead of queueing (a full queue would block the guest's pid 1, and a guest
/// flooding it would cost the host CPU). The boot state is kept in
/// `RUN/NAME/`[`crate::guest::systemd::BOOT_STATE_FILE`]: `starting`, `ready`, and
/// `stopping` once `vserver stop` began.
pub struct Boot {
    /// The pipe the starting command reads; None once reported (or not waited for).
    pub report: Option<OwnedFd>,
    /// The guest's notify socket, until READY=1.
    pub notify: Option<crate::guest::systemd::NotifySocket>,
    /// When the wait for READY=1 ends.
    pub deadline: Instant,
    /// The wait in seconds, for messages.
    pub ready_timeout_secs: u32,
    /// Between the halt of a guest that did not boot in time and SIGKILL.
    pub kill_timeout: Duration,
}

/// The last `n` lines of the guest's console log, control characters and escape sequences
/// dropped, joined by " / " (for a start that failed).
pub fn console_tail(g: &Guest, n: usize) -> String {
    let text = std::fs::read(g.log_file("console.log")).unwrap_or_default();
    let start = text.len().saturating_sub(16384);
    let text = String::from_utf8_lossy(&text[start..]);
    let mut lines: Vec<String> = text
        .split(['\n', '\r'])
        .map(strip_escapes)
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let keep = lines.len().saturating_sub(n);
    lines.drain(..keep);
    lines.join(" / ")
}

/// `line` without ANSI escape sequences (ESC [ ... letter) and other control characters.
fn strip_escapes(line: &str) -> String {
    let mut out = String::new();
    let mut it = line.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            if it.peek() == Some(&'[') {
                it.next();
                for d in it.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if !c.is_control() {
            out.push(c);
        }
    }
    out
}

fn rd_file(g: &Guest, name: &str) -> std::path::PathBuf {
    g.run_dir().file(name)
}

/// One line of the monitor's log (its stderr, `LOG/NAME/monitor.log`), stamped with the UTC
/// time and the guest's name; also to journald where the host runs it ([`journal_send`]).
fn note(g: &Guest, msg: &str) {
    eprintln!(
        "{} {}: {msg}",
        crate::storage::snapshot::utc_label(now_unix()),
        g.name
    );
    journal_send(&g.name, msg);
}

/// [`note`] from a command rather than the monitor: appended to `LOG/NAME/monitor.log` (and
/// sent to journald). Errors writing are ignored, as the monitor's own are.
pub(crate) fn note_in_log(g: &Guest, msg: &str) {
    use std::io::Write;
    make_log_dirs(g);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(g.log_file("monitor.log"))
    {
        let _ = writeln!(
            f,
            "{} {}: {msg}",
            crate::storage::snapshot::utc_label(now_unix()),
            g.name
        );
    }
    journal_send(&g.name, msg);
}

/// `LOG` and `LOG/NAME`, made mode 0700 where missing: root's only (a console log may hold
/// what was typed at the guest's console). Errors are ignored (the logs then go nowhere).
pub(crate) fn make_log_dirs(g: &Guest) {
    for d in [g.paths.log_dir.clone(), g.paths.guest_log_dir(&g.name)] {
        if std::fs::create_dir(&d).is_ok() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700));
        }
    }
}

/// journald's socket for structured messages (systemd.io/JOURNAL_NATIVE_PROTOCOL).
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Send `msg` to the host's journald with the syslog identifier `vserver-NAME` (so
/// `journalctl -t vserver-NAME` shows one guest's monitor), priority info; nothing where
/// journald does not run. One datagram in the native protocol's text form: fields
/// `KEY=value` one per line, newlines in the message made spaces.
pub fn journal_send(name: &str, msg: &str) {
    if !std::path::Path::new(JOURNAL_SOCKET).exists() {
        return;
    }
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let body = format!(
        "SYSLOG_IDENTIFIER=vserver-{name}\nPRIORITY=6\nVSERVER_GUEST={name}\nMESSAGE={}\n",
        msg.replace('\n', " ")
    );
    let _ = sock.send_to(body.as_bytes(), JOURNAL_SOCKET);
}

/// Supervise the guest until its init exits, then clean up and exit the process.
/// `console` is the console pty's master and a copy of its slave (kept open, so the console
/// survives an init that closes its own). `post_stop` runs the post-stop script unless a `vserver stop` is in progress (it runs it).
/// `server` serves the console to `vserver NAME console` (listening before the start reports,
/// so the socket exists once `start` returns). `netns`, when given, is the guest's network
/// namespace, held so that the counters that live
/// there (macvlan) can be saved once the init has exited. `boot`: a systemd guest's boot,
/// reported when it is done ([`Boot`]).
pub fn run(
    g: &Guest,
    init_pidfd: OwnedFd,
    console: Option<(OwnedFd, OwnedFd)>,
    server: Option<crate::guest::console::ConsoleServer>,
    netns: Option<OwnedFd>,
    boot: Option<Boot>,
) -> ! {
    let mut boot = boot;
    // Why a boot that did not finish failed (for the report), and when a guest halted for
    // taking too long gets SIGKILL.
    let mut boot_failed: Option<String> = None;
    let mut kill_at: Option<Instant> = None;
    // Traffic counters are checkpointed every accounting_interval seconds (0: never).
    let interval = (g.config.accounting_interval > 0 && !g.config.interface.is_empty())
        .then(|| Duration::from_secs(u64::from(g.config.accounting_interval)));
    let mut checkpoint_at = interval.map(|i| Instant::now() + i);
    // The console's last lines when the boot was given up (before the halt's own lines).
    let mut tail_at_failure: Option<String> = None;
    let boot_file = rd_file(g, crate::guest::systemd::BOOT_STATE_FILE);
    let mut boot_state = "starting";
    let rd = g.run_dir();
    // The master, and our own copy of the slave (see guest::start): held until the end.
    let (mut console, _peer) = match console {
        Some((m, p)) => (Some(m), Some(p)),
        None => (None, None),
    };
    let mut buf = vec![0u8; 65536];
    let mut log = ConsoleLog {
        file: None,
        size: 0,
    };
    let sock_path = crate::guest::console::socket_path(g);
    let mut server = server;
    if let Some(c) = &console {
        // Non-blocking: typed input the guest does not read must never stall the monitor.
        let _ = nix::fcntl::fcntl(
            c,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
    }
    loop {
        let mut fds = vec![PollFd::new(init_pidfd.as_fd(), PollFlags::POLLIN)];
        let (mut at_console, mut at_listener, mut at_client) = (None, None, None);
        let (mut at_notify, mut at_report) = (None, None);
        if let Some(b) = &boot {
            if let Some(n) = &b.notify {
                at_notify = Some(fds.len());
                fds.push(PollFd::new(n.fd(), PollFlags::POLLIN));
            }
            // The start waiting on the report: POLLERR once it is gone (killed).
            if let (Some(r), None) = (&b.report, &boot_failed) {
                at_report = Some(fds.len());
                fds.push(PollFd::new(r.as_fd(), PollFlags::empty()));
            }
        }
        if let Some(c) = &console {
            let mut want = PollFlags::POLLIN;
            if server.as_ref().is_some_and(|s| s.has_pending()) {
                want |= PollFlags::POLLOUT;
            }
            at_console = Some(fds.len());
            fds.push(PollFd::new(c.as_fd(), want));
        }
        if let Some(srv) = &server {
            at_listener = Some(fds.len());
            fds.push(PollFd::new(srv.listener_fd(), PollFlags::POLLIN));
            if let (Some(fd), Some(_)) = (srv.client_fd(), &console) {
                at_client = Some(fds.len());
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
            }
        }
        // The next moment something is due: the boot's deadline, the kill of a halted guest.
        let due = [
            boot.as_ref()
                .filter(|b| b.report.is_some() && boot_failed.is_none())
                .map(|b| b.deadline),
            kill_at,
            checkpoint_at,
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = match due {
            None => PollTimeout::NONE,
            Some(t) => {
                let ms = t.saturating_duration_since(Instant::now()).as_millis();
                PollTimeout::from(u16::try_from(ms.min(60_000)).unwrap_or(u16::MAX))
            }
        };
        match poll(&mut fds, timeout) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
            Ok(_) => {}
        }
        let ev = |i: Option<usize>| {
            i.and_then(|i| fds.get(i))
                .and_then(|f| f.revents())
                .unwrap_or(PollFlags::empty())
        };
        let init_done = !ev(Some(0)).is_empty();
        if let (Some(at), Some(i)) = (checkpoint_at, interval) {
            if Instant::now() >= at && !init_done {
                crate::guest::network::checkpoint_traffic(g, g.config.context, netns.as_ref());
                checkpoint_at = Some(Instant::now() + i);
            }
        }
        let (con_ev, listen_ev, client_ev) = (ev(at_console), ev(at_listener), ev(at_client));
        let notify_ev = ev(at_notify);
        let report_ev = ev(at_report);
        drop(fds);
        if let Some(b) = &mut boot {
            if report_ev.intersects(PollFlags::POLLERR | PollFlags::POLLHUP)
                && boot_failed.is_none()
            {
                // The starting command died before the guest was up: do not leave a guest
                // nobody asked for (cleaned up below once its init ends).
                note(g, "the start was interrupted: stopping the guest");
                boot_failed = Some(String::from("the start was interrupted"));
                let _ = crate::context::clone::pidfd_kill(init_pidfd.as_fd(), libc::SIGKILL);
            }
            let notified = match &b.notify {
                Some(sock) if !notify_ev.is_empty() => Some(sock.drain()),
                _ => None,
            };
            if let Some(n) = notified {
                let now = if n.stopping {
                    "stopping"
                } else if n.ready {
                    "ready"
                } else {
                    boot_state
                };
                if now != boot_state {
                    boot_state = now;
                    let _ = std::fs::write(&boot_file, format!("{now}\n"));
                }
                if n.ready {
                    b.notify = None;
                }
                if n.ready && boot_failed.is_none() {
                    if let Some(r) = b.report.take() {
                        let ok = match g.run_dir().read_state() {
                            Some(st) => crate::guest::start::report_ok(&r, &st),
                            None => nix::unistd::write(&r, b"OK").is_ok(),
                        };
                        if !ok {
                            // The starting command died before the guest was up: do not leave
                            // a guest nobody asked for (cleaned up below once its init ends).
                            note(g, "the start was interrupted: stopping the guest");
                            boot_failed = Some(String::from("the start was interrupted"));
                            let _ = crate::context::clone::pidfd_kill(
                                init_pidfd.as_fd(),
                                libc::SIGKILL,
                            );
                        }
                    }
                }
            }
            if b.report.is_some() && boot_failed.is_none() && Instant::now() >= b.deadline {
                tail_at_failure = Some(console_tail(g, 8));
                boot_failed = Some(format!(
                    "its systemd did not finish booting within {} s (init.ready_timeout); \
                     halted it",
                    b.ready_timeout_secs
                ));
                let _ = crate::context::clone::pidfd_kill(init_pidfd.as_fd(), libc::SIGRTMIN() + 3);
                kill_at = Some(Instant::now() + b.kill_timeout);
            }
        }
        if kill_at.is_some_and(|t| Instant::now() >= t) {
            kill_at = None;
            if let Ok(cg) = g.cgroup() {
                cg.kill_all();
            }
            let _ = crate::context::clone::pidfd_kill(init_pidfd.as_fd(), libc::SIGKILL);
        }
        if con_ev.contains(PollFlags::POLLIN) {
            if let Some(c) = &console {
                match nix::unistd::read(c, &mut buf) {
                    Ok(n) if n > 0 => {
                        log.append(g, &buf[..n]);
                        if let Some(srv) = &mut server {
                            srv.to_client(&buf[..n]);
                        }
                    }
                    Err(nix::errno::Errno::EAGAIN) => {}
                    _ => console = None,
                }
            }
        } else if con_ev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
            // Nobody holds the console any more.
            console = None;
        }
        if let Some(srv) = &mut server {
            if let (Some(c), true) = (&console, con_ev.contains(PollFlags::POLLOUT)) {
                srv.flush(c.as_fd());
            }
            if !listen_ev.is_empty() {
                srv.accept(console.is_some());
            }
            if let (Some(c), false) = (&console, client_ev.is_empty()) {
                srv.from_client(c.as_fd());
            }
        }
        if init_done {
            break;
        }
    }
    drop(server);
    let _ = std::fs::remove_file(&sock_path);
    let ended = crate::context::clone::wait_pidfd_exit(init_pidfd.as_fd());
    // A boot that never finished: the start is still waiting to hear why.
    let pending_report = boot.as_mut().and_then(|b| b.report.take());
    let status = match ended {
        Ok(crate::context::clone::Exit::Code(c)) => c,
        Ok(crate::context::clone::Exit::Signal(s)) => 128 + s,
        Err(_) => -1,
    };
    if let Some(ns) = &netns {
        crate::guest::network::save_netns_traffic(g, g.config.context, ns);
    }
    drop(netns);
    crate::guest::network::save_classic_traffic(g, g.config.context);
    let _ = std::fs::write(rd.file("last-exit"), format!("{status} {}\n", now_unix()));
    let stopping = rd.file("stopping").exists();
    let mut ok = true;
    // Clean up only if no other command works on this guest: a stop cleans up itself once we
    // are gone, and a start repairs what it finds. The lock is kept until the decision about a
    // restart is carried out, so that a stop arriving meanwhile waits and then stops the
    // restarted guest, instead of being undone by the restart.
    // Without a stop in progress (its marker is written before it signals the init), whoever
    // holds the lock (the start that is still returning, an exec) lets go soon: wait for it,
    // so that an init that ended at once is still cleaned up. A stop holds the lock while it
    // waits for us and cleans up itself.
    let lock = if stopping {
        crate::guest::state::GuestLock::try_acquire(&rd)
            .ok()
            .flatten()
    } else {
        crate::guest::state::GuestLock::acquire(&rd).ok()
    };
    if lock.is_some() {
        if let Err(e) = crate::guest::repair(g) {
            eprintln!("{e}");
            ok = false;
        }
    }
    if !stopping {
        for stage in ["post-stop", "postpost-stop"] {
            if let Err(e) = crate::guest::scripts::run(g, stage) {
                eprintln!("{e}");
            }
        }
    }
    // A reboot or halt inside: the kernel kills the guest's init with SIGHUP (restart) or
    // SIGINT (halt, power off); see reboot(2) on PID namespaces. An exit code of 129 or 130
    // is not one.
    let action = match ended {
        Ok(crate::context::clone::Exit::Signal(s)) if s == libc::SIGHUP => {
            Some(("reboot", g.config.stop.on_reboot))
        }
        Ok(crate::context::clone::Exit::Signal(s)) if s == libc::SIGINT => {
            Some(("halt", g.config.stop.on_halt))
        }
        _ => None,
    };
    if let Some(r) = pending_report {
        let why = boot_failed.unwrap_or_else(|| {
            if stopping {
                String::from("it was stopped while booting")
            } else {
                format!("its init ended while booting (status {status})")
            }
        });
        let tail = tail_at_failure.unwrap_or_else(|| console_tail(g, 8));
        let msg = if tail.is_empty() {
            format!("{}: {why}", g.name)
        } else {
            format!("{}: {why}; the console's last lines: {tail}", g.name)
        };
        note(
            g,
            msg.strip_prefix(&format!("{}: ", g.name)).unwrap_or(&msg),
        );
        let _ = nix::unistd::write(&r, msg.as_bytes());
        std::process::exit(1);
    }
    match (action, lock) {
        (Some((what, crate::config::GuestAction::Restart)), Some(lock))
            if ok && !stopping && !restart_storm(g, &rd) =>
        {
            note(g, &format!("{what} inside: starting it again"));
            // The new monitor is forked from this one: it must inherit nothing but the lock
            // (the console pty, pidfds, sockets and files of this run would pile up with every
            // restart, a host pty each).
            drop(console);
            drop(_peer);
            drop(boot);
            drop(log);
            drop(init_pidfd);
            let mut keep = vec![lock.raw_fd()];
            keep.extend(crate::testhook::fd());
            let _ = crate::context::clone::close_all_but(&keep);
            match crate::guest::Guest::load(&g.paths, &g.name).and_then(|fresh| {
                crate::guest::start::start_locked(&fresh, lock, &mut |m: &str| eprintln!("{m}"))
            }) {
                Ok(_) => std::process::exit(0),
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1)
                }
            }
        }
        _ if stopping => note(g, &format!("stopped by vserver stop (status {status})")),
        (Some((what, _)), _) => note(g, &format!("{what} inside: left stopped")),
        (None, _) => note(g, &format!("the init ended (status {status})")),
    }
    std::process::exit(if ok { 0 } else { 1 })
}
