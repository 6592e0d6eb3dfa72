//! Storage on the real kernel: the build methods (template, rsync, clone, debootstrap,
//! template-guest), unification (reflink dedupe) on btrfs and xfs, snapshots, export and
//! import, move and delete. Run as root; each test cleans up after itself (scratch file systems
//! are loop-mounted images, see `LoopFs`).

mod common;
use common::*;
use serde_json::Value;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const MIB: u64 = 1 << 20;

/// `vserver NAME start`, `exec /bin/true`, `stop`.
fn start_exec_stop(env: &Env, name: &str) {
    assert_ok(&env.vserver(name, &["start"]), &format!("start {name}"));
    assert_ok(
        &env.vserver(name, &["exec", "/bin/true"]),
        &format!("exec /bin/true in {name}"),
    );
    assert_ok(&env.vserver(name, &["stop"]), &format!("stop {name}"));
}

/// Assert exit status `code` and that the output (stdout + stderr) contains every needle.
fn assert_refused(o: &Output, code: i32, what: &str, needles: &[&str]) {
    let t = text(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}: expected exit {code}: {t}"
    );
    for n in needles {
        assert!(
            t.contains(n),
            "{what}: the message does not mention {n:?}: {t}"
        );
    }
}

fn config(env: &Env, name: &str) -> libvserver::config::GuestConfig {
    libvserver::config::load_guest_config(&env.config_path(name))
        .unwrap_or_else(|e| panic!("config of {name}: {e}"))
}

fn random_bytes(n: u64) -> Vec<u8> {
    use std::io::Read;
    let mut v = Vec::with_capacity(n as usize);
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .take(n)
        .read_to_end(&mut v)
        .unwrap();
    v
}

fn write_file(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// Every JSON value printed on stdout (one object, or several, or an array).
fn json_values(o: &Output) -> Vec<Value> {
    serde_json::Deserializer::from_slice(&o.stdout)
        .into_iter::<Value>()
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", text(o)))
}

/// `key` of the printed JSON object; of several (vhashify: one per guest, a line each), the
/// total's (the one with "guest": null) if there is one, else their sum.
fn json_sum(o: &Output, key: &str) -> u64 {
    let objs: Vec<Value> = json_values(o)
        .into_iter()
        .flat_map(|v| match v {
            Value::Array(a) => a,
            other => vec![other],
        })
        .collect();
    if let Some(total) = objs
        .iter()
        .find(|v| v.get("guest").is_some_and(Value::is_null))
    {
        return total
            .get(key)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no \"{key}\" in the total: {}", text(o)));
    }
    let mut sum = 0;
    let mut found = false;
    for obj in objs {
        if let Some(n) = obj.get(key).and_then(Value::as_u64) {
            sum += n;
            found = true;
        }
    }
    assert!(found, "no \"{key}\" in the JSON output: {}", text(o));
    sum
}

/// The "dry_run" flags of the printed JSON objects (at least one, all the same).
fn json_dry_run(o: &Output) -> bool {
    let flags: Vec<bool> = json_values(o)
        .into_iter()
        .flat_map(|v| match v {
            Value::Array(a) => a,
            other => vec![other],
        })
        .filter_map(|obj| obj.get("dry_run").and_then(Value::as_bool))
        .collect();
    assert!(
        !flags.is_empty(),
        "no \"dry_run\" in the JSON output: {}",
        text(o)
    );
    assert!(
        flags.iter().all(|f| *f == flags[0]),
        "mixed dry_run flags: {}",
        text(o)
    );
    flags[0]
}

/// The labels of `vserver NAME snapshot list --json`.
fn snapshot_labels(env: &Env, name: &str) -> Vec<String> {
    let o = env.vserver(name, &["snapshot", "list", "--json"]);
    assert_ok(&o, "snapshot list --json");
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("snapshot list --json is not JSON ({e}): {}", text(&o)));
    v.as_array()
        .unwrap_or_else(|| panic!("snapshot list --json is not an array: {}", text(&o)))
        .iter()
        .map(|s| {
            s.get("label")
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("a snapshot without \"label\": {s}"))
                .to_string()
        })
        .collect()
}

fn tar(args: &[&str]) {
    let o = Command::new("tar").args(args).output().unwrap();
    assert_ok(&o, &format!("tar {}", args.join(" ")));
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn sibling(root: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", root.display()))
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

fn run(cmd: &str, args: &[&str]) {
    let o = Command::new(cmd).args(args).output().unwrap();
    assert_ok(&o, &format!("{cmd} {}", args.join(" ")));
}

// ---------------------------------------------------------------------------------------------
// Build methods

#[test]
fn build_template_from_gzip_and_zstd_tarballs_starts() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("tmpl", 0);
    let (name, xid) = (env.name.clone(), env.xid);
    let tree = env.dir.join("tree");
    busybox_tree(&tree);
    write_file(&tree.join("srv/owned"), b"from the tarball\n");
    chown(&tree.join("srv/owned"), 1234, 2345);
    let tgz = env.dir.join("guest.tar.gz");
    let tzst = env.dir.join("guest.tar.zst");
    let tplain = env.dir.join("guest.tar");
    tar(&["-C", p(&tree), "-czf", p(&tgz), "."]);
    tar(&["--zstd", "-C", p(&tree), "-cf", p(&tzst), "."]);
    tar(&["-C", p(&tree), "-cf", p(&tplain), "."]);

    // --tarball with a .tar.gz.
    let gz = format!("{name}g");
    env.guests.push(gz.clone());
    let x = xid.to_string();
    let o = env.vserver(
        &gz,
        &[
            "build",
            "-m",
            "template",
            "--tarball",
            p(&tgz),
            "--context",
            &x,
        ],
    );
    assert_ok(&o, "build -m template --tarball .tar.gz");
    let root = env.root(&gz);
    assert!(root.join("bin/busybox").is_file());
    let md = std::fs::symlink_metadata(root.join("srv/owned")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 2345), "owner from the tarball");
    start_exec_stop(&env, &gz);

    // util-vserver's -t, with a .tar.zst.
    let zs = format!("{name}z");
    env.guests.push(zs.clone());
    let x1 = (xid + 1).to_string();
    let o = env.vserver(
        &zs,
        &["build", "-m", "template", "-t", p(&tzst), "--context", &x1],
    );
    assert_ok(&o, "build -m template -t .tar.zst");
    assert!(env.root(&zs).join("bin/busybox").is_file());
    start_exec_stop(&env, &zs);

    // A plain tar (not started: no third context id).
    let pl = format!("{name}p");
    env.guests.push(pl.clone());
    let o = env.vserver(&pl, &["build", "-m", "template", "--tarball", p(&tplain)]);
    assert_ok(&o, "build -m template --tarball .tar");
    assert_eq!(
        std::fs::read(env.root(&pl).join("srv/owned")).unwrap(),
        b"from the tarball\n"
    );
}

#[test]
fn build_rsync_copies_the_tree_and_starts() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("rsync", 1);
    let (name, xid) = (env.name.clone(), env.xid);
    let tree = env.dir.join("tree");
    busybox_tree(&tree);
    write_file(&tree.join("srv/hello"), b"hello from rsync\n");
    chown(&tree.join("srv/hello"), 1234, 2345);
    std::os::unix::fs::symlink("hello", tree.join("srv/link")).unwrap();
    env.guests.push(name.clone());
    let o = env.vserver(
        &name,
        &[
            "build",
            "-m",
            "rsync",
            "--source",
            p(&tree),
            "--context",
            &xid.to_string(),
        ],
    );
    assert_ok(&o, "build -m rsync");
    let root = env.root(&name);
    assert!(
        root.join("bin/busybox").is_file(),
        "the tree's contents are not at the root"
    );
    let md = std::fs::symlink_metadata(root.join("srv/hello")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 2345), "owner kept");
    assert_eq!(
        std::fs::read_link(root.join("srv/link")).unwrap(),
        PathBuf::from("hello")
    );
    assert!(
        tree.join("bin/busybox").is_file(),
        "the source tree was changed"
    );
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let o = env.vserver(&name, &["exec", "cat", "/srv/hello"]);
    assert_eq!(text(&o), "hello from rsync\n");
    assert_ok(&env.vserver(&name, &["exec", "/bin/true"]), "exec");
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
}

