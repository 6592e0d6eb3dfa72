//! Walking and removing the cgroups a guest made below its own, by directory descriptors.
//!
//! A guest that manages its cgroups (systemd) names and nests them as it likes; on cgroup v1
//! nothing bounds the depth, so a path can outgrow PATH_MAX. These walks hold one directory
//! descriptor at a time and move with openat(2) by single names (and `..`, which in a cgroup
//! hierarchy is always the parent cgroup: there are no symlinks or other mounts inside), so
//! no path is longer than one component however deep the tree is.

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

fn open_dir_at(dir: &OwnedFd, name: &str) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// How many directory entries [`subdirs`] returned (tests count the walks' work).
#[cfg(test)]
static READS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Names of the subdirectories of the open directory `dir` (a cgroup's children).
fn subdirs(dir: &OwnedFd) -> Vec<String> {
    let Ok(copy) = nix::unistd::dup(dir.as_fd()) else {
        return Vec::new();
    };
    let Ok(mut d) = nix::dir::Dir::from_fd(copy) else {
        return Vec::new();
    };
    let names: Vec<String> = d
        .iter()
        .flatten()
        .filter(|e| e.file_type() == Some(nix::dir::Type::Directory))
        .filter_map(|e| e.file_name().to_str().ok().map(str::to_string))
        .filter(|n| n != "." && n != "..")
        .collect();
    #[cfg(test)]
    READS.fetch_add(names.len(), std::sync::atomic::Ordering::Relaxed);
    names
}

/// Call `visit` with a descriptor of every cgroup below `dir` (not `dir` itself), parents
/// before children. Nothing when `dir` cannot be opened.
pub(super) fn for_each_below(dir: &Path, visit: &mut dyn FnMut(&OwnedFd)) {
    let Ok(top) = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    let mut stack = vec![subdirs(&top)];
    let mut cur = top;
    while let Some(pending) = stack.last_mut() {
        match pending.pop() {
            Some(name) => {
                if let Ok(d) = open_dir_at(&cur, &name) {
                    visit(&d);
                    stack.push(subdirs(&d));
                    cur = d;
                }
            }
            None => {
                stack.pop();
                if stack.is_empty() {
                    break;
                }
                match open_dir_at(&cur, "..") {
                    Ok(up) => cur = up,
                    Err(_) => break,
                }
            }
        }
    }
}

/// Pids listed in `cgroup.procs` of the open cgroup directory `dir`.
pub(super) fn pids_at(dir: &OwnedFd) -> Vec<i32> {
    use std::io::Read;
    let Ok(fd) = openat(
        dir,
        "cgroup.procs",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return Vec::new();
    };
    let mut s = String::new();
    let _ = std::fs::File::from(fd).read_to_string(&mut s);
    s.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// rmdir(2) `name` in `parent`, retrying while the kernel still reports it busy (a cgroup
/// whose last task is exiting), at most 2 s. A name already gone is fine.
fn rmdir_at(parent: &OwnedFd, name: &str) -> std::io::Result<()> {
    let start = Instant::now();
    loop {
        match nix::unistd::unlinkat(parent, name, nix::unistd::UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(nix::errno::Errno::EBUSY) if start.elapsed() < Duration::from_secs(2) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Remove every cgroup below `dir`, deepest first, then `dir` itself. A missing `dir` is fine.
///
/// Errors: the rmdir that failed (EBUSY after 2 s: the cgroup still has tasks).
pub(super) fn remove_tree(dir: &Path) -> std::io::Result<()> {
    let top = match nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    // Each directory is read once (a container may have made tens of thousands of cgroups:
    // re-reading a parent for each child removed would be quadratic). `names` holds the
    // names from `dir` down to the current directory, `pending` the children of each level
    // still to remove.
    let mut names: Vec<String> = Vec::new();
    let mut pending = vec![subdirs(&top)];
    let mut cur = top;
    while let Some(level) = pending.last_mut() {
        if let Some(child) = level.pop() {
            match open_dir_at(&cur, &child) {
                Ok(d) => {
                    pending.push(subdirs(&d));
                    names.push(child);
                    cur = d;
                }
                Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(e.into()),
            }
            continue;
        }
        // Every child of the current directory is gone: remove it from its parent.
        pending.pop();
        let Some(name) = names.pop() else { break };
        let up = open_dir_at(&cur, "..")?;
        rmdir_at(&up, &name)?;
        cur = up;
    }
    drop(cur);
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name().and_then(|n| n.to_str()))
    else {
        return Ok(());
    };
    let p = nix::fcntl::open(
        parent,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    rmdir_at(&p, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_trees_are_walked_and_removed_without_long_paths() {
        // Plain directories stand in for cgroups: rmdir and the walk work alike.
        let base = std::env::temp_dir().join(format!("vs-cgtree-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let long = "d".repeat(250);
        // 40 levels of 250 characters: a path of 10 kB, past PATH_MAX.
        let mut cur =
            nix::fcntl::open(&base, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        for _ in 0..40 {
            nix::sys::stat::mkdirat(&cur, long.as_str(), Mode::from_bits_truncate(0o755)).unwrap();
            cur = open_dir_at(&cur, &long).unwrap();
        }
        std::fs::create_dir_all(base.join("a/b")).unwrap();
        std::fs::create_dir_all(base.join("c")).unwrap();
        let mut n = 0;
        for_each_below(&base, &mut |_| n += 1);
        assert_eq!(n, 43);
        remove_tree(&base).unwrap();
        assert!(!base.exists());
        remove_tree(&base).unwrap();
    }

    #[test]
    fn removal_reads_each_directory_once() {
        // A container can make tens of thousands of sibling cgroups: a walk that re-reads the
        // parent per child removed is quadratic (a delete of hours).
        let base = std::env::temp_dir().join(format!("vs-cgwide-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        for i in 0..300 {
            std::fs::create_dir_all(base.join(format!("w{i}/x"))).unwrap();
        }
        let before = READS.load(std::sync::atomic::Ordering::Relaxed);
        remove_tree(&base).unwrap();
        let reads = READS.load(std::sync::atomic::Ordering::Relaxed) - before;
        assert!(!base.exists());
        // 300 children and 300 grandchildren, each listed once (the other test of this module
        // may add its own 43 meanwhile).
        assert!(reads <= 600 + 43, "{reads} entries read for 600 cgroups");
    }
}
