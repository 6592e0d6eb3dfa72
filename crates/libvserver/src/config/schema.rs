//! The schema of `NAME.toml`. Unknown keys are refused (`deny_unknown_fields`).

use super::{FieldError, KeySeg};
use crate::security::caps;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::PathBuf;

/// Lowest context id (xid) a guest may have; 0 is the host and 1 the spectator context.
pub const XID_MIN: u32 = 2;
/// Highest static context id, as util-vserver (dynamic ids start at 49152).
pub const XID_MAX_STATIC: u32 = 49151;
/// First context id assigned automatically by `build`, as util-vserver's `context.start`.
pub const XID_AUTO_START: u32 = 40000;
/// First dynamic context id (used by `chcontext` without `--xid`).
pub const XID_DYNAMIC_START: u32 = 49152;
/// Highest dynamic context id.
pub const XID_DYNAMIC_END: u32 = 65534;

/// A guest's parameters as written in `NAME.toml`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    /// Context id (xid), unique across guests: names the cgroup and veths.
    pub context: u32,
    /// Host name inside the guest (UTS namespace); defaults to the guest name.
    #[serde(default)]
    pub hostname: Option<String>,
    /// NIS domain name inside the guest.
    #[serde(default)]
    pub domainname: Option<String>,
    /// Guest root directory; defaults to `ROOTBASE/NAME`.
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// Start groups this guest belongs to (`vservers --mark M start`).
    #[serde(default)]
    pub mark: Vec<String>,
    /// Guests that must run before this one starts (and stop only after it): `vservers`
    /// starts them first, even when they do not carry the mark.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends: Vec<String>,
    /// Left out of group starts (`vservers --mark M start`); `vserver NAME start` still works.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// Run the guest in its own user namespace: its uids and gids 0-65535 are host ids
    /// `context * 65536 + id`, so its root is nobody on the host. Files keep their ordinary
    /// owners through an idmapped mount of the root, or a one-time shift of the tree's owners
    /// where the file system cannot idmap (`vserver NAME userns-unshift` undoes it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub userns: bool,
    /// Network interfaces; none means loopback only.
    #[serde(default)]
    pub interface: Vec<InterfaceConfig>,
    /// Port forwards from the host to the guest (veth guests).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward: Vec<ForwardConfig>,
    /// Seconds between checkpoints of the running guest's traffic counters into
    /// `ROOTBASE/.accounting/NAME.json` (the most a host crash can lose); 0 saves them at stop
    /// only. Default 60.
    #[serde(
        default = "default_accounting_interval",
        skip_serializing_if = "is_default_accounting_interval"
    )]
    pub accounting_interval: u32,
    /// Changes to the secure default capability bounding set.
    #[serde(default)]
    pub capabilities: CapabilitiesConfig,
    /// How the guest is booted and shut down.
    #[serde(default)]
    pub init: InitConfig,
    /// How the guest is stopped.
    #[serde(default)]
    pub stop: StopConfig,
    /// Host directories mounted into the guest at start.
    #[serde(default)]
    pub mount: Vec<MountConfig>,
    /// Resource limits of the whole guest.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Disk quota of the guest.
    #[serde(default)]
    pub disk: DiskConfig,
    /// Per-process rlimits (setrlimit(2)) of the init and of everything exec'd or entered:
    /// `nofile = 4096` (soft and hard), `"1024:4096"` (soft:hard), `"unlimited"`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub rlimits: std::collections::BTreeMap<String, RlimitValue>,
    /// Changes to the default seccomp filter of the guest's processes.
    #[serde(default, skip_serializing_if = "SeccompConfig::is_default")]
    pub seccomp: SeccompConfig,
}

/// Per-guest changes to the default seccomp profile (`[seccomp]`): system calls by name as
/// syscalls(2) spells them (any architecture the filter covers: x86_64, i386, x32 on amd64).
/// `deny` wins over everything (the call fails with EPERM); `allow` lets the call through
/// without the default profile's conditions (capability checks, argument filters such as
/// socket families, clone flags, TIOCSTI): each entry widens what guest root can reach in the
/// host kernel.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SeccompConfig {
    /// System calls allowed unconditionally on top of the default profile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// System calls refused (EPERM), whatever the default profile or `allow` say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

impl SeccompConfig {
    /// True when nothing is changed (the table is then left out of a written NAME.toml).
    pub fn is_default(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// How a guest's disk quota (`[disk] size`, `inodes`) is enforced.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DiskBackend {
    /// The guest lives on its own fixed-size ext4 image `ROOT.img`, loop-mounted on its root
    /// while it runs (any host file system).
    #[default]
    Image,
    /// A project quota with project id = the context id on the root's ext4 or xfs file
    /// system (mounted with `prjquota`); `df` inside shows the limit.
    Project,
    /// A btrfs quota group limit on the root's subvolume (space only; `df` inside shows the
    /// whole file system).
    Btrfs,
}

impl std::fmt::Display for DiskBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DiskBackend::Image => "image",
            DiskBackend::Project => "project",
            DiskBackend::Btrfs => "btrfs",
        })
    }
}

/// Disk quota of a guest: `size` (and `inodes`) enforced by `backend` (default `image`: a
/// fixed-size ext4 image `ROOT.img`, loop-mounted on its root while it runs). Set at build
/// time (`--disk-size`, `--disk-backend`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// Space limit: bytes with K, M, G or T.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Inode limit (number of files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes: Option<u64>,
    /// How `size` and `inodes` are enforced; default `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<DiskBackend>,
    /// Template guest: the name of the base guest whose root this guest shares read-only
    /// through overlayfs (its own changes live in `ROOT.overlay/upper`). Set by
    /// `build -m template-guest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Paths inside the guest (absolute, e.g. `/etc`) that `unify` leaves alone; default
    /// `["/etc"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unify_exclude: Option<Vec<String>>,
}