fn ssh_host_keys(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("etc/ssh"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ssh_host_"))
        .collect()
}

fn machine_id(root: &Path) -> String {
    std::fs::read_to_string(root.join("etc/machine-id"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn clone_gets_a_new_identity_and_keeps_limits_and_marks() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("clone", 2);
    let (name, xid) = (env.name.clone(), env.xid);
    let src = name.clone();
    let tree = env.dir.join("tree");
    busybox_tree(&tree);
    env.guests.push(src.clone());
    let ifc = format!("{}:{}/24", env.bridge, env.ip(10));
    let o = env.build_rootfs(
        &src,
        &tree,
        &["--context", &xid.to_string(), "--interface", &ifc],
    );
    assert_ok(&o, "build the source");
    let sroot = env.root(&src);
    write_file(&sroot.join("etc/ssh/ssh_host_rsa_key"), b"PRIVATE KEY\n");
    write_file(
        &sroot.join("etc/ssh/ssh_host_rsa_key.pub"),
        b"ssh-rsa AAAA\n",
    );
    write_file(&sroot.join("etc/ssh/sshd_config"), b"Port 22\n");
    write_file(&sroot.join("srv/data"), b"payload\n");
    // A limit and a mark in the source's config.
    let cfg_path = env.config_path(&src);
    let mut cfg = std::fs::read_to_string(&cfg_path).unwrap();
    assert!(
        cfg.contains("\n[limits]\n"),
        "build wrote no [limits] table: {cfg}"
    );
    cfg = cfg.replace("\n[limits]\n", "\n[limits]\nnproc = 77\n");
    // Build may write `mark = []` or leave the key out.
    if let Some(at) = cfg.find("\nmark = ") {
        let end = at + 1 + cfg[at + 1..].find('\n').unwrap();
        cfg.replace_range(at + 1..end, "mark = [\"stgmark\"]");
    } else {
        let first_table = cfg.find("\n[").unwrap() + 1;
        cfg.insert_str(first_table, "mark = [\"stgmark\"]\n");
    }
    std::fs::write(&cfg_path, &cfg).unwrap();
    let scfg = config(&env, &src);
    assert_eq!(scfg.limits.nproc, Some(77));
    assert_eq!(scfg.mark, ["stgmark"]);
    let src_id = machine_id(&sroot);
    assert!(!src_id.is_empty());

    // A clone with a given context id.
    let c = format!("{name}c");
    env.guests.push(c.clone());
    let x1 = (xid + 1).to_string();
    let o = env.vserver(
        &c,
        &["build", "-m", "clone", "--source", &src, "--context", &x1],
    );
    assert_ok(&o, "build -m clone");
    let croot = env.root(&c);
    let ccfg = config(&env, &c);
    assert_eq!(ccfg.context, xid + 1);
    assert_eq!(ccfg.hostname.as_deref(), Some(c.as_str()));
    assert_eq!(
        std::fs::read_to_string(croot.join("etc/hostname"))
            .unwrap()
            .trim(),
        c
    );
    let cid = machine_id(&croot);
    assert!(
        cid.len() == 32 && cid.chars().all(|ch| ch.is_ascii_hexdigit()),
        "machine-id {cid:?}"
    );
    assert_ne!(cid, src_id, "the clone kept the source's machine-id");
    // Its own ssh host keys, never the source's.
    let mut keys = ssh_host_keys(&croot);
    keys.sort();
    assert_eq!(
        keys,
        [
            "ssh_host_ecdsa_key",
            "ssh_host_ecdsa_key.pub",
            "ssh_host_ed25519_key",
            "ssh_host_ed25519_key.pub",
            "ssh_host_rsa_key",
            "ssh_host_rsa_key.pub"
        ]
    );
    let rsa = croot.join("etc/ssh/ssh_host_rsa_key");
    assert_ne!(
        std::fs::read(&rsa).unwrap(),
        b"PRIVATE KEY\n",
        "the source's key was kept"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&rsa).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        croot.join("etc/ssh/sshd_config").is_file(),
        "etc/ssh not copied"
    );
    assert_eq!(std::fs::read(croot.join("srv/data")).unwrap(), b"payload\n");
    assert!(
        ccfg.interface.is_empty(),
        "the clone took the source's interfaces: {:?}",
        ccfg.interface
    );
    assert_eq!(ccfg.limits.nproc, Some(77), "limits not copied");
    assert_eq!(ccfg.mark, ["stgmark"], "marks not copied");
    // The source is untouched.
    assert_eq!(machine_id(&sroot), src_id);
    assert_eq!(ssh_host_keys(&sroot).len(), 2);
    assert_eq!(config(&env, &src).context, xid);
    // The clone runs under its own name.
    assert_ok(&env.vserver(&c, &["start"]), "start the clone");
    assert_eq!(text(&env.exec(&c, "hostname")).trim(), c);
    assert_ok(&env.vserver(&c, &["exec", "/bin/true"]), "exec");
    assert_ok(&env.vserver(&c, &["stop"]), "stop the clone");

    // Automatic context id, --hostname, and only the interface given.
    let c2 = format!("{name}d");
    env.guests.push(c2.clone());
    let ifc2 = format!("{}:{}/24", env.bridge, env.ip(11));
    let o = env.vserver(
        &c2,
        &[
            "build",
            "-m",
            "clone",
            "--source",
            &src,
            "--hostname",
            "web2",
            "--interface",
            &ifc2,
        ],
    );
    assert_ok(&o, "build -m clone --hostname --interface");
    let c2cfg = config(&env, &c2);
    assert!(
        c2cfg.context != xid && c2cfg.context != xid + 1,
        "automatic context {} is taken",
        c2cfg.context
    );
    assert_eq!(c2cfg.hostname.as_deref(), Some("web2"));
    assert_eq!(
        std::fs::read_to_string(env.root(&c2).join("etc/hostname"))
            .unwrap()
            .trim(),
        "web2"
    );
    assert_eq!(c2cfg.interface.len(), 1, "{:?}", c2cfg.interface);
    assert_eq!(c2cfg.interface[0].address.0, [format!("{}/24", env.ip(11))]);
    assert_ne!(machine_id(&env.root(&c2)), cid);

    // A clone of a directory.
    let dir = env.dir.join("dirsrc");
    busybox_tree(&dir);
    write_file(
        &dir.join("etc/machine-id"),
        b"0123456789abcdef0123456789abcdef\n",
    );
    write_file(&dir.join("etc/ssh/ssh_host_ed25519_key"), b"PRIVATE\n");
    let c3 = format!("{name}e");
    env.guests.push(c3.clone());
    let o = env.vserver(&c3, &["build", "-m", "clone", "--source", p(&dir)]);
    assert_ok(&o, "build -m clone --source DIR");
    let r3 = env.root(&c3);
    assert!(r3.join("bin/busybox").is_file());
    assert_ne!(machine_id(&r3), "0123456789abcdef0123456789abcdef");
    assert!(ssh_host_keys(&r3).is_empty());
    assert_eq!(config(&env, &c3).hostname.as_deref(), Some(c3.as_str()));
}

#[test]
fn every_copied_tree_gets_its_own_identity() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("ident", 23);
    let (name, xid) = (env.name.clone(), env.xid);
    // A tree that comes with another machine's identity.
    let src = env.dir.join("machine");
    busybox_tree(&src);
    write_file(&src.join("etc/ssh/sshd_config"), b"Port 22\n");
    for f in ["ssh_host_ed25519_key", "ssh_host_rsa_key"] {
        write_file(&src.join("etc/ssh").join(f), b"PRIVATE KEY\n");
        write_file(&src.join(format!("etc/ssh/{f}.pub")), b"ssh-x AAAA\n");
    }
    let theirs = "0123456789abcdef0123456789abcdef";
    write_file(
        &src.join("etc/machine-id"),
        format!("{theirs}\n").as_bytes(),
    );
    write_file(
        &src.join("var/lib/dbus/machine-id"),
        format!("{theirs}\n").as_bytes(),
    );
    write_file(&src.join("var/lib/systemd/random-seed"), b"seed");
    write_file(&src.join("etc/hostname"), b"elsewhere\n");
    let tar = env.dir.join("machine.tar");
    assert_ok(
        &Command::new("tar")
            .arg("-C")
            .arg(&src)
            .args(["-cf", p(&tar), "."])
            .output()
            .unwrap(),
        "tar",
    );
    let fill = format!("cp -a {}/. \"$VSERVER_ROOT\"", p(&src));
    let methods: Vec<(&str, Vec<&str>)> = vec![
        ("rootfs", vec!["-m", "rootfs", "--source", p(&src)]),
        ("template", vec!["-m", "template", "--tarball", p(&tar)]),
        ("rsync", vec!["-m", "rsync", "--source", p(&src)]),
        (
            "skeleton",
            vec!["-m", "skeleton", "--", "/bin/sh", "-c", &fill],
        ),
    ];
    let check = |what: &str, g: &str, etc: &Path, var: &Path| {
        let mut keys = ssh_host_keys(etc.parent().unwrap());
        keys.sort();
        assert_eq!(keys.len(), 6, "{what}: ssh host keys {keys:?}");
        for k in keys {
            assert_ne!(
                std::fs::read(etc.join("ssh").join(&k)).unwrap(),
                if k.ends_with(".pub") {
                    &b"ssh-x AAAA\n"[..]
                } else {
                    &b"PRIVATE KEY\n"[..]
                },
                "{what}: {k} is the source's"
            );
        }
        let mid = std::fs::read_to_string(etc.join("machine-id")).unwrap();
        assert_ne!(mid.trim(), theirs, "{what}: the source's machine-id");
        assert_eq!(mid.trim().len(), 32, "{what}: machine-id {mid:?}");
        assert!(
            !var.join("lib/dbus/machine-id").exists(),
            "{what}: D-Bus's machine-id came along"
        );
        assert!(
            !var.join("lib/systemd/random-seed").exists(),
            "{what}: the random seed came along"
        );
        assert_eq!(
            std::fs::read_to_string(etc.join("hostname"))
                .unwrap()
                .trim(),
            g,
            "{what}"
        );
    };
    let mut first = None;
    for (i, (what, args)) in methods.into_iter().enumerate() {
        let g = format!("{name}{i}");
        env.guests.push(g.clone());
        let x = (xid + i as u32).to_string();
        let mut a = vec!["build", "--context", x.as_str()];
        a.extend(args);
        assert_ok(&env.vserver(&g, &a), &format!("build -m {what}"));
        let r = env.root(&g);
        check(what, &g, &r.join("etc"), &r.join("var"));
        first.get_or_insert(g);
    }
    // Guests sharing a base through overlayfs: their own keys in their own upper layer.
    let base = first.unwrap();
    let base_key = std::fs::read(env.root(&base).join("etc/ssh/ssh_host_ed25519_key")).unwrap();
    let t = format!("{name}t");
    env.guests.push(t.clone());
    let x = (xid + 4).to_string();
    assert_ok(
        &env.vserver(
            &t,
            &[
                "build",
                "-m",
                "template-guest",
                "--template",
                &base,
                "--context",
                &x,
            ],
        ),
        "build -m template-guest",
    );
    let upper = sibling(&env.root(&t), ".overlay").join("upper");
    let key = std::fs::read(upper.join("etc/ssh/ssh_host_ed25519_key")).unwrap();
    assert_ne!(key, base_key, "the template guest serves its base's key");
    assert_eq!(
        std::fs::read_to_string(upper.join("etc/hostname"))
            .unwrap()
            .trim(),
        t
    );
}

#[test]
fn build_debootstrap_bookworm_starts() {
    if !require_root() {
        return;
    }
    if std::env::var_os("VSERVER_TEST_NO_NETWORK").is_some() {
        eprintln!("skipped: VSERVER_TEST_NO_NETWORK is set");
        return;
    }
    let mut env = Env::new("dboot", 3);
    let (name, xid) = (env.name.clone(), env.xid);
    env.guests.push(name.clone());
    let o = env.vserver(
        &name,
        &[
            "build",
            "-m",
            "debootstrap",
            "--dist",
            "bookworm",
            "--context",
            &xid.to_string(),
        ],
    );
    assert_ok(&o, "build -m debootstrap --dist bookworm");
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let o = env.vserver(&name, &["exec", "cat", "/etc/debian_version"]);
    assert_ok(&o, "exec cat /etc/debian_version");
    let v = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(v.starts_with("12"), "debian_version {v:?}");
    assert_ok(&env.vserver(&name, &["exec", "/bin/true"]), "exec");
    assert_eq!(text(&env.exec(&name, "hostname")).trim(), name);
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    assert!(cgroup_left(xid).is_empty());
}

#[test]
fn template_guest_shares_its_base_read_only_and_excludes_the_base_running() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("tguest", 4);
    let (name, xid) = (env.name.clone(), env.xid);
    let base = name.clone();
    env.build_busybox(&base, xid);
    let broot = env.root(&base);
    write_file(&broot.join("srv/shared"), b"from the base\n");
    let t = format!("{name}t");
    env.guests.push(t.clone());
    let o = env.vserver(
        &t,
        &[
            "build",
            "-m",
            "template-guest",
            "--template",
            &base,
            "--context",
            &(xid + 1).to_string(),
        ],
    );
    assert_ok(&o, "build -m template-guest");
    let troot = env.root(&t);
    let upper = sibling(&troot, ".overlay").join("upper");
    assert!(upper.is_dir(), "no upper layer at {}", upper.display());
    assert!(!is_mounted(&troot), "the root is mounted after the build");

    assert_ok(&env.vserver(&t, &["start"]), "start the template guest");
    assert!(is_mounted(&troot), "the root is not mounted while it runs");
    assert_ok(&env.vserver(&t, &["exec", "/bin/true"]), "exec");
    assert_eq!(
        text(&env.vserver(&t, &["exec", "cat", "/srv/shared"])),
        "from the base\n"
    );
    assert_ok(
        &env.exec(&t, "echo mine > /srv/mine && echo changed > /srv/shared"),
        "write in the template guest",
    );
    assert_eq!(
        std::fs::read(broot.join("srv/shared")).unwrap(),
        b"from the base\n",
        "a write in the template guest changed the base"
    );
    assert!(
        !broot.join("srv/mine").exists(),
        "a new file reached the base"
    );
    assert_eq!(std::fs::read(upper.join("srv/mine")).unwrap(), b"mine\n");
    // The base cannot start while a guest built on it runs.
    let o = env.vserver(&base, &["start"]);
    assert_refused(&o, 1, "start the base while its template guest runs", &[]);
    assert_eq!(env.vserver(&base, &["running"]).status.code(), Some(1));
    assert_ok(&env.vserver(&t, &["stop"]), "stop the template guest");
    assert!(!is_mounted(&troot), "the root is still mounted after stop");
    assert!(cgroup_left(xid + 1).is_empty());

    // Nor the template guest while the base runs.
    assert_ok(&env.vserver(&base, &["start"]), "start the base");
    let o = env.vserver(&t, &["start"]);
    assert_refused(&o, 1, "start a template guest while its base runs", &[]);
    assert!(!is_mounted(&troot));
    assert_ok(&env.vserver(&base, &["stop"]), "stop the base");

    // The private layer persists.
    assert_ok(&env.vserver(&t, &["start"]), "start again");
    assert_eq!(
        text(&env.vserver(&t, &["exec", "cat", "/srv/mine", "/srv/shared"])),
        "mine\nchanged\n"
    );
    assert_ok(&env.vserver(&t, &["stop"]), "stop again");
    assert!(!is_mounted(&troot));
}

