//! util-vserver's configurations, read into the same [`GuestConfig`] as NAME.toml:
//! - the legacy shell file `CONFIG/NAME.conf` (`S_CONTEXT=`, `IPROOT=`, ...), root
//!   `/vservers/NAME` (or `ROOTBASE/NAME` when that does not exist);
//! - the directory layout `CONFIG/NAME/` (one value per file: `context`, `uts/nodename`,
//!   `interfaces/*/ip`, `bcapabilities`, `apps/init/style`, ...).
//!
//! Both shared the host's network stack with the guest restricted to its addresses, so their
//! addresses become `classic` interfaces. Every key without an equivalent gives one warning and
//! is otherwise ignored; a value that cannot be read is an error naming the file (and line).
//! `vserver NAME convert-config` writes the result as NAME.toml. Reference: util-vserver's
//! documentation of both formats.

use super::{ConfigError, GuestConfig, InitStyle, InterfaceConfig, NetMode, StrList};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A legacy configuration read into the engine's form.
#[derive(Debug, Clone)]
pub struct Legacy {
    /// The equivalent configuration.
    pub config: GuestConfig,
    /// One line per key without an equivalent (or with a partial one).
    pub warnings: Vec<String>,
    /// `CONFIG/NAME.conf` or `CONFIG/NAME/`.
    pub source: PathBuf,
}

/// Where guest `name` has a legacy configuration: `NAME.conf`, or a `NAME/` directory holding
/// `context`, `vdir` or `uts/` (a `NAME/` with only `scripts/` is not one).
pub fn find(config_dir: &Path, name: &str) -> Option<PathBuf> {
    let conf = config_dir.join(format!("{name}.conf"));
    if conf.is_file() {
        return Some(conf);
    }
    let dir = config_dir.join(name);
    ["context", "vdir", "uts", "name"]
        .iter()
        .any(|f| dir.join(f).symlink_metadata().is_ok())
        .then_some(dir)
}

/// A stable context id for a guest whose configuration names none (util-vserver let the kernel
/// choose one): in the dynamic range 49152-65534, from the guest's name (FNV-1a).
pub fn dynamic_xid(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let span = super::XID_DYNAMIC_END - super::XID_DYNAMIC_START + 1;
    super::XID_DYNAMIC_START + h % span
}

fn invalid(path: &Path, line: usize, key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        key: key.to_string(),
        message: message.into(),
    }
}

fn base_config(name: &str) -> GuestConfig {
    let mut c: GuestConfig =
        toml::from_str(&format!("context = {}", dynamic_xid(name))).expect("minimal config");
    c.hostname = Some(name.to_string());
    c
}

/// A capability list (util-vserver: `CAP_` optional, `!` or `~` removes) into add/drop.
/// Errors: a word that is not a capability (a privilege list is never guessed at).
fn caps_into(c: &mut GuestConfig, items: &[String]) -> Result<(), String> {
    for it in items {
        let (drop, cap) = match it.strip_prefix(['!', '~']) {
            Some(rest) => (true, rest),
            None => (false, it.as_str()),
        };
        match crate::security::caps::parse_cap(cap) {
            Ok(_) if drop => c.capabilities.drop.push(cap.to_string()),
            Ok(_) => c.capabilities.add.push(cap.to_string()),
            Err(_) => return Err(format!("'{it}' is not a capability")),
        }
    }
    Ok(())
}

