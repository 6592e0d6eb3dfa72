//! Unification of identical files across guests (`vserver NAME unify`, `vhashify`), the
//! successor of util-vserver's vunify/vhashify: files with the same content share their disk
//! blocks through the kernel's dedupe (ioctl_fideduperange(2)) on btrfs and reflink-enabled
//! xfs. A guest that later writes such a file gets its own copy of the blocks it writes (copy
//! on write), so no guest can ever change another's file: unlike the old hardlinks, nothing is
//! shared but blocks, and the kernel compares the bytes itself before sharing them.
//!
//! The content store (`.hash/` beside the guest roots, mode 0700) holds one reflinked copy of
//! each distinct file content seen, named by its BLAKE3 hash; every later file with that
//! content is deduplicated against it. Deleting the store loses no savings already made (the
//! guests' files keep sharing their blocks); it only costs the blocks that no guest uses any
//! more (`vhashify --prune` empties it).
//!
//! Guest trees are hostile: the walk opens every directory and file relative to its parent's
//! descriptor with `O_NOFOLLOW`, never leaves the guest root, never crosses a mount point, and
//! opens only regular files (checked on the open descriptor), read-only.

use super::fs as sfs;
use super::progress::Progress;
use nix::sys::stat::SFlag;
use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Options of a unification run.
#[derive(Debug, Clone)]
pub struct UnifyOptions {
    /// Report what would be shared without changing anything.
    pub dry_run: bool,
    /// Absolute paths inside the guest left alone (with everything below them).
    pub exclude: Vec<String>,
    /// Files smaller than this many bytes are skipped (small files live inline in the
    /// metadata on btrfs and cannot share blocks).
    pub min_size: u64,
    /// Files larger than this many bytes are skipped (a guest's 8 EiB sparse file must not
    /// keep the host hashing zeros).
    pub max_size: u64,
    /// Add contents seen for the first time to the store. Off for a guest with a disk quota:
    /// the store's copy would keep the guest's data alive outside its quota after it deletes
    /// it; such a guest only shares what the store holds already.
    pub store_new: bool,
}

/// Paths excluded by default: configuration is each guest's own.
pub const DEFAULT_EXCLUDE: &[&str] = &["/etc"];

impl Default for UnifyOptions {
    fn default() -> Self {
        UnifyOptions {
            dry_run: false,
            exclude: DEFAULT_EXCLUDE.iter().map(|s| s.to_string()).collect(),
            min_size: 4096,
            max_size: 8 << 30,
            store_new: true,
        }
    }
}

/// What a run did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UnifyReport {
    /// Regular files examined (at least `min_size` bytes, not excluded).
    pub scanned_files: u64,
    /// Their bytes.
    pub scanned_bytes: u64,
    /// Files that now share their blocks with an identical file (newly, in this run).
    pub files: u64,
    /// Bytes newly shared by this run: the space saved.
    pub bytes: u64,
    /// Files that already shared all their blocks with the stored copy.
    pub already_shared_files: u64,
    /// Files seen for the first time: stored as the reference copy of their content.
    pub stored_files: u64,
    /// Files left unshared because the guest is at its disk quota (the kernel charges the
    /// dedupe's metadata to it).
    pub quota_full_files: u64,
    /// True for a dry run.
    pub dry_run: bool,
    /// The content store used.
    pub store: PathBuf,
}

impl UnifyReport {
    /// Add another report's counts to this one.
    pub fn add(&mut self, o: &UnifyReport) {
        self.scanned_files += o.scanned_files;
        self.scanned_bytes += o.scanned_bytes;
        self.files += o.files;
        self.bytes += o.bytes;
        self.already_shared_files += o.already_shared_files;
        self.stored_files += o.stored_files;
        self.quota_full_files += o.quota_full_files;
    }
}

/// The content store for guests rooted at `root`: `.hash` in the directory holding the root.
pub fn store_for(root: &Path) -> PathBuf {
    root.parent().unwrap_or(Path::new("/")).join(".hash")
}

