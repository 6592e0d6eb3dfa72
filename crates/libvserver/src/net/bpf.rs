//! Classic networking: Linux-VServer's network isolation on the host's own stack, built from
//! cgroup eBPF socket hooks attached to the guest's cgroup v2 directory.
//!
//! The programs are a few dozen instructions each, assembled here and loaded with bpf(2)
//! (`BPF_PROG_LOAD`, `BPF_PROG_ATTACH`; see bpf(2) and the kernel's
//! Documentation/bpf/prog_cgroup_sockopt.rst and `struct bpf_sock_addr` in
//! include/uapi/linux/bpf.h). For every socket of every process in the cgroup:
//! - bind(2) to the wildcard (0.0.0.0, ::) or to loopback is rewritten to the guest's first
//!   address; bind to any address that is not the guest's is refused (EPERM);
//! - connect(2) to loopback or the wildcard is redirected to the guest's own address, and the
//!   socket is bound to the guest's address first (`bpf_bind`), so the source is always the guest's;
//! - sendmsg(2) on unconnected UDP sockets: the same for the destination, and the source is the
//!   guest's address (refused if the caller asked for another one with IP_PKTINFO);
//! - socket(2) of type SOCK_RAW is refused (no sniffing, no forged packets);
//! - every IP packet of the guest's sockets (`cgroup_skb` ingress and egress) must carry a guest
//!   address on the guest's side, which also covers sockets the kernel binds implicitly to the
//!   wildcard (listen() without bind(), a first sendto()), and counts the bytes and packets
//!   that pass in an array map (the guest's traffic accounting).
//!
//! The programs are attached without `BPF_F_ALLOW_OVERRIDE`, so nothing below the guest's cgroup
//! can replace them, and they live exactly as long as the cgroup does.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;
const MAP_TYPE_ARRAY: u32 = 2;
const PROG_TYPE_CGROUP_SKB: u32 = 8;
const PROG_TYPE_CGROUP_SOCK: u32 = 9;
const PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;

/// Hook points (`enum bpf_attach_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Hook {
    /// Every IP packet a socket of the cgroup receives.
    Ingress = 0,
    /// Every IP packet a socket of the cgroup sends.
    Egress = 1,
    /// socket(2) of an AF_INET/AF_INET6 socket.
    SockCreate = 2,
    /// bind(2), IPv4.
    Bind4 = 8,
    /// bind(2), IPv6.
    Bind6 = 9,
    /// connect(2), IPv4.
    Connect4 = 10,
    /// connect(2), IPv6.
    Connect6 = 11,
    /// sendmsg(2) on an unconnected UDP socket, IPv4.
    Sendmsg4 = 14,
    /// sendmsg(2) on an unconnected UDP socket, IPv6.
    Sendmsg6 = 15,
}

// Instruction classes, sizes, modes and operations (include/uapi/linux/bpf_common.h, bpf.h).
const LDX_MEM_W: u8 = 0x61;
const LDX_MEM_DW: u8 = 0x79;
const ALU64_AND_K: u8 = 0x57;
const JMP_JEQ_K: u8 = 0x15;
const JMP_JNE_K: u8 = 0x55;
const STX_MEM_W: u8 = 0x63;
const ST_MEM_W: u8 = 0x62;
const ALU64_MOV_K: u8 = 0xb7;
const ALU64_MOV_X: u8 = 0xbf;
const ALU64_ADD_K: u8 = 0x07;
const JMP32_JEQ_K: u8 = 0x16;
const JMP32_JNE_K: u8 = 0x56;
const JMP_JA: u8 = 0x05;
const JMP_CALL: u8 = 0x85;
const JMP_EXIT: u8 = 0x95;
/// `bpf_bind(ctx, struct sockaddr *, int len)` helper id.
const HELPER_BIND: i32 = 64;
/// `bpf_map_lookup_elem(map, key)` helper id.
const HELPER_MAP_LOOKUP: i32 = 1;
/// `__sk_buff.len`: bytes of the packet from its network header.
const SKB_LEN: i16 = 0;
/// `BPF_LD | BPF_IMM | BPF_DW`: a 64-bit immediate over two instructions.
const LD_IMM64: u8 = 0x18;
/// src_reg of LD_IMM64 saying the immediate is a map fd (`BPF_PSEUDO_MAP_FD`).
const PSEUDO_MAP_FD: u8 = 1;
/// `BPF_STX | BPF_ATOMIC | BPF_DW` with imm `BPF_ADD`: `lock *(u64 *)(dst + off) += src`.
const STX_ATOMIC_DW: u8 = 0xdb;
const ATOMIC_ADD: i32 = 0;
/// `bpf_skb_load_bytes(skb, offset, to, len)` helper id.
const HELPER_SKB_LOAD_BYTES: i32 = 26;
/// `__sk_buff.protocol`: the packet's EtherType in network order.
const SKB_PROTOCOL: i16 = 16;
/// ETH_P_IP and ETH_P_IPV6 as a 32-bit load of the big-endian 16-bit field sees them.
const PROTO_IP: i32 = 0x0008;
const PROTO_IPV6: i32 = 0xdd86;

