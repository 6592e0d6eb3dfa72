//! The guest's console: the monitor holds the master side of the pty that is the init's
//! /dev/console, copies everything to `RUN/NAME/console.log` (rotated to `console.log.1`) and
//! serves one attached client at a time on the unix socket `RUN/NAME/console.sock` (mode 0600).
//!
//! Client to monitor, framed: `b'd'`, length (u16, big endian), bytes to type into the console;
//! or `b'w'`, 4, rows and columns (u16 each, big endian) for the console's window size
//! (TIOCSWINSZ). Monitor to client: the console's output as it comes. The client detaches on
//! Ctrl-] (0x1d), as telnet and virsh do.

use super::{failed, Guest, GuestError};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

/// The byte that detaches a console client: Ctrl-].
pub const DETACH: u8 = 0x1d;

/// The console socket of guest `g`.
pub fn socket_path(g: &Guest) -> PathBuf {
    g.run_dir().file("console.sock")
}

/// The monitor's end: the listening socket and the attached client, if any.
pub struct ConsoleServer {
    listener: UnixListener,
    client: Option<UnixStream>,
    inbuf: Vec<u8>,
}

impl ConsoleServer {
    /// Listen on `path` (a stale socket is replaced), mode 0600, non-blocking.
    /// Errors: bind(2) or chmod failures, as text naming the path.
    pub fn listen(path: &std::path::Path) -> Result<ConsoleServer, String> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)
            .map_err(|e| format!("console socket {}: {e}", path.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("console socket {}: {e}", path.display()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("console socket {}: {e}", path.display()))?;
        Ok(ConsoleServer {
            listener,
            client: None,
            inbuf: Vec::new(),
        })
    }

    /// The descriptors to poll for input: the listener, and the client when attached.
    pub fn poll_fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut v = vec![self.listener.as_fd()];
        if let Some(c) = &self.client {
            v.push(c.as_fd());
        }
        v
    }

    /// Accept a waiting client. A second one is told the console is busy and closed.
    pub fn accept(&mut self) {
        while let Ok((mut s, _)) = self.listener.accept() {
            if self.client.is_some() {
                let _ = s.write_all(b"\r\n[the console is attached elsewhere]\r\n");
                continue;
            }
            let _ = s.set_nonblocking(true);
            self.inbuf.clear();
            self.client = Some(s);
        }
    }

    /// Read what the client sent and apply it to the console `master`: typed bytes are
    /// written, window sizes set. A client that hung up or sent garbage is dropped.
    pub fn from_client(&mut self, master: BorrowedFd<'_>) {
        let Some(c) = &mut self.client else {
            return;
        };
        let mut buf = [0u8; 4096];
        match c.read(&mut buf) {
            Ok(0) => {
                self.client = None;
                return;
            }
            Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(_) => {
                self.client = None;
                return;
            }
        }
        while self.inbuf.len() >= 3 {
            let len = usize::from(u16::from_be_bytes([self.inbuf[1], self.inbuf[2]]));
            if self.inbuf.len() < 3 + len {
                break;
            }
            let frame: Vec<u8> = self.inbuf.drain(..3 + len).collect();
            match (frame[0], &frame[3..]) {
                (b'd', data) => {
                    let _ = nix::unistd::write(master, data);
                }
                (b'w', [r0, r1, c0, c1]) => {
                    let ws = libc::winsize {
                        ws_row: u16::from_be_bytes([*r0, *r1]),
                        ws_col: u16::from_be_bytes([*c0, *c1]),
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
                    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
                }
                _ => {
                    self.client = None;
                    return;
                }
            }
        }
    }

    /// Send console output to the attached client without ever blocking the monitor: output
    /// that does not fit is dropped for the client (the log keeps it).
    pub fn to_client(&mut self, data: &[u8]) {
        if let Some(c) = &mut self.client {
            match c.write(data) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => self.client = None,
            }
        }
    }
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn winsize_frame() -> Option<Vec<u8>> {
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a winsize on our stdin.
    if unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } != 0 {
        return None;
    }
    let mut p = ws.ws_row.to_be_bytes().to_vec();
    p.extend_from_slice(&ws.ws_col.to_be_bytes());
    Some(frame(b'w', &p))
}

