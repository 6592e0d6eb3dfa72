//! Guests' cgroups on a host whose PID 1 is systemd with the unified (v2-only) hierarchy.
//!
//! systemd owns that tree and asks every other manager to keep to a subtree delegated to it
//! (systemd.io/CGROUP_DELEGATION): cgroups made beside its slices may be moved, killed or
//! reconfigured. So each running guest gets a transient scope unit `vserver-<xid>.scope` in
//! `vservers.slice`, registered with `Delegate=yes` through systemd's D-Bus API
//! (org.freedesktop.systemd1(5), `Manager.StartTransientUnit`, over the system bus). Below
//! the scope, everything is vserver's:
//!
//! ```text
//! vservers.slice/vserver-<xid>.scope/     systemd's unit; holds no process itself
//!     supervisor/                         the `vserver start` command, then the monitor
//!     payload/                            the guest, with its limits, and what it makes below
//! ```
//!
//! systemd makes the scope and removes it when its last process ends (the monitor, after the
//! guest); the scope's own attributes (`MemoryMax=` ...) stay systemd's and are rewritten by
//! `systemctl daemon-reload`, which is why the guest's limits sit on `payload/`, one level
//! down. A user session, or the unit, from which `vserver NAME start` ran can end without
//! touching the guest: the command moves itself into the scope before anything is made.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The slice holding every guest's scope (`systemctl status vservers.slice` lists them;
/// `MemoryMax=` and the like set on it bound all guests together).
pub const SLICE: &str = "vservers.slice";
/// The cgroup below a guest's scope that holds the guest (its limits are written there).
pub const PAYLOAD: &str = "payload";
/// The cgroup below a guest's scope that holds the command that started it, then its monitor.
pub const SUPERVISOR: &str = "supervisor";
/// The D-Bus system bus, through which systemd takes transient units. (systemd's private
/// socket, which systemctl uses, needs no bus daemon, but its messages name systemd's
/// well-known name as their sender, which zbus refuses.)
pub const SYSTEM_BUS: &str = "/run/dbus/system_bus_socket";
/// Longest wait for systemd to make the scope and move the command into it.
const SCOPE_WAIT: Duration = Duration::from_secs(10);

/// True when the host was booted with systemd (sd_booted(3): `/run/systemd/system` exists)
/// and its D-Bus system bus runs (the way to register scopes). Without the bus, guests keep
/// the classic layout at the root of the tree.
pub fn booted() -> bool {
    Path::new("/run/systemd/system").is_dir() && Path::new(SYSTEM_BUS).exists()
}

/// The unit name of context `xid`'s scope: `vserver-<xid>.scope`.
pub fn scope_name(xid: u32) -> String {
    format!("vserver-{xid}.scope")
}

/// The scope's cgroup relative to the hierarchy's root: `vservers.slice/vserver-<xid>.scope`.
pub fn scope_rel(xid: u32) -> String {
    format!("{SLICE}/{}", scope_name(xid))
}

/// Context id of a scope's name (`vserver-<xid>.scope`), None for anything else.
pub fn xid_of_scope(name: &str) -> Option<u32> {
    name.strip_prefix("vserver-")?
        .strip_suffix(".scope")?
        .parse()
        .ok()
}

