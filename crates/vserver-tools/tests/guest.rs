//! Guests on the real kernel: lifecycle, isolation and the hostile actions a guest root must
//! not be able to do. Run as root; each test cleans up after itself.

mod common;
use common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

#[test]
fn host_guest_lifecycle_service_reachable_stat_and_vps() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("life", 0);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_host(&name, xid, true);
    let root = env.root(&name);
    // The host's ssh host keys are never copied (the guest gets its own where it has sshd).
    for k in [
        "ssh_host_rsa_key",
        "ssh_host_ed25519_key",
        "ssh_host_ecdsa_key",
    ] {
        if let Ok(host_key) = std::fs::read(std::path::Path::new("/etc/ssh").join(k)) {
            assert_ne!(
                std::fs::read(root.join("etc/ssh").join(k)).ok(),
                Some(host_key),
                "host ssh key {k} copied"
            );
        }
    }
    let shadow = std::fs::read_to_string(root.join("etc/shadow")).unwrap_or_default();
    assert!(
        !shadow.contains("$6$") && !shadow.contains("$y$"),
        "password hashes copied"
    );
    assert_ne!(
        std::fs::read(root.join("etc/machine-id")).ok(),
        std::fs::read("/etc/machine-id").ok()
    );

    assert_eq!(env.vserver(&name, &["status"]).status.code(), Some(3));
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let st = env.vserver(&name, &["status"]);
    assert_eq!(st.status.code(), Some(0));
    assert!(
        text(&st).contains(&format!("running at context '{xid}'")),
        "{}",
        text(&st)
    );
    assert_eq!(
        env.vserver(&name, &["start"]).status.code(),
        Some(1),
        "second start must be refused"
    );

    let ps = env.vserver(&name, &["exec", "ps", "-eo", "pid,comm"]);
    assert_ok(&ps, "exec ps");
    let out = text(&ps);
    assert!(
        out.lines()
            .any(|l| l.trim().starts_with("1 ") && l.contains("vserver-init")),
        "{out}"
    );
    assert!(
        out.lines().count() <= 4,
        "guest sees foreign processes: {out}"
    );
    assert_eq!(text(&env.exec(&name, "hostname")).trim(), name);

    // A service inside answers on the guest's address from the host.
    let ip = env.ip(2 + (xid % 100) as u8);
    let o = env.exec(&name, &format!("cd /tmp && echo hello-{xid} > index.html && (python3 -m http.server 8080 --bind {ip} >/dev/null 2>&1 &)"));
    assert_ok(&o, "start service");
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        if let Ok(mut s) = std::net::TcpStream::connect_timeout(
            &format!("{ip}:8080").parse().unwrap(),
            Duration::from_secs(1),
        ) {
            let _ = s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n");
            let mut b = String::new();
            let _ = s.read_to_string(&mut b);
            if b.contains("hello") {
                break b;
            }
        }
        assert!(
            Instant::now() < deadline,
            "service in the guest never answered on {ip}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(body.contains(&format!("hello-{xid}")));

    let stat = text(&env.cmd("vserver-stat").output().unwrap());
    assert!(
        stat.starts_with("CTX   PROC    VSZ    RSS  userTIME   sysTIME    UPTIME NAME"),
        "{stat}"
    );
    assert!(
        stat.lines()
            .any(|l| l.starts_with(&format!("{xid} ")) && l.ends_with(&name)),
        "{stat}"
    );
    assert!(
        stat.lines()
            .any(|l| l.starts_with("0 ") && l.ends_with("root server")),
        "{stat}"
    );
    let vps = text(&env.cmd("vps").arg("aux").output().unwrap());
    assert!(
        vps.lines().next().unwrap_or("").contains("PID CONTEXT"),
        "{vps}"
    );
    assert!(
        vps.lines()
            .any(|l| l.contains(&format!("{xid} {name}")) && l.contains("http.server")),
        "{vps}"
    );
    let json = text(&env.vserver(&name, &["status", "--json"]));
    assert!(json.contains("\"running\": true"), "{json}");

    let veth = format!("vs{xid}-0");
    assert!(link_exists(&veth));
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    assert_eq!(env.vserver(&name, &["status"]).status.code(), Some(3));
    assert!(
        cgroup_left(xid).is_empty(),
        "cgroup left: {:?}",
        cgroup_left(xid)
    );
    assert!(!link_exists(&veth), "veth left behind");
    // Stop then start at once works.
    assert_ok(&env.vserver(&name, &["start"]), "restart");
    assert_ok(&env.vserver(&name, &["restart"]), "restart command");
    assert_ok(&env.vserver(&name, &["stop"]), "stop again");
}

