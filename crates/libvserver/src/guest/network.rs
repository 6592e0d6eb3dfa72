//! A guest's network from start to stop: address conflicts, host bridges, the guest's links,
//! the nftables tables `vs<xid>` (anti-spoofing, NAT, port forwards, byte and packet counters)
//! and, for classic guests, the eBPF socket hooks. Every host object made here carries the
//! guest's context id in its name (`vs<xid>-<n>` links, `vs<xid>` tables), so a start after a
//! crash and a stop find and remove exactly what the guest caused.
//!
//! Accounting: the counters `rx` (bytes and packets into the guest) and `tx` (out of it) live in
//! the guest's tables (classic guests: in the packet filter's map on the guest's cgroup) while it
//! runs; stop adds them to `ROOTBASE/.accounting/NAME.json`, so the
//! totals survive restarts until `vserver NAME reset-accounting`. The monitor checkpoints the
//! live counters there every `accounting_interval` seconds (60 by default), and a start adds a
//! checkpoint left by a run that never stopped: a host crash loses at most one interval.

use super::{failed, Guest, GuestError, RunState};
use crate::config::NetMode;
use crate::context::GuestIface;
use crate::net::bpf::{self, ClassicAddrs};
use crate::net::netlink::Netlink;
use crate::net::nft::{self, expr};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};

/// nftables table name of context `xid` (in the `netdev` and `inet` families).
pub fn table_name(xid: u32) -> String {
    format!("vs{xid}")
}

/// Every address of the guest, in configuration order.
pub fn guest_addrs(g: &Guest) -> Vec<(IpAddr, u8)> {
    g.config
        .interface
        .iter()
        .flat_map(|i| i.addrs().unwrap_or_default())
        .collect()
}

/// Bytes and packets in and out of a guest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// Bytes received by the guest (IP level: headers included, link layer not).
    pub rx_bytes: u64,
    /// Packets received by the guest.
    pub rx_packets: u64,
    /// Bytes sent by the guest.
    pub tx_bytes: u64,
    /// Packets sent by the guest.
    pub tx_packets: u64,
}

impl Traffic {
    fn add(&mut self, o: &Traffic) {
        self.rx_bytes += o.rx_bytes;
        self.rx_packets += o.rx_packets;
        self.tx_bytes += o.tx_bytes;
        self.tx_packets += o.tx_packets;
    }
}

fn accounting_file(g: &Guest) -> std::path::PathBuf {
    g.paths
        .root_base
        .join(".accounting")
        .join(format!("{}.json", g.name))
}

/// `ROOTBASE/.accounting/NAME.json`: the totals of the guest's past runs, and the last
/// checkpoint of the counters of the run in progress (added to the totals at stop, or at the
/// next start after a host crash, so that a crash loses at most one checkpoint interval).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Saved {
    #[serde(flatten)]
    totals: Traffic,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checkpoint: Option<Traffic>,
}

