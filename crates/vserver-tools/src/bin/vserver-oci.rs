//! `vserver-oci`: the runc command-line contract over vserver's engine, for containerd's runc
//! shim (`runtime_type = "io.containerd.runc.v2"`, `BinaryName = "vserver-oci"`), podman
//! (`--runtime vserver-oci`) and anything else that drives a runc-compatible runtime.

use clap::{Parser, Subcommand};
use libvserver::oci::container::{self, CreateOptions, OciError};
use libvserver::oci::exec::{self, ExecOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "vserver-oci",
    about = "OCI runtime (runc command line) over vserver's engine",
    disable_version_flag = true,
    arg_required_else_help = true
)]
struct Cli {
    /// State directory of the containers.
    #[arg(long, global = true, default_value = libvserver::oci::state::DEFAULT_ROOT)]
    root: PathBuf,
    /// Append errors to this file (containerd reads its last error line).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// `text` or `json` (one JSON object per line, level "error" for fatal errors).
    #[arg(long = "log-format", global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Log level (accepted for compatibility).
    #[arg(long = "log-level", global = true)]
    log_level: Option<String>,
    /// Debug output (accepted for compatibility).
    #[arg(long, global = true)]
    debug: bool,
    /// systemd cgroup driver: refused (vserver-oci drives cgroupfs itself).
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    /// Rootless mode: `false` or `auto` only (vserver-oci runs as root); `spec --rootless` is
    /// accepted and writes the same spec.
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true")]
    rootless: Option<String>,
    /// Print the version and the spec version.
    #[arg(short = 'v', long)]
    version: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(clap::Args, Clone)]
