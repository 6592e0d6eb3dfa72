use super::*;

const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:4 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:5 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:6 - cgroup cgroup rw,xattr,name=systemd
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,memory
37 30 0:32 /sub /mnt/other rw - cgroup cgroup rw,memory
";

#[test]
fn hybrid_layout_is_parsed() {
    let h = parse_mountinfo(HYBRID);
    assert_eq!(h.len(), 4);
    assert_eq!(
        h[0],
        Hierarchy::V2 {
            mount: "/sys/fs/cgroup/unified".into()
        }
    );
    assert!(h[2].has_controller("cpuacct"));
    assert_eq!(
        CgroupLayout {
            hierarchies: h,
            systemd_scopes: false,
        }
        .mode(),
        "hybrid"
    );
}

#[test]
fn v2_only_layout() {
    let t = "31 25 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
    let l = CgroupLayout {
        hierarchies: parse_mountinfo(t),
        systemd_scopes: false,
    };
    assert_eq!(l.mode(), "v2");
}

#[test]
fn cpu_stat_parsers() {
    let t = parse_cpu_stat_v2("usage_usec 300\nuser_usec 200\nsystem_usec 100\n");
    assert_eq!(
        t,
        CpuTimes {
            user_usec: 200,
            sys_usec: 100
        }
    );
    let t = parse_cpuacct_stat("user 5\nsystem 2\n");
    assert_eq!(
        t,
        CpuTimes {
            user_usec: 50_000,
            sys_usec: 20_000
        }
    );
}

#[test]
fn xid_from_proc_cgroup() {
    assert_eq!(xid_from_cgroup_file("0::/vservers/40001\n"), Some(40001));
    assert_eq!(
        xid_from_cgroup_file("8:pids:/vservers/42/sub\n0::/\n"),
        Some(42)
    );
    assert_eq!(xid_from_cgroup_file("0::/user.slice\n"), None);
}

#[test]
fn real_host_layout_creates_and_removes_a_cgroup() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let layout = CgroupLayout::detect().unwrap();
    let xid = 60000 + (std::process::id() % 5000);
    let cg = GuestCgroup::new(&layout, xid);
    cg.create().unwrap();
    assert!(cg.exists());
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    cg.add_pid(child.id() as i32, false).unwrap();
    assert_eq!(cg.pids(), vec![child.id() as i32]);
    assert_eq!(xid_of_pid(Path::new("/proc"), child.id() as i32), Some(xid));
    cg.remove().unwrap();
    let _ = child.wait();
    assert!(!cg.exists());
}

#[test]
fn cpu_shares_map_onto_weights_end_to_end_and_default_to_default() {
    assert_eq!(shares_to_weight(2), 1);
    assert_eq!(shares_to_weight(1024), 100);
    assert_eq!(shares_to_weight(262_144), 10_000);
    assert_eq!(shares_to_weight(0), 1);
    // Monotonic in between.
    let mut last = 0;
    for s in [2, 10, 102, 512, 1024, 2048, 100_000, 262_144] {
        let w = shares_to_weight(s);
        assert!(w >= last, "{s} -> {w}");
        last = w;
    }
}
