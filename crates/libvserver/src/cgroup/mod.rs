//! Control groups of guests: one cgroup per context id, on cgroup v2, v1 or a hybrid host.
//!
//! The layout is discovered from a mount table (`/proc/self/mountinfo`, a parameter so the
//! parser is tested on fake tables). Every guest gets `vservers/<xid>` in the v2 hierarchy (if
//! one is mounted; it takes processes even without controllers) and in every v1 hierarchy;
//! on a host whose systemd owns a v2-only tree, `vservers.slice/vserver-<xid>.scope/payload`
//! instead, in a scope delegated by systemd (see [`systemd`]).
//! Kernel docs: Documentation/admin-guide/cgroup-v2.rst and cgroup-v1/.

pub mod devices;
mod layout;
pub mod systemd;
mod tree;

pub use layout::{parse_mountinfo, CgroupLayout, Hierarchy};

use std::fs;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Directory under each hierarchy's root that holds the guests' cgroups.
pub const CGROUP_BASE: &str = "vservers";
/// The cgroup below `vservers/<xid>` in the v2 hierarchy where a guest that manages cgroups
/// itself (systemd) lives: the root of its cgroup namespace, delegated to it
/// (systemd.io/CGROUP_DELEGATION). Its limits stay on `vservers/<xid>`, which the guest can
/// neither see nor write: the interface files of a cgroup namespace's root are writable from
/// inside unless the host mounted cgroup2 with `nsdelegate`.
pub const DELEGATED_LEAF: &str = "guest";
/// The cgroup below an OCI container's own that holds its processes, on each hierarchy where
/// the container could otherwise write its own limits (see [`GuestCgroup::with_process_leaf`]).
pub const PROCESS_LEAF: &str = "payload";
/// Most cgroups a delegated guest may make below its own (`cgroup.max.descendants` of the
/// context's directory): systemd makes one per unit and session, a busy server a few hundred;
/// each costs kernel memory.
pub const DELEGATED_MAX_DESCENDANTS: u32 = 1024;
/// Deepest nesting a delegated guest may make (`cgroup.max.depth` of the context's directory).
pub const DELEGATED_MAX_DEPTH: u32 = 16;
/// Files of a delegated cgroup that its new owner gets besides the directory (the kernel lists
/// them in /sys/kernel/cgroup/delegate; cgroup-v2.rst, "Delegation").
const DELEGATED_FILES: &[&str] = &["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"];

/// A cgroup operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Reading the mount table failed.
    #[error("cannot read the mount table {path}: {source}")]
    MountTable {
        /// Table read.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// No usable cgroup hierarchy is mounted.
    #[error("no cgroup hierarchy is mounted (looked in {0}); mount cgroup2 on /sys/fs/cgroup")]
    NoHierarchy(PathBuf),
    /// A file or directory operation in a cgroup failed.
    #[error("context {xid}: cannot {what} {path}: {source}")]
    Io {
        /// Context id of the guest.
        xid: u32,
        /// What was attempted ("create", "write", "remove", ...).
        what: &'static str,
        /// Cgroup path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// A limit was configured that no mounted hierarchy can enforce.
    #[error(
        "context {xid}: cannot enforce limits.{key}: no cgroup controller on this host has {needs}"
    )]
    Unsupported {
        /// Context id.
        xid: u32,
        /// The `limits` key.
        key: &'static str,
        /// The cgroup files looked for.
        needs: &'static str,
    },
    /// systemd did not give the guest its scope (see [`systemd::enter_scope`]).
    #[error("context {xid}: {message}")]
    Systemd {
        /// Context id.
        xid: u32,
        /// What failed, with systemd's or the OS's error.
        message: String,
    },
    /// A state change the kernel did not report in time.
    #[error("context {xid}: {what} did not complete within 5 s ({path})")]
    Timeout {
        /// Context id.
        xid: u32,
        /// What was waited for.
        what: &'static str,
        /// The file written.
        path: PathBuf,
    },
    /// The cgroup kept processes after the kill sequence.
    #[error("context {xid}: cgroup {path} still has processes after {secs} s")]
    NotEmpty {
        /// Context id.
        xid: u32,
        /// Cgroup directory.
        path: PathBuf,
        /// How long it was waited.
        secs: u64,
    },
}

type Result<T> = std::result::Result<T, CgroupError>;

/// CPU time of a cgroup in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// User time, microseconds.
    pub user_usec: u64,
    /// System time, microseconds.
    pub sys_usec: u64,
}

/// The cgroup of one context (`vservers/<xid>`) in every hierarchy of the host.
#[derive(Debug, Clone)]
pub struct GuestCgroup {
    /// Context id.
    pub xid: u32,
    /// (hierarchy, absolute cgroup directory).
    dirs: Vec<(Hierarchy, PathBuf)>,
    /// The guest's processes start in [`DELEGATED_LEAF`] below the v2 directory.
    delegated: bool,
    /// The processes live in [`PROCESS_LEAF`] below the directory on v1 hierarchies...
    leaf: bool,
    /// ... and on the v2 one too (mounted without `nsdelegate`).
    leaf_v2: bool,
    /// This is such a leaf: the device program of the cgroup above governs it (a program of
    /// its own cannot be attached below one that does not allow it).
    is_leaf: bool,
    /// The v2 directory of the systemd scope the cgroup lives in (see [`systemd`]), if any.
    scope: Option<PathBuf>,
}

fn io(xid: u32, what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io {
        xid,
        what,
        path,
        source,
    }
}

/// Write `value` to an existing cgroup file (no create, no truncate semantics needed).
fn write_file(xid: u32, path: &Path, value: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io(xid, "open", path))?;
    f.write_all(value.as_bytes())
        .map_err(io(xid, "write", path))
}

