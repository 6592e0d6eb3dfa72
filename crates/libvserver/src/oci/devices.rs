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

/// Deny every device, apply `rules`, then allow the engine's /dev nodes and `devices`
/// (config.json's `linux.devices`), to `cg` in every hierarchy that controls devices. The
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
    all.extend_from_slice(rules);
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
    for d in devices.iter().filter(|d| d.kind != "p") {
        all.push(DeviceRule {
            allow: true,
            kind: Some(if d.kind == "u" {
                "c".into()
            } else {
                d.kind.clone()
            }),
            major: Some(d.major),
            minor: Some(d.minor),
            access: Some("rwm".into()),
        });
    }
    let rules = all.as_slice();
    for dir in cg.dirs() {
        let allow = dir.join("devices.allow");
        if !allow.exists() {
            continue;
        }
        for r in rules {
            let f = if r.allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            std::fs::write(dir.join(f), v1_rule(r))
                .map_err(|e| format!("linux.resources.devices: {} {}: {e}", f, v1_rule(r)))?;
        }
    }
    if let Some(d) = cg.unified_dir() {
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
