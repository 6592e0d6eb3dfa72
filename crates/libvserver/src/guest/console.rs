//! The guest's console: the monitor holds the master side of the pty that is the init's
//! /dev/console, copies everything to `LOG/NAME/console.log` (rotated to `console.log.1`) and
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

/// Most typed bytes kept for a console whose reader is slow; past this the client is not read
/// until the guest has taken some (so a paste never blocks the monitor).
const PENDING_MAX: usize = 64 * 1024;

/// The monitor's end: the listening socket, the attached client, if any, and the typed bytes
/// the console has not taken yet.
pub struct ConsoleServer {
    listener: UnixListener,
    client: Option<UnixStream>,
    inbuf: Vec<u8>,
    pending: Vec<u8>,
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
            pending: Vec::new(),
        })
    }

    /// The listener, to poll for input.
    pub fn listener_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// The client, to poll for input, while there is room for what it types.
    pub fn client_fd(&self) -> Option<BorrowedFd<'_>> {
        self.client
            .as_ref()
            .filter(|_| self.pending.len() < PENDING_MAX)
            .map(|c| c.as_fd())
    }

    /// Whether typed bytes wait for the console to take them (poll it for POLLOUT).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Write what waits to the (non-blocking) console `master`, as much as it takes.
    pub fn flush(&mut self, master: BorrowedFd<'_>) {
        while !self.pending.is_empty() {
            match nix::unistd::write(master, &self.pending) {
                Ok(n) if n > 0 => {
                    self.pending.drain(..n);
                }
                _ => break,
            }
        }
    }

    /// Accept a waiting client. A second one is told the console is busy and closed, and so is
    /// every client once the guest has closed its console (`open` false).
    pub fn accept(&mut self, open: bool) {
        while let Ok((mut s, _)) = self.listener.accept() {
            if !open {
                let _ = s.write_all(b"\r\n[the guest's console is closed]\r\n");
                continue;
            }
            if self.client.is_some() {
                let _ = s.write_all(b"\r\n[the console is attached elsewhere]\r\n");
                continue;
            }
            let _ = s.set_nonblocking(true);
            self.inbuf.clear();
            self.pending.clear();
            self.client = Some(s);
        }
    }

    /// Read what the client sent and apply it to the (non-blocking) console `master`: typed
    /// bytes are written as far as the console takes them (the rest waits, see
    /// [`ConsoleServer::flush`]), window sizes set. A client that hung up or sent garbage is
    /// dropped.
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
                    let room = PENDING_MAX.saturating_sub(self.pending.len());
                    self.pending
                        .extend_from_slice(&data[..data.len().min(room)]);
                    self.flush(master);
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
    let sock = UnixStream::connect(&path).map_err(|e| {
        failed(
            &g.name,
            format!(
                "console socket {}: {e} (is its monitor alive?)",
                path.display()
            ),
        )
    })?;
    // A guest that does not read its console must not freeze this terminal: typing that
    // cannot be delivered within a second detaches.
    let _ = sock.set_write_timeout(Some(std::time::Duration::from_secs(1)));
    let mut sock = sock;
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
                    if !send.is_empty() {
                        if let Err(e) = sock.write_all(&frame(b'd', send)) {
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) {
                                eprintln!("\r\n[the guest does not read its console]\r");
                            }
                            break;
                        }
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

/// Control characters of guest output made visible (`^[` for ESC, `^G` for BEL, `\u{9b}` as
/// `<9b>`), except newline, carriage return and tab: what a guest writes to its console must not
/// drive the terminal of an administrator reading the log (title, clipboard, keyboard tricks).
pub fn defang(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        match b {
            b'\n' | b'\r' | b'\t' => out.push(b),
            0..=0x1f => out.extend_from_slice(&[b'^', b + 0x40]),
            0x7f => out.extend_from_slice(b"^?"),
            // C1 controls in UTF-8 (U+0080-U+009F), e.g. the one-byte CSI.
            0xc2 if matches!(data.get(i + 1), Some(0x80..=0x9f)) => {
                out.extend_from_slice(format!("<{:02x}>", data[i + 1]).as_bytes());
                i += 1;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    out
}

/// `vserver NAME logs [-f] [--raw]`: write the console log (`console.log.1`, then
/// `console.log`) to `out`, control characters made visible ([`defang`]) unless `raw`; with
/// `follow`, keep writing what is appended (across rotations) until `out` fails or the process
/// is interrupted. Errors: the guest has no console log yet.
pub fn logs(g: &Guest, follow: bool, raw: bool, out: &mut dyn Write) -> Result<(), GuestError> {
    let shown = |b: &[u8]| if raw { b.to_vec() } else { defang(b) };
    let (old, cur) = (g.log_file("console.log.1"), g.log_file("console.log"));
    if !cur.exists() && !old.exists() && !follow {
        return Err(failed(
            &g.name,
            format!("no console log yet ({})", cur.display()),
        ));
    }
    if let Ok(b) = std::fs::read(&old) {
        let _ = out.write_all(&shown(&b));
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
            if !chunk.is_empty()
                && out
                    .write_all(&shown(&chunk))
                    .and_then(|()| out.flush())
                    .is_err()
            {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_made_visible() {
        assert_eq!(
            defang(b"a\x1b]0;PWNED\x07b\r\n\tc\x7f\xc2\x9bd\xc3\xa9"),
            b"a^[]0;PWNED^Gb\r\n\tc^?<9b>d\xc3\xa9".to_vec()
        );
    }
}
