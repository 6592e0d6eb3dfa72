//! nftables through the `nft` tool's JSON interface (libnftables-json(5)): a batch of commands
//! is written to `nft -j -f -`, which applies it atomically (all or nothing); counters are read
//! back with `nft -j list counters` (filtered by table name). vserver only ever adds, resets and
//! deletes tables of its own (named `vs<xid>`); the host's own ruleset is never changed.

use serde_json::{json, Value};
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// The `nft` binary (Debian's `nftables` package).
const NFT: &str = "nft";

fn nft(
    args: &[&str],
    input: Option<&str>,
    netns: Option<BorrowedFd<'_>>,
) -> Result<String, String> {
    let mut cmd = Command::new(NFT);
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ns) = netns {
        let fd = ns.as_raw_fd();
        // SAFETY: setns(2) is async-signal-safe; the fd stays open in the parent until the
        // child has exec'd (spawn waits for the exec).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            String::from("the nft tool is missing (apt-get install nftables)")
        } else {
            format!("run nft: {e}")
        }
    })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("write to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait for nft: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Apply `commands` (objects such as `{"add": {"table": ...}}`) as one atomic batch, in the
/// network namespace `netns` (the caller's when None). Errors: nft's own message, e.g.
/// "No such file or directory" for a device that does not exist.
pub fn apply(commands: Vec<Value>, netns: Option<BorrowedFd<'_>>) -> Result<(), String> {
    if commands.is_empty() {
        return Ok(());
    }
    let doc = json!({ "nftables": commands }).to_string();
    // Not "-": nft opens /dev/stdin for it, which a host without udev's links lacks.
    nft(&["-j", "-f", "/proc/self/fd/0"], Some(&doc), netns).map(drop)
}

/// Delete the tables `name` of each of `families` that exist, in one atomic batch: each is
/// added first (a no-op when it exists), then deleted, so a missing one is no error (what newer
/// nft calls `destroy table`). Errors: nft's message.
pub fn delete_tables(
    families: &[&str],
    name: &str,
    netns: Option<BorrowedFd<'_>>,
) -> Result<(), String> {
    let mut cmds = Vec::new();
    for f in families {
        cmds.push(expr::table(f, name));
        cmds.push(json!({"delete": {"table": {"family": f, "name": name}}}));
    }
    apply(cmds, netns).map_err(|m| format!("delete the nftables tables {name}: {m}"))
}

/// Named counters of the tables called `table` (any family), as `(name, packets, bytes)`, from
/// one `nft -j list counters`; empty if there are none. Errors: nft's message, or unparsable
/// output.
pub fn counters(
    table: &str,
    netns: Option<BorrowedFd<'_>>,
) -> Result<Vec<(String, u64, u64)>, String> {
    let out = nft(&["-j", "list", "counters"], None, netns)
        .map_err(|m| format!("list nftables counters: {m}"))?;
    let v: Value = serde_json::from_str(&out).map_err(|e| format!("nft -j output: {e}"))?;
    let mut res = Vec::new();
    for o in v["nftables"].as_array().into_iter().flatten() {
        let c = &o["counter"];
        if c["table"].as_str() != Some(table) {
            continue;
        }
        if let (Some(n), Some(p), Some(b)) = (
            c["name"].as_str(),
            c["packets"].as_u64(),
            c["bytes"].as_u64(),
        ) {
            res.push((n.to_string(), p, b));
        }
    }
    Ok(res)
}

/// Builders of the JSON expressions and statements vserver uses (libnftables-json(5)).
pub mod expr {
    use serde_json::{json, Value};
    use std::net::IpAddr;

    /// `add table FAMILY NAME`.
    pub fn table(family: &str, name: &str) -> Value {
        json!({"add": {"table": {"family": family, "name": name}}})
    }

    /// `add counter FAMILY TABLE NAME` (a named counter object).
    pub fn counter_obj(family: &str, table: &str, name: &str) -> Value {
        json!({"add": {"counter": {"family": family, "table": table, "name": name}}})
    }

    /// `add chain` of `kind` (filter, nat) on `hook` at priority `prio`, policy accept; `dev`
    /// for netdev hooks (ingress, egress).
    pub fn base_chain(
        family: &str,
        table: &str,
        name: &str,
        kind: &str,
        hook: &str,
        prio: i32,
        dev: Option<&str>,
    ) -> Value {
        let mut c = json!({"family": family, "table": table, "name": name, "type": kind,
            "hook": hook, "prio": prio, "policy": "accept"});
        if let Some(d) = dev {
            c["dev"] = json!(d);
        }
        json!({"add": {"chain": c}})
    }

    /// `add rule FAMILY TABLE CHAIN EXPR...`.
    pub fn rule(family: &str, table: &str, chain: &str, exprs: Vec<Value>) -> Value {
        json!({"add": {"rule": {"family": family, "table": table, "chain": chain, "expr": exprs}}})
    }

    /// `LEFT OP RIGHT`.
    pub fn cmp(left: Value, op: &str, right: Value) -> Value {
        json!({"match": {"op": op, "left": left, "right": right}})
    }

    /// A packet header field, e.g. `payload("ip", "saddr")`.
    pub fn payload(protocol: &str, field: &str) -> Value {
        json!({"payload": {"protocol": protocol, "field": field}})
    }

    /// A meta key, e.g. `meta("protocol")`, `meta("oifname")`.
    pub fn meta(key: &str) -> Value {
        json!({"meta": {"key": key}})
    }

    /// An anonymous set of addresses, each with its prefix length (`{ 10.0.0.2, fe80::/10 }`).
    pub fn addr_set(addrs: &[(IpAddr, u8)]) -> Value {
        let items: Vec<Value> = addrs
            .iter()
            .map(|(a, p)| {
                let full = if a.is_ipv4() { 32 } else { 128 };
                if *p >= full {
                    json!(a.to_string())
                } else {
                    json!({"prefix": {"addr": a.to_string(), "len": p}})
                }
            })
            .collect();
        json!({ "set": items })
    }

    /// The drop verdict.
    pub fn drop() -> Value {
        json!({"drop": null})
    }

    /// Count into the named counter object `name`.
    pub fn count(name: &str) -> Value {
        json!({ "counter": name })
    }

    /// Masquerade (source NAT to the outgoing interface's address).
    pub fn masquerade() -> Value {
        json!({"masquerade": null})
    }

    /// Destination NAT to `addr:port`.
    pub fn dnat(addr: IpAddr, port: u16) -> Value {
        let family = if addr.is_ipv4() { "ip" } else { "ip6" };
        json!({"dnat": {"family": family, "addr": addr.to_string(), "port": port}})
    }

    /// `fib daddr type local`: the packet is addressed to one of this host's addresses.
    pub fn to_local_address() -> Value {
        cmp(
            json!({"fib": {"result": "type", "flags": ["daddr"]}}),
            "==",
            json!("local"),
        )
    }

    /// `ct status dnat`: the connection was destination-NATed.
    pub fn ct_dnat() -> Value {
        cmp(json!({"ct": {"key": "status"}}), "in", json!("dnat"))
    }
}
