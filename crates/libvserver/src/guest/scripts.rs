//! The per-guest start and stop scripts, util-vserver's stages in its order:
//! `initialize`, `prepre-start`, `pre-start`, `post-start`, `pre-stop`, `post-stop`,
//! `postpost-stop`. For a stage, in this order:
//! 1. `CONFIG/NAME.sh STAGE NAME` (one script for every stage);
//! 2. `CONFIG/NAME/scripts/STAGE`, then each file of `CONFIG/NAME/scripts/STAGE.d/` by name;
//!    when the guest has no `scripts/` directory, the same from `CONFIG/.defaults/scripts/`.
//!
//! Executable files run directly, other files with `/bin/sh` (util-vserver sourced them into
//! its shell; a separate shell keeps them from changing vserver itself). Every script gets
//! `STAGE NAME` as arguments, the guest name, context id, root and stage in `VSERVER_NAME`,
//! `VSERVER_XID`, `VSERVER_ROOT`, `VSERVER_STAGE`, the config directory as working directory and
//! no stdin.

use super::{Guest, GuestError};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The stages, in the order a start and a stop run them.
pub const STAGES: [&str; 7] = [
    "initialize",
    "prepre-start",
    "pre-start",
    "post-start",
    "pre-stop",
    "post-stop",
    "postpost-stop",
];

/// Regular files of `dir/STAGE` and `dir/STAGE.d/*` (sorted by name).
fn stage_files(dir: &Path, stage: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let one = dir.join(stage);
    if one.is_file() {
        out.push(one);
    }
    let mut more: Vec<PathBuf> = std::fs::read_dir(dir.join(format!("{stage}.d")))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    more.sort();
    out.extend(more);
    out
}

/// The scripts of `stage` for guest `g`, in the order they run.
pub fn scripts_of(g: &Guest, stage: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let sh = g.paths.script_file(&g.name);
    if std::fs::metadata(&sh)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
    {
        out.push(sh);
    }
    let own = g.paths.config_dir.join(&g.name).join("scripts");
    let dir = if own.is_dir() {
        own
    } else {
        g.paths.config_dir.join(".defaults").join("scripts")
    };
    out.extend(stage_files(&dir, stage));
    out
}

/// Whether a failing script of `stage` aborts what it is part of (a start); the later stages
/// only warn, and run all their scripts.
pub fn aborts(stage: &str) -> bool {
    matches!(stage, "initialize" | "prepre-start" | "pre-start")
}

/// Run the scripts of `stage` for `g` (see the module documentation). In a stage that
/// [`aborts`], the first failure stops the stage; in the others every script runs, and the
/// failures after the first are reported on stderr.
///
/// Errors: [`GuestError::Script`] naming the (first) failed script, when it cannot run or
/// exits non-zero.
pub fn run(g: &Guest, stage: &'static str) -> Result<(), GuestError> {
    let mut first = None;
    for path in scripts_of(g, stage) {
        if let Err(e) = run_one(g, stage, &path) {
            if aborts(stage) {
                return Err(e);
            }
            if first.is_some() {
                eprintln!("vserver: warning: {e}");
            } else {
                first = Some(e);
            }
        }
    }
    first.map_or(Ok(()), Err)
}

fn run_one(g: &Guest, stage: &'static str, path: &Path) -> Result<(), GuestError> {
    {
        let err = |message: String| GuestError::Script {
            name: g.name.clone(),
            stage,
            path: path.to_path_buf(),
            message,
        };
        let executable = std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        let mut cmd = if executable {
            Command::new(path)
        } else {
            let mut c = Command::new("/bin/sh");
            c.arg(path);
            c
        };
        let status = cmd
            .arg(stage)
            .arg(&g.name)
            .env("VSERVER_NAME", &g.name)
            .env("VSERVER_XID", g.config.context.to_string())
            .env("VSERVER_ROOT", g.root())
            .env("VSERVER_STAGE", stage)
            .current_dir(&g.paths.config_dir)
            .stdin(Stdio::null())
            .status()
            .map_err(|e| err(format!("cannot run it: {e}")))?;
        if !status.success() {
            return Err(err(format!("exited with {status}")));
        }
    }
    Ok(())
}