/// An rlimit value as written in NAME.toml.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum RlimitValue {
    /// Soft and hard limit.
    Number(u64),
    /// `"N"`, `"SOFT:HARD"` or `"unlimited"` (either side may be `unlimited`).
    Text(String),
}

/// Names of the rlimits accepted in `[rlimits]` (getrlimit(2) without the `RLIMIT_` prefix).
pub const RLIMIT_NAMES: &[&str] = &[
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// The `[rlimits]` name of a resource number (for messages).
pub fn rlimit_name(res: libc::__rlimit_resource_t) -> &'static str {
    RLIMIT_NAMES
        .iter()
        .find(|n| {
            parse_rlimit(n, &RlimitValue::Number(0))
                .map(|(r, _, _)| r == res)
                .unwrap_or(false)
        })
        .copied()
        .unwrap_or("?")
}

/// Resolve an rlimit into (resource, soft, hard) for setrlimit(2); `u64::MAX` is unlimited.
///
/// Errors: an unknown name or a malformed value, as a one-line message.
pub fn parse_rlimit(
    name: &str,
    v: &RlimitValue,
) -> Result<(libc::__rlimit_resource_t, u64, u64), String> {
    let res = match name {
        "as" => libc::RLIMIT_AS,
        "core" => libc::RLIMIT_CORE,
        "cpu" => libc::RLIMIT_CPU,
        "data" => libc::RLIMIT_DATA,
        "fsize" => libc::RLIMIT_FSIZE,
        "locks" => libc::RLIMIT_LOCKS,
        "memlock" => libc::RLIMIT_MEMLOCK,
        "msgqueue" => libc::RLIMIT_MSGQUEUE,
        "nice" => libc::RLIMIT_NICE,
        "nofile" => libc::RLIMIT_NOFILE,
        "nproc" => libc::RLIMIT_NPROC,
        "rss" => libc::RLIMIT_RSS,
        "rtprio" => libc::RLIMIT_RTPRIO,
        "rttime" => libc::RLIMIT_RTTIME,
        "sigpending" => libc::RLIMIT_SIGPENDING,
        "stack" => libc::RLIMIT_STACK,
        _ => {
            return Err(format!(
                "unknown rlimit '{name}'; one of: {}",
                RLIMIT_NAMES.join(", ")
            ))
        }
    };
    let one = |s: &str| -> Result<u64, String> {
        match s.trim() {
            "unlimited" | "infinity" | "inf" => Ok(u64::MAX),
            t => t
                .parse()
                .map_err(|_| format!("'{t}' is not a number or 'unlimited'")),
        }
    };
    let (soft, hard) = match v {
        RlimitValue::Number(n) => (*n, *n),
        RlimitValue::Text(t) => match t.split_once(':') {
            Some((s, h)) => (one(s)?, one(h)?),
            None => (one(t)?, one(t)?),
        },
    };
    if soft > hard {
        return Err(format!("soft limit {soft} is above the hard limit {hard}"));
    }
    Ok((res, soft, hard))
}

/// Resource limits of a guest, in the user's units (applied to its cgroup; `nice` to its
/// processes). Unset keys mean no limit.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most processes (and threads) at once in the guest (util-vserver's nproc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nproc: Option<u64>,
    /// Hard memory limit: bytes with an optional K, M, G or T suffix (`"512M"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Soft memory limit (reclaim pressure above it), same units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_soft: Option<String>,
    /// Swap the guest may use besides `memory`, same units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<String>,
    /// Hard CPU cap: a percentage of one CPU (`"50%"`) or a number of CPUs (`"1.5"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Relative CPU weight, 1-10000 (100 is the default share).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u32>,
    /// CPUs the guest may run on, a cpuset list such as `"0-1"` or `"0,2"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<String>,
    /// Relative block I/O weight, 1-10000 (100 is the default share; needs BFQ on v1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_weight: Option<u32>,
    /// Read bandwidth cap on the disk holding the guest's root: bytes per second with K, M, G.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_read_bps: Option<String>,
    /// Write bandwidth cap on that disk: bytes per second with K, M, G.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_write_bps: Option<String>,
    /// Read operations per second on that disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_read_iops: Option<u64>,
    /// Write operations per second on that disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_write_iops: Option<u64>,
    /// Nice level of every process of the guest, -20..19; root inside cannot lower it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nice: Option<i32>,
    /// I/O priority of every process of the guest (ioprio_set(2)): `"be:N"` (best effort,
    /// level 0-7, 7 the lowest) or `"idle"`; root inside cannot raise it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ionice: Option<String>,
}

/// The ioprio(2) value of an `ionice` setting: `"be:N"` (class 2, level N in 0-7) or `"idle"`
/// (class 3).
///
/// Errors: a one-line reason naming the text.
pub fn parse_ionice(text: &str) -> Result<u32, String> {
    const CLASS_SHIFT: u32 = 13;
    match text.trim() {
        "idle" => Ok(3 << CLASS_SHIFT),
        t => match t.strip_prefix("be:").map(str::parse::<u32>) {
            Some(Ok(n)) if n <= 7 => Ok((2 << CLASS_SHIFT) | n),
            _ => Err(format!(
                "'{text}' is not an I/O priority; give \"be:N\" (N 0-7, 7 the lowest) or \"idle\""
            )),
        },
    }
}

/// The ioprio values a guest whose `ionice` is `value` (from [`parse_ionice`]) may still set:
/// the same or lower best-effort levels, and idle.
pub fn ioprio_allowed(value: u32) -> Vec<u64> {
    let idle = (0u32..8).map(|l| u64::from((3 << 13) | l));
    if value >> 13 == 3 {
        return idle.collect();
    }
    let level = value & 7;
    (level..8)
        .map(|l| u64::from((2 << 13) | l))
        .chain(idle)
        .collect()
}

