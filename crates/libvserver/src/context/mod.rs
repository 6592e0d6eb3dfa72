//! Spawning a process in a new security context: clone3 into new namespaces and the guest's
//! cgroup, a sync pipe with the parent, then the in-child setup of [`child`].
//!
//! `vserver start` (through the monitor) and `chcontext` share [`spawn`]; `vserver exec/enter`
//! share the last steps ([`child::finish`]) through [`crate::guest::exec`].

pub mod child;
pub mod clone;
pub mod join;
pub(crate) mod oci_child;
pub mod oneshot;
pub mod sched;
pub mod sync;
pub mod timens;

use crate::security::seccomp::SeccompProgram;
use caps::Capability;
use nix::sched::CloneFlags;
use std::ffi::CString;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

/// A network interface configured inside the guest's network namespace.
#[derive(Debug, Clone)]
pub struct GuestIface {
    /// Name inside the guest (`eth0`).
    pub name: String,
    /// Addresses with prefix lengths (bits), IPv4 and IPv6.
    pub addrs: Vec<(IpAddr, u8)>,
    /// Default gateways through this interface (at most one per family in the whole guest).
    pub gateways: Vec<IpAddr>,
}

/// What the new context's first process runs once set up.
#[derive(Debug, Clone)]
pub enum Payload {
    /// execve(2) of argv (searched in PATH) with env.
    Exec {
        /// Program and arguments.
        argv: Vec<CString>,
        /// Environment (`K=V`).
        env: Vec<CString>,
    },
    /// vserver's built-in init as pid 1, running these commands.
    Builtin(crate::monitor::init::InitPlan),
}

/// One description of "a process in its own context", built from NAME.toml by `vserver start`
/// and from options by `chcontext`.
pub struct ContextSpec {
    /// Guest name or tool name, for messages.
    pub label: String,
    /// Context id.
    pub xid: u32,
    /// Namespaces created by clone3 (CLONE_NEW*); a cgroup namespace is added after the child
    /// has been moved into every cgroup.
    pub namespaces: CloneFlags,
    /// Guest root to pivot_root into; None keeps the host's tree (chcontext), with a fresh /proc.
    pub root: Option<PathBuf>,
    /// Host directories bound into the guest root.
    pub binds: Vec<crate::rootfs::BindMount>,
    /// Host files bound over /proc files once /proc is mounted (LXCFS's per-guest views).
    pub proc_views: Vec<crate::rootfs::BindMount>,
    /// Nice level for the first process (inherited by everything it starts).
    pub nice: Option<i32>,
    /// I/O priority (ioprio_set(2) value) for the first process, inherited likewise.
    pub ioprio: Option<u32>,
    /// rlimits (resource, soft, hard) for the first process (inherited likewise).
    pub rlimits: Vec<child::Rlimit>,
    /// Host name (UTS namespace).
    pub hostname: Option<String>,
    /// NIS domain name.
    pub domainname: Option<String>,
    /// Capabilities removed from the bounding set.
    pub cap_drop: Vec<Capability>,
    /// Seccomp filter, compiled before fork.
    pub seccomp: Option<SeccompProgram>,
    /// Interfaces to configure inside the new network namespace.
    pub interfaces: Vec<GuestIface>,
    /// Terminal that becomes /dev/console and the stdio of the first process.
    pub console: Option<OwnedFd>,
    /// What runs.
    pub payload: Payload,
    /// The guest's own user namespace (`userns = true`); `namespaces` then holds
    /// CLONE_NEWUSER. None keeps the host's ids.
    pub userns: Option<UsernsSpec>,
    /// What an OCI container asks for beyond a guest's description (None for guests).
    pub oci: Option<Box<OciExtras>>,
    /// What a guest's systemd needs mounted before it starts (None for other inits).
    pub systemd: Option<crate::rootfs::systemd::SystemdMounts>,
}

