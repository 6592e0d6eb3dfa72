//! Default seccomp filter of guests, shaped like Docker's default profile
//! (moby `profiles/seccomp/default.json`): unknown syscalls fail with `EPERM`,
//! an allowlist of syscalls is allowed, and a few groups are only allowed when
//! the matching capability is in the guest's bounding set.
//!
//! The filter is built with libseccomp and exported as classic BPF
//! (seccomp_export_bpf(3)) in the parent, so the child installs it with one
//! seccomp(2) call between fork and exec, without allocating.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use caps::{Capability, CapsHashSet};
use libseccomp::error::SeccompError as ScmpError;
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use nix::errno::Errno;

/// Syscalls allowed to every guest (Docker's unconditional list, plus the
/// per-architecture ones; names unknown to an architecture are skipped).
#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat", "capget",
    "capset", "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64",
    "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
    "clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "creat", "dup",
    "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
    "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat",
    "exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate",
    "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32",
    "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork",
    "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync",
    "ftruncate", "ftruncate64", "futex", "futex_requeue", "futex_time64", "futex_wait",
    "futex_waitv", "futex_wake", "futimesat", "getcpu", "getcwd", "getdents", "getdents64",
    "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups",
    "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid",
    "getpriority", "getrandom", "getresgid", "getresgid32", "getresuid", "getresuid32",
    "getrlimit", "get_robust_list", "getrusage", "getsid", "getsockname", "getsockopt",
    "get_thread_area", "gettid", "gettimeofday", "getuid", "getuid32", "getxattr",
    "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel",
    "ioctl", "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64", "ioprio_get",
    "ioprio_set", "io_setup", "io_submit", "ipc", "kill", "landlock_add_rule",
    "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lchown32", "lgetxattr",
    "link", "linkat", "listen", "listxattr", "llistxattr", "_llseek", "lremovexattr", "lseek",
    "lsetxattr", "lstat", "lstat64", "madvise", "map_shadow_stack", "membarrier", "memfd_create",
    "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2",
    "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
    "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64",
    "mq_unlink", "mremap", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock",
    "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "_newselect", "open",
    "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc",
    "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64", "preadv",
    "preadv2", "prlimit64", "process_mrelease", "pselect6", "pselect6_time64", "pwrite64",
    "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "recv",
    "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr",
    "rename", "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction",
    "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_getaffinity",
    "sched_getattr", "sched_getparam", "sched_get_priority_max", "sched_get_priority_min",
    "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64",
    "sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield",
    "seccomp", "select", "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send",
    "sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsgid32",
    "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer",
    "setpgid", "setpriority", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid",
    "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid",
    "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr", "shmat",
    "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4", "sigprocmask",
    "sigreturn", "socketcall", "splice", "stat", "stat64", "statfs", "statfs64",
    "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo", "tee",
    "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
    "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create", "timerfd_gettime",
    "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate",
    "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "utime", "utimensat",
    "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write",
    "writev",
    // Architecture specific (x86, arm, riscv).
    "arch_prctl", "modify_ldt", "arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2",
    "breakpoint", "cacheflush", "set_tls", "riscv_flush_icache",
];

/// Tracing/inspection of other processes: unconditional on kernels >= 4.8
/// (seccomp runs after ptrace there), else only with `CAP_SYS_PTRACE`.
#[rustfmt::skip]
const PTRACE: &[&str] =
    &["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"];

