//! The seed article's walk-through, word for word: `vserver NAME build` (from the host's own
//! distribution, and again from a debootstrapped tree), `vserver NAME enter` on a pty to set
//! root's authorized key as an administrator would (the guest is stopped: enter gives a
//! maintenance shell), `vserver NAME start`, `ssh root@GUEST_IP hostname` from the host prints
//! the guest's name, `vserver NAME stop`.
//!
//! Along the way: the guest has its own identity (ssh host keys that are neither the host's
//! nor the source tree's, machine-id, hostname, /etc/hosts with its own address), ssh answers
//! with the guest's own host key, and a host-built guest runs none of the host's services.
//! The debootstrapped walk-through also runs in the cgroup v2 VM lane (scripts/vm-lane.sh).
//!
//! sshd comes from the host for a host-built guest (its /usr is the host's; scripts/deps.sh
//! installs openssh-server without starting it on the host) and from the tree's own package
//! for a debootstrapped one. The tests talk only to the guest's address on their own bridge.

mod common;
use common::*;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// What the test needs on the host; the reason it cannot run otherwise.
fn missing_tools(host_sshd: bool) -> Option<String> {
    for t in ["ssh", "ssh-keygen"] {
        if !have_tool(t) {
            return Some(format!(
                "no {t} on the host (apt-get install openssh-client)"
            ));
        }
    }
    if host_sshd && !Path::new("/usr/sbin/sshd").exists() {
        return Some(
            "no sshd on the host for a host-built guest (apt-get install openssh-server)".into(),
        );
    }
    None
}

/// `vserver NAME enter` with a pty of our own as its terminal: type `script`, return all the
/// terminal showed and the exit status.
fn enter_on_pty(env: &Env, name: &str, script: &str) -> (String, Option<i32>) {
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = std::fs::File::from(pty.slave);
    let mut child = env
        .cmd("vserver")
        .args([name, "enter"])
        .env("TERM", "dumb")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    let mut master = std::fs::File::from(pty.master);
    let mut reader = master.try_clone().unwrap();
    let out = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the last holder of the slave side is gone.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    master.write_all(script.as_bytes()).unwrap();
    let st = wait_child(&mut child, 300, "vserver enter");
    drop(master);
    // Our copies of the slave are gone with the child's: the reader sees EIO.
    (out.join().unwrap(), st.code())
}