/// Parse a size: bytes with an optional K, M, G or T suffix (powers of 1024), `"max"` for none.
///
/// Errors: a one-line reason naming the text.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let not_size = || format!("'{text}' is not a size like 512M (bytes, or K, M, G, T)");
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                'B' => 1,
                _ => return Err(not_size()),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: f64 = num.trim().parse().map_err(|_| not_size())?;
    if n.is_nan() || n < 0.0 || !n.is_finite() {
        return Err(not_size());
    }
    Ok((n * mult as f64) as u64)
}

/// Parse a CPU cap into (quota, period) microseconds: `"50%"` of one CPU or `"1.5"` CPUs.
///
/// Errors: a one-line reason naming the text.
pub fn parse_cpu(text: &str) -> Result<(u64, u64), String> {
    const PERIOD: u64 = 100_000;
    let t = text.trim();
    let cpus: f64 = match t.strip_suffix('%') {
        Some(p) => {
            p.trim()
                .parse::<f64>()
                .map_err(|_| format!("'{text}' is not a percentage"))?
                / 100.0
        }
        None => t.parse().map_err(|_| {
            format!("'{text}' is neither a percentage (50%) nor a number of CPUs (1.5)")
        })?,
    };
    if cpus.is_nan() || cpus <= 0.0 || cpus > 4096.0 {
        return Err(format!(
            "'{text}' must be more than 0 and at most 4096 CPUs"
        ));
    }
    Ok(((cpus * PERIOD as f64).round().max(1000.0) as u64, PERIOD))
}

/// A host directory bind-mounted into the guest. The target is resolved inside the guest root
/// (after pivot_root), so a symlink in the guest tree cannot send it elsewhere on the host.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MountConfig {
    /// Absolute host path.
    pub source: PathBuf,
    /// Absolute path inside the guest.
    pub target: PathBuf,
    /// Read-only (default true).
    #[serde(default = "default_true")]
    pub readonly: bool,
}

fn default_accounting_interval() -> u32 {
    60
}

fn is_default_accounting_interval(v: &u32) -> bool {
    *v == default_accounting_interval()
}

fn default_true() -> bool {
    true
}

/// One or several strings: `"a"` or `["a", "b"]` in NAME.toml; written back as a plain string
/// when there is one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StrList(pub Vec<String>);

impl<'de> Deserialize<'de> for StrList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        match OneOrMany::deserialize(d) {
            Ok(OneOrMany::One(s)) => Ok(StrList(vec![s])),
            Ok(OneOrMany::Many(v)) => Ok(StrList(v)),
            Err(_) => Err(serde::de::Error::custom(
                "expected a string or a list of strings",
            )),
        }
    }
}

impl Serialize for StrList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

impl StrList {
    /// True when there is no string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How a guest interface reaches the network.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// The guest's own network namespace and a veth pair on a host bridge managed by vserver.
    #[default]
    Veth,
    /// The guest's own network namespace and a macvlan interface on host NIC `dev`: the guest
    /// appears on that NIC's LAN segment with its own MAC (the host itself cannot reach it).
    Macvlan,
    /// Linux-VServer's own model: the guest shares the host's network stack but may use only its
    /// own addresses, enforced by cgroup eBPF socket hooks (bind, connect, sendmsg, socket).
    Classic,
}

impl NetMode {
    /// The name used in NAME.toml and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            NetMode::Veth => "veth",
            NetMode::Macvlan => "macvlan",
            NetMode::Classic => "classic",
        }
    }
}

/// One network interface of a guest.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    /// How the interface reaches the network; `veth` when absent.
    #[serde(default, skip_serializing_if = "is_default_mode")]
    pub mode: NetMode,
    /// Address(es) with prefix length, IPv4 and IPv6: `"10.77.0.2/24"` or
    /// `["10.77.0.2/24", "fd77::2/64"]`.
    #[serde(default)]
    pub address: StrList,
    /// veth: host bridge the guest's veth is attached to (created on first use).
    #[serde(default = "default_bridge", skip_serializing_if = "is_default_bridge")]
    pub bridge: String,
    /// macvlan: the host NIC the macvlan sits on (required). classic: a host interface vserver
    /// adds the addresses to at start and removes them from at stop; when absent, the
    /// addresses must already be the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    /// veth and macvlan: the default gateway per address family. veth: also the bridge's host
    /// address; defaults to the first address of each subnet (the second when the guest has
    /// the first). macvlan: no default (the LAN's router).
    #[serde(default, skip_serializing_if = "StrList::is_empty")]
    pub gateway: StrList,
    /// veth and macvlan: interface name inside the guest; defaults to `eth<index>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// veth: masquerade the guest's outbound traffic behind the host's address (NAT).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nat: bool,
    /// veth and macvlan: MTU in bytes (1280-65535); default the kernel's 1500. A larger one on
    /// every veth guest of a bridge (the bridge takes the smallest of its ports) speeds up
    /// traffic between the host and its guests; traffic leaving the host still follows the
    /// uplink's MTU (path MTU discovery, TCP MSS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// True when `a` and `b` are of one family and share the first `prefix` bits.
fn same_subnet(a: IpAddr, b: IpAddr, prefix: u8) -> bool {
    let bits = |ip: IpAddr| match ip {
        IpAddr::V4(x) => (u128::from(u32::from(x)) << 96, 32u32),
        IpAddr::V6(x) => (u128::from(x), 128u32),
    };
    let ((x, fx), (y, fy)) = (bits(a), bits(b));
    if fx != fy {
        return false;
    }
    let p = u32::from(prefix).min(fx);
    p == 0 || (x ^ y) >> (128 - p) == 0
}

fn is_default_bridge(b: &str) -> bool {
    b == default_bridge()
}

fn is_default_mode(m: &NetMode) -> bool {
    *m == NetMode::Veth
}

/// A port forward from the host to the guest (veth guests): connections to any host address
/// (127.0.0.1 and ::1 included) on `host_port` reach the guest's first address of the same
/// family on `guest_port`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// Port on the host, 1-65535.
    pub host_port: u16,
    /// Port in the guest, 1-65535.
    pub guest_port: u16,
    /// `tcp` (default) or `udp`.
    #[serde(default = "default_protocol")]
    pub protocol: String,
}

