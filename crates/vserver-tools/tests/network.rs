//! Networking on the real kernel: veth guests on a test bridge, port forwards reached from a test
//! network namespace acting as another host, address conflicts, anti-spoofing, accounting,
//! classic (shared stack) guests and macvlan. Traffic goes only to loopback, test bridges and
//! namespaces these tests make; every object is named after the test and removed in Drop.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A network namespace and a veth pair into it: "another host" at `peer_ip`, reaching this host
/// at `host_ip`. Removed on drop.
struct OtherHost {
    ns: String,
    link: String,
}

impl OtherHost {
    fn new(tag: &str, host_ip: &str, peer_ip: &str) -> OtherHost {
        let ns = format!("vtn{tag}");
        let link = format!("vth{tag}");
        let peer = format!("vtp{tag}");
        let h = OtherHost {
            ns: ns.clone(),
            link: link.clone(),
        };
        assert!(ip(&["netns", "add", &ns]));
        assert!(ip(&[
            "link", "add", &link, "type", "veth", "peer", "name", &peer, "netns", &ns
        ]));
        assert!(ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &link]));
        assert!(ip(&["link", "set", &link, "up"]));
        let inside = |a: &[&str]| {
            let mut v = vec!["-n", ns.as_str()];
            v.extend_from_slice(a);
            assert!(ip(&v), "ip {v:?}");
        };
        inside(&["addr", "add", &format!("{peer_ip}/24"), "dev", &peer]);
        inside(&["link", "set", &peer, "up"]);
        inside(&["link", "set", "lo", "up"]);
        inside(&["route", "add", "default", "via", host_ip]);
        // Forwarding on the test's own link only (never the host's).
        std::fs::write(format!("/proc/sys/net/ipv4/conf/{link}/forwarding"), "1").unwrap();
        h
    }

    /// Run a shell command in the namespace.
    fn run(&self, sh: &str) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns, "sh", "-c", sh])
            .output()
            .unwrap()
    }
}

impl Drop for OtherHost {
    fn drop(&mut self) {
        ip(&["link", "del", &self.link]);
        ip(&["netns", "del", &self.ns]);
    }
}

fn http_get(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
    let mut b = String::new();
    let _ = s.read_to_string(&mut b);
    Some(b)
}

fn serve(env: &Env, name: &str, text: &str, bind: &str, port: u16) {
    let o = env.exec(
        name,
        &format!(
            "mkdir -p /tmp/www && cd /tmp/www && echo {text} > index.html && \
             (python3 -m http.server {port} --bind {bind} >/dev/null 2>&1 &)"
        ),
    );
    assert_ok(&o, "start the guest's web server");
}

fn no_leftovers(xid: u32) {
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&tables.stdout).to_string();
    assert!(!t.contains(&format!("vs{xid}")), "nft tables left: {t}");
    assert!(!link_exists(&format!("vs{xid}-0")), "veth left");
    assert!(cgroup_left(xid).is_empty(), "cgroup left");
}