fn read_pids(path: &Path) -> std::io::Result<Vec<i32>> {
    Ok(fs::read_to_string(path)?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

impl GuestCgroup {
    /// The cgroup of context `xid` in `layout` (nothing is created).
    pub fn new(layout: &CgroupLayout, xid: u32) -> GuestCgroup {
        let classic = format!("{CGROUP_BASE}/{xid}");
        let scoped = systemd::scope_rel(xid);
        let v2 = layout
            .hierarchies
            .iter()
            .find(|h| h.is_v2())
            .map(|h| h.mount());
        // What is on disk first: a running guest stays where it started (a guest started
        // before the host's vserver learnt scopes keeps its classic place; a scoped guest is
        // found even by a command that cannot see the system bus); new guests go where the
        // host says.
        let scoped_there = v2.is_some_and(|m| m.join(&scoped).join(systemd::PAYLOAD).is_dir());
        let classic_there = v2.is_some_and(|m| m.join(&classic).is_dir());
        let (rel, scope) = if scoped_there || (layout.systemd_scopes && !classic_there) {
            (format!("{scoped}/{}", systemd::PAYLOAD), Some(scoped))
        } else {
            (classic, None)
        };
        let dirs: Vec<(Hierarchy, PathBuf)> = layout
            .hierarchies
            .iter()
            .map(|h| (h.clone(), h.mount().join(&rel)))
            .collect();
        let scope = scope.and_then(|s| {
            dirs.iter()
                .find(|(h, _)| h.is_v2())
                .map(|(h, _)| h.mount().join(s))
        });
        GuestCgroup {
            xid,
            dirs,
            delegated: false,
            leaf: false,
            leaf_v2: false,
            is_leaf: false,
            scope,
        }
    }

    /// On a host whose systemd owns the cgroup tree: wait up to `timeout` until systemd has
    /// removed the guest's scope (it does once the scope holds no process). True when it is
    /// gone, or there is none.
    pub fn wait_scope_gone(&self, timeout: Duration) -> bool {
        let Some(scope) = &self.scope else {
            return true;
        };
        let deadline = Instant::now() + timeout;
        while scope.exists() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// On a host whose systemd owns the cgroup tree: move this process into the guest's scope
    /// (registered now if it does not run; see [`systemd::enter_scope`]), before
    /// [`GuestCgroup::create`]. `description` names the scope's unit; `before` lists the units
    /// systemd must stop before the scope at shutdown. Elsewhere nothing happens.
    ///
    /// Errors: [`CgroupError::Systemd`].
    pub fn enter_scope(&self, description: &str, before: &[String]) -> Result<()> {
        let Some(scope) = &self.scope else {
            return Ok(());
        };
        let mount = scope
            .ancestors()
            .nth(2)
            .unwrap_or(Path::new("/sys/fs/cgroup"));
        systemd::enter_scope(mount, self.xid, description, before).map_err(|message| {
            CgroupError::Systemd {
                xid: self.xid,
                message,
            }
        })
    }

    /// The same cgroup for a guest that manages its own cgroups: on the v2 hierarchy its
    /// processes start in [`DELEGATED_LEAF`] (created, opened and joined instead of the
    /// context's directory), the root of its cgroup namespace.
    pub fn delegated(mut self) -> GuestCgroup {
        self.delegated = true;
        self
    }

    /// The cgroup at `rel` (relative to each hierarchy's mount, e.g. an OCI `cgroupsPath`),
    /// labelled `xid` in messages (nothing is created). `rel` must not climb with `..`. As
    /// every cgroup here, its subtree is its own (listed, killed and removed with it): the
    /// caller makes sure no one else's cgroup lies below it (the OCI front end refuses
    /// nested container cgroups and cgroups that are not empty).
    pub fn at_path(layout: &CgroupLayout, xid: u32, rel: &str) -> GuestCgroup {
        let rel = rel.trim_start_matches('/');
        let dirs = layout
            .hierarchies
            .iter()
            .map(|h| (h.clone(), h.mount().join(rel)))
            .collect();
        GuestCgroup {
            xid,
            dirs,
            delegated: false,
            leaf: false,
            leaf_v2: false,
            is_leaf: false,
            scope: None,
        }
    }

    /// The same cgroup whose processes live in [`PROCESS_LEAF`] below it on every hierarchy
    /// where a cgroup namespace's root is writable by its owner: every cgroup v1 hierarchy, and
    /// the v2 one when it is mounted without `nsdelegate` (cgroup-v2.rst, "Namespace"). A
    /// process that makes a user namespace of its own (mapping its uid 0), a cgroup namespace
    /// and mounts the hierarchies sees the leaf as its root and can write the leaf's files: the
    /// limits sit one level higher, where they bound the leaf hierarchically. The leaf carries
    /// the same limits (see [`GuestCgroup::leaf`]) so that the processes see them in their own
    /// cgroup.
    pub fn with_process_leaf(mut self) -> GuestCgroup {
        self.leaf = true;
        self.leaf_v2 = self
            .dirs
            .iter()
            .find(|(h, _)| h.is_v2())
            .is_some_and(|(h, _)| !v2_delegates_namespaces(h.mount()));
        self
    }

    /// True if processes of hierarchy `h` live in the leaf.
    fn uses_leaf(&self, h: &Hierarchy) -> bool {
        self.leaf && (!h.is_v2() || self.leaf_v2)
    }

    /// The leaves of [`GuestCgroup::with_process_leaf`] as a cgroup of their own (the
    /// hierarchies that have one); None without.
    pub fn leaf(&self) -> Option<GuestCgroup> {
        let dirs: Vec<(Hierarchy, PathBuf)> = self
            .dirs
            .iter()
            .filter(|(h, _)| self.uses_leaf(h))
            .map(|(h, d)| (h.clone(), d.join(PROCESS_LEAF)))
            .collect();
        (!dirs.is_empty()).then_some(GuestCgroup {
            xid: self.xid,
            dirs,
            delegated: false,
            leaf: false,
            leaf_v2: false,
            is_leaf: true,
            scope: None,
        })
    }

    /// Create the leaves (after the cgroup itself): on v2 the cgroup passes its controllers
    /// down first (it holds no process itself, so it may).
    ///
    /// Errors: [`CgroupError::Io`] naming the directory.
    pub fn create_leaf(&self) -> Result<()> {
        if self.leaf_v2 {
            if let Some(d) = self.unified_dir() {
                layout::enable_v2_controllers_of(self.xid, d);
            }
        }
        match self.leaf() {
            Some(l) => l.create(),
            None => Ok(()),
        }
    }

    /// True for the cgroup [`GuestCgroup::leaf`] returns.
    pub fn is_leaf(&self) -> bool {
        self.is_leaf
    }

    /// Where processes go in hierarchy `h` whose directory is `d`.
    fn proc_dir(&self, h: &Hierarchy, d: &Path) -> PathBuf {
        if self.uses_leaf(h) {
            d.join(PROCESS_LEAF)
        } else {
            d.to_path_buf()
        }
    }

    /// True if a cgroup exists below this one in any hierarchy, other than an empty
    /// [`PROCESS_LEAF`] of a cgroup made [`GuestCgroup::with_process_leaf`] (left by an
    /// earlier container of the same cgroup).
    pub fn has_children(&self) -> bool {
        self.dirs.iter().any(|(h, d)| {
            let leaf = d.join(PROCESS_LEAF);
            let own_leaf = self.uses_leaf(h)
                && leaf.is_dir()
                && !has_subdir(&leaf)
                && read_pids(&leaf.join("cgroup.procs")).is_ok_and(|p| p.is_empty());
            if own_leaf {
                fs::read_dir(d)
                    .map(|rd| {
                        rd.flatten().any(|e| {
                            e.file_type().is_ok_and(|t| t.is_dir()) && e.file_name() != PROCESS_LEAF
                        })
                    })
                    .unwrap_or(false)
            } else {
                has_subdir(d)
            }
        })
    }

    /// Absolute directories of this cgroup, one per hierarchy.
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(|(_, d)| d.as_path())
    }

    /// True if the cgroup exists in at least one hierarchy.
    pub fn exists(&self) -> bool {
        self.dirs.iter().any(|(_, d)| d.is_dir())
    }

    /// The v2 directory, if the host has a v2 hierarchy.
    pub fn unified_dir(&self) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(h, _)| h.is_v2())
            .map(|(_, d)| d.as_path())
    }

    /// The v2 directory the guest's first process goes into: [`DELEGATED_LEAF`] below the
    /// context's directory for a delegated guest, else the context's directory.
    pub fn init_dir(&self) -> Option<PathBuf> {
        self.unified_dir().map(|d| {
            if self.delegated {
                d.join(DELEGATED_LEAF)
            } else if self.leaf_v2 {
                d.join(PROCESS_LEAF)
            } else {
                d.to_path_buf()
            }
        })
    }

    /// Create the cgroup in every hierarchy (and `vservers/` above it), enabling v2 controllers
    /// for it and initialising v1 cpuset and devices. Existing directories are reused.
    ///
    /// Errors: [`CgroupError::Io`] naming the directory or file.
    pub fn create(&self) -> Result<()> {
        for (h, dir) in &self.dirs {
            let rel = dir.strip_prefix(h.mount()).unwrap_or(dir);
            let comps: Vec<_> = rel.components().collect();
            let mut d = h.mount().to_path_buf();
            for (i, c) in comps.iter().enumerate() {
                d.push(c);
                // The slice and the scope are systemd's: the scope must run (enter_scope), and
                // only its own subtree_control, delegated to us, is written.
                if let Some(scope) = self.scope.as_deref().filter(|s| s.starts_with(&d)) {
                    if d == scope {
                        if !d.is_dir() {
                            return Err(CgroupError::Systemd {
                                xid: self.xid,
                                message: format!(
                                    "{} is not running (its cgroup {} is missing)",
                                    systemd::scope_name(self.xid),
                                    d.display()
                                ),
                            });
                        }
                        layout::enable_v2_controllers_of(self.xid, &d);
                    }
                    continue;
                }
                // Every directory above the leaf is a parent that must pass controllers down.
                let is_base = i + 1 < comps.len();
                match fs::create_dir(&d) {
                    // A leaf's device policy is its parent's program (v2).
                    Ok(()) if self.is_leaf && h.is_v2() => {}
                    Ok(()) => h.init_new_dir(self.xid, &d, is_base, self.is_leaf)?,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        if is_base && h.is_v2() {
                            layout::enable_v2_controllers(self.xid, &d);
                        }
                        // A base made by an older version: let new cpusets inherit from it.
                        let cc = d.join("cgroup.clone_children");
                        if i == 0
                            && is_base
                            && c.as_os_str() == CGROUP_BASE
                            && h.has_controller("cpuset")
                            && fs::read_to_string(&cc).is_ok_and(|v| v.trim() == "0")
                        {
                            write_file(self.xid, &cc, "1")?;
                        }
                    }
                    Err(e) => return Err(io(self.xid, "create", &d)(e)),
                }
            }
            if self.delegated && h.is_v2() {
                // The context's directory passes its controllers down to the guest (it holds
                // no process itself, so it may), then the leaf is made.
                layout::enable_v2_controllers_of(self.xid, dir);
                // Bounds on what the guest may make below, set where it cannot change them.
                for (f, v) in [
                    ("cgroup.max.descendants", DELEGATED_MAX_DESCENDANTS),
                    ("cgroup.max.depth", DELEGATED_MAX_DEPTH),
                ] {
                    write_file(self.xid, &dir.join(f), &v.to_string())?;
                }
                let leaf = dir.join(DELEGATED_LEAF);
                match fs::create_dir(&leaf) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io(self.xid, "create", &leaf)(e)),
                }
            }
        }
        Ok(())
    }

    /// Give the delegated v2 cgroup (see [`GuestCgroup::delegated`]) to host `uid`/`gid`, the
    /// guest's root in its user namespace: the directory and the files that delegation hands
    /// over, so that the guest's cgroup manager may make cgroups and move its processes below
    /// it (cgroup-v2.rst, "Delegation Containment"). Nothing happens for other guests.
    ///
    /// Errors: [`CgroupError::Io`] naming the file.
    pub fn delegate_to(&self, uid: u32, gid: u32) -> Result<()> {
        if !self.delegated {
            return Ok(());
        }
        // The v2 leaf, and the v1 `name=systemd` directory an older systemd writes on a
        // v1-only host (`tasks` is v1's per-thread file).
        let mut dirs: Vec<PathBuf> = self.init_dir().into_iter().collect();
        dirs.extend(
            self.dirs
                .iter()
                .filter(|(h, _)| h.has_controller("name=systemd"))
                .map(|(_, d)| d.clone()),
        );
        let (u, g) = (Some(uid), Some(gid));
        for dir in dirs {
            std::os::unix::fs::chown(&dir, u, g).map_err(io(self.xid, "chown", &dir))?;
            for f in DELEGATED_FILES.iter().chain(&["tasks"]) {
                let p = dir.join(f);
                match std::os::unix::fs::chown(&p, u, g) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(self.xid, "chown", &p)(e)),
                }
            }
        }
        Ok(())
    }

    /// Open the v2 directory for clone3(2)'s CLONE_INTO_CGROUP.
    ///
    /// Errors: [`CgroupError::Io`] if it cannot be opened; None when the host has no v2 mount.
    pub fn open_unified(&self) -> Result<Option<OwnedFd>> {
        let Some(d) = self.init_dir() else {
            return Ok(None);
        };
        let f = fs::File::open(&d).map_err(io(self.xid, "open", &d))?;
        Ok(Some(f.into()))
    }

    /// Open `cgroup.procs` of every hierarchy (v1 only when `v1_only`), for a process that will
    /// move itself in after leaving the host's mount namespace.
    pub fn open_procs_files(&self, v1_only: bool) -> Result<Vec<fs::File>> {
        self.dirs
            .iter()
            .filter(|(h, _)| !(v1_only && h.is_v2()))
            .map(|(h, d)| self.open_procs(&self.proc_dir(h, d)))
            .collect()
    }

    /// `cgroup.procs` of directory `d`, open for writing.
    fn open_procs(&self, d: &Path) -> Result<fs::File> {
        let p = d.join("cgroup.procs");
        fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .map_err(io(self.xid, "open", &p))
    }

    /// Open, in every hierarchy, `cgroup.procs` of the cgroup where process `pid` (the guest's
    /// init, host pid) is now: a guest that manages its own cgroups keeps its processes in
    /// cgroups below the context's directory (and may hold none in the directory itself), so
    /// a process joining it goes where its init is. The path read from `/proc/PID/cgroup` was
    /// chosen by the guest: it is used only when it lies below this context's directory, and
    /// is opened with openat2(2) `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` from there; anything
    /// else falls back to the context's directory.
    ///
    /// Errors: [`CgroupError::Io`] naming the file.
    pub fn open_procs_files_of(&self, pid: i32) -> Result<Vec<fs::File>> {
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let mut v = Vec::new();
        for (h, d) in &self.dirs {
            let own = Path::new("/").join(d.strip_prefix(h.mount()).unwrap_or(d));
            let rel =
                cgroup_path_of(&text, h).and_then(|p| nested_below(&p, &own.to_string_lossy()));
            let nested = rel
                .filter(|r| !r.is_empty())
                .and_then(|r| open_beneath(d, &format!("{r}/cgroup.procs")).ok());
            // Never above the guest's own cgroup namespace: a delegated guest's leaf when the
            // init's cgroup went away meanwhile.
            let leaf = d.join(DELEGATED_LEAF);
            v.push(match nested {
                Some(f) => f,
                None if h.is_v2() && leaf.is_dir() => self.open_procs(&leaf)?,
                None => self.open_procs(d)?,
            });
        }
        Ok(v)
    }

    /// Open, in every hierarchy, `cgroup.procs` of the cgroup where process `pid` (an OCI
    /// container's init, host pid) is now, when that lies at or below this cgroup's process
    /// directory (`rel` is this cgroup's path from each hierarchy's root, as in
    /// `/proc/PID/cgroup`); else the process directory's own. A container that manages its
    /// cgroups (systemd, Docker in a pod) moves its processes below its own and may enable
    /// controllers there, after which its own cgroup takes no process (EBUSY): an exec'd
    /// process goes where the init is, as with runc. Opened with openat2(2)
    /// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` from the process directory.
    ///
    /// Errors: [`CgroupError::Io`] naming the file.
    pub fn open_procs_files_following(&self, pid: i32, rel: &str) -> Result<Vec<fs::File>> {
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let rel = format!("/{}", rel.trim_matches('/'));
        let mut v = Vec::new();
        for (h, d) in &self.dirs {
            let dir = self.proc_dir(h, d);
            let base = if self.uses_leaf(h) {
                format!("{}/{PROCESS_LEAF}", rel.trim_end_matches('/'))
            } else {
                rel.clone()
            };
            // Never into a cgroup the container froze (the exec would hang there).
            let nested = cgroup_path_of(&text, h)
                .and_then(|p| nested_below(&p, &base))
                .filter(|r| !r.is_empty())
                .filter(|r| !dir_frozen(h, &dir.join(r)))
                .and_then(|r| open_beneath(&dir, &format!("{r}/cgroup.procs")).ok());
            v.push(match nested {
                Some(f) => f,
                None => self.open_procs(&dir)?,
            });
        }
        Ok(v)
    }

    /// True when process `pid` (host pid) sits in a frozen cgroup of one of this cgroup's
    /// hierarchies (v1 `freezer.state` FROZEN, v2 `cgroup.events` frozen 1): a container may
    /// freeze a cgroup of its own below its leaf with its init in it.
    pub fn process_frozen(&self, pid: i32) -> bool {
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        self.dirs.iter().any(|(h, _)| {
            cgroup_path_of(&text, h)
                .is_some_and(|p| dir_frozen(h, &h.mount().join(p.trim_start_matches('/'))))
        })
    }

    /// Move process `pid` into the cgroup (v1 only when `v1_only`); on v2 into
    /// [`GuestCgroup::init_dir`].
    pub fn add_pid(&self, pid: i32, v1_only: bool) -> Result<()> {
        for (h, d) in &self.dirs {
            if h.is_v2() {
                if v1_only {
                    continue;
                }
                let d = self.init_dir().unwrap_or_else(|| d.clone());
                write_file(self.xid, &d.join("cgroup.procs"), &pid.to_string())?;
                continue;
            }
            write_file(
                self.xid,
                &self.proc_dir(h, d).join("cgroup.procs"),
                &pid.to_string(),
            )?;
        }
        Ok(())
    }

    /// Pids (host view) of the processes in the cgroup and every cgroup below it (a guest's
    /// own cgroup manager nests them); empty if it does not exist.
    pub fn pids(&self) -> Vec<i32> {
        // v2 first: its cgroup.procs is always complete; else the first v1 hierarchy.
        let mut order: Vec<&(Hierarchy, PathBuf)> =
            self.dirs.iter().filter(|(h, _)| h.is_v2()).collect();
        order.extend(self.dirs.iter().filter(|(h, _)| !h.is_v2()));
        for (_, d) in order {
            if let Ok(p) = read_pids(&d.join("cgroup.procs")) {
                return self.with_pids_below(d, p);
            }
        }
        Vec::new()
    }

    /// `pids` with the pids of every cgroup below `dir`, walked by descriptors ([`tree`]).
    fn with_pids_below(&self, dir: &Path, mut pids: Vec<i32>) -> Vec<i32> {
        tree::for_each_below(dir, &mut |d| pids.extend(tree::pids_at(d)));
        pids
    }

    /// Pids in the cgroup (and below it) of any hierarchy (a process may sit in a v1 hierarchy
    /// only, e.g. one that was moved by hand), sorted and without duplicates.
    pub fn all_pids(&self) -> Vec<i32> {
        let mut v: Vec<i32> = Vec::new();
        for (_, d) in &self.dirs {
            let top = read_pids(&d.join("cgroup.procs")).unwrap_or_default();
            v.extend(self.with_pids_below(d, top));
        }
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Signal every process of the cgroup with `sig` (a snapshot of the pids; the guest's pid
    /// namespace keeps them from forking out of reach). See [`GuestCgroup::signal_number`].
    pub fn signal_all(&self, sig: nix::sys::signal::Signal) {
        self.signal_number(sig as i32);
    }

    /// Signal every process of the cgroup and below it with signal number `sig` (real-time
    /// ones too). A pid from the snapshot is signalled through a pidfd, and only if, once that
    /// pidfd is open, the process is still in this cgroup's tree: a process that exited in
    /// between and whose pid a host process took is never hit (pidfd_open(2),
    /// pidfd_send_signal(2)).
    pub fn signal_number(&self, sig: i32) {
        for pid in self.all_pids() {
            let Ok(fd) = crate::context::clone::pidfd_open(pid) else {
                continue;
            };
            if self.holds(pid) {
                let _ = crate::context::clone::pidfd_kill(std::os::fd::AsFd::as_fd(&fd), sig);
            }
        }
    }

    /// True if process `pid` (host pid) is in this cgroup or below it in some hierarchy,
    /// by /proc/PID/cgroup.
    fn holds(&self, pid: i32) -> bool {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            return false;
        };
        self.dirs.iter().any(|(h, d)| {
            let Ok(rel) = d.strip_prefix(h.mount()) else {
                return false;
            };
            let base = format!("/{}", rel.display());
            cgroup_path_of(&text, h).is_some_and(|p| nested_below(&p, &base).is_some())
        })
    }

    /// Kill every process of the cgroup and below it: `cgroup.kill` on v2 (Linux 5.14), and
    /// SIGKILL to every pid found in any hierarchy (v1-only members included).
    pub fn kill_all(&self) {
        self.thaw_v1_tree();
        if let Some(d) = self.unified_dir() {
            let k = d.join("cgroup.kill");
            if k.exists() {
                let _ = write_file(self.xid, &k, "1");
            }
        }
        self.signal_all(nix::sys::signal::Signal::SIGKILL);
    }

    /// Thaw the cgroup and every cgroup below it on a v1 freezer hierarchy: there a frozen
    /// task does not die of SIGKILL, thawing a parent does not thaw a child that was frozen
    /// on its own, and a container can freeze the cgroups below its own (its leaf, through a
    /// cgroup namespace of its own). On v2 a fatal signal ends a frozen task.
    pub(crate) fn thaw_v1_tree(&self) {
        for (h, d) in &self.dirs {
            if h.is_v2() || !h.has_controller("freezer") {
                continue;
            }
            let _ = fs::write(d.join("freezer.state"), "THAWED");
            tree::for_each_below(d, &mut |fd| {
                if let Ok(f) = nix::fcntl::openat(
                    fd,
                    "freezer.state",
                    nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                ) {
                    let _ = nix::unistd::write(&f, b"THAWED");
                }
            });
        }
    }

    /// Wait until the cgroup has no process, killing again every 100 ms, at most `timeout`.
    ///
    /// Errors: [`CgroupError::NotEmpty`].
    pub fn kill_and_wait(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if self.all_pids().is_empty() {
                return Ok(());
            }
            self.kill_all();
            if start.elapsed() > timeout {
                let path = self
                    .dirs
                    .first()
                    .map(|(_, d)| d.clone())
                    .unwrap_or_default();
                return Err(CgroupError::NotEmpty {
                    xid: self.xid,
                    path,
                    secs: timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Remove the cgroup from every hierarchy, with the cgroups a guest made below it
    /// (deepest first), after killing what is left in them. Missing directories are fine; a
    /// busy one is retried for up to 2 s.
    ///
    /// Errors: [`CgroupError::NotEmpty`] or [`CgroupError::Io`].
    pub fn remove(&self) -> Result<()> {
        if !self.exists() {
            return Ok(());
        }
        self.kill_and_wait(Duration::from_secs(5))?;
        for (_, d) in &self.dirs {
            // Deepest first, by descriptors: a guest may nest past PATH_MAX on cgroup v1.
            match tree::remove_tree(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(self.xid, "remove", d)(e)),
            }
        }
        Ok(())
    }

    /// Write `limits` into every hierarchy that has the controller for it: v2 `pids.max`,
    /// `memory.max/high/swap.max`, `cpu.max`, `cpu.weight`; v1 `pids.max`,
    /// `memory.limit_in_bytes/soft_limit_in_bytes/memsw.limit_in_bytes`,
    /// `cpu.cfs_quota_us/cfs_period_us`, `cpu.shares`. Units are converted from the user's
    /// (bytes, percent of a CPU, weight 1-10000). Unset limits are written as "no limit", so
    /// the call also lifts limits removed from the config.
    ///
    /// Errors: [`CgroupError::Unsupported`] when a set limit has no controller anywhere;
    /// [`CgroupError::Io`] when a file cannot be written (a value the kernel refuses).
    pub fn apply_limits(&self, l: &crate::config::LimitsConfig) -> Result<()> {
        use crate::config::{parse_cpu, parse_size};
        let size = |v: &Option<String>| v.as_deref().and_then(|s| parse_size(s).ok());
        let (mem, soft, swap) = (size(&l.memory), size(&l.memory_soft), size(&l.swap));
        let cpu = l.cpu.as_deref().and_then(|c| parse_cpu(c).ok());
        let num = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_else(|| "max".into());
        let mut done: Vec<&'static str> = Vec::new();
        for (h, d) in &self.dirs {
            let mut set = |file: &str, value: String, key: &'static str| -> Result<()> {
                // A v1 hierarchy has only its own controllers' files: the others are not
                // looked for (a failed open each, in every hierarchy, on every start).
                let controller = file.split('.').next().unwrap_or(file);
                if !h.is_v2() && !h.has_controller(controller) {
                    return Ok(());
                }
                let p = d.join(file);
                let Ok(now) = fs::read_to_string(&p) else {
                    return Ok(()); // no such file: not this hierarchy's
                };
                // Only what changes is written: some writes (CFS bandwidth) walk every cgroup
                // of the host, so a fresh guest's defaults are left as the kernel made them.
                if now.trim() != value {
                    write_file(self.xid, &p, &value)?;
                }
                done.push(key);
                Ok(())
            };
            if h.is_v2() {
                set("pids.max", num(l.nproc), "nproc")?;
                set("memory.max", num(mem), "memory")?;
                set("memory.high", num(soft), "memory_soft")?;
                set("memory.swap.max", num(swap), "swap")?;
                set(
                    "cpu.max",
                    cpu.map(|(q, p)| format!("{q} {p}"))
                        .unwrap_or_else(|| "max 100000".into()),
                    "cpu",
                )?;
                set(
                    "cpu.weight",
                    l.cpu_weight.unwrap_or(100).to_string(),
                    "cpu_weight",
                )?;
                if let Some(c) = &l.cpuset {
                    set("cpuset.cpus", c.clone(), "cpuset")?;
                }
                set(
                    "io.weight",
                    format!("default {}", l.io_weight.unwrap_or(100)),
                    "io_weight",
                )?;
            } else {
                set("pids.max", num(l.nproc), "nproc")?;
                // v1 wants -1 for "no limit"; memsw must stay >= the memory limit, so it is
                // lifted first and set last.
                let v1 = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_else(|| "-1".into());
                let memsw_file = d.join("memory.memsw.limit_in_bytes");
                let old_memsw = h
                    .has_controller("memory")
                    .then(|| fs::read_to_string(&memsw_file).ok())
                    .flatten();
                let memsw = match (mem, swap) {
                    (Some(m), Some(s)) => Some(m.saturating_add(s)),
                    _ => None,
                };
                let seq = (|| -> Result<()> {
                    set("memory.memsw.limit_in_bytes", "-1".into(), "swap_reset")?;
                    set("memory.limit_in_bytes", v1(mem), "memory")?;
                    set("memory.soft_limit_in_bytes", v1(soft), "memory_soft")?;
                    set("memory.memsw.limit_in_bytes", v1(memsw), "swap")
                })();
                if let Err(e) = seq {
                    // The swap cap lifted for the change comes back: a refused memory limit
                    // must not leave the guest without one.
                    if let Some(old) = &old_memsw {
                        let _ = fs::write(&memsw_file, old.trim());
                    }
                    return Err(e);
                }
                set(
                    "cpu.cfs_period_us",
                    cpu.map(|c| c.1).unwrap_or(100_000).to_string(),
                    "cpu_period",
                )?;
                set(
                    "cpu.cfs_quota_us",
                    cpu.map(|c| c.0.to_string()).unwrap_or_else(|| "-1".into()),
                    "cpu",
                )?;
                set(
                    "cpu.shares",
                    (u64::from(l.cpu_weight.unwrap_or(100)) * 1024 / 100)
                        .max(2)
                        .to_string(),
                    "cpu_weight",
                )?;
                // An unset cpuset keeps the parent's CPUs, copied when the cgroup was made.
                if let Some(c) = &l.cpuset {
                    set("cpuset.cpus", c.clone(), "cpuset")?;
                }
                // v1 weights: BFQ's blkio.bfq.weight is 1-1000 with 100 the default (our scale up to
                // 1000), CFQ's blkio.weight is 10-1000 with 500 the default.
                let w = u64::from(l.io_weight.unwrap_or(100));
                set(
                    "blkio.bfq.weight",
                    w.clamp(1, 1000).to_string(),
                    "io_weight",
                )?;
                set(
                    "blkio.weight",
                    (w * 5).clamp(10, 1000).to_string(),
                    "io_weight",
                )?;
            }
        }
        let want: [(&'static str, bool, &'static str); 8] = [
            ("cpuset", l.cpuset.is_some(), "cpuset.cpus"),
            (
                "io_weight",
                l.io_weight.is_some(),
                "io.weight, blkio.weight or blkio.bfq.weight (the BFQ or CFQ I/O scheduler)",
            ),
            ("nproc", l.nproc.is_some(), "pids.max"),
            (
                "memory",
                mem.is_some(),
                "memory.max or memory.limit_in_bytes",
            ),
            (
                "memory_soft",
                soft.is_some(),
                "memory.high or memory.soft_limit_in_bytes",
            ),
            (
                "swap",
                swap.is_some(),
                "memory.swap.max or memory.memsw.limit_in_bytes (swap accounting)",
            ),
            ("cpu", cpu.is_some(), "cpu.max or cpu.cfs_quota_us"),
            (
                "cpu_weight",
                l.cpu_weight.is_some(),
                "cpu.weight or cpu.shares",
            ),
        ];
        for (key, set, needs) in want {
            if set && !done.contains(&key) {
                return Err(CgroupError::Unsupported {
                    xid: self.xid,
                    key,
                    needs,
                });
            }
        }
        Ok(())
    }

    /// Set v1 `memory.swappiness` (0..100, the cgroup's vm.swappiness;
    /// Documentation/admin-guide/cgroup-v1/memory.rst 5.3). cgroup v2 has no such file.
    ///
    /// Errors: [`CgroupError::Unsupported`] without a v1 memory hierarchy;
    /// [`CgroupError::Io`] when the kernel refuses the value.
    pub fn set_swappiness(&self, value: u64) -> Result<()> {
        self.write_where_found(
            "linux.resources.memory.swappiness",
            "memory.swappiness (cgroup v1; v2 has no per-cgroup swappiness)",
            &|h| (!h.is_v2()).then_some(("memory.swappiness", value)),
        )
    }

    /// Write, in each hierarchy, the file and value `pick` gives for it (None: skip), when
    /// the file exists and holds another value.
    ///
    /// Errors: [`CgroupError::Unsupported`] (`key`, `needs`) when no hierarchy had the file;
    /// [`CgroupError::Io`] when the kernel refuses a value.
    fn write_where_found(
        &self,
        key: &'static str,
        needs: &'static str,
        pick: &dyn Fn(&Hierarchy) -> Option<(&'static str, u64)>,
    ) -> Result<()> {
        let mut done = false;
        for (h, d) in &self.dirs {
            let Some((file, value)) = pick(h) else {
                continue;
            };
            let p = d.join(file);
            let Ok(now) = fs::read_to_string(&p) else {
                continue;
            };
            if now.trim() != value.to_string() {
                write_file(self.xid, &p, &value.to_string())?;
            }
            done = true;
        }
        if done {
            Ok(())
        } else {
            Err(CgroupError::Unsupported {
                xid: self.xid,
                key,
                needs,
            })
        }
    }

    /// Set the CPU share of an OCI container: v1 `cpu.shares` exactly as given (2..262144), v2
    /// `cpu.weight` by [`shares_to_weight`].
    ///
    /// Errors: [`CgroupError::Unsupported`] when no hierarchy has either file;
    /// [`CgroupError::Io`] when the kernel refuses the value.
    pub fn set_cpu_shares(&self, shares: u64) -> Result<()> {
        let shares = shares.clamp(2, 262_144);
        self.write_where_found(
            "linux.resources.cpu.shares",
            "cpu.weight or cpu.shares",
            &|h| {
                Some(if h.is_v2() {
                    ("cpu.weight", shares_to_weight(shares))
                } else {
                    ("cpu.shares", shares)
                })
            },
        )
    }

    /// Write the bandwidth and IOPS caps of `l` (`io_read_bps`, `io_write_bps`, `io_read_iops`,
    /// `io_write_iops`) for the block device `dev` (major, minor): v2 `io.max`, v1
    /// `blkio.throttle.{read,write}_{bps,iops}_device` (Documentation/admin-guide/cgroup-v2.rst
    /// "IO Interface Files", cgroup-v1/blkio-controller.rst). Unset caps are written as no
    /// limit, so removed ones are lifted.
    ///
    /// Errors: [`CgroupError::Unsupported`] when a cap is set but `dev` is None or no hierarchy
    /// has the files; [`CgroupError::Io`] when the kernel refuses a value.
    pub fn apply_io_limits(
        &self,
        l: &crate::config::LimitsConfig,
        dev: Option<(u32, u32)>,
    ) -> Result<()> {
        use crate::config::parse_size;
        let bps = |v: &Option<String>| v.as_deref().and_then(|s| parse_size(s).ok());
        let (rb, wb) = (bps(&l.io_read_bps), bps(&l.io_write_bps));
        let (ri, wi) = (l.io_read_iops, l.io_write_iops);
        let any = rb.is_some() || wb.is_some() || ri.is_some() || wi.is_some();
        let Some((major, minor)) = dev else {
            if any {
                return Err(CgroupError::Unsupported {
                    xid: self.xid,
                    key: "io_read_bps/io_write_bps/io_read_iops/io_write_iops",
                    needs: "a block device under the guest's root (none was found)",
                });
            }
            return Ok(());
        };
        // Whether a rules file (io.max, blkio.throttle.*) has a line for this disk.
        let has_rule = |text: &str| {
            text.lines()
                .any(|line| line.starts_with(&format!("{major}:{minor} ")))
        };
        let mut done = false;
        for (h, d) in &self.dirs {
            if h.is_v2() {
                let p = d.join("io.max");
                let Ok(now) = fs::read_to_string(&p) else {
                    continue;
                };
                done = true;
                let had = has_rule(&now);
                if any || had {
                    let v = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or("max".into());
                    write_file(
                        self.xid,
                        &p,
                        &format!(
                            "{major}:{minor} rbps={} wbps={} riops={} wiops={}",
                            v(rb),
                            v(wb),
                            v(ri),
                            v(wi)
                        ),
                    )?;
                }
            } else {
                for (file, val) in [
                    ("blkio.throttle.read_bps_device", rb),
                    ("blkio.throttle.write_bps_device", wb),
                    ("blkio.throttle.read_iops_device", ri),
                    ("blkio.throttle.write_iops_device", wi),
                ] {
                    let p = d.join(file);
                    let Ok(now) = fs::read_to_string(&p) else {
                        continue;
                    };
                    done = true;
                    let had = has_rule(&now);
                    // 0 removes a v1 throttle rule.
                    if val.is_some() || had {
                        write_file(
                            self.xid,
                            &p,
                            &format!("{major}:{minor} {}", val.unwrap_or(0)),
                        )?;
                    }
                }
            }
        }
        if any && !done {
            return Err(CgroupError::Unsupported {
                xid: self.xid,
                key: "io_read_bps/io_write_bps/io_read_iops/io_write_iops",
                needs: "io.max or blkio.throttle.*_device",
            });
        }
        Ok(())
    }

    /// Freeze or thaw every process: v2 `cgroup.freeze` (any v2 cgroup has it), else the v1
    /// freezer's `freezer.state`; waits (at most 5 s) until the kernel reports the new state.
    ///
    /// Errors: [`CgroupError::Unsupported`] without a freezer; [`CgroupError::Io`].
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        for (h, d) in &self.dirs {
            let (file, value, check, want) = if h.is_v2() {
                (
                    "cgroup.freeze",
                    if frozen { "1" } else { "0" },
                    "cgroup.events",
                    if frozen { "frozen 1" } else { "frozen 0" },
                )
            } else if h.has_controller("freezer") {
                (
                    "freezer.state",
                    if frozen { "FROZEN" } else { "THAWED" },
                    "freezer.state",
                    if frozen { "FROZEN" } else { "THAWED" },
                )
            } else {
                continue;
            };
            let p = d.join(file);
            if !p.exists() {
                continue;
            }
            write_file(self.xid, &p, value)?;
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if fs::read_to_string(d.join(check))
                    .map(|s| s.contains(want))
                    .unwrap_or(false)
                {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            return Err(CgroupError::Timeout {
                xid: self.xid,
                what: if frozen { "freezing" } else { "thawing" },
                path: p,
            });
        }
        Err(CgroupError::Unsupported {
            xid: self.xid,
            key: "freeze",
            needs: "cgroup.freeze or freezer.state",
        })
    }

    /// True if the guest is frozen (v2 `cgroup.events`, or v1 `freezer.state`).
    pub fn is_frozen(&self) -> bool {
        // The processes' leaf counts: a container may freeze its own (v1, v2 without
        // nsdelegate), and its state is then paused whatever its parent says.
        if self.leaf && self.leaf().is_some_and(|l| l.is_frozen()) {
            return true;
        }
        self.dirs.iter().any(|(h, d)| {
            if h.is_v2() {
                fs::read_to_string(d.join("cgroup.events"))
                    .map(|s| s.contains("frozen 1"))
                    .unwrap_or(false)
            } else {
                fs::read_to_string(d.join("freezer.state"))
                    .map(|s| s.trim() == "FROZEN")
                    .unwrap_or(false)
            }
        })
    }

    /// Memory the cgroup uses now, bytes: v2 `memory.current`, else v1
    /// `memory.usage_in_bytes` (page cache included, as the limit counts it); None without a
    /// memory controller.
    pub fn memory_usage(&self) -> Option<u64> {
        self.dirs.iter().find_map(|(h, d)| {
            let f = if h.is_v2() {
                "memory.current"
            } else {
                "memory.usage_in_bytes"
            };
            fs::read_to_string(d.join(f))
                .ok()
                .and_then(|t| t.trim().parse().ok())
        })
    }

    /// CPU time used by the cgroup: v2 `cpu.stat` (always present), else v1 `cpuacct.stat`.
    pub fn cpu_times(&self) -> CpuTimes {
        for (h, d) in &self.dirs {
            if h.is_v2() {
                if let Ok(s) = fs::read_to_string(d.join("cpu.stat")) {
                    return parse_cpu_stat_v2(&s);
                }
            } else if h.has_controller("cpuacct") {
                if let Ok(s) = fs::read_to_string(d.join("cpuacct.stat")) {
                    return parse_cpuacct_stat(&s);
                }
            }
        }
        CpuTimes::default()
    }
}

/// True if the directory `d` has a subdirectory (a child cgroup).
fn has_subdir(d: &Path) -> bool {
    fs::read_dir(d)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
}

/// The cgroup path of hierarchy `h` in the text of a `/proc/PID/cgroup` file: the `0::` line
/// for v2, the line naming exactly `h`'s controllers for v1.
/// True if the cgroup2 file system at `mount` is mounted with `nsdelegate` (the kernel then
/// refuses writes from inside a cgroup namespace to its root's files), by /proc/self/mounts.
fn v2_delegates_namespaces(mount: &Path) -> bool {
    let text = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let want = mount.to_string_lossy();
    text.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3
            && f[2] == "cgroup2"
            && f[1] == want
            && f[3].split(',').any(|o| o == "nsdelegate")
    })
}

/// cgroup v2 `cpu.weight` (1..10000) for v1 `cpu.shares` (2..262144), by the quadratic fit
/// in log2 that runc (opencontainers/cgroups) and crun use today: the ends map to the ends and
/// the default 1024 to the default 100 (the older linear formula gave 39 for 1024, less than a
/// container's uncontained siblings).
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    let l = (shares as f64).log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    (10f64.powf(exponent).ceil() as u64).clamp(1, 10_000)
}