fn default_protocol() -> String {
    String::from("tcp")
}

/// Default host bridge name.
pub fn default_bridge() -> String {
    String::from("vsbr0")
}

/// Capability bounding set changes relative to util-vserver's secure default.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CapabilitiesConfig {
    /// Capabilities to keep in addition (names with or without `CAP_`, any case).
    #[serde(default)]
    pub add: Vec<String>,
    /// Capabilities to remove from the default set.
    #[serde(default)]
    pub drop: Vec<String>,
}

/// How the guest's pid 1 is chosen.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InitStyle {
    /// vserver's own minimal init: reaps zombies, forwards signals, runs `init.command`.
    #[default]
    Builtin,
    /// The guest's `/sbin/init` (or `init.command`) as pid 1.
    Plain,
    /// The built-in init runs the guest's SysV rc scripts for `init.runlevel`.
    Sysv,
    /// The guest's systemd as pid 1 (`/sbin/init` or `init.command`), given what systemd's
    /// container interface promises (systemd.io/CONTAINER_INTERFACE): /run, /run/lock and /tmp
    /// as tmpfs, a delegated cgroup tree, `container=vserver`, a notify socket for readiness,
    /// SIGRTMIN+3 to halt. A `plain` guest whose init is systemd is started the same way.
    Systemd,
}

/// Boot and shutdown of the guest.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    /// Init style.
    #[serde(default)]
    pub style: InitStyle,
    /// Builtin: command started at boot (argv); plain: replaces `/sbin/init`.
    #[serde(default)]
    pub command: Vec<String>,
    /// Command run inside the guest at stop, before the kill sequence (argv).
    #[serde(default)]
    pub stop_command: Vec<String>,
    /// SysV runlevel to start (style `sysv`); default 3.
    #[serde(default)]
    pub runlevel: Option<u8>,
    /// systemd guests: seconds `start` waits for the guest's systemd to report that it has
    /// finished booting (READY=1 on the notify socket); past it the guest is halted and the
    /// start fails. 0 returns as soon as the init runs. Default [`DEFAULT_READY_TIMEOUT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_timeout: Option<u32>,
    /// Builtin init: start `command` again when it ends: `no` (default), `on-failure` (a
    /// non-zero exit or a signal), `always`. At most [`RESTART_BURST`] restarts within
    /// [`RESTART_WINDOW_SECS`] seconds; then the init stops restarting and says so on the
    /// console.
    #[serde(default, skip_serializing_if = "RestartPolicy::is_no")]
    pub restart: RestartPolicy,
}

/// When the builtin init starts its command again (`init.restart`).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never.
    #[default]
    No,
    /// After a non-zero exit or a death by signal.
    OnFailure,
    /// After every exit.
    Always,
}

impl RestartPolicy {
    fn is_no(&self) -> bool {
        *self == RestartPolicy::No
    }
}

/// Most restarts of the builtin init's command within [`RESTART_WINDOW_SECS`].
pub const RESTART_BURST: u32 = 5;
/// The window of [`RESTART_BURST`], seconds.
pub const RESTART_WINDOW_SECS: u64 = 60;

/// Seconds `start` waits for a systemd guest to finish booting, unless `init.ready_timeout`
/// says otherwise (systemd's own DefaultTimeoutStartSec).
pub const DEFAULT_READY_TIMEOUT: u32 = 90;
/// Seconds between the stop signal and SIGKILL of a guest whose init is systemd, unless
/// `stop.kill_timeout` says otherwise: its own clean shutdown stops every unit and flushes the
/// journal first.
pub const SYSTEMD_KILL_TIMEOUT: u32 = 30;
/// Seconds between the stop signal and SIGKILL of other guests, unless `stop.kill_timeout`
/// says otherwise (util-vserver's killseq `15 5 9`).
pub const DEFAULT_KILL_TIMEOUT: u32 = 5;

/// Stop behaviour.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StopConfig {
    /// Seconds between the stop signal and SIGKILL of the whole guest: default
    /// [`DEFAULT_KILL_TIMEOUT`] (util-vserver's killseq `15 5 9`), [`SYSTEMD_KILL_TIMEOUT`] for
    /// systemd guests; see [`StopConfig::kill_timeout_secs`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_timeout: Option<u32>,
    /// Signal sent to the guest's init to stop it (default `TERM`, and `RTMIN+3` for systemd;
    /// busybox init wants `USR2`, sysvinit `PWR` with a matching inittab line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// What a reboot from inside (reboot(2) RESTART, what `reboot` ends in) does: `restart`
    /// (default: a fresh start), `stop`, or `ignore` (the guest's reboot(2) fails with EPERM).
    #[serde(default = "default_on_reboot")]
    pub on_reboot: GuestAction,
    /// What a halt or power-off from inside (reboot(2) HALT, POWER_OFF) does: `stop`
    /// (default), `restart` or `ignore`.
    #[serde(default = "default_on_halt")]
    pub on_halt: GuestAction,
}

/// The host's answer to a reboot or halt requested inside a guest (util-vserver's vshelper).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GuestAction {
    /// Start the guest afresh once it has ended.
    Restart,
    /// Leave it stopped.
    Stop,
    /// Refuse the request: reboot(2) fails with EPERM inside.
    Ignore,
}

fn default_on_reboot() -> GuestAction {
    GuestAction::Restart
}

fn default_on_halt() -> GuestAction {
    GuestAction::Stop
}

impl Default for StopConfig {
    fn default() -> Self {
        StopConfig {
            kill_timeout: None,
            signal: None,
            on_reboot: default_on_reboot(),
            on_halt: default_on_halt(),
        }
    }
}

