//! vserver-oci under Kubernetes' Container Runtime Interface, side by side with runc, driven the
//! way the kubelet drives containerd.
//!
//! The test starts a containerd of its own (Debian's 1.6: its own config, sockets, root, state,
//! runtime roots, CNI directories, all under one temporary directory named after the test's
//! pid) with the CRI plugin and two runtime handlers of `io.containerd.runc.v2`: `runc`
//! (BinaryName `runc`) and `vserver` (BinaryName the vserver-oci that cargo built). Images are
//! OCI layout tarballs built here from the static busybox and imported with `ctr -n k8s.io
//! images import`: a busybox image, and a pause image (a shell waiting for SIGTERM) that the
//! CRI config names as `sandbox_image`. No registry, no download.
//!
//! Pods get a network namespace of their own with only `lo` in it: the CNI configuration (in
//! the test's own directories) runs Debian's `loopback` plugin (containerd's go-cni always
//! does) and, as the pod's "network", the `static` IPAM plugin on its own, which configures
//! nothing and reports 127.0.0.1, the address containerd's CRI needs to read back. The host's
//! interfaces, routes and firewall are never touched.
//!
//! The CRI client is `oci_cri_client.py` beside this file (gRPC through PyPI's
//! container-runtime-interface-api, streams over the WebSocket protocol the CRI streaming
//! server speaks), installed by scripts/deps.sh in a virtualenv of its own. crictl is not used:
//! it is built with Go from the Go module proxy, which this project's machines cannot reach.
//!
//! For each handler, runc first as the reference, the test runs one pod through every step
//! the kubelet takes ([`STEPS`]), then a pod that shares its pid namespace
//! ([`PIDNS_STEPS`]). It records each step's outcome and goes on; at the end it fails listing
//! every step that failed for vserver-oci but passed for runc, with containerd's and the
//! runtime's error text. A step that fails for runc too is a fault of this harness and
//! fails the test as well. The full report and containerd's log are kept in
//! `CARGO_TARGET_TMPDIR` (`oci_cri-report.txt`, `oci_cri-containerd.log`).
//!
//! The project's machines (and CI) run as a root without CAP_SYS_RESOURCE, so no process may
//! lower its oom_score_adj below its parent's: containerd gets `restrict_oom_score_adj = true`
//! (the pause container would otherwise get -998 and fail under runc too), and the containers
//! ask for a Burstable pod's positive score.

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant, SystemTime};

/// The Python of the virtualenv that scripts/deps.sh makes for the CRI client.
const CRI_PYTHON: &str = "/opt/vserver-test/cri-venv/bin/python3";
/// The CRI client (one JSON request a line on stdin, one answer a line on stdout).
const CRI_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oci_cri_client.py");
/// Debian's CNI plugins (containernetworking-plugins).
const CNI_PLUGINS: &str = "/usr/lib/cni";
/// The namespace containerd's CRI keeps its containers and images in.
const K8S_NS: &str = "k8s.io";
const BUSYBOX_IMAGE: &str = "docker.io/library/vst-busybox:latest";
const PAUSE_IMAGE: &str = "docker.io/library/vst-pause:latest";

/// The app container's resources, as the kubelet computes them for a Burstable pod with
/// requests cpu 350m and a limit of 350m cpu and 64 MiB: shares = 350 * 1024 / 1000.
const MEM_LIMIT: i64 = 64 << 20;
const CPU_SHARES: i64 = 358;
const CPU_QUOTA: i64 = 35_000;
const CPU_PERIOD: i64 = 100_000;
/// A Burstable container's oom_score_adj (positive: see the module's doc).
const OOM_SCORE_ADJ: i64 = 937;
/// After UpdateContainerResources: 600m cpu (shares 614) and 96 MiB.
const MEM_UPDATED: i64 = 96 << 20;
const SHARES_UPDATED: i64 = 614;
const QUOTA_UPDATED: i64 = 60_000;

/// Default masked and read-only paths, as the kubelet sends them (`procMount: Default`).
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

// ------------------------------------------------------------------------------------------
// Tools and small helpers

/// True when every tool this test drives is installed. Otherwise: skip with a message, or
/// panic under CI=true (scripts/deps.sh installs them all).
fn require_tools() -> bool {
    let mut missing: Vec<String> = ["containerd", "ctr", "containerd-shim-runc-v2", "runc"]
        .iter()
        .filter(|t| !have_tool(t))
        .map(|t| t.to_string())
        .collect();
    for p in ["loopback", "static"] {
        if !Path::new(CNI_PLUGINS).join(p).exists() {
            missing.push(format!("{CNI_PLUGINS}/{p} (containernetworking-plugins)"));
        }
    }
    let client_ok = Command::new(CRI_PYTHON)
        .args(["-c", "import grpc, cri_api.v1.api_pb2"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !client_ok {
        missing.push(format!("{CRI_PYTHON} with container-runtime-interface-api"));
    }
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{missing:?} not installed (scripts/deps.sh installs them)");
    }
    eprintln!("skipped: {missing:?} not installed (run scripts/deps.sh)");
    false
}

fn sha256_str(s: &str) -> String {
    let o = Command::new("sh")
        .args(["-c", "printf %s \"$1\" | sha256sum", "sh", s])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Poll `f` every 100 ms for at most `secs` seconds until it gives something.
fn poll<T>(secs: f64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A protobuf JSON integer (int64 come as strings, zero values are left out) as i64.
fn int(v: &Value) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

/// A container status, in short: what failure messages show of it.
fn brief(st: &Value) -> Value {
    json!({"state": st["state"], "exit_code": st["exit_code"], "reason": st["reason"],
           "message": st["message"], "started_at": st["started_at"],
           "finished_at": st["finished_at"]})
}

/// Fail with `what` unless `cond`.
fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

/// Pids of the processes (but this one) whose command line contains `needle`.
fn pids_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&c).contains(needle) {
                v.push(pid);
            }
        }
    }
    v
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default()
}

fn sigkill(pid: i32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
}

/// Mount points (from /proc/self/mountinfo) that contain `needle`.
fn mounts_containing(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|m| m.contains(needle))
        .collect()
}

/// Unmount everything mounted below `dir` (deepest first), several times over for stacks.
fn unmount_below(dir: &Path) {
    let d = dir.to_string_lossy().to_string();
    for _ in 0..3 {
        let mut mounts: Vec<String> = mounts_containing(&d)
            .into_iter()
            .filter(|m| m.starts_with(&d))
            .collect();
        if mounts.is_empty() {
            return;
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Cgroups: every hierarchy the kubelet would use

/// True on a cgroup v2 only host.
fn cgroup_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The cgroup hierarchies' mount points: each v1 hierarchy (and a hybrid host's `unified`),
/// or /sys/fs/cgroup itself on a v2 host.
fn hierarchies() -> Vec<PathBuf> {
    if cgroup_v2() {
        return vec![PathBuf::from("/sys/fs/cgroup")];
    }
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split(' ').next()?;
            let mnt = pre.split(' ').nth(4)?;
            ((fstype == "cgroup" || fstype == "cgroup2") && mnt.starts_with("/sys/fs/cgroup/"))
                .then(|| PathBuf::from(mnt))
        })
        .collect()
}

/// Make the cgroup `rel` (relative to each hierarchy's root) in every hierarchy, as the
/// kubelet's cgroupfs driver makes its pod cgroups: cpuset levels get their parent's cpus and
/// mems, v2 levels delegate their controllers.
fn make_cgroup(rel: &str) {
    for h in hierarchies() {
        let mut cur = h.clone();
        for part in rel.trim_matches('/').split('/') {
            let parent = cur.clone();
            cur = cur.join(part);
            let _ = std::fs::create_dir(&cur);
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if !h.join("cgroup.subtree_control").exists() && cur.join(f).exists() {
                    let own = std::fs::read_to_string(cur.join(f)).unwrap_or_default();
                    if own.trim().is_empty() {
                        let p = std::fs::read_to_string(parent.join(f)).unwrap_or_default();
                        let _ = std::fs::write(cur.join(f), p.trim());
                    }
                }
            }
            if let Ok(ctrls) = std::fs::read_to_string(parent.join("cgroup.controllers")) {
                for c in ctrls.split_whitespace() {
                    let _ = std::fs::write(parent.join("cgroup.subtree_control"), format!("+{c}"));
                }
            }
        }
    }
}

/// Every cgroup directory strictly below `rel`, in any hierarchy.
fn cgroups_below(rel: &str) -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(e.path());
                walk(&e.path(), out);
            }
        }
    }
    let mut v = Vec::new();
    for h in hierarchies() {
        walk(&h.join(rel.trim_matches('/')), &mut v);
    }
    v
}

