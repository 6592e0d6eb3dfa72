//! Operations: what a guest's own reboot and halt do (util-vserver's vshelper), on the real
//! kernel with busybox's init as the guest's pid 1.

mod common;
use common::*;
use std::process::Stdio;
use std::time::Duration;

fn init_pid(env: &Env, name: &str) -> Option<i64> {
    let o = env.vserver(name, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    v["init_pid"].as_i64()
}

#[test]
fn reboot_inside_restarts_halt_stops_and_ignore_refuses() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("vsh", 0);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    let root = env.root(&name);
    for applet in ["init", "poweroff", "halt"] {
        let _ = std::os::unix::fs::symlink("/bin/busybox", root.join("sbin").join(applet));
    }
    let _ = std::os::unix::fs::symlink("/bin/busybox", root.join("sbin/reboot"));
    let cfg = std::fs::read_to_string(env.config_path(&name))
        .unwrap()
        .replace("style = \"builtin\"", "style = \"plain\"")
        .replace("kill_timeout = 5", "kill_timeout = 5\nsignal = \"USR2\"");
    std::fs::write(env.config_path(&name), &cfg).unwrap();
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let first = init_pid(&env, &name).expect("running");

    // `reboot` inside: busybox init shuts down and calls reboot(2); the guest starts afresh.
    let _ = env.exec(&name, "reboot");
    wait_until(20, "the guest came back with a new init", || {
        init_pid(&env, &name).is_some_and(|p| p != first)
            && env.vserver(&name, &["running"]).status.success()
    });
    assert_eq!(
        text(&env.exec(&name, "hostname")).trim(),
        name,
        "the restarted guest is set up like a fresh start"
    );

    // `poweroff` inside: the guest stops and stays stopped, with nothing left behind.
    let _ = env.exec(&name, "poweroff");
    wait_until(20, "the guest stopped after poweroff", || {
        env.vserver(&name, &["running"]).status.code() == Some(1)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.vserver(&name, &["running"]).status.code(), Some(1));
    wait_until(5, "cleanup after poweroff", || cgroup_left(xid).is_empty());

    // on_reboot = "ignore": reboot(2) fails inside, the guest keeps running.
    let cfg = cfg.replace("on_reboot = \"restart\"", "on_reboot = \"ignore\"");
    assert!(cfg.contains("on_reboot = \"ignore\""), "{cfg}");
    std::fs::write(env.config_path(&name), cfg).unwrap();
    assert_ok(&env.vserver(&name, &["start"]), "start again");
    let pid = init_pid(&env, &name).expect("running");
    let o = env.exec(&name, "reboot -f");
    assert!(!o.status.success(), "reboot -f succeeded: {}", text(&o));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(init_pid(&env, &name), Some(pid), "the guest was rebooted");
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    assert!(cgroup_left(xid).is_empty());
}

#[test]
fn hook_stages_run_in_order_with_their_environment() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("hook", 1);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    let log = env.dir.join("hooks.log");
    let line = format!(
        "echo \"$0 $1 $2 $VSERVER_STAGE $VSERVER_NAME $VSERVER_XID $VSERVER_ROOT $(pwd)\" >> {}\n",
        log.display()
    );
    use std::os::unix::fs::PermissionsExt;
    let exe = |p: &std::path::Path, body: &str| {
        std::fs::write(p, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    let etc = env.dir.join("etc");
    let scripts = etc.join(&name).join("scripts");
    std::fs::create_dir_all(scripts.join("pre-start.d")).unwrap();
    exe(&etc.join(format!("{name}.sh")), &line);
    for stage in [
        "initialize",
        "prepre-start",
        "pre-start",
        "post-start",
        "pre-stop",
        "post-stop",
        "postpost-stop",
    ] {
        exe(&scripts.join(stage), &line);
    }
    exe(&scripts.join("pre-start.d/20-b"), &line);
    // Not executable: run with /bin/sh.
    std::fs::write(scripts.join("pre-start.d/10-a"), &line).unwrap();
    assert_ok(&env.vserver(&name, &["start"]), "start");
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    let got = std::fs::read_to_string(&log).unwrap();
    let order: Vec<String> = got
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let script = std::path::Path::new(f[0])
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string();
            format!("{}:{script}", f[1])
        })
        .collect();
    let sh = format!("{name}.sh");
    let mut want = Vec::new();
    for stage in [
        "initialize",
        "prepre-start",
        "pre-start",
        "post-start",
        "pre-stop",
        "post-stop",
        "postpost-stop",
    ] {
        want.push(format!("{stage}:{sh}"));
        want.push(format!("{stage}:{stage}"));
        if stage == "pre-start" {
            want.push(format!("{stage}:10-a"));
            want.push(format!("{stage}:20-b"));
        }
    }
    assert_eq!(order, want, "{got}");
    let root = env.root(&name);
    for l in got.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        assert_eq!(f[1], f[3], "VSERVER_STAGE: {l}");
        assert_eq!(f[2], name, "{l}");
        assert_eq!(f[4], name, "{l}");
        assert_eq!(f[5], xid.to_string(), "{l}");
        assert_eq!(f[6], root.to_str().unwrap(), "{l}");
        assert_eq!(f[7], etc.to_str().unwrap(), "cwd: {l}");
    }
    // A failing post-start script warns, and the rest of its stage still runs.
    std::fs::write(&log, "").unwrap();
    std::fs::create_dir_all(scripts.join("post-start.d")).unwrap();
    exe(&scripts.join("post-start.d/05-fail"), "exit 3\n");
    exe(&scripts.join("post-start.d/10-after"), &line);
    let o = env.vserver(&name, &["start"]);
    assert_ok(&o, "start with a failing post-start script");
    assert!(text(&o).contains("05-fail"), "{}", text(&o));
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("/10-after post-start"),
        "the stage stopped at its first failure"
    );
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    // A failing pre-start script stops the start, naming it, and leaves nothing running.
    exe(&scripts.join("pre-start.d/30-fail"), "exit 3\n");
    let o = env.vserver(&name, &["start"]);
    assert!(
        !o.status.success() && text(&o).contains("30-fail"),
        "{}",
        text(&o)
    );
    assert_eq!(env.vserver(&name, &["running"]).status.code(), Some(1));
    assert!(cgroup_left(xid).is_empty());
}