/// True when the cgroup directory `d` of hierarchy `h` is frozen: v1 `freezer.state` FROZEN
/// (or FREEZING), v2 `cgroup.events` frozen 1.
fn dir_frozen(h: &Hierarchy, d: &Path) -> bool {
    if h.is_v2() {
        fs::read_to_string(d.join("cgroup.events")).is_ok_and(|s| s.contains("frozen 1"))
    } else {
        fs::read_to_string(d.join("freezer.state"))
            .is_ok_and(|s| matches!(s.trim(), "FROZEN" | "FREEZING"))
    }
}

fn cgroup_path_of(text: &str, h: &Hierarchy) -> Option<String> {
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (_, ctrl, path) = (it.next()?, it.next()?, it.next()?);
        let hit = match h {
            Hierarchy::V2 { .. } => ctrl.is_empty(),
            Hierarchy::V1 { controllers, .. } => {
                !ctrl.is_empty() && {
                    let mut a: Vec<&str> = ctrl.split(',').collect();
                    let mut b: Vec<&str> = controllers.iter().map(String::as_str).collect();
                    a.sort_unstable();
                    b.sort_unstable();
                    a == b
                }
            }
        };
        if hit {
            return Some(path.to_string());
        }
    }
    None
}

/// `path` relative to `base` when it is `base` or below it and every component is a plain
/// name (no `.`, `..` or empty part); None otherwise. `""` for `base` itself.
fn nested_below(path: &str, base: &str) -> Option<String> {
    let rest = path.strip_prefix(base)?;
    if rest.is_empty() {
        return Some(String::new());
    }
    let rest = rest.strip_prefix('/')?;
    rest.split('/')
        .all(|c| !c.is_empty() && c != "." && c != "..")
        .then(|| rest.to_string())
}

