//! The container lifecycle of the runtime-spec (runtime.md) over the engine: `create` builds the
//! one process description ([`crate::context::ContextSpec`]) from `config.json`, clones the
//! init into its namespaces and cgroup, waits until it is set up and held at its exec FIFO,
//! writes the pid file and the state, and returns (the init is reparented to the caller's
//! subreaper, containerd's shim); `start` opens the FIFO; `state`, `kill`, `delete`, `ps`,
//! `pause`, `resume` and `update` act on the recorded init and cgroup.

use super::check::{creates, NAMESPACE_TYPES};
use super::spec::{Resources, Spec, SpecError};
use super::state::{rfc3339_now, Container, PublicState, State, StateError, Status};
use crate::cgroup::{CgroupLayout, GuestCgroup};
use crate::context::{self, ContextSpec, OciExtras, Payload};
use nix::sched::CloneFlags;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Errors of the lifecycle commands. Texts keep runc's words that containerd matches.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// config.json is wrong or asks for something unsupported.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The state store.
    #[error(transparent)]
    State(#[from] StateError),
    /// The container is not running (or created) where that is needed.
    /// Worded as runc words it: containerd's shim matches `container not running`.
    #[error("container not running ({0})")]
    NotRunning(String),
    /// `delete` of a running container without `--force`.
    #[error("cannot delete container {0} that is not stopped: {1} (use --force)")]
    StillRunning(String, &'static str),
    /// `start` of a container that is not `created`.
    #[error("cannot start container {0}: it is {1}, not created")]
    NotCreated(String, &'static str),
    /// Anything else, with what was attempted (no container named when `id` is empty).
    #[error("{}{message}", if id.is_empty() { String::new() } else { format!("container {id}: ") })]
    Failed {
        /// Container id.
        id: String,
        /// What failed.
        message: String,
    },
}

fn failed(id: &str, message: impl Into<String>) -> OciError {
    OciError::Failed {
        id: id.to_string(),
        message: message.into(),
    }
}

/// Options of `create` (and `run`).
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// State root (`--root`).
    pub root: PathBuf,
    /// Container id.
    pub id: String,
    /// Bundle directory (holds config.json).
    pub bundle: PathBuf,
    /// Where to write the init's pid (`--pid-file`), before returning.
    pub pid_file: Option<PathBuf>,
    /// Unix socket to send the pty master to (`--console-socket`), for `process.terminal`.
    pub console_socket: Option<PathBuf>,
    /// Extra fds 3..3+N passed to the program (`--preserve-fds`).
    pub preserve_fds: u32,
}

/// The cgroup of a container: `linux.cgroupsPath`, else `vserver-oci/ID`.
fn cgroup_rel(spec: &Spec, id: &str) -> Result<String, OciError> {
    let p = spec
        .linux
        .as_ref()
        .and_then(|l| l.cgroups_path.clone())
        .unwrap_or_else(|| format!("vserver-oci/{id}"));
    if p.contains(':') {
        return Err(OciError::Spec(SpecError::Unsupported {
            path: "config.json".into(),
            field: "linux.cgroupsPath".into(),
            message: format!("'{p}' is a systemd slice path; vserver-oci drives cgroupfs itself"),
        }));
    }
    // One spelling per cgroup (`a//b/` is `a/b`): the checks against other containers'
    // cgroups compare these strings.
    let rel = p
        .split('/')
        .filter(|c| !c.is_empty())
        .collect::<Vec<_>>()
        .join("/");
    for base in [crate::cgroup::CGROUP_BASE, crate::cgroup::systemd::SLICE] {
        if rel == base || rel.starts_with(&format!("{base}/")) {
            return Err(OciError::Spec(SpecError::Unsupported {
                path: "config.json".into(),
                field: "linux.cgroupsPath".into(),
                message: format!("'{p}' lies within {base}, the virtual servers' cgroups"),
            }));
        }
    }
    if rel.is_empty() || rel.split('/').any(|c| c == ".." || c == ".") {
        return Err(OciError::Spec(SpecError::Unsupported {
            path: "config.json".into(),
            field: "linux.cgroupsPath".into(),
            message: format!("'{p}' is not a cgroup path below the hierarchy roots"),
        }));
    }
    Ok(rel)
}

/// Open a namespace file given by path (`/proc/PID/ns/net`, a bind of one) without blocking
/// (a FIFO there must not hang `create`), refused unless it is a namespace (nsfs).
fn open_namespace(p: &str) -> Result<OwnedFd, String> {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    let fd = nix::fcntl::open(
        p,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("open: {e}"))?;
    let st = nix::sys::statfs::fstatfs(&fd).map_err(|e| format!("statfs: {e}"))?;
    if st.filesystem_type().0 as i64 != NSFS_MAGIC {
        return Err(String::from("not a namespace file"));
    }
    Ok(fd)
}

fn layout(id: &str) -> Result<CgroupLayout, OciError> {
    CgroupLayout::detect_cached().map_err(|e| failed(id, e.to_string()))
}

/// A container's cgroup: on cgroup v1 (and v2 without `nsdelegate`) its processes live in a
/// leaf below it, out of reach of the limits (see [`GuestCgroup::with_process_leaf`]).
pub(crate) fn cgroup_of(id: &str, rel: &str) -> Result<GuestCgroup, OciError> {
    Ok(GuestCgroup::at_path(&layout(id)?, 0, rel).with_process_leaf())
}

/// Convert `linux.resources` into the engine's limits and write them.
///
/// Errors: a value the kernel refuses, a controller the host lacks.
///
/// `extra_devices` are the `linux.devices` of the config, allowed after the rules (as the
/// nodes the engine makes in /dev are).
pub fn apply_resources(
    id: &str,
    cg: &GuestCgroup,
    r: &Resources,
    extra_devices: &[super::spec::Device],
) -> Result<(), OciError> {
    // The processes' leaf (v1, v2 without nsdelegate) carries the same limits (they see them
    // in their own cgroup),
    // bounded by the container's cgroup above it. A narrower cpuset or limit must reach the
    // leaf before its parent and a wider one after it: the leaf is written before (as far as
    // it goes) and after.
    let leaf = cg.leaf();
    let fresh = leaf.as_ref().is_some_and(|l| !l.exists());
    if let Some(l) = leaf.as_ref().filter(|_| !fresh) {
        let _ = apply_to(id, l, r, extra_devices, false, true);
    }
    apply_to(id, cg, r, extra_devices, true, true)?;
    if let Some(l) = &leaf {
        cg.create_leaf().map_err(|e| failed(id, e.to_string()))?;
        // A v1 devices cgroup made now copies its parent's default and rules (devices.rst:
        // a new cgroup inherits its parent's), written just above; v2 leaves are governed by
        // the parent's program. So a fresh leaf's device rules are not written again.
        apply_to(id, l, r, extra_devices, false, !fresh)?;
    }
    Ok(())
}

/// [`apply_resources`] on one cgroup; `unified` writes `linux.resources.unified` too,
/// `devices` the device rules.
fn apply_to(
    id: &str,
    cg: &GuestCgroup,
    r: &Resources,
    extra_devices: &[super::spec::Device],
    unified: bool,
    devices: bool,
) -> Result<(), OciError> {
    let mut l = crate::config::LimitsConfig::default();
    if let Some(m) = &r.memory {
        let pos = |v: Option<i64>| v.filter(|n| *n > 0).map(|n| n.to_string());
        l.memory = pos(m.limit);
        l.memory_soft = pos(m.reservation);
        // OCI's swap is memory + swap; the engine's is the swap alone.
        if let (Some(total), Some(mem)) = (m.swap.filter(|n| *n > 0), m.limit.filter(|n| *n > 0)) {
            l.swap = Some(total.saturating_sub(mem).max(0).to_string());
        }
    }
    if let Some(c) = &r.cpu {
        if let Some(q) = c.quota.filter(|q| *q > 0) {
            let period = c.period.filter(|p| *p > 0).unwrap_or(100_000);
            l.cpu = Some(format!("{}", q as f64 / period as f64));
        }
        l.cpuset = c.cpus.clone().filter(|c| !c.is_empty());
    }
    if let Some(p) = &r.pids {
        if p.limit > 0 {
            l.nproc = Some(p.limit as u64);
        }
    }
    if let Some(b) = &r.block_io {
        l.io_weight = b.weight.map(u32::from);
    }
    cg.apply_limits(&l).map_err(|e| failed(id, e.to_string()))?;
    if let Some(v) = r.memory.as_ref().and_then(|m| m.swappiness) {
        cg.set_swappiness(v)
            .map_err(|e| failed(id, e.to_string()))?;
    }
    // Shares as given on v1 (a round trip through a v2 weight loses them: 512 became 204).
    if let Some(s) = r.cpu.as_ref().and_then(|c| c.shares).filter(|s| *s > 0) {
        cg.set_cpu_shares(s)
            .map_err(|e| failed(id, e.to_string()))?;
    }
    if let Some(b) = &r.block_io {
        for (list, which) in [
            (&b.throttle_read_bps_device, 0),
            (&b.throttle_write_bps_device, 1),
            (&b.throttle_read_iops_device, 2),
            (&b.throttle_write_iops_device, 3),
        ] {
            for t in list {
                let mut one = crate::config::LimitsConfig::default();
                match which {
                    0 => one.io_read_bps = Some(t.rate.to_string()),
                    1 => one.io_write_bps = Some(t.rate.to_string()),
                    2 => one.io_read_iops = Some(t.rate),
                    _ => one.io_write_iops = Some(t.rate),
                }
                cg.apply_io_limits(&one, Some((t.major as u32, t.minor as u32)))
                    .map_err(|e| failed(id, e.to_string()))?;
            }
        }
    }
    for (k, v) in r.unified.iter().filter(|_| unified) {
        // Controller files only: `cgroup.procs` and its kin would move processes or change
        // the cgroup's type and delegation.
        if k.contains('/') || k.starts_with('.') || !k.contains('.') || k.starts_with("cgroup.") {
            return Err(failed(
                id,
                format!("linux.resources.unified: '{k}' is not a cgroup file"),
            ));
        }
        let dir = cg
            .unified_dir()
            .ok_or_else(|| failed(id, "linux.resources.unified needs a cgroup v2 hierarchy"))?;
        std::fs::write(dir.join(k), v)
            .map_err(|e| failed(id, format!("linux.resources.unified.{k} = {v}: {e}")))?;
    }
    if devices {
        super::devices::apply(cg, &r.devices, extra_devices).map_err(|e| failed(id, e))?;
    }
    Ok(())
}

/// Connect to the unix socket at `path` that waits for a pty master (`--console-socket`).
///
/// Errors: the path and the OS error.
pub(crate) fn connect_console(path: &Path) -> Result<OwnedFd, String> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let s = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("console socket: {e}"))?;
    let addr =
        UnixAddr::new(path).map_err(|e| format!("console socket {}: {e}", path.display()))?;
    connect(std::os::fd::AsRawFd::as_raw_fd(&s), &addr)
        .map_err(|e| format!("connect to the console socket {}: {e}", path.display()))?;
    Ok(s)
}