// Offsets in `struct bpf_sock_addr` and `struct bpf_sock`, in bytes.
const USER_IP4: i16 = 4;
const USER_IP6: i16 = 8;
const MSG_SRC_IP4: i16 = 40;
const MSG_SRC_IP6: i16 = 44;
const SOCK_TYPE: i16 = 8;
const CTX_SK: i16 = 64;
const SK_SRC_IP4: i16 = 24;
const SK_SRC_IP6: i16 = 28;

/// One eBPF instruction (`struct bpf_insn`): opcode, dst and src registers, offset, immediate.
#[derive(Debug, Clone, Copy)]
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
        regs: (dst & 0xf) | (src << 4),
        off,
        imm,
    }
}

/// A 32-bit word as the program sees it when loading 4 bytes of network-order address.
fn word(bytes: [u8; 4]) -> i32 {
    i32::from_le_bytes(bytes)
}

fn v4_word(a: Ipv4Addr) -> i32 {
    word(a.octets())
}

fn v6_words(a: Ipv6Addr) -> [i32; 4] {
    let o = a.octets();
    [0, 1, 2, 3].map(|i| word([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]))
}

/// A tiny assembler with forward labels: jumps name a label, resolved at `finish`.
#[derive(Default)]
struct Asm {
    code: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, usize)>,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }
    fn bind(&mut self, l: usize) {
        self.labels[l] = Some(self.code.len());
    }
    fn op(&mut self, i: Insn) {
        self.code.push(i);
    }
    fn jump(&mut self, code: u8, reg: u8, imm: i32, to: usize) {
        self.fixups.push((self.code.len(), to));
        self.op(insn(code, reg, 0, 0, imm));
    }
    fn ret(&mut self, v: i32) {
        self.op(insn(ALU64_MOV_K, 0, 0, 0, v));
        self.op(insn(JMP_EXIT, 0, 0, 0, 0));
    }
    fn finish(mut self) -> Vec<Insn> {
        for (at, l) in self.fixups {
            let target = self.labels[l].expect("every label is bound");
            self.code[at].off = (target as i64 - at as i64 - 1) as i16;
        }
        self.code
    }
    /// r2 = ctx->field (r6 holds ctx).
    fn load(&mut self, reg: u8, off: i16) {
        self.op(insn(LDX_MEM_W, reg, 6, off, 0));
    }
    /// ctx->field = imm (through r7: stores of immediates into the context are not allowed).
    fn store(&mut self, off: i16, imm: i32) {
        self.op(insn(ALU64_MOV_K, 7, 0, 0, imm));
        self.op(insn(STX_MEM_W, 6, 7, off, 0));
    }
    /// Jump to `to` unless the 4 words at ctx+off equal `words` (uses r2).
    fn jump_unless_words(&mut self, off: i16, words: [i32; 4], to: usize) {
        for (i, w) in words.iter().enumerate() {
            self.load(2, off + 4 * i as i16);
            self.jump(JMP32_JNE_K, 2, *w, to);
        }
    }
    /// Jump to `to` if the 4 words at ctx+off equal `words` (uses r2).
    fn jump_if_words(&mut self, off: i16, words: [i32; 4], to: usize) {
        let next = self.label();
        self.jump_unless_words(off, words, next);
        self.jump(JMP_JA, 0, 0, to);
        self.bind(next);
    }
    fn store_words(&mut self, off: i16, words: [i32; 4]) {
        for (i, w) in words.iter().enumerate() {
            self.store(off + 4 * i as i16, *w);
        }
    }
    /// Jump to `to` unless the IPv6 address at ctx+off is v4-mapped (::ffff:a.b.c.d; uses r2).
    fn jump_unless_mapped(&mut self, off: i16, to: usize) {
        for (i, w) in V4_MAPPED_PREFIX.iter().enumerate() {
            self.load(2, off + 4 * i as i16);
            self.jump(JMP32_JNE_K, 2, *w, to);
        }
    }

    /// Jump to `to` if the IPv6 address at ctx+off is in ::ffff:127.0.0.0/104 (uses r2, r3).
    fn jump_if_mapped_loopback(&mut self, off: i16, to: usize) {
        let no = self.label();
        self.jump_unless_mapped(off, no);
        self.load(2, off + 12);
        self.jump_if_loopback4(to);
        self.bind(no);
    }

    /// Jump to `to` if the IPv4 word in r2 is in 127.0.0.0/8 (uses r3).
    fn jump_if_loopback4(&mut self, to: usize) {
        self.op(insn(ALU64_MOV_X, 3, 2, 0, 0));
        self.op(insn(ALU64_AND_K, 3, 0, 0, 0xff));
        self.jump(JMP32_JEQ_K, 3, 127, to);
    }

    /// bpf_bind(ctx, sockaddr on the stack at r10-len, len). When that fails (the socket already
    /// has an address or a port, e.g. from an explicit bind or an earlier sendto), the socket's
    /// own source address (`ctx->sk->src_ip4`/`src_ip6`) must be one of `allowed`, else the
    /// program returns 0 (connect refused): a socket auto-bound to the wildcard must not
    /// connect with a source the routing table picks.
    fn bind_source(&mut self, sockaddr: &[u8], allowed: &[[i32; 4]]) {
        let len = sockaddr.len() as i16;
        for (i, chunk) in sockaddr.chunks(4).enumerate() {
            let mut b = [0u8; 4];
            b[..chunk.len()].copy_from_slice(chunk);
            self.op(insn(ST_MEM_W, 10, 0, -len + 4 * i as i16, word(b)));
        }
        self.op(insn(ALU64_MOV_X, 1, 6, 0, 0));
        self.op(insn(ALU64_MOV_X, 2, 10, 0, 0));
        self.op(insn(ALU64_ADD_K, 2, 0, 0, -(len as i32)));
        self.op(insn(ALU64_MOV_K, 3, 0, 0, len as i32));
        self.op(insn(JMP_CALL, 0, 0, 0, HELPER_BIND));
        let ok = self.label();
        self.jump(JMP_JEQ_K, 0, 0, ok);
        self.op(insn(LDX_MEM_DW, 1, 6, CTX_SK, 0));
        let v4 = sockaddr.len() == 16;
        for a in allowed {
            let next = self.label();
            let words: &[i32] = if v4 { &a[3..] } else { &a[..] };
            let base = if v4 { SK_SRC_IP4 } else { SK_SRC_IP6 };
            for (i, w) in words.iter().enumerate() {
                self.op(insn(LDX_MEM_W, 2, 1, base + 4 * i as i16, 0));
                self.jump(JMP32_JNE_K, 2, *w, next);
            }
            self.jump(JMP_JA, 0, 0, ok);
            self.bind(next);
        }
        self.ret(0);
        self.bind(ok);
    }
}