/// Pids in the cgroup `rel` and below, in any hierarchy.
fn cgroup_procs(rel: &str) -> Vec<i32> {
    let mut dirs = cgroups_below(rel);
    dirs.extend(hierarchies().iter().map(|h| h.join(rel.trim_matches('/'))));
    let mut v: Vec<i32> = dirs
        .iter()
        .flat_map(|d| {
            std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Thaw and SIGKILL everything in the cgroup `rel` and below, then remove its directories
/// in every hierarchy (deepest first; retried while killed processes go away).
fn destroy_cgroup(rel: &str) {
    for _ in 0..50 {
        let mut dirs = cgroups_below(rel);
        dirs.extend(hierarchies().iter().map(|h| h.join(rel.trim_matches('/'))));
        for d in &dirs {
            let _ = std::fs::write(d.join("freezer.state"), "THAWED");
            let _ = std::fs::write(d.join("cgroup.freeze"), "0");
        }
        for pid in cgroup_procs(rel) {
            sigkill(pid);
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.as_os_str().len()));
        for d in &dirs {
            let _ = std::fs::remove_dir(d);
        }
        if dirs.iter().all(|d| !d.exists()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The host file of controller `ctrl` for the cgroup `rel`: `v1` on v1 hosts, `v2` on v2.
fn cgroup_file(ctrl: &str, rel: &str, v1: &str, v2: &str) -> PathBuf {
    let rel = rel.trim_matches('/');
    if cgroup_v2() {
        Path::new("/sys/fs/cgroup").join(rel).join(v2)
    } else {
        Path::new("/sys/fs/cgroup").join(ctrl).join(rel).join(v1)
    }
}

fn read_trim(p: &Path) -> Result<String, String> {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("{}: {e}", p.display()))
}

// ------------------------------------------------------------------------------------------
// Images

/// A root file system of the static busybox with every applet linked.
fn busybox_rootfs(dir: &Path) {
    busybox_tree(dir);
    let o = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for a in String::from_utf8_lossy(&o.stdout).split_whitespace() {
        if a != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(a));
        }
    }
}

/// An OCI image layout tarball (index.json, oci-layout, blobs) of a busybox root, tagged
/// `latest`, whose image config's `config` section is `config`; returns its path.
fn build_image(dir: &Path, config: Value) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let rootfs = dir.join("rootfs");
    busybox_rootfs(&rootfs);
    let img = dir.join("img");
    let blobs = img.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let layer = dir.join("layer.tar");
    assert_ok(
        &sh_output(&format!(
            "tar -C {} -cf {} .",
            rootfs.display(),
            layer.display()
        )),
        "tar the layer",
    );
    let diff_id = sha256_of_file(&layer);
    assert_ok(
        &sh_output(&format!("gzip -n -f {}", layer.display())),
        "gzip",
    );
    let put = |p: &Path| -> (String, u64) {
        let d = sha256_of_file(p);
        std::fs::copy(p, blobs.join(&d)).unwrap();
        (d, std::fs::metadata(p).unwrap().len())
    };
    let (ld, ls) = put(&dir.join("layer.tar.gz"));
    let cfg = dir.join("config.json");
    let image_config = json!({
        "architecture": "amd64", "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]}
    });
    std::fs::write(&cfg, image_config.to_string()).unwrap();
    let (cd, cs) = put(&cfg);
    let man = dir.join("manifest.json");
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{cd}"), "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": format!("sha256:{ld}"), "size": ls}]
    });
    std::fs::write(&man, manifest.to_string()).unwrap();
    let (md, ms) = put(&man);
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{md}"), "size": ms,
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
            "platform": {"architecture": "amd64", "os": "linux"}
        }]
    });
    std::fs::write(img.join("index.json"), index.to_string()).unwrap();
    std::fs::write(img.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let tarball = dir.join("image.tar");
    assert_ok(
        &sh_output(&format!(
            "tar -C {} -cf {} .",
            img.display(),
            tarball.display()
        )),
        "tar the image",
    );
    tarball
}

// ------------------------------------------------------------------------------------------
// The CRI client

/// What a stream (exec or attach through the streaming server) gave back.
#[derive(Debug)]
struct Streamed {
    stdout: String,
    stderr: String,
    /// The exit code the error channel reported (0 for "Success"), if it reported one.
    exit: Option<i64>,
    /// The server ended the stream (the process ended), not the client.
    closed: bool,
}

/// The long-lived Python CRI client (`oci_cri_client.py`).
struct Cri {
    child: Child,
    stdin: ChildStdin,
    answers: Receiver<String>,
    sock: PathBuf,
    errlog: PathBuf,
}

impl Cri {
    fn spawn(sock: &Path, errlog: &Path) -> Cri {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(errlog)
            .unwrap();
        let mut child = Command::new(CRI_PYTHON)
            .arg(CRI_CLIENT)
            .arg(sock)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(l) = line else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Cri {
            child,
            stdin,
            answers: rx,
            sock: sock.to_path_buf(),
            errlog: errlog.to_path_buf(),
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// One request, one answer; a client that does not answer within `wait` is replaced.
    fn call(&mut self, req: &Value, wait: Duration) -> Result<Value, String> {
        let sent = writeln!(self.stdin, "{req}").and_then(|_| self.stdin.flush());
        let line = match sent.map(|_| self.answers.recv_timeout(wait)) {
            Ok(Ok(line)) => line,
            _ => {
                self.stop();
                *self = Cri::spawn(&self.sock.clone(), &self.errlog.clone());
                return Err(format!("the CRI client gave no answer in {wait:?}"));
            }
        };
        serde_json::from_str(&line).map_err(|e| format!("CRI client answered {line:?}: {e}"))
    }

    /// A unary CRI call with a deadline of `timeout` seconds; Err carries the gRPC code and
    /// containerd's message.
    fn rpc(&mut self, method: &str, req: Value, timeout: u64) -> Result<Value, String> {
        let q = json!({"op": "rpc", "method": method, "request": req, "timeout": timeout});
        let a = self.call(&q, Duration::from_secs(timeout + 15))?;
        if a["ok"] == true {
            Ok(a["response"].clone())
        } else {
            Err(format!(
                "{method}: {} {}",
                a["code"].as_str().unwrap_or("?"),
                a["error"].as_str().unwrap_or("?")
            ))
        }
    }

    /// Talk to a streaming URL (from Exec or Attach): send each `stdin` item, a resize
    /// first when `resize` (columns, rows), stop once stdout contains `until`.
    fn stream(
        &mut self,
        url: &str,
        stdin: &[&str],
        resize: Option<(u16, u16)>,
        until: Option<&str>,
        timeout: u64,
    ) -> Result<Streamed, String> {
        let q = json!({"op": "stream", "url": url, "stdin": stdin,
                       "resize": resize.map(|(c, r)| vec![c, r]), "until": until,
                       "timeout": timeout});
        let a = self.call(&q, Duration::from_secs(timeout + 15))?;
        if a["ok"] != true {
            return Err(format!("stream {url}: {}", a["error"]));
        }
        let status = &a["status"];
        let exit = if status["status"] == "Success" {
            Some(0)
        } else {
            status["details"]["causes"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["reason"] == "ExitCode"))
                .and_then(|c| c["message"].as_str())
                .and_then(|m| m.parse().ok())
        };
        Ok(Streamed {
            stdout: a["stdout"].as_str().unwrap_or_default().to_string(),
            stderr: a["stderr"].as_str().unwrap_or_default().to_string(),
            exit,
            closed: a["closed"] == true,
        })
    }
}

impl Drop for Cri {
    fn drop(&mut self) {
        self.stop();
    }
}

// ------------------------------------------------------------------------------------------
// The node: a private containerd with CRI

/// A private containerd with its CRI plugin, the images imported, the cgroup parent of the
/// test's pods made, and a CRI client. Drop takes everything down, whatever state it is in.
struct Node {
    dir: PathBuf,
    /// The cgroup (in every hierarchy) under which the test's pods live, like `kubepods`.
    kube: String,
    daemon: Option<Child>,
    cri: Option<Cri>,
    /// Every pod sandbox made, for the cleanup.
    sandboxes: Vec<String>,
    /// Log lines already shown with a failed step (each is shown once).
    reported: Vec<String>,
}

impl Node {
    fn sock(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    /// The runtime's `--root` for CRI's containers (containerd appends the namespace).
    fn runtime_root(&self, handler: &str) -> PathBuf {
        self.dir.join(format!("{handler}-root")).join(K8S_NS)
    }

    /// Where containerd's CRI keeps a sandbox's /dev/shm.
    fn sandbox_shm(&self, sid: &str) -> PathBuf {
        self.dir
            .join("state/io.containerd.grpc.v1.cri/sandboxes")
            .join(sid)
            .join("shm")
    }

    /// The shim's socket for a sandbox: containerd 1.6 names it after the containerd
    /// address, the namespace and the sandbox's id, under /run/containerd/s.
    fn shim_socket(&self, sid: &str) -> PathBuf {
        let key = format!("{}/{K8S_NS}/{sid}", self.sock().display());
        Path::new("/run/containerd/s").join(sha256_str(&key))
    }

    fn cri(&mut self) -> &mut Cri {
        self.cri.as_mut().expect("CRI client")
    }

    fn ctr(&self, args: &[&str]) -> Output {
        run_to_files(
            Command::new("ctr")
                .arg("--address")
                .arg(self.sock())
                .args(["--namespace", K8S_NS])
                .args(args)
                .stdin(Stdio::null()),
            &self.dir.join("ctr-out"),
        )
    }

    fn start() -> Node {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("vst-cri-{pid}"));
        let mut node = Node {
            dir: dir.clone(),
            kube: format!("kubepods-test{pid}"),
            daemon: None,
            cri: None,
            sandboxes: Vec::new(),
            reported: Vec::new(),
        };
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("cni/bin")).unwrap();
        std::fs::create_dir_all(dir.join("cni/conf")).unwrap();
        for p in ["loopback", "static"] {
            std::os::unix::fs::symlink(Path::new(CNI_PLUGINS).join(p), dir.join("cni/bin").join(p))
                .unwrap();
        }
        // The pod's network: `static` IPAM run as the plugin itself reports 127.0.0.1 and
        // configures nothing; containerd's go-cni adds the loopback network by itself.
        let conflist = json!({
            "cniVersion": "1.0.0", "name": format!("vst-cri-{pid}"),
            "plugins": [{"type": "static",
                         "ipam": {"type": "static", "addresses": [{"address": "127.0.0.1/8"}]}}]
        });
        std::fs::write(
            dir.join("cni/conf/10-vst-cri.conflist"),
            conflist.to_string(),
        )
        .unwrap();
        let d = dir.display();
        let vserver = bin("vserver-oci");
        let cfg = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = "{d}/debug.sock"
  level = "debug"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "runc"
        Root = "{d}/runc-root"
        SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.vserver]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.vserver.options]
        BinaryName = "{vserver}"
        Root = "{d}/vserver-root"
        SystemdCgroup = false