fn traffic(env: &Env, name: &str) -> serde_json::Value {
    let o = env.vserver(name, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["traffic"].clone()
}

#[test]
fn veth_guests_forwards_conflicts_and_accounting() {
    if !require_root() {
        return;
    }
    // Four context ids (xa .. xa + 3): idx 51 stays free.
    let mut env = Env::new("net", 50);
    let (a, xa) = (env.name.clone(), env.xid);
    let (b, xb) = (format!("{a}b"), xa + 1);
    let (a_ip, b_ip, gw) = (env.ip(2), env.ip(3), env.ip(1));
    let port = 20000 + (xa % 10000) as u16;
    env.guests.extend([a.clone(), b.clone()]);
    let ifa = format!("{}:{a_ip}/24,fd77:{:x}::2/64", env.bridge, env.net);
    let fwd = format!("{port}:80");
    let fwd_udp = format!("{}:5353/udp", port + 1);
    let xs = xa.to_string();
    assert_ok(
        &env.vserver(
            &a,
            &[
                "build",
                "-m",
                "host",
                "--initstyle",
                "builtin",
                "--context",
                &xs,
                "--interface",
                &ifa,
                "--forward",
                &fwd,
                "--forward",
                &fwd_udp,
            ],
        ),
        "build a",
    );
    let ifb = format!("{}:{b_ip}/24", env.bridge);
    let xs = xb.to_string();
    assert_ok(
        &env.vserver(
            &b,
            &[
                "build",
                "-m",
                "host",
                "--initstyle",
                "builtin",
                "--context",
                &xs,
                "--interface",
                &ifb,
                "--mtu",
                "9000",
            ],
        ),
        "build b",
    );
    assert_ok(&env.vserver(&a, &["start"]), "start a");
    assert_ok(&env.vserver(&b, &["start"]), "start b");
    // b's MTU on both ends of its veth; the bridge keeps the smallest of its ports (a's 1500).
    assert_eq!(
        text(&env.exec(&b, "cat /sys/class/net/eth0/mtu")).trim(),
        "9000"
    );
    let mtu = |dev: &str| std::fs::read_to_string(format!("/sys/class/net/{dev}/mtu")).unwrap();
    assert_eq!(mtu(&format!("vs{xb}-0")).trim(), "9000");
    assert_eq!(mtu(&env.bridge).trim(), "1500");
    serve(&env, &a, &format!("hello-{xa}"), "::", 80);

    // The host reaches the guest directly and through the forward on 127.0.0.1.
    let want = format!("hello-{xa}");
    wait_until(10, "guest a answers on port 80", || {
        http_get(&format!("{a_ip}:80")).is_some_and(|b| b.contains(&want))
    });
    let lo = http_get(&format!("127.0.0.1:{port}")).unwrap_or_default();
    assert!(lo.contains(&want), "forward from 127.0.0.1: {lo}");
    let lo6 = http_get(&format!("[::1]:{port}")).unwrap_or_default();
    assert!(lo6.contains(&want), "forward from ::1: {lo6}");
    // A service listening on IPv4 only is reached through ::1 too (issue 17, point 24: the
    // relay tried the guest's IPv6 address alone and returned an empty reply).
    let _ = env.exec(&a, "pkill -f 'http.server 80'");
    serve(&env, &a, &format!("hello-{xa}"), "0.0.0.0", 80);
    wait_until(10, "guest a answers on IPv4 only", || {
        http_get(&format!("{a_ip}:80")).is_some_and(|b| b.contains(&want))
    });
    let lo6 = http_get(&format!("[::1]:{port}")).unwrap_or_default();
    assert!(
        lo6.contains(&want),
        "forward from ::1 to an IPv4 service: {lo6}"
    );
    let _ = env.exec(&a, "pkill -f 'http.server 80'");
    serve(&env, &a, &format!("hello-{xa}"), "::", 80);
    wait_until(10, "guest a answers again on both", || {
        http_get(&format!("{a_ip}:80")).is_some_and(|b| b.contains(&want))
    });
    // UDP forwards, through 127.0.0.1 (nftables) and ::1 (the relay).
    assert_ok(
        &env.exec(
            &a,
            "(python3 -c \"import socket\ns=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\ns.bind(('::',5353))\nwhile True:\n  d,c=s.recvfrom(100); s.sendto(b'echo-'+d,c)\" >/dev/null 2>&1 &)",
        ),
        "start the guest's UDP echo",
    );
    for host in ["127.0.0.1", "::1"] {
        let bind = if host == "::1" {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        };
        let u = std::net::UdpSocket::bind(bind).unwrap();
        u.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let to = if host == "::1" {
            format!("[::1]:{}", port + 1)
        } else {
            format!("127.0.0.1:{}", port + 1)
        };
        let mut got = None;
        for _ in 0..20 {
            let _ = u.send_to(b"ping", &to);
            let mut b = [0u8; 64];
            if let Ok((n, _)) = u.recv_from(&mut b) {
                got = Some(String::from_utf8_lossy(&b[..n]).to_string());
                break;
            }
        }
        assert_eq!(got.as_deref(), Some("echo-ping"), "UDP forward via {host}");
    }
    // IPv6 to the guest.
    let v6 = http_get(&format!("[fd77:{:x}::2]:80", env.net)).unwrap_or_default();
    assert!(v6.contains(&want), "IPv6: {v6}");
    // Another guest reaches it directly and through the forward on the bridge's address.
    let o = env.exec(
        &b,
        &format!(
            "python3 -c \"import urllib.request as u; print(u.urlopen('http://{a_ip}:80/').read().decode(), u.urlopen('http://{gw}:{port}/').read().decode())\""
        ),
    );
    assert_eq!(
        text(&o).matches(&want).count(),
        2,
        "from guest b: {}",
        text(&o)
    );
    // The guest itself reaches its own forward (hairpin on its bridge port).
    let o = env.exec(
        &a,
        &format!("python3 -c \"import urllib.request as u; print(u.urlopen('http://{gw}:{port}/', timeout=5).read().decode())\""),
    );
    assert!(
        text(&o).contains(&want),
        "guest to its own forward: {}",
        text(&o)
    );
    // Another host (a test namespace) reaches the forward.
    let tag = format!("{}{}", std::process::id() % 10000, 50);
    let other_net = (env.net as u16 + 1) % 250;
    let host_side = format!("10.198.{other_net}.1");
    let other = OtherHost::new(&tag, &host_side, &format!("10.198.{other_net}.2"));
    let o = other.run(&format!(
        "python3 -c \"import urllib.request as u; print(u.urlopen('http://{host_side}:{port}/', timeout=5).read().decode())\""
    ));
    assert!(text(&o).contains(&want), "from another host: {}", text(&o));

    // Conflicts: a's address while a runs, and the bridge's (a host) address.
    let (c, xc) = (format!("{a}c"), xa + 2);
    env.guests.push(c.clone());
    let xs = xc.to_string();
    let ifc = format!("{}:{a_ip}/24", env.bridge);
    assert_ok(
        &env.vserver(
            &c,
            &[
                "build",
                "-m",
                "skeleton",
                "--context",
                &xs,
                "--interface",
                &ifc,
            ],
        ),
        "build c",
    );
    let o = env.vserver(&c, &["start"]);
    assert!(
        !o.status.success() && text(&o).contains(&format!("in use by running guest {a}")),
        "duplicate address: {}",
        text(&o)
    );
    std::fs::write(
        env.config_path(&c),
        std::fs::read_to_string(env.config_path(&c))
            .unwrap()
            .replace(&format!("{a_ip}/24"), &format!("{gw}/24"))
            .replace(
                "[[interface]]",
                &format!("[[interface]]\ngateway = \"{}\"", env.ip(9)),
            ),
    )
    .unwrap();
    let o = env.vserver(&c, &["start"]);
    assert!(
        !o.status.success()
            && text(&o).contains(&format!("in use by the host (interface {})", env.bridge)),
        "host address: {}",
        text(&o)
    );
    assert!(!link_exists(&format!("vs{xc}-0")));

    // Forwarded host ports: one a running guest forwards, one a host service holds.
    let (d, xd) = (format!("{a}d"), xa + 3);
    env.guests.push(d.clone());
    let (xs, ifd) = (xd.to_string(), format!("{}:{}/24", env.bridge, env.ip(4)));
    assert_ok(
        &env.vserver(
            &d,
            &[
                "build",
                "-m",
                "skeleton",
                "--context",
                &xs,
                "--interface",
                &ifd,
                "--forward",
                &fwd,
            ],
        ),
        "build d",
    );
    let o = env.vserver(&d, &["start"]);
    assert!(
        !o.status.success()
            && text(&o).contains(&format!("already forwarded to running guest {a}")),
        "forward conflict: {}",
        text(&o)
    );
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let hp = held.local_addr().unwrap().port();
    std::fs::write(
        env.config_path(&d),
        std::fs::read_to_string(env.config_path(&d))
            .unwrap()
            .replace(&format!("host_port = {port}"), &format!("host_port = {hp}")),
    )
    .unwrap();
    let o = env.vserver(&d, &["start"]);
    assert!(
        !o.status.success()
            && text(&o).contains(&format!("host port {hp}/tcp is in use on the host")),
        "host port conflict: {}",
        text(&o)
    );
    drop(held);
    assert!(!link_exists(&format!("vs{xd}-0")));

    // Guest root cannot reconfigure its network or open raw sockets.
    for cmd in [
        format!("ip addr add {}/24 dev eth0", env.ip(77)),
        String::from("ip link set eth0 down"),
        String::from("ip link set eth0 address 02:00:00:00:00:01"),
        String::from(
            "python3 -c 'import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)'",
        ),
    ] {
        let o = env.exec(&a, &cmd);
        assert!(!o.status.success(), "guest root could: {cmd}");
    }
    // ping works without CAP_NET_RAW (an ICMP echo socket).
    let o = env.exec(
        &a,
        &format!("python3 -c \"import socket,struct; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM,socket.IPPROTO_ICMP); s.settimeout(3); s.sendto(struct.pack('!BBHHH',8,0,0,0,1),('{gw}',0)); print('reply', s.recvfrom(64)[1][0])\""),
    );
    assert!(
        text(&o).contains(&format!("reply {gw}")),
        "ping: {}",
        text(&o)
    );
    // A forged source (sent with the guest's namespace but the host's powers, as a guest with
    // CAP_NET_RAW would) never leaves the veth.
    let listener = std::net::UdpSocket::bind(format!("{gw}:0")).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let lport = listener.local_addr().unwrap().port();
    let init =
        serde_json::from_slice::<serde_json::Value>(&env.vserver(&a, &["status", "--json"]).stdout)
            .unwrap()["init_pid"]
            .as_i64()
            .unwrap();
    let forge = |src: &str| {
        let o = Command::new("nsenter")
            .args([&format!("--net=/proc/{init}/ns/net"), "python3", "-c"])
            .arg(format!(
                "import socket,struct\n\
                 s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_UDP)\n\
                 s.setsockopt(socket.IPPROTO_IP,socket.IP_HDRINCL,1)\n\
                 src=socket.inet_aton('{src}'); dst=socket.inet_aton('{gw}')\n\
                 udp=struct.pack('!HHHH',4000,{lport},12,0)+b'from'\n\
                 ip=struct.pack('!BBHHHBBH4s4s',0x45,0,32,1,0,64,17,0,src,dst)\n\
                 s.sendto(ip+udp,('{gw}',0))"
            ))
            .output()
            .unwrap();
        assert_ok(&o, "send a raw packet from the guest's namespace");
        listener
            .recv_from(&mut [0u8; 64])
            .ok()
            .map(|(_, from)| from.ip().to_string())
    };
    assert_eq!(
        forge(&a_ip).as_deref(),
        Some(a_ip.as_str()),
        "honest packet lost"
    );
    assert_eq!(forge(&env.ip(99)), None, "forged source got through");
    // ICMPv6 from the guest's namespace to all nodes: an echo request arrives on the bridge, a
    // router advertisement and a neighbour advertisement for a foreign target do not.
    let icmp6 = |kind: u8, body: &str| {
        let mut host = Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import socket\ns=socket.socket(socket.AF_INET6,socket.SOCK_RAW,socket.IPPROTO_ICMPV6)\ns.setsockopt(socket.SOL_SOCKET,socket.SO_BINDTODEVICE,b'{br}')\ns.settimeout(2)\nprint('ready', flush=True)\ntry:\n\twhile True:\n\t\td=s.recv(200)\n\t\tif d[0]=={kind} and b'vstest' in d: print('arrived'); break\nexcept OSError: print('none')",
                br = env.bridge
            ))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(host.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "the host's ICMPv6 listener did not start"
        );
        let o = Command::new("nsenter")
            .args([&format!("--net=/proc/{init}/ns/net"), "python3", "-c"])
            .arg(format!(
                "import socket\ns=socket.socket(socket.AF_INET6,socket.SOCK_RAW,socket.IPPROTO_ICMPV6)\ns.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_MULTICAST_HOPS,255)\nidx=socket.if_nametoindex('eth0')\ns.sendto(bytes([{kind},0,0,0])+{body}+b'vstest',('ff02::1',0,0,idx))"
            ))
            .output()
            .unwrap();
        assert_ok(&o, "send ICMPv6 from the guest's namespace");
        let mut rest = String::new();
        let _ = out.read_to_string(&mut rest);
        let _ = host.wait();
        rest.contains("arrived")
    };
    assert!(
        icmp6(128, "bytes(4)"),
        "echo request lost (the check is blind)"
    );
    assert!(!icmp6(134, "bytes(12)"), "router advertisement got through");
    assert!(
        !icmp6(
            136,
            "bytes([0x20,0,0,0])+socket.inet_pton(socket.AF_INET6,'fd00::99')"
        ),
        "neighbour advertisement for a foreign address got through"
    );
    // Guest root (no capability needed) aims at the host's loopback out of eth0 with
    // IP_PKTINFO; the bridge accepts 127/8 (route_localnet, for forwards), the guard must not.
    let lo_sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    lo_sink
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let lo_port = lo_sink.local_addr().unwrap().port();
    let o = env.exec(
        &a,
        &format!("python3 -c \"import socket,struct; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); i=socket.if_nametoindex('eth0'); s.sendmsg([b'vstest-lo'],[(socket.IPPROTO_IP,8,struct.pack('@I4s4s',i,bytes(4),bytes(4)))],0,('127.0.0.1',{lo_port})); print('sent')\""),
    );
    assert!(text(&o).contains("sent"), "{}", text(&o));
    assert!(
        lo_sink.recv_from(&mut [0u8; 64]).is_err(),
        "a guest reached a host service on 127.0.0.1"
    );
    // A VLAN-tagged frame from the guest (with NET_RAW, via the host) never reaches the
    // bridge; the same frame untagged does.
    let guest_mac = text(&env.exec(&a, "cat /sys/class/net/eth0/address"))
        .trim()
        .to_string();
    let frame = |tagged: bool| {
        let mut sniff = Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import socket\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW,socket.htons(3))\ns.bind(('{br}',0))\ns.settimeout(2)\nprint('ready',flush=True)\ntry:\n\twhile True:\n\t\tif b'vstest-vlan' in s.recv(2000): print('arrived'); break\nexcept OSError: print('none')",
                br = env.bridge
            ))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(sniff.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        let tag = if tagged {
            "b'\\x81\\x00\\x00\\x64'"
        } else {
            "b''"
        };
        let o = Command::new("nsenter")
            .args([&format!("--net=/proc/{init}/ns/net"), "python3", "-c"])
            .arg(format!(
                "import socket,struct\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind(('eth0',0))\nsrc=bytes.fromhex('{mac}'.replace(':',''))\npl=b'vstest-vlan'\nudp=struct.pack('!HHHH',4000,9,8+len(pl),0)+pl\nh=bytes([0x45,0,0,20+len(udp),0,1,0,0,64,17,0,0])+socket.inet_aton('{a_ip}')+socket.inet_aton('{gw}')\nc=sum(struct.unpack('!10H',h)); c=(c&0xffff)+(c>>16); c=~c&0xffff\nh=h[:10]+struct.pack('!H',c)+h[12:]\ns.send(b'\\xff'*6+src+{tag}+b'\\x08\\x00'+h+udp)",
                mac = guest_mac
            ))
            .output()
            .unwrap();
        assert_ok(&o, "send a frame from the guest's namespace");
        let mut rest = String::new();
        let _ = out.read_to_string(&mut rest);
        let _ = sniff.wait();
        rest.contains("arrived")
    };
    assert!(frame(false), "untagged frame lost (the check is blind)");
    assert!(!frame(true), "VLAN-tagged frame got through");

    // Accounting: a known transfer out of the guest is counted within 5%. UDP, so that no
    // retransmission under load blurs the figure: 4000 datagrams of 1000 bytes are 4 MB of
    // payload and 4.112 MB at the IP level (28 bytes of headers each), whatever the host drops.
    let sink = std::net::UdpSocket::bind(format!("{gw}:0")).unwrap();
    let sport = sink.local_addr().unwrap().port();
    let before = traffic(&env, &a)["tx_bytes"].as_u64().unwrap();
    const N: u64 = 4_000_000;
    assert_ok(
        &env.exec(&a, &format!("python3 -c \"import socket; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); [s.sendto(b'x'*1000,('{gw}',{sport})) for _ in range(4000)]\"")),
        "send",
    );
    drop(sink);
    let sent = traffic(&env, &a)["tx_bytes"].as_u64().unwrap() - before;
    assert!(
        (N..=N + N / 20).contains(&sent),
        "counted {sent} bytes for a {N}-byte transfer"
    );
    let stat = text(&env.cmd("vserver-stat").arg("--net").output().unwrap());
    assert!(
        stat.lines()
            .any(|l| l.starts_with(&format!("{xa} ")) && l.contains(&a_ip)),
        "{stat}"
    );
    // vtop shows the guest's traffic totals (and a rate per second after the first sample).
    let row = vtop_row(&env, xa, 2);
    assert!(
        row["tx_bytes"].as_u64().unwrap_or(0) >= N && row["tx_bytes_per_sec"].is_number(),
        "vtop: {row}"
    );
    // Totals survive a restart; reset-accounting zeroes them.
    assert_ok(&env.vserver(&a, &["restart"]), "restart");
    let after = traffic(&env, &a)["tx_bytes"].as_u64().unwrap();
    assert!(after >= before + N, "totals lost on restart: {after}");
    // A host crash loses at most one checkpoint interval (issue 20, point 3): the running
    // guest's counters are checkpointed into the accounting file, and a checkpoint left by a
    // run that never stopped joins the totals at the next start, once.
    assert_ok(&env.vserver(&a, &["stop"]), "stop a");
    let acct = env.dir.join("root/.accounting").join(format!("{a}.json"));
    let mut saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&acct).unwrap()).unwrap();
    let totals = saved["tx_bytes"].as_u64().unwrap();
    saved["checkpoint"] = serde_json::json!({"rx_bytes": 0, "rx_packets": 0, "tx_bytes": 1_000_000, "tx_packets": 1000});
    std::fs::write(&acct, saved.to_string()).unwrap();
    let cfg = std::fs::read_to_string(env.config_path(&a)).unwrap();
    std::fs::write(
        env.config_path(&a),
        format!("accounting_interval = 1\n{cfg}"),
    )
    .unwrap();
    assert_ok(&env.vserver(&a, &["start"]), "start a after a crash");
    let recovered = traffic(&env, &a)["tx_bytes"].as_u64().unwrap();
    assert!(
        recovered >= totals + 1_000_000 && recovered < totals + 1_000_000 + 100_000,
        "the crashed run's checkpoint: {totals} + 1000000 -> {recovered}"
    );
    assert_ok(
        &env.exec(&a, &format!("python3 -c \"import socket; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); [s.sendto(b'x'*100,('{gw}',9)) for _ in range(10)]\"")),
        "send",
    );
    wait_until(30, "a checkpoint of the running guest's counters", || {
        std::fs::read_to_string(&acct)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v["checkpoint"]["tx_packets"].as_u64().unwrap_or(0) >= 10)
    });
    assert_ok(&env.vserver(&a, &["reset-accounting"]), "reset");
    assert!(traffic(&env, &a)["tx_bytes"].as_u64().unwrap() < 10_000);

    assert_ok(&env.vserver(&a, &["stop"]), "stop a");
    assert_ok(&env.vserver(&b, &["stop"]), "stop b");
    no_leftovers(xa);
    no_leftovers(xb);
}

