//! NAME.toml as a hostile or broken file: parsing never panics, and what parses writes back
//! (`to_toml`) to a text that parses to the same configuration.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/vservers/fuzz.toml");
    if let Ok(cfg) = libvserver::config::parse_guest_config(path, text) {
        let again = cfg.to_toml("fuzz");
        let back = libvserver::config::parse_guest_config(path, &again)
            .unwrap_or_else(|e| panic!("written config does not parse: {e}\n{again}"));
        assert_eq!(back, cfg, "round trip changed the config:\n{again}");
    }
});
