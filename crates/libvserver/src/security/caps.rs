//! Capability bounding sets: names, util-vserver's secure default, and applying a set.
//!
//! Follows capabilities(7): a capability dropped from the bounding set can never come back to
//! the process or its descendants, not through setuid-root binaries (`su`) nor file capabilities.

use caps::{CapSet, Capability, CapsHashSet};
use std::str::FromStr;

/// util-vserver's secure default bounding set (reference §2.3), plus SYS_BOOT and AUDIT_WRITE,
/// which its newer kernels kept (a guest's reboot(2) only affects its own pid namespace), but
/// without SYS_PTRACE: it lets guest root read /proc/PID/mem and fds of any process that ever
/// becomes visible in the guest (Docker drops it too). `capabilities.add = ["SYS_PTRACE"]`
/// brings it back for guests that need strace or gdb.
pub const SECURE_DEFAULT: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_DAC_READ_SEARCH,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_SYS_TTY_CONFIG,
    Capability::CAP_LEASE,
    Capability::CAP_SETFCAP,
    Capability::CAP_SYS_BOOT,
    Capability::CAP_AUDIT_WRITE,
];

/// Parse a capability name: `NET_RAW`, `net_raw` or `CAP_NET_RAW`.
///
/// Errors: a one-line message naming the unknown capability.
pub fn parse_cap(name: &str) -> Result<Capability, String> {
    let up = name.trim().to_ascii_uppercase();
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    Capability::from_str(&full)
        .map_err(|_| format!("unknown capability '{name}' (see capabilities(7), e.g. NET_RAW)"))
}

/// Parse util-vserver's `--cap` options: `CAP` (keep or add) and `!CAP` or `~CAP` (remove).
/// Returns (added, removed).
///
/// Errors: the first unknown capability, as [`parse_cap`] words it.
pub fn parse_cap_options(opts: &[String]) -> Result<(Vec<Capability>, Vec<Capability>), String> {
    let (mut add, mut remove) = (Vec::new(), Vec::new());
    for c in opts {
        match c.strip_prefix('!').or_else(|| c.strip_prefix('~')) {
            Some(n) => remove.push(parse_cap(n)?),
            None => add.push(parse_cap(c)?),
        }
    }
    Ok((add, remove))
}

/// Short lower-case name of a capability as shown to users: `net_raw`.
pub fn cap_name(c: Capability) -> String {
    c.to_string()
        .trim_start_matches("CAP_")
        .to_ascii_lowercase()
}

/// Every capability the running kernel knows (0..=cap_last_cap).
pub fn all_supported() -> CapsHashSet {
    caps::runtime::thread_all_supported()
}

/// The secure default set with `add` kept and `drop` removed (drop wins), restricted to what
/// the kernel supports.
pub fn secure_set(add: &[Capability], drop: &[Capability]) -> CapsHashSet {
    let supported = all_supported();
    let mut set: CapsHashSet = SECURE_DEFAULT.iter().copied().collect();
    set.extend(add.iter().copied());
    for d in drop {
        set.remove(d);
    }
    set.retain(|c| supported.contains(c));
    set
}

/// Capabilities to drop from the bounding set so that only `keep` remains, sorted by number.
pub fn to_drop(keep: &CapsHashSet) -> Vec<Capability> {
    let mut v: Vec<Capability> = all_supported()
        .into_iter()
        .filter(|c| !keep.contains(c))
        .collect();
    v.sort_by_key(|c| c.index());
    v
}

/// Lower the calling thread's bounding set to exclude `drop`, clear its inheritable and ambient
/// sets, and remove dropped capabilities from its effective/permitted sets only when `drop_now`
/// (a later execve(2) as root recomputes them from the bounding set anyway).
///
/// Needs CAP_SETPCAP. Errors: the capability that could not be dropped and the OS error.
pub fn apply_bounding(drop: &[Capability], drop_now: bool) -> Result<(), String> {
    for c in drop {
        caps::drop(None, CapSet::Bounding, *c)
            .map_err(|e| format!("cannot drop {c} from the bounding set: {e}"))?;
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| format!("cannot clear the ambient set: {e}"))?;
    caps::clear(None, CapSet::Inheritable)
        .map_err(|e| format!("cannot clear the inheritable set: {e}"))?;
    if drop_now {
        for c in drop {
            caps::drop(None, CapSet::Effective, *c)
                .map_err(|e| format!("cannot drop {c} from the effective set: {e}"))?;
            caps::drop(None, CapSet::Permitted, *c)
                .map_err(|e| format!("cannot drop {c} from the permitted set: {e}"))?;
        }
    }
    Ok(())
}

/// Parse a `CapBnd`/`CapEff` hex mask from /proc/PID/status into capabilities.
pub fn caps_from_mask(mask: u64) -> Vec<Capability> {
    let mut v: Vec<Capability> = caps::all()
        .into_iter()
        .filter(|c| mask & c.bitmask() != 0)
        .collect();
    v.sort_by_key(|c| c.index());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_cap("net_raw").unwrap(), Capability::CAP_NET_RAW);
        assert_eq!(
            parse_cap("CAP_SYS_ADMIN").unwrap(),
            Capability::CAP_SYS_ADMIN
        );
        assert_eq!(parse_cap("Chown").unwrap(), Capability::CAP_CHOWN);
        assert!(parse_cap("fly").unwrap_err().contains("'fly'"));
        assert_eq!(cap_name(Capability::CAP_NET_ADMIN), "net_admin");
    }

    #[test]
    fn secure_set_drops_dangerous() {
        let s = secure_set(&[Capability::CAP_NET_RAW], &[Capability::CAP_SYS_CHROOT]);
        assert!(s.contains(&Capability::CAP_NET_RAW));
        assert!(!s.contains(&Capability::CAP_SYS_CHROOT));
        assert!(!secure_set(&[], &[]).contains(&Capability::CAP_SYS_PTRACE));
        for c in [
            Capability::CAP_SYS_ADMIN,
            Capability::CAP_NET_ADMIN,
            Capability::CAP_SYS_MODULE,
            Capability::CAP_MKNOD,
            Capability::CAP_SYS_RAWIO,
        ] {
            assert!(!s.contains(&c));
            assert!(to_drop(&s).contains(&c));
        }
    }

    #[test]
    fn cap_options() {
        let opts = [
            "NET_RAW".to_string(),
            "!chown".to_string(),
            "~CAP_KILL".to_string(),
        ];
        let (add, remove) = parse_cap_options(&opts).unwrap();
        assert_eq!(add, vec![Capability::CAP_NET_RAW]);
        assert_eq!(remove, vec![Capability::CAP_CHOWN, Capability::CAP_KILL]);
        assert!(parse_cap_options(&["!fly".to_string()]).is_err());
    }

    #[test]
    fn mask_parse() {
        let v = caps_from_mask(0b101);
        assert_eq!(
            v,
            vec![Capability::CAP_CHOWN, Capability::CAP_DAC_READ_SEARCH]
        );
    }
}