#[test]
fn classic_guest_uses_only_its_own_address() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("cls", 52);
    let (name, xid) = (env.name.clone(), env.xid);
    env.guests.push(name.clone());
    // The test's own bridge carries the host-side addresses (never a host interface).
    assert!(ip(&["link", "add", &env.bridge, "type", "bridge"]));
    let host_ip = env.ip(1);
    assert!(ip(&[
        "addr",
        "add",
        &format!("{host_ip}/24"),
        "dev",
        &env.bridge
    ]));
    assert!(ip(&["link", "set", &env.bridge, "up"]));
    let gip = env.ip(5);
    // Two addresses: a service bound to the wildcard answers on the first only, said at start.
    let ifc = format!("classic:{}:{gip}/24,{}/24", env.bridge, env.ip(6));
    let xs = xid.to_string();
    assert_ok(
        &env.vserver(
            &name,
            &[
                "build",
                "-m",
                "host",
                "--initstyle",
                "builtin",
                "--context",
                &xs,
                "--interface",
                &ifc,
            ],
        ),
        "build",
    );
    let o = env.vserver(&name, &["start"]);
    assert_ok(&o, "start");
    assert!(
        text(&o).contains(&format!("answers on {gip} only")),
        "{}",
        text(&o)
    );
    let port = 21000 + (xid % 10000) as u16;
    serve(&env, &name, &format!("classic-{xid}"), "0.0.0.0", port);
    let want = format!("classic-{xid}");
    wait_until(10, "the classic guest answers on its address", || {
        http_get(&format!("{gip}:{port}")).is_some_and(|b| b.contains(&want))
    });
    // Bound to 0.0.0.0 inside, yet not on the host's loopback or the host's other address.
    assert!(
        http_get(&format!("127.0.0.1:{port}")).is_none(),
        "reachable on 127.0.0.1"
    );
    assert!(
        http_get(&format!("{host_ip}:{port}")).is_none(),
        "reachable on {host_ip}"
    );
    let py = |code: &str| text(&env.exec(&name, &format!("python3 -c \"{code}\"")));
    let o = py(&format!(
        "import socket; s=socket.socket(); s.bind(('{host_ip}',0))"
    ));
    assert!(
        o.contains("Operation not permitted"),
        "bind to a host address: {o}"
    );
    // A connect's source is the guest's address, and localhost is the guest itself.
    let l = TcpListener::bind(format!("{host_ip}:0")).unwrap();
    let lp = l.local_addr().unwrap().port();
    let o = py(&format!(
        "import socket; socket.create_connection(('{host_ip}',{lp})); s=socket.create_connection(('127.0.0.1',{port})); print('peer', s.getpeername()[0])"
    ));
    let (_, from) = l.accept().unwrap();
    assert_eq!(from.ip().to_string(), gip, "connect source");
    assert!(o.contains(&format!("peer {gip}")), "{o}");
    // A socket auto-bound to the wildcard by an earlier sendto cannot connect with a source
    // the routing table picks (it would be the host's), and 127.0.0.0/8 is the guest itself.
    let o = py(&format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.sendto(b'x',('{host_ip}',9))\ntry:\n  s.connect(('{host_ip}',9)); print('src', s.getsockname()[0])\nexcept OSError as e: print('refused', e.errno)"
    ));
    assert!(
        o.contains("refused 1") || o.contains(&format!("src {gip}")),
        "autobound connect: {o}"
    );
    let o = py(&format!(
        "import socket; s=socket.create_connection(('127.0.0.53',{port})); print('peer', s.getpeername()[0])"
    ));
    assert!(o.contains(&format!("peer {gip}")), "127.0.0.53: {o}");
    // A socket the kernel binds implicitly (listen() without bind()) sits on the wildcard, but
    // only packets to the guest's own address reach it.
    let mut lsn = env
        .cmd("vserver")
        .args([&name, "exec", "python3", "-c"])
        .arg("import socket,time\ns=socket.socket(); s.listen(); print(s.getsockname()[1], flush=True)\nwhile True:\n  c,_=s.accept(); c.send(b'guest'); c.close()")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(lsn.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let eph: u16 = line.trim().parse().expect("the guest printed its port");
    let reach = |a: &str| {
        TcpStream::connect_timeout(
            &format!("{a}:{eph}").parse().unwrap(),
            Duration::from_secs(1),
        )
        .is_ok()
    };
    assert!(
        reach(&gip),
        "implicitly bound listener not reachable on the guest's address"
    );
    assert!(
        !reach("127.0.0.1"),
        "implicitly bound listener answers on 127.0.0.1"
    );
    assert!(
        !reach(&host_ip),
        "implicitly bound listener answers on {host_ip}"
    );
    let _ = lsn.kill();
    let _ = lsn.wait();
    let o = py("import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)");
    assert!(o.contains("Operation not permitted"), "raw socket: {o}");
    let o = py("import socket; socket.socket(socket.AF_INET6).bind(('fd00::99',0))");
    assert!(
        o.contains("Operation not permitted"),
        "bind6 elsewhere: {o}"
    );
    // Traffic is counted per guest (its cgroup's sockets), within 5% of a known transfer.
    assert!(traffic(&env, &name)["rx_bytes"].as_u64().unwrap() > 0);
    let sink = TcpListener::bind(format!("{host_ip}:0")).unwrap();
    let sport = sink.local_addr().unwrap().port();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = sink.accept().unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        buf.len()
    });
    let before = traffic(&env, &name)["tx_bytes"].as_u64().unwrap();
    const N: u64 = 3_000_000;
    py(&format!(
        "import socket; s=socket.create_connection(('{host_ip}',{sport})); s.sendall(b'x'*{N}); s.close()"
    ));
    assert_eq!(reader.join().unwrap() as u64, N);
    let sent = traffic(&env, &name)["tx_bytes"].as_u64().unwrap() - before;
    assert!(
        (N..=N + N / 20).contains(&sent),
        "counted {sent} bytes for {N}"
    );
    let total = traffic(&env, &name)["tx_bytes"].as_u64().unwrap();
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    assert!(
        traffic(&env, &name)["tx_bytes"].as_u64().unwrap() >= total,
        "classic counters lost at stop"
    );
    let addrs = Command::new("ip")
        .args(["-br", "addr", "show", &env.bridge])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&addrs.stdout).contains(&gip),
        "the guest's address stayed on {}",
        env.bridge
    );
    no_leftovers(xid);
    // An administrator who adds NET_RAW allows raw sockets (the one documented exception).
    std::fs::write(
        env.config_path(&name),
        std::fs::read_to_string(env.config_path(&name))
            .unwrap()
            .replacen("add = []", "add = [\"NET_RAW\"]", 1),
    )
    .unwrap();
    assert_ok(&env.vserver(&name, &["start"]), "start with NET_RAW");
    let o = env.exec(
        &name,
        "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 1); print(\"raw ok\")'",
    );
    assert!(text(&o).contains("raw ok"), "{}", text(&o));
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    no_leftovers(xid);
}

