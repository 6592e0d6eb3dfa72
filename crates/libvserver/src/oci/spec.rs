//! `config.json` of an OCI bundle (opencontainers/runtime-spec 1.x, config.md and
//! config-linux.md). Every field of the spec is known here; a property the spec does not define
//! is ignored, as the spec requires ("runtimes MUST NOT generate an error if they encounter an
//! unknown property"), and its dotted path is kept in [`Spec::ignored`] for a warning. A defined
//! field vserver cannot honour is refused by [`Spec::check_supported`] with its path, never
//! ignored.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Errors reading a bundle's `config.json`.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("read {path}: {source}")]
    Read {
        /// config.json's path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not JSON, a wrong type, or a field the spec does not define.
    #[error("{path}: {field}: {message}")]
    Parse {
        /// config.json's path.
        path: String,
        /// Dotted path of the offending field (`.` for the document).
        field: String,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A field vserver does not support, or a value it refuses.
    #[error("{path}: {field}: {message}")]
    Unsupported {
        /// config.json's path.
        path: String,
        /// Dotted path of the field.
        field: String,
        /// Why.
        message: String,
    },
}

/// The whole configuration (config.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// Spec version; any `1.x` is accepted.
    pub oci_version: String,
    /// The root file system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<Root>,
    /// Additional mounts, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// The container process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    /// UTS host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// UTS (NIS) domain name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    /// Lifecycle hooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Hooks>,
    /// Free-form annotations, passed through to `state`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Linux-specific configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux: Option<Linux>,
    /// Other platforms' sections: refused on Linux when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solaris: Option<serde_json::Value>,
    /// See `solaris`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<serde_json::Value>,
    /// See `solaris`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<serde_json::Value>,
    /// See `solaris`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zos: Option<serde_json::Value>,
    /// FreeBSD section: refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freebsd: Option<serde_json::Value>,
    /// Dotted paths of the properties the spec does not define, ignored while parsing
    /// (`process.bogus`); never read from or written to JSON.
    #[serde(skip)]
    pub ignored: Vec<String>,
}

/// `root`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Root {
    /// Path of the root file system, relative to the bundle or absolute.
    pub path: String,
    /// Mount it read-only in the container.
    #[serde(default)]
    pub readonly: bool,
}

/// One entry of `mounts`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    /// Absolute path inside the container.
    pub destination: String,
    /// File system type (`proc`, `tmpfs`, `bind` ...); empty for a bind mount given by options.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Device, directory or file to mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// fstab-style options (`ro`, `nosuid`, `bind`, `rbind`, `mode=755` ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Idmapped mount: uid mappings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uid_mappings: Vec<IdMapping>,
    /// Idmapped mount: gid mappings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gid_mappings: Vec<IdMapping>,
}

/// `process` (also the whole of `exec --process FILE`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    /// Allocate a pty (sent through `--console-socket`).
    #[serde(default)]
    pub terminal: bool,
    /// Initial pty size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_size: Option<ConsoleSize>,
    /// Who the process runs as.
    #[serde(default)]
    pub user: User,
    /// Program and arguments (the program is searched in the container's PATH).
    #[serde(default)]
    pub args: Vec<String>,
    /// Windows only: refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_line: Option<String>,
    /// Environment, `KEY=value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Working directory inside the container (absolute).
    #[serde(default = "slash")]
    pub cwd: String,
    /// Capability sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// Resource limits (setrlimit(2)).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rlimits: Vec<Rlimit>,
    /// prctl(PR_SET_NO_NEW_PRIVS).
    #[serde(default)]
    pub no_new_privileges: bool,
    /// AppArmor profile: refused when set (no AppArmor support).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apparmor_profile: Option<String>,
    /// /proc/self/oom_score_adj.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i32>,
    /// SELinux label: refused when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selinux_label: Option<String>,
    /// I/O priority (ioprio_set(2)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_priority: Option<IoPriority>,
    /// Scheduler (sched_setattr(2)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<Scheduler>,
    /// CPU affinity of an exec'd process (not the init).
    #[serde(
        default,
        rename = "execCPUAffinity",
        skip_serializing_if = "Option::is_none"
    )]
    pub exec_cpu_affinity: Option<ExecCpuAffinity>,
}

