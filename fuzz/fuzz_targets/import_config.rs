//! The NAME.toml carried in an export stream, as `vserver NAME import` treats it: parsed, then
//! stripped of what an untrusted stream must not decide (`untrusted_config`). Never panics, and
//! what is left grants nothing the stripping removes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("stream/NAME.toml");
    if let Ok(mut cfg) = libvserver::config::parse_guest_config(path, text) {
        let _ = libvserver::storage::archive::untrusted_config(&mut cfg);
        assert!(cfg.mount.is_empty(), "host mounts kept");
        assert!(cfg.capabilities.add.is_empty(), "added capabilities kept");
        assert!(cfg.interface.is_empty() && cfg.forward.is_empty(), "network kept");
        assert!(cfg.rlimits.is_empty(), "rlimits kept");
    }
});