/// Send `master` (a pty) on the connected console socket `s`: one message, the pty name as
/// payload and the fd as SCM_RIGHTS (what runc and containerd's console socket expect).
///
/// Errors: the OS error.
pub(crate) fn send_console_on(s: &OwnedFd, master: &OwnedFd) -> Result<(), String> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let name = b"/dev/ptmx";
    let iov = [std::io::IoSlice::new(name)];
    let fds = [std::os::fd::AsRawFd::as_raw_fd(master)];
    sendmsg::<()>(
        std::os::fd::AsRawFd::as_raw_fd(s),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("send the console: {e}"))?;
    Ok(())
}

/// Send `master` over the unix socket at `path` (see [`send_console_on`]).
pub(crate) fn send_console(path: &Path, master: &OwnedFd) -> Result<(), String> {
    send_console_on(&connect_console(path)?, master)
}

fn cstrings(v: &[String]) -> Vec<CString> {
    v.iter()
        .filter_map(|s| CString::new(s.as_str()).ok())
        .collect()
}

fn caps_of(names: &[String]) -> Vec<caps::Capability> {
    names
        .iter()
        .filter_map(|n| crate::security::caps::parse_cap(n).ok())
        .collect()
}

/// What create and exec take alike from an OCI `process`: the capabilities to drop from the
/// bounding set, the rlimits, the ioprio_set(2) value, and the process part of [`OciExtras`]
/// (user, capability sets, cwd, umask, no_new_privs, terminal); the caller fills the rest.
pub(crate) struct ProcessParts {
    /// Capabilities outside `process.capabilities.bounding`.
    pub cap_drop: Vec<caps::Capability>,
    /// (resource, soft, hard).
    pub rlimits: Vec<crate::context::child::Rlimit>,
    /// ioprio_set(2) value of `process.ioPriority`.
    pub ioprio: Option<u32>,
    /// The process's fields of the extras.
    pub extras: OciExtras,
}