#[test]
fn a_mark_starts_in_dependency_order_in_parallel_and_stops_in_reverse() {
    if !require_root() {
        return;
    }
    // Context ids xid .. xid + 6 (idx 2 and the next three stay free in this file).
    let mut env = Env::new("grp", 2);
    let base = env.name.clone();
    let names: Vec<String> = (0..7).map(|i| format!("{base}g{i}")).collect();
    let log = env.dir.join("group.log");
    use std::os::unix::fs::PermissionsExt;
    for (i, n) in names.iter().enumerate() {
        env.build_busybox(n, env.xid + i as u32);
        // g0: not marked, but g4 depends on it; g6: marked but disabled.
        let mut extra = String::new();
        if i != 0 {
            extra.push_str("mark = [\"web\"]\n");
        }
        let deps = match i {
            2 => "depends = [\"G1\"]\n",
            3 => "depends = [\"G2\"]\n",
            4 => "depends = [\"G0\"]\n",
            _ => "",
        };
        extra.push_str(&deps.replace('G', &format!("{base}g")));
        if i == 6 {
            extra.push_str("disabled = true\n");
        }
        let cfg = std::fs::read_to_string(env.config_path(n))
            .unwrap()
            .replace("mark = []\n", &extra);
        std::fs::write(env.config_path(n), cfg).unwrap();
        let sh = env.dir.join("etc").join(format!("{n}.sh"));
        std::fs::write(
            &sh,
            format!(
                "#!/bin/sh\ncase $1 in pre-start) sleep 0.4;; esac\necho \"$(date +%s%N) $1 $2\" >> {}\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&sh, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // Then again, with every guest running: each counts as started, nothing is run.
    for again in [false, true] {
        let o = env
            .cmd("vservers")
            .args(["--mark", "web", "-j", "3", "start"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert_eq!(
            text(&o).contains(&format!("{base}g2: already running")),
            again,
            "{}",
            text(&o)
        );
    }
    let events = || -> Vec<(u128, String, String)> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f[0].parse().unwrap(), f[1].to_string(), f[2].to_string())
            })
            .collect()
    };
    let at = |ev: &[(u128, String, String)], stage: &str, n: &str| {
        ev.iter()
            .find(|(_, s, g)| s == stage && g == n)
            .map(|(t, _, _)| *t)
            .unwrap_or_else(|| panic!("no {stage} of {n} in {ev:?}"))
    };
    let ev = events();
    let g = |i: usize| names[i].as_str();
    assert!(at(&ev, "post-start", g(1)) < at(&ev, "initialize", g(2)));
    assert!(at(&ev, "post-start", g(2)) < at(&ev, "initialize", g(3)));
    assert!(at(&ev, "post-start", g(0)) < at(&ev, "initialize", g(4)));
    assert!(
        !ev.iter().any(|(_, _, n)| n == g(6)),
        "the disabled guest started"
    );
    // Parallel: at some moment 2 or 3 starts overlapped, never more than 3.
    let spans: Vec<(u128, u128)> = (0..6)
        .map(|i| (at(&ev, "initialize", g(i)), at(&ev, "post-start", g(i))))
        .collect();
    let most = spans
        .iter()
        .map(|(s, _)| spans.iter().filter(|(a, b)| a <= s && s < b).count())
        .max()
        .unwrap();
    assert!(
        (2..=3).contains(&most),
        "{most} starts overlapped: {spans:?}"
    );
    let st = env
        .cmd("vservers")
        .args(["--mark", "web", "status"])
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(2), "g6 is stopped: {}", text(&st));
    // Machine-readable forms.
    let js = env
        .cmd("vservers")
        .args(["--mark", "web", "--json", "status"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&js.stdout).unwrap();
    assert_eq!(v[g(1)], "running");
    assert_eq!(v[g(6)], "stopped");
    let top = env
        .cmd("vtop")
        .args(["--json", "-n", "1"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&top.stdout).unwrap();
    assert!(
        v.as_array().unwrap().iter().any(|r| r["name"] == g(1)),
        "{v}"
    );
    // The overview lists stopped guests too, with their marks.
    let all = text(&env.cmd("vserver-stat").arg("--all").output().unwrap());
    let line = |n: &str| {
        all.lines()
            .find(|l| l.split_whitespace().next() == Some(n))
            .unwrap_or_else(|| panic!("{n} missing: {all}"))
            .to_string()
    };
    assert!(
        line(g(6)).contains("stopped") && line(g(6)).contains("web"),
        "{all}"
    );
    assert!(line(g(1)).contains("running"), "{all}");
    assert!(
        line(g(0)).contains("running") && line(g(0)).contains(" - "),
        "{all}"
    );

    // Stop: dependants first.
    std::fs::write(&log, "").unwrap();
    let o = env
        .cmd("vservers")
        .args(["--mark", "web", "-j", "3", "stop"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let ev = events();
    assert!(at(&ev, "post-stop", g(3)) < at(&ev, "pre-stop", g(2)));
    assert!(at(&ev, "post-stop", g(2)) < at(&ev, "pre-stop", g(1)));
    assert_eq!(
        env.vserver(g(0), &["running"]).status.code(),
        Some(0),
        "g0 is not marked: a stop of the mark leaves it"
    );
    assert_ok(&env.vserver(g(0), &["stop"]), "stop g0");

    // A failing guest: its dependants are skipped, the exit code says partial.
    let sh = env.dir.join("etc").join(format!("{}.sh", g(1)));
    std::fs::write(&sh, "#!/bin/sh\n[ \"$1\" = pre-start ] && exit 1\nexit 0\n").unwrap();
    let o = env
        .cmd("vservers")
        .args(["--mark", "web", "-j", "3", "start"])
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains(&format!("{}: skipped ({} failed)", g(3), g(2))),
        "{out}"
    );
    let o = env
        .cmd("vservers")
        .args(["--mark", "web", "stop"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let _ = env.vserver(g(0), &["stop"]);
    // A dependency that is not configured fails its guest only, a configuration that does not
    // load (of a guest outside the mark here) fails that guest only, with its file and line;
    // the rest start (g5, running already, counts as started). A stop never fails on either
    // (shutdown must stop guests).
    assert_ok(&env.vserver(g(5), &["start"]), "start g5");
    std::fs::write(&sh, "#!/bin/sh\nexit 0\n").unwrap();
    let p = env.config_path(g(3));
    let cfg = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, cfg.replace("depends = [", "depends = [\"nosuch\", ")).unwrap();
    let broken = env.dir.join("etc").join(format!("{base}bad.toml"));
    std::fs::write(&broken, "context = 5\nmark = [\"web\"\n").unwrap();
    let o = env
        .cmd("vservers")
        .args(["--mark", "web", "start"])
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains(&format!("{}: start failed (depends on nosuch", g(3))),
        "{out}"
    );
    assert!(
        out.contains(&format!("{base}bad: start failed"))
            && out.contains(&format!("{base}bad.toml")),
        "{out}"
    );
    assert!(out.contains(&format!("{}: already running", g(5))), "{out}");
    assert!(out.contains(&format!("{}: start ok", g(1))), "{out}");
    std::fs::remove_file(&broken).unwrap();
    let o = env
        .cmd("vservers")
        .args(["--mark", "web", "stop"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(env.vserver(g(5), &["running"]).status.code(), Some(1));
    let o = env
        .cmd("vservers")
        .args(["--mark", "nosuch", "status"])
        .output()
        .unwrap();
    assert!(
        text(&o).contains("no guest has mark 'nosuch'"),
        "{}",
        text(&o)
    );
}

#[test]
fn install_puts_units_that_systemd_accepts_and_an_lsb_init_script() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("inst", 6);
    let prefix = env.dir.join("usr");
    let bin_dir = bin("vserver").parent().unwrap().to_path_buf();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let o = std::process::Command::new("bash")
        .arg(repo.join("scripts/install.sh"))
        .args(["--no-build", "--prefix", prefix.to_str().unwrap()])
        .env("BUILD_DIR", &bin_dir)
        .output()
        .unwrap();
    assert_ok(&o, "install.sh");
    let units = prefix.join("lib/systemd/system");
    for (template, instance) in [
        ("vserver@.service", "vserver@web1.service"),
        ("vservers@.service", "vservers@default.service"),
        ("vservers@.target", "vservers@default.target"),
    ] {
        std::os::unix::fs::symlink(template, units.join(instance)).unwrap();
    }
    if std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let o = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .args([
                "vserver@web1.service",
                "vservers@default.service",
                "vservers@default.target",
                "vservers.target",
            ])
            .current_dir(&units)
            .output()
            .unwrap();
        assert!(
            o.status.success() && o.stderr.is_empty(),
            "systemd-analyze verify: {}",
            text(&o)
        );
    } else {
        eprintln!("skipped part: systemd-analyze is not installed");
    }
    // Man pages and completions, from the CLI definitions.
    for b in [
        "vserver",
        "vservers",
        "vserver-stat",
        "vps",
        "vkill",
        "vtop",
        "chcontext",
        "reducecap",
    ] {
        let man = std::fs::read_to_string(prefix.join(format!("share/man/man8/{b}.8"))).unwrap();
        assert!(man.contains(&format!(".TH {b} 8")), "{b}.8: {man}");
        let bash = prefix.join(format!("share/bash-completion/completions/{b}"));
        let o = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("source {} && complete -p {b}", bash.display()))
            .output()
            .unwrap();
        assert_ok(&o, &format!("bash completion of {b}"));
        for f in [
            format!("share/zsh/vendor-completions/_{b}"),
            format!("share/fish/vendor_completions.d/{b}.fish"),
        ] {
            assert!(std::fs::metadata(prefix.join(&f)).unwrap().len() > 0, "{f}");
        }
    }
    let build = std::fs::read_to_string(prefix.join("share/man/man8/vserver-build.8")).unwrap();
    assert!(
        build.contains(".TH vserver-build 8") && build.contains("interface"),
        "{build}"
    );
    // The synopsis as it is typed; no page pointed to that is not installed (issue 17, 21).
    assert!(build.contains("vserver NAME build"), "{build}");
    let man = std::fs::read_to_string(prefix.join("share/man/man8/vserver.8")).unwrap();
    assert!(!man.contains("vserver\\-help"), "{man}");
    assert!(
        man.contains("EXIT STATUS") && man.contains("VSERVER_CONFDIR"),
        "{man}"
    );
    assert!(
        man.contains("console") && man.contains("reset\\-accounting"),
        "{man}"
    );
    // The LSB script: header, and status 0 running / 3 stopped for its mark.
    let script = prefix.join("etc/init.d/vservers-default");
    let body = std::fs::read_to_string(&script).unwrap();
    assert!(body.contains("### BEGIN INIT INFO") && body.contains("# Default-Stop:"));
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    let cfg = std::fs::read_to_string(env.config_path(&name))
        .unwrap()
        .replace("mark = []", "mark = [\"default\"]");
    std::fs::write(env.config_path(&name), cfg).unwrap();
    let run = |verb: &str| {
        std::process::Command::new(&script)
            .arg(verb)
            .env("VSERVER_CONFDIR", env.dir.join("etc"))
            .env("VSERVER_ROOTBASE", env.dir.join("root"))
            .env("VSERVER_RUNDIR", env.dir.join("run"))
            .env("VSERVER_LOGDIR", env.dir.join("log"))
            .output()
            .unwrap()
    };
    assert_eq!(run("status").status.code(), Some(3));
    assert_ok(&run("start"), "init script start");
    assert_eq!(env.vserver(&name, &["running"]).status.code(), Some(0));
    assert_eq!(run("status").status.code(), Some(0));
    assert_ok(&run("stop"), "init script stop");
    assert_eq!(env.vserver(&name, &["running"]).status.code(), Some(1));
}

#[test]
fn console_attach_sees_output_sends_input_relays_size_and_logs_keep_it() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("con", 7);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    let root = env.root(&name);
    for applet in ["init", "stty"] {
        let dir = if applet == "init" { "sbin" } else { "bin" };
        let _ = std::os::unix::fs::symlink("/bin/busybox", root.join(dir).join(applet));
    }
    // busybox init with no inittab offers a shell on the console after Enter.
    let cfg = std::fs::read_to_string(env.config_path(&name))
        .unwrap()
        .replace("style = \"builtin\"", "style = \"plain\"")
        .replace("kill_timeout = 5", "kill_timeout = 2\nsignal = \"USR2\"");
    std::fs::write(env.config_path(&name), cfg).unwrap();
    assert_ok(&env.vserver(&name, &["start"]), "start");

    let pty = nix::pty::openpty(
        Some(&nix::pty::Winsize {
            ws_row: 33,
            ws_col: 111,
            ws_xpixel: 0,
            ws_ypixel: 0,
        }),
        None,
    )
    .unwrap();
    let slave = std::fs::File::from(pty.slave);
    let mut client = env
        .cmd("vserver")
        .args([&name, "console"])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    let master = std::fs::File::from(pty.master);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    {
        let seen = seen.clone();
        let mut m = master.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut b = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut m, &mut b) {
                if n == 0 {
                    break;
                }
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&b[..n]));
            }
        });
    }
    let mut m = master.try_clone().unwrap();
    let mut send = |s: &str| std::io::Write::write_all(&mut m, s.as_bytes()).unwrap();
    wait_until(10, "the console client attached", || {
        seen.lock().unwrap().contains("attached to the console")
    });
    send("\r");
    std::thread::sleep(Duration::from_millis(500));
    send("echo con-$((6*7)); stty size\r");
    wait_until(10, "the guest's shell answered on the console", || {
        seen.lock().unwrap().contains("con-42")
    });
    wait_until(5, "the window size was relayed", || {
        seen.lock().unwrap().contains("33 111")
    });
    // Ctrl-C on the console reaches the console's shell, never the init (which has no
    // controlling terminal, as on real hardware).
    let init_before = init_pid(&env, &name);
    send("sleep 30\r");
    std::thread::sleep(Duration::from_millis(300));
    send("\x03");
    send("echo alive-$((1+1))\r");
    wait_until(10, "the shell survived Ctrl-C and answered", || {
        seen.lock().unwrap().contains("alive-2")
    });
    assert_eq!(
        init_pid(&env, &name),
        init_before,
        "Ctrl-C reached the init"
    );
    // A second client is turned away while the first is attached.
    let second = env.vserver(&name, &["console"]);
    assert!(
        text(&second).contains("attached elsewhere"),
        "{}",
        text(&second)
    );
    send("\x1d");
    wait_child(&mut client, 5, "console client did not detach on Ctrl-]");
    assert!(seen.lock().unwrap().contains("detached"));
    // The log keeps what the console showed.
    let logs = env.vserver(&name, &["logs"]);
    assert!(text(&logs).contains("con-42"), "{}", text(&logs));
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
}