#[test]
fn busybox_guest_lifecycle_and_exit_status() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("bb", 1);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let out = text(&env.exec(&name, "ps"));
    assert!(out.contains("vserver-init"), "{out}");
    // The guest's uptime counts from its start (time namespace), not from the host's boot.
    let up = |t: String| {
        t.split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(-1.0)
    };
    let guest_up = up(text(&env.exec(&name, "cat /proc/uptime")));
    let host_up = up(std::fs::read_to_string("/proc/uptime").unwrap());
    assert!(
        (0.0..30.0).contains(&guest_up) && host_up - guest_up > 5.0,
        "guest uptime {guest_up}, host {host_up}"
    );
    // And /proc/stat's btime is the guest's boot (ps's START column counts from it): the
    // host's boot moved forward by the host's uptime at the guest's start.
    let btime = |t: &str| {
        t.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(-1.0)
    };
    let guest_bt = btime(&text(&env.exec(&name, "cat /proc/stat")));
    let host_bt = btime(&std::fs::read_to_string("/proc/stat").unwrap());
    assert!(
        (guest_bt - (host_bt + host_up - guest_up)).abs() < 3.0,
        "guest btime {guest_bt}, host btime {host_bt}, uptimes {guest_up} / {host_up}"
    );
    assert_eq!(env.exec(&name, "exit 42").status.code(), Some(42));
    let o = env.vserver(&name, &["exec", "/no/such/program"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("/no/such/program"), "{}", text(&o));
    // suexec runs as the given user.
    let o = env.vserver(&name, &["suexec", "nobody", "id", "-u"]);
    assert_eq!(text(&o).trim(), "65534");
    // Signals to the exec client reach the command.
    // (Sent once the command runs: it says so; a slow machine may take seconds to get there.)
    let mut child = env
        .cmd("vserver")
        .args([&name, "exec", "sh", "-c", "echo started; exec sleep 100"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "started");
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let t = Instant::now();
    let st = child.wait().unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(st.code(), Some(143));
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    assert!(cgroup_left(xid).is_empty());
    assert_eq!(
        env.vserver(&name, &["exec", "true"]).status.code(),
        Some(1),
        "exec in a stopped guest"
    );
    // run: the command's output on the terminal too (issue 17, point 25), its status.
    let o = env.vserver(&name, &["run", "sh", "-c", "echo hello-run; exit 7"]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("hello-run"),
        "{}",
        text(&o)
    );
    let o = env.vserver(&name, &["run", "--quiet", "sh", "-c", "echo hello-quiet"]);
    assert_ok(&o, "run --quiet");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("hello-quiet"));
    assert!(text(&env.vserver(&name, &["logs"])).contains("hello-quiet"));
}

