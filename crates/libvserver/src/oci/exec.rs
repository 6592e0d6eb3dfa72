//! `exec`: a new process in a running container, described by an OCI `process` object
//! (`--process FILE`, as containerd's shim passes it), through the protocol `vserver NAME exec`
//! uses ([`crate::context::join`]): this process opens every host file it needs (log, pid
//! file's directory, cgroup files, /proc), joins the init's mount, IPC, UTS, network and
//! cgroup namespaces; the intermediate joins its pid (and time) namespace as host root, then
//! its user namespace, takes the process's rlimits, personality, no_new_privs, bounding set,
//! seccomp filter, user and capability sets (it is never visible in the container), and forks
//! the command, which is thus born with the container's power and nothing more. The command
//! is moved into the container's cgroup, gets its oom_score_adj and pid file written, and
//! then takes its working directory and umask and execs. Its stdio are this process's own (or
//! a pty sent to `--console-socket`); with `--detach` this process and the intermediate exit
//! once it runs, so it is reparented to the caller's subreaper.

use super::container::{live_status, OciError};
use super::spec::{Process, Spec, SpecError};
use super::state::{Container, Status};
use crate::context::join::{self, JoinPlan};
use crate::context::{OciExtras, Payload};
use nix::sched::CloneFlags;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Options of `exec`.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// State root.
    pub root: PathBuf,
    /// Container id.
    pub id: String,
    /// The process to run.
    pub process: Process,
    /// Return once the process runs (`--detach`).
    pub detach: bool,
    /// Where to write its host pid.
    pub pid_file: Option<PathBuf>,
    /// Unix socket for the pty master (`process.terminal`).
    pub console_socket: Option<PathBuf>,
    /// Extra fds 3..3+N passed on.
    pub preserve_fds: u32,
    /// Run the process in a paused container too (`--ignore-paused`): it joins the frozen
    /// cgroup and runs once the container is resumed.
    pub ignore_paused: bool,
}

fn failed(id: &str, m: impl Into<String>) -> OciError {
    OciError::Failed {
        id: id.to_string(),
        message: m.into(),
    }
}