/// `process.scheduler` (sched_setattr(2)).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Scheduler {
    /// `SCHED_OTHER`, `SCHED_FIFO`, `SCHED_RR`, `SCHED_BATCH`, `SCHED_IDLE`, `SCHED_DEADLINE`.
    pub policy: String,
    /// Nice value (SCHED_OTHER, SCHED_BATCH).
    #[serde(default)]
    pub nice: i32,
    /// Static priority (SCHED_FIFO, SCHED_RR).
    #[serde(default)]
    pub priority: u32,
    /// `SCHED_FLAG_*` words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// SCHED_DEADLINE runtime, nanoseconds.
    #[serde(default)]
    pub runtime: u64,
    /// SCHED_DEADLINE deadline, nanoseconds.
    #[serde(default)]
    pub deadline: u64,
    /// SCHED_DEADLINE period, nanoseconds.
    #[serde(default)]
    pub period: u64,
}

/// `process.execCPUAffinity`: CPU lists (`0-3,7`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExecCpuAffinity {
    /// While the process joins the container (before it is in its cgroup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<String>,
    /// Once it is in the container's cgroup, before its program runs.
    #[serde(default, rename = "final", skip_serializing_if = "Option::is_none")]
    pub final_cpus: Option<String>,
}

/// `linux.memoryPolicy` (set_mempolicy(2)).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MemoryPolicy {
    /// `MPOL_DEFAULT`, `MPOL_BIND`, `MPOL_INTERLEAVE`, `MPOL_PREFERRED` ...
    pub mode: String,
    /// Node list (`0-3`).
    #[serde(default)]
    pub nodes: String,
    /// `MPOL_F_*` words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
}

fn slash() -> String {
    String::from("/")
}

/// `process.consoleSize`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ConsoleSize {
    /// Rows.
    pub height: u16,
    /// Columns.
    pub width: u16,
}

/// `process.user`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// uid in the container.
    #[serde(default)]
    pub uid: u32,
    /// gid in the container.
    #[serde(default)]
    pub gid: u32,
    /// umask (default 0022).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub umask: Option<u32>,
    /// Supplementary gids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_gids: Vec<u32>,
    /// Windows only: refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// `process.capabilities`: names like `CAP_NET_RAW`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Capabilities {
    /// Bounding set.
    #[serde(default)]
    pub bounding: Vec<String>,
    /// Effective set.
    #[serde(default)]
    pub effective: Vec<String>,
    /// Inheritable set.
    #[serde(default)]
    pub inheritable: Vec<String>,
    /// Permitted set.
    #[serde(default)]
    pub permitted: Vec<String>,
    /// Ambient set.
    #[serde(default)]
    pub ambient: Vec<String>,
}

/// One of `process.rlimits`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Rlimit {
    /// `RLIMIT_NOFILE` etc.
    #[serde(rename = "type")]
    pub kind: String,
    /// Hard limit.
    pub hard: u64,
    /// Soft limit.
    pub soft: u64,
}

/// `process.ioPriority`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IoPriority {
    /// `IOPRIO_CLASS_RT`, `IOPRIO_CLASS_BE` or `IOPRIO_CLASS_IDLE`.
    pub class: String,
    /// 0 (highest) to 7.
    #[serde(default)]
    pub priority: u32,
}

