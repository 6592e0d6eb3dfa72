//! `vserver NAME start`.
//!
//! 1. lock the guest, refuse if running, repair what a crashed run left;
//! 2. check the context id is free and the root exists; 3. `pre-start` script;
//! 4. cgroup, host bridges, seccomp program, console pty;
//! 5. fork the monitor, which clones the init into new namespaces and the cgroup, creates its
//!    veths and reports; 6. `post-start` script.
//!
//! Any failure after step 3 removes what was made (process, cgroup, veths, state).

use super::state::{now_unix, start_of, GuestLock, RunState};
use super::{failed, scripts, Guest, GuestError};
use crate::config::InitStyle;
use crate::context::{self, ContextSpec, Payload};
use crate::monitor::init::{sysv_plan, InitPlan};
use crate::security::{caps, seccomp::SeccompProgram};
use nix::sched::CloneFlags;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};

/// Result of a successful start.
#[derive(Debug)]
pub struct Started {
    /// The state written by the monitor.
    pub state: RunState,
    /// Non-fatal problems (a failing post-start script).
    pub warnings: Vec<String>,
}

fn cstrings(v: &[String]) -> Vec<CString> {
    v.iter()
        .filter_map(|s| CString::new(s.as_str()).ok())
        .collect()
}

/// Capabilities to drop for `g` and its seccomp filter. A guest whose init is systemd
/// (`systemd`) keeps CAP_SETPCAP too, unless its config drops it: systemd lowers the bounding
/// set of units with CapabilityBoundingSet= (journald, logind), which needs it.
pub(crate) fn security_of(
    g: &Guest,
    systemd: bool,
) -> Result<(Vec<::caps::Capability>, SeccompProgram), GuestError> {
    let parse = |v: &[String]| {
        v.iter()
            .filter_map(|c| caps::parse_cap(c).ok())
            .collect::<Vec<_>>()
    };
    let mut add = parse(&g.config.capabilities.add);
    if systemd {
        add.push(::caps::Capability::CAP_SETPCAP);
    }
    let keep = caps::secure_set(&add, &parse(&g.config.capabilities.drop));
    let mut refused = Vec::new();
    if g.config.stop.on_reboot == crate::config::GuestAction::Ignore {
        refused.extend([0x0123_4567, 0xA1B2_C3D4]); // RESTART, RESTART2
    }
    if g.config.stop.on_halt == crate::config::GuestAction::Ignore {
        refused.extend([0xCDEF_0123, 0x4321_FEDC]); // HALT, POWER_OFF
    }
    let ioprio = ioprio_of(g)
        .map(crate::config::ioprio_allowed)
        .unwrap_or_default();
    let prog = SeccompProgram::guest_profile_cached(
        &keep,
        &refused,
        &ioprio,
        &crate::security::seccomp::Overrides {
            allow: g.config.seccomp.allow.clone(),
            deny: g.config.seccomp.deny.clone(),
        },
        &g.paths.run_dir.join(".seccomp"),
    )
    .map_err(|e| failed(&g.name, format!("seccomp: {e}")))?;
    Ok((caps::to_drop(&keep), prog))
}

/// The ioprio(2) value of the guest's `limits.ionice` (validated with the config).
pub(crate) fn ioprio_of(g: &Guest) -> Option<u32> {
    g.config
        .limits
        .ionice
        .as_deref()
        .and_then(|v| crate::config::parse_ionice(v).ok())
}

/// Longest a start waits for LXCFS to say which /proc files it serves.
pub const LXCFS_PROBE_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// LXCFS's /proc files for the guest, when LXCFS runs on the host and answers within
/// [`LXCFS_PROBE_LIMIT`] (else the host-wide ones stay, with a warning on stderr).
fn proc_views(name: &str) -> Vec<crate::rootfs::BindMount> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let Some(dir) = crate::rootfs::lxcfs_mount(&mounts) else {
        return Vec::new();
    };
    let Some(files) = crate::rootfs::probe_lxcfs(&dir, LXCFS_PROBE_LIMIT) else {
        eprintln!(
            "vserver: {name}: warning: LXCFS at {} did not answer within {} s; the guest sees \
             the host's /proc/meminfo, cpuinfo, stat, swaps, diskstats and loadavg",
            dir.display(),
            LXCFS_PROBE_LIMIT.as_secs()
        );
        return Vec::new();
    };
    files
        .into_iter()
        .map(|f| crate::rootfs::BindMount {
            source: dir.join("proc").join(f),
            target: format!("/proc/{f}"),
            readonly: true,
        })
        .collect()
}

/// Open files of a systemd guest's init unless `[rlimits] nofile` says otherwise: (soft, hard)
/// as systemd gives its services on a real host; its units may ask for up to the hard limit
/// (journald and logind set LimitNOFILE=524288; systemd takes the closest it can get). A
/// host without CAP_SYS_RESOURCE cannot raise the hard limit: its own is kept then.
pub const SYSTEMD_NOFILE: (u64, u64) = (1024, 524_288);