pub(crate) fn process_parts(p: &super::spec::Process) -> ProcessParts {
    let caps = p.capabilities.clone().unwrap_or_default();
    let bounding: caps::CapsHashSet = caps_of(&caps.bounding).into_iter().collect();
    ProcessParts {
        cap_drop: crate::security::caps::to_drop(&bounding),
        rlimits: p
            .rlimits
            .iter()
            .filter_map(|r| super::check::rlimit_resource(&r.kind).map(|res| (res, r.soft, r.hard)))
            .collect(),
        // Set by the process itself after its user switch (OciExtras::ioprio), never with the
        // runtime's power.
        ioprio: None,
        extras: OciExtras {
            cwd: p.cwd.clone(),
            user: context::child::UserSpec {
                uid: p.user.uid,
                gid: p.user.gid,
                groups: p.user.additional_gids.clone(),
            },
            caps: [
                caps_of(&caps.effective),
                caps_of(&caps.permitted),
                caps_of(&caps.inheritable),
                caps_of(&caps.ambient),
            ],
            no_new_privs: p.no_new_privileges,
            umask: p.user.umask.unwrap_or(0o022),
            ctty: p.terminal,
            // Checked by `check_supported` / `check_process_at`: errors cannot happen here.
            scheduler: p.scheduler.as_ref().and_then(|s| sched_attr_of(s).ok()),
            ioprio: ioprio_of(p),
            exec_affinity: p
                .exec_cpu_affinity
                .as_ref()
                .map(|a| {
                    // An empty list is no list (as runc reads it).
                    let list = |v: &Option<String>| {
                        v.as_deref()
                            .filter(|l| !l.trim().is_empty())
                            .and_then(|l| crate::context::sched::parse_list(l).ok())
                    };
                    (list(&a.initial), list(&a.final_cpus))
                })
                .unwrap_or_default(),
            ..Default::default()
        },
    }
}

/// The state JSON hooks get on stdin.
fn hook_state(st: &State, status: Status) -> String {
    serde_json::to_string(&PublicState {
        oci_version: &st.oci_version,
        id: &st.id,
        status: status.as_str(),
        pid: st.pid,
        bundle: &st.bundle,
        rootfs: &st.rootfs,
        created: &st.created,
        annotations: &st.annotations,
        owner: &st.owner,
    })
    .unwrap_or_default()
}

/// The mounts config.json asks for that the engine builds itself for every container.
const ENGINE_MOUNTS: &[(&str, &str)] = &[
    ("/proc", "proc"),
    ("/sys", "sysfs"),
    ("/dev", "tmpfs"),
    ("/dev/pts", "devpts"),
    ("/dev/shm", "tmpfs"),
    ("/dev/mqueue", "mqueue"),
];