/// Copy a busybox tree into the guest root `root` (for configurations that name no build).
fn busybox_root(root: &std::path::Path) {
    busybox_tree(root);
}

fn cap_bnd_has(env: &Env, name: &str, bit: u32) -> bool {
    let t = text(&env.exec(name, "grep CapBnd /proc/self/status"));
    let hex = t.split_whitespace().last().unwrap_or("0");
    u64::from_str_radix(hex, 16).unwrap_or(0) & (1 << bit) != 0
}

const CAP_NET_RAW: u32 = 13;

#[test]
fn legacy_conf_and_directory_layout_start_with_their_settings() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("leg", 8);
    let (name, xid) = (env.name.clone(), env.xid);
    env.guests.push(name.clone());
    let etc = env.dir.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    // The test's own bridge carries the guests' (classic) addresses.
    assert!(std::process::Command::new("ip")
        .args(["link", "add", &env.bridge, "type", "bridge"])
        .status()
        .unwrap()
        .success());
    busybox_root(&env.root(&name));
    let ip1 = env.ip(7);
    std::fs::write(
        etc.join(format!("{name}.conf")),
        format!(
            "# util-vserver legacy configuration\n\
             S_CONTEXT={xid}\nS_HOSTNAME=\"legacy-{xid}\"\nIPROOT=\"{br}:{ip1}/24\"\n\
             S_CAPS=\"CAP_NET_RAW\"\nS_FLAGS=\"lock nproc\"\nULIMIT=\"-HS -u 200\"\n\
             ONBOOT=yes\nPROFILE=prod\nFOO=bar\n",
            br = env.bridge
        ),
    )
    .unwrap();
    let o = env.vserver(&name, &["start"]);
    assert_ok(&o, "start from NAME.conf");
    // One line at start; the settings without an equivalent are listed by convert-config.
    let warnings = text(&o);
    assert!(
        warnings.contains("lists them and writes NAME.toml") && !warnings.contains("FOO"),
        "{warnings}"
    );
    assert_eq!(
        text(&env.exec(&name, "hostname")).trim(),
        format!("legacy-{xid}")
    );
    let st: serde_json::Value =
        serde_json::from_slice(&env.vserver(&name, &["status", "--json"]).stdout).unwrap();
    assert_eq!(st["xid"].as_u64(), Some(u64::from(xid)));
    assert_eq!(st["limits"]["nproc"].as_u64(), Some(200));
    let addrs = std::process::Command::new("ip")
        .args(["-br", "addr", "show", &env.bridge])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&addrs.stdout).contains(&ip1),
        "classic address added"
    );
    assert!(cap_bnd_has(&env, &name, CAP_NET_RAW), "S_CAPS kept NET_RAW");
    let all = text(&env.cmd("vserver-stat").arg("--all").output().unwrap());
    assert!(all.contains(&name) && all.contains("default"), "{all}");
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    // convert-config writes an equivalent NAME.toml and leaves NAME.conf alone.
    let o = env.vserver(&name, &["convert-config"]);
    assert_ok(&o, "convert-config");
    for key in ["PROFILE", "FOO"] {
        assert_eq!(
            text(&o).matches(&format!("{key}: no equivalent")).count(),
            1,
            "one line for {key}: {}",
            text(&o)
        );
    }
    let toml = std::fs::read_to_string(env.config_path(&name)).unwrap();
    assert!(
        toml.starts_with("# Converted from util-vserver") && toml.contains("FOO"),
        "{toml}"
    );
    assert!(
        toml.contains(&format!("context = {xid}")) && toml.contains("mode = \"classic\""),
        "{toml}"
    );
    assert!(etc.join(format!("{name}.conf")).exists());
    let o = env.vserver(&name, &["start"]);
    assert_ok(&o, "start from the converted NAME.toml");
    assert!(!text(&o).contains("warning"), "{}", text(&o));
    assert_eq!(
        text(&env.exec(&name, "hostname")).trim(),
        format!("legacy-{xid}")
    );
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    assert!(
        !env.vserver(&name, &["convert-config"]).status.success(),
        "a second conversion must not overwrite NAME.toml"
    );

    // The directory layout.
    let (dname, dxid) = (format!("{name}d"), xid + 1);
    env.guests.push(dname.clone());
    let d = etc.join(&dname);
    let droot = env.dir.join("srv").join(&dname);
    busybox_root(&droot);
    for (f, v) in [
        ("context", dxid.to_string()),
        ("uts/nodename", format!("layout-{dxid}")),
        ("interfaces/0/ip", env.ip(8)),
        ("interfaces/0/prefix", "24".into()),
        ("interfaces/0/dev", env.bridge.clone()),
        ("bcapabilities", "NET_RAW\n# a comment\n".into()),
        ("apps/init/mark", "web\n".into()),
        // Limits util-vserver kept: a quarter of a CPU, 256 MiB, half the default weight.
        ("sched/fill-rate", "1".into()),
        ("sched/interval", "4".into()),
        ("sched/tokens-max", "100".into()),
        ("rlimits/rss", "65536".into()),
        ("cgroup/cpu.shares", "512".into()),
        (
            "fstab",
            format!(
                "none /proc proc defaults 0 0\n{} /mnt/shared none bind,ro 0 0\n",
                env.dir.display()
            ),
        ),
        ("flags", "fakeinit\n".into()),
    ] {
        let p = d.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, v).unwrap();
    }
    std::os::unix::fs::symlink(&droot, d.join("vdir")).unwrap();
    std::fs::create_dir_all(droot.join("mnt/shared")).unwrap();
    let o = env.vserver(&dname, &["start"]);
    assert_ok(&o, "start from NAME/");
    assert!(
        text(&o).contains("lists them and writes NAME.toml"),
        "{}",
        text(&o)
    );
    let lim: serde_json::Value =
        serde_json::from_slice(&env.vserver(&dname, &["status", "--json"]).stdout).unwrap();
    let lim = &lim["limits"];
    assert_eq!(lim["cpu"], "25%", "{lim}");
    assert_eq!(lim["memory"], (65536u64 * 4096).to_string(), "{lim}");
    assert_eq!(lim["cpu_weight"].as_u64(), Some(50), "{lim}");
    assert_ok(
        &env.exec(&dname, "test -d /mnt/shared/etc"),
        "the fstab bind of a host directory",
    );
    let o = env.vserver(&dname, &["convert-config"]);
    for left in ["tokens-max", "fakeinit"] {
        assert!(text(&o).contains(left), "{left}: {}", text(&o));
    }
    assert!(!text(&o).contains("fstab"), "{}", text(&o));
    assert_eq!(
        text(&env.exec(&dname, "hostname")).trim(),
        format!("layout-{dxid}")
    );
    assert!(
        cap_bnd_has(&env, &dname, CAP_NET_RAW),
        "bcapabilities kept NET_RAW"
    );
    let st: serde_json::Value =
        serde_json::from_slice(&env.vserver(&dname, &["status", "--json"]).stdout).unwrap();
    assert_eq!(st["xid"].as_u64(), Some(u64::from(dxid)));
    let web = text(
        &env.cmd("vservers")
            .args(["--mark", "web", "status"])
            .output()
            .unwrap(),
    );
    assert!(web.contains(&format!("{dname}: running")), "{web}");
    assert_ok(&env.vserver(&dname, &["stop"]), "stop");
    assert!(cgroup_left(dxid).is_empty() && cgroup_left(xid).is_empty());
}