"#,
            vserver = vserver.display()
        );
        std::fs::write(dir.join("config.toml"), cfg).unwrap();
        let log = std::fs::File::create(node.log()).unwrap();
        node.daemon = Some(
            Command::new("containerd")
                .arg("--config")
                .arg(dir.join("config.toml"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let sock = node.sock();
        if poll(20.0, || sock.exists().then_some(())).is_none() {
            panic!(
                "containerd did not start: {}",
                std::fs::read_to_string(node.log()).unwrap_or_default()
            );
        }
        make_cgroup(&node.kube);
        // The images, imported where CRI looks for them.
        for (name, config) in [
            (
                "vst-busybox",
                json!({"Env": ["PATH=/bin:/sbin"], "Cmd": ["sh"]}),
            ),
            (
                "vst-pause",
                json!({"Env": ["PATH=/bin:/sbin"], "Entrypoint": ["/bin/sh", "-c",
                    "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]}),
            ),
        ] {
            let tar = build_image(&dir.join("images").join(name), config);
            let base = format!("docker.io/library/{name}");
            let o = node.ctr(&[
                "images",
                "import",
                "--base-name",
                &base,
                tar.to_str().unwrap(),
            ]);
            assert_ok(&o, &format!("ctr images import {name}"));
        }
        node.cri = Some(Cri::spawn(&sock, &dir.join("cri-client.err")));
        let v = node.cri().rpc("Version", json!({}), 30).unwrap();
        assert_eq!(v["runtime_api_version"], "v1", "{v}");
        for image in [BUSYBOX_IMAGE, PAUSE_IMAGE] {
            let seen = poll(20.0, || {
                let s = node
                    .cri()
                    .rpc("ImageStatus", json!({"image": {"image": image}}), 10)
                    .ok()?;
                s.get("image").map(|_| ())
            });
            assert!(seen.is_some(), "CRI does not see the imported {image}");
        }
        node
    }

    /// containerd's error lines since byte `offset` of its log (but its retries of an event
    /// that failed before), and the runtimes' log.json lines in files written since `since`;
    /// each line is shown once in the whole run: what a failed step is reported with.
    fn diagnostics(&mut self, offset: u64, since: SystemTime) -> String {
        /// A log line without its time="..." field (or JSON "time"), to tell repeats.
        fn timeless(l: &str) -> String {
            l.split(' ')
                .filter(|w| !w.starts_with("time="))
                .collect::<Vec<_>>()
                .join(" ")
                .split(",\"time\":")
                .next()
                .unwrap_or_default()
                .to_string()
        }
        let mut out = String::new();
        let log = std::fs::read(self.log()).unwrap_or_default();
        let new = String::from_utf8_lossy(log.get(offset as usize..).unwrap_or_default());
        let mut errors: Vec<String> = Vec::new();
        for l in new.lines() {
            let t = timeless(l);
            let error = l.contains("level=error") || l.contains("level=fatal");
            if error && !l.contains("backOff event") && !self.reported.contains(&t) {
                self.reported.push(t.clone());
                errors.push(t);
            }
        }
        for l in errors.iter().rev().take(4).rev() {
            out += &format!("\n      containerd: {}", clip(l, 700));
        }
        let tasks = self
            .dir
            .join("state/io.containerd.runtime.v2.task")
            .join(K8S_NS);
        for e in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
            let f = e.path().join("log.json");
            let fresh = std::fs::metadata(&f)
                .and_then(|m| m.modified())
                .is_ok_and(|m| m >= since);
            if !fresh {
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let mut lines: Vec<String> = Vec::new();
            for l in text.lines() {
                let t = timeless(l);
                if !self.reported.contains(&t) {
                    self.reported.push(t.clone());
                    lines.push(t);
                }
            }
            for l in lines.iter().rev().take(3).rev() {
                out += &format!(
                    "\n      {}/log.json: {}",
                    clip(&e.file_name().to_string_lossy(), 12),
                    clip(l, 600)
                );
            }
        }
        out
    }
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(n).collect::<String>())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // What CRI can still take down, it takes down.
        let daemon_alive = self
            .daemon
            .as_mut()
            .is_some_and(|d| d.try_wait().ok().flatten().is_none());
        if daemon_alive && self.cri.is_some() {
            for sid in self.sandboxes.clone() {
                let cri = self.cri();
                let list = cri.rpc(
                    "ListContainers",
                    json!({"filter": {"pod_sandbox_id": sid}}),
                    10,
                );
                for c in list
                    .ok()
                    .and_then(|l| l["containers"].as_array().cloned())
                    .unwrap_or_default()
                {
                    let id = c["id"].as_str().unwrap_or_default();
                    let _ = cri.rpc(
                        "StopContainer",
                        json!({"container_id": id, "timeout": 0}),
                        10,
                    );
                    let _ = cri.rpc("RemoveContainer", json!({"container_id": id}), 10);
                }
                let _ = cri.rpc("StopPodSandbox", json!({"pod_sandbox_id": sid}), 15);
                let _ = cri.rpc("RemovePodSandbox", json!({"pod_sandbox_id": sid}), 15);
            }
        }
        self.cri = None;
        // Whatever the runtimes still hold (state, vserver-oci's cgroup claims).
        for (handler, rt) in [
            ("runc", PathBuf::from("runc")),
            ("vserver", bin("vserver-oci")),
        ] {
            let root = self.runtime_root(handler);
            if !root.exists() {
                continue;
            }
            let o = Command::new("timeout")
                .arg("20")
                .arg(&rt)
                .arg("--root")
                .arg(&root)
                .args(["list", "-q"])
                .output();
            for id in o
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                .unwrap_or_default()
                .split_whitespace()
            {
                let _ = Command::new("timeout")
                    .arg("20")
                    .arg(&rt)
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force", id])
                    .output();
            }
        }
        if let Some(mut d) = self.daemon.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.id() as i32),
                nix::sys::signal::SIGTERM,
            );
            if poll(5.0, || d.try_wait().ok().flatten()).is_none() {
                let _ = d.kill();
            }
            let _ = d.wait();
        }
        // Shims and runtime processes name the test's directory on their command lines.
        let d = self.dir.to_string_lossy().to_string();
        for pid in pids_mentioning(&d) {
            sigkill(pid);
        }
        // Container processes live in the pods' cgroups.
        destroy_cgroup(&self.kube);
        unmount_below(&self.dir);
        for sid in &self.sandboxes {
            let _ = std::fs::remove_file(self.shim_socket(sid));
            for e in std::fs::read_dir("/var/lib/cni/results")
                .into_iter()
                .flatten()
                .flatten()
            {
                if e.file_name().to_string_lossy().contains(sid.as_str()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        // vserver-oci's claims on cgroup paths, if its delete could not drop them.
        for e in std::fs::read_dir("/run/vserver-oci.cgroups")
            .into_iter()
            .flatten()
            .flatten()
        {
            if std::fs::read_to_string(e.path()).is_ok_and(|c| c.contains(&d)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ------------------------------------------------------------------------------------------
// One pod per handler

/// A container the test made: its id and what ContainerStatus said of it.
#[derive(Clone, Debug)]
struct Ctr {
    id: String,
    /// Its init's pid on the host.
    pid: i32,
    /// `linux.cgroupsPath` of its OCI spec.
    cgroup: String,
}

/// What a container is asked for beyond its command.
#[derive(Default)]
struct Extra {
    stdin: bool,
    /// Memory limit (bytes), cpu shares, cpu quota (period 100 ms).
    resources: Option<(i64, i64, i64)>,
    /// Seccomp RuntimeDefault instead of the kubelet's default Unconfined.
    runtime_default_seccomp: bool,
}

/// One handler's pod, and what the steps learnt of it.
struct PodRun<'a> {
    node: &'a mut Node,
    handler: &'static str,
    uid: String,
    name: String,
    /// The pod's cgroup (cgroupfs, as the kubelet names it: /kubepods.../pod<uid>).
    parent: String,
    /// The pod's log directory and kubelet-made files (/etc/hosts, termination logs).
    dir: PathBuf,
    config: Value,
    /// `shareProcessNamespace: true`: the containers join the pause's pid namespace.
    share_pid: bool,
    sandbox: Option<String>,
    pause_pid: Option<i32>,
    netns: Option<String>,
    containers: BTreeMap<&'static str, Ctr>,
}

impl<'a> PodRun<'a> {
    fn new(node: &'a mut Node, handler: &'static str, n: u32, share_pid: bool) -> PodRun<'a> {
        let pid = std::process::id();
        let uid = format!(
            "{pid:08x}-{n:04x}-4000-8000-{:012x}",
            pid as u64 * 7 + n as u64
        );
        let name = if share_pid {
            format!("vst-cri-{handler}-pidns")
        } else {
            format!("vst-cri-{handler}")
        };
        let pid_mode = if share_pid { "POD" } else { "CONTAINER" };
        let parent = format!("/{}/pod{uid}", node.kube);
        let dir = node.dir.join("pods").join(format!("vst_{name}_{uid}"));
        let config = json!({
            "metadata": {"name": name, "uid": uid, "namespace": "vst", "attempt": 0},
            "hostname": name,
            "log_directory": dir.join("logs"),
            "dns_config": {"servers": ["127.0.0.1"], "searches": ["vst.svc.cluster.local"],
                           "options": ["ndots:5"]},
            "labels": {"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": "vst",
                       "io.kubernetes.pod.uid": uid},
            "annotations": {"kubernetes.io/config.source": "api",
                            "kubernetes.io/config.seen": "2026-01-01T00:00:00Z"},
            "linux": {
                "cgroup_parent": parent,
                "security_context": {
                    "namespace_options": {"network": "POD", "pid": pid_mode, "ipc": "POD"},
                    "seccomp": {"profile_type": "Unconfined"}
                },
                "sysctls": {}
            }
        });
        PodRun {
            node,
            handler,
            uid,
            name,
            parent,
            dir,
            config,
            share_pid,
            sandbox: None,
            pause_pid: None,
            netns: None,
            containers: BTreeMap::new(),
        }
    }

    fn rpc(&mut self, method: &str, req: Value) -> Result<Value, String> {
        self.node.cri().rpc(method, req, 30)
    }

    fn sid(&self) -> Result<String, String> {
        self.sandbox
            .clone()
            .ok_or_else(|| "no pod sandbox (RunPodSandbox failed)".to_string())
    }

    fn ctr(&self, name: &str) -> Result<Ctr, String> {
        self.containers
            .get(name)
            .cloned()
            .ok_or_else(|| format!("no {name} container (an earlier step failed)"))
    }

    fn log_file(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(name).join("0.log")
    }

    fn log_text(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_file(name)).unwrap_or_default()
    }

    /// The ContainerConfig the kubelet sends for `name` running `script` under `sh -c`.
    fn container_config(&self, name: &str, script: &str, extra: &Extra) -> Value {
        let kdir = self.dir.join("containers").join(name);
        std::fs::create_dir_all(&kdir).unwrap();
        std::fs::create_dir_all(self.dir.join("logs").join(name)).unwrap();
        let termlog = kdir.join("termination-log");
        std::fs::write(&termlog, "").unwrap();
        let hosts = self.dir.join("etc-hosts");
        let mut resources = json!({});
        if let Some((mem, shares, quota)) = extra.resources {
            resources = json!({"cpu_period": CPU_PERIOD, "cpu_quota": quota,
                               "cpu_shares": shares, "memory_limit_in_bytes": mem,
                               "oom_score_adj": OOM_SCORE_ADJ, "hugepage_limits": []});
        } else {
            resources["cpu_shares"] = json!(2);
            resources["oom_score_adj"] = json!(1000);
        }
        let pid_mode = if self.share_pid { "POD" } else { "CONTAINER" };
        let seccomp = if extra.runtime_default_seccomp {
            "RuntimeDefault"
        } else {
            "Unconfined"
        };
        json!({
            "metadata": {"name": name, "attempt": 0},
            "image": {"image": BUSYBOX_IMAGE},
            "command": ["sh", "-c", script],
            "envs": [{"key": "VST_ENV", "value": "from-cri"}],
            "mounts": [
                {"container_path": "/etc/hosts", "host_path": hosts, "readonly": false,
                 "propagation": "PROPAGATION_PRIVATE"},
                {"container_path": "/dev/termination-log", "host_path": termlog,
                 "readonly": false, "propagation": "PROPAGATION_PRIVATE"}
            ],
            "labels": {"io.kubernetes.container.name": name,
                       "io.kubernetes.pod.name": self.name,
                       "io.kubernetes.pod.namespace": "vst",
                       "io.kubernetes.pod.uid": self.uid},
            "annotations": {"io.kubernetes.container.hash": "1a2b3c4d",
                            "io.kubernetes.container.restartCount": "0",
                            "io.kubernetes.container.terminationMessagePath": "/dev/termination-log",
                            "io.kubernetes.container.terminationMessagePolicy": "File",
                            "io.kubernetes.pod.terminationGracePeriod": "30"},
            "log_path": format!("{name}/0.log"),
            "stdin": extra.stdin,
            "stdin_once": false,
            "tty": false,
            "linux": {
                "resources": resources,
                "security_context": {
                    "namespace_options": {"network": "POD", "pid": pid_mode, "ipc": "POD"},
                    "run_as_user": {"value": 0},
                    "masked_paths": MASKED_PATHS,
                    "readonly_paths": READONLY_PATHS,
                    "seccomp": {"profile_type": seccomp}
                }
            }
        })
    }

    /// CreateContainer (and StartContainer when `start`); the container is recorded.
    fn create(&mut self, name: &'static str, cfg: Value, start: bool) -> Result<String, String> {
        let sid = self.sid()?;
        let r = self.rpc(
            "CreateContainer",
            json!({"pod_sandbox_id": sid, "config": cfg, "sandbox_config": self.config}),
        )?;
        let id = r["container_id"].as_str().unwrap_or_default().to_string();
        self.containers.insert(
            name,
            Ctr {
                id: id.clone(),
                pid: 0,
                cgroup: String::new(),
            },
        );
        if start {
            self.rpc("StartContainer", json!({"container_id": id}))?;
        }
        let (st, info) = self.status(name)?;
        let c = self.containers.get_mut(name).unwrap();
        c.pid = int(&info["pid"]) as i32;
        c.cgroup = info["runtimeSpec"]["linux"]["cgroupsPath"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if start {
            ensure(st["state"] == "CONTAINER_RUNNING", || {
                format!("{name} is not running after StartContainer: {}", brief(&st))
            })?;
        }
        Ok(id)
    }

    /// ContainerStatus (verbose): the status, and the parsed `info` (pid, runtimeSpec...).
    fn status(&mut self, name: &str) -> Result<(Value, Value), String> {
        let id = self.ctr(name)?.id;
        let r = self.rpc(
            "ContainerStatus",
            json!({"container_id": id, "verbose": true}),
        )?;
        let info = r["info"]["info"]
            .as_str()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null);
        Ok((r["status"].clone(), info))
    }

    /// Wait (at most `secs`) until `name` is EXITED; its status.
    fn wait_exited(&mut self, name: &str, secs: f64) -> Result<Value, String> {
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        loop {
            let (st, _) = self.status(name)?;
            if st["state"] == "CONTAINER_EXITED" {
                return Ok(st);
            }
            if Instant::now() > deadline {
                return Err(format!("{name} not EXITED after {secs} s: {}", brief(&st)));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// ExecSync `sh -c script` in `name`: (exit code, stdout, stderr).
    fn exec(&mut self, name: &str, script: &str) -> Result<(i64, String, String), String> {
        let id = self.ctr(name)?.id;
        let r = self.rpc(
            "ExecSync",
            json!({"container_id": id, "cmd": ["sh", "-c", script], "timeout": 20}),
        )?;
        Ok((
            int(&r["exit_code"]),
            r["stdout"].as_str().unwrap_or_default().to_string(),
            r["stderr"].as_str().unwrap_or_default().to_string(),
        ))
    }

    /// ExecSync that must exit 0; its stdout.
    fn exec_ok(&mut self, name: &str, script: &str) -> Result<String, String> {
        let (code, out, err) = self.exec(name, script)?;
        ensure(code == 0, || {
            format!("exec {script:?} in {name}: exit {code}, stdout {out:?}, stderr {err:?}")
        })?;
        Ok(out)
    }

    /// `key=value` lines printed by `script` in `name`, checked against `want`.
    fn exec_expect(
        &mut self,
        name: &str,
        script: &str,
        want: &[(&str, String)],
    ) -> Result<(), String> {
        let out = self.exec_ok(name, script)?;
        let got: BTreeMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
        let bad: Vec<String> = want
            .iter()
            .filter(|(k, v)| got.get(k).map(|g| g.trim()) != Some(v.as_str()))
            .map(|(k, v)| format!("{k}: want {v:?}, got {:?}", got.get(k)))
            .collect();
        ensure(bad.is_empty(), || format!("in {name}: {}", bad.join("; ")))
    }

    fn stop(&mut self, name: &str, grace: i64) -> Result<f64, String> {
        let id = self.ctr(name)?.id;
        let t = Instant::now();
        self.node.cri().rpc(
            "StopContainer",
            json!({"container_id": id, "timeout": grace}),
            grace as u64 + 20,
        )?;
        Ok(t.elapsed().as_secs_f64())
    }
}

// ------------------------------------------------------------------------------------------
// The steps

/// A step: Ok, or what went wrong (containerd's message when a CRI call failed).
type Step = fn(&mut PodRun) -> Result<(), String>;

/// The steps every handler's pod goes through, in order. Later steps use what earlier ones
/// made; when that is missing they fail saying so.
const STEPS: &[(&str, Step)] = &[
    ("run_pod_sandbox", run_pod_sandbox),
    ("pod_sandbox_status", pod_sandbox_status),
    ("create_container", create_container),
    ("start_container", start_container),
    ("container_status", container_status),
    ("oom_score_adj_host", oom_score_adj_host),
    ("exec_sync", exec_sync),
    ("security_context", security_context),
    ("exec_sync_timeout", exec_sync_timeout),
    ("exec_tty", exec_tty),
    ("exec_stream", exec_stream),
    ("logs", logs),
    ("reopen_container_log", reopen_container_log),
    ("attach", attach),
    ("second_container", second_container),
    ("shared_namespaces", shared_namespaces),
    ("localhost", localhost),
    ("shared_dev_shm", shared_dev_shm),
    ("memory_limit_host", memory_limit_host),
    ("memory_limit_inside", memory_limit_inside),
    ("cpu_host", cpu_host),
    ("cpu_inside", cpu_inside),
    ("cgroup_view_inside", cgroup_view_inside),
    ("besteffort_cpu_shares", besteffort_cpu_shares),
    ("update_container_resources", update_container_resources),
    ("stats", stats),
    ("oom_killed", oom_killed),
    ("exit_code", exit_code),
    ("stop_graceful", stop_graceful),
    ("stop_grace_expired", stop_grace_expired),
    ("remove_containers", remove_containers),
    ("stop_pod_sandbox", stop_pod_sandbox),
    ("remove_pod_sandbox", remove_pod_sandbox),
    ("nothing_left", nothing_left),
    ("pod_cgroup_removable", pod_cgroup_removable),
];

/// A second pod per handler, with `shareProcessNamespace: true` (pid namespace POD): the
/// containers join the pause's pid namespace, so the shim kills what is left of a
/// container (`kill --all`) when its init exits.
const PIDNS_STEPS: &[(&str, Step)] = &[
    ("pidns_run_pod_sandbox", run_pod_sandbox),
    ("pidns_pod_sandbox_status", pod_sandbox_status),
    ("pidns_container", pidns_container),
    ("pidns_sees_pause", pidns_sees_pause),
    ("pidns_exit_code", exit_code),
    ("pidns_stop", pidns_stop),
    ("pidns_remove_containers", remove_containers),
    ("pidns_stop_pod_sandbox", stop_pod_sandbox),
    ("pidns_remove_pod_sandbox", remove_pod_sandbox),
    ("pidns_nothing_left", nothing_left),
    ("pidns_pod_cgroup_removable", pod_cgroup_removable),
];

/// The kubelet makes the pod's cgroup in every hierarchy and its files (/etc/hosts), then
/// RunPodSandbox with the handler.
fn run_pod_sandbox(p: &mut PodRun) -> Result<(), String> {
    make_cgroup(&p.parent);
    std::fs::create_dir_all(p.dir.join("logs")).unwrap();
    std::fs::write(
        p.dir.join("etc-hosts"),
        "# Kubernetes-managed hosts file (vst-kubelet-hosts).\n127.0.0.1\tlocalhost\n",
    )
    .unwrap();
    let r = p.rpc(
        "RunPodSandbox",
        json!({"config": p.config, "runtime_handler": p.handler}),
    )?;
    let sid = r["pod_sandbox_id"].as_str().unwrap_or_default().to_string();
    ensure(!sid.is_empty(), || format!("no pod_sandbox_id in {r}"))?;
    p.node.sandboxes.push(sid.clone());
    p.sandbox = Some(sid);
    Ok(())
}

/// PodSandboxStatus: READY with 127.0.0.1; its pause process in the pod's cgroup and in a
/// network namespace of its own that has only `lo`.
fn pod_sandbox_status(p: &mut PodRun) -> Result<(), String> {
    let sid = p.sid()?;
    let r = p.rpc(
        "PodSandboxStatus",
        json!({"pod_sandbox_id": sid, "verbose": true}),
    )?;
    let st = &r["status"];
    ensure(st["state"] == "SANDBOX_READY", || format!("state: {st}"))?;
    ensure(st["network"]["ip"] == "127.0.0.1", || {
        format!("network: {st}")
    })?;
    ensure(st["runtime_handler"] == p.handler, || {
        format!("handler: {st}")
    })?;
    let sock = p.node.shim_socket(&sid);
    ensure(sock.exists(), || {
        format!("no shim socket {} (nothing_left checks it)", sock.display())
    })?;
    let info: Value = r["info"]["info"]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| format!("no verbose info: {r}"))?;
    let pid = int(&info["pid"]) as i32;
    ensure(pid > 0, || format!("no pid in the sandbox's info: {info}"))?;
    p.pause_pid = Some(pid);
    p.netns = info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["type"] == "network"))
        .and_then(|n| n["path"].as_str())
        .map(String::from);
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    ensure(cg.contains(&format!("{}/", p.parent)), || {
        format!("pause ({pid}) is not below {}: {cg}", p.parent)
    })?;
    let own = std::fs::read_link(format!("/proc/{pid}/ns/net")).map_err(|e| e.to_string())?;
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    ensure(own != host, || {
        "the pod is in the host's network namespace".into()
    })?;
    let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(str::trim))
        .collect();
    ensure(ifaces == ["lo"], || format!("pod interfaces: {ifaces:?}"))
}

/// The app container, as the kubelet asks for it: stdin open, a memory limit, cpu shares and
/// quota, an oom_score_adj, default masked and read-only paths, /etc/hosts and
/// /dev/termination-log mounts. It writes a line on each stream, echoes its stdin, and waits.
fn create_container(p: &mut PodRun) -> Result<(), String> {
    let script = "echo hello-stdout; echo hello-stderr >&2; \
                  while read line; do echo \"got:$line\"; done; exec sleep 2147483647";
    let cfg = p.container_config(
        "app",
        script,
        &Extra {
            stdin: true,
            resources: Some((MEM_LIMIT, CPU_SHARES, CPU_QUOTA)),
            ..Extra::default()
        },
    );
    p.create("app", cfg, false)?;
    let (st, _) = p.status("app")?;
    ensure(st["state"] == "CONTAINER_CREATED", || {
        format!("after create: {}", brief(&st))
    })
}

fn start_container(p: &mut PodRun) -> Result<(), String> {
    let id = p.ctr("app")?.id;
    p.rpc("StartContainer", json!({"container_id": id}))?;
    Ok(())
}

/// ContainerStatus: RUNNING, started, its image and log path; its init in the pod's cgroup.
fn container_status(p: &mut PodRun) -> Result<(), String> {
    let (st, info) = p.status("app")?;
    ensure(st["state"] == "CONTAINER_RUNNING", || {
        format!("state: {}", brief(&st))
    })?;
    ensure(int(&st["started_at"]) > 0, || {
        format!("started_at: {}", brief(&st))
    })?;
    ensure(st["image"]["image"] == BUSYBOX_IMAGE, || {
        format!("image: {}", st["image"])
    })?;
    ensure(
        st["log_path"]
            .as_str()
            .is_some_and(|l| l.ends_with("app/0.log")),
        || format!("log_path: {}", st["log_path"]),
    )?;
    let pid = int(&info["pid"]) as i32;
    let cgroup = info["runtimeSpec"]["linux"]["cgroupsPath"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    ensure(pid > 0 && cgroup.starts_with(&p.parent), || {
        format!("pid {pid}, cgroupsPath {cgroup:?}")
    })?;
    let c = p.containers.get_mut("app").unwrap();
    c.pid = pid;
    c.cgroup = cgroup;
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    ensure(own.contains(&format!("{}/", p.parent)), || {
        format!("the app's init {pid} is not below {}: {own}", p.parent)
    })
}

/// The container's init has the oom_score_adj asked for, seen from the host.
fn oom_score_adj_host(p: &mut PodRun) -> Result<(), String> {
    let pid = p.ctr("app")?.pid;
    let adj = read_trim(Path::new(&format!("/proc/{pid}/oom_score_adj")))?;
    ensure(adj == OOM_SCORE_ADJ.to_string(), || {
        format!("/proc/{pid}/oom_score_adj = {adj}, want {OOM_SCORE_ADJ}")
    })
}

/// ExecSync: exit code, stdout and stderr apart.
fn exec_sync(p: &mut PodRun) -> Result<(), String> {
    let (code, out, err) = p.exec("app", "echo out; echo err >&2; exit 7")?;
    ensure(code == 7 && out == "out\n" && err == "err\n", || {
        format!("exit {code}, stdout {out:?}, stderr {err:?}; want 7, \"out\\n\", \"err\\n\"")
    })
}

/// Inside the app (through ExecSync): the pod's hostname, the oom_score_adj, masked paths
/// empty, read-only paths refusing writes, the env, the kubelet's /etc/hosts, the pod's DNS
/// config in /etc/resolv.conf, a writable /dev/termination-log.
fn security_context(p: &mut PodRun) -> Result<(), String> {
    let script = r#"
        echo hostname=$(hostname)
        echo oom=$(cat /proc/self/oom_score_adj)
        echo kcore=$(head -c 1 /proc/kcore | wc -c)
        echo keys=$(head -c 1 /proc/keys | wc -c)
        echo firmware=$(ls -A /sys/firmware | wc -l)
        echo procsys=$( (: > /proc/sys/kernel/hostname) 2>/dev/null && echo writable || echo refused)
        echo sysrq=$( (: > /proc/sysrq-trigger) 2>/dev/null && echo writable || echo refused)
        echo env=$VST_ENV
        echo hosts=$(grep -c vst-kubelet-hosts /etc/hosts)
        echo resolv=$(grep -c 'nameserver 127.0.0.1' /etc/resolv.conf)
        echo termlog=$( (echo bye > /dev/termination-log) 2>/dev/null && echo ok || echo refused)
        echo uid=$(id -u)
    "#;
    let want = [
        ("hostname", p.name.clone()),
        ("oom", OOM_SCORE_ADJ.to_string()),
        ("kcore", "0".into()),
        ("keys", "0".into()),
        ("firmware", "0".into()),
        ("procsys", "refused".into()),
        ("sysrq", "refused".into()),
        ("env", "from-cri".into()),
        ("hosts", "1".into()),
        ("resolv", "1".into()),
        ("termlog", "ok".into()),
        ("uid", "0".into()),
    ];
    p.exec_expect("app", script, &want)
}

/// ExecSync with a timeout: containerd answers with an error once it runs out, and the
/// command does not outlive it.
fn exec_sync_timeout(p: &mut PodRun) -> Result<(), String> {
    let id = p.ctr("app")?.id;
    let t = Instant::now();
    let r = p.rpc(
        "ExecSync",
        json!({"container_id": id, "cmd": ["sleep", "31"], "timeout": 2}),
    );
    let secs = t.elapsed().as_secs_f64();
    match r {
        Ok(r) => {
            return Err(format!(
                "ExecSync of sleep 31 with timeout 2 answered {r} after {secs:.1} s"
            ))
        }
        Err(e) => ensure(e.contains("timeout") && secs < 15.0, || {
            format!("after {secs:.1} s: {e}")
        })?,
    }
    let left = poll(10.0, || {
        let out = p.exec_ok("app", "ps -o args").ok()?;
        (!out.contains("sleep 31")).then_some(())
    });
    ensure(left.is_some(), || {
        "`sleep 31` still runs 10 s after its ExecSync timed out".into()
    })
}

/// A streamed exec with a tty (what `kubectl exec -it` does): a pty of the container's,
/// resized to 100x40, and the shell's exit code.
fn exec_tty(p: &mut PodRun) -> Result<(), String> {
    let id = p.ctr("app")?.id;
    let r = p.rpc(
        "Exec",
        json!({"container_id": id, "cmd": ["sh"], "tty": true, "stdin": true, "stdout": true}),
    )?;
    let url = r["url"].as_str().unwrap_or_default().to_string();
    let s = p.node.cri().stream(
        &url,
        &["stty size; tty; echo $((6*7))\n", "exit 3\n"],
        Some((100, 40)),
        None,
        20,
    )?;
    ensure(
        s.closed
            && s.exit == Some(3)
            && s.stdout.contains("40 100")
            && s.stdout.contains("/dev/pts/")
            && s.stdout.contains("42"),
        || format!("{s:?}; want size \"40 100\", a /dev/pts tty, 42, exit 3"),
    )
}

/// A streamed exec without a tty: stdin in, stdout and stderr apart, the exit code.
fn exec_stream(p: &mut PodRun) -> Result<(), String> {
    let id = p.ctr("app")?.id;
    let r = p.rpc(
        "Exec",
        json!({"container_id": id, "cmd": ["sh", "-c", "read x; echo got:$x; echo err:$x >&2; exit 5"],
               "stdin": true, "stdout": true, "stderr": true}),
    )?;
    let url = r["url"].as_str().unwrap_or_default().to_string();
    let s = p.node.cri().stream(&url, &["hello\n"], None, None, 20)?;
    ensure(
        s.exit == Some(5) && s.stdout == "got:hello\n" && s.stderr == "err:hello\n",
        || format!("{s:?}; want stdout got:hello, stderr err:hello, exit 5"),
    )
}

/// The container's output in its CRI log file, one line per write, each stream named.
fn logs(p: &mut PodRun) -> Result<(), String> {
    let ok = poll(10.0, || {
        let t = p.log_text("app");
        (t.contains(" stdout F hello-stdout\n") && t.contains(" stderr F hello-stderr\n"))
            .then_some(())
    });
    ensure(ok.is_some(), || {
        format!("{}: {:?}", p.log_file("app").display(), p.log_text("app"))
    })
}

/// Log rotation as the kubelet does it: rename the file, ReopenContainerLog, and new output
/// goes to a new file.
fn reopen_container_log(p: &mut PodRun) -> Result<(), String> {
    let id = p.ctr("app")?.id;
    let f = p.log_file("app");
    std::fs::rename(&f, f.with_extension("log.1")).map_err(|e| e.to_string())?;
    p.rpc("ReopenContainerLog", json!({"container_id": id}))?;
    p.exec_ok("app", "echo after-reopen > /proc/1/fd/1")?;
    let ok = poll(10.0, || {
        p.log_text("app")
            .contains(" stdout F after-reopen\n")
            .then_some(())
    });
    ensure(ok.is_some(), || {
        format!("the reopened log has {:?}", p.log_text("app"))
    })
}

/// Attach to the app's stdin and stdout: a line in, its echo out (and in the log).
fn attach(p: &mut PodRun) -> Result<(), String> {
    let id = p.ctr("app")?.id;
    let r = p.rpc(
        "Attach",
        json!({"container_id": id, "stdin": true, "stdout": true, "stderr": true}),
    )?;
    let url = r["url"].as_str().unwrap_or_default().to_string();
    let s = p
        .node
        .cri()
        .stream(&url, &["ping\n"], None, Some("got:ping"), 15)?;
    ensure(s.stdout.contains("got:ping\n"), || format!("{s:?}"))?;
    let ok = poll(5.0, || {
        p.log_text("app")
            .contains(" stdout F got:ping\n")
            .then_some(())
    });
    ensure(ok.is_some(), || {
        format!("the log has {:?}", p.log_text("app"))
    })
}

/// A second container in the pod (seccomp RuntimeDefault): it writes to /dev/shm and serves
/// HTTP on 127.0.0.1:8080.
fn second_container(p: &mut PodRun) -> Result<(), String> {
    let script = "mkdir -p /www && echo peer-www > /www/index.html && \
                  echo shm-from-peer > /dev/shm/peer && exec httpd -f -p 127.0.0.1:8080 -h /www";
    let cfg = p.container_config(
        "peer",
        script,
        &Extra {
            runtime_default_seccomp: true,
            ..Extra::default()
        },
    );
    p.create("peer", cfg, true)?;
    Ok(())
}

/// The app and the peer share the pod's network, IPC and UTS namespaces (the pause
/// process's) and have pid namespaces of their own.
fn shared_namespaces(p: &mut PodRun) -> Result<(), String> {
    let pause = p
        .pause_pid
        .ok_or("no pause pid (pod_sandbox_status failed)")?;
    let script = "for n in net ipc uts pid; do echo $n=$(readlink /proc/self/ns/$n); done";
    let mut seen = BTreeMap::new();
    for c in ["app", "peer"] {
        let out = p.exec_ok(c, script)?;
        for l in out.lines() {
            if let Some((k, v)) = l.split_once('=') {
                seen.insert(format!("{c}.{k}"), v.to_string());
            }
        }
    }
    let mut bad = Vec::new();
    for n in ["net", "ipc", "uts"] {
        let host = std::fs::read_link(format!("/proc/{pause}/ns/{n}"))
            .map(|l| l.to_string_lossy().to_string())
            .unwrap_or_default();
        for c in ["app", "peer"] {
            if seen.get(&format!("{c}.{n}")) != Some(&host) {
                bad.push(format!(
                    "{c}'s {n} is {:?}, the pod's {host}",
                    seen.get(&format!("{c}.{n}"))
                ));
            }
        }
    }
    if seen.get("app.pid") == seen.get("peer.pid") {
        bad.push(format!(
            "app and peer share a pid namespace {:?}",
            seen.get("app.pid")
        ));
    }
    ensure(bad.is_empty(), || bad.join("; "))
}

/// The app reaches the peer's HTTP server on 127.0.0.1 (busybox's wget without -T: with it,
/// Debian's static busybox 1.35 segfaults).
fn localhost(p: &mut PodRun) -> Result<(), String> {
    let out = p.exec_ok(
        "app",
        "for i in $(seq 50); do wget -q -O - http://127.0.0.1:8080/index.html && exit 0; \
         sleep 0.1; done; exit 1",
    )?;
    ensure(out == "peer-www\n", || format!("got {out:?}"))
}

/// /dev/shm is the pod's: what the peer wrote the app reads and the other way round, and
/// it is in the sandbox's shm on the host.
fn shared_dev_shm(p: &mut PodRun) -> Result<(), String> {
    let sid = p.sid()?;
    let out = p.exec_ok("app", "cat /dev/shm/peer")?;
    ensure(out == "shm-from-peer\n", || {
        format!("the app reads /dev/shm/peer as {out:?}")
    })?;
    p.exec_ok("app", "echo from-app > /dev/shm/app")?;
    let out = p.exec_ok("peer", "cat /dev/shm/app")?;
    ensure(out == "from-app\n", || {
        format!("the peer reads /dev/shm/app as {out:?}")
    })?;
    let host = p.node.sandbox_shm(&sid).join("app");
    let seen = std::fs::read_to_string(&host).unwrap_or_default();
    ensure(seen == "from-app\n", || {
        format!("{} has {seen:?}", host.display())
    })
}

/// The memory limit on the container's cgroup, seen from the host.
fn memory_limit_host(p: &mut PodRun) -> Result<(), String> {
    let cg = p.ctr("app")?.cgroup;
    let f = cgroup_file("memory", &cg, "memory.limit_in_bytes", "memory.max");
    let v = read_trim(&f)?;
    ensure(v == MEM_LIMIT.to_string(), || {
        format!("{} = {v}, want {MEM_LIMIT}", f.display())
    })
}

/// The memory limit seen from inside, in the container's own /sys/fs/cgroup.
fn memory_limit_inside(p: &mut PodRun) -> Result<(), String> {
    let f = if cgroup_v2() {
        "/sys/fs/cgroup/memory.max"
    } else {
        "/sys/fs/cgroup/memory/memory.limit_in_bytes"
    };
    p.exec_expect(
        "app",
        &format!("echo mem=$(cat {f})"),
        &[("mem", MEM_LIMIT.to_string())],
    )
}

/// What cpu shares and quota must read as on the host: v1 files, or v2's weight and max
/// (runc's conversion of shares to a weight).
fn cpu_expectations(shares: i64, quota: i64) -> Vec<(&'static str, &'static str, String)> {
    if cgroup_v2() {
        let weight = 1 + ((shares - 2) * 9999) / 262_142;
        vec![
            ("cpu", "cpu.weight", weight.to_string()),
            ("cpu", "cpu.max", format!("{quota} {CPU_PERIOD}")),
        ]
    } else {
        vec![
            ("cpu", "cpu.shares", shares.to_string()),
            ("cpu", "cpu.cfs_quota_us", quota.to_string()),
            ("cpu", "cpu.cfs_period_us", CPU_PERIOD.to_string()),
        ]
    }
}

fn check_cpu_host(cg: &str, shares: i64, quota: i64) -> Result<(), String> {
    let mut bad = Vec::new();
    for (ctrl, file, want) in cpu_expectations(shares, quota) {
        let f = cgroup_file(ctrl, cg, file, file);
        match read_trim(&f) {
            Ok(v) if v == want => {}
            Ok(v) => bad.push(format!("{} = {v}, want {want}", f.display())),
            Err(e) => bad.push(e),
        }
    }
    ensure(bad.is_empty(), || bad.join("; "))
}

/// CPU shares, quota and period on the container's cgroup, seen from the host.
fn cpu_host(p: &mut PodRun) -> Result<(), String> {
    let cg = p.ctr("app")?.cgroup;
    check_cpu_host(&cg, CPU_SHARES, CPU_QUOTA)
}

/// The same, seen from inside the container.
fn cpu_inside(p: &mut PodRun) -> Result<(), String> {
    let exp = cpu_expectations(CPU_SHARES, CPU_QUOTA);
    let script: String = exp
        .iter()
        .map(|(ctrl, file, _)| {
            let path = if cgroup_v2() {
                format!("/sys/fs/cgroup/{file}")
            } else {
                format!("/sys/fs/cgroup/{ctrl}/{file}")
            };
            format!("echo {file}=$(cat {path})\n")
        })
        .collect();
    let want: Vec<(&str, String)> = exp.iter().map(|(_, f, w)| (*f, w.clone())).collect();
    p.exec_expect("app", &script, &want)
}

/// The container's /sys/fs/cgroup shows its own cgroup only: no cgroup below any hierarchy's
/// root there, and its init among the root's processes.
fn cgroup_view_inside(p: &mut PodRun) -> Result<(), String> {
    let (depth, procs) = if cgroup_v2() {
        (1, "/sys/fs/cgroup/cgroup.procs")
    } else {
        (2, "/sys/fs/cgroup/memory/cgroup.procs")
    };
    let script = format!(
        "echo below=$(find /sys/fs/cgroup -mindepth {depth} -type d | head -5 | tr '\\n' ' ')\n\
         echo init=$(grep -cx 1 {procs})"
    );
    p.exec_expect(
        "app",
        &script,
        &[("below", String::new()), ("init", "1".into())],
    )
}

/// A BestEffort container (the peer) gets the kubelet's minimum of 2 cpu shares, exactly.
fn besteffort_cpu_shares(p: &mut PodRun) -> Result<(), String> {
    let cg = p.ctr("peer")?.cgroup;
    let (file, want) = if cgroup_v2() {
        ("cpu.weight", "1")
    } else {
        ("cpu.shares", "2")
    };
    let f = cgroup_file("cpu", &cg, file, file);
    let v = read_trim(&f)?;
    ensure(v == want, || format!("{} = {v}, want {want}", f.display()))
}

/// UpdateContainerResources (what the kubelet sends on a resize): new memory limit, shares
/// and quota on the host's cgroup and inside.
fn update_container_resources(p: &mut PodRun) -> Result<(), String> {
    let c = p.ctr("app")?;
    p.rpc(
        "UpdateContainerResources",
        json!({"container_id": c.id, "linux": {
            "cpu_period": CPU_PERIOD, "cpu_quota": QUOTA_UPDATED, "cpu_shares": SHARES_UPDATED,
            "memory_limit_in_bytes": MEM_UPDATED, "oom_score_adj": OOM_SCORE_ADJ,
            "hugepage_limits": []}}),
    )?;
    let f = cgroup_file("memory", &c.cgroup, "memory.limit_in_bytes", "memory.max");
    let v = read_trim(&f)?;
    ensure(v == MEM_UPDATED.to_string(), || {
        format!("{} = {v}, want {MEM_UPDATED}", f.display())
    })?;
    check_cpu_host(&c.cgroup, SHARES_UPDATED, QUOTA_UPDATED)?;
    let inside = if cgroup_v2() {
        "/sys/fs/cgroup/memory.max"
    } else {
        "/sys/fs/cgroup/memory/memory.limit_in_bytes"
    };
    p.exec_expect(
        "app",
        &format!("echo mem=$(cat {inside})"),
        &[("mem", MEM_UPDATED.to_string())],
    )
}

/// ContainerStats and ListContainerStats: CPU time and memory in use, for each container.
fn stats(p: &mut PodRun) -> Result<(), String> {
    let sid = p.sid()?;
    let app = p.ctr("app")?.id;
    let peer = p.ctr("peer")?.id;
    // Burn a little CPU so that usage is not zero.
    p.exec_ok("app", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")?;
    let r = p.rpc("ContainerStats", json!({"container_id": app}))?;
    let s = &r["stats"];
    ensure(
        int(&s["cpu"]["usage_core_nano_seconds"]["value"]) > 0
            && int(&s["memory"]["working_set_bytes"]["value"]) > 0,
        || format!("ContainerStats: {r}"),
    )?;
    let r = p.rpc(
        "ListContainerStats",
        json!({"filter": {"pod_sandbox_id": sid}}),
    )?;
    let ids: Vec<&str> = r["stats"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["attributes"]["id"].as_str())
                .collect()
        })
        .unwrap_or_default();
    ensure(
        ids.contains(&app.as_str()) && ids.contains(&peer.as_str()),
        || format!("ListContainerStats: {r}"),
    )?;
    let peer_mem = r["stats"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["attributes"]["id"] == peer.as_str()))
        .map(|s| int(&s["memory"]["working_set_bytes"]["value"]))
        .unwrap_or(0);
    ensure(peer_mem > 0, || {
        format!("the peer's memory in ListContainerStats: {r}")
    })
}

/// A container that outgrows its memory limit is killed by the kernel: EXITED, 137,
/// reason OOMKilled.
fn oom_killed(p: &mut PodRun) -> Result<(), String> {
    let cfg = p.container_config(
        "hog",
        "echo start; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
        &Extra {
            resources: Some((32 << 20, CPU_SHARES, CPU_QUOTA)),
            ..Extra::default()
        },
    );
    p.create("hog", cfg, true)?;
    let st = p.wait_exited("hog", 30.0)?;
    ensure(
        int(&st["exit_code"]) == 137 && st["reason"] == "OOMKilled",
        || format!("status: {}; log: {:?}", brief(&st), p.log_text("hog")),
    )
}

/// A container that exits by itself with a code: EXITED with that code, reason Error, finished
/// after it started, its output in its log. (It lives a second: one that exits at once may
/// be reaped before containerd notes its start, with either runtime.)
fn exit_code(p: &mut PodRun) -> Result<(), String> {
    let cfg = p.container_config("exiter", "echo bye; sleep 1; exit 42", &Extra::default());
    p.create("exiter", cfg, true)?;
    let st = p.wait_exited("exiter", 20.0)?;
    ensure(
        int(&st["exit_code"]) == 42
            && st["reason"] == "Error"
            && int(&st["finished_at"]) >= int(&st["started_at"]),
        || format!("status: {}", brief(&st)),
    )?;
    let ok = poll(5.0, || {
        p.log_text("exiter")
            .contains(" stdout F bye\n")
            .then_some(())
    });
    ensure(ok.is_some(), || format!("log: {:?}", p.log_text("exiter")))
}

/// StopContainer with a grace period on a container that handles SIGTERM: it stops at
/// once with the code its handler exits with.
fn stop_graceful(p: &mut PodRun) -> Result<(), String> {
    let cfg = p.container_config(
        "trapper",
        "trap 'echo term; exit 143' TERM; echo ready; while :; do sleep 1 & wait $!; done",
        &Extra::default(),
    );
    p.create("trapper", cfg, true)?;
    let ready = poll(10.0, || {
        p.log_text("trapper")
            .contains(" stdout F ready\n")
            .then_some(())
    });
    ensure(ready.is_some(), || {
        format!("trapper's log: {:?}", p.log_text("trapper"))
    })?;
    let secs = p.stop("trapper", 10)?;
    let (st, _) = p.status("trapper")?;
    ensure(
        secs < 8.0 && st["state"] == "CONTAINER_EXITED" && int(&st["exit_code"]) == 143,
        || format!("StopContainer took {secs:.1} s; status: {}", brief(&st)),
    )?;
    ensure(p.log_text("trapper").contains(" stdout F term\n"), || {
        format!("trapper's log: {:?}", p.log_text("trapper"))
    })
}

/// StopContainer on a container that ignores SIGTERM (its init is the shell, pid 1 of its
/// pid namespace): killed once the 2 s grace period is over, exit code 137.
fn stop_grace_expired(p: &mut PodRun) -> Result<(), String> {
    let secs = p.stop("app", 2)?;
    let (st, _) = p.status("app")?;
    ensure(
        (1.8..15.0).contains(&secs)
            && st["state"] == "CONTAINER_EXITED"
            && int(&st["exit_code"]) == 137,
        || {
            format!(
                "StopContainer with 2 s took {secs:.1} s; status: {}",
                brief(&st)
            )
        },
    )
}

/// In the shared pid namespace pod: a long-running container.
fn pidns_container(p: &mut PodRun) -> Result<(), String> {
    let cfg = p.container_config("app", "exec sleep 2147483647", &Extra::default());
    p.create("app", cfg, true)?;
    Ok(())
}

/// The container sees the pause's processes (pid 1 is the pause's shell) and its own.
fn pidns_sees_pause(p: &mut PodRun) -> Result<(), String> {
    let out = p.exec_ok("app", "ps -o pid,args")?;
    let pid1 = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some("1"))
        .unwrap_or_default();
    ensure(
        pid1.contains("trap") && out.contains("sleep 2147483647"),
        || format!("ps in the shared pid namespace: {out:?}"),
    )
}