fn read_saved(g: &Guest) -> Saved {
    std::fs::read_to_string(accounting_file(g))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn write_saved(g: &Guest, s: &Saved) {
    let f = accounting_file(g);
    if let Some(d) = f.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let _ = crate::paths::write_atomically(&f, &serde_json::to_string(s).unwrap_or_default());
}

fn saved_traffic(g: &Guest) -> Traffic {
    read_saved(g).totals
}

/// Record the live counters of the running guest as its checkpoint (the monitor does it every
/// `accounting_interval` seconds): what a host crash would otherwise lose since the last stop.
pub(crate) fn checkpoint_traffic(g: &Guest, xid: u32, netns: Option<&OwnedFd>) {
    let live = live_traffic(g, xid, netns);
    let mut s = read_saved(g);
    if s.checkpoint.as_ref() == Some(&live) {
        return;
    }
    s.checkpoint = Some(live);
    write_saved(g, &s);
}

/// At start: a checkpoint left by a run that never stopped (the host crashed) joins the
/// totals, once, and the monitor log says so.
pub(crate) fn recover_checkpoint(g: &Guest) {
    let mut s = read_saved(g);
    if let Some(cp) = s.checkpoint.take() {
        s.totals.add(&cp);
        write_saved(g, &s);
        note_recovered(g, &cp);
    }
}

/// Say in the guest's monitor log that a run's counters were gone and its last checkpoint
/// joined the totals instead (what a host crash leaves).
fn note_recovered(g: &Guest, cp: &Traffic) {
    crate::monitor::note_in_log(
        g,
        &format!(
            "the previous run did not end by a stop or an exit of its own (the host went down, \
             or its monitor was killed and its nft table removed): its traffic up to the last \
             checkpoint (received {} bytes, sent {} bytes) joins the totals",
            cp.rx_bytes, cp.tx_bytes
        ),
    );
}

/// The `rx`/`tx` counters of the tables `vs<xid>` (every family) in network namespace `netns`
/// (the caller's when None); zero when there are none.
fn table_traffic(xid: u32, netns: Option<&OwnedFd>) -> Traffic {
    let mut t = Traffic::default();
    let counters = nft::counters(&table_name(xid), netns.map(|f| f.as_fd()));
    for (n, p, b) in counters.unwrap_or_default() {
        match n.as_str() {
            "rx" => {
                t.rx_bytes += b;
                t.rx_packets += p;
            }
            "tx" => {
                t.tx_bytes += b;
                t.tx_packets += p;
            }
            _ => {}
        }
    }
    t
}

/// Counters of the guest's live tables (host side, and for macvlan the guest's own netns when
/// `netns` is given) and, for classic guests, of the packet filter on its cgroup.
fn live_traffic(g: &Guest, xid: u32, netns: Option<&OwnedFd>) -> Traffic {
    let mut t = table_traffic(xid, None);
    if netns.is_some() {
        t.add(&table_traffic(xid, netns));
    }
    if let Some(cg) = classic_cgroup(g, xid) {
        if let Some([rb, rp, tb, tp]) = bpf::classic_traffic(cg.as_fd()) {
            t.add(&Traffic {
                rx_bytes: rb,
                rx_packets: rp,
                tx_bytes: tb,
                tx_packets: tp,
            });
        }
    }
    t
}

/// The cgroup v2 directory of context `xid`, opened, when the guest is a classic one.
fn classic_cgroup(g: &Guest, xid: u32) -> Option<OwnedFd> {
    if !g.config.classic_network() {
        return None;
    }
    let cg = g.cgroup_of(xid).ok()?;
    std::fs::File::open(cg.unified_dir()?)
        .ok()
        .map(OwnedFd::from)
}

/// Open the network namespace of process `pid` (`/proc/PID/ns/net`).
fn open_netns(pid: i32) -> Result<OwnedFd, String> {
    std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map(OwnedFd::from)
        .map_err(|e| format!("open the guest's network namespace (/proc/{pid}/ns/net): {e}"))
}

/// The guest's traffic so far: saved totals plus the live counters of a running guest.
pub fn traffic(g: &Guest) -> Traffic {
    let mut t = saved_traffic(g);
    if let Some(st) = g.running() {
        t.add(&live_traffic(
            g,
            st.xid,
            macvlan_netns(g, st.init_pid).as_ref(),
        ));
    }
    t
}

/// Set the guest's saved traffic totals to zero (live counters of a running guest too).
/// Errors: the file cannot be removed.
pub fn reset_traffic(g: &Guest) -> Result<(), GuestError> {
    if let Some(st) = g.running() {
        let name = table_name(st.xid);
        let inside = macvlan_netns(g, st.init_pid);
        let reset = |family: &str, ns: Option<&OwnedFd>| {
            let cmds = ["rx", "tx"]
                .iter()
                .map(
                    |c| json!({"reset": {"counter": {"family": family, "table": name, "name": c}}}),
                )
                .collect();
            let _ = nft::apply(cmds, ns.map(|f| f.as_fd()));
        };
        reset("netdev", None);
        if let Some(ns) = &inside {
            reset("netdev", Some(ns));
        }
        if let Some(cg) = classic_cgroup(g, st.xid) {
            bpf::reset_classic_traffic(cg.as_fd());
        }
    }
    match std::fs::remove_file(accounting_file(g)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(failed(
            &g.name,
            format!("remove {}: {e}", accounting_file(g).display()),
        )),
    }
}

/// Refuse addresses that a running guest or the host already has. Classic guests without
/// `dev` must find their addresses on the host instead. Errors name the other holder.
fn check_conflicts(g: &Guest, nl: &mut Netlink) -> Result<(), GuestError> {
    let mine = guest_addrs(g);
    let ports = forward_keys(g);
    for other in super::state::running_guests(&g.paths.run_dir) {
        if other.name == g.name {
            continue;
        }
        if let Some(p) = ports.iter().find(|p| other.forwards.contains(p)) {
            return Err(failed(
                &g.name,
                format!(
                    "host port {p} is already forwarded to running guest {} (context {})",
                    other.name, other.xid
                ),
            ));
        }
        for a in &other.addresses {
            let ip = a.split('/').next().and_then(|s| s.parse::<IpAddr>().ok());
            if let Some((ip, _)) = mine.iter().find(|(m, _)| Some(*m) == ip) {
                return Err(failed(
                    &g.name,
                    format!(
                        "address {ip} is in use by running guest {} (context {})",
                        other.name, other.xid
                    ),
                ));
            }
        }
    }
    for f in &g.config.forward {
        // A relay of this guest whose monitor was just killed may still be exiting (it dies
        // with its monitor, but not in the same instant): give a busy port two seconds.
        let mut taken = host_port_taken(f.host_port, &f.protocol);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while taken.is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
            taken = host_port_taken(f.host_port, &f.protocol);
        }
        if let Some(e) = taken {
            return Err(failed(
                &g.name,
                format!(
                    "host port {}/{} is in use on the host ({e}); pick another forward.host_port",
                    f.host_port, f.protocol
                ),
            ));
        }
    }
    let host = nl
        .all_addresses()
        .map_err(|e| failed(&g.name, e.to_string()))?;
    for ifc in &g.config.interface {
        for (ip, _) in ifc.addrs().unwrap_or_default() {
            let on_host = host.iter().find(|(_, a, _)| *a == ip);
            let must_exist = ifc.mode == NetMode::Classic && ifc.dev.is_none();
            match (on_host, must_exist) {
                (Some((idx, _, _)), false) => {
                    let dev = nl
                        .link_name(*idx)
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| format!("#{idx}"));
                    let hint = if ifc.mode == NetMode::Classic {
                        "; a classic guest may use a host address: drop `dev` to share it"
                    } else {
                        ""
                    };
                    return Err(failed(
                        &g.name,
                        format!("address {ip} is in use by the host (interface {dev}){hint}"),
                    ));
                }
                (None, true) => {
                    return Err(failed(
                        &g.name,
                        format!(
                            "classic address {ip} is not one of the host's; add it to a host \
                             interface or set dev = \"IFACE\" in [[interface]]"
                        ),
                    ))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// What the start needs from the network: the interfaces to configure inside the guest, the
/// classic addresses to enforce, and the host addresses added for classic interfaces.
#[derive(Debug, Default)]
pub(crate) struct NetPlan {
    /// Interfaces configured in the guest's own network namespace.
    pub ifaces: Vec<GuestIface>,
    /// Classic guests: the addresses the socket hooks allow.
    pub classic: Option<ClassicAddrs>,
    /// `(host interface, ADDR/PREFIX)` added for classic interfaces with `dev`.
    pub added: Vec<(String, String)>,
}

/// Before the guest exists: check conflicts, prepare bridges (gateway addresses, and
/// route_localnet where ports are forwarded, so 127.0.0.1 can be forwarded) and classic host
/// addresses. Errors: [`GuestError`] naming the address, bridge or interface.
pub(crate) fn prepare(g: &Guest) -> Result<NetPlan, GuestError> {
    let mut plan = NetPlan::default();
    if g.config.interface.is_empty() {
        return Ok(plan);
    }
    let err = |e: crate::net::netlink::NetlinkError| failed(&g.name, e.to_string());
    let mut nl = Netlink::open().map_err(err)?;
    check_conflicts(g, &mut nl)?;
    let mut routed = (false, false);
    if g.config.classic_network() {
        let raw = crate::security::caps::parse_cap("NET_RAW").ok();
        let mut c = ClassicAddrs {
            v4: Vec::new(),
            v6: Vec::new(),
            allow_raw: g
                .config
                .capabilities
                .add
                .iter()
                .any(|a| crate::security::caps::parse_cap(a).ok() == raw),
        };
        for ifc in &g.config.interface {
            for (ip, prefix) in ifc.addrs().map_err(|m| failed(&g.name, m))? {
                match ip {
                    IpAddr::V4(a) => c.v4.push(a),
                    IpAddr::V6(a) => c.v6.push(a),
                }
                if let Some(dev) = &ifc.dev {
                    let idx = nl.link_index(dev).map_err(err)?.ok_or_else(|| {
                        failed(&g.name, format!("host interface {dev} does not exist"))
                    })?;
                    plan.added.push((dev.clone(), format!("{ip}/{prefix}")));
                    let rec = serde_json::to_string(&plan.added).unwrap_or_default();
                    std::fs::write(g.run_dir().file(ADDED_FILE), rec).map_err(|e| {
                        failed(&g.name, format!("record the classic addresses: {e}"))
                    })?;
                    // Recorded first, so that a crash right after the add still removes it;
                    // if it appeared on the host since the check, it is not ours.
                    if !nl.add_address(idx, ip, prefix).map_err(err)? {
                        plan.added.pop();
                        let rec = serde_json::to_string(&plan.added).unwrap_or_default();
                        let _ = std::fs::write(g.run_dir().file(ADDED_FILE), rec);
                        return Err(failed(
                            &g.name,
                            format!("address {ip} appeared on host interface {dev} meanwhile"),
                        ));
                    }
                }
            }
        }
        plan.classic = Some(c);
        return Ok(plan);
    }
    for (i, ifc) in g.config.interface.iter().enumerate() {
        let addrs = ifc.addrs().map_err(|m| failed(&g.name, m))?;
        let mut gateways = Vec::new();
        if ifc.mode == NetMode::Veth
            && bridge_use(&mut nl, &ifc.bridge).map_err(|m| failed(&g.name, m))?
                == BridgeUse::Foreign
        {
            // The administrator's bridge (the LAN's, say) is used as it is: no address, state
            // or sysctl of it is changed; the guest's gateway is what its config says.
            nl.ensure_bridge(&ifc.bridge).map_err(err)?;
        } else if ifc.mode == NetMode::Veth {
            let br = nl.ensure_bridge(&ifc.bridge).map_err(err)?;
            for (a, p) in &addrs {
                if let Some(gw) = ifc.gateway_for(*a, *p) {
                    nl.add_address(br, gw, *p).map_err(err)?;
                }
            }
            nl.set_up(br).map_err(err)?;
            if !g.config.forward.is_empty() {
                set_sysctl(&format!("net/ipv4/conf/{}/route_localnet", ifc.bridge), "1")
                    .map_err(|m| failed(&g.name, m))?;
            }
            if ifc.nat || !g.config.forward.is_empty() {
                // IPv4 forwards what arrives on an interface with forwarding on: our bridge.
                // The host's uplink is the administrator's (see the README).
                set_sysctl(&format!("net/ipv4/conf/{}/forwarding", ifc.bridge), "1")
                    .map_err(|m| failed(&g.name, m))?;
            }
        } else if let Some(dev) = &ifc.dev {
            if nl.link_index(dev).map_err(err)?.is_none() {
                return Err(failed(
                    &g.name,
                    format!("host interface {dev} (macvlan parent) does not exist"),
                ));
            }
        }
        for (a, p) in &addrs {
            let first = if a.is_ipv4() {
                &mut routed.0
            } else {
                &mut routed.1
            };
            if let (false, Some(gw)) = (*first, ifc.gateway_for(*a, *p)) {
                *first = true;
                gateways.push(gw);
            }
        }
        plan.ifaces.push(GuestIface {
            name: ifc.name.clone().unwrap_or_else(|| format!("eth{i}")),
            addrs,
            gateways,
        });
    }
    Ok(plan)
}

/// Whose a veth interface's bridge is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BridgeUse {
    /// It does not exist: vserver makes it (and it is then vserver's).
    Create,
    /// vserver made it: it carries [`crate::net::netlink::stable_mac`] of its name. vserver
    /// gives it the guests' gateway addresses and the forwarding sysctls.
    Managed,
    /// The administrator's: used as it is, never changed.
    Foreign,
}

/// Whose bridge `name` is (see [`BridgeUse`]).
///
/// Errors: `name` exists but is not a bridge (a NIC, a veth): the message says what it is and
/// which interface mode fits a host NIC; netlink errors.
pub(crate) fn bridge_use(nl: &mut Netlink, name: &str) -> Result<BridgeUse, String> {
    match nl.link_kind_and_mac(name).map_err(|e| e.to_string())? {
        None => Ok(BridgeUse::Create),
        Some((kind, mac)) if kind == "bridge" => {
            Ok(if mac == crate::net::netlink::stable_mac(name) {
                BridgeUse::Managed
            } else {
                BridgeUse::Foreign
            })
        }
        Some((kind, _)) => Err(format!(
            "{name} is {}, not a bridge: a veth interface needs a bridge; for a host NIC use \
             mode macvlan (--interface macvlan:{name}:IP/PREFIX, the guest on the NIC's \
             segment) or classic (--interface classic:{name}:IP/PREFIX, the host's own stack)",
            if kind == "none" {
                String::from("a host network interface")
            } else {
                format!("a {kind} link")
            }
        )),
    }
}

/// What the host's settings will spoil of `g`'s network, said at start: `nat` while the
/// host's IPv4 forwarding is off (replies to the guest's masqueraded traffic would be
/// dropped on the uplink), and a bridge of the administrator's that vserver will not
/// configure for NAT or forwards.
pub(crate) fn host_warnings(g: &Guest) -> Vec<String> {
    let mut out = Vec::new();
    let forwarding_off = |key: &str| {
        std::fs::read_to_string(format!("/proc/sys/{key}"))
            .map(|v| v.trim() == "0")
            .unwrap_or(false)
    };
    if g.config.interface.iter().any(|i| i.nat) && forwarding_off("net/ipv4/ip_forward") {
        out.push(String::from(
            "nat = true but the host's IPv4 forwarding is off (sysctl net.ipv4.ip_forward = 0): \
             the guest's traffic through NAT gets no replies; enable it with \
             `sysctl -w net.ipv4.ip_forward=1` (and a file in /etc/sysctl.d)",
        ));
    }
    if g.config.classic_network() {
        let addrs = guest_addrs(g);
        for (fam, v4) in [("IPv4", true), ("IPv6", false)] {
            let mine: Vec<&IpAddr> = addrs
                .iter()
                .map(|(a, _)| a)
                .filter(|a| a.is_ipv4() == v4)
                .collect();
            if mine.len() > 1 {
                out.push(format!(
                    "classic guest with {} {fam} addresses: a service bound to the wildcard \
                     answers on {} only (util-vserver answered on all); bind it to each address",
                    mine.len(),
                    mine[0]
                ));
            }
        }
    }
    let Ok(mut nl) = Netlink::open() else {
        return out;
    };
    for ifc in g
        .config
        .interface
        .iter()
        .filter(|i| i.mode == NetMode::Veth)
    {
        if (ifc.nat || !g.config.forward.is_empty())
            && bridge_use(&mut nl, &ifc.bridge).ok() == Some(BridgeUse::Foreign)
        {
            out.push(format!(
                "bridge {} is not vserver's: it is used as it is, so its addresses, \
                 forwarding and route_localnet (for nat and forwards) are yours to set",
                ifc.bridge
            ));
        }
    }
    out
}

fn set_sysctl(key: &str, value: &str) -> Result<(), String> {
    std::fs::write(format!("/proc/sys/{key}"), value).map_err(|e| format!("sysctl {key}: {e}"))
}

/// Once the guest's first process `pid` exists (before it runs guest code): its links, the
/// nftables tables and, for classic guests, the socket hooks on the cgroup v2 directory
/// `cgroup_v2`. Errors: a message naming the failed step (the caller removes what was made).
pub(crate) fn attach(
    g: &Guest,
    plan: &NetPlan,
    pid: i32,
    cgroup_v2: Option<&OwnedFd>,
) -> Result<(), String> {
    if g.config.interface.is_empty() {
        return Ok(());
    }
    let table = table_name(g.config.context);
    if let Some(c) = &plan.classic {
        let cg = cgroup_v2.ok_or_else(|| {
            String::from("classic networking needs a cgroup v2 hierarchy for its socket hooks")
        })?;
        return bpf::attach_classic(cg.as_fd(), c);
    }
    let mut nl = Netlink::open().map_err(|e| e.to_string())?;
    let mut host_cmds = Vec::new();
    let mut netns_cmds = Vec::new();
    for (i, (ifc, cfg)) in plan.ifaces.iter().zip(&g.config.interface).enumerate() {
        match cfg.mode {
            NetMode::Veth => {
                let host = g.veth_name(i);
                let _ = nl.delete_link(&host);
                // The guest's end keeps its MAC across restarts (derived from the context id
                // and interface index), so the host's and other guests' neighbour caches stay
                // right when it comes back (a new MAC made the host unreachable until its
                // cached entry timed out).
                let mac = crate::net::netlink::stable_mac(&format!("guest {host}"));
                let idx = nl
                    .create_veth_mtu(&host, &ifc.name, pid, cfg.mtu, Some(mac))
                    .map_err(|e| e.to_string())?;
                let br = nl
                    .link_index(&cfg.bridge)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("bridge {} vanished", cfg.bridge))?;
                nl.set_master(idx, br).map_err(|e| e.to_string())?;
                if !g.config.forward.is_empty() {
                    // The guest reaching its own forward: with br_netfilter the DNATed frame
                    // goes back out of the port it came in by (the bridge's hairpin mode).
                    std::fs::write(format!("/sys/class/net/{host}/brport/hairpin_mode"), "1")
                        .map_err(|e| format!("hairpin mode on {host}: {e}"))?;
                }
                nl.set_up(idx).map_err(|e| e.to_string())?;
                // Frames the guest sends carry its end's MAC, read from inside its namespace.
                let mac = peer_mac(pid, &ifc.name)?;
                if host_cmds.is_empty() {
                    host_cmds.extend(counter_table(&table));
                }
                host_cmds.extend(guard_chains(&table, i, &host, mac, &ifc.addrs, false));
            }
            NetMode::Macvlan => {
                let parent = cfg.dev.as_deref().unwrap_or_default();
                let p = nl
                    .link_index(parent)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("host interface {parent} vanished"))?;
                // Its MAC, too, stays the same across restarts (the LAN's neighbour caches).
                let stable = crate::net::netlink::stable_mac(&format!("guest {}", g.veth_name(i)));
                nl.create_macvlan(&ifc.name, p, pid, cfg.mtu, Some(stable))
                    .map_err(|e| e.to_string())?;
                let mac = peer_mac(pid, &ifc.name)?;
                if netns_cmds.is_empty() {
                    netns_cmds.extend(counter_table(&table));
                }
                netns_cmds.extend(guard_chains(&table, i, &ifc.name, mac, &ifc.addrs, true));
            }
            NetMode::Classic => {}
        }
    }
    nft::apply(host_cmds, None)?;
    if !netns_cmds.is_empty() {
        nft::apply(netns_cmds, Some(open_netns(pid)?.as_fd()))?;
    }
    nft::apply(nat_rules(g, &table), None)
}

fn counter_table(table: &str) -> Vec<Value> {
    vec![
        expr::table("netdev", table),
        expr::counter_obj("netdev", table, "rx"),
        expr::counter_obj("netdev", table, "tx"),
    ]
}

/// MAC of interface `name` in the network namespace of `pid`, read by a forked child that
/// joins it. A process, not a thread: the monitor calling this has unshared its time namespace
/// for its children, and kernels before 6.3 refuse to create threads then (EINVAL).
fn peer_mac(pid: i32, name: &str) -> Result<[u8; 6], String> {
    let ns = open_netns(pid)?;
    let (rd, wr) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the monitor is single-threaded; the child only joins the namespace, asks netlink
    // and writes its answer before _exit.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            drop(rd);
            let mut out = [0u8; 7];
            if nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).is_ok() {
                if let Ok(Some(m)) = Netlink::open().and_then(|mut nl| nl.link_mac(name)) {
                    out[0] = 1;
                    out[1..].copy_from_slice(&m);
                }
            }
            let _ = nix::unistd::write(&wr, &out);
            // SAFETY: leave the forked child without running the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(wr);
            let mut out = [0u8; 7];
            let mut f = std::fs::File::from(rd);
            let got = std::io::Read::read_exact(&mut f, &mut out);
            let _ = nix::sys::wait::waitpid(child, None);
            match (got, out[0]) {
                (Ok(()), 1) => {
                    let mut m = [0u8; 6];
                    m.copy_from_slice(&out[1..]);
                    Ok(m)
                }
                _ => Err(format!(
                    "interface {name} in the guest's network namespace has no MAC address"
                )),
            }
        }
    }
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The anti-spoofing and counting chains of interface `i` on device `dev`: source MAC and
/// addresses (IPv4; ARP sender MAC and IP; IPv6: the guest's, `::` and its own link-local), neighbour
/// advertisements for the guest's own addresses only, no router advertisements, redirects or
/// DHCP server replies, no other ethertypes. Host side of a veth
/// (`inside` false): ingress sees what the guest sends, egress what it receives. Inside the
/// guest's namespace (macvlan, `inside` true) it is the other way round.
fn guard_chains(
    table: &str,
    i: usize,
    dev: &str,
    mac: [u8; 6],
    addrs: &[(IpAddr, u8)],
    inside: bool,
) -> Vec<Value> {
    let (from, to) = if inside {
        ("egress", "ingress")
    } else {
        ("ingress", "egress")
    };
    let (cf, ct) = (format!("from_guest{i}"), format!("to_guest{i}"));
    let mut v = vec![
        expr::base_chain("netdev", table, &cf, "filter", from, -500, Some(dev)),
        expr::base_chain("netdev", table, &ct, "filter", to, -500, Some(dev)),
    ];
    let drop_unless = |proto: &str, left: Value, allowed: Value| {
        expr::rule(
            "netdev",
            table,
            &cf,
            vec![
                expr::cmp(expr::meta("protocol"), "==", json!(proto)),
                expr::cmp(left, "!=", allowed),
                expr::drop(),
            ],
        )
    };
    v.push(expr::rule(
        "netdev",
        table,
        &cf,
        vec![
            expr::cmp(expr::payload("ether", "saddr"), "!=", json!(mac_text(mac))),
            expr::drop(),
        ],
    ));
    let rule = |exprs: Vec<Value>| expr::rule("netdev", table, &cf, exprs);
    // VLAN tags (the kernel strips one before this hook; nft matches the rebuilt header): a
    // guest must not hop onto a VLAN of a trunk on the bridge.
    v.push(rule(vec![
        expr::cmp(
            expr::payload("ether", "type"),
            "==",
            json!({"set": ["8021q", "8021ad"]}),
        ),
        expr::drop(),
    ]));
    // Loopback destinations: the bridge may accept them (route_localnet, for forwards from
    // 127.0.0.1), the guest must not reach the host's loopback services that way.
    v.push(rule(vec![
        expr::cmp(expr::meta("protocol"), "==", json!("ip")),
        expr::cmp(
            expr::payload("ip", "daddr"),
            "==",
            expr::addr_set(&[("127.0.0.0".parse().expect("literal"), 8)]),
        ),
        expr::drop(),
    ]));
    v.push(rule(vec![
        expr::cmp(expr::meta("protocol"), "==", json!("ip6")),
        expr::cmp(expr::payload("ip6", "daddr"), "==", json!("::1")),
        expr::drop(),
    ]));
    // Fragmented ICMPv6: the neighbour discovery checks below cannot see into fragments.
    v.push(rule(vec![
        expr::cmp(json!({"exthdr": {"name": "frag"}}), "==", json!(true)),
        expr::cmp(expr::meta("l4proto"), "==", json!("ipv6-icmp")),
        expr::drop(),
    ]));
    let host = |a: &IpAddr| (*a, if a.is_ipv4() { 32 } else { 128 });
    let v4: Vec<(IpAddr, u8)> = addrs
        .iter()
        .filter(|(a, _)| a.is_ipv4())
        .map(|(a, _)| host(a))
        .collect();
    let mut v6: Vec<(IpAddr, u8)> = addrs
        .iter()
        .filter(|(a, _)| a.is_ipv6())
        .map(|(a, _)| host(a))
        .collect();
    // Duplicate address detection sends from ::, neighbour discovery from the interface's own
    // link-local address (EUI-64 from its MAC, the kernel's default in a new namespace).
    v6.push(("::".parse().expect("literal"), 128));
    let ll = std::net::Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ]);
    v6.push((IpAddr::V6(ll), 128));
    let none4 = json!({"set": ["0.0.0.0"]});
    let set4 = if v4.is_empty() {
        none4
    } else {
        expr::addr_set(&v4)
    };
    v.push(drop_unless(
        "ip",
        expr::payload("ip", "saddr"),
        set4.clone(),
    ));
    v.push(drop_unless("arp", expr::payload("arp", "saddr ip"), set4));
    v.push(drop_unless(
        "arp",
        expr::payload("arp", "saddr ether"),
        json!(mac_text(mac)),
    ));
    // Neighbour advertisements only for the guest's own addresses (the target field, 8 bytes
    // into the ICMPv6 header; nft 1.0.6 has no name for it).
    let targets: Vec<Value> = v6
        .iter()
        .filter(|(a, p)| *p == 128 && !a.is_unspecified())
        .filter_map(|(a, _)| match a {
            IpAddr::V6(a) => Some(json!(format!("0x{:032x}", u128::from(*a)))),
            IpAddr::V4(_) => None,
        })
        .collect();
    let icmp6_type = expr::payload("icmpv6", "type");
    v.push(expr::rule(
        "netdev",
        table,
        &cf,
        vec![
            expr::cmp(icmp6_type.clone(), "==", json!("nd-neighbor-advert")),
            expr::cmp(
                json!({"payload": {"base": "th", "offset": 64, "len": 128}}),
                "!=",
                json!({ "set": targets }),
            ),
            expr::drop(),
        ],
    ));
    // A guest is no router and no DHCP server for the host or the other guests.
    v.push(expr::rule(
        "netdev",
        table,
        &cf,
        vec![
            expr::cmp(
                icmp6_type,
                "==",
                json!({"set": ["nd-router-advert", "nd-redirect"]}),
            ),
            expr::drop(),
        ],
    ));
    v.push(expr::rule(
        "netdev",
        table,
        &cf,
        vec![
            expr::cmp(
                expr::payload("udp", "sport"),
                "==",
                json!({"set": [67, 547]}),
            ),
            expr::drop(),
        ],
    ));
    v.push(drop_unless(
        "ip6",
        expr::payload("ip6", "saddr"),
        expr::addr_set(&v6),
    ));
    v.push(expr::rule(
        "netdev",
        table,
        &cf,
        vec![
            expr::cmp(
                expr::meta("protocol"),
                "!=",
                json!({"set": ["ip", "ip6", "arp"]}),
            ),
            expr::drop(),
        ],
    ));
    v.push(expr::rule("netdev", table, &cf, vec![expr::count("tx")]));
    v.push(expr::rule("netdev", table, &ct, vec![expr::count("rx")]));
    v
}

