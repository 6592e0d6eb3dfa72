//! vserver-oci under real clients, each installed from Debian's packages: containerd (its own
//! daemon started by the test on private sockets and directories, driven with `ctr run
//! --runc-binary` on an OCI image the test builds from a busybox tree and imports, no
//! registry) and podman (`--runtime` with `--rootfs`). Lifecycle through them: a one-shot
//! command and its exit code, a detached service, exec into it, kill, delete, a memory limit.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Skip (or fail under CI=true) when a client is not installed.
fn require(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have_tool(t)).collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{missing:?} not installed (scripts/deps.sh installs them)");
    }
    eprintln!("skipped: {missing:?} not installed");
    false
}

/// An OCI image layout tarball (index.json, oci-layout, blobs) of a busybox tree, named
/// `latest`; returns its path.
fn build_image(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    busybox_tree(&rootfs);
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
    let gz = dir.join("layer.tar.gz");
    let put = |p: &Path| -> (String, u64) {
        let d = sha256_of_file(p);
        std::fs::copy(p, blobs.join(&d)).unwrap();
        (d, std::fs::metadata(p).unwrap().len())
    };
    let (ld, ls) = put(&gz);
    let cfg = dir.join("config.json");
    std::fs::write(
        &cfg,
        serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]}
        })
        .to_string(),
    )
    .unwrap();
    let (cd, cs) = put(&cfg);
    let man = dir.join("manifest.json");
    std::fs::write(
        &man,
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{cd}"), "size": cs},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{ld}"), "size": ls}]
        })
        .to_string(),
    )
    .unwrap();
    let (md, ms) = put(&man);
    std::fs::write(
        img.join("index.json"),
        serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{md}"), "size": ms,
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
                "platform": {"architecture": "amd64", "os": "linux"}
            }]
        })
        .to_string(),
    )
    .unwrap();
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

/// Unmount everything mounted below `dir` (deepest first).
fn unmount_below(dir: &Path) {
    let d = dir.to_string_lossy().to_string();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|m| m.starts_with(&d))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Remove the (empty) cgroup directories `rel` and below in every hierarchy, deepest first.
fn remove_cgroups(rel: &str) {
    fn rm(d: &Path) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rm(&e.path());
            }
        }
        let _ = std::fs::remove_dir(d);
    }
    let mut bases = vec![PathBuf::from("/sys/fs/cgroup")];
    bases.extend(
        std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path()),
    );
    for b in bases {
        let d = b.join(rel);
        if d.is_dir() {
            rm(&d);
        }
    }
}

/// Kill every process whose command line mentions `needle`.
fn kill_mentioning(needle: &str) {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let p = e.file_name().to_string_lossy().to_string();
        if !p.chars().all(|c| c.is_ascii_digit()) || p == std::process::id().to_string() {
            continue;
        }
        if let Ok(c) = std::fs::read(format!("/proc/{p}/cmdline")) {
            if String::from_utf8_lossy(&c).contains(needle) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p.parse().unwrap()),
                    nix::sys::signal::SIGKILL,
                );
            }
        }
    }
}

/// A private containerd: its own config, root, state and sockets under the test's directory.
struct Containerd {
    dir: PathBuf,
    ns: String,
    daemon: std::process::Child,
}

