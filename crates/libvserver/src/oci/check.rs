//! What vserver refuses in a `config.json`: fields of the spec it cannot honour, and values that
//! would be unsafe or meaningless (non-namespaced sysctls, relative mount destinations). Every
//! refusal names the field by its dotted path, so `ctr` and `podman` show a useful line.

use super::spec::{Linux, Mount, Process, Spec, SpecError};

/// Namespace types of `linux.namespaces[].type` and their clone(2) flags.
pub const NAMESPACE_TYPES: &[(&str, i32)] = &[
    ("pid", libc::CLONE_NEWPID),
    ("network", libc::CLONE_NEWNET),
    ("mount", libc::CLONE_NEWNS),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("user", libc::CLONE_NEWUSER),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("time", libc::CLONE_NEWTIME),
];

/// Mount types a `config.json` may ask for (others need a trusted file system driver).
pub const MOUNT_TYPES: &[&str] = &[
    "bind", "none", "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "overlay",
];

/// IPC sysctls a container with its own IPC namespace may set (runc's list).
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

struct Ctx<'a> {
    path: &'a str,
}

impl Ctx<'_> {
    fn refuse(&self, field: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError::Unsupported {
            path: self.path.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }
}

fn set<T>(v: &Option<T>) -> bool {
    v.is_some()
}

fn nonempty(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|s| !s.is_empty())
}

/// Has the spec a new (not joined) namespace of type `kind`?
pub fn creates(linux: Option<&Linux>, kind: &str) -> bool {
    linux.is_some_and(|l| {
        l.namespaces
            .iter()
            .any(|n| n.kind == kind && n.path.is_none())
    })
}

/// Whether the namespace file `path` is the network namespace this runtime runs in (the
/// host's): the same inode on the same nsfs. A path that cannot be read is not (joining it
/// fails later, with its own error).
fn is_hosts_netns(path: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(path),
        std::fs::metadata("/proc/self/ns/net"),
    ) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Has the spec a namespace of type `kind` (created or joined)?
pub fn has_ns(linux: Option<&Linux>, kind: &str) -> bool {
    linux.is_some_and(|l| l.namespaces.iter().any(|n| n.kind == kind))
}

impl Spec {
    /// Refuse what vserver cannot do as asked (see the module doc). `path` names config.json
    /// in messages.
    ///
    /// Errors: [`SpecError::Unsupported`] naming the first offending field.
    pub fn check_supported(&self, path: &str) -> Result<(), SpecError> {
        let c = Ctx { path };
        if !self.oci_version.starts_with("1.") {
            return Err(c.refuse(
                "ociVersion",
                format!("version '{}' is not 1.x", self.oci_version),
            ));
        }
        for (name, v) in [
            ("solaris", &self.solaris),
            ("windows", &self.windows),
            ("vm", &self.vm),
            ("zos", &self.zos),
            ("freebsd", &self.freebsd),
        ] {
            if v.is_some() {
                return Err(c.refuse(name, "not a Linux configuration"));
            }
        }
        let root = self
            .root
            .as_ref()
            .ok_or_else(|| c.refuse("root", "missing: a container needs a root file system"))?;
        if root.path.is_empty() {
            return Err(c.refuse("root.path", "empty"));
        }
        let process = self
            .process
            .as_ref()
            .ok_or_else(|| c.refuse("process", "missing: nothing to run"))?;
        check_process(&c, process, "process")?;
        if let Some(h) = &self.hooks {
            for (list, hooks) in [
                ("prestart", &h.prestart),
                ("createRuntime", &h.create_runtime),
                ("createContainer", &h.create_container),
                ("startContainer", &h.start_container),
                ("poststart", &h.poststart),
                ("poststop", &h.poststop),
            ] {
                for (i, hook) in hooks.iter().enumerate() {
                    if !hook.path.starts_with('/') {
                        return Err(c.refuse(
                            format!("hooks.{list}[{i}].path"),
                            format!("'{}' is not an absolute path", hook.path),
                        ));
                    }
                }
            }
        }
        let linux = self.linux.as_ref();
        for (i, m) in self.mounts.iter().enumerate() {
            check_mount(&c, m, i)?;
        }
        if let Some(l) = linux {
            check_linux(&c, l)?;
        }
        Ok(())
    }
}

