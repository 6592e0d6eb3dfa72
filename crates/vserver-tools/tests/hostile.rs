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
    // A process stopped just as it became the command is let go again (once it is stopped
    // its cmdline no longer changes): the guest stopping its own commands mid-run is not what
    // this checks.
    let watcher = "(while :; do for p in /proc/[0-9]*; do grep -q 'vserver-e[x]ec' $p/cmdline 2>/dev/null || continue; kill -STOP ${p#/proc/}; while [ -e $p/status ] && ! grep -q '^State:.*T' $p/status; do :; done; grep -q 'vserver-e[x]ec' $p/cmdline 2>/dev/null || kill -CONT ${p#/proc/}; done; done >/dev/null 2>&1 &)";
    assert_ok(&env.exec(&name, watcher), "watcher");
    let t = Instant::now();
    let o = env.exec(&name, "true");
    assert!(t.elapsed() < Duration::from_secs(20), "exec hung");
    if !o.status.success() {
        assert!(text(&o).contains("did not start"), "{}", text(&o));
    }
}

// ---------------------------------------------------------------------------------------------
// escapes.md sections 1-3 (file system setup, fd leaks, exec/enter). The pause points of
// libvserver::testhook stop the runtime at a named step so a test can swap a path under it.

/// Run `vserver NAME ARGS` paused at `step`: (the command, the pause file, the pid the pause
/// reported: the host's until the guest's /proc is mounted, the guest's after).
fn spawn_paused(
    env: &Env,
    name: &str,
    args: &[&str],
    step: &str,
) -> (std::process::Child, std::path::PathBuf, u32) {
    let file = env.dir.join(format!("pause-{step}"));
    let _ = std::fs::remove_file(&file);
    let child = env
        .cmd("vserver")
        .arg(name)
        .args(args)
        .env("VSERVER_PAUSE_AT", step)
        .env("VSERVER_PAUSE_FILE", &file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut pid = 0;
    let want = format!("paused {step} ");
    wait_until(30, &format!("the pause at {step}"), || {
        let t = std::fs::read_to_string(&file).unwrap_or_default();
        match t.lines().find(|l| l.starts_with(&want)) {
            Some(l) => {
                pid = l.rsplit(' ').next().unwrap().parse().unwrap();
                true
            }
            None => false,
        }
    });
    (child, file, pid)
}

fn resume(file: &std::path::Path, step: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(file).unwrap();
    writeln!(f, "resume {step}").unwrap();
}

/// Host mountinfo lines that mention `path`.
fn host_mounts_of(path: &std::path::Path) -> Vec<String> {
    let p = path.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&p))
        .map(String::from)
        .collect()
}

/// FS-01, FS-06: a bind target whose parent is swapped for a symlink to a host directory
/// between the check of the tree and the mount never mounts or creates anything on the host.
#[test]
fn bind_targets_swapped_for_host_symlinks_stay_inside_the_guest() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("hbind", 23);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    let src = env.dir.join("volsrc");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("marker"), "vol").unwrap();
    let host = env.dir.join("hosttarget");
    std::fs::create_dir_all(&host).unwrap();
    let root = env.root(&name);
    std::fs::create_dir_all(root.join("vol/a")).unwrap();
    let cfg = std::fs::read_to_string(env.config_path(&name)).unwrap();
    std::fs::write(env.config_path(&name), cfg.replace("\nmount = []\n", "\n")).unwrap();
    env.append_config(
        &name,
        &format!(
            "\n[[mount]]\nsource = \"{}\"\ntarget = \"/vol/a/b\"\nreadonly = false\n",
            src.display()
        ),
    );
    // Without the swap the volume is there.
    assert_ok(&env.vserver(&name, &["start"]), "start");
    assert_eq!(text(&env.exec(&name, "cat /vol/a/b/marker")).trim(), "vol");
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    let (child, file, _) = spawn_paused(&env, &name, &["start"], "child-pre-pivot");
    std::fs::rename(root.join("vol/a"), root.join("vol/a.real")).unwrap();
    std::os::unix::fs::symlink(&host, root.join("vol/a")).unwrap();
    resume(&file, "child-pre-pivot");
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        // Then the mount went inside the guest, never onto the host directory.
        let _ = env.vserver(&name, &["stop"]);
    }
    assert_eq!(
        std::fs::read_dir(&host).unwrap().count(),
        0,
        "something was created in the host directory: {}",
        text(&out)
    );
    assert!(
        host_mounts_of(&host).is_empty(),
        "{:?}",
        host_mounts_of(&host)
    );
    assert!(
        cgroup_left(xid).is_empty(),
        "cgroup left after a failed start"
    );
}