/// A guest's RLIMIT_MSGQUEUE unless `[rlimits] msgqueue` says otherwise: bytes of POSIX
/// message queues its uids may hold (mq_overview(7)); 256 KiB, three queues of the default
/// size (10 messages of 8 KiB), a quarter of the kernel's default for the host's users.
pub const GUEST_MSGQUEUE: u64 = 256 * 1024;
/// A guest's RLIMIT_SIGPENDING unless `[rlimits] sigpending` says otherwise: signals queued
/// for its uids (signal(7)); the host's default is about the number of threads it may run.
pub const GUEST_SIGPENDING: u64 = 8192;

/// The guest's `[rlimits]`, resolved (the config was validated when loaded); `systemd` adds
/// [`SYSTEMD_NOFILE`] where the config has no `nofile`.
pub(crate) fn rlimits_of(g: &Guest, systemd: bool) -> Vec<crate::context::child::Rlimit> {
    let mut v: Vec<crate::context::child::Rlimit> = g
        .config
        .rlimits
        .iter()
        .filter_map(|(n, v)| crate::config::parse_rlimit(n, v).ok())
        .collect();
    if systemd && !v.iter().any(|r| r.0 == libc::RLIMIT_NOFILE) {
        let mut hard = SYSTEMD_NOFILE.1;
        let may_raise = ::caps::has_cap(
            None,
            ::caps::CapSet::Effective,
            ::caps::Capability::CAP_SYS_RESOURCE,
        )
        .unwrap_or(false);
        if !may_raise {
            if let Ok((_, now)) =
                nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            {
                hard = hard.min(now);
            }
        }
        v.push((libc::RLIMIT_NOFILE, SYSTEMD_NOFILE.0.min(hard), hard));
    }
    // Counters the kernel keeps per user and checks against the caller's own limit: a plain
    // guest's root is uid 0 like the host's, so what its processes hold counts against host
    // root too (issue 16: a guest's POSIX message queues made the host's mq_open fail with
    // EMFILE, its queued real-time signals the host's timer_create). Guests get low hard
    // limits unless the config says otherwise; see GUEST_MSGQUEUE and GUEST_SIGPENDING.
    for (res, lim) in [
        (libc::RLIMIT_MSGQUEUE, GUEST_MSGQUEUE),
        (libc::RLIMIT_SIGPENDING, GUEST_SIGPENDING),
    ] {
        if !v.iter().any(|r| r.0 == res) {
            v.push((res, lim, lim));
        }
    }
    // RLIMIT_NICE and RLIMIT_RTPRIO are 0 unless the config says otherwise: inherited from a
    // vserver started with raised ones (systemd LimitNICE=, pam_limits), they would let guest
    // root go below its nice level or take a realtime priority.
    for res in [libc::RLIMIT_NICE, libc::RLIMIT_RTPRIO] {
        if !v.iter().any(|r| r.0 == res) {
            v.push((res, 0, 0));
        }
    }
    v
}

/// Refuse a context id that a running context uses (its cgroup has processes outside this
/// guest's root), naming the running guest when this host's run directory knows it. Guests that
/// merely share the id in their configuration are no conflict until both run; checking only the
/// running ones keeps a start from reading every NAME.toml (a cost that grew with the host).
fn check_xid_free(g: &Guest) -> Result<(), GuestError> {
    let xid = g.config.context;
    let pids = g.cgroup()?.pids();
    if !pids.is_empty() && !super::runs_in_root(g, &pids) {
        let other = super::state::running_guests(&g.paths.run_dir)
            .into_iter()
            .find(|s| s.xid == xid && s.name != g.name)
            .map(|s| format!("guest {}", s.name))
            .unwrap_or_else(|| String::from("a running context (see vserver-stat)"));
        return Err(GuestError::XidInUse {
            name: g.name.clone(),
            xid,
            other,
        });
    }
    Ok(())
}

/// Start guest `g`. Errors: [`GuestError`]; on error nothing of the start remains.
pub fn start(g: &Guest) -> Result<Started, GuestError> {
    start_with_progress(g, &mut |_: &str| {})
}

/// [`start`], reporting long work (the one-time shift of a user-namespace guest's owners where
/// its file system cannot be idmapped) to `progress`.
///
/// Errors: [`GuestError`]; on error nothing of the start remains (a finished shift stays, as
/// its marker records; an interrupted one is finished by the next start).
pub fn start_with_progress(
    g: &Guest,
    progress: &mut dyn crate::storage::progress::Progress,
) -> Result<Started, GuestError> {
    let rd = g.run_dir();
    let lock = GuestLock::acquire(&rd)
        .map_err(|e| failed(&g.name, format!("lock {}: {e}", rd.file("lock").display())))?;
    crate::testhook::init();
    crate::testhook::pause("start-locked");
    // An administrator's start begins a new count of restarts from inside.
    let _ = std::fs::remove_file(rd.file("restarts"));
    start_locked(g, lock, progress)
}