#[test]
fn macvlan_guests_share_a_segment() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("mvl", 53);
    let (a, xa) = (env.name.clone(), env.xid);
    let (b, xb) = (format!("{a}b"), xa + 1);
    env.guests.extend([a.clone(), b.clone()]);
    // The parent: one end of a test veth pair (never a host NIC).
    let parent = env.bridge.clone();
    let peer = format!("{parent}p");
    assert!(ip(&[
        "link", "add", &parent, "type", "veth", "peer", "name", &peer
    ]));
    assert!(ip(&["link", "set", &parent, "up"]));
    assert!(ip(&["link", "set", &peer, "up"]));
    for (n, x, h) in [(&a, xa, 2), (&b, xb, 3)] {
        let ifc = format!("macvlan:{parent}:{}/24", env.ip(h));
        let xs = x.to_string();
        assert_ok(
            &env.vserver(
                n,
                &[
                    "build",
                    "-m",
                    "host",
                    "--initstyle",
                    "builtin",
                    "--context",
                    &xs,
                    "--interface",
                    &ifc,
                ],
            ),
            "build",
        );
        assert_ok(&env.vserver(n, &["start"]), "start");
    }
    let ip_a = env.ip(2);
    let o = env.exec(&b, &format!("python3 -c \"import socket,struct; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM,socket.IPPROTO_ICMP); s.settimeout(3); s.sendto(struct.pack('!BBHHH',8,0,0,0,1),('{ip_a}',0)); print('reply', s.recvfrom(64)[1][0])\""));
    assert!(
        text(&o).contains(&format!("reply {ip_a}")),
        "b -> a: {}",
        text(&o)
    );
    let o = env.exec(&a, "ip link set eth0 down");
    assert!(!o.status.success(), "guest root took its macvlan down");
    let t = traffic(&env, &b);
    assert!(t["tx_packets"].as_u64().unwrap() > 0, "{t}");
    assert_ok(&env.vserver(&a, &["stop"]), "stop a");
    assert_ok(&env.vserver(&b, &["stop"]), "stop b");
    assert!(
        traffic(&env, &b)["tx_packets"].as_u64().unwrap() > 0,
        "counters lost at stop"
    );
    ip(&["link", "del", &parent]);
    no_leftovers(xa);
    no_leftovers(xb);
}

