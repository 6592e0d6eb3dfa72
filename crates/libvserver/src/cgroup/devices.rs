//! The device allowlist of a guest on cgroup v2, where no `devices` controller exists: a
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the guest's v2 directory (as runc, crun
//! and systemd do; Documentation/admin-guide/cgroup-v2.rst, "Device controller"). It allows
//! the character devices of a guest's /dev (the same list as the v1 `devices.allow` rules) and
//! refuses every other mknod(2) and open(2) of a device node, so that a guest given CAP_MKNOD
//! still cannot reach a host disk, /dev/mem or /dev/kmsg. Attached without
//! `BPF_F_ALLOW_OVERRIDE`/`BPF_F_ALLOW_MULTI`, it lives as long as the cgroup.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Character devices a guest may make and open: (major, minor or None for all minors):
/// null zero full random urandom, tty, ptmx, the devpts slaves. Not 5:1, the host's system
/// console: a guest's /dev/console is a bind of one of its ptys (136:N), and a 5:1 node a
/// guest made would open the host's console. Both the v2 program and the v1 `devices.allow`
/// rules are made from this list.
pub const GUEST_CHAR_DEVICES: &[(u32, Option<u32>)] = &[
    (1, Some(3)),
    (1, Some(5)),
    (1, Some(7)),
    (1, Some(8)),
    (1, Some(9)),
    (5, Some(0)),
    (5, Some(2)),
    (136, None),
];

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_QUERY: libc::c_long = 16;
const PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const ATTACH_CGROUP_DEVICE: u32 = 6;
/// `BPF_DEVCG_DEV_CHAR`: the device type in the low 16 bits of `access_type`.
const DEVCG_DEV_CHAR: i32 = 2;

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

const LDX_MEM_W: u8 = 0x61;
const ALU64_AND_K: u8 = 0x57;
const ALU64_MOV_K: u8 = 0xb7;
const JMP_JNE_K: u8 = 0x55;
const JMP_JEQ_K: u8 = 0x15;
const JMP_JA: u8 = 0x05;
const JMP_EXIT: u8 = 0x95;

/// The program for `allowed` over `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major;
/// u32 minor; }`: return 1 (allow) for a listed character device, else 0 (EPERM).
fn program(allowed: &[(u32, Option<u32>)]) -> Vec<Insn> {
    // r2 = type, r3 = major, r4 = minor; then one test per entry; deny; allow.
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU64_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 4, 0),
        insn(LDX_MEM_W, 4, 1, 8, 0),
    ];
    let tests: usize = allowed
        .iter()
        .map(|(_, m)| if m.is_some() { 2 } else { 1 })
        .sum();
    // The type test jumps over all tests to the deny (2 instructions before allow).
    p.push(insn(JMP_JNE_K, 2, 0, tests as i16, DEVCG_DEV_CHAR));
    let mut left = tests;
    for (major, minor) in allowed {
        let here = if minor.is_some() { 2 } else { 1 };
        left -= here;
        // Offsets are relative to the next instruction; the deny block is `left` tests away
        // and is 2 instructions long, so allow is left + 2 away from the last test.
        match minor {
            Some(mi) => {
                p.push(insn(JMP_JNE_K, 3, 0, 1, *major as i32));
                p.push(insn(JMP_JEQ_K, 4, 0, (left + 2) as i16, *mi as i32));
            }
            None => p.push(insn(JMP_JEQ_K, 3, 0, (left + 2) as i16, *major as i32)),
        }
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    p.push(insn(JMP_JA, 0, 0, 1, 0));
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 1));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> libc::c_long {
    // SAFETY: bpf(2) reads (and writes the log / query results into) the attribute struct,
    // which is valid, zero-padded and lives for the call.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    }
}

/// `union bpf_attr` for BPF_PROG_LOAD (the fields used, zero-padded).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    pad: [u64; 8],
}

