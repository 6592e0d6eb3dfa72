//! The fallback of user-namespace guests where the guest root's file system cannot be idmapped:
//! a one-time shift of every owner in the tree from guest ids (0-65535) to the guest's host
//! range (`base` = xid * 65536 and up), and the shift back (`vserver NAME userns-unshift`).
//!
//! The walk is [`super::fs::walk_in_root_all`]'s (relative to parent descriptors, never
//! following a symlink, never crossing a mount). chown(2) clears set-user-ID and set-group-ID
//! bits and the `security.capability` xattr of non-directories; both are put back. Named users
//! and groups of POSIX ACLs (`system.posix_acl_access`, `system.posix_acl_default`) and the
//! root id of v3 file capabilities are shifted the same way. Owners outside both ranges
//! (neither guest ids nor this guest's host ids) are left alone and counted.
//!
//! The state lives in the xattr [`MARKER_XATTR`] of the root directory (a `trusted.` xattr:
//! only host root can read or change it, not even root inside the guest): `shifting BASE`
//! while a shift runs, `shifted BASE` after it, `unshifting BASE` while the shift back runs,
//! gone after it. Each inode's change is idempotent (an owner already in the target range is
//! kept), so a shift or unshift that was interrupted is finished by running it again, and
//! hardlinks (seen once per name) are changed once.

use super::fs::walk_in_root_all;
use super::progress::Progress;
use crate::security::userns::GUEST_IDS;
use nix::sys::stat::{FileStat, SFlag};
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// The xattr of the guest root directory recording a shift (see the module doc).
pub const MARKER_XATTR: &str = "trusted.vserver.userns";

/// What the marker of a tree says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// A shift to `base` began and may not have finished.
    Shifting(u32),
    /// Owners are shifted to `base`.
    Shifted(u32),
    /// A shift back from `base` began and may not have finished.
    Unshifting(u32),
}

/// What a shift or unshift did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShiftReport {
    /// Inodes looked at (hardlinks once per name).
    pub inodes: u64,
    /// Inodes whose owner or group changed.
    pub changed: u64,
    /// Inodes with an owner or group outside both ranges, left as they were.
    pub foreign: u64,
}

/// Which way ids move.
#[derive(Debug, Clone, Copy)]
enum Dir {
    /// Guest ids 0-65535 to `base`...
    Up(u32),
    /// `base`... back to 0-65535.
    Down(u32),
}

