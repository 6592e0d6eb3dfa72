//! Many hands at once: 32 guests built (context ids allocated by `build`), started, limited,
//! snapshotted, restarted, stopped and deleted with 16 commands in flight at a time, twice.
//! Then: no context id was given twice, every guest ran (both runs are in its console log),
//! every config holds its own limit, and nothing is left: no process, cgroup, link, nft
//! table, mount or lock of theirs.
//!
//! The guests live on a btrfs image of the test's own, so snapshots are real. Their context ids
//! come from `build`'s allocator (the lowest free from 40000, under its lock); this file's only
//! test is alone in its binary, so no other test of the run holds those ids meanwhile.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

const GUESTS: usize = 32;
const IN_FLIGHT: usize = 16;

/// Run `op(i)` for every guest index with [`IN_FLIGHT`] threads taking the next index; returns
/// the failures as "guest i: what".
fn all_at_once(op: &(dyn Fn(usize) -> Result<(), String> + Sync)) -> Vec<String> {
    let next = AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..IN_FLIGHT {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= GUESTS {
                    break;
                }
                if let Err(e) = op(i) {
                    failures.lock().unwrap().push(format!("guest {i}: {e}"));
                }
            });
        }
    });
    failures.into_inner().unwrap()
}

fn nft_tables() -> String {
    Command::new("nft")
        .args(["list", "tables"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[test]
fn thirty_two_guests_sixteen_commands_at_once_twice() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("conc", 40);
    let fs = LoopFs::new(&env, "btrfs", 2 << 30);
    let tree = env.dir.join("tree");
    busybox_tree(&tree);
    let names: Vec<String> = (0..GUESTS).map(|i| format!("{}g{i}", env.name)).collect();
    env.guests.extend(names.iter().cloned());
    let env = &env;
    for round in 0..2 {
        let ok = |o: std::process::Output, what: &str| {
            if o.status.success() {
                Ok(())
            } else {
                Err(format!("{what} (round {round}): {}", text(&o)))
            }
        };
        let step = |what: &str, f: &(dyn Fn(usize) -> Result<(), String> + Sync)| {
            let failed = all_at_once(f);
            assert!(failed.is_empty(), "{what}:\n{}", failed.join("\n"));
        };
        step("build", &|i| {
            let ifc = format!("{}:{}/24", env.bridge, env.ip(10 + i as u8));
            let root = fs.root(&names[i]);
            ok(
                env.vserver(
                    &names[i],
                    &[
                        "build",
                        "-m",
                        "rootfs",
                        "--source",
                        tree.to_str().unwrap(),
                        "--rootdir",
                        root.to_str().unwrap(),
                        "--interface",
                        &ifc,
                    ],
                ),
                "build",
            )
        });
        let xids: Vec<u32> = names
            .iter()
            .map(|n| {
                let cfg = std::fs::read_to_string(env.config_path(n)).unwrap();
                cfg.lines()
                    .find_map(|l| l.strip_prefix("context = "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or_else(|| panic!("no context in {n}'s config"))
            })
            .collect();
        let distinct: BTreeSet<u32> = xids.iter().copied().collect();
        assert_eq!(distinct.len(), GUESTS, "context ids given twice: {xids:?}");
        step("start", &|i| {
            ok(env.vserver(&names[i], &["start"]), "start")
        });
        step("limit", &|i| {
            ok(
                env.vserver(&names[i], &["limit", "nproc", &(100 + i).to_string()]),
                "limit",
            )
        });
        step("snapshot", &|i| {
            ok(
                env.vserver(&names[i], &["snapshot", "create", "s1"]),
                "snapshot",
            )
        });
        step("restart", &|i| {
            ok(env.vserver(&names[i], &["restart"]), "restart")
        });
        step("exec", &|i| {
            let o = env.exec(&names[i], "cat /proc/self/cgroup >/dev/null; hostname");
            ok(o, "exec")
        });
        step("stop", &|i| ok(env.vserver(&names[i], &["stop"]), "stop"));
        for (i, n) in names.iter().enumerate() {
            let cfg = std::fs::read_to_string(env.config_path(n)).unwrap();
            assert!(
                cfg.contains(&format!("nproc = {}", 100 + i)),
                "{n}'s config lost its limit:\n{cfg}"
            );
            let log = std::fs::read_to_string(env.dir.join("log").join(n).join("console.log"))
                .unwrap_or_default();
            let runs = log.matches("--- vserver: ").count();
            assert!(runs >= 2 * (round + 1), "{n} ran {runs} times: {log}");
            let snaps = text(&env.vserver(n, &["snapshot", "list"]));
            assert!(snaps.contains("s1"), "{n}: snapshots {snaps}");
        }
        step("delete", &|i| {
            ok(env.vserver(&names[i], &["delete", "--force"]), "delete")
        });
        // Nothing of theirs is left.
        let tables = nft_tables();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        for (n, x) in names.iter().zip(&xids) {
            assert!(
                cgroup_left(*x).is_empty(),
                "{n}: cgroups {:?}",
                cgroup_left(*x)
            );
            assert!(!link_exists(&format!("vs{x}.0")), "{n}: its veth is left");
            assert!(
                !tables.contains(&format!("vs{x}")),
                "{n}: nft tables left:\n{tables}"
            );
            assert!(!env.config_path(n).exists(), "{n}: config left");
            assert!(!fs.root(n).exists(), "{n}: root left");
            assert!(
                !env.dir.join("run").join(n).exists(),
                "{n}: run state (lock) left"
            );
            assert!(
                !mounts.contains(fs.root(n).to_str().unwrap()),
                "{n}: mounts left"
            );
        }
        let reserved = env.dir.join("etc/.xid-reserved");
        let left: Vec<_> = std::fs::read_dir(&reserved)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .filter(|f| f != "lock")
            .collect();
        assert!(left.is_empty(), "context reservations left: {left:?}");
    }
}
