//! vserver-oci's conformance suite, on the idea of the public ones: a driver that only speaks
//! the runtime's command line and writes a config.json per case, and a checker
//! (`vserver-oci-check`) run as the container's process, which reads the spec it was given and
//! reports every property that does not hold (namespaces, hostname, mounts, masked and
//! read-only paths, rlimits, capability sets, user, cwd, env, sysctls, devices, seccomp). The
//! driver checks what only the host sees: cgroup limits, the pid file, hooks' order and
//! environment, the state JSON's schema, and the lifecycle's wrong-state errors. Each case
//! cleans up after itself, even when it fails.

mod common;
use common::*;
use serde_json::{json, Value};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Case {
    dir: PathBuf,
    root: PathBuf,
    id: String,
}

impl Case {
    fn new(tag: &str) -> Case {
        let dir = std::env::temp_dir().join(format!("vst-conf-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rootfs = dir.join("rootfs");
        busybox_tree(&rootfs);
        std::fs::set_permissions(&rootfs, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        install_with_libs(&bin("vserver-oci-check"), &rootfs, "/vserver-oci-check");
        let c = Case {
            root: dir.join("state"),
            id: format!("{tag}-{}", std::process::id()),
            dir,
        };
        assert_ok(
            &c.oci(&["spec", "--bundle", c.dir.to_str().unwrap()]),
            "spec",
        );
        c
    }

    fn oci(&self, args: &[&str]) -> Output {
        run_to_files(
            Command::new(bin("vserver-oci"))
                .arg("--root")
                .arg(&self.root)
                .args(args)
                .stdin(Stdio::null()),
            &self.dir,
        )
    }

    /// The default spec with the checker as its process and the host's namespace inodes in
    /// its environment.
    fn base(&self) -> Value {
        let mut c: Value =
            serde_json::from_str(&std::fs::read_to_string(self.dir.join("config.json")).unwrap())
                .unwrap();
        c["process"]["args"] = json!(["/vserver-oci-check", "/config.json"]);
        let mut env: Vec<Value> = c["process"]["env"].as_array().cloned().unwrap();
        for ns in ["pid", "net", "ipc", "uts", "mnt", "cgroup"] {
            let ino = std::fs::metadata(format!("/proc/self/ns/{ns}"))
                .unwrap()
                .ino();
            env.push(json!(format!("HOST_NS_{ns}={ino}")));
        }
        c["process"]["env"] = json!(env);
        c
    }

    /// Write `spec` (also into the root file system, where the checker reads it), run it, and
    /// return the checker's report; the container is gone afterwards.
    fn run(&self, spec: &Value) -> (Output, String) {
        let text = serde_json::to_string_pretty(spec).unwrap();
        std::fs::write(self.dir.join("config.json"), &text).unwrap();
        std::fs::write(self.dir.join("rootfs/config.json"), &text).unwrap();
        let o = self.oci(&["run", "--bundle", self.dir.to_str().unwrap(), &self.id]);
        let report = String::from_utf8_lossy(&o.stdout).to_string();
        (o, report)
    }

    /// Write `spec` as the bundle's config.json and `run -d` it.
    fn run_detached(&self, spec: &Value) -> Output {
        std::fs::write(
            self.dir.join("config.json"),
            serde_json::to_string(spec).unwrap(),
        )
        .unwrap();
        self.oci(&[
            "run",
            "-d",
            "--bundle",
            self.dir.to_str().unwrap(),
            &self.id,
        ])
    }

    fn expect_pass(&self, what: &str, spec: &Value) {
        let (o, report) = self.run(spec);
        assert!(
            o.status.success() && report.contains("DONE") && !report.contains("FAIL"),
            "{what}: {}",
            text(&o)
        );
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let _ = self.oci(&["delete", "--force", &self.id]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_default_spec_holds_inside() {
    if !require_root() {
        return;
    }
    let c = Case::new("default");
    c.expect_pass("the default spec", &c.base());
    // Any 1.x version is accepted (Debian 12's crun refuses 1.3.0 written by suites).
    let mut s = c.base();
    s["ociVersion"] = json!("1.3.0");
    c.expect_pass("ociVersion 1.3.0", &s);
}

#[test]
fn user_cwd_env_rlimits_and_oom_score_hold() {
    if !require_root() {
        return;
    }
    let c = Case::new("user");
    let mut s = c.base();
    s["root"]["readonly"] = json!(false);
    s["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [5, 6], "umask": 18});
    s["process"]["cwd"] = json!("/tmp");
    s["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!("GREETING=hello world"));
    s["process"]["rlimits"] = json!([
        {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1000},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
        {"type": "RLIMIT_NPROC", "soft": 300, "hard": 300}
    ]);
    s["process"]["oomScoreAdj"] = json!(500);
    s["process"]["noNewPrivileges"] = json!(false);
    // A user without ambient capabilities keeps none across execve: only the bounding set.
    s["process"]["capabilities"] = json!({"bounding": ["CAP_KILL"]});
    c.expect_pass("user, cwd, env, rlimits, oom score", &s);
}

#[test]
fn capability_sets_hold_for_root_and_for_a_user_with_ambient_ones() {
    if !require_root() {
        return;
    }
    let c = Case::new("caps");
    let mut s = c.base();
    let set = json!([
        "CAP_CHOWN",
        "CAP_KILL",
        "CAP_NET_RAW",
        "CAP_SETUID",
        "CAP_SETGID"
    ]);
    s["process"]["capabilities"] = json!({"bounding": set, "effective": set, "permitted": set});
    c.expect_pass("root's capability sets", &s);
    let one = json!(["CAP_NET_BIND_SERVICE"]);
    s["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    s["process"]["capabilities"] = json!({
        "bounding": one, "effective": one, "permitted": one, "inheritable": one, "ambient": one
    });
    c.expect_pass("a user's ambient capability", &s);
}

#[test]
fn mounts_masks_readonly_paths_devices_and_sysctls_hold() {
    if !require_root() {
        return;
    }
    let c = Case::new("mounts");
    let data = c.dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), "x").unwrap();
    let mut s = c.base();
    s["mounts"].as_array_mut().unwrap().extend([
        json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "size=1m", "mode=1777"]}),
        json!({"destination": "/data", "type": "bind", "source": data.to_str().unwrap(), "options": ["rbind", "ro"]}),
    ]);
    s["linux"]["maskedPaths"]
        .as_array_mut()
        .unwrap()
        .push(json!("/proc/loadavg"));
    s["linux"]["readonlyPaths"]
        .as_array_mut()
        .unwrap()
        .push(json!("/proc/tty"));
    s["linux"]["devices"] = json!([{"path": "/dev/vsnull", "type": "c", "major": 1, "minor": 3, "fileMode": 432, "uid": 0, "gid": 0}]);
    s["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1", "kernel.shmmax": "123456789"});
    c.expect_pass("mounts, masks, devices, sysctls", &s);
}

#[test]
fn seccomp_rules_and_joined_namespaces_hold() {
    if !require_root() {
        return;
    }
    let c = Case::new("seccomp");
    let mut s = c.base();
    s["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}]
    });
    // Join a network namespace the test made.
    let mut holder = Command::new("unshare")
        .args(["--net", "sleep", "60"])
        .spawn()
        .unwrap();
    let netns = format!("/proc/{}/ns/net", holder.id());
    wait_until(5, "the test's network namespace", || {
        std::fs::metadata(&netns).map(|m| m.ino()).ok()
            != std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).ok()
    });
    for n in s["linux"]["namespaces"].as_array_mut().unwrap() {
        if n["type"] == "network" {
            n["path"] = json!(netns);
        }
    }
    // The checker compares its network namespace with the one it was told to join.
    let net_ino = std::fs::metadata(&netns).unwrap().ino();
    s["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!(format!("JOIN_NS_net={net_ino}")));
    let (o, report) = c.run(&s);
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(
        o.status.success() && !report.contains("FAIL"),
        "{}",
        text(&o)
    );
}

