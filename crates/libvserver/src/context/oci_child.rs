//! The steps of an OCI container's init that guests do not have (see [`crate::oci`]), in the
//! order the child runs them: join the given namespaces, write the sysctls, run the
//! createContainer hooks (before pivot_root), and after the root is built: a new session and
//! session keyring, no_new_privs, the user and capability sets and (without no_new_privs) the
//! seccomp filter; report ready, wait at the gate for `start`, the filter (with
//! no_new_privs), the startContainer hooks, then exec the program with the container's
//! environment.

use super::child::{fail, reset_signals};
use super::{OciExtras, Payload};
use crate::security::seccomp::SeccompProgram;
use caps::{CapSet, Capability, CapsHashSet};
use std::os::fd::{AsFd, OwnedFd};

/// setns(2) into every namespace of `x.join`, user namespace first.
///
/// Errors: the namespace type and the OS error.
pub(super) fn join_namespaces(x: &OciExtras) -> Result<(), String> {
    for (flag, fd) in &x.join {
        nix::sched::setns(fd.as_fd(), *flag)
            .map_err(|e| format!("join the namespace {flag:?} given in config.json: {e}"))?;
    }
    Ok(())
}

/// Write each sysctl through /proc/sys (still the host's procfs, which shows the caller's
/// network and IPC namespaces: the container's new ones).
///
/// Errors: the key and the OS error.
pub(super) fn write_sysctls(x: &OciExtras) -> Result<(), String> {
    for (k, v) in &x.sysctl {
        let p = format!("/proc/sys/{}", k.replace('.', "/"));
        std::fs::write(&p, v).map_err(|e| format!("sysctl {k} = {v}: {e}"))?;
    }
    Ok(())
}

/// The state JSON for this process's hooks: `x.hook_state` with `status` and the init's pid
/// as the runtime sees it (`x.host_pid`, read before pivot_root).
pub(super) fn hook_state_now(x: &OciExtras, status: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(&x.hook_state) {
        Ok(mut v) => {
            v["status"] = serde_json::json!(status);
            v["pid"] = serde_json::json!(x.host_pid.get());
            v.to_string()
        }
        Err(_) => x.hook_state.clone(),
    }
}