/// `hooks`: each a list run in order.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Hooks {
    /// Deprecated alias run with createRuntime.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prestart: Vec<Hook>,
    /// In the runtime's namespaces, after the container's namespaces exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub create_runtime: Vec<Hook>,
    /// In the container's namespaces, before pivot_root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub create_container: Vec<Hook>,
    /// In the container, after `start`, before the user program.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub start_container: Vec<Hook>,
    /// In the runtime's namespaces, after the user program started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub poststart: Vec<Hook>,
    /// In the runtime's namespaces, after `delete`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub poststop: Vec<Hook>,
}

/// One hook: a host program that gets the state JSON on stdin.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Hook {
    /// Absolute path of the program.
    pub path: String,
    /// argv (argv[0] included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment, `KEY=value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Seconds before it is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
}

/// `linux` (config-linux.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Linux {
    /// Namespaces to create (no path) or join (path).
    #[serde(default)]
    pub namespaces: Vec<Namespace>,
    /// User namespace uid mappings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uid_mappings: Vec<IdMapping>,
    /// User namespace gid mappings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gid_mappings: Vec<IdMapping>,
    /// Time namespace offsets: refused when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_offsets: Option<serde_json::Value>,
    /// Device nodes to create in /dev.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    /// Network devices to move in: refused when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_devices: Option<serde_json::Value>,
    /// cgroup path (relative to the cgroup mount points, or `slice:prefix:name` with
    /// `--systemd-cgroup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroups_path: Option<String>,
    /// cgroup limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Intel RDT: refused when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intel_rdt: Option<serde_json::Value>,
    /// Memory policy of the container's processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_policy: Option<MemoryPolicy>,
    /// Namespaced sysctls (`net.*` with a network namespace, IPC ones with an IPC namespace).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctl: BTreeMap<String, String>,
    /// Seccomp filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<Seccomp>,
    /// Propagation of the root mount (`private`, `slave`, `shared`, with `r` prefixes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs_propagation: Option<String>,
    /// Paths hidden from the container.
    #[serde(default)]
    pub masked_paths: Vec<String>,
    /// Paths made read-only.
    #[serde(default)]
    pub readonly_paths: Vec<String>,
    /// SELinux mount label: refused when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_label: Option<String>,
    /// personality(2): only LINUX and LINUX32 domains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personality: Option<Personality>,
}

/// One of `linux.namespaces`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Namespace {
    /// `pid`, `network`, `mount`, `ipc`, `uts`, `user`, `cgroup`, `time`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Join this namespace instead of creating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// A uid or gid range mapping.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IdMapping {
    /// First id inside.
    #[serde(rename = "containerID")]
    pub container_id: u32,
    /// First id on the host.
    #[serde(rename = "hostID")]
    pub host_id: u32,
    /// Number of ids.
    pub size: u32,
}

/// One of `linux.devices`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// `c`, `u`, `b` or `p`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Absolute path in the container (under /dev).
    pub path: String,
    /// Major number.
    #[serde(default)]
    pub major: i64,
    /// Minor number.
    #[serde(default)]
    pub minor: i64,
    /// Permission bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<u32>,
    /// Owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// `linux.resources`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// Device cgroup rules, applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceRule>,
    /// Memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// Process count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<Pids>,
    /// Block I/O.
    #[serde(default, rename = "blockIO", skip_serializing_if = "Option::is_none")]
    pub block_io: Option<BlockIo>,
    /// Huge pages: refused when non-empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugepage_limits: Option<serde_json::Value>,
    /// net_cls/net_prio: refused when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<serde_json::Value>,
    /// RDMA: refused when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdma: Option<serde_json::Value>,
    /// cgroup v2 files to write as given (`memory.high`: `"1G"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unified: BTreeMap<String, String>,
}

/// One device cgroup rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DeviceRule {
    /// Allow (true) or deny.
    pub allow: bool,
    /// `a`, `c` or `b`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Major number, None for any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<i64>,
    /// Minor number, None for any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<i64>,
    /// Some of `rwm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
}

