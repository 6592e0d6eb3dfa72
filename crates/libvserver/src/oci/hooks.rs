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
    // From a thread: a state larger than the pipe's buffer must not block us past the hook's
    // timeout when the hook does not read it (which is fine for a hook). Once the hook has
    // ended its end of the pipe is closed and the write returns; a background process of the
    // hook may still hold it, so the wait for the writer is bounded (a writer left blocked
    // ends with this process, or at its execve).
    let writer = child.stdin.take().map(|mut i| {
        let state = state.to_string();
        std::thread::spawn(move || {
            let _ = i.write_all(state.as_bytes());
        })
    });
    let r = wait(&mut child, hook);
    if let Some(w) = writer {
        let t0 = Instant::now();
        while !w.is_finished() && t0.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(2));
        }
        if w.is_finished() {
            let _ = w.join();
        }
    }
    r
}

/// Wait for the hook, killing it past its timeout.
fn wait(child: &mut std::process::Child, hook: &Hook) -> Result<(), String> {
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