/// This process's pid in the host's pid namespace: the host's /proc is still mounted (before
/// pivot_root), and its `self` names us as the host sees us.
pub(super) fn host_pid() -> i32 {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

/// Bring the loopback interface of a new network namespace up (runc does too).
pub(super) fn loopback_up() -> Result<(), String> {
    use crate::net::netlink::Netlink;
    let mut nl = Netlink::open().map_err(|e| format!("open netlink in the container: {e}"))?;
    if let Some(lo) = nl.link_index("lo").map_err(|e| e.to_string())? {
        nl.set_up(lo).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Wait until `start` writes its byte into the exec FIFO. A FIFO whose writer closed without a
/// byte ends the container.
fn wait_gate(gate: &OwnedFd) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    // Blocking from here on: the FIFO was opened non-blocking so that create did not wait.
    let _ = nix::fcntl::fcntl(
        gate,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    );
    loop {
        let mut fds = [PollFd::new(gate.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
            Ok(_) => {}
        }
        let mut b = [0u8; 1];
        return matches!(nix::unistd::read(gate, &mut b), Ok(1));
    }
}

fn cap_set(v: &[Capability]) -> CapsHashSet {
    v.iter().copied().collect()
}

/// Switch to the configured user keeping exactly the configured capability sets
/// (capabilities(7): keep-caps across setuid, then capset(2) and PR_CAP_AMBIENT_RAISE).
fn become_user(x: &OciExtras) -> Result<(), String> {
    let u = &x.user;
    let [eff, perm, inh, amb] = &x.caps;
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let groups: Vec<nix::unistd::Gid> = u
        .groups
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups {:?}: {e}", u.groups))?;
    nix::unistd::setresgid(
        nix::unistd::Gid::from_raw(u.gid),
        nix::unistd::Gid::from_raw(u.gid),
        nix::unistd::Gid::from_raw(u.gid),
    )
    .map_err(|e| format!("setgid {}: {e}", u.gid))?;
    nix::unistd::setresuid(
        nix::unistd::Uid::from_raw(u.uid),
        nix::unistd::Uid::from_raw(u.uid),
        nix::unistd::Uid::from_raw(u.uid),
    )
    .map_err(|e| format!("setuid {}: {e}", u.uid))?;
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    // Effective first (it must stay within permitted), then permitted, then inheritable.
    caps::set(None, CapSet::Effective, &cap_set(eff))
        .map_err(|e| format!("set the effective capabilities: {e}"))?;
    caps::set(None, CapSet::Permitted, &cap_set(perm))
        .map_err(|e| format!("set the permitted capabilities: {e}"))?;
    caps::set(None, CapSet::Inheritable, &cap_set(inh))
        .map_err(|e| format!("set the inheritable capabilities: {e}"))?;
    caps::clear(None, CapSet::Ambient)
        .map_err(|e| format!("clear the ambient capabilities: {e}"))?;
    // capabilities(7): an ambient capability must be permitted and inheritable. Specs written
    // by older runc list ambient ones without inheritable ones; runc skips those, and so do we.
    for c in amb.iter().filter(|c| perm.contains(c) && inh.contains(c)) {
        caps::raise(None, CapSet::Ambient, *c)
            .map_err(|e| format!("raise the ambient capability {c}: {e}"))?;
    }
    Ok(())
}

/// Find `prog` as execve(2) will: a path with a slash as it is, else in the directories of
/// `path`; it must be an executable file (access(2) X_OK, not a directory).
///
/// Errors: runc's words, `exec: "PROG": executable file not found in $PATH` or the OS error.
fn find_program(prog: &str, path: &str) -> Result<(), String> {
    let usable = |p: &str| {
        let c = match std::ffi::CString::new(p) {
            Ok(c) => c,
            Err(_) => return false,
        };
        // SAFETY: valid C string.
        let x = unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0;
        x && std::fs::metadata(p).is_ok_and(|m| m.is_file())
    };
    if prog.contains('/') {
        return if usable(prog) {
            Ok(())
        } else {
            Err(format!(
                "exec: \"{prog}\": {}",
                std::fs::metadata(prog)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| String::from("not an executable file"))
            ))
        };
    }
    if path
        .split(':')
        .any(|d| usable(&format!("{}/{prog}", if d.is_empty() { "." } else { d })))
    {
        return Ok(());
    }
    Err(format!(
        "exec: \"{prog}\": executable file not found in $PATH"
    ))
}

/// The container's PATH (from its environment), else the guests' default.
fn path_of(env: &[std::ffi::CString]) -> String {
    env.iter()
        .filter_map(|e| e.to_str().ok())
        .find_map(|e| e.strip_prefix("PATH=").map(String::from))
        .unwrap_or_else(|| super::child::GUEST_PATH.to_string())
}

/// A session keyring of its own (never the caller's: containerd's, shared by every pod),
/// `linux.personality` and `linux.memoryPolicy`.
///
/// Errors: the step and the OS error.
fn keyring_and_personality(x: &OciExtras) -> Result<(), String> {
    super::sched::reset_affinity();
    crate::security::keyring::fresh_session_keyring()
        .map_err(|e| format!("join a fresh session keyring: {e}"))?;
    if let Some(p) = x.personality {
        // SAFETY: plain syscall with an integer argument.
        if unsafe { libc::personality(p) } < 0 {
            return Err(format!("personality {p:#x}: {}", nix::errno::Errno::last()));
        }
    }
    if let Some(m) = &x.mempolicy {
        m.apply().map_err(|e| format!("linux.memoryPolicy: {e}"))?;
    }
    Ok(())
}

/// `process.scheduler` and `process.ioPriority`, applied with the process's own credentials
/// (after the user switch):
/// a real-time or deadline policy then needs CAP_SYS_NICE in the config's sets, as for the
/// program itself. Applied as host root it let a container without it take SCHED_DEADLINE,
/// which the cgroup's CPU quota does not bound.
///
/// Errors: the OS error (EPERM without the capability).
fn apply_scheduler(x: &OciExtras) -> Result<(), String> {
    if let Some(s) = &x.scheduler {
        s.apply().map_err(|e| format!("process.scheduler: {e}"))?;
    }
    // The I/O priority likewise (ioprio_set(2), IOPRIO_WHO_PROCESS of ourselves).
    if let Some(v) = x.ioprio {
        // SAFETY: plain syscall with integer arguments.
        if unsafe { libc::syscall(libc::SYS_ioprio_set, 1, 0, v) } != 0 {
            return Err(format!("process.ioPriority: {}", nix::errno::Errno::last()));
        }
    }
    Ok(())
}

/// chdir(2) to `process.cwd`, required to be inside the root (outside a pivot_root'ed tree a
/// cwd could be anywhere).
///
/// Errors: the path and the OS error.
fn enter_cwd(x: &OciExtras) -> Result<(), String> {
    nix::unistd::chdir(x.cwd.as_str()).map_err(|e| format!("process.cwd {}: {e}", x.cwd))?;
    nix::unistd::getcwd()
        .map(drop)
        .map_err(|_| format!("process.cwd {} is outside the container", x.cwd))
}

/// An exec'd process's reductions, made in the join protocol's intermediate (host pid
/// namespace, never visible in the container) before it forks the command: rlimits, a fresh
/// session keyring, the personality, no_new_privs, the bounding set, the seccomp filter and
/// the user with its capability sets. The command is born with the container's power and
/// nothing more: a container that may trace processes in its pid namespace finds no moment
/// where the exec'd process holds the runtime's (it waits for the go byte already reduced).
/// The filter is loaded before the user switch when no_new_privs is not asked for (loading it
/// then needs CAP_SYS_ADMIN), else after it, as for the init.
///
/// Errors: the step and the OS error.
pub(crate) fn reduce_for_exec(
    x: &OciExtras,
    cap_drop: &[Capability],
    seccomp: Option<&SeccompProgram>,
) -> Result<(), String> {
    keyring_and_personality(x)?;
    if let Some(cpus) = &x.exec_affinity.0 {
        super::sched::set_affinity(cpus)
            .map_err(|e| format!("process.execCPUAffinity.initial: {e}"))?;
    }
    if x.no_new_privs {
        nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    }
    crate::security::caps::apply_bounding(cap_drop, false)?;
    let load = || -> Result<(), String> {
        match seccomp {
            Some(s) => s
                .load()
                .map_err(|e| format!("load the seccomp filter: {e}")),
            None => Ok(()),
        }
    };
    if !x.no_new_privs {
        load()?;
    }
    // The working directory while still root (a user's cwd may be reachable by root only
    // on the way, as runc tries it first); the command enters it again if this failed.
    let _ = enter_cwd(x);
    become_user(x)?;
    let _ = nix::sys::prctl::set_dumpable(false);
    if x.no_new_privs {
        load()?;
    }
    Ok(())
}

/// The rlimits of an exec'd process, set in the intermediate before it joins the container's
/// user namespace (raising a hard limit needs CAP_SYS_RESOURCE in the initial one). The soft
/// RLIMIT_NPROC is kept at its hard value until [`finish_exec`] (the intermediate forks as the
/// container's user, and would count against the limit itself); returns that soft value.
///
/// Errors: the resource and the OS error.
pub(crate) fn exec_rlimits(rlimits: &[super::child::Rlimit]) -> Result<Option<u64>, String> {
    let mut nproc_soft = None;
    let lifted: Vec<super::child::Rlimit> = rlimits
        .iter()
        .map(|&(res, soft, hard)| {
            if res == libc::RLIMIT_NPROC {
                nproc_soft = Some(soft);
                (res, hard, hard)
            } else {
                (res, soft, hard)
            }
        })
        .collect();
    super::child::set_rlimits(&lifted)?;
    Ok(nproc_soft)
}

/// The container's /etc/passwd, if it is a regular file: opened without blocking and without
/// following a symlink at its last component (a FIFO planted by the image must not hang a
/// create or an exec), at most 4 MiB read.
fn read_passwd() -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open("/etc/passwd")
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    f.take(4 << 20).read_to_string(&mut text).ok()?;
    Some(text)
}

/// `HOME` from the container's /etc/passwd for `uid` (else `/`) when `env` has none, as runc
/// and crun add it; `env` otherwise as it is.
fn with_home(env: &[std::ffi::CString], uid: u32) -> Vec<std::ffi::CString> {
    if env.iter().any(|e| e.as_bytes().starts_with(b"HOME=")) {
        return env.to_vec();
    }
    let home = read_passwd()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid) && !f[5].is_empty())
                    .then(|| f[5].to_string())
            })
        })
        .unwrap_or_else(|| String::from("/"));
    let mut v = env.to_vec();
    if let Ok(c) = std::ffi::CString::new(format!("HOME={home}")) {
        v.push(c);
    }
    v
}

