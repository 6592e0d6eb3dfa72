//! Kernel keyrings of guest processes (keyrings(7)).

/// Give the calling process a new, empty anonymous session keyring (keyctl(2)
/// `KEYCTL_JOIN_SESSION_KEYRING` with no name), so that guest processes never inherit the
/// administrator's session keyring (IPC-02; runc does the same per container). Keyrings are
/// per uid, not per namespace: without a user namespace guest root still shares host root's
/// user keyring, which the seccomp filter's keyctl/add_key/request_key denial keeps out of
/// reach. A kernel without keys (ENOSYS) needs nothing. Async-signal-safe (one syscall).
///
/// Errors: the errno of keyctl(2).
pub fn fresh_session_keyring() -> Result<(), nix::errno::Errno> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_ulong = 1;
    // SAFETY: a NULL name asks for an anonymous keyring; no memory is passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    match nix::errno::Errno::result(r) {
        Ok(_) | Err(nix::errno::Errno::ENOSYS) => Ok(()),
        Err(e) => Err(e),
    }
}
