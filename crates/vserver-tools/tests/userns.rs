//! User-namespace guests (`userns = true`) on the real kernel: the id range, files with
//! ordinary owners through the idmapped root, the escape view, the shift fallback and its
//! undo, exec/enter joining the namespace, and failed starts. Run as root; each test cleans up
//! (the Env guard stops its guests and removes its tree, even on panic).

mod common;
use common::*;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

/// Host uid/gid of guest id 0 for context `xid`.
fn base(xid: u32) -> u32 {
    xid * 65536
}

/// Build a busybox guest with `--userns`; registers it for cleanup. Returns its root.
fn build_userns(env: &mut Env, name: &str, xid: u32) -> std::path::PathBuf {
    env.guests.push(name.to_string());
    let tree = env.dir.join(format!("bb-{name}"));
    busybox_tree(&tree);
    let x = xid.to_string();
    let o = env.build_rootfs(name, &tree, &["--context", &x, "--userns"]);
    assert_ok(&o, "build --userns");
    let cfg = std::fs::read_to_string(env.config_path(name)).unwrap();
    assert!(cfg.contains("userns = true"), "{cfg}");
    env.root(name)
}

/// Add TOML tables to the guest's config (dropping the empty `mount = []` and
/// `interface = []` that build writes, which a `[[mount]]` would duplicate).
fn add_tables(env: &Env, name: &str, tables: &str) {
    let p = env.config_path(name);
    let cfg = std::fs::read_to_string(&p)
        .unwrap()
        .replace("\nmount = []\n", "\n")
        .replace("\ninterface = []\n", "\n");
    std::fs::write(&p, format!("{cfg}\n{tables}")).unwrap();
}

/// The guest's init pid on the host, from `status --json`.
fn init_pid(env: &Env, name: &str) -> i32 {
    let j = text(&env.vserver(name, &["status", "--json"]));
    let v: serde_json::Value = serde_json::from_str(j.trim()).unwrap_or_else(|_| panic!("{j}"));
    v["init_pid"].as_i64().unwrap_or_else(|| panic!("{j}")) as i32
}

/// Real, effective, saved and fs uid of a host process (the `Uid:` line of /proc/PID/status).
fn host_uids(pid: i32) -> Vec<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .map(|r| {
            r.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Host pids of the processes named `comm` in context `xid` (its v1 pids or v2 cgroup).
fn guest_pids_named(xid: u32, comm: &str) -> Vec<i32> {
    let mut v = Vec::new();
    for base in [
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup",
    ] {
        if let Ok(s) = std::fs::read_to_string(format!("{base}/vservers/{xid}/cgroup.procs")) {
            for p in s.lines().filter_map(|l| l.parse::<i32>().ok()) {
                let c = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
                if c.trim() == comm && !v.contains(&p) {
                    v.push(p);
                }
            }
        }
    }
    v
}

/// Mount points at or below `path` in the host's mount table.
fn mounts_under(path: &Path) -> Vec<String> {
    let p = path.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m == &p || m.starts_with(&format!("{p}/")))
        .collect()
}

/// Host processes whose real uid is in context `xid`'s range.
fn procs_in_range(xid: u32) -> Vec<i32> {
    let b = base(xid);
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            host_uids(*p)
                .first()
                .is_some_and(|u| *u >= b && *u - b < 65536)
        })
        .collect()
}

