//! `vserver NAME move NEWROOT` and `vserver NAME delete`.

use super::fs as sfs;
use crate::guest::state::GuestLock;
use crate::guest::Guest;
use std::path::{Path, PathBuf};

/// The paths that belong to guest `g` besides its root: its disk image (when it has one),
/// overlay layers (a template guest) and snapshots, those that exist.
///
/// Errors: one of them is (or holds, or lies in) another guest's root, named.
fn companions(g: &Guest) -> Result<Vec<PathBuf>, String> {
    let root = g.root();
    let mut v = Vec::new();
    if g.config.disk.uses_image() {
        v.push(super::disk::image_path(&root));
    }
    if g.config.disk.template.is_some() {
        v.push(super::overlay::overlay_dir(&root));
    }
    v.push(super::snapshot::snapshot_dir(&root));
    v.retain(|p| std::fs::symlink_metadata(p).is_ok());
    for p in &v {
        if let Some(other) = other_guest_at(&g.paths, &g.name, p) {
            return Err(format!(
                "{} belongs to guest {other}'s root; fix the roots in the configs first",
                p.display()
            ));
        }
    }
    Ok(v)
}

/// The configured guest other than `name` whose root is `p`, lies below it or holds it.
pub fn other_guest_at(paths: &crate::paths::Paths, name: &str, p: &Path) -> Option<String> {
    crate::guest::configured_guests(paths)
        .into_iter()
        .filter(|(n, _)| n != name)
        .find_map(|(n, _)| {
            let r = Guest::load(paths, &n).ok()?.root();
            (r.starts_with(p) || p.starts_with(&r)).then_some(n)
        })
}

/// Refuse a guest root that is a host system directory or holds vserver's own directories
/// (a hand-edited `root`), so that delete and move never take those.
fn check_guest_root(g: &Guest, root: &Path) -> Result<(), String> {
    let canon = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let under_base = canon.starts_with(&g.paths.root_base) && canon != g.paths.root_base;
    let system = [
        "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
        "/sbin", "/sys", "/usr",
    ]
    .iter()
    .any(|s| canon.starts_with(s));
    let holds_ours = [&g.paths.root_base, &g.paths.config_dir, &g.paths.run_dir]
        .iter()
        .any(|p| p.starts_with(&canon));
    if !under_base && (system || holds_ours || canon.components().count() < 3) {
        return Err(format!(
            "{} ({}) does not look like a guest root; handle it by hand",
            root.display(),
            canon.display()
        ));
    }
    Ok(())
}

fn with_suffix(root: &Path, new_root: &Path, p: &Path) -> PathBuf {
    let suffix = p
        .to_string_lossy()
        .strip_prefix(&*root.to_string_lossy())
        .unwrap_or("")
        .to_string();
    PathBuf::from(format!("{}{suffix}", new_root.display()))
}

/// Move a path: rename(2), or across file systems a copy (cp -a, reflinked where possible)
/// followed by the removal of the original.
fn move_path(from: &Path, to: &Path) -> Result<(), String> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            if let Err(m) = sfs::copy_tree_cp(from, to, None) {
                let _ = sfs::remove_tree(to);
                return Err(m);
            }
            sfs::remove_tree(from)
        }
        Err(e) => Err(format!("move {} to {}: {e}", from.display(), to.display())),
    }
}

