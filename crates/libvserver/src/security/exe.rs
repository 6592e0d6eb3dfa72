//! The runtime's own binary is never writable through a process that a guest can see.
//!
//! CVE-2019-5736: a guest whose program is a script starting `#!/proc/self/exe` (or an ELF
//! whose interpreter is that path) makes the kernel run the runtime's host binary inside the
//! guest, as a dumpable process the guest root may open through `/proc/PID/exe`; once the
//! binary is no longer busy, a write through that file replaces the host's runtime. The
//! defense here: before anything that runs guest code, the command re-executes itself from a
//! private, detached, read-only bind mount of its own binary (open_tree(2) with
//! OPEN_TREE_CLONE, mount_setattr(2) MOUNT_ATTR_RDONLY, execveat(2) AT_EMPTY_PATH). Every
//! process it forks (monitor, guest init before its execve, exec helpers) then has its
//! `/proc/PID/exe` on that mount: an open for writing fails with EROFS whatever happens to the
//! process later. The mount has no path in any mount namespace and goes away with the last
//! process using it. A binary that already lives on a read-only mount is not re-executed.

use std::ffi::{CString, OsString};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;

/// Set in the environment of the re-executed command: a second re-execution means the
/// read-only mount did not take, which is an error rather than a loop.
const MARK: &str = "VSERVER_RO_EXE";

/// True if the binary of this process is on a read-only mount (statvfs(3) of
/// /proc/self/exe, which resolves to the exact mount the binary was executed from).
pub fn exe_is_readonly() -> bool {
    nix::sys::statvfs::statvfs("/proc/self/exe")
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false)
}

/// Re-execute this command from a read-only detached mount of its binary unless it already
/// runs from a read-only mount (see the module doc). Returns only when nothing had to be
/// done; on success the process image is replaced (same pid, argv and environment, plus
/// `VSERVER_RO_EXE=1`). Must run before any thread is started.
///
/// Errors: a message naming the failing step (open_tree, mount_setattr, execveat) and the OS
/// error, e.g. when not root; the caller must not start guest code then.
pub fn reexec_readonly() -> Result<(), String> {
    if exe_is_readonly() {
        std::env::remove_var(MARK);
        return Ok(());
    }
    if std::env::var_os(MARK).is_some() {
        return Err(String::from(
            "the binary is still on a writable mount after re-executing from a read-only one",
        ));
    }
    // SAFETY: valid NUL-terminated path; the result is a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c"/proc/self/exe".as_ptr(),
            1u32 | libc::O_CLOEXEC as u32, // OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC
        )
    };
    if fd < 0 {
        return Err(format!(
            "open_tree of the own binary: {}",
            nix::errno::Errno::last()
        ));
    }
    // SAFETY: a fresh fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    crate::rootfs::change_mount_attrs(
        &fd,
        crate::rootfs::MOUNT_ATTR_RDONLY
            | crate::rootfs::MOUNT_ATTR_NOSUID
            | crate::rootfs::MOUNT_ATTR_NODEV,
        0,
        false,
    )
    .map_err(|e| format!("make the copy of the own binary read-only: {e}"))?;
    let argv: Vec<CString> = std::env::args_os()
        .filter_map(|a| CString::new(OsString::into_vec(a)).ok())
        .collect();
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != MARK)
        .filter_map(|(k, v)| {
            let mut kv = OsString::into_vec(k);
            kv.push(b'=');
            kv.extend(OsString::into_vec(v));
            CString::new(kv).ok()
        })
        .collect();
    env.push(CString::new(format!("{MARK}=1")).expect("no NUL"));
    let e = nix::unistd::execveat(&fd, c"", &argv, &env, nix::fcntl::AtFlags::AT_EMPTY_PATH)
        .unwrap_err();
    Err(format!("execveat of the read-only binary: {e}"))
}
