//! `vserver-oci-check SPEC.json`: the in-container half of vserver-oci's conformance suite
//! (tests/oci_conformance.rs). Run as a container's process, it reads the config.json it was
//! started with and prints one line per property that does not hold (`FAIL field: what`), then
//! `DONE n` with the number of checks made; exit status 0 when all hold. Only the kernel's own
//! view is used: /proc/self, statvfs, getrlimit, the mount table. Not installed; a test tool.

use serde_json::Value;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

struct Report {
    checks: usize,
    fails: Vec<String>,
}

impl Report {
    fn check(&mut self, ok: bool, field: &str, what: impl FnOnce() -> String) {
        self.checks += 1;
        if !ok {
            self.fails.push(format!("FAIL {field}: {}", what()));
        }
    }
}

fn status_field(name: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

fn cap_mask(names: &Value) -> u64 {
    names
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str())
                .filter_map(cap_number)
                .fold(0u64, |m, b| m | (1 << b))
        })
        .unwrap_or(0)
}

/// capabilities(7) numbers of the names config.json uses.
fn cap_number(name: &str) -> Option<u32> {
    const NAMES: &[&str] = &[
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    let n = name.strip_prefix("CAP_").unwrap_or(name);
    NAMES.iter().position(|x| *x == n).map(|p| p as u32)
}

fn rlimit_number(kind: &str) -> Option<u32> {
    Some(match kind {
        "RLIMIT_CPU" => 0,
        "RLIMIT_FSIZE" => 1,
        "RLIMIT_DATA" => 2,
        "RLIMIT_STACK" => 3,
        "RLIMIT_CORE" => 4,
        "RLIMIT_RSS" => 5,
        "RLIMIT_NPROC" => 6,
        "RLIMIT_NOFILE" => 7,
        "RLIMIT_MEMLOCK" => 8,
        "RLIMIT_AS" => 9,
        "RLIMIT_LOCKS" => 10,
        "RLIMIT_SIGPENDING" => 11,
        "RLIMIT_MSGQUEUE" => 12,
        "RLIMIT_NICE" => 13,
        "RLIMIT_RTPRIO" => 14,
        "RLIMIT_RTTIME" => 15,
        _ => return None,
    })
}

/// (mount point, fs type, options) of every mount.
fn mounts() -> Vec<(String, String, String)> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            Some((
                f.get(4)?.to_string(),
                f.get(sep + 1)?.to_string(),
                f.get(5)?.to_string(),
            ))
        })
        .collect()
}

fn readonly(p: &str) -> bool {
    nix::sys::statvfs::statvfs(p)
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false)
}

/// `--lift-cgroup-limits`: what a hostile container tries against its own limits. In a user
/// namespace of its own (no capability needed), a new cgroup namespace and mount namespace,
/// mount each hierarchy holding pids, memory or cpu (v1 by controller, else cgroup2) and write
/// "no limit" into the root's files: the root is the cgroup the container's processes are in.
/// Prints `wrote FILE` or `refused FILE: ERROR` per file, then `LIFTED`, and sleeps until
/// killed (the driver reads the container's cgroup from the host meanwhile).
/// A user namespace of its own mapping uid and gid 0 (CAP_SETFCAP, in containerd's default
/// set, lets it map 0), then new mount and cgroup namespaces (the cgroup namespace is rooted
/// at the cgroup the process is in) and a tmpfs on /tmp for mount points. Failures are
/// printed; what follows tries anyway.
fn own_cgroup_namespace() {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER) {
        println!("no user namespace: {e}");
    } else {
        for (f, v) in [
            ("setgroups", String::from("deny")),
            ("uid_map", format!("0 {uid} 1")),
            ("gid_map", format!("0 {gid} 1")),
        ] {
            if let Err(e) = std::fs::write(format!("/proc/self/{f}"), v) {
                println!("write /proc/self/{f}: {e}");
            }
        }
    }
    if let Err(e) = unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWCGROUP) {
        println!("no mount or cgroup namespace: {e}");
    }
    let _ = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    );
    // Mount points of its own, whatever the root file system allows.
    if let Err(e) = mount(
        Some("tmpfs"),
        "/tmp",
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    ) {
        println!("no tmpfs on /tmp: {e}");
    }
}