/// Move the root of stopped guest `g` (with its image, overlay layers and snapshots) to
/// `new_root`, and record it in NAME.toml (comments kept).
///
/// Errors: the guest or a guest on its template runs, `new_root` exists or is not absolute,
/// the guest has a util-vserver config (convert it first), the move failed (what moved is
/// moved back).
pub fn move_root(g: &Guest, new_root: &Path) -> Result<(), String> {
    if !new_root.is_absolute() {
        return Err(format!("{} must be an absolute path", new_root.display()));
    }
    let cfg_path = g.paths.config_file(&g.name);
    if !cfg_path.is_file() {
        return Err(format!(
            "{} has a util-vserver configuration; run 'vserver {} convert-config' first",
            g.name, g.name
        ));
    }
    let root = g.root();
    if new_root == root {
        return Ok(());
    }
    if new_root.starts_with(&root) {
        return Err(format!(
            "{} is inside {}",
            new_root.display(),
            root.display()
        ));
    }
    let rd = g.run_dir();
    let _lock = GuestLock::acquire(&rd).map_err(|e| format!("lock: {e}"))?;
    if g.running().is_some() {
        return Err(format!("{} is running; stop it before moving it", g.name));
    }
    let on = super::overlay::running_guests_on(&g.paths, &g.name);
    if !on.is_empty() {
        return Err(format!(
            "{} is the template base of running guest(s) {}; stop them first",
            g.name,
            on.join(", ")
        ));
    }
    if !sfs::mounts_below(&root).is_empty() {
        return Err(format!("{} is mounted; stop what uses it", root.display()));
    }
    check_guest_root(g, &root)?;
    if let Some(other) = other_guest_at(&g.paths, &g.name, new_root) {
        return Err(format!(
            "{} is (or is in, or holds) guest {other}'s root",
            new_root.display()
        ));
    }
    let mut items = vec![(root.clone(), new_root.to_path_buf())];
    for c in companions(g)? {
        items.push((c.clone(), with_suffix(&root, new_root, &c)));
    }
    for (_, to) in &items {
        if std::fs::symlink_metadata(to).is_ok() {
            return Err(format!("{} exists already", to.display()));
        }
    }
    if let Some(p) = new_root.parent() {
        super::build::make_root_parent(&g.paths, p, &mut |m: &str| eprintln!("vserver: {m}"))?;
    }
    // Taken before anything moves. The read-modify-write of NAME.toml under the guest's config lock (a concurrent `limit`
    // must not lose its key, nor this the new root).
    let _lock = g
        .paths
        .lock_config(&g.name)
        .map_err(|e| format!("lock {}: {e}", cfg_path.display()))?;
    let mut done: Vec<(PathBuf, PathBuf)> = Vec::new();
    for (from, to) in &items {
        if let Err(m) = move_path(from, to) {
            for (f, t) in done.iter().rev() {
                let _ = move_path(t, f);
            }
            return Err(m);
        }
        done.push((from.clone(), to.clone()));
    }
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|e| format!("read {}: {e}", cfg_path.display()))?;
    let edited = (|| -> Result<String, String> {
        let mut doc: toml_edit::DocumentMut = text
            .parse()
            .map_err(|e| format!("{}: {e}", cfg_path.display()))?;
        if new_root == g.paths.default_root(&g.name) {
            doc.remove("root");
        } else {
            let s = new_root
                .to_str()
                .ok_or_else(|| format!("{} is not UTF-8", new_root.display()))?;
            doc["root"] = toml_edit::value(s);
        }
        Ok(doc.to_string())
    })();
    let written = edited.and_then(|t| {
        crate::paths::write_atomically(&cfg_path, &t)
            .map_err(|e| format!("write {}: {e}", cfg_path.display()))
    });
    if let Err(m) = written {
        for (f, t) in done.iter().rev() {
            let _ = move_path(t, f);
        }
        return Err(m);
    }
    Ok(())
}

/// Delete guest `g` (the caller has asked for confirmation): stop it if it runs, then remove
/// its snapshots, overlay layers, disk image, root, configuration (NAME.toml, NAME.conf,
/// NAME.sh, NAME/) and run state. Returns the paths removed.
///
/// Errors: another guest is built on it as a template (named), the root is mounted or is not a
/// guest root (`/`, the root base), the stop or a removal failed (what remains is named).
pub fn delete(g: &Guest) -> Result<Vec<PathBuf>, String> {
    let users = super::overlay::guests_on(&g.paths, &g.name);
    if !users.is_empty() {
        return Err(format!(
            "{} is the template of guest(s) {}; delete those first",
            g.name,
            users.join(", ")
        ));
    }
    let root = g.root();
    check_guest_root(g, &root)?;
    let parts = companions(g)?;
    if g.running().is_some() {
        crate::guest::stop::stop(g).map_err(|e| e.to_string())?;
    }
    let rd = g.run_dir();
    let lock = GuestLock::acquire(&rd).map_err(|e| format!("lock: {e}"))?;
    if g.running().is_some() {
        return Err(format!("{} started again while being deleted", g.name));
    }
    let mut removed = Vec::new();
    let snaps = super::snapshot::snapshot_dir(&root);
    if parts.contains(&snaps) {
        if let Ok(rd) = std::fs::read_dir(&snaps) {
            for e in rd.flatten() {
                sfs::remove_tree(&e.path())?;
            }
        }
    }
    for p in parts.into_iter().chain([root]) {
        if std::fs::symlink_metadata(&p).is_ok() {
            sfs::remove_tree(&p)?;
            removed.push(p);
        }
    }
    let cd = &g.paths.config_dir;
    for p in [
        g.paths.config_file(&g.name),
        cd.join(format!("{}.conf", g.name)),
        cd.join(format!("{}.sh", g.name)),
        cd.join(&g.name),
    ] {
        if std::fs::symlink_metadata(&p).is_ok() {
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(|e| format!("remove {}: {e}", p.display()))?;
            removed.push(p);
        }
    }
    // The traffic totals stay for billing, under a name a new guest of the same name does
    // not take over.
    let acct = g
        .paths
        .root_base
        .join(".accounting")
        .join(format!("{}.json", g.name));
    if acct.exists() {
        let kept = acct.with_extension(format!("json.~{}~", crate::guest::state::now_unix()));
        std::fs::rename(&acct, &kept)
            .map_err(|e| format!("keep {} as {}: {e}", acct.display(), kept.display()))?;
    }
    drop(lock);
    let dir = rd.file("");
    if std::fs::remove_dir_all(&dir).is_ok() {
        removed.push(dir);
    }
    Ok(removed)
}