/// StopContainer in the shared pid namespace: its sleep is not a pid 1, SIGTERM ends it at
/// once (143), and the exit is seen.
fn pidns_stop(p: &mut PodRun) -> Result<(), String> {
    let secs = p.stop("app", 10)?;
    let (st, _) = p.status("app")?;
    ensure(
        secs < 8.0 && st["state"] == "CONTAINER_EXITED" && int(&st["exit_code"]) == 143,
        || format!("StopContainer took {secs:.1} s; status: {}", brief(&st)),
    )
}

/// The kubelet stops what still runs and removes every container; the runtime keeps no
/// state of them.
fn remove_containers(p: &mut PodRun) -> Result<(), String> {
    let sid = p.sid()?;
    if p.containers.contains_key("peer") {
        p.stop("peer", 1)?;
    }
    let mut bad = Vec::new();
    for (name, c) in p.containers.clone() {
        if let Err(e) = p.rpc("RemoveContainer", json!({"container_id": c.id})) {
            bad.push(format!("{name}: {e}"));
        }
    }
    let r = p.rpc("ListContainers", json!({"filter": {"pod_sandbox_id": sid}}))?;
    if r["containers"].as_array().is_some_and(|a| !a.is_empty()) {
        bad.push(format!("ListContainers after removal: {r}"));
    }
    let root = p.node.runtime_root(p.handler);
    for (name, c) in &p.containers {
        if root.join(&c.id).exists() {
            bad.push(format!(
                "{name}'s runtime state {} is left",
                root.join(&c.id).display()
            ));
        }
    }
    ensure(bad.is_empty(), || bad.join("; "))
}

