//! vserver-oci driven through its command line, as containerd's shim and podman drive runc:
//! the lifecycle, exec, errors that name the field and leave nothing behind, the console
//! socket, hooks, resources and passed fds.

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A bundle with a busybox root file system and a state root, removed on drop.
struct Bundle {
    dir: PathBuf,
    root: PathBuf,
}

impl Bundle {
    fn new(tag: &str) -> Bundle {
        let dir = std::env::temp_dir().join(format!("vst-oci-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        busybox_tree(&dir.join("rootfs"));
        let b = Bundle {
            root: dir.join("state"),
            dir,
        };
        let o = b.oci(&["spec", "--bundle", b.dir.to_str().unwrap()]);
        assert_ok(&o, "spec");
        b
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(bin("vserver-oci"));
        c.arg("--root").arg(&self.root).stdin(Stdio::null());
        c
    }

    /// Run a command; its stdout and stderr go to files, not pipes: a container's process
    /// inherits them (as the runc contract says) and would keep pipes open.
    fn oci(&self, args: &[&str]) -> Output {
        run_to_files(self.cmd().args(args), &self.dir)
    }

    fn config(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.join("config.json")).unwrap())
            .unwrap()
    }

    fn set_config(&self, v: &Value) {
        std::fs::write(
            self.dir.join("config.json"),
            serde_json::to_string_pretty(v).unwrap(),
        )
        .unwrap();
    }

    fn args(&self, a: &[&str]) {
        let mut c = self.config();
        c["process"]["args"] = json!(a);
        self.set_config(&c);
    }

    fn state(&self, id: &str) -> Value {
        let o = self.oci(&["state", id]);
        assert_ok(&o, "state");
        serde_json::from_slice(&o.stdout).unwrap()
    }

    fn b(&self) -> &str {
        self.dir.to_str().unwrap()
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        for id in std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
        {
            let id = id.file_name().to_string_lossy().to_string();
            let _ = self.oci(&["delete", "--force", &id]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn cgroups_of(id: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("vserver-oci").join(id))
        .chain(std::iter::once(
            PathBuf::from("/sys/fs/cgroup/vserver-oci").join(id),
        ))
        .filter(|p| p.exists())
        .collect()
}

fn id(tag: &str) -> String {
    format!("{tag}-{}", std::process::id())
}

#[test]
fn lifecycle_create_start_state_kill_delete() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("life");
    b.args(&["sleep", "1000"]);
    let id = id("life");
    let pidf = b.dir.join("init.pid");
    let o = b.oci(&[
        "create",
        "--bundle",
        b.b(),
        "--pid-file",
        pidf.to_str().unwrap(),
        &id,
    ]);
    assert_ok(&o, "create");
    // The pid file is there when create returns, and it is the state's pid.
    let pid: i64 = std::fs::read_to_string(&pidf)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let st = b.state(&id);
    for k in ["ociVersion", "id", "status", "pid", "bundle", "annotations"] {
        assert!(st.get(k).is_some(), "state lacks {k}: {st}");
    }
    assert_eq!(st["status"], "created");
    assert_eq!(st["pid"], pid);
    assert_eq!(st["bundle"], b.b());
    // The init waits: its program has not run.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_ne!(comm.trim(), "sleep");
    assert_ok(&b.oci(&["start", &id]), "start");
    assert_eq!(b.state(&id)["status"], "running");
    wait_until(5, "sleep to run", || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
    });
    let o = b.oci(&["start", &id]);
    assert!(!o.status.success(), "a second start worked");
    let o = b.oci(&["delete", &id]);
    assert!(
        !o.status.success() && text(&o).contains("not stopped"),
        "{}",
        text(&o)
    );
    let ps = b.oci(&["ps", "--format", "json", &id]);
    let pids: Vec<i64> = serde_json::from_slice(&ps.stdout).unwrap();
    assert_eq!(pids, [pid]);
    assert_ok(&b.oci(&["pause", &id]), "pause");
    assert_eq!(b.state(&id)["status"], "paused");
    assert_ok(&b.oci(&["resume", &id]), "resume");
    assert_eq!(b.state(&id)["status"], "running");
    assert_ok(&b.oci(&["kill", &id, "KILL"]), "kill KILL");
    wait_until(5, "the init to die", || b.state(&id)["status"] == "stopped");
    assert_eq!(b.state(&id)["pid"], 0);
    let o = b.oci(&["kill", &id, "9"]);
    assert!(
        !o.status.success() && text(&o).contains("not running"),
        "{}",
        text(&o)
    );
    assert_ok(&b.oci(&["delete", &id]), "delete");
    let o = b.oci(&["state", &id]);
    assert!(
        !o.status.success() && text(&o).contains("does not exist"),
        "{}",
        text(&o)
    );
    assert!(cgroups_of(&id).is_empty(), "{:?}", cgroups_of(&id));
    assert_ok(
        &b.oci(&["delete", "--force", &id]),
        "delete --force of a missing container",
    );
}

#[test]
fn run_returns_the_exit_code_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("run");
    b.args(&["sh", "-c", "echo hi from $(hostname); exit 7"]);
    let id = id("run");
    let o = b.oci(&["run", "--bundle", b.b(), &id]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "hi from vserver");
    assert!(!b.root.join(&id).exists());
    assert!(cgroups_of(&id).is_empty());
    // Killed by a signal: 128 + signal, as a shell reports it.
    b.args(&["sleep", "100"]);
    let mut c = b.cmd();
    c.args(["run", "--bundle", b.b(), &id]);
    let dir = b.dir.clone();
    let t = std::thread::spawn(move || run_to_files(&mut c, &dir));
    wait_until(10, "the container to run", || {
        b.oci(&["state", &id]).status.success() && b.state(&id)["status"] == "running"
    });
    assert_ok(&b.oci(&["kill", &id, "SIGKILL"]), "kill");
    let o = t.join().unwrap();
    assert_eq!(o.status.code(), Some(137), "{}", text(&o));
    assert!(!b.root.join(&id).exists());
}

#[test]
fn exec_runs_inside_and_returns_its_status() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("exec");
    b.args(&["sleep", "1000"]);
    let id = id("exec");
    assert_ok(
        &b.oci(&["run", "--detach", "--bundle", b.b(), &id]),
        "run -d",
    );
    let proc_json = b.dir.join("proc.json");
    std::fs::write(
        &proc_json,
        json!({
            "args": ["sh", "-c", "hostname; cat /proc/1/comm; pwd; id -u; exit 5"],
            "cwd": "/tmp",
            "env": ["PATH=/bin"],
            "user": {"uid": 65534, "gid": 65534}
        })
        .to_string(),
    )
    .unwrap();
    let o = b.oci(&["exec", "--process", proc_json.to_str().unwrap(), &id]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .collect::<Vec<_>>(),
        ["vserver", "sleep", "/tmp", "65534"]
    );
    // Detached, with a pid file written before exec returns.
    std::fs::write(
        &proc_json,
        json!({"args": ["sleep", "30"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}).to_string(),
    )
    .unwrap();
    let pf = b.dir.join("exec.pid");
    let o = b.oci(&[
        "exec",
        "--detach",
        "--pid-file",
        pf.to_str().unwrap(),
        "--process",
        proc_json.to_str().unwrap(),
        &id,
    ]);
    assert_ok(&o, "exec --detach");
    let pid: i32 = std::fs::read_to_string(&pf)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim(),
        "sleep"
    );
    let ps = b.oci(&["ps", "--format", "json", &id]);
    let pids: Vec<i32> = serde_json::from_slice(&ps.stdout).unwrap();
    assert!(pids.contains(&pid), "{pids:?}");
    // A missing program is an error of exec itself.
    std::fs::write(
        &proc_json,
        json!({"args": ["/nope"], "cwd": "/", "user": {"uid": 0, "gid": 0}}).to_string(),
    )
    .unwrap();
    let o = b.oci(&["exec", "--process", proc_json.to_str().unwrap(), &id]);
    assert!(
        !o.status.success() && text(&o).contains("/nope"),
        "{}",
        text(&o)
    );
    assert_ok(&b.oci(&["kill", "--all", &id, "SIGKILL"]), "kill --all");
    wait_until(5, "the container to stop", || {
        b.state(&id)["status"] == "stopped"
    });
    assert_ok(&b.oci(&["delete", &id]), "delete");
}

#[test]
fn a_bad_config_names_the_field_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("bad");
    let good = b.config();
    let log = b.dir.join("log.json");
    let cases: Vec<(Value, &str)> = vec![
        (
            {
                let mut c = good.clone();
                c["process"]["terminal"] = json!("yes");
                c
            },
            "process.terminal",
        ),
        (
            {
                let mut c = good.clone();
                c["linux"]["intelRdt"] = json!({"closID": "x"});
                c
            },
            "linux.intelRdt",
        ),
        (
            {
                let mut c = good.clone();
                c["linux"]["sysctl"] = json!({"kernel.core_pattern": "|/x"});
                c
            },
            "linux.sysctl.kernel.core_pattern",
        ),
        (
            {
                let mut c = good.clone();
                c["ociVersion"] = json!("2.0.0");
                c
            },
            "ociVersion",
        ),
        (
            {
                let mut c = good.clone();
                c["process"]["capabilities"]["bounding"] = json!(["CAP_FLY"]);
                c
            },
            "process.capabilities.bounding[0]",
        ),
        (
            {
                let mut c = good.clone();
                c["mounts"][0]["destination"] = json!("relative");
                c
            },
            "mounts[0].destination",
        ),
        (
            {
                let mut c = good.clone();
                c["process"]["args"] = json!([]);
                c
            },
            "process.args",
        ),
    ];
    for (i, (cfg, field)) in cases.iter().enumerate() {
        b.set_config(cfg);
        let cid = format!("{}-{i}", id("bad"));
        let o = run_to_files(
            b.cmd().args([
                "--log",
                log.to_str().unwrap(),
                "--log-format",
                "json",
                "create",
                "--bundle",
                b.b(),
                &cid,
            ]),
            &b.dir,
        );
        assert!(!o.status.success(), "case {i} was accepted");
        assert!(
            text(&o).contains(field),
            "case {i}: {field} not named: {}",
            text(&o)
        );
        assert!(!b.root.join(&cid).exists(), "case {i} left state");
        assert!(cgroups_of(&cid).is_empty(), "case {i} left a cgroup");
        let last: Value = serde_json::from_str(
            std::fs::read_to_string(&log)
                .unwrap()
                .lines()
                .last()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(last["level"], "error");
        assert!(last["msg"].as_str().unwrap().contains(field));
    }
    // A root file system that cannot be set up fails in the child: nothing is left either.
    let mut c = good.clone();
    c["process"]["args"] = json!(["true"]);
    b.set_config(&c);
    std::fs::remove_dir(b.dir.join("rootfs/proc")).unwrap();
    std::os::unix::fs::symlink("/etc", b.dir.join("rootfs/proc")).unwrap();
    let cid = id("badroot");
    let o = b.oci(&["create", "--bundle", b.b(), &cid]);
    assert!(
        !o.status.success() && text(&o).contains("/proc"),
        "{}",
        text(&o)
    );
    assert!(!b.root.join(&cid).exists());
    assert!(cgroups_of(&cid).is_empty());
}

/// Receive one fd over a unix stream socket (SCM_RIGHTS).
fn receive_fd(listener: &std::os::unix::net::UnixListener) -> std::os::fd::OwnedFd {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd};
    let (conn, _) = listener.accept().unwrap();
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .unwrap();
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel gave us this fd.
            return unsafe { std::os::fd::OwnedFd::from_raw_fd(fds[0]) };
        }
    }
    panic!("no fd received");
}

