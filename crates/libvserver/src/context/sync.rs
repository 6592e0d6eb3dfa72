//! The pipes between a parent and the child it cloned: "go" one way, errors the other.
//!
//! The error pipe is close-on-exec: EOF without data means the child reached execve(2) (or its
//! built-in init closed the pipe after setup); data is one error message.

use std::io::Read;
use std::os::fd::OwnedFd;

/// A close-on-exec pipe (read end, write end).
pub fn pipe() -> Result<(OwnedFd, OwnedFd), nix::errno::Errno> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
}

/// Tell the child to go on.
pub fn send_go(w: &OwnedFd) -> Result<(), nix::errno::Errno> {
    nix::unistd::write(w, b"G").map(|_| ())
}

/// Most EINTRs in a row a wait takes before it gives up: none of our waiting processes
/// installs a signal handler, so a run of them is a seccomp filter forging the errno, and an
/// unbounded retry would spin a CPU outside any container's limits.
pub const MAX_EINTR: u32 = 1000;

/// Block until the parent says go. Returns false if the parent died (EOF) first, or if the
/// read keeps failing with EINTR ([`MAX_EINTR`] times in a row).
pub fn wait_go(r: &OwnedFd) -> bool {
    let mut b = [0u8; 1];
    let mut interrupted = 0;
    loop {
        match nix::unistd::read(r, &mut b) {
            Ok(1) => return true,
            Err(nix::errno::Errno::EINTR) if interrupted < MAX_EINTR => interrupted += 1,
            _ => return false,
        }
    }
}

/// Read everything until EOF as text (the child's error report, empty on success).
pub fn read_to_end(r: OwnedFd) -> String {
    let mut f = std::fs::File::from(r);
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    s
}

/// Write an error report (best effort; the reader sees EOF either way).
pub fn report(w: &OwnedFd, msg: &str) {
    let _ = nix::unistd::write(w, msg.as_bytes());
}