/// `ssh root@ip hostname` with the test's key, trusting only `known_hosts`; retried while the
/// guest's sshd is not yet listening (bounded), then the last attempt's output.
fn ssh_hostname(env: &Env, ip: &str, key: &Path, known_hosts: &Path) -> std::process::Output {
    let mut last = None;
    for _ in 0..60 {
        let o = Command::new("ssh")
            .arg("-i")
            .arg(key)
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args([
                "-o",
                "ConnectTimeout=20",
                "-o",
                "LogLevel=ERROR",
                "-F",
                "/dev/null",
            ])
            .arg(format!("root@{ip}"))
            .arg("hostname")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let refused = text(&o).contains("Connection refused");
        last = Some(o);
        if !refused {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let _ = env;
    last.unwrap()
}

/// The walk-through on guest `name` (built, stopped, with `ip` on the test's bridge): enter,
/// start, ssh, stop. `source_keys` are ssh host public keys the guest must not have (the
/// host's, the source tree's).
fn walk(env: &Env, name: &str, ip: &str, source_keys: &[String]) {
    let root = env.root(name);
    // Its own identity.
    let guest_key = std::fs::read_to_string(root.join("etc/ssh/ssh_host_ed25519_key.pub"))
        .expect("the guest has no ed25519 ssh host key of its own");
    for k in source_keys {
        assert_ne!(
            k.split_whitespace().nth(1),
            guest_key.split_whitespace().nth(1),
            "the guest serves a copied ssh host key"
        );
    }
    let mid = std::fs::read_to_string(root.join("etc/machine-id")).unwrap();
    assert_eq!(mid.trim().len(), 32, "machine-id: {mid:?}");
    if let Ok(host_mid) = std::fs::read_to_string("/etc/machine-id") {
        assert_ne!(mid.trim(), host_mid.trim(), "the host's machine-id");
    }
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname"))
            .unwrap()
            .trim(),
        name
    );
    let hosts = std::fs::read_to_string(root.join("etc/hosts")).unwrap();
    assert!(
        hosts
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == [ip, name]),
        "no '{ip} {name}' in /etc/hosts:\n{hosts}"
    );

    // The administrator's key, set from a shell inside as a user would.
    let key = env.dir.join(format!("{name}-key"));
    let o = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "walkthrough", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert_ok(&o, "ssh-keygen");
    let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let (shown, code) = enter_on_pty(
        env,
        name,
        &format!(
            "mkdir -p -m 700 /root/.ssh && echo '{}' > /root/.ssh/authorized_keys && \
             chmod 600 /root/.ssh/authorized_keys && echo key-set-$((6*7)); exit\n",
            pubkey.trim()
        ),
    );
    assert_eq!(code, Some(0), "enter:\n{shown}");
    assert!(shown.contains("key-set-42"), "enter:\n{shown}");
    assert!(
        shown.contains("maintenance shell"),
        "enter of a stopped guest said:\n{shown}"
    );
    assert!(
        root.join("root/.ssh/authorized_keys").is_file(),
        "the key did not land in the guest"
    );
    let st = env.vserver(name, &["status"]);
    assert_eq!(
        st.status.code(),
        Some(3),
        "the maintenance run was not stopped: {}",
        text(&st)
    );

    assert_ok(&env.vserver(name, &["start"]), "start");
    let status = text(&env.vserver(name, &["status"]));
    assert!(
        status.contains("running, 0 failed units"),
        "the guest's systemd is not running cleanly:\n{status}"
    );

    // ssh from the host reaches the guest and it answers with its own host key.
    let known = env.dir.join(format!("{name}-known_hosts"));
    std::fs::write(&known, format!("{ip} {}", guest_key.trim())).unwrap();
    let o = ssh_hostname(env, ip, &key, &known);
    assert_ok(&o, "ssh root@GUEST hostname");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), name);

    // A restart: the host reaches it again at once (its MAC is the same, no neighbour entry
    // of the host's goes stale).
    let mac = |env: &Env| text(&env.exec(name, "cat /sys/class/net/eth0/address"));
    let before = mac(env);
    assert_ok(&env.vserver(name, &["restart"]), "restart");
    assert_eq!(mac(env), before, "the guest's MAC changed across a restart");
    let o = ssh_hostname(env, ip, &key, &known);
    assert_ok(&o, "ssh root@GUEST hostname after a restart");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), name);

    assert_ok(&env.vserver(name, &["stop"]), "stop");
    assert_eq!(env.vserver(name, &["status"]).status.code(), Some(3));
}

/// The unit names running in the guest (`systemctl list-units --state=running`).
fn running_services(env: &Env, name: &str) -> Vec<String> {
    let o = env.exec(
        name,
        "systemctl list-units --type=service,socket --state=running,listening --no-legend --plain",
    );
    assert_ok(&o, "systemctl list-units");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

/// What a fresh server runs: systemd's own units, D-Bus, consoles, ssh, cron, syslog.
fn fresh_server_unit(u: &str) -> bool {
    let base = u.split(['@', '.']).next().unwrap_or(u);
    base.starts_with("systemd-")
        || base.starts_with("dbus")
        || [
            "console-getty",
            "getty",
            "ssh",
            "sshd",
            "cron",
            "rsyslog",
            "syslog",
            "user",
            "user-runtime-dir",
        ]
        .contains(&base)
}

#[test]
fn host_built_guest_walkthrough() {
    if !require_root() {
        return;
    }
    if let Some(why) = missing_tools(true) {
        eprintln!("skipped: {why}");
        return;
    }
    let host_init = std::fs::canonicalize("/sbin/init").unwrap_or_default();
    if !host_init.ends_with("systemd/systemd") {
        eprintln!("skipped: the host's /sbin/init is not systemd ({host_init:?})");
        return;
    }
    let mut env = Env::new("walkh", 31);
    let (name, xid) = (env.name.clone(), env.xid);
    let ip = env.ip(2);
    let x = xid.to_string();
    let ifc = format!("{}:{ip}/24", env.bridge);
    env.guests.push(name.clone());
    // `vserver NAME build`, nothing else: the host method is the default.
    let o = env.vserver(&name, &["build", "--context", &x, "--interface", &ifc]);
    assert_ok(&o, "build");
    let built = text(&o);
    assert!(
        built.contains("init style systemd"),
        "the guest does not boot the host's init style:\n{built}"
    );
    set_ready_timeout(&env, &name);
    let host_keys: Vec<String> = ["ed25519", "ecdsa", "rsa"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("/etc/ssh/ssh_host_{t}_key.pub")).ok())
        .collect();

    // None of the host's own services run in it: a maintenance shell first, then the boot.
    walk(&env, &name, &ip, &host_keys);
    assert_ok(&env.vserver(&name, &["start"]), "start again");
    let running = running_services(&env, &name);
    let foreign: Vec<&String> = running.iter().filter(|u| !fresh_server_unit(u)).collect();
    assert!(
        foreign.is_empty(),
        "the guest runs services a fresh server does not: {foreign:?} (all: {running:?})"
    );
    assert!(
        running.iter().any(|u| u == "ssh.service"),
        "no ssh: {running:?}"
    );
    // Enabling a service works with the distribution's own tool, and survives a restart.
    let o = env.exec(
        &name,
        "systemctl disable --now ssh.service 2>&1; systemctl is-enabled ssh.service",
    );
    assert!(text(&o).contains("disabled"), "{}", text(&o));
    assert_ok(&env.vserver(&name, &["restart"]), "restart");
    assert!(!running_services(&env, &name)
        .iter()
        .any(|u| u == "ssh.service"));
    let o = env.exec(
        &name,
        "systemctl enable --now ssh.service 2>&1 && systemctl is-active ssh.service",
    );
    assert_ok(&o, "systemctl enable --now ssh");
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
}

