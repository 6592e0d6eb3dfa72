//! Scheduling and memory placement of a container's process: the OCI `process.scheduler`
//! (sched_setattr(2)), `linux.memoryPolicy` (set_mempolicy(2)) and `process.execCPUAffinity`
//! (sched_setaffinity(2)). Each is parsed from the spec's words into the kernel's values once
//! (errors name the field), and applied by the process itself before it runs the program;
//! all three are inherited across fork(2).

/// sched_setattr(2)'s `struct sched_attr` (its first size, 48 bytes: no utilization clamps).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedAttr {
    size: u32,
    /// SCHED_OTHER (0), SCHED_FIFO (1), SCHED_RR (2), SCHED_BATCH (3), SCHED_IDLE (5),
    /// SCHED_DEADLINE (6).
    pub policy: u32,
    /// SCHED_FLAG_* bits.
    pub flags: u64,
    /// Nice value for SCHED_OTHER and SCHED_BATCH (-20..19).
    pub nice: i32,
    /// Static priority for SCHED_FIFO and SCHED_RR (1..99).
    pub priority: u32,
    /// SCHED_DEADLINE runtime, nanoseconds.
    pub runtime: u64,
    /// SCHED_DEADLINE deadline, nanoseconds.
    pub deadline: u64,
    /// SCHED_DEADLINE period, nanoseconds.
    pub period: u64,
}

/// The scheduler policies of the runtime spec and their numbers (sched(7)).
const POLICIES: &[(&str, u32)] = &[
    ("SCHED_OTHER", 0),
    ("SCHED_FIFO", 1),
    ("SCHED_RR", 2),
    ("SCHED_BATCH", 3),
    ("SCHED_ISO", 4),
    ("SCHED_IDLE", 5),
    ("SCHED_DEADLINE", 6),
];

/// The SCHED_FLAG_* words of the runtime spec (linux/sched.h).
const SCHED_FLAGS: &[(&str, u64)] = &[
    ("SCHED_FLAG_RESET_ON_FORK", 0x01),
    ("SCHED_FLAG_RECLAIM", 0x02),
    ("SCHED_FLAG_DL_OVERRUN", 0x04),
    ("SCHED_FLAG_KEEP_POLICY", 0x08),
    ("SCHED_FLAG_KEEP_PARAMS", 0x10),
    ("SCHED_FLAG_UTIL_CLAMP_MIN", 0x20),
    ("SCHED_FLAG_UTIL_CLAMP_MAX", 0x40),
];

impl SchedAttr {
    /// From the spec's words: `policy` (`SCHED_FIFO` ...), `flags` (`SCHED_FLAG_*`), nice,
    /// priority and the deadline times in nanoseconds.
    ///
    /// Errors: an unknown policy or flag (named), a utilization clamp flag (not supported:
    /// it needs the larger struct).
    pub fn from_spec(
        policy: &str,
        flags: &[String],
        nice: i32,
        priority: u32,
        times: (u64, u64, u64),
    ) -> Result<SchedAttr, String> {
        let policy = POLICIES
            .iter()
            .find(|(n, _)| *n == policy)
            .map(|(_, v)| *v)
            .ok_or_else(|| format!("unknown policy '{policy}'"))?;
        if policy == 4 {
            return Err(String::from("SCHED_ISO is not a Linux policy"));
        }
        let mut bits = 0;
        for f in flags {
            let v = SCHED_FLAGS
                .iter()
                .find(|(n, _)| n == f)
                .map(|(_, v)| *v)
                .ok_or_else(|| format!("unknown flag '{f}'"))?;
            if v & 0x60 != 0 {
                return Err(format!("{f}: utilization clamps are not supported"));
            }
            bits |= v;
        }
        Ok(SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            policy,
            flags: bits,
            nice,
            priority,
            runtime: times.0,
            deadline: times.1,
            period: times.2,
        })
    }

    /// sched_setattr(2) on the calling thread.
    ///
    /// Errors: the OS error (EPERM for a real-time policy without CAP_SYS_NICE or without
    /// real-time runtime in the cgroup, EINVAL for values out of range).
    pub fn apply(&self) -> Result<(), String> {
        // SAFETY: a valid sched_attr of the size it says; pid 0 is the calling thread.
        let r =
            unsafe { libc::syscall(libc::SYS_sched_setattr, 0, self as *const SchedAttr, 0u32) };
        if r < 0 {
            return Err(format!("sched_setattr: {}", nix::errno::Errno::last()));
        }
        Ok(())
    }
}

/// Bits in one word of a node mask (an unsigned long).
const WORD_BITS: usize = libc::c_ulong::BITS as usize;

/// A memory policy for set_mempolicy(2): mode with its flags, and the node mask.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemPolicy {
    /// MPOL_* mode ORed with MPOL_F_* flags.
    pub mode: i32,
    /// Node bit mask, one bit per node, [`WORD_BITS`] nodes per word.
    pub mask: Vec<libc::c_ulong>,
}

/// The memory policy modes of the runtime spec (set_mempolicy(2), linux/mempolicy.h).
const MPOL_MODES: &[(&str, i32)] = &[
    ("MPOL_DEFAULT", 0),
    ("MPOL_PREFERRED", 1),
    ("MPOL_BIND", 2),
    ("MPOL_INTERLEAVE", 3),
    ("MPOL_LOCAL", 4),
    ("MPOL_PREFERRED_MANY", 5),
    ("MPOL_WEIGHTED_INTERLEAVE", 6),
];

