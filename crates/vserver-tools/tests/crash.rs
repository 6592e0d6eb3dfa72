//! Crash safety: `vserver` killed with SIGKILL at every named step of start and stop (the
//! test-only pause points of libvserver::testhook) leaves state that the next `status`, `stop`
//! and `start` repair, and nothing behind; many start/stop cycles leak nothing.

mod common;
use common::*;
use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;

/// The two tests count host-wide objects: they run one after the other.
static SERIAL: Mutex<()> = Mutex::new(());

/// Steps of `vserver NAME start`, in order.
const START_STEPS: &[&str] = &[
    "start-locked",
    "start-cgroup",
    "start-monitor",
    "child-go",
    "child-pre-pivot",
    "child-mounts",
    "child-proc",
    "child-dev",
    "child-pre-exec",
    "start-running",
];
/// Steps of `vserver NAME stop` (`repair-links-gone` is reached by the monitor or the stop).
const STOP_STEPS: &[&str] = &["stop-locked", "stop-signalled", "repair-links-gone"];

/// True if process `pid` is in a cgroup of context `xid`.
fn in_guest_cgroup(pid: &str, xid: u32) -> bool {
    let tail = format!("/vservers/{xid}");
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|t| {
            t.lines()
                .any(|l| l.ends_with(&tail) || l.contains(&format!("{tail}/")))
        })
        .unwrap_or(false)
}

/// Pids of vserver processes (not guest processes) working on guest `name`: the command
/// itself and the monitor it forked.
fn our_processes(name: &str, xid: u32) -> Vec<i32> {
    let bin = bin("vserver").to_string_lossy().to_string();
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let p = e.file_name().to_string_lossy().to_string();
        if !p.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(cmd) = std::fs::read(format!("/proc/{p}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        if args.first().map(|a| a == &bin).unwrap_or(false)
            && args.iter().any(|a| a == name)
            && !in_guest_cgroup(&p, xid)
        {
            v.push(p.parse().unwrap());
        }
    }
    v
}

/// Pids in the guest's cgroups.
fn guest_processes(xid: u32) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|p| p.chars().all(|c| c.is_ascii_digit()) && in_guest_cgroup(p, xid))
        .collect()
}

fn kill_and_wait(pids: &[i32]) {
    for p in pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), nix::sys::signal::SIGKILL);
    }
    wait_until(10, "the killed processes to go", || {
        pids.iter().all(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
        })
    });
}

/// What a guest may leave on the host: cgroups, processes, its veth, mounts of the test's tree.
fn leftovers(env: &Env, name: &str, xid: u32, veth: &str) -> Vec<String> {
    let mut v: Vec<String> = cgroup_left(xid)
        .iter()
        .map(|p| format!("cgroup {}", p.display()))
        .collect();
    v.extend(
        guest_processes(xid)
            .iter()
            .map(|p| format!("guest process {p}")),
    );
    v.extend(
        our_processes(name, xid)
            .iter()
            .map(|p| format!("vserver process {p}")),
    );
    if link_exists(veth) {
        v.push(format!("link {veth}"));
    }
    let dir = env.dir.to_string_lossy().to_string();
    v.extend(
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&dir))
            .map(|l| format!("mount {l}")),
    );
    v
}