/// Syscalls allowed only when the capability is in the bounding set.
/// `clone`/`clone3` for `CAP_SYS_ADMIN` are handled in [`rules`].
#[rustfmt::skip]
const BY_CAPABILITY: &[(Capability, &[&str])] = &[
    (Capability::CAP_SYS_ADMIN, &[
        "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick", "mount", "mount_setattr",
        "move_mount", "open_tree", "pivot_root", "quotactl", "quotactl_fd", "setdomainname",
        "sethostname", "setns", "swapoff", "swapon", "umount", "umount2", "unshare",
    ]),
    (Capability::CAP_SYS_BOOT, &["reboot"]),
    (Capability::CAP_SYS_CHROOT, &["chroot"]),
    (Capability::CAP_SYS_MODULE, &["delete_module", "init_module", "finit_module"]),
    (Capability::CAP_SYS_PACCT, &["acct"]),
    (Capability::CAP_SYS_RAWIO, &["iopl", "ioperm"]),
    (Capability::CAP_SYS_TIME, &["settimeofday", "stime", "clock_settime", "clock_settime64"]),
    (Capability::CAP_SYS_TTY_CONFIG, &["vhangup"]),
    (Capability::CAP_SYS_NICE, &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"]),
    (Capability::CAP_SYSLOG, &["syslog"]),
];

/// Namespace flags refused to `clone` without `CAP_SYS_ADMIN`: NEWNS, NEWCGROUP,
/// NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET (Docker's 0x7E020000) and NEWTIME (0x80,
/// which `clone` would read as part of the exit signal anyway).
const CLONE_NS_FLAGS: u64 = 0x7E02_0000 | 0x80;
/// Execution domains `personality(2)` may select: PER_LINUX, PER_LINUX_32BIT,
/// UNAME26, PER_LINUX32 | UNAME26 (0x20008) and the 0xffffffff query.
const PERSONALITIES: [u64; 5] = [0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];
/// `ioctl` requests refused to every guest, compared on the low 32 bits like the kernel:
/// TIOCSTI (fake terminal input), TIOCLINUX (console selection/paste); FS_IOC_FSSETXATTR and
/// FS_IOC_SETFLAGS (64- and 32-bit), with which a file's owner could move its files out of the
/// guest's project quota (project id, inherit flag; ioctl_iflags(2)); and the btrfs ioctls
/// that make subvolumes and snapshots (a new subvolume is outside the guest's quota group and
/// its snapshots, and a read-only one blocks `delete`): BTRFS_IOC_SNAP_CREATE,
/// BTRFS_IOC_SUBVOL_CREATE, BTRFS_IOC_SNAP_CREATE_V2, BTRFS_IOC_SUBVOL_CREATE_V2.
const IOCTL_DENIED: [u64; 9] = [
    0x5412,
    0x541C,
    0x401c_5820,
    0x4008_6602,
    0x4004_6602,
    0x5000_9401,
    0x5000_940e,
    0x5000_9417,
    0x5000_9418,
];
/// FNV-1a of this file's text, computed at build time: part of the cache key of compiled
/// programs, so that a changed profile never loads a program compiled by an older build.
const PROFILE_HASH: u64 = fnv1a(0xcbf2_9ce4_8422_2325, include_str!("seccomp.rs").as_bytes());

/// FNV-1a over `bytes`, continuing from `h`.
const fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        h = (h ^ bytes[i] as u64).wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}
/// Socket families a guest may create (compared on the low 32 bits, as the kernel reads the
/// int): AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET (which also needs CAP_NET_RAW).
/// Every other family fails with EPERM: AF_ALG ("copy.fail") and AF_VSOCK as in Docker's
/// profile, and the rarely used families whose code (often autoloaded as a module by a
/// socket(2) call) has been a steady source of kernel exploits (TIPC, RDS, DCCP's, X.25...).
pub const SOCKET_FAMILIES: [u64; 5] = [1, 2, 10, 16, 17];
/// socketcall(2)'s SYS_SOCKET: the i386 multiplexer hides the family from the filter, so it
/// is refused with ENOSYS (not the default EPERM), as libcs built for kernels with direct
/// socket calls (i386 since Linux 4.3) use socket(2) instead; the other socketcall
/// operations create no sockets and stay allowed.
const SYS_SOCKET: u64 = 1;
/// socketcall(2)'s SYS_SOCKETPAIR: refused for the same reason (the family is hidden).
const SYS_SOCKETPAIR: u64 = 8;
/// Calls the i386 multiplexer socketcall(2) also makes: denying one of them in `[seccomp]`
/// denies socketcall too, or the i386 entry point would go around the denial.
const SOCKETCALL_OPS: &[&str] = &[
    "socket",
    "bind",
    "connect",
    "listen",
    "accept",
    "accept4",
    "getsockname",
    "getpeername",
    "socketpair",
    "send",
    "recv",
    "sendto",
    "recvfrom",
    "shutdown",
    "setsockopt",
    "getsockopt",
    "sendmsg",
    "recvmsg",
    "recvmmsg",
    "sendmmsg",
];
/// Calls the i386 multiplexer ipc(2) also makes (same reason, for `ipc`).
const IPC_OPS: &[&str] = &[
    "semop",
    "semget",
    "semctl",
    "semtimedop",
    "msgsnd",
    "msgrcv",
    "msgget",
    "msgctl",
    "shmat",
    "shmdt",
    "shmget",
    "shmctl",
];
const LOW_32_BITS: u64 = 0xffff_ffff;
/// Classic BPF opcodes (linux/filter.h) used to chain the ioctl guard into the main program.
const BPF_RET_K: u16 = 0x06;
const BPF_JMP_JA: u16 = 0x05;

/// Failure to build a [`SeccompProgram`], or to install it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeccompError {
    /// Building the filter with libseccomp (seccomp_init(3), seccomp_attr_set(3),
    /// seccomp_arch_add(3), seccomp_merge(3)) failed; `step` names the call.
    #[error("building the seccomp filter failed ({step})")]
    Build {
        /// The libseccomp call that failed.
        step: &'static str,
        /// libseccomp's error.
        #[source]
        source: ScmpError,
    },
    /// seccomp_rule_add(3) for `syscall` failed.
    #[error("adding the seccomp rule for syscall {syscall} failed")]
    Rule {
        /// Name of the system call.
        syscall: String,
        /// libseccomp's error.
        #[source]
        source: ScmpError,
    },
    /// seccomp_export_bpf(3) failed.
    #[error("exporting the seccomp filter as BPF failed")]
    Export(#[source] ScmpError),
    /// The memfd receiving the exported BPF could not be created or read back.
    #[error("reading back the exported seccomp BPF program failed")]
    ExportBuffer(#[source] std::io::Error),
    /// The exported BPF is not a valid program for seccomp(2) (odd size, too many
    /// instructions for BPF_MAXINSNS, or an instruction the chaining does not handle).
    #[error("the exported seccomp BPF program is invalid: {0}")]
    InvalidProgram(String),
    /// Loading the filter with seccomp(2) failed; for callers wrapping the
    /// error of [`SeccompProgram::load`].
    #[error("loading the seccomp filter with seccomp(2) failed")]
    Load(#[source] Errno),
}

/// A compiled classic-BPF seccomp program, built in the parent before fork so
/// the child only makes one syscall (seccomp(2) `SECCOMP_SET_MODE_FILTER`).
#[derive(Clone)]
pub struct SeccompProgram {
    filter: Vec<libc::sock_filter>,
}

impl std::fmt::Debug for SeccompProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeccompProgram")
            .field("instructions", &self.filter.len())
            .finish()
    }
}