/// FS-02 (a), FS-07, PS (`/sys -> /`): /proc, /sys or /dev planted as symlinks refuse the start;
/// a decoy in the directory /dev points at stays as it was. FS-02 (c): inside, /proc is a
/// procfs and /proc/sys is read-only.
#[test]
fn proc_sys_and_dev_planted_as_symlinks_refuse_the_start() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("hlinks", 24);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    let root = env.root(&name);
    let decoy_dir = env.dir.join("decoy");
    std::fs::create_dir_all(&decoy_dir).unwrap();
    std::fs::write(decoy_dir.join("ptmx"), "decoy").unwrap();
    let decoy = decoy_dir.to_string_lossy().to_string();
    for (dir, target) in [("proc", "/bad-proc"), ("sys", "/"), ("dev", decoy.as_str())] {
        std::fs::rename(root.join(dir), root.join(format!("{dir}.saved"))).unwrap();
        std::os::unix::fs::symlink(target, root.join(dir)).unwrap();
        let out = env.vserver(&name, &["start"]);
        std::fs::remove_file(root.join(dir)).unwrap();
        std::fs::rename(root.join(format!("{dir}.saved")), root.join(dir)).unwrap();
        assert!(!out.status.success(), "/{dir} -> {target} started");
        assert!(text(&out).contains(&format!("/{dir}")), "{}", text(&out));
        assert!(cgroup_left(xid).is_empty(), "cgroup left after /{dir}");
    }
    let names: Vec<_> = std::fs::read_dir(&decoy_dir).unwrap().flatten().collect();
    assert_eq!(names.len(), 1);
    assert_eq!(
        std::fs::read_to_string(decoy_dir.join("ptmx")).unwrap(),
        "decoy"
    );
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let m = text(&env.exec(&name, "grep -E ' /proc(/sys)? ' /proc/self/mounts"));
    assert!(m.lines().any(|l| l.contains(" /proc proc ")), "{m}");
    assert!(
        m.lines()
            .any(|l| l.contains(" /proc/sys proc ro,") || l.contains(" /proc/sys proc ro ")),
        "{m}"
    );
    assert!(!env
        .exec(&name, "echo 1 > /proc/sys/kernel/ns_last_pid")
        .status
        .success());
    // FS-04: the console is a pty the runtime allocated, not a file the tree chose.
    let con = text(&env.exec(&name, "ls -l /dev/console"));
    assert!(con.starts_with('c') && con.contains(" 136,"), "{con}");
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    // FS-05 (a): there is no way to ask for a host-global sysctl: the key is refused.
    let cfg = std::fs::read_to_string(env.config_path(&name)).unwrap();
    env.append_config(&name, "\n[sysctl]\n\"kernel.core_pattern\" = \"|/tmp/x\"\n");
    let out = env.vserver(&name, &["start"]);
    assert!(
        !out.status.success() && text(&out).contains("sysctl"),
        "{}",
        text(&out)
    );
    std::fs::write(env.config_path(&name), cfg).unwrap();
}

