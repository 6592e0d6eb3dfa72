//! Full distributions as guests: Debian 12 (systemd 252) and Debian 13 (systemd 257) trees
//! made by debootstrap (`vserver build -m debootstrap`, once per run, see
//! [`common::debootstrap_seed`]) boot with systemd as pid 1 to `running` with no failed unit,
//! as plain guests with the secure bounding set and as user-namespace guests; they stop with
//! systemd's own shutdown, reboot and power off from inside, and leave no process, cgroup
//! (systemd's nested ones included) or mount behind on any path, also when `vserver` is killed
//! while the guest boots or shuts down. Old inits (sysvinit) keep working.
//!
//! The `full_cycle_*` tests also run in the cgroup v2 VM lane (scripts/vm-lane.sh), and
//! `v1_only_host_*` in its cgroup v1 run.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The server tree of `dist` (bookworm, trixie), or None when it cannot be made here.
fn seed(dist: &str) -> Option<PathBuf> {
    debootstrap_seed(dist, dist, SERVER_PACKAGES)
}

/// How a test guest is made from a seed tree.
#[derive(Clone, Copy)]
enum Made {
    /// `-m rootfs --source TREE`.
    Copy,
    /// `-m template --tarball TREE.tar` (a tarball of the tree).
    Tarball,
    /// `-m clone --source GUEST` of a guest copied from the tree.
    Clone,
}

/// Build guest `name` (context `xid`, one veth on the test's bridge) from `tree`; registered
/// for cleanup. The boot may take long under emulation (VM lane): ready_timeout is raised.
fn build(env: &mut Env, name: &str, xid: u32, tree: &Path, made: Made, userns: bool) {
    let x = xid.to_string();
    let ifc = format!("{}:{}/24", env.bridge, env.ip(2 + (xid % 100) as u8));
    let mut extra = vec!["--context", x.as_str(), "--interface", ifc.as_str()];
    if userns {
        extra.push("--userns");
    }
    env.guests.push(name.to_string());
    let o = match made {
        Made::Copy => env.build_rootfs(name, tree, &extra),
        Made::Tarball => {
            let tar = env.dir.join(format!("{name}.tar"));
            let o = std::process::Command::new("tar")
                .arg("-C")
                .arg(tree)
                .args(["--numeric-owner", "--xattrs", "-cf"])
                .arg(&tar)
                .arg(".")
                .output()
                .unwrap();
            assert_ok(&o, "tar of the seed tree");
            let mut args = vec![
                "build",
                "-m",
                "template",
                "--tarball",
                tar.to_str().unwrap(),
            ];
            args.extend_from_slice(&extra);
            let o = env.vserver(name, &args);
            let _ = std::fs::remove_file(&tar);
            o
        }
        Made::Clone => {
            let src = format!("{name}s");
            let sx = (xid + 1).to_string();
            env.guests.push(src.clone());
            assert_ok(
                &env.build_rootfs(&src, tree, &["--context", &sx]),
                "build the clone's source",
            );
            let mut args = vec!["build", "-m", "clone", "--source", src.as_str()];
            args.extend_from_slice(&extra);
            env.vserver(name, &args)
        }
    };
    assert_ok(&o, "build");
    let cfg = std::fs::read_to_string(env.config_path(name)).unwrap();
    assert!(
        cfg.contains("style = \"systemd\""),
        "the build did not see systemd in the tree:\n{cfg}"
    );
    set_init_key(env, name, "ready_timeout = 600");
}

/// Put `line` into the `[init]` table of `name`'s config.
fn set_init_key(env: &Env, name: &str, line: &str) {
    let p = env.config_path(name);
    let s = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, s.replacen("[init]\n", &format!("[init]\n{line}\n"), 1)).unwrap();
}

/// Put `line` into the `[stop]` table of `name`'s config, replacing its kill_timeout.
fn set_kill_timeout(env: &Env, name: &str, secs: u32) {
    let p = env.config_path(name);
    let s = std::fs::read_to_string(&p).unwrap();
    let s = s.replace("kill_timeout = 30\n", &format!("kill_timeout = {secs}\n"));
    std::fs::write(&p, s).unwrap();
}