/// `union bpf_attr` for BPF_PROG_ATTACH and BPF_PROG_QUERY (the fields used, zero-padded).
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd_or_type: u32,
    attach_type_or_query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    pad: [u32; 11],
}

/// Load the device program and attach it to the cgroup v2 directory `dir`.
///
/// Errors: the step, the kernel's errno (EPERM without CAP_SYS_ADMIN, EINVAL without
/// CONFIG_CGROUP_BPF) and, for a refused program, the end of the verifier's log.
pub fn attach_device_filter(dir: &Path) -> Result<(), String> {
    load_and_attach(dir, &program(GUEST_CHAR_DEVICES))
}

/// One rule of a device allowlist or denylist (an OCI `linux.resources.devices` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    /// Allow (true) or deny.
    pub allow: bool,
    /// `Some('c')`, `Some('b')`, or None for both.
    pub kind: Option<char>,
    /// Major number, None for any.
    pub major: Option<u32>,
    /// Minor number, None for any.
    pub minor: Option<u32>,
    /// Access bits as the program sees them: 1 mknod, 2 read, 4 write.
    pub access: u32,
}

const ALU64_RSH_K: u8 = 0x77;
const ALU64_MOV_X: u8 = 0xbf;
const DEVCG_DEV_BLOCK: i32 = 1;