fn sockaddr_in(a: Ipv4Addr) -> Vec<u8> {
    let mut s = vec![0u8; 16];
    s[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    s[4..8].copy_from_slice(&a.octets());
    s
}

fn sockaddr_in6(a: Ipv6Addr) -> Vec<u8> {
    let mut s = vec![0u8; 28];
    s[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
    s[8..24].copy_from_slice(&a.octets());
    s
}

const V4_MAPPED_PREFIX: [i32; 3] = [0, 0, i32::from_le_bytes([0, 0, 0xff, 0xff])];

/// An IPv4 address as v4-mapped IPv6 words (the last word is the IPv4 address itself).
fn mapped(a: Ipv4Addr) -> [i32; 4] {
    v6_words(a.to_ipv6_mapped())
}

/// IPv4 addresses as v4-mapped IPv6 words.
fn mapped_words(v4: &[Ipv4Addr]) -> Vec<[i32; 4]> {
    v4.iter().map(|a| mapped(*a)).collect()
}

/// The guest's addresses, as the hooks enforce them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicAddrs {
    /// IPv4 addresses; the first is the one wildcard and loopback binds become.
    pub v4: Vec<Ipv4Addr>,
    /// IPv6 addresses; the first is the one wildcard and loopback binds become.
    pub v6: Vec<Ipv6Addr>,
    /// Raw sockets allowed (no `sock_create` hook): the administrator gave the guest
    /// CAP_NET_RAW. They see the host's traffic; what they send still needs a guest source.
    pub allow_raw: bool,
}

fn prog_bind4(a: &ClassicAddrs) -> Vec<Insn> {
    let mut m = Asm::default();
    let (rewrite, allow) = (m.label(), m.label());
    m.op(insn(ALU64_MOV_X, 6, 1, 0, 0));
    if let Some(first) = a.v4.first() {
        m.load(2, USER_IP4);
        m.jump(JMP32_JEQ_K, 2, 0, rewrite);
        m.jump_if_loopback4(rewrite);
        for x in &a.v4 {
            m.jump(JMP32_JEQ_K, 2, v4_word(*x), allow);
        }
        m.ret(0);
        m.bind(rewrite);
        m.store(USER_IP4, v4_word(*first));
        m.bind(allow);
        m.ret(1);
    } else {
        m.bind(rewrite);
        m.bind(allow);
        m.ret(0);
    }
    m.finish()
}

/// IPv6 destination/bind address at ctx+off checked against the guest's v6 addresses and, for
/// v4-mapped ones, its v4 addresses; wildcard and loopback are rewritten to the guest's first
/// address. Continues at `ok6` (an IPv6 address) or `ok_mapped` (v4-mapped); else returns 0.
fn check6(m: &mut Asm, a: &ClassicAddrs, off: i16, ok6: usize, ok_mapped: usize) {
    let (deny, wild_or_lo) = (m.label(), m.label());
    m.jump_if_words(off, [0; 4], wild_or_lo);
    m.jump_if_words(off, v6_words(Ipv6Addr::LOCALHOST), wild_or_lo);
    for x in &a.v6 {
        m.jump_if_words(off, v6_words(*x), ok6);
    }
    // v4-mapped (::ffff:a.b.c.d): the v4 rules.
    m.jump_unless_mapped(off, deny);
    m.load(2, off + 12);
    let rewrite_mapped = m.label();
    m.jump(JMP32_JEQ_K, 2, 0, rewrite_mapped);
    m.jump_if_loopback4(rewrite_mapped);
    for x in &a.v4 {
        m.jump(JMP32_JEQ_K, 2, v4_word(*x), ok_mapped);
    }
    m.jump(JMP_JA, 0, 0, deny);
    m.bind(rewrite_mapped);
    match a.v4.first() {
        Some(f) => {
            m.store(off + 12, v4_word(*f));
            m.jump(JMP_JA, 0, 0, ok_mapped);
        }
        None => m.jump(JMP_JA, 0, 0, deny),
    }
    m.bind(wild_or_lo);
    match (a.v6.first(), a.v4.first()) {
        (Some(f), _) => {
            m.store_words(off, v6_words(*f));
            m.jump(JMP_JA, 0, 0, ok6);
        }
        (None, Some(f)) => {
            m.store_words(off, mapped(*f));
            m.jump(JMP_JA, 0, 0, ok_mapped);
        }
        (None, None) => m.jump(JMP_JA, 0, 0, deny),
    }
    m.bind(deny);
    m.ret(0);
}

fn prog_bind6(a: &ClassicAddrs) -> Vec<Insn> {
    let mut m = Asm::default();
    let allow = m.label();
    m.op(insn(ALU64_MOV_X, 6, 1, 0, 0));
    check6(&mut m, a, USER_IP6, allow, allow);
    m.bind(allow);
    m.ret(1);
    m.finish()
}

fn prog_connect4(a: &ClassicAddrs) -> Vec<Insn> {
    let mut m = Asm::default();
    m.op(insn(ALU64_MOV_X, 6, 1, 0, 0));
    let Some(first) = a.v4.first() else {
        m.ret(0);
        return m.finish();
    };
    let (redirect, bind) = (m.label(), m.label());
    m.load(2, USER_IP4);
    m.jump(JMP32_JEQ_K, 2, 0, redirect);
    m.jump_if_loopback4(redirect);
    m.jump(JMP_JA, 0, 0, bind);
    m.bind(redirect);
    m.store(USER_IP4, v4_word(*first));
    m.bind(bind);
    m.bind_source(&sockaddr_in(*first), &mapped_words(&a.v4));
    m.ret(1);
    m.finish()
}

fn prog_connect6(a: &ClassicAddrs) -> Vec<Insn> {
    let mut m = Asm::default();
    let (ok6, ok_mapped) = (m.label(), m.label());
    m.op(insn(ALU64_MOV_X, 6, 1, 0, 0));
    // Any destination is fine for connect: only loopback and the wildcard are redirected.
    let (redirect, other) = (m.label(), m.label());
    m.jump_if_words(USER_IP6, [0; 4], redirect);
    m.jump_if_words(USER_IP6, v6_words(Ipv6Addr::LOCALHOST), redirect);
    m.jump_if_mapped_loopback(USER_IP6, redirect);
    m.jump(JMP_JA, 0, 0, other);
    m.bind(redirect);
    check6(&mut m, a, USER_IP6, ok6, ok_mapped);
    m.bind(other);
    // Which family is the destination? v4-mapped goes out as IPv4.
    m.jump_unless_mapped(USER_IP6, ok6);
    m.jump(JMP_JA, 0, 0, ok_mapped);
    m.bind(ok6);
    match a.v6.first() {
        Some(f) => {
            let own: Vec<[i32; 4]> = a.v6.iter().map(|x| v6_words(*x)).collect();
            m.bind_source(&sockaddr_in6(*f), &own);
            m.ret(1);
        }
        None => m.ret(0),
    }
    m.bind(ok_mapped);
    match a.v4.first() {
        Some(f) => {
            m.bind_source(&sockaddr_in6(f.to_ipv6_mapped()), &mapped_words(&a.v4));
            m.ret(1);
        }
        None => m.ret(0),
    }
    m.finish()
}

fn prog_sendmsg4(a: &ClassicAddrs) -> Vec<Insn> {
    let mut m = Asm::default();
    m.op(insn(ALU64_MOV_X, 6, 1, 0, 0));
    let Some(first) = a.v4.first() else {
        m.ret(0);
        return m.finish();
    };
    let (redirect, source, set_source, allow) = (m.label(), m.label(), m.label(), m.label());
    m.load(2, USER_IP4);
    m.jump(JMP32_JEQ_K, 2, 0, redirect);
    m.jump_if_loopback4(redirect);
    m.jump(JMP_JA, 0, 0, source);
    m.bind(redirect);
    m.store(USER_IP4, v4_word(*first));
    m.bind(source);
    m.load(2, MSG_SRC_IP4);
    m.jump(JMP32_JEQ_K, 2, 0, set_source);
    for x in &a.v4 {
        m.jump(JMP32_JEQ_K, 2, v4_word(*x), allow);
    }
    m.ret(0);
    m.bind(set_source);
    m.store(MSG_SRC_IP4, v4_word(*first));
    m.bind(allow);
    m.ret(1);
    m.finish()
}

fn prog_sendmsg6(a: &ClassicAddrs) -> Vec<Insn> {
    let mut m = Asm::default();
    let (ok6, ok_mapped) = (m.label(), m.label());
    m.op(insn(ALU64_MOV_X, 6, 1, 0, 0));
    let (redirect, source) = (m.label(), m.label());
    m.jump_if_words(USER_IP6, [0; 4], redirect);
    m.jump_if_words(USER_IP6, v6_words(Ipv6Addr::LOCALHOST), redirect);
    m.jump_if_mapped_loopback(USER_IP6, redirect);
    m.jump(JMP_JA, 0, 0, source);
    m.bind(redirect);
    check6(&mut m, a, USER_IP6, source, source);
    m.bind(source);
    // The source (IPV6_PKTINFO, else chosen by routing): must be the guest's; unset becomes
    // the guest's first address of the destination's family.
    let unset = m.label();
    m.jump_if_words(MSG_SRC_IP6, [0; 4], unset);
    check6(&mut m, a, MSG_SRC_IP6, ok6, ok_mapped);
    m.bind(unset);
    let (dst_mapped, dst_v6) = (m.label(), m.label());
    m.jump_unless_mapped(USER_IP6, dst_v6);
    m.jump(JMP_JA, 0, 0, dst_mapped);
    m.bind(dst_v6);
    match a.v6.first() {
        Some(f) => {
            m.store_words(MSG_SRC_IP6, v6_words(*f));
            m.ret(1);
        }
        None => m.ret(0),
    }
    m.bind(dst_mapped);
    match a.v4.first() {
        Some(f) => {
            m.store_words(MSG_SRC_IP6, mapped(*f));
            m.ret(1);
        }
        None => m.ret(0),
    }
    m.bind(ok6);
    m.bind(ok_mapped);
    m.ret(1);
    m.finish()
}

/// The packet filter: a packet of the guest's sockets whose own-side address (source on egress,
/// destination on ingress) is not one of the guest's is dropped. This catches what the socket
/// hooks cannot see: sockets the kernel binds implicitly to the wildcard (listen() without
/// bind(), a first sendto()), which would otherwise answer on, or send from, host addresses.
fn prog_packets(a: &ClassicAddrs, egress: bool, counters: &OwnedFd) -> Vec<Insn> {
    let mut m = Asm::default();
    let (v4, v6, allow, deny) = (m.label(), m.label(), m.label(), m.label());
    m.op(insn(ALU64_MOV_X, 6, 1, 0, 0));
    m.load(2, SKB_PROTOCOL);
    m.jump(JMP32_JEQ_K, 2, PROTO_IP, v4);
    m.jump(JMP32_JEQ_K, 2, PROTO_IPV6, v6);
    m.ret(1);
    // Copy the address from the IP header to r10-16 with bpf_skb_load_bytes.
    let copy = |m: &mut Asm, offset: i32, len: i32| {
        m.op(insn(ALU64_MOV_X, 1, 6, 0, 0));
        m.op(insn(ALU64_MOV_K, 2, 0, 0, offset));
        m.op(insn(ALU64_MOV_X, 3, 10, 0, 0));
        m.op(insn(ALU64_ADD_K, 3, 0, 0, -16));
        m.op(insn(ALU64_MOV_K, 4, 0, 0, len));
        m.op(insn(JMP_CALL, 0, 0, 0, HELPER_SKB_LOAD_BYTES));
        m.jump(JMP_JNE_K, 0, 0, deny);
    };
    m.bind(v4);
    copy(&mut m, if egress { 12 } else { 16 }, 4);
    m.op(insn(LDX_MEM_W, 2, 10, -16, 0));
    for x in &a.v4 {
        m.jump(JMP32_JEQ_K, 2, v4_word(*x), allow);
    }
    m.jump(JMP_JA, 0, 0, deny);
    m.bind(v6);
    copy(&mut m, if egress { 8 } else { 24 }, 16);
    for x in &a.v6 {
        let next = m.label();
        for (i, w) in v6_words(*x).iter().enumerate() {
            m.op(insn(LDX_MEM_W, 2, 10, -16 + 4 * i as i16, 0));
            m.jump(JMP32_JNE_K, 2, *w, next);
        }
        m.jump(JMP_JA, 0, 0, allow);
        m.bind(next);
    }
    m.bind(deny);
    m.ret(0);
    m.bind(allow);
    // Count what passed: counters[egress] = {bytes += skb->len, packets += 1}.
    let done = m.label();
    m.op(insn(LD_IMM64, 1, PSEUDO_MAP_FD, 0, counters.as_raw_fd()));
    m.op(insn(0, 0, 0, 0, 0));
    m.op(insn(ST_MEM_W, 10, 0, -20, i32::from(egress)));
    m.op(insn(ALU64_MOV_X, 2, 10, 0, 0));
    m.op(insn(ALU64_ADD_K, 2, 0, 0, -20));
    m.op(insn(JMP_CALL, 0, 0, 0, HELPER_MAP_LOOKUP));
    m.jump(JMP_JEQ_K, 0, 0, done);
    m.load(1, SKB_LEN);
    m.op(insn(STX_ATOMIC_DW, 0, 1, 0, ATOMIC_ADD));
    m.op(insn(ALU64_MOV_K, 1, 0, 0, 1));
    m.op(insn(STX_ATOMIC_DW, 0, 1, 8, ATOMIC_ADD));
    m.bind(done);
    m.ret(1);
    m.finish()
}

fn prog_sock_create(allow_raw: bool) -> Vec<Insn> {
    let mut m = Asm::default();
    if allow_raw {
        m.ret(1);
        return m.finish();
    }
    let deny = m.label();
    m.op(insn(LDX_MEM_W, 2, 1, SOCK_TYPE, 0));
    m.jump(JMP32_JEQ_K, 2, libc::SOCK_RAW, deny);
    m.ret(1);
    m.bind(deny);
    m.ret(0);
    m.finish()
}

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

#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    pad: [u32; 11],
}

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> libc::c_long {
    // SAFETY: bpf(2) reads (and for PROG_LOAD writes the log into) the attribute struct, which
    // is valid, zero-padded and lives for the call.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    }
}

