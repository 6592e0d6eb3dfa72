//! `vserver-stat [--json]`: one row per running context plus the host, util-vserver's format.

use clap::Parser;
use libvserver::cgroup::CgroupLayout;
use libvserver::stats::{collect, format::format_table};
use std::path::Path;
use std::process::ExitCode;
use vserver_tools::PathArgs;

#[derive(Parser)]
#[command(
    name = "vserver-stat",
    version,
    about = "Show running virtual servers: CTX PROC VSZ RSS userTIME sysTIME UPTIME NAME"
)]
struct Cli {
    #[command(flatten)]
    paths: PathArgs,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// Prometheus text format (for node_exporter's textfile collector or a scrape proxy).
    #[arg(long, conflicts_with = "json")]
    prometheus: bool,
    /// Network view: CTX, addresses, bytes and packets in and out (totals kept across restarts).
    #[arg(long, conflicts_with = "prometheus")]
    net: bool,
    /// Every configured guest, stopped ones too: NAME CTX STATE MARKS ADDRESSES.
    #[arg(long, conflicts_with_all = ["prometheus", "net"])]
    all: bool,
    /// Accepted for util-vserver compatibility; rows are sorted by context id.
    #[arg(long)]
    sort: Option<String>,
}

fn main() -> ExitCode {
    vserver_tools::die_on_closed_pipe();
    vserver_tools::generate_if_asked(<Cli as clap::CommandFactory>::command());
    let cli = Cli::parse();
    let layout = match CgroupLayout::detect() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vserver-stat: {e}");
            return ExitCode::FAILURE;
        }
    };
    let paths = cli.paths.paths();
    if cli.all {
        let rows = libvserver::stats::all_rows(&paths);
        if cli.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&rows).unwrap_or_default()
            );
        } else {
            print!("{}", libvserver::stats::format::format_all_table(&rows));
        }
        return ExitCode::SUCCESS;
    }
    if cli.net {
        let rows = libvserver::stats::net_rows(&paths);
        if cli.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&rows).unwrap_or_default()
            );
        } else {
            print!("{}", libvserver::stats::format::format_net_table(&rows));
        }
        return ExitCode::SUCCESS;
    }
    let rows = collect(&layout, &paths.run_dir, Path::new("/proc"));
    if cli.prometheus {
        print!("{}", libvserver::stats::prometheus::render(&rows));
    } else if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else {
        print!("{}", format_table(&rows));
    }
    ExitCode::SUCCESS
}