/// Mount the hierarchy holding `ctrl` at `dir` (v1 by controller, cpu also with cpuacct, else
/// cgroup2). False (printed) when none could be mounted.
fn mount_hierarchy(ctrl: &str, dir: &str) -> bool {
    use nix::mount::{mount, MsFlags};
    if let Err(e) = std::fs::create_dir_all(dir) {
        println!("mkdir {dir}: {e}");
    }
    let mut v1 = mount(
        Some("none"),
        dir,
        Some("cgroup"),
        MsFlags::empty(),
        Some(ctrl),
    );
    if v1.is_err() && ctrl == "cpu" {
        v1 = mount(
            Some("none"),
            dir,
            Some("cgroup"),
            MsFlags::empty(),
            Some("cpu,cpuacct"),
        );
    }
    if let Err(e) = v1 {
        if mount(
            Some("none"),
            dir,
            Some("cgroup2"),
            MsFlags::empty(),
            None::<&str>,
        )
        .is_err()
        {
            println!("no {ctrl} hierarchy mounted: {e}");
            return false;
        }
    }
    true
}

/// `--freeze-own-cgroup`: freeze the root of its own cgroup namespace (v1 freezer.state, or
/// v2 cgroup.freeze), the cgroup it is in: prints `FREEZING` first, since it freezes itself.
fn freeze_own_cgroup() -> ! {
    own_cgroup_namespace();
    if mount_hierarchy("freezer", "/tmp/frz") {
        println!("FREEZING");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        for (f, v) in [("freezer.state", "FROZEN"), ("cgroup.freeze", "1")] {
            let path = format!("/tmp/frz/{f}");
            if std::fs::metadata(&path).is_ok() {
                if let Err(e) = std::fs::write(&path, v) {
                    println!("refused {f}: {e}");
                }
            }
        }
    }
    println!("NOT FROZEN");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// `--lift-cgroup-limits`: what a hostile container tries against its own limits. In its own
/// cgroup namespace ([`own_cgroup_namespace`]), mount each hierarchy holding pids, memory or
/// cpu and write "no limit" into the root's files: the root is the cgroup the process is in.
/// Prints `wrote FILE` or `refused FILE: ERROR` per file, then `LIFTED`, and sleeps until
/// killed (the driver reads the container's cgroup from the host meanwhile).
fn lift_cgroup_limits() -> ! {
    own_cgroup_namespace();
    let lifts: [(&str, &[(&str, &str)]); 3] = [
        ("pids", &[("pids.max", "max")]),
        (
            "memory",
            &[("memory.limit_in_bytes", "-1"), ("memory.max", "max")],
        ),
        (
            "cpu",
            &[
                ("cpu.cfs_quota_us", "-1"),
                ("cpu.shares", "262144"),
                ("cpu.max", "max"),
            ],
        ),
    ];
    for (i, (ctrl, files)) in lifts.iter().enumerate() {
        let dir = format!("/tmp/lift{i}");
        if !mount_hierarchy(ctrl, &dir) {
            continue;
        }
        for (f, v) in files.iter() {
            let path = format!("{dir}/{f}");
            if std::fs::metadata(&path).is_err() {
                continue;
            }
            match std::fs::write(&path, v) {
                Ok(()) => println!("wrote {ctrl}/{f}"),
                Err(e) => println!("refused {ctrl}/{f}: {e}"),
            }
        }
    }
    println!("LIFTED");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("--lift-cgroup-limits") => lift_cgroup_limits(),
        Some("--freeze-own-cgroup") => freeze_own_cgroup(),
        _ => {}
    }
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/config.json".into());
    let spec: Value = match std::fs::read_to_string(&path).map(|t| serde_json::from_str(&t)) {
        Ok(Ok(v)) => v,
        _ => {
            println!("FAIL .: cannot read {path}");
            std::process::exit(2);
        }
    };
    let mut r = Report {
        checks: 0,
        fails: Vec::new(),
    };
    let p = &spec["process"];
    let l = &spec["linux"];
    // Namespaces: a new one differs from the host's (the driver passes the host's inodes as
    // HOST_NS_<type>=inode in the environment).
    for ns in l["namespaces"].as_array().cloned().unwrap_or_default() {
        let kind = ns["type"].as_str().unwrap_or("");
        let file = match kind {
            "network" => "net",
            "mount" => "mnt",
            k => k,
        };
        let mine = std::fs::metadata(format!("/proc/self/ns/{file}"))
            .map(|m| m.ino())
            .unwrap_or(0);
        if let Ok(want) = std::env::var(format!("JOIN_NS_{file}")) {
            r.check(
                want.parse() == Ok(mine),
                &format!("linux.namespaces.{kind}.path"),
                || format!("is inode {mine}, not the joined {want}"),
            );
        } else if let Ok(host) = std::env::var(format!("HOST_NS_{file}")) {
            let host: u64 = host.parse().unwrap_or(0);
            let joined = ns.get("path").and_then(|p| p.as_str()).is_some();
            r.check(
                joined || mine != host,
                &format!("linux.namespaces.{kind}"),
                || format!("shares the host's namespace (inode {mine})"),
            );
        }
    }
    for (field, file) in [
        ("linux.uidMappings", "uid_map"),
        ("linux.gidMappings", "gid_map"),
    ] {
        let Some(maps) = l[field.trim_start_matches("linux.")].as_array() else {
            continue;
        };
        let want: Vec<(u64, u64, u64)> = maps
            .iter()
            .map(|m| {
                (
                    m["containerID"].as_u64().unwrap_or(0),
                    m["hostID"].as_u64().unwrap_or(0),
                    m["size"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        let text = std::fs::read_to_string(format!("/proc/self/{file}")).unwrap_or_default();
        let got: Vec<(u64, u64, u64)> = text
            .lines()
            .filter_map(|l| {
                let v: Vec<u64> = l
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                (v.len() == 3).then(|| (v[0], v[1], v[2]))
            })
            .collect();
        r.check(got == want, field, || format!("{file} is {got:?}"));
    }
    if let Some(h) = spec["hostname"].as_str() {
        let mine = nix::unistd::gethostname()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        r.check(mine == h, "hostname", || format!("is {mine:?}, not {h:?}"));
    }
    // Process.
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let want_uid = p["user"]["uid"].as_u64().unwrap_or(0) as u32;
    let want_gid = p["user"]["gid"].as_u64().unwrap_or(0) as u32;
    r.check(uid == want_uid, "process.user.uid", || format!("is {uid}"));
    r.check(gid == want_gid, "process.user.gid", || format!("is {gid}"));
    if let Some(extra) = p["user"]["additionalGids"].as_array() {
        let groups: Vec<u32> = nix::unistd::getgroups()
            .unwrap_or_default()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        for g in extra.iter().filter_map(|g| g.as_u64()) {
            r.check(
                groups.contains(&(g as u32)),
                "process.user.additionalGids",
                || format!("{g} missing from {groups:?}"),
            );
        }
    }
    let cwd = std::env::current_dir()
        .map(|c| c.display().to_string())
        .unwrap_or_default();
    let want_cwd = p["cwd"].as_str().unwrap_or("/");
    r.check(cwd == want_cwd, "process.cwd", || format!("is {cwd}"));
    for e in p["env"].as_array().cloned().unwrap_or_default() {
        let e = e.as_str().unwrap_or("");
        if let Some((k, v)) = e.split_once('=') {
            if k.starts_with("HOST_NS_") || k.starts_with("JOIN_NS_") {
                continue;
            }
            let got = std::env::var(k).unwrap_or_default();
            r.check(got == v, &format!("process.env.{k}"), || {
                format!("is {got:?}")
            });
        }
    }
    if let Some(c) = p.get("capabilities").filter(|c| c.is_object()) {
        for (set, line) in [
            ("bounding", "CapBnd"),
            ("effective", "CapEff"),
            ("permitted", "CapPrm"),
            ("inheritable", "CapInh"),
            ("ambient", "CapAmb"),
        ] {
            let want = cap_mask(&c[set]);
            let got = u64::from_str_radix(&status_field(line), 16).unwrap_or(u64::MAX);
            r.check(got == want, &format!("process.capabilities.{set}"), || {
                format!("{line} is {got:#x}, not {want:#x}")
            });
        }
    }
    let nnp = status_field("NoNewPrivs") == "1";
    let want_nnp = p["noNewPrivileges"].as_bool().unwrap_or(false);
    r.check(nnp == want_nnp, "process.noNewPrivileges", || {
        format!("NoNewPrivs is {nnp}")
    });
    for rl in p["rlimits"].as_array().cloned().unwrap_or_default() {
        let kind = rl["type"].as_str().unwrap_or("");
        let Some(n) = rlimit_number(kind) else {
            continue;
        };
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit with a valid resource number and pointer.
        unsafe { libc::getrlimit(n as _, &mut cur) };
        let (soft, hard) = (
            rl["soft"].as_u64().unwrap_or(0),
            rl["hard"].as_u64().unwrap_or(0),
        );
        r.check(
            cur.rlim_cur == soft && cur.rlim_max == hard,
            &format!("process.rlimits.{kind}"),
            || format!("is {}:{}", cur.rlim_cur, cur.rlim_max),
        );
    }
    if let Some(a) = p["oomScoreAdj"].as_i64() {
        let got = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap_or_default();
        r.check(got.trim() == a.to_string(), "process.oomScoreAdj", || {
            format!("is {}", got.trim())
        });
    }
    // Root and mounts.
    let ro_root = spec["root"]["readonly"].as_bool().unwrap_or(false);
    r.check(readonly("/") == ro_root, "root.readonly", || {
        format!("/ read-only is {}", readonly("/"))
    });
    let table = mounts();
    for m in spec["mounts"].as_array().cloned().unwrap_or_default() {
        let dest = m["destination"].as_str().unwrap_or("");
        let found = table.iter().rev().find(|(mp, _, _)| mp == dest);
        r.check(found.is_some(), &format!("mounts.{dest}"), || {
            String::from("not mounted")
        });
        let Some((_, fstype, _)) = found else {
            continue;
        };
        let opts: Vec<&str> = m["options"]
            .as_array()
            .map(|a| a.iter().filter_map(|o| o.as_str()).collect())
            .unwrap_or_default();
        let kind = m["type"].as_str().unwrap_or("bind");
        if !matches!(kind, "bind" | "none" | "cgroup" | "cgroup2")
            && !opts.iter().any(|o| *o == "bind" || *o == "rbind")
        {
            r.check(fstype == kind, &format!("mounts.{dest}.type"), || {
                format!("is {fstype}")
            });
        }
        if opts.contains(&"ro") {
            r.check(readonly(dest), &format!("mounts.{dest}.options.ro"), || {
                String::from("writable")
            });
        }
    }
    for m in l["maskedPaths"].as_array().cloned().unwrap_or_default() {
        let m = m.as_str().unwrap_or("");
        let Ok(md) = std::fs::metadata(m) else {
            continue;
        };
        if md.is_dir() {
            let empty = std::fs::read_dir(m)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            r.check(
                empty && readonly(m),
                &format!("linux.maskedPaths.{m}"),
                || String::from("a directory that is not empty and read-only"),
            );
        } else {
            let null =
                md.file_type().is_char_device() && md.rdev() == nix::sys::stat::makedev(1, 3);
            r.check(null, &format!("linux.maskedPaths.{m}"), || {
                String::from("readable")
            });
        }
    }
    for m in l["readonlyPaths"].as_array().cloned().unwrap_or_default() {
        let m = m.as_str().unwrap_or("");
        if std::fs::symlink_metadata(m).is_ok() {
            r.check(readonly(m), &format!("linux.readonlyPaths.{m}"), || {
                String::from("writable")
            });
        }
    }
    for (k, v) in l["sysctl"].as_object().cloned().unwrap_or_default() {
        let got = std::fs::read_to_string(format!("/proc/sys/{}", k.replace('.', "/")))
            .unwrap_or_default();
        let want = v.as_str().unwrap_or("");
        r.check(
            got.split_whitespace().eq(want.split_whitespace()),
            &format!("linux.sysctl.{k}"),
            || format!("is {:?}", got.trim()),
        );
    }
    for d in l["devices"].as_array().cloned().unwrap_or_default() {
        let path = d["path"].as_str().unwrap_or("");
        let md = std::fs::metadata(path);
        let want = nix::sys::stat::makedev(
            d["major"].as_u64().unwrap_or(0),
            d["minor"].as_u64().unwrap_or(0),
        );
        let ok = md.as_ref().is_ok_and(|m| {
            m.rdev() == want && (m.file_type().is_char_device() || m.file_type().is_block_device())
        });
        r.check(ok, &format!("linux.devices.{path}"), || format!("{md:?}"));
        if let (Ok(m), Some(mode)) = (&md, d["fileMode"].as_u64()) {
            r.check(
                u64::from(m.mode() & 0o7777) == mode,
                &format!("linux.devices.{path}.fileMode"),
                || format!("is {:o}", m.mode() & 0o7777),
            );
        }
    }
    if l.get("seccomp").is_some_and(|s| s.is_object()) {
        r.check(status_field("Seccomp") == "2", "linux.seccomp", || {
            format!("Seccomp is {}", status_field("Seccomp"))
        });
        // A rule returning an errno for getppid(2), the one call checked by running it.
        for rule in l["seccomp"]["syscalls"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let names: Vec<&str> = rule["names"]
                .as_array()
                .map(|a| a.iter().filter_map(|n| n.as_str()).collect())
                .unwrap_or_default();
            if names.contains(&"getppid") && rule["action"] == "SCMP_ACT_ERRNO" {
                let want = rule["errnoRet"].as_i64().unwrap_or(libc::EPERM as i64);
                // SAFETY: a plain system call.
                let ret = unsafe { libc::syscall(libc::SYS_getppid) };
                let err = nix::errno::Errno::last_raw() as i64;
                r.check(
                    ret == -1 && err == want,
                    "linux.seccomp.syscalls.getppid",
                    || format!("returned {ret}, errno {err}"),
                );
            }
        }
    }
    for f in &r.fails {
        println!("{f}");
    }
    println!("DONE {}", r.checks);
    std::process::exit(if r.fails.is_empty() { 0 } else { 1 });
}