/// The program for `rules`, the last matching rule deciding (as the v1 files behave); a device
/// no rule matches is refused. An allow rule matches an access it fully covers, a deny rule
/// one it touches.
fn rules_program(rules: &[DeviceRule]) -> Vec<Insn> {
    // r2 = type, r5 = access, r3 = major, r4 = minor.
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU64_MOV_X, 5, 2, 0, 0),
        insn(ALU64_AND_K, 2, 0, 0, 0xffff),
        insn(ALU64_RSH_K, 5, 0, 0, 16),
        insn(LDX_MEM_W, 3, 1, 4, 0),
        insn(LDX_MEM_W, 4, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        // Tests jump to the end of their block (patched below: off = -1 marks them).
        let mut b: Vec<Insn> = Vec::new();
        match r.kind {
            Some('c') => b.push(insn(JMP_JNE_K, 2, 0, -1, DEVCG_DEV_CHAR)),
            Some('b') => b.push(insn(JMP_JNE_K, 2, 0, -1, DEVCG_DEV_BLOCK)),
            _ => {}
        }
        if let Some(m) = r.major {
            b.push(insn(JMP_JNE_K, 3, 0, -1, m as i32));
        }
        if let Some(m) = r.minor {
            b.push(insn(JMP_JNE_K, 4, 0, -1, m as i32));
        }
        b.push(insn(ALU64_MOV_X, 6, 5, 0, 0));
        if r.allow {
            b.push(insn(ALU64_AND_K, 6, 0, 0, (!r.access & 7) as i32));
            b.push(insn(JMP_JNE_K, 6, 0, -1, 0));
        } else {
            b.push(insn(ALU64_AND_K, 6, 0, 0, (r.access & 7) as i32));
            b.push(insn(JMP_JEQ_K, 6, 0, -1, 0));
        }
        b.push(insn(ALU64_MOV_K, 0, 0, 0, i32::from(r.allow)));
        b.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let n = b.len();
        for (i, ins) in b.iter_mut().enumerate() {
            if ins.off == -1 {
                ins.off = (n - i - 1) as i16;
            }
        }
        p.extend(b);
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

/// Load the program of `rules` and attach it to the cgroup v2 directory `dir`.
///
/// Errors: as [`attach_device_filter`].
pub fn attach_rules(dir: &Path, rules: &[DeviceRule]) -> Result<(), String> {
    load_and_attach(dir, &rules_program(rules))
}

fn load_and_attach(dir: &Path, insns: &[Insn]) -> Result<(), String> {
    let mut name = [0u8; 16];
    name[..9].copy_from_slice(b"vs_device");
    // Without a log first: a long program's verifier log would overflow any buffer (ENOSPC)
    // although the program is fine. A refused program is loaded again with a log to explain.
    let load = |log: &mut Vec<u8>| {
        let mut attr = ProgLoadAttr {
            prog_type: PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: c"GPL".as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: log.len() as u32,
            log_buf: if log.is_empty() {
                0
            } else {
                log.as_mut_ptr() as u64
            },
            prog_name: name,
            expected_attach_type: ATTACH_CGROUP_DEVICE,
            ..Default::default()
        };
        sys_bpf(BPF_PROG_LOAD, &mut attr)
    };
    let fd = load(&mut Vec::new());
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        let mut log = vec![0u8; 1 << 20];
        let _ = load(&mut log);
        let end = log.iter().position(|&b| b == 0).unwrap_or(0);
        let text = String::from_utf8_lossy(&log[..end]);
        let last: Vec<&str> = text.lines().rev().take(3).collect();
        return Err(format!(
            "load the device filter ({} instructions): {e} (verifier: {})",
            insns.len(),
            last.join(" / ")
        ));
    }
    // SAFETY: a new fd the kernel just returned.
    let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let cg = std::fs::File::open(dir).map_err(|e| format!("open {}: {e}", dir.display()))?;
    let mut attr = AttachAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd_or_type: prog.as_raw_fd() as u32,
        attach_type_or_query_flags: ATTACH_CGROUP_DEVICE,
        ..Default::default()
    };
    if sys_bpf(BPF_PROG_ATTACH, &mut attr) != 0 {
        return Err(format!(
            "attach the device filter to {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Number of device programs attached to the cgroup v2 directory `dir` (BPF_PROG_QUERY), None
/// when it cannot be asked.
pub fn device_filters_attached(dir: &Path) -> Option<u32> {
    let cg = std::fs::File::open(dir).ok()?;
    let mut attr = AttachAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd_or_type: ATTACH_CGROUP_DEVICE,
        ..Default::default()
    };
    (sys_bpf(BPF_PROG_QUERY, &mut attr) == 0).then_some(attr.prog_cnt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_land_on_allow_and_deny() {
        // Interpret the program over a context, as the kernel would.
        fn run(p: &[Insn], ctx: [u32; 3]) -> u64 {
            let mut r = [0u64; 11];
            let mut pc = 0usize;
            loop {
                let i = p[pc];
                let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
                pc += 1;
                match i.code {
                    LDX_MEM_W => {
                        assert_eq!(src, 1);
                        r[dst] = u64::from(ctx[i.off as usize / 4]);
                    }
                    ALU64_AND_K => r[dst] &= i.imm as u64,
                    ALU64_MOV_K => r[dst] = i.imm as u64,
                    JMP_JNE_K if r[dst] != i.imm as u64 => pc += i.off as usize,
                    JMP_JEQ_K if r[dst] == i.imm as u64 => pc += i.off as usize,
                    JMP_JNE_K | JMP_JEQ_K => {}
                    JMP_JA => pc += i.off as usize,
                    JMP_EXIT => return r[0],
                    other => panic!("opcode {other:#x}"),
                }
            }
        }
        let p = program(GUEST_CHAR_DEVICES);
        let chr = |maj, min| run(&p, [(2 << 16) | 2, maj, min]);
        for (maj, min) in [(1, 3), (1, 9), (5, 2), (136, 0), (136, 77)] {
            assert_eq!(chr(maj, min), 1, "{maj}:{min}");
        }
        for (maj, min) in [(1, 1), (1, 11), (1, 4), (10, 229), (8, 0), (5, 3), (4, 0)] {
            assert_eq!(chr(maj, min), 0, "{maj}:{min}");
        }
        assert_eq!(run(&p, [(2 << 16) | 1, 1, 3]), 0, "block 1:3");
    }
}