/// An exec'd process's last steps once released (after [`reduce_for_exec`] in its parent):
/// its working directory (inside the container), umask, signal dispositions and the program;
/// never returns. Failures are reported on `err` until execve(2).
pub(crate) fn finish_exec(x: &OciExtras, payload: &Payload, err: OwnedFd) -> ! {
    let Payload::Exec { argv, env } = payload else {
        fail(&err, "an OCI exec runs a program")
    };
    let env = &with_home(env, x.user.uid);
    let here = nix::unistd::getcwd().ok();
    if here.as_deref() != Some(std::path::Path::new(x.cwd.trim_end_matches('/')))
        && here.as_deref() != Some(std::path::Path::new(&x.cwd))
    {
        if let Err(e) = enter_cwd(x) {
            fail(&err, &e);
        }
    }
    // SAFETY: umask only changes this process's file creation mask.
    unsafe { libc::umask(x.umask as libc::mode_t) };
    // In the container's cgroup now: its scheduling and I/O class (with the process's own
    // capabilities, and where the cgroup's real-time runtime applies), and its cpuset.
    if let Err(e) = apply_scheduler(x) {
        fail(&err, &e);
    }
    if let Some(cpus) = &x.exec_affinity.1 {
        if let Err(e) = super::sched::set_affinity(cpus) {
            fail(&err, &format!("process.execCPUAffinity.final: {e}"));
        }
    }
    let Some(prog) = argv.first() else {
        fail(&err, "process.args is empty")
    };
    if let Err(e) = find_program(&prog.to_string_lossy(), &path_of(env)) {
        fail(&err, &e);
    }
    crate::testhook::pause("oci-pre-exec");
    reset_signals();
    std::env::set_var("PATH", path_of(env));
    let e = nix::unistd::execvpe(prog, argv, env).unwrap_err();
    fail(&err, &format!("exec {}: {e}", prog.to_string_lossy()))
}