#[test]
fn userns_guest_root_is_uid_0_inside_and_the_xid_range_outside_with_ordinary_files() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("usns", 0);
    let (name, xid) = (env.name.clone(), env.xid);
    let root = build_userns(&mut env, &name, xid);
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let o = env.vserver(&name, &["start"]);
    assert_ok(&o, "start");
    assert!(
        !text(&o).contains("shift"),
        "ext4 here can be idmapped: {}",
        text(&o)
    );

    // Inside: root, and the map says where its ids are on the host.
    assert_eq!(text(&env.exec(&name, "id -u")).trim(), "0");
    assert_eq!(text(&env.exec(&name, "id -g")).trim(), "0");
    let map = text(&env.exec(&name, "cat /proc/self/uid_map"));
    let f: Vec<&str> = map.split_whitespace().collect();
    assert_eq!(f, ["0", &base(xid).to_string(), "65536"], "{map}");
    let gmap = text(&env.exec(&name, "cat /proc/self/gid_map"));
    assert!(gmap.contains(&base(xid).to_string()), "{gmap}");
    let mounts = text(&env.exec(&name, "cat /proc/mounts"));
    assert!(
        mounts
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("/") && l.contains("idmapped")),
        "the root is not idmapped: {mounts}"
    );

    // Outside: the init runs as the first id of the range.
    let init = init_pid(&env, &name);
    assert_eq!(host_uids(init), vec![base(xid); 4]);

    // Files keep ordinary owners on disk: root's file is 0:0, nobody's 65534.
    assert_ok(
        &env.exec(
            &name,
            "echo hi > /root/by-root && echo x > /tmp/by-nobody-dir-check",
        ),
        "write as root",
    );
    assert_ok(
        &env.vserver(
            &name,
            &[
                "suexec",
                "nobody",
                "/bin/sh",
                "-c",
                "echo n > /tmp/by-nobody",
            ],
        ),
        "write as nobody",
    );
    let md = std::fs::symlink_metadata(root.join("root/by-root")).unwrap();
    assert_eq!((md.uid(), md.gid()), (0, 0), "root's file on disk");
    let md = std::fs::symlink_metadata(root.join("tmp/by-nobody")).unwrap();
    assert_eq!(md.uid(), 65534, "nobody's file on disk");
    // And files from the build (owned by 0 on disk) are root's inside.
    let ls = text(&env.exec(&name, "ls -ln /bin/busybox"));
    assert!(ls.split_whitespace().nth(2) == Some("0"), "{ls}");
    assert_eq!(
        text(&env.vserver(&name, &["suexec", "nobody", "id", "-u"])).trim(),
        "65534"
    );

    // exec joins the user namespace: a command it starts runs as the range on the host.
    let mut sleeper = env
        .cmd("vserver")
        .args([&name, "exec", "sleep", "77"])
        .spawn()
        .unwrap();
    wait_until(10, "the exec'd sleep shows in the guest's cgroup", || {
        !guest_pids_named(xid, "sleep").is_empty()
    });
    for p in guest_pids_named(xid, "sleep") {
        assert_eq!(host_uids(p), vec![base(xid); 4], "exec'd pid {p}");
    }
    // vps and vserver-stat map it to the guest; vkill reaches it.
    let vps = text(&env.cmd("vps").arg("aux").output().unwrap());
    assert!(
        vps.lines()
            .any(|l| l.contains(&format!("{xid} {name}")) && l.contains("sleep 77")),
        "{vps}"
    );
    let stat = text(&env.cmd("vserver-stat").output().unwrap());
    assert!(
        stat.lines()
            .any(|l| l.starts_with(&format!("{xid} ")) && l.ends_with(&name)),
        "{stat}"
    );
    let host_pid = guest_pids_named(xid, "sleep")[0];
    let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap();
    let guest_pid = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|r| r.split_whitespace().last())
        .unwrap_or_else(|| panic!("{status}"))
        .to_string();
    let o = env
        .cmd("vkill")
        .args(["--xid", &xid.to_string(), "-s", "TERM", &guest_pid])
        .output()
        .unwrap();
    assert_ok(&o, "vkill the sleep");
    let st = wait_child(&mut sleeper, 10, "exec'd sleep did not end after vkill");
    assert_eq!(st.code(), Some(143));

    // enter: a shell on a pty, in the user namespace too.
    let mut child = env
        .cmd("vserver")
        .args([&name, "enter"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"id -u; cat /proc/self/uid_map; ls -lnL /proc/self/fd/0; exit 5\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(5), "{out}");
    assert!(out.contains(&base(xid).to_string()), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("/proc/self/fd/0") && l.split_whitespace().nth(2) == Some("0")),
        "the pty is not root's inside: {out}"
    );

    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    assert!(cgroup_left(xid).is_empty(), "{:?}", cgroup_left(xid));
    assert!(procs_in_range(xid).is_empty(), "{:?}", procs_in_range(xid));
}

