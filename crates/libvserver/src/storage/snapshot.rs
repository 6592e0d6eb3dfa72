//! `vserver NAME snapshot create|list|restore|delete`: point-in-time copies of a guest's files
//! in `ROOT.snapshots/LABEL`.
//!
//! Backends, by what holds the guest's files (its root, its disk image `ROOT.img`, or a
//! template guest's upper layer `ROOT.overlay/upper`):
//! - a btrfs subvolume (what `build` makes on btrfs): a read-only subvolume snapshot, atomic
//!   and instant (btrfs-subvolume(8));
//! - anything on a file system with reflinks (btrfs, xfs with reflink=1): a reflink copy
//!   (`cp -a --reflink=always`), sharing all blocks; not atomic while the guest runs;
//! - otherwise a clear refusal naming the file system.
//!
//! A restore is refused while the guest runs, and keeps the state it replaces as the snapshot
//! `pre-restore-EPOCH`: nothing is lost without an explicit `snapshot delete`.

use super::fs::{self as sfs};
use crate::guest::state::{now_unix, GuestLock};
use crate::guest::Guest;
use std::path::{Path, PathBuf};

/// The directory holding the snapshots of the guest rooted at `root`: `ROOT.snapshots`.
pub fn snapshot_dir(root: &Path) -> PathBuf {
    PathBuf::from(format!("{}.snapshots", root.display()))
}

/// One snapshot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotInfo {
    /// Its label (the name under `ROOT.snapshots`).
    pub label: String,
    /// When it was made, in seconds since the epoch (its modification time).
    pub created: u64,
    /// `btrfs-snapshot` or `reflink-copy`.
    pub kind: String,
    /// Where it is.
    pub path: PathBuf,
}

/// What holds the files of guest `g`: its root, its disk image, or its upper layer.
pub fn data_path(g: &Guest) -> PathBuf {
    let root = g.root();
    if g.config.disk.uses_image() {
        super::disk::image_path(&root)
    } else if g.config.disk.template.is_some() {
        super::overlay::overlay_dir(&root).join("upper")
    } else {
        root
    }
}

/// Check a snapshot label: 1-64 of `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`.
///
/// Errors: a message saying what is wrong.
pub fn validate_label(l: &str) -> Result<(), String> {
    if l.is_empty()
        || l.len() > 64
        || l.starts_with(['.', '-'])
        || !l
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(format!(
            "snapshot label '{l}' must be 1-64 letters, digits, '.', '_' or '-', not starting \
             with '.' or '-'"
        ));
    }
    Ok(())
}

fn lock(g: &Guest) -> Result<GuestLock, String> {
    let rd = g.run_dir();
    GuestLock::acquire(&rd).map_err(|e| format!("lock {}: {e}", rd.file("lock").display()))
}

/// Make a snapshot of guest `g` labelled `label` (default: the UTC time, `YYYYmmdd-HHMMSS`).
///
/// Errors: bad or existing label, a file system with neither subvolumes nor reflinks, a
/// running guest whose files are not a subvolume, or the copy failed (what it made is
/// removed).
pub fn create(g: &Guest, label: Option<&str>) -> Result<SnapshotInfo, String> {
    let label = match label {
        Some(l) => l.to_string(),
        None => utc_label(now_unix()),
    };
    validate_label(&label)?;
    let _lock = lock(g)?;
    let data = data_path(g);
    if std::fs::symlink_metadata(&data).is_err() {
        return Err(format!("{} does not exist", data.display()));
    }
    let dir = snapshot_dir(&g.root());
    let dst = dir.join(&label);
    if std::fs::symlink_metadata(&dst).is_ok() {
        return Err(format!(
            "snapshot {label} exists already ({})",
            dst.display()
        ));
    }
    let subvol = sfs::is_subvolume(&data);
    let parent = data.parent().unwrap_or(Path::new("/"));
    if !subvol && !sfs::supports_reflink(parent)? {
        return Err(format!(
            "{} is on {}, which has neither subvolumes nor reflinks; snapshots need the guest on \
             btrfs (build makes its root a subvolume there) or on xfs made with reflink=1",
            data.display(),
            sfs::fs_kind(parent)?
        ));
    }
    if !subvol && g.running().is_some() && g.config.disk.template.is_some() {
        return Err(format!(
            "{} is a running template guest: its upper layer is a plain directory, which is \
             copied only while the guest is stopped; stop it first",
            g.name
        ));
    }
    if !subvol && g.running().is_some() {
        // cp(1) opens paths by name: a running guest could swap a directory for a symlink
        // under it and have host files copied into the snapshot. A subvolume snapshot is one
        // kernel operation.
        return Err(format!(
            "{} is running and its files are not a btrfs subvolume: a copy of a running guest \
             is neither atomic nor safe from it; stop it first (on btrfs, where build makes \
             the root a subvolume, snapshots of running guests are atomic)",
            g.name
        ));
    }
    let made_dir = !dir.exists();
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let _ = std::fs::set_permissions(
        &dir,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700),
    );
    let r = if subvol {
        sfs::snapshot_subvolume(&data, &dst, true)
    } else {
        sfs::copy_tree_cp(&data, &dst, Some(true))
    };
    if let Err(e) = r {
        let _ = sfs::remove_tree(&dst);
        if made_dir {
            let _ = std::fs::remove_dir(&dir);
        }
        return Err(e);
    }
    // A copy keeps the source's times: the creation time is kept beside it.
    let _ = std::fs::write(created_file(&dst), format!("{}\n", now_unix()));
    info(&dst, &label).ok_or_else(|| format!("snapshot {} vanished", dst.display()))
}