/// Load one program for `hook`. Errors: the kernel's errno and the verifier's log.
fn load(hook: Hook, insns: &[Insn]) -> Result<OwnedFd, String> {
    let mut log = vec![0u8; 64 * 1024];
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..9].copy_from_slice(b"vs_classi");
    let mut attr = ProgLoadAttr {
        prog_type: match hook {
            Hook::Ingress | Hook::Egress => PROG_TYPE_CGROUP_SKB,
            Hook::SockCreate => PROG_TYPE_CGROUP_SOCK,
            _ => PROG_TYPE_CGROUP_SOCK_ADDR,
        },
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        expected_attach_type: hook as u32,
        ..Default::default()
    };
    let fd = sys_bpf(BPF_PROG_LOAD, &mut attr);
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        let end = log.iter().position(|&b| b == 0).unwrap_or(0);
        let text = String::from_utf8_lossy(&log[..end]);
        let last: Vec<&str> = text.lines().rev().take(3).collect();
        return Err(format!(
            "load the {hook:?} program: {e}{}",
            if last.is_empty() {
                String::new()
            } else {
                format!(" (verifier: {})", last.join(" / "))
            }
        ));
    }
    // SAFETY: a new file descriptor the kernel just returned to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Load the classic programs for `addrs` and attach them to the cgroup v2 directory `cgroup`
