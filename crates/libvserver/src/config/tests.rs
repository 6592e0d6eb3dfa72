use super::*;

fn p() -> &'static Path {
    Path::new("/etc/vservers/t.toml")
}

fn err(text: &str) -> String {
    parse_guest_config(p(), text).unwrap_err().to_string()
}

#[test]
fn minimal_config_parses_with_defaults() {
    let c = parse_guest_config(p(), "context = 40001\n").unwrap();
    assert_eq!(c.context, 40001);
    assert_eq!(c.init.style, InitStyle::Builtin);
    assert_eq!(c.stop.kill_timeout_secs(false), 5);
    assert_eq!(c.stop.kill_timeout_secs(true), 30);
    assert_eq!(c.init.ready_timeout_secs(), 90);
    assert!(c.interface.is_empty());
}

#[test]
fn full_config_round_trips() {
    let text = r#"
context = 42
hostname = "web1"
mark = ["default"]
[[interface]]
address = "10.77.0.2/24"
[capabilities]
add = ["NET_RAW"]
drop = ["CAP_SYS_PTRACE"]
[init]
style = "sysv"
runlevel = 2
"#;
    let c = parse_guest_config(p(), text).unwrap();
    assert_eq!(c.interface[0].bridge, "vsbr0");
    let again = parse_guest_config(p(), &c.to_toml("web1")).unwrap();
    assert_eq!(c, again);
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let e = err("context = 42\nhostnme = \"x\"\n");
    assert!(e.starts_with("/etc/vservers/t.toml:2:"), "{e}");
    assert!(e.contains("hostnme"), "{e}");
}

#[test]
fn wrong_type_names_key_path() {
    let e = err("context = 42\n[[interface]]\naddress = 7\n");
    assert!(
        e.starts_with("/etc/vservers/t.toml:3: key 'interface[0].address'"),
        "{e}"
    );
}

#[test]
fn bad_value_names_line_and_key() {
    let e = err("context = 42\n\n[[interface]]\naddress = \"10.0.0.300/24\"\n");
    assert!(
        e.starts_with("/etc/vservers/t.toml:4: key 'interface[0].address'"),
        "{e}"
    );
    let e = err("context = 1\n");
    assert!(
        e.contains(":1: key 'context'") && e.contains("out of range"),
        "{e}"
    );
    let e = err("context = 42\n[capabilities]\nadd = [\"CAP_FLY\"]\n");
    assert!(e.contains(":3: key 'capabilities.add[0]'"), "{e}");
    let e = err("context = 42\nhostname = \"bad host\"\n");
    assert!(e.contains(":2: key 'hostname'"), "{e}");
    let e = err("context = 42\n[init]\nstyle = \"upstart\"\n");
    assert!(e.contains(":3: key 'init.style'"), "{e}");
}

#[test]
fn syntax_error_has_line() {
    let e = err("context = 42\nhostname = \n");
    assert!(e.starts_with("/etc/vservers/t.toml:2:"), "{e}");
}

#[test]
fn gateways() {
    let g = |s| {
        let (a, p) = parse_cidr(s).unwrap();
        default_gateway(a, p).map(|g| g.to_string())
    };
    assert_eq!(g("10.77.0.2/24").as_deref(), Some("10.77.0.1"));
    assert_eq!(g("10.77.0.1/24").as_deref(), Some("10.77.0.2"));
    assert_eq!(g("fd00::5/64").as_deref(), Some("fd00::1"));
    assert_eq!(g("10.0.0.1/32"), None);
}

#[test]
fn sizes_and_cpu_caps() {
    assert_eq!(parse_size("512M").unwrap(), 512 << 20);
    assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
    assert_eq!(parse_size("4096").unwrap(), 4096);
    assert!(parse_size("12Q").is_err());
    assert!(parse_size("-1M").is_err());
    assert_eq!(parse_cpu("50%").unwrap(), (50_000, 100_000));
    assert_eq!(parse_cpu("1.5").unwrap(), (150_000, 100_000));
    assert!(parse_cpu("0%").is_err());
    assert!(parse_cpu("fast").is_err());
    let e = err("context = 42\n[limits]\nmemory = \"lots\"\n");
    assert!(e.contains(":3: key 'limits.memory'"), "{e}");
    let e = err("context = 42\n[limits]\nnice = -30\n");
    assert!(e.contains(":3: key 'limits.nice'"), "{e}");
}

#[test]
fn stop_signal_names() {
    assert_eq!(parse_signal_name("TERM").unwrap(), libc::SIGTERM);
    assert_eq!(parse_signal_name("sigusr2").unwrap(), libc::SIGUSR2);
    assert_eq!(parse_signal_name("9").unwrap(), libc::SIGKILL);
    assert_eq!(parse_signal_name("RTMIN+3").unwrap(), libc::SIGRTMIN() + 3);
    assert_eq!(
        parse_signal_name("sigrtmax-1").unwrap(),
        libc::SIGRTMAX() - 1
    );
    assert_eq!(parse_signal_name("37").unwrap(), 37);
    assert!(parse_signal_name("RTMIN+99").is_err());
    assert!(parse_signal_name("RTMINX").is_err());
    let e = err("context = 42\n[stop]\nsignal = \"FOO\"\n");
    assert!(e.contains(":3: key 'stop.signal'"), "{e}");
}