/// Last steps of an OCI container's init; never returns. `err` reports setup failures to
/// `create`; it is closed (the "ready" signal) before the gate, and later failures go to the
/// container's stderr.
pub(crate) fn finish(
    x: &OciExtras,
    cap_drop: &[Capability],
    seccomp: Option<&SeccompProgram>,
    payload: &Payload,
    err: OwnedFd,
) -> ! {
    let Payload::Exec { argv, env } = payload else {
        fail(
            &err,
            "an OCI container runs a program, not the built-in init",
        )
    };
    // Every inherited fd but stdio, the passed ones, the gate and the error pipe is closed
    // now, not only at execve: the init waits at the gate while exec may already run
    // processes in the container; and before any path of the image is looked up (its
    // /etc/passwd, the cwd), so that no symlink through /proc/self/fd/N reaches a host
    // directory the runtime had open (the runc CVE-2024-21626 class).
    {
        use std::os::fd::AsRawFd;
        let mut keep: Vec<i32> = (3..3 + x.preserve_fds as i32).collect();
        keep.push(err.as_raw_fd());
        keep.extend(x.gate.as_ref().map(|g| g.as_raw_fd()));
        keep.extend(crate::testhook::fd());
        if let Err(e) = super::clone::close_all_but(&keep) {
            fail(&err, &format!("close inherited fds: {e}"));
        }
    }
    let env = &with_home(env, x.user.uid);
    if let Err(e) = crate::security::caps::apply_bounding(cap_drop, false) {
        fail(&err, &e);
    }
    if let Err(e) = enter_cwd(x) {
        fail(&err, &e);
    }
    // SAFETY: umask only changes this process's file creation mask.
    unsafe { libc::umask(x.umask as libc::mode_t) };
    // `create` exits once we are ready: the container must outlive it.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0) };
    // A session of its own, as runc gives: never the caller's controlling terminal (through
    // /dev/tty a container could type into the administrator's shell with TIOCSTI) nor its
    // process group. A console was made the controlling terminal of a new session already.
    let _ = nix::unistd::setsid();
    if let Err(e) = keyring_and_personality(x) {
        fail(&err, &e);
    }
    // The process is what config.json says before it reports ready and waits for `start`:
    // nothing waits at the gate with the runtime's power (a process sharing its pid
    // namespace could trace it). As runc: no_new_privs, then the filter while still
    // privileged when no_new_privs is not asked for, then the user and capability sets; with
    // no_new_privs the filter comes last, just before the program.
    if x.no_new_privs {
        if let Err(e) = nix::sys::prctl::set_no_new_privs() {
            fail(&err, &format!("no_new_privs: {e}"));
        }
    }
    let load = |err: &OwnedFd| {
        if let Some(s) = seccomp {
            if let Err(e) = s.load() {
                fail(err, &format!("load the seccomp filter: {e}"));
            }
        }
    };
    if !x.no_new_privs {
        load(&err);
    }
    if let Err(e) = become_user(x) {
        fail(&err, &e);
    }
    if let Err(e) = apply_scheduler(x) {
        fail(&err, &e);
    }
    // A change of credentials may have made us dumpable again (capabilities(7)); until execve
    // nothing here may be traced or read from the container.
    let _ = nix::sys::prctl::set_dumpable(false);
    // A program that is not there, or not executable for the user, fails create itself (as
    // runc reports it), not later.
    if let Some(prog) = argv.first() {
        if let Err(e) = find_program(&prog.to_string_lossy(), &path_of(env)) {
            fail(&err, &e);
        }
    }
    // An init reports ready now (create returns) and later failures go to the container's
    // stderr; an exec'd process reports until its execve.
    let err = match &x.gate {
        Some(_) => {
            match nix::fcntl::fcntl(std::io::stderr(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3)) {
                Ok(fd) => {
                    drop(err);
                    // SAFETY: a new fd fcntl just returned, owned by nobody else.
                    unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
                }
                Err(_) => err,
            }
        }
        None => err,
    };
    if let Some(gate) = &x.gate {
        if !wait_gate(gate) {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(1) }
        }
    }
    if x.no_new_privs {
        load(&err);
    }
    // The startContainer hooks run as the program will (runtime-spec config.md): its user,
    // capabilities, no_new_privs and seccomp filter, never with the runtime's power.
    let state = hook_state_now(x, "created");
    for (i, h) in x.start_container.iter().enumerate() {
        if let Err(e) = crate::oci::hooks::run(h, &state) {
            fail(&err, &format!("hooks.startContainer[{i}] {}: {e}", h.path));
        }
    }
    crate::testhook::pause("oci-pre-exec");
    reset_signals();
    let Some(prog) = argv.first() else {
        fail(&err, "process.args is empty")
    };
    std::env::set_var("PATH", path_of(env));
    let e = nix::unistd::execvpe(prog, argv, env).unwrap_err();
    fail(&err, &format!("exec {}: {e}", prog.to_string_lossy()))
}