/// StopPodSandbox: NOTREADY, its network namespace gone.
fn stop_pod_sandbox(p: &mut PodRun) -> Result<(), String> {
    let sid = p.sid()?;
    p.rpc("StopPodSandbox", json!({"pod_sandbox_id": sid}))?;
    let r = p.rpc("PodSandboxStatus", json!({"pod_sandbox_id": sid}))?;
    ensure(r["status"]["state"] == "SANDBOX_NOTREADY", || {
        format!("{r}")
    })?;
    if let Some(ns) = &p.netns {
        ensure(!Path::new(ns).exists(), || {
            format!("the pod's netns {ns} is left")
        })?;
    }
    Ok(())
}

/// RemovePodSandbox: gone from PodSandboxStatus and ListPodSandbox.
fn remove_pod_sandbox(p: &mut PodRun) -> Result<(), String> {
    let sid = p.sid()?;
    p.rpc("RemovePodSandbox", json!({"pod_sandbox_id": sid}))?;
    let r = p.rpc("PodSandboxStatus", json!({"pod_sandbox_id": sid}));
    ensure(r.as_ref().is_err_and(|e| e.contains("NOT_FOUND")), || {
        format!("PodSandboxStatus after removal: {r:?}")
    })?;
    let l = p.rpc("ListPodSandbox", json!({}))?;
    ensure(!l.to_string().contains(&sid), || {
        format!("ListPodSandbox: {l}")
    })
}