/// One libseccomp rule: action for `name` when all comparisons hold.
struct Rule {
    name: String,
    action: ScmpAction,
    args: Vec<ScmpArgCompare>,
}

fn rule(name: &str, action: ScmpAction, args: Vec<ScmpArgCompare>) -> Rule {
    Rule {
        name: name.to_string(),
        action,
        args,
    }
}

/// Per-guest changes to the default profile (`[seccomp]` of NAME.toml, validated there with
/// [`syscall_known`]). `deny` wins: every rule of those syscalls is removed, so they fail
/// with the default EPERM. `allow` replaces every rule of those syscalls (conditions on
/// capabilities or arguments, and the argument guard: ioctl requests, socketcall's
/// SYS_SOCKET) with an unconditional allow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// System calls allowed unconditionally.
    pub allow: Vec<String>,
    /// System calls refused with EPERM.
    pub deny: Vec<String>,
}

impl Overrides {
    /// Apply to the rules of the main program.
    fn apply_main(&self, rules: &mut Vec<Rule>) {
        let mut deny: Vec<&str> = self.deny.iter().map(String::as_str).collect();
        if deny.iter().any(|d| SOCKETCALL_OPS.contains(d)) {
            deny.push("socketcall");
        }
        if deny.iter().any(|d| IPC_OPS.contains(d)) {
            deny.push("ipc");
        }
        rules.retain(|r| !deny.contains(&r.name.as_str()) && !self.allow.contains(&r.name));
        rules.extend(
            self.allow
                .iter()
                .filter(|n| !self.deny.contains(n))
                .map(|n| rule(n, ScmpAction::Allow, vec![])),
        );
    }

    /// Apply to the rules of the guard program (argument denials before the main program).
    fn apply_guard(&self, rules: &mut Vec<Rule>) {
        rules.retain(|r| !self.allow.contains(&r.name) || self.deny.contains(&r.name));
    }
}

/// Whether `name` is a system call of at least one architecture of the filter (libseccomp's
/// table), e.g. for checking `[seccomp]` names in a config.
pub fn syscall_known(name: &str) -> bool {
    !name.is_empty()
        && architectures().iter().any(|&arch| {
            ScmpSyscall::from_name_by_arch(name, arch).is_ok_and(|nr| i32::from(nr) >= 0)
        })
}

impl SeccompProgram {
    /// Docker-shaped default profile for a guest whose capability bounding set
    /// is `bounding` (see the module documentation, seccomp(2) and
    /// seccomp_rule_add(3)). Unknown syscall names are skipped per architecture;
    /// the filter covers the native architecture plus x86 and x32 on x86_64, arm
    /// on aarch64 (other architectures get only the native one, secondary ones
    /// unknown to libseccomp are skipped). Calls from another architecture kill
    /// the process.
    ///
    /// Always refused, whatever the capabilities: kexec_load, kexec_file_load,
    /// open_by_handle_at, bpf, perf_event_open, userfaultfd, io_uring_*, keyctl,
    /// add_key, request_key, lookup_dcookie, vm86*, nfsservctl, uselib, and
    /// `ioctl` TIOCSTI/TIOCLINUX.
    ///
    /// # Errors
    /// [`SeccompError`] if libseccomp fails to build or export the filter
    /// (seccomp_export_bpf(3)) or the result is not a valid program.
    pub fn default_profile(bounding: &CapsHashSet) -> Result<SeccompProgram, SeccompError> {
        SeccompProgram::guest_profile(bounding, &[], &[])
    }

    /// [`SeccompProgram::default_profile`], with the reboot(2) commands `refused_reboot` (e.g.
    /// `LINUX_REBOOT_CMD_RESTART`, see reboot(2)) refused with EPERM even when the bounding set
    /// keeps CAP_SYS_BOOT: a guest whose reboot or halt is to be ignored. A non-empty
    /// `ioprio_allowed` lets ioprio_set(2) set only those values (the guest's `ionice` and
    /// lower priorities; see [`crate::config::ioprio_allowed`]).
    pub fn guest_profile(
        bounding: &CapsHashSet,
        refused_reboot: &[u64],
        ioprio_allowed: &[u64],
    ) -> Result<SeccompProgram, SeccompError> {
        SeccompProgram::guest_profile_with(
            bounding,
            refused_reboot,
            ioprio_allowed,
            &Overrides::default(),
        )
    }