/// Checks of a `process` object (also the one of `exec --process`), `field` its path.
///
/// Errors: [`SpecError::Unsupported`].
pub fn check_process_at(path: &str, p: &Process, field: &str) -> Result<(), SpecError> {
    check_process(&Ctx { path }, p, field)
}

fn check_process(c: &Ctx<'_>, p: &Process, field: &str) -> Result<(), SpecError> {
    if p.args.is_empty() {
        return Err(c.refuse(format!("{field}.args"), "empty: nothing to run"));
    }
    // A NUL cannot be passed to execve(2): refused, never cut (which would shift argv).
    for (list, name) in [(&p.args, "args"), (&p.env, "env")] {
        if let Some(i) = list.iter().position(|a| a.contains('\0')) {
            return Err(c.refuse(format!("{field}.{name}[{i}]"), "contains a NUL byte"));
        }
    }
    if p.cwd.contains('\0') {
        return Err(c.refuse(format!("{field}.cwd"), "contains a NUL byte"));
    }
    if p.command_line.is_some() {
        return Err(c.refuse(format!("{field}.commandLine"), "Windows only"));
    }
    if p.user.username.is_some() {
        return Err(c.refuse(format!("{field}.user.username"), "Windows only"));
    }
    if nonempty(&p.apparmor_profile) {
        return Err(c.refuse(
            format!("{field}.apparmorProfile"),
            "AppArmor profiles are not supported by vserver",
        ));
    }
    if nonempty(&p.selinux_label) {
        return Err(c.refuse(
            format!("{field}.selinuxLabel"),
            "SELinux labels are not supported by vserver",
        ));
    }
    if let Some(s) = &p.scheduler {
        super::container::sched_attr_of(s)
            .map_err(|e| c.refuse(format!("{field}.scheduler"), e))?;
    }
    if let Some(a) = &p.exec_cpu_affinity {
        for (name, v) in [("initial", &a.initial), ("final", &a.final_cpus)] {
            if let Some(l) = v.as_deref().filter(|l| !l.trim().is_empty()) {
                let cpus = crate::context::sched::parse_list(l)
                    .map_err(|e| c.refuse(format!("{field}.execCPUAffinity.{name}"), e))?;
                let most = nix::sched::CpuSet::count();
                if let Some(big) = cpus.iter().find(|c| **c >= most) {
                    return Err(c.refuse(
                        format!("{field}.execCPUAffinity.{name}"),
                        format!("CPU {big} is beyond the {most} an affinity mask holds here"),
                    ));
                }
            }
        }
    }
    if !p.cwd.starts_with('/') {
        return Err(c.refuse(
            format!("{field}.cwd"),
            format!("'{}' is not an absolute path", p.cwd),
        ));
    }
    for (i, e) in p.env.iter().enumerate() {
        if !e.contains('=') {
            return Err(c.refuse(
                format!("{field}.env[{i}]"),
                format!("'{e}' is not KEY=value"),
            ));
        }
    }
    if let Some(caps) = &p.capabilities {
        for (set, names) in [
            ("bounding", &caps.bounding),
            ("effective", &caps.effective),
            ("inheritable", &caps.inheritable),
            ("permitted", &caps.permitted),
            ("ambient", &caps.ambient),
        ] {
            for (i, n) in names.iter().enumerate() {
                crate::security::caps::parse_cap(n)
                    .map_err(|e| c.refuse(format!("{field}.capabilities.{set}[{i}]"), e))?;
            }
        }
    }
    for (i, r) in p.rlimits.iter().enumerate() {
        rlimit_resource(&r.kind).ok_or_else(|| {
            c.refuse(
                format!("{field}.rlimits[{i}].type"),
                format!("unknown rlimit '{}'", r.kind),
            )
        })?;
        if r.soft > r.hard {
            return Err(c.refuse(
                format!("{field}.rlimits[{i}]"),
                "soft limit above the hard limit",
            ));
        }
    }
    if let Some(io) = &p.io_priority {
        if !matches!(
            io.class.as_str(),
            "IOPRIO_CLASS_RT" | "IOPRIO_CLASS_BE" | "IOPRIO_CLASS_IDLE"
        ) || io.priority > 7
        {
            return Err(c.refuse(
                format!("{field}.ioPriority"),
                format!(
                    "class '{}' priority {} (IOPRIO_CLASS_RT/BE/IDLE, 0-7)",
                    io.class, io.priority
                ),
            ));
        }
    }
    if let Some(a) = p.oom_score_adj {
        if !(-1000..=1000).contains(&a) {
            return Err(c.refuse(
                format!("{field}.oomScoreAdj"),
                format!("{a} is not in -1000..1000"),
            ));
        }
    }
    Ok(())
}