/// NAT and port forwards of a veth guest, in `inet vs<xid>` on the host.
fn nat_rules(g: &Guest, table: &str) -> Vec<Value> {
    let veths: Vec<_> = g
        .config
        .interface
        .iter()
        .filter(|i| i.mode == NetMode::Veth)
        .collect();
    let nat: Vec<_> = veths.iter().filter(|i| i.nat).collect();
    if nat.is_empty() && g.config.forward.is_empty() {
        return Vec::new();
    }
    let mut v = vec![
        expr::table("inet", table),
        expr::base_chain("inet", table, "post", "nat", "postrouting", 100, None),
    ];
    for ifc in &nat {
        for (a, _) in ifc.addrs().unwrap_or_default() {
            let fam = if a.is_ipv4() { "ip" } else { "ip6" };
            v.push(expr::rule(
                "inet",
                table,
                "post",
                vec![
                    expr::cmp(expr::payload(fam, "saddr"), "==", json!(a.to_string())),
                    expr::cmp(expr::meta("oifname"), "!=", json!(ifc.bridge)),
                    expr::masquerade(),
                ],
            ));
        }
    }
    if g.config.forward.is_empty() {
        return v;
    }
    v.push(expr::base_chain(
        "inet",
        table,
        "pre",
        "nat",
        "prerouting",
        -100,
        None,
    ));
    v.push(expr::base_chain(
        "inet", table, "out", "nat", "output", -100, None,
    ));
    let first = |v4: bool| {
        veths
            .iter()
            .flat_map(|i| i.addrs().unwrap_or_default())
            .find(|(a, _)| a.is_ipv4() == v4)
    };
    for f in &g.config.forward {
        for (target, _) in [first(true), first(false)].into_iter().flatten() {
            let nfproto = if target.is_ipv4() { "ipv4" } else { "ipv6" };
            let mut m = vec![
                expr::cmp(expr::meta("nfproto"), "==", json!(nfproto)),
                expr::to_local_address(),
                expr::cmp(
                    expr::payload(&f.protocol, "dport"),
                    "==",
                    json!(f.host_port),
                ),
                expr::dnat(target, f.guest_port),
            ];
            v.push(expr::rule("inet", table, "pre", m.clone()));
            if target.is_ipv6() {
                // ::1 cannot be NATed off loopback: the relay (net::relay) serves it.
                m.insert(
                    1,
                    expr::cmp(expr::payload("ip6", "daddr"), "!=", json!("::1")),
                );
            }
            v.push(expr::rule("inet", table, "out", m));
        }
    }
    // Replies must come back through us: masquerade what was forwarded from this host
    // (127.0.0.1, ::1 and its own addresses) and from the guest's own subnet (hairpin).
    for (target, prefix) in [first(true), first(false)].into_iter().flatten() {
        let fam = if target.is_ipv4() { "ip" } else { "ip6" };
        let subnet = (target, prefix);
        let lo = if target.is_ipv4() {
            ("127.0.0.0".parse().expect("literal"), 8)
        } else {
            ("::1".parse().expect("literal"), 128)
        };
        v.push(expr::rule(
            "inet",
            table,
            "post",
            vec![
                expr::cmp(expr::payload(fam, "daddr"), "==", json!(target.to_string())),
                expr::ct_dnat(),
                expr::cmp(
                    expr::payload(fam, "saddr"),
                    "==",
                    expr::addr_set(&[lo, subnet]),
                ),
                expr::masquerade(),
            ],
        ));
        v.push(expr::rule(
            "inet",
            table,
            "post",
            vec![
                expr::cmp(expr::payload(fam, "daddr"), "==", json!(target.to_string())),
                expr::ct_dnat(),
                expr::cmp(expr::meta("iifname"), "==", json!("lo")),
                expr::masquerade(),
            ],
        ));
    }
    v
}