#[test]
fn the_console_socket_gets_a_pty_that_is_the_programs_terminal() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("tty");
    let mut c = b.config();
    c["process"]["terminal"] = json!(true);
    c["process"]["args"] = json!([
        "sh",
        "-c",
        "tty; echo cols=$(stty size 2>/dev/null); sleep 2"
    ]);
    c["process"]["consoleSize"] = json!({"height": 30, "width": 99});
    b.set_config(&c);
    let sock = b.dir.join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let id = id("tty");
    let mut c = b.cmd();
    c.args([
        "create",
        "--bundle",
        b.b(),
        "--console-socket",
        sock.to_str().unwrap(),
        &id,
    ]);
    let dir = b.dir.clone();
    let t = std::thread::spawn(move || run_to_files(&mut c, &dir));
    let master = receive_fd(&listener);
    let o = t.join().unwrap();
    assert_ok(&o, "create with a terminal");
    assert_ok(&b.oci(&["start", &id]), "start");
    let mut f = std::fs::File::from(master);
    let mut out = String::new();
    let mut buf = [0u8; 256];
    let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !out.contains("cols=") && std::time::Instant::now() < end {
        use std::io::Read;
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(
        out.contains("/dev/console") || out.contains("/dev/pts/"),
        "{out}"
    );
    let _ = b.oci(&["delete", "--force", &id]);
}

#[test]
fn hooks_run_in_order_in_the_right_namespaces_with_the_state() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("hooks");
    let host_log = b.dir.join("hooks.log");
    let hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {name} $(cat | tr -d '\\n' | head -c 300) >> {}", host_log.display())]});
    let mut c = b.config();
    c["process"]["args"] = json!(["sh", "-c", "echo program >> /tmp/inside.log"]);
    c["root"]["readonly"] = json!(false);
    c["hooks"] = json!({
        "createRuntime": [hook("createRuntime")],
        "createContainer": [hook("createContainer")],
        "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "echo startContainer >> /tmp/inside.log"]}],
        "poststart": [hook("poststart")],
        "poststop": [hook("poststop")],
    });
    b.set_config(&c);
    let id = id("hooks");
    let o = b.oci(&["run", "--bundle", b.b(), &id]);
    assert_ok(&o, "run");
    let log = std::fs::read_to_string(&host_log).unwrap();
    let order: Vec<&str> = log.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        order,
        ["createRuntime", "createContainer", "poststart", "poststop"],
        "{log}"
    );
    assert!(
        log.lines()
            .next()
            .unwrap()
            .contains(&format!("\"id\":\"{id}\"")),
        "{log}"
    );
    let inside = std::fs::read_to_string(b.dir.join("rootfs/tmp/inside.log")).unwrap();
    assert_eq!(
        inside.lines().collect::<Vec<_>>(),
        ["startContainer", "program"]
    );
}

fn cgroup_file(id: &str, ctl: &str, file: &str) -> Option<String> {
    for base in [
        format!("/sys/fs/cgroup/{ctl}"),
        "/sys/fs/cgroup".to_string(),
    ] {
        let p = Path::new(&base).join("vserver-oci").join(id).join(file);
        if let Ok(t) = std::fs::read_to_string(&p) {
            return Some(t.trim().to_string());
        }
    }
    None
}

#[test]
fn resources_are_applied_and_updated_and_fds_are_passed() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("res");
    let mut c = b.config();
    c["process"]["args"] = json!(["sleep", "1000"]);
    c["linux"]["resources"]["pids"] = json!({"limit": 42});
    c["linux"]["resources"]["memory"] = json!({"limit": 64 * 1024 * 1024});
    b.set_config(&c);
    let id = id("res");
    assert_ok(&b.oci(&["run", "-d", "--bundle", b.b(), &id]), "run -d");
    assert_eq!(cgroup_file(&id, "pids", "pids.max").as_deref(), Some("42"));
    let mem = cgroup_file(&id, "memory", "memory.limit_in_bytes")
        .or_else(|| cgroup_file(&id, "memory", "memory.max"));
    assert_eq!(mem.as_deref(), Some("67108864"));
    let mut u = b
        .cmd()
        .args(["update", "--resources", "-", &id])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        u.stdin
            .take()
            .unwrap()
            .write_all(br#"{"pids": {"limit": 7}}"#)
            .unwrap();
    }
    assert!(u.wait().unwrap().success());
    assert_eq!(cgroup_file(&id, "pids", "pids.max").as_deref(), Some("7"));
    assert_ok(&b.oci(&["delete", "--force", &id]), "delete --force");
    assert!(cgroups_of(&id).is_empty());
    // --preserve-fds 1: the caller's fd 3 is the program's fd 3.
    b.args(&["sh", "-c", "echo through-fd3 >&3"]);
    let (r, w) = nix::unistd::pipe().unwrap();
    let mut cmd = b.cmd();
    cmd.args(["run", "--preserve-fds", "1", "--bundle", b.b(), &id]);
    {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let wfd = w.as_raw_fd();
        // SAFETY: dup2 in the child before exec, onto fd 3.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(wfd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let o = run_to_files(&mut cmd, &b.dir);
    drop(w);
    assert_ok(&o, "run with a passed fd");
    let mut s = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut s).unwrap();
    assert_eq!(s.trim(), "through-fd3");
}

/// Found by a new user's trial: a privileged container's many device rules, a program that is
/// not there, real-time signals, a terminal without a console socket, and a container's view
/// of its own cgroup limits.
#[test]
fn what_a_first_trial_tripped_over() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("trial");
    let id = id("trial");
    // 300 device rules (as for privileged containers) load: no verifier log overflow.
    let mut c = b.config();
    let mut rules: Vec<Value> = (0..300)
        .map(|i| json!({"allow": true, "type": "c", "major": 1, "minor": i, "access": "rwm"}))
        .collect();
    rules.push(json!({"allow": true, "access": "rwm"}));
    c["linux"]["resources"]["devices"] = json!(rules);
    c["linux"]["resources"]["memory"] = json!({"limit": 48 * 1024 * 1024});
    c["process"]["args"] = json!([
        "sh", "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"
    ]);
    b.set_config(&c);
    let o = b.oci(&["run", "--bundle", b.b(), &id]);
    assert_ok(&o, "run with 301 device rules");
    // The container sees its own memory limit under /sys/fs/cgroup (v1 or v2).
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        (48u64 << 20).to_string()
    );
    // A program that is not there fails create itself, naming it.
    b.args(&["/no/such/program"]);
    let o = b.oci(&["create", "--bundle", b.b(), &id]);
    assert!(
        !o.status.success() && text(&o).contains("/no/such/program"),
        "{}",
        text(&o)
    );
    assert!(!b.root.join(&id).exists());
    b.args(&["nosuchprogram"]);
    let o = b.oci(&["create", "--bundle", b.b(), &id]);
    assert!(
        text(&o).contains("executable file not found in $PATH"),
        "{}",
        text(&o)
    );
    // Real-time signals by name and number, signal 0, and a leading dash.
    b.args(&["sleep", "1000"]);
    assert_ok(&b.oci(&["run", "-d", "--bundle", b.b(), &id]), "run -d");
    for sig in ["0", "RTMIN+3", "SIGRTMIN+3", "37", "-0"] {
        assert_ok(&b.oci(&["kill", &id, sig]), &format!("kill {sig}"));
    }
    let o = b.oci(&["kill", &id, "65"]);
    assert!(
        !o.status.success() && text(&o).contains("0-64"),
        "{}",
        text(&o)
    );
    assert_ok(&b.oci(&["delete", "--force", &id]), "delete --force");
    // process.terminal without a console socket: run relays a pty itself.
    let mut c = b.config();
    c["process"]["terminal"] = json!(true);
    c["process"]["args"] = json!(["sh", "-c", "echo on a tty; exit 2"]);
    b.set_config(&c);
    let o = b.oci(&["run", "--bundle", b.b(), &id]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("on a tty"),
        "{}",
        text(&o)
    );
}

/// Found by a hostile review: a process of `vserver-oci exec`, stopped just before its execve
/// (with the container's user and capabilities), was dumpable and still held the client's host
/// fds (the pid file's directory, cgroup files): container root could open them through
/// /proc/PID/fd and write anywhere on the host. Now it holds only its stdio and pipes, and
/// nothing of it can be read from the container.
/// `exec ID true` started in a thread and held at the pause point `step` (testhook) until
/// [`PausedExec::resume`]; its pid file is `held.pid` in the bundle.
struct PausedExec {
    pause: PathBuf,
    step: &'static str,
    thread: std::thread::JoinHandle<Output>,
}

impl PausedExec {
    fn start(b: &Bundle, id: &str, step: &'static str) -> PausedExec {
        let pause = b.dir.join(format!("pause-{step}"));
        let pidf = b.dir.join("held.pid");
        let mut held = b.cmd();
        held.args(["exec", "--pid-file", pidf.to_str().unwrap(), id, "true"])
            .env("VSERVER_PAUSE_AT", step)
            .env("VSERVER_PAUSE_FILE", &pause);
        let dir = b.dir.clone();
        let thread = std::thread::spawn(move || run_to_files(&mut held, &dir));
        let want = format!("paused {step} ");
        wait_until(20, "the exec'd process to pause", || {
            std::fs::read_to_string(&pause)
                .unwrap_or_default()
                .contains(&want)
        });
        PausedExec {
            pause,
            step,
            thread,
        }
    }

    /// The pid the pause point reported (as the paused process sees itself).
    fn reported_pid(&self) -> String {
        let want = format!("paused {} ", self.step);
        std::fs::read_to_string(&self.pause)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(want.as_str()))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Let it go on; the exec's output once it ended.
    fn resume(self) -> Output {
        use std::io::Write;
        writeln!(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&self.pause)
                .unwrap(),
            "resume {}",
            self.step
        )
        .unwrap();
        self.thread.join().unwrap()
    }
}

#[test]
fn an_exec_helper_paused_before_execve_shows_the_container_nothing() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("exechold");
    b.args(&["sleep", "1000"]);
    let id = id("exechold");
    assert_ok(&b.oci(&["run", "-d", "--bundle", b.b(), &id]), "run -d");
    let held = PausedExec::start(&b, &id, "oci-pre-exec");
    let pidf = b.dir.join("held.pid");
    // From inside: every fd of every process is the container's own, or unreadable.
    let o = b.oci(&[
        "exec", &id, "sh", "-c",
        "for p in /proc/[0-9]*; do for f in $p/fd/*; do readlink $f; done; readlink $p/exe; done 2>/dev/null; true",
    ]);
    let seen = String::from_utf8_lossy(&o.stdout).to_string();
    let host = b.dir.to_string_lossy().to_string();
    // The caller's stdio files are the container's stdio (the runc contract); the directory
    // holding the pid file, cgroup files, the state directory are not.
    let bad: Vec<&str> = seen
        .lines()
        .filter(|l| *l == host || l.contains("cgroup") || l.contains("/state"))
        .collect();
    assert!(
        bad.is_empty(),
        "host objects seen from the container: {bad:?}\n{seen}"
    );
    // From the host: the paused process holds only stdio, its error pipe and nothing else.
    let pid = std::fs::read_to_string(&pidf).unwrap().trim().to_string();
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            std::fs::read_link(e.path())
                .unwrap_or_default()
                .display()
                .to_string()
        })
        .collect();
    assert!(fds.len() <= 5, "{fds:?}");
    assert!(
        fds.iter()
            .all(|f| *f != host && !f.contains("cgroup") && !f.contains("/state")),
        "{fds:?}"
    );
    assert_ok(&held.resume(), "the paused exec");
    assert_ok(&b.oci(&["delete", "--force", &id]), "delete --force");
}

