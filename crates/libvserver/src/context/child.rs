//! The first process of a new context sets itself up, in this order (one call per step):
//!
//! 1. wait for the parent's "go" (it has put us in every cgroup and created our veths; with a
//!    user namespace it has also written our id maps, set our nice level, I/O priority and
//!    rlimits, and sent the detached mounts of our root and binds): then, in a user namespace,
//!    become uid/gid 0 inside and receive those mounts;
//! 2. unshare the cgroup namespace, so /proc/self/cgroup shows `/` inside;
//! 3. network: loopback up, then each interface's address, link and default route; an OCI
//!    container first joins the namespaces its config names by path, and after this step
//!    waits while the runtime runs the prestart and createRuntime hooks;
//! 4. host name and domain name (UTS namespace);
//! 5. the root: pivot_root into the guest root with /proc, /sys, /dev and the masks
//!    ([`crate::rootfs`]); chcontext keeps the host tree and only mounts a fresh /proc;
//! 6. the console becomes stdio (not the controlling terminal: see [`make_stdio_console`]);
//! 7. [`finish`]: environment, capability bounding set, seccomp, fds, then exec (or the
//!    built-in init, which keeps running as pid 1).
//!
//! A failing step writes one message to the error pipe and exits 127; the parent kills and
//! reaps us, so a failed start leaves no process behind.

use super::{ContextSpec, GuestIface, Payload};
use crate::security::seccomp::SeccompProgram;
use caps::Capability;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

/// Standard PATH inside guests.
pub const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Exit with a report on the error pipe.
pub fn fail(err: &OwnedFd, msg: &str) -> ! {
    super::sync::report(err, msg);
    // SAFETY: _exit is async-signal-safe and skips atexit handlers of the parent's copy.
    unsafe { libc::_exit(127) }
}