/// Build the engine's process description of `spec` (bundle `bundle`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn context_spec(
    spec: &Spec,
    cfg_path: &str,
    id: &str,
    bundle: &Path,
    rootfs: &Path,
    st: &State,
    console: Option<OwnedFd>,
    gate: OwnedFd,
    preserve_fds: u32,
) -> Result<ContextSpec, OciError> {
    let refuse = |field: String, message: String| {
        OciError::Spec(SpecError::Unsupported {
            path: cfg_path.to_string(),
            field,
            message,
        })
    };
    let linux = spec.linux.as_ref();
    let process = spec
        .process
        .as_ref()
        .ok_or_else(|| refuse("process".into(), "missing".into()))?;
    let mut flags = CloneFlags::empty();
    let mut join = Vec::new();
    for (i, n) in linux
        .map(|l| l.namespaces.as_slice())
        .unwrap_or(&[])
        .iter()
        .enumerate()
    {
        let Some((_, f)) = NAMESPACE_TYPES.iter().find(|(t, _)| *t == n.kind) else {
            continue;
        };
        let f = CloneFlags::from_bits_retain(*f);
        match &n.path {
            // cgroup namespaces are made by the child once it is in its cgroup.
            None if f == CloneFlags::CLONE_NEWCGROUP => {}
            None => flags |= f,
            Some(p) => {
                let fd = open_namespace(p).map_err(|e| {
                    refuse(format!("linux.namespaces[{i}].path"), format!("{p}: {e}"))
                })?;
                join.push((f, fd));
            }
        }
    }
    let mut mounts = Vec::new();
    let mut mount_fields = Vec::new();
    let mut cgroup_mount = false;
    let mut engine_order = Vec::new();
    for (i, mnt) in spec.mounts.iter().enumerate() {
        let kind = mnt.kind.clone().unwrap_or_default();
        let dest = mnt.destination.trim_end_matches('/');
        // The pod's /dev/shm that containerd binds into each container of a sandbox is
        // honoured (over the engine's own); the engine's file systems are otherwise its own.
        let bindish = kind == "bind" || mnt.options.iter().any(|o| o == "bind" || o == "rbind");
        if ENGINE_MOUNTS.iter().any(|(d, _)| *d == dest) && !(dest == "/dev/shm" && bindish) {
            let which = match dest {
                "/proc" => crate::rootfs::EngineMount::Proc,
                "/sys" => crate::rootfs::EngineMount::Sys,
                _ => crate::rootfs::EngineMount::Dev,
            };
            if !engine_order.contains(&which) {
                engine_order.push(which);
            }
            continue;
        }
        if mnt.destination.trim_end_matches('/') == "/sys/fs/cgroup"
            && matches!(kind.as_str(), "cgroup" | "cgroup2")
        {
            cgroup_mount = true;
            continue;
        }
        let kind = if kind.is_empty() {
            "bind".to_string()
        } else {
            kind
        };
        let mut source = mnt.source.clone().unwrap_or_default();
        let bindish = kind == "bind" || mnt.options.iter().any(|o| o == "bind" || o == "rbind");
        if bindish && !source.starts_with('/') {
            source = bundle.join(&source).to_string_lossy().into_owned();
        }
        let m = crate::rootfs::oci::parse_mount(&kind, &source, &mnt.destination, &mnt.options)
            .map_err(|e| refuse(format!("mounts[{i}].options"), e))?;
        mounts.push(m);
        mount_fields.push(format!("mounts[{i}] ({})", mnt.destination));
    }
    let mut devices = Vec::new();
    for d in linux.map(|l| l.devices.as_slice()).unwrap_or(&[]) {
        devices.push(crate::rootfs::oci::DeviceNode {
            path: d.path.clone(),
            kind: match d.kind.as_str() {
                "b" => libc::S_IFBLK,
                "p" => libc::S_IFIFO,
                _ => libc::S_IFCHR,
            },
            major: d.major.max(0) as u64,
            minor: d.minor.max(0) as u64,
            mode: d.file_mode.unwrap_or(0o666),
            uid: d.uid.unwrap_or(0),
            gid: d.gid.unwrap_or(0),
        });
    }
    let parts = process_parts(process);
    let seccomp = match linux.and_then(|l| l.seccomp.as_ref()) {
        Some(s) => Some(super::seccomp::compile(cfg_path, s)?),
        None => None,
    };
    let hooks = spec.hooks.clone().unwrap_or_default();
    let extras = OciExtras {
        join,
        cgroupns: creates(linux, "cgroup"),
        sysctl: linux
            .map(|l| {
                l.sysctl
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        mounts,
        mount_fields,
        devices,
        masked: linux.map(|l| l.masked_paths.clone()).unwrap_or_default(),
        readonly: linux.map(|l| l.readonly_paths.clone()).unwrap_or_default(),
        readonly_root: spec.root.as_ref().is_some_and(|r| r.readonly),
        engine_order: {
            // Those the config does not list keep the engine's order, after the others.
            for w in crate::rootfs::ENGINE_ORDER {
                if !engine_order.contains(&w) {
                    engine_order.push(w);
                }
            }
            engine_order
        },
        cgroup_mount,
        gate: Some(gate),
        create_container: hooks.create_container.clone(),
        start_container: hooks.start_container.clone(),
        hook_state: hook_state(st, Status::Created),
        personality: personality_of(linux),
        mempolicy: mempolicy_of(linux).ok().flatten(),
        preserve_fds,
        rootfs_slave: linux
            .and_then(|l| l.rootfs_propagation.as_deref())
            .is_some_and(|p| p.ends_with("slave")),
        rootfs_unbindable: match linux.and_then(|l| l.rootfs_propagation.as_deref()) {
            Some("unbindable") => Some(false),
            Some("runbindable") => Some(true),
            _ => None,
        },
        ..parts.extras
    };
    Ok(ContextSpec {
        label: id.to_string(),
        xid: 0,
        namespaces: flags,
        root: Some(rootfs.to_path_buf()),
        binds: Vec::new(),
        proc_views: Vec::new(),
        nice: None,
        ioprio: parts.ioprio,
        rlimits: parts.rlimits,
        hostname: spec
            .hostname
            .clone()
            .filter(|h| !h.is_empty() && flags.contains(CloneFlags::CLONE_NEWUTS)),
        domainname: spec
            .domainname
            .clone()
            .filter(|h| !h.is_empty() && flags.contains(CloneFlags::CLONE_NEWUTS)),
        cap_drop: parts.cap_drop,
        seccomp,
        interfaces: Vec::new(),
        console,
        payload: Payload::Exec {
            argv: cstrings(&process.args),
            env: cstrings(&super::spec::dedup_env(&process.env)),
        },
        userns: creates(linux, "user").then(|| {
            let text = |maps: &[super::spec::IdMapping]| -> String {
                maps.iter()
                    .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
                    .collect()
            };
            let l = linux.cloned().unwrap_or_default();
            crate::context::UsernsSpec {
                base: l.uid_mappings.first().map(|m| m.host_id).unwrap_or(0),
                // The bundle's root is used as it is owned (containerd and podman chown or
                // idmap it for the mapping themselves).
                idmap_root: false,
                maps: Some((text(&l.uid_mappings), text(&l.gid_mappings))),
            }
        }),
        oci: Some(Box::new(extras)),
        systemd: None,
    })
}

/// What `create` made so far, undone when it fails half-way ("a failed create leaves no state
/// behind").
struct Undo {
    dir: Option<Container>,
    cgroup: Option<GuestCgroup>,
    /// Released last: no other create takes the cgroup before it is removed.
    claim: Option<super::claim::Claim>,
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.remove();
        }
        if let Some(c) = self.dir.take() {
            let _ = c.remove();
        }
        drop(self.claim.take());
    }
}

