//! Regressions for attacks a hostile guest root or guest tree tried against vserver.

mod common;
use common::*;
use std::time::{Duration, Instant};

#[test]
fn exec_never_shows_an_unconfined_process_inside_the_guest() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("hexec", 20);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_host(&name, xid, false);
    assert_ok(&env.vserver(&name, &["start"]), "start");
    // A guest process that watches every new process for a host capability, a missing seccomp
    // filter or a host fd (cgroup directories, vserver's run files, pidfds).
    let scan = r#"
import os, time
end = time.time() + 4
bad = []
while time.time() < end:
    for p in os.listdir('/proc'):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            st = open(f'/proc/{p}/status').read()
        except OSError:
            continue
        eff = int([l for l in st.splitlines() if l.startswith('CapEff:')][0].split()[1], 16)
        sec = [l for l in st.splitlines() if l.startswith('Seccomp:')][0].split()[1]
        if eff & (1 << 21) or sec == '0':
            bad.append(f'{p} eff={eff:x} seccomp={sec}')
        try:
            if b'target/' in open(f'/proc/{p}/cmdline', 'rb').read():
                bad.append(f'{p} shows the host command line')
        except OSError:
            pass
        try:
            for fd in os.listdir(f'/proc/{p}/fd'):
                t = os.readlink(f'/proc/{p}/fd/{fd}')
                if any(x in t for x in ('cgroup', 'vservers', 'vst-', '/run/', 'anon_inode:[pidfd]')):
                    bad.append(f'{p} fd {fd} -> {t}')
        except OSError:
            pass
open('/tmp/scan.out', 'w').write('\n'.join(bad) + '\nDONE\n')
"#;
    std::fs::write(env.root(&name).join("tmp/scan.py"), scan).unwrap();
    assert_ok(
        &env.exec(&name, "(python3 /tmp/scan.py >/dev/null 2>&1 &)"),
        "scanner",
    );
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..25 {
        assert_ok(&env.exec(&name, "true"), "exec");
    }
    let out = env.vserver(&name, &["suexec", "nobody", "true"]);
    assert_ok(&out, "suexec");
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        let r = text(&env.exec(&name, "cat /tmp/scan.out 2>/dev/null"));
        if r.contains("DONE") {
            break r;
        }
        assert!(Instant::now() < deadline, "scanner did not finish");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        report.trim(),
        "DONE",
        "unconfined processes seen inside the guest:\n{report}"
    );
    // The command's stdio are pipes, never the caller's files or terminal.
    let fds = text(&env.exec(
        &name,
        "readlink /proc/self/fd/0 /proc/self/fd/1 /proc/self/fd/2",
    ));
    assert!(fds.lines().all(|l| l.starts_with("pipe:")), "{fds}");
    // No SYS_PTRACE by default: pid 1 cannot be traced or read.
    let o = env.exec(&name, "python3 -c \"import ctypes,sys; sys.exit(0 if ctypes.CDLL(None).ptrace(16,1,0,0)==0 else 1)\"");
    assert!(!o.status.success(), "guest root could ptrace its init");
    assert!(
        !env.exec(&name, "head -c1 /proc/1/mem").status.success(),
        "guest root read /proc/1/mem"
    );
}

#[test]
fn hostile_trees_do_not_reach_the_host() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("htree", 21);
    let name = env.name.clone();
    env.guests.push(name.clone());
    let outside = env.dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    // A source tree whose var points out of the guest.
    let src = env.dir.join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::os::unix::fs::symlink(&outside, src.join("var")).unwrap();
    let o = env.build_rootfs(&name, &src, &["--context", &env.xid.to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("symlink"), "{}", text(&o));
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "the build wrote through the symlink"
    );
    assert!(!env.root(&name).exists());
    // A tarball with device nodes: they are not kept; the root base is closed to other users.
    let tree = env.dir.join("devtree");
    busybox_tree(&tree);
    nix::sys::stat::mknod(
        &tree.join("tmp/disk"),
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(7, 200),
    )
    .unwrap();
    let tar = env.dir.join("dev.tar");
    assert!(std::process::Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&tree)
        .arg(".")
        .status()
        .unwrap()
        .success());
    let o = env.build_rootfs(&name, &tar, &["--context", &env.xid.to_string()]);
    assert_ok(&o, "build from tarball");
    assert!(
        !env.root(&name).join("tmp/disk").exists(),
        "device node kept"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env.dir.join("root"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "root base is {mode:o}");
    // suexec: a FIFO as /etc/passwd does not hang the host side; numbers are uids.
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let passwd = env.root(&name).join("etc/passwd");
    std::fs::write(
        &passwd,
        "1000:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/:/bin/sh\n",
    )
    .unwrap();
    assert_eq!(
        text(&env.vserver(&name, &["suexec", "1000", "id", "-u"])).trim(),
        "1000"
    );
    std::fs::remove_file(&passwd).unwrap();
    nix::unistd::mkfifo(&passwd, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let mut child = env
        .cmd("vserver")
        .args([&name, "suexec", "nobody", "true"])
        .spawn()
        .unwrap();
    let st = wait_child(&mut child, 10, "suexec hung on a FIFO /etc/passwd");
    assert!(!st.success());
}

#[test]
fn exec_relay_neither_deadlocks_nor_spins_and_a_stopped_command_times_out() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("hrelay", 22);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_host(&name, xid, false);
    assert_ok(&env.vserver(&name, &["start"]), "start");
    // Much input the command reads only after writing much output: no deadlock.
    let input = env.dir.join("zeros");
    std::fs::write(&input, vec![0u8; 4 << 20]).unwrap();
    let t = Instant::now();
    let o = env
        .cmd("vserver")
        .args([
            &name,
            "exec",
            "sh",
            "-c",
            "sleep 0.5; head -c 1000000 /dev/zero; cat >/dev/null",
        ])
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert_ok(&o, "relay");
    assert_eq!(o.stdout.len(), 1_000_000);
    assert!(t.elapsed() < Duration::from_secs(15));
    // Nobody reads our stdout any more: the command gets SIGPIPE and the client ends.
    let mut child = env
        .cmd("vserver")
        .args([&name, "exec", "yes"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut b = vec![0u8; 65536];
    std::io::Read::read_exact(&mut out, &mut b).unwrap();
    drop(out);
    let st = wait_child(
        &mut child,
        10,
        "exec client kept running after its reader went away",
    );
    assert_eq!(st.code(), Some(141));
    // A guest that stops every new exec before it runs cannot hang the client forever.
    let watcher = "(while :; do for p in /proc/[0-9]*; do grep -q 'vserver-e[x]ec' $p/cmdline 2>/dev/null && kill -STOP ${p#/proc/}; done; done >/dev/null 2>&1 &)";
    assert_ok(&env.exec(&name, watcher), "watcher");
    let t = Instant::now();
    let o = env.exec(&name, "true");
    assert!(t.elapsed() < Duration::from_secs(20), "exec hung");
    if !o.status.success() {
        assert!(text(&o).contains("did not start"), "{}", text(&o));
    }
}