/// Run the setup sequence of a new context and exec its payload. Never returns.
///
/// `mounts` is the channel of [`super::userns_prepare`] (a user namespace only). `stop`, when
/// given, is (in place, resume): once in all its namespaces the child writes a byte on the
/// first and waits for one on the second (see [`super::spawn`]'s `joined`).
pub fn setup_and_run(
    spec: &ContextSpec,
    go: OwnedFd,
    err: OwnedFd,
    mounts: Option<OwnedFd>,
    stop: Option<(OwnedFd, OwnedFd)>,
) -> ! {
    // A monitor killed during the setup takes the half-made guest with it (set before waiting
    // for "go": a monitor already dead closed the pipe, so wait_go fails). Cleared just before
    // the guest's program runs, whose life no longer depends on the monitor's.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // Until its execve this process holds the runtime's fds and is our binary: nothing in the
    // guest or container may read or trace it (execve makes the program dumpable again).
    let _ = nix::sys::prctl::set_dumpable(false);
    if !super::sync::wait_go(&go) {
        // SAFETY: see fail().
        unsafe { libc::_exit(1) }
    }
    drop(go);
    // The notify socket of a systemd guest lives in the host's run directory (root's, mode
    // 0700): taken now, while this process still has the host's uid.
    let notify = match spec.systemd.as_ref().and_then(|s| s.notify.as_deref()) {
        Some(p) => match crate::rootfs::systemd::open_notify(p) {
            Ok(t) => Some(t),
            Err(e) => fail(&err, &e),
        },
        None => None,
    };
    let trees = match &mounts {
        Some(chan) => {
            let mut t = match super::receive_trees(chan, spec.binds.len()) {
                Ok(t) => t,
                Err(e) => fail(&err, &e),
            };
            // Still the host's uid (no capability over host files is left, but the owner's
            // permissions are): the guest root's path may lead through directories that only
            // host root may search (the root base is mode 0700).
            if let Some(root) = &spec.root {
                match nix::fcntl::open(
                    root,
                    nix::fcntl::OFlag::O_PATH
                        | nix::fcntl::OFlag::O_DIRECTORY
                        | nix::fcntl::OFlag::O_NOFOLLOW
                        | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                ) {
                    Ok(fd) => t.root_dir = Some(fd),
                    Err(e) => fail(&err, &format!("open {}: {e}", root.display())),
                }
            }
            if let Err(e) = crate::security::userns::become_root_inside() {
                fail(&err, &e);
            }
            // The change of credentials cleared the parent-death signal: set it again.
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            Some(t)
        }
        None => None,
    };
    drop(mounts);
    crate::testhook::pause("child-go");
    if let Some(x) = &spec.oci {
        if let Err(e) = super::oci_child::join_namespaces(x) {
            fail(&err, &e);
        }
    }
    if spec.oci.as_ref().is_none_or(|x| x.cgroupns) {
        if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP) {
            fail(&err, &format!("unshare the cgroup namespace: {e}"));
        }
    }
    if spec
        .namespaces
        .contains(nix::sched::CloneFlags::CLONE_NEWNET)
    {
        let r = match &spec.oci {
            Some(_) => super::oci_child::loopback_up(),
            None => setup_network(&spec.interfaces, spec.userns.is_some()),
        };
        if let Err(e) = r {
            fail(&err, &e);
        }
    }
    if let Some((in_place, resume)) = stop {
        if super::sync::send_go(&in_place).is_err() || !super::sync::wait_go(&resume) {
            // SAFETY: see fail().
            unsafe { libc::_exit(1) }
        }
    }
    // In a user namespace the parent has set these (they need the host's capabilities).
    if spec.userns.is_none() {
        if let Some(n) = spec.nice {
            if let Err(e) = set_nice(n) {
                fail(&err, &e);
            }
        }
        if let Some(v) = spec.ioprio {
            if let Err(e) = set_ioprio(v) {
                fail(&err, &e);
            }
        }
        if let Err(e) = set_rlimits(&spec.rlimits) {
            fail(&err, &e);
        }
    }
    if let Some(h) = &spec.hostname {
        if let Err(e) = nix::unistd::sethostname(h) {
            fail(&err, &format!("set host name '{h}': {e}"));
        }
    }
    if let Some(d) = &spec.domainname {
        // SAFETY: pointer and length describe a live byte slice.
        if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0 {
            fail(
                &err,
                &format!("set domain name '{d}': {}", nix::errno::Errno::last()),
            );
        }
    }
    if let Some(x) = &spec.oci {
        if let Err(e) = super::oci_child::write_sysctls(x) {
            fail(&err, &e);
        }
        x.host_pid.set(super::oci_child::host_pid());
        let state = super::oci_child::hook_state_now(x, "creating");
        for (i, h) in x.create_container.iter().enumerate() {
            if let Err(e) = crate::oci::hooks::run(h, &state) {
                fail(&err, &format!("hooks.createContainer[{i}] {}: {e}", h.path));
            }
        }
    }
    let r = match &spec.root {
        Some(root) => crate::rootfs::enter_guest_root(
            root,
            &spec.binds,
            &spec.proc_views,
            spec.console.as_ref(),
            trees,
            spec.oci.as_deref(),
            spec.systemd.as_ref().map(|s| (s, notify)),
        ),
        None => crate::rootfs::fresh_proc_only(),
    };
    if let Err(e) = r {
        fail(&err, &e);
    }
    if let Some(con) = &spec.console {
        if let Err(e) = make_stdio_console(con) {
            fail(&err, &e);
        }
        if spec.oci.as_ref().is_some_and(|x| x.ctty) {
            // SAFETY: TIOCSCTTY on our stdin, the console pty, in our new session.
            if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
                fail(
                    &err,
                    &format!(
                        "make the console the controlling terminal: {}",
                        nix::errno::Errno::last()
                    ),
                );
            }
        }
    }
    if let Some(x) = &spec.oci {
        super::oci_child::finish(x, &spec.cap_drop, spec.seccomp.as_ref(), &spec.payload, err)
    }
    finish(
        &spec.cap_drop,
        spec.seccomp.as_ref(),
        None,
        &spec.payload,
        err,
    )
}

/// A user a command runs as inside the guest (from the guest's /etc/passwd and /etc/group).
#[derive(Debug, Clone, Default)]
pub struct UserSpec {
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary gids.
    pub groups: Vec<u32>,
}