/// The ioprio_set(2) value of `process.ioPriority` (class << 13 | level).
fn ioprio_of(p: &super::spec::Process) -> Option<u32> {
    p.io_priority.as_ref().map(|io| {
        let class = match io.class.as_str() {
            "IOPRIO_CLASS_RT" => 1,
            "IOPRIO_CLASS_IDLE" => 3,
            _ => 2,
        };
        (class << 13) | io.priority
    })
}

/// sched_setattr(2)'s values of `process.scheduler`.
///
/// Errors: an unknown policy or flag.
pub(crate) fn sched_attr_of(
    s: &super::spec::Scheduler,
) -> Result<crate::context::sched::SchedAttr, String> {
    crate::context::sched::SchedAttr::from_spec(
        &s.policy,
        &s.flags,
        s.nice,
        s.priority,
        (s.runtime, s.deadline, s.period),
    )
}

/// set_mempolicy(2)'s values of `linux.memoryPolicy`.
///
/// Errors: an unknown mode or flag, a malformed node list.
pub(crate) fn mempolicy_of(
    linux: Option<&super::spec::Linux>,
) -> Result<Option<crate::context::sched::MemPolicy>, String> {
    linux
        .and_then(|l| l.memory_policy.as_ref())
        .map(|m| crate::context::sched::MemPolicy::from_spec(&m.mode, &m.nodes, &m.flags))
        .transpose()
}

/// The personality(2) value of `linux.personality` (PER_LINUX32 = 0x0008 or PER_LINUX = 0),
/// for the init and every exec'd process alike.
pub(crate) fn personality_of(linux: Option<&super::spec::Linux>) -> Option<libc::c_ulong> {
    linux
        .and_then(|l| l.personality.as_ref())
        .map(|p| if p.domain == "LINUX32" { 0x0008 } else { 0 })
}

/// Say on stderr which properties of `path` the spec does not define and were ignored.
pub fn warn_ignored(path: &str, ignored: &[String]) {
    for p in ignored {
        eprintln!("vserver-oci: {path}: ignored {p}: not a property of the OCI runtime spec");
    }
}