    /// [`SeccompProgram::guest_profile`] with the guest's [`Overrides`] applied.
    pub fn guest_profile_with(
        bounding: &CapsHashSet,
        refused_reboot: &[u64],
        ioprio_allowed: &[u64],
        overrides: &Overrides,
    ) -> Result<SeccompProgram, SeccompError> {
        // libseccomp refuses a rule whose action equals the default action, and an
        // unconditional allow absorbs conditional rules of the same syscall, so
        // the ioctl denials live in a guard program (default allow) whose allow
        // returns are turned into jumps to the main program.
        let deny = ScmpAction::Errno(libc::EPERM);
        let mut guard = IOCTL_DENIED
            .iter()
            .map(|&req| rule("ioctl", deny, vec![masked_eq(1, LOW_32_BITS, req)]))
            .collect::<Vec<_>>();
        for op in [SYS_SOCKET, SYS_SOCKETPAIR] {
            guard.push(rule(
                "socketcall",
                ScmpAction::Errno(libc::ENOSYS),
                vec![masked_eq(0, LOW_32_BITS, op)],
            ));
        }
        overrides.apply_guard(&mut guard);
        let guard = compile(ScmpAction::Allow, ScmpAction::Allow, &guard)?;
        let mut main = rules(
            bounding,
            ptrace_needs_no_cap(),
            refused_reboot,
            ioprio_allowed,
        );
        overrides.apply_main(&mut main);
        let main = compile(deny, ScmpAction::KillProcess, &main)?;
        let filter = chain(guard, main)?;
        if filter.len() > libc::BPF_MAXINSNS as usize {
            return Err(invalid(format!("{} instructions", filter.len())));
        }
        Ok(SeccompProgram { filter })
    }

    /// [`SeccompProgram::guest_profile`], kept compiled in `cache_dir` (root-only, e.g.
    /// `RUN/.seccomp`): compiling with libseccomp takes milliseconds on every start and exec,
    /// loading the stored program microseconds. The file name is a hash of every input (the
    /// bounding set, the refused reboot commands, the kernel's ptrace behaviour, the
    /// architecture and this library's version); a file that is not a whole program is
    /// ignored and rewritten. Errors: as [`SeccompProgram::guest_profile`]; cache trouble only
    /// costs the compilation.
    pub fn guest_profile_cached(
        bounding: &CapsHashSet,
        refused_reboot: &[u64],
        ioprio_allowed: &[u64],
        overrides: &Overrides,
        cache_dir: &std::path::Path,
    ) -> Result<SeccompProgram, SeccompError> {
        let mut caps: Vec<u8> = bounding.iter().map(|c| c.index()).collect();
        caps.sort_unstable();
        let key = format!(
            "{}-{}-{}-{caps:?}-{refused_reboot:?}-{ioprio_allowed:?}-{:?}-{:?}",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::ARCH,
            ptrace_needs_no_cap(),
            overrides.allow,
            overrides.deny,
        );
        let h = fnv1a(PROFILE_HASH, key.as_bytes());
        let path = cache_dir.join(format!("{h:016x}.bpf"));
        let size = std::mem::size_of::<libc::sock_filter>();
        if let Ok(bytes) = std::fs::read(&path) {
            let n = bytes.len() / size;
            if bytes.len() % size == 0 && n > 0 && n <= libc::BPF_MAXINSNS as usize {
                let filter = bytes
                    .chunks_exact(size)
                    .map(|c| libc::sock_filter {
                        code: u16::from_ne_bytes([c[0], c[1]]),
                        jt: c[2],
                        jf: c[3],
                        k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
                    })
                    .collect();
                return Ok(SeccompProgram { filter });
            }
        }
        let prog = SeccompProgram::guest_profile_with(
            bounding,
            refused_reboot,
            ioprio_allowed,
            overrides,
        )?;
        let mut bytes = Vec::with_capacity(prog.filter.len() * size);
        for f in &prog.filter {
            bytes.extend_from_slice(&f.code.to_ne_bytes());
            bytes.extend_from_slice(&[f.jt, f.jf]);
            bytes.extend_from_slice(&f.k.to_ne_bytes());
        }
        use std::os::unix::fs::DirBuilderExt;
        if std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(cache_dir)
            .is_ok()
        {
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::write(&tmp, &bytes).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
        }
        Ok(prog)
    }

