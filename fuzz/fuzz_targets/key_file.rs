//! The tick key file parser on arbitrary text: never panics, and a ring it accepts has
//! distinct, nonzero ids.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntp_offset_proto::tick_auth::KeyRing;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ring) = KeyRing::parse(text) {
        let ids: Vec<u16> = (1..=u16::MAX)
            .filter(|&id| ring.get(id).is_some())
            .take(ring.len() + 1)
            .collect();
        assert_eq!(ids.len(), ring.len(), "ids must be distinct and nonzero");
    }
});