#[test]
fn host_side_properties_and_wrong_state_errors() {
    if !require_root() {
        return;
    }
    let c = Case::new("host");
    let hooks_log = c.dir.join("hooks.log");
    let hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {name} $HOOK_VAR >> {}", hooks_log.display())], "env": ["HOOK_VAR=set"]});
    let mut s = c.base();
    s["process"]["args"] = json!(["sleep", "1000"]);
    s["linux"]["resources"]["pids"] = json!({"limit": 64});
    s["linux"]["resources"]["memory"] = json!({"limit": 128 * 1024 * 1024});
    s["linux"]["resources"]["cpu"] = json!({"quota": 50000, "period": 100000});
    s["hooks"] = json!({
        "createRuntime": [hook("createRuntime")],
        "poststart": [hook("poststart")],
        "poststop": [hook("poststop")]
    });
    std::fs::write(
        c.dir.join("config.json"),
        serde_json::to_string(&s).unwrap(),
    )
    .unwrap();
    let b = c.dir.to_str().unwrap();
    let pidf = c.dir.join("init.pid");
    let o = c.oci(&[
        "create",
        "--bundle",
        b,
        "--pid-file",
        pidf.to_str().unwrap(),
        &c.id,
    ]);
    assert_ok(&o, "create");
    // The pid file exists when create returns.
    let pid: i64 = std::fs::read_to_string(&pidf)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The state JSON against the runtime-spec's state schema (schema/state-schema.json):
    // required ociVersion, id, status (one of its values), pid (integer >= 0), bundle, and an
    // annotations object when present.
    let st: Value = serde_json::from_slice(&c.oci(&["state", &c.id]).stdout).unwrap();
    for k in ["ociVersion", "id", "status", "pid", "bundle"] {
        assert!(st.get(k).is_some(), "state lacks {k}");
    }
    let status = st["status"].as_str().unwrap_or("");
    assert!(["creating", "created", "running", "stopped", "paused"].contains(&status));
    assert!(
        st["pid"].as_u64().is_some(),
        "pid is not a non-negative integer"
    );
    assert!(st["ociVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("1.")));
    assert_eq!(st["id"], c.id.as_str());
    assert_eq!(st["status"], "created");
    assert_eq!(st["pid"].as_i64(), Some(pid));
    assert!(st["bundle"]
        .as_str()
        .is_some_and(|p| Path::new(p).is_absolute()));
    assert!(st["annotations"].is_object() || st["annotations"].is_null());
    // Wrong-state errors.
    let bad = |args: &[&str], words: &str| {
        let o = c.oci(args);
        assert!(!o.status.success(), "{args:?} worked");
        assert!(text(&o).contains(words), "{args:?}: {}", text(&o));
    };
    bad(&["resume", &c.id], "not paused");
    assert_ok(&c.oci(&["start", &c.id]), "start");
    bad(&["start", &c.id], "not created");
    bad(&["delete", &c.id], "not stopped");
    // cgroup limits, seen from the host.
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path_of = |ctl: &str| -> Option<PathBuf> {
        cg.lines().find_map(|l| {
            let f: Vec<&str> = l.splitn(3, ':').collect();
            (f.len() == 3 && f[1].split(',').any(|c| c == ctl))
                .then(|| PathBuf::from(format!("/sys/fs/cgroup/{ctl}{}", f[2])))
        })
    };
    let v2 = cg
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| PathBuf::from(format!("/sys/fs/cgroup{p}")));
    let read = |p: PathBuf| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    match path_of("pids") {
        Some(p) => assert_eq!(read(p.join("pids.max")), "64"),
        None => assert_eq!(read(v2.clone().unwrap().join("pids.max")), "64"),
    }
    match path_of("memory") {
        Some(p) => assert_eq!(read(p.join("memory.limit_in_bytes")), "134217728"),
        None => assert_eq!(read(v2.clone().unwrap().join("memory.max")), "134217728"),
    }
    match path_of("cpu") {
        Some(p) => assert_eq!(read(p.join("cpu.cfs_quota_us")), "50000"),
        None => assert_eq!(read(v2.unwrap().join("cpu.max")), "50000 100000"),
    }
    assert_ok(&c.oci(&["pause", &c.id]), "pause");
    bad(&["pause", &c.id], "already paused");
    bad(&["exec", &c.id, "true"], "paused");
    assert_ok(&c.oci(&["resume", &c.id]), "resume");
    assert_ok(&c.oci(&["kill", &c.id, "9"]), "kill 9");
    wait_until(5, "the init to stop", || {
        serde_json::from_slice::<Value>(&c.oci(&["state", &c.id]).stdout)
            .is_ok_and(|v| v["status"] == "stopped")
    });
    bad(&["kill", &c.id, "TERM"], "not running");
    bad(&["exec", &c.id, "true"], "not running");
    bad(&["pause", &c.id], "not running");
    assert_ok(&c.oci(&["delete", &c.id]), "delete");
    bad(&["state", &c.id], "does not exist");
    bad(&["delete", &c.id], "does not exist");
    let log = std::fs::read_to_string(&hooks_log).unwrap();
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        ["createRuntime set", "poststart set", "poststop set"],
        "hooks' order and environment"
    );
}