#[test]
fn fifty_start_stop_cycles_leave_nothing() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("cyc", 54);
    let (name, xid) = (env.name.clone(), env.xid);
    env.guests.push(name.clone());
    let tree = env.dir.join("bb");
    busybox_tree(&tree);
    let (xs, ifc) = (xid.to_string(), format!("{}:{}/24", env.bridge, env.ip(2)));
    let fwd = format!("{}:80", 22000 + (xid % 10000));
    let o = env.build_rootfs(
        &name,
        &tree,
        &[
            "--context",
            &xs,
            "--interface",
            &ifc,
            "--nat",
            "--forward",
            &fwd,
        ],
    );
    assert_ok(&o, "build");
    for i in 0..50 {
        assert_ok(&env.vserver(&name, &["start"]), &format!("start #{i}"));
        assert_ok(&env.vserver(&name, &["stop"]), &format!("stop #{i}"));
    }
    no_leftovers(xid);
    // A crash (monitor and init killed, nobody cleans up) leaves the tables; the next start
    // removes them and works.
    assert_ok(&env.vserver(&name, &["start"]), "start");
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(env.dir.join("run").join(&name).join("state.json")).unwrap(),
    )
    .unwrap();
    for key in ["monitor_pid", "init_pid"] {
        let pid = state[key].as_i64().unwrap() as i32;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    wait_until(5, "the killed guest is gone", || cgroup_pids(xid) == 0);
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&tables.stdout).contains(&format!("vs{xid}")),
        "the crash left no table: the check below would be blind"
    );
    assert_ok(&env.vserver(&name, &["start"]), "start after a crash");
    let tables = Command::new("nft")
        .args(["-j", "list", "tables"])
        .output()
        .unwrap();
    let n = String::from_utf8_lossy(&tables.stdout)
        .matches(&format!("\"vs{xid}\""))
        .count();
    assert_eq!(n, 2, "netdev and inet tables of the new start only");
    // A broken NAME.toml does not make a running guest look stopped.
    let good = std::fs::read_to_string(env.config_path(&name)).unwrap();
    std::fs::write(env.config_path(&name), good.replace("/24", "/99")).unwrap();
    assert_eq!(env.vserver(&name, &["running"]).status.code(), Some(0));
    let o = env.vserver(&name, &["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("warning") && text(&o).contains(&env.ip(2)),
        "{}",
        text(&o)
    );
    let stat = text(&env.cmd("vserver-stat").arg("--net").output().unwrap());
    assert!(stat.contains(&name), "{stat}");
    std::fs::write(env.config_path(&name), good).unwrap();
    // `--interface none`: loopback only, said explicitly; not combinable.
    let lo = format!("{name}lo");
    env.guests.push(lo.clone());
    let xs = (xid + 1).to_string();
    let o = env.vserver(
        &lo,
        &[
            "build",
            "-m",
            "skeleton",
            "--context",
            &xs,
            "--interface",
            "none",
            "--interface",
            "10.1.1.1/24",
        ],
    );
    assert!(
        !o.status.success() && text(&o).contains("--interface none"),
        "{}",
        text(&o)
    );
    let o = env.vserver(
        &lo,
        &[
            "build",
            "-m",
            "skeleton",
            "--context",
            &xs,
            "--interface",
            "none",
        ],
    );
    assert_ok(&o, "build with --interface none");
    let cfg = std::fs::read_to_string(env.config_path(&lo)).unwrap();
    assert!(!cfg.contains("[[interface]]"), "{cfg}");
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    no_leftovers(xid);
}

