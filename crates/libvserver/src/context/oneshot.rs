//! `chcontext`: run one command in a new security context without changing its root: new pid,
//! mount, IPC and UTS namespaces, a fresh /proc (so `ps` shows only the context), a cgroup
//! `vservers/<xid>`, and optionally the secure bounding set and seccomp filter.

use super::{spawn, ContextSpec, Payload};
use crate::cgroup::{CgroupLayout, GuestCgroup};
use crate::config::{XID_DYNAMIC_END, XID_DYNAMIC_START};
use crate::security::seccomp::SeccompProgram;
use caps::Capability;
use nix::sched::CloneFlags;
use std::ffi::CString;
use std::os::fd::AsFd;

/// Options of a one-shot context.
#[derive(Debug, Clone, Default)]
pub struct OneShot {
    /// Context id; None picks a free dynamic one (49152-65534).
    pub xid: Option<u32>,
    /// Host name in the new UTS namespace.
    pub hostname: Option<String>,
    /// Domain name in the new UTS namespace.
    pub domainname: Option<String>,
    /// Capabilities to keep in the bounding set (None: keep all).
    pub keep: Option<caps::CapsHashSet>,
    /// Apply the default seccomp filter.
    pub seccomp: bool,
    /// Command.
    pub argv: Vec<String>,
}

/// Create the cgroup of a one-shot context: the given xid (error if its cgroup has processes)
/// or the first free dynamic one.
fn claim_cgroup(layout: &CgroupLayout, xid: Option<u32>) -> Result<GuestCgroup, String> {
    let candidates: Vec<u32> = match xid {
        Some(x) if !(crate::config::XID_MIN..=XID_DYNAMIC_END).contains(&x) => {
            return Err(format!(
                "context {x} is out of range {}-{XID_DYNAMIC_END} (0 is the host, 1 the spectator)",
                crate::config::XID_MIN
            ))
        }
        Some(x) => vec![x],
        None => (XID_DYNAMIC_START..=XID_DYNAMIC_END).collect(),
    };
    for x in candidates {
        let cg = GuestCgroup::new(layout, x);
        if cg.exists() && !cg.pids().is_empty() {
            if xid.is_some() {
                return Err(format!("context {x} is in use (see vserver-stat)"));
            }
            continue;
        }
        cg.enter_scope(&format!("chcontext, context {x}"), &[])
            .map_err(|e| e.to_string())?;
        cg.create().map_err(|e| e.to_string())?;
        return Ok(cg);
    }
    Err(String::from("no free context id"))
}

/// Run `o.argv` in a new context, wait for it and remove the context. Returns (xid, status).
/// `announce(xid)` is called once the context exists (chcontext prints it).
///
/// Errors: a message naming the step.
pub fn run(o: &OneShot, announce: &mut dyn FnMut(u32)) -> Result<i32, String> {
    let layout = CgroupLayout::detect().map_err(|e| e.to_string())?;
    let cg = claim_cgroup(&layout, o.xid)?;
    let result = run_in(&cg, o, announce);
    let _ = cg.remove();
    result
}

fn run_in(cg: &GuestCgroup, o: &OneShot, announce: &mut dyn FnMut(u32)) -> Result<i32, String> {
    let cap_drop: Vec<Capability> = match &o.keep {
        Some(k) => crate::security::caps::to_drop(k),
        None => Vec::new(),
    };
    let seccomp = if o.seccomp {
        let keep = o
            .keep
            .clone()
            .unwrap_or_else(crate::security::caps::all_supported);
        let cache = crate::paths::Paths::resolve(None, None, None, None)
            .run_dir
            .join(".seccomp");
        Some(
            SeccompProgram::guest_profile_cached(&keep, &[], &[], &Default::default(), &cache)
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    let env: Vec<CString> = std::env::vars()
        .filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok())
        .collect();
    let spec = ContextSpec {
        label: String::from("chcontext"),
        xid: cg.xid,
        namespaces: CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS,
        root: None,
        binds: Vec::new(),
        proc_views: Vec::new(),
        nice: None,
        ioprio: None,
        rlimits: Vec::new(),
        hostname: o.hostname.clone(),
        domainname: o.domainname.clone(),
        cap_drop,
        seccomp,
        interfaces: Vec::new(),
        console: None,
        payload: Payload::Exec {
            argv: o
                .argv
                .iter()
                .filter_map(|a| CString::new(a.as_str()).ok())
                .collect(),
            env,
        },
        userns: None,
        oci: None,
        systemd: None,
    };
    announce(cg.xid);
    let cg_fd = cg.open_unified().map_err(|e| e.to_string())?;
    let mut prepare = |pid: i32| cg.add_pid(pid, cg_fd.is_some()).map_err(|e| e.to_string());
    // The shell in the context owns the terminal; chcontext just waits.
    // SAFETY: ignoring signals is async-signal-safe; restored by exec in the child anyway.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGINT,
            nix::sys::signal::SigHandler::SigIgn,
        );
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGQUIT,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
    let s = spawn(&spec, cg_fd.as_ref(), &mut prepare, None).map_err(|e| e.to_string())?;
    super::clone::wait_pidfd(s.pidfd.as_fd()).map_err(|e| format!("wait: {e}"))
}