/// `create`: see the module doc. Returns the init's pidfd (`run` waits on it).
///
/// Errors: [`OciError`]; nothing is left behind (state directory, cgroup, process).
pub fn create(o: &CreateOptions) -> Result<OwnedFd, OciError> {
    crate::testhook::init();
    let c = Container::at(&o.root, &o.id)?;
    let bundle = std::fs::canonicalize(&o.bundle)
        .map_err(|e| failed(&o.id, format!("bundle {}: {e}", o.bundle.display())))?;
    let cfg = bundle.join("config.json");
    let cfg_s = cfg.display().to_string();
    let spec = Spec::load(&cfg)?;
    warn_ignored(&cfg_s, &spec.ignored);
    spec.check_supported(&cfg_s)?;
    let root = spec
        .root
        .as_ref()
        .map(|r| r.path.clone())
        .unwrap_or_default();
    let rootfs = if Path::new(&root).is_absolute() {
        PathBuf::from(&root)
    } else {
        bundle.join(&root)
    };
    let rootfs = std::fs::canonicalize(&rootfs)
        .map_err(|e| failed(&o.id, format!("root.path {}: {e}", rootfs.display())))?;
    if !rootfs.is_dir() {
        return Err(failed(
            &o.id,
            format!("root.path {} is not a directory", rootfs.display()),
        ));
    }
    let rel = cgroup_rel(&spec, &o.id)?;
    c.create_dir()?;
    let mut undo = Undo {
        dir: Some(c.clone()),
        cgroup: None,
        claim: None,
    };
    std::fs::copy(&cfg, c.file("config.json"))
        .map_err(|e| failed(&o.id, format!("keep a copy of {cfg_s}: {e}")))?;
    let fifo = c.file("exec.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| failed(&o.id, format!("mkfifo {}: {e}", fifo.display())))?;
    let gate = nix::fcntl::open(
        &fifo,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| failed(&o.id, format!("open {}: {e}", fifo.display())))?;
    let cg = cgroup_of(&o.id, &rel)?;
    // A container's cgroup and everything below it are its own (`ps`, `kill --all` and
    // `delete` take them): one with processes or cgroups below it (another container's, a
    // host job's) is refused, and so is one at, above or below another container's.
    if cg.exists() && (!cg.all_pids().is_empty() || cg.has_children()) {
        return Err(failed(
            &o.id,
            format!("linux.cgroupsPath {rel}: the cgroup is not empty (it has processes or cgroups below it)"),
        ));
    }
    // Host-wide, across state roots and concurrent creates: held from here until delete.
    undo.claim = Some(
        super::claim::claim(Path::new(super::claim::CLAIMS_DIR), &rel, &o.root, &o.id)
            .map_err(|e| failed(&o.id, format!("linux.cgroupsPath {rel}: {e}")))?,
    );
    // An empty leaf left by an earlier container of this cgroup starts afresh.
    if let Some(leaf) = cg.leaf() {
        leaf.remove().map_err(|e| failed(&o.id, e.to_string()))?;
    }
    cg.create().map_err(|e| failed(&o.id, e.to_string()))?;
    undo.cgroup = Some(cg.clone());
    // A state from here on (status creating, no init yet), so that a create killed before its
    // init exists (a namespace path on a hung file system) leaves nothing `delete --force`
    // cannot find: the cgroup and the claim go with it.
    let mut st = State {
        oci_version: spec.oci_version.clone(),
        id: o.id.clone(),
        status: Status::Creating,
        pid: 0,
        bundle: bundle.clone(),
        rootfs: rootfs.clone(),
        created: rfc3339_now(),
        annotations: spec.annotations.clone(),
        owner: String::from("root"),
        init_start: 0,
        cgroup: rel.clone(),
    };
    c.save_unsynced(&st)?;
    crate::testhook::pause("oci-create-before-init");
    let no_resources = Resources::default();
    let resources = spec
        .linux
        .as_ref()
        .and_then(|l| l.resources.as_ref())
        .unwrap_or(&no_resources);
    // Every time, also on a cgroup that existed before: the device policy is never the one
    // found there.
    apply_resources(
        &o.id,
        &cg,
        resources,
        spec.linux
            .as_ref()
            .map(|l| l.devices.as_slice())
            .unwrap_or(&[]),
    )?;
    c.save_resources(resources)?;
    let process = spec.process.clone().unwrap_or_default();
    let console = if process.terminal {
        let sock = o.console_socket.as_ref().ok_or_else(|| {
            failed(
                &o.id,
                "process.terminal is set but no --console-socket was given",
            )
        })?;
        let pty =
            nix::pty::openpty(None, None).map_err(|e| failed(&o.id, format!("openpty: {e}")))?;
        if let Some(sz) = &process.console_size {
            let ws = libc::winsize {
                ws_row: sz.height,
                ws_col: sz.width,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCSWINSZ with a valid winsize on our pty.
            unsafe {
                libc::ioctl(
                    std::os::fd::AsRawFd::as_raw_fd(&pty.master),
                    libc::TIOCSWINSZ,
                    &ws,
                )
            };
        }
        send_console(sock, &pty.master).map_err(|e| failed(&o.id, e))?;
        Some(pty.slave)
    } else {
        None
    };
    let cspec = context_spec(
        &spec,
        &cfg_s,
        &o.id,
        &bundle,
        &rootfs,
        &st,
        console,
        gate,
        o.preserve_fds,
    )?;
    // Joining a pid namespace works only for children: join it here, before the clone. Our
    // own is kept to return to right after the clone: the hooks this process runs are host
    // programs and must not be born inside another container's pid namespace.
    let own_pidns = nix::fcntl::open(
        "/proc/self/ns/pid",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| failed(&o.id, format!("open /proc/self/ns/pid: {e}")))?;
    if let Some(p) = spec
        .linux
        .as_ref()
        .and_then(|l| l.namespaces.iter().find(|n| n.kind == "pid"))
        .and_then(|n| n.path.clone())
    {
        let fd = open_namespace(&p)
            .map_err(|e| failed(&o.id, format!("linux.namespaces pid {p}: {e}")))?;
        nix::sched::setns(fd.as_fd(), CloneFlags::CLONE_NEWPID)
            .map_err(|e| failed(&o.id, format!("join the pid namespace {p}: {e}")))?;
    }
    let hooks = spec.hooks.clone().unwrap_or_default();
    let oom = process.oom_score_adj;
    let cg_fd = cg
        .open_unified()
        .map_err(|e| failed(&o.id, e.to_string()))?;
    let st_for_hooks = st.clone();
    let st_early = st.clone();
    let c_early = c.clone();
    let mut prepare = |pid: i32| -> Result<(), String> {
        nix::sched::setns(own_pidns.as_fd(), CloneFlags::CLONE_NEWPID)
            .map_err(|e| format!("return to the runtime's pid namespace: {e}"))?;
        // The state as soon as the init exists (status creating): a create killed while it
        // waits for the init (a hostile filter can keep it from reporting) leaves a container
        // that `delete --force` finds, kills and removes with its cgroups and claim.
        let mut early = st_early.clone();
        early.pid = pid;
        early.init_start = crate::context::clone::proc_start_time(pid).unwrap_or(0);
        c_early
            .save_unsynced(&early)
            .map_err(|e| format!("write the state: {e}"))?;
        cg.add_pid(pid, cg_fd.is_some())
            .map_err(|e| e.to_string())?;
        if let Some(a) = oom {
            std::fs::write(format!("/proc/{pid}/oom_score_adj"), a.to_string())
                .map_err(|e| format!("process.oomScoreAdj {a}: {e}"))?;
        }
        Ok(())
    };
    // The runtime-spec runs these once the init is in all its namespaces (those joined by
    // path too, with its id maps written), before its root changes.
    let mut joined = |pid: i32| -> Result<(), String> {
        let mut s = st_for_hooks.clone();
        s.pid = pid;
        let state = hook_state(&s, Status::Creating);
        for (list, hs) in [
            ("prestart", &hooks.prestart),
            ("createRuntime", &hooks.create_runtime),
        ] {
            for (i, h) in hs.iter().enumerate() {
                super::hooks::run(h, &state)
                    .map_err(|e| format!("hooks.{list}[{i}] {}: {e}", h.path))?;
            }
        }
        Ok(())
    };
    let spawned = context::spawn(&cspec, cg_fd.as_ref(), &mut prepare, Some(&mut joined))
        .map_err(|e| failed(&o.id, spawn_message(e)))?;
    drop(cspec);
    st.pid = spawned.pid;
    st.init_start = crate::context::clone::proc_start_time(spawned.pid).unwrap_or(0);
    st.status = Status::Created;
    let kill = || {
        let _ = crate::context::clone::pidfd_kill(spawned.pidfd.as_fd(), libc::SIGKILL);
        let _ = crate::context::clone::wait_pidfd(spawned.pidfd.as_fd());
    };
    if let Some(pf) = &o.pid_file {
        if let Err(e) = write_pid_file(pf, spawned.pid) {
            kill();
            return Err(failed(&o.id, e));
        }
    }
    if let Err(e) = c.save(&st) {
        kill();
        return Err(e.into());
    }
    undo.dir = None;
    undo.cgroup = None;
    if let Some(claim) = undo.claim.take() {
        claim.keep();
    }
    Ok(spawned.pidfd)
}

/// What went wrong while spawning, in a container's words (the engine speaks of guests and
/// context ids).
fn spawn_message(e: crate::context::SpawnError) -> String {
    use crate::context::SpawnError as E;
    let m = match e {
        E::Setup { message, .. } | E::Prepare { message, .. } => message,
        other => other.to_string(),
    };
    m.replace(" in the guest", " in the container")
        .replace("the guest's", "the container's")
}

/// Write `pid` to `path` atomically: a new temporary file in its directory (opened once,
/// created exclusively, never through a symlink) renamed over it.
fn write_pid_file(path: &Path, pid: i32) -> Result<(), String> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| format!("pid file {} has no name", path.display()))?;
    let dir = std::fs::File::open(parent)
        .map_err(|e| format!("pid file directory {}: {e}", parent.display()))?;
    super::exec::write_at(&dir, name, &pid.to_string())
        .map_err(|e| format!("pid file {}: {e}", path.display()))
}

