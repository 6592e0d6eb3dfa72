//! `linux.resources.devices`: the device cgroup rules of a container, in order. On cgroup v1
//! they are written to `devices.deny`/`devices.allow`; on cgroup v2, which has no devices
//! controller, they become a BPF_PROG_TYPE_CGROUP_DEVICE program (see
//! [`crate::cgroup::devices`]).

use super::spec::DeviceRule;
use crate::cgroup::GuestCgroup;

/// One rule in the v1 file syntax: `c 1:3 rwm`, `a *:* rwm`.
pub fn v1_rule(r: &DeviceRule) -> String {
    let kind = r.kind.as_deref().unwrap_or("a");
    let num = |n: Option<i64>| {
        n.filter(|v| *v >= 0)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "*".into())
    };
    let access = r
        .access
        .as_deref()
        .filter(|a| !a.is_empty())
        .unwrap_or("rwm");
    if kind == "a" {
        format!("a *:* {access}")
    } else {
        format!("{kind} {}:{} {access}", num(r.major), num(r.minor))
    }
}

/// Deny every device, allow `devices` (config.json's `linux.devices`, but 5:1), apply `rules`
/// (which may deny those again), then allow the engine's /dev nodes, to `cg` in every hierarchy that controls devices. The
/// first denial makes the result independent of what the cgroup allowed before (a cgroup
/// made by someone else, an earlier `update`): an allowlist, which a config opens up with an
/// `allow` rule for all devices (privileged containers).
///
/// Errors: the file or program step that failed.
pub fn apply(
    cg: &GuestCgroup,
    rules: &[DeviceRule],
    devices: &[super::spec::Device],
) -> Result<(), String> {
    let mut all = vec![DeviceRule {
        allow: false,
        kind: Some("a".into()),
        major: None,
        minor: None,
        access: Some("rwm".into()),
    }];
    // `linux.devices` nodes first, so that the config's own rules (`resources.devices`) have
    // the last word on them (a config denying a device it also lists keeps it denied, as with
    // runc); the host's system console (5:1) is never allowed this way.
    let listed = |d: &super::spec::Device, access: &str| DeviceRule {
        allow: true,
        kind: Some(if d.kind == "u" {
            "c".into()
        } else {
            d.kind.clone()
        }),
        major: Some(d.major),
        minor: Some(d.minor),
        access: Some(access.into()),
    };
    for d in devices
        .iter()
        .filter(|d| d.kind != "p")
        .filter(|d| !(d.kind != "b" && d.major == 5 && d.minor == 1))
    {
        all.push(listed(d, "rwm"));
    }
    all.extend_from_slice(rules);
    // Making the listed nodes (mknod, no read or write) stays allowed whatever the rules say:
    // the runtime makes them in the init, inside the cgroup.
    for d in devices.iter().filter(|d| d.kind != "p") {
        all.push(listed(d, "m"));
    }
    // The nodes the engine makes in every /dev, allowed after the config's rules (as runc does).
    for (major, minor) in crate::cgroup::devices::GUEST_CHAR_DEVICES {
        all.push(DeviceRule {
            allow: true,
            kind: Some("c".into()),
            major: Some(i64::from(*major)),
            minor: minor.map(i64::from),
            access: Some("rwm".into()),
        });
    }
    let rules = all.as_slice();
    for dir in cg.dirs() {
        let allow = dir.join("devices.allow");
        if !allow.exists() {
            continue;
        }
        // v1 refuses a rule for all devices (a change of the default) on a cgroup with
        // children (EINVAL): a container's cgroup above the leaf its processes live in (see
        // GuestCgroup::with_process_leaf) at `update`, or a leaf below which the container made
        // cgroups. Such a cgroup keeps its default; the leaf, written after it, gets the whole
        // list, and a child is never allowed more than its parent.
        let has_children = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            })
            .unwrap_or(false);
        let for_all = |r: &DeviceRule| matches!(r.kind.as_deref(), None | Some("a"));
        for r in rules.iter().filter(|r| !(has_children && for_all(r))) {
            let f = if r.allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            // A child removed just before (an old leaf) stays online for the kernel until its
            // removal completes (RCU): a rule for all devices is refused meanwhile.
            let mut tries = 0;
            loop {
                match std::fs::write(dir.join(f), v1_rule(r)) {
                    Err(e)
                        if for_all(r) && e.raw_os_error() == Some(libc::EINVAL) && tries < 100 =>
                    {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    res => {
                        res.map_err(|e| {
                            format!("linux.resources.devices: {} {}: {e}", f, v1_rule(r))
                        })?;
                        break;
                    }
                }
            }
        }
    }
    // A leaf is governed by the program on the container's cgroup above it.
    if let Some(d) = cg.unified_dir().filter(|_| !cg.is_leaf()) {
        let v2: Vec<crate::cgroup::devices::DeviceRule> = rules.iter().map(to_bpf).collect();
        crate::cgroup::devices::attach_rules(d, &v2)
            .map_err(|e| format!("linux.resources.devices: {e}"))?;
    }
    Ok(())
}

fn to_bpf(r: &DeviceRule) -> crate::cgroup::devices::DeviceRule {
    let num = |n: Option<i64>| n.filter(|v| *v >= 0).map(|v| v as u32);
    let access = r
        .access
        .as_deref()
        .filter(|a| !a.is_empty())
        .unwrap_or("rwm");
    crate::cgroup::devices::DeviceRule {
        allow: r.allow,
        kind: match r.kind.as_deref() {
            Some("c") => Some('c'),
            Some("b") => Some('b'),
            _ => None,
        },
        major: num(r.major),
        minor: num(r.minor),
        access: access.chars().fold(0, |a, c| {
            a | match c {
                'm' => 1,
                'r' => 2,
                'w' => 4,
                _ => 0,
            }
        }),
    }
}