impl Dir {
    /// The new id, or None when `id` is in neither range (foreign: left alone).
    fn map(self, id: u32) -> Option<u32> {
        let in_host = |b: u32, id: u32| id >= b && id - b < GUEST_IDS;
        match self {
            Dir::Up(b) if id < GUEST_IDS => Some(id + b),
            Dir::Up(b) if in_host(b, id) => Some(id),
            Dir::Down(b) if in_host(b, id) => Some(id - b),
            Dir::Down(_) if id < GUEST_IDS => Some(id),
            _ => None,
        }
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// fgetxattr(2) of `name` on `fd`; None when absent or unsupported.
fn get_xattr(fd: &OwnedFd, name: &str) -> Option<Vec<u8>> {
    let n = cstr(name);
    let mut buf = vec![0u8; 4096];
    // SAFETY: buf is valid for buf.len() bytes; the name is a C string.
    let r = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

/// fsetxattr(2) of `name` on `fd` to `value`. Errors: the OS error.
fn set_xattr(fd: &OwnedFd, name: &str, value: &[u8]) -> Result<(), nix::errno::Errno> {
    let n = cstr(name);
    // SAFETY: value is valid for its length; the name is a C string.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(())
}

fn open_root(root: &Path) -> Result<OwnedFd, String> {
    use nix::fcntl::OFlag;
    nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("open {}: {e}", root.display()))
}

/// Parse a marker value (`shifted 2752512000`).
fn parse_marker(text: &str) -> Option<Marker> {
    let (state, base) = text.trim().split_once(' ')?;
    let base: u32 = base.trim().parse().ok()?;
    match state {
        "shifting" => Some(Marker::Shifting(base)),
        "shifted" => Some(Marker::Shifted(base)),
        "unshifting" => Some(Marker::Unshifting(base)),
        _ => None,
    }
}

/// Remove a shift marker that came with a copied tree (an untrusted source directory's
/// `trusted.*` attribute must not tell this host how the tree is owned). Missing is fine.
///
/// Errors: the root cannot be opened, or the attribute cannot be removed.
pub fn forget_foreign_marker(root: &Path) -> Result<(), String> {
    let root_fd = open_root(root)?;
    // SAFETY: valid fd and C string.
    let r = unsafe { libc::fremovexattr(root_fd.as_raw_fd(), cstr(MARKER_XATTR).as_ptr()) };
    if r != 0 {
        let e = nix::errno::Errno::last();
        if e != nix::errno::Errno::ENODATA {
            return Err(format!(
                "remove {MARKER_XATTR} from {}: {e}",
                root.display()
            ));
        }
    }
    Ok(())
}

/// The marker of the tree at `root`: None when it was never shifted (or fully shifted back).
///
/// Errors: the root cannot be opened, or the marker is unreadable (its text is quoted).
pub fn marker(root: &Path) -> Result<Option<Marker>, String> {
    let fd = open_root(root)?;
    match get_xattr(&fd, MARKER_XATTR) {
        None => Ok(None),
        Some(v) => {
            let text = String::from_utf8_lossy(&v).into_owned();
            parse_marker(&text).map(Some).ok_or_else(|| {
                format!(
                    "{}: xattr {MARKER_XATTR} holds '{text}', not a shift state",
                    root.display()
                )
            })
        }
    }
}

fn set_marker(root_fd: &OwnedFd, root: &Path, text: &str) -> Result<(), String> {
    set_xattr(root_fd, MARKER_XATTR, text.as_bytes()).map_err(|e| {
        format!(
            "record '{text}' in xattr {MARKER_XATTR} of {}: {e}",
            root.display()
        )
    })
}

/// Shift the owners of the tree at `root` (a stopped guest's) to host ids `base`.. (a no-op
/// when already done; a shift to another base, after a change of context id, first shifts
/// back; an interrupted shift or unshift is finished first).
///
/// Errors: the path and OS error of the first inode that could not be changed; the marker then
/// says `shifting BASE`, and running it again finishes the work.
pub fn shift(root: &Path, base: u32, progress: &mut dyn Progress) -> Result<ShiftReport, String> {
    match marker(root)? {
        Some(Marker::Shifted(b)) if b == base => return Ok(ShiftReport::default()),
        Some(Marker::Shifted(b) | Marker::Unshifting(b)) => {
            unshift(root, progress)?;
            if b != base {
                progress.line(&format!(
                    "{}: shifted back from host ids {b}.. (the context id changed)",
                    root.display()
                ));
            }
        }
        Some(Marker::Shifting(b)) if b != base => {
            // Finish the old shift so that every owner is in one range, then go back.
            walk(root, Dir::Up(b), progress)?;
            unshift(root, progress)?;
        }
        _ => {}
    }
    let root_fd = open_root(root)?;
    set_marker(&root_fd, root, &format!("shifting {base}"))?;
    let rep = walk(root, Dir::Up(base), progress)?;
    set_marker(&root_fd, root, &format!("shifted {base}"))?;
    Ok(rep)
}

/// Shift the owners of the tree at `root` back from the host range its marker names to guest
/// ids 0-65535, and remove the marker. Ok(None) when the tree is not shifted.
///
/// Errors: as [`shift`]; the marker then says `unshifting BASE`.
pub fn unshift(root: &Path, progress: &mut dyn Progress) -> Result<Option<ShiftReport>, String> {
    let base = match marker(root)? {
        None => return Ok(None),
        Some(Marker::Shifting(b) | Marker::Shifted(b) | Marker::Unshifting(b)) => b,
    };
    let root_fd = open_root(root)?;
    set_marker(&root_fd, root, &format!("unshifting {base}"))?;
    let rep = walk(root, Dir::Down(base), progress)?;
    // SAFETY: the name is a C string; removes one xattr of our own descriptor.
    let r = unsafe { libc::fremovexattr(root_fd.as_raw_fd(), cstr(MARKER_XATTR).as_ptr()) };
    if r < 0 {
        return Err(format!(
            "remove xattr {MARKER_XATTR} of {}: {}",
            root.display(),
            nix::errno::Errno::last()
        ));
    }
    Ok(Some(rep))
}

/// `vserver NAME userns-unshift`: give stopped guest `g`'s files back their ordinary owners
/// (mounting its disk image meanwhile when it has one). Ok(None) when they were not shifted.
/// A guest that keeps `userns = true` is shifted again at its next start unless its file
/// system can be idmapped by then.
///
/// Errors: the guest runs, its lock or image cannot be taken, or the unshift failed (the
/// marker then says `unshifting BASE`; run it again).
pub fn unshift_guest(
    g: &crate::guest::Guest,
    progress: &mut dyn Progress,
) -> Result<Option<ShiftReport>, String> {
    let rd = g.run_dir();
    let _lock = crate::guest::state::GuestLock::acquire(&rd)
        .map_err(|e| format!("lock {}: {e}", rd.file("lock").display()))?;
    if g.running().is_some() {
        return Err(String::from("is running; stop it first"));
    }
    let root = g.root();
    let image = g.config.disk.uses_image();
    if image {
        super::disk::mount_image(&super::disk::image_path(&root), &root)?;
    }
    let r = unshift(&root, progress);
    if image {
        super::disk::unmount(&root)?;
    }
    r
}

/// The new (uid, gid) of an inode, None when both stay; counts foreign owners.
fn new_owner(st: &FileStat, dir: Dir, rep: &mut ShiftReport) -> Option<(u32, u32)> {
    let (u, g) = (dir.map(st.st_uid), dir.map(st.st_gid));
    if u.is_none() || g.is_none() {
        rep.foreign += 1;
    }
    let (u, g) = (u.unwrap_or(st.st_uid), g.unwrap_or(st.st_gid));
    (u != st.st_uid || g != st.st_gid).then_some((u, g))
}

/// Shift the named users and groups of a POSIX ACL xattr value (linux/posix_acl_xattr.h:
/// a 4-byte version 2, then 8-byte entries tag, perm, id). None when nothing changes.
fn shift_acl(value: &[u8], dir: Dir) -> Option<Vec<u8>> {
    const ACL_USER: u16 = 0x02;
    const ACL_GROUP: u16 = 0x08;
    if value.len() < 4 || !(value.len() - 4).is_multiple_of(8) {
        return None;
    }
    let mut out = value.to_vec();
    let mut changed = false;
    for e in out[4..].chunks_exact_mut(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        if tag == ACL_USER || tag == ACL_GROUP {
            let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            if let Some(n) = dir.map(id).filter(|n| *n != id) {
                e[4..8].copy_from_slice(&n.to_le_bytes());
                changed = true;
            }
        }
    }
    changed.then_some(out)
}

/// Shift the root id of a v3 file capability (linux/capability.h `vfs_ns_cap_data`: magic,
/// two permitted/inheritable pairs, rootid at byte 20); other versions stay as they are.
fn shift_fcap(value: &[u8], dir: Dir) -> Vec<u8> {
    const VFS_CAP_REVISION_3: u32 = 0x0300_0000;
    let mut out = value.to_vec();
    if value.len() == 24
        && u32::from_le_bytes([value[0], value[1], value[2], value[3]]) & 0xFF00_0000
            == VFS_CAP_REVISION_3
    {
        let id = u32::from_le_bytes([value[20], value[21], value[22], value[23]]);
        if let Some(n) = dir.map(id) {
            out[20..24].copy_from_slice(&n.to_le_bytes());
        }
    }
    out
}

/// Change one opened inode (directory or regular file): owner, then the set-ID bits and file
/// capability chown(2) cleared, then ACLs.
fn change_fd(
    rel: &str,
    fd: &OwnedFd,
    st: &FileStat,
    dir: Dir,
    rep: &mut ShiftReport,
) -> Result<(), String> {
    rep.inodes += 1;
    let at = |what: &str, e: nix::errno::Errno| format!("{what} {}: {e}", show(rel));
    if let Some((u, g)) = new_owner(st, dir, rep) {
        let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
        let fcap = (!is_dir)
            .then(|| get_xattr(fd, "security.capability"))
            .flatten();
        nix::unistd::fchown(
            fd,
            Some(nix::unistd::Uid::from_raw(u)),
            Some(nix::unistd::Gid::from_raw(g)),
        )
        .map_err(|e| at("chown", e))?;
        if !is_dir && st.st_mode & 0o6000 != 0 {
            nix::sys::stat::fchmod(
                fd,
                nix::sys::stat::Mode::from_bits_truncate(st.st_mode & 0o7777),
            )
            .map_err(|e| at("restore the set-ID bits of", e))?;
        }
        if let Some(c) = fcap {
            set_xattr(fd, "security.capability", &shift_fcap(&c, dir))
                .map_err(|e| at("restore the file capabilities of", e))?;
        }
        rep.changed += 1;
    }
    for name in ["system.posix_acl_access", "system.posix_acl_default"] {
        if let Some(v) = get_xattr(fd, name).and_then(|v| shift_acl(&v, dir)) {
            set_xattr(fd, name, &v).map_err(|e| at(&format!("shift the ACL {name} of"), e))?;
        }
    }
    Ok(())
}

/// Change the owner of an entry that is not opened (symlink, device, FIFO, socket), relative
/// to its directory and without following it. Directories on another device are skipped.
fn change_other(
    rel: &str,
    parent: &OwnedFd,
    name: &CStr,
    st: &FileStat,
    dir: Dir,
    rep: &mut ShiftReport,
) -> Result<(), String> {
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
        return Ok(());
    }
    rep.inodes += 1;
    if let Some((u, g)) = new_owner(st, dir, rep) {
        nix::unistd::fchownat(
            parent,
            name,
            Some(nix::unistd::Uid::from_raw(u)),
            Some(nix::unistd::Gid::from_raw(g)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| format!("chown {}: {e}", show(rel)))?;
        rep.changed += 1;
    }
    Ok(())
}

fn show(rel: &str) -> &str {
    if rel.is_empty() {
        "/"
    } else {
        rel
    }
}

fn walk(root: &Path, dir: Dir, progress: &mut dyn Progress) -> Result<ShiftReport, String> {
    let what = match dir {
        Dir::Up(_) => "shift owners",
        Dir::Down(_) => "shift owners back",
    };
    progress.begin(what, None, "files");
    let mut rep = ShiftReport::default();
    let rep_cell = std::cell::RefCell::new(&mut rep);
    let progress_cell = std::cell::RefCell::new(progress);
    let tick = |rep: &ShiftReport, rel: &str| {
        if rep.inodes.is_multiple_of(256) {
            progress_cell.borrow_mut().update(rep.inodes, rel);
        }
    };
    let r = walk_in_root_all(
        root,
        &mut |_, _| true,
        &mut |rel, fd, st| {
            let mut rep = rep_cell.borrow_mut();
            change_fd(rel, fd, st, dir, &mut rep)
                .map_err(|e| format!("{}: {e}", root.display()))?;
            tick(&rep, rel);
            Ok(())
        },
        &mut |rel, parent, name, st| {
            let mut rep = rep_cell.borrow_mut();
            change_other(rel, parent, name, st, dir, &mut rep)
                .map_err(|e| format!("{}: {e}", root.display()))?;
            tick(&rep, rel);
            Ok(())
        },
    );
    let progress = progress_cell.into_inner();
    let inodes = rep_cell.borrow().inodes;
    progress.update(inodes, "");
    progress.end();
    r?;
    if rep.foreign > 0 {
        progress.line(&format!(
            "{}: {} files have owners outside ids 0-65535 and were left as they are (they show \
             as nobody inside the guest)",
            root.display(),
            rep.foreign
        ));
    }
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_move_between_the_ranges_once() {
        let b = 42000 * 65536;
        assert_eq!(Dir::Up(b).map(0), Some(b));
        assert_eq!(Dir::Up(b).map(65535), Some(b + 65535));
        assert_eq!(Dir::Up(b).map(b + 7), Some(b + 7), "already shifted: kept");
        assert_eq!(Dir::Up(b).map(70000), None, "foreign");
        assert_eq!(Dir::Down(b).map(b + 7), Some(7));
        assert_eq!(Dir::Down(b).map(7), Some(7), "already back: kept");
        assert_eq!(Dir::Down(b).map(b + 65536), None);
    }

    #[test]
    fn markers_parse() {
        assert_eq!(parse_marker("shifted 65536"), Some(Marker::Shifted(65536)));
        assert_eq!(parse_marker("shifting 1"), Some(Marker::Shifting(1)));
        assert_eq!(parse_marker("unshifting 2\n"), Some(Marker::Unshifting(2)));
        assert_eq!(parse_marker("shifted"), None);
        assert_eq!(parse_marker("moved 3"), None);
    }

    #[test]
    fn acl_named_entries_shift_and_others_stay() {
        let b = 65536 * 3;
        // version 2; USER_OBJ rw; USER 1000 r; GROUP 50 r; MASK r; OTHER none.
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (0x01u16, 6u16, u32::MAX),
            (0x02, 4, 1000),
            (0x08, 4, 50),
            (0x10, 4, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            v.extend(tag.to_le_bytes());
            v.extend(perm.to_le_bytes());
            v.extend(id.to_le_bytes());
        }
        let up = shift_acl(&v, Dir::Up(b)).expect("changed");
        let id_at = |x: &[u8], i: usize| {
            let o = 4 + 8 * i + 4;
            u32::from_le_bytes([x[o], x[o + 1], x[o + 2], x[o + 3]])
        };
        assert_eq!(id_at(&up, 1), b + 1000);
        assert_eq!(id_at(&up, 2), b + 50);
        assert_eq!(id_at(&up, 0), u32::MAX);
        assert_eq!(shift_acl(&up, Dir::Up(b)), None, "idempotent");
        assert_eq!(shift_acl(&up, Dir::Down(b)).expect("back"), v);
    }
}