/// The addresses of link `dev` (`ip -o addr show`), as ADDR/PREFIX.
fn addrs_of(dev: &str) -> Vec<String> {
    let o = Command::new("ip")
        .args(["-o", "addr", "show", "dev", dev])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.iter()
                .position(|w| *w == "inet" || *w == "inet6")
                .map(|i| f[i + 1].to_string())
        })
        .filter(|a| !a.starts_with("fe80:"))
        .collect()
}

/// An administrator's bridge (made here by the test, as a host's LAN bridge) is used as it is:
/// start, stop and delete of a guest on it add, change or remove none of its addresses or
/// settings (vserver used to put the guests' .1 gateway on it and leave it there). A NIC
/// named as a bridge (util-vserver's `--interface eth0:IP/24`) is refused at build, saying
/// which mode fits.
#[test]
fn an_existing_bridge_is_used_as_it_is_and_a_nic_is_refused() {
    if !require_root() {
        return;
    }
    let mut env = Env::new("exb", 55);
    let (name, xid) = (env.name.clone(), env.xid);
    let br = env.bridge.clone();
    let lan = env.ip(254);
    assert!(ip(&["link", "add", &br, "type", "bridge"]));
    assert!(ip(&["addr", "add", &format!("{lan}/24"), "dev", &br]));
    assert!(ip(&["link", "set", &br, "up"]));
    let forwarding = format!("/proc/sys/net/ipv4/conf/{br}/forwarding");
    let before = (addrs_of(&br), std::fs::read_to_string(&forwarding).unwrap());
    env.guests.push(name.clone());
    let tree = env.dir.join("bb");
    busybox_tree(&tree);
    let ifc = format!("{br}:{}/24", env.ip(50));
    let x = xid.to_string();
    assert_ok(
        &env.build_rootfs(
            &name,
            &tree,
            &["--context", &x, "--interface", &ifc, "--nat"],
        ),
        "build on an existing bridge",
    );
    env.userns_if_asked(&name);
    let o = env.vserver(&name, &["start"]);
    assert_ok(&o, "start");
    assert!(
        text(&o).contains(&format!("bridge {br} is not vserver's")),
        "no warning: {}",
        text(&o)
    );
    // NAT with the host's forwarding off is said (the test reads the setting, never sets it).
    let off = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .unwrap()
        .trim()
        == "0";
    assert_eq!(
        text(&o).contains("net.ipv4.ip_forward = 0"),
        off,
        "{}",
        text(&o)
    );
    assert_eq!(
        (addrs_of(&br), std::fs::read_to_string(&forwarding).unwrap()),
        before,
        "the bridge was changed by start"
    );
    // The guest is on the administrator's segment: it reaches the bridge's own address.
    let listener = TcpListener::bind(format!("{lan}:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let serve = std::thread::spawn(move || {
        // At most 20 s: a guest that cannot reach the bridge must not hang the test.
        for _ in 0..200 {
            if let Ok((mut c, _)) = listener.accept() {
                let _ = c.write_all(b"lan\n");
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let o = env.exec(&name, &format!("busybox nc -w 5 {lan} {port} </dev/null"));
    serve.join().unwrap();
    assert_eq!(
        text(&o).trim(),
        "lan",
        "the guest reaching the bridge's address"
    );
    assert_ok(&env.vserver(&name, &["stop"]), "stop");
    assert_ok(&env.vserver(&name, &["delete", "--force"]), "delete");
    env.guests.retain(|g| g != &name);
    assert_eq!(addrs_of(&br).as_slice(), before.0.as_slice());
    no_leftovers(xid);
    // A link that is not a bridge, named where a bridge goes.
    let nic = format!("{br}n");
    assert!(ip(&[
        "link",
        "add",
        &nic,
        "type",
        "veth",
        "peer",
        "name",
        &format!("{br}p")
    ]));
    let o = env.build_rootfs(
        &format!("{name}n"),
        &tree,
        &["--interface", &format!("{nic}:{}/24", env.ip(51))],
    );
    ip(&["link", "del", &nic]);
    ip(&["link", "del", &br]);
    assert!(!o.status.success(), "a veth taken as a bridge");
    assert!(
        text(&o).contains("not a bridge") && text(&o).contains(&format!("macvlan:{nic}:")),
        "{}",
        text(&o)
    );
}