/// [`start`] for a caller that already holds the guest's lock (the monitor restarting a guest
/// after a reboot inside, which must not let a stop slip in between).
pub(crate) fn start_locked(
    g: &Guest,
    lock: GuestLock,
    progress: &mut dyn crate::storage::progress::Progress,
) -> Result<Started, GuestError> {
    let rd = g.run_dir();
    if let Some(st) = g.running() {
        return Err(GuestError::AlreadyRunning {
            name: g.name.clone(),
            xid: st.xid,
        });
    }
    check_xid_free(g)?;
    super::repair(g)?;
    let _ = std::fs::remove_file(rd.file("stopping"));
    scripts::run(g, "initialize")?;
    let root = g.root();
    // A template base and the guests on it never run together (the overlay's lower layer
    // must not change under it).
    let on_me = if crate::storage::overlay::mounted_on(&root).is_empty() {
        Vec::new()
    } else {
        crate::storage::overlay::unmount_stale(&g.paths, &g.name);
        crate::storage::overlay::running_guests_on(&g.paths, &g.name)
    };
    if !on_me.is_empty() {
        return Err(failed(
            &g.name,
            format!(
                "it is the template base of running guest(s) {}; stop them before starting it",
                on_me.join(", ")
            ),
        ));
    }
    if g.config.disk.uses_image() {
        crate::storage::disk::mount_image(&crate::storage::disk::image_path(&root), &root)
            .map_err(|m| failed(&g.name, format!("disk: {m}")))?;
    } else if g.config.disk.template.is_some() {
        crate::storage::overlay::mount(&g.config, &g.paths, &root)
            .map_err(|m| failed(&g.name, format!("template: {m}")))?;
    } else {
        // Project and btrfs quotas: the limits as NAME.toml says now.
        crate::storage::quota::apply(&g.config.disk, &root, g.config.context, false)
            .map_err(|m| failed(&g.name, format!("disk quota: {m}")))?;
    }
    // From here on every failure removes what was made: the disk mount, cgroup, veths, state.
    match check_root_and_launch(g, &root, lock, progress) {
        Ok(state) => {
            let mut warnings = super::network::host_warnings(g);
            if let Err(e) = scripts::run(g, "post-start") {
                warnings.push(e.to_string());
            }
            Ok(Started { state, warnings })
        }
        Err(e) => {
            // The lock went with the launch (the monitor keeps it while it cleans up after a
            // failure); take it again so this repair cannot race the next command.
            let _relock = GuestLock::acquire(&rd);
            let _ = super::repair(g);
            Err(e)
        }
    }
}

/// Check the root, run pre-start, make the cgroup with its limits, launch the monitor and init.
fn check_root_and_launch(
    g: &Guest,
    root: &std::path::Path,
    lock: GuestLock,
    progress: &mut dyn crate::storage::progress::Progress,
) -> Result<RunState, GuestError> {
    scripts::run(g, "prepre-start")?;
    // The root itself, not what a symlink there points at (a guest root is never a link).
    match std::fs::symlink_metadata(root) {
        Ok(m) if m.is_dir() => {}
        // Say what happened: a root removed meanwhile (a delete racing this start) is gone,
        // not "not a directory".
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(failed(
                &g.name,
                format!(
                    "guest root {} does not exist (deleted or moved meanwhile?)",
                    root.display()
                ),
            ))
        }
        Err(e) => {
            return Err(failed(
                &g.name,
                format!("guest root {}: {e}", root.display()),
            ))
        }
        Ok(m) => {
            return Err(failed(
                &g.name,
                format!(
                    "guest root {} is {}, not a directory (a symlink is refused)",
                    root.display(),
                    if m.file_type().is_symlink() {
                        "a symlink"
                    } else {
                        "a file"
                    }
                ),
            ))
        }
    }
    if std::fs::read_dir(root)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
    {
        return Err(failed(
            &g.name,
            format!(
                "guest root {} is empty; build the guest first",
                root.display()
            ),
        ));
    }
    let userns = prepare_userns(g, root, progress)?;
    let layout =
        crate::cgroup::CgroupLayout::detect_cached().map_err(|source| GuestError::Cgroup {
            name: g.name.clone(),
            source,
        })?;
    let systemd = super::systemd::plan(g, root, &layout)?;
    scripts::run(g, "pre-start")?;
    let cg = guest_cgroup(g, systemd.is_some())?;
    // On a systemd host: into the guest's own scope first (a user session or unit that ran
    // this command may end; the guest stays). At shutdown systemd stops the scope after the
    // units that stop the guest cleanly.
    let before: Vec<String> = std::iter::once(format!("vserver@{}.service", g.name))
        .chain(
            g.config
                .mark
                .iter()
                .map(|m| format!("vservers@{m}.service")),
        )
        .collect();
    cg.enter_scope(
        &format!("Virtual server {} (context {})", g.name, g.config.context),
        &before,
    )
    .map_err(|source| GuestError::Cgroup {
        name: g.name.clone(),
        source,
    })?;
    cg.create().map_err(|source| GuestError::Cgroup {
        name: g.name.clone(),
        source,
    })?;
    if let Some(u) = &userns {
        cg.delegate_to(u.base, u.base)
            .map_err(|source| GuestError::Cgroup {
                name: g.name.clone(),
                source,
            })?;
    }
    super::limits::check_cpu_cap(&g.name, &g.config.limits)?;
    cg.apply_limits(&g.config.limits)
        .and_then(|()| {
            // A fresh cgroup has no I/O rules to lift: the disk is looked up only for caps.
            let l = &g.config.limits;
            let caps = l.io_read_bps.is_some()
                || l.io_write_bps.is_some()
                || l.io_read_iops.is_some()
                || l.io_write_iops.is_some();
            let dev = caps
                .then(|| crate::storage::fs::block_device_of(&g.root()))
                .flatten();
            cg.apply_io_limits(l, dev)
        })
        .map_err(|source| GuestError::Cgroup {
            name: g.name.clone(),
            source,
        })?;
    crate::testhook::pause("start-cgroup");
    start_created(g, lock, userns, systemd)
}

