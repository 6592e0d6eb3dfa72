//! Time namespaces (time_namespaces(7)): a guest's CLOCK_BOOTTIME, and so its /proc/uptime,
//! starts at its own start.

use std::os::fd::OwnedFd;

/// Read CLOCK_BOOTTIME in whole seconds.
fn boottime_secs() -> Result<i64, String> {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec())
        .map_err(|e| format!("read CLOCK_BOOTTIME: {e}"))
}

/// Make the calling process's future children start in a new time namespace whose boot time is
/// (about) zero now. Returns a handle to the current time namespace for
/// [`restore_for_children`]. Needs CAP_SYS_ADMIN; the caller itself keeps its clocks.
///
/// Errors: a message naming the step (unshare, writing /proc/self/timens_offsets).
pub fn enter_fresh_boottime_for_children() -> Result<OwnedFd, String> {
    let old: OwnedFd = std::fs::File::open("/proc/self/ns/time_for_children")
        .map_err(|e| format!("open /proc/self/ns/time_for_children: {e}"))?
        .into();
    nix::sched::unshare(nix::sched::CloneFlags::from_bits_retain(
        libc::CLONE_NEWTIME,
    ))
    .map_err(|e| format!("unshare a time namespace: {e}"))?;
    // Keep one second so the guest's boot time never reads as exactly zero.
    let offset = -(boottime_secs()? - 1).max(0);
    std::fs::write(
        "/proc/self/timens_offsets",
        format!("boottime {offset} 0\n"),
    )
    .map_err(|e| format!("write /proc/self/timens_offsets: {e}"))?;
    Ok(old)
}

/// Let future children of the caller start in the time namespace `old` again.
///
/// Errors: setns(2) failed.
pub fn restore_for_children(old: &OwnedFd) -> Result<(), String> {
    nix::sched::setns(
        old,
        nix::sched::CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    )
    .map_err(|e| format!("return to the host's time namespace: {e}"))
}
