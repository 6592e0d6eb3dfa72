//! Host-side views of guests for `vserver-stat`, `vps` and `vkill`: which process belongs to
//! which context, read from cgroups (no /proc scan per guest).

pub mod format;
pub mod prometheus;

use crate::cgroup::{CgroupLayout, GuestCgroup};
use crate::guest::state::{now_unix, running_guests};
use format::StatRow;
use std::collections::HashMap;
use std::path::Path;

/// Clock ticks per second of /proc times (USER_HZ).
fn ticks_per_sec() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map(|v| v as u64)
        .unwrap_or(100)
}

/// Fields of /proc/PID/stat used here.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcStat {
    /// User time, clock ticks.
    pub utime: u64,
    /// System time, clock ticks.
    pub stime: u64,
    /// Start, clock ticks after boot.
    pub start: u64,
    /// Virtual size, bytes.
    pub vsize: u64,
    /// Resident set, pages.
    pub rss_pages: u64,
}

/// Parse the text of /proc/PID/stat (proc(5)).
pub fn parse_proc_stat(s: &str) -> Option<ProcStat> {
    let rest = s.get(s.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split(' ').collect();
    // rest starts at field 3 (state); field n is f[n - 3].
    let g = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(ProcStat {
        utime: g(14)?,
        stime: g(15)?,
        start: g(22)?,
        vsize: g(23)?,
        rss_pages: g(24)?,
    })
}

fn read_stat(proc_root: &Path, pid: i32) -> Option<ProcStat> {
    parse_proc_stat(&std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?)
}

/// Map of context id → guest name for running guests found in `run_dir`.
pub fn guest_names(run_dir: &Path) -> HashMap<u32, (String, u64)> {
    running_guests(run_dir)
        .into_iter()
        .map(|s| (s.xid, (s.name, s.started_unix)))
        .collect()
}

/// One row per context with processes, plus the host (xid 0) first. Sizes in bytes, times in
/// microseconds (see [`StatRow`]).
pub fn collect(layout: &CgroupLayout, run_dir: &Path, proc_root: &Path) -> Vec<StatRow> {
    let hz = ticks_per_sec();
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    let names = guest_names(run_dir);
    let boot_uptime = std::fs::read_to_string(proc_root.join("uptime"))
        .ok()
        .and_then(|s| s.split('.').next().and_then(|v| v.parse::<u64>().ok()))
        .unwrap_or(0);
    let mut rows = Vec::new();
    let mut guest_pids = std::collections::HashSet::new();
    for xid in layout.guest_xids() {
        let cg = GuestCgroup::new(layout, xid);
        let pids = cg.pids();
        if pids.is_empty() {
            continue;
        }
        let (mut vsz, mut rss, mut oldest) = (0, 0, u64::MAX);
        for p in &pids {
            guest_pids.insert(*p);
            if let Some(s) = read_stat(proc_root, *p) {
                vsz += s.vsize;
                rss += s.rss_pages * page;
                oldest = oldest.min(s.start);
            }
        }
        let cpu = cg.cpu_times();
        let (name, uptime) = match names.get(&xid) {
            Some((n, started)) => (n.clone(), now_unix().saturating_sub(*started)),
            None => (
                String::from("-"),
                boot_uptime.saturating_sub(if oldest == u64::MAX { 0 } else { oldest / hz }),
            ),
        };
        rows.push(StatRow {
            xid,
            procs: pids.len() as u64,
            vsz_bytes: vsz,
            rss_bytes: rss,
            user_usec: cpu.user_usec,
            sys_usec: cpu.sys_usec,
            uptime_secs: uptime,
            name,
        });
    }
    let mut host = StatRow {
        xid: 0,
        procs: 0,
        vsz_bytes: 0,
        rss_bytes: 0,
        user_usec: 0,
        sys_usec: 0,
        uptime_secs: boot_uptime,
        name: "root server".into(),
    };
    for e in std::fs::read_dir(proc_root).into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if guest_pids.contains(&pid) {
            continue;
        }
        if let Some(s) = read_stat(proc_root, pid) {
            host.procs += 1;
            host.vsz_bytes += s.vsize;
            host.rss_bytes += s.rss_pages * page;
            host.user_usec += s.utime * 1_000_000 / hz;
            host.sys_usec += s.stime * 1_000_000 / hz;
        }
    }
    rows.insert(0, host);
    rows
}

