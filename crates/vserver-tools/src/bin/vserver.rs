//! `vserver [OPTIONS] NAME COMMAND [ARGS]`: build, start, stop, enter... one guest.
//! Exit codes as util-vserver: status 0 running / 3 stopped, running 0/1, usage 2, unknown guest 5.

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use libvserver::config::InitStyle;
use libvserver::guest::{self, exec::ExecRequest, Guest, GuestError};
use libvserver::storage::{
    self,
    build::{build, BuildMethod, BuildOptions},
};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitCode;
use vserver_tools::{human_secs, PathArgs};

#[derive(Parser)]
#[command(
    name = "vserver",
    version,
    about = "Manage one virtual server (guest): vserver NAME COMMAND",
    after_long_help = "EXIT STATUS: 0 success; status: 0 running, 3 stopped; running: 0 running, 1 not; \
2 usage error; 5 unknown guest; 1 other failures; exec, suexec and enter: the command's status \
(128 + signal when killed).\n\n\
FILES: /etc/vservers/NAME.toml (or util-vserver's NAME.conf and NAME/), NAME.sh and \
NAME/scripts/ (hook scripts), /var/lib/vservers/NAME (root), /run/vservers/NAME/ (state, \
console.sock), /var/log/vservers/NAME/ (console.log, monitor.log).\n\n\
ENVIRONMENT: VSERVER_CONFDIR, VSERVER_ROOTBASE, VSERVER_RUNDIR and VSERVER_LOGDIR override the \
four directories, as --config-dir, --root-base, --run-dir and --log-dir do."
)]
struct Cli {
    #[command(flatten)]
    paths: PathArgs,
    /// Guest name.
    name: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Method {
    Host,
    Skeleton,
    Rootfs,
    Template,
    Debootstrap,
    Clone,
    Rsync,
    TemplateGuest,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    Auto,
    Image,
    Project,
    Btrfs,
}

#[derive(Clone, Copy, ValueEnum)]
enum Style {
    Builtin,
    Plain,
    Sysv,
    Systemd,
}

// Parsed once per run: the size of the build variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Build the guest: root directory and NAME.toml.
    Build {
        /// host (from this host's distribution), skeleton, rootfs (--source DIR|TARBALL),
        /// template (--tarball FILE), debootstrap (--dist DIST [--mirror URL]), clone (--source
        /// GUEST|DIR), rsync (--source DIR), template-guest (--template BASE).
        #[arg(short = 'm', long = "method", value_enum, default_value = "host")]
        method: Method,
        /// Context id (2-49151); default: the lowest free from 40000.
        #[arg(long = "context")]
        context: Option<u32>,
        /// Host name; default: the guest name.
        #[arg(long)]
        hostname: Option<String>,
        /// [MODE:][DEV:]IP/PREFIX[,IP/PREFIX...], repeatable. MODE: veth (default; DEV is the
        /// bridge, default vsbr0), macvlan (DEV is the host NIC) or classic (the host's own
        /// stack; DEV is the host interface that carries the addresses). "none": loopback only.
        #[arg(long = "interface")]
        interfaces: Vec<String>,
        /// Masquerade the guest's outbound traffic (veth interfaces).
        #[arg(long)]
        nat: bool,
        /// MTU in bytes of the veth and macvlan interfaces (1280-65535; default 1500).
        #[arg(long)]
        mtu: Option<u32>,
        /// Forward a host port to the guest: HOST_PORT:GUEST_PORT[/tcp|/udp], repeatable.
        #[arg(long = "forward")]
        forwards: Vec<String>,
        /// Init style.
        #[arg(long, value_enum)]
        initstyle: Option<Style>,
        /// Guest root directory; default ROOTBASE/NAME.
        #[arg(long)]
        rootdir: Option<PathBuf>,
        /// Source: tree or tarball (rootfs), guest name or directory (clone), directory (rsync).
        #[arg(long)]
        source: Option<PathBuf>,
        /// Tarball (method template): tar, tar.gz, tar.xz or tar.zst.
        #[arg(short = 't', long)]
        tarball: Option<PathBuf>,
        /// Distribution (method debootstrap): bookworm, trixie, jammy...
        #[arg(short = 'd', long)]
        dist: Option<String>,
        /// Mirror URL (method debootstrap); default: the host's first apt source.
        #[arg(long)]
        mirror: Option<String>,
        /// More packages (method debootstrap), comma-separated: openssh-server,nginx-light,cron.
        /// systemd-sysv and dbus are added unless --initstyle is not systemd.
        #[arg(long, value_delimiter = ',', value_name = "PKG,...")]
        include: Vec<String>,
        /// Base guest (method template-guest).
        #[arg(long)]
        template: Option<String>,
        /// Move an existing root and config aside.
        #[arg(long)]
        force: bool,
        /// Disk quota of SIZE (e.g. 2G), enforced by --disk-backend.
        #[arg(long, value_name = "SIZE")]
        disk_size: Option<String>,
        /// auto (default: btrfs quota groups on btrfs, project quotas on ext4/xfs that have them
        /// on, else image), image (an ext4 image of SIZE mounted while the guest runs),
        /// project (ext4/xfs project quota, id = context id) or btrfs (quota group).
        #[arg(long, value_enum, value_name = "BACKEND")]
        disk_backend: Option<Backend>,
        /// Run the guest in its own user namespace (writes userns = true): its ids 0-65535 are
        /// host ids context * 65536 + id, so its root is nobody on the host.
        #[arg(long)]
        userns: bool,
        /// Method arguments (skeleton: a command to run with VSERVER_ROOT set; debootstrap:
        /// util-vserver's -d DIST [-m MIRROR]).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Start the guest.
    Start,
    /// Stop the guest.
    Stop,
    /// Stop, then start.
    Restart,
    /// Restart only if running.
    Condrestart,
    /// Show whether the guest runs (exit 0) or not (exit 3).
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 if running, 1 if not.
    Running,
    /// Give a stopped user-namespace guest's files their ordinary owners back, after the
    /// one-time shift made where its file system cannot be idmapped.
    UsernsUnshift,
    /// Change a limit (nproc, memory, memory_soft, swap, cpu, cpu_weight, cpuset, io_weight,
    /// io_read_bps, io_write_bps, io_read_iops, io_write_iops, nice,
    /// ionice) now and in NAME.toml; VALUE "none" removes it. Negative values work as is.
    /// Without arguments, every limit set (and memory and processes in use when running); with
    /// KEY alone, that limit.
    #[command(allow_negative_numbers = true)]
    Limit {
        key: Option<String>,
        value: Option<String>,
    },
    /// Set the guest's network traffic totals (status, vserver-stat --net) back to zero.
    ResetAccounting,
    /// Write NAME.toml from the guest's util-vserver configuration (NAME.conf or NAME/), which
    /// stays in place; NAME.toml takes over from then on.
    ConvertConfig,
    /// Freeze every process of the guest.
    Suspend,
    /// Thaw a suspended guest.
    Resume,
    /// Interactive root shell inside, on a fresh pty.
    Enter,
    /// Attach to the guest's console (its init's /dev/console); detach with Ctrl-].
    Console,
    /// Print the guest's console log (control characters made visible); -f keeps following it.
    Logs {
        /// Keep printing what the console writes (until interrupted).
        #[arg(short = 'f', long)]
        follow: bool,
        /// Print the bytes as the guest wrote them, escape sequences included.
        #[arg(long)]
        raw: bool,
    },
    /// Start the guest with CMD as its init, wait for it to end, clean up, and exit with its
    /// status (exec-once, as lxc-execute); its output goes to the console log and, unless
    /// --quiet, to stdout as it comes.
    Run {
        /// Do not copy the output to stdout (the console log keeps it).
        #[arg(long, short = 'q')]
        quiet: bool,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// Share the blocks of files identical to other guests' (reflink dedupe on btrfs or xfs);
    /// /etc and the config's disk.unify_exclude are left alone.
    Unify {
        #[command(flatten)]
        args: vserver_tools::UnifyArgs,
    },
    /// Snapshots of the guest's files: create [LABEL], list, restore LABEL, delete LABEL.
    Snapshot {
        #[command(subcommand)]
        op: SnapOp,
    },
    /// Write the guest (config and files) as a zstd-compressed tar stream to FILE or - (stdout).
    Export { file: String },
    /// Make this guest from an export stream in FILE or - (stdin).
    Import {
        file: String,
        /// Take the lowest free context id if the stream's is in use here.
        #[arg(long)]
        renumber: bool,
        /// Use this context id.
        #[arg(long = "context")]
        context: Option<u32>,
        /// Guest root directory; default ROOTBASE/NAME.
        #[arg(long)]
        rootdir: Option<PathBuf>,
        /// Keep what the stream's config grants on this host (host bind mounts, added
        /// capabilities, interfaces, forwards, marks, depends, rlimits, restart on halt or
        /// reboot); without it they are left out and listed. For streams of your own hosts.
        #[arg(long)]
        trust_config: bool,
    },
    /// Move the stopped guest's root (with image, overlay and snapshots) to NEWROOT.
    Move {
        #[arg(value_name = "NEWROOT")]
        new_root: PathBuf,
    },
    /// Stop the guest and remove its root, snapshots, configuration and state.
    Delete {
        /// Do not ask.
        #[arg(long)]
        force: bool,
    },
    /// Run a command inside as root; exits with its status.
    Exec {
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// Run a command inside as USER.
    Suexec {
        user: String,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
}

#[derive(Subcommand)]
enum SnapOp {
    /// Make a snapshot (default label: the UTC time, YYYYmmdd-HHMMSS); prints its label.
    Create { label: Option<String> },
    /// List the snapshots, oldest first.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Bring the stopped guest's files back to snapshot LABEL (the replaced state is kept as
    /// the snapshot pre-restore-EPOCH).
    Restore { label: String },
    /// Delete snapshot LABEL.
    Delete { label: String },
}

/// Ask on the terminal; false when stdin is not one.
fn confirm(question: &str) -> bool {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes")
}

fn load(paths: &libvserver::paths::Paths, name: &str) -> std::result::Result<Guest, ExitCode> {
    Guest::load(paths, name).map_err(|e| {
        eprintln!("vserver: {e}");
        match e {
            GuestError::Unknown { .. } => ExitCode::from(5),
            GuestError::BadName(_) => ExitCode::from(2),
            _ => ExitCode::from(1),
        }
    })
}

/// The warnings of a util-vserver configuration (keys without an equivalent), said once per
/// start and conversion rather than on every command.
/// A guest still read from util-vserver's configuration: one line saying that some of its
/// settings have no equivalent (`convert-config` lists them, once, and writes NAME.toml).
fn warn_legacy(g: &Guest) {
    if !g.warnings.is_empty() {
        eprintln!(
            "vserver: warning: {} is read from util-vserver's configuration, and {} of its \
             settings have no equivalent here; `vserver {} convert-config` lists them and writes \
             NAME.toml",
            g.name,
            g.warnings.len(),
            g.name
        );
    }
}

/// The network lines of `vserver NAME status`: interfaces, addresses, forwards, traffic.
/// `running, 0 failed units` or `degraded, 2 failed units: a.service, b.service`.
fn systemd_line(sd: &guest::systemd::SystemdState) -> String {
    if sd.state == "starting" || sd.state == "stopping" || sd.state == "unknown" {
        return sd.state.clone();
    }
    let n = sd.failed_units.len();
    let mut line = format!(
        "{}, {n} failed unit{}",
        sd.state,
        if n == 1 { "" } else { "s" }
    );
    if n > 0 {
        line.push_str(": ");
        line.push_str(&sd.failed_units.join(", "));
    }
    line
}

fn print_network(s: &guest::Status) {
    for (i, line) in s.interfaces.iter().enumerate() {
        let label = if i == 0 { "Interfaces:" } else { "" };
        println!("{label:<21}{line}");
    }
    if !s.addresses.is_empty() {
        println!("Addresses:           {}", s.addresses.join(" "));
    }
    if !s.forwards.is_empty() {
        println!("Forwards:            {}", s.forwards.join(", "));
    }
    if !s.addresses.is_empty() {
        let t = &s.traffic;
        println!(
            "Traffic:             in {} bytes ({} packets), out {} bytes ({} packets)",
            t.rx_bytes, t.rx_packets, t.tx_bytes, t.tx_packets
        );
    }
}

/// [`load`], except that a running guest whose NAME.toml is broken (or gone) is still found
/// from its run state, with a warning: `doing` it (stop, status, running) must not depend on
/// the configuration being valid.
fn load_running(
    paths: &libvserver::paths::Paths,
    name: &str,
    doing: &str,
) -> std::result::Result<Guest, ExitCode> {
    match Guest::load_for_stop(paths, name) {
        Ok((g, None)) => Ok(g),
        Ok((g, Some(why))) => {
            eprintln!("vserver: warning: {why}; {doing} the running guest from its run state");
            Ok(g)
        }
        Err(_) => load(paths, name),
    }
}

fn print_unify(name: &str, r: &storage::unify::UnifyReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
        return;
    }
    let (verb, saved, stored) = if r.dry_run {
        ("would share", "would save", "would be stored")
    } else {
        ("shared", "saved", "stored")
    };
    println!(
        "{name}: {verb} the blocks of {} files, {saved} {}; {} files already shared, {} {stored} \
         as new contents, {} files ({}) examined",
        r.files,
        libvserver::stats::format::format_size(r.bytes),
        r.already_shared_files,
        r.stored_files,
        r.scanned_files,
        libvserver::stats::format::format_size(r.scanned_bytes)
    );
    if r.quota_full_files > 0 {
        println!(
            "{name}: {} files left unshared: the guest is at its disk quota",
            r.quota_full_files
        );
    }
}

/// The limits line of `vserver NAME status`: memory and processes in use against their
/// limits, and the other limits set.
fn print_limits(s: &guest::Status) {
    let size = libvserver::stats::format::format_size;
    let l = &s.limits;
    let mut parts = Vec::new();
    if let Some(m) = s.memory_bytes {
        parts.push(format!(
            "memory {} of {}",
            size(m),
            l.memory.as_deref().unwrap_or("no limit")
        ));
    }
    parts.push(format!(
        "{} of {} processes",
        s.processes,
        l.nproc
            .map_or_else(|| String::from("no limit"), |n| n.to_string())
    ));
    if let Some(c) = &l.cpu {
        parts.push(format!("cpu {c}"));
    }
    if let Some(w) = l.cpu_weight {
        parts.push(format!("cpu weight {w}"));
    }
    if let Some(n) = l.nice {
        parts.push(format!("nice {n}"));
    }
    println!("Limits:              {}", parts.join(", "));
}

/// The disk line of `vserver NAME status`: use and limit of the guest's quota.
fn print_disk(s: &guest::Status) {
    let Some(d) = &s.disk else { return };
    let size = libvserver::stats::format::format_size;
    let limit = if d.total_bytes == 0 {
        String::from("no limit")
    } else {
        size(d.total_bytes)
    };
    if d.total_inodes == 0 && d.used_inodes == 0 {
        println!(
            "Disk:                {} of {limit} used",
            size(d.used_bytes)
        );
    } else {
        let ilimit = if d.total_inodes == 0 {
            String::from("no limit")
        } else {
            d.total_inodes.to_string()
        };
        println!(
            "Disk:                {} of {limit} used, {} of {ilimit} inodes",
            size(d.used_bytes),
            d.used_inodes
        );
    }
}

fn do_start(g: &Guest) -> Result<()> {
    let mut rep = vserver_tools::Reporter::new("vserver");
    let s = guest::start::start_with_progress(g, &mut rep)?;
    for w in s.warnings {
        eprintln!("vserver: warning: {w}");
    }
    Ok(())
}

fn do_stop(g: &Guest) -> Result<()> {
    let s = guest::stop::stop(g)?;
    if !s.was_running {
        eprintln!("vserver: {} is not running", g.name);
    }
    if s.killed {
        eprintln!(
            "vserver: {}: its init did not end within stop.kill_timeout after the stop \
             signal: every process was killed",
            g.name
        );
    }
    for w in s.warnings {
        eprintln!("vserver: warning: {w}");
    }
    Ok(())
}

fn run(cli: Cli) -> std::result::Result<ExitCode, ExitCode> {
    let paths = cli.paths.paths();
    let fail = |e: anyhow::Error| {
        // Our errors carry their causes in their own text already.
        eprintln!("vserver: {e}");
        ExitCode::from(1)
    };
    if matches!(
        cli.cmd,
        Cmd::Start
            | Cmd::Restart
            | Cmd::Condrestart
            | Cmd::Run { .. }
            | Cmd::Enter
            | Cmd::Exec { .. }
            | Cmd::Suexec { .. }
    ) {
        // Guest code will run: our binary must not be writable through any process of ours
        // a guest can see (CVE-2019-5736).
        libvserver::security::exe::reexec_readonly()
            .map_err(|e| fail(anyhow::anyhow!("{}: {e}", cli.name)))?;
    }
    match cli.cmd {
        Cmd::Build {
            method,
            context,
            hostname,
            interfaces,
            nat,
            mtu,
            forwards,
            initstyle,
            rootdir,
            source,
            tarball,
            dist,
            mirror,
            include,
            template,
            force,
            disk_size,
            disk_backend,
            userns,
            args,
        } => {
            fn need<T>(v: Option<T>, method: &str, what: &str) -> Result<T, ExitCode> {
                v.ok_or_else(|| {
                    eprintln!("vserver: build -m {method} needs {what}");
                    ExitCode::from(2)
                })
            }
            if !include.is_empty() && !matches!(method, Method::Debootstrap) {
                eprintln!("vserver: build: --include is for -m debootstrap");
                return Err(ExitCode::from(2));
            }
            let method = match method {
                Method::Host => BuildMethod::Host,
                Method::Skeleton => BuildMethod::Skeleton { command: args },
                Method::Rootfs => BuildMethod::Rootfs {
                    source: need(source, "rootfs", "--source DIR|TARBALL")?,
                },
                Method::Template => {
                    // util-vserver's spelling: -m template -- -t TARBALL
                    let from_args = match args.as_slice() {
                        [] => None,
                        [t, f] if t == "-t" => Some(PathBuf::from(f)),
                        _ => {
                            eprintln!("vserver: build -m template: unknown arguments {args:?} (give -t TARBALL)");
                            return Err(ExitCode::from(2));
                        }
                    };
                    BuildMethod::Template {
                        tarball: need(
                            tarball.or(from_args).or(source),
                            "template",
                            "--tarball FILE",
                        )?,
                    }
                }
                Method::Clone => BuildMethod::Clone {
                    source: need(source, "clone", "--source GUEST|DIR")?
                        .to_string_lossy()
                        .into_owned(),
                },
                Method::Rsync => BuildMethod::Rsync {
                    source: need(source, "rsync", "--source DIR")?
                        .to_string_lossy()
                        .into_owned(),
                },
                Method::TemplateGuest => BuildMethod::TemplateGuest {
                    base: need(template, "template-guest", "--template BASE")?,
                },
                Method::Debootstrap => {
                    // util-vserver's spelling: -m debootstrap -- -d DIST [-m MIRROR]
                    let (mut dist, mut mirror) = (dist, mirror);
                    let mut it = args.iter();
                    while let Some(a) = it.next() {
                        match a.as_str() {
                            "-d" => dist = it.next().cloned(),
                            "-m" => mirror = it.next().cloned(),
                            other => {
                                eprintln!("vserver: build -m debootstrap: unknown argument '{other}' (give -d DIST [-m MIRROR])");
                                return Err(ExitCode::from(2));
                            }
                        }
                    }
                    BuildMethod::Debootstrap {
                        dist: need(dist, "debootstrap", "--dist DIST")?,
                        mirror,
                        include,
                    }
                }
            };
            let init_style = initstyle.map(|s| match s {
                Style::Builtin => InitStyle::Builtin,
                Style::Plain => InitStyle::Plain,
                Style::Sysv => InitStyle::Sysv,
                Style::Systemd => InitStyle::Systemd,
            });
            let o = BuildOptions {
                name: cli.name.clone(),
                method,
                context,
                hostname,
                interfaces,
                nat,
                mtu,
                forwards,
                init_style,
                root: rootdir,
                force,
                disk_size,
                disk_backend: disk_backend.and_then(|b| match b {
                    Backend::Auto => None,
                    Backend::Image => Some(libvserver::config::DiskBackend::Image),
                    Backend::Project => Some(libvserver::config::DiskBackend::Project),
                    Backend::Btrfs => Some(libvserver::config::DiskBackend::Btrfs),
                }),
                userns,
            };
            let mut rep = vserver_tools::Reporter::new("vserver");
            build(&paths, &o, &mut rep).map_err(|e| fail(e.into()))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Start => {
            let g = load(&paths, &cli.name)?;
            warn_legacy(&g);
            if g.running().is_some()
                && g.run_dir()
                    .file(libvserver::guest::state::MAINTENANCE_MARK)
                    .exists()
            {
                eprintln!(
                    "vserver: {} runs a maintenance shell (vserver {} enter of the stopped \
                     guest); start it once that shell has ended",
                    cli.name, cli.name
                );
                return Err(ExitCode::from(1));
            }
            do_start(&g).map_err(fail)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Stop => {
            let g = load_running(&paths, &cli.name, "stopping")?;
            do_stop(&g).map_err(fail)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Restart | Cmd::Condrestart => {
            let g = load(&paths, &cli.name)?;
            warn_legacy(&g);
            if matches!(cli.cmd, Cmd::Condrestart) && g.running().is_none() {
                return Ok(ExitCode::SUCCESS);
            }
            do_stop(&g).map_err(fail)?;
            do_start(&g).map_err(fail)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run { cmd, quiet } => {
            let g = load(&paths, &cli.name)?;
            warn_legacy(&g);
            let mut stdout = std::io::stdout();
            let out: Option<&mut dyn std::io::Write> = if quiet { None } else { Some(&mut stdout) };
            let code = guest::start::run_once(&g, &cmd, out).map_err(|e| fail(e.into()))?;
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
        Cmd::Console => {
            let g = load_running(&paths, &cli.name, "attaching to")?;
            guest::console::attach(&g).map_err(|e| fail(e.into()))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Logs { follow, raw } => {
            let g = load_running(&paths, &cli.name, "showing the log of")?;
            guest::console::logs(&g, follow, raw, &mut std::io::stdout())
                .map_err(|e| fail(e.into()))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::ConvertConfig => {
            let g = load(&paths, &cli.name)?;
            for w in &g.warnings {
                eprintln!("vserver: {}: no equivalent: {w}", g.name);
            }
            let to = paths.config_file(&g.name);
            if to.exists() {
                eprintln!(
                    "vserver: {}: {} exists already; nothing converted",
                    g.name,
                    to.display()
                );
                return Err(ExitCode::from(1));
            }
            // What has no equivalent stays on record in the file itself.
            let mut text = String::new();
            if !g.warnings.is_empty() {
                text.push_str(
                    "# Converted from util-vserver's configuration. Without an equivalent here:\n",
                );
                for w in &g.warnings {
                    text.push_str(&format!("#   {}\n", w.replace('\n', " ")));
                }
                text.push('\n');
            }
            text.push_str(&g.config.to_toml(&g.name));
            std::fs::write(&to, text).map_err(|e| {
                eprintln!("vserver: write {}: {e}", to.display());
                ExitCode::from(1)
            })?;
            println!("vserver: wrote {}", to.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::ResetAccounting => {
            let g = load(&paths, &cli.name)?;
            guest::network::reset_traffic(&g).map_err(|e| fail(e.into()))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { json } => {
            let g = load_running(&paths, &cli.name, "showing")?;
            let s = guest::status(&g).map_err(|e| fail(e.into()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            } else if s.running {
                println!("Vserver '{}' is running at context '{}'", s.name, s.xid);
                println!("Number of processes: {}", s.processes);
                println!("Uptime:              {}", human_secs(s.uptime_secs));
                if let Some(sd) = &s.systemd {
                    println!("systemd:             {}", systemd_line(sd));
                }
                print_network(&s);
                print_disk(&s);
                print_limits(&s);
                if s.maintenance {
                    println!(
                        "State:               maintenance shell (vserver {} enter of the stopped \
                         guest: builtin init, none of its services; stops when the shell ends)",
                        s.name
                    );
                }
                if s.suspended {
                    println!(
                        "State:               suspended ('vserver {} resume' thaws it)",
                        s.name
                    );
                }
                if !s.monitor_alive {
                    println!(
                        "Warning: its monitor is gone; 'vserver {} stop' still cleans up",
                        s.name
                    );
                }
            } else {
                println!("Vserver '{}' is stopped", s.name);
                print_network(&s);
                print_disk(&s);
            }
            Ok(ExitCode::from(if s.running { 0 } else { 3 }))
        }
        Cmd::Limit {
            key: Some(key),
            value: Some(value),
        } => {
            let g = load(&paths, &cli.name)?;
            guest::limits::set_limit(&g, &key, &value).map_err(|e| fail(e.into()))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Limit { key, .. } => {
            // The listing: each key set in NAME.toml, as written there (TOML values).
            let g = load(&paths, &cli.name)?;
            let set = serde_json::to_value(&g.config.limits).unwrap_or_default();
            let obj = set.as_object().cloned().unwrap_or_default();
            match key {
                Some(k) => {
                    if !guest::limits::KEYS.contains(&k.as_str()) {
                        eprintln!(
                            "vserver: unknown limit '{k}'; one of: {}",
                            guest::limits::KEYS.join(", ")
                        );
                        return Err(ExitCode::from(2));
                    }
                    println!(
                        "{}",
                        obj.get(&k)
                            .map_or_else(|| String::from("none"), |v| v.to_string())
                    );
                }
                None => {
                    for (k, v) in &obj {
                        println!("{k} = {v}");
                    }
                    if let Ok(s) = guest::status(&g) {
                        if s.running {
                            print_limits(&s);
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Suspend | Cmd::Resume => {
            let g = load(&paths, &cli.name)?;
            guest::limits::freeze(&g, matches!(cli.cmd, Cmd::Suspend))
                .map_err(|e| fail(e.into()))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Unify { args } => {
            let g = load(&paths, &cli.name)?;
            let mut rep = vserver_tools::Reporter::new("vserver");
            let r = storage::unify::unify_guest(
                &g,
                args.dry_run,
                &args.exclude,
                args.min_size,
                &mut rep,
            )
            .map_err(|m| fail(anyhow::anyhow!("{}: unify: {m}", g.name)))?;
            print_unify(&g.name, &r, args.json);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Snapshot { op } => {
            let g = load(&paths, &cli.name)?;
            let f = |m: String| fail(anyhow::anyhow!("{}: snapshot: {m}", g.name));
            match op {
                SnapOp::Create { label } => {
                    let s = storage::snapshot::create(&g, label.as_deref()).map_err(f)?;
                    println!("{}", s.label);
                }
                SnapOp::List { json } => {
                    let v = storage::snapshot::list(&g).map_err(f)?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                    } else {
                        println!("{:<24} {:<20} {:<15} PATH", "LABEL", "CREATED", "KIND");
                        for s in v {
                            println!(
                                "{:<24} {:<20} {:<15} {}",
                                s.label,
                                storage::snapshot::utc_label(s.created),
                                s.kind,
                                s.path.display()
                            );
                        }
                    }
                }
                SnapOp::Restore { label } => {
                    let aside = storage::snapshot::restore(&g, &label).map_err(f)?;
                    eprintln!(
                        "vserver: {}: restored {label}; the state before is kept as snapshot {aside}",
                        g.name
                    );
                }
                SnapOp::Delete { label } => storage::snapshot::delete(&g, &label).map_err(f)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Export { file } => {
            let g = load(&paths, &cli.name)?;
            let out = (file != "-").then(|| PathBuf::from(&file));
            let mut rep = vserver_tools::Reporter::new("vserver");
            storage::archive::export(&g, out.as_deref(), &mut rep)
                .map_err(|m| fail(anyhow::anyhow!("{}: export: {m}", g.name)))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Import {
            file,
            renumber,
            context,
            rootdir,
            trust_config,
        } => {
            let o = storage::archive::ImportOptions {
                name: cli.name.clone(),
                input: (file != "-").then(|| PathBuf::from(&file)),
                renumber,
                context,
                root: rootdir,
                trust_config,
            };
            let mut rep = vserver_tools::Reporter::new("vserver");
            let cfg = storage::archive::import(&paths, &o, &mut rep)
                .map_err(|m| fail(anyhow::anyhow!("{}: import: {m}", cli.name)))?;
            eprintln!(
                "vserver: imported {} with context {}; config {}",
                cli.name,
                cfg.context,
                paths.config_file(&cli.name).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Move { new_root } => {
            let g = load(&paths, &cli.name)?;
            storage::manage::move_root(&g, &new_root)
                .map_err(|m| fail(anyhow::anyhow!("{}: move: {m}", g.name)))?;
            eprintln!("vserver: {} now lives at {}", g.name, new_root.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Delete { force } => {
            let g = load(&paths, &cli.name)?;
            if !force
                && !confirm(&format!(
                    "Delete guest {} with its root {}, snapshots and configuration?",
                    g.name,
                    g.root().display()
                ))
            {
                eprintln!(
                    "vserver: {}: not deleted (confirm on a terminal, or give --force)",
                    g.name
                );
                return Err(ExitCode::from(1));
            }
            let removed = storage::manage::delete(&g)
                .map_err(|m| fail(anyhow::anyhow!("{}: delete: {m}", g.name)))?;
            for p in removed {
                eprintln!("vserver: removed {}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::UsernsUnshift => {
            let g = load(&paths, &cli.name)?;
            let mut rep = vserver_tools::Reporter::new("vserver");
            match storage::shift::unshift_guest(&g, &mut rep)
                .map_err(|m| fail(anyhow::anyhow!("{}: userns-unshift: {m}", g.name)))?
            {
                None => eprintln!("vserver: {}: its files were not shifted", g.name),
                Some(r) => eprintln!(
                    "vserver: {}: gave {} of {} files their ordinary owners back",
                    g.name, r.changed, r.inodes
                ),
            }
            if g.config.userns {
                eprintln!(
                    "vserver: {}: userns = true: the next start shifts them again unless its \
                     file system can be idmapped",
                    g.name
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Running => {
            let g = load_running(&paths, &cli.name, "checking")?;
            Ok(ExitCode::from(if g.running().is_some() { 0 } else { 1 }))
        }
        Cmd::Enter | Cmd::Exec { .. } | Cmd::Suexec { .. } => {
            let g = load(&paths, &cli.name)?;
            let req = match cli.cmd {
                Cmd::Enter => ExecRequest {
                    argv: Vec::new(),
                    user: None,
                    tty: true,
                },
                Cmd::Exec { cmd } => ExecRequest::command(cmd),
                Cmd::Suexec { user, cmd } => ExecRequest {
                    argv: cmd,
                    user: Some(user),
                    tty: false,
                },
                _ => unreachable!("matched above"),
            };
            let code = if req.tty && g.running().is_none() {
                eprintln!(
                    "vserver: {} is not running: a maintenance shell in it, with vserver's \
                     builtin init and none of its services (it stops when the shell ends; \
                     'vserver {} start' boots it)",
                    cli.name, cli.name
                );
                match guest::exec::start_for_maintenance(&g).map_err(|e| fail(e.into()))? {
                    // The shell runs in a child (exec joins the guest's namespaces for good),
                    // this process stops the guest when it ends.
                    Some(m) => {
                        // A hang-up or ^C reaches the shell (the child forwards it); this
                        // process keeps them pending until the guest is stopped, then exits.
                        let mut set = nix::sys::signal::SigSet::empty();
                        for sig in [
                            nix::sys::signal::Signal::SIGHUP,
                            nix::sys::signal::Signal::SIGINT,
                            nix::sys::signal::Signal::SIGQUIT,
                            nix::sys::signal::Signal::SIGTERM,
                        ] {
                            set.add(sig);
                        }
                        let _ = set.thread_block();
                        let mut cmd = std::process::Command::new("/proc/self/exe");
                        cmd.arg(&cli.name)
                            .arg("enter")
                            .env("VSERVER_CONFDIR", &paths.config_dir)
                            .env("VSERVER_ROOTBASE", &paths.root_base)
                            .env("VSERVER_RUNDIR", &paths.run_dir)
                            .env("VSERVER_LOGDIR", &paths.log_dir);
                        // SAFETY: sigprocmask is async-signal-safe; the child takes the
                        // signals as any enter does.
                        unsafe {
                            use std::os::unix::process::CommandExt;
                            cmd.pre_exec(move || {
                                let _ = set.thread_unblock();
                                Ok(())
                            });
                        }
                        let shell = cmd.spawn().and_then(|mut child| {
                            // A hang-up, ^C or TERM sent to this process goes to the shell's
                            // enter (which passes it on); the guest is stopped once it ends.
                            loop {
                                if let Some(st) = child.try_wait()? {
                                    return Ok(st);
                                }
                                let ts = libc::timespec {
                                    tv_sec: 0,
                                    tv_nsec: 100_000_000,
                                };
                                // SAFETY: a valid signal set and timeout; no siginfo wanted.
                                let sig = unsafe {
                                    libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts)
                                };
                                if sig > 0 {
                                    // An interactive shell ignores TERM: a TERM for this
                                    // session hangs it up.
                                    let sig = if sig == libc::SIGTERM {
                                        libc::SIGHUP
                                    } else {
                                        sig
                                    };
                                    // SAFETY: kill(2) of our own child.
                                    unsafe { libc::kill(child.id() as i32, sig) };
                                }
                            }
                        });
                        let stopped = guest::stop::stop(&m);
                        let st = shell.map_err(|e| fail(anyhow::anyhow!("run the shell: {e}")))?;
                        stopped.map_err(|e| fail(e.into()))?;
                        return Ok(ExitCode::from(
                            st.code()
                                .unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
                                .clamp(0, 255) as u8,
                        ));
                    }
                    None => guest::exec::exec(&g, &req),
                }
            } else {
                guest::exec::exec(&g, &req)
            };
            let code = code.map_err(|e| fail(e.into()))?;
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
    }
}

fn main() -> ExitCode {
    vserver_tools::generate_if_asked(<Cli as clap::CommandFactory>::command());
    let cli = Cli::parse();
    // Commands that only print end quietly when their reader goes away (`status | head -1`),
    // as other Unix tools do; exec, enter and friends relay a command's output and give it
    // SIGPIPE themselves.
    if !matches!(
        cli.cmd,
        Cmd::Exec { .. } | Cmd::Suexec { .. } | Cmd::Enter | Cmd::Run { .. } | Cmd::Console
    ) {
        // SAFETY: setting a signal disposition before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match run(cli) {
        Ok(c) | Err(c) => c,
    }
}