/// Add a unit to the guest's /etc/systemd/system, wanted by multi-user.target.
fn add_unit(env: &Env, name: &str, unit: &str, text: &str) {
    let dir = env.root(name).join("etc/systemd/system");
    std::fs::write(dir.join(unit), text).unwrap();
    let wants = dir.join("multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink(format!("/etc/systemd/system/{unit}"), wants.join(unit)).unwrap();
}

fn remove_unit(env: &Env, name: &str, unit: &str) {
    let dir = env.root(name).join("etc/systemd/system");
    let _ = std::fs::remove_file(dir.join("multi-user.target.wants").join(unit));
    let _ = std::fs::remove_file(dir.join(unit));
}

fn status_json(env: &Env, name: &str) -> serde_json::Value {
    let o = env.vserver(name, &["status", "--json"]);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("status --json: {e}: {}", text(&o)))
}

fn systemd_state(env: &Env, name: &str) -> String {
    status_json(env, name)["systemd"]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// stdout of `CMD...` run in the guest, trimmed, and its exit status.
fn run_in(env: &Env, name: &str, argv: &[&str]) -> (i32, String) {
    let mut args = vec!["exec"];
    args.extend_from_slice(argv);
    let o = env.vserver(name, &args);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
    )
}

fn init_pid(env: &Env, name: &str) -> i64 {
    status_json(env, name)["init_pid"].as_i64().unwrap_or(0)
}

/// Pids on the host whose cgroup is below context `xid`'s.
fn guest_processes(xid: u32) -> Vec<String> {
    let needle = format!("/vservers/{xid}");
    let scoped = format!("/vservers.slice/vserver-{xid}.scope/payload");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|p| p.chars().all(|c| c.is_ascii_digit()))
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cgroup")).is_ok_and(|t| {
                t.lines().any(|l| {
                    l.ends_with(&needle)
                        || l.contains(&format!("{needle}/"))
                        || l.ends_with(&scoped)
                        || l.contains(&format!("{scoped}/"))
                })
            })
        })
        .collect()
}

/// Nothing of guest `name` (context `xid`) is left on the host: no cgroup in any hierarchy
/// (systemd's nested ones included), no process, no mount of the test's tree, no run state.
fn assert_clean(env: &Env, name: &str, xid: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut left: Vec<String> = cgroup_left(xid)
            .iter()
            .map(|p| format!("cgroup {}", p.display()))
            .collect();
        left.extend(guest_processes(xid).iter().map(|p| format!("process {p}")));
        let dir = env.dir.to_string_lossy().to_string();
        left.extend(
            std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .lines()
                .filter(|l| l.contains(&dir))
                .map(|l| format!("mount {l}")),
        );
        if env.dir.join("run").join(name).join("state.json").exists() {
            left.push(String::from("state.json"));
        }
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} left behind: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The guest runs, its systemd says `running` with no failed unit, here and in `status`.
fn assert_running_clean(env: &Env, name: &str) {
    let (_, state) = run_in(env, name, &["systemctl", "is-system-running"]);
    let (_, failed) = run_in(
        env,
        name,
        &[
            "systemctl",
            "list-units",
            "--state=failed",
            "--plain",
            "--no-legend",
            "--no-pager",
        ],
    );
    assert_eq!(
        (state.as_str(), failed.as_str()),
        ("running", ""),
        "the guest's systemd is not running cleanly; console: {}",
        text(&env.vserver(name, &["logs"]))
    );
    let st = status_json(env, name);
    assert_eq!(st["systemd"]["state"], "running", "{st}");
    assert_eq!(st["systemd"]["failed_units"], serde_json::json!([]), "{st}");
    let o = env.vserver(name, &["status"]);
    assert!(
        text(&o).contains("systemd:             running, 0 failed units"),
        "{}",
        text(&o)
    );
}

/// Boots the guest's journal knows (`journalctl --list-boots`): each has its own boot id.
fn boots(env: &Env, name: &str) -> usize {
    let (_, list) = run_in(
        env,
        name,
        &["journalctl", "--list-boots", "--no-pager", "-q"],
    );
    list.lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|id| id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .count()
}