/// Nothing of the pod is left: no process naming it (shim, runtime), no process or cgroup
/// below the pod's cgroup, no mount, no runtime state, no vserver-oci claim, no CNI cache,
/// no shim socket.
fn nothing_left(p: &mut PodRun) -> Result<(), String> {
    let sid = p.sid()?;
    let mut ids = vec![sid.clone()];
    ids.extend(p.containers.values().map(|c| c.id.clone()));
    let mut bad = Vec::new();
    for id in &ids {
        for pid in pids_mentioning(id) {
            bad.push(format!("process {pid}: {}", clip(&cmdline(pid), 200)));
        }
        for m in mounts_containing(id) {
            bad.push(format!("mount {m}"));
        }
        let state = p.node.runtime_root(p.handler).join(id);
        if state.exists() {
            bad.push(format!("runtime state {}", state.display()));
        }
    }
    for pid in cgroup_procs(&p.parent) {
        bad.push(format!(
            "process {pid} in the pod's cgroup: {}",
            clip(&cmdline(pid), 200)
        ));
    }
    for d in cgroups_below(&p.parent) {
        bad.push(format!("cgroup {}", d.display()));
    }
    for e in std::fs::read_dir("/run/vserver-oci.cgroups")
        .into_iter()
        .flatten()
        .flatten()
    {
        let c = std::fs::read_to_string(e.path()).unwrap_or_default();
        if c.contains(&p.parent) {
            bad.push(format!(
                "vserver-oci claim {}: {}",
                e.path().display(),
                c.trim()
            ));
        }
    }
    for e in std::fs::read_dir("/var/lib/cni/results")
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name().to_string_lossy().contains(&sid) {
            bad.push(format!("CNI cache {}", e.path().display()));
        }
    }
    let sock = p.node.shim_socket(&sid);
    if sock.exists() {
        bad.push(format!("shim socket {}", sock.display()));
    }
    ensure(bad.is_empty(), || bad.join("; "))
}