/// Parse a signal name (`TERM`, `SIGTERM`, `RTMIN+3`, `SIGRTMAX-1`) or number into its number
/// (signal(7); real-time signals count from the C library's SIGRTMIN, 34 with glibc).
///
/// Errors: a one-line message naming the text.
pub fn parse_signal_name(s: &str) -> Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&n) {
            return Ok(n);
        }
        return nix::sys::signal::Signal::try_from(n)
            .map(|x| x as i32)
            .map_err(|_| format!("unknown signal {s}"));
    }
    let up = s.to_ascii_uppercase();
    let bare = up.strip_prefix("SIG").unwrap_or(&up);
    let rt = |base: i32, rest: &str| -> Option<i32> {
        let off = match rest.as_bytes().first() {
            None => 0,
            Some(b'+') => rest[1..].parse::<i32>().ok()?,
            Some(b'-') => -rest[1..].parse::<i32>().ok()?,
            Some(_) => return None,
        };
        Some(base + off).filter(|n| (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(n))
    };
    if let Some(rest) = bare.strip_prefix("RTMIN") {
        return rt(libc::SIGRTMIN(), rest).ok_or_else(|| format!("unknown signal '{s}'"));
    }
    if let Some(rest) = bare.strip_prefix("RTMAX") {
        return rt(libc::SIGRTMAX(), rest).ok_or_else(|| format!("unknown signal '{s}'"));
    }
    format!("SIG{bare}")
        .parse::<nix::sys::signal::Signal>()
        .map(|x| x as i32)
        .map_err(|_| format!("unknown signal '{s}'"))
}

impl StopConfig {
    /// `kill_timeout` in seconds, or the default of the guest's init: [`SYSTEMD_KILL_TIMEOUT`]
    /// when it is systemd, else [`DEFAULT_KILL_TIMEOUT`].
    pub fn kill_timeout_secs(&self, systemd: bool) -> u32 {
        self.kill_timeout.unwrap_or(if systemd {
            SYSTEMD_KILL_TIMEOUT
        } else {
            DEFAULT_KILL_TIMEOUT
        })
    }
}

impl InitConfig {
    /// `ready_timeout` in seconds, or [`DEFAULT_READY_TIMEOUT`].
    pub fn ready_timeout_secs(&self) -> u32 {
        self.ready_timeout.unwrap_or(DEFAULT_READY_TIMEOUT)
    }
}

/// Parse `ADDR/PREFIX` into an address and a prefix length valid for its family.
///
/// Errors: a one-line reason naming the text.
pub fn parse_cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let (a, p) = text
        .split_once('/')
        .ok_or_else(|| format!("'{text}' needs a prefix length, e.g. 10.0.0.2/24"))?;
    let addr: IpAddr = a
        .parse()
        .map_err(|_| format!("'{a}' is not an IPv4 or IPv6 address"))?;
    let prefix: u8 = p
        .parse()
        .map_err(|_| format!("'{p}' is not a prefix length"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(format!("prefix /{prefix} is longer than {max} bits"));
    }
    if addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() {
        return Err(format!("'{addr}' cannot be a guest address"));
    }
    Ok((addr, prefix))
}

/// The default gateway of a guest address: the first address of the subnet, or the second when
/// the guest itself has the first. None for /31, /32, /127 and /128.
pub fn default_gateway(addr: IpAddr, prefix: u8) -> Option<IpAddr> {
    match addr {
        IpAddr::V4(a) => {
            if prefix >= 31 {
                return None;
            }
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            let net = u32::from(a) & mask;
            let first = net + 1;
            let gw = if first == u32::from(a) {
                first + 1
            } else {
                first
            };
            Some(IpAddr::V4(gw.into()))
        }
        IpAddr::V6(a) => {
            if prefix >= 127 {
                return None;
            }
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            let net = u128::from(a) & mask;
            let first = net + 1;
            let gw = if first == u128::from(a) {
                first + 1
            } else {
                first
            };
            Some(IpAddr::V6(gw.into()))
        }
    }
}

/// Check a host name (RFC 1123 labels, at most 64 bytes as the UTS namespace allows).
pub fn validate_hostname(h: &str) -> Result<(), String> {
    if h.is_empty() || h.len() > 64 {
        return Err(format!("host name '{h}' must be 1 to 64 characters"));
    }
    for label in h.split('.') {
        if label.is_empty()
            || label.starts_with('-')
            || label.ends_with('-')
            || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(format!(
                "host name '{h}' is not valid: labels of letters, digits and '-', separated by '.'"
            ));
        }
    }
    Ok(())
}

/// Check a Linux interface name (1-15 bytes, no '/', whitespace or ':').
pub fn validate_ifname(n: &str) -> Result<(), String> {
    if n.is_empty() || n.len() > 15 || n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!(
            "interface name '{n}' must be 1-15 characters without '/', ':' or spaces"
        ));
    }
    Ok(())
}