/// One line of a NAME.conf as the shell would read a plain assignment: `[export] KEY=VALUE`,
/// VALUE made of unquoted, `'single'` and `"double"` quoted parts; after it only whitespace and
/// a `#` comment may follow. Ok(None) for blank and comment lines.
/// Errors: anything else (shell code, `$` expansions, command substitution, unbalanced quotes),
/// which only a shell could evaluate.
pub fn shell_assignment(raw: &str) -> Result<Option<(String, String)>, String> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
    let not_plain = || {
        String::from("not a plain KEY=VALUE assignment (shell code is not evaluated; convert this file by hand)")
    };
    let (k, rest) = line.split_once('=').ok_or_else(not_plain)?;
    if k.is_empty()
        || !k.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        || k.starts_with(|ch: char| ch.is_ascii_digit())
    {
        return Err(not_plain());
    }
    let mut value = String::new();
    let mut chars = rest.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(ch) = chars.next() {
        match (quote, ch) {
            (None, ch) if ch.is_whitespace() => {
                // The value ends at unquoted whitespace; only a comment may follow.
                let tail: String = chars.collect();
                let tail = tail.trim();
                if !tail.is_empty() && !tail.starts_with('#') {
                    return Err(not_plain());
                }
                break;
            }
            (None, '\'' | '"') => quote = Some(ch),
            (Some(q), ch) if ch == q => quote = None,
            (Some('\''), ch) => value.push(ch),
            (_, '$' | '`') => {
                return Err(format!(
                    "'{ch}' (a shell expansion) is not evaluated; write the value out"
                ))
            }
            (_, '\\') => {
                if let Some(next) = chars.next() {
                    value.push(next);
                }
            }
            (_, ch) => value.push(ch),
        }
    }
    if quote.is_some() {
        return Err(String::from("unbalanced quote"));
    }
    Ok(Some((k.to_string(), value)))
}

/// Parse `IP[/PREFIX|/MASK]` with a default prefix; a dotted mask becomes a prefix length.
fn addr_with_prefix(item: &str, default_prefix: Option<&str>) -> Option<String> {
    let (ip, pfx) = match item.split_once('/') {
        Some((ip, p)) => (ip, Some(p)),
        None => (item, default_prefix),
    };
    let ipa: std::net::IpAddr = ip.parse().ok()?;
    let full = if ipa.is_ipv4() { 32 } else { 128 };
    let prefix = match pfx {
        None => full,
        Some(p) => match p.parse::<u8>() {
            Ok(n) => n,
            Err(_) if ipa.is_ipv4() => {
                // A dotted mask: contiguous ones only.
                let m = u32::from(p.parse::<std::net::Ipv4Addr>().ok()?);
                let ones = m.leading_ones();
                if m.checked_shl(ones).unwrap_or(0) != 0 {
                    return None;
                }
                ones as u8
            }
            Err(_) => return None,
        },
    };
    Some(format!("{ipa}/{prefix}"))
}

/// Read `CONFIG/NAME.conf` (see the module documentation).
/// Errors: the file cannot be read; a value that must be a number or address is not.
pub fn load_conf(path: &Path, name: &str) -> Result<Legacy, ConfigError> {
    load_conf_with_root(path, name, Path::new("/vservers"))
}