/// FS-08: build writes /etc/hostname, /etc/hosts and /etc/machine-id inside the new root only,
/// whatever symlinks or FIFOs the source tree planted there.
#[test]
fn build_writes_identity_files_inside_the_guest_only() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("hident", 25);
    let name = env.name.clone();
    let tree = env.dir.join("src");
    busybox_tree(&tree);
    let sentinel = env.dir.join("sentinel");
    std::fs::write(&sentinel, "keep").unwrap();
    let up = format!("../../../../../../../../../..{}", sentinel.display());
    std::os::unix::fs::symlink(&up, tree.join("etc/hosts")).unwrap();
    std::os::unix::fs::symlink(&sentinel, tree.join("etc/hostname")).unwrap();
    nix::unistd::mkfifo(
        &tree.join("etc/machine-id"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    env.guests.push(name.clone());
    let x = env.xid.to_string();
    assert_ok(&env.build_rootfs(&name, &tree, &["--context", &x]), "build");
    assert_eq!(std::fs::read_to_string(&sentinel).unwrap(), "keep");
    let etc = env.root(&name).join("etc");
    for f in ["hosts", "hostname", "machine-id"] {
        let md = std::fs::symlink_metadata(etc.join(f)).unwrap();
        assert!(md.is_file(), "etc/{f} is not a regular file");
    }
    assert!(std::fs::read_to_string(etc.join("hostname"))
        .unwrap()
        .starts_with(&name));
}

/// FS-09 (b): the host side of exec/suexec never loads the guest's NSS modules; users come
/// from parsing the guest's passwd and group files.
#[test]
fn suexec_never_loads_the_guests_nss_modules() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("hnss", 26);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    let root = env.root(&name);
    let marker = env.dir.join("nss-marker");
    let csrc = env.dir.join("evil.c");
    std::fs::write(
        &csrc,
        format!(
            "#include <fcntl.h>\n#include <unistd.h>\n__attribute__((constructor)) static void \
             f(void) {{ int fd = open(\"{}\", O_CREAT | O_WRONLY, 0644); if (fd >= 0) close(fd); }}\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("lib/x86_64-linux-gnu")).unwrap();
    let so = root.join("lib/x86_64-linux-gnu/libnss_evil.so.2");
    let cc = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&csrc)
        .output()
        .expect("a C compiler (cc) for the NSS module");
    assert_ok(&cc, "compile the NSS module");
    std::fs::copy(&so, root.join("lib/libnss_evil.so.2")).unwrap();
    std::fs::write(
        root.join("etc/nsswitch.conf"),
        "passwd: files evil\ngroup: files evil\n",
    )
    .unwrap();
    let mut pw = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    pw.push_str("alice:x:1234:1234::/:/bin/sh\n");
    std::fs::write(root.join("etc/passwd"), pw).unwrap();
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let out = env.vserver(&name, &["suexec", "alice", "id", "-u"]);
    assert_ok(&out, "suexec alice");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1234");
    assert!(!marker.exists(), "the guest's NSS module ran on the host");
    let inside = root.join(marker.strip_prefix("/").unwrap());
    assert!(!inside.exists(), "the guest's NSS module ran in the client");
}

/// FS-10: guest root with CAP_SYS_CHROOT cannot climb out of its root with the classic
/// chroot-and-chdir("..") trick: the top is the guest root (pivot_root, old root detached).
#[test]
fn chroot_in_the_guest_cannot_climb_out() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("hchroot", 27);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_host(&name, xid, false);
    let sentinel = env.dir.join("sentinel-chroot");
    std::fs::write(&sentinel, "host").unwrap();
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let script = format!(
        "import os\nst = os.stat('/')\nos.makedirs('/t', exist_ok=True)\nos.chroot('/t')\n\
         for _ in range(64):\n    os.chdir('..')\nos.chroot('.')\ns2 = os.stat('/')\n\
         same = (s2.st_dev, s2.st_ino) == (st.st_dev, st.st_ino)\n\
         print('SAME' if same else 'ESCAPED', os.path.exists('{}'))\n",
        sentinel.display()
    );
    std::fs::write(env.root(&name).join("tmp/climb.py"), script).unwrap();
    let out = env.exec(&name, "python3 /tmp/climb.py");
    assert_ok(&out, "climb");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "SAME False");
}

