//! The services a guest built from the host starts: those a fresh server of the distribution
//! starts, never the host's own.
//!
//! `build -m host` copies the host's `/etc`, and with it what the host enabled: its container
//! managers, databases, LXCFS. This module resets the guest's copy:
//!
//! - A service stays enabled when the package that ships its unit file (or `/etc/init.d`
//!   script) has Debian priority `required`, `important` or `standard` (what every Debian
//!   server installs), or is one of [`BASELINE_PACKAGES`] (the ssh server, cron, a syslog
//!   daemon). Everything else the host enabled is disabled in the guest: systemd's enablement
//!   symlinks (`*.wants/`, `*.requires/`, `*.upholds/`, aliases) are removed, as
//!   `systemctl disable` does; sysv `S` links become `K` links, as `update-rc.d NAME disable`
//!   does. Masks (links to `/dev/null`) are kept. Unit files are not touched, so `systemctl
//!   enable NAME` (or `update-rc.d NAME enable`) inside the guest turns one back on.
//! - The baseline services (`ssh`, `cron`, `rsyslog`, `syslog-ng`) are enabled in the guest
//!   when the host has them installed, even if the host disabled them for itself: systemd
//!   links made from the unit's `[Install]` section (`WantedBy=`, `RequiredBy=`, `Alias=`),
//!   sysv `K` links in runlevels 2-5 turned back into `S` links.
//!
//! Package ownership and priorities come from dpkg-query(1). Without dpkg (a host that is not
//! Debian-like), a unit is kept when its name is one of the baseline services or systemd's own
//! (`systemd-*`, `getty@`, `console-getty`, `dbus`, targets).

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Packages whose services a guest keeps whatever their priority: the ssh server, cron and a
/// syslog daemon ("ssh, cron, syslog where installed").
pub const BASELINE_PACKAGES: &[&str] = &[
    "openssh-server",
    "cron",
    "cronie",
    "rsyslog",
    "syslog-ng-core",
];

/// Debian priorities of the packages every server has installed.
const SERVER_PRIORITIES: &[&str] = &["required", "important", "standard"];

/// The baseline services enabled in every host-built guest where installed: (systemd unit,
/// sysv script).
const BASELINE_SERVICES: &[(&str, &str)] = &[
    ("ssh.service", "ssh"),
    ("cron.service", "cron"),
    ("rsyslog.service", "rsyslog"),
    ("syslog-ng.service", "syslog-ng"),
];

/// Subdirectories of `/etc/systemd/system` whose symlinks enable units.
const ENABLE_DIRS: &[&str] = &[".wants", ".requires", ".upholds"];

/// What [`reset_host_services`] did, by service name (`.service` left off).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ServiceReport {
    /// Services the host enabled that the guest does not start.
    pub disabled: BTreeSet<String>,
    /// Baseline services enabled in the guest that the host had not enabled.
    pub enabled: BTreeSet<String>,
}

/// Who owns the files in question, and with which priority.
pub trait Owners {
    /// Whether the service whose unit file or init script is `file` (a host path) is kept.
    fn keeps(&self, file: &Path, unit: &str) -> bool;
}

/// Owners from the host's dpkg database (dpkg-query(1)), or by name where there is none.
pub struct DpkgOwners {
    owner: HashMap<PathBuf, String>,
    priority: HashMap<String, String>,
    have_dpkg: bool,
}

impl DpkgOwners {
    /// Ask dpkg-query, in two runs, for the owners of `files` and every package's priority.
    /// Without dpkg-query, or when it fails, [`Owners::keeps`] decides by name.
    pub fn query(files: &[PathBuf]) -> DpkgOwners {
        let mut me = DpkgOwners {
            owner: HashMap::new(),
            priority: HashMap::new(),
            have_dpkg: false,
        };
        let Ok(out) = Command::new("dpkg-query")
            .args(["-W", "-f", "${Package}\t${Priority}\n"])
            .output()
        else {
            return me;
        };
        if !out.status.success() {
            return me;
        }
        me.have_dpkg = true;
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((p, pr)) = l.split_once('\t') {
                me.priority.insert(p.to_string(), pr.to_string());
            }
        }
        // dpkg knows each file under the path its package shipped it at: with a merged /usr,
        // /lib/... or /usr/lib/...; ask for both.
        let mut ask: Vec<PathBuf> = Vec::new();
        for f in files {
            ask.push(f.clone());
            if let Some(alias) = usr_alias(f) {
                ask.push(alias);
            }
        }
        if ask.is_empty() {
            return me;
        }
        // Exit status 1 names the paths no package owns; the others are still printed.
        if let Ok(out) = Command::new("dpkg-query").arg("-S").args(&ask).output() {
            for l in String::from_utf8_lossy(&out.stdout).lines() {
                if l.starts_with("diversion ") {
                    continue;
                }
                if let Some((pkgs, path)) = l.split_once(": ") {
                    let pkg = pkgs.split(", ").next().unwrap_or("");
                    let pkg = pkg.split(':').next().unwrap_or(pkg);
                    let path = PathBuf::from(path);
                    me.owner.insert(path.clone(), pkg.to_string());
                    if let Some(alias) = usr_alias(&path) {
                        me.owner.entry(alias).or_insert_with(|| pkg.to_string());
                    }
                }
            }
        }
        me
    }
}

