//! Disk quota by image: a guest whose `[disk] size` is set lives on its own fixed-size ext4
//! image (`ROOT.img`, sparse), loop-mounted on its root directory while it runs. The guest's
//! space and inode limits are the image's; `df` inside shows them. Works on any host filesystem
//! (project quotas and btrfs qgroups are the other, later backends).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Path of the image of the guest rooted at `root`: `ROOT.img`.
pub fn image_path(root: &Path) -> PathBuf {
    PathBuf::from(format!("{}.img", root.display()))
}

/// True if `root` is a mount point (looked up in /proc/self/mounts).
pub fn is_mounted(root: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let want = root.to_string_lossy();
    text.lines().any(|l| {
        l.split_whitespace().nth(1).map(|m| m.replace("\\040", " ")) == Some(want.to_string())
    })
}

/// Create a sparse image of `size` bytes with an ext4 file system (mkfs.ext4(8)); `inodes`
/// sets the inode limit. No blocks are reserved for root: the guest gets the whole size.
///
/// Errors: the image exists already, or it cannot be created or formatted.
pub fn create_image(img: &Path, size: u64, inodes: Option<u64>) -> Result<(), String> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(img)
        .map_err(|e| format!("create {}: {e}", img.display()))?;
    f.set_len(size)
        .map_err(|e| format!("size {}: {e}", img.display()))?;
    drop(f);
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(["-q", "-F", "-m", "0"]);
    if let Some(n) = inodes {
        cmd.arg("-N").arg(n.to_string());
    }
    let out = cmd
        .arg(img)
        .output()
        .map_err(|e| format!("run mkfs.ext4: {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(img);
        return Err(format!(
            "mkfs.ext4 {}: {}",
            img.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Loop-mount `img` on `root` (nodev: device nodes in the image are inert), unless mounted.
///
/// Errors: mount(8) failed; its message is included.
pub fn mount_image(img: &Path, root: &Path) -> Result<(), String> {
    if is_mounted(root) {
        return Ok(());
    }
    if !img.is_file() {
        return Err(format!("disk image {} is missing", img.display()));
    }
    let out = Command::new("mount")
        .args(["-o", "loop,nodev"])
        .arg(img)
        .arg(root)
        .output()
        .map_err(|e| format!("run mount: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mount {} on {}: {}",
            img.display(),
            root.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Unmount the image from `root` if mounted (lazily when still busy); mount(8)'s loop device is
/// set to autoclear, so it is freed with the last reference.
///
/// Errors: umount2(2) failed even lazily.
pub fn unmount(root: &Path) -> Result<(), String> {
    if !is_mounted(root) {
        return Ok(());
    }
    nix::mount::umount2(root, nix::mount::MntFlags::empty())
        .or_else(|_| nix::mount::umount2(root, nix::mount::MntFlags::MNT_DETACH))
        .map_err(|e| format!("unmount {}: {e}", root.display()))
}

/// Space and inodes of the file system at `root` (statvfs(3)).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct DiskUsage {
    /// Bytes in use.
    pub used_bytes: u64,
    /// Bytes in all.
    pub total_bytes: u64,
    /// Inodes in use.
    pub used_inodes: u64,
    /// Inodes in all.
    pub total_inodes: u64,
}

/// Usage of the file system holding `root`.
pub fn usage(root: &Path) -> Option<DiskUsage> {
    let s = nix::sys::statvfs::statvfs(root).ok()?;
    let frag = s.fragment_size() as u64;
    Some(DiskUsage {
        used_bytes: (s.blocks() as u64).saturating_sub(s.blocks_free() as u64) * frag,
        total_bytes: s.blocks() as u64 * frag,
        used_inodes: (s.files() as u64).saturating_sub(s.files_free() as u64),
        total_inodes: s.files() as u64,
    })
}