/// `vserver NAME console`: attach this terminal to the guest's console until Ctrl-] or the
/// guest's end. Errors: the guest does not run, or its monitor serves no console.
pub fn attach(g: &Guest) -> Result<(), GuestError> {
    if g.running().is_none() {
        return Err(GuestError::NotRunning(g.name.clone()));
    }
    let path = socket_path(g);
    let mut sock = UnixStream::connect(&path).map_err(|e| {
        failed(
            &g.name,
            format!(
                "console socket {}: {e} (is its monitor alive?)",
                path.display()
            ),
        )
    })?;
    eprintln!(
        "[attached to the console of {}; detach with Ctrl-]]\r",
        g.name
    );
    let _raw = super::exec::RawMode::enter();
    let mut mask = nix::sys::signal::SigSet::empty();
    mask.add(nix::sys::signal::Signal::SIGWINCH);
    let _ = mask.thread_block();
    let sfd = nix::sys::signalfd::SignalFd::with_flags(
        &mask,
        nix::sys::signalfd::SfdFlags::SFD_CLOEXEC | nix::sys::signalfd::SfdFlags::SFD_NONBLOCK,
    )
    .map_err(|e| failed(&g.name, format!("signalfd: {e}")))?;
    if let Some(f) = winsize_frame() {
        let _ = sock.write_all(&f);
    }
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    let mut buf = [0u8; 4096];
    let mut stdin_open = true;
    loop {
        let sock_fd: OwnedFd = match sock.try_clone() {
            Ok(s) => s.into(),
            Err(_) => break,
        };
        let mut fds = vec![
            PollFd::new(sock_fd.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
            Ok(_) => {}
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (from_sock, winch, typed) = (ready(0), ready(1), ready(2));
        drop(fds);
        if from_sock {
            match sock.read(&mut buf) {
                Ok(0) | Err(_) => break, // the guest ended
                Ok(n) => {
                    let _ = out.write_all(&buf[..n]);
                    let _ = out.flush();
                }
            }
        }
        if winch {
            let _ = sfd.read_signal();
            if let Some(f) = winsize_frame() {
                let _ = sock.write_all(&f);
            }
        }
        if typed {
            match nix::unistd::read(&stdin, &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    let data = &buf[..n];
                    let cut = data.iter().position(|&b| b == DETACH);
                    let send = &data[..cut.unwrap_or(n)];
                    if !send.is_empty() && sock.write_all(&frame(b'd', send)).is_err() {
                        break;
                    }
                    if cut.is_some() {
                        break;
                    }
                }
            }
        }
    }
    drop(_raw);
    eprintln!("\r\n[detached from the console of {}]", g.name);
    Ok(())
}

/// `vserver NAME logs [-f]`: write the console log (`console.log.1`, then `console.log`) to
/// `out`; with `follow`, keep writing what is appended (across rotations) until `out` fails
/// or the process is interrupted. Errors: the guest has no console log yet.
pub fn logs(g: &Guest, follow: bool, out: &mut dyn Write) -> Result<(), GuestError> {
    let rd = g.run_dir();
    let (old, cur) = (rd.file("console.log.1"), rd.file("console.log"));
    if !cur.exists() && !old.exists() && !follow {
        return Err(failed(
            &g.name,
            format!("no console log yet ({})", cur.display()),
        ));
    }
    if let Ok(b) = std::fs::read(&old) {
        let _ = out.write_all(&b);
    }
    // Keep the file we read open: when the monitor rotates it, read the rest of the old one
    // before turning to the new one, so that no line is lost.
    let mut open: Option<(std::fs::File, u64)> = None;
    loop {
        use std::os::unix::fs::MetadataExt;
        let path_ino = std::fs::metadata(&cur).map(|m| m.ino()).ok();
        if open.is_none() {
            open = std::fs::File::open(&cur)
                .ok()
                .and_then(|f| f.metadata().ok().map(|m| (f, m.ino())));
        }
        if let Some((f, ino)) = &mut open {
            let mut chunk = Vec::new();
            let _ = f.read_to_end(&mut chunk);
            if !chunk.is_empty() && out.write_all(&chunk).and_then(|()| out.flush()).is_err() {
                return Ok(());
            }
            if path_ino != Some(*ino) {
                // Rotated: the old file is drained; follow the new one from its start.
                open = None;
                if follow {
                    continue;
                }
            }
        }
        if !follow {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