struct CreateArgs {
    /// Bundle directory (holds config.json).
    #[arg(short = 'b', long, default_value = ".")]
    bundle: PathBuf,
    /// Write the init's pid here before returning.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master when process.terminal is set.
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Accepted; vserver-oci always uses pivot_root.
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Accepted; every container gets a fresh session keyring.
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    /// Pass fds 3..3+N to the container's process.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a container held before its program (start runs it).
    Create {
        #[command(flatten)]
        args: CreateArgs,
        /// Container id.
        id: String,
    },
    /// Run the program of a created container.
    Start {
        /// Container id.
        id: String,
    },
    /// Print the state JSON.
    State {
        /// Container id.
        id: String,
    },
    /// Send a signal (number or name; default SIGTERM).
    Kill {
        /// To every process of the container.
        #[arg(short = 'a', long)]
        all: bool,
        /// Container id.
        id: String,
        /// Signal: a number, a name (`TERM`, `SIGKILL`), `RTMIN+3`; default SIGTERM.
        #[arg(allow_hyphen_values = true)]
        signal: Option<String>,
    },
    /// Remove a stopped container (with --force, any).
    Delete {
        /// Kill it first if it runs; a missing container is not an error.
        #[arg(short = 'f', long)]
        force: bool,
        /// Container id.
        id: String,
    },
    /// Create and start a container; wait for it unless --detach.
    Run {
        #[command(flatten)]
        args: CreateArgs,
        /// Return once it runs.
        #[arg(short = 'd', long)]
        detach: bool,
        /// Keep the container's state after it ends.
        #[arg(long)]
        keep: bool,
        /// Accepted for compatibility.
        #[arg(long = "no-subreaper")]
        no_subreaper: bool,
        /// Container id.
        id: String,
    },
    /// Run a new process in a running container.
    Exec {
        /// JSON file with the OCI process (args, env, cwd, user, capabilities ...).
        #[arg(short = 'p', long)]
        process: Option<PathBuf>,
        /// Return once the process runs.
        #[arg(short = 'd', long)]
        detach: bool,
        /// Write its pid here.
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        /// Allocate a pty (sent to --console-socket).
        #[arg(short = 't', long)]
        tty: bool,
        /// Unix socket for the pty master.
        #[arg(long = "console-socket")]
        console_socket: Option<PathBuf>,
        /// Working directory.
        #[arg(long)]
        cwd: Option<String>,
        /// Environment KEY=value (repeatable).
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
        /// uid[:gid].
        #[arg(short = 'u', long)]
        user: Option<String>,
        /// Additional gids (repeatable).
        #[arg(short = 'g', long = "additional-gids")]
        additional_gids: Vec<u32>,
        /// Capabilities to add (repeatable).
        #[arg(short = 'c', long = "cap")]
        cap: Vec<String>,
        /// Set no_new_privs.
        #[arg(long = "no-new-privs")]
        no_new_privs: bool,
        /// Pass fds 3..3+N.
        #[arg(long = "preserve-fds", default_value_t = 0)]
        preserve_fds: u32,
        /// Exec into a paused container too (the process runs once it is resumed).
        #[arg(long = "ignore-paused")]
        ignore_paused: bool,
        /// Refused when set (no SELinux support).
        #[arg(long = "process-label")]
        process_label: Option<String>,
        /// Refused when set (no AppArmor support).
        #[arg(long)]
        apparmor: Option<String>,
        /// Container id.
        id: String,
        /// Command and arguments (without --process).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// List the container's processes.
    Ps {
        /// `table` or `json` (a JSON array of host pids).
        #[arg(short = 'f', long, default_value = "table")]
        format: String,
        /// Container id.
        id: String,
        /// ps(1) options (table format).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Freeze every process of the container.
    Pause {
        /// Container id.
        id: String,
    },
    /// Thaw a paused container.
    Resume {
        /// Container id.
        id: String,
    },
    /// Change the container's cgroup limits.
    Update {
        /// File with the LinuxResources JSON, `-` for stdin.
        #[arg(short = 'r', long)]
        resources: Option<String>,
        /// Container id.
        id: String,
    },
    /// List containers.
    List {
        /// `table` or `json`.
        #[arg(short = 'f', long, default_value = "table")]
        format: String,
        /// Ids only.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Print what this runtime supports (runtime-spec features.md).
    Features,
    /// Write a default config.json for a bundle.
    Spec {
        /// Bundle directory.
        #[arg(short = 'b', long, default_value = ".")]
        bundle: PathBuf,
    },
}

/// An error for the caller: printed, and logged to --log (opened by `main` while this process
/// is still in the host's mount namespace) as containerd expects.
fn report(cli_log: Option<&std::fs::File>, format: &str, msg: &str) {
    if format == "json" && cli_log.is_none() {
        // No log file: the JSON line goes to stderr, as runc does.
        eprintln!(
            "{}",
            serde_json::json!({"level": "error", "msg": msg, "time": libvserver::oci::state::rfc3339_now()})
        );
        return;
    }
    eprintln!("vserver-oci: {msg}");
    if let Some(mut f) = cli_log {
        let line = if format == "json" {
            serde_json::json!({
                "level": "error",
                "msg": msg,
                "time": libvserver::oci::state::rfc3339_now(),
            })
            .to_string()
        } else {
            format!(
                "time=\"{}\" level=error msg={msg:?}",
                libvserver::oci::state::rfc3339_now()
            )
        };
        let _ = writeln!(f, "{line}");
    }
}

fn create_options(root: &std::path::Path, a: &CreateArgs, id: &str) -> CreateOptions {
    CreateOptions {
        root: root.to_path_buf(),
        id: id.to_string(),
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        preserve_fds: a.preserve_fds,
    }
}

/// A signal as runc takes it: a number 0-64 (0 only checks), a name with or without `SIG`,
/// `RTMIN`, `RTMIN+N`, `RTMAX-N` (glibc's SIGRTMIN, 34, and SIGRTMAX, 64; systemd's stop
/// signal is `SIGRTMIN+3`); a leading `-` is allowed (`kill ID -9`).
fn parse_signal(s: &str) -> Result<i32, OciError> {
    let t = s.trim().trim_start_matches('-');
    if let Ok(n) = t.parse::<i32>() {
        return if (0..=64).contains(&n) {
            Ok(n)
        } else {
            Err(bad(format!("signal {n} is not 0-64")))
        };
    }
    let up = t.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let rt = |base: i32, off: &str, sign: i32| -> Result<i32, OciError> {
        let n: i32 = if off.is_empty() {
            0
        } else {
            off.parse()
                .map_err(|_| bad(format!("unknown signal '{s}'")))?
        };
        let v = base + sign * n;
        if (34..=64).contains(&v) {
            Ok(v)
        } else {
            Err(bad(format!("signal '{s}' is outside SIGRTMIN..SIGRTMAX")))
        }
    };
    if let Some(off) = name.strip_prefix("RTMIN") {
        return rt(34, off.trim_start_matches('+'), 1);
    }
    if let Some(off) = name.strip_prefix("RTMAX") {
        return rt(64, off.trim_start_matches('-'), -1);
    }
    libvserver::config::parse_signal_name(name).map_err(bad)
}

fn bad(msg: impl Into<String>) -> OciError {
    OciError::Failed {
        id: String::new(),
        message: msg.into(),
    }
}

/// Receive one fd (the pty master) on the console socket `l` (SCM_RIGHTS).
fn receive_fd(l: &std::os::unix::net::UnixListener) -> Option<std::os::fd::OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd};
    let (conn, _) = l.accept().ok()?;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel installed this fd for us.
            return fds
                .first()
                .map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(*fd) });
        }
    }
    None
}