impl Owners for DpkgOwners {
    fn keeps(&self, file: &Path, unit: &str) -> bool {
        if !self.have_dpkg {
            return kept_by_name(unit);
        }
        let Some(pkg) = self.owner.get(file) else {
            // A unit of the host's administrator (in /etc), or of no package.
            return false;
        };
        kept_package(pkg, self.priority.get(pkg).map(String::as_str))
    }
}

/// Whether a service of package `pkg` with Debian priority `priority` is kept in a guest.
pub fn kept_package(pkg: &str, priority: Option<&str>) -> bool {
    BASELINE_PACKAGES.contains(&pkg) || priority.is_some_and(|p| SERVER_PRIORITIES.contains(&p))
}

/// Whether a unit is kept by its name alone (hosts without dpkg).
pub fn kept_by_name(unit: &str) -> bool {
    let base = unit.split_once('@').map_or(unit, |(b, _)| b);
    let base = base.strip_suffix(".service").unwrap_or(base);
    unit.ends_with(".target")
        || base.starts_with("systemd-")
        || base.starts_with("dbus")
        || ["getty", "console-getty", "serial-getty"].contains(&base)
        || BASELINE_SERVICES
            .iter()
            .any(|(u, s)| *u == unit || *s == base || u.strip_suffix(".service") == Some(base))
        || ["sshd", "crond", "syslog"].contains(&base)
}

/// `/lib/x` for `/usr/lib/x` and the other way round (the same file with a merged /usr).
fn usr_alias(p: &Path) -> Option<PathBuf> {
    let s = p.to_str()?;
    if let Some(rest) = s.strip_prefix("/usr/lib/") {
        Some(PathBuf::from(format!("/lib/{rest}")))
    } else {
        s.strip_prefix("/lib/")
            .map(|rest| PathBuf::from(format!("/usr/lib/{rest}")))
    }
}

/// One enablement symlink in the guest's `/etc`.
#[derive(Debug)]
struct Link {
    /// The link itself, in the guest tree.
    path: PathBuf,
    /// The unit or script it enables (the link's name without a sysv `SNN`/`KNN` prefix).
    unit: String,
    /// The unit file or script it points at, as a host path (the guest's /usr is the host's).
    file: PathBuf,
}

/// Enablement symlinks under `etc/systemd/system` of `root`: aliases at the top and the links
/// in `*.wants`, `*.requires`, `*.upholds`. Masks (links to /dev/null) are left out.
fn systemd_links(root: &Path) -> Vec<Link> {
    let base = root.join("etc/systemd/system");
    let mut out = Vec::new();
    let mut visit = |dir: &Path, host_dir: &Path| {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_symlink() {
                continue;
            }
            let Ok(t) = fs::read_link(e.path()) else {
                continue;
            };
            let file = if t.is_absolute() { t } else { host_dir.join(t) };
            if file == Path::new("/dev/null") {
                continue;
            }
            out.push(Link {
                path: e.path(),
                unit: e.file_name().to_string_lossy().into_owned(),
                file,
            });
        }
    };
    let host_base = Path::new("/etc/systemd/system");
    visit(&base, host_base);
    if let Ok(rd) = fs::read_dir(&base) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if ENABLE_DIRS.iter().any(|s| name.ends_with(s))
                && e.file_type().is_ok_and(|t| t.is_dir())
            {
                visit(&e.path(), &host_base.join(&name));
            }
        }
    }
    out
}

/// The sysv start links (`etc/rc[0-6S].d/SNNname`) of `root`, pointing at `/etc/init.d/name`.
fn sysv_start_links(root: &Path) -> Vec<Link> {
    let mut out = Vec::new();
    for lvl in ["0", "1", "2", "3", "4", "5", "6", "S"] {
        let dir = root.join(format!("etc/rc{lvl}.d"));
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(script) = sysv_script(&name, 'S') else {
                continue;
            };
            out.push(Link {
                path: e.path(),
                unit: script.to_string(),
                file: Path::new("/etc/init.d").join(script),
            });
        }
    }
    out
}

/// The script name of a sysv link `SNNname` (or `KNNname` for `kind` 'K').
fn sysv_script(link: &str, kind: char) -> Option<&str> {
    let rest = link.strip_prefix(kind)?;
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    (digits == 2 && rest.len() > 2).then(|| &rest[2..])
}