/// [`load_conf`] with legacy roots under `vservers_dir` (util-vserver's `/vservers`): the root is
/// `vservers_dir/NAME` when that directory exists, else the default `ROOTBASE/NAME`.
pub fn load_conf_with_root(
    path: &Path,
    name: &str,
    vservers_dir: &Path,
) -> Result<Legacy, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut c = base_config(name);
    let legacy_root = vservers_dir.join(name);
    if legacy_root.is_dir() {
        c.root = Some(legacy_root);
    }
    c.init.style = InitStyle::Sysv;
    let mut warn = Vec::new();
    let mut vars: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let Some((k, v)) = shell_assignment(raw).map_err(|m| invalid(path, i + 1, "", m))? else {
            continue;
        };
        if let Some((first, _)) = vars.get(&k) {
            return Err(invalid(
                path,
                i + 1,
                &k,
                format!("assigned again (first on line {first}); convert this file by hand"),
            ));
        }
        vars.insert(k, (i + 1, v));
    }
    let words = |v: &str| -> Vec<String> { v.split_whitespace().map(String::from).collect() };
    let flags: Vec<String> = vars
        .get("S_FLAGS")
        .map(|(_, v)| words(v))
        .unwrap_or_default();
    let mut ordered: Vec<(&String, &(usize, String))> = vars.iter().collect();
    ordered.sort_by_key(|(_, (line, _))| *line);
    for (k, (line, v)) in ordered {
        let at = |m: String| invalid(path, *line, k, m);
        match k.as_str() {
            "S_CONTEXT" if !v.is_empty() => {
                c.context = v
                    .parse()
                    .map_err(|_| at(format!("'{v}' is not a context id")))?;
            }
            "S_CONTEXT" => {}
            "S_HOSTNAME" if !v.is_empty() && v != "none" => c.hostname = Some(v.clone()),
            "S_DOMAINNAME" if !v.is_empty() && v != "none" => c.domainname = Some(v.clone()),
            "S_HOSTNAME" | "S_DOMAINNAME" => {}
            "S_NICE" if !v.is_empty() => {
                c.limits.nice = Some(
                    v.parse()
                        .map_err(|_| at(format!("'{v}' is not a nice level")))?,
                );
            }
            "S_CAPS" => caps_into(&mut c, &words(v)).map_err(at)?,
            "ONBOOT" => {
                if v == "yes" {
                    c.mark.push(String::from("default"));
                }
            }
            "IPROOT" => {
                let dev = vars
                    .get("IPROOTDEV")
                    .map(|(_, d)| d.clone())
                    .filter(|d| !d.is_empty());
                let mask = vars.get("IPROOTMASK").map(|(_, m)| m.clone());
                for item in words(v) {
                    if item == "ALL" || item == "0.0.0.0" {
                        warn.push(format!(
                            "IPROOT={item} (every host address) has no equivalent; the guest gets \
                             loopback only"
                        ));
                        continue;
                    }
                    let (idev, ip) = match item.split_once(':') {
                        Some((d, ip)) if !d.contains('.') && ip.contains('.') => {
                            (Some(d.to_string()), ip)
                        }
                        _ => (None, item.as_str()),
                    };
                    let a = addr_with_prefix(ip, mask.as_deref())
                        .ok_or_else(|| at(format!("'{item}' is not an address")))?;
                    c.interface.push(InterfaceConfig {
                        mode: NetMode::Classic,
                        address: StrList(vec![a]),
                        bridge: super::default_bridge(),
                        dev: idev.or_else(|| dev.clone()),
                        gateway: StrList::default(),
                        name: None,
                        nat: false,
                        mtu: None,
                    });
                }
            }
            "IPROOTDEV" | "IPROOTMASK" => {}
            "IPROOTBCAST" => warn.push(String::from(
                "IPROOTBCAST: the broadcast address follows the prefix; ignored",
            )),
            "S_FLAGS" => {
                for f in &flags {
                    match f.as_str() {
                        "fakeinit" => c.init.style = InitStyle::Plain,
                        "lock" | "private" | "namespace" | "hideinfo" | "nproc" | "ulimit" => {}
                        other => {
                            warn.push(format!("S_FLAGS: '{other}' has no equivalent; ignored"))
                        }
                    }
                }
            }
            "ULIMIT" => {
                let w = words(v);
                let mut i = 0;
                while i < w.len() {
                    match (w[i].as_str(), w.get(i + 1)) {
                        (o, Some(n)) if o.ends_with('u') => {
                            let n: u64 = n
                                .parse()
                                .map_err(|_| at(format!("'{n}' is not a process count")))?;
                            if flags.iter().any(|f| f == "nproc") {
                                c.limits.nproc = Some(n);
                            } else {
                                c.rlimits
                                    .insert("nproc".into(), super::RlimitValue::Number(n));
                            }
                            i += 2;
                        }
                        (o, Some(n)) if o.ends_with('n') => {
                            let n: u64 = n
                                .parse()
                                .map_err(|_| at(format!("'{n}' is not a file count")))?;
                            c.rlimits
                                .insert("nofile".into(), super::RlimitValue::Number(n));
                            i += 2;
                        }
                        ("-H" | "-S" | "-HS" | "-SH", _) => i += 1,
                        (o, _) => {
                            warn.push(format!("ULIMIT: '{o}' has no equivalent; ignored"));
                            i += 1;
                        }
                    }
                }
            }
            other => warn.push(format!("{other}: no equivalent; ignored")),
        }
    }
    Ok(Legacy {
        config: c,
        warnings: warn,
        source: path.to_path_buf(),
    })
}