/// The kubelet removes the pod's cgroup once the pod is gone: it is empty in every hierarchy.
fn pod_cgroup_removable(p: &mut PodRun) -> Result<(), String> {
    let mut bad = Vec::new();
    for h in hierarchies() {
        let d = h.join(p.parent.trim_matches('/'));
        if d.exists() {
            if let Err(e) = std::fs::remove_dir(&d) {
                bad.push(format!("rmdir {}: {e}", d.display()));
            }
        }
    }
    ensure(bad.is_empty(), || bad.join("; "))
}

// ------------------------------------------------------------------------------------------
// The test

/// One step's outcome for one handler: Ok or the error, and how long it took.
type Outcome = (Result<(), String>, f64);

/// Run `steps` for one pod, recording each outcome (a step that panics fails).
fn run_steps(p: &mut PodRun, steps: &[(&str, Step)], out: &mut Vec<Outcome>) {
    let handler = p.handler;
    for (name, step) in steps {
        let offset = std::fs::metadata(p.node.log())
            .map(|m| m.len())
            .unwrap_or(0);
        let since = SystemTime::now() - Duration::from_secs(1);
        let t = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(p))).unwrap_or_else(
            |e| {
                Err(format!(
                    "panicked: {}",
                    e.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                ))
            },
        );
        let secs = t.elapsed().as_secs_f64();
        let r = r.map_err(|e| format!("{e}{}", p.node.diagnostics(offset, since)));
        match &r {
            Ok(()) => eprintln!("[{handler}] {name}: ok ({secs:.1} s)"),
            Err(e) => eprintln!("[{handler}] {name}: FAILED ({secs:.1} s): {e}"),
        }
        out.push((r, secs));
    }
}