/// The parts of an OCI container's process description that guests do not use: joined
/// namespaces, sysctls, extra mounts and devices, its own masks, the user and capability sets,
/// and the gate that holds the init between `create` and `start` (see [`crate::oci`]).
#[derive(Default)]
pub struct OciExtras {
    /// Namespaces to join with setns(2) before the setup: (CLONE_NEW* flag, namespace fd).
    pub join: Vec<(CloneFlags, OwnedFd)>,
    /// Create a cgroup namespace (`cgroup` in linux.namespaces); guests always get one.
    pub cgroupns: bool,
    /// sysctls (`net.ipv4.ip_forward`, value) written in the new namespaces before pivot_root.
    pub sysctl: Vec<(String, String)>,
    /// File systems and binds of config.json beyond /proc, /sys and /dev, in order.
    pub mounts: Vec<crate::rootfs::oci::SpecMount>,
    /// The config field of each of `mounts` (`mounts[3]`), for messages.
    pub mount_fields: Vec<String>,
    /// Device nodes to create in /dev.
    pub devices: Vec<crate::rootfs::oci::DeviceNode>,
    /// Paths to hide (files: /dev/null; directories: an empty read-only tmpfs), beyond ours.
    pub masked: Vec<String>,
    /// Paths to make read-only, beyond ours.
    pub readonly: Vec<String>,
    /// Remount the root read-only once everything is mounted.
    pub readonly_root: bool,
    /// The order of the engine's /proc, /sys and /dev as config.json lists them (empty: the
    /// engine's own, [`crate::rootfs::ENGINE_ORDER`]).
    pub engine_order: Vec<crate::rootfs::EngineMount>,
    /// Mount a read-only cgroup file system on /sys/fs/cgroup.
    pub cgroup_mount: bool,
    /// Working directory inside (absolute, resolved after pivot_root).
    pub cwd: String,
    /// The user the program runs as.
    pub user: child::UserSpec,
    /// Capability sets beyond the bounding set: (effective, permitted, inheritable, ambient).
    pub caps: [Vec<Capability>; 4],
    /// prctl(PR_SET_NO_NEW_PRIVS) before the seccomp filter and the program.
    pub no_new_privs: bool,
    /// File creation mask of the program.
    pub umask: u32,
    /// Make the console the controlling terminal of the program (OCI `terminal`).
    pub ctty: bool,
    /// Read end of the container's exec FIFO: the init reports ready, then waits for one byte
    /// (written by `start`) before it runs the program.
    pub gate: Option<OwnedFd>,
    /// Hooks run inside the container's namespaces before pivot_root (createContainer) and
    /// after the gate opens (startContainer), with the state JSON on their stdin.
    pub create_container: Vec<crate::oci::spec::Hook>,
    /// See `create_container`.
    pub start_container: Vec<crate::oci::spec::Hook>,
    /// The state JSON for the hooks (its `pid` and `status` are set when they run).
    pub hook_state: String,
    /// The init's pid in the host's pid namespace, learnt by the init itself before
    /// pivot_root (for the hooks' state).
    pub host_pid: std::cell::Cell<i32>,
    /// personality(2) domain for LINUX32.
    pub personality: Option<libc::c_ulong>,
    /// `process.scheduler`, applied after the user switch (with the process's own
    /// capabilities).
    pub scheduler: Option<sched::SchedAttr>,
    /// `process.ioPriority` as an ioprio_set(2) value, applied after the user switch (a
    /// real-time class then needs the process's own CAP_SYS_NICE or CAP_SYS_ADMIN).
    pub ioprio: Option<u32>,
    /// `linux.memoryPolicy`, applied before the user switch.
    pub mempolicy: Option<sched::MemPolicy>,
    /// `process.execCPUAffinity` of an exec'd process: (initial, final) CPU lists.
    pub exec_affinity: (Option<Vec<usize>>, Option<Vec<usize>>),
    /// Extra fds passed to the program as 3, 4, ... (`--preserve-fds`).
    pub preserve_fds: u32,
    /// Keep the container's mounts slaves of the host's (`rootfsPropagation` `slave` or
    /// `rslave`: mounts made on the host below a bound directory appear inside), instead of
    /// private.
    pub rootfs_slave: bool,
    /// Make the container's root unbindable once it is built (`rootfsPropagation`
    /// `unbindable`: the root mount; `runbindable`: every mount), as mount(8)'s
    /// --make-unbindable.
    pub rootfs_unbindable: Option<bool>,
}

