//! Synchronous rtnetlink client for links, addresses and default routes.
//!
//! Follows rtnetlink(7) and netlink(7): every request carries `NLM_F_REQUEST | NLM_F_ACK` and the
//! kernel answers with an `NLMSG_ERROR` whose error field is 0 (the ACK) or a negative errno; a dump
//! is a multipart reply closed by `NLMSG_DONE`. No async runtime and no threads: the engine is
//! single-threaded and forks, and a [`Netlink`] is one `SOCK_CLOEXEC` file descriptor.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE,
    NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoMacVlan, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
    MacVlanMode,
};
use netlink_packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Longest interface name the kernel accepts, in bytes (`IFNAMSIZ - 1`, see netdevice(7)).
pub const MAX_IFNAME_LEN: usize = 15;
/// Receive buffer, in bytes; the kernel caps one dump datagram at 32 KiB (netlink(7)).
const RECV_BUF_LEN: usize = 64 * 1024;

/// Error of a netlink operation; every variant names what was attempted (`op`) and on which
/// link/address/route (`target`), and [`NetlinkError::errno`] gives the errno.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel (`NLMSG_ERROR`/`NLMSG_DONE` with a negative code) or the socket layer
    /// (socket(2), send(2), recv(2)) failed `op` on `target` with `errno` (positive, errno(3)).
    #[error("netlink: {op} {target}: {}", io::Error::from_raw_os_error(*errno))]
    Os {
        /// What was attempted.
        op: &'static str,
        /// Link, address or route concerned.
        target: String,
        /// Positive errno.
        errno: i32,
    },
    /// The kernel's reply could not be decoded (errno `EPROTO`).
    #[error("netlink: {op} {target}: malformed kernel reply: {detail}")]
    Malformed {
        /// What was attempted.
        op: &'static str,
        /// Link, address or route concerned.
        target: String,
        /// Decoder's message.
        detail: String,
    },
    /// The link exists but its `IFLA_INFO_KIND` is `found` (`none` for e.g. `lo`), not
    /// `expected` (errno `EEXIST`).
    #[error("netlink: {op} {target}: link exists as kind {found}, not {expected}")]
    WrongKind {
        /// What was attempted.
        op: &'static str,
        /// Link name.
        target: String,
        /// Kind asked for.
        expected: &'static str,
        /// Kind found.
        found: String,
    },
    /// An argument was rejected before reaching the kernel (errno `EINVAL`).
    #[error("netlink: {op} {target}: invalid argument: {detail}")]
    Invalid {
        /// What was attempted.
        op: &'static str,
        /// Link, address or route concerned.
        target: String,
        /// What is wrong.
        detail: String,
    },
}

impl NetlinkError {
    /// The errno of this error (positive): the kernel's for [`NetlinkError::Os`], else `EPROTO`,
    /// `EEXIST` or `EINVAL` as documented on the variant.
    pub fn errno(&self) -> i32 {
        match self {
            Self::Os { errno, .. } => *errno,
            Self::Malformed { .. } => libc::EPROTO,
            Self::WrongKind { .. } => libc::EEXIST,
            Self::Invalid { .. } => libc::EINVAL,
        }
    }
}

/// Result of a netlink operation.
pub type Result<T> = std::result::Result<T, NetlinkError>;

fn os(op: &'static str, target: &str, errno: i32) -> NetlinkError {
    NetlinkError::Os {
        op,
        target: target.to_owned(),
        errno,
    }
}

fn io_err<'a>(op: &'static str, target: &'a str) -> impl Fn(io::Error) -> NetlinkError + 'a {
    move |e| os(op, target, e.raw_os_error().unwrap_or(libc::EIO))
}

fn invalid(op: &'static str, target: &str, detail: String) -> NetlinkError {
    NetlinkError::Invalid {
        op,
        target: target.to_owned(),
        detail,
    }
}

/// `Ok(None)` if `res` failed with the kernel errno `errno`.
fn unless<T>(errno: i32, res: Result<T>) -> Result<Option<T>> {
    match res {
        Err(NetlinkError::Os { errno: e, .. }) if e == errno => Ok(None),
        other => other.map(Some),
    }
}