/// Found by a ninth hostile review: the exec'd process was born in the container's pid
/// namespace with the runtime's full power (every capability, no seccomp filter) and kept it
/// until the go byte; a container with CAP_SYS_PTRACE attached to it, made it run its own
/// program and read the host's files. Now the command is born reduced: paused before its
/// execve it has the container's capability sets, its filter and its user already.
#[test]
fn an_exec_helper_is_born_with_no_more_power_than_the_container() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("execborn");
    let mut c = b.config();
    c["process"]["args"] = json!(["sleep", "1000"]);
    let kill_only = json!(["CAP_KILL"]);
    c["process"]["capabilities"] =
        json!({"bounding": kill_only, "effective": kill_only, "permitted": kill_only});
    c["process"]["noNewPrivileges"] = json!(false);
    c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    c["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["keyctl"], "action": "SCMP_ACT_ERRNO"}]});
    b.set_config(&c);
    let id = id("execborn");
    assert_ok(&b.oci(&["run", "-d", "--bundle", b.b(), &id]), "run -d");
    let held = PausedExec::start(&b, &id, "exec-command-born");
    // Before the go byte: the hook names the process by its pid in the container; its host
    // pid is the one whose NSpid ends with it, in the init's pid namespace.
    let inner = held.reported_pid();
    let init_ns = std::fs::read_link(format!("/proc/{}/ns/pid", init_pid_of(&b, &id))).unwrap();
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|p| p.parse::<u32>().is_ok())
        .find(|p| {
            std::fs::read_link(format!("/proc/{p}/ns/pid"))
                .ok()
                .as_ref()
                == Some(&init_ns)
                && std::fs::read_to_string(format!("/proc/{p}/status"))
                    .unwrap_or_default()
                    .lines()
                    .any(|l| {
                        l.starts_with("NSpid:")
                            && l.split_whitespace().last() == Some(inner.as_str())
                    })
        })
        .expect("the paused command in the host's /proc");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    // CAP_KILL is bit 5.
    for k in ["CapBnd:", "CapEff:", "CapPrm:"] {
        assert_eq!(
            field(k),
            "0000000000000020",
            "{k} of the paused exec: {status}"
        );
    }
    assert_eq!(field("Seccomp:"), "2", "no filter before execve: {status}");
    assert!(field("Uid:").starts_with("1000"), "{status}");
    assert_ok(&held.resume(), "the paused exec");
    assert_ok(&b.oci(&["delete", "--force", &id]), "delete --force");
}

/// The pid of a container's init, from `state`.
fn init_pid_of(b: &Bundle, id: &str) -> i64 {
    b.state(id)["pid"].as_i64().unwrap_or(0)
}

/// Found by a hostile review: `create` of a container that joins another container's pid
/// namespace (CRI's shareProcessNamespace) ran its host hooks inside that namespace, where the
/// other container's root could see and trace them (and reach the host through /proc/PID/root).
/// runc runs them in its own pid namespace.
#[test]
fn hooks_of_a_container_joining_a_pid_namespace_run_in_the_hosts() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("pidjoin");
    b.args(&["sleep", "1000"]);
    let a = id("pidjoin-a");
    assert_ok(&b.oci(&["run", "-d", "--bundle", b.b(), &a]), "run -d A");
    let a_pid = init_pid_of(&b, &a);
    let log = b.dir.join("hookns.log");
    let hook = json!({"path": "/bin/sh", "args": ["sh", "-c",
        format!("readlink /proc/self/ns/pid >> {}", log.display())]});
    let mut c = b.config();
    let ns = c["linux"]["namespaces"].as_array().unwrap().clone();
    let ns: Vec<Value> = ns
        .into_iter()
        .map(|n| {
            if n["type"] == "pid" {
                json!({"type": "pid", "path": format!("/proc/{a_pid}/ns/pid")})
            } else {
                n
            }
        })
        .collect();
    c["linux"]["namespaces"] = json!(ns);
    c["hooks"] = json!({"prestart": [hook.clone()], "createRuntime": [hook]});
    b.set_config(&c);
    let bid = id("pidjoin-b");
    assert_ok(&b.oci(&["create", "--bundle", b.b(), &bid]), "create B");
    let host = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let seen = std::fs::read_to_string(&log).unwrap();
    assert_eq!(seen.lines().count(), 2, "{seen}");
    for l in seen.lines() {
        assert_eq!(
            Path::new(l),
            host,
            "a hook ran in another pid namespace: {seen}"
        );
    }
    // B's own process is in A's pid namespace, as asked.
    let b_pid = init_pid_of(&b, &bid);
    assert_eq!(
        std::fs::read_link(format!("/proc/{b_pid}/ns/pid")).unwrap(),
        std::fs::read_link(format!("/proc/{a_pid}/ns/pid")).unwrap()
    );
    assert_ok(&b.oci(&["delete", "--force", &bid]), "delete B");
    assert_ok(&b.oci(&["delete", "--force", &a]), "delete A");
}

/// The v2 hierarchy's mount (hybrid: /sys/fs/cgroup/unified).
fn v2_mount() -> Option<&'static str> {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .find(|m| Path::new(m).join("cgroup.controllers").exists())
}

/// Found by two hostile reviews: a `cgroupsPath` naming the parent of another container's
/// cgroup was accepted, and `delete --force` of that container killed the other one; two
/// containers could share a cgroupsPath (deleting the stopped one killed the new one); and
/// processes in cgroups a container made below its own were invisible to `ps`, `kill --all`
/// and `delete`. A cgroup that is not empty, or is another container's, above or below it, is
/// refused now; everything below a container's cgroup is the container's.
#[test]
fn cgroup_paths_are_a_containers_own_with_everything_below() {
    if !require_root() {
        return;
    }
    let Some(v2) = v2_mount() else {
        eprintln!("skipped: no cgroup v2 hierarchy");
        return;
    };
    let b = Bundle::new("cgpath");
    b.args(&["sleep", "1000"]);
    let parent = format!("vst-oci-cgpath-{}", std::process::id());
    let mut c = b.config();
    c["linux"]["cgroupsPath"] = json!(format!("/{parent}/a"));
    b.set_config(&c);
    let a = id("cgpath-a");
    assert_ok(&b.oci(&["run", "-d", "--bundle", b.b(), &a]), "run -d A");
    // Above, at and below A's cgroup: refused.
    let bid = id("cgpath-b");
    for (path, why) in [
        (format!("/{parent}"), "not empty"),
        (format!("/{parent}/a"), "not empty"),
        (format!("/{parent}/a/inner"), "container"),
    ] {
        c["linux"]["cgroupsPath"] = json!(path);
        b.set_config(&c);
        let o = b.oci(&["create", "--bundle", b.b(), &bid]);
        assert!(
            !o.status.success() && text(&o).contains(why),
            "cgroupsPath {path} was taken: {}",
            text(&o)
        );
        assert!(!b.root.join(&bid).exists());
    }
    // A process in a cgroup below A's (as a container with CAP_SYS_ADMIN makes them) is
    // A's: listed, and killed and removed with it.
    let sub = Path::new(v2).join(&parent).join("a").join("sub");
    std::fs::create_dir(&sub).unwrap();
    let mut job = Command::new("sleep").arg("1000").spawn().unwrap();
    std::fs::write(sub.join("cgroup.procs"), job.id().to_string()).unwrap();
    let ps = b.oci(&["ps", "--format", "json", &a]);
    let pids: Vec<i64> = serde_json::from_slice(&ps.stdout).unwrap();
    assert!(pids.contains(&i64::from(job.id())), "ps: {pids:?}");
    assert_ok(&b.oci(&["delete", "--force", &a]), "delete --force A");
    wait_until(10, "the process below A's cgroup to be killed", || {
        job.try_wait().unwrap().is_some()
    });
    assert!(!sub.exists(), "the cgroup below A's was left");
    // A stopped container's cgroup is still its own until it is deleted.
    c["linux"]["cgroupsPath"] = json!(format!("/{parent}/a"));
    c["process"]["args"] = json!(["true"]);
    b.set_config(&c);
    assert_ok(
        &b.oci(&["run", "-d", "--bundle", b.b(), &a]),
        "run -d A again",
    );
    wait_until(10, "A to stop", || b.state(&a)["status"] == "stopped");
    let o = b.oci(&["create", "--bundle", b.b(), &bid]);
    assert!(!o.status.success() && text(&o).contains(&a), "{}", text(&o));
    assert_ok(&b.oci(&["delete", &a]), "delete A");
    for e in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(e.path().join(&parent));
    }
    let _ = std::fs::remove_dir(Path::new(v2).join(&parent));
}

/// Found by a hostile review: `kill --all` refused a container whose init had ended while
/// other processes of it remained (a container in the host's pid namespace), which
/// containerd's shim relies on.
#[test]
fn kill_all_reaches_what_remains_of_a_stopped_container() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("killrest");
    let mut c = b.config();
    let ns: Vec<Value> = c["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] != "pid")
        .cloned()
        .collect();
    c["linux"]["namespaces"] = json!(ns);
    c["process"]["args"] = json!(["sh", "-c", "sleep 1000 >/dev/null 2>&1 &"]);
    b.set_config(&c);
    let id = id("killrest");
    assert_ok(&b.oci(&["run", "-d", "--bundle", b.b(), &id]), "run -d");
    wait_until(10, "the init to end", || {
        b.state(&id)["status"] == "stopped"
    });
    let ps = b.oci(&["ps", "--format", "json", &id]);
    let pids: Vec<i32> = serde_json::from_slice(&ps.stdout).unwrap();
    let [left] = pids[..] else {
        panic!("not one process left: {pids:?}")
    };
    assert_ok(&b.oci(&["kill", "--all", &id, "KILL"]), "kill --all");
    wait_until(10, "the remaining process to be killed", || {
        std::fs::read_to_string(format!("/proc/{left}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
    });
    assert_ok(&b.oci(&["delete", "--force", &id]), "delete");
}

/// Found by a hostile review: container processes kept the caller's session (through
/// /dev/tty an image's program could type commands into the administrator's shell with
/// TIOCSTI) and its session keyring (shared by every container of a containerd), and a created
/// init waited for `start` as root with every capability. Each now has a session and a
/// session keyring of its own, and waits as the user and capabilities config.json gives.
#[test]
fn a_container_has_its_own_session_and_keyring_and_waits_confined() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("confined");
    let probe_src = b.dir.join("probe.c");
    std::fs::write(&probe_src, include_str!("probe/probe.c")).unwrap();
    let o = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(b.dir.join("rootfs/bin/probe"))
        .arg(&probe_src)
        .output()
        .expect("gcc (apt-get install gcc libc6-dev)");
    assert_ok(&o, "gcc -static probe.c");
    // keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0): the session keyring's serial.
    // SAFETY: a plain syscall with integer arguments.
    let ours = unsafe { libc::syscall(libc::SYS_keyctl, 0, -3i64, 0) };
    assert!(ours > 0);
    let mut c = b.config();
    c["process"]["args"] = json!(["/bin/probe", "250", "0", "-3", "0"]);
    c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    c["process"]["noNewPrivileges"] = json!(true);
    for set in ["bounding", "effective", "permitted"] {
        c["process"]["capabilities"][set] = json!(["CAP_KILL"]);
    }
    c["process"]["capabilities"]["inheritable"] = json!([]);
    c["process"]["capabilities"]["ambient"] = json!([]);
    b.set_config(&c);
    let id1 = id("confined");
    assert_ok(&b.oci(&["create", "--bundle", b.b(), &id1]), "create");
    let pid = init_pid_of(&b, &id1);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        field("Uid"),
        "1000",
        "the created init waits as root: {status}"
    );
    assert_eq!(field("CapEff"), "0000000000000020", "{status}");
    assert_eq!(field("CapPrm"), "0000000000000020", "{status}");
    assert_eq!(field("NoNewPrivs"), "1", "{status}");
    // Its own session, not the caller's.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let session: i64 = rest.split(' ').nth(3).unwrap().parse().unwrap();
    assert_eq!(session, pid, "the init is in the caller's session");
    assert_ok(&b.oci(&["start", &id1]), "start");
    wait_until(10, "the program to end", || {
        b.state(&id1)["status"] == "stopped"
    });
    assert_ok(&b.oci(&["delete", &id1]), "delete");
    // The program's session keyring is not ours.
    let o = b.oci(&["run", "--bundle", b.b(), &id("confined2")]);
    assert_ok(&o, "run");
    let line = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let theirs: i64 = line
        .strip_prefix("ret=")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("probe: {line}"));
    assert_ne!(
        theirs, ours,
        "the container shares the caller's session keyring"
    );
    // An exec'd process too.
    b.args(&["sleep", "1000"]);
    let id3 = id("confined3");
    assert_ok(&b.oci(&["run", "-d", "--bundle", b.b(), &id3]), "run -d");
    let pj = b.dir.join("proc.json");
    std::fs::write(
        &pj,
        json!({"args": ["/bin/probe", "250", "0", "-3", "0"], "cwd": "/",
               "user": {"uid": 0, "gid": 0}})
        .to_string(),
    )
    .unwrap();
    let o = b.oci(&["exec", "--process", pj.to_str().unwrap(), &id3]);
    assert_ok(&o, "exec");
    let line = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_ne!(
        line,
        format!("ret={ours}"),
        "exec shares the caller's keyring"
    );
    assert_ok(&b.oci(&["delete", "--force", &id3]), "delete");
}