/// Configure loopback and the guest's interfaces inside its new network namespace.
fn setup_network(ifaces: &[GuestIface], userns: bool) -> Result<(), String> {
    use crate::net::netlink::Netlink;
    let mut nl = Netlink::open().map_err(|e| format!("open netlink in the guest: {e}"))?;
    let lo = nl
        .link_index("lo")
        .map_err(|e| e.to_string())?
        .ok_or_else(|| String::from("no loopback interface in the new network namespace"))?;
    nl.set_up(lo).map_err(|e| e.to_string())?;
    for i in ifaces {
        let idx = nl
            .link_index(&i.name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("interface {} did not arrive in the guest", i.name))?;
        for (a, p) in &i.addrs {
            nl.add_address(idx, *a, *p).map_err(|e| e.to_string())?;
        }
        // Announce the addresses when the link comes up (a gratuitous ARP, an unsolicited
        // neighbour advertisement): each start gives the guest's end a new MAC, and the
        // bridge's host would otherwise keep sending to the old one until its entry expires.
        for (dir, key) in [("ipv4", "arp_notify"), ("ipv6", "ndisc_notify")] {
            let p = format!("/proc/sys/net/{dir}/conf/{}/{key}", i.name);
            if std::path::Path::new(&p).exists() {
                std::fs::write(&p, "1").map_err(|e| format!("set {p}: {e}"))?;
            }
        }
        nl.set_up(idx).map_err(|e| e.to_string())?;
    }
    for i in ifaces {
        for gw in &i.gateways {
            nl.add_default_route(*gw).map_err(|e| e.to_string())?;
        }
    }
    // ping(8) without CAP_NET_RAW: ICMP echo sockets for every group, in this namespace only
    // (icmp(7), net.ipv4.ping_group_range). In a user namespace the range must be of mapped
    // gids.
    let range = if userns { "0 65535" } else { "0 2147483647" };
    std::fs::write("/proc/sys/net/ipv4/ping_group_range", range)
        .map_err(|e| format!("set net.ipv4.ping_group_range in the guest: {e}"))?;
    Ok(())
}

/// An rlimit to set: (resource, soft, hard); `u64::MAX` is unlimited (RLIM_INFINITY).
pub type Rlimit = (libc::__rlimit_resource_t, u64, u64);

/// setrlimit(2) each of `limits` on the calling process. Raising a hard limit above the current
/// one needs CAP_SYS_RESOURCE.
pub fn set_rlimits(limits: &[Rlimit]) -> Result<(), String> {
    for (res, soft, hard) in limits {
        let r = libc::rlimit {
            rlim_cur: *soft,
            rlim_max: *hard,
        };
        // SAFETY: a valid pointer to a plain struct.
        if unsafe { libc::setrlimit(*res, &r) } != 0 {
            let e = nix::errno::Errno::last();
            let show = |v: u64| {
                if v == u64::MAX {
                    "unlimited".to_string()
                } else {
                    v.to_string()
                }
            };
            let name = crate::config::rlimit_name(*res);
            let hint = if e == nix::errno::Errno::EPERM {
                " (raising a hard limit above the host's needs CAP_SYS_RESOURCE)"
            } else {
                ""
            };
            return Err(format!(
                "rlimits.{name} = \"{}:{}\": {e}{hint}",
                show(*soft),
                show(*hard)
            ));
        }
    }
    Ok(())
}

/// Set the nice level of the calling process (setpriority(2)); done while CAP_SYS_NICE is still
/// held, so a negative level works; the guest, without CAP_SYS_NICE, cannot lower it again.
pub fn set_nice(n: i32) -> Result<(), String> {
    // SAFETY: plain syscall with integer arguments on this process.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) } != 0 {
        return Err(format!("set nice level {n}: {}", nix::errno::Errno::last()));
    }
    Ok(())
}

/// Set the I/O priority of the calling process (ioprio_set(2), IOPRIO_WHO_PROCESS, itself);
/// children inherit it. The guest's seccomp filter lets it set only this or lower ones.
pub fn set_ioprio(v: u32) -> Result<(), String> {
    // SAFETY: plain syscall with integer arguments on this process.
    if unsafe { libc::syscall(libc::SYS_ioprio_set, 1, 0, v) } != 0 {
        return Err(format!(
            "set I/O priority {v:#x}: {}",
            nix::errno::Errno::last()
        ));
    }
    Ok(())
}