#[test]
fn guest_root_cannot_harm_the_host() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("hostile", 2);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_host(&name, xid, false);
    let marker = env.dir.join("host-secret");
    std::fs::write(&marker, "secret").unwrap();
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let must_fail = [
        ("mount", "mount -t tmpfs none /mnt"),
        ("mknod block device", "mknod /tmp/sda b 8 0"),
        ("loopback down", "ip link set lo down"),
        ("core_pattern", "echo '|/tmp/x' > /proc/sys/kernel/core_pattern"),
        ("sysrq", "echo b > /proc/sysrq-trigger"),
        ("kill host pid", &format!("kill -0 {}", std::process::id())),
        ("module", "python3 -c 'import ctypes,sys; sys.exit(0 if ctypes.CDLL(None).syscall(175,0,0,0)==0 else 1)'"),
        ("host file", &format!("cat {}", marker.display())),
    ];
    for (what, cmd) in must_fail {
        let o = env.exec(&name, cmd);
        assert!(
            !o.status.success(),
            "{what} succeeded inside the guest: {}",
            text(&o)
        );
    }
    // The built-in init is a fork of the host's vserver: it must not show the host's command
    // line or the administrator's environment.
    let leak = text(&env.exec(&name, "cat /proc/1/cmdline /proc/1/environ"));
    assert!(
        !leak.contains("VSERVER_CONFDIR") && !leak.contains("start"),
        "host data leaks via /proc/1: {leak}"
    );
    let ip = text(&env.exec(&name, "ip -o link"));
    assert!(
        !ip.contains("eth") || ip.lines().count() <= 2,
        "host interfaces visible: {ip}"
    );
    // The classic chroot escape (chroot into a subdir, fchdir out, walk up) stays in the root.
    let escape = format!(
        "python3 -c \"import os; os.makedirs('/tmp/j', exist_ok=True); fd=os.open('/', os.O_RDONLY); os.chroot('/tmp/j'); os.fchdir(fd)\n\
         for i in range(64): os.chdir('..')\n\
         os.chroot('.'); print(os.path.exists('{}'))\"",
        marker.display()
    );
    let o = env.exec(&name, &escape);
    assert_eq!(
        text(&o).trim(),
        "False",
        "escape reached the host: {}",
        text(&o)
    );
    // reboot(2) inside ends only the guest.
    let _ = env.exec(
        &name,
        "python3 -c 'import ctypes; ctypes.CDLL(None).reboot(0x4321fedc)'",
    );
    wait_until(10, "guest did not stop after reboot(2) inside", || {
        env.vserver(&name, &["running"]).status.code() != Some(0)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        cgroup_left(xid).is_empty(),
        "monitor did not clean up after the guest ended"
    );
}

#[test]
fn two_guests_do_not_see_each_other() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("pair", 3);
    let (a, b) = (format!("{}a", env.name), format!("{}b", env.name));
    env.build_host(&a, env.xid, false);
    env.build_host(&b, env.xid + 1, false);
    assert_ok(&env.vserver(&a, &["start"]), "start a");
    assert_ok(&env.vserver(&b, &["start"]), "start b");
    assert_ok(
        &env.exec(&a, "(sleep 300 >/dev/null 2>&1 &) ; ipcmk -M 4096"),
        "ipcmk in a",
    );
    assert!(text(&env.exec(&a, "ipcs -m")).contains("4096"));
    assert!(
        !text(&env.exec(&b, "ipcs -m")).contains("4096"),
        "b sees a's shm"
    );
    assert!(
        !text(&env.exec(&b, "ps -e")).contains("sleep"),
        "b sees a's processes"
    );
}

#[test]
fn stop_kills_a_guest_that_ignores_sigterm() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("stubborn", 4);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    env.append_config(&name, "");
    let cfg = std::fs::read_to_string(env.config_path(&name)).unwrap();
    let cfg = cfg
        .replace(
            "\ncommand = []\n",
            "\ncommand = [\"/bin/sh\", \"-c\", \"trap '' TERM; while true; do sleep 1; done\"]\n",
        )
        .replace("kill_timeout = 5", "kill_timeout = 1");
    std::fs::write(env.config_path(&name), cfg).unwrap();
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let t = Instant::now();
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(env.vserver(&name, &["status"]).status.code(), Some(3));
    assert!(cgroup_left(xid).is_empty());
}

#[test]
fn failed_pre_start_leaves_nothing_behind() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("prefail", 5);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_host(&name, xid, true);
    let script = env.dir.join("etc").join(format!("{name}.sh"));
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = pre-start ] && exit 3\nexit 0\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = env.vserver(&name, &["start"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("pre-start"), "{}", text(&o));
    assert!(cgroup_left(xid).is_empty());
    assert!(!link_exists(&format!("vs{xid}-0")));
    assert!(!env.dir.join("run").join(&name).join("state.json").exists());
    assert_eq!(env.vserver(&name, &["status"]).status.code(), Some(3));
}