/// Boot, use, stop, start, reboot from inside and power off from inside one guest.
fn full_cycle(tag: &str, dist: &str, idx: u32, made: Made, userns: bool) {
    if !require_root() {
        return;
    }
    let Some(tree) = seed(dist) else { return };
    let mut env = Env::new(tag, idx);
    let (name, xid) = (env.name.clone(), env.xid);
    build(&mut env, &name, xid, &tree, made, userns);
    assert_ok(&env.vserver(&name, &["start"]), "start");
    assert_running_clean(&env, &name);

    // Inside: systemctl and journald work, a service restarts.
    assert_ok(
        &env.vserver(
            &name,
            &["exec", "systemctl", "status", "--no-pager", "nginx"],
        ),
        "systemctl status nginx",
    );
    assert_ok(
        &env.vserver(&name, &["exec", "systemctl", "restart", "nginx"]),
        "systemctl restart nginx",
    );
    assert_eq!(
        run_in(&env, &name, &["systemctl", "is-active", "nginx"]).1,
        "active"
    );
    // sshd has host keys of the guest's own (a clone gets new ones at build).
    wait_until(60, "ssh to run", || {
        run_in(&env, &name, &["systemctl", "is-active", "ssh"]).1 == "active"
    });
    let (_, journal) = run_in(
        &env,
        &name,
        &["journalctl", "-b", "--no-pager", "-u", "nginx.service"],
    );
    assert!(journal.contains("Started"), "journalctl -b: {journal}");
    let (_, who) = run_in(&env, &name, &["systemd-detect-virt"]);
    assert_eq!(who, "container-other");
    // The console shows the boot (the monitor copies the console into the log as it comes:
    // on a busy machine the last lines may arrive a moment after the boot was reported). The
    // end of the boot is systemd's "Multi-User System" line or the console getty's login
    // prompt: agetty flushes the console's output queue when it takes the console over, so
    // systemd's last lines written just before may never reach the log.
    let booted = |l: &str| l.contains("Multi-User System") || l.contains(" login: ");
    let mut logs = String::new();
    for _ in 0..150 {
        logs = text(&env.vserver(&name, &["logs"]));
        if booted(&logs) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(booted(&logs), "console: {logs}");
    assert!(logs.contains("Reached target"), "console: {logs}");
    // A unit's process, as the host's tools see it.
    let vps = text(&env.cmd("vps").arg("ax").output().unwrap());
    assert!(
        vps.lines()
            .any(|l| l.contains("nginx: master") && l.contains(&format!("{xid} {name}"))),
        "vps does not show the guest's nginx: {vps}"
    );

    // systemd's own clean shutdown.
    let o = env.vserver(&name, &["stop"]);
    assert_ok(&o, "stop");
    assert!(
        !text(&o).contains("killed"),
        "stop had to kill: {}",
        text(&o)
    );
    assert_clean(&env, &name, xid);
    let logs = text(&env.vserver(&name, &["logs"]));
    assert!(
        logs.contains("System Halt"),
        "no clean halt on the console: {logs}"
    );

    // It comes back, with the journal of the last boot kept.
    assert_ok(&env.vserver(&name, &["start"]), "start again");
    assert_running_clean(&env, &name);
    assert!(
        boots(&env, &name) >= 2,
        "the first boot's journal was not kept, or both boots have one id"
    );

    // reboot inside: systemd shuts down, the host starts the guest again.
    let before = init_pid(&env, &name);
    let _ = env.vserver(&name, &["exec", "reboot"]);
    wait_until(600, "the guest to come back after reboot", || {
        let p = init_pid(&env, &name);
        p != 0 && p != before && systemd_state(&env, &name) == "running"
    });
    assert_running_clean(&env, &name);
    assert!(
        boots(&env, &name) >= 3,
        "the reboot is not a boot of its own"
    );

    // poweroff inside: it stops and is cleaned up.
    let _ = env.vserver(&name, &["exec", "poweroff"]);
    wait_until(120, "the guest to power off", || {
        env.vserver(&name, &["status"]).status.code() == Some(3)
    });
    assert_clean(&env, &name, xid);
}

#[test]
fn full_cycle_bookworm_plain() {
    full_cycle("sdbp", "bookworm", 0, Made::Copy, false);
}

#[test]
fn full_cycle_trixie_plain() {
    full_cycle("sdtp", "trixie", 2, Made::Tarball, false);
}

#[test]
fn full_cycle_bookworm_userns() {
    full_cycle("sdbu", "bookworm", 4, Made::Clone, true);
}

#[test]
fn full_cycle_trixie_userns() {
    full_cycle("sdtu", "trixie", 6, Made::Copy, true);
}

/// The guest's memory cgroup counted an OOM kill (v2 memory.events, v1 memory.oom_control).
fn oom_kills(xid: u32) -> u64 {
    let key = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    if let Ok(t) = std::fs::read_to_string(v2_guest_dir(xid).join("memory.events")) {
        return key(&t);
    }
    for (file, base) in [
        ("memory.events", "/sys/fs/cgroup"),
        ("memory.events", "/sys/fs/cgroup/unified"),
        ("memory.oom_control", "/sys/fs/cgroup/memory"),
    ] {
        if let Ok(t) = std::fs::read_to_string(format!("{base}/vservers/{xid}/{file}")) {
            return key(&t);
        }
    }
    0
}

#[test]
fn memory_limit_bounds_a_hog_started_by_a_unit() {
    if !require_root() {
        return;
    }
    let Some(tree) = seed("bookworm") else { return };
    let mut env = Env::new("sdmem", 10);
    let (name, xid) = (env.name.clone(), env.xid);
    build(&mut env, &name, xid, &tree, Made::Copy, false);
    let p = env.config_path(&name);
    let s = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        s.replacen(
            "[limits]\n",
            "[limits]\nmemory = \"128M\"\nswap = \"0\"\n",
            1,
        ),
    )
    .unwrap();
    assert_ok(&env.vserver(&name, &["start"]), "start");
    assert_eq!(oom_kills(xid), 0);
    // A transient unit of the guest's systemd that eats memory until the limit stops it.
    let _ = env.vserver(
        &name,
        &[
            "exec",
            "systemd-run",
            "--unit=hog",
            "--wait",
            "/bin/sh",
            "-c",
            "tail /dev/zero",
        ],
    );
    assert!(
        oom_kills(xid) >= 1,
        "the hog was not OOM-killed in the guest's cgroup"
    );
    // The guest's systemd saw its unit die and stays up.
    let st = status_json(&env, &name);
    assert_eq!(
        st["systemd"]["failed_units"],
        serde_json::json!(["hog.service"]),
        "{st}"
    );
    assert_ok(
        &env.vserver(&name, &["exec", "systemctl", "reset-failed"]),
        "systemctl reset-failed",
    );
    assert_eq!(
        run_in(&env, &name, &["systemctl", "is-system-running"]).1,
        "running"
    );
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    assert_clean(&env, &name, xid);
}