/// Found by a hostile review: mounts over /proc files were accepted (a fake /proc/1/cgroup
/// made the runtime mount a new cgroup hierarchy on the host); NUL bytes in args were cut,
/// shifting argv past an admission policy; without a cgroup namespace /sys/fs/cgroup showed
/// every cgroup of the host; a hook's timeout did not hold with a state larger than a pipe.
#[test]
fn proc_mounts_nul_bytes_cgroup_views_and_hook_timeouts() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("review2");
    let id = id("review2");
    let base = b.config();
    // A mount inside /proc.
    let mut c = base.clone();
    c["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/proc/1/cgroup", "type": "bind",
        "source": b.dir.join("config.json").to_str().unwrap(), "options": ["rbind", "ro"]}));
    b.set_config(&c);
    let o = b.oci(&["create", "--bundle", b.b(), &id]);
    assert!(
        !o.status.success() && text(&o).contains("inside /proc"),
        "{}",
        text(&o)
    );
    // A NUL byte in an argument.
    let mut c = base.clone();
    c["process"]["args"] = json!(["/bin/true\u{0}", "echo", "shifted"]);
    b.set_config(&c);
    let o = b.oci(&["run", "--bundle", b.b(), &id]);
    assert!(
        !o.status.success() && text(&o).contains("process.args[0]"),
        "{}",
        text(&o)
    );
    // No cgroup namespace: only the container's own cgroups show.
    let mut c = base.clone();
    let ns: Vec<Value> = c["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] != "cgroup")
        .cloned()
        .collect();
    c["linux"]["namespaces"] = json!(ns);
    c["process"]["args"] = json!(["sh", "-c", "ls /sys/fs/cgroup/* /sys/fs/cgroup"]);
    b.set_config(&c);
    let o = b.oci(&["run", "--bundle", b.b(), &id]);
    assert_ok(&o, "run without a cgroup namespace");
    let seen = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        !seen.contains("vserver-oci") && !seen.contains("vservers"),
        "the host's cgroups are visible: {seen}"
    );
    // A hook that does not read a large state still times out.
    let mut c = base.clone();
    c["annotations"] = json!({"big": "x".repeat(200_000)});
    c["hooks"] =
        json!({"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]});
    b.set_config(&c);
    let o = b.oci(&["create", "--bundle", b.b(), &id]);
    assert!(
        !o.status.success() && text(&o).contains("timed out"),
        "{}",
        text(&o)
    );
    assert!(!b.root.join(&id).exists());
}

/// Found by a hostile review: startContainer hooks (programs of the image, run in the
/// container) ran as root with the runtime's capabilities, without no_new_privs or the seccomp
/// filter of the process they precede. They run as that process now, as in runc.
#[test]
fn start_container_hooks_run_as_the_program() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("starthook");
    let mut c = b.config();
    c["process"]["args"] = json!(["cat", "/dev/shm/hook.status"]);
    c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    c["process"]["noNewPrivileges"] = json!(true);
    for set in ["bounding", "effective", "permitted"] {
        c["process"]["capabilities"][set] = json!(["CAP_KILL"]);
    }
    c["process"]["capabilities"]["inheritable"] = json!([]);
    c["process"]["capabilities"]["ambient"] = json!([]);
    c["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["acct"], "action": "SCMP_ACT_ERRNO"}]
    });
    c["hooks"] = json!({"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c",
        "grep -E '^(Uid|CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status > /dev/shm/hook.status"]}]});
    b.set_config(&c);
    let o = b.oci(&["run", "--bundle", b.b(), &id("starthook")]);
    assert_ok(&o, "run");
    let st = String::from_utf8_lossy(&o.stdout).to_string();
    let field = |k: &str| {
        st.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    // As the program: uid 1000 (whose execve leaves it no effective capability), the
    // program's bounding set, no_new_privs and the filter.
    assert_eq!(field("Uid"), "1000", "{st}");
    assert_eq!(field("CapEff"), "0000000000000000", "{st}");
    assert_eq!(field("CapBnd"), "0000000000000020", "{st}");
    assert_eq!(field("NoNewPrivs"), "1", "{st}");
    assert_eq!(field("Seccomp"), "2", "{st}");
}

/// Found by a hostile review: on a cgroup that existed before `create` (made by an
/// orchestrator) and a config without `linux.resources`, no device policy was applied: a
/// container with CAP_MKNOD wrote to the host's /dev/kmsg. The policy is applied every time.
#[test]
fn the_device_policy_holds_on_a_cgroup_that_existed_before() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("devpre");
    let rel = format!("vst-oci-devpre-{}", std::process::id());
    let mut made = Vec::new();
    for e in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let is_cg = e.path().join("cgroup.procs").exists();
        let d = e.path().join(&rel);
        if is_cg && std::fs::create_dir(&d).is_ok() {
            made.push(d);
        }
    }
    let top = Path::new("/sys/fs/cgroup").join(&rel);
    if Path::new("/sys/fs/cgroup/cgroup.procs").exists() && std::fs::create_dir(&top).is_ok() {
        made.push(top);
    }
    let mut c = b.config();
    c["linux"]["cgroupsPath"] = json!(format!("/{rel}"));
    if let Some(r) = c["linux"].as_object_mut() {
        r.remove("resources");
    }
    for set in ["bounding", "effective", "permitted"] {
        c["process"]["capabilities"][set]
            .as_array_mut()
            .unwrap()
            .push(json!("CAP_MKNOD"));
    }
    c["process"]["args"] = json!([
        "sh",
        "-c",
        "mknod /dev/km c 1 11 && echo vserver-test > /dev/km && echo WROTE; \
         mknod /dev/kc c 5 1 && (exec 3<>/dev/kc) && echo CONSOLE; true"
    ]);
    b.set_config(&c);
    let o = b.oci(&["run", "--bundle", b.b(), &id("devpre")]);
    assert_ok(&o, "run");
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("WROTE"),
        "the container wrote to /dev/kmsg: {}",
        text(&o)
    );
    // Found by a fifth review: 5:1, the host's system console, was on the allowlist.
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("CONSOLE"),
        "the container opened the host's console: {}",
        text(&o)
    );
    for d in made.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}

/// Found by a hostile review: `update --resources` with one field lifted every other limit
/// (they were written as "no limit"). Only what is given changes, as in runc.
#[test]
fn update_changes_only_what_it_is_given() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("upd");
    let mut c = b.config();
    c["process"]["args"] = json!(["sleep", "1000"]);
    c["linux"]["resources"]["pids"] = json!({"limit": 50});
    c["linux"]["resources"]["memory"] = json!({"limit": 64 * 1024 * 1024});
    c["linux"]["resources"]["cpu"] = json!({"quota": 20000, "period": 100000});
    b.set_config(&c);
    let id = id("upd");
    assert_ok(&b.oci(&["run", "-d", "--bundle", b.b(), &id]), "run -d");
    let limits = || {
        (
            cgroup_file(&id, "pids", "pids.max"),
            cgroup_file(&id, "memory", "memory.limit_in_bytes")
                .or_else(|| cgroup_file(&id, "memory", "memory.max")),
            cgroup_file(&id, "cpu", "cpu.cfs_quota_us")
                .or_else(|| cgroup_file(&id, "cpu", "cpu.max")),
        )
    };
    let before = limits();
    assert_eq!(before.0.as_deref(), Some("50"));
    let mut u = b
        .cmd()
        .args(["update", "--resources", "-", &id])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        u.stdin
            .take()
            .unwrap()
            .write_all(br#"{"cpu": {"shares": 512}}"#)
            .unwrap();
    }
    assert!(u.wait().unwrap().success());
    assert_eq!(limits(), before, "a partial update changed other limits");
    assert_ok(&b.oci(&["delete", "--force", &id]), "delete --force");
}

/// Found by a hostile review: a config joining the host's network namespace by path could set
/// net.* sysctls there. Refused, as runc does.
#[test]
fn net_sysctls_are_refused_in_the_hosts_network_namespace() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("hostnet");
    let key = "/proc/sys/net/ipv4/tcp_keepalive_probes";
    let host_value = std::fs::read_to_string(key).unwrap();
    let mut c = b.config();
    let ns: Vec<Value> = c["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] != "network")
        .cloned()
        .chain(std::iter::once(
            json!({"type": "network", "path": format!("/proc/{}/ns/net", std::process::id())}),
        ))
        .collect();
    c["linux"]["namespaces"] = json!(ns);
    c["linux"]["sysctl"] = json!({"net.ipv4.tcp_keepalive_probes": "3"});
    b.set_config(&c);
    let o = b.oci(&["run", "--bundle", b.b(), &id("hostnet")]);
    assert!(
        !o.status.success() && text(&o).contains("host's network namespace"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read_to_string(key).unwrap(), host_value);
}

/// Found by a hostile review (and by a Kubernetes trial: every exec failed): exec wrote
/// `oomScoreAdj` through the container's /proc, where the number names another process (or
/// none). It goes through the host's /proc now.
#[test]
fn exec_sets_the_oom_score_of_the_process_it_starts() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("execoom");
    b.args(&["sleep", "1000"]);
    let id = id("execoom");
    assert_ok(&b.oci(&["run", "-d", "--bundle", b.b(), &id]), "run -d");
    let pj = b.dir.join("proc.json");
    std::fs::write(
        &pj,
        json!({"args": ["cat", "/proc/self/oom_score_adj"], "cwd": "/", "env": ["PATH=/bin"],
               "user": {"uid": 0, "gid": 0}, "oomScoreAdj": 500})
        .to_string(),
    )
    .unwrap();
    let o = b.oci(&["exec", "--process", pj.to_str().unwrap(), &id]);
    assert_ok(&o, "exec with oomScoreAdj");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "500");
    assert_ok(&b.oci(&["delete", "--force", &id]), "delete --force");
}

/// Found by a hostile review: `kill --all ID RTMIN+3` sent signal 0; hooks got `"pid":0`
/// during create and the dead init's pid after stop; the pid file's temporary was written
/// through a symlink planted in its place.
#[test]
fn kill_all_real_time_signals_hook_pids_and_the_pid_file() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("small");
    let log = b.dir.join("state.log");
    let hook = |name: &str| {
        json!({"path": "/bin/sh", "args": ["sh", "-c",
        format!("echo {name} $(cat | tr -d '\\n') >> {}", log.display())]})
    };
    let mut c = b.config();
    // The init of a pid namespace ignores signals it has no handler for: its child gets it.
    c["process"]["args"] = json!(["sh", "-c", "sleep 1000 & wait"]);
    c["hooks"] = json!({"createRuntime": [hook("createRuntime")],
        "createContainer": [hook("createContainer")], "poststop": [hook("poststop")]});
    b.set_config(&c);
    let id = id("small");
    let pf = b.dir.join("init.pid");
    let victim = b.dir.join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    std::os::unix::fs::symlink(&victim, b.dir.join("init.pid.tmp")).unwrap();
    assert_ok(
        &b.oci(&[
            "create",
            "--pid-file",
            pf.to_str().unwrap(),
            "--bundle",
            b.b(),
            &id,
        ]),
        "create",
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    let pid = init_pid_of(&b, &id);
    assert_eq!(
        std::fs::read_to_string(&pf).unwrap().trim(),
        pid.to_string()
    );
    assert_ok(&b.oci(&["start", &id]), "start");
    assert_ok(
        &b.oci(&["kill", "--all", &id, "RTMIN+3"]),
        "kill --all RTMIN+3",
    );
    wait_until(10, "sleep to end on SIGRTMIN+3", || {
        b.state(&id)["status"] == "stopped"
    });
    assert_ok(&b.oci(&["delete", &id]), "delete");
    let states: Vec<(String, Value)> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            let (name, js) = l.split_once(' ').unwrap();
            (name.to_string(), serde_json::from_str(js).unwrap())
        })
        .collect();
    for (name, st) in &states {
        match name.as_str() {
            "createRuntime" | "createContainer" => {
                assert_eq!(st["status"], "creating", "{name}: {st}");
                assert_eq!(st["pid"].as_i64(), Some(pid), "{name}: {st}");
            }
            _ => {
                assert_eq!(st["status"], "stopped", "{name}: {st}");
                assert_eq!(st["pid"].as_i64(), Some(0), "{name}: {st}");
            }
        }
    }
    assert_eq!(states.len(), 3, "{states:?}");
}