impl GuestConfig {
    /// Check values that serde cannot: ranges, addresses, names, capability names.
    pub fn validate(&self) -> Result<(), FieldError> {
        use KeySeg::{Index, Key};
        if !(XID_MIN..=XID_MAX_STATIC).contains(&self.context) {
            return Err(FieldError::new(
                vec![Key("context")],
                format!(
                    "context id {} is out of range {XID_MIN}-{XID_MAX_STATIC}",
                    self.context
                ),
            ));
        }
        if let Some(h) = &self.hostname {
            validate_hostname(h).map_err(|m| FieldError::new(vec![Key("hostname")], m))?;
        }
        if let Some(d) = &self.domainname {
            if d.len() > 64 || d.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(FieldError::new(
                    vec![Key("domainname")],
                    "at most 64 characters, no spaces",
                ));
            }
        }
        if let Some(r) = &self.root {
            if !r.is_absolute() {
                return Err(FieldError::new(
                    vec![Key("root")],
                    "guest root must be an absolute path",
                ));
            }
        }
        for (i, m) in self.mark.iter().enumerate() {
            if m.is_empty() || m.chars().any(|c| c.is_whitespace() || c == ',' || c == '!') {
                return Err(FieldError::new(
                    vec![Key("mark"), Index(i)],
                    format!("mark '{m}' must be a word without spaces, ',' or '!'"),
                ));
            }
        }
        for (i, d) in self.depends.iter().enumerate() {
            crate::paths::validate_guest_name(d)
                .map_err(|m| FieldError::new(vec![Key("depends"), Index(i)], m))?;
        }
        self.validate_network()?;
        if self.userns {
            crate::security::userns::host_base(self.context)
                .map_err(|m| FieldError::new(vec![Key("context")], m))?;
            // The mounts a userns guest gets (its root, binds, device nodes) are moved into its
            // mount namespace, not inherited, so the kernel does not lock their attributes:
            // with SYS_ADMIN its root could remount them (read-only host binds writable,
            // device nodes of the tree usable).
            if let Some(i) =
                self.capabilities.add.iter().position(|c| {
                    caps::parse_cap(c).ok() == Some(::caps::Capability::CAP_SYS_ADMIN)
                })
            {
                return Err(FieldError::new(
                    vec![Key("capabilities"), Key("add"), Index(i)],
                    "a user-namespace guest cannot keep SYS_ADMIN: it could remount the \
                     read-only and nodev mounts vserver gives it; remove it or userns",
                ));
            }
            if let Some(i) = self
                .interface
                .iter()
                .position(|i| i.mode == NetMode::Classic)
            {
                return Err(FieldError::new(
                    vec![Key("userns")],
                    format!(
                        "a user-namespace guest needs its own network namespace (sysfs and \
                         the guest's sysctls belong to it), but interface[{i}] is classic; \
                         use veth or macvlan, or remove userns"
                    ),
                ));
            }
        }
        for (list, key) in [
            (&self.capabilities.add, "add"),
            (&self.capabilities.drop, "drop"),
        ] {
            for (i, c) in list.iter().enumerate() {
                caps::parse_cap(c).map_err(|m| {
                    FieldError::new(vec![Key("capabilities"), Key(key), Index(i)], m)
                })?;
            }
        }
        for (list, key) in [(&self.seccomp.allow, "allow"), (&self.seccomp.deny, "deny")] {
            for (i, n) in list.iter().enumerate() {
                let at = || vec![Key("seccomp"), Key(key), Index(i)];
                if !crate::security::seccomp::syscall_known(n) {
                    return Err(FieldError::new(
                        at(),
                        format!("unknown system call '{n}' (names as in syscalls(2), e.g. keyctl)"),
                    ));
                }
                if key == "deny" && self.seccomp.allow.contains(n) {
                    return Err(FieldError::new(
                        at(),
                        format!("system call '{n}' is both in seccomp.allow and seccomp.deny"),
                    ));
                }
            }
        }
        for (i, mc) in self.mount.iter().enumerate() {
            let at = |k| vec![Key("mount"), Index(i), Key(k)];
            if !mc.source.is_absolute() {
                return Err(FieldError::new(
                    at("source"),
                    "must be an absolute host path",
                ));
            }
            if !mc.target.is_absolute() || mc.target.components().any(|c| c.as_os_str() == "..") {
                return Err(FieldError::new(
                    at("target"),
                    "must be an absolute path without '..'",
                ));
            }
            if mc.target.to_str().is_none() {
                return Err(FieldError::new(at("target"), "must be UTF-8"));
            }
        }
        for (name, v) in &self.rlimits {
            parse_rlimit(name, v).map_err(|m| {
                FieldError::new(vec![Key("rlimits"), KeySeg::Name(name.clone())], m)
            })?;
        }
        if let Some(sz) = &self.disk.size {
            let b =
                parse_size(sz).map_err(|m| FieldError::new(vec![Key("disk"), Key("size")], m))?;
            if b < (8 << 20) {
                return Err(FieldError::new(
                    vec![Key("disk"), Key("size")],
                    "at least 8M",
                ));
            }
        }
        if self.disk.backend.is_some() && self.disk.size.is_none() {
            return Err(FieldError::new(
                vec![Key("disk"), Key("backend")],
                "needs disk.size (the limit it enforces)",
            ));
        }
        if self.disk.backend == Some(DiskBackend::Btrfs) && self.disk.inodes.is_some() {
            return Err(FieldError::new(
                vec![Key("disk"), Key("inodes")],
                "btrfs quota groups limit space only; remove inodes or use backend image or project",
            ));
        }
        if let Some(t) = &self.disk.template {
            crate::paths::validate_guest_name(t)
                .map_err(|m| FieldError::new(vec![Key("disk"), Key("template")], m))?;
            if self.disk.size.is_some() {
                return Err(FieldError::new(
                    vec![Key("disk"), Key("template")],
                    "a template guest cannot also have a disk image (disk.size)",
                ));
            }
        }
        for x in self.disk.unify_exclude.iter().flatten() {
            if !x.starts_with('/') || x.split('/').any(|c| c == "..") {
                return Err(FieldError::new(
                    vec![Key("disk"), Key("unify_exclude")],
                    format!("'{x}' must be an absolute path inside the guest, without '..'"),
                ));
            }
        }
        let l = &self.limits;
        let at = |k| vec![Key("limits"), Key(k)];
        for (k, v) in [
            ("memory", &l.memory),
            ("memory_soft", &l.memory_soft),
            ("swap", &l.swap),
        ] {
            if let Some(v) = v {
                let b = parse_size(v).map_err(|m| FieldError::new(at(k), m))?;
                // Below a few MiB the guest's init is killed at once: refused, not started.
                if k == "memory" && b < (8 << 20) {
                    return Err(FieldError::new(
                        at(k),
                        format!("'{v}' is too small to run a guest; at least 8M"),
                    ));
                }
            }
        }
        if let Some(c) = &l.cpu {
            parse_cpu(c).map_err(|m| FieldError::new(at("cpu"), m))?;
        }
        if let Some(w) = l.cpu_weight {
            if !(1..=10000).contains(&w) {
                return Err(FieldError::new(at("cpu_weight"), "must be 1-10000"));
            }
        }
        if let Some(c) = &l.cpuset {
            let ncpu = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            let online = std::fs::read_to_string("/sys/devices/system/cpu/possible")
                .ok()
                .and_then(|t| t.trim().rsplit(['-', ',']).next()?.parse::<usize>().ok())
                .map(|last| last + 1)
                .unwrap_or(ncpu);
            let ok = !c.is_empty()
                && c.split(',').all(|r| {
                    let (a, b) = r.split_once('-').unwrap_or((r, r));
                    match (a.parse::<usize>(), b.parse::<usize>()) {
                        (Ok(a), Ok(b)) => {
                            a <= b
                                && b < online
                                && !r.contains('+')
                                && r.chars().all(|ch| ch.is_ascii_digit() || ch == '-')
                        }
                        _ => false,
                    }
                });
            if !ok {
                return Err(FieldError::new(
                    at("cpuset"),
                    format!(
                        "'{c}' is not a CPU list like 0-1 or 0,2 of this host's CPUs (0-{})",
                        online.saturating_sub(1)
                    ),
                ));
            }
        }
        for (k, v) in [
            ("io_read_bps", &l.io_read_bps),
            ("io_write_bps", &l.io_write_bps),
        ] {
            if let Some(v) = v {
                let b = parse_size(v).map_err(|m| FieldError::new(at(k), m))?;
                if b == 0 || b == u64::MAX {
                    return Err(FieldError::new(
                        at(k),
                        "must be a positive rate such as \"10M\"",
                    ));
                }
            }
        }
        for (k, v) in [
            ("io_read_iops", l.io_read_iops),
            ("io_write_iops", l.io_write_iops),
        ] {
            if v == Some(0) {
                return Err(FieldError::new(at(k), "must be at least 1"));
            }
        }
        if let Some(w) = l.io_weight {
            if !(1..=10000).contains(&w) {
                return Err(FieldError::new(at("io_weight"), "must be 1-10000"));
            }
        }
        if let Some(v) = &l.ionice {
            parse_ionice(v).map_err(|m| FieldError::new(at("ionice"), m))?;
        }
        if let Some(n) = l.nice {
            if !(-20..=19).contains(&n) {
                return Err(FieldError::new(at("nice"), "must be -20..19"));
            }
        }
        if l.nproc == Some(0) {
            return Err(FieldError::new(at("nproc"), "must be at least 1"));
        }
        if let Some(rl) = self.init.runlevel {
            if rl > 6 {
                return Err(FieldError::new(
                    vec![Key("init"), Key("runlevel")],
                    "runlevel must be 0-6",
                ));
            }
        }
        if let Some(sig) = &self.stop.signal {
            parse_signal_name(sig)
                .map_err(|m| FieldError::new(vec![Key("stop"), Key("signal")], m))?;
        }
        if self.init.ready_timeout.is_some_and(|t| t > 3600) {
            return Err(FieldError::new(
                vec![Key("init"), Key("ready_timeout")],
                "at most 3600 seconds",
            ));
        }
        if self.stop.kill_timeout.is_some_and(|t| t > 3600) {
            return Err(FieldError::new(
                vec![Key("stop"), Key("kill_timeout")],
                "at most 3600 seconds",
            ));
        }
        Ok(())
    }

    /// Host name inside the guest: `hostname` or the guest name.
    pub fn hostname_or<'a>(&'a self, name: &'a str) -> &'a str {
        self.hostname.as_deref().unwrap_or(name)
    }

    /// Render as TOML text with a header comment, as `build` writes it.
    pub fn to_toml(&self, name: &str) -> String {
        let body = toml::to_string_pretty(self).unwrap_or_default();
        format!(
            "# vserver guest '{name}'; see the README for every key.\n\
             # Edit, then 'vserver {name} restart' to apply.\n{body}"
        )
    }
}