/// Run `o.process` in the container. Returns its exit status as a shell would (128 + signal),
/// or 0 once it runs with `detach`.
///
/// Errors: the container is not running, the process is invalid, a setup step failed.
pub fn exec(o: &ExecOptions) -> Result<i32, OciError> {
    let id = o.id.as_str();
    // This process joins the container's namespaces holding host fds: never readable from
    // there (a container without its own pid namespace would see it).
    let _ = nix::sys::prctl::set_dumpable(false);
    crate::testhook::init();
    let c = Container::at(&o.root, id)?;
    let st = c.load()?;
    match live_status(&st) {
        Status::Running | Status::Created => {}
        Status::Paused if o.ignore_paused => {}
        Status::Paused => {
            return Err(failed(
                id,
                "is paused; resume it first (or exec --ignore-paused)",
            ))
        }
        _ => return Err(OciError::NotRunning(id.to_string())),
    }
    let cfg = c.file("config.json");
    let cfg_s = cfg.display().to_string();
    let spec = Spec::load(&cfg)?;
    super::check::check_process_at("process.json", &o.process, "process")?;
    let init = crate::context::clone::pidfd_open(st.pid)
        .map_err(|_| OciError::NotRunning(id.to_string()))?;
    if !crate::context::clone::same_process(st.pid, st.init_start) {
        return Err(OciError::NotRunning(id.to_string()));
    }
    let seccomp = match spec.linux.as_ref().and_then(|l| l.seccomp.as_ref()) {
        Some(s) => Some(super::seccomp::compile(&cfg_s, s)?),
        None => None,
    };
    let p = &o.process;
    let parts = super::container::process_parts(p);
    let (cap_drop, rlimits) = (parts.cap_drop, parts.rlimits);
    let extras = OciExtras {
        preserve_fds: o.preserve_fds,
        personality: super::container::personality_of(spec.linux.as_ref()),
        mempolicy: super::container::mempolicy_of(spec.linux.as_ref())
            .ok()
            .flatten(),
        ..parts.extras
    };
    let payload = Payload::Exec {
        argv: p
            .args
            .iter()
            .filter_map(|a| CString::new(a.as_str()).ok())
            .collect(),
        env: super::spec::dedup_env(&p.env)
            .iter()
            .filter_map(|a| CString::new(a.as_str()).ok())
            .collect(),
    };
    // The container's cgroup as create made it (on v1 its processes go to the leaf below).
    let cg = super::container::cgroup_of(id, &st.cgroup)?;
    // Where the init is now, within the container's tree (see open_procs_files_following).
    let procs = cg
        .open_procs_files_following(st.pid, &st.cgroup)
        .map_err(|e| failed(id, e.to_string()))?;
    // The namespaces the init has and we do not share (comparing inodes): join those.
    let differs = |name: &str| -> Result<bool, OciError> {
        use std::os::unix::fs::MetadataExt;
        let ino = |p: String| {
            std::fs::metadata(p)
                .map(|m| m.ino())
                .map_err(|e| failed(id, format!("namespace {name}: {e}")))
        };
        Ok(ino(format!("/proc/{}/ns/{name}", st.pid))? != ino(format!("/proc/self/ns/{name}"))?)
    };
    let mut flags = CloneFlags::empty();
    for (name, f) in [
        ("mnt", CloneFlags::CLONE_NEWNS),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ] {
        if differs(name)? {
            flags |= f;
        }
    }
    let userns_differs = differs("user")?;
    let pidns_differs = differs("pid")?;
    let timens_differs = differs("time").unwrap_or(false);
    // Host paths are opened before we enter the container's mount namespace.
    let console = match (&o.console_socket, p.terminal) {
        (Some(sock), true) => {
            Some(super::container::connect_console(sock).map_err(|e| failed(id, e))?)
        }
        (None, true) => {
            return Err(failed(
                id,
                "process.terminal is set but no --console-socket was given",
            ))
        }
        _ => None,
    };
    let pid_dir = match &o.pid_file {
        Some(pf) => {
            let parent = pf
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let d = std::fs::File::open(parent)
                .map_err(|e| failed(id, format!("pid file directory {}: {e}", parent.display())))?;
            let name = pf
                .file_name()
                .ok_or_else(|| failed(id, format!("pid file {} has no name", pf.display())))?;
            Some((d, name.to_os_string()))
        }
        None => None,
    };
    let host_proc = nix::fcntl::open(
        "/proc",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| failed(id, format!("open /proc: {e}")))?;
    nix::sched::setns(init.as_fd(), flags)
        .map_err(|e| failed(id, format!("join the namespaces of pid {}: {e}", st.pid)))?;
    // A terminal from the container's own devpts, its master sent to the caller.
    let tty = if let Some(sock) = &console {
        let (master, slave) = crate::rootfs::open_pty_pair()
            .map_err(|e| failed(id, format!("{e} in the container")))?;
        if let Some(sz) = &p.console_size {
            let ws = libc::winsize {
                ws_row: sz.height,
                ws_col: sz.width,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCSWINSZ with a valid winsize.
            unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        }
        super::container::send_console_on(sock, &master).map_err(|e| failed(id, e))?;
        Some(slave)
    } else {
        None
    };
    let plan = JoinPlan {
        init: &init,
        pidns: pidns_differs,
        timens: timens_differs,
        stdio: tty.as_ref().map(|t| [t.as_raw_fd(); 3]),
        controlling_tty: tty.is_some(),
        keep: (3..3 + o.preserve_fds as i32).collect(),
        procs,
        dies_with_client: false,
        detach: o.detach,
    };
    // In the intermediate (host pid namespace, invisible in the container), after the
    // container's pid namespace was joined as host root: its user namespace, then every
    // reduction (rlimits, keyring, personality, no_new_privs, bounding set, seccomp, user and
    // capability sets), so that the command is born with no more power than the container.
    // (Set in the intermediate, read in the command it forks: the same memory image.)
    let nproc_soft = std::cell::Cell::new(None);
    let mut reduce = |_: &OwnedFd| -> Result<(), String> {
        // Before the user namespace: raising a hard limit needs the initial one's privilege.
        nproc_soft.set(crate::context::oci_child::exec_rlimits(&rlimits)?);
        if userns_differs {
            nix::sched::setns(init.as_fd(), CloneFlags::CLONE_NEWUSER)
                .map_err(|e| format!("join the container's user namespace: {e}"))?;
        }
        crate::context::oci_child::reduce_for_exec(&extras, &cap_drop, seccomp.as_ref())
    };
    // The command's last steps: its soft RLIMIT_NPROC (lowering needs no privilege), cwd,
    // umask, exec (errors go to `err` until then).
    let mut run = |err: OwnedFd| -> std::convert::Infallible {
        let nproc = rlimits.iter().find(|(r, _, _)| *r == libc::RLIMIT_NPROC);
        if let (Some(soft), Some(&(res, _, hard))) = (nproc_soft.get(), nproc) {
            if let Err(e) = crate::context::child::set_rlimits(&[(res, soft, hard)]) {
                crate::context::child::fail(&err, &e);
            }
        }
        crate::context::oci_child::finish_exec(&extras, &payload, err)
    };
    // Set from here, with the host's privileges, before the process runs.
    let mut host = |cmd: i32| -> Result<(), String> {
        set_priorities(&host_proc, cmd, p.oom_score_adj, None)?;
        if let Some((dir, name)) = &pid_dir {
            write_at(dir, name, &cmd.to_string())
                .map_err(|e| format!("pid file {}: {e}", name.to_string_lossy()))?;
        }
        Ok(())
    };
    let joined = join::join(plan, &mut reduce, &mut run, &mut host).map_err(|m| failed(id, m))?;
    drop(tty);
    let report = joined.report();
    if !report.is_empty() {
        joined.abort();
        return Err(failed(id, report));
    }
    // The intermediate exits as soon as the command is released (detach), or reports the
    // command's status.
    let code = joined.wait().unwrap_or(1);
    Ok(if o.detach { 0 } else { code })
}

/// Read `exec --process FILE`.
///
/// Errors: as [`super::spec::parse_process`].
pub fn load_process(path: &Path) -> Result<Process, SpecError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
        path: p.clone(),
        source,
    })?;
    let (process, ignored) = super::spec::parse_process(&p, &text)?;
    super::container::warn_ignored(&p, &ignored);
    Ok(process)
}

