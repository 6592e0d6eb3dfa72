//! Runtime state of OCI containers: one root-only directory per container under the state root
//! (`--root`, default [`DEFAULT_ROOT`]) holding `state.json` (the runtime-spec state plus what
//! vserver needs to find the container again), the bundle's `config.json` as created, and the
//! `exec.fifo` that holds the init between `create` and `start`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// State root when `--root` is not given.
pub const DEFAULT_ROOT: &str = "/run/vserver-oci";

/// Errors of the state store. The texts contain runc's words that containerd's shim matches
/// (`does not exist`, `already exists`).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// No such container.
    #[error("container {0} does not exist")]
    NotFound(String),
    /// The id is taken.
    #[error("container with id {0} already exists")]
    Exists(String),
    /// The id has characters that could name other files.
    #[error("invalid container id '{0}': use letters, digits and _ . + - (1 to 255 of them, not . or ..)")]
    BadId(String),
    /// A file of the state could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// state.json is not what this version writes.
    #[error("{path}: {message}")]
    Corrupt {
        /// state.json's path.
        path: PathBuf,
        /// The parse error.
        message: String,
    },
}

/// Container status (runtime-spec runtime.md "State", plus runc's `paused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being created.
    Creating,
    /// Created, the user program not started.
    Created,
    /// The user program runs.
    Running,
    /// Frozen.
    Paused,
    /// The init has exited.
    Stopped,
}

impl Status {
    /// The lowercase word of the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// `state.json`: the runtime-spec state object plus vserver's own fields.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Spec version of the state (the bundle's `ociVersion`).
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Recorded status; see [`Container::status`] for the live one.
    pub status: Status,
    /// Host pid of the init (0 once stopped).
    pub pid: i32,
    /// Absolute bundle directory.
    pub bundle: PathBuf,
    /// Absolute root file system.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
    /// The config's annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Owner (runc's field): always `root`'s empty string here.
    #[serde(default)]
    pub owner: String,
    /// Start time of the init (/proc/PID/stat field 22, clock ticks), to tell a reused pid.
    #[serde(default)]
    pub init_start: u64,
    /// cgroup path relative to each hierarchy's mount.
    #[serde(default)]
    pub cgroup: String,
}

/// The JSON `state` prints: exactly the spec's fields (and runc's `owner`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicState<'a> {
    /// Spec version.
    pub oci_version: &'a str,
    /// Container id.
    pub id: &'a str,
    /// Live status.
    pub status: &'a str,
    /// Host pid of the init, 0 when stopped.
    pub pid: i32,
    /// Bundle directory.
    pub bundle: &'a Path,
    /// Root file system.
    pub rootfs: &'a Path,
    /// Creation time.
    pub created: &'a str,
    /// Annotations.
    pub annotations: &'a BTreeMap<String, String>,
    /// Owner.
    pub owner: &'a str,
}

/// Check a container id: 1-255 characters (a file name) of `[A-Za-z0-9_.+-]`, not `.` or `..`.
///
/// Errors: [`StateError::BadId`].
pub fn check_id(id: &str) -> Result<(), StateError> {
    let ok = !id.is_empty()
        && id.len() <= 255
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(StateError::BadId(id.to_string()))
    }
}

/// One container's state directory.
#[derive(Debug, Clone)]
pub struct Container {
    /// `ROOT/ID`.
    pub dir: PathBuf,
    /// The id.
    pub id: String,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io { what, path, source }
}

impl Container {
    /// The container `id` under `root` (nothing is read).
    ///
    /// Errors: [`StateError::BadId`].
    pub fn at(root: &Path, id: &str) -> Result<Container, StateError> {
        check_id(id)?;
        Ok(Container {
            dir: root.join(id),
            id: id.to_string(),
        })
    }

    /// Create the state directory (0700; the root too, 0700, when missing).
    ///
    /// Errors: [`StateError::Exists`], [`StateError::Io`].
    pub fn create_dir(&self) -> Result<(), StateError> {
        use std::os::unix::fs::DirBuilderExt;
        if let Some(root) = self.dir.parent() {
            if !root.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(root)
                    .map_err(io("create", root))?;
            }
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StateError::Exists(self.id.clone()))
            }
            Err(e) => Err(io("create", &self.dir)(e)),
        }
    }

    /// A file of the state directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Read `state.json`.
    ///
    /// Errors: [`StateError::NotFound`] when the directory or file is missing,
    /// [`StateError::Corrupt`], [`StateError::Io`].
    pub fn load(&self) -> Result<State, StateError> {
        let p = self.file("state.json");
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotFound(self.id.clone()))
            }
            Err(e) => return Err(io("read", &p)(e)),
        };
        serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
            path: p,
            message: e.to_string(),
        })
    }

    /// Write `state.json` atomically (temporary file, fsync, rename).
    ///
    /// Errors: [`StateError::Io`].
    pub fn save(&self, st: &State) -> Result<(), StateError> {
        self.write_state(st, true)
    }

    /// [`Container::save`] without the fsync: for the `creating` states `create` writes on its
    /// way (a host crash ends the container anyway; the final state is synced).
    ///
    /// Errors: [`StateError::Io`].
    pub fn save_unsynced(&self, st: &State) -> Result<(), StateError> {
        self.write_state(st, false)
    }

    fn write_state(&self, st: &State, sync: bool) -> Result<(), StateError> {
        use std::io::Write;
        let tmp = self.file("state.json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        let text = serde_json::to_string(st).map_err(|e| StateError::Corrupt {
            path: tmp.clone(),
            message: e.to_string(),
        })?;
        f.write_all(text.as_bytes())
            .and_then(|()| if sync { f.sync_all() } else { Ok(()) })
            .map_err(io("write", &tmp))?;
        let p = self.file("state.json");
        std::fs::rename(&tmp, &p).map_err(io("rename", &p))
    }

    /// The `linux.resources` in force (`resources.json`: the config's, with every `update`
    /// merged in); the defaults when none were saved.
    pub fn load_resources(&self) -> super::spec::Resources {
        std::fs::read_to_string(self.file("resources.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Save the `linux.resources` in force (temporary file, rename).
    ///
    /// Errors: [`StateError::Io`].
    pub fn save_resources(&self, r: &super::spec::Resources) -> Result<(), StateError> {
        let tmp = self.file("resources.json.tmp");
        let text = serde_json::to_string(r).map_err(|e| StateError::Corrupt {
            path: tmp.clone(),
            message: e.to_string(),
        })?;
        std::fs::write(&tmp, text).map_err(io("write", &tmp))?;
        let p = self.file("resources.json");
        std::fs::rename(&tmp, &p).map_err(io("rename", &p))
    }

    /// Remove the state directory and everything in it (missing is fine).
    ///
    /// Errors: [`StateError::Io`].
    pub fn remove(&self) -> Result<(), StateError> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", &self.dir)(e)),
            _ => Ok(()),
        }
    }
}

/// Ids of every container under `root` that has a state directory.
pub fn list(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("state.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Now as RFC 3339 UTC with nanoseconds (`2026-11-29T16:55:47.123456789Z`).
pub fn rfc3339_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs() as i64, d.subsec_nanos())
}

/// `secs` since the epoch (UTC) as RFC 3339 with `nanos`.
pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_name_other_files_are_refused() {
        for bad in ["", ".", "..", "a/b", "../x", "a b", "x\0"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        for good in ["abc", "a.b-c_d+e", "0123456789abcdef"] {
            assert!(check_id(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(rfc3339(1_796_000_000, 0), "2026-11-30T00:53:20.000000000Z");
    }
}