/// Found by a third hostile review: cgroup (and proc, sysfs) file systems mounted where the
/// config said, with its options (a new v1 hierarchy with a release agent ran a host program;
/// the host's whole memory hierarchy was writable); wildcard device numbers in
/// `linux.devices` allowed every device; `//` in cgroupsPath got past the check against
/// another container's cgroup; `linux.resources.unified` could write `cgroup.procs`; a FIFO as a
/// namespace path hung `create`; exec's `--log` was opened inside the container (a FIFO there
/// hung it).
#[test]
fn what_a_third_review_found_in_configs() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("review3");
    let cid = id("review3");
    let base = b.config();
    let refused = |c: &Value, what: &str| {
        b.set_config(c);
        let mut cmd = b.cmd();
        cmd.args(["create", "--bundle", b.b(), &cid])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let st = wait_child(&mut child, 20, &format!("create with {what} hung"));
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(!st.success(), "{what} was accepted");
        assert!(!b.root.join(&cid).exists());
        err
    };
    for (kind, dest, opts) in [
        (
            "cgroup",
            "/cg/rel",
            json!(["none", "name=vstrel", "release_agent=/bin/true"]),
        ),
        ("cgroup", "/cg/mem", json!(["memory"])),
        ("cgroup2", "/cg/v2", json!([])),
        ("proc", "/myproc", json!([])),
        ("sysfs", "/mysys", json!([])),
    ] {
        let mut c = base.clone();
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": dest, "type": kind, "source": kind, "options": opts}));
        let err = refused(&c, &format!("a {kind} mount at {dest}"));
        assert!(err.contains("is mounted only on"), "{err}");
    }
    let mut c = base.clone();
    c["linux"]["devices"] = json!([{"path": "/dev/foo", "type": "c", "major": -1, "minor": -1}]);
    let err = refused(&c, "a wildcard device node");
    assert!(err.contains("linux.devices[0]"), "{err}");
    let mut c = base.clone();
    c["linux"]["resources"]["unified"] = json!({"cgroup.procs": "1"});
    let err = refused(&c, "unified cgroup.procs");
    assert!(err.contains("cgroup.procs"), "{err}");
    let fifo = b.dir.join("ns-fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut c = base.clone();
    let ns: Vec<Value> = c["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] != "network")
        .cloned()
        .chain(std::iter::once(
            json!({"type": "network", "path": fifo.to_str().unwrap()}),
        ))
        .collect();
    c["linux"]["namespaces"] = json!(ns);
    let err = refused(&c, "a FIFO as namespace path");
    assert!(err.contains("not a namespace file"), "{err}");
    // Two spellings of one cgroup are one cgroup.
    let parent = format!("vst-oci-dbl-{}", std::process::id());
    let mut c = base.clone();
    c["process"]["args"] = json!(["true"]);
    c["linux"]["cgroupsPath"] = json!(format!("/{parent}/x"));
    b.set_config(&c);
    let a = id("review3-a");
    assert_ok(&b.oci(&["run", "-d", "--bundle", b.b(), &a]), "run -d A");
    wait_until(10, "A to stop", || b.state(&a)["status"] == "stopped");
    c["linux"]["cgroupsPath"] = json!(format!("/{parent}//x/"));
    let err = refused(&c, "another spelling of A's cgroup");
    assert!(err.contains(&a), "{err}");
    assert_ok(&b.oci(&["delete", &a]), "delete A");
    for e in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(e.path().join(&parent));
    }
    // exec's --log is the host's file, whatever the container has at that path.
    let mut c = base.clone();
    c["process"]["args"] = json!(["sleep", "1000"]);
    c["root"]["readonly"] = json!(false);
    b.set_config(&c);
    let e = id("review3-e");
    assert_ok(&b.oci(&["run", "-d", "--bundle", b.b(), &e]), "run -d");
    let log = b.dir.join("logdir").join("log.json");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let plant = format!(
        "mkdir -p {0} && mkfifo {0}/log.json",
        log.parent().unwrap().display()
    );
    assert_ok(&b.oci(&["exec", &e, "sh", "-c", &plant]), "plant a FIFO");
    let mut cmd = b.cmd();
    cmd.arg("--log")
        .arg(&log)
        .args(["--log-format", "json", "exec", &e, "/nonexistent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let st = wait_child(
        &mut child,
        20,
        "exec with --log hung on the container's FIFO",
    );
    assert!(!st.success());
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("nonexistent"), "{logged}");
    assert_ok(&b.oci(&["delete", "--force", &e]), "delete");
}