#[test]
fn config_errors_name_file_line_and_key_and_exit_codes() {
    if !require_root() {
        return;
    }
    let env = Env::new("cfg", 6);
    std::fs::create_dir_all(env.dir.join("etc")).unwrap();
    std::fs::write(
        env.config_path("bad"),
        "context = 42000\n\n[[interface]]\naddress = \"10.0.0.300/24\"\n",
    )
    .unwrap();
    // A usage error's usage line shows what must be given, not the paths the environment
    // gave (issue 17, point 17).
    let o = env.vserver("bad", &["exec"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("Usage: vserver <NAME> exec <CMD>...")
            && !text(&o).contains("--config-dir"),
        "{}",
        text(&o)
    );
    let o = env.vserver("bad", &["start"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("bad.toml:4: key 'interface[0].address'"),
        "{}",
        text(&o)
    );
    std::fs::write(env.config_path("bad"), "context = 42000\ncolour = 1\n").unwrap();
    assert!(text(&env.vserver("bad", &["status"])).contains("bad.toml:2: key 'colour'"));
    assert_eq!(
        env.vserver("nosuchguest", &["status"]).status.code(),
        Some(5)
    );
    assert_eq!(
        env.vserver("nosuchguest", &["frobnicate"]).status.code(),
        Some(2)
    );
}

#[test]
fn enter_gives_a_shell_on_a_fresh_pty() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("enter", 7);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let mut child = env
        .cmd("vserver")
        .args([&name, "enter"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"tty; hostname; exit 7\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(7), "{out}");
    assert!(out.contains("/dev/pts/"), "no pty: {out}");
    assert!(out.contains(&name), "{out}");
}

#[test]
fn plain_and_sysv_init_styles() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("styles", 8);
    let (plain, sysv) = (format!("{}p", env.name), format!("{}s", env.name));
    env.build_busybox(&plain, env.xid);
    let cfg = std::fs::read_to_string(env.config_path(&plain)).unwrap();
    let cfg = cfg
        .replace("style = \"builtin\"", "style = \"plain\"")
        .replace(
            "\ncommand = []\n",
            "\ncommand = [\"/bin/sleep\", \"1000\"]\n",
        )
        .replace(
            "stop_command = []",
            "stop_command = [\"/bin/sleep\", \"1000\"]",
        )
        .replace("kill_timeout = 5", "kill_timeout = 1");
    std::fs::write(env.config_path(&plain), cfg).unwrap();
    assert_ok(&env.vserver(&plain, &["start"]), "start plain");
    assert!(text(&env.exec(&plain, "ps")).contains("sleep 1000"));
    // The stop command hangs and pid 1 ignores SIGTERM: stop is still bounded.
    let t = Instant::now();
    assert_ok(&env.vserver(&plain, &["stop"]), "stop plain");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "stop took {:?}",
        t.elapsed()
    );

    env.build_busybox(&sysv, env.xid + 1);
    let root = env.root(&sysv);
    std::fs::create_dir_all(root.join("etc/rc3.d")).unwrap();
    std::fs::write(
        root.join("etc/rc3.d/S10hello"),
        "#!/bin/sh\necho started-$1 > /tmp/rc.log\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("etc/rc3.d/S10hello"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let cfg = std::fs::read_to_string(env.config_path(&sysv))
        .unwrap()
        .replace("style = \"builtin\"", "style = \"sysv\"");
    std::fs::write(env.config_path(&sysv), cfg).unwrap();
    assert_ok(&env.vserver(&sysv, &["start"]), "start sysv");
    wait_until(5, "rc3.d script did not run", || {
        text(&env.exec(&sysv, "cat /tmp/rc.log")).contains("started-start")
    });
    // The stop runs the stop links of what the runlevel started, once: not those of services
    // it never started (such as a host's services a host build disabled).
    for d in ["etc/init.d", "etc/rc0.d"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for svc in ["hello", "other"] {
        let p = root.join("etc/init.d").join(svc);
        std::fs::write(
            &p,
            "#!/bin/sh\necho \"$(basename $0) $1\" >> /rc-stop.log\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::os::unix::fs::symlink("../init.d/hello", root.join("etc/rc0.d/K10hello")).unwrap();
    std::os::unix::fs::symlink("../init.d/other", root.join("etc/rc0.d/K20other")).unwrap();
    assert_ok(&env.vserver(&sysv, &["stop"]), "stop sysv");
    let log = std::fs::read_to_string(root.join("rc-stop.log")).unwrap_or_default();
    assert_eq!(log, "K10hello stop\n", "stop scripts run: {log:?}");
}

#[test]
fn stop_repairs_after_the_monitor_was_killed() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("crash", 9);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_host(&name, xid, true);
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let state =
        std::fs::read_to_string(env.dir.join("run").join(&name).join("state.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&state).unwrap();
    let monitor = v["monitor_pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let st = text(&env.vserver(&name, &["status"]));
    assert!(st.contains("monitor is gone"), "{st}");
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    assert!(cgroup_left(xid).is_empty(), "cgroup left after repair");
    assert!(
        !link_exists(&format!("vs{xid}-0")),
        "veth left after repair"
    );
    assert_ok(&env.vserver(&name, &["start"]), "start after repair");
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
}

#[test]
fn build_refuses_existing_force_moves_aside_and_failure_removes_only_its_own() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("bld", 10);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    let tree = env.dir.join(format!("bb-{name}"));
    let x = xid.to_string();
    let again = env.build_rootfs(&name, &tree, &["--context", &x]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("--force"), "{}", text(&again));
    let forced = env.build_rootfs(&name, &tree, &["--context", &x, "--force"]);
    assert_ok(&forced, "build --force");
    let aside: Vec<String> = std::fs::read_dir(env.dir.join("root"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{name}.~")))
        .collect();
    assert_eq!(aside.len(), 1, "old root not moved aside: {aside:?}");
    // Another guest may not take the same context id.
    let other = format!("{name}o");
    let dup = env.vserver(&other, &["build", "-m", "skeleton", "--context", &x]);
    assert_eq!(dup.status.code(), Some(1));
    assert!(
        text(&dup).contains(&format!("already used by guest {name}")),
        "{}",
        text(&dup)
    );
    // A failed build removes the root it made and writes no config.
    let failed = env.vserver(
        &other,
        &["build", "-m", "rootfs", "--source", "/nonexistent/tree"],
    );
    assert_eq!(failed.status.code(), Some(1));
    assert!(!env.root(&other).exists());
    assert!(!env.config_path(&other).exists());
    let failed = env.vserver(&other, &["build", "-m", "skeleton", "--", "/bin/false"]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(!env.root(&other).exists());
}

#[test]
fn killing_the_exec_client_kills_the_command() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("kexec", 11);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let mut child = env
        .cmd("vserver")
        .args([&name, "exec", "sleep", "4242"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(text(&env.exec(&name, "ps")).contains("sleep 4242"));
    child.kill().unwrap();
    let _ = child.wait();
    wait_until(5, "command survived its killed client", || {
        !text(&env.exec(&name, "ps")).contains("sleep 4242")
    });
}

#[test]
fn vkill_signals_by_in_guest_pid_and_whole_context() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("vkill", 12);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    assert_ok(&env.vserver(&name, &["start"]), "start");
    assert_ok(
        &env.exec(&name, "(sleep 777 >/dev/null 2>&1 &)"),
        "background sleep",
    );
    let ps = text(&env.exec(&name, "ps"));
    let pid = ps
        .lines()
        .find(|l| l.contains("sleep 777"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no sleep in {ps}"))
        .to_string();
    let x = xid.to_string();
    assert_ok(
        &env.cmd("vkill")
            .args(["--xid", &x, "-s", "KILL", &pid])
            .output()
            .unwrap(),
        "vkill pid",
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(!text(&env.exec(&name, "ps")).contains("sleep 777"));
    let o = env
        .cmd("vkill")
        .args(["--xid", &x, "99999"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // No pid: every process of the context; the init stops on TERM. The guest's name stands
    // for its context id.
    assert_ok(
        &env.cmd("vkill").args(["--xid", &name]).output().unwrap(),
        "vkill context",
    );
    wait_until(5, "guest still running after vkill of its context", || {
        env.vserver(&name, &["running"]).status.code() != Some(0)
    });
}

#[test]
fn a_start_killed_half_way_is_repaired_by_the_next_command() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("killed", 13);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_host(&name, xid, true);
    for delay_ms in [0u64, 2, 5, 10, 20, 40] {
        let mut child = env.cmd("vserver").args([&name, "start"]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // Whatever state that left, stop cleans it and start works again.
        assert_ok(&env.vserver(&name, &["stop"]), "stop after a killed start");
        assert!(
            cgroup_left(xid).is_empty(),
            "cgroup left after delay {delay_ms} ms"
        );
        assert!(
            !link_exists(&format!("vs{xid}-0")),
            "veth left after delay {delay_ms} ms"
        );
        assert_ok(&env.vserver(&name, &["start"]), "start after repair");
        assert_eq!(env.vserver(&name, &["status"]).status.code(), Some(0));
        assert_ok(&env.vserver(&name, &["stop"]), "stop");
    }
}

#[test]
fn a_guest_never_touches_another_guest_with_the_same_context_id() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("samexid", 14);
    let (a, xid) = (env.name.clone(), env.xid);
    env.build_host(&a, xid, true);
    assert_ok(&env.vserver(&a, &["start"]), "start a");
    // Same context id, same config dir: refused by name.
    let b = format!("{a}b");
    std::fs::copy(env.config_path(&a), env.config_path(&b)).unwrap();
    std::fs::create_dir_all(env.root(&b).join("etc")).unwrap();
    let o = env.vserver(&b, &["start"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains(&format!("already used by guest {a}")),
        "{}",
        text(&o)
    );
    assert_ok(&env.vserver(&b, &["stop"]), "stop b");
    std::fs::remove_file(env.config_path(&b)).unwrap();
    // Same context id from another config dir: refused, and a is untouched.
    let other = env.dir.join("etc2");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(env.config_path(&a), other.join(format!("{b}.toml"))).unwrap();
    let run = |args: &[&str]| {
        env.cmd("vserver")
            .env("VSERVER_CONFDIR", &other)
            .arg(&b)
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&["start"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_ok(&run(&["stop"]), "stop b from the other config dir");
    assert_eq!(
        env.vserver(&a, &["status"]).status.code(),
        Some(0),
        "a was killed"
    );
    assert!(link_exists(&format!("vs{xid}-0")), "a's veth was deleted");
    assert_ok(&env.exec(&a, "true"), "exec in a");
}

#[test]
fn init_command_gets_a_clean_signal_state_and_stops_on_term() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("sigs", 15);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    env.set_init_command(&name, "command = [\"/bin/sleep\", \"1000\"]");
    assert_ok(&env.vserver(&name, &["start"]), "start");
    // The init starts its command right after the start returns: wait until pid 2 is it.
    wait_until(10, "the init's command to run as pid 2", || {
        text(&env.exec(&name, "cat /proc/2/comm")).trim() == "sleep"
    });
    let mut st = text(&env.exec(&name, "grep -E 'SigBlk|SigIgn' /proc/2/status"));
    st += &text(&env.vserver(
        &name,
        &["exec", "grep", "-E", "SigBlk|SigIgn", "/proc/self/status"],
    ));
    assert!(
        st.lines().all(|l| l.ends_with("0000000000000000")),
        "signals blocked or ignored: {st}"
    );
    let t = Instant::now();
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "stop needed the kill timeout: {:?}",
        t.elapsed()
    );
}

/// Issue 16: LXCFS is one daemon for every guest and the host, and a plain guest could stall
/// it; `start` stat'ed its files without bound and hung. It now asks a child that is killed
/// after a bounded wait, and starts the guest without LXCFS's views (with a warning) when
/// LXCFS does not answer: here the child is paused at its first step, as a stalled LXCFS
/// would hold it.
#[test]
fn a_stalled_lxcfs_never_blocks_a_start() {
    if !require_root() || !lxcfs_running() {
        return;
    }
    let mut env = Env::new("lxstall", 17);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    let file = env.dir.join("pause-lxcfs-probe");
    let o = env
        .cmd("vserver")
        .args([name.as_str(), "start"])
        .env("VSERVER_PAUSE_AT", "lxcfs-probe")
        .env("VSERVER_PAUSE_FILE", &file)
        .output()
        .unwrap();
    assert_ok(&o, "start with LXCFS not answering");
    assert!(text(&o).contains("did not answer"), "{}", text(&o));
    let paused = std::fs::read_to_string(&file).unwrap_or_default();
    let pid = paused
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("the probe never paused: {paused}"));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the probe was left running"
    );
    // The guest runs, with the host's /proc/meminfo (no LXCFS mount on it).
    let mounts = text(&env.exec(&name, "cat /proc/self/mountinfo"));
    assert!(!mounts.contains("/proc/meminfo"), "{mounts}");
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    // With LXCFS answering, the views are there.
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let mounts = text(&env.exec(&name, "cat /proc/self/mountinfo"));
    assert!(mounts.contains("/proc/meminfo"), "{mounts}");
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
}