/// The cgroup of guest `g` as its start makes it: delegated (see
/// [`crate::cgroup::GuestCgroup::delegated`]) when its init is systemd.
pub(crate) fn guest_cgroup(
    g: &Guest,
    systemd: bool,
) -> Result<crate::cgroup::GuestCgroup, GuestError> {
    let cg = g.cgroup()?;
    Ok(if systemd { cg.delegated() } else { cg })
}

/// How guest `g` (root `root`) gets its user namespace, if it has one: idmapped when its file
/// system allows and its tree was never shifted; else its owners are shifted on disk once
/// (reported to `progress`). A guest without `userns` whose tree is shifted is refused.
///
/// Errors: the context id's range does not fit, a template guest on a file system that cannot
/// be idmapped, or the shift failed (the path and OS error).
fn prepare_userns(
    g: &Guest,
    root: &std::path::Path,
    progress: &mut dyn crate::storage::progress::Progress,
) -> Result<Option<context::UsernsSpec>, GuestError> {
    use crate::storage::shift;
    let marker = shift::marker(root).map_err(|m| failed(&g.name, m))?;
    if !g.config.userns {
        return match marker {
            None => Ok(None),
            Some(m) => Err(failed(
                &g.name,
                format!(
                    "its root {} has owners shifted for a user namespace ({m:?}); set \
                     'userns = true' in {} or run 'vserver {} userns-unshift'",
                    root.display(),
                    g.paths.config_file(&g.name).display(),
                    g.name
                ),
            )),
        };
    }
    let base = crate::security::userns::host_base(g.config.context).map_err(|m| {
        failed(
            &g.name,
            format!("{}: {m}", g.paths.config_file(&g.name).display()),
        )
    })?;
    if marker.is_none() {
        let probe = crate::security::userns::probe_idmap(root, base)
            .map_err(|m| failed(&g.name, format!("user namespace: {m}")))?;
        match probe {
            Ok(()) => {
                return Ok(Some(context::UsernsSpec {
                    maps: None,
                    base,
                    idmap_root: true,
                }))
            }
            Err(why) if g.config.disk.template.is_some() => {
                return Err(failed(
                    &g.name,
                    format!(
                        "a template guest in a user namespace needs an idmapped mount of its \
                         overlay (Linux 5.19 or later), which was refused: {why}"
                    ),
                ))
            }
            Err(why) => progress.line(&format!(
                "{}: no idmapped mount of {} ({why}): shifting the owners of its files to host \
                 ids {base}-{} once (undo with 'vserver {} userns-unshift')",
                g.name,
                root.display(),
                u64::from(base) + u64::from(crate::security::userns::GUEST_IDS) - 1,
                g.name
            )),
        }
    }
    let rep = shift::shift(root, base, progress).map_err(|m| failed(&g.name, m))?;
    if rep.changed > 0 {
        progress.line(&format!(
            "{}: shifted the owners of {} of {} files",
            g.name, rep.changed, rep.inodes
        ));
    }
    Ok(Some(context::UsernsSpec {
        maps: None,
        base,
        idmap_root: false,
    }))
}

