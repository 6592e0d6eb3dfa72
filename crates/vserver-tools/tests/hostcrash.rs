//! A host that crashes (issue 20), in the VM lane (scripts/vm-lane.sh): guests run with traffic
//! and a memory limit, config edits are in flight and a build is half done when the VM is reset
//! without a shutdown (sysrq `b`: no sync, no unmount, what a power cut leaves of the page
//! cache). After the next boot the boot group (`vservers --mark default -j 4 start`, what
//! vservers@default.service runs) brings every marked guest back with its limit; the traffic
//! totals hold every checkpoint written before the crash (the loss is bounded by one
//! `accounting_interval`) and never count one twice; each config edit that returned holds; the
//! half-done build is named by the next build and can be redone; every guest is usable and
//! stops clean.
//!
//! The lane gives the test a disk that survives the reset (`VSERVER_VM_PERSIST`), tells it the
//! boot (`VSERVER_VM_BOOT`), and boots the VM again when the test writes `VSERVER_VM_REBOOT`.
//! Outside the lane the test says it skipped.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Context ids 49100..=49103: above every id the other tests' `Env` hands out.
const XID: u32 = 49100;
/// Seconds between traffic checkpoints of the crashed guests.
const INTERVAL: u32 = 2;

/// Unmounts the run directory's tmpfs and removes the test's tree on the persistent disk when
/// dropped (after the `Env`, which stops the guests first).
struct Tree(PathBuf);

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0.join("run"), nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The guests' run directory is a tmpfs, as /run is on a host: a reset empties it.
fn mount_run(dir: &Path) {
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &run,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("mode=0755"),
    )
    .unwrap();
}