/// (an fd opened on e.g. /sys/fs/cgroup/vservers/XID). Errors name the hook and carry the
/// kernel's errno (EPERM without CAP_SYS_ADMIN, EINVAL on kernels without the hook) and, for a
/// program the verifier refused, the end of its log.
pub fn attach_classic(cgroup: BorrowedFd<'_>, addrs: &ClassicAddrs) -> Result<(), String> {
    let counters = create_counters()?;
    let progs = [
        (Hook::Ingress, prog_packets(addrs, false, &counters)),
        (Hook::Egress, prog_packets(addrs, true, &counters)),
        (Hook::SockCreate, prog_sock_create(addrs.allow_raw)),
        (Hook::Bind4, prog_bind4(addrs)),
        (Hook::Bind6, prog_bind6(addrs)),
        (Hook::Connect4, prog_connect4(addrs)),
        (Hook::Connect6, prog_connect6(addrs)),
        (Hook::Sendmsg4, prog_sendmsg4(addrs)),
        (Hook::Sendmsg6, prog_sendmsg6(addrs)),
    ];
    for (hook, insns) in progs {
        let prog = load(hook, &insns)?;
        let mut attr = ProgAttachAttr {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_bpf_fd: prog.as_raw_fd() as u32,
            attach_type: hook as u32,
            ..Default::default()
        };
        if sys_bpf(BPF_PROG_ATTACH, &mut attr) != 0 {
            return Err(format!(
                "attach the {hook:?} program to the guest's cgroup: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// `union bpf_attr` as the lookup, get-fd-by-id and get-info commands read it: two u32, then
/// u64 pointers.
#[repr(C)]
#[derive(Default)]
struct MapAttr {
    a: u32,
    b: u32,
    c: u64,
    d: u64,
    e: u64,
    pad: [u64; 12],
}

/// The guest's traffic counters: an array map of two entries (0 received, 1 sent), each
/// `{bytes: u64, packets: u64}`, updated by the packet filter programs.
fn create_counters() -> Result<OwnedFd, String> {
    #[repr(C)]
    #[derive(Default)]
    struct CreateAttr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        pad: [u64; 14],
    }
    let mut attr = CreateAttr {
        map_type: MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 16,
        max_entries: 2,
        ..Default::default()
    };
    let fd = sys_bpf(BPF_MAP_CREATE, &mut attr);
    if fd < 0 {
        return Err(format!(
            "create the traffic counters map: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a new file descriptor the kernel just returned to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn fd_by_id(cmd: libc::c_long, id: u32) -> Option<OwnedFd> {
    let mut attr = MapAttr {
        a: id,
        ..Default::default()
    };
    let fd = sys_bpf(cmd, &mut attr);
    // SAFETY: a new file descriptor the kernel just returned to us.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The counters map of the packet filter attached to the cgroup v2 directory `cgroup`: the
/// ingress program (`BPF_PROG_QUERY`), its first map (`BPF_OBJ_GET_INFO_BY_FD`). None when no
/// such filter is attached (not a classic guest, or the cgroup is gone).
fn counters_of(cgroup: BorrowedFd<'_>) -> Option<OwnedFd> {
    #[repr(C)]
    #[derive(Default)]
    struct QueryAttr {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        pad: [u32; 13],
    }
    let mut ids = [0u32; 4];
    let mut q = QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: Hook::Ingress as u32,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    if sys_bpf(BPF_PROG_QUERY, &mut q) != 0 || q.prog_cnt == 0 {
        return None;
    }
    let prog = fd_by_id(BPF_PROG_GET_FD_BY_ID, ids[0])?;
    // struct bpf_prog_info: nr_map_ids (u32) at byte 52, map_ids (u64 pointer) at 56.
    let mut map_id = 0u32;
    let mut info = [0u8; 256];
    info[52..56].copy_from_slice(&1u32.to_ne_bytes());
    info[56..64].copy_from_slice(&(&mut map_id as *mut u32 as u64).to_ne_bytes());
    let mut attr = MapAttr {
        a: prog.as_raw_fd() as u32,
        b: info.len() as u32,
        c: info.as_mut_ptr() as u64,
        ..Default::default()
    };
    if sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) != 0 || map_id == 0 {
        return None;
    }
    fd_by_id(BPF_MAP_GET_FD_BY_ID, map_id)
}

/// Traffic a classic guest's sockets received and sent, as
/// `[rx_bytes, rx_packets, tx_bytes, tx_packets]` (bytes from the IP header on), from the
/// counters of the packet filter on its cgroup v2 directory `cgroup`; None without one.
pub fn classic_traffic(cgroup: BorrowedFd<'_>) -> Option<[u64; 4]> {
    let map = counters_of(cgroup)?;
    let mut out = [0u64; 4];
    for key in 0u32..2 {
        let mut value = [0u64; 2];
        let mut attr = MapAttr {
            a: map.as_raw_fd() as u32,
            c: &key as *const u32 as u64,
            d: value.as_mut_ptr() as u64,
            ..Default::default()
        };
        if sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) != 0 {
            return None;
        }
        out[2 * key as usize..2 * key as usize + 2].copy_from_slice(&value);
    }
    Some(out)
}

/// Set the classic traffic counters on `cgroup` back to zero (`BPF_MAP_UPDATE_ELEM`); false when
/// there are none.
pub fn reset_classic_traffic(cgroup: BorrowedFd<'_>) -> bool {
    let Some(map) = counters_of(cgroup) else {
        return false;
    };
    (0u32..2).all(|key| {
        let zero = [0u64; 2];
        let mut attr = MapAttr {
            a: map.as_raw_fd() as u32,
            c: &key as *const u32 as u64,
            d: zero.as_ptr() as u64,
            ..Default::default()
        };
        sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr) == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_resolve_forward() {
        let a = ClassicAddrs {
            v4: vec!["10.1.2.3".parse().unwrap()],
            v6: vec!["fd00::3".parse().unwrap()],
            allow_raw: false,
        };
        for p in [
            prog_packets(&a, true, &std::fs::File::open("/dev/null").unwrap().into()),
            prog_bind4(&a),
            prog_bind6(&a),
            prog_connect4(&a),
            prog_connect6(&a),
            prog_sendmsg4(&a),
            prog_sendmsg6(&a),
        ] {
            let last = p.last().unwrap();
            assert_eq!(last.code, JMP_EXIT);
            for (i, x) in p.iter().enumerate() {
                if matches!(x.code, JMP32_JEQ_K | JMP32_JNE_K | JMP_JA) {
                    let t = i as i64 + 1 + x.off as i64;
                    assert!(t > i as i64 && (t as usize) < p.len(), "jump at {i} to {t}");
                }
            }
        }
    }

    #[test]
    fn words_are_network_order_bytes() {
        assert_eq!(v4_word(Ipv4Addr::new(10, 0, 0, 1)), 0x0100_000a);
        assert_eq!(V4_MAPPED_PREFIX[2], 0xffff_0000u32 as i32);
        let m = mapped(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(m[..3], V4_MAPPED_PREFIX[..]);
        assert_eq!(m[3], 0x0100_000a);
    }
}
