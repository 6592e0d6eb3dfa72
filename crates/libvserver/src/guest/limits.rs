//! `vserver NAME limit KEY VALUE` and `suspend`/`resume`: change a guest's limits while it runs
//! and keep them in NAME.toml; freeze and thaw all of its processes.

use super::{failed, Guest, GuestError};
use crate::config::{parse_guest_config, LimitsConfig};

/// Keys of `[limits]` that take a number; the others take a string with units.
const NUMERIC: &[&str] = &[
    "nproc",
    "cpu_weight",
    "io_weight",
    "io_read_iops",
    "io_write_iops",
    "nice",
];
/// Every key of `[limits]`.
pub const KEYS: &[&str] = &[
    "nproc",
    "memory",
    "memory_soft",
    "swap",
    "cpu",
    "cpu_weight",
    "cpuset",
    "io_weight",
    "io_read_bps",
    "io_write_bps",
    "io_read_iops",
    "io_write_iops",
    "nice",
    "ionice",
];

/// Every thread of the processes `pids` (from /proc/PID/task): nice and I/O priority are per
/// thread.
fn threads_of(pids: &[i32]) -> Vec<i32> {
    pids.iter()
        .flat_map(|p| {
            std::fs::read_dir(format!("/proc/{p}/task"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|t| t.parse().ok()))
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// Refuse a CPU cap above the host's CPUs (`cpu = "150"` on a 2-CPU host): the kernel would
/// take it and cap nothing.
///
/// Errors: the cap and the host's number of CPUs.
pub(crate) fn check_cpu_cap(name: &str, l: &LimitsConfig) -> Result<(), GuestError> {
    let Some(c) = l.cpu.as_deref() else {
        return Ok(());
    };
    let Ok((quota, period)) = crate::config::parse_cpu(c) else {
        return Ok(()); // the config check names it
    };
    let host = std::thread::available_parallelism().map_or(0, |n| n.get() as u64);
    if host > 0 && quota > host * period {
        return Err(failed(
            name,
            format!(
                "cpu = \"{c}\" asks for {:.2} CPUs; this host has {host}",
                quota as f64 / period as f64
            ),
        ));
    }
    Ok(())
}

/// Set `limits.KEY = VALUE` in NAME.toml (keeping the file's comments and layout), or remove it
/// when VALUE is `none`, then apply the new limits to the running guest, if any.
///
/// Errors: an unknown key, a value the config refuses (with file, line and key), a file that
/// cannot be written, or a limit the kernel refuses (the file is then left unchanged).
pub fn set_limit(g: &Guest, key: &str, value: &str) -> Result<LimitsConfig, GuestError> {
    if !KEYS.contains(&key) {
        return Err(failed(
            &g.name,
            format!("unknown limit '{key}'; one of: {}", KEYS.join(", ")),
        ));
    }
    let path = g.paths.config_file(&g.name);
    // Concurrent `limit` commands each change their key: one at a time, each reading what the
    // one before wrote.
    let _lock = g
        .paths
        .lock_config(&g.name)
        .map_err(|e| failed(&g.name, format!("lock {}: {e}", path.display())))?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| failed(&g.name, format!("read {}: {e}", path.display())))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| failed(&g.name, format!("{}: {e}", path.display())))?;
    if !doc.contains_key("limits") {
        doc["limits"] = toml_edit::table();
    }
    let table = doc["limits"].as_table_mut().ok_or_else(|| {
        failed(
            &g.name,
            format!("{}: 'limits' is not a table", path.display()),
        )
    })?;
    if value == "none" {
        table.remove(key);
    } else if NUMERIC.contains(&key) {
        let n: i64 = value.parse().map_err(|_| {
            failed(
                &g.name,
                format!("limit {key} takes a number, not '{value}'"),
            )
        })?;
        table[key] = toml_edit::value(n);
    } else {
        table[key] = toml_edit::value(value);
    }
    let new_text = doc.to_string();
    // The value from the command line is what is wrong when the file was fine before: say
    // so, not the line of the file it would have gone to.
    let cfg = match parse_guest_config(&path, &new_text) {
        Ok(c) => c,
        Err(crate::config::ConfigError::Invalid {
            key: k, message, ..
        }) if parse_guest_config(&path, &text).is_ok() => {
            return Err(failed(
                &g.name,
                format!(
                    "limit {key} {value}: {message} (at {k}; {} unchanged)",
                    path.display()
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    check_cpu_cap(&g.name, &cfg.limits)?;
    if let Some(st) = g.running() {
        let cg = g.cgroup_of(st.xid)?;
        cg.apply_limits(&cfg.limits)
            .and_then(|()| {
                cg.apply_io_limits(&cfg.limits, crate::storage::fs::block_device_of(&g.root()))
            })
            .map_err(|source| GuestError::Cgroup {
                name: g.name.clone(),
                source,
            })?;
        if key == "ionice" {
            // Now for every process; the floor the guest's filter enforces is the one of its
            // start until the next start.
            // `none`: back to the default class (0: derived from the nice level).
            let v = cfg
                .limits
                .ionice
                .as_deref()
                .and_then(|v| crate::config::parse_ionice(v).ok())
                .unwrap_or(0);
            for tid in threads_of(&cg.pids()) {
                // SAFETY: plain syscall with integer arguments on a thread of the guest.
                unsafe { libc::syscall(libc::SYS_ioprio_set, 1, tid, v) };
            }
        }
        if key == "nice" {
            let n = cfg.limits.nice.unwrap_or(0);
            for tid in threads_of(&cg.pids()) {
                // SAFETY: plain syscall with integer arguments on a thread of the guest.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, n) };
            }
        }
    }
    crate::paths::write_atomically(&path, &new_text)
        .map_err(|e| failed(&g.name, format!("write {}: {e}", path.display())))?;
    Ok(cfg.limits)
}

/// Freeze (`true`) or thaw every process of the running guest: v2 `cgroup.freeze`, else v1
/// `freezer.state`. Waits until the kernel reports the new state (at most 5 s).
///
/// Errors: the guest is not running; no freezer on this host; the state did not settle.
pub fn freeze(g: &Guest, frozen: bool) -> Result<(), GuestError> {
    let st = g
        .running()
        .ok_or_else(|| GuestError::NotRunning(g.name.clone()))?;
    let cg = g.cgroup_of(st.xid)?;
    cg.freeze(frozen).map_err(|source| GuestError::Cgroup {
        name: g.name.clone(),
        source,
    })
}
