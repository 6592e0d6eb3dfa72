//! `vtop [--interval SECS] [-n COUNT]`: a live per-guest view (CPU %, memory, processes,
//! network traffic per second), refreshed in place on a terminal, printed one table per sample
//! otherwise.

use clap::Parser;
use libvserver::cgroup::CgroupLayout;
use libvserver::stats::{collect, format::format_size};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vserver_tools::{human_secs, PathArgs};

#[derive(Parser)]
#[command(
    name = "vtop",
    version,
    about = "Live per-guest CPU, memory, process and network view"
)]
struct Cli {
    #[command(flatten)]
    paths: PathArgs,
    /// Seconds between samples.
    #[arg(short = 'd', long, default_value = "2")]
    interval: f64,
    /// Stop after COUNT samples (default: until interrupted).
    #[arg(short = 'n', long)]
    count: Option<u64>,
    /// One JSON array per sample and line (xid, name, procs, cpu_percent, rss_bytes,
    /// vsz_bytes, uptime_secs); cpu_percent is null in the first sample.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    vserver_tools::die_on_closed_pipe();
    vserver_tools::generate_if_asked(<Cli as clap::CommandFactory>::command());
    let cli = Cli::parse();
    let layout = match CgroupLayout::detect() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vtop: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !(cli.interval > 0.0 && cli.interval.is_finite()) {
        eprintln!("vtop: --interval must be a positive number of seconds");
        return ExitCode::from(2);
    }
    let paths = cli.paths.paths();
    let run_dir = paths.run_dir.clone();
    let mut prev_net: HashMap<u32, (u64, u64)> = HashMap::new();
    let tty = std::io::stdout().is_terminal();
    let mut prev: HashMap<u32, u64> = HashMap::new();
    let mut last = Instant::now();
    let mut n = 0u64;
    loop {
        let rows = collect(&layout, &run_dir, Path::new("/proc"));
        // Traffic totals (bytes in, out) of the running guests with addresses.
        let net: HashMap<u32, (u64, u64)> = libvserver::stats::net_rows(&paths)
            .into_iter()
            .filter(|r| r.running)
            .map(|r| (r.xid, (r.traffic.rx_bytes, r.traffic.tx_bytes)))
            .collect();
        let elapsed = last.elapsed().as_micros().max(1) as f64;
        last = Instant::now();
        let mut out = String::new();
        let mut json = Vec::new();
        if tty && !cli.json {
            out.push_str("\x1b[H\x1b[2J");
        }
        out.push_str(&format!(
            "{:<6} {:<20} {:>6} {:>7} {:>8} {:>8} {:>10} {:>8} {:>8}\n",
            "CTX", "NAME", "PROC", "CPU%", "RSS", "VSZ", "UPTIME", "RX/s", "TX/s"
        ));
        for r in &rows {
            let cpu = r.user_usec + r.sys_usec;
            let pct_num = match prev.get(&r.xid) {
                Some(p) if n > 0 => Some(cpu.saturating_sub(*p) as f64 * 100.0 / elapsed),
                _ => None,
            };
            let pct = pct_num.map_or_else(|| String::from("-"), |p| format!("{p:.1}"));
            let traffic = net.get(&r.xid).copied();
            // Bytes per second since the last sample.
            let rate = match (traffic, prev_net.get(&r.xid)) {
                (Some((rx, tx)), Some((prx, ptx))) if n > 0 => Some((
                    rx.saturating_sub(*prx) as f64 * 1e6 / elapsed,
                    tx.saturating_sub(*ptx) as f64 * 1e6 / elapsed,
                )),
                _ => None,
            };
            let cell =
                |v: Option<f64>| v.map_or_else(|| String::from("-"), |b| format_size(b as u64));
            json.push(serde_json::json!({
                "xid": r.xid, "name": r.name, "procs": r.procs, "cpu_percent": pct_num,
                "rss_bytes": r.rss_bytes, "vsz_bytes": r.vsz_bytes, "uptime_secs": r.uptime_secs,
                "rx_bytes": traffic.map(|t| t.0), "tx_bytes": traffic.map(|t| t.1),
                "rx_bytes_per_sec": rate.map(|r| r.0), "tx_bytes_per_sec": rate.map(|r| r.1),
            }));
            prev.insert(r.xid, cpu);
            if let Some(t) = traffic {
                prev_net.insert(r.xid, t);
            }
            let name: String = r.name.chars().take(20).collect();
            out.push_str(&format!(
                "{:<6} {:<20} {:>6} {:>7} {:>8} {:>8} {:>10} {:>8} {:>8}\n",
                r.xid,
                name,
                r.procs,
                pct,
                format_size(r.rss_bytes),
                format_size(r.vsz_bytes),
                human_secs(r.uptime_secs),
                cell(rate.map(|r| r.0)),
                cell(rate.map(|r| r.1))
            ));
        }
        if cli.json {
            out = format!("{}\n", serde_json::Value::Array(json));
        }
        let mut so = std::io::stdout();
        if so
            .write_all(out.as_bytes())
            .and_then(|_| so.flush())
            .is_err()
        {
            return ExitCode::SUCCESS;
        }
        n += 1;
        if cli.count.is_some_and(|c| n >= c) {
            return ExitCode::SUCCESS;
        }
        if !tty && !cli.json {
            println!();
        }
        std::thread::sleep(Duration::from_secs_f64(cli.interval));
    }
}