/// `RLIMIT_NOFILE` -> the resource number.
pub fn rlimit_resource(kind: &str) -> Option<libc::__rlimit_resource_t> {
    let name = kind.strip_prefix("RLIMIT_")?.to_ascii_lowercase();
    crate::config::parse_rlimit(&name, &crate::config::RlimitValue::Number(0))
        .ok()
        .map(|(r, _, _)| r)
}

/// /proc files a config may mount over (runc's list: what LXCFS serves, and ns_last_pid).
pub(crate) const PROC_MOUNT_ALLOWED: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
];

/// An absolute path without empty, `.` and `..` components (`..` taken lexically).
fn normalize(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

fn check_mount(c: &Ctx<'_>, m: &Mount, i: usize) -> Result<(), SpecError> {
    let f = |k: &str| format!("mounts[{i}].{k}");
    if !m.destination.starts_with('/') {
        return Err(c.refuse(
            f("destination"),
            format!("'{}' is not an absolute path", m.destination),
        ));
    }
    let bind = m.options.iter().any(|o| o == "bind" || o == "rbind");
    let kind = m.kind.as_deref().unwrap_or(if bind { "bind" } else { "" });
    // Nothing may be mounted over procfs files but the ones LXCFS and its peers replace (the
    // runtime reads /proc/self files while it sets up, and the masks live there).
    let dest = normalize(&m.destination);
    // procfs, sysfs and cgroup file systems only where the engine builds them itself (with
    // its masks, read-only, showing the container's own cgroups): a second instance elsewhere
    // would be unmasked, and a cgroup mount with the config's options could name a new
    // hierarchy with a release agent or show the host's whole tree writable.
    let home = match kind {
        "proc" => Some("/proc"),
        "sysfs" => Some("/sys"),
        "cgroup" | "cgroup2" => Some("/sys/fs/cgroup"),
        _ => None,
    };
    if let Some(home) = home.filter(|h| dest != *h) {
        return Err(c.refuse(
            f("destination"),
            format!("a {kind} file system is mounted only on {home} (by the engine)"),
        ));
    }
    if (dest == "/proc" && kind != "proc")
        || (dest.starts_with("/proc/") && !PROC_MOUNT_ALLOWED.contains(&dest.as_str()))
    {
        return Err(c.refuse(
            f("destination"),
            format!(
                "'{}' cannot be mounted because it is inside /proc",
                m.destination
            ),
        ));
    }
    if !MOUNT_TYPES.contains(&kind) {
        return Err(c.refuse(
            f("type"),
            format!("'{kind}' is not one of {}", MOUNT_TYPES.join(", ")),
        ));
    }
    if (kind == "bind" || bind) && m.source.as_deref().unwrap_or("").is_empty() {
        return Err(c.refuse(f("source"), "a bind mount needs a source"));
    }
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(c.refuse(f("uidMappings"), "idmapped mounts are not supported yet"));
    }
    Ok(())
}