/// Open `rel` below `dir` for writing with openat2(2) `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
/// RESOLVE_NO_MAGICLINKS`.
fn open_beneath(dir: &Path, rel: &str) -> std::io::Result<fs::File> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let d = fs::File::open(dir)?;
    let how = OpenHow::new()
        .flags(OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    let fd = openat2(&d, rel, how)?;
    Ok(fs::File::from(fd))
}

/// Parse v2 `cpu.stat` (`user_usec N`, `system_usec N`).
pub fn parse_cpu_stat_v2(text: &str) -> CpuTimes {
    let mut t = CpuTimes::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        match (it.next(), it.next().and_then(|v| v.parse().ok())) {
            (Some("user_usec"), Some(v)) => t.user_usec = v,
            (Some("system_usec"), Some(v)) => t.sys_usec = v,
            _ => {}
        }
    }
    t
}

/// Parse v1 `cpuacct.stat` (`user N`, `system N` in USER_HZ = 100 ticks per second).
pub fn parse_cpuacct_stat(text: &str) -> CpuTimes {
    let mut t = CpuTimes::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        match (it.next(), it.next().and_then(|v| v.parse::<u64>().ok())) {
            (Some("user"), Some(v)) => t.user_usec = v * 10_000,
            (Some("system"), Some(v)) => t.sys_usec = v * 10_000,
            _ => {}
        }
    }
    t
}