#[test]
fn network_modes_addresses_and_forwards() {
    let c = parse_guest_config(p(), "context = 42\n[[interface]]\naddress = [\"10.1.0.2/24\", \"fd01::2/64\"]\nnat = true\n[[forward]]\nhost_port = 8080\nguest_port = 80\n").unwrap();
    assert_eq!(c.interface[0].addrs().unwrap().len(), 2);
    assert_eq!(c.forward[0].protocol, "tcp");
    let e = err("context = 42\n[[interface]]\nmode = \"classic\"\naddress = \"10.1.0.2/24\"\n[[interface]]\naddress = \"10.2.0.2/24\"\n");
    assert!(
        e.contains("key 'interface[0].mode'") && e.contains("interface[1] is veth"),
        "{e}"
    );
    let e = err("context = 42\n[[interface]]\nmode = \"macvlan\"\naddress = \"10.1.0.2/24\"\n");
    assert!(e.contains("key 'interface[0].dev'"), "{e}");
    let e = err("context = 42\n[[interface]]\nmode = \"classic\"\naddress = \"10.1.0.2/24\"\n[[forward]]\nhost_port = 1\nguest_port = 2\n");
    assert!(e.contains("key 'forward[0].host_port'"), "{e}");
    let e = err("context = 42\n[[interface]]\naddress = [\"10.1.0.2/24\", \"10.1.0.300/24\"]\n");
    assert!(e.contains("key 'interface[0].address[1]'"), "{e}");
    let e = err("context = 42\n[[interface]]\naddress = \"10.1.0.2/24\"\n[[forward]]\nhost_port = 1\nguest_port = 2\nprotocol = \"sctp\"\n");
    assert!(e.contains("key 'forward[0].protocol'"), "{e}");
    let e = err("context = 42\n[[interface]]\naddress = \"10.1.0.2/24\"\n[[interface]]\naddress = \"10.1.0.2/16\"\nbridge = \"b2\"\n");
    assert!(
        e.contains("key 'interface[1].address'") && e.contains("twice"),
        "{e}"
    );
}

#[test]
fn interface_messages() {
    let e = err("context = 42\n[[interface]]\naddress = \"10.1.0.2/24\"\ngateway = \"10.9.0.1\"\n");
    assert!(e.contains("outside every subnet"), "{e}");
    let e = err("context = 42\n[[interface]]\naddress = \"10.1.0.2/24\"\nname = \"lo\"\n");
    assert!(e.contains("loopback"), "{e}");
    let e = err("context = 42\n[[interface]]\nbridge = \"b1\"\n");
    assert!(
        e.contains("interface[0].address") && e.contains("at least one address"),
        "{e}"
    );
    let e = err("context = 42\n[[interface]]\naddress = \"10.1.0.2/24\"\n[[interface]]\nmode = \"classic\"\naddress = \"10.2.0.2/24\"\n");
    assert!(
        e.contains("interface[1].mode") && e.contains("interface[0] is veth"),
        "{e}"
    );
    let e = err("context = 42\n[[forward]]\nhost_port = 1\nguest_port = 2\n");
    assert!(e.contains("no interface"), "{e}");
    let e = err("context = 42\n[[interface]]\naddress = \"10.1.0.2/24\"\nmtu = 100\n");
    assert!(e.contains("interface[0].mtu"), "{e}");
    let e = err("context = 42\n[[interface]]\nmode = \"classic\"\naddress = \"10.1.0.2/0\"\n");
    assert!(e.contains("/0 prefix"), "{e}");
}

#[test]
fn userns_round_trips_and_refuses_classic_networking_at_its_line() {
    let c = parse_guest_config(p(), "context = 40001\nuserns = true\n").unwrap();
    assert!(c.userns);
    assert!(c.to_toml("t").contains("userns = true"));
    assert!(!parse_guest_config(p(), "context = 40001\n")
        .unwrap()
        .to_toml("t")
        .contains("userns"));
    let e = err(
        "context = 40001\nuserns = true\n[[interface]]\nmode = \"classic\"\naddress = \"10.0.0.2/24\"\n",
    );
    assert!(
        e.starts_with("/etc/vservers/t.toml:2: key 'userns':") && e.contains("classic"),
        "{e}"
    );
    assert!(err("context = 40001\nuserns = 1\n").contains("key 'userns'"));
    let e = err("context = 40001\nuserns = true\n[capabilities]\nadd = [\"sys_admin\"]\n");
    assert!(
        e.contains(":4: key 'capabilities.add[0]'") && e.contains("SYS_ADMIN"),
        "{e}"
    );
}

#[test]
fn seccomp_overrides_name_known_syscalls_only() {
    let c = parse_guest_config(
        p(),
        "context = 42\n[seccomp]\nallow = [\"keyctl\", \"socketcall\"]\ndeny = [\"ptrace\"]\n",
    )
    .unwrap();
    assert_eq!(c.seccomp.allow, ["keyctl", "socketcall"]);
    assert_eq!(c.seccomp.deny, ["ptrace"]);
    let e = err("context = 42\n[seccomp]\nallow = [\"keyctl\",\n  \"fly\"]\n");
    assert!(
        e.contains(":4: key 'seccomp.allow[1]'") && e.contains("unknown system call 'fly'"),
        "{e}"
    );
    let e = err("context = 42\n[seccomp]\nallow = [\"bpf\"]\ndeny = [\"bpf\"]\n");
    assert!(e.contains(":4: key 'seccomp.deny[0]'"), "{e}");
    let e = err("context = 42\n[seccomp]\nprofile = \"unconfined\"\n");
    assert!(e.contains(":3:") && e.contains("profile"), "{e}");
}