/// Remove what the guest's network made on the host and keep its traffic: the host-side counters
/// are added to the saved totals first. Never fails: each step is best effort, and the names are the
/// guest's own, so nothing else is touched.
pub(crate) fn teardown(g: &Guest, xid: u32, st: Option<&RunState>) {
    let had_network =
        !g.config.interface.is_empty() || st.map(|s| !s.addresses.is_empty()).unwrap_or(false);
    if !had_network {
        return;
    }
    save(g, &live_traffic(g, xid, None));
    let name = table_name(xid);
    if let Err(m) = nft::delete_tables(&["netdev", "inet"], &name, None) {
        eprintln!("{}: {m}", g.name);
    }
    let Ok(mut nl) = Netlink::open() else {
        return;
    };
    // Links named after the context: as many as configured, or as the run state recorded.
    let mut veths: Vec<String> = (0..g.config.interface.len())
        .map(|i| format!("vs{xid}-{i}"))
        .collect();
    if let Some(s) = st {
        veths.extend(s.veths.iter().cloned());
    }
    for v in veths {
        let _ = nl.delete_link(&v);
    }
    // Classic addresses vserver put on a host interface, as recorded before they were added
    // (so also after a start that failed before writing its state).
    let mut added = recorded_additions(g);
    if let Some(s) = st {
        added.extend(s.classic_addresses.iter().cloned());
    }
    {
        for (dev, a) in &added {
            if let (Ok(Some(idx)), Ok((ip, p))) = (nl.link_index(dev), crate::config::parse_cidr(a))
            {
                let _ = nl.delete_address(idx, ip, p);
            }
        }
    }
    let _ = std::fs::remove_file(g.run_dir().file(ADDED_FILE));
}

