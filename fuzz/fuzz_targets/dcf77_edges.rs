//! The DCF77 decoder on arbitrary edge sequences (each 2 bytes: time since the previous edge
//! in ms, high bit = the level): never panics, reports at most a few marks per call, and
//! once it numbers seconds, marks are in time order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntp_offset_proto::dcf77::{Decoder, DecoderConfig};

fuzz_target!(|data: &[u8]| {
    let mut d = Decoder::new(DecoderConfig::default());
    let mut t: i64 = 1_767_225_600_000_000_000;
    let mut marks = Vec::new();
    let mut last_at = i64::MIN;
    for e in data.chunks_exact(2) {
        let v = u16::from_be_bytes([e[0], e[1]]);
        t += i64::from(v & 0x7fff) * 1_000_000;
        while let Some(due) = d.next_deadline().filter(|&due| due <= t) {
            d.poll(due, &mut marks);
        }
        d.on_edge(t, v & 0x8000 != 0, &mut marks);
        assert!(marks.len() <= 64);
        for m in marks.drain(..) {
            assert!(m.at_ns >= last_at, "marks out of order");
            last_at = m.at_ns;
        }
    }
});