/// FD-01: the init and every exec'd process hold only their stdio; a hostile home directory
/// (/proc/self/fd/N) never gives a cwd outside the guest.
#[test]
fn guest_processes_hold_no_host_fd_or_cwd() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("hfd", 28);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    let root = env.root(&name);
    let pw = std::fs::read_to_string(root.join("etc/passwd"))
        .unwrap()
        .replace("root:/root:", "root:/proc/self/fd/3:");
    std::fs::write(root.join("etc/passwd"), pw).unwrap();
    assert_ok(&env.vserver(&name, &["start"]), "start");
    // The built-in init holds its console and the signalfd it reads signals from.
    let init = text(&env.exec(&name, "for f in /proc/1/fd/*; do readlink $f; done"));
    assert!(
        init.lines()
            .all(|l| l == "/dev/console" || l == "anon_inode:[signalfd]"),
        "{init}"
    );
    let me = text(&env.exec(&name, "sleep 2 & ls /proc/$!/fd"));
    assert_eq!(
        me.split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2"],
        "{me}"
    );
    let cwd = env.vserver(
        &name,
        &[
            "suexec",
            "root",
            "/bin/sh",
            "-c",
            "pwd; sleep 2 & ls /proc/$!/fd",
        ],
    );
    assert_ok(&cwd, "suexec root");
    let t = String::from_utf8_lossy(&cwd.stdout).to_string();
    let mut l = t.lines();
    assert_eq!(l.next(), Some("/"), "{t}");
    assert_eq!(l.collect::<Vec<_>>(), ["0", "1", "2"], "{t}");
}

/// FD-02, EX-01, EX-02: an exec'd command stopped just before its execve (in the guest's pid
/// namespace, not yet the guest's program) cannot be traced, read or robbed of fds by guest
/// root; no host command line shows; the runtime binary every process of ours runs from is on
/// a read-only mount (a write through /proc/PID/exe fails whatever the process does later).
#[test]
fn a_command_paused_before_exec_is_out_of_the_guests_reach() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("hpause", 29);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_host(&name, xid, false);
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let (child, file, pid) = spawn_paused(&env, &name, &["exec", "/bin/true"], "exec-pre-exec");
    let probe = format!(
        r#"
import ctypes, os
pid = {pid}
bad = []
for f in ('environ', 'mem', 'auxv', 'stack', 'syscall'):
    try:
        open(f'/proc/{{pid}}/{{f}}', 'rb').read(1)
        bad.append('read ' + f)
    except OSError:
        pass
for l in ('exe', 'root', 'cwd', 'fd/0', 'fd/3'):
    try:
        os.readlink(f'/proc/{{pid}}/{{l}}')
        bad.append('readlink ' + l)
    except OSError:
        pass
libc = ctypes.CDLL(None, use_errno=True)
if libc.ptrace(16, pid, 0, 0) == 0:
    bad.append('ptrace attach')
if libc.ptrace(0x4206, pid, 0, 0) == 0:
    bad.append('ptrace seize')
pidfd = libc.syscall(434, pid, 0)
if pidfd >= 0 and libc.syscall(438, pidfd, 0, 0) >= 0:
    bad.append('pidfd_getfd')
for p in os.listdir('/proc'):
    if p.isdigit():
        try:
            c = open(f'/proc/{{p}}/cmdline', 'rb').read()
        except OSError:
            continue
        if b'target/' in c or b'VSERVER' in c:
            bad.append(f'host command line in {{p}}')
print('BAD', bad) if bad else print('OK')
"#
    );
    std::fs::write(env.root(&name).join("tmp/probe.py"), probe).unwrap();
    let out = env.exec(&name, "python3 /tmp/probe.py");
    resume(&file, "exec-pre-exec");
    let res = child.wait_with_output().unwrap();
    assert_ok(&res, "paused exec");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "OK",
        "{}",
        text(&out)
    );
    // The monitor (a fork of the start command) runs from the read-only copy of the binary.
    let st: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(env.dir.join("run").join(&name).join("state.json")).unwrap(),
    )
    .unwrap();
    let mon = st["monitor_pid"].as_i64().unwrap();
    let vfs = nix::sys::statvfs::statvfs(format!("/proc/{mon}/exe").as_str()).unwrap();
    assert!(
        vfs.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY),
        "the monitor's binary is on a writable mount"
    );
    // A guest program that is a script for /proc/self/exe never gets our binary writable.
    std::fs::write(env.root(&name).join("tmp/evil"), "#!/proc/self/exe\n").unwrap();
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        &env.root(&name).join("tmp/evil"),
        nix::sys::stat::Mode::from_bits_truncate(0o755),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .unwrap();
    let bin = common::bin("vserver");
    let before = std::fs::read(&bin).unwrap();
    let _ = env.vserver(&name, &["exec", "/tmp/evil"]);
    let probe2 = "import os\nfor p in os.listdir('/proc'):\n    if p.isdigit():\n        try:\n            os.open(f'/proc/{p}/exe', os.O_WRONLY)\n            print('writable', p)\n        except OSError:\n            pass\n";
    std::fs::write(env.root(&name).join("tmp/probe2.py"), probe2).unwrap();
    let out = env.exec(&name, "python3 /tmp/probe2.py");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "",
        "{}",
        text(&out)
    );
    assert!(
        std::fs::read(&bin).unwrap() == before,
        "the vserver binary changed"
    );
}