/// Make `tty` the stdin/stdout/stderr of a new session, without making it the session's
/// controlling terminal: as with /dev/console on real hardware, the init has none, so a Ctrl-C
/// typed on the console reaches the console's shell (which takes the terminal, as getty and
/// busybox init's askfirst do), never the init itself.
pub fn make_stdio_console(tty: &OwnedFd) -> Result<(), String> {
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    for n in 0..3 {
        // SAFETY: dup2 onto the standard descriptors; both fds are valid.
        if unsafe { libc::dup2(tty.as_raw_fd(), n) } < 0 {
            return Err(format!(
                "dup2 console to fd {n}: {}",
                nix::errno::Errno::last()
            ));
        }
    }
    Ok(())
}

/// Give the program about to be exec'd a clean signal state: nothing blocked, every disposition
/// default (the Rust runtime ignores SIGPIPE, the monitor ignores SIGHUP, the init blocks the
/// signals it reads from a signalfd; none of that must reach guest programs). Async-signal-safe.
pub fn reset_signals() {
    /// `struct sigaction` as the rt_sigaction(2) system call takes it (not glibc's).
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    let empty: u64 = 0;
    // SAFETY: raw syscalls with valid pointers to plain data; glibc's wrappers would refuse its
    // own internal real-time signals (32, 33), which can be inherited as ignored.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        );
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                );
            }
        }
    }
}

/// Switch to `user` (if any) and execve(2) the payload's argv with its environment, searching
/// the guest's PATH. Seccomp must already be loaded (loading needs CAP_SYS_ADMIN, which a
/// non-root user no longer has). Never returns; failures go to `err`.
pub fn exec_as(user: Option<&UserSpec>, payload: &Payload, err: &OwnedFd) -> ! {
    let Payload::Exec { argv, env } = payload else {
        fail(err, "the built-in init cannot be exec'd")
    };
    if let Some(u) = user {
        let groups: Vec<nix::unistd::Gid> = u
            .groups
            .iter()
            .map(|g| nix::unistd::Gid::from_raw(*g))
            .collect();
        if let Err(e) = nix::unistd::setgroups(&groups) {
            fail(err, &format!("setgroups for uid {}: {e}", u.uid));
        }
        if let Err(e) = nix::unistd::setgid(nix::unistd::Gid::from_raw(u.gid)) {
            fail(err, &format!("setgid {}: {e}", u.gid));
        }
        if let Err(e) = nix::unistd::setuid(nix::unistd::Uid::from_raw(u.uid)) {
            fail(err, &format!("setuid {}: {e}", u.uid));
        }
    }
    reset_signals();
    let Some(prog) = argv.first() else {
        fail(err, "no command given")
    };
    // execvpe searches the PATH of this process's environment: use the guest's.
    std::env::set_var("PATH", GUEST_PATH);
    let e = nix::unistd::execvpe(prog, argv, env).unwrap_err();
    fail(err, &format!("execute {}: {e}", prog.to_string_lossy()))
}

/// Where this process's original argv and environment strings are: [arg_start, arg_end,
/// env_start, env_end] from /proc/self/stat fields 48-51 (proc(5)). A fork has the same.
///
/// Errors: /proc/self/stat unreadable or without those fields.
pub fn arg_env_area() -> Result<[usize; 4], String> {
    let stat = std::fs::read_to_string("/proc/self/stat")
        .map_err(|e| format!("read /proc/self/stat: {e}"))?;
    let rest = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..))
        .unwrap_or("");
    let f: Vec<usize> = rest
        .split_whitespace()
        .skip(45)
        .take(4)
        .filter_map(|v| v.parse().ok())
        .collect();
    let [a, b, c, d] = f[..] else {
        return Err(String::from("no argv/environ addresses in /proc/self/stat"));
    };
    for (start, end) in [(a, b), (c, d)] {
        if start == 0 || end <= start || end - start > (1 << 20) {
            return Err(format!("odd argv/environ area {start:#x}-{end:#x}"));
        }
    }
    Ok([a, b, c, d])
}

