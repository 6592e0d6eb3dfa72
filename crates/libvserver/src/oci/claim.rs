//! Host-wide claims on cgroups: one container's cgroup is never another's, nor lies within
//! or around another's, whatever state root (`--root`) each was created under and however
//! many `create`s run at once.
//!
//! Each container holds one claim file in [`CLAIMS_DIR`] from the start of `create` until
//! `delete`: its name is derived from the container's state directory, its content is the
//! cgroup (relative to the hierarchy roots), the state root and the id, NUL-terminated. New
//! claims are checked against every live one and written under an exclusive flock(2) of the
//! directory. A claim whose state directory is gone, or whose `state.json` names another
//! cgroup, is stale (a runtime killed mid-way, a `delete` of a state directory by hand) and
//! is removed when found.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Where the claims live (root-only, 0700).
pub const CLAIMS_DIR: &str = "/run/vserver-oci.cgroups";

/// A claim held by this process (`create`); dropped without [`Claim::keep`], it is removed.
#[derive(Debug)]
pub struct Claim {
    file: Option<PathBuf>,
}

impl Claim {
    /// Keep the claim after this process ends (the container now exists; `delete` releases it).
    pub fn keep(mut self) {
        self.file = None;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(f) = self.file.take() {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// One claim as stored.
struct Entry {
    cgroup: String,
    root: PathBuf,
    id: String,
}

impl Entry {
    fn encode(&self) -> Vec<u8> {
        use std::os::unix::ffi::OsStrExt;
        let mut v = Vec::new();
        for part in [
            self.cgroup.as_bytes(),
            self.root.as_os_str().as_bytes(),
            self.id.as_bytes(),
        ] {
            v.extend_from_slice(part);
            v.push(0);
        }
        v
    }

    fn decode(b: &[u8]) -> Option<Entry> {
        use std::os::unix::ffi::OsStrExt;
        let mut parts = b.split(|c| *c == 0);
        let cgroup = String::from_utf8(parts.next()?.to_vec()).ok()?;
        let root = PathBuf::from(std::ffi::OsStr::from_bytes(parts.next()?));
        let id = String::from_utf8(parts.next()?.to_vec()).ok()?;
        Some(Entry { cgroup, root, id })
    }

    /// The container still exists and still has this cgroup.
    fn live(&self) -> bool {
        let Ok(c) = super::state::Container::at(&self.root, &self.id) else {
            return false;
        };
        if !self.root.join(&self.id).is_dir() {
            return false;
        }
        match c.load() {
            Ok(st) => st.cgroup == self.cgroup,
            // Being created: the state directory is there, state.json not yet.
            Err(super::state::StateError::NotFound(_)) => true,
            Err(_) => true,
        }
    }
}

/// The claim file's name for the container `id` under state root `root`: FNV-1a 64 of both.
fn name(root: &Path, id: &str) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in root
        .as_os_str()
        .as_bytes()
        .iter()
        .chain(&[0u8])
        .chain(id.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// `a` is `b` or lies below it.
fn within(a: &str, b: &str) -> bool {
    a == b || a.strip_prefix(b).is_some_and(|r| r.starts_with('/'))
}

/// The directory, locked exclusively until the returned file is dropped.
fn lock(dir: &Path) -> Result<std::fs::File, String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("create {}: {e}", dir.display()))?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .map_err(|e| format!("open {}: {e}", dir.display()))?;
    // SAFETY: flock on a live fd we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "lock {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(f)
}

/// Claim `cgroup` (relative to the hierarchy roots, one spelling: no empty, `.` or `..`
/// components) for the container `id` under state root `root`, whose state directory this
/// process has just created. Claims in `dir` (normally [`CLAIMS_DIR`]).
///
/// Errors: a text naming the live container whose cgroup is this one, or lies within or
/// around it; I/O errors on `dir`.
pub fn claim(dir: &Path, cgroup: &str, root: &Path, id: &str) -> Result<Claim, String> {
    let root = std::fs::canonicalize(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let _lock = lock(dir)?;
    let mine = name(&root, id);
    for e in std::fs::read_dir(dir)
        .map_err(|e| format!("read {}: {e}", dir.display()))?
        .flatten()
    {
        let path = e.path();
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let Some(other) = Entry::decode(&bytes) else {
            // Not a claim this version wrote: leave it, it claims nothing.
            continue;
        };
        // This process made the state directory (root, id) exclusively: an older claim for
        // it is a leftover.
        if (other.root == root && other.id == id) || !other.live() {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        if within(cgroup, &other.cgroup) || within(&other.cgroup, cgroup) {
            return Err(format!(
                "container {} (state root {}) has cgroup {}; one container's cgroup cannot be \
                 another's, or lie within it",
                other.id,
                other.root.display(),
                other.cgroup
            ));
        }
    }
    let file = dir.join(&mine);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .map_err(|e| format!("create {}: {e}", file.display()))?;
    let entry = Entry {
        cgroup: cgroup.to_string(),
        root,
        id: id.to_string(),
    };
    f.write_all(&entry.encode())
        .map_err(|e| format!("write {}: {e}", file.display()))?;
    Ok(Claim { file: Some(file) })
}

/// Release the claim of container `id` under `root` (at `delete`), if it is still that
/// container's claim on `cgroup`. Missing claims are not an error.
pub fn release(dir: &Path, cgroup: &str, root: &Path, id: &str) {
    let Ok(root) = std::fs::canonicalize(root) else {
        return;
    };
    let Ok(_lock) = lock(dir) else {
        return;
    };
    let file = dir.join(name(&root, id));
    if let Some(e) = std::fs::read(&file).ok().and_then(|b| Entry::decode(&b)) {
        if e.root == root && e.id == id && e.cgroup == cgroup {
            let _ = std::fs::remove_file(&file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_is_by_component() {
        assert!(within("a/b", "a"));
        assert!(within("a", "a"));
        assert!(!within("ab", "a"));
        assert!(!within("a", "a/b"));
    }

    #[test]
    fn entries_round_trip() {
        let e = Entry {
            cgroup: "k/pod/x".into(),
            root: PathBuf::from("/run/a\nb"),
            id: "c1".into(),
        };
        let d = Entry::decode(&e.encode()).unwrap();
        assert_eq!(
            (d.cgroup, d.root, d.id),
            (e.cgroup, e.root.clone(), e.id.clone())
        );
    }
}
