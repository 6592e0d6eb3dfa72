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
        "vhashify" => env!("CARGO_BIN_EXE_vhashify"),
        "vserver-oci" => env!("CARGO_BIN_EXE_vserver-oci"),
        "vserver-oci-check" => env!("CARGO_BIN_EXE_vserver-oci-check"),
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
            .env("VSERVER_LOGDIR", self.dir.join("log"))
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
        let mut args = vec![
            "build",
            "-m",
            "host",
            "--initstyle",
            "builtin",
            "--context",
            &x,
        ];
        if iface {
            args.extend(["--interface", &ifc]);
        }
        let o = self.vserver(name, &args);
        assert_ok(&o, "build");
        self.userns_if_asked(name);
    }

    /// With `VSERVER_TEST_USERNS=1` every guest the harness builds runs in its own user
    /// namespace: the escape tests then run a second time against user-namespace guests
    /// (escapes.md: "(b) must be at least as strict").
    pub fn userns_if_asked(&self, name: &str) {
        if std::env::var("VSERVER_TEST_USERNS").as_deref() != Ok("1") {
            return;
        }
        let p = self.config_path(name);
        let s = std::fs::read_to_string(&p).unwrap();
        if s.contains("\nuserns = ") {
            return;
        }
        let s = s.replacen("\nhostname = ", "\nuserns = true\nhostname = ", 1);
        assert!(
            s.contains("userns = true"),
            "no place for userns in {}",
            p.display()
        );
        std::fs::write(p, s).unwrap();
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
        self.userns_if_asked(name);
    }

    /// Replace the built config's empty `init.command` by `lines` (TOML, e.g.
    /// `command = ["/bin/sleep", "1000"]`).
    pub fn set_init_command(&self, name: &str, lines: &str) {
        let cfg = std::fs::read_to_string(self.config_path(name))
            .unwrap()
            .replace("\ncommand = []\n", &format!("\n{lines}\n"));
        assert!(cfg.contains(lines), "{cfg}");
        std::fs::write(self.config_path(name), cfg).unwrap();
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

/// The v2 directory of context `xid`'s cgroup as the engine makes it: in the guest's scope on
/// a host whose systemd owns the tree (`vservers.slice/vserver-XID.scope/payload`), else
/// `/sys/fs/cgroup/vservers/XID`.
pub fn v2_guest_dir(xid: u32) -> PathBuf {
    let scope = PathBuf::from(format!(
        "/sys/fs/cgroup/vservers.slice/vserver-{xid}.scope/payload"
    ));
    if scope.is_dir() {
        return scope;
    }
    PathBuf::from(format!("/sys/fs/cgroup/vservers/{xid}"))
}

/// True when this host's systemd owns the cgroup tree (PID 1 is systemd, cgroup v2 only): the
/// engine puts guests in scopes then.
pub fn systemd_host() -> bool {
    Path::new("/run/systemd/system").is_dir()
        && Path::new("/run/dbus/system_bus_socket").exists()
        && Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Cgroup directories of context `xid` that still exist.
pub fn cgroup_left(xid: u32) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let scope = PathBuf::from(format!("/sys/fs/cgroup/vservers.slice/vserver-{xid}.scope"));
    if scope.exists() {
        v.push(scope);
    }
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
    if let Ok(s) = std::fs::read_to_string(v2_guest_dir(xid).join("cgroup.procs")) {
        return s.lines().count();
    }
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

/// A scratch file system of its own: a sparse image under the test's directory, formatted
/// (btrfs, xfs with reflinks, or ext4), attached to a loop device and mounted on a fresh
/// directory (mode 0700, as a root base). Declare it after the [`Env`] so that it is dropped
/// first: Drop lazily unmounts it, detaches the loop device and removes the image.
pub struct LoopFs {
    pub img: PathBuf,
    pub dev: String,
    pub mnt: PathBuf,
    pub fstype: String,
}

impl LoopFs {
    /// `fstype`: "btrfs", "xfs" (made with reflink=1) or "ext4"; `size` in bytes.
    pub fn new(env: &Env, fstype: &str, size: u64) -> LoopFs {
        LoopFs::with_options(env, fstype, size, &[], "").unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`LoopFs::new`] with extra mkfs arguments and mount options (e.g. project quotas:
    /// `-O project,quota` and `prjquota` for ext4). Errors: what failed, with its output;
    /// what was made is removed again.
    pub fn with_options(
        env: &Env,
        fstype: &str,
        size: u64,
        mkfs_extra: &[&str],
        mount_opts: &str,
    ) -> Result<LoopFs, String> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let mut fs = LoopFs {
            img: env.dir.join(format!("loopfs-{fstype}-{n}.img")),
            dev: String::new(),
            mnt: env.dir.join(format!("mnt-{fstype}-{n}")),
            fstype: fstype.to_string(),
        };
        let f = std::fs::File::create(&fs.img).unwrap();
        f.set_len(size).unwrap();
        drop(f);
        let mut mkfs = match fstype {
            "btrfs" => {
                let mut c = Command::new("mkfs.btrfs");
                c.args(["-q", "-f"]);
                c
            }
            "xfs" => {
                let mut c = Command::new("mkfs.xfs");
                c.args(["-q", "-f", "-m", "reflink=1"]);
                c
            }
            "ext4" => {
                let mut c = Command::new("mkfs.ext4");
                c.args(["-q", "-F"]);
                c
            }
            other => panic!("LoopFs: unknown file system type {other}"),
        };
        let o = mkfs.args(mkfs_extra).arg(&fs.img).output().unwrap();
        if !o.status.success() {
            return Err(format!("mkfs.{fstype}: {}", text(&o)));
        }
        let o = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&fs.img)
            .output()
            .unwrap();
        if !o.status.success() {
            return Err(format!("losetup: {}", text(&o)));
        }
        fs.dev = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert!(fs.dev.starts_with("/dev/"), "losetup printed {:?}", fs.dev);
        std::fs::create_dir_all(&fs.mnt).unwrap();
        let mut mount = Command::new("mount");
        mount.args(["-t", fstype]);
        if !mount_opts.is_empty() {
            mount.args(["-o", mount_opts]);
        }
        let o = mount.arg(&fs.dev).arg(&fs.mnt).output().unwrap();
        if !o.status.success() {
            return Err(format!("mount -t {fstype} -o {mount_opts}: {}", text(&o)));
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fs.mnt, std::fs::Permissions::from_mode(0o700)).unwrap();
        Ok(fs)
    }

    /// Where a guest called `name` lives on this file system (for `--rootdir`).
    pub fn root(&self, name: &str) -> PathBuf {
        self.mnt.join(name)
    }

    /// Flush everything to the device (and commit the btrfs transaction), so that statvfs
    /// counts what was written and what was freed.
    pub fn sync(&self) {
        let _ = Command::new("sync").arg("-f").arg(&self.mnt).status();
        if self.fstype == "btrfs" {
            let _ = Command::new("btrfs")
                .args(["filesystem", "sync"])
                .arg(&self.mnt)
                .stdout(Stdio::null())
                .status();
        }
    }

    /// Bytes in use (statvfs: blocks - free blocks), after a [`LoopFs::sync`].
    pub fn used_bytes(&self) -> u64 {
        self.sync();
        let s = nix::sys::statvfs::statvfs(&self.mnt).unwrap();
        (s.blocks() as u64 - s.blocks_free() as u64) * s.fragment_size() as u64
    }

    /// Bytes available to root (statvfs free blocks), after a [`LoopFs::sync`].
    pub fn free_bytes(&self) -> u64 {
        self.sync();
        let s = nix::sys::statvfs::statvfs(&self.mnt).unwrap();
        s.blocks_free() as u64 * s.fragment_size() as u64
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        if !self.dev.is_empty() {
            let _ = Command::new("losetup")
                .args(["-d", &self.dev])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_file(&self.img);
        let _ = std::fs::remove_dir(&self.mnt);
    }
}

/// Build a busybox guest (`-m rootfs`) with its root at `root` (`--rootdir`); context `xid`,
/// or the lowest free one when None. Registers it for cleanup. Returns the root.
pub fn build_busybox_at(env: &mut Env, name: &str, root: &Path, xid: Option<u32>) -> PathBuf {
    env.guests.push(name.to_string());
    let tree = env.dir.join(format!("bb-{name}"));
    busybox_tree(&tree);
    let r = root.to_str().unwrap().to_string();
    let x = xid.map(|x| x.to_string());
    let mut extra = vec!["--rootdir", r.as_str()];
    if let Some(x) = &x {
        extra.extend(["--context", x.as_str()]);
    }
    let o = env.build_rootfs(name, &tree, &extra);
    assert_ok(
        &o,
        &format!("build busybox guest {name} at {}", root.display()),
    );
    root.to_path_buf()
}

/// A digest of a file's bytes (for comparisons within one test run).
pub fn content_digest(path: &Path) -> String {
    use std::hash::Hasher;
    use std::io::Read;
    let mut f =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        len += n as u64;
        h.write(&buf[..n]);
    }
    format!("{len}:{:016x}", h.finish())
}

/// Everything about a tree that a copy must keep, one line per fact, sorted: for each entry
/// (walked with lstat, never following symlinks) its path, type, mode, owner, group; for files
/// size, mtime, content digest, link count and hardlink group, whether a large file is sparse;
/// device numbers; symlink targets; then the extended attributes (`getfattr -d -m -`, so
/// ACLs and capabilities too), `getcap -r` and `getfacl` output, with the root's path removed.
pub fn tree_manifest(root: &Path) -> Vec<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    fn walk(
        root: &Path,
        p: &Path,
        out: &mut Vec<String>,
        groups: &mut std::collections::HashMap<(u64, u64), usize>,
    ) {
        let md = std::fs::symlink_metadata(p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let rel = if rel.is_empty() {
            String::from(".")
        } else {
            rel
        };
        let ft = md.file_type();
        let mut line = format!(
            "{rel} mode={:o} uid={} gid={}",
            md.mode(),
            md.uid(),
            md.gid()
        );
        if ft.is_symlink() {
            line += &format!(" -> {}", std::fs::read_link(p).unwrap().display());
        } else if ft.is_file() {
            line += &format!(
                " size={} mtime={} nlink={} data={}",
                md.size(),
                md.mtime(),
                md.nlink(),
                content_digest(p)
            );
            if md.nlink() > 1 {
                let next = groups.len();
                let g = *groups.entry((md.dev(), md.ino())).or_insert(next);
                line += &format!(" linkgroup={g}");
            }
            if md.size() >= 65536 {
                line += &format!(" sparse={}", md.blocks() * 512 < md.size());
            }
        } else if ft.is_char_device() || ft.is_block_device() {
            line += &format!(
                " rdev={}:{}",
                nix::sys::stat::major(md.rdev()),
                nix::sys::stat::minor(md.rdev())
            );
        }
        out.push(line);
        if ft.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for n in names {
                walk(root, &p.join(n), out, groups);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out, &mut Default::default());
    let prefix = root.to_string_lossy().into_owned();
    let strip = |path: &str| -> String {
        match path.strip_prefix(&prefix) {
            Some("") => String::from("."),
            Some(r) => r.trim_start_matches('/').to_string(),
            None => path.to_string(),
        }
    };
    // Blocks of "# file: PATH" followed by lines about it (getfattr and getfacl).
    let blocks = |tool: &str, args: &[&str]| -> Vec<String> {
        let o = Command::new(tool).args(args).arg(root).output().unwrap();
        let mut v = Vec::new();
        let mut cur = String::new();
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            if let Some(f) = l.strip_prefix("# file: ") {
                cur = strip(f);
            } else if !l.is_empty() {
                v.push(format!("{tool} {cur} {l}"));
            }
        }
        v
    };
    out.extend(blocks(
        "getfattr",
        &["-R", "-P", "-d", "-m", "-", "--absolute-names"],
    ));
    out.extend(blocks(
        "getfacl",
        &["-R", "-P", "-s", "-n", "--absolute-names"],
    ));
    let o = Command::new("getcap").arg("-r").arg(root).output().unwrap();
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        if let Some((path, caps)) = l.split_once(' ') {
            out.push(format!("getcap {} {caps}", strip(path)));
        }
    }
    out.sort();
    out
}