/// Sum of the sizes of the regular files under `root`.
fn tree_bytes(root: &Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let md = e.path().symlink_metadata().unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() {
                n += md.len();
            }
        }
    }
    n
}

#[test]
fn twenty_template_guests_use_about_the_disk_of_one() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("twenty", 6);
    let fs = LoopFs::new(&env, "btrfs", 2 << 30);
    let (name, xid) = (env.name.clone(), env.xid);
    let base = name.clone();
    let broot = build_busybox_at(&mut env, &base, &fs.root(&base), Some(xid));
    write_file(&broot.join("srv/big"), &random_bytes(50 * MIB));
    let base_bytes = tree_bytes(&broot);
    let before = fs.used_bytes();
    for i in 0..20 {
        let t = format!("{name}t{i}");
        env.guests.push(t.clone());
        let troot = fs.root(&t);
        let x = (xid + 1).to_string();
        let mut args = vec![
            "build",
            "-m",
            "template-guest",
            "--template",
            &base,
            "--rootdir",
            p(&troot),
        ];
        if i == 0 {
            args.extend(["--context", &x]);
        }
        assert_ok(
            &env.vserver(&t, &args),
            &format!("build template guest {i}"),
        );
    }
    let grew = fs.used_bytes().saturating_sub(before);
    assert!(
        grew < 2 * base_bytes,
        "20 template guests took {grew} bytes; the base holds {base_bytes}"
    );
    let t0 = format!("{name}t0");
    assert_ok(&env.vserver(&t0, &["start"]), "start a template guest");
    let o = env.exec(&t0, "wc -c < /srv/big");
    assert_eq!(text(&o).trim(), (50 * MIB).to_string(), "{}", text(&o));
    assert_ok(&env.vserver(&t0, &["stop"]), "stop");
}