const SLOW_UNIT: &str = "[Unit]\nDescription=A slow boot step\n[Service]\nType=oneshot\n\
    ExecStart=/bin/sleep 600\nTimeoutStartSec=infinity\n";

#[test]
fn exec_and_status_work_while_it_boots_and_a_killed_start_leaves_nothing() {
    if !require_root() {
        return;
    }
    let Some(tree) = seed("trixie") else { return };
    let mut env = Env::new("sdboot", 12);
    let (name, xid) = (env.name.clone(), env.xid);
    build(&mut env, &name, xid, &tree, Made::Copy, false);
    add_unit(&env, &name, "slow.service", SLOW_UNIT);
    let mut start = env
        .cmd("vserver")
        .args([name.as_str(), "start"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(60, "the guest to be booting", || {
        systemd_state(&env, &name) == "starting"
    });
    // exec into the booting guest: its systemd is still working through its start jobs.
    wait_until(60, "the guest's systemd to report its start jobs", || {
        run_in(&env, &name, &["systemctl", "is-system-running"]).1 == "starting"
    });
    assert!(text(&env.vserver(&name, &["status"])).contains("systemd:             starting"));
    // SIGKILL of the waiting start: a guest nobody asked for any more is stopped and removed.
    start.kill().unwrap();
    let _ = start.wait();
    wait_until(60, "the guest of the killed start to go", || {
        env.vserver(&name, &["status"]).status.code() == Some(3)
    });
    assert_clean(&env, &name, xid);
    // The next start works.
    remove_unit(&env, &name, "slow.service");
    assert_ok(
        &env.vserver(&name, &["start"]),
        "start after the killed one",
    );
    assert_running_clean(&env, &name);
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    assert_clean(&env, &name, xid);
}

#[test]
fn a_boot_that_does_not_finish_fails_the_start_with_the_reason() {
    if !require_root() {
        return;
    }
    let Some(tree) = seed("bookworm") else { return };
    let mut env = Env::new("sdfail", 14);
    let (name, xid) = (env.name.clone(), env.xid);
    build(&mut env, &name, xid, &tree, Made::Copy, false);
    // Not finished within ready_timeout: halted, the start fails naming the key.
    add_unit(&env, &name, "slow.service", SLOW_UNIT);
    let p = env.config_path(&name);
    let s = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, s.replace("ready_timeout = 600", "ready_timeout = 3")).unwrap();
    let o = env.vserver(&name, &["start"]);
    assert!(!o.status.success(), "start succeeded: {}", text(&o));
    assert!(
        text(&o).contains("did not finish booting within 3 s (init.ready_timeout)"),
        "{}",
        text(&o)
    );
    assert_clean(&env, &name, xid);
    remove_unit(&env, &name, "slow.service");
    // An init that ends while booting: the start fails with its status and console.
    set_init_key(&env, &name, "command = [\"/bin/false\"]");
    let p = env.config_path(&name);
    let s = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, s.replacen("command = []\n", "", 1)).unwrap();
    let o = env.vserver(&name, &["start"]);
    assert!(!o.status.success(), "start succeeded: {}", text(&o));
    assert!(
        text(&o).contains("its init ended while booting"),
        "{}",
        text(&o)
    );
    assert_clean(&env, &name, xid);
}