/// The caller's terminal in raw mode while a container's pty is relayed to it; restored on
/// drop.
struct Relay {
    saved: Option<nix::sys::termios::Termios>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

/// Copy our stdin to the pty `master` and its output to our stdout (two threads, which end
/// with the process), with our terminal raw and its size given to the pty.
fn relay_terminal(master: std::os::fd::OwnedFd) -> Relay {
    use std::os::fd::AsRawFd;
    // The copying threads must not take the signals `run` forwards.
    let mut set = nix::sys::signal::SigSet::empty();
    for sig in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGQUIT,
        nix::sys::signal::Signal::SIGUSR1,
        nix::sys::signal::Signal::SIGUSR2,
    ] {
        set.add(sig);
    }
    let _ = set.thread_block();
    let saved = nix::sys::termios::tcgetattr(std::io::stdin()).ok();
    if let Some(t) = &saved {
        let mut raw = t.clone();
        nix::sys::termios::cfmakeraw(&mut raw);
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &raw,
        );
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ/TIOCSWINSZ with a valid winsize on our terminal and the pty.
        unsafe {
            if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
                libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
            }
        }
    }
    let out = std::fs::File::from(master);
    if let Ok(mut inp) = out.try_clone() {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut inp);
        });
    }
    let mut out = out;
    // Unbuffered: what the container wrote last must not stay in a buffer at exit.
    if let Ok(fd) = nix::unistd::dup(std::io::stdout()) {
        let mut stdout = std::fs::File::from(fd);
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut out, &mut stdout);
        });
    }
    Relay { saved }
}

/// Wait for the init of `run` (forwarding the usual signals to it) and return its status.
fn wait_forwarding(pidfd: &std::os::fd::OwnedFd) -> i32 {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    use std::os::fd::AsFd;
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        set.add(s);
    }
    let _ = set.thread_block();
    if let Ok(sfd) = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC) {
        loop {
            let mut fds = [
                nix::poll::PollFd::new(pidfd.as_fd(), nix::poll::PollFlags::POLLIN),
                nix::poll::PollFd::new(sfd.as_fd(), nix::poll::PollFlags::POLLIN),
            ];
            if nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE).is_err() {
                continue;
            }
            if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                if let Ok(Some(info)) = sfd.read_signal() {
                    let _ = libvserver::context::clone::pidfd_kill(
                        pidfd.as_fd(),
                        info.ssi_signo as i32,
                    );
                }
            }
            if fds[0].revents().is_some_and(|r| !r.is_empty()) {
                break;
            }
        }
    }
    libvserver::context::clone::wait_pidfd(pidfd.as_fd()).unwrap_or(1)
}

