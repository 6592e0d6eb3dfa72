//! Test harness: each test owns a temporary config/root/run tree, a unique guest name, context
//! id, bridge and subnet, and cleans them up in Drop (even when the test panics).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn bin(name: &str) -> PathBuf {
    PathBuf::from(match name {
        "vserver" => env!("CARGO_BIN_EXE_vserver"),
        "vserver-stat" => env!("CARGO_BIN_EXE_vserver-stat"),
        "vps" => env!("CARGO_BIN_EXE_vps"),
        "vkill" => env!("CARGO_BIN_EXE_vkill"),
        "chcontext" => env!("CARGO_BIN_EXE_chcontext"),
        "reducecap" => env!("CARGO_BIN_EXE_reducecap"),
        "vtop" => env!("CARGO_BIN_EXE_vtop"),
        "vservers" => env!("CARGO_BIN_EXE_vservers"),
        other => panic!("unknown tool {other}"),
    })
}

/// Skip (or fail under CI=true) when not root.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("these tests need root and CI runs as root");
    }
    eprintln!("skipped: needs root");
    false
}

pub struct Env {
    pub dir: PathBuf,
    pub name: String,
    pub xid: u32,
    pub bridge: String,
    pub net: u8,
    pub guests: Vec<String>,
}

impl Env {
    /// `idx` must be unique per test in this crate (0..60). The context id is `base + 2 * idx`:
    /// a test that uses more than two ids (xid, xid + 1, ...) must leave the next idx values free.
    pub fn new(tag: &str, idx: u32) -> Env {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("vst-{tag}-{pid}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Env {
            name: format!("{tag}{}", pid % 10000),
            xid: 42000 + (pid % 100) * 60 + idx * 2,
            bridge: format!("vsbt{:x}{idx}", pid % 4096),
            net: (100 + (pid % 50) + idx * 3 % 100) as u8,
            dir,
            guests: Vec::new(),
        }
    }

    pub fn cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(bin(tool));
        c.env("VSERVER_CONFDIR", self.dir.join("etc"))
            .env("VSERVER_ROOTBASE", self.dir.join("root"))
            .env("VSERVER_RUNDIR", self.dir.join("run"))
            .stdin(Stdio::null());
        c
    }

    pub fn vserver(&self, name: &str, args: &[&str]) -> Output {
        self.cmd("vserver").arg(name).args(args).output().unwrap()
    }

    pub fn ip(&self, host: u8) -> String {
        format!("10.199.{}.{host}", self.net)
    }

    pub fn root(&self, name: &str) -> PathBuf {
        self.dir.join("root").join(name)
    }

    /// Build a guest from the host distribution; registers it for cleanup.
    pub fn build_host(&mut self, name: &str, xid: u32, iface: bool) {
        self.guests.push(name.to_string());
        let x = xid.to_string();
        let ifc = format!("{}:{}/24", self.bridge, self.ip(2 + (xid % 100) as u8));
        let mut args = vec!["build", "-m", "host", "--context", &x];
        if iface {
            args.extend(["--interface", &ifc]);
        }
        let o = self.vserver(name, &args);
        assert_ok(&o, "build");
    }

    /// `vserver NAME build -m rootfs --source SOURCE [EXTRA...]` (not registered for cleanup).
    pub fn build_rootfs(&self, name: &str, source: &Path, extra: &[&str]) -> Output {
        let src = source.to_str().unwrap();
        let mut args = vec!["build", "-m", "rootfs", "--source", src];
        args.extend_from_slice(extra);
        self.vserver(name, &args)
    }

    /// Build a guest from a busybox tree; registers it for cleanup.
    pub fn build_busybox(&mut self, name: &str, xid: u32) {
        self.guests.push(name.to_string());
        let tree = self.dir.join(format!("bb-{name}"));
        busybox_tree(&tree);
        let x = xid.to_string();
        let o = self.build_rootfs(name, &tree, &["--context", &x]);
        assert_ok(&o, "build busybox");
    }

    pub fn config_path(&self, name: &str) -> PathBuf {
        self.dir.join("etc").join(format!("{name}.toml"))
    }

    pub fn append_config(&self, name: &str, text: &str) {
        let p = self.config_path(name);
        let mut s = std::fs::read_to_string(&p).unwrap();
        s.push_str(text);
        std::fs::write(p, s).unwrap();
    }

    pub fn exec(&self, name: &str, sh: &str) -> Output {
        self.vserver(name, &["exec", "/bin/sh", "-c", sh])
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for g in &self.guests {
            let _ = self.vserver(g, &["stop"]);
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({:?}): {}",
        o.status.code(),
        text(o)
    );
}

/// A minimal guest tree: static busybox and its applet links.
pub fn busybox_tree(dir: &Path) {
    let bb = Path::new("/bin/busybox");
    assert!(
        bb.exists(),
        "busybox-static is not installed (apt-get install busybox-static)"
    );
    for d in ["bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy(bb, dir.join("bin/busybox")).unwrap();
    for a in [
        "sh", "ps", "ls", "cat", "sleep", "kill", "mount", "mknod", "ip", "echo", "hostname", "id",
        "wc", "grep", "ipcs", "true", "killall", "reboot",
    ] {
        let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(a));
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
}

/// Cgroup directories of context `xid` that still exist.
pub fn cgroup_left(xid: u32) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = e.path().join("vservers").join(xid.to_string());
        if p.exists() {
            v.push(p);
        }
    }
    let p = PathBuf::from("/sys/fs/cgroup/vservers").join(xid.to_string());
    if p.exists() {
        v.push(p);
    }
    v
}

pub fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// True if LXCFS serves /proc views here (the engine's own test: a mount whose meminfo
/// answers); under CI=true (whose .ci/run starts it, dropping a dead LXCFS's mount) it must.
pub fn lxcfs_running() -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let up = libvserver::rootfs::lxcfs_dir(&mounts).is_some();
    if !up {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "LXCFS is not running, but .ci/run starts it"
        );
        eprintln!(
            "skipped part: LXCFS is not running (apt-get install lxcfs; lxcfs /var/lib/lxcfs)"
        );
    }
    up
}

/// Number of processes in context `xid` (first hierarchy that lists them).
pub fn cgroup_pids(xid: u32) -> usize {
    for base in [
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup",
    ] {
        if let Ok(s) = std::fs::read_to_string(format!("{base}/vservers/{xid}/cgroup.procs")) {
            return s.lines().count();
        }
    }
    0
}

/// Poll `cond` every 100 ms until it holds; panic with `what` after `secs` seconds.
pub fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} (waited {secs} s)"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Wait at most `secs` seconds for `child` to exit; kill it and panic with `what` otherwise.
pub fn wait_child(
    child: &mut std::process::Child,
    secs: u64,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// True if `path` is a mount point on the host.
pub fn is_mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == path.to_str())
}
