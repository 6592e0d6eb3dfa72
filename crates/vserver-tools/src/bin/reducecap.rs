//! `reducecap [--show [--pid P]] [--secure] [--cap [!]CAP]... CMD`: run CMD with a lower
//! capability bounding set (capabilities(7)); nothing run below it, not even `su` to root,
//! gets the removed capabilities back.

use clap::Parser;
use libvserver::security::caps::{
    apply_bounding, cap_name, caps_from_mask, parse_cap_options, secure_set, to_drop,
};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "reducecap",
    version,
    about = "Run a command with a reduced capability bounding set"
)]
struct Cli {
    /// Print the bounding, effective and permitted sets (of --pid or this process) and exit.
    #[arg(long)]
    show: bool,
    /// Process to show.
    #[arg(long, requires = "show")]
    pid: Option<i32>,
    /// Keep only util-vserver's secure set.
    #[arg(long)]
    secure: bool,
    /// Remove CAP from the bounding set with !CAP; with --secure, keep CAP; repeatable.
    #[arg(long = "cap", allow_hyphen_values = true)]
    caps: Vec<String>,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cmd: Vec<String>,
}

fn show(pid: Option<i32>) -> ExitCode {
    let path = pid
        .map(|p| format!("/proc/{p}/status"))
        .unwrap_or_else(|| String::from("/proc/self/status"));
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("reducecap: cannot read {path}");
        return ExitCode::from(1);
    };
    for key in ["CapBnd", "CapEff", "CapPrm"] {
        if let Some(hex) = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
        {
            let mask = u64::from_str_radix(hex.trim(), 16).unwrap_or(0);
            let names: Vec<String> = caps_from_mask(mask).into_iter().map(cap_name).collect();
            println!("{key}: {:016x} {}", mask, names.join(" "));
        }
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    vserver_tools::generate_if_asked(<Cli as clap::CommandFactory>::command());
    let cli = Cli::parse();
    if cli.show {
        return show(cli.pid);
    }
    if cli.cmd.is_empty() {
        eprintln!("reducecap: no command given; use --help");
        return ExitCode::from(2);
    }
    let (add, remove) = match parse_cap_options(&cli.caps) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("reducecap: {e}");
            return ExitCode::from(2);
        }
    };
    let current = caps::read(None, caps::CapSet::Bounding).unwrap_or_default();
    let mut keep = if cli.secure {
        secure_set(&add, &remove)
    } else {
        current.clone()
    };
    keep.retain(|c| current.contains(c));
    for r in &remove {
        keep.remove(r);
    }
    if let Err(e) = apply_bounding(&to_drop(&keep), false) {
        eprintln!("reducecap: {e}");
        return ExitCode::from(1);
    }
    let err = std::os::unix::process::CommandExt::exec(
        std::process::Command::new(&cli.cmd[0]).args(&cli.cmd[1..]),
    );
    eprintln!("reducecap: cannot execute {}: {err}", cli.cmd[0]);
    ExitCode::from(127)
}