/// Overwrite the argv and environment strings at `area` (from [`arg_env_area`] of this process
/// or of the process it was forked from) with `name` and nothing, the setproctitle(3) way, so
/// /proc/PID/cmdline and /proc/PID/environ show no host command line or environment.
pub fn scrub_arg_env(area: [usize; 4], name: &[u8]) {
    // SAFETY: single-threaded; clearenv only resets libc's environ, which nothing holds.
    unsafe { libc::clearenv() };
    let [arg_start, arg_end, env_start, env_end] = area;
    // SAFETY: [start, end) are this process's own argv/environ strings on its stack (checked in
    // arg_env_area), writable, and no longer read by anyone (clearenv above; argv is unused).
    unsafe {
        std::ptr::write_bytes(arg_start as *mut u8, 0, arg_end - arg_start);
        std::ptr::write_bytes(env_start as *mut u8, 0, env_end - env_start);
        let n = name.len().min(arg_end - arg_start - 1);
        std::ptr::copy_nonoverlapping(name.as_ptr(), arg_start as *mut u8, n);
    }
}

/// The built-in init shows neither the host's `vserver NAME start` command line nor the
/// administrator's environment.
fn hide_host_cmdline_and_environ() -> Result<(), String> {
    scrub_arg_env(arg_env_area()?, b"vserver-init");
    Ok(())
}

/// The default environment of processes in a guest, plus `extra` (`K=V`).
pub fn guest_env(extra: &[(&str, &str)]) -> Vec<CString> {
    let mut v: Vec<(String, String)> = vec![
        ("PATH".into(), GUEST_PATH.into()),
        ("HOME".into(), "/root".into()),
        ("TERM".into(), "linux".into()),
        ("container".into(), "vserver".into()),
    ];
    for (k, val) in extra {
        v.retain(|(kk, _)| kk != k);
        v.push(((*k).into(), (*val).into()));
    }
    v.into_iter()
        .filter_map(|(k, val)| CString::new(format!("{k}={val}")).ok())
        .collect()
}

/// Last steps shared by start, exec and chcontext: environment, bounding set, seccomp, fds,
/// then exec of the payload (or the built-in init). Never returns.
pub fn finish(
    cap_drop: &[Capability],
    seccomp: Option<&SeccompProgram>,
    user: Option<&UserSpec>,
    payload: &Payload,
    err: OwnedFd,
) -> ! {
    if let Err(e) = crate::security::caps::apply_bounding(cap_drop, false) {
        fail(&err, &e);
    }
    if let Err(e) = super::clone::cloexec_from(3) {
        fail(&err, &format!("mark inherited fds close-on-exec: {e}"));
    }
    // SAFETY: umask only changes this process's file creation mask.
    unsafe { libc::umask(0o022) };
    if let Err(e) = crate::security::keyring::fresh_session_keyring() {
        fail(&err, &format!("join a fresh session keyring: {e}"));
    }
    crate::testhook::pause("child-pre-exec");
    // Setup is done: the guest lives on if its monitor dies (see setup_and_run).
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0) };
    // Seccomp last: after it, mount/unshare and friends are refused.
    if let Some(s) = seccomp {
        if let Err(e) = s.load() {
            fail(&err, &format!("load the seccomp filter: {e}"));
        }
    }
    match payload {
        Payload::Exec { .. } => exec_as(user, payload, &err),
        Payload::Builtin(plan) => {
            // The built-in init never execs: it must hide the host's command line and
            // environment (/proc/1/cmdline, /proc/1/environ), lose the dropped capabilities
            // itself, refuse ptrace and /proc/1/mem to the guest, and really close every
            // inherited fd (the monitor's pipes and pty master among them); closing the error
            // pipe tells the parent that setup is done.
            if let Err(e) = hide_host_cmdline_and_environ() {
                fail(&err, &e);
            }
            if let Err(e) = crate::security::caps::apply_bounding(cap_drop, true) {
                fail(&err, &e);
            }
            let _ = nix::sys::prctl::set_dumpable(false);
            std::mem::forget(err);
            let _ = super::clone::close_from(3);
            crate::monitor::init::run(plan)
        }
    }
}
