//! `serve`'s config parser (the same check the flags go through) on arbitrary text: never
//! panics; an error names the file; an accepted config has views and addresses.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ntp_offset::config::parse(text, "fuzz.toml") {
        Ok(c) => assert!(!c.views.views().is_empty() && !c.listen.is_empty()),
        Err(e) => assert!(e.to_string().starts_with("fuzz.toml")),
    }
});
