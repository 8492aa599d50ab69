//! `interleaved::echo::udp_payload` on arbitrary frames (what the kernel echoes with a transmit
//! stamp): never panics, and a payload it finds lies within the frame, after its headers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntp_offset_proto::interleaved::echo::udp_payload;

fuzz_target!(|frame: &[u8]| {
    if let Ok(payload) = udp_payload(frame) {
        let start = payload.as_ptr() as usize - frame.as_ptr() as usize;
        assert!(start >= 28, "IPv4 and UDP headers come first");
        assert!(start + payload.len() <= frame.len());
    }
});