impl DiskConfig {
    /// The quota backend in force: None without `size`.
    pub fn quota_backend(&self) -> Option<DiskBackend> {
        self.size.as_ref().map(|_| self.backend.unwrap_or_default())
    }

    /// True if the guest lives on its own disk image (`ROOT.img`).
    pub fn uses_image(&self) -> bool {
        self.quota_backend() == Some(DiskBackend::Image)
    }
}

impl InterfaceConfig {
    /// The addresses with their prefix lengths. Errors: a message naming the bad address (the
    /// config was validated when loaded, so this fails only on a hand-made value).
    pub fn addrs(&self) -> Result<Vec<(IpAddr, u8)>, String> {
        self.address.0.iter().map(|a| parse_cidr(a)).collect()
    }

    /// The gateway of the family of `addr` (explicit, else the default for veth), if any.
    pub fn gateway_for(&self, addr: IpAddr, prefix: u8) -> Option<IpAddr> {
        let explicit = self
            .gateway
            .0
            .iter()
            .filter_map(|g| g.parse::<IpAddr>().ok())
            .find(|g| g.is_ipv4() == addr.is_ipv4());
        match (explicit, self.mode) {
            (Some(g), _) => Some(g),
            (None, NetMode::Veth) => default_gateway(addr, prefix),
            (None, _) => None,
        }
    }
}

impl GuestConfig {
    /// True when the guest shares the host's network stack (classic interfaces).
    pub fn classic_network(&self) -> bool {
        self.interface.iter().any(|i| i.mode == NetMode::Classic)
    }