/// Check that `root` can be unified, naming what to do instead when it cannot.
///
/// Errors: the file system has no reflinks (with the overlay route offered), or cannot be
/// examined.
pub fn check_supported(root: &Path) -> Result<(), String> {
    let kind = sfs::fs_kind(root)?;
    if !sfs::supports_reflink(root)? {
        return Err(format!(
            "{} is on {kind}, which cannot share blocks between files (no reflink support); \
             unification needs btrfs or xfs made with reflink=1. Hard links are never used: a \
             guest could write through them into another guest. To share one installation \
             among guests on this file system, build them as template guests (vserver NAME \
             build -m template-guest --template BASE: an overlay on a shared read-only base)",
            root.display()
        ));
    }
    Ok(())
}

fn excluded(rel: &str, exclude: &[String]) -> bool {
    exclude.iter().any(|x| {
        let x = x.trim_end_matches('/');
        x.is_empty() || rel == x || rel.starts_with(&format!("{x}/"))
    })
}

/// A streaming BLAKE3 hash of the first `len` bytes of the open file, and how many bytes it
/// read (less than `len` when the file shrank meanwhile; a file that grows is read only up
/// to `len`).
fn hash_fd(fd: &OwnedFd, len: u64) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::from(fd.try_clone()?);
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0))?;
    let mut h = blake3::Hasher::new();
    let n = std::io::copy(&mut std::io::Read::take(f, len), &mut h)?;
    Ok((h.finalize().to_hex().to_string(), n))
}

/// Unify the files of the guest rooted at `root` against the store `store` (made, mode 0700,
/// on first use). `progress` gets a count of files.
///
/// Errors: no reflink support ([`check_supported`]), the root or store cannot be opened, or
/// the kernel refused a dedupe for a reason other than differing contents (e.g. EXDEV when
/// the store is on another mount).
pub fn unify(
    root: &Path,
    store: &Path,
    o: &UnifyOptions,
    progress: &mut dyn Progress,
) -> Result<UnifyReport, String> {
    check_supported(root)?;
    if !o.dry_run {
        std::fs::create_dir_all(store).map_err(|e| format!("create {}: {e}", store.display()))?;
        std::fs::set_permissions(
            store,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700),
        )
        .map_err(|e| format!("chmod {}: {e}", store.display()))?;
    }
    let mut rep = UnifyReport {
        dry_run: o.dry_run,
        store: store.to_path_buf(),
        ..Default::default()
    };
    // Contents seen in this run without a store entry (dry runs make none).
    let mut seen: HashSet<String> = HashSet::new();
    progress.begin("unify", None, "files");
    let in_range = |size: u64| (o.min_size..=o.max_size).contains(&size);
    sfs::walk_in_root(
        root,
        &mut |rel, st| {
            !excluded(rel, &o.exclude)
                && (SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
                    || in_range(st.st_size as u64))
        },
        &mut |rel, fd, st| {
            let size = st.st_size as u64;
            if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG
                || !in_range(size)
            {
                return Ok(());
            }
            rep.scanned_files += 1;
            rep.scanned_bytes += size;
            let (hash, len) = hash_fd(fd, size).map_err(|e| format!("read {rel}: {e}"))?;
            if len != size {
                return Ok(()); // shrank while read: changing, not worth sharing now
            }
            unify_one(fd, &hash, len, store, o, &mut seen, &mut rep)
                .map_err(|e| format!("{}{rel}: {e}", root.display()))?;
            progress.update(rep.scanned_files, rel);
            Ok(())
        },
    )?;
    progress.end();
    Ok(rep)
}