#[test]
fn failed_builds_remove_only_what_they_made() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("bfail", 19);
    let fs = LoopFs::new(&env, "btrfs", 1 << 30);
    let (name, xid) = (env.name.clone(), env.xid);
    let keep = fs.mnt.join("keep.txt");
    write_file(&keep, b"not the build's\n");
    let bad = env.dir.join("bad.tar.gz");
    write_file(&bad, &random_bytes(65536));
    let missing = env.dir.join("no-such-dir");
    let g = format!("{name}f");
    env.guests.push(g.clone());
    let root = fs.root(&g);
    let r = p(&root).to_string();
    let x = xid.to_string();
    let attempts: Vec<(&str, Vec<&str>)> = vec![
        (
            "a corrupt tarball",
            vec!["-m", "template", "--tarball", p(&bad)],
        ),
        (
            "rsync of a missing dir",
            vec!["-m", "rsync", "--source", p(&missing)],
        ),
        (
            "clone of an unknown guest",
            vec!["-m", "clone", "--source", "nosuchguest-stg"],
        ),
        (
            "template-guest of an unknown base",
            vec!["-m", "template-guest", "--template", "nosuchguest-stg"],
        ),
        (
            "debootstrap from an unreachable mirror",
            vec![
                "-m",
                "debootstrap",
                "--dist",
                "bookworm",
                "--mirror",
                "http://127.0.0.1:9/debian",
            ],
        ),
    ];
    for (what, method) in attempts {
        let mut args = vec!["build"];
        args.extend(method);
        args.extend(["--rootdir", &r, "--context", &x]);
        let o = env.vserver(&g, &args);
        assert!(
            !o.status.success(),
            "build from {what} succeeded: {}",
            text(&o)
        );
        assert!(!root.exists(), "{what}: the root is left");
        for s in [".overlay", ".snapshots", ".img"] {
            assert!(!sibling(&root, s).exists(), "{what}: ROOT{s} is left");
        }
        assert!(!env.config_path(&g).exists(), "{what}: the config is left");
        let subvols = Command::new("btrfs")
            .args(["subvolume", "list"])
            .arg(&fs.mnt)
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&subvols.stdout).contains(&g),
            "{what}: a subvolume is left: {}",
            text(&subvols)
        );
        assert_eq!(std::fs::read(&keep).unwrap(), b"not the build's\n");
    }
    assert!(bad.exists(), "the source tarball was removed");

    // A failed rebuild of an existing guest leaves it alone.
    let e = format!("{name}x");
    let eroot = build_busybox_at(&mut env, &e, &fs.root(&e), None);
    let cfg_before = std::fs::read_to_string(env.config_path(&e)).unwrap();
    let o = env.vserver(&e, &["build", "-m", "template", "--tarball", p(&bad)]);
    assert!(
        !o.status.success(),
        "rebuilt an existing guest: {}",
        text(&o)
    );
    assert!(
        eroot.join("bin/busybox").is_file(),
        "the existing root was damaged"
    );
    assert_eq!(
        std::fs::read_to_string(env.config_path(&e)).unwrap(),
        cfg_before
    );
}

// ---------------------------------------------------------------------------------------------
// Unification

/// Two guests on a fresh `fstype` file system holding an identical 8 MiB file (plus identical
/// files that must not be unified: under /etc, under an --exclude'd dir, and below the minimum
/// size; and a file of their own each). `vserver B unify` after `vserver A unify` shares
/// about 8 MiB (plus busybox, identical in both), frees it, and a later write in A's copy
/// leaves B's alone.
fn unify_saves_and_keeps_guests_apart(tag: &str, idx: u32, fstype: &str) {
    let mut env = Env::new(tag, idx);
    let fs = LoopFs::new(&env, fstype, 1 << 30);
    let name = env.name.clone();
    let (a, b) = (format!("{name}a"), format!("{name}b"));
    let ra = build_busybox_at(&mut env, &a, &fs.root(&a), None);
    let rb = build_busybox_at(&mut env, &b, &fs.root(&b), None);
    let big = random_bytes(8 * MIB);
    let etc = random_bytes(3 * MIB);
    let skip = random_bytes(5 * MIB);
    let small = random_bytes(3000);
    for r in [&ra, &rb] {
        write_file(&r.join("srv/big"), &big);
        write_file(&r.join("etc/big3"), &etc);
        write_file(&r.join("srv/skip/big5"), &skip);
        write_file(&r.join("srv/small"), &small);
        write_file(&r.join("srv/own"), &random_bytes(MIB));
    }
    let bb = std::fs::metadata(ra.join("bin/busybox")).unwrap().len();
    let big_digest = content_digest(&rb.join("srv/big"));
    fs.sync();

    let ex = ["--exclude", "/srv/skip"];
    let mut args = vec!["unify", "--json"];
    args.extend(ex);
    let o = env.vserver(&a, &args);
    assert_ok(&o, "unify the first guest");
    assert!(!json_dry_run(&o));
    assert!(
        fs.mnt.join(".hash").is_dir(),
        "no hash store at {}",
        fs.mnt.join(".hash").display()
    );

    // Nothing of B is as large as the minimum size.
    let o = env.vserver(
        &b,
        &["unify", "--dry-run", "--json", "--min-size", "16777216"],
    );
    assert_ok(&o, "unify --dry-run --min-size");
    assert_eq!(json_sum(&o, "bytes"), 0, "{}", text(&o));

    // A dry run says what would be shared and changes nothing.
    let free0 = fs.free_bytes();
    let mut args = vec!["unify", "--dry-run", "--json"];
    args.extend(ex);
    let o = env.vserver(&b, &args);
    assert_ok(&o, "unify --dry-run");
    assert!(json_dry_run(&o), "{}", text(&o));
    assert!(
        json_sum(&o, "bytes") >= 8 * MIB,
        "the dry run predicts too little: {}",
        text(&o)
    );
    let free1 = fs.free_bytes();
    assert!(
        free1 < free0 + MIB,
        "a dry run freed {} bytes",
        free1.saturating_sub(free0)
    );

    let mut args = vec!["unify", "--json"];
    args.extend(ex);
    let o = env.vserver(&b, &args);
    assert_ok(&o, "unify the second guest");
    assert!(!json_dry_run(&o));
    let bytes = json_sum(&o, "bytes");
    assert!(
        (8 * MIB..=8 * MIB + bb + MIB).contains(&bytes),
        "shared {bytes} bytes; expected 8 MiB and busybox's {bb} (nothing under /etc, \
         /srv/skip or below 4096 bytes): {}",
        text(&o)
    );
    assert!(json_sum(&o, "files") >= 1, "{}", text(&o));
    let free2 = fs.free_bytes();
    assert!(
        free2 >= free1 + 6 * MIB,
        "unify freed only {} bytes",
        free2.saturating_sub(free1)
    );
    assert_eq!(content_digest(&rb.join("srv/big")), big_digest);

    // A second run has nothing new to share.
    let o = env.vserver(&b, &["unify", "--json", "--exclude", "/srv/skip"]);
    assert_ok(&o, "unify again");
    assert_eq!(json_sum(&o, "bytes"), 0, "{}", text(&o));

    // A write into A's copy (in place and appended) leaves B's copy as it was.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(ra.join("srv/big"))
            .unwrap();
        f.seek(SeekFrom::Start(4096)).unwrap();
        f.write_all(&[0xAA; 8192]).unwrap();
        f.seek(SeekFrom::End(0)).unwrap();
        f.write_all(b"appended").unwrap();
        f.sync_all().unwrap();
    }
    fs.sync();
    assert_ne!(content_digest(&ra.join("srv/big")), big_digest);
    assert_eq!(
        content_digest(&rb.join("srv/big")),
        big_digest,
        "a write in one guest changed the other"
    );
    assert_eq!(std::fs::read(rb.join("srv/big")).unwrap(), big);
}

#[test]
fn unify_on_btrfs_shares_identical_files() {
    if !require_root() {
        return;
    }
    unify_saves_and_keeps_guests_apart("unibt", 7, "btrfs");
}

#[test]
fn unify_on_xfs_shares_identical_files() {
    if !require_root() {
        return;
    }
    unify_saves_and_keeps_guests_apart("unixfs", 8, "xfs");
}