fn accounting(env: &Env, name: &str) -> Value {
    let p = env
        .dir
        .join("root/.accounting")
        .join(format!("{name}.json"));
    std::fs::read_to_string(&p)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

fn live_traffic(env: &Env, name: &str) -> Value {
    let o = env.vserver(name, &["status", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    v["traffic"].clone()
}

const COUNTERS: [&str; 4] = ["rx_bytes", "rx_packets", "tx_bytes", "tx_packets"];

fn counter(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

/// Write `v` to `path` durably (the test's own record, read after the crash).
fn write_durably(path: &Path, v: &Value) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(v.to_string().as_bytes()).unwrap();
    f.sync_all().unwrap();
    std::fs::File::open(path.parent().unwrap())
        .unwrap()
        .sync_all()
        .unwrap();
}

#[test]
fn a_host_crash_loses_nothing_the_boot_group_cannot_bring_back() {
    if !require_root() {
        return;
    }
    let (Some(persist), Ok(boot)) = (
        std::env::var_os("VSERVER_VM_PERSIST"),
        std::env::var("VSERVER_VM_BOOT"),
    ) else {
        eprintln!("skipped: runs in the VM lane only (bash scripts/vm-lane.sh hostcrash)");
        return;
    };
    let dir = PathBuf::from(persist).join("hostcrash");
    if boot == "1" {
        let _ = std::fs::remove_dir_all(&dir);
    }
    std::fs::create_dir_all(&dir).unwrap();
    let tree = Tree(dir.clone());
    mount_run(&dir);
    let mut env = Env {
        dir: dir.clone(),
        name: String::from("hc"),
        xid: XID,
        bridge: String::from("vsbthc"),
        net: 77,
        guests: Vec::new(),
    };
    if boot == "1" {
        before_the_crash(&mut env);
    } else {
        after_the_crash(&mut env);
    }
    drop(env);
    drop(tree);
}

fn before_the_crash(env: &mut Env) {
    let (a, b, c, d) = ("hca", "hcb", "hcc", "hcd");
    for (i, n) in [a, b, c].iter().enumerate() {
        env.build_host(n, XID + i as u32, true);
        let deps = if *n == c {
            format!("depends = [\"{a}\"]\n")
        } else {
            String::new()
        };
        let cfg = std::fs::read_to_string(env.config_path(n))
            .unwrap()
            .replace("mark = []\n", &format!("mark = [\"default\"]\n{deps}"));
        std::fs::write(
            env.config_path(n),
            format!("accounting_interval = {INTERVAL}\n{cfg}"),
        )
        .unwrap();
    }
    assert_ok(&env.vserver(a, &["limit", "memory", "200M"]), "limit a");
    let o = env
        .cmd("vservers")
        .args(["--mark", "default", "-j", "4", "start"])
        .output()
        .unwrap();
    assert_ok(&o, "vservers --mark default start");

    // a: a burst of 200 datagrams of 1000 bytes from the host, then quiet until a checkpoint
    // holds exactly the live counters: a crash now must lose none of it.
    let a_ip = env.ip(2);
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    for _ in 0..200 {
        let _ = sock.send_to(&[b'x'; 1000], format!("{a_ip}:9"));
    }
    wait_until(180, "a checkpoint of a's quiet counters", || {
        let cp = accounting(env, a)["checkpoint"].clone();
        let live = live_traffic(env, a);
        COUNTERS
            .iter()
            .all(|k| counter(&cp, k) == counter(&live, k))
            && counter(&cp, "rx_bytes") >= 200_000
    });
    // b: traffic that goes on until the crash (20 datagrams a second to its gateway).
    let gw = env.ip(1);
    assert_ok(
        &env.exec(
            b,
            &format!(
                "setsid python3 -c \"import socket,time; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
                 while True: s.sendto(b'y'*100, ('{gw}', 9)); time.sleep(0.05)\" \
                 </dev/null >/dev/null 2>&1 &"
            ),
        ),
        "b's sender",
    );
    wait_until(120, "a checkpoint of b's traffic", || {
        counter(&accounting(env, b)["checkpoint"], "tx_packets") >= 20
    });
    // c: limit edits one after the other until the crash; the last one that returned is known.
    let done = Arc::new(AtomicU32::new(0));
    {
        let done = done.clone();
        let dir = env.dir.clone();
        std::thread::spawn(move || {
            for k in 200u32.. {
                let ok = Command::new(bin("vserver"))
                    .env("VSERVER_CONFDIR", dir.join("etc"))
                    .env("VSERVER_ROOTBASE", dir.join("root"))
                    .env("VSERVER_RUNDIR", dir.join("run"))
                    .env("VSERVER_LOGDIR", dir.join("log"))
                    .args([c, "limit", "nproc", &k.to_string()])
                    .stdin(Stdio::null())
                    .output()
                    .is_ok_and(|o| o.status.success());
                if ok {
                    done.store(k, Ordering::SeqCst);
                }
            }
        });
    }
    wait_until(120, "three limit edits of c", || {
        done.load(Ordering::SeqCst) >= 202
    });
    // d: a build paused after its tree is synced, before its config is written (the reset
    // ends it: it is never waited for).
    let pause = env.dir.join("pause");
    let dx = (XID + 3).to_string();
    #[allow(clippy::zombie_processes)]
    let _build = env
        .cmd("vserver")
        .args([d, "build", "-m", "host", "--initstyle", "builtin"])
        .args(["--context", &dx])
        .env("VSERVER_PAUSE_AT", "build-synced")
        .env("VSERVER_PAUSE_FILE", &pause)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(180, "d's build paused before its config", || {
        std::fs::read_to_string(&pause).is_ok_and(|t| t.contains("paused build-synced"))
    });

    // What must survive, recorded durably; then the reset.
    let record = serde_json::json!({
        a: accounting(env, a)["checkpoint"],
        b: accounting(env, b)["checkpoint"],
        "c_nproc": done.load(Ordering::SeqCst),
    });
    write_durably(&env.dir.join("expect.json"), &record);
    eprintln!("hostcrash: resetting the VM with {record}");
    let reboot = std::env::var("VSERVER_VM_REBOOT").unwrap();
    std::fs::write(&reboot, "tests/hostcrash.rs").unwrap();
    std::fs::write("/proc/sysrq-trigger", "b").unwrap();
    std::thread::sleep(std::time::Duration::from_secs(60));
    panic!("the VM was not reset");
}

fn after_the_crash(env: &mut Env) {
    let (a, b, c, d) = ("hca", "hcb", "hcc", "hcd");
    env.guests.extend([a, b, c, d].map(String::from));
    let expect: Value =
        serde_json::from_str(&std::fs::read_to_string(env.dir.join("expect.json")).unwrap())
            .unwrap();
    eprintln!("hostcrash: after the reset, expecting {expect}");
    for n in [a, b, c] {
        let st = text(&env.vserver(n, &["status"]));
        assert!(st.contains("stopped"), "{n} after the reset: {st}");
    }
    // The half-done build: a root without a config, named by the next build; --force redoes it
    // (the old tree moved aside, not deleted), and its context id is free again.
    assert!(!env.config_path(d).exists());
    assert!(env.root(d).is_dir());
    let dx = (XID + 3).to_string();
    let again = |force: bool| {
        let mut args = vec!["build", "-m", "host", "--initstyle", "builtin"];
        args.extend(["--context", &dx]);
        if force {
            args.push("--force");
        }
        env.vserver(d, &args)
    };
    let o = again(false);
    assert!(
        !o.status.success() && text(&o).contains(&env.root(d).display().to_string()),
        "{}",
        text(&o)
    );
    assert_ok(&again(true), "build d again with --force");

    // The boot group.
    let o = env
        .cmd("vservers")
        .args(["--mark", "default", "-j", "4", "start"])
        .output()
        .unwrap();
    assert_ok(&o, "vservers --mark default start after the reset");
    for (i, n) in [a, b, c].iter().enumerate() {
        let st = text(&env.vserver(n, &["status"]));
        assert!(st.contains("running"), "{n}: {st}");
        assert_eq!(
            text(&env.exec(n, "hostname")).trim(),
            *n,
            "{n} runs commands"
        );
        assert!(cgroup_pids(XID + i as u32) > 0, "{n}'s cgroup");
    }
    let max = std::fs::read_to_string(v2_guest_dir(XID).join("memory.max")).unwrap_or_default();
    assert_eq!(max.trim(), (200u64 << 20).to_string(), "a's memory limit");
    // Traffic: the totals hold the last checkpoint written before the crash, once (a stray
    // IPv6 neighbour or multicast packet may have come after the record: a few hundred bytes,
    // where counting the checkpoint twice would add all of it).
    for (n, key) in [(a, "rx_bytes"), (b, "tx_bytes")] {
        let acct = accounting(env, n);
        let cp = &expect[n];
        for k in COUNTERS {
            assert!(
                counter(&acct, k) >= counter(cp, k),
                "{n}'s {k}: {acct} lost its checkpoint {cp}"
            );
        }
        assert!(
            counter(&acct, key) < counter(cp, key) + 50_000,
            "{n}'s {key}: {acct} counts the checkpoint {cp} twice"
        );
    }
    let mlog = std::fs::read_to_string(env.dir.join("log").join(a).join("monitor.log"))
        .unwrap_or_default();
    assert!(mlog.contains("the previous run did not end"), "{mlog}");
    // c: every edit that returned before the crash holds.
    let nproc: u64 = text(&env.vserver(c, &["limit", "nproc"]))
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        nproc >= expect["c_nproc"].as_u64().unwrap(),
        "c's nproc {nproc} lost the edit to {}",
        expect["c_nproc"]
    );
    // The host reaches a again over the bridge vserver made anew.
    let a_ip = env.ip(2);
    if have_tool("ping") {
        let ok = Command::new("ping")
            .args(["-c", "1", "-W", "10", &a_ip])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ping {a_ip}");
    }
    let o = env
        .cmd("vservers")
        .args(["--mark", "default", "-j", "4", "stop"])
        .output()
        .unwrap();
    assert_ok(&o, "vservers --mark default stop");
    for i in 0..3 {
        assert!(cgroup_left(XID + i).is_empty(), "cgroup of {}", XID + i);
        assert!(!link_exists(&format!("vs{}-0", XID + i)));
    }
}