/// How a guest runs in its own user namespace (see [`crate::security::userns`]).
#[derive(Debug, Clone)]
pub struct UsernsSpec {
    /// Host uid and gid of the guest's id 0 (`xid * 65536`); 65536 ids are mapped.
    pub base: u32,
    /// Idmap the mount of the guest root, so files keep their owners on disk; false when the
    /// tree was shifted on disk by `base` ([`crate::storage::shift`]).
    pub idmap_root: bool,
    /// The uid_map and gid_map texts (user_namespaces(7): `inside host count` lines) when they
    /// are given (an OCI config's mappings) instead of derived from `base`.
    pub maps: Option<(String, String)>,
}

/// A spawned context: the first process's pid (host view) and pidfd.
pub struct Spawned {
    /// Host pid of the context's first process.
    pub pid: i32,
    /// pidfd of that process.
    pub pidfd: OwnedFd,
}

/// Failure to spawn a context.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// A pipe could not be made.
    #[error("{label}: cannot create a sync pipe: {source}")]
    Pipe {
        /// Guest or tool.
        label: String,
        /// OS error.
        source: nix::errno::Errno,
    },
    /// clone3 failed.
    #[error("{label}: context {xid}: clone3 failed: {source}")]
    Clone {
        /// Guest or tool.
        label: String,
        /// Context id.
        xid: u32,
        /// OS error.
        source: nix::errno::Errno,
    },
    /// The parent's work between clone and go (cgroups, veths) failed.
    #[error("{label}: context {xid}: {message}")]
    Prepare {
        /// Guest or tool.
        label: String,
        /// Context id.
        xid: u32,
        /// What failed.
        message: String,
    },
    /// A setup step in the child failed; the message names the step and path.
    #[error("{label}: context {xid}: setup failed: {message}")]
    Setup {
        /// Guest or tool.
        label: String,
        /// Context id.
        xid: u32,
        /// Step, path and OS error.
        message: String,
    },
}