/// `RUN/NAME/classic-added.json`: host addresses a classic start added, written before adding.
const ADDED_FILE: &str = "classic-added.json";

fn recorded_additions(g: &Guest) -> Vec<(String, String)> {
    std::fs::read_to_string(g.run_dir().file(ADDED_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Inside the monitor, when the init has exited: add the counters that live in the guest's own
/// network namespace (macvlan interfaces) to the saved totals while `netns` still holds it.
pub(crate) fn save_netns_traffic(g: &Guest, xid: u32, netns: &OwnedFd) {
    save(g, &table_traffic(xid, Some(netns)));
}

/// Inside the monitor, when the init has exited: a classic guest's counters live in the packet
/// filter's map on its cgroup, which on a systemd host goes with the guest's scope as soon as
/// the monitor exits (before a stop's cleanup could read it). They join the saved totals now
/// and are zeroed, so that a later cleanup that still finds them counts nothing twice.
pub(crate) fn save_classic_traffic(g: &Guest, xid: u32) {
    let Some(cg) = classic_cgroup(g, xid) else {
        return;
    };
    if let Some([rb, rp, tb, tp]) = bpf::classic_traffic(cg.as_fd()) {
        save(
            g,
            &Traffic {
                rx_bytes: rb,
                rx_packets: rp,
                tx_bytes: tb,
                tx_packets: tp,
            },
        );
        bpf::reset_classic_traffic(cg.as_fd());
    }
}

/// At stop (and the repair of a dead run): the final counters join the totals, and the run's
/// checkpoint goes, in one write. With no live counters left (the tables went with a host
/// crash) the checkpoint is the best figure there is, and joins instead.
fn save(g: &Guest, live: &Traffic) {
    let mut s = read_saved(g);
    let add = match s.checkpoint.take() {
        Some(cp) if *live == Traffic::default() => {
            if cp != Traffic::default() {
                note_recovered(g, &cp);
            }
            cp
        }
        None if *live == Traffic::default() => return,
        _ => *live,
    };
    s.totals.add(&add);
    write_saved(g, &s);
}

/// The network namespace of the guest's process `pid` when counters live there (macvlan
/// interfaces); the monitor keeps it open until it has saved them.
pub(crate) fn macvlan_netns(g: &Guest, pid: i32) -> Option<OwnedFd> {
    if !g
        .config
        .interface
        .iter()
        .any(|i| i.mode == NetMode::Macvlan)
    {
        return None;
    }
    open_netns(pid).ok()
}

/// The forwards the ::1 relay serves: each `[[forward]]` to the guest's first IPv4 veth address,
/// then its first IPv6 one (TCP tries them in turn: a service listening on IPv4 only answers
/// the first, an IPv6-only one the second; UDP goes to the first).
pub(crate) fn relay_forwards(g: &Guest) -> Vec<crate::net::relay::RelayForward> {
    let addrs: Vec<IpAddr> = g
        .config
        .interface
        .iter()
        .filter(|i| i.mode == NetMode::Veth)
        .flat_map(|i| i.addrs().unwrap_or_default())
        .map(|(a, _)| a)
        .collect();
    let order: Vec<IpAddr> = [
        addrs.iter().find(|a| a.is_ipv4()),
        addrs.iter().find(|a| a.is_ipv6()),
    ]
    .into_iter()
    .flatten()
    .copied()
    .collect();
    if order.is_empty() {
        return Vec::new();
    }
    g.config
        .forward
        .iter()
        .map(|f| crate::net::relay::RelayForward {
            protocol: f.protocol.clone(),
            host_port: f.host_port,
            targets: order
                .iter()
                .map(|a| std::net::SocketAddr::new(*a, f.guest_port))
                .collect(),
        })
        .collect()
}

/// The guest's forwarded host ports as `PORT/PROTOCOL` (recorded in the run state).
pub(crate) fn forward_keys(g: &Guest) -> Vec<String> {
    g.config
        .forward
        .iter()
        .map(|f| format!("{}/{}", f.host_port, f.protocol))
        .collect()
}

/// Whether a host socket already holds `port` (a service on the wildcard or any address): a
/// trial bind of `[::]:port` (dual-stack, so IPv4 binds conflict too) fails with EADDRINUSE.
/// Returns the error text then.
fn host_port_taken(port: u16, protocol: &str) -> Option<String> {
    let at = std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
    let res = if protocol == "udp" {
        std::net::UdpSocket::bind(at).map(drop)
    } else {
        std::net::TcpListener::bind(at).map(drop)
    };
    match res {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Some(e.to_string()),
        _ => None,
    }
}

/// The guest's interfaces, one line each, for `status`: `eth0: veth on vsbr0, nat`,
/// `eth1: macvlan on eth1`, `classic on vsbr1` (host interface that carries the addresses).
pub fn describe_interfaces(g: &Guest) -> Vec<String> {
    g.config
        .interface
        .iter()
        .enumerate()
        .map(|(i, ifc)| {
            let name = ifc.name.clone().unwrap_or_else(|| format!("eth{i}"));
            match ifc.mode {
                NetMode::Veth => format!(
                    "{name}: veth on bridge {}{}",
                    ifc.bridge,
                    if ifc.nat { ", nat" } else { "" }
                ),
                NetMode::Macvlan => {
                    format!("{name}: macvlan on {}", ifc.dev.as_deref().unwrap_or("?"))
                }
                NetMode::Classic => match &ifc.dev {
                    Some(d) => format!("classic (host stack), addresses on {d}"),
                    None => String::from("classic (host stack), the host's addresses"),
                },
            }
        })
        .collect()
}