fn check_name(op: &'static str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_IFNAME_LEN || name.contains(['/', '\0']) {
        let detail = format!("interface name must be 1-{MAX_IFNAME_LEN} bytes without '/'");
        return Err(invalid(op, name, detail));
    }
    Ok(())
}

fn link_msg(index: u32, attributes: Vec<LinkAttribute>) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes = attributes;
    msg
}

fn family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// A locally administered unicast MAC derived from `name` (FNV-1a): a bridge with a MAC of its
/// own keeps it, instead of taking the lowest of its ports' MACs as ports come and go (which
/// makes the guests' neighbour caches stale).
pub fn stable_mac(name: &str) -> [u8; 6] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    [0x02, b[1], b[2], b[3], b[4], b[5]]
}

fn link_kind(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(kind) => Some(kind),
            _ => None,
        }),
        _ => None,
    })
}

/// An open `NETLINK_ROUTE` socket in the network namespace of the calling thread at open time;
/// it stays bound to that namespace when the thread later moves (netlink(7), setns(2)).
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Open, bind (kernel-assigned port) and connect a `NETLINK_ROUTE` socket (netlink(7)).
    /// Errors: [`NetlinkError::Os`] from socket(2), bind(2) or connect(2).
    pub fn open() -> Result<Netlink> {
        let err = io_err("open", "NETLINK_ROUTE socket");
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(&err)?;
        socket.bind_auto().map_err(&err)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(&err)?;
        let buf = Vec::with_capacity(RECV_BUF_LEN);
        Ok(Netlink {
            socket,
            seq: 0,
            buf,
        })
    }

    /// Send one request with `NLM_F_REQUEST | NLM_F_ACK | flags` and collect the replies of its
    /// sequence number until the ACK, an error or `NLMSG_DONE`.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: &'static str,
        target: &str,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let malformed = |detail: String| NetlinkError::Malformed {
            op,
            target: target.into(),
            detail,
        };
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0).map_err(io_err(op, target))?;

        let mut replies = Vec::new();
        loop {
            self.buf.clear();
            let len = match self.socket.recv(&mut self.buf, libc::MSG_TRUNC) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(op, target)(e)),
                Ok(n) if n > self.buf.len() => {
                    return Err(malformed(format!("{n} bytes truncated")))
                }
                Ok(n) => n,
            };
            let mut off = 0;
            while off < len {
                let data = &self.buf[off..len];
                let buffer =
                    NetlinkBuffer::new_checked(data).map_err(|e| malformed(e.to_string()))?;
                let msg_len = buffer.length() as usize;
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[..msg_len])
                    .map_err(|e| malformed(e.to_string()))?;
                off += (msg_len + 3) & !3;
                if msg.header.sequence_number != self.seq {
                    continue; // stale reply to an earlier request
                }
                match msg.payload {
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(replies),
                        Some(code) => return Err(os(op, target, code.get().abs())),
                    },
                    NetlinkPayload::Done(d) if d.code != 0 => {
                        return Err(os(op, target, d.code.abs()))
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    _ => {}
                }
            }
        }
    }

    /// `RTM_GETLINK` by `IFLA_IFNAME`; `None` on `ENODEV`.
    fn get_link(&mut self, name: &str, op: &'static str) -> Result<Option<LinkMessage>> {
        check_name(op, name)?;
        let msg = link_msg(0, vec![LinkAttribute::IfName(name.into())]);
        let res = self.request(RouteNetlinkMessage::GetLink(msg), 0, op, name);
        Ok(unless(libc::ENODEV, res)?
            .into_iter()
            .flatten()
            .find_map(|r| match r {
                RouteNetlinkMessage::NewLink(link) => Some(link),
                _ => None,
            }))
    }

    /// `RTM_NEWLINK` with `NLM_F_CREATE | NLM_F_EXCL`, then the new link's index by name.
    fn new_link(&mut self, msg: LinkMessage, name: &str, op: &'static str) -> Result<u32> {
        let flags = NLM_F_CREATE | NLM_F_EXCL;
        self.request(RouteNetlinkMessage::NewLink(msg), flags, op, name)?;
        let link = self.get_link(name, op)?;
        link.map(|l| l.header.index)
            .ok_or_else(|| os(op, name, libc::ENODEV))
    }

    /// Index (`ifi_index`) of link `name` in the socket's namespace, `None` if absent (`ENODEV`).
    /// Errors: [`NetlinkError::Invalid`] for a bad name, [`NetlinkError::Os`] from the kernel.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>> {
        Ok(self.get_link(name, "look up link")?.map(|l| l.header.index))
    }

    /// What link `name` is: its kind (`IFLA_INFO_KIND`: "bridge", "veth", "dummy" ...; "none"
    /// for a physical NIC or `lo`, which have none) and its hardware address; None when no such
    /// link exists.
    ///
    /// Errors: [`NetlinkError::Invalid`] for a bad name, [`NetlinkError::Os`] from the kernel.
    pub fn link_kind_and_mac(&mut self, name: &str) -> Result<Option<(String, Vec<u8>)>> {
        let Some(link) = self.get_link(name, "look up link")? else {
            return Ok(None);
        };
        let kind = link_kind(&link).map_or_else(|| "none".into(), |k| k.to_string());
        let mac = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(m) => Some(m.clone()),
                _ => None,
            })
            .unwrap_or_default();
        Ok(Some((kind, mac)))
    }

    /// Create a bridge `name` (`IFLA_INFO_KIND` "bridge", with the fixed MAC [`stable_mac`]) and
    /// return its index; no error if it already exists as a bridge. Errors: [`NetlinkError::WrongKind`] if it exists as another
    /// kind, [`NetlinkError::Os`] from the kernel (e.g. `EPERM` without `CAP_NET_ADMIN`).
    pub fn ensure_bridge(&mut self, name: &str) -> Result<u32> {
        let op = "create bridge";
        check_name(op, name)?;
        let info = LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]);
        let mac = LinkAttribute::Address(stable_mac(name).to_vec());
        let msg = link_msg(0, vec![LinkAttribute::IfName(name.into()), mac, info]);
        if let Some(index) = unless(libc::EEXIST, self.new_link(msg, name, op))? {
            return Ok(index);
        }
        let link = self
            .get_link(name, op)?
            .ok_or_else(|| os(op, name, libc::ENODEV))?;
        match link_kind(&link) {
            Some(InfoKind::Bridge) => Ok(link.header.index),
            found => Err(NetlinkError::WrongKind {
                op,
                target: name.into(),
                expected: "bridge",
                found: found.map_or_else(|| "none".into(), |k| k.to_string()),
            }),
        }
    }

    /// Create a veth pair: `host_name` stays in the socket's namespace, the peer `peer_name` is
    /// created directly in the network namespace of process `peer_pid` (`IFLA_NET_NS_PID` in the
    /// peer's `VETH_INFO_PEER`). Returns the host side's index. [`Netlink::create_veth_mtu`]
    /// without MTU. Errors: [`NetlinkError::Os`], e.g. `EEXIST`, `ESRCH` (no such process).
    pub fn create_veth(&mut self, host_name: &str, peer_name: &str, peer_pid: i32) -> Result<u32> {
        self.create_veth_mtu(host_name, peer_name, peer_pid, None, None)
    }

    /// [`Netlink::create_veth`] with an optional MTU in bytes (`IFLA_MTU`) set on both ends
    /// and an optional MAC for the peer (`IFLA_ADDRESS`; the kernel's random one otherwise).
    pub fn create_veth_mtu(
        &mut self,
        host_name: &str,
        peer_name: &str,
        peer_pid: i32,
        mtu: Option<u32>,
        peer_mac: Option<[u8; 6]>,
    ) -> Result<u32> {
        let op = "create veth";
        check_name(op, host_name)?;
        check_name(op, peer_name)?;
        let Some(pid) = u32::try_from(peer_pid).ok().filter(|&p| p > 0) else {
            return Err(invalid(op, host_name, format!("peer pid {peer_pid}")));
        };
        let mtu = mtu.map(LinkAttribute::Mtu);
        let peer_attrs = [
            LinkAttribute::IfName(peer_name.into()),
            LinkAttribute::NetNsPid(pid),
        ];
        let peer_mac = peer_mac.map(|m| LinkAttribute::Address(m.to_vec()));
        let peer = link_msg(
            0,
            peer_attrs
                .into_iter()
                .chain(mtu.clone())
                .chain(peer_mac)
                .collect(),
        );
        let info = LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]);
        let attrs = [LinkAttribute::IfName(host_name.into()), info];
        let msg = link_msg(0, attrs.into_iter().chain(mtu).collect());
        self.new_link(msg, host_name, op)
    }

    /// Attach link `index` to the bridge `master` (`IFLA_MASTER` in `RTM_SETLINK`).
    /// Errors: [`NetlinkError::Os`], e.g. `ENODEV`, `EINVAL`/`EOPNOTSUPP` if `master` is no bridge.
    pub fn set_master(&mut self, index: u32, master: u32) -> Result<()> {
        let msg = link_msg(index, vec![LinkAttribute::Controller(master)]);
        let target = format!("link #{index} to master #{master}");
        self.request(RouteNetlinkMessage::SetLink(msg), 0, "attach", &target)
            .map(drop)
    }

    /// Set link `index` administratively up (`IFF_UP` in flags and change mask, `RTM_SETLINK`).
    /// Errors: [`NetlinkError::Os`], e.g. `ENODEV`.
    pub fn set_up(&mut self, index: u32) -> Result<()> {
        let mut msg = link_msg(index, vec![]);
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        let target = format!("link #{index}");
        self.request(RouteNetlinkMessage::SetLink(msg), 0, "set up", &target)
            .map(drop)
    }

    /// Add `addr/prefix` (prefix in bits: at most 32 for IPv4, 128 for IPv6) to link `index`
    /// (`RTM_NEWADDR` with `IFA_LOCAL` and `IFA_ADDRESS`). Returns Ok(true) if added, Ok(false)
    /// if it already existed (`EEXIST`).
    /// Errors: [`NetlinkError::Invalid`] for a prefix too long, [`NetlinkError::Os`] otherwise.
    pub fn add_address(&mut self, index: u32, addr: IpAddr, prefix: u8) -> Result<bool> {
        let (op, target) = ("add address", format!("{addr}/{prefix} on link #{index}"));
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(invalid(op, &target, format!("prefix length above {max}")));
        }
        let mut msg = AddressMessage::default();
        msg.header.family = family(addr);
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.attributes = vec![
            AddressAttribute::Local(addr),
            AddressAttribute::Address(addr),
        ];
        if addr.is_ipv6() {
            // Usable at once: no duplicate address detection delay (IFA_F_NODAD).
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        let msg = RouteNetlinkMessage::NewAddress(msg);
        let res = self.request(msg, NLM_F_CREATE | NLM_F_EXCL, op, &target);
        Ok(unless(libc::EEXIST, res)?.is_some())
    }

    /// Remove `addr/prefix` from link `index` (`RTM_DELADDR`). Returns Ok(false) if it was not
    /// there (`EADDRNOTAVAIL`). Errors: [`NetlinkError::Os`] otherwise.
    pub fn delete_address(&mut self, index: u32, addr: IpAddr, prefix: u8) -> Result<bool> {
        let (op, target) = (
            "delete address",
            format!("{addr}/{prefix} on link #{index}"),
        );
        let mut msg = AddressMessage::default();
        msg.header.family = family(addr);
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.attributes = vec![AddressAttribute::Local(addr)];
        let res = self.request(RouteNetlinkMessage::DelAddress(msg), 0, op, &target);
        Ok(unless(libc::EADDRNOTAVAIL, res)?.is_some())
    }

    /// Every address of this network namespace as `(link index, address, prefix length)`, from
    /// one `RTM_GETADDR` dump (`IFA_LOCAL` preferred over `IFA_ADDRESS`).
    /// Errors: [`NetlinkError::Os`].
    pub fn all_addresses(&mut self) -> Result<Vec<(u32, IpAddr, u8)>> {
        let msg = RouteNetlinkMessage::GetAddress(AddressMessage::default());
        let replies = self.request(msg, NLM_F_DUMP, "list addresses", "all links")?;
        let mut out = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewAddress(a) = reply else {
                continue;
            };
            let (mut local, mut address) = (None, None);
            for attr in &a.attributes {
                match attr {
                    AddressAttribute::Local(ip) => local = Some(*ip),
                    AddressAttribute::Address(ip) => address = Some(*ip),
                    _ => {}
                }
            }
            if let Some(ip) = local.or(address) {
                out.push((a.header.index, ip, a.header.prefix_len));
            }
        }
        Ok(out)
    }

    /// Name of link `index` (`RTM_GETLINK` dump), if it exists. Errors: [`NetlinkError::Os`].
    pub fn link_name(&mut self, index: u32) -> Result<Option<String>> {
        let msg = RouteNetlinkMessage::GetLink(LinkMessage::default());
        for reply in self.request(msg, NLM_F_DUMP, "list links", "all links")? {
            let RouteNetlinkMessage::NewLink(l) = reply else {
                continue;
            };
            if l.header.index != index {
                continue;
            }
            return Ok(l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            }));
        }
        Ok(None)
    }

    /// Hardware (MAC) address of link `name` (`IFLA_ADDRESS`), if it exists and has one of 6
    /// bytes. Errors: [`NetlinkError::Os`].
    pub fn link_mac(&mut self, name: &str) -> Result<Option<[u8; 6]>> {
        let Some(link) = self.get_link(name, "read link")? else {
            return Ok(None);
        };
        Ok(link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(m) if m.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(m);
                Some(mac)
            }
            _ => None,
        }))
    }

    /// Create a macvlan interface `name` in bridge mode on host link `parent`, directly in the
    /// network namespace of process `pid` (`IFLA_LINK` + `IFLA_NET_NS_PID`, as
    /// `ip link add link PARENT name NAME netns PID type macvlan mode bridge`). The kernel gives
    /// it `mac` (`IFLA_ADDRESS`), a fresh random MAC when None; `mtu` in bytes (`IFLA_MTU`),
    /// the parent's when None.
    /// Errors: [`NetlinkError::Os`], e.g. `ENODEV` (no parent), `EINVAL` (MTU above the
    /// parent's), `ESRCH`.
    pub fn create_macvlan(
        &mut self,
        name: &str,
        parent: u32,
        pid: i32,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
    ) -> Result<()> {
        let op = "create macvlan";
        check_name(op, name)?;
        let Some(pid) = u32::try_from(pid).ok().filter(|&p| p > 0) else {
            return Err(invalid(op, name, format!("pid {pid}")));
        };
        let info = LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::MacVlan),
            LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                MacVlanMode::Bridge,
            )])),
        ]);
        let mut attrs = vec![
            LinkAttribute::IfName(name.into()),
            LinkAttribute::Link(parent),
            LinkAttribute::NetNsPid(pid),
            info,
        ];
        attrs.extend(mtu.map(LinkAttribute::Mtu));
        attrs.extend(mac.map(|m| LinkAttribute::Address(m.to_vec())));
        let msg = RouteNetlinkMessage::NewLink(link_msg(0, attrs));
        self.request(msg, NLM_F_CREATE | NLM_F_EXCL, op, name)
            .map(drop)
    }

    /// Addresses of link `index` as `(address, prefix length in bits)`, IPv4 and IPv6, from an
    /// `RTM_GETADDR` dump (`IFA_LOCAL` preferred over `IFA_ADDRESS`, which is the peer on
    /// point-to-point links). Empty if the link has none or does not exist.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<(IpAddr, u8)>> {
        Ok(self
            .all_addresses()?
            .into_iter()
            .filter(|(i, _, _)| *i == index)
            .map(|(_, ip, p)| (ip, p))
            .collect())
    }

    /// Add a default route (`0.0.0.0/0` or `::/0` by the gateway's family) via `gateway` in the
    /// main table (`RTM_NEWROUTE`, protocol boot as ip-route(8)); Ok if it exists (`EEXIST`).
    /// Errors: [`NetlinkError::Os`], e.g. `ENETUNREACH` if no up link has the gateway's subnet.
    pub fn add_default_route(&mut self, gateway: IpAddr) -> Result<()> {
        let (op, target) = ("add route", format!("default via {gateway}"));
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(gateway);
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes.push(RouteAttribute::Gateway(gateway.into()));
        let msg = RouteNetlinkMessage::NewRoute(msg);
        let res = self.request(msg, NLM_F_CREATE | NLM_F_EXCL, op, &target);
        unless(libc::EEXIST, res).map(drop)
    }

    /// Delete link `name` (`RTM_DELLINK` by `IFLA_IFNAME`; a veth's peer goes with it).
    /// Returns Ok(false) if it did not exist (`ENODEV`). Errors: [`NetlinkError::Os`] otherwise.
    pub fn delete_link(&mut self, name: &str) -> Result<bool> {
        let op = "delete link";
        check_name(op, name)?;
        let msg = link_msg(0, vec![LinkAttribute::IfName(name.into())]);
        let res = self.request(RouteNetlinkMessage::DelLink(msg), 0, op, name);
        Ok(unless(libc::ENODEV, res)?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sched::{setns, unshare, CloneFlags};
    use nix::sys::{signal, wait::waitpid};
    use nix::unistd::{fork, pause, pipe, read, write, ForkResult, Pid};

    /// Run `body` on a new thread moved into a new network namespace (unshare(2) of
    /// `CLONE_NEWNET` affects only the calling thread); the namespace dies with the thread.
    fn in_netns<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
        let thread = std::thread::spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET) needs root");
            body()
        });
        thread
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A forked child parked in a network namespace of its own; killed and reaped on drop.
    struct NetnsChild(Pid);

    impl NetnsChild {
        fn spawn() -> NetnsChild {
            let (rd, wr) = pipe().unwrap();
            // SAFETY: the child calls only async-signal-safe functions (unshare, write, pause, _exit).
            let ForkResult::Parent { child } = unsafe { fork() }.unwrap() else {
                if unshare(CloneFlags::CLONE_NEWNET).is_ok() && write(&wr, b"x").is_ok() {
                    loop {
                        pause();
                    }
                }
                // SAFETY: _exit is async-signal-safe and ends the forked child at once.
                unsafe { libc::_exit(1) };
            };
            drop(wr);
            let guard = NetnsChild(child);
            assert_eq!(
                read(&rd, &mut [0u8; 1]).unwrap(),
                1,
                "child failed to unshare"
            );
            guard
        }
    }

    impl Drop for NetnsChild {
        fn drop(&mut self) {
            let _ = signal::kill(self.0, signal::Signal::SIGKILL);
            let _ = waitpid(self.0, None);
        }
    }

    #[test]
    fn link_lookup_and_errors() {
        in_netns(|| {
            let mut nl = Netlink::open().unwrap();
            assert_eq!(nl.link_index("lo").unwrap(), Some(1));
            assert_eq!(nl.link_index("vsnl-absent0").unwrap(), None);
            assert!(!nl.delete_link("vsnl-absent0").unwrap());
            let err = nl.link_index("a-name-far-too-long").unwrap_err();
            assert_eq!(err.errno(), libc::EINVAL);
            let err = nl.ensure_bridge("lo").unwrap_err();
            assert!(matches!(err, NetlinkError::WrongKind { .. }), "{err}");
            let err = nl.set_up(999_999).unwrap_err();
            assert_eq!(err.errno(), libc::ENODEV, "{err}");
            assert!(err.to_string().contains("link #999999"), "{err}");
        });
    }

    #[test]
    fn bridge_address_route() {
        in_netns(|| {
            let mut nl = Netlink::open().unwrap();
            let br = nl.ensure_bridge("vsnl-br1").unwrap();
            assert_eq!(nl.ensure_bridge("vsnl-br1").unwrap(), br);
            assert_eq!(nl.link_index("vsnl-br1").unwrap(), Some(br));
            assert_eq!(
                nl.link_mac("vsnl-br1").unwrap(),
                Some(stable_mac("vsnl-br1"))
            );
            nl.set_up(br).unwrap();
            let (v4, v6) = (ip("10.231.0.2"), ip("fd00:231::2"));
            assert!(nl.add_address(br, v4, 24).unwrap());
            assert!(!nl.add_address(br, v4, 24).unwrap(), "EEXIST is Ok(false)");
            nl.add_address(br, v6, 64).unwrap();
            assert_eq!(
                nl.add_address(br, v4, 33).unwrap_err().errno(),
                libc::EINVAL
            );
            let addrs = nl.addresses(br).unwrap();
            assert!(
                addrs.contains(&(v4, 24)) && addrs.contains(&(v6, 64)),
                "{addrs:?}"
            );
            assert!(nl.addresses(1).unwrap().iter().all(|(a, _)| *a != v4));
            nl.add_default_route(ip("10.231.0.1")).unwrap();
            nl.add_default_route(ip("10.231.0.1")).unwrap(); // EEXIST is Ok
            nl.add_default_route(ip("fd00:231::1")).unwrap();
            let err = nl.add_default_route(ip("198.51.100.1")).unwrap_err();
            assert!(
                err.to_string().contains("default via 198.51.100.1"),
                "{err}"
            );
            assert!(nl.delete_link("vsnl-br1").unwrap());
            assert!(!nl.delete_link("vsnl-br1").unwrap());
        });
    }

    #[test]
    fn veth_peer_in_other_netns() {
        in_netns(|| {
            let child = NetnsChild::spawn();
            let pid = child.0.as_raw();
            let mut nl = Netlink::open().unwrap();
            let host = nl
                .create_veth_mtu("vsnl-vh1", "vsnl-vp1", pid, Some(1400), None)
                .unwrap();
            assert_eq!(nl.link_index("vsnl-vh1").unwrap(), Some(host));
            assert_eq!(nl.link_index("vsnl-vp1").unwrap(), None);
            let err = nl.create_veth("vsnl-vh1", "vsnl-vp2", pid).unwrap_err();
            assert_eq!(err.errno(), libc::EEXIST, "{err}");
            let err = nl.ensure_bridge("vsnl-vh1").unwrap_err();
            assert!(matches!(err, NetlinkError::WrongKind { .. }), "{err}");
            let err = nl.create_veth("vsnl-vh2", "vsnl-vp2", 0).unwrap_err();
            assert_eq!(err.errno(), libc::EINVAL, "{err}");

            // The peer is in the child's namespace, as seen from a thread that joins it.
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
            let peer = std::thread::spawn(move || {
                setns(&ns, CloneFlags::CLONE_NEWNET).unwrap();
                Netlink::open()
                    .unwrap()
                    .get_link("vsnl-vp1", "test")
                    .unwrap()
            });
            let peer = peer.join().unwrap().expect("peer in the child's netns");
            assert!(
                peer.attributes.contains(&LinkAttribute::Mtu(1400)),
                "{peer:?}"
            );

            let br = nl.ensure_bridge("vsnl-br2").unwrap();
            nl.set_master(host, br).unwrap();
            nl.set_up(host).unwrap();
            let link = nl.get_link("vsnl-vh1", "test").unwrap().unwrap();
            assert!(link.attributes.contains(&LinkAttribute::Controller(br)));
            assert!(link.header.flags.contains(LinkFlags::Up));
            assert!(nl.delete_link("vsnl-vh1").unwrap());
            assert_eq!(nl.link_index("vsnl-vh1").unwrap(), None);
        });
    }
}
