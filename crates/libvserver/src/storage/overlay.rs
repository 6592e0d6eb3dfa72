//! Template guests (`build -m template-guest --template BASE`): the guest's root is an
//! overlayfs (Documentation/filesystems/overlayfs.rst) with the base guest's root as its
//! read-only lower layer and `ROOT.overlay/upper` as its private upper layer, mounted on the
//! guest's root directory only while the guest runs. Files the guest never changes are the
//! base's (one copy on disk, one copy in the page cache for all guests on that base).
//!
//! overlayfs must not see its lower layer change while mounted, so a base and the guests built
//! on it never run at the same time: updating a base means stopping its guests, starting the
//! base, updating it, stopping it, and starting the guests again (they then see the new files,
//! except the ones they changed themselves).

use crate::config::GuestConfig;
use crate::paths::Paths;
use std::path::{Path, PathBuf};

/// The directory holding a template guest's `upper` and `work` directories: `ROOT.overlay`.
pub fn overlay_dir(root: &Path) -> PathBuf {
    PathBuf::from(format!("{}.overlay", root.display()))
}

/// Names of the configured guests built on `base` as template guests (sorted).
pub fn guests_on(paths: &Paths, base: &str) -> Vec<String> {
    let mut v: Vec<String> = crate::guest::configured_guests(paths)
        .into_iter()
        .filter(|(n, p)| {
            n != base
                && crate::config::load_guest_config(p)
                    .map(|c| c.disk.template.as_deref() == Some(base))
                    .unwrap_or(false)
        })
        .map(|(n, _)| n)
        .collect();
    v.sort();
    v
}

/// Names of the running guests among [`guests_on`].
pub fn running_guests_on(paths: &Paths, base: &str) -> Vec<String> {
    guests_on(paths, base)
        .into_iter()
        .filter(|n| {
            crate::guest::state::RunDir::new(&paths.run_dir, n)
                .read_state()
                .map(|s| s.init_alive())
                .unwrap_or(false)
        })
        .collect()
}

/// Mount points of the overlays whose lower layer is `base_root` (from /proc/self/mountinfo):
/// one read of the mount table, so a start need not read every guest's NAME.toml to learn
/// that no template guest of it is mounted.
pub fn mounted_on(base_root: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let want = format!("lowerdir={}", base_root.display());
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mut r = right.split(' ');
            let ours = r.next()? == "overlay"
                && r.nth(1)?
                    .split(',')
                    .any(|o| o.replace("\\040", " ") == want);
            let mount_point = left.split(' ').nth(4)?.replace("\\040", " ");
            ours.then(|| PathBuf::from(mount_point))
        })
        .collect()
}

/// Unmount the overlays of the stopped guests built on `base` that are still mounted (left by
/// an interrupted build or export), so the base never changes under a mounted overlay.
pub fn unmount_stale(paths: &Paths, base: &str) {
    for n in guests_on(paths, base) {
        let Ok(g) = crate::guest::Guest::load(paths, &n) else {
            continue;
        };
        if g.running().is_none() && super::disk::is_mounted(&g.root()) {
            let _ = super::disk::unmount(&g.root());
        }
    }
}

fn option_path(p: &Path) -> Result<String, String> {
    let s = p
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", p.display()))?;
    if s.contains([',', ':', '\\']) {
        return Err(format!(
            "{s}: overlayfs cannot take a path with ',', ':' or '\\'"
        ));
    }
    Ok(s.to_string())
}

/// Mount the overlay of the template guest configured by `cfg` on `root` (nodev), unless it is
/// mounted already. Returns true if this call mounted it.
///
/// Errors: the base is unknown or running, a layer directory is missing, mount(2) failed.
pub fn mount(cfg: &GuestConfig, paths: &Paths, root: &Path) -> Result<bool, String> {
    let Some(base) = &cfg.disk.template else {
        return Ok(false);
    };
    if super::disk::is_mounted(root) {
        return Ok(false);
    }
    let bg =
        crate::guest::Guest::load(paths, base).map_err(|e| format!("template base {base}: {e}"))?;
    if bg.running().is_some() {
        return Err(format!(
            "its template base {base} is running; a base must not change under its guests \
             (stop {base} first)"
        ));
    }
    let lower = bg.root();
    let ovl = overlay_dir(root);
    let (upper, work) = (ovl.join("upper"), ovl.join("work"));
    for d in [&lower, &upper, &work] {
        if !d.is_dir() {
            return Err(format!("overlay layer {} is missing", d.display()));
        }
    }
    // redirect_dir and metacopy off: the upper layer is written by the guest, and those
    // features would let crafted xattrs there point into other parts of the lower layer.
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off,index=off",
        option_path(&lower)?,
        option_path(&upper)?,
        option_path(&work)?
    );
    nix::mount::mount(
        Some("vserver-overlay"),
        root,
        Some("overlay"),
        nix::mount::MsFlags::MS_NODEV,
        Some(opts.as_str()),
    )
    .map_err(|e| {
        format!(
            "mount the overlay of {} (base {base}) on {}: {e}",
            lower.display(),
            root.display()
        )
    })?;
    Ok(true)
}

/// Unmount a template guest's overlay from `root` if mounted (lazily when busy).
///
/// Errors: umount2(2) failed.
pub fn unmount(root: &Path) -> Result<(), String> {
    super::disk::unmount(root)
}

/// The root of a template guest or disk-image guest mounted for host-side work (build,
/// export), unmounted again on drop when this guard mounted it.
pub struct MountGuard {
    root: Option<PathBuf>,
}

impl MountGuard {
    /// Mount what `cfg` keeps its files in (overlay or disk image) on `root`, if anything and
    /// if not mounted already.
    ///
    /// Errors: as [`mount`] and [`super::disk::mount_image`].
    pub fn mount(cfg: &GuestConfig, paths: &Paths, root: &Path) -> Result<MountGuard, String> {
        let mounted = if cfg.disk.template.is_some() {
            mount(cfg, paths, root)?
        } else if cfg.disk.uses_image() && !super::disk::is_mounted(root) {
            super::disk::mount_image(&super::disk::image_path(root), root)?;
            true
        } else {
            false
        };
        Ok(MountGuard {
            root: mounted.then(|| root.to_path_buf()),
        })
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Some(r) = &self.root {
            let _ = super::disk::unmount(r);
        }
    }
}