fn run(cli: Cli) -> Result<ExitCode, OciError> {
    if cli.systemd_cgroup {
        return Err(bad(
            "--systemd-cgroup is not supported: vserver-oci manages cgroupfs itself (set SystemdCgroup = false)",
        ));
    }
    if cli.rootless.as_deref().is_some_and(|r| r == "true")
        && !matches!(cli.cmd, Some(Cmd::Spec { .. }))
    {
        return Err(bad(
            "--rootless=true is not supported: vserver-oci runs as root",
        ));
    }
    if cli.version {
        println!("vserver-oci version {}", env!("CARGO_PKG_VERSION"));
        println!("spec: {}", libvserver::oci::SPEC_VERSION);
        return Ok(ExitCode::SUCCESS);
    }
    let Some(cmd) = cli.cmd else {
        return Err(bad("no command given (see --help)"));
    };
    let root = cli.root.as_path();
    match cmd {
        Cmd::Create { args, id } => {
            // The caller's subreaper adopts the init once we are gone.
            container::create(&create_options(root, &args, &id))?;
        }
        Cmd::Start { id } => container::start(root, &id)?,
        Cmd::State { id } => {
            let v = container::state(root, &id)?;
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        Cmd::Kill { all, id, signal } => {
            let sig = parse_signal(signal.as_deref().unwrap_or("SIGTERM"))?;
            container::kill(root, &id, sig, all)?;
        }
        Cmd::Delete { force, id } => container::delete(root, &id, force)?,
        Cmd::Run {
            mut args,
            detach,
            keep,
            id,
            ..
        } => {
            // A terminal asked for with nobody to take it: run relays one itself, as runc does.
            let wants_tty = !detach
                && args.console_socket.is_none()
                && libvserver::oci::spec::Spec::load(&args.bundle.join("config.json"))
                    .ok()
                    .and_then(|s| s.process)
                    .is_some_and(|p| p.terminal);
            let listener = if wants_tty {
                let sock =
                    std::env::temp_dir().join(format!("vserver-oci-{}.sock", std::process::id()));
                let _ = std::fs::remove_file(&sock);
                let l = std::os::unix::net::UnixListener::bind(&sock)
                    .map_err(|e| bad(format!("console socket {}: {e}", sock.display())))?;
                args.console_socket = Some(sock);
                Some(l)
            } else {
                None
            };
            let receiver = listener.map(|l| std::thread::spawn(move || receive_fd(&l)));
            let created = container::create(&create_options(root, &args, &id));
            if let Some(sock) = args.console_socket.as_ref().filter(|_| wants_tty) {
                let _ = std::fs::remove_file(sock);
            }
            let pidfd = created?;
            let master = receiver.and_then(|r| r.join().ok().flatten());
            if let Err(e) = container::start(root, &id) {
                let _ = container::delete(root, &id, true);
                return Err(e);
            }
            if detach {
                return Ok(ExitCode::SUCCESS);
            }
            let relay = master.map(relay_terminal);
            let code = wait_forwarding(&pidfd);
            drop(relay);
            if !keep {
                container::delete(root, &id, true)?;
            }
            return Ok(ExitCode::from(code.clamp(0, 255) as u8));
        }
        Cmd::Exec {
            process,
            detach,
            pid_file,
            tty,
            console_socket,
            cwd,
            env,
            user,
            additional_gids,
            cap,
            no_new_privs,
            preserve_fds,
            process_label,
            apparmor,
            id,
            command,
            ignore_paused,
        } => {
            if process_label.is_some_and(|l| !l.is_empty()) {
                return Err(bad("--process-label: SELinux labels are not supported"));
            }
            if apparmor.is_some_and(|a| !a.is_empty()) {
                return Err(bad("--apparmor: AppArmor profiles are not supported"));
            }
            let p = match process {
                Some(_) if !command.is_empty() => {
                    return Err(bad(format!(
                        "give either --process FILE or a command, not both (extra: {})",
                        command.join(" ")
                    )))
                }
                Some(f) => exec::load_process(&f)?,
                None => {
                    if command.is_empty() {
                        return Err(bad("exec needs --process FILE or a command"));
                    }
                    // The container's own process as the base, as runc does.
                    let c = libvserver::oci::state::Container::at(root, &id)?;
                    let spec = libvserver::oci::spec::Spec::load(&c.file("config.json"))
                        .map_err(OciError::Spec)?;
                    let mut p = spec.process.unwrap_or_default();
                    p.args = command;
                    p.terminal = tty;
                    p.env.extend(env);
                    if let Some(c) = cwd {
                        p.cwd = c;
                    }
                    if let Some(u) = user {
                        let (uid, gid) = u.split_once(':').unwrap_or((u.as_str(), "0"));
                        p.user.uid = uid
                            .parse()
                            .map_err(|_| bad(format!("--user {u}: not uid[:gid]")))?;
                        p.user.gid = gid
                            .parse()
                            .map_err(|_| bad(format!("--user {u}: not uid[:gid]")))?;
                    }
                    p.user.additional_gids.extend(additional_gids);
                    if !cap.is_empty() {
                        let mut caps = p.capabilities.unwrap_or_default();
                        for c in cap {
                            for set in
                                [&mut caps.bounding, &mut caps.effective, &mut caps.permitted]
                            {
                                set.push(c.clone());
                            }
                        }
                        p.capabilities = Some(caps);
                    }
                    p.no_new_privileges |= no_new_privs;
                    p
                }
            };
            let code = exec::exec(&ExecOptions {
                root: root.to_path_buf(),
                id,
                process: p,
                detach,
                pid_file,
                console_socket,
                preserve_fds,
                ignore_paused,
            })?;
            return Ok(ExitCode::from(code.clamp(0, 255) as u8));
        }
        Cmd::Ps {
            format,
            id,
            ps_args,
        } => {
            let pids = container::ps(root, &id)?;
            if format == "json" {
                println!("{}", serde_json::to_string(&pids).unwrap_or_default());
            } else {
                // ps(1) selects by its own arguments: its table is filtered here to the
                // container's processes by the PID column, whatever the arguments were.
                let out = std::process::Command::new("ps")
                    .args(if ps_args.is_empty() {
                        vec!["-ef".to_string()]
                    } else {
                        ps_args
                    })
                    .output()
                    .map_err(|e| bad(format!("ps: {e}")))?;
                let text = String::from_utf8_lossy(&out.stdout);
                let mut lines = text.lines();
                let header = lines.next().unwrap_or("");
                let col = header
                    .split_whitespace()
                    .position(|w| w == "PID")
                    .ok_or_else(|| {
                        bad("ps: its output has no PID column (keep one in the format)")
                    })?;
                println!("{header}");
                for l in lines {
                    let pid = l
                        .split_whitespace()
                        .nth(col)
                        .and_then(|w| w.parse::<i32>().ok());
                    if pid.is_some_and(|p| pids.contains(&p)) {
                        println!("{l}");
                    }
                }
            }
        }
        Cmd::Pause { id } => container::freeze(root, &id, true)?,
        Cmd::Resume { id } => container::freeze(root, &id, false)?,
        Cmd::Update { resources, id } => {
            let text = match resources.as_deref() {
                None => return Err(bad("update needs --resources FILE (or - for stdin)")),
                Some("-") => {
                    let mut s = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                        .map_err(|e| bad(format!("read stdin: {e}")))?;
                    s
                }
                Some(f) => std::fs::read_to_string(f).map_err(|e| bad(format!("read {f}: {e}")))?,
            };
            let (r, ignored) = libvserver::oci::spec::parse_resources("--resources", &text)?;
            container::warn_ignored("--resources", &ignored);
            container::update(root, &id, &r)?;
        }
        Cmd::List { format, quiet } => {
            let all = container::list(root);
            if format == "json" {
                println!("{}", serde_json::to_string(&all).unwrap_or_default());
            } else if quiet {
                for s in &all {
                    println!("{}", s["id"].as_str().unwrap_or(""));
                }
            } else {
                println!(
                    "{:<24} {:<8} {:<10} {:<40} CREATED",
                    "ID", "PID", "STATUS", "BUNDLE"
                );
                for s in &all {
                    println!(
                        "{:<24} {:<8} {:<10} {:<40} {}",
                        s["id"].as_str().unwrap_or(""),
                        s["pid"],
                        s["status"].as_str().unwrap_or(""),
                        s["bundle"].as_str().unwrap_or(""),
                        s["created"].as_str().unwrap_or("")
                    );
                }
            }
        }
        Cmd::Features => {
            println!(
                "{}",
                serde_json::to_string_pretty(&libvserver::oci::features()).unwrap_or_default()
            );
        }
        Cmd::Spec { bundle, .. } => {
            let p = bundle.join("config.json");
            if p.exists() {
                return Err(bad(format!("{} exists already", p.display())));
            }
            let text =
                serde_json::to_string_pretty(&libvserver::oci::default_spec()).unwrap_or_default();
            std::fs::write(&p, text + "\n")
                .map_err(|e| bad(format!("write {}: {e}", p.display())))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    vserver_tools::generate_if_asked(<Cli as clap::CommandFactory>::command());
    let cli = Cli::parse();
    let format = cli.log_format.clone();
    // Guest code runs in create, run and exec: our binary must not be writable from there.
    if matches!(
        cli.cmd,
        Some(Cmd::Create { .. } | Cmd::Run { .. } | Cmd::Exec { .. })
    ) {
        if let Err(e) = libvserver::security::exe::reexec_readonly() {
            report(None, &format, &e);
            return ExitCode::from(1);
        }
    }
    // Opened now: exec joins the container's mount namespace, where the path would name the
    // container's file (or a FIFO that hangs us).
    let log = cli.log.as_ref().and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    match run(cli) {
        Ok(c) => c,
        Err(e) => {
            report(log.as_ref(), &format, &e.to_string());
            ExitCode::from(1)
        }
    }
}
