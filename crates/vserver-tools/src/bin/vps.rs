//! `vps [ps options]`: `ps` with a CONTEXT column (xid and guest name) after PID.

use libvserver::cgroup::xid_of_pid;
use libvserver::paths::Paths;
use libvserver::stats::{format::insert_context_column, guest_names};
use std::path::Path;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    vserver_tools::die_on_closed_pipe();
    vserver_tools::generate_if_asked(
        clap::Command::new("vps")
            .version(env!("CARGO_PKG_VERSION"))
            .about("ps with a CONTEXT column (context id and guest name) after PID")
            .arg(
                clap::Arg::new("json")
                    .long("json")
                    .action(clap::ArgAction::SetTrue)
                    .help("One JSON object per process"),
            )
            .arg(
                clap::Arg::new("ps_options")
                    .num_args(0..)
                    .allow_hyphen_values(true)
                    .help("Options passed to ps(1), e.g. aux"),
            ),
    );
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .first()
        .map(|a| a == "--help" || a == "-h")
        .unwrap_or(false)
    {
        println!("usage: vps [ps options]   (ps with a CONTEXT column after PID; --json for JSON)");
        return ExitCode::SUCCESS;
    }
    let json = args.iter().any(|a| a == "--json");
    let ps_args: Vec<&String> = args.iter().filter(|a| *a != "--json").collect();
    let names = guest_names(&Paths::resolve(None, None, None, None).run_dir);
    let lookup = |pid: u32| -> Option<(u32, String)> {
        let xid = xid_of_pid(Path::new("/proc"), pid as i32)?;
        Some((
            xid,
            names
                .get(&xid)
                .map(|(n, _)| n.clone())
                .unwrap_or_else(|| "-".into()),
        ))
    };
    if json {
        let out = Command::new("ps").args(["-eo", "pid=,args="]).output();
        let Ok(out) = out else {
            eprintln!("vps: cannot run ps");
            return ExitCode::FAILURE;
        };
        let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let l = l.trim_start();
                let (pid, cmd) = l.split_once(' ').unwrap_or((l, ""));
                let pid: u32 = pid.parse().ok()?;
                let (xid, name) = lookup(pid).unwrap_or((0, "MAIN".into()));
                Some(serde_json::json!({"pid": pid, "xid": xid, "name": name, "command": cmd.trim()}))
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    match Command::new("ps").args(&ps_args).output() {
        Ok(out) => {
            print!(
                "{}",
                insert_context_column(&String::from_utf8_lossy(&out.stdout), &lookup)
            );
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            ExitCode::from(out.status.code().unwrap_or(1).clamp(0, 255) as u8)
        }
        Err(e) => {
            eprintln!("vps: cannot run ps: {e}");
            ExitCode::FAILURE
        }
    }
}