/// `linux.resources.memory`, bytes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    /// Hard limit (memory.max), -1 unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// Soft limit (memory.low / soft_limit_in_bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<i64>,
    /// Memory plus swap, -1 unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<i64>,
    /// Deprecated kernel memory limit: refused when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<i64>,
    /// Deprecated kernel TCP limit: refused when set.
    #[serde(default, rename = "kernelTCP", skip_serializing_if = "Option::is_none")]
    pub kernel_tcp: Option<i64>,
    /// vm.swappiness for the cgroup (v1 only): refused when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swappiness: Option<u64>,
    /// Disable the OOM killer: refused when true.
    #[serde(
        default,
        rename = "disableOOMKiller",
        skip_serializing_if = "Option::is_none"
    )]
    pub disable_oom_killer: Option<bool>,
    /// v1 use_hierarchy: ignored (always hierarchical).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_hierarchy: Option<bool>,
    /// Refuse a limit below current usage (update only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_before_update: Option<bool>,
}

/// `linux.resources.cpu`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Cpu {
    /// v1 shares (2..262144), mapped to a v2 weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shares: Option<u64>,
    /// Microseconds per period, -1 unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<i64>,
    /// Burst, microseconds: refused when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// Period, microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<u64>,
    /// Realtime runtime: refused when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realtime_runtime: Option<i64>,
    /// Realtime period: refused when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realtime_period: Option<u64>,
    /// cpuset.cpus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
    /// cpuset.mems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mems: Option<String>,
    /// SCHED_IDLE for the cgroup: refused when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<i64>,
}

/// `linux.resources.pids`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Pids {
    /// pids.max, -1 or 0 unlimited.
    pub limit: i64,
}

/// `linux.resources.blockIO`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BlockIo {
    /// Weight 10..1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u16>,
    /// Leaf weight: refused when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_weight: Option<u16>,
    /// Per-device weights: refused when non-empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weight_device: Vec<serde_json::Value>,
    /// Per-device read caps, bytes/s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub throttle_read_bps_device: Vec<ThrottleDevice>,
    /// Per-device write caps, bytes/s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub throttle_write_bps_device: Vec<ThrottleDevice>,
    /// Per-device read caps, operations/s.
    #[serde(
        default,
        rename = "throttleReadIOPSDevice",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub throttle_read_iops_device: Vec<ThrottleDevice>,
    /// Per-device write caps, operations/s.
    #[serde(
        default,
        rename = "throttleWriteIOPSDevice",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub throttle_write_iops_device: Vec<ThrottleDevice>,
}

/// One per-device I/O cap.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ThrottleDevice {
    /// Device major.
    pub major: i64,
    /// Device minor.
    pub minor: i64,
    /// Bytes or operations per second.
    pub rate: u64,
}

/// `linux.seccomp` (config-linux.md "Seccomp").
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Seccomp {
    /// `SCMP_ACT_ERRNO`, `SCMP_ACT_ALLOW` ...
    pub default_action: String,
    /// errno of a default ERRNO action (EPERM when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    /// `SCMP_ARCH_X86_64` ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<String>,
    /// `SECCOMP_FILTER_FLAG_*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// Seccomp notify listener: refused when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_path: Option<String>,
    /// Listener metadata: refused when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_metadata: Option<String>,
    /// Rules, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub syscalls: Vec<SeccompRule>,
}

/// One seccomp rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SeccompRule {
    /// System call names.
    pub names: Vec<String>,
    /// Action.
    pub action: String,
    /// errno of an ERRNO action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    /// Argument conditions (all must hold).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<SeccompArg>,
}

/// One argument condition.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SeccompArg {
    /// Argument index 0..5.
    pub index: u32,
    /// Value compared.
    pub value: u64,
    /// Second value (mask for SCMP_CMP_MASKED_EQ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_two: Option<u64>,
    /// `SCMP_CMP_EQ` ...
    pub op: String,
}