/// Move this process into context `xid`'s scope, registering the scope first when it does not
/// run yet, and then into the scope's [`SUPERVISOR`] cgroup, so that the scope itself holds no
/// process and its controllers can be passed down to [`PAYLOAD`]. `mount` is the v2
/// hierarchy's mount point, `description` the unit's description, `before` units the scope is
/// ordered before (at shutdown systemd stops the scope after them: the units that stop the
/// guest cleanly).
///
/// Errors: systemd's socket cannot be reached or refuses the unit (its D-Bus error), the
/// scope did not appear within 10 s, or the move failed (the path and OS error).
pub fn enter_scope(
    mount: &Path,
    xid: u32,
    description: &str,
    before: &[String],
) -> Result<(), String> {
    let scope = mount.join(scope_rel(xid));
    let want = format!("/{}", scope_rel(xid));
    let inside = |now: &str| now == want || now.starts_with(&format!("{want}/"));
    let deadline = Instant::now() + SCOPE_WAIT;
    loop {
        if inside(&own_cgroup()) {
            break;
        }
        match start_scope(xid, description, before) {
            Ok(()) => {
                // The job runs after the call returns: wait until systemd moved us.
                while !inside(&own_cgroup()) {
                    if Instant::now() > deadline {
                        return Err(format!(
                            "systemd did not move this process into {} within {} s",
                            scope_name(xid),
                            SCOPE_WAIT.as_secs()
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                break;
            }
            // A scope of that name is still there: a run whose last process is ending (a
            // stop waits for the scope to go, a guest that ended by itself may not have).
            // Never joined (systemd may be stopping it): wait until it is gone, register anew.
            Err(Refused::Exists) => {
                if Instant::now() > deadline {
                    return Err(format!(
                        "{} is still there after {} s (processes: {}; systemctl status {0})",
                        scope_name(xid),
                        SCOPE_WAIT.as_secs(),
                        procs_below(&scope).join(" ")
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(Refused::Other(e)) => return Err(e),
        }
    }
    let sup = scope.join(SUPERVISOR);
    match std::fs::create_dir(&sup) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("create {}: {e}", sup.display())),
    }
    let procs = sup.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .map_err(|e| format!("move this process to {}: {e}", procs.display()))
}

/// This process's cgroup in the v2 hierarchy (the `0::` line of /proc/self/cgroup).
fn own_cgroup() -> String {
    std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        .unwrap_or_default()
}

/// Pids in cgroup `dir` and the cgroups right below it (for messages).
fn procs_below(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if let Ok(t) = std::fs::read_to_string(e.path().join("cgroup.procs")) {
            v.extend(t.lines().map(str::to_string));
        }
    }
    v
}

/// Why systemd did not take the scope.
enum Refused {
    /// `org.freedesktop.systemd1.UnitExists`: a unit of that name is loaded.
    Exists,
    /// Anything else, with its message.
    Other(String),
}

/// True when systemd takes `name` as a unit name (unit-name rules of systemd.unit(5): at most
/// 255 bytes of `[A-Za-z0-9:_.\-@]`). Marks and guest names vserver accepts may not be.
pub fn valid_unit_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_.-@\\".contains(&b))
}

/// `StartTransientUnit(vserver-<xid>.scope, "fail", properties, [])` with this process as the
/// scope's first process, asked by a forked child: a D-Bus connection starts threads that
/// outlive it, and this process must stay single-threaded (setns(2) into a mount or user
/// namespace refuses a process whose threads share its file system attributes).
fn start_scope(xid: u32, description: &str, before: &[String]) -> Result<(), Refused> {
    let me = std::process::id();
    let other = |m: String| Refused::Other(m);
    let (rd, wr) = nix::unistd::pipe().map_err(|e| other(format!("pipe: {e}")))?;
    // SAFETY: the caller is single-threaded; the child talks to the bus, writes its answer
    // and leaves with _exit (a panic is caught, never unwound into the parent's frames).
    match unsafe { nix::unistd::fork() }.map_err(|e| other(format!("fork: {e}")))? {
        nix::unistd::ForkResult::Child => {
            drop(rd);
            // One byte, then the message: 0 taken, 1 UnitExists, 2 another error.
            let answer = std::panic::catch_unwind(|| ask_for_scope(me, xid, description, before))
                .unwrap_or_else(|_| Err(Refused::Other(String::from("the D-Bus call panicked"))));
            let bytes = match answer {
                Ok(()) => vec![0u8],
                Err(Refused::Exists) => vec![1u8],
                Err(Refused::Other(m)) => [&[2u8][..], m.as_bytes()].concat(),
            };
            let _ = nix::unistd::write(&wr, &bytes);
            // SAFETY: leave the forked child without running the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(wr);
            let mut answer = Vec::new();
            let got = std::io::Read::read_to_end(&mut std::fs::File::from(rd), &mut answer);
            let _ = nix::sys::wait::waitpid(child, None);
            match (got, answer.first()) {
                (Ok(_), Some(0)) => Ok(()),
                (Ok(_), Some(1)) => Err(Refused::Exists),
                (Ok(_), Some(_)) => Err(other(String::from_utf8_lossy(&answer[1..]).into_owned())),
                _ => Err(other(format!(
                    "register {} with systemd: the asking process gave no answer",
                    scope_name(xid)
                ))),
            }
        }
    }
}

/// The D-Bus call of [`start_scope`], for process `pid`, within [`SCOPE_WAIT`].
fn ask_for_scope(pid: u32, xid: u32, description: &str, before: &[String]) -> Result<(), Refused> {
    use zbus::zvariant::Value;
    let bus = zbus::blocking::connection::Builder::system()
        .and_then(|b| b.method_timeout(SCOPE_WAIT).build())
        .map_err(|e| {
            Refused::Other(format!(
                "connect to the D-Bus system bus ({SYSTEM_BUS}): {e}"
            ))
        })?;
    let mut props: Vec<(&str, Value)> = vec![
        ("Description", Value::from(description)),
        ("Slice", Value::from(SLICE)),
        ("Delegate", Value::from(true)),
        ("PIDs", Value::from(vec![pid])),
        // A scope that failed is collected too: the next start may register the name again.
        ("CollectMode", Value::from("inactive-or-failed")),
    ];
    // Only names systemd takes (a mark may hold characters a unit name may not).
    let before: Vec<String> = before
        .iter()
        .filter(|u| valid_unit_name(u))
        .cloned()
        .collect();
    if !before.is_empty() {
        props.push(("Before", Value::from(before)));
    }
    let aux: Vec<(&str, Vec<(&str, Value)>)> = Vec::new();
    bus.call_method(
        Some("org.freedesktop.systemd1"),
        "/org/freedesktop/systemd1",
        Some("org.freedesktop.systemd1.Manager"),
        "StartTransientUnit",
        &(scope_name(xid), "fail", props, aux),
    )
    .map(|_| ())
    .map_err(|e| match &e {
        zbus::Error::MethodError(name, _, _)
            if name.as_str() == "org.freedesktop.systemd1.UnitExists" =>
        {
            Refused::Exists
        }
        _ => Refused::Other(format!("register {} with systemd: {e}", scope_name(xid))),
    })
}

/// Directories of running scopes below `mount`'s [`SLICE`] with their context ids.
pub fn scopes(mount: &Path) -> Vec<(u32, PathBuf)> {
    std::fs::read_dir(mount.join(SLICE))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let x = xid_of_scope(e.file_name().to_str()?)?;
            Some((x, e.path()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_names() {
        assert_eq!(scope_name(40001), "vserver-40001.scope");
        assert_eq!(scope_rel(7), "vservers.slice/vserver-7.scope");
        assert_eq!(xid_of_scope("vserver-40001.scope"), Some(40001));
        assert_eq!(xid_of_scope("vserver-x.scope"), None);
        assert_eq!(xid_of_scope("vserver-40001.service"), None);
        assert!(valid_unit_name("vservers@web.service"));
        assert!(!valid_unit_name("vservers@a+b.service"));
        assert!(!valid_unit_name("vservers@x/y.service"));
        assert!(!valid_unit_name(&format!(
            "vservers@{}.service",
            "m".repeat(260)
        )));
    }
}
