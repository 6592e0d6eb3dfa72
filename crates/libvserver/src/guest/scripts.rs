//! `NAME.sh pre-start|post-start|pre-stop|post-stop NAME`: the optional per-guest script.

use super::{Guest, GuestError};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

/// Run stage `stage` of `CONFIG/NAME.sh` if it exists and is executable, with the guest name,
/// context id and root in `VSERVER_NAME`, `VSERVER_XID`, `VSERVER_ROOT`.
///
/// Errors: [`GuestError::Script`] when it cannot run or exits non-zero.
pub fn run(g: &Guest, stage: &'static str) -> Result<(), GuestError> {
    let path = g.paths.script_file(&g.name);
    let Ok(md) = std::fs::metadata(&path) else {
        return Ok(());
    };
    if !md.is_file() || md.permissions().mode() & 0o111 == 0 {
        return Ok(());
    }
    let err = |message: String| GuestError::Script {
        name: g.name.clone(),
        stage,
        path: path.clone(),
        message,
    };
    let status = Command::new(&path)
        .arg(stage)
        .arg(&g.name)
        .env("VSERVER_NAME", &g.name)
        .env("VSERVER_XID", g.config.context.to_string())
        .env("VSERVER_ROOT", g.root())
        .stdin(Stdio::null())
        .status()
        .map_err(|e| err(format!("cannot run it: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(err(format!("exited with {status}")))
    }
}