/// Write `text` to `name` in the directory `dir` (a temporary file renamed over it), by
/// descriptor: valid after this process left the host's mount namespace. The temporary is
/// created exclusively (a stale one is removed first, whatever it is), so nothing planted
/// there is written through.
pub(crate) fn write_at(
    dir: &std::fs::File,
    name: &std::ffi::OsStr,
    text: &str,
) -> Result<(), String> {
    use nix::fcntl::{openat, renameat, OFlag};
    use nix::sys::stat::Mode;
    let mut tmp = name.to_os_string();
    tmp.push(".tmp");
    let _ = nix::unistd::unlinkat(
        dir,
        tmp.as_os_str(),
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    );
    let fd = openat(
        dir,
        tmp.as_os_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(|e| e.to_string())?;
    nix::unistd::write(&fd, text.as_bytes()).map_err(|e| e.to_string())?;
    drop(fd);
    renameat(dir, tmp.as_os_str(), dir, name).map_err(|e| e.to_string())
}

/// `process.oomScoreAdj` and the ioprio_set(2) value of `process.ioPriority` for the exec'd
/// process `pid` (host pid), its oom_score_adj opened below `proc`, the host's /proc opened
/// before this process joined the container's mount namespace (whose /proc numbers other
/// processes).
fn set_priorities(
    proc: &OwnedFd,
    pid: i32,
    oom: Option<i32>,
    ioprio: Option<u32>,
) -> Result<(), String> {
    if let Some(a) = oom {
        let f = nix::fcntl::openat(
            proc,
            format!("{pid}/oom_score_adj").as_str(),
            nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| format!("process.oomScoreAdj {a}: {e}"))?;
        nix::unistd::write(&f, a.to_string().as_bytes())
            .map_err(|e| format!("process.oomScoreAdj {a}: {e}"))?;
    }
    if let Some(v) = ioprio {
        // SAFETY: plain syscall with integer arguments (IOPRIO_WHO_PROCESS = 1).
        if unsafe { libc::syscall(libc::SYS_ioprio_set, 1, pid, v) } != 0 {
            return Err(format!("process.ioPriority: {}", nix::errno::Errno::last()));
        }
    }
    Ok(())
}
