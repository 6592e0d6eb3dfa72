//! Spawning a process in a new security context: clone3 into new namespaces and the guest's
//! cgroup, a sync pipe with the parent, then the in-child setup of [`child`].
//!
//! `vserver start` (through the monitor) and `chcontext` share [`spawn`]; `vserver exec/enter`
//! share the last steps ([`child::finish`]) through [`crate::guest::exec`].

pub mod child;
pub mod clone;
pub mod oneshot;
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
/// `prepare(pid)` (v1 cgroups, veths) → "go" → child runs [`child::setup_and_run`] → parent waits
/// until the child has exec'd (or its built-in init is running) or reports an error. On any
/// error the child is killed and reaped before returning, so nothing of it remains.
///
/// Must be called single-threaded. Errors: [`SpawnError`].
pub fn spawn(
    spec: &ContextSpec,
    cgroup_fd: Option<&OwnedFd>,
    prepare: &mut dyn FnMut(i32) -> Result<(), String>,
) -> Result<Spawned, SpawnError> {
    let label = spec.label.clone();
    let xid = spec.xid;
    let (go_r, go_w) = sync::pipe().map_err(|source| SpawnError::Pipe {
        label: label.clone(),
        source,
    })?;
    let (err_r, err_w) = sync::pipe().map_err(|source| SpawnError::Pipe {
        label: label.clone(),
        source,
    })?;
    let flags = spec.namespaces.bits() as u64;
    let forked = match clone::clone3_fork(flags, cgroup_fd.map(|f| f.as_fd())) {
        Err(nix::errno::Errno::EOPNOTSUPP) | Err(nix::errno::Errno::EINVAL)
            if cgroup_fd.is_some() =>
        {
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
            child::setup_and_run(spec, go_r, err_w)
        }
        clone::Forked::Parent { pid, pidfd } => {
            drop(go_r);
            drop(err_w);
            let kill = |pidfd: &OwnedFd| {
                let _ = clone::pidfd_kill(pidfd.as_fd(), libc::SIGKILL);
                let _ = clone::wait_pidfd(pidfd.as_fd());
            };
            if let Err(message) = prepare(pid) {
                kill(&pidfd);
                return Err(SpawnError::Prepare {
                    label,
                    xid,
                    message,
                });
            }
            if let Err(e) = sync::send_go(&go_w) {
                kill(&pidfd);
                return Err(SpawnError::Prepare {
                    label,
                    xid,
                    message: format!("cannot release the child: {e}"),
                });
            }
            drop(go_w);
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