    /// Export a filter built elsewhere (the OCI front end builds one from `config.json`).
    ///
    /// # Errors
    /// [`SeccompError`] if libseccomp cannot export it or the result is not a valid program.
    pub fn from_context(ctx: &ScmpFilterContext) -> Result<SeccompProgram, SeccompError> {
        Ok(SeccompProgram {
            filter: export(ctx)?,
        })
    }

    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.filter.len()
    }

    /// Whether the program has no instruction (never true for a built profile).
    pub fn is_empty(&self) -> bool {
        self.filter.is_empty()
    }

    /// Install the filter on the calling thread with seccomp(2)
    /// `SECCOMP_SET_MODE_FILTER` (no TSYNC, so other threads are not filtered).
    /// Async-signal-safe: no allocation; callable between fork and exec.
    ///
    /// # Errors
    /// The errno of seccomp(2): `EACCES` without `CAP_SYS_ADMIN` in the user
    /// namespace and without no_new_privs (prctl(2) `PR_SET_NO_NEW_PRIVS`),
    /// `EINVAL` for an invalid or too long program, `ENOMEM`, ...
    pub fn load(&self) -> Result<(), Errno> {
        let len = u16::try_from(self.filter.len()).map_err(|_| Errno::EINVAL)?;
        let prog = libc::sock_fprog {
            len,
            filter: self.filter.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` describes `len` initialised instructions owned by `self`,
        // alive for the whole call; the kernel only reads (copies) them.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::c_ulong::from(libc::SECCOMP_SET_MODE_FILTER),
                0 as libc::c_ulong,
                &prog as *const libc::sock_fprog,
            )
        };
        Errno::result(rc).map(drop)
    }
}

fn invalid(what: impl std::fmt::Display) -> SeccompError {
    SeccompError::InvalidProgram(what.to_string())
}

fn masked_eq(arg: u32, mask: u64, value: u64) -> ScmpArgCompare {
    ScmpArgCompare::new(arg, ScmpCompareOp::MaskedEqual(mask), value)
}

/// The reboot(2) commands (include/uapi/linux/reboot.h): CAD_OFF, CAD_ON, HALT, POWER_OFF,
/// RESTART, RESTART2, SW_SUSPEND, KEXEC.
pub const REBOOT_CMDS: [u64; 8] = [
    0x0000_0000,
    0x89AB_CDEF,
    0xCDEF_0123,
    0x4321_FEDC,
    0x0123_4567,
    0xA1B2_C3D4,
    0xD000_FCE2,
    0x4558_4543,
];

/// All rules of the main program for `bounding`.
fn rules(
    bounding: &CapsHashSet,
    ptrace_without_cap: bool,
    refused_reboot: &[u64],
    ioprio_allowed: &[u64],
) -> Vec<Rule> {
    let allow = ScmpAction::Allow;
    let mut rules: Vec<Rule> = ALLOWED
        .iter()
        .filter(|&&n| n != "io_setup")
        .filter(|&&n| n != "ioprio_set" || ioprio_allowed.is_empty())
        .map(|&n| rule(n, allow, vec![]))
        .collect();
    // Linux AIO contexts come from one host-wide pool (fs.aio-max-nr): one io_setup(65536)
    // took all of it from the host and every other guest. io_setup says ENOSYS, so programs
    // use their fallback (MariaDB, QEMU and fio have one); `[seccomp] allow = ["io_setup"]`
    // gives it back to a guest that needs it (sharing the pool). Linux AIO also carries a
    // priority per request (IOCB_FLAG_IOPRIO) that no filter can see.
    rules.push(rule("io_setup", ScmpAction::Errno(libc::ENOSYS), vec![]));
    // ioprio_set(which, who, ioprio): only the allowed priorities (low 32 bits, an int).
    rules.extend(
        ioprio_allowed
            .iter()
            .map(|&v| rule("ioprio_set", allow, vec![masked_eq(2, LOW_32_BITS, v)])),
    );
    rules.extend(
        SOCKET_FAMILIES
            .iter()
            .map(|&f| rule("socket", allow, vec![masked_eq(0, LOW_32_BITS, f)])),
    );
    // socketpair(2) makes sockets of its family too (the family's code runs even when it
    // then refuses pairs): AF_UNIX only, the one family with pairs that guests use.
    rules.push(rule(
        "socketpair",
        allow,
        vec![masked_eq(0, LOW_32_BITS, 1)],
    ));
    rules.extend(
        PERSONALITIES
            .iter()
            .map(|&p| rule("personality", allow, vec![masked_eq(0, LOW_32_BITS, p)])),
    );
    if ptrace_without_cap || bounding.contains(&Capability::CAP_SYS_PTRACE) {
        rules.extend(PTRACE.iter().map(|&n| rule(n, allow, vec![])));
    }
    for (cap, names) in BY_CAPABILITY {
        if bounding.contains(cap) {
            rules.extend(
                names
                    .iter()
                    .filter(|&&n| n != "reboot" || refused_reboot.is_empty())
                    .map(|&n| rule(n, allow, vec![])),
            );
        }
    }
    if bounding.contains(&Capability::CAP_SYS_BOOT) && !refused_reboot.is_empty() {
        // One allow per reboot(2) command that stays allowed (cmd is argument 2).
        rules.extend(
            REBOOT_CMDS
                .iter()
                .filter(|c| !refused_reboot.contains(c))
                .map(|&c| rule("reboot", allow, vec![masked_eq(2, LOW_32_BITS, c)])),
        );
    }
    if bounding.contains(&Capability::CAP_SYS_ADMIN) {
        rules.extend(["clone", "clone3"].map(|n| rule(n, allow, vec![])));
    } else {
        rules.push(rule("clone", allow, vec![masked_eq(0, CLONE_NS_FLAGS, 0)]));
        // ENOSYS makes glibc fall back to clone, whose flags can be inspected.
        rules.push(rule("clone3", ScmpAction::Errno(libc::ENOSYS), vec![]));
    }
    rules
}

/// Whether the running kernel is >= 4.8, where seccomp is re-checked after
/// ptrace changes a syscall, so ptrace cannot bypass the filter (Docker's minKernel).
fn ptrace_needs_no_cap() -> bool {
    let Ok(uts) = nix::sys::utsname::uname() else {
        return false;
    };
    let release = uts.release().to_string_lossy();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|s| s.parse::<u32>().ok());
    match (nums.next().flatten(), nums.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (4, 8),
        _ => false,
    }
}

/// Architectures of the filter, native first; Docker's set on amd64 and arm64.
fn architectures() -> &'static [ScmpArch] {
    if cfg!(target_arch = "x86_64") {
        &[ScmpArch::X8664, ScmpArch::X86, ScmpArch::X32]
    } else if cfg!(target_arch = "aarch64") {
        &[ScmpArch::Aarch64, ScmpArch::Arm]
    } else {
        &[ScmpArch::Native]
    }
}

/// Build one filter per architecture (so syscalls missing on an architecture
/// add no dead checks), merge them and export the BPF.
fn compile(
    default: ScmpAction,
    bad_arch: ScmpAction,
    rules: &[Rule],
) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let build = |step| move |source| SeccompError::Build { step, source };
    let mut merged: Option<ScmpFilterContext> = None;
    for (i, &arch) in architectures().iter().enumerate() {
        let mut ctx = ScmpFilterContext::new(default).map_err(build("seccomp_init"))?;
        ctx.set_act_badarch(bad_arch)
            .map_err(build("bad-arch action"))?;
        // The program is exported and loaded by us: keep libseccomp from
        // expecting to set no_new_privs or TSYNC at load time.
        ctx.set_ctl_nnp(false)
            .map_err(build("no_new_privs attribute"))?;
        ctx.set_ctl_tsync(false).map_err(build("tsync attribute"))?;
        // A binary search over syscall numbers instead of a linear list: the filter runs on
        // every system call of the guest (libseccomp >= 2.5; older ones keep the list).
        let _ = ctx.set_ctl_optimize(2);
        if i > 0 {
            if ctx.add_arch(arch).is_err() {
                continue; // Unknown to this libseccomp: filter without it.
            }
            ctx.remove_arch(ScmpArch::Native)
                .map_err(build("seccomp_arch_remove"))?;
        }
        for r in rules {
            // Names unknown here (or only known as a pseudo-syscall of another
            // architecture, negative number) are skipped.
            if !ScmpSyscall::from_name_by_arch(&r.name, arch).is_ok_and(|nr| i32::from(nr) >= 0) {
                continue;
            }
            let rule_err = |source| SeccompError::Rule {
                syscall: r.name.clone(),
                source,
            };
            let nr = ScmpSyscall::from_name(&r.name).map_err(rule_err)?;
            ctx.add_rule_conditional(r.action, nr, &r.args)
                .map_err(rule_err)?;
        }
        match merged.as_mut() {
            Some(m) => _ = m.merge(ctx).map_err(build("seccomp_merge"))?,
            None => merged = Some(ctx),
        }
    }
    let ctx = merged.ok_or_else(|| invalid("no architecture"))?;
    export(&ctx)
}

/// seccomp_export_bpf(3) into a memfd, read back as native-endian `sock_filter`s.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let fd =
        nix::sys::memfd::memfd_create(c"vserver-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(|e| SeccompError::ExportBuffer(e.into()))?;
    let mut file = File::from(fd);
    ctx.export_bpf(&file).map_err(SeccompError::Export)?;
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(SeccompError::ExportBuffer)?;
    if bytes.is_empty() || bytes.len() % 8 != 0 {
        return Err(invalid(format!("{} bytes", bytes.len())));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|b| libc::sock_filter {
            code: u16::from_ne_bytes([b[0], b[1]]),
            jt: b[2],
            jf: b[3],
            k: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        })
        .collect())
}

/// Prepend `guard` to `main`: each `RET ALLOW` of the guard becomes a jump past
/// its end, i.e. to the first instruction of `main` (like stacked filters).
fn chain(
    mut guard: Vec<libc::sock_filter>,
    main: Vec<libc::sock_filter>,
) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let len = guard.len();
    for (pc, ins) in guard.iter_mut().enumerate() {
        // Class RET (BPF_K is 0) returning something else than a constant.
        if ins.code & 0x07 == BPF_RET_K && ins.code != BPF_RET_K {
            return Err(invalid(format!("return opcode {:#x}", ins.code)));
        }
        if ins.code == BPF_RET_K && ins.k == libc::SECCOMP_RET_ALLOW {
            let k = u32::try_from(len - pc - 1).map_err(invalid)?;
            *ins = libc::sock_filter {
                code: BPF_JMP_JA,
                jt: 0,
                jf: 0,
                k,
            };
        }
    }
    guard.extend(main);
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sched::{unshare, CloneFlags};
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    use Capability::*;

    type Check = (&'static str, fn() -> bool);
    type Ret = Result<libc::c_long, Errno>;
    const X32: libc::c_long = 0x4000_0000;
    const SESSION_KEYRING: u64 = -3i64 as u64;

    /// Raw syscall; arguments are integers or pointers to live stack memory.
    fn sys(nr: libc::c_long, a0: u64, a1: u64, a2: u64) -> Ret {
        // SAFETY: callers pass plain integers or valid pointers the kernel may read/write.
        Errno::result(unsafe { libc::syscall(nr, a0, a1, a2, 0u64, 0u64) })
    }

    fn ptr<T>(p: &T) -> u64 {
        p as *const T as u64
    }

    fn exit(code: i32) -> ! {
        // SAFETY: _exit(2) ends the process without running any Rust or libc cleanup.
        unsafe { libc::_exit(code) }
    }

    fn eperm(r: Ret) -> bool {
        r == Err(Errno::EPERM)
    }

    /// An i386 system call through `int 0x80` from this 64-bit process: the kernel's 32-bit
    /// entry, seen by seccomp as AUDIT_ARCH_I386. Returns the raw eax (-errno on failure).
    #[cfg(target_arch = "x86_64")]
    fn int80(nr: u32, a: u32, b: u32, c: u32) -> i32 {
        let ret: i32;
        // SAFETY: a system call with integer arguments; rbx (reserved by LLVM) is swapped in
        // and restored around it; int 0x80 clobbers nothing but eax (r8-r11 are zeroed on
        // some kernels, hence the clobbers).
        unsafe {
            std::arch::asm!(
                "xchg {b:r}, rbx",
                "int 0x80",
                "xchg {b:r}, rbx",
                b = inout(reg) u64::from(a) => _,
                inlateout("eax") nr as i32 => ret,
                in("ecx") b,
                in("edx") c,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            );
        }
        ret
    }

    fn ioctl_stdin(req: u64) -> Ret {
        sys(libc::SYS_ioctl, 0, req, ptr(&b'x'))
    }

    /// Installs `prog` in a forked child, runs `checks` there (syscalls only, no
    /// allocation) and asserts they all pass.
    fn run(prog: &SeccompProgram, checks: &[Check]) {
        // SAFETY: the child only makes syscalls and leaves with _exit.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => exit(match prog.load() {
                Err(_) => 100,
                Ok(()) => checks
                    .iter()
                    .position(|c| !c.1())
                    .map_or(0, |i| i as i32 + 1),
            }),
            ForkResult::Parent { child } => match waitpid(child, None).expect("waitpid") {
                WaitStatus::Exited(_, 0) => {}
                WaitStatus::Exited(_, 100) => panic!("loading the filter failed"),
                WaitStatus::Exited(_, n) => panic!("check {:?} failed", checks[n as usize - 1].0),
                other => panic!("child ended with {other:?}"),
            },
        }
    }

    fn docker_caps() -> CapsHashSet {
        #[rustfmt::skip]
        let caps = [CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FSETID, CAP_FOWNER, CAP_MKNOD, CAP_NET_RAW,
            CAP_SETGID, CAP_SETUID, CAP_SETFCAP, CAP_SETPCAP, CAP_NET_BIND_SERVICE,
            CAP_SYS_CHROOT, CAP_KILL, CAP_AUDIT_WRITE];
        caps.into_iter().collect()
    }

    #[test]
    fn builds_small_programs() {
        let plain = SeccompProgram::default_profile(&docker_caps()).expect("profile");
        let admin = SeccompProgram::default_profile(&caps::all()).expect("profile");
        eprintln!(
            "instructions: docker caps {}, all caps {}",
            plain.len(),
            admin.len()
        );
        assert!(!plain.is_empty() && plain.len() < 4096 && admin.len() < 4096);
        assert_ne!(plain.len(), admin.len());
    }

    #[test]
    #[rustfmt::skip]
    fn refuses_without_sys_admin() {
        let prog = SeccompProgram::default_profile(&docker_caps()).expect("profile");
        run(&prog, &[
            ("getpid", || sys(libc::SYS_getpid, 0, 0, 0) == Ok(nix::unistd::getpid().as_raw().into())),
            ("openat+write", || {
                let path = c"/dev/null".as_ptr() as u64;
                let fd = sys(libc::SYS_openat, libc::AT_FDCWD as u64, path, libc::O_WRONLY as u64);
                fd.is_ok_and(|fd| sys(libc::SYS_write, fd as u64, ptr(&b'x'), 1) == Ok(1))
            }),
            ("fork", || {
                // SAFETY: the grandchild only calls _exit.
                match unsafe { fork() } {
                    Ok(ForkResult::Child) => exit(7),
                    Ok(ForkResult::Parent { child }) => waitpid(child, None) == Ok(WaitStatus::Exited(child, 7)),
                    Err(_) => false,
                }
            }),
            ("unshare(CLONE_NEWNS)", || unshare(CloneFlags::CLONE_NEWNS) == Err(Errno::EPERM)),
            ("clone(CLONE_NEWUTS)", || match sys(libc::SYS_clone, (libc::CLONE_NEWUTS | libc::SIGCHLD) as u64, 0, 0) {
                Ok(0) => exit(0), // Filter failed: the parent reports this check.
                r => eperm(r),
            }),
            ("clone3", || sys(libc::SYS_clone3, 0, 0, 0) == Err(Errno::ENOSYS)),
            ("io_setup", || sys(libc::SYS_io_setup, 1, 0, 0) == Err(Errno::ENOSYS)),
            ("keyctl", || eperm(sys(libc::SYS_keyctl, 0, SESSION_KEYRING, 0))),
            ("bpf", || eperm(sys(libc::SYS_bpf, 0, 0, 0))),
            ("io_uring_setup", || eperm(sys(libc::SYS_io_uring_setup, 1, 0, 0))),
            ("reboot", || eperm(sys(libc::SYS_reboot, 0, 0, 0))),
            ("personality(ADDR_NO_RANDOMIZE)", || eperm(sys(libc::SYS_personality, 0x4_0000, 0, 0))),
            ("personality(query)", || sys(libc::SYS_personality, 0xffff_ffff, 0, 0).is_ok()),
            ("ioctl(TIOCSTI)", || eperm(ioctl_stdin(0x5412))),
            ("ioctl(TIOCSTI | 1 << 32)", || cfg!(target_pointer_width = "32") || eperm(ioctl_stdin(0x1_0000_5412))),
            ("ioctl(TIOCLINUX)", || eperm(ioctl_stdin(0x541C))),
            ("ioctl(FIONBIO)", || sys(libc::SYS_ioctl, 1, libc::FIONBIO, ptr(&0 as &libc::c_int)).is_ok()),
            ("socket(AF_INET)", || sys(libc::SYS_socket, 2, libc::SOCK_DGRAM as u64, 0).is_ok()),
            ("socket(AF_ALG)", || eperm(sys(libc::SYS_socket, 38, libc::SOCK_SEQPACKET as u64, 0))),
            ("socket(AF_VSOCK)", || eperm(sys(libc::SYS_socket, 40, libc::SOCK_STREAM as u64, 0))),
            ("socket(AF_VSOCK | 1 << 32)", || eperm(sys(libc::SYS_socket, 40 | 1 << 32, libc::SOCK_STREAM as u64, 0))),
            ("socket(AF_TIPC)", || eperm(sys(libc::SYS_socket, 30, libc::SOCK_DGRAM as u64, 0))),
            // i386 entry: the filter holds the same rules for the x86 architecture.
            #[cfg(target_arch = "x86_64")]
            ("i386 getpid", || int80(20, 0, 0, 0) > 0),
            #[cfg(target_arch = "x86_64")]
            ("i386 unshare(CLONE_NEWNS)", || int80(310, 0x20000, 0, 0) == -libc::EPERM),
            #[cfg(target_arch = "x86_64")]
            ("i386 keyctl", || int80(288, 0, SESSION_KEYRING as u32, 0) == -libc::EPERM),
            #[cfg(target_arch = "x86_64")]
            ("i386 mount", || int80(21, 0, 0, 0) == -libc::EPERM),
            #[cfg(target_arch = "x86_64")]
            ("i386 socketcall(SYS_SOCKET)", || int80(102, 1, 0, 0) == -libc::ENOSYS),
            #[cfg(target_arch = "x86_64")]
            ("i386 socket(AF_ALG)", || int80(359, 38, 5, 0) == -libc::EPERM),
            // x32 is an architecture of the filter as in Docker: getpid passes the
            // filter (ENOSYS if the kernel lacks CONFIG_X86_X32_ABI), keyctl does not.
            #[cfg(target_arch = "x86_64")]
            ("x32 keyctl", || eperm(sys(X32 | libc::SYS_keyctl, 0, SESSION_KEYRING, 0))),
            #[cfg(target_arch = "x86_64")]
            ("x32 getpid", || !eperm(sys(X32 | libc::SYS_getpid, 0, 0, 0))),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn allows_namespaces_with_sys_admin() {
        let prog = SeccompProgram::default_profile(&caps::all()).expect("profile");
        run(&prog, &[
            ("unshare(CLONE_NEWUTS)", || unshare(CloneFlags::CLONE_NEWUTS).is_ok()),
            ("clone3 reaches the kernel", || sys(libc::SYS_clone3, 0, 0, 0) == Err(Errno::EINVAL)),
            ("keyctl still refused", || eperm(sys(libc::SYS_keyctl, 0, SESSION_KEYRING, 0))),
            ("ioctl(TIOCSTI) still refused", || eperm(ioctl_stdin(0x5412))),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn overrides_allow_and_deny_by_name() {
        let o = Overrides {
            allow: vec!["keyctl".into(), "socket".into(), "io_setup".into()],
            deny: vec!["uname".into()],
        };
        let prog = SeccompProgram::guest_profile_with(&docker_caps(), &[], &[], &o).expect("profile");
        run(&prog, &[
            // io_setup(1, NULL): the kernel's own answer (EFAULT), not the filter's ENOSYS.
            ("io_setup reaches the kernel", || sys(libc::SYS_io_setup, 1, 0, 0) == Err(Errno::EFAULT)),
            ("keyctl reaches the kernel", || !eperm(sys(libc::SYS_keyctl, 0, SESSION_KEYRING, 0))),
            ("socket(AF_TIPC) reaches the kernel", || !eperm(sys(libc::SYS_socket, 30, libc::SOCK_DGRAM as u64, 0))),
            ("uname denied", || { let mut u = [0u8; 390]; eperm(sys(libc::SYS_uname, u.as_mut_ptr() as u64, 0, 0)) }),
            ("bpf still refused", || eperm(sys(libc::SYS_bpf, 0, 0, 0))),
        ]);
        assert!(syscall_known("keyctl") && syscall_known("socketcall") && syscall_known("clone3"));
        assert!(!syscall_known("fly") && !syscall_known(""));
    }

    #[test]
    fn cached_programs_equal_compiled_ones_and_bad_files_are_rewritten() {
        let dir = std::env::temp_dir().join(format!("seccomp-cache-{}", std::process::id()));
        let caps = docker_caps();
        let words = |p: &SeccompProgram| {
            p.filter
                .iter()
                .map(|f| (f.code, f.jt, f.jf, f.k))
                .collect::<Vec<_>>()
        };
        let fresh = words(&SeccompProgram::guest_profile(&caps, &[], &[]).expect("profile"));
        let cached = |c: &CapsHashSet| {
            words(
                &SeccompProgram::guest_profile_cached(c, &[], &[], &Overrides::default(), &dir)
                    .unwrap(),
            )
        };
        assert!(cached(&caps) == fresh, "the first, compiled and stored");
        assert!(cached(&caps) == fresh, "the second, loaded");
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(files.len(), 1);
        std::fs::write(files[0].path(), b"garbage").unwrap();
        assert!(cached(&caps) == fresh, "a bad file is replaced");
        assert!(
            cached(&caps::all()) != fresh,
            "another input, another program"
        );
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