#[test]
fn the_checker_reports_what_does_not_hold() {
    if !require_root() {
        return;
    }
    // The checker itself: a spec whose hostname the container cannot have (it runs in the
    // host's UTS namespace) must be reported.
    let c = Case::new("neg");
    let mut s = c.base();
    s["linux"]["namespaces"] = json!(s["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] != "uts")
        .cloned()
        .collect::<Vec<_>>());
    s["hostname"] = json!("not-the-hosts-name");
    let (o, report) = c.run(&s);
    assert!(
        !o.status.success() && report.contains("FAIL hostname"),
        "{}",
        text(&o)
    );
}

#[test]
fn user_namespace_mappings_hold_and_exec_joins_them() {
    if !require_root() {
        return;
    }
    let c = Case::new("userns");
    let base = 300_000 + (std::process::id() % 1000) * 65536;
    let chown = Command::new("chown")
        .arg("-R")
        .arg(format!("{base}:{base}"))
        .arg(c.dir.join("rootfs"))
        .output()
        .unwrap();
    assert_ok(&chown, "chown the root file system to the mapped range");
    let mut s = c.base();
    s["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    s["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": base, "size": 65536}]);
    s["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": base, "size": 65536}]);
    c.expect_pass("a user namespace", &s);
    // Without a network namespace of its own sysfs cannot be mounted there: the host's /sys
    // is bound read-only instead (as runc does).
    let mut host_net = s.clone();
    host_net["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "network");
    c.expect_pass(
        "a user namespace in the host's network namespace",
        &host_net,
    );
    // The host's cgroup trees that came with its /sys are hidden (no cgroup mount asked).
    let mut probe = host_net.clone();
    probe["process"]["args"] = json!(["sh", "-c", "ls /sys/fs/cgroup | wc -l"]);
    probe["mounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["destination"] != "/sys/fs/cgroup");
    let (o, out) = c.run(&probe);
    assert_ok(&o, "list /sys/fs/cgroup");
    assert_eq!(out.trim(), "0", "the host's cgroups are visible");
    // A service in it; exec joins the user namespace: root inside, the mapped id outside.
    s["process"]["args"] = json!(["sleep", "1000"]);
    assert_ok(&c.run_detached(&s), "run -d");
    let pidf = c.dir.join("exec.pid");
    let proc_json = c.dir.join("p.json");
    std::fs::write(
        &proc_json,
        json!({"args": ["sleep", "30"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}).to_string(),
    )
    .unwrap();
    let o = c.oci(&[
        "exec",
        "-d",
        "--pid-file",
        pidf.to_str().unwrap(),
        "--process",
        proc_json.to_str().unwrap(),
        &c.id,
    ]);
    assert_ok(&o, "exec -d");
    let pid = std::fs::read_to_string(&pidf).unwrap().trim().to_string();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid.split_whitespace().nth(1) == Some(&base.to_string()),
        "{uid}"
    );
    assert_ok(&c.oci(&["delete", "--force", &c.id]), "delete --force");
}

#[test]
fn rslave_root_propagation_shows_host_mounts_made_later() {
    if !require_root() {
        return;
    }
    let c = Case::new("prop");
    let vol = c.dir.join("vol");
    std::fs::create_dir_all(vol.join("sub")).unwrap();
    // The host side must propagate (a host without systemd keeps "/" private): a shared bind
    // of the volume onto itself, removed at the end.
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    mount(
        Some(&vol),
        &vol,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = umount2(&self.0, MntFlags::MNT_DETACH);
        }
    }
    let _shared = Unmount(vol.clone());
    mount(
        None::<&str>,
        &vol,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .unwrap();
    let mut s = c.base();
    s["process"]["args"] = json!(["sleep", "1000"]);
    s["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/vol", "type": "bind", "source": vol.to_str().unwrap(), "options": ["rbind"]}),
    );
    s["linux"]["rootfsPropagation"] = json!("rslave");
    std::fs::write(
        c.dir.join("config.json"),
        serde_json::to_string(&s).unwrap(),
    )
    .unwrap();
    assert_ok(
        &c.oci(&["run", "-d", "--bundle", c.dir.to_str().unwrap(), &c.id]),
        "run -d",
    );
    // A mount the host makes below the bound directory afterwards reaches the container.
    let sub = vol.join("sub");
    mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    let _u = Unmount(sub);
    let p = c.dir.join("p.json");
    std::fs::write(
        &p,
        json!({"args": ["grep", "-c", " /vol/sub ", "/proc/self/mountinfo"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}).to_string(),
    )
    .unwrap();
    let o = c.oci(&["exec", "--process", p.to_str().unwrap(), &c.id]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "1",
        "{}",
        text(&o)
    );
    assert_ok(&c.oci(&["delete", "--force", &c.id]), "delete --force");
}

/// A tmpfs mounted by the test (on `dir`), unmounted when dropped.
struct TestMount(PathBuf);

impl Drop for TestMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// What the conformance suites and containerd found where vserver-oci differed from the spec
/// or from runc: unknown properties ignored, `exec -e` replacing a variable, `exec
/// --ignore-paused`, `linux.personality` for exec'd processes, each masked and read-only path
/// mounted once, `rbind,ro` read-only at the top only and `rro` everywhere, data options on a
/// bind ignored, CPU shares written as given, and `kill --all` of a stopped container.
#[test]
fn runc_semantics_hold_where_the_suites_found_differences() {
    if !require_root() {
        return;
    }
    let c = Case::new("runcsem");
    // A host directory with a mount below it, bound twice: `rbind,ro` and `rbind,rro`.
    let vol = c.dir.join("vol");
    std::fs::create_dir_all(vol.join("sub")).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &vol.join("sub"),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    let _sub = TestMount(vol.join("sub"));
    let mut s = c.base();
    s["process"]["args"] = json!(["sleep", "1000"]);
    s["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!("MY_VAR=one"));
    s["process"]["bogus"] = json!(1);
    s["futureTopLevel"] = json!({"x": 1});
    s["linux"]["personality"] = json!({"domain": "LINUX32"});
    s["linux"]["resources"]["cpu"] = json!({"shares": 512});
    let mounts = s["mounts"].as_array_mut().unwrap();
    for (dst, opts) in [
        ("/top", json!(["rbind", "ro", "mode=755"])),
        ("/all", json!(["rbind", "rro"])),
    ] {
        mounts.push(json!({"destination": dst, "type": "bind", "source": vol.to_str().unwrap(), "options": opts}));
    }
    std::fs::write(
        c.dir.join("config.json"),
        serde_json::to_string(&s).unwrap(),
    )
    .unwrap();
    let o = c.oci(&["run", "-d", "--bundle", c.dir.to_str().unwrap(), &c.id]);
    assert_ok(&o, "run -d with unknown properties");
    assert!(
        text(&o).contains("process.bogus") && text(&o).contains("futureTopLevel"),
        "the ignored properties are not named: {}",
        text(&o)
    );
    let sh = |cmd: &str| c.oci(&["exec", &c.id, "sh", "-c", cmd]);
    // -e replaces the variable of the container's environment.
    let o = c.oci(&[
        "exec",
        "-e",
        "MY_VAR=two",
        &c.id,
        "sh",
        "-c",
        "env | grep ^MY_VAR=",
    ]);
    assert_ok(&o, "exec -e");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "MY_VAR=two");
    // HOME from the container's /etc/passwd when the environment has none (runc, crun).
    let o = c.oci(&["exec", "-u", "65534:65534", &c.id, "sh", "-c", "echo $HOME"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "/",
        "{}",
        text(&o)
    );
    // A cwd reached through a directory only root may search is entered before the user
    // switch, as runc does.
    std::fs::create_dir_all(c.dir.join("rootfs/secret/inner")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            c.dir.join("rootfs/secret"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        std::fs::set_permissions(
            c.dir.join("rootfs/secret/inner"),
            std::fs::Permissions::from_mode(0o777),
        )
        .unwrap();
    }
    let o = c.oci(&[
        "exec",
        "-u",
        "65534:65534",
        "--cwd",
        "/secret/inner",
        &c.id,
        "sh",
        "-c",
        "pwd",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "/secret/inner",
        "{}",
        text(&o)
    );
    // The container's personality holds for exec'd processes.
    let o = sh("cat /proc/self/personality");
    assert_ok(&o, "exec cat personality");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "00000008");
    // One mount each for a masked and a read-only path that the engine masks too.
    // (A path this kernel lacks has none.)
    for p in [
        "/proc/keys",
        "/proc/acpi",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ] {
        let o = sh(&format!("grep -c ' {p} ' /proc/self/mountinfo"));
        let n: u32 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
        let exists = std::path::Path::new(p).exists();
        assert_eq!(n, u32::from(exists), "mounts on {p}");
    }
    // rbind,ro: the top read-only, the mount below it as it was; rro: all of it.
    assert!(!sh("touch /top/x").status.success(), "/top is writable");
    assert_ok(&sh("touch /top/sub/x"), "touch below an rbind,ro");
    assert!(!sh("touch /all/x").status.success(), "/all is writable");
    assert!(
        !sh("touch /all/sub/y").status.success(),
        "below an rro is writable"
    );
    // CPU shares as given (v1), or by the documented conversion (v2).
    let pid = c.oci(&["state", &c.id]);
    let pid = serde_json::from_slice::<Value>(&pid.stdout).unwrap()["pid"]
        .as_i64()
        .unwrap();
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let v1 = cg.lines().find_map(|l| {
        let f: Vec<&str> = l.splitn(3, ':').collect();
        f[1].split(',')
            .any(|c| c == "cpu")
            .then(|| format!("/sys/fs/cgroup/cpu{}/cpu.shares", f[2]))
    });
    match v1 {
        Some(f) => assert_eq!(std::fs::read_to_string(f).unwrap().trim(), "512"),
        None => {
            let p = cg.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
            let w = std::fs::read_to_string(format!("/sys/fs/cgroup{p}/cpu.weight")).unwrap();
            // runc's and crun's fit: 512 shares are weight 59 (1024 would be 100).
            assert_eq!(w.trim(), "59");
        }
    }
    // exec --ignore-paused: accepted, and the process runs once the container is resumed.
    assert_ok(&c.oci(&["pause", &c.id]), "pause");
    let paused = Command::new(bin("vserver-oci"))
        .arg("--root")
        .arg(&c.root)
        .args(["exec", "--ignore-paused", &c.id, "sh", "-c", "echo ran"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_ok(&c.oci(&["resume", &c.id]), "resume");
    let o = paused.wait_with_output().unwrap();
    assert_ok(&o, "exec --ignore-paused");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "ran");
    // kill --all of a stopped container succeeds (containerd's shim sends it after every
    // exit); a plain kill says what runc says.
    assert_ok(&c.oci(&["kill", &c.id, "KILL"]), "kill");
    wait_until(10, "the init to stop", || {
        serde_json::from_slice::<Value>(&c.oci(&["state", &c.id]).stdout)
            .is_ok_and(|v| v["status"] == "stopped")
    });
    assert_ok(
        &c.oci(&["kill", "--all", &c.id, "KILL"]),
        "kill --all stopped",
    );
    let o = c.oci(&["kill", &c.id, "KILL"]);
    assert!(
        !o.status.success() && text(&o).contains("container not running"),
        "{}",
        text(&o)
    );
    assert_ok(&c.oci(&["delete", &c.id]), "delete");
}

/// Field 41 (policy) and 19 (nice) of /proc/PID/stat.
fn policy_and_nice(stat: &str) -> (String, String) {
    // The command name (field 2) may hold spaces: count from its closing parenthesis.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[41 - 3].to_string(), f[19 - 3].to_string())
}

/// What conformance suites and users in the wild set and vserver-oci used to refuse:
/// `process.scheduler`, `linux.memoryPolicy`, `process.execCPUAffinity`,
/// `rootfsPropagation` `runbindable` and `memory.swappiness` (v1; refused by name on v2).
/// A shared root stays refused, at once.
#[test]
fn scheduler_memory_policy_affinity_unbindable_root_and_swappiness() {
    if !require_root() {
        return;
    }
    let c = Case::new("sched");
    let mut s = c.base();
    s["process"]["args"] = json!(["sleep", "1000"]);
    s["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 5});
    s["process"]["execCPUAffinity"] = json!({"final": "0"});
    s["linux"]["memoryPolicy"] = json!({"mode": "MPOL_BIND", "nodes": "0"});
    s["linux"]["rootfsPropagation"] = json!("runbindable");
    let v1_memory = std::fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .lines()
        .any(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|c| c == "memory"))
        });
    s["linux"]["resources"]["memory"] = json!({"swappiness": 10});
    let o = c.run_detached(&s);
    if !v1_memory {
        assert!(
            !o.status.success() && text(&o).contains("swappiness"),
            "{}",
            text(&o)
        );
        s["linux"]["resources"]["memory"] = json!({});
        assert_ok(&c.run_detached(&s), "run -d");
    } else {
        assert_ok(&o, "run -d");
    }
    let pid = serde_json::from_slice::<Value>(&c.oci(&["state", &c.id]).stdout).unwrap()["pid"]
        .as_i64()
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert_eq!(policy_and_nice(&stat), ("3".into(), "5".into()), "{stat}");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/numa_maps")).unwrap_or_default();
    assert!(
        maps.is_empty() || maps.contains("bind:0"),
        "memory policy: {maps}"
    );
    if v1_memory {
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let mem = cg
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.splitn(3, ':').collect();
                f[1].split(',')
                    .any(|c| c == "memory")
                    .then(|| f[2].to_string())
            })
            .unwrap();
        let v = std::fs::read_to_string(format!("/sys/fs/cgroup/memory{mem}/memory.swappiness"))
            .unwrap();
        assert_eq!(v.trim(), "10");
    }
    // An exec'd process: the scheduler of the container's process, the final affinity.
    let sh = |cmd: &str| c.oci(&["exec", &c.id, "sh", "-c", cmd]);
    let o = sh("cat /proc/self/stat; grep Cpus_allowed_list /proc/self/status");
    assert_ok(&o, "exec");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(
        policy_and_nice(out.lines().next().unwrap()),
        ("3".into(), "5".into())
    );
    assert!(out.contains("Cpus_allowed_list:\t0\n"), "{out}");
    // The root is unbindable.
    let o = sh("grep -E '^[0-9]+ [0-9]+ [^ ]+ [^ ]+ / ' /proc/self/mountinfo");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("unbindable"),
        "{}",
        text(&o)
    );
    assert_ok(&c.oci(&["delete", "--force", &c.id]), "delete");
    // Refused at once, by name.
    s["linux"]["rootfsPropagation"] = json!("rshared");
    std::fs::write(
        c.dir.join("config.json"),
        serde_json::to_string(&s).unwrap(),
    )
    .unwrap();
    let o = c.oci(&["create", "--bundle", c.dir.to_str().unwrap(), &c.id]);
    assert!(
        !o.status.success() && text(&o).contains("rootfsPropagation"),
        "{}",
        text(&o)
    );
}