/// Found by a third hostile review: bind targets were checked by path and then mounted by path
/// again, so a volume shared with a sibling container could have a component swapped for a
/// symlink into /proc in between (a fake /proc/self/cgroup then made the runtime show the
/// host's cgroups and create a hierarchy). Targets are resolved by descriptor now, symlinks
/// refused, /proc and /sys refused: however the swaps fall, nothing lands there.
/// A thread exchanging two paths (renameat2 RENAME_EXCHANGE) as fast as it can, as a hostile
/// container would under the runtime's feet; stopped when dropped.
struct Exchanger {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Exchanger {
    fn start(a: &Path, b: &Path) -> Exchanger {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (a, b) = (
            std::ffi::CString::new(a.to_str().unwrap()).unwrap(),
            std::ffi::CString::new(b.to_str().unwrap()).unwrap(),
        );
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: renameat2(2) with valid C strings; RENAME_EXCHANGE = 2.
                unsafe {
                    libc::syscall(
                        libc::SYS_renameat2,
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        2,
                    )
                };
            }
        });
        Exchanger {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Exchanger {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn mount_targets_cannot_be_swapped_for_symlinks_while_they_are_made() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("swap");
    let vol = b.dir.join("vol");
    std::fs::create_dir_all(vol.join("a")).unwrap();
    std::os::unix::fs::symlink("/proc/self", vol.join("b")).unwrap();
    let fake = b.dir.join("fakecg");
    std::fs::write(&fake, "14:name=vstswap:/\n0::/\n").unwrap();
    let mut c = b.config();
    let ns: Vec<Value> = c["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] != "cgroup")
        .cloned()
        .collect();
    c["linux"]["namespaces"] = json!(ns);
    c["mounts"].as_array_mut().unwrap().extend([
        json!({"destination": "/data", "type": "bind", "source": vol.to_str().unwrap(),
               "options": ["rbind"]}),
        json!({"destination": "/data/a/cgroup", "type": "bind",
               "source": fake.to_str().unwrap(), "options": ["bind", "ro"]}),
    ]);
    c["process"]["args"] = json!(["cat", "/proc/self/cgroup"]);
    b.set_config(&c);
    let swapper = Exchanger::start(&vol.join("a"), &vol.join("b"));
    for i in 0..40 {
        let o = b.oci(&["run", "--bundle", b.b(), &id(&format!("swap{i}"))]);
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains("vstswap"),
            "run {i}: the bind landed on /proc/self/cgroup: {}",
            text(&o)
        );
    }
    drop(swapper);
    let host = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    assert!(!host.contains("vstswap"), "a hierarchy was created: {host}");
}

/// Found by a fourth hostile review: the checks that keep one container's cgroup from being
/// another's looked only at containers of the same state root, after the fact (two `create`s
/// at once, or with different `--root`s, could share a cgroup). Claims are now host-wide,
/// made under a lock, and released by `delete` or found stale when the container is gone.
#[test]
fn cgroup_claims_hold_across_state_roots_and_concurrent_creates() {
    if !require_root() {
        return;
    }
    let bundles: Vec<Bundle> = (0..4).map(|i| Bundle::new(&format!("claim{i}"))).collect();
    let parent = format!("vst-oci-claim-{}", std::process::id());
    for b in &bundles {
        let mut c = b.config();
        c["process"]["args"] = json!(["sleep", "1000"]);
        c["linux"]["cgroupsPath"] = json!(format!("/{parent}/x"));
        b.set_config(&c);
    }
    let cid = id("claim");
    // Four creates at once, each with its own state root: one wins.
    let results: Vec<bool> = std::thread::scope(|s| {
        let hs: Vec<_> = bundles
            .iter()
            .map(|b| s.spawn(|| b.oci(&["create", "--bundle", b.b(), &cid]).status.success()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|ok| **ok).count(),
        1,
        "creates that won the same cgroup: {results:?}"
    );
    let winner = results.iter().position(|ok| *ok).unwrap();
    let other = &bundles[(winner + 1) % 4];
    // Within and around the winner's, from another state root: refused, naming it.
    for path in [format!("/{parent}/x/in"), format!("/{parent}")] {
        let mut c = other.config();
        c["linux"]["cgroupsPath"] = json!(path);
        other.set_config(&c);
        let o = other.oci(&["create", "--bundle", other.b(), &cid]);
        assert!(
            !o.status.success() && text(&o).contains(&cid),
            "{path}: {}",
            text(&o)
        );
        assert!(!other.root.join(&cid).exists());
    }
    let mut c = other.config();
    c["linux"]["cgroupsPath"] = json!(format!("/{parent}/x"));
    other.set_config(&c);
    // The winner's state removed by hand (its processes killed first): its claim is stale.
    let w = &bundles[winner];
    let pid = init_pid_of(w, &cid);
    assert_ok(&w.oci(&["kill", &cid, "KILL"]), "kill");
    wait_until(10, "the init to die", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    std::fs::remove_dir_all(w.root.join(&cid)).unwrap();
    assert_ok(
        &other.oci(&["create", "--bundle", other.b(), &cid]),
        "create after the holder's state was removed",
    );
    // delete releases the claim.
    assert_ok(&other.oci(&["delete", "--force", &cid]), "delete");
    assert_ok(
        &w.oci(&["create", "--bundle", w.b(), &cid]),
        "create after delete",
    );
    assert_ok(&w.oci(&["delete", "--force", &cid]), "delete");
    // The engine's own guests' cgroups are not a container's.
    let mut c = other.config();
    c["linux"]["cgroupsPath"] = json!("/vservers/4242");
    other.set_config(&c);
    let o = other.oci(&["create", "--bundle", other.b(), &cid]);
    assert!(
        !o.status.success() && text(&o).contains("vservers"),
        "{}",
        text(&o)
    );
    drop(bundles);
    for e in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(e.path().join(&parent).join("x"));
        let _ = std::fs::remove_dir(e.path().join(&parent));
    }
    let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(&parent));
}

/// Found by a fourth hostile review: device nodes were made and given their mode by path (a
/// node swapped for a symlink in between had the symlink's target chmod'ed); `ps` of a
/// container without processes listed every host process; exec's terminal came from
/// whatever the container's /dev/ptmx led to.
#[test]
fn device_nodes_ps_and_exec_terminals_hold_against_the_container() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("review4");
    // A host file the container can name, and a directory below /dev it can change.
    let data = b.dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let victim = data.join("victim");
    std::fs::write(&victim, "secret").unwrap();
    std::fs::set_permissions(&victim, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let vol = b.dir.join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    let mut c = b.config();
    c["process"]["args"] = json!(["true"]);
    c["mounts"].as_array_mut().unwrap().extend([
        json!({"destination": "/data", "type": "bind", "source": data.to_str().unwrap(),
               "options": ["rbind"]}),
        json!({"destination": "/dev/vol", "type": "bind", "source": vol.to_str().unwrap(),
               "options": ["rbind"]}),
    ]);
    c["linux"]["devices"] = json!([{"path": "/dev/vol/n", "type": "c", "major": 1, "minor": 3,
                                    "fileMode": 0o666, "uid": 0, "gid": 0}]);
    b.set_config(&c);
    let swapper = Exchanger::start(&vol.join("n"), &vol.join("s"));
    for i in 0..60 {
        let _ = std::fs::remove_file(vol.join("n"));
        let _ = std::fs::remove_file(vol.join("s"));
        let _ = std::os::unix::fs::symlink("/data/victim", vol.join("s"));
        let _ = b.oci(&["run", "--bundle", b.b(), &id(&format!("dev{i}"))]);
        let mode = std::fs::metadata(&victim).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o7777,
            0o600,
            "run {i}: a host file took the device node's mode"
        );
    }
    drop(swapper);

    // ps of a container with no processes lists none.
    let mut c = b.config();
    let n = c["mounts"].as_array().unwrap().len();
    c["mounts"].as_array_mut().unwrap().truncate(n - 2);
    c["linux"]["devices"] = json!([]);
    c["process"]["args"] = json!(["true"]);
    b.set_config(&c);
    let cid = id("review4");
    assert_ok(&b.oci(&["run", "-d", "--bundle", b.b(), &cid]), "run -d");
    wait_until(10, "the container to stop", || {
        b.state(&cid)["status"] == "stopped"
    });
    let o = b.oci(&["ps", &cid]);
    assert_ok(&o, "ps");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(out.lines().count(), 1, "ps of an empty container: {out}");
    assert_ok(&b.oci(&["delete", &cid]), "delete");

    // exec --tty takes the pty from the container's devpts, not from its /dev/ptmx.
    c["process"]["args"] = json!([
        "sh",
        "-c",
        "rm -f /dev/ptmx && ln -s /dev/null /dev/ptmx && sleep 1000"
    ]);
    b.set_config(&c);
    assert_ok(&b.oci(&["run", "-d", "--bundle", b.b(), &cid]), "run -d");
    wait_until(10, "/dev/ptmx to be replaced", || {
        let pid = init_pid_of(&b, &cid);
        std::fs::symlink_metadata(format!("/proc/{pid}/root/dev/ptmx"))
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false)
    });
    let sock = b.dir.join("exec.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let mut e = b.cmd();
    e.args([
        "exec",
        "-t",
        "-d",
        "--console-socket",
        sock.to_str().unwrap(),
        &cid,
        "sh",
        "-c",
        "tty; sleep 2",
    ]);
    let (dir, sock2) = (b.dir.clone(), sock.clone());
    let t = std::thread::spawn(move || {
        let o = run_to_files(&mut e, &dir);
        if !o.status.success() {
            // Wake the accept below: the test fails instead of hanging.
            let _ = std::os::unix::net::UnixStream::connect(&sock2);
        }
        o
    });
    let master = receive_fd(&listener);
    let o = t.join().unwrap();
    assert_ok(&o, "exec -t with /dev/ptmx replaced");
    let mut f = std::fs::File::from(master);
    let mut out = String::new();
    let mut buf = [0u8; 256];
    while !out.contains('\n') {
        use std::io::Read;
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(out.contains("/dev/pts/"), "{out}");
    assert_ok(&b.oci(&["delete", "--force", &cid]), "delete");
}

/// Found by a fifth hostile review: prestart and createRuntime hooks ran before the init had
/// joined the namespaces its config names by path (a pod's sandbox network, IPC and UTS) and,
/// with a user namespace, before its id maps were written: a hook entering `$pid`'s network
/// namespace configured the host's.
#[test]
fn prestart_and_create_runtime_hooks_see_the_containers_namespaces() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("hookns");
    // A sandbox of its own: network, IPC and UTS namespaces held by a host process.
    let mut holder = Command::new("unshare")
        .args(["-n", "-i", "-u", "sleep", "1000"])
        .spawn()
        .unwrap();
    let hp = holder.id();
    let ns_of = |pid: u32, kind: &str| {
        std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    wait_until(10, "the sandbox's namespaces", || {
        ns_of(hp, "net") != ns_of(std::process::id(), "net")
    });
    let log = b.dir.join("hooks.log");
    let hook = |name: &str| {
        json!({"path": "/bin/sh", "args": ["sh", "-c", format!(
            "pid=$(sed 's/.*\"pid\":\\([0-9]*\\).*/\\1/'); echo {name} $(readlink /proc/$pid/ns/net) \
             $(readlink /proc/$pid/ns/ipc) $(readlink /proc/$pid/ns/uts) \
             maps=$(wc -l < /proc/$pid/uid_map) >> {}", log.display())]})
    };
    let mut c = b.config();
    let mut ns: Vec<Value> = c["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| !matches!(n["type"].as_str(), Some("network" | "ipc" | "uts")))
        .cloned()
        .collect();
    for (kind, file) in [("network", "net"), ("ipc", "ipc"), ("uts", "uts")] {
        ns.push(json!({"type": kind, "path": format!("/proc/{hp}/ns/{file}")}));
    }
    c["linux"]["namespaces"] = json!(ns);
    c["process"]["args"] = json!(["true"]);
    c["hooks"] = json!({"prestart": [hook("prestart")], "createRuntime": [hook("createRuntime")]});
    b.set_config(&c);
    let want = format!(
        "{} {} {}",
        ns_of(hp, "net"),
        ns_of(hp, "ipc"),
        ns_of(hp, "uts")
    );
    let o = b.oci(&["run", "--bundle", b.b(), &id("hookns")]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_ok(&o, "run");
    let text = std::fs::read_to_string(&log).unwrap();
    let seen: Vec<String> = text
        .lines()
        .map(|l| l.rsplit_once(" maps=").unwrap().0.to_string())
        .collect();
    assert_eq!(
        seen,
        [format!("prestart {want}"), format!("createRuntime {want}")],
        "the hooks saw other namespaces than the container's"
    );
    // A new user namespace: its id maps are written when the hooks run.
    let base = 400_000 + (std::process::id() % 1000) * 65536;
    let chown = Command::new("chown")
        .arg("-R")
        .arg(format!("{base}:{base}"))
        .arg(b.dir.join("rootfs"))
        .output()
        .unwrap();
    assert_ok(&chown, "chown the root file system to the mapped range");
    let mut c = b.config();
    let mut ns: Vec<Value> = c["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n.get("path").is_none())
        .cloned()
        .collect();
    for kind in ["network", "ipc", "uts", "user"] {
        ns.push(json!({ "type": kind }));
    }
    c["linux"]["namespaces"] = json!(ns);
    c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": base, "size": 65536}]);
    c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": base, "size": 65536}]);
    b.set_config(&c);
    std::fs::remove_file(&log).unwrap();
    assert_ok(&b.oci(&["run", "--bundle", b.b(), &id("hookns2")]), "run");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.lines()
            .map(|l| l.rsplit_once(' ').unwrap().1)
            .collect::<Vec<_>>(),
        ["maps=1", "maps=1"],
        "{text}"
    );
}

/// `readonlyPaths` cover every mount under the path, not just the top one (a tmpfs mounted
/// below a read-only path stays read-only), as the engine's own masks do.
#[test]
fn readonly_paths_hold_for_the_mounts_below_them() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("rosub");
    let mut c = b.config();
    c["mounts"].as_array_mut().unwrap().extend([
        json!({"destination": "/rw", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}),
        json!({"destination": "/rw/sub", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}),
    ]);
    c["linux"]["readonlyPaths"]
        .as_array_mut()
        .unwrap()
        .push(json!("/rw"));
    c["process"]["args"] = json!([
        "sh",
        "-c",
        "touch /rw/top 2>/dev/null && echo TOP-WRITABLE; touch /rw/sub/below 2>/dev/null && echo SUB-WRITABLE; echo checked"
    ]);
    b.set_config(&c);
    let id = id("rosub");
    let o = b.oci(&["run", "--bundle", b.b(), &id]);
    assert_ok(&o, "run");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.contains("checked"), "{}", text(&o));
    assert!(!out.contains("TOP-WRITABLE"), "{}", text(&o));
    assert!(
        !out.contains("SUB-WRITABLE"),
        "a mount below a read-only path stayed writable: {}",
        text(&o)
    );
}

/// Found by the seventh and eighth hostile reviews: on cgroup v1 a container with no
/// capability but containerd's CAP_SETFCAP made a user namespace, a cgroup namespace (rooted at
/// its own cgroup) and mounted the v1 hierarchies, whose root files are not kept from their
/// owner as on v2: it lifted its own memory, pids and CPU limits, from its init and then from
/// an exec'd process (exec still put processes in the limited cgroup itself); and it froze its
/// own cgroup so that `delete --force` failed for ever. Its processes now live in a leaf below
/// the cgroup that carries the limits, and a kill thaws every freezer below first.
#[test]
fn a_container_cannot_lift_its_own_cgroup_limits() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("lift");
    install_with_libs(
        &bin("vserver-oci-check"),
        &b.dir.join("rootfs"),
        "/vserver-oci-check",
    );
    let mut c = b.config();
    c["process"]["args"] = json!([
        "sh",
        "-c",
        // A child of the init (which keeps the container's namespaces for exec to join).
        "/vserver-oci-check --lift-cgroup-limits > /lift.log 2>&1; true"
    ]);
    c["root"]["readonly"] = json!(false);
    // containerd's default set has CAP_SETFCAP, which mapping uid 0 into a user namespace
    // needs (Linux 5.12, user_namespaces(7)).
    for set in ["bounding", "effective", "permitted"] {
        c["process"]["capabilities"][set]
            .as_array_mut()
            .unwrap()
            .push(json!("CAP_SETFCAP"));
    }
    c["linux"]["resources"] = json!({
        "pids": {"limit": 50},
        "memory": {"limit": 67108864},
        "cpu": {"quota": 20000, "period": 100000}
    });
    b.set_config(&c);
    let id = id("lift");
    assert_ok(&b.oci(&["create", "--bundle", b.b(), &id]), "create");
    assert_ok(&b.oci(&["start", &id]), "start");
    // The same from a process of `exec`, as a probe or `kubectl exec` runs one.
    let mut p = c["process"].clone();
    p["args"] = json!([
        "sh",
        "-c",
        "/vserver-oci-check --lift-cgroup-limits > /lift-exec.log 2>&1"
    ]);
    let pf = b.dir.join("process.json");
    std::fs::write(&pf, p.to_string()).unwrap();
    assert_ok(
        &b.oci(&["exec", "--detach", "--process", pf.to_str().unwrap(), &id]),
        "exec",
    );
    let mut tried = String::new();
    for log in ["lift.log", "lift-exec.log"] {
        let log = b.dir.join("rootfs").join(log);
        wait_until(20, "the container tried to lift its limits", || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("LIFTED"))
        });
        tried += &std::fs::read_to_string(&log).unwrap();
    }
    let pids = cgroup_file(&id, "pids", "pids.max");
    let mem = cgroup_file(&id, "memory", "memory.limit_in_bytes")
        .or_else(|| cgroup_file(&id, "memory", "memory.max"));
    let cpu =
        cgroup_file(&id, "cpu", "cpu.cfs_quota_us").or_else(|| cgroup_file(&id, "cpu", "cpu.max"));
    // Then it freezes the cgroup its processes are in.
    p["args"] = json!([
        "sh",
        "-c",
        "/vserver-oci-check --freeze-own-cgroup > /freeze.log 2>&1"
    ]);
    std::fs::write(&pf, p.to_string()).unwrap();
    assert_ok(
        &b.oci(&["exec", "--detach", "--process", pf.to_str().unwrap(), &id]),
        "exec",
    );
    let flog = b.dir.join("rootfs/freeze.log");
    wait_until(20, "the container tried to freeze itself", || {
        std::fs::read_to_string(&flog)
            .is_ok_and(|t| t.contains("FREEZING") || t.contains("no freezer"))
    });
    if cgroup_file(&id, "freezer", "payload/freezer.state").is_some() {
        wait_until(10, "the leaf to freeze", || {
            cgroup_file(&id, "freezer", "payload/freezer.state").as_deref() == Some("FROZEN")
        });
        // A container frozen by itself is paused (as runc says), exec says so instead of
        // hanging, and kill KILL ends it (the v1 tree is thawed first).
        assert_eq!(b.state(&id)["status"], "paused");
        let o = b.oci(&["exec", &id, "true"]);
        assert!(
            !o.status.success() && text(&o).contains("paused"),
            "{}",
            text(&o)
        );
        assert_ok(&b.oci(&["kill", &id, "KILL"]), "kill KILL");
        wait_until(10, "the self-frozen container to stop", || {
            b.state(&id)["status"] == "stopped"
        });
    }
    assert_ok(
        &b.oci(&["delete", "--force", &id]),
        "delete of a frozen container",
    );
    assert!(cgroups_of(&id).is_empty(), "{:?}", cgroups_of(&id));
    assert_eq!(pids.as_deref(), Some("50"), "{tried}");
    assert_eq!(mem.as_deref(), Some("67108864"), "{tried}");
    assert!(
        cpu.as_deref().is_some_and(|c| c.starts_with("20000")),
        "{cpu:?} {tried}"
    );
}