/// Spawn the first process of a new context.
///
/// Order: clone3 with `spec.namespaces` (into the v2 cgroup `cgroup_fd` when given) → parent runs
/// `prepare(pid)` (v1 cgroups, veths) → with a user namespace, the parent writes the child's id
/// maps, sets its nice level, I/O priority and rlimits (which need the host's capabilities)
/// and sends it the detached mounts of its root and binds ([`userns_prepare`]) → "go" → child
/// runs [`child::setup_and_run`] → with `joined`, the child stops once it is in all its
/// namespaces (joined by path, a new cgroup namespace, loopback up; id maps written) and the
/// parent runs `joined(pid)` (OCI's prestart and createRuntime hooks, which the runtime-spec
/// runs in that environment), then lets it go on → parent waits
/// until the child has exec'd (or its built-in init is running) or reports an error. On any
/// error the child is killed and reaped before returning, so nothing of it remains.
///
/// Must be called single-threaded. Errors: [`SpawnError`].
pub fn spawn(
    spec: &ContextSpec,
    cgroup_fd: Option<&OwnedFd>,
    prepare: &mut dyn FnMut(i32) -> Result<(), String>,
    joined: Option<&mut dyn FnMut(i32) -> Result<(), String>>,
) -> Result<Spawned, SpawnError> {
    let label = spec.label.clone();
    let xid = spec.xid;
    let (go_r, go_w) = sync::pipe().map_err(|source| SpawnError::Pipe {
        label: label.clone(),
        source,
    })?;
    // The second handshake, for `joined`: (child says "in place", parent says "go on").
    let stop = match joined {
        Some(_) => {
            let pipe = || {
                sync::pipe().map_err(|source| SpawnError::Pipe {
                    label: label.clone(),
                    source,
                })
            };
            Some((pipe()?, pipe()?))
        }
        None => None,
    };
    let (err_r, err_w) = sync::pipe().map_err(|source| SpawnError::Pipe {
        label: label.clone(),
        source,
    })?;
    // The channel for the detached mounts a user-namespace child gets from us.
    let (mounts_parent, mounts_child) = match spec.userns {
        Some(_) => {
            use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
            let (a, b) = socketpair(
                AddressFamily::Unix,
                SockType::SeqPacket,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
            .map_err(|source| SpawnError::Pipe {
                label: label.clone(),
                source,
            })?;
            (Some(a), Some(b))
        }
        None => (None, None),
    };
    let flags = spec.namespaces.bits() as u64;
    // Born in its v2 cgroup (CLONE_INTO_CGROUP); where the kernel refuses that (before 5.7),
    // moved there before anything else, or the spawn fails: an init must never run outside
    // its cgroup's limits and device program.
    let mut move_in = None;
    let forked = match clone::clone3_fork(flags, cgroup_fd.map(|f| f.as_fd())) {
        Err(nix::errno::Errno::EOPNOTSUPP) | Err(nix::errno::Errno::EINVAL)
            if cgroup_fd.is_some() =>
        {
            move_in = cgroup_fd;
            clone::clone3_fork(flags, None)
        }
        other => other,
    }
    .map_err(|source| SpawnError::Clone {
        label: label.clone(),
        xid,
        source,
    })?;
    match forked {
        clone::Forked::Child => {
            drop(go_w);
            drop(err_r);
            drop(mounts_parent);
            let stop = stop.map(|((_, in_place), (resume, _))| (in_place, resume));
            child::setup_and_run(spec, go_r, err_w, mounts_child, stop)
        }
        clone::Forked::Parent { pid, pidfd } => {
            drop(go_r);
            drop(err_w);
            drop(mounts_child);
            let stop = stop.map(|((in_place, _), (_, resume))| (in_place, resume));
            let kill = |pidfd: &OwnedFd| {
                let _ = clone::pidfd_kill(pidfd.as_fd(), libc::SIGKILL);
                let _ = clone::wait_pidfd(pidfd.as_fd());
            };
            if let Some(cg) = move_in {
                let moved = nix::fcntl::openat(
                    cg,
                    "cgroup.procs",
                    nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .and_then(|f| nix::unistd::write(&f, pid.to_string().as_bytes()));
                if let Err(e) = moved {
                    kill(&pidfd);
                    return Err(SpawnError::Prepare {
                        label,
                        xid,
                        message: format!("move the init into its cgroup v2: {e}"),
                    });
                }
            }
            if let Err(message) = prepare(pid) {
                kill(&pidfd);
                return Err(SpawnError::Prepare {
                    label,
                    xid,
                    message,
                });
            }
            if let (Some(u), Some(chan)) = (&spec.userns, &mounts_parent) {
                if let Err(message) = userns_prepare(spec, u, pid, chan) {
                    kill(&pidfd);
                    return Err(SpawnError::Prepare {
                        label,
                        xid,
                        message,
                    });
                }
            }
            drop(mounts_parent);
            if let Err(e) = sync::send_go(&go_w) {
                kill(&pidfd);
                return Err(SpawnError::Prepare {
                    label,
                    xid,
                    message: format!("cannot release the child: {e}"),
                });
            }
            drop(go_w);
            if let (Some(joined), Some((in_place, resume))) = (joined, stop) {
                // EOF instead of the byte: the child failed before (its report follows).
                if sync::wait_go(&in_place) {
                    if let Err(message) = joined(pid) {
                        kill(&pidfd);
                        return Err(SpawnError::Prepare {
                            label,
                            xid,
                            message,
                        });
                    }
                    if let Err(e) = sync::send_go(&resume) {
                        kill(&pidfd);
                        return Err(SpawnError::Prepare {
                            label,
                            xid,
                            message: format!("cannot release the child: {e}"),
                        });
                    }
                }
            }
            let report = sync::read_to_end(err_r);
            if !report.is_empty() {
                kill(&pidfd);
                return Err(SpawnError::Setup {
                    label,
                    xid,
                    message: report,
                });
            }
            Ok(Spawned { pid, pidfd })
        }
    }
}

/// The parent's part of a user-namespace start, between clone and "go": the child's uid and
/// gid maps; its nice level, I/O priority and rlimits (set from here, with the host's
/// CAP_SYS_NICE and CAP_SYS_RESOURCE, which the child no longer has); then the detached mounts
/// of its root (idmapped through its user namespace, or a plain copy of a shifted tree) and of
/// each bind (read-only ones idmapped where their file system allows, so host files show their
/// owners; writable ones never, so what the guest writes there lands as its host ids), sent
/// over `chan` (SCM_RIGHTS, unix(7)).
///
/// Errors: the step, the path and the OS error.
fn userns_prepare(
    spec: &ContextSpec,
    u: &UsernsSpec,
    pid: i32,
    chan: &OwnedFd,
) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    match &u.maps {
        Some((uid_map, gid_map)) => {
            crate::security::userns::write_map_texts(pid, uid_map, gid_map)?
        }
        None => crate::security::userns::write_maps(pid, u.base)?,
    }
    if let Some(n) = spec.nice {
        // SAFETY: plain syscall with integer arguments on the child.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, n) } != 0 {
            return Err(format!("set nice level {n}: {}", nix::errno::Errno::last()));
        }
    }
    if let Some(v) = spec.ioprio {
        // SAFETY: plain syscall with integer arguments on the child (IOPRIO_WHO_PROCESS = 1).
        if unsafe { libc::syscall(libc::SYS_ioprio_set, 1, pid, v) } != 0 {
            return Err(format!(
                "set I/O priority {v:#x}: {}",
                nix::errno::Errno::last()
            ));
        }
    }
    for (res, soft, hard) in &spec.rlimits {
        let r = libc::rlimit {
            rlim_cur: *soft,
            rlim_max: *hard,
        };
        // SAFETY: valid pointer to a plain struct; a null old-limit pointer is allowed.
        if unsafe { libc::prlimit(pid, *res, &r, std::ptr::null_mut()) } != 0 {
            return Err(format!(
                "rlimits.{} = {soft}:{hard}: {}",
                crate::config::rlimit_name(*res),
                nix::errno::Errno::last()
            ));
        }
    }
    let Some(root) = &spec.root else {
        return Err(String::from("a user namespace needs a guest root"));
    };
    let ns = crate::security::userns::open_userns(pid)?;
    let root_tree =
        crate::rootfs::detached_tree(root, u.idmap_root.then_some(ns.as_fd()), true, false)?;
    let mut trees = vec![root_tree];
    for b in &spec.binds {
        let t = if b.readonly {
            crate::rootfs::detached_tree(&b.source, Some(ns.as_fd()), true, true)
                .or_else(|_| crate::rootfs::detached_tree(&b.source, None, true, true))?
        } else {
            crate::rootfs::detached_tree(&b.source, None, false, false)?
        };
        trees.push(t);
    }
    let raw: Vec<i32> = trees.iter().map(|t| t.as_raw_fd()).collect();
    nix::sys::socket::sendmsg::<()>(
        chan.as_raw_fd(),
        &[std::io::IoSlice::new(b"T")],
        &[nix::sys::socket::ControlMessage::ScmRights(&raw)],
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("pass the guest's mounts to it: {e}"))?;
    Ok(())
}

/// The child's side of [`userns_prepare`]: receive the root and `nbinds` bind trees.
///
/// Errors: the receive failed or brought the wrong number of descriptors.
pub(crate) fn receive_trees(
    chan: &OwnedFd,
    nbinds: usize,
) -> Result<crate::rootfs::UsernsTrees, String> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(((nbinds + 1) * 4) as u32) } as usize;
    let mut cmsg: Vec<u8> = vec![0u8; space];
    let msg = recvmsg::<()>(
        chan.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("receive the guest's mounts: {e}"))?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for c in msg
        .cmsgs()
        .map_err(|e| format!("receive the guest's mounts: {e}"))?
    {
        if let ControlMessageOwned::ScmRights(v) = c {
            // SAFETY: the kernel installed these descriptors for us; nobody else owns them.
            fds.extend(v.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    if fds.len() != nbinds + 1 {
        return Err(format!(
            "received {} mounts, expected {} (root and binds)",
            fds.len(),
            nbinds + 1
        ));
    }
    let root = fds.remove(0);
    Ok(crate::rootfs::UsernsTrees {
        root,
        binds: fds,
        root_dir: None,
    })
}