/// Its mode flags.
const MPOL_FLAGS: &[(&str, i32)] = &[
    ("MPOL_F_NUMA_BALANCING", 1 << 13),
    ("MPOL_F_RELATIVE_NODES", 1 << 14),
    ("MPOL_F_STATIC_NODES", 1 << 15),
];

impl MemPolicy {
    /// From the spec's words: `mode` (`MPOL_BIND` ...), `nodes` (a list such as `0-3,7`) and
    /// `flags` (`MPOL_F_*`).
    ///
    /// Errors: an unknown mode or flag, a malformed node list (named).
    pub fn from_spec(mode: &str, nodes: &str, flags: &[String]) -> Result<MemPolicy, String> {
        let mut m = MPOL_MODES
            .iter()
            .find(|(n, _)| *n == mode)
            .map(|(_, v)| *v)
            .ok_or_else(|| format!("unknown mode '{mode}'"))?;
        for f in flags {
            m |= MPOL_FLAGS
                .iter()
                .find(|(n, _)| n == f)
                .map(|(_, v)| *v)
                .ok_or_else(|| format!("unknown flag '{f}'"))?;
        }
        let mut mask: Vec<libc::c_ulong> = Vec::new();
        for n in parse_list(nodes)? {
            let (w, b) = (n / WORD_BITS, n % WORD_BITS);
            if mask.len() <= w {
                mask.resize(w + 1, 0);
            }
            mask[w] |= 1 << b;
        }
        Ok(MemPolicy { mode: m, mask })
    }

    /// set_mempolicy(2) for the calling thread.
    ///
    /// Errors: the OS error (EINVAL for nodes that do not exist or a mode that needs nodes).
    pub fn apply(&self) -> Result<(), String> {
        let maxnode = (self.mask.len() * WORD_BITS + 1) as libc::c_ulong;
        let ptr = if self.mask.is_empty() {
            std::ptr::null()
        } else {
            self.mask.as_ptr()
        };
        // SAFETY: the mask holds maxnode - 1 bits (or is NULL with an empty mask).
        let r = unsafe { libc::syscall(libc::SYS_set_mempolicy, self.mode, ptr, maxnode) };
        if r < 0 {
            return Err(format!("set_mempolicy: {}", nix::errno::Errno::last()));
        }
        Ok(())
    }
}

/// Parse a CPU or node list (`0-3,7`, cpuset(7)'s list format) into its numbers.
///
/// Errors: a malformed item, a range that goes down, a number of 8192 or more.
pub fn parse_list(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let num = |t: &str| -> Result<usize, String> {
            t.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n < 8192)
                .ok_or_else(|| format!("'{item}' is not a number or range below 8192"))
        };
        let (a, b) = match item.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(item)?, num(item)?),
        };
        if b < a {
            return Err(format!("'{item}' goes down"));
        }
        out.extend(a..=b);
    }
    Ok(out)
}

/// Let the calling thread run on every CPU (sched_setaffinity(2) with the whole set: the
/// kernel keeps those its cpuset allows), so that a container does not inherit the affinity of
/// the runtime's caller (a containerd pinned to housekeeping CPUs), as runc resets it.
/// Best-effort: errors are ignored.
pub fn reset_affinity() {
    let mut set = nix::sched::CpuSet::new();
    for c in 0..nix::sched::CpuSet::count() {
        let _ = set.set(c);
    }
    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
}

/// sched_setaffinity(2) of the calling thread to the CPUs `cpus`.
///
/// Errors: none of them allowed (EINVAL: outside the cpuset) or a CPU beyond the set size.
pub fn set_affinity(cpus: &[usize]) -> Result<(), String> {
    let mut set = nix::sched::CpuSet::new();
    for c in cpus {
        set.set(*c).map_err(|e| format!("CPU {c}: {e}"))?;
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .map_err(|e| format!("sched_setaffinity: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_policies_and_modes_parse() {
        assert_eq!(parse_list("0-2,7").unwrap(), [0, 1, 2, 7]);
        assert!(parse_list("3-1").is_err());
        assert!(parse_list("x").is_err());
        let a = SchedAttr::from_spec(
            "SCHED_BATCH",
            &["SCHED_FLAG_RESET_ON_FORK".into()],
            5,
            0,
            (0, 0, 0),
        )
        .unwrap();
        assert_eq!((a.policy, a.flags, a.nice, a.size), (3, 1, 5, 48));
        assert!(SchedAttr::from_spec("SCHED_NONE", &[], 0, 0, (0, 0, 0)).is_err());
        let m = MemPolicy::from_spec("MPOL_BIND", "0,65", &["MPOL_F_STATIC_NODES".into()]).unwrap();
        assert_eq!(m.mode, 2 | (1 << 15));
        assert_eq!(m.mask, [1, 2]);
    }

    /// On the real kernel, in a thread of its own: SCHED_BATCH with nice 3, and affinity to
    /// the first allowed CPU.
    #[test]
    fn a_thread_takes_its_policy_and_affinity() {
        std::thread::spawn(|| {
            let a = SchedAttr::from_spec("SCHED_BATCH", &[], 3, 0, (0, 0, 0)).unwrap();
            a.apply().unwrap();
            // SAFETY: plain syscall with pid 0.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_BATCH);
            let now = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
            let first = (0..nix::sched::CpuSet::count())
                .find(|c| now.is_set(*c).unwrap_or(false))
                .unwrap();
            set_affinity(&[first]).unwrap();
            let after = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
            let n = (0..nix::sched::CpuSet::count())
                .filter(|c| after.is_set(*c).unwrap_or(false))
                .count();
            assert_eq!(n, 1);
        })
        .join()
        .unwrap();
    }
}
