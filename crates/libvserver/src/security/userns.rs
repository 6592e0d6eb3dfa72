//! User namespaces of guests (`userns = true`): the id range, the id maps, becoming root
//! inside, and whether the guest's file system can be idmapped.
//!
//! A guest's ids 0-65535 are host ids `xid * 65536 + id` (user_namespaces(7)): its root is an
//! ordinary unprivileged uid on the host, so a process that gets out of the guest's namespaces
//! owns nothing of the host's. Files keep their ordinary owners on disk through an idmapped
//! mount of the guest root (mount_setattr(2), `MOUNT_ATTR_IDMAP`), or, where the file system
//! refuses those, through a one-time shift of the tree's owners ([`crate::storage::shift`]).

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// Number of guest ids mapped (uids and gids 0-65535).
pub const GUEST_IDS: u32 = 65536;

/// Environment variable that turns idmapped mounts off (value `1`): the guest root is then
/// shifted on disk as on a file system without idmap support. For tests, and for kernels whose
/// idmapped mounts misbehave.
pub const NO_IDMAP_ENV: &str = "VSERVER_USERNS_NO_IDMAP";

/// First host uid/gid of context `xid`'s range: `xid * 65536`.
///
/// Errors: xid 0 or 1 (the host and the spectator), or a range that does not fit in 32 bits
/// (the message names the `context` key).
pub fn host_base(xid: u32) -> Result<u32, String> {
    if xid < 1 {
        return Err(format!(
            "context {xid} cannot have a user namespace (its id range would be the host's)"
        ));
    }
    u64::from(xid)
        .checked_mul(u64::from(GUEST_IDS))
        .and_then(|b| {
            b.checked_add(u64::from(GUEST_IDS) - 1)
                .map(|last| (b, last))
        })
        .filter(|(_, last)| *last < u64::from(u32::MAX))
        .map(|(b, _)| b as u32)
        .ok_or_else(|| {
            format!(
                "key 'context': context {xid} gives host ids {}-{}, beyond 32 bits; userns guests \
                 need a context id of at most {}",
                u64::from(xid) * u64::from(GUEST_IDS),
                u64::from(xid) * u64::from(GUEST_IDS) + u64::from(GUEST_IDS) - 1,
                (u64::from(u32::MAX) / u64::from(GUEST_IDS)) - 1
            )
        })
}

/// The text of a uid_map or gid_map mapping guest ids 0-65535 to `base`.. (user_namespaces(7)).
pub fn map_text(base: u32) -> String {
    format!("0 {base} {GUEST_IDS}\n")
}

/// Write /proc/PID/uid_map and gid_map of the process `pid` (which has just been cloned into
/// a new user namespace): guest ids 0-65535 are host ids `base`... setgroups(2) stays allowed
/// inside (the maps are written by host root, so the unprivileged-user caveat of
/// /proc/PID/setgroups does not apply, and guest programs such as login need it).
///
/// Errors: the file and the OS error (EPERM when the caller lacks CAP_SETUID/CAP_SETGID).
pub fn write_maps(pid: i32, base: u32) -> Result<(), String> {
    let text = map_text(base);
    write_map_texts(pid, &text, &text)
}

/// Write `uid_map` and `gid_map` texts (lines `inside host count`) of the process `pid`.
///
/// Errors: the file and the OS error (EINVAL for overlapping or malformed ranges).
pub fn write_map_texts(pid: i32, uid_map: &str, gid_map: &str) -> Result<(), String> {
    for (f, text) in [("uid_map", uid_map), ("gid_map", gid_map)] {
        let path = format!("/proc/{pid}/{f}");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .map_err(|e| format!("write {path} ({}): {e}", text.trim()))?;
    }
    Ok(())
}

