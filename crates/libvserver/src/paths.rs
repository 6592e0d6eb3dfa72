//! Host paths of vserver: configuration directory, guest root base, runtime directory and log
//! directory.
//!
//! Every path can be overridden (global flags or `VSERVER_CONFDIR`, `VSERVER_ROOTBASE`,
//! `VSERVER_RUNDIR`, `VSERVER_LOGDIR` in the environment) so tests run in temporary directories.

use std::path::{Path, PathBuf};

/// Default configuration directory, holding `NAME.toml` and `NAME.sh`.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/vservers";
/// Default base directory of guest roots (`BASE/NAME`), as on Debian's util-vserver.
pub const DEFAULT_ROOT_BASE: &str = "/var/lib/vservers";
/// Default runtime directory (`RUN/NAME/` holds state, lock and console socket).
pub const DEFAULT_RUN_DIR: &str = "/run/vservers";
/// Default log directory (`LOG/NAME/` holds the console and monitor logs, kept across host
/// reboots).
pub const DEFAULT_LOG_DIR: &str = "/var/log/vservers";

/// The host directories the engine works in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Directory of `NAME.toml` / `NAME.sh`.
    pub config_dir: PathBuf,
    /// Directory under which guest roots live by default.
    pub root_base: PathBuf,
    /// Directory of runtime state (tmpfs in production).
    pub run_dir: PathBuf,
    /// Directory of the guests' logs (`LOG/NAME/console.log`, `monitor.log`).
    pub log_dir: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            config_dir: PathBuf::from(DEFAULT_CONFIG_DIR),
            root_base: PathBuf::from(DEFAULT_ROOT_BASE),
            run_dir: PathBuf::from(DEFAULT_RUN_DIR),
            log_dir: PathBuf::from(DEFAULT_LOG_DIR),
        }
    }
}

impl Paths {
    /// Paths from explicit overrides, then the `VSERVER_*` environment variables, then the defaults.
    pub fn resolve(
        config_dir: Option<PathBuf>,
        root_base: Option<PathBuf>,
        run_dir: Option<PathBuf>,
        log_dir: Option<PathBuf>,
    ) -> Paths {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let d = Paths::default();
        Paths {
            config_dir: config_dir
                .or_else(|| env("VSERVER_CONFDIR"))
                .unwrap_or(d.config_dir),
            root_base: root_base
                .or_else(|| env("VSERVER_ROOTBASE"))
                .unwrap_or(d.root_base),
            run_dir: run_dir
                .or_else(|| env("VSERVER_RUNDIR"))
                .unwrap_or(d.run_dir),
            log_dir: log_dir
                .or_else(|| env("VSERVER_LOGDIR"))
                .unwrap_or(d.log_dir),
        }
    }

    /// `CONFIG/NAME.toml`.
    pub fn config_file(&self, name: &str) -> PathBuf {
        self.config_dir.join(format!("{name}.toml"))
    }

    /// Take the exclusive lock every read-modify-write of `CONFIG/NAME.toml` holds (flock(2)
    /// on `CONFIG/.NAME.toml.lock`; NAME.toml itself is replaced by rename, so it cannot carry
    /// the lock). Blocks while another command holds it; released when dropped or when the
    /// process dies.
    ///
    /// Errors: the lock file cannot be opened.
    pub fn lock_config(&self, name: &str) -> std::io::Result<ConfigLock> {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.config_dir.join(format!(".{name}.toml.lock")))?;
        loop {
            // SAFETY: flock on a live fd we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(ConfigLock(f));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// `CONFIG/NAME.sh`, the optional start/stop script.
    pub fn script_file(&self, name: &str) -> PathBuf {
        self.config_dir.join(format!("{name}.sh"))
    }

    /// Default root of guest `name`: `ROOTBASE/NAME`.
    pub fn default_root(&self, name: &str) -> PathBuf {
        self.root_base.join(name)
    }

    /// Runtime directory of guest `name`: `RUN/NAME`.
    pub fn guest_run_dir(&self, name: &str) -> PathBuf {
        self.run_dir.join(name)
    }

    /// Log directory of guest `name`: `LOG/NAME`.
    pub fn guest_log_dir(&self, name: &str) -> PathBuf {
        self.log_dir.join(name)
    }
}

/// Name endings a guest name cannot have (they belong to the paths beside a guest root).
pub const RESERVED_SUFFIXES: &[&str] = &[".img", ".overlay", ".snapshots", ".tmp", ".partial"];

/// Check that `name` is usable as a guest name: 1-64 characters of `[A-Za-z0-9_.-]`, not starting
/// with `.` or `-`. Guest names become file names, cgroup-free identifiers and log prefixes.
///
/// Errors: a one-line reason.
pub fn validate_guest_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!(
            "guest name '{name}' must be 1 to 64 characters long"
        ));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(format!(
            "guest name '{name}' must not start with '.' or '-'"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "guest name '{name}' contains '{c}'; use letters, digits, '_', '.', '-'"
        ));
    }
    // A guest's root ROOTBASE/NAME has companions ROOT.img, ROOT.overlay, ROOT.snapshots: a
    // name ending like one would be another guest's.
    if let Some(sfx) = RESERVED_SUFFIXES.iter().find(|s| name.ends_with(*s)) {
        return Err(format!(
            "guest name '{name}' must not end in '{sfx}' (the suffixes {} name a guest's disk \
             image, overlay layers, snapshots and scratch files)",
            RESERVED_SUFFIXES.join(" ")
        ));
    }
    Ok(())
}

/// True when `p` exists (without following a final symlink).
pub fn exists_nofollow(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// The lock of [`Paths::lock_config`], held while alive.
pub struct ConfigLock(#[allow(dead_code)] std::fs::File);

/// Write `text` to `path` so that the file is either the old one or the whole new one, also
/// after a crash: a temporary named after this process in the same directory, fsync(2)ed,
/// renamed over `path`, and the directory fsync(2)ed.
///
/// Errors: the step and the OS error (the temporary is removed).
pub fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_names() {
        assert!(validate_guest_name("web1").is_ok());
        assert!(validate_guest_name("a.b-c_d").is_ok());
        assert!(validate_guest_name("").is_err());
        assert!(validate_guest_name("../etc").is_err());
        assert!(validate_guest_name("-x").is_err());
        assert!(validate_guest_name("a/b").is_err());
    }
}
