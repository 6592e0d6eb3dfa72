//! The values the command line and NAME.toml take as text: interfaces, forwards, sizes, CPU
//! caps, addresses, I/O priorities. None may panic; what parses must be in range.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = libvserver::storage::build::parse_interface_arg(s);
    if let Ok(f) = libvserver::storage::build::parse_forward_arg(s) {
        assert!(f.host_port > 0 && f.guest_port > 0);
    }
    let _ = libvserver::config::parse_size(s);
    if let Ok((quota, period)) = libvserver::config::parse_cpu(s) {
        assert!(quota > 0 && period > 0);
    }
    if let Ok((ip, prefix)) = libvserver::config::parse_cidr(s) {
        assert!(prefix <= if ip.is_ipv4() { 32 } else { 128 });
    }
    if let Ok(v) = libvserver::config::parse_ionice(s) {
        assert!(v >> 13 == 2 || v >> 13 == 3);
    }
});