/// Panic with the differing lines when the trees at `a` and `b` differ ([`tree_manifest`]).
pub fn assert_same_tree(a: &Path, b: &Path) {
    let (ma, mb) = (tree_manifest(a), tree_manifest(b));
    if ma == mb {
        return;
    }
    let only_a: Vec<&String> = ma.iter().filter(|l| !mb.contains(l)).take(30).collect();
    let only_b: Vec<&String> = mb.iter().filter(|l| !ma.contains(l)).take(30).collect();
    panic!(
        "{} and {} differ\nonly in the first:\n  {}\nonly in the second:\n  {}",
        a.display(),
        b.display(),
        only_a
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
        only_b
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

/// Run `c` with its stdout and stderr in files under `dir` (not pipes: a container's process
/// inherits them, as the runc contract says, and would keep pipes open), and read them back.
pub fn run_to_files(c: &mut Command, dir: &Path) -> Output {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _ = std::fs::create_dir_all(dir);
    let (o, e) = (dir.join(format!("out.{n}")), dir.join(format!("err.{n}")));
    let status = c
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .status()
        .unwrap();
    Output {
        status,
        stdout: std::fs::read(&o).unwrap_or_default(),
        stderr: std::fs::read(&e).unwrap_or_default(),
    }
}

/// Packages of the server guests the systemd tests boot (systemd-sysv and dbus come with
/// `build -m debootstrap`).
pub const SERVER_PACKAGES: &str =
    "openssh-server,nginx-light,cron,rsyslog,systemd-timesyncd,iproute2,procps";

/// A tree made by `vserver seed build -m debootstrap --dist DIST --include INCLUDE` against the
/// host's apt source, made once per build directory (so once per CI run) and shared by every
/// test that asks for the same `tag` (an flock serialises the making). Tests copy it; nobody
/// boots it. None (the caller skips) where it cannot be made: `VSERVER_TEST_NO_NETWORK` set,
/// or inside the VM lane (no network there) when the host lane has not made it first.
pub fn debootstrap_seed(tag: &str, dist: &str, include: &str) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("seeds")
        .join(tag);
    let root = base.join("root").join("seed");
    let ok = base.join("ok");
    if ok.exists() {
        return Some(root);
    }
    if std::env::var_os("VSERVER_IN_VM_LANE").is_some() {
        eprintln!("skipped: no {tag} tree from the host lane (run the host tests first)");
        return None;
    }
    if std::env::var_os("VSERVER_TEST_NO_NETWORK").is_some() {
        eprintln!("skipped: VSERVER_TEST_NO_NETWORK is set (a debootstrap of {dist} is needed)");
        return None;
    }
    std::fs::create_dir_all(&base).unwrap();
    let lock = std::fs::File::create(base.with_extension("lock")).unwrap();
    // SAFETY: flock on a file we own.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    if ok.exists() {
        return Some(root);
    }
    let _ = std::fs::remove_dir_all(base.join("root"));
    let _ = std::fs::remove_dir_all(base.join("etc"));
    let o = Command::new(bin("vserver"))
        .env("VSERVER_CONFDIR", base.join("etc"))
        .env("VSERVER_ROOTBASE", base.join("root"))
        .env("VSERVER_RUNDIR", base.join("run"))
        .env("VSERVER_LOGDIR", base.join("log"))
        .stdin(Stdio::null())
        .args(["seed", "build", "-m", "debootstrap", "--dist", dist])
        .args(["--include", include])
        .output()
        .unwrap();
    assert_ok(&o, &format!("debootstrap of {dist} with {include}"));
    // Its apt archives are not needed by the copies.
    if let Ok(d) = std::fs::read_dir(root.join("var/cache/apt/archives")) {
        for e in d.flatten() {
            if e.path().extension().is_some_and(|x| x == "deb") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    std::fs::write(&ok, b"").unwrap();
    Some(root)
}

/// Copy `bin` and the shared libraries `ldd` names into `root`, at the same paths.
pub fn install_with_libs(bin: &Path, root: &Path, dest: &str) {
    std::fs::copy(bin, root.join(dest.trim_start_matches('/'))).unwrap();
    let o = Command::new("ldd").arg(bin).output().unwrap();
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        let path = l
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(String::from);
        if let Some(p) = path {
            let to = root.join(p.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            if !to.exists() {
                std::fs::copy(&p, &to).unwrap();
            }
        }
    }
}

/// Run `cmds` all at once (stdout discarded) and assert that each succeeded, with its stderr.
pub fn run_all_at_once(cmds: Vec<Command>) {
    let children: Vec<std::process::Child> = cmds
        .into_iter()
        .map(|mut c| {
            c.stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

/// True when `tool` is on PATH (`command -v`).
pub fn have_tool(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Run `cmd` with sh -c; its output.
pub fn sh_output(cmd: &str) -> Output {
    Command::new("sh").arg("-c").arg(cmd).output().unwrap()
}

/// The hex SHA-256 of the file at `path` (sha256sum(1)).
pub fn sha256_of_file(path: &Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The row of context `xid` in the last sample of `vtop --json -n SAMPLES -d 0.5`.
pub fn vtop_row(env: &Env, xid: u32, samples: u32) -> serde_json::Value {
    let top = env
        .cmd("vtop")
        .args(["--json", "-n", &samples.to_string(), "-d", "0.5"])
        .output()
        .unwrap();
    let last = String::from_utf8_lossy(&top.stdout)
        .lines()
        .last()
        .unwrap_or("[]")
        .to_string();
    let rows: serde_json::Value = serde_json::from_str(&last).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["xid"] == xid)
        .cloned()
        .unwrap_or_else(|| panic!("vtop has no row for {xid}: {last}"))
}