/// Lines of a list file (comments and blank lines skipped).
fn lines_of(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn value_of(p: &Path) -> Option<String> {
    lines_of(p).into_iter().next()
}

/// The entries (files and directories) of `dir` relative to it, recursively, sorted.
fn entries(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let n = format!("{prefix}{}", e.file_name().to_string_lossy());
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir {
            entries(&e.path(), &format!("{n}/"), out);
        } else {
            out.push(n);
        }
    }
}

/// Read the directory layout `CONFIG/NAME/` (see the module documentation).
/// Errors: a value that must be a number or an address is not (naming the file).
pub fn load_dir(dir: &Path, name: &str) -> Result<Legacy, ConfigError> {
    let mut c = base_config(name);
    let mut warn = Vec::new();
    let mut files = Vec::new();
    entries(dir, "", &mut files);
    let num = |rel: &str| -> Result<Option<i64>, ConfigError> {
        let p = dir.join(rel);
        match value_of(&p) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| invalid(&p, 1, rel, format!("'{v}' is not a number"))),
        }
    };
    if let Some(x) = num("context")? {
        c.context = u32::try_from(x)
            .map_err(|_| invalid(&dir.join("context"), 1, "context", "out of range"))?;
    }
    if let Ok(root) = std::fs::read_link(dir.join("vdir")) {
        c.root = Some(if root.is_absolute() {
            root
        } else {
            dir.join(root)
        });
    }
    for f in ["uts/nodename", "hostname"] {
        if let Some(h) = value_of(&dir.join(f)) {
            c.hostname = Some(h);
        }
    }
    for f in ["uts/domainname", "domainname"] {
        if let Some(d) = value_of(&dir.join(f)) {
            c.domainname = Some(d);
        }
    }
    if let Some(n) = num("nice")? {
        c.limits.nice = Some(n as i32);
    }
    caps_into(&mut c, &lines_of(&dir.join("bcapabilities")))
        .map_err(|m| invalid(&dir.join("bcapabilities"), 0, "bcapabilities", m))?;
    c.disabled = dir.join("disabled").exists();
    if let Some(style) = value_of(&dir.join("apps/init/style")) {
        c.init.style = match style.as_str() {
            "sysv" | "gentoo" | "redhat" => InitStyle::Sysv,
            "plain" | "systemd" => InitStyle::Plain,
            "minit" => InitStyle::Builtin,
            other => {
                warn.push(format!(
                    "apps/init/style: '{other}' has no equivalent; using sysv"
                ));
                InitStyle::Sysv
            }
        };
    } else {
        c.init.style = InitStyle::Sysv;
    }
    if let Some(r) = num("apps/init/runlevel")? {
        c.init.runlevel = Some(r as u8);
    }
    c.mark = lines_of(&dir.join("apps/init/mark"));
    c.depends = lines_of(&dir.join("apps/init/depends"));
    if let Some(n) = num("rlimits/nproc")? {
        c.limits.nproc = Some(n as u64);
    }
    // Memory: rlimits/rss and rlimits/as are pages (4 KiB) for the whole guest; the cgroup
    // file is bytes (with a K/M/G suffix allowed, as the kernel reads it).
    const PAGE: i64 = 4096;
    let rss = num("rlimits/rss")?.filter(|n| *n > 0);
    let all = num("rlimits/as")?.filter(|n| *n > 0);
    if let Some(m) = value_of(&dir.join("cgroup/memory.limit_in_bytes")) {
        c.limits.memory = Some(m);
    } else if let Some(r) = rss {
        c.limits.memory = Some((r * PAGE).to_string());
    }
    if let Some(a) = all {
        // The whole address space: memory and swap together.
        match rss {
            Some(r) if a > r => c.limits.swap = Some(((a - r) * PAGE).to_string()),
            Some(_) => {}
            None if c.limits.memory.is_none() => c.limits.memory = Some((a * PAGE).to_string()),
            None => {}
        }
    }
    if let Some(sh) = num("cgroup/cpu.shares")?.filter(|n| *n > 0) {
        // cpu.shares 1024 is the default weight 100.
        c.limits.cpu_weight = Some(((sh * 100 / 1024).clamp(1, 10_000)) as u32);
    }
    // The CPU token bucket: fill-rate tokens every interval jiffies is that share of one CPU.
    let fill = num("sched/fill-rate")?.filter(|n| *n > 0);
    let interval = num("sched/interval")?.filter(|n| *n > 0);
    if let (Some(f), Some(i)) = (fill, interval) {
        let pct = (f as f64 / i as f64 * 100.0).clamp(1.0, 409_600.0);
        c.limits.cpu = Some(format!("{pct:.0}%"));
    }
    if dir.join("sched/tokens-max").exists() {
        warn.push(String::from(
            "sched/tokens-max: the bucket's burst has no equivalent (cpu is a steady cap); ignored",
        ));
    }
    // Disk limits: KiB and inodes of the guest's directory.
    if let Some(kib) = num("dlimits/0/space_total")?.filter(|n| *n > 0) {
        c.disk.size = Some(format!("{kib}K"));
    }
    if let Some(i) = num("dlimits/0/inodes_total")?.filter(|n| *n > 0) {
        c.disk.inodes = Some(i as u64);
    }
    // fstab: bind mounts of host directories become [[mount]]; file systems the engine makes
    // itself (proc, sysfs, devpts, tmpfs on /tmp) need nothing.
    for (i, line) in lines_of(&dir.join("fstab")).iter().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || f[0].starts_with('#') {
            continue;
        }
        let opts: Vec<&str> = f.get(3).map(|o| o.split(',').collect()).unwrap_or_default();
        let bind =
            f[2] == "none" && opts.iter().any(|o| *o == "bind" || *o == "rbind") || f[2] == "bind";
        if bind && f[0].starts_with('/') && f[1].starts_with('/') {
            c.mount.push(super::MountConfig {
                source: f[0].into(),
                target: f[1].into(),
                readonly: opts.contains(&"ro"),
            });
        } else if matches!(f[2], "proc" | "sysfs" | "devpts" | "tmpfs") {
        } else {
            warn.push(format!(
                "fstab line {}: '{line}' (not a bind of a host directory) has no equivalent; ignored",
                i + 1
            ));
        }
    }
    for f in lines_of(&dir.join("flags")) {
        if f != "virt_mem" && f != "virt_uptime" && f != "virt_cpu" && f != "virt_load" {
            warn.push(format!("flags: '{f}' has no equivalent; ignored"));
        }
    }
    // Interfaces: interfaces/<i>/ip, with defaults in interfaces/{dev,prefix,mask}.
    let ifdir = dir.join("interfaces");
    let def_dev = value_of(&ifdir.join("dev"));
    let def_pfx = value_of(&ifdir.join("prefix")).or_else(|| value_of(&ifdir.join("mask")));
    let mut ifaces: Vec<_> = std::fs::read_dir(&ifdir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.path())
        .collect();
    ifaces.sort();
    for i in ifaces {
        if i.join("disabled").exists() {
            continue;
        }
        let Some(ip) = value_of(&i.join("ip")) else {
            continue;
        };
        let pfx = value_of(&i.join("prefix"))
            .or_else(|| value_of(&i.join("mask")))
            .or_else(|| def_pfx.clone());
        let a = addr_with_prefix(&ip, pfx.as_deref())
            .ok_or_else(|| invalid(&i.join("ip"), 1, "ip", format!("'{ip}' is not an address")))?;
        let dev = if i.join("nodev").exists() {
            None
        } else {
            value_of(&i.join("dev")).or_else(|| def_dev.clone())
        };
        c.interface.push(InterfaceConfig {
            mode: NetMode::Classic,
            address: StrList(vec![a]),
            bridge: super::default_bridge(),
            dev,
            gateway: StrList::default(),
            name: None,
            nat: false,
            mtu: None,
        });
    }
    // ulimits/<res>[.hard|.soft]: per-process limits.
    for f in files.iter().filter_map(|f| f.strip_prefix("ulimits/")) {
        let res = f.split('.').next().unwrap_or(f);
        if let Some(v) = value_of(&dir.join("ulimits").join(f)) {
            let v = if v == "inf" {
                "unlimited".to_string()
            } else {
                v
            };
            match v.parse::<u64>() {
                Ok(n) => {
                    c.rlimits
                        .insert(res.to_string(), super::RlimitValue::Number(n));
                }
                Err(_) => {
                    c.rlimits
                        .insert(res.to_string(), super::RlimitValue::Text(v.clone()));
                }
            }
        }
    }
    let known = |f: &str| {
        matches!(
            f,
            "context"
                | "vdir"
                | "name"
                | "nice"
                | "bcapabilities"
                | "disabled"
                | "hostname"
                | "domainname"
                | "uts/nodename"
                | "uts/domainname"
                | "apps/init/style"
                | "apps/init/runlevel"
                | "apps/init/mark"
                | "apps/init/depends"
                | "rlimits/nproc"
                | "rlimits/rss"
                | "rlimits/as"
                | "cgroup/memory.limit_in_bytes"
                | "cgroup/cpu.shares"
                | "sched/fill-rate"
                | "sched/interval"
                | "sched/tokens-max"
                | "dlimits/0/space_total"
                | "dlimits/0/inodes_total"
                | "dlimits/0/directory"
                | "fstab"
                | "flags"
                | "run"
                | "cache"
        ) || f.starts_with("interfaces/")
            || f.starts_with("ulimits/")
            || f.starts_with("scripts/")
    };
    for f in files.iter().filter(|f| !known(f)) {
        warn.push(format!("{}: no equivalent; ignored", dir.join(f).display()));
    }
    Ok(Legacy {
        config: c,
        warnings: warn,
        source: dir.to_path_buf(),
    })
}