/// `ROOT.snapshots/.LABEL.created`: the snapshot's creation time in seconds since the epoch.
fn created_file(snap: &Path) -> PathBuf {
    let label = snap.file_name().unwrap_or_default().to_string_lossy();
    snap.with_file_name(format!(".{label}.created"))
}

fn info(p: &Path, label: &str) -> Option<SnapshotInfo> {
    let md = std::fs::symlink_metadata(p).ok()?;
    let created = std::fs::read_to_string(created_file(p))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| std::os::unix::fs::MetadataExt::mtime(&md).max(0) as u64);
    Some(SnapshotInfo {
        label: label.to_string(),
        created,
        kind: if sfs::is_subvolume(p) {
            "btrfs-snapshot".into()
        } else {
            "reflink-copy".into()
        },
        path: p.to_path_buf(),
    })
}

/// The snapshots of guest `g`, oldest first.
///
/// Errors: the snapshot directory cannot be read.
pub fn list(g: &Guest) -> Result<Vec<SnapshotInfo>, String> {
    let dir = snapshot_dir(&g.root());
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("read {}: {e}", dir.display())),
    };
    let mut v: Vec<SnapshotInfo> = rd
        .flatten()
        .filter_map(|e| {
            let l = e.file_name().to_string_lossy().into_owned();
            validate_label(&l).ok()?;
            info(&e.path(), &l)
        })
        .collect();
    v.sort_by(|a, b| (a.created, &a.label).cmp(&(b.created, &b.label)));
    Ok(v)
}

fn existing(g: &Guest, label: &str) -> Result<PathBuf, String> {
    validate_label(label)?;
    let p = snapshot_dir(&g.root()).join(label);
    if std::fs::symlink_metadata(&p).is_err() {
        return Err(format!(
            "{} has no snapshot {label} (see 'vserver {} snapshot list')",
            g.name, g.name
        ));
    }
    Ok(p)
}

/// Bring guest `g`'s files back to snapshot `label`. The replaced state is kept as the
/// snapshot returned (`pre-restore-EPOCH`).
///
/// Errors: the guest runs, the snapshot is unknown, or the copy failed (then the replaced
/// state is put back).
pub fn restore(g: &Guest, label: &str) -> Result<String, String> {
    let snap = existing(g, label)?;
    let _lock = lock(g)?;
    if g.running().is_some() {
        return Err(format!(
            "{} is running; stop it before restoring a snapshot",
            g.name
        ));
    }
    if !super::overlay::running_guests_on(&g.paths, &g.name).is_empty() {
        return Err(format!(
            "{} is the template base of running guests; stop them first",
            g.name
        ));
    }
    let data = data_path(g);
    if super::disk::is_mounted(&data) {
        return Err(format!(
            "{} is mounted; stop the guest first",
            data.display()
        ));
    }
    let stamp = now_unix();
    let aside_label = (0..)
        .map(|i| match i {
            0 => format!("pre-restore-{stamp}"),
            i => format!("pre-restore-{stamp}.{i}"),
        })
        .find(|l| !snapshot_dir(&g.root()).join(l).exists())
        .unwrap_or_default();
    let aside = snapshot_dir(&g.root()).join(&aside_label);
    std::fs::rename(&data, &aside)
        .map_err(|e| format!("move {} to {}: {e}", data.display(), aside.display()))?;
    let _ = std::fs::write(created_file(&aside), format!("{stamp}\n"));
    let r = if sfs::is_subvolume(&snap) {
        sfs::snapshot_subvolume(&snap, &data, false)
    } else {
        sfs::copy_tree_cp(&snap, &data, Some(true))
    };
    if let Err(e) = r {
        let _ = sfs::remove_tree(&data);
        let _ = std::fs::rename(&aside, &data);
        return Err(e);
    }
    Ok(aside_label)
}

/// Delete snapshot `label` of guest `g`.
///
/// Errors: unknown snapshot, or the removal failed.
pub fn delete(g: &Guest, label: &str) -> Result<(), String> {
    let snap = existing(g, label)?;
    let _lock = lock(g)?;
    sfs::remove_tree(&snap)?;
    let _ = std::fs::remove_file(created_file(&snap));
    Ok(())
}

/// `YYYYmmdd-HHMMSS` in UTC for `secs` since the epoch.
pub fn utc_label(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(utc_label(0), "19700101-000000");
        assert_eq!(utc_label(1_795_000_000), "20261118-110640");
        assert!(validate_label("before-upgrade_1.2").is_ok());
        assert!(validate_label("../x").is_err());
        assert!(validate_label(".hidden").is_err());
        assert!(validate_label("").is_err());
    }
}
