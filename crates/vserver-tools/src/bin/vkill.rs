//! `vkill [--xid N] [-s SIG] [PID...]`: signal processes of a context by their in-guest pid, or
//! every process of the context when no pid is given. Default signal TERM.

use clap::Parser;
use libvserver::cgroup::{CgroupLayout, GuestCgroup};
use libvserver::stats::host_pid_of;
use std::path::Path;
use std::process::ExitCode;
use vserver_tools::parse_signal;

#[derive(Parser)]
#[command(
    name = "vkill",
    version,
    about = "Send a signal to processes of a context"
)]
struct Cli {
    #[command(flatten)]
    paths: vserver_tools::PathArgs,
    /// Context id or guest name; PIDs are then in-guest pids (1 = the guest's init).
    #[arg(long = "xid", short = 'c', value_name = "XID|NAME")]
    xid: Option<String>,
    /// Signal name or number.
    #[arg(short = 's', default_value = "TERM")]
    signal: String,
    /// Pids; none with --xid means every process of the context.
    pids: Vec<i32>,
}

fn main() -> ExitCode {
    vserver_tools::generate_if_asked(<Cli as clap::CommandFactory>::command());
    let cli = Cli::parse();
    let sig = match parse_signal(&cli.signal) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vkill: {e}");
            return ExitCode::from(2);
        }
    };
    let signal = nix::sys::signal::Signal::try_from(sig).ok();
    // A guest's name stands for its context id wherever an id is taken.
    let xid = match cli.xid.as_deref().map(|x| {
        x.parse::<u32>().or_else(|_| {
            libvserver::guest::Guest::load(&cli.paths.paths(), x)
                .map(|g| g.config.context)
                .map_err(|e| format!("--xid {x}: not a context id, and {e}"))
        })
    }) {
        Some(Err(e)) => {
            eprintln!("vkill: {e}");
            return ExitCode::from(2);
        }
        Some(Ok(x)) => Some(x),
        None => None,
    };
    let targets: Vec<i32> = match xid {
        Some(xid) => {
            let layout = match CgroupLayout::detect() {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("vkill: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let pids = GuestCgroup::new(&layout, xid).pids();
            if pids.is_empty() {
                eprintln!("vkill: context {xid} has no process");
                return ExitCode::FAILURE;
            }
            if cli.pids.is_empty() {
                pids
            } else {
                let mut v = Vec::new();
                for p in &cli.pids {
                    match host_pid_of(Path::new("/proc"), &pids, *p) {
                        Some(h) => v.push(h),
                        None => {
                            eprintln!("vkill: context {xid} has no process {p}");
                            return ExitCode::FAILURE;
                        }
                    }
                }
                v
            }
        }
        None if cli.pids.is_empty() => {
            eprintln!("vkill: give --xid N or pids");
            return ExitCode::from(2);
        }
        None => cli.pids.clone(),
    };
    let mut rc = ExitCode::SUCCESS;
    for p in targets {
        if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), signal) {
            eprintln!("vkill: pid {p}: {e}");
            rc = ExitCode::FAILURE;
        }
    }
    rc
}