#[test]
fn unify_on_ext4_is_refused_with_advice() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("uniext", 9);
    let fs = LoopFs::new(&env, "ext4", 512 << 20);
    let name = env.name.clone();
    let root = build_busybox_at(&mut env, &name, &fs.root(&name), None);
    let before = tree_manifest(&root);
    let o = env.vserver(&name, &["unify"]);
    assert_refused(&o, 1, "unify on ext4", &["reflink", "template-guest"]);
    let o = env.cmd("vhashify").arg(&name).output().unwrap();
    assert_refused(&o, 1, "vhashify on ext4", &["reflink"]);
    // Several guests on such a file system: the advice is given once.
    let second = format!("{name}b");
    build_busybox_at(&mut env, &second, &fs.root(&second), None);
    let o = env.cmd("vhashify").args([&name, &second]).output().unwrap();
    let t = text(&o);
    assert_eq!(t.matches("template-guest").count(), 1, "{t}");
    assert!(t.contains("(see above)"), "{t}");
    assert_eq!(
        tree_manifest(&root),
        before,
        "a refused unify changed the guest"
    );
}

#[test]
fn vhashify_unifies_several_guests() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("vhash", 10);
    let fs = LoopFs::new(&env, "xfs", 1 << 30);
    let name = env.name.clone();
    let big = random_bytes(8 * MIB);
    let mut names = Vec::new();
    let mut roots = Vec::new();
    for s in ["a", "b", "c"] {
        let g = format!("{name}{s}");
        let r = build_busybox_at(&mut env, &g, &fs.root(&g), None);
        write_file(&r.join("srv/big"), &big);
        write_file(&r.join("srv/own"), &random_bytes(MIB));
        names.push(g);
        roots.push(r);
    }
    let bb = std::fs::metadata(roots[0].join("bin/busybox"))
        .unwrap()
        .len();
    let digest = content_digest(&roots[0].join("srv/big"));

    let free0 = fs.free_bytes();
    let o = env
        .cmd("vhashify")
        .args(["--dry-run", "--json", "--all"])
        .output()
        .unwrap();
    assert_ok(&o, "vhashify --dry-run --all");
    assert!(json_dry_run(&o), "{}", text(&o));
    let free1 = fs.free_bytes();
    assert!(
        free1 < free0 + MIB,
        "a dry run freed {} bytes",
        free1.saturating_sub(free0)
    );

    let o = env
        .cmd("vhashify")
        .arg("--json")
        .args(&names)
        .output()
        .unwrap();
    assert_ok(&o, "vhashify A B C");
    assert!(!json_dry_run(&o));
    let bytes = json_sum(&o, "bytes");
    assert!(
        (16 * MIB..=24 * MIB + 3 * bb + MIB).contains(&bytes),
        "shared {bytes} bytes over three guests with an identical 8 MiB file: {}",
        text(&o)
    );
    let free2 = fs.free_bytes();
    assert!(
        free2 >= free1 + 12 * MIB,
        "vhashify freed only {} bytes",
        free2.saturating_sub(free1)
    );
    let o = env
        .cmd("vhashify")
        .args(["--json", "--all"])
        .output()
        .unwrap();
    assert_ok(&o, "vhashify --all");
    assert_eq!(
        json_sum(&o, "bytes"),
        0,
        "nothing new to share: {}",
        text(&o)
    );
    for r in &roots {
        assert_eq!(content_digest(&r.join("srv/big")), digest);
    }
}

// ---------------------------------------------------------------------------------------------
// Export and import

/// Give a guest root the things a copy easily loses: owners, xattrs, a file capability, ACLs,
/// hardlinks, a sparse file, device nodes, a fifo, a setuid file, an owned symlink.
fn decorate(root: &Path) {
    let srv = root.join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    write_file(&srv.join("owned"), b"owned\n");
    chown(&srv.join("owned"), 1234, 5678);
    std::fs::set_permissions(srv.join("owned"), std::fs::Permissions::from_mode(0o640)).unwrap();
    write_file(&srv.join("xattr"), b"x\n");
    run(
        "setfattr",
        &["-n", "user.x", "-v", "hello", p(&srv.join("xattr"))],
    );
    std::fs::copy(root.join("bin/busybox"), srv.join("capbin")).unwrap();
    run("setcap", &["cap_net_raw+ep", p(&srv.join("capbin"))]);
    write_file(&srv.join("acl"), b"acl\n");
    run("setfacl", &["-m", "u:1234:rwx", p(&srv.join("acl"))]);
    std::fs::create_dir(srv.join("acldir")).unwrap();
    run(
        "setfacl",
        &["-d", "-m", "u:1234:rx", p(&srv.join("acldir"))],
    );
    write_file(&srv.join("hard1"), b"linked\n");
    std::fs::hard_link(srv.join("hard1"), srv.join("hard2")).unwrap();
    std::fs::create_dir(srv.join("sub")).unwrap();
    std::fs::hard_link(srv.join("hard1"), srv.join("sub/hard3")).unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(srv.join("sparse")).unwrap();
        f.set_len(64 * MIB).unwrap();
        f.seek(SeekFrom::Start(32 * MIB)).unwrap();
        f.write_all(&[0x5A; 4096]).unwrap();
    }
    let md = std::fs::metadata(srv.join("sparse")).unwrap();
    assert!(
        md.blocks() * 512 < MIB,
        "the test's sparse file is not sparse"
    );
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    std::fs::create_dir_all(root.join("dev")).unwrap();
    mknod(
        &root.join("dev/null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .unwrap();
    mknod(
        &srv.join("zero"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o640),
        makedev(1, 5),
    )
    .unwrap();
    nix::unistd::mkfifo(&srv.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
    write_file(&srv.join("setuid"), b"#!/bin/sh\n");
    std::fs::set_permissions(srv.join("setuid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::symlink("owned", srv.join("link")).unwrap();
    chown(&srv.join("link"), 1234, 5678);
    std::fs::create_dir(srv.join("private")).unwrap();
    chown(&srv.join("private"), 1234, 5678);
    std::fs::set_permissions(srv.join("private"), std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn export_then_import_reproduces_the_root_bit_for_bit() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("export", 11);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    let aroot = env.root(&name);
    decorate(&aroot);
    let before = tree_manifest(&aroot);

    let file = env.dir.join("guest.tar.zst");
    let o = env.vserver(&name, &["export", p(&file)]);
    assert_ok(&o, "export");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "an export is the whole guest: for root alone");
    }
    let head = std::fs::read(&file).unwrap();
    assert!(
        head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
        "the export is not zstd-compressed"
    );
    assert_eq!(tree_manifest(&aroot), before, "export changed the guest");

    // From a file, onto another root, with another context id.
    let elsewhere = env.dir.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700)).unwrap();
    let b = format!("{name}b");
    env.guests.push(b.clone());
    let broot = elsewhere.join(&b);
    let x1 = (xid + 1).to_string();
    let o = env.vserver(
        &b,
        &["import", p(&file), "--rootdir", p(&broot), "--context", &x1],
    );
    assert_ok(&o, "import from a file");
    let bcfg = config(&env, &b);
    assert_eq!(bcfg.context, xid + 1);
    assert_eq!(bcfg.root.as_deref(), Some(broot.as_path()));
    assert_same_tree(&aroot, &broot);
    start_exec_stop(&env, &b);

    // Through a pipe: export - | import -.
    let c = format!("{name}c");
    env.guests.push(c.clone());
    let croot = elsewhere.join(&c);
    let errlog = std::fs::File::create(env.dir.join("export.err")).unwrap();
    let mut exp = env
        .cmd("vserver")
        .args([&name, "export", "-"])
        .stdout(Stdio::piped())
        .stderr(errlog)
        .spawn()
        .unwrap();
    let pipe = exp.stdout.take().unwrap();
    let o = env
        .cmd("vserver")
        .args([&c, "import", "-", "--rootdir", p(&croot), "--renumber"])
        .stdin(Stdio::from(pipe))
        .output()
        .unwrap();
    let st = wait_child(&mut exp, 60, "export - did not end");
    assert!(
        st.success(),
        "export - failed: {}",
        std::fs::read_to_string(env.dir.join("export.err")).unwrap_or_default()
    );
    assert_ok(&o, "import -");
    assert_same_tree(&aroot, &croot);
    let cctx = config(&env, &c).context;
    assert!(cctx != xid && cctx != xid + 1, "renumbered to {cctx}");
}

#[test]
fn import_refuses_an_existing_name_and_a_used_context() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("import", 12);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    let file = env.dir.join("guest.tar.zst");
    assert_ok(&env.vserver(&name, &["export", p(&file)]), "export");
    let cfg_before = std::fs::read_to_string(env.config_path(&name)).unwrap();
    let root_before = tree_manifest(&env.root(&name));

    let o = env.vserver(&name, &["import", p(&file)]);
    assert_refused(&o, 1, "import onto an existing guest", &[]);
    assert_eq!(
        std::fs::read_to_string(env.config_path(&name)).unwrap(),
        cfg_before
    );
    assert_eq!(tree_manifest(&env.root(&name)), root_before);

    let b = format!("{name}b");
    env.guests.push(b.clone());
    let o = env.vserver(&b, &["import", p(&file)]);
    assert_refused(&o, 1, "import with a context id in use", &[]);
    let t = text(&o);
    assert!(
        t.contains(&xid.to_string()) || t.contains(&name),
        "the refusal names neither the context id nor the guest using it: {t}"
    );
    assert!(
        !env.config_path(&b).exists(),
        "a refused import left a config"
    );
    assert!(!env.root(&b).exists(), "a refused import left a root");

    // On a stream that has not ended (here: never ends), the clash is refused from the config
    // at its head, without reading the rest.
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg(format!("cat {}; exec sleep 600", p(&file)))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut import = env
        .cmd("vserver")
        .args([b.as_str(), "import", "-"])
        .stdin(writer.stdout.take().unwrap())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let st = wait_child(&mut import, 120, "import waited for the end of the stream");
    let _ = writer.kill();
    let _ = writer.wait();
    let o = import.wait_with_output().unwrap();
    assert_eq!(st.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("--renumber"), "{}", text(&o));
    assert!(!env.root(&b).exists(), "a refused import left a root");

    let o = env.vserver(&b, &["import", p(&file), "--renumber"]);
    assert_ok(&o, "import --renumber");
    let bctx = config(&env, &b).context;
    assert_ne!(bctx, xid, "--renumber kept the used context id");
    assert!(env.root(&b).join("bin/busybox").is_file());

    let c = format!("{name}c");
    env.guests.push(c.clone());
    let o = env.vserver(
        &c,
        &["import", p(&file), "--context", &(xid + 1).to_string()],
    );
    assert_ok(&o, "import --context");
    assert_eq!(config(&env, &c).context, xid + 1);
    assert!(bctx != xid + 1);
}

