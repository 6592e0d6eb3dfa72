//! OCI lifecycle hooks (config.md "POSIX-platform Hooks"): a host program run with the
//! container's state JSON on its stdin, its own argv and environment, killed after `timeout`
//! seconds. A hook that fails or times out fails the lifecycle step (except poststart and
//! poststop, whose callers only warn).

use super::spec::Hook;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run `hook` with `state` (JSON) on its stdin and wait for it.
///
/// Errors: a message with the exit status, the signal, or the timeout.
pub fn run(hook: &Hook, state: &str) -> Result<(), String> {
    let mut c = Command::new(&hook.path);
    if let Some((first, rest)) = hook.args.split_first() {
        c.arg0(first).args(rest);
    }
    c.env_clear()
        .envs(hook.env.iter().filter_map(|e| e.split_once('=')))
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let mut child = c.spawn().map_err(|e| format!("start: {e}"))?;
    if let Some(mut i) = child.stdin.take() {
        // A hook that does not read its stdin is fine.
        let _ = i.write_all(state.as_bytes());
    }
    let limit = hook.timeout.map(|t| Duration::from_secs(u64::from(t)));
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(format!("ended with {st}")),
            Ok(None) => {}
            Err(e) => return Err(format!("wait: {e}")),
        }
        if limit.is_some_and(|l| started.elapsed() > l) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("timed out after {} s", hook.timeout.unwrap_or(0)));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