/// In a fresh user namespace whose maps are written: drop the host's supplementary groups and
/// become uid and gid 0 inside (host `base`), keeping the full capability set of the namespace
/// (capabilities(7): setuid to the namespace's root keeps them).
///
/// Errors: the call and the OS error.
pub fn become_root_inside() -> Result<(), String> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    setgroups(&[]).map_err(|e| format!("drop the host's supplementary groups: {e}"))?;
    let g = Gid::from_raw(0);
    setresgid(g, g, g).map_err(|e| format!("setresgid 0 in the user namespace: {e}"))?;
    let u = Uid::from_raw(0);
    setresuid(u, u, u).map_err(|e| format!("setresuid 0 in the user namespace: {e}"))?;
    Ok(())
}

/// Open the user namespace of process `pid` (/proc/PID/ns/user), for mount_setattr(2)'s
/// `userns_fd` or setns(2).
///
/// Errors: the path and the OS error.
pub fn open_userns(pid: i32) -> Result<OwnedFd, String> {
    let p = format!("/proc/{pid}/ns/user");
    std::fs::File::open(&p)
        .map(OwnedFd::from)
        .map_err(|e| format!("open {p}: {e}"))
}

/// True when [`NO_IDMAP_ENV`] asks for the shift fallback.
pub fn idmap_disabled() -> bool {
    std::env::var(NO_IDMAP_ENV).as_deref() == Ok("1")
}

/// Whether the file system of `root` accepts an idmapped mount for a user namespace mapping
/// guest ids to `base`: a throwaway child unshares a user namespace, gets the guest's maps,
/// and an idmapped copy of `root` is made and dropped. Needs CAP_SYS_ADMIN on the host.
/// Ok(Err(why)) when the mount is refused (the kernel's errno: EINVAL for a file system
/// without idmap support) or [`NO_IDMAP_ENV`] is set: the caller may shift the tree instead.
///
/// Errors: no user namespace can be made here at all (user_namespaces(7):
/// `user.max_user_namespaces`), or its maps cannot be written; a guest with `userns` cannot
/// start then, and shifting its tree would not help.
pub fn probe_idmap(root: &Path, base: u32) -> Result<Result<(), String>, String> {
    if idmap_disabled() {
        return Ok(Err(format!("{NO_IDMAP_ENV}=1 is set")));
    }
    let (ready_r, ready_w) =
        crate::context::sync::pipe().map_err(|e| format!("probe idmapped mounts: pipe: {e}"))?;
    let (done_r, done_w) =
        crate::context::sync::pipe().map_err(|e| format!("probe idmapped mounts: pipe: {e}"))?;
    // SAFETY: called from the single-threaded start path; the child only unshares, writes a
    // byte and waits, then _exits.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("probe idmapped mounts: fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            drop(ready_r);
            drop(done_w);
            let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = nix::unistd::write(&ready_w, if ok { b"Y" } else { b"N" });
            let mut b = [0u8; 1];
            let _ = nix::unistd::read(&done_r, &mut b);
            // SAFETY: leave the forked helper without the parent's atexit handlers.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(ready_w);
            drop(done_r);
            let mut b = [0u8; 1];
            let got = nix::unistd::read(&ready_r, &mut b);
            let result = match got {
                Ok(1) if b[0] == b'Y' => write_maps(child.as_raw(), base)
                    .and_then(|()| open_userns(child.as_raw()))
                    .map(|ns| {
                        crate::rootfs::detached_tree(root, Some(ns.as_fd()), true, false).map(drop)
                    }),
                _ => Err(String::from(
                    "cannot create a user namespace on this host (see sysctl \
                     user.max_user_namespaces)",
                )),
            };
            drop(done_w);
            let _ = nix::sys::wait::waitpid(child, None);
            result
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_is_xid_times_65536_and_must_fit() {
        assert_eq!(host_base(1).unwrap(), 65536);
        assert_eq!(host_base(42000).unwrap(), 42000 * 65536);
        // The last full range below u32::MAX (which is the invalid id -1).
        assert_eq!(host_base(65534).unwrap(), 65534 * 65536);
        let e = host_base(65535).unwrap_err();
        assert!(e.contains("'context'") && e.contains("65534"), "{e}");
        assert!(host_base(0).is_err());
        assert_eq!(map_text(65536), "0 65536 65536\n");
    }
}