#[test]
fn escaped_guest_root_is_nobody_on_the_host() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("usesc", 1);
    let (name, xid) = (env.name.clone(), env.xid);
    build_userns(&mut env, &name, xid);
    // A writable host directory bound in, holding a file of host root's.
    let shared = env.dir.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    let host_file = shared.join("hostfile");
    std::fs::write(&host_file, "host\n").unwrap();
    std::fs::set_permissions(&host_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    add_tables(
        &env,
        &name,
        &format!(
            "[[mount]]\nsource = \"{}\"\ntarget = \"/mnt/shared\"\nreadonly = false\n",
            shared.display()
        ),
    );
    assert_ok(&env.vserver(&name, &["start"]), "start");
    // Through the bind: host root's files are nobody's to the guest's root.
    let o = env.exec(&name, "echo evil >> /mnt/shared/hostfile");
    assert!(!o.status.success(), "guest root wrote a host file");
    assert!(text(&o).contains("Permission denied"), "{}", text(&o));
    let o = env.exec(&name, "echo evil > /mnt/shared/newfile");
    assert!(
        !o.status.success(),
        "guest root created a file in a host directory"
    );
    assert_eq!(std::fs::read_to_string(&host_file).unwrap(), "host\n");
    let ls = text(&env.exec(&name, "ls -ln /mnt/shared/hostfile"));
    assert_eq!(ls.split_whitespace().nth(2), Some("65534"), "{ls}");

    // A process of the guest that got out of its mount namespace: its credentials as the
    // host sees them (the guest's user namespace, uid 0 there), the host's file tree.
    let init = init_pid(&env, &name);
    let escaped = |sh: &str| {
        Command::new("nsenter")
            .args(["-t", &init.to_string(), "-U", "-S", "0", "-G", "0", "--"])
            .args(["/bin/sh", "-c", sh])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = escaped("id -u; cat /proc/self/uid_map");
    assert_ok(&o, "nsenter into the guest's user namespace");
    assert!(text(&o).starts_with("0\n"), "{}", text(&o));
    let secret = env.dir.join("host-secret");
    std::fs::write(&secret, "secret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = escaped(&format!("cat {}", secret.display()));
    assert!(!o.status.success(), "escaped root read a host root file");
    assert!(text(&o).contains("Permission denied"), "{}", text(&o));
    let o = escaped(&format!("echo x >> {}", host_file.display()));
    assert!(!o.status.success(), "escaped root wrote a host root file");
    // Signals to host processes (pid 1 of the host, our own test process) are refused.
    let o = escaped(&format!("kill -0 1 || kill -0 {}", std::process::id()));
    assert!(
        !o.status.success(),
        "escaped root may signal host processes"
    );
    assert!(
        text(&o).contains("not permitted") || text(&o).contains("Operation"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read_to_string(&host_file).unwrap(), "host\n");
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
}

#[test]
fn shift_fallback_keeps_setid_caps_and_acls_and_unshift_restores_the_tree() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("usshift", 2);
    let (name, xid) = (env.name.clone(), env.xid);
    let root = build_userns(&mut env, &name, xid);
    let b = base(xid);
    // What a real tree has: set-ID programs, file capabilities, ACLs, symlinks, FIFOs,
    // hardlinks, files of other users.
    std::fs::copy(root.join("bin/busybox"), root.join("bin/suidprog")).unwrap();
    std::fs::set_permissions(
        root.join("bin/suidprog"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::copy(root.join("bin/busybox"), root.join("bin/busybox-cap")).unwrap();
    let run = |c: &mut Command| {
        let o = c.output().unwrap();
        assert_ok(&o, &format!("{c:?}"));
    };
    run(Command::new("setcap")
        .arg("cap_chown+ep")
        .arg(root.join("bin/busybox-cap")));
    std::fs::create_dir(root.join("srv/shared")).unwrap();
    std::fs::set_permissions(
        root.join("srv/shared"),
        std::fs::Permissions::from_mode(0o2775),
    )
    .unwrap();
    std::os::unix::fs::chown(root.join("srv/shared"), Some(1000), Some(1000)).unwrap();
    std::fs::write(root.join("srv/shared/doc"), "doc\n").unwrap();
    run(Command::new("setfacl")
        .args(["-m", "u:1000:rw,g:50:r"])
        .arg(root.join("srv/shared/doc")));
    run(Command::new("setfacl")
        .args(["-d", "-m", "u:1001:rwx"])
        .arg(root.join("srv/shared")));
    std::fs::hard_link(root.join("srv/shared/doc"), root.join("srv/doc-link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("srv/link")).unwrap();
    run(Command::new("mkfifo").arg(root.join("srv/fifo")));
    std::os::unix::fs::lchown(root.join("srv/link"), Some(1000), Some(1000)).unwrap();
    // An owner outside the guest's ids: left alone, and said so.
    std::fs::write(root.join("srv/foreign"), "f\n").unwrap();
    std::os::unix::fs::chown(root.join("srv/foreign"), Some(200000), Some(200000)).unwrap();
    let before = tree_manifest(&root);

    let o = env
        .cmd("vserver")
        .args([&name, "start"])
        .env("VSERVER_USERNS_NO_IDMAP", "1")
        .output()
        .unwrap();
    assert_ok(&o, "start with the shift fallback");
    let out = text(&o);
    assert!(out.contains("shifting the owners"), "{out}");
    assert!(out.contains("shift owners:"), "no progress: {out}");
    assert!(out.contains("outside ids 0-65535"), "{out}");
    let mounts = text(&env.exec(&name, "cat /proc/mounts"));
    assert!(
        !mounts
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("/") && l.contains("idmapped")),
        "{mounts}"
    );
    // On disk: shifted, set-ID bits and capabilities kept, ACL entries shifted.
    let md = |p: &str| std::fs::symlink_metadata(root.join(p)).unwrap();
    assert_eq!((md("bin/busybox").uid(), md("bin/busybox").gid()), (b, b));
    assert_eq!(md("bin/suidprog").mode() & 0o7777, 0o4755);
    assert_eq!(md("bin/suidprog").uid(), b);
    assert_eq!(md("srv/shared").mode() & 0o7777, 0o2775);
    assert_eq!(md("srv/shared").uid(), b + 1000);
    assert_eq!(md("srv/link").uid(), b + 1000, "symlink owner");
    assert_eq!(md("srv/fifo").uid(), b, "fifo owner");
    assert_eq!(md("srv/foreign").uid(), 200000, "foreign owner left");
    let caps = text(
        &Command::new("getcap")
            .arg(root.join("bin/busybox-cap"))
            .output()
            .unwrap(),
    );
    assert!(caps.contains("cap_chown=ep"), "{caps}");
    let acl = text(
        &Command::new("getfacl")
            .args(["-n", "-p"])
            .arg(root.join("srv/shared/doc"))
            .output()
            .unwrap(),
    );
    assert!(acl.contains(&format!("user:{}:rw-", b + 1000)), "{acl}");
    assert!(acl.contains(&format!("group:{}:r--", b + 50)), "{acl}");
    let marker = String::from_utf8_lossy(
        &Command::new("getfattr")
            .args(["-n", "trusted.vserver.userns", "--only-values"])
            .arg(&root)
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert_eq!(marker.trim(), format!("shifted {b}"));
    // Inside: ordinary owners (the setgid directory gave doc group 1000); the file
    // capability works; a new file lands shifted.
    let ls = text(&env.exec(&name, "ls -ln /bin/suidprog /srv/shared/doc"));
    assert!(
        ls.lines().any(|l| l.contains("suidprog")
            && l.starts_with("-rwsr-xr-x")
            && l.split_whitespace().nth(2) == Some("0")),
        "{ls}"
    );
    assert!(
        ls.lines()
            .any(|l| l.contains("doc") && l.split_whitespace().nth(3) == Some("1000")),
        "{ls}"
    );
    assert_ok(&env.exec(&name, "echo c > /tmp/capfile"), "write");
    assert_ok(
        &env.vserver(
            &name,
            &[
                "suexec",
                "nobody",
                "/bin/busybox-cap",
                "chown",
                "1000",
                "/tmp/capfile",
            ],
        ),
        "a file capability inside a shifted tree",
    );
    assert_eq!(md("tmp/capfile").uid(), b + 1000);
    assert_ok(&env.exec(&name, "echo new > /root/new"), "write");
    assert_eq!(md("root/new").uid(), b);
    assert_ok(&env.vserver(&name, &["stop"]), "stop");

    // A later start without the switch does not idmap a shifted tree.
    let o = env.vserver(&name, &["start"]);
    assert_ok(&o, "second start");
    assert!(
        !text(&o).contains("shift owners:"),
        "shifted twice: {}",
        text(&o)
    );
    assert_eq!(
        text(&env.exec(&name, "ls -ln /root/new"))
            .split_whitespace()
            .nth(2),
        Some("0")
    );
    assert_eq!(
        env.vserver(&name, &["userns-unshift"]).status.code(),
        Some(1),
        "unshift of a running guest"
    );
    assert_ok(&env.vserver(&name, &["stop"]), "stop");

    // The undo gives back the tree as it was (but for what the guest wrote).
    let o = env.vserver(&name, &["userns-unshift"]);
    assert_ok(&o, "userns-unshift");
    assert!(text(&o).contains("shift owners back:"), "{}", text(&o));
    assert_eq!(md("root/new").uid(), 0);
    assert_eq!(md("tmp/capfile").uid(), 1000);
    std::fs::remove_file(root.join("root/new")).unwrap();
    std::fs::remove_file(root.join("tmp/capfile")).unwrap();
    assert_same_tree_manifest(&before, &tree_manifest(&root));
    let o = env.vserver(&name, &["userns-unshift"]);
    assert_ok(&o, "second unshift");
    assert!(text(&o).contains("not shifted"), "{}", text(&o));

    // A guest without userns refuses a shifted tree instead of running with odd owners.
    let o = env
        .cmd("vserver")
        .args([&name, "start"])
        .env("VSERVER_USERNS_NO_IDMAP", "1")
        .output()
        .unwrap();
    assert_ok(&o, "start, shifted again");
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    let cfg = std::fs::read_to_string(env.config_path(&name)).unwrap();
    std::fs::write(env.config_path(&name), cfg.replace("userns = true\n", "")).unwrap();
    let o = env.vserver(&name, &["start"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("userns-unshift"), "{}", text(&o));
    assert_ok(&env.vserver(&name, &["userns-unshift"]), "unshift");
    assert_ok(
        &env.vserver(&name, &["start"]),
        "plain start after the unshift",
    );
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
}

/// Compare two manifests from [`tree_manifest`], showing the differing lines.
fn assert_same_tree_manifest(a: &[String], b: &[String]) {
    let only_a: Vec<&String> = a.iter().filter(|l| !b.contains(l)).collect();
    let only_b: Vec<&String> = b.iter().filter(|l| !a.contains(l)).collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "trees differ\nbefore only:\n  {}\nafter only:\n  {}",
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

#[test]
fn failed_userns_start_leaves_nothing_and_classic_networking_is_refused() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("usfail", 3);
    let (name, xid) = (env.name.clone(), env.xid);
    let root = build_userns(&mut env, &name, xid);
    // A guest whose /dev is a symlink fails in the child's setup, after the user namespace,
    // its maps and the idmapped root exist.
    std::fs::remove_dir(root.join("dev")).unwrap();
    std::os::unix::fs::symlink("/tmp", root.join("dev")).unwrap();
    let o = env.vserver(&name, &["start"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("/dev"), "{}", text(&o));
    assert_eq!(env.vserver(&name, &["status"]).status.code(), Some(3));
    assert!(cgroup_left(xid).is_empty(), "{:?}", cgroup_left(xid));
    assert!(procs_in_range(xid).is_empty(), "{:?}", procs_in_range(xid));
    assert!(mounts_under(&root).is_empty(), "{:?}", mounts_under(&root));
    assert!(
        !env.dir.join("run").join(&name).join("state.json").exists(),
        "state left"
    );
    // Nothing held: the lock is free and a fixed guest starts.
    std::fs::remove_file(root.join("dev")).unwrap();
    std::fs::create_dir(root.join("dev")).unwrap();
    assert_ok(&env.vserver(&name, &["start"]), "start after the fix");
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    assert!(mounts_under(&root).is_empty(), "{:?}", mounts_under(&root));

    // userns with a classic interface: refused, naming the file, line and key.
    add_tables(
        &env,
        &name,
        "[[interface]]\nmode = \"classic\"\naddress = \"10.199.254.9/24\"\n",
    );
    let o = env.vserver(&name, &["start"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains(&format!("{name}.toml:")) && t.contains("key 'userns'") && t.contains("classic"),
        "{t}"
    );
}

#[test]
fn host_method_userns_guest_with_a_veth_sees_host_binds_with_their_owners() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("ushost", 4);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_host(&name, xid, true);
    let p = env.config_path(&name);
    let cfg = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        cfg.replacen("\nhostname = ", "\nuserns = true\nhostname = ", 1),
    )
    .unwrap();
    assert_ok(&env.vserver(&name, &["start"]), "start");
    assert_eq!(text(&env.exec(&name, "id -u")).trim(), "0");
    // The host's /usr, bound read-only, is idmapped: root's files are root's inside.
    let ls = text(&env.exec(&name, "ls -ln /usr/bin/env"));
    assert_eq!(ls.split_whitespace().nth(2), Some("0"), "{ls}");
    let o = env.exec(&name, "echo x > /usr/bin/vserver-test-write");
    assert!(!o.status.success(), "wrote into the host's /usr");
    // Its own network namespace, owned by its user namespace: addresses and sysctls.
    let ip = env.ip(2 + (xid % 100) as u8);
    let addrs = text(&env.exec(&name, "ip -br addr"));
    assert!(addrs.contains(&ip), "{addrs}");
    let range = text(&env.exec(&name, "cat /proc/sys/net/ipv4/ping_group_range"));
    assert_eq!(
        range.split_whitespace().collect::<Vec<_>>(),
        ["0", "65535"],
        "{range}"
    );
    // A service inside answers the host on the guest's address.
    let o = env.exec(
        &name,
        &format!("cd /tmp && (python3 -m http.server 8080 --bind {ip} >/dev/null 2>&1 &)"),
    );
    assert_ok(&o, "start a service");
    let addr: std::net::SocketAddr = format!("{ip}:8080").parse().unwrap();
    wait_until(10, "the service in the guest never answered", || {
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1)).is_ok()
    });
    assert_eq!(host_uids(init_pid(&env, &name)), vec![base(xid); 4]);
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    assert!(!link_exists(&format!("vs{xid}-0")), "veth left behind");
    assert!(cgroup_left(xid).is_empty(), "{:?}", cgroup_left(xid));
}
