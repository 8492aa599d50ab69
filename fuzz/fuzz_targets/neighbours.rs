//! The neighbour-table dump's parser on arbitrary datagrams: never panics, and every entry it
//! returns has an address of its family's length and a MAC.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntp_offset_proto::neighbours::parse;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = parse(data) {
        for n in d.neighbours {
            assert!(!n.ip.is_unspecified() || n.mac.len() == 6);
        }
    }
});