/// Run a command with the pause at `step`, wait for the pause, SIGKILL every vserver process
/// of the guest (the command, the monitor) but not the guest's own processes.
fn kill_at(env: &Env, name: &str, xid: u32, args: &[&str], step: &str) {
    let file = env.dir.join(format!("pause-{step}"));
    let _ = std::fs::remove_file(&file);
    let mut child = env
        .cmd("vserver")
        .arg(name)
        .args(args)
        .env("VSERVER_PAUSE_AT", step)
        .env("VSERVER_PAUSE_FILE", &file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let want = format!("paused {step} ");
    wait_until(30, &format!("the pause at {step}"), || {
        std::fs::read_to_string(&file)
            .unwrap_or_default()
            .contains(&want)
    });
    let mut pids = our_processes(name, xid);
    pids.push(child.id() as i32);
    kill_and_wait(&pids);
    let _ = child.wait();
}

/// `vserver NAME status` must answer (0 running, 3 stopped) within a few seconds.
fn status(env: &Env, name: &str) -> i32 {
    let mut c = env
        .cmd("vserver")
        .args([name, "status"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let st = wait_child(&mut c, 10, "status");
    st.code().unwrap_or(-1)
}

fn build(env: &mut Env) -> (String, u32, String) {
    let (name, xid) = (env.name.clone(), env.xid);
    env.guests.push(name.clone());
    let tree = env.dir.join("bb");
    busybox_tree(&tree);
    let ifc = format!("{}:{}/24", env.bridge, env.ip(2));
    let x = xid.to_string();
    let o = env.build_rootfs(&name, &tree, &["--context", &x, "--interface", &ifc]);
    assert_ok(&o, "build");
    (name, xid, format!("vs{xid}.0"))
}

#[test]
fn sigkill_at_every_step_of_start_and_stop_is_repaired() {
    if !require_root() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut env = Env::new("crash", 0);
    let (name, xid, _) = build(&mut env);
    // The veth's host-side name, from a normal start.
    assert_ok(&env.vserver(&name, &["start"]), "first start");
    let st: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(env.dir.join("run").join(&name).join("state.json")).unwrap(),
    )
    .unwrap();
    let veth = st["veths"][0].as_str().unwrap().to_string();
    assert_ok(&env.vserver(&name, &["stop"]), "first stop");
    assert!(leftovers(&env, &name, xid, &veth).is_empty());
    for step in START_STEPS {
        kill_at(&env, &name, xid, &["start"], step);
        let s = status(&env, &name);
        assert!(s == 0 || s == 3, "status after a kill at {step}: {s}");
        assert_ok(
            &env.vserver(&name, &["stop"]),
            &format!("stop after {step}"),
        );
        let left = leftovers(&env, &name, xid, &veth);
        assert!(left.is_empty(), "after a kill at {step}: {left:?}");
        assert_ok(
            &env.vserver(&name, &["start"]),
            &format!("start after {step}"),
        );
        assert_ok(&env.vserver(&name, &["exec", "true"]), "exec");
        assert_ok(
            &env.vserver(&name, &["stop"]),
            &format!("stop after {step}"),
        );
        let left = leftovers(&env, &name, xid, &veth);
        assert!(left.is_empty(), "after restart following {step}: {left:?}");
    }
    for step in STOP_STEPS {
        assert_ok(&env.vserver(&name, &["start"]), "start");
        kill_at(&env, &name, xid, &["stop"], step);
        let s = status(&env, &name);
        assert!(s == 0 || s == 3, "status after a kill at {step}: {s}");
        assert_ok(
            &env.vserver(&name, &["stop"]),
            &format!("stop after {step}"),
        );
        assert_eq!(status(&env, &name), 3, "stopped after {step}");
        let left = leftovers(&env, &name, xid, &veth);
        assert!(left.is_empty(), "after a kill at {step}: {left:?}");
        assert_ok(
            &env.vserver(&name, &["start"]),
            &format!("start after {step}"),
        );
        assert_ok(
            &env.vserver(&name, &["stop"]),
            &format!("stop after {step}"),
        );
        let left = leftovers(&env, &name, xid, &veth);
        assert!(left.is_empty(), "after restart following {step}: {left:?}");
    }
}

/// Open fds of this test process, host mounts below the test's directory and the links of its
/// guest (`vs<xid>*`) and bridge: what a cycle could leak. Only the test's own objects are
/// counted: other work on the host (a CI job, a reviewer) mounts and unmounts its own.
fn host_counts(env: &Env, xid: u32) -> (usize, usize, usize) {
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let dir = env.dir.to_string_lossy().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&dir))
        .count();
    let links = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            n.starts_with(&format!("vs{xid}")) || n == env.bridge
        })
        .count();
    (fds, mounts, links)
}

#[test]
fn many_start_stop_cycles_leave_nothing_behind() {
    if !require_root() {
        return;
    }
    let cycles: usize = std::env::var("VSERVER_TEST_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut env = Env::new("cycles", 1);
    let (name, xid, _) = build(&mut env);
    // One cycle first: the bridge exists from then on.
    assert_ok(&env.vserver(&name, &["start"]), "start");
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    let before = host_counts(&env, xid);
    let run = env.dir.join("run").join(&name);
    let run_files = |p: &Path| std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0);
    let files_before = run_files(&run);
    for i in 0..cycles {
        let o = env.vserver(&name, &["start"]);
        assert_ok(&o, &format!("start {i}"));
        if i % 50 == 0 {
            assert_ok(&env.vserver(&name, &["exec", "true"]), "exec");
        }
        assert_ok(&env.vserver(&name, &["stop"]), &format!("stop {i}"));
    }
    let after = host_counts(&env, xid);
    assert_eq!(
        before, after,
        "(fds, mounts, links) before and after {cycles} cycles"
    );
    assert_eq!(files_before, run_files(&run), "files in the run directory");
    assert!(cgroup_left(xid).is_empty());
    assert!(guest_processes(xid).is_empty());
    assert!(our_processes(&name, xid).is_empty());
}