/// Mounts are made in the config's order, the engine's /proc, /sys and /dev included (a spec
/// MUST; suites compare mountinfo's order with the config's), a /dev/shm bind (the pod's) is
/// honoured, and `linux.devices` nodes are made and usable whatever `resources.devices` says
/// (empty here: no rule at all).
#[test]
fn mounts_follow_the_configs_order_and_devices_need_no_rule() {
    if !require_root() {
        return;
    }
    let c = Case::new("order");
    let mut s = c.base();
    // /sys first, then /dev and its mounts, then /proc, then a tmpfs of the config's own.
    let mounts = s["mounts"].as_array().unwrap().clone();
    let pos = |d: &str| mounts.iter().position(|m| m["destination"] == d).unwrap();
    let mut ordered = vec![mounts[pos("/sys")].clone()];
    ordered.extend(
        mounts
            .iter()
            .filter(|m| m["destination"].as_str().unwrap().starts_with("/dev"))
            .cloned(),
    );
    ordered.push(mounts[pos("/proc")].clone());
    ordered.push(
        json!({"destination": "/mnt", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}),
    );
    // The pod's /dev/shm, as containerd binds it into each container of a sandbox.
    let shm = c.dir.join("podshm");
    std::fs::create_dir_all(&shm).unwrap();
    ordered.retain(|m| m["destination"] != "/dev/shm");
    ordered.push(json!({"destination": "/dev/shm", "type": "bind", "source": shm.to_str().unwrap(), "options": ["rbind", "nosuid", "nodev", "noexec"]}));
    s["mounts"] = json!(ordered);
    s["linux"]["devices"] = json!([
        {"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11, "fileMode": 0o644, "uid": 0, "gid": 0},
        {"path": "/dev/test1", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666}
    ]);
    s["linux"]["resources"]["devices"] = json!([]);
    s["process"]["args"] = json!(["sleep", "1000"]);
    assert_ok(&c.run_detached(&s), "run -d");
    let o = c.oci(&[
        "exec",
        &c.id,
        "sh",
        "-c",
        "echo x > /dev/test1 && echo wrote; while read -r a b c d e rest; do echo $e; done < /proc/self/mountinfo",
    ]);
    assert_ok(&o, "exec");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.starts_with("wrote\n"), "{out}");
    let at = |p: &str| {
        out.lines()
            .position(|l| l == p)
            .unwrap_or_else(|| panic!("{p} not mounted: {out}"))
    };
    assert!(at("/sys") < at("/dev"), "{out}");
    assert!(at("/dev") < at("/proc"), "{out}");
    assert!(at("/proc") < at("/mnt"), "{out}");
    assert_ok(
        &c.oci(&["exec", &c.id, "sh", "-c", "echo pod > /dev/shm/peer"]),
        "write the pod's /dev/shm",
    );
    assert_eq!(
        std::fs::read_to_string(shm.join("peer")).unwrap().trim(),
        "pod",
        "/dev/shm is not the pod's"
    );
    assert_ok(&c.oci(&["delete", "--force", &c.id]), "delete");
}