fn check_linux(c: &Ctx<'_>, l: &Linux) -> Result<(), SpecError> {
    let mut seen = Vec::new();
    for (i, n) in l.namespaces.iter().enumerate() {
        if !NAMESPACE_TYPES.iter().any(|(t, _)| *t == n.kind) {
            return Err(c.refuse(
                format!("linux.namespaces[{i}].type"),
                format!("unknown namespace type '{}'", n.kind),
            ));
        }
        if seen.contains(&n.kind.as_str()) {
            return Err(c.refuse(
                format!("linux.namespaces[{i}].type"),
                format!("namespace '{}' given twice", n.kind),
            ));
        }
        seen.push(n.kind.as_str());
        if n.kind == "user" && n.path.is_some() {
            return Err(c.refuse(
                format!("linux.namespaces[{i}].path"),
                "joining an existing user namespace is not supported",
            ));
        }
        if n.kind == "time" {
            return Err(c.refuse(
                format!("linux.namespaces[{i}].type"),
                "time namespaces are not supported for OCI containers yet",
            ));
        }
        if n.kind == "mount" && n.path.is_some() {
            return Err(c.refuse(
                format!("linux.namespaces[{i}].path"),
                "joining an existing mount namespace is not supported",
            ));
        }
    }
    if !creates(Some(l), "mount") {
        return Err(c.refuse(
            "linux.namespaces",
            "a new mount namespace is required (pivot_root into the root file system)",
        ));
    }
    if (!l.uid_mappings.is_empty() || !l.gid_mappings.is_empty()) && !creates(Some(l), "user") {
        return Err(c.refuse(
            "linux.uidMappings",
            "id mappings without a new user namespace",
        ));
    }
    if creates(Some(l), "user") {
        if l.uid_mappings.is_empty() || l.gid_mappings.is_empty() {
            return Err(c.refuse(
                "linux.uidMappings",
                "a new user namespace needs uidMappings and gidMappings",
            ));
        }
        for (field, maps) in [
            ("linux.uidMappings", &l.uid_mappings),
            ("linux.gidMappings", &l.gid_mappings),
        ] {
            if !maps.iter().any(|m| m.container_id == 0 && m.size > 0) {
                return Err(c.refuse(field, "the container's root (id 0) must be mapped"));
            }
            if maps
                .iter()
                .any(|m| m.size == 0 || u64::from(m.host_id) + u64::from(m.size) > 1 << 32)
            {
                return Err(c.refuse(field, "an empty range or one beyond 32 bits"));
            }
        }
        if !l.devices.is_empty() {
            return Err(c.refuse(
                "linux.devices",
                "device nodes cannot be made inside a user namespace (mknod needs the host's CAP_MKNOD)",
            ));
        }
    }
    for (name, v) in [
        ("linux.timeOffsets", set(&l.time_offsets)),
        ("linux.netDevices", set(&l.net_devices)),
        ("linux.intelRdt", set(&l.intel_rdt)),
        ("linux.mountLabel", nonempty(&l.mount_label)),
    ] {
        if v {
            return Err(c.refuse(name, "not supported by vserver"));
        }
    }
    super::container::mempolicy_of(Some(l)).map_err(|e| c.refuse("linux.memoryPolicy", e))?;
    if let Some(p) = &l.personality {
        if !matches!(p.domain.as_str(), "LINUX" | "LINUX32") {
            return Err(c.refuse(
                "linux.personality.domain",
                format!("'{}' (LINUX or LINUX32)", p.domain),
            ));
        }
        if !p.flags.is_empty() {
            return Err(c.refuse("linux.personality.flags", "not supported by vserver"));
        }
    }
    if let Some(p) = &l.rootfs_propagation {
        if !matches!(
            p.as_str(),
            "private" | "rprivate" | "slave" | "rslave" | "unbindable" | "runbindable"
        ) {
            return Err(c.refuse(
                "linux.rootfsPropagation",
                format!(
                    "'{p}': only private, slave and unbindable propagation are supported (a \
                     shared root would let the container's mounts reach the host's)"
                ),
            ));
        }
    }
    for k in l.sysctl.keys() {
        let ok = if IPC_SYSCTLS.contains(&k.as_str()) || k.starts_with("fs.mqueue.") {
            creates(Some(l), "ipc")
        } else if k.starts_with("net.") {
            // A joined network namespace may be a pod's, never the host's (runc's rule).
            let joined_host = l
                .namespaces
                .iter()
                .find(|n| n.kind == "network")
                .and_then(|n| n.path.as_deref())
                .is_some_and(is_hosts_netns);
            if joined_host {
                return Err(c.refuse(
                    format!("linux.sysctl.{k}"),
                    "not allowed in the host's network namespace (linux.namespaces joins it)",
                ));
            }
            has_ns(Some(l), "network")
        } else {
            false
        };
        if !ok {
            return Err(c.refuse(
                format!("linux.sysctl.{k}"),
                "not a sysctl of the container's own namespaces (kernel IPC ones need an ipc \
                 namespace, net.* a network namespace; others are host-wide)",
            ));
        }
    }
    for (i, d) in l.devices.iter().enumerate() {
        if d.kind != "p" && (d.major < 0 || d.minor < 0) {
            return Err(c.refuse(
                format!("linux.devices[{i}]"),
                "a device node needs a major and a minor number (no wildcards)",
            ));
        }
        if !matches!(d.kind.as_str(), "c" | "u" | "b" | "p") {
            return Err(c.refuse(
                format!("linux.devices[{i}].type"),
                format!("'{}' (c, u, b or p)", d.kind),
            ));
        }
        if !d.path.starts_with("/dev/") || d.path.split('/').any(|s| s == "..") {
            return Err(c.refuse(
                format!("linux.devices[{i}].path"),
                format!("'{}' is not a path under /dev", d.path),
            ));
        }
    }
    if let Some(s) = &l.seccomp {
        if s.listener_path.is_some() || s.listener_metadata.is_some() {
            return Err(c.refuse(
                "linux.seccomp.listenerPath",
                "seccomp notify is not supported",
            ));
        }
    }
    if let Some(r) = &l.resources {
        let refuse = |field: &str| {
            Err(c.refuse(
                format!("linux.resources.{field}"),
                "not supported by vserver",
            ))
        };
        if r.hugepage_limits
            .as_ref()
            .is_some_and(|v| v.as_array().map(|a| !a.is_empty()).unwrap_or(true))
        {
            return refuse("hugepageLimits");
        }
        if r.network.is_some() {
            return refuse("network");
        }
        if r.rdma.is_some() {
            return refuse("rdma");
        }
        if let Some(m) = &r.memory {
            if m.kernel.is_some() {
                return refuse("memory.kernel");
            }
            if m.kernel_tcp.is_some() {
                return refuse("memory.kernelTCP");
            }
            if m.swappiness.is_some_and(|v| v > 100) {
                return Err(c.refuse("linux.resources.memory.swappiness", "must be 0..100"));
            }
            if m.disable_oom_killer == Some(true) {
                return refuse("memory.disableOOMKiller");
            }
        }
        if let Some(cpu) = &r.cpu {
            if cpu.burst.is_some() {
                return refuse("cpu.burst");
            }
            if cpu.realtime_runtime.is_some() || cpu.realtime_period.is_some() {
                return refuse("cpu.realtimeRuntime");
            }
            if cpu.idle.is_some() {
                return refuse("cpu.idle");
            }
            if cpu.mems.as_deref().is_some_and(|m| !m.is_empty()) {
                return refuse("cpu.mems");
            }
        }
        if let Some(b) = &r.block_io {
            if b.leaf_weight.is_some() {
                return refuse("blockIO.leafWeight");
            }
            if !b.weight_device.is_empty() {
                return refuse("blockIO.weightDevice");
            }
        }
    }
    Ok(())
}