/// Found by a reading against runc: a container that manages its own cgroups (systemd, Docker
/// in a pod) moves its processes into cgroups below its own and may enable controllers there,
/// after which its own cgroup takes no process (EBUSY on v2) and every exec failed. An exec'd
/// process now goes where the init is, within the container's tree. (The test moves the init
/// from the host, as the container would from inside.)
#[test]
fn exec_follows_an_init_that_moved_into_its_own_child_cgroup() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("inner");
    b.args(&["sleep", "1000"]);
    let id = id("inner");
    assert_ok(&b.oci(&["run", "-d", "--bundle", b.b(), &id]), "run -d");
    let init = init_pid_of(&b, &id);
    for dir in cgroups_of(&id) {
        let holds = |d: &Path| {
            std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .any(|l| l == init.to_string())
        };
        let base = if holds(&dir.join("payload")) {
            dir.join("payload")
        } else {
            dir.clone()
        };
        if !holds(&base) {
            continue;
        }
        std::fs::create_dir(base.join("inner")).unwrap();
        std::fs::write(base.join("inner/cgroup.procs"), init.to_string()).unwrap();
        // On v2 with controllers: the container's cgroup becomes an inner node.
        let _ = std::fs::write(base.join("cgroup.subtree_control"), "+pids");
    }
    let pidf = b.dir.join("exec.pid");
    assert_ok(
        &b.oci(&[
            "exec",
            "-d",
            "--pid-file",
            pidf.to_str().unwrap(),
            &id,
            "sleep",
            "30",
        ]),
        "exec into a container whose init moved below its cgroup",
    );
    let pid = std::fs::read_to_string(&pidf).unwrap().trim().to_string();
    let cg = |p: &str| std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap();
    assert_eq!(cg(&pid), cg(&init.to_string()));
    assert!(cg(&pid).contains("/inner"), "{}", cg(&pid));
    assert_ok(&b.oci(&["delete", "--force", &id]), "delete --force");
    assert!(cgroups_of(&id).is_empty(), "{:?}", cgroups_of(&id));
}

/// Found by a tenth hostile review: with a seccomp filter that refuses setsid(2), an exec'd
/// process stayed in the caller's session with its controlling terminal (TIOCSTI into the
/// administrator's shell). The intermediate starts a session of its own before any filter, so
/// the command is never in the caller's, filter or not.
#[test]
fn an_exec_never_holds_the_callers_terminal() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("notty");
    let mut c = b.config();
    c["process"]["args"] = json!(["sleep", "1000"]);
    c["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["setsid"], "action": "SCMP_ACT_ERRNO"}]});
    b.set_config(&c);
    let id = id("notty");
    assert_ok(&b.oci(&["run", "-d", "--bundle", b.b(), &id]), "run -d");
    // The caller on a terminal of its own (script(1) gives it one as controlling terminal).
    let inner = format!(
        "{} --root {} exec {id} sh -c 'cut -d\" \" -f7 /proc/self/stat; echo x > /dev/tty && echo TTY-OPEN'",
        bin("vserver-oci").display(),
        b.root.display()
    );
    let o = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        !out.contains("TTY-OPEN"),
        "the caller's terminal was reachable: {out}"
    );
    assert_eq!(
        out.lines().next().map(str::trim),
        Some("0"),
        "a controlling terminal inside: {out}"
    );
    assert_ok(&b.oci(&["delete", "--force", &id]), "delete --force");
}

/// Found by a tenth hostile review: a seccomp filter refusing write(2) made the intermediate
/// unable to hand the command's pid over, and exec then waited forever for an error pipe the
/// command (waiting for its go) still held. The exec now fails, and leaves no process.
#[test]
fn an_exec_whose_filter_refuses_write_fails_instead_of_hanging() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("nowrite");
    let mut c = b.config();
    c["process"]["args"] = json!(["sleep", "1000"]);
    c["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["write", "writev"], "action": "SCMP_ACT_ERRNO"}]});
    b.set_config(&c);
    let id = id("nowrite");
    assert_ok(&b.oci(&["run", "-d", "--bundle", b.b(), &id]), "run -d");
    let done = exits_within(b.cmd().args(["exec", &id, "sh", "-c", "exit 3"]), 20);
    let st = done.expect("exec hung");
    assert!(!st.success());
    // Nothing of the exec is left in the container's pid namespace (the command was there,
    // outside its cgroup): only the init.
    let ns = std::fs::read_link(format!("/proc/{}/ns/pid", init_pid_of(&b, &id))).unwrap();
    let in_ns = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|p| p.parse::<u32>().is_ok())
            .filter(|p| {
                std::fs::read_link(format!("/proc/{p}/ns/pid"))
                    .ok()
                    .as_ref()
                    == Some(&ns)
            })
            .count()
    };
    wait_until(5, "the exec's command to go", || in_ns() == 1);
    assert_ok(&b.oci(&["delete", "--force", &id]), "delete --force");
}