fn init_payload(g: &Guest, systemd: bool) -> Payload {
    let ic = &g.config.init;
    if systemd {
        let argv = if ic.command.is_empty() {
            cstrings(&["/sbin/init".to_string()])
        } else {
            cstrings(&ic.command)
        };
        let env = context::child::guest_env(&[(
            "NOTIFY_SOCKET",
            crate::rootfs::systemd::NOTIFY_SOCKET_PATH,
        )]);
        return Payload::Exec { argv, env };
    }
    let env = context::child::guest_env(&[]);
    let opt = |v: &Vec<String>| {
        if v.is_empty() {
            None
        } else {
            Some(cstrings(v))
        }
    };
    // The built-in init's own shutdown (a reboot from inside has no host stop to bound it).
    let kill_timeout = g.config.stop.kill_timeout_secs(false);
    let reboot_allowed = g.config.stop.on_reboot != crate::config::GuestAction::Ignore;
    let halt_allowed = g.config.stop.on_halt != crate::config::GuestAction::Ignore;
    match ic.style {
        InitStyle::Plain => {
            let argv = if ic.command.is_empty() {
                cstrings(&["/sbin/init".to_string()])
            } else {
                cstrings(&ic.command)
            };
            Payload::Exec { argv, env }
        }
        InitStyle::Sysv => Payload::Builtin(InitPlan {
            kill_timeout,
            reboot_allowed,
            halt_allowed,
            ..sysv_plan(ic.runlevel.unwrap_or(3), env)
        }),
        // A `systemd` guest whose tree has no systemd: its /sbin/init, as `plain`.
        InitStyle::Systemd => Payload::Exec {
            argv: cstrings(&["/sbin/init".to_string()]),
            env,
        },
        InitStyle::Builtin => Payload::Builtin(InitPlan {
            command: opt(&ic.command),
            stop_command: opt(&ic.stop_command),
            env,
            kill_timeout,
            reboot_allowed,
            halt_allowed,
            restart: ic.restart,
        }),
    }
}

fn start_created(
    g: &Guest,
    lock: GuestLock,
    userns: Option<context::UsernsSpec>,
    systemd: Option<super::systemd::SystemdPlan>,
) -> Result<RunState, GuestError> {
    let name = g.name.clone();
    // Address checks and claims are serialised host-wide until the monitor has reported: two
    // guests starting at once with one address cannot both pass the check.
    let net_lock = if g.config.interface.is_empty() {
        None
    } else {
        let rd = super::state::RunDir::new(&g.paths.run_dir, ".network");
        Some(
            GuestLock::acquire(&rd)
                .map_err(|e| failed(&name, format!("lock {}: {e}", rd.file("lock").display())))?,
        )
    };
    // Counters checkpointed by a run that never stopped (a host crash) join the totals now.
    super::network::recover_checkpoint(g);
    let net = super::network::prepare(g)?;
    let mut namespaces = CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    if net.classic.is_none() {
        namespaces |= CloneFlags::CLONE_NEWNET;
    }
    if userns.is_some() {
        namespaces |= CloneFlags::CLONE_NEWUSER;
    }
    let (cap_drop, seccomp) = security_of(g, systemd.is_some())?;
    let cg = guest_cgroup(g, systemd.is_some())?;
    // The guest's systemd reports its boot on this socket, which it finds at /run/host/notify.
    let notify_path = g.run_dir().file(super::systemd::NOTIFY_FILE);
    let notify = match &systemd {
        Some(_) => Some(
            super::systemd::NotifySocket::bind(
                &notify_path,
                userns.as_ref().map(|u| (u.base, u.base)),
            )
            .map_err(|m| failed(&name, m))?,
        ),
        None => None,
    };
    let pty = nix::pty::openpty(None, None)
        .map_err(|e| failed(&name, format!("open a console pty: {e}")))?;
    if let Some(u) = &userns {
        // The console belongs to the guest's root and tty group (gid 5), as ids it can see.
        nix::unistd::fchown(
            &pty.slave,
            Some(nix::unistd::Uid::from_raw(u.base)),
            Some(nix::unistd::Gid::from_raw(u.base + 5)),
        )
        .map_err(|e| failed(&name, format!("give the console pty to the guest: {e}")))?;
    }
    // The monitor keeps the console's slave open too: an init that closes its stdio (systemd
    // does, before it opens /dev/console again) must not hang the console up for good.
    let console_peer = pty
        .slave
        .try_clone()
        .map_err(|e| failed(&name, format!("duplicate the console pty: {e}")))?;
    let binds = g
        .config
        .mount
        .iter()
        .map(|m| crate::rootfs::BindMount {
            source: m.source.clone(),
            target: m.target.to_string_lossy().into_owned(),
            readonly: m.readonly,
        })
        .collect();
    let spec = ContextSpec {
        label: name.clone(),
        xid: g.config.context,
        namespaces,
        root: Some(g.root()),
        binds,
        proc_views: proc_views(&name),
        nice: g.config.limits.nice,
        ioprio: ioprio_of(g),
        rlimits: rlimits_of(g, systemd.is_some()),
        hostname: Some(g.config.hostname_or(&g.name).to_string()),
        domainname: g.config.domainname.clone(),
        cap_drop,
        seccomp: Some(seccomp),
        interfaces: net.ifaces.clone(),
        console: Some(pty.slave),
        payload: init_payload(g, systemd.is_some()),
        userns,
        oci: None,
        systemd: systemd
            .as_ref()
            .map(|p| crate::rootfs::systemd::SystemdMounts {
                cgroup: p.cgroup.clone(),
                tmp: p.tmp,
                notify: Some(notify_path.clone()),
            }),
    };
    let (rep_r, rep_w) = context::sync::pipe().map_err(|e| failed(&name, format!("pipe: {e}")))?;
    // SAFETY: the start path is single-threaded; the child only continues our own code.
    match unsafe { nix::unistd::fork() }
        .map_err(|e| failed(&name, format!("fork the monitor: {e}")))?
    {
        nix::unistd::ForkResult::Child => {
            drop(rep_r);
            monitor_main(
                g,
                spec,
                net,
                (pty.master, console_peer),
                rep_w,
                (lock, net_lock),
                notify,
            )
        }
        nix::unistd::ForkResult::Parent { .. } => {
            drop(rep_w);
            drop(spec);
            drop(pty.master);
            drop(console_peer);
            drop(notify);
            // The monitor holds both locks (the same open files) as long as the start needs
            // them: the network one until the guest's addresses are claimed, the guest's until
            // it has reported (or, for a systemd guest, until its init runs).
            lock.forget_in_child();
            if let Some(l) = net_lock {
                l.forget_in_child();
            }
            let mut report = String::new();
            let _ = std::fs::File::from(rep_r).read_to_string(&mut report);
            if let Some(rest) = report.strip_prefix("OK") {
                // The state comes with the report: a guest whose init ended at once may be
                // cleaned up (state.json gone) by its monitor before we could read the file.
                rest.strip_prefix('\n')
                    .and_then(|j| serde_json::from_str::<RunState>(j).ok())
                    .or_else(|| g.run_dir().read_state())
                    .ok_or_else(|| failed(&name, "the monitor reported success but wrote no state"))
            } else if report.is_empty() {
                let _ = cg;
                Err(failed(
                    &name,
                    format!(
                        "the monitor died during start; see {}",
                        g.log_file("monitor.log").display()
                    ),
                ))
            } else {
                let msg = report.strip_prefix(&format!("{name}: ")).unwrap_or(&report);
                Err(failed(&name, msg.to_string()))
            }
        }
    }
}

