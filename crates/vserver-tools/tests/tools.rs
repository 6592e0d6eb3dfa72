//! chcontext and reducecap as the seed's walk-through uses them.

mod common;
use common::*;
use std::process::Command;

#[test]
fn chcontext_shell_sees_only_its_context() {
    if !require_root() {
        return;
    }
    let me = std::process::id();
    let o = Command::new(bin("chcontext"))
        .args([
            "--hostname",
            "ctxtest",
            "/bin/sh",
            "-c",
            &format!(
                "ps -e --no-headers | wc -l; hostname; kill -0 {me} && echo KILLED-HOST; true"
            ),
        ])
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("New security context is 49"), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let n: usize = lines
        .iter()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or(99);
    assert!(n <= 4, "context sees {n} processes: {out}");
    assert!(out.contains("ctxtest"));
    assert!(!out.contains("KILLED-HOST"), "{out}");
    let o = Command::new(bin("chcontext"))
        .args([
            "--xid",
            "47123",
            "--secure",
            "/bin/sh",
            "-c",
            "grep CapBnd /proc/self/status",
        ])
        .output()
        .unwrap();
    let out = text(&o);
    assert!(out.contains("New security context is 47123"), "{out}");
    assert!(
        !out.contains("000001ffffffffff") && !out.contains("000003ffffffffff"),
        "{out}"
    );
    assert!(cgroup_left(47123).is_empty());
}

#[test]
fn reducecap_secure_cannot_be_undone_by_su() {
    if !require_root() {
        return;
    }
    let full = text(
        &Command::new(bin("reducecap"))
            .arg("--show")
            .output()
            .unwrap(),
    );
    assert!(full.contains("net_admin"), "{full}");
    // In a throwaway network namespace, so the interface test can never touch the host's.
    let o = Command::new("unshare")
        .args(["-n", bin("reducecap").to_str().unwrap(), "--secure", "/bin/sh", "-c"])
        .arg("grep CapBnd /proc/self/status; su root -c 'grep CapEff /proc/self/status'; ls /var/log >/dev/null && echo LOG-OK; ip link set lo down && echo DOWN-OK; reducecap --show || true")
        .output()
        .unwrap();
    let out = text(&o);
    let bnd = out
        .lines()
        .find(|l| l.starts_with("CapBnd:"))
        .unwrap_or("")
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    let eff = out
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .unwrap_or("")
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    let mask = u64::from_str_radix(&bnd, 16).unwrap_or(u64::MAX);
    assert_eq!(mask & (1 << 12), 0, "CAP_NET_ADMIN still in CapBnd: {out}");
    assert_eq!(mask & (1 << 21), 0, "CAP_SYS_ADMIN still in CapBnd: {out}");
    assert_eq!(
        u64::from_str_radix(&eff, 16).unwrap_or(u64::MAX) & !mask,
        0,
        "su regained capabilities: {out}"
    );
    assert!(out.contains("LOG-OK"), "{out}");
    assert!(!out.contains("DOWN-OK"), "{out}");
}

#[test]
fn chcontext_xid_of_a_running_guest_joins_it() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("chjoin", 30);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let o = env
        .cmd("chcontext")
        .args(["--xid", &xid.to_string(), "hostname"])
        .output()
        .unwrap();
    assert_ok(&o, "chcontext --xid");
    assert_eq!(text(&o).trim(), name);
    let o = env
        .cmd("chcontext")
        .args(["--xid", "0", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(255));
    assert!(text(&o).contains("out of range"), "{}", text(&o));
}