// ---------------------------------------------------------------------------------------------
// Snapshots

fn snapshot_roundtrip(tag: &str, idx: u32, fstype: &str) {
    let mut env = Env::new(tag, idx);
    let fs = LoopFs::new(&env, fstype, 1 << 30);
    let (name, xid) = (env.name.clone(), env.xid);
    let root = build_busybox_at(&mut env, &name, &fs.root(&name), Some(xid));
    let subvol = |p: &Path| {
        Command::new("btrfs")
            .args(["subvolume", "show"])
            .arg(p)
            .output()
            .unwrap()
    };
    if fstype == "btrfs" {
        assert_ok(&subvol(&root), "the guest root is a btrfs subvolume");
    }
    write_file(&root.join("srv/keep"), b"precious\n");
    let snaps = sibling(&root, ".snapshots");

    let o = env.vserver(&name, &["snapshot", "create", "first"]);
    assert_ok(&o, "snapshot create first");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "first");
    assert_eq!(
        std::fs::read(snaps.join("first/srv/keep")).unwrap(),
        b"precious\n"
    );
    if fstype == "btrfs" {
        assert_ok(&subvol(&snaps.join("first")), "the snapshot is a subvolume");
    }
    let o = env.vserver(&name, &["snapshot", "create"]);
    assert_ok(&o, "snapshot create (no label)");
    let auto = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(
        !auto.is_empty() && !auto.contains(char::is_whitespace) && !auto.contains('/'),
        "snapshot create printed {auto:?}"
    );
    assert!(snaps.join(&auto).is_dir());
    let labels = snapshot_labels(&env, &name);
    assert!(
        labels.contains(&"first".to_string()) && labels.contains(&auto),
        "{labels:?}"
    );

    std::fs::remove_file(root.join("srv/keep")).unwrap();
    write_file(&root.join("srv/later"), b"after the snapshot\n");

    // Not while the guest runs.
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let o = env.vserver(&name, &["snapshot", "restore", "first"]);
    assert_refused(&o, 1, "restore of a running guest", &[]);
    assert_eq!(env.vserver(&name, &["running"]).status.code(), Some(0));
    assert!(!root.join("srv/keep").exists());
    assert_ok(&env.vserver(&name, &["stop"]), "stop");

    let o = env.vserver(&name, &["snapshot", "restore", "first"]);
    assert_ok(&o, "snapshot restore");
    assert_eq!(std::fs::read(root.join("srv/keep")).unwrap(), b"precious\n");
    assert!(
        !root.join("srv/later").exists(),
        "restore kept a file made after the snapshot"
    );
    assert!(snapshot_labels(&env, &name).contains(&"first".to_string()));
    assert_ok(&env.vserver(&name, &["start"]), "start the restored guest");
    assert_eq!(
        text(&env.vserver(&name, &["exec", "cat", "/srv/keep"])),
        "precious\n"
    );
    assert_ok(&env.vserver(&name, &["stop"]), "stop");

    assert_ok(
        &env.vserver(&name, &["snapshot", "delete", "first"]),
        "snapshot delete",
    );
    assert!(!snaps.join("first").exists());
    let labels = snapshot_labels(&env, &name);
    assert!(
        !labels.contains(&"first".to_string()) && labels.contains(&auto),
        "{labels:?}"
    );
    assert_ok(
        &env.vserver(&name, &["snapshot", "delete", &auto]),
        "snapshot delete (the unlabelled one)",
    );
    // (restore kept the replaced state as a snapshot of its own: the list need not be empty)
    assert!(!snapshot_labels(&env, &name).contains(&auto));
    assert!(!snaps.join(&auto).exists());
}

#[test]
fn snapshot_restore_on_btrfs_brings_back_a_deleted_file() {
    if !require_root() {
        return;
    }
    snapshot_roundtrip("snapbt", 13, "btrfs");
}

#[test]
fn snapshot_restore_on_xfs_brings_back_a_deleted_file() {
    if !require_root() {
        return;
    }
    snapshot_roundtrip("snapxfs", 14, "xfs");
}

#[test]
fn snapshot_on_ext4_is_refused() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("snapext", 15);
    let fs = LoopFs::new(&env, "ext4", 512 << 20);
    let name = env.name.clone();
    let root = build_busybox_at(&mut env, &name, &fs.root(&name), None);
    let o = env.vserver(&name, &["snapshot", "create", "x"]);
    assert_refused(&o, 1, "snapshot on ext4", &["ext4"]);
    assert!(!sibling(&root, ".snapshots").join("x").exists());
}

// ---------------------------------------------------------------------------------------------
// Move and delete

#[test]
fn move_then_start_works_and_takes_image_snapshots_and_overlay_along() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("move", 16);
    let fs = LoopFs::new(&env, "xfs", 1 << 30);
    let (name, xid) = (env.name.clone(), env.xid);
    // A guest on a disk image.
    env.guests.push(name.clone());
    let tree = env.dir.join("tree");
    busybox_tree(&tree);
    write_file(&tree.join("srv/marker"), b"moved-ok\n");
    let o = env.build_rootfs(
        &name,
        &tree,
        &["--context", &xid.to_string(), "--disk-size", "32M"],
    );
    assert_ok(&o, "build with a disk image");
    let old = env.root(&name);
    let moved_dir = env.dir.join("moved");
    std::fs::create_dir_all(&moved_dir).unwrap();
    std::fs::set_permissions(&moved_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let new1 = moved_dir.join(&name);

    assert_ok(&env.vserver(&name, &["start"]), "start");
    let o = env.vserver(&name, &["move", p(&new1)]);
    assert_refused(&o, 1, "move of a running guest", &[]);
    assert!(old.exists() && !new1.exists());
    assert_ok(&env.vserver(&name, &["stop"]), "stop");

    let check_at = |root: &Path, from: &Path| {
        assert!(!from.exists(), "{} is still there", from.display());
        assert!(
            !sibling(from, ".img").exists(),
            "the old image is still there"
        );
        assert!(sibling(root, ".img").is_file(), "the image did not move");
        assert_eq!(config(&env, &name).root.as_deref(), Some(root));
        assert_ok(&env.vserver(&name, &["start"]), "start after the move");
        assert!(is_mounted(root), "the image is not mounted at the new root");
        assert_eq!(
            text(&env.vserver(&name, &["exec", "cat", "/srv/marker"])),
            "moved-ok\n"
        );
        assert_ok(&env.vserver(&name, &["stop"]), "stop after the move");
        assert!(!is_mounted(root));
    };
    assert_ok(&env.vserver(&name, &["move", p(&new1)]), "move");
    check_at(&new1, &old);
    // Onto another file system.
    let new2 = fs.root(&name);
    assert_ok(
        &env.vserver(&name, &["move", p(&new2)]),
        "move to another file system",
    );
    check_at(&new2, &new1);

    // Snapshots go along.
    let s = format!("{name}s");
    let sroot = build_busybox_at(&mut env, &s, &fs.root(&s), None);
    write_file(&sroot.join("srv/bfile"), b"from the base\n");
    assert_ok(
        &env.vserver(&s, &["snapshot", "create", "s1"]),
        "snapshot create",
    );
    std::fs::create_dir_all(fs.mnt.join("sub")).unwrap();
    let snew = fs.mnt.join("sub").join(&s);
    assert_ok(&env.vserver(&s, &["move", p(&snew)]), "move with snapshots");
    assert!(!sroot.exists() && !sibling(&sroot, ".snapshots").exists());
    assert!(sibling(&snew, ".snapshots").join("s1").is_dir());
    assert!(snapshot_labels(&env, &s).contains(&"s1".to_string()));

    // So does a template guest's private layer.
    let t = format!("{name}t");
    env.guests.push(t.clone());
    let o = env.vserver(
        &t,
        &[
            "build",
            "-m",
            "template-guest",
            "--template",
            &s,
            "--context",
            &(xid + 1).to_string(),
        ],
    );
    assert_ok(&o, "build a template guest");
    assert_ok(&env.vserver(&t, &["start"]), "start the template guest");
    assert_ok(&env.exec(&t, "echo private > /srv/tfile"), "write");
    assert_ok(&env.vserver(&t, &["stop"]), "stop the template guest");
    let told = env.root(&t);
    let tnew = moved_dir.join(&t);
    assert_ok(
        &env.vserver(&t, &["move", p(&tnew)]),
        "move a template guest",
    );
    assert!(!sibling(&told, ".overlay").exists());
    assert!(sibling(&tnew, ".overlay").join("upper/srv/tfile").is_file());
    assert_ok(
        &env.vserver(&t, &["start"]),
        "start the moved template guest",
    );
    assert_eq!(
        text(&env.vserver(&t, &["exec", "cat", "/srv/tfile", "/srv/bfile"])),
        "private\nfrom the base\n"
    );
    assert_ok(&env.vserver(&t, &["stop"]), "stop");
}