/// Tell the starting command that the guest runs: `OK`, a newline and `state` as JSON (the
/// start returns it without reading state.json, which the monitor may already have removed
/// for an init that ended at once). False when the command is gone (the pipe is closed).
pub(crate) fn report_ok(w: &OwnedFd, state: &RunState) -> bool {
    let json = serde_json::to_string(state).unwrap_or_default();
    nix::unistd::write(w, format!("OK\n{json}").as_bytes()).is_ok()
}

/// The monitor process: detach, spawn the guest, report, supervise.
/// The monitor keeps the start's lock (a copy of the same open file) until it has reported, so
/// that a start killed half-way cannot interleave with the next command on this guest; and
/// the host-wide network lock until the guest's addresses are in place. A systemd guest's
/// start reports once the guest's systemd has sent READY=1 on `notify` (see
/// [`crate::monitor::Boot`]): the guest's lock is let go as soon as its init runs, so that
/// exec, status and stop work while it boots.
#[allow(clippy::too_many_arguments)]
fn monitor_main(
    g: &Guest,
    spec: ContextSpec,
    net: super::network::NetPlan,
    console: (OwnedFd, OwnedFd),
    report: OwnedFd,
    locks: (GuestLock, Option<GuestLock>),
    notify: Option<super::systemd::NotifySocket>,
) -> ! {
    let (lock, net_lock) = locks;
    let (console, console_peer) = console;
    let rd = g.run_dir();
    let _ = nix::unistd::setsid();
    // SAFETY: setting dispositions to ignore is async-signal-safe and we are single-threaded.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGHUP,
            nix::sys::signal::SigHandler::SigIgn,
        );
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
    // The logs outlive the run (LOG/NAME/, not RUN/NAME/): each run is marked in both, and the
    // monitor log is rotated like the console log.
    crate::monitor::make_log_dirs(g);
    let mlog = g.log_file("monitor.log");
    if std::fs::metadata(&mlog).is_ok_and(|m| m.len() > crate::monitor::CONSOLE_LOG_MAX) {
        let _ = std::fs::rename(&mlog, g.log_file("monitor.log.1"));
    }
    if let Ok(mut c) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(g.log_file("console.log"))
    {
        use std::io::Write;
        let _ = writeln!(
            c,
            "\n--- vserver: {} starting at context {}, {} ---",
            g.name,
            g.config.context,
            crate::storage::snapshot::utc_label(crate::guest::state::now_unix())
        );
    }
    if let Ok(log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&mlog)
    {
        let null = std::fs::File::open("/dev/null");
        // SAFETY: dup2 onto stdio of this process with valid fds.
        unsafe {
            if let Ok(n) = &null {
                libc::dup2(std::os::fd::AsRawFd::as_raw_fd(n), 0);
            }
            libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&log), 1);
            libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&log), 2);
        }
    }
    let _ = nix::sys::prctl::set_name(c"vs-monitor");
    crate::testhook::pause("start-monitor");
    let fail = |msg: String| -> ! {
        let _ = crate::guest::repair(g);
        let _ = nix::unistd::write(&report, msg.as_bytes());
        std::process::exit(1)
    };
    let cg = match guest_cgroup(g, notify.is_some()) {
        Ok(c) => c,
        Err(e) => fail(e.to_string()),
    };
    let cg_fd = match cg.open_unified() {
        Ok(f) => f,
        Err(e) => fail(format!("{}: {e}", g.name)),
    };
    let veths: Vec<String> = (0..spec.interfaces.len()).map(|i| g.veth_name(i)).collect();
    // The guest's clocks: a time namespace whose boot time starts now, so uptime inside counts
    // from the guest's start (util-vserver's virt_uptime). Only the init is born into it.
    let host_time = match crate::context::timens::enter_fresh_boottime_for_children() {
        Ok(t) => t,
        Err(e) => fail(format!("{}: {e}", g.name)),
    };
    let mut prepare = |pid: i32| -> Result<(), String> {
        // The init is born: everything else the monitor starts (nft, threads, helpers) stays
        // in the host's time namespace. Kernels before 6.3 refuse threads and CLONE_VM
        // children (posix_spawn) while the two differ.
        crate::context::timens::restore_for_children(&host_time)?;
        let in_v2 =
            crate::cgroup::xid_of_pid(std::path::Path::new("/proc"), pid) == Some(g.config.context);
        cg.add_pid(pid, cg_fd.is_some() && in_v2)
            .map_err(|e| e.to_string())?;
        super::network::attach(g, &net, pid, cg_fd.as_ref())
    };
    let spawned = context::spawn(&spec, cg_fd.as_ref(), &mut prepare, None);
    if let Err(e) = crate::context::timens::restore_for_children(&host_time) {
        eprintln!("{}: {e}", g.name);
    }
    // Only the spawn needed them; a monitor lives as long as its guest.
    drop(cg_fd);
    drop(host_time);
    let spawned = match spawned {
        Ok(s) => s,
        Err(e) => fail(e.to_string()),
    };
    drop(spec);
    let me = nix::unistd::getpid().as_raw();
    let state = RunState {
        name: g.name.clone(),
        xid: g.config.context,
        root: g.root(),
        init_pid: spawned.pid,
        init_start: start_of(spawned.pid),
        monitor_pid: me,
        monitor_start: start_of(me),
        started_unix: now_unix(),
        veths,
        addresses: g.addresses(),
        classic_addresses: net.added.clone(),
        forwards: super::network::forward_keys(g),
        systemd: notify.is_some(),
    };
    if let Err(e) = rd.write_state(&state) {
        let _ = crate::context::clone::pidfd_kill(spawned.pidfd.as_fd(), libc::SIGKILL);
        let _ = crate::context::clone::wait_pidfd(spawned.pidfd.as_fd());
        fail(format!(
            "{}: write {}: {e}",
            g.name,
            rd.state_path().display()
        ));
    }
    // The console socket exists before the start reports success.
    let server = match super::console::ConsoleServer::listen(&super::console::socket_path(g)) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!(
                "{}: {e}; `vserver {} console` will not work",
                g.name, g.name
            );
            None
        }
    };
    drop(net_lock);
    crate::testhook::pause("start-running");
    let boot = match notify {
        Some(notify) => {
            let _ = std::fs::write(rd.file(super::systemd::BOOT_STATE_FILE), "starting\n");
            let secs = g.config.init.ready_timeout_secs();
            let mut report = Some(report);
            if secs == 0 {
                if let Some(r) = report.take() {
                    report_ok(&r, &state);
                }
            }
            lock.forget_in_child();
            Some(crate::monitor::Boot {
                report,
                notify: Some(notify),
                deadline: std::time::Instant::now()
                    + std::time::Duration::from_secs(u64::from(secs)),
                ready_timeout_secs: secs,
                kill_timeout: std::time::Duration::from_secs(u64::from(
                    g.config.stop.kill_timeout_secs(true),
                )),
            })
        }
        None => {
            if !report_ok(&report, &state) {
                // The starting command died: do not leave a guest nobody asked for. Clean up
                // while still holding the lock.
                let _ = crate::context::clone::pidfd_kill(spawned.pidfd.as_fd(), libc::SIGKILL);
                let _ = crate::context::clone::wait_pidfd(spawned.pidfd.as_fd());
                let _ = crate::guest::repair(g);
                std::process::exit(1);
            }
            drop(report);
            lock.forget_in_child();
            None
        }
    };
    let relay = super::network::relay_forwards(g);
    if !relay.is_empty() {
        // SAFETY: the monitor is single-threaded; the child only runs the relay.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                drop(console);
                drop(console_peer);
                drop(boot);
                crate::net::relay::run(&relay)
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                // It dies with this monitor, but not in the same instant: the next command
                // that cleans up after us ends it for sure (see `repair`).
                super::record_relay(&g.run_dir(), child.as_raw());
            }
            Err(_) => {}
        }
    }
    let netns = super::network::macvlan_netns(g, spawned.pid);
    crate::monitor::run(
        g,
        spawned.pidfd,
        Some((console, console_peer)),
        server,
        netns,
        boot,
    )
}