/// Context id of process `pid` from `/proc/PID/cgroup` (`PROC` is a parameter for tests): the
/// number after `/vservers/` in any hierarchy, None for host processes.
pub fn xid_of_pid(proc_root: &Path, pid: i32) -> Option<u32> {
    let text = fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    xid_from_cgroup_file(&text)
}

/// Parse the context id out of the text of a `/proc/PID/cgroup` file: a path below
/// `/vservers/<xid>`, or below `/vservers.slice/vserver-<xid>.scope/payload` (a guest's
/// scope on a systemd host; its `supervisor` holds host processes, the monitor).
pub fn xid_from_cgroup_file(text: &str) -> Option<u32> {
    let needle = format!("/{CGROUP_BASE}/");
    let slice = format!("/{}/", systemd::SLICE);
    for line in text.lines() {
        let path = line.splitn(3, ':').nth(2)?;
        if let Some(rest) = path.strip_prefix(&needle) {
            let id = rest.split('/').next()?;
            if let Ok(x) = id.parse() {
                return Some(x);
            }
        }
        if let Some(rest) = path.strip_prefix(&slice) {
            let mut parts = rest.split('/');
            let x = parts.next().and_then(systemd::xid_of_scope);
            if x.is_some() && parts.next() == Some(systemd::PAYLOAD) {
                return x;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