/// The live status of a recorded container.
pub fn live_status(st: &State) -> Status {
    if st.pid <= 0 && st.status == Status::Creating {
        return Status::Creating;
    }
    if st.pid <= 0 || !crate::context::clone::same_process(st.pid, st.init_start) {
        return Status::Stopped;
    }
    // Paused by `pause`, or by the container itself (its leaf frozen from inside).
    if cgroup_of(&st.id, &st.cgroup).is_ok_and(|cg| cg.is_frozen() || cg.process_frozen(st.pid)) {
        return Status::Paused;
    }
    // `creating` while create has not finished (its state is written as soon as the init
    // exists): neither `start` nor `exec` may touch a container whose root is not set up.
    st.status
}

/// `state`: the spec's state object with the live status (pid 0 once stopped).
///
/// Errors: [`StateError::NotFound`] and friends.
pub fn state(root: &Path, id: &str) -> Result<serde_json::Value, OciError> {
    let st = Container::at(root, id)?.load()?;
    Ok(public(&st))
}

fn public(st: &State) -> serde_json::Value {
    let status = live_status(st);
    let pid = if status == Status::Stopped { 0 } else { st.pid };
    serde_json::to_value(PublicState {
        oci_version: &st.oci_version,
        id: &st.id,
        status: status.as_str(),
        pid,
        bundle: &st.bundle,
        rootfs: &st.rootfs,
        created: &st.created,
        annotations: &st.annotations,
        owner: &st.owner,
    })
    .unwrap_or_default()
}

/// `list`: the state of every container under `root`.
pub fn list(root: &Path) -> Vec<serde_json::Value> {
    super::state::list(root)
        .iter()
        .filter_map(|id| Container::at(root, id).ok()?.load().ok())
        .map(|st| public(&st))
        .collect()
}

fn spec_of(c: &Container) -> Option<Spec> {
    Spec::load(&c.file("config.json")).ok()
}

/// `start`: let the init run the program.
///
/// Errors: not created, or the init is gone ("container not running").
pub fn start(root: &Path, id: &str) -> Result<(), OciError> {
    let c = Container::at(root, id)?;
    let mut st = c.load()?;
    let status = live_status(&st);
    if status != Status::Created {
        return Err(OciError::NotCreated(id.to_string(), status.as_str()));
    }
    let fifo = c.file("exec.fifo");
    let w = nix::fcntl::open(
        &fifo,
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|_| OciError::NotRunning(id.to_string()))?;
    nix::unistd::write(&w, b"1")
        .map_err(|e| failed(id, format!("write {}: {e}", fifo.display())))?;
    drop(w);
    let _ = std::fs::remove_file(&fifo);
    st.status = Status::Running;
    c.save(&st)?;
    if let Some(spec) = spec_of(&c) {
        let state = hook_state(&st, Status::Running);
        for (i, h) in spec.hooks.unwrap_or_default().poststart.iter().enumerate() {
            if let Err(e) = super::hooks::run(h, &state) {
                return Err(failed(id, format!("hooks.poststart[{i}] {}: {e}", h.path)));
            }
        }
    }
    Ok(())
}

/// `kill`: send `sig` to the init, or with `all` to every process of the container (a stopped
/// container without processes is then left as it is, successfully).
///
/// Errors: without `all`, the container is stopped ("container not running").
pub fn kill(root: &Path, id: &str, sig: i32, all: bool) -> Result<(), OciError> {
    let c = Container::at(root, id)?;
    let st = c.load()?;
    // On a v1 freezer a frozen task does not die of SIGKILL: thaw the whole tree first, also
    // what the container froze itself (as runc's kill ends a paused container).
    if sig == libc::SIGKILL {
        if let Ok(cg) = cgroup_of(id, &st.cgroup) {
            cg.thaw_v1_tree();
        }
    }
    if all {
        // Also after the init ended, while processes of the container remain (a container
        // sharing the host's pid namespace): what containerd's shim relies on.
        // A stopped container with nothing left is a success, as with runc: containerd's
        // shim sends `kill --all` after every exit and retries on an error.
        let cg = cgroup_of(id, &st.cgroup)?;
        if live_status(&st) == Status::Stopped && cg.all_pids().is_empty() {
            return Ok(());
        }
        if sig == libc::SIGKILL {
            // cgroup.kill on v2 takes every process at once (a forking workload cannot slip
            // past a snapshot of pids), and the pidfd walk gets what v1 alone holds.
            cg.kill_all();
        } else {
            cg.signal_number(sig);
        }
        return Ok(());
    }
    if live_status(&st) == Status::Stopped {
        return Err(OciError::NotRunning(id.to_string()));
    }
    let fd = crate::context::clone::pidfd_open(st.pid)
        .map_err(|_| OciError::NotRunning(id.to_string()))?;
    if !crate::context::clone::same_process(st.pid, st.init_start) {
        return Err(OciError::NotRunning(id.to_string()));
    }
    crate::context::clone::pidfd_kill(fd.as_fd(), sig)
        .map_err(|e| failed(id, format!("signal {sig}: {e}")))
}