#[test]
fn stop_bounds_a_hanging_shutdown_and_a_killed_stop_is_repaired() {
    if !require_root() {
        return;
    }
    let Some(tree) = seed("trixie") else { return };
    let mut env = Env::new("sdhang", 16);
    let (name, xid) = (env.name.clone(), env.xid);
    build(&mut env, &name, xid, &tree, Made::Copy, false);
    add_unit(
        &env,
        &name,
        "hang.service",
        "[Unit]\nDescription=Never stops\n[Service]\nExecStart=/bin/sleep infinity\n\
         ExecStop=/bin/sleep infinity\nTimeoutStopSec=infinity\n",
    );
    set_kill_timeout(&env, &name, 3);
    assert_ok(&env.vserver(&name, &["start"]), "start");
    // SIGKILL of a stop while the guest shuts down: the next stop finishes the job.
    let mut stop = env
        .cmd("vserver")
        .args([name.as_str(), "stop"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(60, "the guest to be shutting down", || {
        std::fs::read_to_string(env.dir.join("run").join(&name).join("boot"))
            .is_ok_and(|s| s.trim() == "stopping")
    });
    stop.kill().unwrap();
    let _ = stop.wait();
    let o = env.vserver(&name, &["stop"]);
    assert_ok(&o, "stop after the killed one");
    assert_clean(&env, &name, xid);
    // A shutdown that hangs ends after kill_timeout, killed.
    assert_ok(&env.vserver(&name, &["start"]), "start again");
    let o = env.vserver(&name, &["stop"]);
    assert_ok(&o, "stop of a hanging shutdown");
    assert!(
        text(&o).contains("every process was killed"),
        "{}",
        text(&o)
    );
    assert_clean(&env, &name, xid);
}

#[test]
fn status_names_failed_units_and_the_tools_see_nested_cgroups() {
    if !require_root() {
        return;
    }
    let Some(tree) = seed("bookworm") else { return };
    let mut env = Env::new("sdstat", 18);
    let (name, xid) = (env.name.clone(), env.xid);
    build(&mut env, &name, xid, &tree, Made::Copy, true);
    add_unit(
        &env,
        &name,
        "broken.service",
        "[Unit]\nDescription=Fails\n[Service]\nType=oneshot\nExecStart=/bin/false\n",
    );
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let st = status_json(&env, &name);
    assert_eq!(st["systemd"]["state"], "degraded", "{st}");
    assert_eq!(
        st["systemd"]["failed_units"],
        serde_json::json!(["broken.service"]),
        "{st}"
    );
    let o = env.vserver(&name, &["status"]);
    assert!(
        text(&o).contains("systemd:             degraded, 1 failed unit: broken.service"),
        "{}",
        text(&o)
    );
    // Every process lives in a cgroup systemd made below the context's: the tools count them.
    let mut ground = Vec::new();
    let top = if systemd_host() {
        v2_guest_dir(xid)
    } else {
        PathBuf::from(format!("{}/vservers/{xid}", v2_or_pids_mount()))
    };
    for e in walk(&top) {
        if let Ok(t) = std::fs::read_to_string(e.join("cgroup.procs")) {
            ground.extend(t.lines().map(str::to_string));
        }
    }
    assert!(ground.len() > 3, "{ground:?}");
    let stat = env.cmd("vserver-stat").arg("--json").output().unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&stat.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["xid"] == xid)
        .cloned()
        .unwrap_or_default();
    assert_eq!(row["procs"].as_u64(), Some(ground.len() as u64), "{rows}");
    assert_eq!(
        status_json(&env, &name)["processes"].as_u64(),
        Some(ground.len() as u64)
    );
    // vkill of the whole context reaches every nested process.
    let o = env
        .cmd("vkill")
        .args(["--xid", &xid.to_string(), "-s", "KILL"])
        .output()
        .unwrap();
    assert_ok(&o, "vkill --xid");
    wait_until(60, "the killed guest to be cleaned up", || {
        env.vserver(&name, &["status"]).status.code() == Some(3)
    });
    assert_clean(&env, &name, xid);
}

/// The v2 hierarchy (hybrid: /sys/fs/cgroup/unified), else the v1 pids hierarchy.
fn v2_or_pids_mount() -> &'static str {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "/sys/fs/cgroup"
    } else if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        "/sys/fs/cgroup/unified"
    } else {
        "/sys/fs/cgroup/pids"
    }
}

