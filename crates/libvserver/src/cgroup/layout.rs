//! Discovery of the host's cgroup hierarchies from a mount table (proc(5), mountinfo).

use super::{io, write_file, CgroupError, CGROUP_BASE};
use std::fs;
use std::path::{Path, PathBuf};

/// The v2 controllers a guest's limits use.
const V2_CONTROLLERS: &[&str] = &["cpu", "cpuset", "memory", "pids", "io"];

/// Make the v2 controllers a guest needs available to the children of `base` (our
/// `vservers/` directory): enabled in `cgroup.subtree_control` of its parent (the hierarchy's
/// root, where a host without systemd enables none) and of `base` itself, where available and
/// not enabled yet. Best effort: a limit whose controller stays missing is refused later, by
/// name, when a guest needs it (cgroup-v2.rst, "Enabling and Disabling").
pub(super) fn enable_v2_controllers(xid: u32, base: &Path) {
    let dirs = [base.parent().unwrap_or(base), base];
    for d in dirs {
        let avail = fs::read_to_string(d.join("cgroup.controllers")).unwrap_or_default();
        let have = fs::read_to_string(d.join("cgroup.subtree_control")).unwrap_or_default();
        let want: Vec<String> = avail
            .split_whitespace()
            .filter(|c| V2_CONTROLLERS.contains(c) && !have.split_whitespace().any(|h| h == *c))
            .map(|c| format!("+{c}"))
            .collect();
        if !want.is_empty() {
            // One at a time: a controller that cannot be enabled (busy in a threaded subtree,
            // a delegated parent) does not keep the others off.
            for w in want {
                let _ = write_file(xid, &d.join("cgroup.subtree_control"), &w);
            }
        }
    }
}

/// Enable in `dir`'s `cgroup.subtree_control` every controller of [`V2_CONTROLLERS`] that its
/// `cgroup.controllers` offers (a context's directory passing them down to the delegated
/// cgroup below it). Best effort, one at a time, as [`enable_v2_controllers`].
pub(super) fn enable_v2_controllers_of(xid: u32, dir: &Path) {
    let avail = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let have = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    for c in avail
        .split_whitespace()
        .filter(|c| V2_CONTROLLERS.contains(c) && !have.split_whitespace().any(|h| h == *c))
    {
        let _ = write_file(xid, &dir.join("cgroup.subtree_control"), &format!("+{c}"));
    }
}

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v2 (unified); its controllers come from `cgroup.controllers`.
    V2 {
        /// Mount point.
        mount: PathBuf,
    },
    /// A cgroup v1 hierarchy with its controllers (`cpu`, `memory`, `name=systemd`, ...).
    V1 {
        /// Mount point.
        mount: PathBuf,
        /// Controllers bound to it.
        controllers: Vec<String>,
    },
}

impl Hierarchy {
    /// Mount point.
    pub fn mount(&self) -> &Path {
        match self {
            Hierarchy::V2 { mount } | Hierarchy::V1 { mount, .. } => mount,
        }
    }

    /// True for the unified hierarchy.
    pub fn is_v2(&self) -> bool {
        matches!(self, Hierarchy::V2 { .. })
    }

    /// True if the v1 hierarchy carries `c`.
    pub fn has_controller(&self, c: &str) -> bool {
        match self {
            Hierarchy::V2 { .. } => false,
            Hierarchy::V1 { controllers, .. } => controllers.iter().any(|x| x == c),
        }
    }