/// The display name of a unit: `ssh` for `ssh.service`, `getty@tty1` for `getty@tty1.service`.
fn service_name(unit: &str) -> String {
    unit.strip_suffix(".service").unwrap_or(unit).to_string()
}

/// Reset the services of the host-built guest at `root` (its `/etc` a fresh copy of the
/// host's): disable the host's own, keep and enable the baseline (see the module doc).
/// `owners` decides which services are kept ([`DpkgOwners::query`] for real builds).
///
/// Errors: a link that cannot be removed, renamed or made, naming its path.
pub fn reset_host_services(root: &Path, owners: &dyn Owners) -> Result<ServiceReport, String> {
    let mut report = ServiceReport::default();
    let units = systemd_links(root);
    for l in &units {
        if !owners.keeps(&l.file, &l.unit) {
            fs::remove_file(&l.path).map_err(|e| format!("remove {}: {e}", l.path.display()))?;
            report.disabled.insert(service_name(&l.unit));
        }
    }
    for l in sysv_start_links(root) {
        if !owners.keeps(&l.file, &l.unit) {
            let name = l.path.file_name().unwrap_or_default().to_string_lossy();
            let to = l.path.with_file_name(format!("K{}", &name[1..]));
            fs::rename(&l.path, &to).map_err(|e| format!("rename {}: {e}", l.path.display()))?;
            report.disabled.insert(l.unit.clone());
        }
    }
    for (unit, script) in BASELINE_SERVICES {
        if enable_systemd_unit(root, unit)? | enable_sysv_script(root, script)? {
            report.enabled.insert(service_name(unit));
        }
    }
    // A service kept under another link name (an alias) is not disabled.
    report.disabled.retain(|s| !report.enabled.contains(s));
    Ok(report)
}

/// [`reset_host_services`] with the host's dpkg database deciding (see [`DpkgOwners`]).
///
/// Errors: as [`reset_host_services`].
pub fn reset_host_services_by_dpkg(root: &Path) -> Result<ServiceReport, String> {
    let files: Vec<PathBuf> = systemd_links(root)
        .into_iter()
        .chain(sysv_start_links(root))
        .map(|l| l.file)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    reset_host_services(root, &DpkgOwners::query(&files))
}

/// The host's unit file of `unit` (the guest shares the host's /usr).
fn host_unit_file(unit: &str) -> Option<PathBuf> {
    ["/lib/systemd/system", "/usr/lib/systemd/system"]
        .iter()
        .map(|d| Path::new(d).join(unit))
        .find(|p| p.is_file())
}

/// The `WantedBy=`, `RequiredBy=` and `Alias=` values of a unit file's `[Install]` section.
pub fn install_section(text: &str) -> (Vec<(String, &'static str)>, Vec<String>) {
    let mut deps = Vec::new();
    let mut aliases = Vec::new();
    let mut in_install = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_install = line == "[Install]";
            continue;
        }
        if !in_install {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let dir = match k.trim() {
            "WantedBy" => Some(".wants"),
            "RequiredBy" => Some(".requires"),
            "UpheldBy" => Some(".upholds"),
            "Alias" => None,
            _ => continue,
        };
        for v in v.split_whitespace() {
            match dir {
                Some(d) => deps.push((v.to_string(), d)),
                None => aliases.push(v.to_string()),
            }
        }
    }
    (deps, aliases)
}

/// Enable `unit` in the guest as `systemctl enable` would, when the host has its unit file and
/// the guest has neither a link to it nor a mask. Returns whether it made links.
fn enable_systemd_unit(root: &Path, unit: &str) -> Result<bool, String> {
    let Some(file) = host_unit_file(unit) else {
        return Ok(false);
    };
    let base = root.join("etc/systemd/system");
    if fs::symlink_metadata(base.join(unit)).is_ok()
        || systemd_links(root)
            .iter()
            .any(|l| l.file.file_name() == file.file_name())
    {
        // Masked, aliased over, or enabled already.
        return Ok(false);
    }
    let text = fs::read_to_string(&file).map_err(|e| format!("read {}: {e}", file.display()))?;
    let (deps, aliases) = install_section(&text);
    let mut made = false;
    for (target, suffix) in deps {
        if target.contains('/') {
            continue;
        }
        let dir = base.join(format!("{target}{suffix}"));
        fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let link = dir.join(unit);
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(&file, &link)
                .map_err(|e| format!("symlink {}: {e}", link.display()))?;
            made = true;
        }
    }
    for a in aliases {
        if a.contains('/') {
            continue;
        }
        let link = base.join(&a);
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(&file, &link)
                .map_err(|e| format!("symlink {}: {e}", link.display()))?;
        }
    }
    Ok(made)
}