impl Containerd {
    fn start(tag: &str) -> Containerd {
        let dir = std::env::temp_dir().join(format!("vst-ctd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("config.toml");
        std::fs::write(
            &cfg,
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{d}/containerd.sock\"\n\
                 [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
                 [debug]\n  address = \"{d}/debug.sock\"\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(&cfg)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let sock = dir.join("containerd.sock");
        wait_until(20, "containerd's socket", || sock.exists());
        Containerd {
            ns: format!("vst{}", std::process::id()),
            dir,
            daemon,
        }
    }

    fn ctr(&self, args: &[&str]) -> Output {
        run_to_files(
            Command::new("ctr")
                .arg("--address")
                .arg(self.dir.join("containerd.sock"))
                .args(["--namespace", &self.ns])
                .args(args)
                .stdin(Stdio::null()),
            &self.dir.join("ctr-out"),
        )
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let ids = self.ctr(&["task", "ls", "-q"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", id]);
            let _ = self.ctr(&["task", "delete", "--force", id]);
        }
        let ids = self.ctr(&["container", "ls", "-q"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.ctr(&["container", "delete", id]);
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        kill_mentioning(&self.dir.to_string_lossy());
        let _ = Command::new(bin("vserver-oci"))
            .args([
                "--root",
                &format!("/run/containerd/runc/{}", self.ns),
                "list",
                "-q",
            ])
            .output();
        let _ = std::fs::remove_dir_all(format!("/run/containerd/runc/{}", self.ns));
        // containerd puts a namespace's containers below a cgroup named after it.
        remove_cgroups(&self.ns);
        unmount_below(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn containerd_runs_images_through_vserver_oci() {
    if !require_root() || !require(&["containerd", "ctr", "containerd-shim-runc-v2"]) {
        return;
    }
    let c = Containerd::start("ctr");
    let image = build_image(&c.dir);
    let o = c.ctr(&[
        "images",
        "import",
        "--base-name",
        "docker.io/library/vsbb",
        image.to_str().unwrap(),
    ]);
    assert_ok(&o, "ctr images import");
    let rt = bin("vserver-oci");
    let rt = rt.to_str().unwrap();
    let img = "docker.io/library/vsbb:latest";
    // A one-shot command: its output and exit code.
    let o = c.ctr(&[
        "run",
        "--rm",
        "--runc-binary",
        rt,
        img,
        "once",
        "sh",
        "-c",
        "echo hello from vserver-oci; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("hello from vserver-oci"),
        "{}",
        text(&o)
    );
    // A detached service with a memory limit; its state is vserver-oci's.
    let o = c.ctr(&[
        "run",
        "-d",
        "--runc-binary",
        rt,
        "--memory-limit",
        "67108864",
        img,
        "svc",
        "sleep",
        "1000",
    ]);
    assert_ok(&o, "ctr run -d");
    let root = format!("/run/containerd/runc/{}", c.ns);
    let st = Command::new(bin("vserver-oci"))
        .args(["--root", &root, "state", "svc"])
        .output()
        .unwrap();
    assert_ok(&st, "vserver-oci state through containerd's root");
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["status"], "running");
    let pid = st["pid"].as_i64().unwrap();
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mem_line = cg
        .lines()
        .find(|l| l.contains(":memory:"))
        .map(|l| l.rsplit(':').next().unwrap().to_string());
    if let Some(rel) = mem_line {
        let limit =
            std::fs::read_to_string(format!("/sys/fs/cgroup/memory{rel}/memory.limit_in_bytes"))
                .unwrap();
        assert_eq!(limit.trim(), "67108864");
    } else {
        let rel = cg.lines().find(|l| l.starts_with("0::")).unwrap()[3..].to_string();
        let limit = std::fs::read_to_string(format!("/sys/fs/cgroup{rel}/memory.max")).unwrap();
        assert_eq!(limit.trim(), "67108864");
    }
    // exec returns the command's status and runs in the service's namespaces.
    let o = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "svc",
        "sh",
        "-c",
        "cat /proc/1/cmdline; exit 4",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("sleep"),
        "{}",
        text(&o)
    );
    // kill, then delete: nothing of it is left.
    assert_ok(
        &c.ctr(&["task", "kill", "-s", "SIGKILL", "svc"]),
        "task kill",
    );
    wait_until(10, "the task to stop", || {
        String::from_utf8_lossy(&c.ctr(&["task", "ls"]).stdout).contains("STOPPED")
    });
    assert_ok(&c.ctr(&["task", "delete", "svc"]), "task delete");
    assert_ok(&c.ctr(&["container", "delete", "svc"]), "container delete");
    assert!(
        !Path::new(&root).join("svc").exists(),
        "vserver-oci state left"
    );
    // A config vserver-oci refuses: containerd shows our error naming the field.
    let o = c.ctr(&[
        "run",
        "--rm",
        "--runc-binary",
        rt,
        "--cgroup",
        "system.slice:vst:bad",
        img,
        "bad",
        "true",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("linux.cgroupsPath"), "{}", text(&o));
}

fn podman(dir: &Path, args: &[&str]) -> Output {
    run_to_files(
        Command::new("podman")
            .arg("--root")
            .arg(dir.join("storage"))
            .arg("--runroot")
            .arg(dir.join("run"))
            .arg("--tmpdir")
            .arg(dir.join("tmp"))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .arg("--runtime")
            .arg(bin("vserver-oci"))
            .arg("--runtime-flag")
            .arg(format!("root={}", dir.join("oci").display()))
            .args(args)
            .stdin(Stdio::null()),
        &dir.join("podman-out"),
    )
}

/// The test's podman directory; `parent` is podman's cgroup parent when the test made it.
struct PodmanDir(PathBuf, bool);

impl Drop for PodmanDir {
    fn drop(&mut self) {
        let _ = podman(&self.0, &["rm", "--all", "--force"]);
        kill_mentioning(&self.0.to_string_lossy());
        if self.1 {
            remove_cgroups("libpod_parent");
        }
        unmount_below(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn podman_runs_root_file_systems_through_vserver_oci() {
    if !require_root() || !require(&["podman", "conmon"]) {
        return;
    }
    let fresh_parent = !Path::new("/sys/fs/cgroup/pids/libpod_parent").exists()
        && !Path::new("/sys/fs/cgroup/libpod_parent").exists();
    let d = PodmanDir(
        std::env::temp_dir().join(format!("vst-pm-{}", std::process::id())),
        fresh_parent,
    );
    let _ = std::fs::remove_dir_all(&d.0);
    let rootfs = d.0.join("rootfs");
    busybox_tree(&rootfs);
    let r = rootfs.to_str().unwrap();
    // podman's default rlimits (1048576 files and processes) exceed what a host without
    // CAP_SYS_RESOURCE may grant: ask for modest ones.
    let u = [
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--network",
        "none",
    ];
    let mut args = vec!["run", "--rm"];
    args.extend(u);
    args.extend(["--rootfs", r, "sh", "-c", "echo hi from podman; exit 5"]);
    let o = podman(&d.0, &args);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("hi from podman"),
        "{}",
        text(&o)
    );
    let mut args = vec!["run", "-d", "--name", "svc", "--memory", "64m"];
    args.extend(u);
    args.extend(["--rootfs", r, "sleep", "1000"]);
    assert_ok(&podman(&d.0, &args), "podman run -d");
    // Its memory limit, seen from the host through the container's init.
    let o = podman(&d.0, &["inspect", "--format", "{{.State.Pid}}", "svc"]);
    let pid = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let limit = match cg.lines().find(|l| l.contains(":memory:")) {
        Some(l) => std::fs::read_to_string(format!(
            "/sys/fs/cgroup/memory{}/memory.limit_in_bytes",
            l.rsplit(':').next().unwrap()
        )),
        None => std::fs::read_to_string(format!(
            "/sys/fs/cgroup{}/memory.max",
            cg.lines().find_map(|l| l.strip_prefix("0::")).unwrap()
        )),
    };
    assert_eq!(limit.unwrap().trim(), (64u64 << 20).to_string());
    let o = podman(
        &d.0,
        &["exec", "svc", "sh", "-c", "cat /proc/1/cmdline; exit 6"],
    );
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("sleep"),
        "{}",
        text(&o)
    );
    assert_ok(&podman(&d.0, &["kill", "svc"]), "podman kill");
    assert_ok(&podman(&d.0, &["rm", "-f", "svc"]), "podman rm");
    let o = podman(&d.0, &["ps", "-a", "-q"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "",
        "containers left"
    );
}