/// `dir` and every directory below it.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let d = out[i].clone();
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(e.path());
            }
        }
        i += 1;
    }
    out
}

#[test]
fn sysvinit_guests_still_boot_with_their_own_init_and_with_style_sysv() {
    if !require_root() {
        return;
    }
    let Some(tree) = debootstrap_seed(
        "bookworm-sysvinit",
        "bookworm",
        "sysvinit-core,openssh-server,cron",
    ) else {
        return;
    };
    let mut env = Env::new("sdsysv", 20);
    let (name, xid) = (env.name.clone(), env.xid);
    let x = xid.to_string();
    env.guests.push(name.clone());
    assert_ok(
        &env.build_rootfs(&name, &tree, &["--context", &x, "--initstyle", "plain"]),
        "build",
    );
    // /sbin/init is sysvinit's: started as it is, not as systemd.
    assert_ok(&env.vserver(&name, &["start"]), "start");
    assert!(status_json(&env, &name)["systemd"].is_null());
    wait_until(60, "cron to be started by the rc scripts", || {
        text(&env.vserver(&name, &["exec", "ps", "-eo", "comm"])).contains("cron")
    });
    let (_, comm) = run_in(&env, &name, &["cat", "/proc/1/comm"]);
    assert_eq!(comm, "init");
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    assert_clean(&env, &name, xid);
    // The same tree with the built-in init running its rc scripts.
    let p = env.config_path(&name);
    let s = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, s.replace("style = \"plain\"", "style = \"sysv\"")).unwrap();
    assert_ok(&env.vserver(&name, &["start"]), "start (sysv)");
    wait_until(60, "cron to be started by the rc scripts", || {
        text(&env.vserver(&name, &["exec", "ps", "-eo", "comm"])).contains("cron")
    });
    assert_ok(&env.vserver(&name, &["stop"]), "stop (sysv)");
    assert_clean(&env, &name, xid);
}