/// `vserver NAME run CMD...`: start the guest with `argv` as its init (a fresh guest, set up as
/// by [`start`]: namespaces, cgroup, network, limits), wait until it ends and everything is
/// cleaned up, and return its exit status as a shell would (128 + signal when killed): the
/// exec-once mode of `lxc-execute`. The guest's stdio is its console (see `vserver NAME logs`);
/// with `out`, what the run writes there is copied to it as it comes (the caller's terminal).
///
/// Errors: as [`start`]; a guest that already runs.
pub fn run_once(
    g: &Guest,
    argv: &[String],
    mut out: Option<&mut dyn std::io::Write>,
) -> Result<i32, GuestError> {
    use std::io::{Read, Seek};
    use std::os::unix::fs::MetadataExt;
    let mut once = g.clone();
    once.config.init.style = InitStyle::Plain;
    once.config.init.command = argv.to_vec();
    once.config.stop.on_reboot = crate::config::GuestAction::Stop;
    once.config.stop.on_halt = crate::config::GuestAction::Stop;
    let rd = g.run_dir();
    let _ = std::fs::remove_file(rd.file("last-exit"));
    // Where this run's console output begins in the log (appended to what earlier runs left).
    let log = g.log_file("console.log");
    let before = std::fs::metadata(&log).ok().map(|m| (m.ino(), m.len()));
    let started = start(&once)?;
    // The monitor marks the run in the log; the command's own output follows the mark.
    let mut marked = true;
    let mut follow = |f: &mut Option<std::fs::File>| {
        let Some(w) = out.as_mut() else { return };
        if f.is_none() {
            *f = std::fs::File::open(&log).ok().map(|mut file| {
                if let (Some((ino, len)), Ok(m)) = (before, file.metadata()) {
                    if m.ino() == ino {
                        let _ = file.seek(std::io::SeekFrom::Start(len));
                    }
                }
                file
            });
        }
        if let Some(file) = f {
            let mut chunk = Vec::new();
            let _ = file.read_to_end(&mut chunk);
            if marked && !chunk.is_empty() {
                marked = false;
                if chunk.starts_with(b"\n--- vserver: ") {
                    if let Some(end) = chunk.windows(5).position(|x| x == b" ---\n") {
                        chunk.drain(..end + 5);
                    }
                }
            }
            if !chunk.is_empty() {
                let _ = w.write_all(&chunk);
                let _ = w.flush();
            }
        }
    };
    let mut file = None;
    // The monitor exits once the command has ended and the guest is cleaned up; meanwhile the
    // command's output is copied from the console log as it comes.
    if let Ok(m) = crate::context::clone::pidfd_open(started.state.monitor_pid) {
        if crate::context::clone::same_process(
            started.state.monitor_pid,
            started.state.monitor_start,
        ) {
            while !super::stop::wait_exit(&m, std::time::Duration::from_millis(100)) {
                follow(&mut file);
            }
        }
    }
    follow(&mut file);
    // A command that ended before this start let go of the lock found the lock taken, so its
    // monitor left the cleanup to the next command: that is us.
    {
        let _lock = GuestLock::acquire(&rd)
            .map_err(|e| failed(&g.name, format!("lock {}: {e}", rd.file("lock").display())))?;
        super::repair(g)?;
    }
    let text = std::fs::read_to_string(rd.file("last-exit")).map_err(|e| {
        failed(
            &g.name,
            format!("read {}: {e}", rd.file("last-exit").display()),
        )
    })?;
    text.split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| failed(&g.name, format!("bad last-exit: {text}")))
}