/// Unify guest `g`: its files (less its config's `disk.unify_exclude`, default `/etc`, and
/// `extra_exclude`) against the store beside its root ([`store_for`]).
///
/// Errors: a template guest (its files are its base's already) or a disk-image guest (its own
/// file system), and those of [`unify`].
pub fn unify_guest(
    g: &crate::guest::Guest,
    dry_run: bool,
    extra_exclude: &[String],
    min_size: Option<u64>,
    progress: &mut dyn Progress,
) -> Result<UnifyReport, String> {
    if let Some(b) = &g.config.disk.template {
        return Err(format!(
            "{} is a template guest: the files it has not changed are {b}'s already; unify {b}",
            g.name
        ));
    }
    if g.config.disk.uses_image() {
        return Err(format!(
            "{} lives on its own disk image (an ext4 file system of its own), which cannot \
             share blocks with other guests",
            g.name
        ));
    }
    let mut exclude: Vec<String> = match &g.config.disk.unify_exclude {
        Some(v) => v.clone(),
        None => DEFAULT_EXCLUDE.iter().map(|s| s.to_string()).collect(),
    };
    for x in extra_exclude {
        if !x.starts_with('/') {
            return Err(format!(
                "--exclude {x}: give an absolute path inside the guest, e.g. /var/log"
            ));
        }
        exclude.push(x.clone());
    }
    let o = UnifyOptions {
        dry_run,
        exclude,
        min_size: min_size.unwrap_or(UnifyOptions::default().min_size),
        store_new: g.config.disk.quota_backend().is_none(),
        ..UnifyOptions::default()
    };
    let root = g.root();
    unify(&root, &store_for(&root), &o, progress)
}

fn unify_one(
    fd: &OwnedFd,
    hash: &str,
    len: u64,
    store: &Path,
    o: &UnifyOptions,
    seen: &mut HashSet<String>,
    rep: &mut UnifyReport,
) -> Result<(), String> {
    let dry_run = o.dry_run;
    let entry = store.join(&hash[..2]).join(&hash[2..]);
    let stored = std::fs::File::open(&entry).ok();
    match stored {
        Some(s) if s.metadata().map(|m| m.len() == len).unwrap_or(false) => {
            let mine = sfs::extents(fd.as_fd());
            if mine.is_some() && mine == sfs::extents(s.as_fd()) {
                rep.already_shared_files += 1;
                return Ok(());
            }
            if dry_run {
                rep.files += 1;
                rep.bytes += len;
                return Ok(());
            }
            match sfs::dedupe_file(s.as_fd(), fd.as_fd(), len) {
                Ok(sfs::Dedupe::Shared) => {
                    rep.files += 1;
                    rep.bytes += len;
                }
                // Changed since hashed, or a collision: the kernel compared and left it.
                Ok(sfs::Dedupe::Differs) => {}
                Err(e) if e.raw_os_error() == Some(libc::EDQUOT) => rep.quota_full_files += 1,
                Err(e) => return Err(format!("dedupe against {}: {e}", entry.display())),
            }
        }
        _ if !o.store_new => {}
        _ if dry_run => {
            if !seen.insert(hash.to_string()) {
                rep.files += 1;
                rep.bytes += len;
            } else {
                rep.stored_files += 1;
            }
        }
        _ => {
            // First of its content: the store keeps a reflinked copy as the reference.
            let dir = store.join(&hash[..2]);
            std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
            let tmp = dir.join(format!(".{}.{}", &hash[2..], std::process::id()));
            let t = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode_0600()
                .open(&tmp)
                .map_err(|e| format!("create {}: {e}", tmp.display()))?;
            if let Err(e) = sfs::clone_file(fd.as_fd(), t.as_fd()) {
                let _ = std::fs::remove_file(&tmp);
                return Err(format!("reflink into {}: {e}", store.display()));
            }
            std::fs::rename(&tmp, &entry).map_err(|e| format!("store {}: {e}", entry.display()))?;
            rep.stored_files += 1;
        }
    }
    Ok(())
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

/// Empty the content store `store` (the guests keep the blocks they share).
///
/// Errors: the removal failed.
pub fn prune(store: &Path) -> Result<(), String> {
    if store.file_name().map(|n| n != ".hash").unwrap_or(true) {
        return Err(format!("{} is not a content store", store.display()));
    }
    match std::fs::remove_dir_all(store) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("remove {}: {e}", store.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_match_whole_components() {
        let x = vec![String::from("/etc"), String::from("/var/log/")];
        assert!(excluded("/etc", &x));
        assert!(excluded("/etc/passwd", &x));
        assert!(!excluded("/etcetera", &x));
        assert!(excluded("/var/log/syslog", &x));
        assert!(!excluded("/var/lib", &x));
    }
}
