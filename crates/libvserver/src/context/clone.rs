//! clone3(2) with CLONE_PIDFD and CLONE_INTO_CGROUP, and small process helpers.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Arguments of clone3(2) (`struct clone_args`, linux/sched.h, size version 2: 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// CLONE_PIDFD: return a pidfd of the child (Linux 5.2).
pub const CLONE_PIDFD: u64 = 0x1000;
/// CLONE_INTO_CGROUP: start the child in the cgroup given by a v2 directory fd (Linux 5.7).
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Which side of a fork-like clone3 the caller is on.
pub enum Forked {
    /// In the child.
    Child,
    /// In the parent: the child's pid and a pidfd for it.
    Parent {
        /// Child pid (in the caller's pid namespace).
        pid: i32,
        /// pidfd of the child (pidfd_open(2) semantics).
        pidfd: OwnedFd,
    },
}

/// Fork-like clone3(2): `flags` are CLONE_* namespace flags; the child starts in `cgroup` (a
/// v2 directory fd) when given. The caller must be single-threaded: the child continues on a
/// copy of the caller's stack, like fork(2).
///
/// Errors: the errno of clone3 (EINVAL/EOPNOTSUPP for an unusable cgroup, EPERM, ENOSPC...).
pub fn clone3_fork(
    flags: u64,
    cgroup: Option<BorrowedFd<'_>>,
) -> Result<Forked, nix::errno::Errno> {
    let mut pidfd: i32 = -1;
    let mut args = CloneArgs {
        flags: flags | CLONE_PIDFD,
        pidfd: &mut pidfd as *mut i32 as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(cg) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = cg.as_raw_fd() as u64;
    }
    // SAFETY: `args` is a valid clone_args of the size passed; stack 0 gives fork semantics, so
    // the child returns here on a copy-on-write copy of this stack; pidfd points to a live i32.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match r {
        -1 => Err(nix::errno::Errno::last()),
        0 => Ok(Forked::Child),
        pid => {
            // SAFETY: the kernel stored a new, owned pidfd for the child.
            let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
            Ok(Forked::Parent {
                pid: pid as i32,
                pidfd,
            })
        }
    }
}

/// pidfd_open(2) on `pid`.
pub fn pidfd_open(pid: i32) -> Result<OwnedFd, nix::errno::Errno> {
    // SAFETY: plain syscall with integer arguments; on success it returns a new fd we own.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: r is a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// pidfd_send_signal(2).
pub fn pidfd_kill(pidfd: BorrowedFd<'_>, sig: i32) -> Result<(), nix::errno::Errno> {
    // SAFETY: plain syscall; a null siginfo is allowed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            0usize,
            0,
        )
    };
    if r < 0 {
        Err(nix::errno::Errno::last())
    } else {
        Ok(())
    }
}

/// Mark every fd from `first` up as close-on-exec (close_range(2), CLOSE_RANGE_CLOEXEC, 5.11).
pub fn cloexec_from(first: u32) -> Result<(), nix::errno::Errno> {
    const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
    // SAFETY: plain syscall with integer arguments, touching only fd flags.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if r < 0 {
        Err(nix::errno::Errno::last())
    } else {
        Ok(())
    }
}

/// Close every fd from `first` up (close_range(2)). Callers must not use those fds again.
pub fn close_from(first: u32) -> Result<(), nix::errno::Errno> {
    // SAFETY: plain syscall; the caller has given up ownership of every fd in the range.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) };
    if r < 0 {
        Err(nix::errno::Errno::last())
    } else {
        Ok(())
    }
}

/// Close every fd from 3 up except those in `keep` (close_range(2) over the gaps). Callers
/// must not use the closed fds again (call it only on the way to exec or _exit).
pub fn close_all_but(keep: &[i32]) -> Result<(), nix::errno::Errno> {
    let mut k: Vec<u32> = keep
        .iter()
        .filter(|f| **f >= 3)
        .map(|f| *f as u32)
        .collect();
    k.sort_unstable();
    let mut from = 3u32;
    for fd in k {
        if fd > from {
            // SAFETY: plain syscall over a range of fds the caller gave up.
            if unsafe { libc::syscall(libc::SYS_close_range, from, fd - 1, 0) } < 0 {
                return Err(nix::errno::Errno::last());
            }
        }
        from = fd + 1;
    }
    close_from(from)
}

/// Start time of process `pid` in clock ticks after boot (field 22 of /proc/PID/stat); with the
/// pid it identifies a process across pid reuse. None if the process does not exist.
pub fn proc_start_time(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and ')': fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    // A zombie is dead for our purposes (its parent has not reaped it yet).
    if matches!(fields.next(), Some("Z") | Some("X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// True if `pid` is alive and started at `start` (clock ticks after boot).
pub fn same_process(pid: i32, start: u64) -> bool {
    pid > 0 && proc_start_time(pid) == Some(start)
}

/// Wait for the child behind `pidfd` (waitid(2) P_PIDFD) and return its status as a shell
/// would: the exit code, or 128 + signal number.
pub fn wait_pidfd(pidfd: BorrowedFd<'_>) -> Result<i32, nix::errno::Errno> {
    Ok(match wait_pidfd_exit(pidfd)? {
        Exit::Code(c) => c,
        Exit::Signal(s) => 128 + s,
    })
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal of this number killed it (dumped core or not).
    Signal(i32),
}

/// Wait for the process behind `pidfd` to end and tell how (waitid(2) with `P_PIDFD`), keeping
/// an exit code of 129 apart from a death by SIGHUP. Errors: waitid's errno.
pub fn wait_pidfd_exit(pidfd: BorrowedFd<'_>) -> Result<Exit, nix::errno::Errno> {
    loop {
        // SAFETY: siginfo_t is plain data; zeroed is a valid value for waitid to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer to a siginfo_t; P_PIDFD = 3.
        let r =
            unsafe { libc::waitid(3, pidfd.as_raw_fd() as libc::id_t, &mut info, libc::WEXITED) };
        if r < 0 {
            let e = nix::errno::Errno::last();
            if e == nix::errno::Errno::EINTR {
                continue;
            }
            return Err(e);
        }
        // SAFETY: waitid filled a SIGCHLD siginfo, whose si_status/si_code are valid.
        let (code, status) = unsafe { (info.si_code, info.si_status()) };
        return Ok(if code == libc::CLD_EXITED {
            Exit::Code(status)
        } else {
            Exit::Signal(status)
        });
    }
}