/// HOME comes from the container's /etc/passwd when the environment has none; an image whose
/// /etc/passwd is a FIFO must hang neither create nor exec (HOME is then `/`).
#[test]
fn home_from_passwd_and_a_fifo_passwd_hangs_nothing() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("fifopw");
    let mut c = b.config();
    c["process"]["args"] = json!(["sleep", "1000"]);
    c["process"]["env"] = json!(["PATH=/bin:/sbin"]);
    b.set_config(&c);
    let id = id("fifopw");
    assert_ok(&b.oci(&["run", "-d", "--bundle", b.b(), &id]), "run -d");
    let o = b.oci(&["exec", &id, "sh", "-c", "echo $HOME"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "/root",
        "{}",
        text(&o)
    );
    assert_ok(&b.oci(&["delete", "--force", &id]), "delete");
    let pw = b.dir.join("rootfs/etc/passwd");
    std::fs::remove_file(&pw).unwrap();
    nix::unistd::mkfifo(&pw, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let id = format!("{id}b");
    assert_ok(
        &b.oci(&["run", "-d", "--bundle", b.b(), &id]),
        "run -d with a FIFO passwd",
    );
    let o = b.oci(&["exec", &id, "sh", "-c", "echo $HOME"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "/",
        "{}",
        text(&o)
    );
    assert_ok(&b.oci(&["delete", "--force", &id]), "delete");
}

/// Found by an eleventh hostile review: a seccomp filter forging EINTR on read(2) made the exec
/// intermediate and command retry forever, each spinning a CPU (the intermediate outside the
/// container's cgroup). Waits give up after a run of EINTRs and the exec fails.
#[test]
fn an_exec_under_a_filter_forging_eintr_ends() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("eintr");
    let mut c = b.config();
    c["process"]["args"] = json!(["sleep", "1000"]);
    c["process"]["noNewPrivileges"] = json!(true);
    c["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 4, "args": [{"index": 0, "value": 3, "op": "SCMP_CMP_GE"}]}]});
    b.set_config(&c);
    let id = id("eintr");
    assert_ok(&b.oci(&["run", "-d", "--bundle", b.b(), &id]), "run -d");
    let done = exits_within(b.cmd().args(["exec", "--detach", &id, "true"]), 20);
    assert!(done.is_some(), "exec spun forever");
    assert_ok(&b.oci(&["delete", "--force", &id]), "delete --force");
}

/// Found by an eleventh hostile review: `process.scheduler` was applied with the runtime's
/// power, so a container without CAP_SYS_NICE got SCHED_DEADLINE, which its CPU quota does
/// not bound. The policy is now set with the process's own credentials.
#[test]
fn a_real_time_scheduler_needs_the_containers_own_cap_sys_nice() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("dl");
    let mut c = b.config();
    c["process"]["args"] = json!(["sleep", "1000"]);
    c["process"]["scheduler"] = json!({"policy": "SCHED_DEADLINE", "runtime": 900_000_000u64, "deadline": 1_000_000_000u64, "period": 1_000_000_000u64});
    b.set_config(&c);
    let id = id("dl");
    let o = b.oci(&["run", "-d", "--bundle", b.b(), &id]);
    assert!(
        !o.status.success() && text(&o).contains("process.scheduler"),
        "{}",
        text(&o)
    );
    let _ = b.oci(&["delete", "--force", &id]);
}

/// Found by an eleventh hostile review: a container that froze a cgroup of its own below its
/// leaf, with its init in it, read as running and every exec followed the init into the frozen
/// cgroup and hung. The state is paused, and an exec (with --ignore-paused) goes to the leaf.
/// (The test freezes from the host, as the container would through its own namespaces.)
#[test]
fn an_init_in_a_frozen_child_cgroup_reads_paused_and_exec_does_not_follow() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("frzc");
    b.args(&["sleep", "1000"]);
    let id = id("frzc");
    assert_ok(&b.oci(&["run", "-d", "--bundle", b.b(), &id]), "run -d");
    let init = init_pid_of(&b, &id);
    let Some(leaf) = cgroups_of(&id)
        .into_iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/freezer"))
        .map(|d| d.join("payload"))
        .filter(|d| d.is_dir())
    else {
        eprintln!("skipped: no v1 freezer leaf on this host");
        let _ = b.oci(&["delete", "--force", &id]);
        return;
    };
    let x = leaf.join("x");
    std::fs::create_dir(&x).unwrap();
    std::fs::write(x.join("cgroup.procs"), init.to_string()).unwrap();
    std::fs::write(x.join("freezer.state"), "FROZEN").unwrap();
    wait_until(10, "the child cgroup to freeze", || {
        std::fs::read_to_string(x.join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN")
    });
    assert_eq!(b.state(&id)["status"], "paused");
    let pidf = b.dir.join("exec.pid");
    assert_ok(
        &b.oci(&[
            "exec",
            "--ignore-paused",
            "-d",
            "--pid-file",
            pidf.to_str().unwrap(),
            &id,
            "sleep",
            "30",
        ]),
        "exec beside a frozen init",
    );
    let pid = std::fs::read_to_string(&pidf).unwrap().trim().to_string();
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(!cg.contains("/payload/x"), "{cg}");
    assert_ok(&b.oci(&["delete", "--force", &id]), "delete --force");
    assert!(cgroups_of(&id).is_empty(), "{:?}", cgroups_of(&id));
}

/// Run `cmd` (output discarded) and wait at most `secs` seconds for it: its status, or None
/// when it was still running then (it is killed).
fn exits_within(cmd: &mut Command, secs: u64) -> Option<std::process::ExitStatus> {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..secs * 10 {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Found by a twelfth hostile review: `process.ioPriority` was set with the runtime's power,
/// so a container without the capability got the real-time I/O class. It is now set by the
/// process itself after its user switch.
#[test]
fn a_real_time_io_priority_needs_the_containers_own_capability() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("ioprt");
    let mut c = b.config();
    c["process"]["args"] = json!(["sleep", "1000"]);
    c["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_RT", "priority": 0});
    b.set_config(&c);
    let id = id("ioprt");
    let o = b.oci(&["run", "-d", "--bundle", b.b(), &id]);
    assert!(
        !o.status.success() && text(&o).contains("process.ioPriority"),
        "{}",
        text(&o)
    );
    let _ = b.oci(&["delete", "--force", &id]);
}

/// Found by a twelfth hostile review: a filter making wait4(2) return 0 kept the exec
/// intermediate looping (outside the container's cgroup); non-results are bounded like EINTR.
#[test]
fn an_exec_under_a_filter_faking_wait4_ends() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("wait0");
    let mut c = b.config();
    c["process"]["args"] = json!(["sleep", "1000"]);
    c["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["wait4"], "action": "SCMP_ACT_ERRNO", "errnoRet": 0}]});
    b.set_config(&c);
    let id = id("wait0");
    assert_ok(&b.oci(&["run", "-d", "--bundle", b.b(), &id]), "run -d");
    assert!(
        exits_within(b.cmd().args(["exec", &id, "echo", "hi"]), 20).is_some(),
        "exec spun forever"
    );
    assert_ok(&b.oci(&["delete", "--force", &id]), "delete --force");
}

/// Found by a twelfth hostile review: a `create` that never heard from its init (a filter
/// faking close(2)) and was killed left the init, its cgroups and its claim, and `delete
/// --force` found no state. The state is written as soon as the init exists.
#[test]
fn delete_force_removes_what_a_killed_create_left() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("killcr");
    let mut c = b.config();
    c["process"]["args"] = json!(["sleep", "1000"]);
    c["process"]["noNewPrivileges"] = json!(false);
    c["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["close"], "action": "SCMP_ACT_ERRNO", "errnoRet": 0}]});
    b.set_config(&c);
    let id = id("killcr");
    // The create hangs waiting for its init; it is killed as containerd kills a runtime.
    let _ = exits_within(b.cmd().args(["create", "--bundle", b.b(), &id]), 5);
    let st = b.state(&id);
    let pid = st["pid"].as_i64().unwrap_or(0);
    assert!(pid > 0, "no state after a killed create: {st}");
    assert_ok(&b.oci(&["delete", "--force", &id]), "delete --force");
    // Gone, or a zombie waiting for this machine's pid 1 to reap it (the create that was its
    // parent is dead).
    let state = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    assert!(
        state.is_empty() || state.contains("State:\tZ"),
        "the init of the killed create lives on: {state}"
    );
    assert!(cgroups_of(&id).is_empty(), "{:?}", cgroups_of(&id));
}

/// Found by a thirteenth hostile review: every `linux.devices` entry was allowed read-write
/// after the config's own device rules, so a config listing 5:1 opened the host's system
/// console whatever `resources.devices` denied. The listed nodes are allowed before the
/// config's rules (which keep the last word) and 5:1 never.
#[test]
fn listed_devices_do_not_override_the_configs_denials_or_open_the_console() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("devord");
    let mut c = b.config();
    c["process"]["args"] = json!([
        "sh",
        "-c",
        "echo x > /dev/vscon && echo CONSOLE; echo x > /dev/vsnull && echo NULL"
    ]);
    c["linux"]["devices"] = json!([
        {"path": "/dev/vscon", "type": "c", "major": 5, "minor": 1, "fileMode": 0o600},
        {"path": "/dev/vsnull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666}
    ]);
    c["linux"]["resources"]["devices"] = json!([{"allow": false, "access": "rwm"}]);
    b.set_config(&c);
    let id = id("devord");
    let o = b.oci(&["run", "--bundle", b.b(), &id]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        !out.contains("CONSOLE"),
        "the host's console was written: {}",
        text(&o)
    );
    // 1:3 is one of the engine's own nodes' numbers: allowed after the rules.
    assert!(out.contains("NULL"), "{}", text(&o));
    let _ = b.oci(&["delete", "--force", &id]);
    // Without any rule of its own the config's listed nodes work (but 5:1 still not).
    c["linux"]["resources"]["devices"] = json!([]);
    b.set_config(&c);
    let o = b.oci(&["run", "--bundle", b.b(), &id]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        !out.contains("CONSOLE"),
        "the host's console was written: {}",
        text(&o)
    );
    let _ = b.oci(&["delete", "--force", &id]);
}

/// Found by a thirteenth hostile review: with the state written as soon as the init exists, a
/// container still being created read as `created`, and `exec` ran a process before the root
/// was set up (in the host's file system). It reads `creating` until create has finished, and
/// exec and start refuse it.
#[test]
fn a_container_being_created_takes_no_exec_or_start() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("creating");
    let mut c = b.config();
    c["process"]["args"] = json!(["sleep", "1000"]);
    c["hooks"] = json!({"prestart": [{"path": "/bin/sleep", "args": ["sleep", "3"]}]});
    b.set_config(&c);
    let id = id("creating");
    let mut create = b
        .cmd()
        .args(["create", "--bundle", b.b(), &id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(10, "the state to appear", || {
        serde_json::from_slice::<Value>(&b.oci(&["state", &id]).stdout)
            .is_ok_and(|v| v["status"] == "creating")
    });
    let o = b.oci(&["exec", &id, "true"]);
    assert!(
        !o.status.success(),
        "exec into a container being created ran"
    );
    let o = b.oci(&["start", &id]);
    assert!(
        !o.status.success(),
        "start of a container being created ran"
    );
    assert!(create.wait().unwrap().success());
    assert_eq!(b.state(&id)["status"], "created");
    assert_ok(&b.oci(&["delete", "--force", &id]), "delete --force");
}

/// Found by a thirteenth hostile review: a create killed after it made the container's
/// cgroups but before its init existed (hung opening a namespace path on a stalled file
/// system) left the cgroups and the claim, and `delete --force` found no state. The state is
/// written as soon as the cgroups exist.
#[test]
fn delete_force_removes_the_cgroups_of_a_create_killed_before_its_init() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("preinit");
    b.args(&["sleep", "1000"]);
    let id = id("preinit");
    let pause = b.dir.join("pause");
    let mut create = b.cmd();
    create
        .args(["create", "--bundle", b.b(), &id])
        .env("VSERVER_PAUSE_AT", "oci-create-before-init")
        .env("VSERVER_PAUSE_FILE", &pause)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = create.spawn().unwrap();
    wait_until(20, "create to pause before its init", || {
        std::fs::read_to_string(&pause)
            .unwrap_or_default()
            .contains("paused oci-create-before-init")
    });
    assert!(!cgroups_of(&id).is_empty(), "no cgroup made yet");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(b.state(&id)["status"], "creating");
    assert_ok(&b.oci(&["delete", "--force", &id]), "delete --force");
    assert!(cgroups_of(&id).is_empty(), "{:?}", cgroups_of(&id));
}

/// Review 14: a bind of a shared host mount was a peer of it (the clone was made before the
/// container's namespace turned private), so mounts nested below a volume were made on the
/// host and stayed after delete, and a container's own mounts reached the host. Every bind is
/// private: nothing mounted for or in the container shows on the host.
#[test]
fn binds_of_shared_host_mounts_do_not_propagate() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("prop");
    let vol = b.dir.join("vol");
    let marker = b.dir.join("marker");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::create_dir_all(&marker).unwrap();
    std::fs::write(marker.join("cfg"), "x").unwrap();
    /// Unmounts the test's shared volume (and whatever a failure left on it) when dropped.
    struct Shared(PathBuf);
    impl Drop for Shared {
        fn drop(&mut self) {
            for _ in 0..8 {
                let _ = Command::new("umount").arg("-l").arg(&self.0).output();
            }
        }
    }
    let _shared = Shared(vol.clone());
    assert_ok(
        &sh_output(&format!(
            "mount --bind {0} {0} && mount --make-shared {0}",
            vol.display()
        )),
        "shared volume",
    );
    let mut c = b.config();
    c["mounts"].as_array_mut().unwrap().extend([
        json!({"destination": "/data", "type": "bind", "source": vol, "options": ["rbind", "rprivate"]}),
        json!({"destination": "/data/cfg", "type": "bind", "source": marker, "options": ["rbind", "ro", "rprivate"]}),
    ]);
    // CAP_SYS_ADMIN in its own mount namespace: its mounts must stay there.
    for set in ["bounding", "effective", "permitted"] {
        c["process"]["capabilities"][set]
            .as_array_mut()
            .unwrap()
            .push(json!("CAP_SYS_ADMIN"));
    }
    b.set_config(&c);
    b.args(&[
        "sh",
        "-c",
        "mkdir -p /data/evil && mount -t tmpfs evil /data/evil; grep ' /data' /proc/self/mountinfo",
    ]);
    let id = id("prop");
    let o = b.oci(&["run", "--bundle", b.b(), &id]);
    assert_ok(&o, "run");
    let inside = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(inside.contains(" /data "), "{inside}");
    assert!(
        !inside.contains("shared:"),
        "a container mount is a peer of a host mount:\n{inside}"
    );
    let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let leaked: Vec<&str> = host
        .lines()
        .filter(|l| l.contains(&format!("{}/", vol.display())))
        .collect();
    assert!(leaked.is_empty(), "mounts left on the host: {leaked:#?}");
}

/// Review 14: the init looked up the image's /etc/passwd (for HOME) while it still held the
/// runtime's host directory fds, so an `etc` symlink through /proc/self/fd/N read a host file.
/// Every such fd is closed before the image's paths are looked up.
#[test]
fn image_paths_cannot_reach_the_runtimes_fds() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("fdleak");
    let marker = b.dir.join("marker");
    std::fs::create_dir_all(&marker).unwrap();
    std::fs::write(
        marker.join("passwd"),
        "x:x:0:0::/LEAKED-HOST-FILE:/bin/sh\n",
    )
    .unwrap();
    let etc = b.dir.join("rootfs/etc");
    let _ = std::fs::remove_dir_all(&etc);
    let mut c = b.config();
    c["process"]["env"] = json!(["PATH=/bin"]);
    b.set_config(&c);
    b.args(&["sh", "-c", "echo HOME=$HOME"]);
    let up = "../".repeat(16);
    for fd in 3..=9 {
        let _ = std::fs::remove_file(&etc);
        std::os::unix::fs::symlink(
            format!(
                "/proc/self/fd/{fd}/{up}{}",
                marker.display().to_string().trim_start_matches('/')
            ),
            &etc,
        )
        .unwrap();
        let id = id(&format!("fdleak{fd}"));
        let o = b.oci(&["run", "--bundle", b.b(), &id]);
        assert!(
            !text(&o).contains("LEAKED-HOST-FILE"),
            "fd {fd}: the image read a host file: {}",
            text(&o)
        );
    }
}

/// Issue 15, item 16: what is refused (seccomp notify, no new mount namespace, joining a mount
/// namespace by path) is refused at once, naming the field, and leaves nothing behind; never a
/// hang (each run is bounded here by timeout(1)).
#[test]
fn unsupported_configs_are_refused_at_once_by_field() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("refuse16");
    let base = b.config();
    let without_mount_ns = |c: &mut Value| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "mount");
    };
    type Change = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "linux.seccomp.listenerPath",
            Box::new(|c: &mut Value| {
                c["linux"]["seccomp"] = json!({
                    "defaultAction": "SCMP_ACT_ALLOW",
                    "listenerPath": "/run/nonexistent-seccomp-agent.sock",
                    "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
                });
            }),
        ),
        ("linux.namespaces", Box::new(without_mount_ns)),
        (
            "linux.namespaces[",
            Box::new(|c: &mut Value| {
                for n in c["linux"]["namespaces"].as_array_mut().unwrap() {
                    if n["type"] == "mount" {
                        n["path"] = json!("/proc/1/ns/mnt");
                    }
                }
            }),
        ),
    ];
    for (i, (field, change)) in cases.iter().enumerate() {
        let mut c = base.clone();
        change(&mut c);
        b.set_config(&c);
        let id = id(&format!("refuse16-{i}"));
        let mut cmd = Command::new("timeout");
        cmd.arg("60")
            .arg(bin("vserver-oci"))
            .arg("--root")
            .arg(&b.root)
            .args(["run", "--bundle", b.b(), &id])
            .stdin(Stdio::null());
        let o = run_to_files(&mut cmd, &b.dir);
        assert_ne!(o.status.code(), Some(124), "{field}: the run hung");
        assert!(!o.status.success(), "{field}: accepted");
        assert!(text(&o).contains(field), "{field}: {}", text(&o));
        assert!(!b.root.join(&id).exists(), "{field}: state left");
        assert!(cgroups_of(&id).is_empty(), "{field}: cgroups left");
    }
}