#[test]
fn delete_needs_force_and_removes_root_config_and_state() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("delete", 17);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);
    let root = env.root(&name);
    let o = env.vserver(&name, &["delete"]);
    assert_refused(&o, 1, "delete without --force", &["--force"]);
    assert!(root.join("bin/busybox").is_file() && env.config_path(&name).exists());

    assert_ok(&env.vserver(&name, &["start"]), "start");
    let run = env.dir.join("run").join(&name);
    assert!(run.exists(), "no run state at {}", run.display());
    assert_ok(
        &env.vserver(&name, &["delete", "--force"]),
        "delete --force",
    );
    assert!(!root.exists(), "the root is left");
    assert!(!env.config_path(&name).exists(), "the config is left");
    assert!(!run.exists(), "the run state is left");
    assert!(
        cgroup_left(xid).is_empty(),
        "the running guest was not stopped"
    );
    assert_eq!(env.vserver(&name, &["status"]).status.code(), Some(5));
}

#[test]
fn delete_of_a_template_in_use_is_refused() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("deltmpl", 18);
    let (name, xid) = (env.name.clone(), env.xid);
    let base = name.clone();
    env.build_busybox(&base, xid);
    let t = format!("{name}t");
    env.guests.push(t.clone());
    let o = env.vserver(
        &t,
        &[
            "build",
            "-m",
            "template-guest",
            "--template",
            &base,
            "--context",
            &(xid + 1).to_string(),
        ],
    );
    assert_ok(&o, "build a template guest");
    let o = env.vserver(&base, &["delete", "--force"]);
    assert_refused(&o, 1, "delete of a template in use", &[t.as_str()]);
    assert!(env.root(&base).join("bin/busybox").is_file());
    assert!(env.config_path(&base).exists());

    // Deleting the running template guest stops it and removes its layer.
    let troot = env.root(&t);
    assert_ok(&env.vserver(&t, &["start"]), "start the template guest");
    assert_ok(
        &env.vserver(&t, &["delete", "--force"]),
        "delete the template guest",
    );
    assert!(!is_mounted(&troot), "its root is still mounted");
    assert!(!troot.exists() && !sibling(&troot, ".overlay").exists());
    assert!(!env.config_path(&t).exists());
    assert!(cgroup_left(xid + 1).is_empty());

    // Then the base goes too.
    assert_ok(
        &env.vserver(&base, &["delete", "--force"]),
        "delete the unused base",
    );
    assert!(!env.root(&base).exists() && !env.config_path(&base).exists());
}

/// `vserver NAME ARGS...` with a deadline: a hostile tree must not make a host tool hang.
fn vserver_within(env: &Env, name: &str, args: &[&str], secs: u64, what: &str) -> Output {
    let mut c = env
        .cmd("vserver")
        .arg(name)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_child(&mut c, secs, what);
    c.wait_with_output().unwrap()
}

#[test]
fn hostile_streams_names_and_configs_are_refused_or_defanged() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("hstream", 5);
    let (name, xid) = (env.name.clone(), env.xid);
    env.build_busybox(&name, xid);

    // A stream whose root/ is a symlink to a host directory: no guest is made on it.
    let victim = env.dir.join("victim");
    std::fs::create_dir(&victim).unwrap();
    let cfg_text = std::fs::read_to_string(env.config_path(&name))
        .unwrap()
        .replace(
            &format!("context = {xid}"),
            &format!("context = {}", xid + 1),
        );
    let evil = env.dir.join("evil.tar.zst");
    let py = format!(
        "import io, tarfile\n\
         t = tarfile.open('{0}.tar', 'w')\n\
         d = {1:?}.encode()\n\
         i = tarfile.TarInfo('vserver-export.toml'); i.size = len(d); t.addfile(i, io.BytesIO(d))\n\
         i = tarfile.TarInfo('root'); i.type = tarfile.SYMTYPE; i.linkname = '{2}'; t.addfile(i)\n\
         t.close()\n",
        evil.display(),
        cfg_text,
        victim.display()
    );
    let st = std::process::Command::new("python3")
        .args(["-c", &py])
        .status()
        .unwrap();
    assert!(st.success());
    let st = std::process::Command::new("zstd")
        .args(["-q", "-f", "--rm"])
        .arg(format!("{}.tar", evil.display()))
        .arg("-o")
        .arg(&evil)
        .status()
        .unwrap();
    assert!(st.success());
    let s = format!("{name}s");
    env.guests.push(s.clone());
    let o = env.vserver(&s, &["import", p(&evil)]);
    assert_refused(
        &o,
        1,
        "import of a stream whose root is a symlink",
        &["root"],
    );
    assert!(!env.config_path(&s).exists(), "a config was written");
    assert!(
        std::fs::symlink_metadata(env.root(&s)).is_err(),
        "a root was left"
    );
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);

    // A name that is another guest's companion path.
    let tree = env.dir.join("bb-tree");
    busybox_tree(&tree);
    for sfx in [".snapshots", ".img", ".overlay"] {
        let o = env.build_rootfs(&format!("{name}{sfx}"), &tree, &[]);
        assert_refused(&o, 1, "a guest named like a companion path", &[sfx]);
    }

    // A stream config granting host access is imported without it unless trusted.
    let p_cfg = env.config_path(&name);
    let c = std::fs::read_to_string(&p_cfg).unwrap();
    assert!(c.contains("mount = []") && c.contains("add = []"), "{c}");
    std::fs::write(
        &p_cfg,
        c.replace("mount = []\n", "")
            .replace("add = []", "add = [\"SYS_ADMIN\"]")
            .replace("[limits]\n", "[limits]\nnice = -20\ncpu_weight = 10000\n")
            .replace("kill_timeout = 5", "kill_timeout = 3600")
            + "\n[[mount]]\nsource = \"/etc\"\ntarget = \"/hostetc\"\nreadonly = false\n",
    )
    .unwrap();
    // A host-only attribute on the tree (vserver's userns marker) never travels.
    let set = std::process::Command::new("setfattr")
        .args(["-n", "trusted.vserver.userns", "-v", "shifted 1"])
        .arg(env.root(&name))
        .output()
        .unwrap();
    assert_ok(&set, "setfattr");
    let file = env.dir.join("granting.tar.zst");
    assert_ok(&env.vserver(&name, &["export", p(&file)]), "export");
    let m = format!("{name}m");
    env.guests.push(m.clone());
    let o = env.vserver(&m, &["import", p(&file), "--renumber"]);
    assert_ok(&o, "import of a granting config");
    assert!(text(&o).contains("--trust-config"), "{}", text(&o));
    let mc = config(&env, &m);
    assert!(mc.mount.is_empty(), "host mount kept: {:?}", mc.mount);
    assert!(mc.capabilities.add.is_empty());
    assert_eq!(mc.limits.nice, None, "a negative nice was kept");
    assert_eq!(mc.limits.cpu_weight, None, "a raised CPU weight was kept");
    assert_eq!(
        mc.stop.kill_timeout_secs(false),
        5,
        "a long stop timeout was kept"
    );
    let get = std::process::Command::new("getfattr")
        .args(["-n", "trusted.vserver.userns"])
        .arg(env.root(&m))
        .output()
        .unwrap();
    assert!(
        !get.status.success(),
        "the marker travelled: {}",
        text(&get)
    );
    let t = format!("{name}t");
    env.guests.push(t.clone());
    // Into new parent directories: made mode 0700 (guest setuid files out of users' reach).
    let deep = env.dir.join("new/parents/guest");
    let o = env.vserver(
        &t,
        &[
            "import",
            p(&file),
            "--renumber",
            "--trust-config",
            "--rootdir",
            p(&deep),
        ],
    );
    assert_ok(&o, "import --trust-config");
    let tc = config(&env, &t);
    assert_eq!(tc.mount.len(), 1);
    assert_eq!(tc.capabilities.add, ["SYS_ADMIN"]);
    use std::os::unix::fs::PermissionsExt;
    for d in [env.dir.join("new"), env.dir.join("new/parents")] {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is mode {mode:o}", d.display());
    }
}