/// Load the legacy configuration of `name` in `config_dir`, if it has one, validated as
/// NAME.toml would be. Errors: as [`load_conf`] and [`load_dir`], and the validation's.
pub fn load(config_dir: &Path, name: &str) -> Option<Result<Legacy, ConfigError>> {
    let src = find(config_dir, name)?;
    let res = if src.is_dir() {
        load_dir(&src, name)
    } else {
        load_conf(&src, name)
    };
    Some(res.and_then(|l| {
        l.config.validate().map_err(|e| ConfigError::Invalid {
            path: l.source.clone(),
            line: 0,
            key: super::key_path_string(&e.path),
            message: e.message,
        })?;
        Ok(l)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_masks_and_dynamic_ids() {
        assert_eq!(addr_with_prefix("10.0.0.5", None).unwrap(), "10.0.0.5/32");
        assert_eq!(
            addr_with_prefix("10.0.0.5", Some("255.255.255.0")).unwrap(),
            "10.0.0.5/24"
        );
        assert_eq!(
            addr_with_prefix("10.0.0.5/16", Some("24")).unwrap(),
            "10.0.0.5/16"
        );
        assert!(addr_with_prefix("nonsense", None).is_none());
        assert!(addr_with_prefix("10.0.0.5", Some("255.255.0.255")).is_none());
        assert!(addr_with_prefix("fd00::5", Some("255.255.255.0")).is_none());
        assert_eq!(
            addr_with_prefix("10.0.0.5", Some("0.0.0.0")).unwrap(),
            "10.0.0.5/0"
        );
        let x = dynamic_xid("web1");
        assert!((super::super::XID_DYNAMIC_START..=super::super::XID_DYNAMIC_END).contains(&x));
        assert_eq!(x, dynamic_xid("web1"));
    }

    #[test]
    fn conf_values_and_errors_name_the_line() {
        let dir = std::env::temp_dir().join(format!("legacy-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("g.conf");
        std::fs::write(
            &p,
            "S_CONTEXT=42\nS_CAPS=\"CAP_NET_RAW !CAP_SYS_CHROOT\"\nULIMIT=\"-HS -u 100 -n 64\"\nS_FLAGS=\"nproc fakeinit sched\"\nIPROOT=\"eth9:10.1.1.1 10.2.2.2/16\"\nIPROOTMASK=255.255.255.0\n",
        )
        .unwrap();
        let l = load_conf_with_root(&p, "g", &dir).unwrap();
        let c = &l.config;
        assert_eq!(c.context, 42);
        assert_eq!(c.capabilities.add, ["CAP_NET_RAW"]);
        assert_eq!(c.capabilities.drop, ["CAP_SYS_CHROOT"]);
        assert_eq!(c.limits.nproc, Some(100));
        assert_eq!(c.init.style, InitStyle::Plain);
        assert_eq!(c.interface.len(), 2);
        assert_eq!(c.interface[0].address.0, ["10.1.1.1/24"]);
        assert_eq!(c.interface[0].dev.as_deref(), Some("eth9"));
        assert_eq!(c.interface[1].address.0, ["10.2.2.2/16"]);
        assert!(
            l.warnings.iter().any(|w| w.contains("'sched'")),
            "{:?}",
            l.warnings
        );
        // Comments, quoting and what only a shell could evaluate.
        let sa = |l: &str| shell_assignment(l);
        assert_eq!(
            sa("S_CAPS=\"CAP_NET_RAW\"  # CAP_SYS_ADMIN removed").unwrap(),
            Some(("S_CAPS".into(), "CAP_NET_RAW".into()))
        );
        assert_eq!(
            sa("export ONBOOT=yes # boot").unwrap(),
            Some(("ONBOOT".into(), "yes".into()))
        );
        assert_eq!(
            sa("X='a b'\"c\"d#e").unwrap(),
            Some(("X".into(), "a bcd#e".into()))
        );
        assert_eq!(sa("  # only a comment").unwrap(), None);
        for bad in [
            "S_CAPS=\"$S_CAPS CAP_X\"",
            "A=`id`",
            "if true; then",
            "A=b c",
            "A=\"x",
        ] {
            assert!(sa(bad).is_err(), "{bad}");
        }
        std::fs::write(&p, "S_CAPS=\"CAP_NET_RAW\"  # CAP_SYS_ADMIN\nS_CONTEXT=7\n").unwrap();
        let l = load_conf_with_root(&p, "g", &dir).unwrap();
        assert_eq!(l.config.capabilities.add, ["CAP_NET_RAW"]);
        std::fs::write(&p, "S_CAPS=\"CAP_NET_RAW CAP_NOPE\"\n").unwrap();
        assert!(
            load_conf_with_root(&p, "g", &dir).is_err(),
            "a bad capability is an error"
        );
        std::fs::write(&p, "S_CONTEXT=7\nS_CONTEXT=8\n").unwrap();
        let e = load_conf_with_root(&p, "g", &dir).unwrap_err().to_string();
        assert!(
            e.contains("g.conf:2") && e.contains("first on line 1"),
            "{e}"
        );
        std::fs::write(&p, "S_HOSTNAME=\"$(id)\"\nS_CONTEXT=abc\n").unwrap();
        let e = load_conf_with_root(&p, "g", &dir).unwrap_err().to_string();
        assert!(e.contains("g.conf:1"), "first bad line first: {e}");
        std::fs::write(&p, "S_CONTEXT=abc\n").unwrap();
        let e = load_conf_with_root(&p, "g", &dir).unwrap_err().to_string();
        assert!(e.contains("g.conf:1: key 'S_CONTEXT'"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
