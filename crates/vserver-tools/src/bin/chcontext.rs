//! `chcontext [--cap [!]CAP] [--secure] [--xid N] [--hostname H] [--domainname D] [--silent] CMD`:
//! run CMD in a new security context (its own processes, IPC and host name; same root).

use clap::Parser;
use libvserver::context::oneshot::{run, OneShot};
use libvserver::security::caps::{all_supported, parse_cap_options, secure_set};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "chcontext",
    version,
    about = "Run a command in a new security context"
)]
struct Cli {
    /// Keep CAP (with --secure), or remove it with !CAP; repeatable.
    #[arg(long = "cap", allow_hyphen_values = true)]
    caps: Vec<String>,
    /// Remove the capabilities that can compromise the host (util-vserver's secure set) and
    /// apply the default seccomp filter.
    #[arg(long)]
    secure: bool,
    /// Context id (default: a free dynamic one from 49152).
    #[arg(long = "xid", alias = "ctx")]
    xid: Option<u32>,
    /// Host name in the new context.
    #[arg(long)]
    hostname: Option<String>,
    /// NIS domain name ("none" unsets it).
    #[arg(long)]
    domainname: Option<String>,
    /// Do not print the context number.
    #[arg(long)]
    silent: bool,
    /// Command and arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    cmd: Vec<String>,
}

/// `--xid N` of a running guest: join its context (util-vserver migrated into an existing
/// context the same way), with the guest's own bounding set and seccomp filter.
fn join_guest(xid: u32, cmd: &[String]) -> Option<ExitCode> {
    let paths = libvserver::paths::Paths::resolve(None, None, None, None);
    let st = libvserver::guest::state::running_guests(&paths.run_dir)
        .into_iter()
        .find(|s| s.xid == xid)?;
    let code = libvserver::guest::Guest::load(&paths, &st.name).and_then(|g| {
        libvserver::guest::exec::exec(
            &g,
            &libvserver::guest::exec::ExecRequest::command(cmd.to_vec()),
        )
    });
    Some(match code {
        Ok(c) => ExitCode::from(c.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("chcontext: {e}");
            ExitCode::from(255)
        }
    })
}

fn main() -> ExitCode {
    vserver_tools::generate_if_asked(<Cli as clap::CommandFactory>::command());
    let cli = Cli::parse();
    // The command runs in a new context: our binary must not be writable through it.
    if let Err(e) = libvserver::security::exe::reexec_readonly() {
        eprintln!("chcontext: {e}");
        return ExitCode::from(255);
    }
    if let Some(x) = cli.xid {
        if let Some(code) = join_guest(x, &cli.cmd) {
            return code;
        }
    }
    let (add, remove) = match parse_cap_options(&cli.caps) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("chcontext: {e}");
            return ExitCode::from(255);
        }
    };
    let keep = if cli.secure {
        Some(secure_set(&add, &remove))
    } else if !remove.is_empty() {
        let mut k = all_supported();
        for r in &remove {
            k.remove(r);
        }
        Some(k)
    } else {
        None
    };
    let silent = cli.silent;
    let hostname = cli.hostname.clone();
    let o = OneShot {
        xid: cli.xid,
        hostname: cli.hostname,
        domainname: cli
            .domainname
            .map(|d| if d == "none" { String::new() } else { d }),
        keep,
        seccomp: cli.secure,
        argv: cli.cmd,
    };
    let mut announce = |xid: u32| {
        if !silent {
            println!("New security context is {xid}");
            if let Some(h) = &hostname {
                println!("Host name is now {h}");
            }
        }
    };
    match run(&o, &mut announce) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("chcontext: {e}");
            ExitCode::from(255)
        }
    }
}