/// EX-04: a command started by exec has the init's confinement (capability sets, no_new_privs,
/// seccomp, cgroup, namespaces, rlimits); numeric users are uids, never names.
#[test]
fn exec_runs_in_the_same_confinement_as_the_init() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("hsame", 30);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    let cfg = std::fs::read_to_string(env.config_path(&name))
        .unwrap()
        .replace("style = \"builtin\"", "style = \"plain\"")
        .replace(
            "\ncommand = []\n",
            "\ncommand = [\"/bin/sleep\", \"1000\"]\n",
        )
        .replace("kill_timeout = 5", "kill_timeout = 1");
    std::fs::write(env.config_path(&name), cfg).unwrap();
    let root = env.root(&name);
    let mut pw = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    pw.push_str("1000:x:0:0:impostor:/:/bin/sh\n");
    std::fs::write(root.join("etc/passwd"), pw).unwrap();
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let keys = [
        "CapInh:",
        "CapPrm:",
        "CapEff:",
        "CapBnd:",
        "CapAmb:",
        "NoNewPrivs:",
        "Seccomp:",
        "Seccomp_filters:",
    ];
    let pick = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| keys.iter().any(|k| l.starts_with(k)))
            .map(String::from)
            .collect()
    };
    let init = text(&env.exec(&name, "cat /proc/1/status"));
    let me = text(&env.exec(&name, "cat /proc/self/status"));
    assert_eq!(pick(&init).len(), keys.len(), "{init}");
    assert_eq!(pick(&init), pick(&me));
    for f in ["limits", "cgroup"] {
        let a = text(&env.exec(&name, &format!("cat /proc/1/{f}")));
        let b = text(&env.exec(&name, &format!("cat /proc/self/{f}")));
        assert_eq!(a, b, "/proc/PID/{f} differs");
    }
    let ns = |pid: &str| -> Vec<String> {
        let t = text(&env.exec(&name, &format!("ls -l /proc/{pid}/ns/")));
        let mut v: Vec<String> = t
            .lines()
            .filter_map(|l| l.split(" -> ").nth(1).map(String::from))
            .collect();
        v.sort();
        v
    };
    let (a, b) = (ns("1"), ns("self"));
    assert!(a.len() >= 7, "{a:?}");
    assert_eq!(a, b, "namespaces differ");
    let id = |u: &str| {
        let o = env.vserver(&name, &["suexec", u, "id", "-u"]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(
        id("1000"),
        "1000",
        "the number 1000 was taken as a user name"
    );
    assert_eq!(id("1"), "1");
}

/// EX-05: a recorded init pid that now belongs to another process is never joined, signalled
/// or moved: exec refuses, status says stopped, stop leaves the process alone.
#[test]
fn a_recorded_init_pid_that_is_now_someone_else_is_never_joined() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("hreuse", 31);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let state = env.dir.join("run").join(&name).join("state.json");
    let saved = std::fs::read_to_string(&state).unwrap();
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    let mut other = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let pid = other.id() as i64;
    let mut st: serde_json::Value = serde_json::from_str(&saved).unwrap();
    st["init_pid"] = pid.into();
    st["monitor_pid"] = pid.into();
    std::fs::write(&state, serde_json::to_string(&st).unwrap()).unwrap();
    let cg_before = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        !env.exec(&name, "true").status.success(),
        "exec joined a stranger"
    );
    assert_eq!(env.vserver(&name, &["status"]).status.code(), Some(3));
    let _ = env.vserver(&name, &["stop"]);
    assert!(
        other.try_wait().unwrap().is_none(),
        "the stranger was killed"
    );
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap(),
        cg_before,
        "the stranger was moved"
    );
    let _ = other.kill();
    let _ = other.wait();
}