/// `linux.personality`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Personality {
    /// `LINUX` or `LINUX32`.
    pub domain: String,
    /// Flags: refused when non-empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
}

impl Spec {
    /// Parse `text` (the content of `path`, named in errors); the properties the spec does not
    /// define are listed in [`Spec::ignored`].
    ///
    /// Errors: [`SpecError::Parse`] with the dotted field path, line and column.
    pub fn parse(path: &str, text: &str) -> Result<Spec, SpecError> {
        let (mut spec, ignored) = parse_lenient::<Spec>(path, text)?;
        spec.ignored = ignored;
        Ok(spec)
    }

    /// Read and parse `path`.
    ///
    /// Errors: [`SpecError::Read`], [`SpecError::Parse`].
    pub fn load(path: &std::path::Path) -> Result<Spec, SpecError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: p.clone(),
            source,
        })?;
        Spec::parse(&p, &text)
    }
}

/// Parse one object of the spec from `text` (the content of `path`), ignoring the properties
/// the spec does not define; returns it with their dotted paths.
///
/// Errors: [`SpecError::Parse`] with the dotted field path, line and column.
fn parse_lenient<T: serde::de::DeserializeOwned>(
    path: &str,
    text: &str,
) -> Result<(T, Vec<String>), SpecError> {
    let mut ignored = Vec::new();
    let de = &mut serde_json::Deserializer::from_str(text);
    // serde_ignored names an Option's content `?`: not part of the dotted path.
    let mut note = |p: serde_ignored::Path<'_>| {
        let p = p.to_string();
        let parts: Vec<&str> = p.split('.').filter(|c| *c != "?").collect();
        ignored.push(parts.join("."))
    };
    let de = serde_ignored::Deserializer::new(de, &mut note);
    let value = serde_path_to_error::deserialize(de).map_err(|e| SpecError::Parse {
        path: path.to_string(),
        field: e.path().to_string(),
        message: e.inner().to_string(),
    })?;
    Ok((value, ignored))
}

/// Parse `exec --process FILE`: one [`Process`]; the properties the spec does not define are
/// ignored (returned by dotted path).
///
/// Errors: as [`Spec::parse`].
pub fn parse_process(path: &str, text: &str) -> Result<(Process, Vec<String>), SpecError> {
    parse_lenient(path, text)
}

/// Parse `update --resources`: one [`Resources`] object; the properties the spec does not
/// define are ignored (returned by dotted path).
///
/// Errors: as [`Spec::parse`].
pub fn parse_resources(path: &str, text: &str) -> Result<(Resources, Vec<String>), SpecError> {
    parse_lenient(path, text)
}

/// `process.env` with each variable once: a later `NAME=value` replaces an earlier one in
/// place (as `exec -e NAME=value` over the container's own environment expects, and as runc
/// does). An entry without `=` is kept as it is, once.
pub fn dedup_env(env: &[String]) -> Vec<String> {
    // Linear in the number of variables (a config may carry many: the work is the
    // runtime's, outside the container's cgroup).
    let mut out: Vec<String> = Vec::with_capacity(env.len());
    let mut at: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for e in env {
        let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        match at.get(key) {
            Some(&i) => out[i] = e.clone(),
            None => {
                at.insert(key, out.len());
                out.push(e.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_variable_replaces_an_earlier_one_in_place() {
        let env: Vec<String> = ["PATH=/bin", "A=1", "B=2", "A=3", "C"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(dedup_env(&env), ["PATH=/bin", "A=3", "B=2", "C"]);
    }

    #[test]
    fn unknown_properties_are_ignored_and_named() {
        let s = Spec::parse(
            "config.json",
            r#"{"ociVersion":"1.0.2","process":{"args":["x"],"bogus":1},"future":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(s.process.unwrap().args, ["x"]);
        let mut ignored = s.ignored.clone();
        ignored.sort();
        assert_eq!(ignored, ["future", "process.bogus"]);
    }
}