#[test]
fn guest_root_cannot_leave_raise_or_flood_its_delegated_cgroup() {
    if !require_root() {
        return;
    }
    let Some(tree) = seed("bookworm") else { return };
    let mut env = Env::new("sdcg", 22);
    let (name, xid) = (env.name.clone(), env.xid);
    build(&mut env, &name, xid, &tree, Made::Copy, false);
    let p = env.config_path(&name);
    let s = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, s.replacen("[limits]\n", "[limits]\nnproc = 500\n", 1)).unwrap();
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let limits_now = || -> Vec<(PathBuf, String)> {
        walk(Path::new("/sys/fs/cgroup"))
            .into_iter()
            .filter(|d| d.ends_with(format!("vservers/{xid}")) || *d == v2_guest_dir(xid))
            .flat_map(|d| {
                [
                    "pids.max",
                    "memory.max",
                    "memory.limit_in_bytes",
                    "cgroup.max.descendants",
                ]
                .into_iter()
                .filter_map(move |f| {
                    std::fs::read_to_string(d.join(f))
                        .ok()
                        .map(|v| (d.join(f), v))
                })
            })
            .collect()
    };
    let before = limits_now();
    assert!(!before.is_empty());
    // Its cgroup namespace: every path it sees starts at its own root.
    let (_, cg) = run_in(&env, &name, &["cat", "/proc/self/cgroup"]);
    assert!(!cg.contains("vservers"), "{cg}");
    // Raise everything it can write, move itself to the top, mount other hierarchies.
    let o = env.exec(
        &name,
        "for f in /sys/fs/cgroup/*.max /sys/fs/cgroup/*/*.max; do echo max > $f; done 2>/dev/null; \
         echo $$ > /sys/fs/cgroup/cgroup.procs; \
         mkdir -p /tmp/m; mount -t cgroup -o pids none /tmp/m && echo MOUNTED; \
         mount -t cgroup2 none /tmp/m && echo MOUNTED; \
         i=0; while [ $i -lt 1500 ]; do mkdir /sys/fs/cgroup/flood$i 2>/dev/null || break; \
         i=$((i+1)); done; echo made $i",
    );
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(!out.contains("MOUNTED"), "{out}");
    let made: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("made "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}", text(&o)));
    assert!(
        made < 1024,
        "the guest made {made} cgroups (cgroup.max.descendants is 1024)"
    );
    assert_eq!(limits_now(), before, "a limit changed from inside");
    // Its limits still bind: more processes than nproc fail (counted by the host's cgroup).
    let _ = env.exec(
        &name,
        "i=0; while [ $i -lt 600 ]; do sleep 60 & i=$((i+1)); done 2>/dev/null; true",
    );
    let current: u64 = [
        v2_guest_dir(xid).join("pids.current").display().to_string(),
        format!("/sys/fs/cgroup/vservers/{xid}/pids.current"),
        format!("/sys/fs/cgroup/pids/vservers/{xid}/pids.current"),
    ]
    .iter()
    .find_map(|f| std::fs::read_to_string(f).ok())
    .and_then(|v| v.trim().parse().ok())
    .expect("no pids controller for the guest");
    assert!(
        current > 100 && current <= 500,
        "{current} tasks under nproc = 500"
    );
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    assert_clean(&env, &name, xid);
}

/// True if no cgroup2 file system is mounted here (a v1-only host, as the VM lane's v1 run).
fn v1_only_host() -> bool {
    !std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains(" - cgroup2 "))
}

#[test]
fn v1_only_host_boots_an_older_systemd_and_refuses_a_newer_one() {
    if !require_root() {
        return;
    }
    if !v1_only_host() {
        eprintln!(
            "skipped: this host mounts cgroup v2 (VSERVER_VM_CGROUP=v1 scripts/vm-lane.sh runs it)"
        );
        return;
    }
    let (Some(bookworm), Some(trixie)) = (seed("bookworm"), seed("trixie")) else {
        return;
    };
    let mut env = Env::new("sdv1", 24);
    let (name, xid) = (env.name.clone(), env.xid);
    // systemd 257 needs cgroup v2: refused by name, nothing made.
    let t = format!("{name}t");
    build(&mut env, &t, xid + 1, &trixie, Made::Copy, false);
    let o = env.vserver(&t, &["start"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("systemd 257 needs cgroup v2"),
        "{}",
        text(&o)
    );
    assert_clean(&env, &t, xid + 1);
    // systemd 252 gets the v1 hierarchies of its cgroup namespace.
    build(&mut env, &name, xid, &bookworm, Made::Copy, false);
    assert_ok(&env.vserver(&name, &["start"]), "start");
    assert_running_clean(&env, &name);
    let (_, cg) = run_in(&env, &name, &["cat", "/proc/1/cgroup"]);
    assert!(cg.contains("name=systemd:/init.scope"), "{cg}");
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    assert_clean(&env, &name, xid);
}