/// Both of `handler`'s pods through their steps: [`STEPS`], then [`PIDNS_STEPS`].
fn run_pods(node: &mut Node, handler: &'static str, n: u32) -> Vec<Outcome> {
    let mut out = Vec::new();
    run_steps(
        &mut PodRun::new(node, handler, 2 * n, false),
        STEPS,
        &mut out,
    );
    run_steps(
        &mut PodRun::new(node, handler, 2 * n + 1, true),
        PIDNS_STEPS,
        &mut out,
    );
    out
}

/// Every step's name, in the order [`run_pods`] records them.
fn step_names() -> Vec<&'static str> {
    STEPS.iter().chain(PIDNS_STEPS).map(|(n, _)| *n).collect()
}

#[test]
fn cri_pods_run_through_runc_and_vserver_oci() {
    if !require_root() || !require_tools() {
        return;
    }
    let t0 = Instant::now();
    let mut node = Node::start();
    let handlers = ["runc", "vserver"];
    let results: Vec<Vec<Outcome>> = handlers
        .iter()
        .enumerate()
        .map(|(i, h)| run_pods(&mut node, h, i as u32))
        .collect();
    // The report: every step for both handlers, then the details of what failed.
    let mut report = format!("{:<28} {:<16} {:<16}\n", "step", handlers[0], handlers[1]);
    let mut harness = Vec::new();
    let mut regressions = Vec::new();
    for (i, name) in step_names().into_iter().enumerate() {
        let cell =
            |o: &Outcome| format!("{} {:.1}s", if o.0.is_ok() { "ok" } else { "FAILED" }, o.1);
        report += &format!(
            "{name:<28} {:<16} {:<16}\n",
            cell(&results[0][i]),
            cell(&results[1][i])
        );
        match (&results[0][i].0, &results[1][i].0) {
            (Err(e), _) => harness.push(format!("{name} (runc): {e}")),
            (Ok(()), Err(e)) => regressions.push(format!("{name}: {e}")),
            _ => {}
        }
    }
    report += &format!("total {:.0} s\n", t0.elapsed().as_secs_f64());
    for (what, list) in [
        ("failed for runc (a harness problem)", &harness),
        ("failed for vserver-oci but passed for runc", &regressions),
    ] {
        if !list.is_empty() {
            report += &format!("\nsteps that {what}:\n  {}\n", list.join("\n  "));
        }
    }
    eprintln!("\n{report}");
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let _ = std::fs::write(keep.join("oci_cri-report.txt"), &report);
    let _ = std::fs::copy(node.log(), keep.join("oci_cri-containerd.log"));
    drop(node);
    assert!(
        harness.is_empty() && regressions.is_empty(),
        "{} step(s) failed for runc, {} for vserver-oci only (report and containerd's log in {}):\n{}",
        harness.len(),
        regressions.len(),
        keep.display(),
        harness
            .iter()
            .chain(regressions.iter())
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