/// `delete`: remove a stopped (or created) container; with `force` kill a running one first.
/// A missing container is an error unless `force`.
///
/// Errors: [`OciError::StillRunning`], state or cgroup errors.
pub fn delete(root: &Path, id: &str, force: bool) -> Result<(), OciError> {
    let c = Container::at(root, id)?;
    let st = match c.load() {
        Ok(st) => st,
        Err(StateError::NotFound(_)) if force => {
            let _ = c.remove();
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let status = live_status(&st);
    if matches!(status, Status::Running | Status::Paused) && !force {
        return Err(OciError::StillRunning(id.to_string(), status.as_str()));
    }
    let cg = cgroup_of(id, &st.cgroup)?;
    if status == Status::Paused {
        let _ = cg.freeze(false);
    }
    cg.remove().map_err(|e| failed(id, e.to_string()))?;
    let spec = spec_of(&c);
    c.remove()?;
    super::claim::release(Path::new(super::claim::CLAIMS_DIR), &st.cgroup, root, id);
    if let Some(spec) = spec {
        // The init is gone: its pid may already be another process's.
        let gone = State {
            pid: 0,
            ..st.clone()
        };
        let state = hook_state(&gone, Status::Stopped);
        for (i, h) in spec.hooks.unwrap_or_default().poststop.iter().enumerate() {
            if let Err(e) = super::hooks::run(h, &state) {
                return Err(failed(id, format!("hooks.poststop[{i}] {}: {e}", h.path)));
            }
        }
    }
    Ok(())
}

/// `ps`: host pids of the container's processes.
///
/// Errors: state errors.
pub fn ps(root: &Path, id: &str) -> Result<Vec<i32>, OciError> {
    let st = Container::at(root, id)?.load()?;
    Ok(cgroup_of(id, &st.cgroup)?.all_pids())
}

/// `pause` (`true`) or `resume`: freeze or thaw the container's cgroup.
///
/// Errors: a stopped container, cgroup errors.
pub fn freeze(root: &Path, id: &str, frozen: bool) -> Result<(), OciError> {
    let st = Container::at(root, id)?.load()?;
    match (live_status(&st), frozen) {
        (Status::Stopped, _) => return Err(OciError::NotRunning(id.to_string())),
        (Status::Paused, true) => return Err(failed(id, "container is already paused")),
        (s, false) if s != Status::Paused => {
            return Err(failed(
                id,
                format!("container not paused (it is {})", s.as_str()),
            ))
        }
        _ => {}
    }
    let cg = cgroup_of(id, &st.cgroup)?;
    cg.freeze(frozen).map_err(|e| failed(id, e.to_string()))?;
    if !frozen {
        // Resume thaws what the container froze below its cgroup too (v1: a child stays
        // frozen when its parent thaws; v2: its own leaf), once the cgroup itself is thawed
        // (a child of a frozen v2 cgroup stays frozen whatever it says).
        cg.thaw_v1_tree();
        if let Some(l) = cg.leaf() {
            let _ = l.freeze(false);
        }
    }
    Ok(())
}

/// `update --resources`: write new limits.
///
/// Errors: a stopped container, values the kernel refuses.
pub fn update(root: &Path, id: &str, r: &Resources) -> Result<(), OciError> {
    let st = Container::at(root, id)?.load()?;
    if live_status(&st) == Status::Stopped {
        return Err(OciError::NotRunning(id.to_string()));
    }
    let c = Container::at(root, id)?;
    let devices = spec_of(&c)
        .and_then(|s| s.linux)
        .map(|l| l.devices)
        .unwrap_or_default();
    // Only what is given changes (as runc): merged into what is in force.
    let merged = merge_resources(&c.load_resources(), r).map_err(|e| failed(id, e))?;
    apply_resources(id, &cgroup_of(id, &st.cgroup)?, &merged, &devices)?;
    c.save_resources(&merged)?;
    Ok(())
}

/// `now` with every field `update` gives replaced: objects merged key by key, lists and values
/// replaced.
///
/// Errors: the merged value is no longer a valid `linux.resources`.
fn merge_resources(now: &Resources, update: &Resources) -> Result<Resources, String> {
    fn merge(a: &mut serde_json::Value, b: &serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b.clone(),
        }
    }
    let mut v = serde_json::to_value(now).map_err(|e| e.to_string())?;
    let u = serde_json::to_value(update).map_err(|e| e.to_string())?;
    merge(&mut v, &u);
    serde_json::from_value(v).map_err(|e| format!("linux.resources after the update: {e}"))
}

/// The init's pidfd (for `run`, which waits for it), checked against the recorded start time.
///
/// Errors: the container is gone.
pub fn init_pidfd(root: &Path, id: &str) -> Result<OwnedFd, OciError> {
    let st = Container::at(root, id)?.load()?;
    let fd = crate::context::clone::pidfd_open(st.pid)
        .map_err(|_| OciError::NotRunning(id.to_string()))?;
    if !crate::context::clone::same_process(st.pid, st.init_start) {
        return Err(OciError::NotRunning(id.to_string()));
    }
    Ok(fd)
}
