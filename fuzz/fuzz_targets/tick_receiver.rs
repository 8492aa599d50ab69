//! The tick receiver on sequences of arbitrary datagrams and arrival times. Each record:
//! 1 byte length, that many bytes of datagram, 2 bytes of time since the previous one (ms).
//! Never panics, and never takes a sample of a second it already took one of (per
//! transmitter): a replay or duplicate must not move a daemon's clock.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use ntp_offset_proto::tick_receiver::{Event, Receiver, ReceiverConfig, RxStamp};
use ntp_offset_proto::time::Time;

fuzz_target!(|data: &[u8]| {
    let mut rx = Receiver::new(ReceiverConfig {
        allow_unauthenticated: true,
        allow_legacy: data.first().is_some_and(|b| b & 1 == 1),
        ..ReceiverConfig::default()
    });
    let mut real: i64 = 1_767_225_600_000_000_000;
    let mut mono: i64 = 1_000_000_000;
    let mut events = Vec::new();
    let mut taken = HashSet::new();
    let mut rest = data.get(1..).unwrap_or_default();
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (datagram, tail) = tail.split_at(len);
        let Some((dt, tail)) = tail.split_first_chunk::<2>() else {
            break;
        };
        rest = tail;
        let step = i64::from(u16::from_be_bytes(*dt)) * 1_000_000;
        real += step;
        mono += step;
        rx.poll(mono, &mut events);
        rx.on_datagram(
            datagram,
            RxStamp {
                real: Time::from_unix_nanos(real),
                mono_ns: mono,
            },
            &mut events,
        );
        for e in events.drain(..) {
            if let Event::Sample(s) = e {
                if !s.legacy {
                    assert!(
                        taken.insert((s.transmitter, s.second)),
                        "second {} taken twice",
                        s.second
                    );
                }
            }
        }
    }
});