#[test]
fn debootstrapped_guest_walkthrough() {
    if !require_root() {
        return;
    }
    if let Some(why) = missing_tools(false) {
        eprintln!("skipped: {why}");
        return;
    }
    // The Debian 12 server tree the systemd tests use (openssh-server included), made once per
    // run by `build -m debootstrap`; the guest is a copy of it, as `-m rootfs` makes one.
    let Some(seed) = debootstrap_seed("bookworm", "bookworm", SERVER_PACKAGES) else {
        return;
    };
    let mut env = Env::new("walkd", 32);
    let (name, xid) = (env.name.clone(), env.xid);
    let ip = env.ip(2);
    let x = xid.to_string();
    let ifc = format!("{}:{ip}/24", env.bridge);
    env.guests.push(name.clone());
    let o = env.build_rootfs(&name, &seed, &["--context", &x, "--interface", &ifc]);
    assert_ok(&o, "build");
    set_ready_timeout(&env, &name);
    let seed_keys: Vec<String> = ["ed25519", "ecdsa", "rsa"]
        .iter()
        .filter_map(|t| {
            std::fs::read_to_string(seed.join(format!("etc/ssh/ssh_host_{t}_key.pub"))).ok()
        })
        .collect();
    assert!(
        !seed_keys.is_empty(),
        "the debootstrapped tree has no ssh host keys"
    );
    walk(&env, &name, &ip, &seed_keys);
}

/// Boots under emulation (VM lane) may be slow: `init.ready_timeout` raised.
fn set_ready_timeout(env: &Env, name: &str) {
    let p = env.config_path(name);
    let s = std::fs::read_to_string(&p).unwrap();
    assert!(s.contains("[init]\n"), "no [init] table:\n{s}");
    std::fs::write(
        &p,
        s.replacen("[init]\n", "[init]\nready_timeout = 600\n", 1),
    )
    .unwrap();
}

/// The maintenance shell of a stopped guest shows as such, refuses a `start` meanwhile, and
/// ends (the guest stopped again) when its terminal goes away, as a dropped ssh session to the
/// host would leave it.
#[test]
fn a_maintenance_shell_is_marked_and_ends_with_its_terminal() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("walkm", 33);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    let pty = nix::pty::openpty(None, None).unwrap();
    // Only this test holds the master: its close is the hang-up.
    nix::fcntl::fcntl(
        &pty.master,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .unwrap();
    let slave = std::fs::File::from(pty.slave);
    let mut cmd = env.cmd("vserver");
    cmd.args([name.as_str(), "enter"])
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    // The pty is its controlling terminal, as a login session's is: its hang-up reaches it.
    // SAFETY: setsid and ioctl are async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let master = std::fs::File::from(pty.master);
    wait_until(60, "the maintenance run to start", || {
        text(&env.vserver(&name, &["status"])).contains("maintenance shell")
    });
    let o = env.vserver(&name, &["start"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("maintenance shell"), "{}", text(&o));
    // The terminal goes away: the shell is hung up, the guest stopped.
    drop(master);
    let st = wait_child(&mut child, 60, "enter did not end with its terminal");
    assert!(!st.success() || st.code() == Some(0), "{st:?}");
    wait_until(30, "the maintenance run to stop", || {
        env.vserver(&name, &["status"]).status.code() == Some(3)
    });
    assert!(
        cgroup_left(xid).is_empty(),
        "cgroups left: {:?}",
        cgroup_left(xid)
    );
}
