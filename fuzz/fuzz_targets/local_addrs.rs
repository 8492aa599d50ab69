//! The `/proc/PID/net` address parsers (`fib_trie`, `if_inet6`) on arbitrary text: never
//! panic, and never return loopback.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntp_offset_proto::local_addrs::local_addrs;

fuzz_target!(|data: &[u8]| {
    // The first half is one file, the second the other.
    let (trie, inet6) = data.split_at(data.len() / 2);
    let (trie, inet6) = (
        String::from_utf8_lossy(trie),
        String::from_utf8_lossy(inet6),
    );
    for a in local_addrs(&trie, &inet6) {
        assert!(!a.is_loopback());
    }
});
