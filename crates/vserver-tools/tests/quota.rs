//! Disk quotas on the host's own file system: btrfs quota groups (run here) and ext4/xfs
//! project quotas (they need a kernel with quota support: `scripts/vm-lane.sh` boots Debian's;
//! on a kernel without, the project test says it skipped, and fails inside the lane).

mod common;
use common::*;
use std::path::Path;

fn in_vm_lane() -> bool {
    std::env::var_os("VSERVER_IN_VM_LANE").is_some()
}

/// The project id of `path` (FS_IOC_FSGETXATTR).
fn projid(path: &Path) -> u32 {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    let mut a = [0u8; 28];
    // SAFETY: a struct fsxattr is 28 bytes; the kernel fills it.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), 0x801c_581f_u64 as _, a.as_mut_ptr()) };
    assert_eq!(r, 0, "FS_IOC_FSGETXATTR {}", path.display());
    u32::from_ne_bytes([a[12], a[13], a[14], a[15]])
}

fn build_host_at(env: &mut Env, name: &str, root: &Path, xid: u32, extra: &[&str]) {
    env.guests.push(name.to_string());
    let x = xid.to_string();
    let r = root.to_str().unwrap();
    let mut args = vec![
        "build",
        "-m",
        "host",
        "--initstyle",
        "builtin",
        "--context",
        &x,
        "--rootdir",
        r,
    ];
    args.extend_from_slice(extra);
    assert_ok(&env.vserver(name, &args), "build");
}

#[test]
fn btrfs_quota_group_limits_a_guest_and_it_cannot_escape_it() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("qbtrfs", 0);
    let lfs = LoopFs::new(&env, "btrfs", 1 << 30);
    let (name, xid) = (env.name.clone(), env.xid);
    build_host_at(
        &mut env,
        &name,
        &lfs.root(&name),
        xid,
        &["--disk-size", "200M"],
    );
    let cfg = std::fs::read_to_string(env.config_path(&name)).unwrap();
    assert!(
        cfg.contains("backend = \"btrfs\""),
        "auto did not pick btrfs: {cfg}"
    );
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let o = env.exec(
        &name,
        "dd if=/dev/zero of=/root/big bs=1M count=400 2>&1; sync; ls -l /root/big",
    );
    assert!(
        text(&o).contains("Disk quota exceeded"),
        "a write past the quota group limit went through: {}",
        text(&o)
    );
    let st = text(&env.vserver(&name, &["status"]));
    assert!(st.contains("Disk:") && st.contains("200"), "{st}");
    // A subvolume of its own would be outside the quota group: the guest cannot make one.
    let o = env.exec(&name, "btrfs subvolume create /root/sub");
    assert!(
        !o.status.success(),
        "a guest made a subvolume: {}",
        text(&o)
    );
    assert!(!lfs.root(&name).join("root/sub").exists());
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
}

#[test]
fn project_quota_limits_a_guest_df_shows_it_and_it_cannot_escape_it() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("qproj", 1);
    for (i, fstype) in ["ext4", "xfs"].into_iter().enumerate() {
        let mkfs: &[&str] = if fstype == "ext4" {
            &["-O", "project,quota"]
        } else {
            &[]
        };
        let lfs = match LoopFs::with_options(&env, fstype, 1 << 30, mkfs, "prjquota") {
            Ok(l) => l,
            Err(e) if !in_vm_lane() => {
                eprintln!("skipped: this kernel cannot mount {fstype} with project quotas ({e}); scripts/vm-lane.sh runs this test");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let name = format!("{}{fstype}", env.name);
        let xid = env.xid + i as u32;
        let root = lfs.root(&name);
        env.guests.push(name.clone());
        let x = xid.to_string();
        let o = env.vserver(
            &name,
            &[
                "build",
                "-m",
                "host",
                "--initstyle",
                "builtin",
                "--context",
                &x,
                "--rootdir",
                root.to_str().unwrap(),
                "--disk-size",
                "200M",
            ],
        );
        if !o.status.success() && !in_vm_lane() && text(&o).contains("without project quotas") {
            eprintln!("skipped: no project quotas on this kernel: {}", text(&o));
            return;
        }
        assert_ok(&o, &format!("build on {fstype} with a project quota"));
        let p = env.config_path(&name);
        let cfg = std::fs::read_to_string(&p).unwrap();
        assert!(cfg.contains("backend = \"project\""), "{cfg}");
        std::fs::write(
            &p,
            cfg.replace("size = \"200M\"", "size = \"200M\"\ninodes = 20000"),
        )
        .unwrap();
        assert_eq!(projid(&root.join("etc/hostname")), xid);
        assert_ok(&env.vserver(&name, &["start"]), "start");
        // df inside shows the limit, not the file system.
        let o = env.exec(&name, "df -k / | tail -1");
        let kib: u64 = text(&o)
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("df: {}", text(&o)));
        assert!(
            (190_000..=210_000).contains(&kib),
            "df inside shows {kib} KiB, not the 200M quota ({fstype})"
        );
        let o = env.exec(
            &name,
            "dd if=/dev/zero of=/root/big bs=1M count=400 2>&1; sync",
        );
        assert!(
            text(&o).contains("Disk quota exceeded") || text(&o).contains("No space left"),
            "a write past the project quota went through on {fstype}: {}",
            text(&o)
        );
        assert_eq!(
            projid(&root.join("root/big")),
            xid,
            "new files join the project"
        );
        let o = env.exec(
            &name,
            "rm -f /root/big; i=0; while [ $i -lt 30000 ]; do printf '' > /root/f$i 2>/dev/null || break; i=$((i+1)); done; echo $i",
        );
        let made: u64 = String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("file count: {}", text(&o)));
        assert!(
            made < 20_000,
            "{made} files made past an inode limit of 20000 on {fstype}"
        );
        // The owner may not move its files out of the project, nor clear the inherit flag.
        let o = env.exec(
            &name,
            "python3 -c \"import fcntl, os, struct\n\
             fd = os.open('/root/f1', os.O_RDONLY)\n\
             b = bytearray(28); fcntl.ioctl(fd, 0x801c581f, b)\n\
             struct.pack_into('I', b, 12, 0); fcntl.ioctl(fd, 0x401c5820, b)\"",
        );
        assert!(
            !o.status.success(),
            "the guest changed a project id: {}",
            text(&o)
        );
        assert_eq!(projid(&root.join("root/f1")), xid);
        let o = env.exec(&name, "chattr -P /root");
        assert!(
            !o.status.success(),
            "the guest cleared the inherit flag: {}",
            text(&o)
        );
        let st = text(&env.vserver(&name, &["status"]));
        assert!(st.contains("Disk:") && st.contains("inodes"), "{st}");
        assert_ok(&env.vserver(&name, &["stop"]), "stop");
        assert_ok(&env.vserver(&name, &["delete", "--force"]), "delete");
        drop(lfs);
    }
}