    fn validate_network(&self) -> Result<(), FieldError> {
        use KeySeg::{Index, Key};
        let mut names = Vec::new();
        let mut seen_addrs: Vec<IpAddr> = Vec::new();
        let classic = self.classic_network();
        for (i, ifc) in self.interface.iter().enumerate() {
            let at = |k| vec![Key("interface"), Index(i), Key(k)];
            if ifc.address.is_empty() {
                return Err(FieldError::new(at("address"), "at least one address"));
            }
            let mut addrs = Vec::new();
            for (j, a) in ifc.address.0.iter().enumerate() {
                let mut key = at("address");
                if ifc.address.0.len() > 1 {
                    key.push(Index(j));
                }
                let (ip, p) = parse_cidr(a).map_err(|m| FieldError::new(key.clone(), m))?;
                if p == 0 {
                    return Err(FieldError::new(
                        key,
                        format!("{a}: a /0 prefix would claim every address"),
                    ));
                }
                if seen_addrs.contains(&ip) {
                    return Err(FieldError::new(key, format!("address {ip} is given twice")));
                }
                seen_addrs.push(ip);
                addrs.push((ip, p));
            }
            if classic && ifc.mode != NetMode::Classic {
                // Point at the classic interface: it is the one that excludes the others.
                let c = self
                    .interface
                    .iter()
                    .position(|x| x.mode == NetMode::Classic)
                    .unwrap_or(i);
                return Err(FieldError::new(
                    vec![Key("interface"), Index(c), Key("mode")],
                    format!(
                        "classic interfaces share the host's network stack and cannot be mixed \
                         with veth or macvlan ones (interface[{i}] is {})",
                        ifc.mode.as_str()
                    ),
                ));
            }
            validate_ifname(&ifc.bridge).map_err(|m| FieldError::new(at("bridge"), m))?;
            if let Some(d) = &ifc.dev {
                validate_ifname(d).map_err(|m| FieldError::new(at("dev"), m))?;
            }
            match ifc.mode {
                NetMode::Macvlan if ifc.dev.is_none() => {
                    return Err(FieldError::new(
                        at("dev"),
                        "a macvlan interface needs the host NIC it sits on (dev = \"eth0\")",
                    ))
                }
                NetMode::Classic => {
                    for (k, set) in [
                        ("gateway", !ifc.gateway.is_empty()),
                        ("name", ifc.name.is_some()),
                        ("nat", ifc.nat),
                        ("mtu", ifc.mtu.is_some()),
                    ] {
                        if set {
                            return Err(FieldError::new(
                                at(k),
                                "not for classic interfaces (they use the host's own stack)",
                            ));
                        }
                    }
                }
                NetMode::Macvlan if ifc.nat => {
                    return Err(FieldError::new(
                        at("nat"),
                        "NAT is for veth interfaces (a macvlan guest is on the LAN itself)",
                    ))
                }
                _ => {}
            }
            if let Some(m) = ifc.mtu {
                if !(1280..=65535).contains(&m) {
                    return Err(FieldError::new(at("mtu"), "must be 1280-65535 bytes"));
                }
            }
            if ifc.mode != NetMode::Classic {
                let n = ifc.name.clone().unwrap_or_else(|| format!("eth{i}"));
                validate_ifname(&n).map_err(|m| FieldError::new(at("name"), m))?;
                if n == "lo" {
                    return Err(FieldError::new(
                        at("name"),
                        "'lo' is the guest's loopback interface",
                    ));
                }
                if names.contains(&n) {
                    return Err(FieldError::new(
                        at("name"),
                        format!("interface name '{n}' is used twice"),
                    ));
                }
                names.push(n);
            }
            let mut families = Vec::new();
            for g in &ifc.gateway.0 {
                let gw: IpAddr = g.parse().map_err(|_| {
                    FieldError::new(at("gateway"), format!("'{g}' is not an IP address"))
                })?;
                if families.contains(&gw.is_ipv4()) {
                    return Err(FieldError::new(
                        at("gateway"),
                        "at most one gateway per address family",
                    ));
                }
                families.push(gw.is_ipv4());
                if !addrs.iter().any(|(a, _)| a.is_ipv4() == gw.is_ipv4()) {
                    return Err(FieldError::new(
                        at("gateway"),
                        format!("gateway {gw} has no address of its family on this interface"),
                    ));
                }
                if addrs.iter().any(|(a, _)| *a == gw) {
                    return Err(FieldError::new(
                        at("gateway"),
                        "gateway equals one of the guest's own addresses",
                    ));
                }
                if !addrs.iter().any(|(a, p)| same_subnet(*a, gw, *p)) {
                    return Err(FieldError::new(
                        at("gateway"),
                        format!(
                            "gateway {gw} is outside every subnet of this interface's addresses"
                        ),
                    ));
                }
            }
            if ifc.mode == NetMode::Veth {
                for (a, p) in &addrs {
                    if ifc.gateway_for(*a, *p).is_none() {
                        return Err(FieldError::new(
                            at("address"),
                            format!("{a}/{p} leaves no room for a gateway; set interface.gateway"),
                        ));
                    }
                }
            }
        }
        let mut seen = Vec::new();
        for (i, f) in self.forward.iter().enumerate() {
            let at = |k| vec![Key("forward"), Index(i), Key(k)];
            if f.host_port == 0 {
                return Err(FieldError::new(at("host_port"), "must be 1-65535"));
            }
            if f.guest_port == 0 {
                return Err(FieldError::new(at("guest_port"), "must be 1-65535"));
            }
            if f.protocol != "tcp" && f.protocol != "udp" {
                return Err(FieldError::new(
                    at("protocol"),
                    format!("'{}' is neither tcp nor udp", f.protocol),
                ));
            }
            if !self.interface.iter().any(|i| i.mode == NetMode::Veth) {
                let why = if self.interface.is_empty() {
                    "this guest has no interface"
                } else if self.classic_network() {
                    "classic guests bind host ports themselves"
                } else {
                    "a macvlan guest is reached on its own address"
                };
                return Err(FieldError::new(
                    at("host_port"),
                    format!("port forwards need a veth interface ({why})"),
                ));
            }
            if seen.contains(&(f.host_port, &f.protocol)) {
                return Err(FieldError::new(
                    at("host_port"),
                    format!("{}/{} is forwarded twice", f.host_port, f.protocol),
                ));
            }
            seen.push((f.host_port, &f.protocol));
        }
        Ok(())
    }
}