/// Find the host pid of in-guest pid `guest_pid` among `pids` (NSpid in /proc/PID/status).
pub fn host_pid_of(proc_root: &Path, pids: &[i32], guest_pid: i32) -> Option<i32> {
    pids.iter().copied().find(|p| {
        std::fs::read_to_string(proc_root.join(p.to_string()).join("status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("NSpid:"))
                    .map(|l| l.split_whitespace().last() == Some(&guest_pid.to_string()))
            })
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_parses_names_with_spaces() {
        let s = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 555 1048576 25 18446744073709551615";
        let p = parse_proc_stat(s).unwrap();
        assert_eq!(
            (p.utime, p.stime, p.start, p.vsize, p.rss_pages),
            (7, 3, 555, 1048576, 25)
        );
    }
}

/// One row of `vserver-stat --net`: a configured guest with addresses, running or not.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NetRow {
    /// Context id.
    pub xid: u32,
    /// Guest name.
    pub name: String,
    /// Whether it runs.
    pub running: bool,
    /// Its addresses (`ADDR/PREFIX`).
    pub addresses: Vec<String>,
    /// Traffic so far (saved totals plus live counters).
    pub traffic: crate::guest::network::Traffic,
}

/// The `vserver-stat --net` rows of the guests configured under `paths` that have addresses,
/// sorted by context id. A running guest whose NAME.toml does not load is still listed, from
/// its run state; a stopped one is left out.
pub fn net_rows(paths: &crate::paths::Paths) -> Vec<NetRow> {
    let mut rows: Vec<NetRow> = crate::guest::configured_guests(paths)
        .into_iter()
        .filter_map(|(name, _)| crate::guest::Guest::load_for_stop(paths, &name).ok())
        .filter_map(|(g, _)| {
            let st = g.running();
            let addresses = match &st {
                Some(s) => s.addresses.clone(),
                None => g.addresses(),
            };
            (!addresses.is_empty()).then(|| NetRow {
                xid: st.as_ref().map(|s| s.xid).unwrap_or(g.config.context),
                running: st.is_some(),
                addresses,
                traffic: crate::guest::network::traffic(&g),
                name: g.name,
            })
        })
        .collect();
    rows.sort_by_key(|r| r.xid);
    rows
}

/// One row of `vserver-stat --all`: a configured guest, running or not.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GuestRow {
    /// Context id (the running one, else the configured one).
    pub xid: u32,
    /// Guest name.
    pub name: String,
    /// Whether it runs.
    pub running: bool,
    /// Its marks (start groups).
    pub marks: Vec<String>,
    /// Left out of group starts (`disabled = true`).
    pub disabled: bool,
    /// Its addresses (`ADDR/PREFIX`).
    pub addresses: Vec<String>,
    /// The configuration error, when NAME.toml does not load.
    pub error: Option<String>,
}

/// Every guest configured under `paths` (`vserver-stat --all`), sorted by name; a guest whose
/// NAME.toml does not load is listed with its error (and from its run state when it runs).
pub fn all_rows(paths: &crate::paths::Paths) -> Vec<GuestRow> {
    crate::guest::configured_guests(paths)
        .into_iter()
        .map(|(name, _)| {
            let error = crate::guest::Guest::load(paths, &name)
                .err()
                .map(|e| e.to_string());
            let (g, _) = match crate::guest::Guest::load_for_stop(paths, &name) {
                Ok(x) => x,
                Err(e) => {
                    return GuestRow {
                        xid: 0,
                        name,
                        running: false,
                        marks: Vec::new(),
                        disabled: false,
                        addresses: Vec::new(),
                        error: Some(e.to_string()),
                    }
                }
            };
            let st = g.running();
            GuestRow {
                xid: st.as_ref().map(|s| s.xid).unwrap_or(g.config.context),
                running: st.is_some(),
                marks: g.config.mark.clone(),
                disabled: g.config.disabled,
                addresses: match &st {
                    Some(s) => s.addresses.clone(),
                    None => g.addresses(),
                },
                error,
                name: g.name,
            }
        })
        .collect()
}