#[test]
fn a_guest_rebooting_in_a_loop_is_left_stopped() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("loop", 10);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let mut restarts = 0;
    for _ in 0..8 {
        let Some(before) = init_pid(&env, &name) else {
            break;
        };
        let _ = env.exec(&name, "reboot -f");
        wait_until(10, "the reboot ended the init", || {
            init_pid(&env, &name) != Some(before)
                && (env.vserver(&name, &["running"]).status.success()
                    || std::fs::read_to_string(env.dir.join("log").join(&name).join("monitor.log"))
                        .unwrap_or_default()
                        .contains("leaving the guest stopped"))
        });
        if env.vserver(&name, &["running"]).status.success() {
            restarts += 1;
        } else {
            break;
        }
    }
    assert_eq!(restarts, 5, "restarts before the guest was left stopped");
    wait_until(5, "cleanup", || cgroup_left(xid).is_empty());
}

#[test]
fn logs_follow_loses_nothing_across_a_rotation() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("rot", 11);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    let _ = std::os::unix::fs::symlink("busybox", env.root(&name).join("bin/seq"));
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let mut follow = env
        .cmd("vserver")
        .args([&name, "logs", "-f"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    // About 1.4 MB: more than the 1 MiB at which the monitor rotates the log.
    const N: u32 = 200_000;
    assert_ok(
        &env.exec(&name, &format!("seq 1 {N} > /dev/console")),
        "write to the console",
    );
    wait_until(20, "the monitor logged the last line", || {
        std::fs::read_to_string(env.dir.join("log").join(&name).join("console.log"))
            .unwrap_or_default()
            .contains(&format!("\n{N}\r"))
    });
    std::thread::sleep(Duration::from_millis(800));
    let _ = follow.kill();
    let _ = follow.wait();
    let got = reader.join().unwrap();
    assert!(
        env.dir
            .join("log")
            .join(&name)
            .join("console.log.1")
            .exists(),
        "no rotation happened: the test proves nothing"
    );
    let mut seen = vec![false; N as usize + 1];
    for l in got.lines() {
        if let Ok(n) = l.trim().parse::<usize>() {
            if n <= N as usize {
                seen[n] = true;
            }
        }
    }
    let missing = (1..=N as usize).filter(|n| !seen[*n]).count();
    assert_eq!(missing, 0, "logs -f lost {missing} lines");
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
}

#[test]
fn typing_into_a_console_nobody_reads_never_stalls_the_monitor() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("paste", 12);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    assert_ok(&env.vserver(&name, &["start"]), "start");
    // The builtin init reads nothing from the console: a long paste fills the tty's buffer.
    let sock = env.dir.join("run").join(&name).join("console.sock");
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut frame = vec![b'd', 0, 13];
    frame.extend_from_slice(b"ls -l /etc\r\n ");
    for _ in 0..3000 {
        if std::io::Write::write_all(&mut s, &frame).is_err() {
            break;
        }
    }
    // The monitor still copies the console to its log...
    assert_ok(
        &env.exec(&name, "echo still-logging > /dev/console"),
        "write to the console",
    );
    let log = env.dir.join("log").join(&name).join("console.log");
    wait_until(5, "the monitor kept logging the console", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("still-logging")
    });
    drop(s);
    // ...and still cleans up at stop.
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    wait_until(5, "the monitor exited and cleaned up", || {
        cgroup_left(xid).is_empty() && !sock.exists()
    });
}