/// FS-09 (a): exporting a running guest whose root swaps a directory with a symlink to a host
/// directory (RENAME_EXCHANGE in a loop) never puts host files into the stream: the archiver
/// opens every entry relative to its parent directory without following symlinks.
#[test]
fn export_of_a_racing_guest_never_carries_host_files() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("hexport", 32);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_host(&name, xid, false);
    let hostdir = env.dir.join("hostdir");
    std::fs::create_dir_all(&hostdir).unwrap();
    let sentinel = format!("sentinel-{}", std::process::id());
    std::fs::write(hostdir.join(&sentinel), "host secret").unwrap();
    let root = env.root(&name);
    std::fs::create_dir_all(root.join("data/x")).unwrap();
    std::fs::write(root.join("data/x/file"), "guest data").unwrap();
    std::os::unix::fs::symlink(&hostdir, root.join("data/y")).unwrap();
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let racer = "import ctypes, time\nlibc = ctypes.CDLL(None, use_errno=True)\n\
                 end = time.time() + 60\nwhile time.time() < end:\n    \
                 libc.renameat2(-100, b'/data/x', -100, b'/data/y', 2)\n";
    std::fs::write(root.join("tmp/race.py"), racer).unwrap();
    assert_ok(
        &env.exec(&name, "(python3 /tmp/race.py >/dev/null 2>&1 &)"),
        "racer",
    );
    for i in 0..10 {
        let out = env.dir.join(format!("export-{i}.tar.zst"));
        let o = env.vserver(&name, &["export", out.to_str().unwrap()]);
        if !o.status.success() {
            // tar gives up on files changing under it: then no stream is left at all.
            assert!(!out.exists(), "a failed export left {}", out.display());
            let partial = format!("{}.partial", out.display());
            assert!(!std::path::Path::new(&partial).exists(), "{partial} left");
            continue;
        }
        let list = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("zstd -dc {} | tar -t", out.display()))
            .output()
            .unwrap();
        assert_ok(&list, "list the stream");
        let names = String::from_utf8_lossy(&list.stdout);
        assert!(!names.contains(&sentinel), "export {i} carried a host file");
        let _ = std::fs::remove_file(&out);
    }
    let _ = env.exec(&name, "pkill -f race.py");
}