/// Turn the `K` links of `script` in runlevels 2-5 back into `S` links, as `update-rc.d
/// enable` does, where it has no `S` link there. Returns whether it renamed any.
fn enable_sysv_script(root: &Path, script: &str) -> Result<bool, String> {
    if fs::symlink_metadata(root.join("etc/init.d").join(script)).is_err() {
        return Ok(false);
    }
    let mut made = false;
    for lvl in 2..=5 {
        let dir = root.join(format!("etc/rc{lvl}.d"));
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        let names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if names.iter().any(|n| sysv_script(n, 'S') == Some(script)) {
            continue;
        }
        for n in names.iter().filter(|n| sysv_script(n, 'K') == Some(script)) {
            let from = dir.join(n);
            let to = dir.join(format!("S{}", &n[1..]));
            fs::rename(&from, &to).map_err(|e| format!("rename {}: {e}", from.display()))?;
            made = true;
        }
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps what a list names.
    struct Keep(&'static [&'static str]);
    impl Owners for Keep {
        fn keeps(&self, _file: &Path, unit: &str) -> bool {
            self.0.contains(&unit)
        }
    }

    #[test]
    fn priorities_and_baseline() {
        assert!(kept_package("systemd", Some("important")));
        assert!(kept_package("man-db", Some("standard")));
        assert!(kept_package("openssh-server", Some("optional")));
        assert!(kept_package("rsyslog", Some("optional")));
        assert!(!kept_package("postgresql-common", Some("optional")));
        assert!(!kept_package("containerd", Some("optional")));
        assert!(!kept_package("lxc", None));
        assert!(kept_by_name("ssh.service"));
        assert!(kept_by_name("sshd.service"));
        assert!(kept_by_name("getty@tty1.service"));
        assert!(kept_by_name("systemd-timesyncd.service"));
        assert!(kept_by_name("remote-fs.target"));
        assert!(!kept_by_name("postgresql.service"));
        assert!(!kept_by_name("lxc-net.service"));
    }

    #[test]
    fn install_sections() {
        let (deps, aliases) = install_section(
            "[Unit]\nWantedBy=nope.target\n[Service]\nExecStart=/x\n\n[Install]\n\
             WantedBy=multi-user.target graphical.target\nRequiredBy=a.target\nAlias=sshd.service\n",
        );
        assert_eq!(
            deps,
            vec![
                ("multi-user.target".to_string(), ".wants"),
                ("graphical.target".to_string(), ".wants"),
                ("a.target".to_string(), ".requires"),
            ]
        );
        assert_eq!(aliases, vec!["sshd.service".to_string()]);
        assert_eq!(sysv_script("S01ssh", 'S'), Some("ssh"));
        assert_eq!(sysv_script("K01ssh", 'S'), None);
        assert_eq!(sysv_script("S1x", 'S'), None);
        assert_eq!(sysv_script("README", 'S'), None);
    }

    #[test]
    fn host_links_disabled_and_masks_kept() {
        let t = std::env::temp_dir().join(format!("vs-services-{}", std::process::id()));
        let _ = fs::remove_dir_all(&t);
        let sys = t.join("etc/systemd/system");
        fs::create_dir_all(sys.join("multi-user.target.wants")).unwrap();
        fs::create_dir_all(t.join("etc/rc2.d")).unwrap();
        let ln = |target: &str, link: PathBuf| std::os::unix::fs::symlink(target, link).unwrap();
        ln(
            "/lib/systemd/system/postgresql.service",
            sys.join("multi-user.target.wants/postgresql.service"),
        );
        ln(
            "/lib/systemd/system/e2scrub_reap.service",
            sys.join("multi-user.target.wants/e2scrub_reap.service"),
        );
        ln("/dev/null", sys.join("lxcfs.service"));
        ln("../init.d/lxc", t.join("etc/rc2.d/S01lxc"));
        ln("../init.d/dbus", t.join("etc/rc2.d/S01dbus"));
        let r = reset_host_services(&t, &Keep(&["e2scrub_reap.service", "dbus"])).unwrap();
        assert!(r.disabled.contains("postgresql") && r.disabled.contains("lxc"));
        assert!(!sys
            .join("multi-user.target.wants/postgresql.service")
            .exists());
        assert!(
            fs::symlink_metadata(sys.join("multi-user.target.wants/e2scrub_reap.service")).is_ok()
        );
        assert!(fs::symlink_metadata(sys.join("lxcfs.service")).is_ok());
        assert!(fs::symlink_metadata(t.join("etc/rc2.d/K01lxc")).is_ok());
        assert!(fs::symlink_metadata(t.join("etc/rc2.d/S01dbus")).is_ok());
        fs::remove_dir_all(&t).unwrap();
    }
}
