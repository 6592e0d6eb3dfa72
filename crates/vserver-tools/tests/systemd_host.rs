//! A host whose PID 1 is systemd, owning the unified cgroup tree (issue 22): what most users
//! run. Runs in the VM lane's systemd mode (`VSERVER_VM_INIT=systemd bash scripts/vm-lane.sh
//! systemd_host`); elsewhere it says it skipped.
//!
//! Each guest lives in a scope systemd delegates to vserver (`vservers.slice/vserver-XID.scope`,
//! `Delegate=yes`), so systemd never moves, kills or reconfigures it: not on `systemctl
//! daemon-reload`, not on the restart of an unrelated unit, not when the user session that ran
//! `vserver NAME start` ends. The limits vserver set stay in force; the tools see the guest;
//! the host's journal carries the monitor's messages under one identifier per guest.

mod common;
use common::*;
use std::process::{Command, Stdio};

fn systemctl(args: &[&str]) -> std::process::Output {
    Command::new("systemctl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn show(unit: &str, prop: &str) -> String {
    text(&systemctl(&["show", "-p", prop, "--value", unit]))
        .trim()
        .to_string()
}

#[test]
fn guests_live_in_delegated_scopes_that_systemd_leaves_alone() {
    if !require_root() {
        return;
    }
    if !systemd_host() {
        assert_ne!(
            std::env::var("VSERVER_VM_INIT").as_deref(),
            Ok("systemd"),
            "the lane booted systemd, but it runs no system bus (scripts/deps.sh installs dbus)"
        );
        eprintln!(
            "skipped: needs a host whose PID 1 is systemd on cgroup v2 \
             (VSERVER_VM_INIT=systemd bash scripts/vm-lane.sh systemd_host)"
        );
        return;
    }
    let _done = Done;
    if std::env::var("VSERVER_VM_BOOT").is_ok_and(|b| b != "1") {
        eprintln!("skipped: ran in the lane's first boot");
        return;
    }
    let mut env = Env::new("sdh", 59);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_host(&name, xid, true);
    assert_ok(&env.vserver(&name, &["limit", "memory", "100M"]), "limit");
    assert_ok(&env.vserver(&name, &["limit", "nproc", "50"]), "limit");
    let scope = format!("vserver-{xid}.scope");

    // Started from a user's session (a scope of its own, as logind makes one per login), whose
    // shell lives on after the start.
    let session = format!("vst-session-{}.scope", std::process::id());
    let vserver = bin("vserver");
    let script = format!(
        "'{}' '{name}' start && touch '{}/started'; exec sleep 1000",
        vserver.display(),
        env.dir.display()
    );
    let envs: Vec<(String, String)> = env
        .cmd("vserver")
        .get_envs()
        .filter_map(|(k, v)| {
            Some((
                k.to_string_lossy().to_string(),
                v?.to_string_lossy().to_string(),
            ))
        })
        .collect();
    let mut sess = Command::new("systemd-run");
    sess.args(["--scope", "--quiet", "--unit", &session]);
    for (k, v) in &envs {
        sess.arg(format!("--setenv={k}={v}"));
    }
    let mut child = sess
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(120, "the start from the session", || {
        env.dir.join("started").exists()
    });
    assert_eq!(show(&scope, "ActiveState"), "active", "{scope}");
    assert_eq!(show(&scope, "Delegate"), "yes", "{scope}");
    assert_eq!(show(&scope, "Slice"), "vservers.slice");
    let before = show(&scope, "Before");
    assert!(
        before.contains(&format!("vserver@{name}.service")),
        "{scope} Before={before}"
    );
    // The guest in payload/, its monitor in supervisor/, nothing in the scope itself.
    let dir = v2_guest_dir(xid);
    assert!(
        dir.ends_with(format!("vservers.slice/{scope}/payload")),
        "{}",
        dir.display()
    );
    assert!(cgroup_pids(xid) > 0);
    let top = dir.parent().unwrap();
    assert_eq!(
        std::fs::read_to_string(top.join("cgroup.procs")).unwrap(),
        "",
        "the scope holds no process itself"
    );
    let sup = std::fs::read_to_string(top.join("supervisor/cgroup.procs")).unwrap();
    let monitor_comm = sup
        .lines()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
        .collect::<Vec<_>>();
    assert!(
        monitor_comm.iter().any(|c| c.trim() == "vs-monitor"),
        "supervisor holds {monitor_comm:?}"
    );

    // The session ends (as `loginctl terminate-session` or a logout does): the guest stays.
    assert_ok(&systemctl(&["stop", &session]), "stop the session");
    let _ = child.wait();
    // systemd rewrites its units' own cgroup attributes on reload; unrelated units restart.
    assert_ok(&systemctl(&["daemon-reload"]), "daemon-reload");
    assert_ok(
        &systemctl(&["restart", "systemd-journald.service"]),
        "restart journald",
    );
    assert_ok(&systemctl(&["daemon-reload"]), "daemon-reload");
    let st = text(&env.vserver(&name, &["status"]));
    assert!(st.contains("running"), "{st}");
    assert_eq!(text(&env.exec(&name, "echo alive")).trim(), "alive");
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert_eq!(read("memory.max"), (100u64 << 20).to_string(), "memory.max");
    assert_eq!(read("pids.max"), "50", "pids.max");
    assert_eq!(show(&scope, "ActiveState"), "active");

    // The tools: vserver-stat and vps see the guest, and vps does not count the monitor
    // (a host process in the scope's supervisor/) as the guest's.
    let stat = text(&env.cmd("vserver-stat").output().unwrap());
    assert!(
        stat.lines().any(|l| l.starts_with(&format!("{xid} "))),
        "{stat}"
    );
    let ps: serde_json::Value =
        serde_json::from_slice(&env.cmd("vps").arg("--json").output().unwrap().stdout).unwrap();
    let rows = ps.as_array().unwrap();
    assert!(rows.iter().any(|r| r["xid"] == xid), "vps: {ps}");
    for p in sup.lines() {
        let pid: u64 = p.trim().parse().unwrap();
        let row = rows.iter().find(|r| r["pid"] == pid);
        assert!(
            row.is_none_or(|r| r["xid"] == 0),
            "vps counts the monitor as the guest's: {row:?}"
        );
    }
    let row = vtop_row(&env, xid, 1);
    assert!(row["procs"].as_u64().unwrap_or(0) > 0, "{row}");

    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    wait_until(30, "the scope to go", || {
        show(&scope, "ActiveState") != "active"
    });
    assert!(cgroup_left(xid).is_empty(), "{:?}", cgroup_left(xid));
    // journald has the monitor's messages, one identifier per guest.
    let _ = Command::new("journalctl").arg("--sync").status();
    let j = text(
        &Command::new("journalctl")
            .args(["-t", &format!("vserver-{name}"), "--no-pager", "-o", "cat"])
            .output()
            .unwrap(),
    );
    assert!(j.contains("stopped by vserver stop"), "journal: {j}");
}

/// Set when the scope test has ended, so that the boot test reboots only after it.
static SCOPES_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets [`SCOPES_DONE`] when dropped (also when the test panics).
struct Done;

impl Drop for Done {
    fn drop(&mut self) {
        SCOPES_DONE.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The guests of the boot test: (name, context id, marks, depends).
const BOOT_GUESTS: [(&str, u32, &str); 3] = [
    ("sdba", 49110, ""),
    ("sdbw1", 49111, "mark = [\"web\"]\n"),
    ("sdbw2", 49112, "mark = [\"web\"]\ndepends = [\"sdbw1\"]\n"),
];
/// Where the guests' hook scripts note each stage (on the lane's persistent disk).
const ORDER_LOG: &str = "/var/log/vservers/sdb-order.log";

/// `vserver` with the default paths, as the units run it.
fn vs(args: &[&str]) -> std::process::Output {
    Command::new(bin("vserver"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Lines of the order log after the last `=== MARK` line up to the next `===` line:
/// (stage, guest) in the order they were written.
fn stages_after(mark: &str) -> Vec<(String, String)> {
    let log = std::fs::read_to_string(ORDER_LOG).unwrap_or_default();
    let mut out = Vec::new();
    let mut on = false;
    for l in log.lines() {
        if let Some(m) = l.strip_prefix("=== ") {
            on = m == mark;
            continue;
        }
        let f: Vec<&str> = l.split_whitespace().collect();
        if on && f.len() >= 3 {
            out.push((f[1].to_string(), f[2].to_string()));
        }
    }
    out
}

fn position(stages: &[(String, String)], stage: &str, guest: &str) -> usize {
    stages
        .iter()
        .position(|(s, g)| s == stage && g == guest)
        .unwrap_or_else(|| panic!("no {stage} of {guest} in {stages:?}"))
}

fn mark_log(line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ORDER_LOG)
        .unwrap();
    writeln!(f, "=== {line}").unwrap();
    f.sync_all().unwrap();
}

fn wait_running(name: &str) {
    wait_until(300, &format!("{name} running"), || {
        vs(&[name, "running"]).status.success()
    });
}

/// Ask the lane for another boot and leave: `how` is `reboot` (systemctl reboot, a clean
/// shutdown) or `reset` (sysrq b: no sync, no unmount).
fn reboot(how: &str) -> ! {
    let marker = std::env::var("VSERVER_VM_REBOOT").unwrap();
    std::fs::write(&marker, format!("tests/systemd_host.rs ({how})")).unwrap();
    if how == "reset" {
        std::fs::write("/proc/sysrq-trigger", "b").unwrap();
    } else {
        assert_ok(&systemctl(&["reboot"]), "systemctl reboot");
    }
    std::thread::sleep(std::time::Duration::from_secs(600));
    panic!("the VM did not {how}");
}

/// Guests enabled as units (`vserver@NAME.service`, and a start group `vservers@web.target`
/// whose second guest depends on its first) come back after a clean reboot and after a hard
/// reset, in dependency order; the clean shutdown and `systemctl stop vservers.target` stop
/// them in reverse order, each guest's init ending on its own (no kill). Three boots of the
/// lane's VM; default paths, kept on its persistent disk.
#[test]
fn enabled_guests_come_back_after_a_reboot_and_a_reset_in_order() {
    if !require_root() {
        return;
    }
    let (true, Ok(boot)) = (systemd_host(), std::env::var("VSERVER_VM_BOOT")) else {
        assert_ne!(
            std::env::var("VSERVER_VM_INIT").as_deref(),
            Ok("systemd"),
            "the lane booted systemd, but it runs no system bus (scripts/deps.sh installs dbus)"
        );
        eprintln!(
            "skipped: reboots the host: runs in the VM lane's systemd mode only \
             (VSERVER_VM_INIT=systemd bash scripts/vm-lane.sh systemd_host)"
        );
        return;
    };
    let names: Vec<&str> = BOOT_GUESTS.iter().map(|g| g.0).collect();
    let (a, w1, w2) = (names[0], names[1], names[2]);
    match boot.as_str() {
        "1" => {
            for (n, x, extra) in BOOT_GUESTS {
                let o = vs(&[
                    n,
                    "build",
                    "-m",
                    "host",
                    "--initstyle",
                    "builtin",
                    "--context",
                    &x.to_string(),
                ]);
                assert_ok(&o, "build");
                let p = format!("/etc/vservers/{n}.toml");
                let cfg = std::fs::read_to_string(&p).unwrap().replace(
                    "mark = []\n",
                    if extra.is_empty() {
                        "mark = []\n"
                    } else {
                        extra
                    },
                );
                std::fs::write(&p, cfg).unwrap();
                let sh = format!("/etc/vservers/{n}.sh");
                std::fs::write(
                    &sh,
                    format!("#!/bin/sh\necho \"$(date +%s%N) $1 {n}\" >> {ORDER_LOG}\n"),
                )
                .unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&sh, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            mark_log("boot 1");
            let units = [
                format!("vserver@{a}.service"),
                String::from("vservers@web.target"),
            ];
            let u: Vec<&str> = units.iter().map(String::as_str).collect();
            assert_ok(&systemctl(&[&["enable"][..], &u].concat()), "enable");
            assert_ok(&systemctl(&[&["start"][..], &u].concat()), "start");
            for n in &names {
                wait_running(n);
            }
            // The scope test first: the reboot would end it half-way.
            wait_until(1200, "the scope test to end", || {
                SCOPES_DONE.load(std::sync::atomic::Ordering::SeqCst)
            });
            std::thread::sleep(std::time::Duration::from_secs(2));
            mark_log("reboot");
            reboot("reboot");
        }
        "2" => {
            mark_log("boot 2");
            for n in &names {
                wait_running(n);
            }
            // The clean shutdown stopped w2 before w1 (it depends on w1), each by its init.
            let down = stages_after("reboot");
            assert!(
                position(&down, "post-stop", w2) < position(&down, "pre-stop", w1),
                "{down:?}"
            );
            position(&down, "post-stop", a);
            for n in &names {
                let m = std::fs::read_to_string(format!("/var/log/vservers/{n}/monitor.log"))
                    .unwrap_or_default();
                // Its init ended on its own (status 137 would be 128 + SIGKILL).
                assert!(m.contains("stopped by vserver stop (status 0)"), "{n}: {m}");
                assert!(!m.contains("status 137"), "{n}: {m}");
                let c = std::fs::read_to_string(format!("/var/log/vservers/{n}/console.log"))
                    .unwrap_or_default();
                assert!(!c.contains("SIGKILL"), "{n}: {c}");
            }
            // ... and the boot started w1 before w2.
            let up = stages_after("reboot");
            let up: Vec<_> = up
                .into_iter()
                .skip_while(|(s, _)| !s.ends_with("-start"))
                .collect();
            assert!(
                position(&up, "post-start", w1) < position(&up, "pre-start", w2),
                "{up:?}"
            );
            mark_log("reset");
            reboot("reset");
        }
        _ => {
            mark_log("boot 3");
            for n in &names {
                wait_running(n);
            }
            let up = stages_after("reset");
            assert!(
                position(&up, "post-start", w1) < position(&up, "pre-start", w2),
                "{up:?}"
            );
            // Stopping the group target stops the marked guests in reverse order, not a.
            mark_log("stop");
            assert_ok(
                &systemctl(&["stop", "vservers.target"]),
                "stop vservers.target",
            );
            for n in [w1, w2] {
                wait_until(120, &format!("{n} stopped"), || {
                    !vs(&[n, "running"]).status.success()
                });
            }
            assert!(
                vs(&[a, "running"]).status.success(),
                "{a} is not in a group"
            );
            let down = stages_after("stop");
            assert!(
                position(&down, "post-stop", w2) < position(&down, "pre-stop", w1),
                "{down:?}"
            );
            assert_ok(
                &systemctl(&["stop", &format!("vserver@{a}.service")]),
                "stop a",
            );
            assert!(!vs(&[a, "running"]).status.success());
            let _ = systemctl(&[
                "disable",
                &format!("vserver@{a}.service"),
                "vservers@web.target",
            ]);
            for n in &names {
                assert_ok(&vs(&[n, "delete", "--force"]), "delete");
                assert!(cgroup_left(BOOT_GUESTS.iter().find(|g| g.0 == *n).unwrap().1).is_empty());
            }
            let _ = std::fs::remove_file(ORDER_LOG);
        }
    }
}