#[test]
fn an_exit_code_is_no_reboot_and_a_stop_during_a_restart_sticks() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("stick", 13);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    // An init that exits 129 (= 128 + SIGHUP as a shell would print it) is not rebooting.
    let cfg = std::fs::read_to_string(env.config_path(&name)).unwrap();
    let plain = cfg
        .replace("style = \"builtin\"", "style = \"plain\"")
        .replace(
            "\ncommand = []\n",
            "\ncommand = [\"/bin/sh\", \"-c\", \"sleep 0.3; exit 129\"]\n",
        );
    std::fs::write(env.config_path(&name), plain).unwrap();
    assert_ok(&env.vserver(&name, &["start"]), "start");
    wait_until(5, "the init exited", || {
        env.vserver(&name, &["running"]).status.code() == Some(1)
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        env.vserver(&name, &["running"]).status.code(),
        Some(1),
        "exit 129 was taken for a reboot"
    );
    // A stop that arrives while the monitor is about to restart a rebooted guest wins.
    std::fs::write(env.config_path(&name), cfg).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let sh = env.dir.join("etc").join(format!("{name}.sh"));
    std::fs::write(
        &sh,
        "#!/bin/sh\n[ \"$1\" = post-stop ] && sleep 2\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&sh, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_ok(&env.vserver(&name, &["start"]), "start again");
    let _ = env.exec(&name, "reboot -f");
    std::thread::sleep(Duration::from_millis(500));
    assert_ok(&env.vserver(&name, &["stop"]), "stop during the restart");
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(
        env.vserver(&name, &["running"]).status.code(),
        Some(1),
        "the restart undid the stop"
    );
    assert!(cgroup_left(xid).is_empty());
}

#[test]
fn run_starts_a_fresh_guest_for_one_command_and_returns_its_status() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("once", 14);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    let o = env.vserver(
        &name,
        &[
            "run",
            "/bin/sh",
            "-c",
            "echo once-$(hostname) > /dev/console; exit 7",
        ],
    );
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert_eq!(env.vserver(&name, &["running"]).status.code(), Some(1));
    assert!(
        cgroup_left(xid).is_empty(),
        "cleaned up before run returned"
    );
    let logs = text(&env.vserver(&name, &["logs"]));
    assert!(logs.contains(&format!("once-{name}")), "{logs}");
    // A running guest is not run again.
    assert_ok(&env.vserver(&name, &["start"]), "start");
    assert!(!env.vserver(&name, &["run", "/bin/true"]).status.success());
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
}