    /// Initialise a directory just created: v2 enables the available controllers for the
    /// children of `vservers/`; v1 cpuset copies cpus/mems from the parent (a new cpuset is
    /// empty and takes no process); v1 devices allows only the nodes a guest's /dev holds, and so
    /// does a device program on the v2 directory ([`super::devices`]), unless `leaf`: a process
    /// leaf below a cgroup with its device rules keeps what it copied from its parent when it
    /// was made (a new v1 devices cgroup inherits its parent's default and exceptions,
    /// cgroup-v1/devices.rst), so a container's wider rules are not narrowed again.
    pub(super) fn init_new_dir(
        &self,
        xid: u32,
        dir: &Path,
        is_base: bool,
        leaf: bool,
    ) -> Result<(), CgroupError> {
        match self {
            Hierarchy::V2 { .. } => {
                if is_base {
                    enable_v2_controllers(xid, dir);
                } else {
                    // v2 has no devices controller: the guest's device allowlist is a BPF
                    // program on its directory (on hybrid hosts on top of the v1 rules).
                    super::devices::attach_device_filter(dir).map_err(|e| {
                        io(xid, "attach the device filter to", dir)(std::io::Error::other(e))
                    })?;
                }
            }
            Hierarchy::V1 { controllers, .. } => {
                if controllers.iter().any(|c| c == "cpuset") {
                    // A v1 cpuset starts empty unless its parent has clone_children, and
                    // every write of cpuset.cpus checks all siblings (O(guests) per start):
                    // our base directory lets its children inherit instead.
                    if is_base {
                        write_file(xid, &dir.join("cgroup.clone_children"), "1")?;
                    }
                    let parent = dir.parent().unwrap_or(dir);
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        let have = fs::read_to_string(dir.join(f)).unwrap_or_default();
                        if !have.trim().is_empty() {
                            continue;
                        }
                        let v = fs::read_to_string(parent.join(f)).map_err(io(
                            xid,
                            "read",
                            &parent.join(f),
                        ))?;
                        write_file(xid, &dir.join(f), v.trim())?;
                    }
                }
                if !is_base && !leaf && controllers.iter().any(|c| c == "devices") {
                    write_file(xid, &dir.join("devices.deny"), "a")?;
                    for (major, minor) in super::devices::GUEST_CHAR_DEVICES {
                        let minor = minor.map_or_else(|| String::from("*"), |m| m.to_string());
                        write_file(
                            xid,
                            &dir.join("devices.allow"),
                            &format!("c {major}:{minor} rwm"),
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The cgroup hierarchies of a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLayout {
    /// v2 first (if mounted), then v1 hierarchies in mount order, each mounted once.
    pub hierarchies: Vec<Hierarchy>,
    /// systemd owns the tree (PID 1 is systemd, v2 only): guests live in scopes it delegates
    /// (see [`super::systemd`]).
    pub systemd_scopes: bool,
}

impl CgroupLayout {
    /// Discover the layout from `/proc/self/mountinfo`.
    ///
    /// Errors: the table cannot be read, or no hierarchy is mounted.
    pub fn detect() -> Result<CgroupLayout, CgroupError> {
        let mut l = Self::from_mountinfo(Path::new("/proc/self/mountinfo"))?;
        l.systemd_scopes = l.mode() == "v2" && super::systemd::booted();
        Ok(l)
    }

    /// [`CgroupLayout::detect`] once per process: the cgroup mounts do not change while a
    /// command runs, and one start used to parse the mount table seven times.
    /// Errors: as [`CgroupLayout::detect`] (not cached, so a later call tries again).
    pub fn detect_cached() -> Result<CgroupLayout, CgroupError> {
        static LAYOUT: std::sync::OnceLock<CgroupLayout> = std::sync::OnceLock::new();
        if let Some(l) = LAYOUT.get() {
            return Ok(l.clone());
        }
        let l = Self::detect()?;
        Ok(LAYOUT.get_or_init(|| l).clone())
    }

    /// Discover the layout from the mount table at `path`.
    pub fn from_mountinfo(path: &Path) -> Result<CgroupLayout, CgroupError> {
        let text = fs::read_to_string(path).map_err(|source| CgroupError::MountTable {
            path: path.to_path_buf(),
            source,
        })?;
        let hierarchies = parse_mountinfo(&text);
        if hierarchies.is_empty() {
            return Err(CgroupError::NoHierarchy(path.to_path_buf()));
        }
        Ok(CgroupLayout {
            hierarchies,
            systemd_scopes: false,
        })
    }

    /// "v2", "v1" or "hybrid", for messages and `status --json`.
    pub fn mode(&self) -> &'static str {
        let v2 = self.hierarchies.iter().any(|h| h.is_v2());
        let v1 = self.hierarchies.iter().any(|h| !h.is_v2());
        match (v2, v1) {
            (true, false) => "v2",
            (false, true) => "v1",
            _ => "hybrid",
        }
    }

    /// Directories under `vservers/` of the first hierarchy that lists guests: context ids of
    /// every guest cgroup on the host.
    pub fn guest_xids(&self) -> Vec<u32> {
        let Some(h) = self.hierarchies.first() else {
            return Vec::new();
        };
        let mut v: Vec<u32> = fs::read_dir(h.mount().join(CGROUP_BASE))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
            .collect();
        // The scopes that hold a guest (a systemd host's), whatever this command sees of
        // the system bus.
        v.extend(
            super::systemd::scopes(h.mount())
                .into_iter()
                .filter(|(_, d)| d.join(super::systemd::PAYLOAD).is_dir())
                .map(|(x, _)| x),
        );
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Unescape mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse mountinfo text into the cgroup hierarchies mounted at their root (`/`), each once.
pub fn parse_mountinfo(text: &str) -> Vec<Hierarchy> {
    let mut v2 = None;
    let mut v1: Vec<Hierarchy> = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.len() < sep + 4 || fields.len() < 5 {
            continue;
        }
        let (root, mount) = (fields[3], unescape(fields[4]));
        let (fstype, superopts) = (fields[sep + 1], fields[sep + 3]);
        if root != "/" {
            continue;
        }
        match fstype {
            "cgroup2" if v2.is_none() => {
                v2 = Some(Hierarchy::V2 {
                    mount: PathBuf::from(mount),
                })
            }
            "cgroup" => {
                let controllers: Vec<String> = superopts
                    .split(',')
                    .filter(|o| {
                        !matches!(
                            *o,
                            "rw" | "ro"
                                | "nosuid"
                                | "nodev"
                                | "noexec"
                                | "relatime"
                                | "clone_children"
                                | "noprefix"
                                | "xattr"
                                | "cpuset_v2_mode"
                        ) && !o.starts_with("release_agent=")
                    })
                    .map(String::from)
                    .collect();
                if controllers.is_empty() {
                    continue;
                }
                let dup = v1.iter().any(
                    |h| matches!(h, Hierarchy::V1 { controllers: c, .. } if *c == controllers),
                );
                if !dup {
                    v1.push(Hierarchy::V1 {
                        mount: PathBuf::from(mount),
                        controllers,
                    });
                }
            }
            _ => {}
        }
    }
    v2.into_iter().chain(v1).collect()
}