#[test]
fn running_guests_are_not_copied_live_and_hostile_files_do_not_stall_tools() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("hlive", 20);
    let lfs = LoopFs::new(&env, "xfs", 1 << 30);
    let (name, xid) = (env.name.clone(), env.xid);
    let root = build_busybox_at(&mut env, &name, &lfs.root(&name), Some(xid));
    assert_ok(&env.vserver(&name, &["start"]), "start");
    // A reflink copy of a running guest could be redirected by symlink swaps: refused.
    let o = env.vserver(&name, &["snapshot", "create", "live"]);
    assert_refused(&o, 1, "snapshot of a running guest on xfs", &["running"]);
    let c = format!("{name}c");
    env.guests.push(c.clone());
    let o = env.vserver(&c, &["build", "-m", "clone", "--source", p(&root)]);
    assert_refused(
        &o,
        1,
        "clone of a running guest's root by path",
        &["running"],
    );
    assert!(std::fs::symlink_metadata(env.root(&c)).is_err());
    assert_ok(&env.vserver(&name, &["stop"]), "stop");

    // An 8 EiB sparse file is skipped by unify, not hashed for ever.
    std::fs::File::create(root.join("huge"))
        .unwrap()
        .set_len(0x7fff_ffff_ffff_f000)
        .unwrap();
    let o = vserver_within(
        &env,
        &name,
        &["unify", "--json"],
        60,
        "unify hangs on a huge file",
    );
    assert_ok(&o, "unify");
    std::fs::remove_file(root.join("huge")).unwrap();

    // A FIFO where the build writes the clone's identity does not block it.
    let mid = root.join("etc/machine-id");
    let _ = std::fs::remove_file(&mid);
    let st = std::process::Command::new("mkfifo")
        .arg(&mid)
        .status()
        .unwrap();
    assert!(st.success());
    let o = vserver_within(
        &env,
        &c,
        &[
            "build",
            "-m",
            "clone",
            "--source",
            &name,
            "--rootdir",
            p(&lfs.root(&c)),
        ],
        60,
        "clone blocks on a FIFO",
    );
    assert_ok(&o, "clone of a tree with a FIFO machine-id");
    assert!(
        std::fs::symlink_metadata(lfs.root(&c).join("etc/machine-id"))
            .unwrap()
            .is_file()
    );
}

#[test]
fn delete_removes_nested_read_only_subvolumes_a_guest_made() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("hsubv", 21);
    let lfs = LoopFs::new(&env, "btrfs", 1 << 30);
    let (name, xid) = (env.name.clone(), env.xid);
    let root = build_busybox_at(&mut env, &name, &lfs.root(&name), Some(xid));
    for args in [
        vec!["subvolume", "create", p(&root.join("sub"))],
        vec![
            "subvolume",
            "snapshot",
            "-r",
            p(&root.join("sub")),
            p(&root.join("sub/ro")),
        ],
        vec![
            "subvolume",
            "snapshot",
            "-r",
            p(&root),
            p(&root.join("snapro")),
        ],
    ] {
        let st = std::process::Command::new("btrfs")
            .args(&args)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "btrfs {args:?}");
    }
    let o = env.vserver(&name, &["delete", "--force"]);
    assert_ok(&o, "delete with nested read-only subvolumes");
    assert!(std::fs::symlink_metadata(&root).is_err(), "root left");
    assert!(!env.config_path(&name).exists(), "config left");
}

#[test]
fn rootfs_copies_and_tarballs_keep_setuid_hardlinks_xattrs_and_capabilities() {
    if !require_root() {
        return;
    }
    let env = Env::new("fidelity", 22);
    let src = env.dir.join("src");
    busybox_tree(&src);
    let f = src.join("bin/suid");
    std::fs::write(&f, b"#!/bin/sh\n").unwrap();
    std::os::unix::fs::chown(&f, Some(0), Some(0)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::hard_link(&f, src.join("bin/suid-link")).unwrap();
    let ok = |c: &mut std::process::Command| assert!(c.status().unwrap().success(), "{c:?}");
    ok(std::process::Command::new("setfattr")
        .args(["-n", "user.x", "-v", "1"])
        .arg(&f));
    ok(std::process::Command::new("setcap")
        .arg("cap_net_bind_service+ep")
        .arg(src.join("bin/busybox")));
    let tar = env.dir.join("src.tar.gz");
    ok(std::process::Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-czf"])
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .arg("."));
    for (name, source) in [("fdir", &src), ("ftar", &tar)] {
        let g = format!("{}{name}", env.name);
        let o = env.build_rootfs(&g, source, &[]);
        assert_ok(&o, &format!("build {name}"));
        let r = env.root(&g);
        let m = std::fs::metadata(r.join("bin/suid")).unwrap();
        assert_eq!(
            m.permissions().mode() & 0o7777,
            0o4755,
            "{name}: setuid bit lost"
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            m.ino(),
            std::fs::metadata(r.join("bin/suid-link")).unwrap().ino(),
            "{name}: hardlink split"
        );
        let x = std::process::Command::new("getfattr")
            .args(["-n", "user.x", "--only-values"])
            .arg(r.join("bin/suid"))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&x.stdout),
            "1",
            "{name}: xattr lost"
        );
        let c = std::process::Command::new("getcap")
            .arg(r.join("bin/busybox"))
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&c.stdout).contains("cap_net_bind_service"),
            "{name}: file capability lost"
        );
    }
}

/// Issue 20, point 1: parallel builds each get a context id of their own (eight at a time gave
/// eight guests the same one): the id is reserved under a lock until NAME.toml holds it.
#[test]
fn parallel_builds_get_distinct_context_ids() {
    if !require_root() {
        return;
    }
    let env = Env::new("parb", 57);
    let tree = env.dir.join("tree");
    busybox_tree(&tree);
    let names: Vec<String> = (0..12).map(|i| format!("{}p{i}", env.name)).collect();
    run_all_at_once(
        names
            .iter()
            .map(|n| {
                let mut c = env.cmd("vserver");
                c.args([n.as_str(), "build", "-m", "rootfs", "--source"])
                    .arg(&tree);
                c
            })
            .collect(),
    );
    let mut xids: Vec<String> = names
        .iter()
        .map(|n| {
            std::fs::read_to_string(env.config_path(n))
                .unwrap()
                .lines()
                .find(|l| l.starts_with("context"))
                .unwrap()
                .to_string()
        })
        .collect();
    xids.sort();
    let n = xids.len();
    xids.dedup();
    assert_eq!(xids.len(), n, "a context id given twice: {xids:?}");
    // No reservation outlives its build.
    let left: Vec<_> = std::fs::read_dir(env.dir.join("etc/.xid-reserved"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|f| f != "lock")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // Issue 20, point 4: a start whose root went away meanwhile says so.
    std::fs::remove_dir_all(env.dir.join("root").join(&names[0])).unwrap();
    let o = env.vserver(&names[0], &["start"]);
    assert!(
        !o.status.success() && text(&o).contains("does not exist"),
        "{}",
        text(&o)
    );
}