/// Issue 17, points 26 and 27, with the built-in init: a daemon started with `exec` gets
/// SIGTERM at stop and time to act on it (the init used to exit at once, and the pid
/// namespace's end killed it); signals sent to pid 1 from inside follow busybox init's
/// conventions (TERM reboots, USR2 powers off), told apart from the host's stop by the sender.
#[test]
fn builtin_init_lets_daemons_end_and_follows_busybox_signals() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("bini", 16);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    let root = env.root(&name);
    assert_ok(&env.vserver(&name, &["start"]), "start");
    // A daemon started from the host, which needs a moment to save its state on TERM.
    let mut client = env
        .cmd("vserver")
        .args([
            name.as_str(),
            "exec",
            "sh",
            "-c",
            "trap 'sleep 1; echo saved > /tmp/daemon-state; exit 0' TERM; echo up; while :; do sleep 1; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(client.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "up");
    }
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    let _ = client.wait();
    assert_eq!(
        std::fs::read_to_string(root.join("tmp/daemon-state"))
            .unwrap_or_default()
            .trim(),
        "saved",
        "the daemon was killed before it could act on SIGTERM"
    );
    // busybox's `reboot` and `poweroff` signal pid 1: TERM restarts the guest, USR2 stops it.
    assert_ok(&env.vserver(&name, &["start"]), "start again");
    let first = init_pid(&env, &name).expect("running");
    let _ = env.exec(&name, "kill -TERM 1");
    wait_until(20, "the guest came back with a new init", || {
        init_pid(&env, &name).is_some_and(|p| p != first)
            && env.vserver(&name, &["running"]).status.success()
    });
    let _ = env.exec(&name, "kill -USR2 1");
    wait_until(20, "the guest stopped after a poweroff from inside", || {
        env.vserver(&name, &["running"]).status.code() == Some(1)
    });
    wait_until(5, "cleanup after poweroff", || cgroup_left(xid).is_empty());
}

/// Issue 17, point 11: the builtin init restarts a service that died when `init.restart`
/// says so, at most five times a minute, and says each step on the console.
#[test]
fn builtin_init_restarts_a_failing_service_within_a_burst() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("rst", 17);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    env.set_init_command(
        &name,
        "command = [\"/bin/sh\", \"-c\", \"echo run >> /tmp/runs; exit 3\"]\nrestart = \"on-failure\"",
    );
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let runs = env.root(&name).join("tmp/runs");
    wait_until(30, "the service to be started six times", || {
        std::fs::read_to_string(&runs).is_ok_and(|t| t.lines().count() == 6)
    });
    wait_until(10, "the console to say the burst is spent", || {
        text(&env.vserver(&name, &["logs"])).contains("not restarting it")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap().lines().count(),
        6,
        "restarted past the burst"
    );
    assert!(text(&env.vserver(&name, &["logs"])).contains("ended with status 3"));
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    assert!(cgroup_left(xid).is_empty());
}
