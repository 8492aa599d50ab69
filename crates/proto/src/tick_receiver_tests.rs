use super::*;
use crate::tick::{AUTH_LEN, FLAG_FOLLOW_UP, FLAG_LEAP_SECOND};
use crate::tick_auth::{encode, Key};

const SECRET: [u8; 32] = [7; 32];
const T0: i64 = 1_800_000_000;
const MONO0: i64 = 5_000_000_000;

fn keys() -> KeyRing {
    KeyRing::new(vec![Key::new(1, &SECRET).unwrap()])
}

fn cfg() -> ReceiverConfig {
    ReceiverConfig {
        keys: keys(),
        offset: Offset::from_secs(15),
        path_delay: Offset::from_micros(40),
        ..Default::default()
    }
}

fn tick(second: i64, seq: u32) -> TickPacket {
    TickPacket {
        stratum: 2,
        key_id: 1,
        transmitter: 0xabcd,
        session: 1,
        sequence: seq,
        error_bound_us: 100,
        ..TickPacket::tick(second)
    }
}

fn wire(p: &TickPacket) -> Vec<u8> {
    encode(p, Some(&Key::new(1, &SECRET).unwrap()), &mut [0; AUTH_LEN]).to_vec()
}

/// The tick for `second` arriving `late_ns` after the second, with the local system clock
/// `clock_error_ns` ahead of tick time.
fn stamp(second: i64, late_ns: i64, clock_error_ns: i64) -> RxStamp {
    let since = (second - T0) * NANOS_PER_SEC + late_ns;
    RxStamp {
        real: Time::from_unix_nanos(second * NANOS_PER_SEC + late_ns + clock_error_ns),
        mono_ns: MONO0 + since,
    }
}

struct Harness {
    rx: Receiver,
    events: Vec<Event>,
}

impl Harness {
    fn new(cfg: ReceiverConfig) -> Harness {
        Harness {
            rx: Receiver::new(cfg),
            events: Vec::new(),
        }
    }

    fn feed(&mut self, data: &[u8], at: RxStamp) -> Vec<Event> {
        self.events.clear();
        self.rx.on_datagram(data, at, &mut self.events);
        self.events.clone()
    }

    fn poll(&mut self, mono: i64) -> Vec<Event> {
        self.events.clear();
        self.rx.poll(mono, &mut self.events);
        self.events.clone()
    }

    fn samples(events: &[Event]) -> Vec<TickSample> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Sample(s) => Some(*s),
                _ => None,
            })
            .collect()
    }

    /// Feeds ticks T0..T0+n, each 30 us late; returns all events.
    fn lock(&mut self, n: i64) -> Vec<Event> {
        (0..n)
            .flat_map(|i| self.feed(&wire(&tick(T0 + i, i as u32)), stamp(T0 + i, 30_000, 0)))
            .collect()
    }
}

#[test]
fn samples_flow_after_three_consistent_ticks_with_offset_and_delay() {
    let mut h = Harness::new(cfg());
    let events = h.lock(5);
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Locked { .. }))
            .count(),
        1
    );
    let samples = Harness::samples(&events);
    assert_eq!(samples.len(), 3, "ticks 3, 4 and 5 give samples");
    for s in samples {
        // Reference = second + 40 us delay + 15 s; the local clock read second + 30 us.
        assert_eq!(
            s.offset(),
            Offset::from_nanos(15_000_000_000 + 40_000 - 30_000)
        );
        assert!(!s.legacy && s.tx_offset_ns.is_none());
    }
    let st = h.rx.stats();
    assert_eq!(
        (st.counts.ticks, st.counts.samples, st.state),
        (5, 3, LockState::Locked)
    );
    assert_eq!(st.last_offset(), Some(Offset::from_nanos(15_000_010_000)));
    assert_eq!(st.offset_mean_jitter().unwrap().1, Offset::ZERO);
}

#[test]
fn follow_up_corrects_the_send_jitter() {
    let mut h = Harness::new(cfg());
    h.lock(3);
    // The tick left 700 us late (the transmitter was busy) and arrived 740 us late.
    let mut t = tick(T0 + 3, 3);
    t.flags = FLAG_FOLLOW_UP;
    let at = stamp(T0 + 3, 740_000, 0);
    assert!(Harness::samples(&h.feed(&wire(&t), at)).is_empty(), "waits");
    assert_eq!(h.rx.next_deadline(), Some(at.mono_ns + 100_000_000));
    let fu = t.follow_up(700_000, false);
    let s = Harness::samples(&h.feed(&wire(&fu), stamp(T0 + 3, 900_000, 0)));
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].tx_offset_ns, Some(700_000));
    assert_eq!(
        s[0].rx, at,
        "the sample is the tick's arrival, not the follow-up's"
    );
    assert_eq!(
        s[0].offset(),
        Offset::from_nanos(15_000_000_000),
        "jitter gone"
    );
    // A second copy of the follow-up matches nothing.
    let e = h.feed(&wire(&fu), stamp(T0 + 3, 950_000, 0));
    assert_eq!(e, vec![Event::Rejected(Reject::UnmatchedFollowUp)]);
    assert_eq!(h.rx.stats().counts.follow_ups, 1);
}

#[test]
fn a_missing_follow_up_releases_the_tick_uncorrected() {
    let mut h = Harness::new(cfg());
    h.lock(3);
    let mut t = tick(T0 + 3, 3);
    t.flags = FLAG_FOLLOW_UP;
    let at = stamp(T0 + 3, 30_000, 0);
    h.feed(&wire(&t), at);
    assert!(h.poll(at.mono_ns + 99_000_000).is_empty());
    let s = Harness::samples(&h.poll(at.mono_ns + 100_000_000));
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].tx_offset_ns, None);
    assert_eq!(h.rx.stats().counts.follow_ups_missing, 1);
}

#[test]
fn forged_replayed_duplicated_and_unauthenticated_ticks_are_rejected_and_counted() {
    let mut h = Harness::new(cfg());
    h.lock(4);
    let good = wire(&tick(T0 + 4, 4));
    let mut forged = good.clone();
    forged[39] ^= 1; // the second, changed without the key
    let mut unknown = tick(T0 + 4, 4);
    unknown.key_id = 9;
    let mut unauth = tick(T0 + 4, 4);
    unauth.key_id = 0;
    let at = stamp(T0 + 4, 30_000, 0);
    for (data, want) in [
        (forged, Reject::BadMac),
        (wire(&unknown), Reject::UnknownKey),
        (wire(&unauth), Reject::Unauthenticated),
        (b"time".to_vec(), Reject::Legacy),
        (good[..47].to_vec(), Reject::Truncated),
        ([good.clone(), vec![0]].concat(), Reject::Oversized),
        (b"NOTX".repeat(16), Reject::Malformed),
        (wire(&tick(T0 + 2, 2)), Reject::Replay),
    ] {
        assert_eq!(h.feed(&data, at), vec![Event::Rejected(want)], "{want:?}");
        assert_eq!(h.rx.stats().rejected(want), 1);
    }
    assert_eq!(Harness::samples(&h.feed(&good, at)).len(), 1);
    assert_eq!(
        h.feed(&good, stamp(T0 + 4, 60_000, 0)),
        vec![Event::Rejected(Reject::Duplicate)]
    );
    // A recorded tick replayed a second later: same sequence, new arrival.
    assert_eq!(
        h.feed(&good, stamp(T0 + 5, 30_000, 0)),
        vec![Event::Rejected(Reject::Duplicate)]
    );
    assert_eq!(h.rx.stats().counts.samples, 3);
}

#[test]
fn unauthenticated_ticks_pass_only_when_allowed() {
    let mut h = Harness::new(ReceiverConfig {
        allow_unauthenticated: true,
        ..cfg()
    });
    for i in 0..3 {
        let mut t = tick(T0 + i, i as u32);
        t.key_id = 0;
        h.feed(&wire(&t), stamp(T0 + i, 0, 0));
    }
    assert_eq!(h.rx.stats().counts.samples, 1);
}

#[test]
fn a_late_tick_is_an_outlier_and_the_next_good_one_counts() {
    let mut h = Harness::new(cfg());
    h.lock(3);
    let late = h.feed(&wire(&tick(T0 + 3, 3)), stamp(T0 + 3, 50_000_000, 0));
    assert_eq!(late, vec![Event::Rejected(Reject::Outlier)]);
    let next = h.feed(&wire(&tick(T0 + 4, 4)), stamp(T0 + 4, 30_000, 0));
    assert_eq!(Harness::samples(&next).len(), 1);
    assert_eq!(
        h.rx.stats().counts.missed,
        1,
        "second T0+3 produced nothing"
    );
}

#[test]
fn a_tick_that_left_late_is_judged_by_its_departure_from_the_follow_up() {
    // Locked on ticks that left and arrived 30 us after their second.
    let mut h = Harness::new(cfg());
    h.lock(3);
    // This one left 45 ms late (an ARP lookup, a DCF77 holdover slot closing) and says so.
    let mut t = tick(T0 + 3, 3);
    t.flags = FLAG_FOLLOW_UP;
    let at = stamp(T0 + 3, 45_030_000, 0);
    assert!(
        h.feed(&wire(&t), at).is_empty(),
        "judged when the follow-up comes"
    );
    let fu = h.feed(
        &wire(&t.follow_up(45_000_000, false)),
        stamp(T0 + 3, 45_100_000, 0),
    );
    let s = Harness::samples(&fu);
    assert_eq!(s.len(), 1, "not an outlier: {fu:?}");
    assert_eq!(s[0].offset(), Offset::from_nanos(15_000_010_000));
    // The next tick is measured from that departure: on time, it is consistent too.
    let next = h.feed(&wire(&tick(T0 + 4, 4)), stamp(T0 + 4, 30_000, 0));
    assert_eq!(Harness::samples(&next).len(), 1, "{next:?}");

    // Without its follow-up, the same late arrival is an outlier.
    let mut t = tick(T0 + 5, 5);
    t.flags = FLAG_FOLLOW_UP;
    let at = stamp(T0 + 5, 45_030_000, 0);
    h.feed(&wire(&t), at);
    assert_eq!(
        h.poll(at.mono_ns + 100_000_000),
        vec![Event::Rejected(Reject::Outlier)]
    );
    assert_eq!(h.rx.stats().rejected(Reject::Outlier), 1);
}

#[test]
fn an_inserted_leap_second_counts_one_second_and_makes_no_sample() {
    let mut h = Harness::new(cfg());
    h.lock(4);
    let last = T0 + 3; // 23:59:59
    let mut leap = tick(last, 4);
    leap.flags = FLAG_LEAP_SECOND;
    // 23:59:60 comes a second after 23:59:59 and repeats its POSIX second.
    let e = h.feed(&wire(&leap), stamp(last + 1, 30_000, 0));
    assert!(e.is_empty(), "accepted, no sample: {e:?}");
    // 00:00:00 is POSIX second last + 1, two seconds after 23:59:59; the local clock (its
    // kernel inserted the second too) reads last + 1 as well.
    let e = h.feed(
        &wire(&tick(last + 1, 5)),
        stamp(last + 2, 30_000, -NANOS_PER_SEC),
    );
    let s = Harness::samples(&e);
    assert_eq!(s.len(), 1, "{e:?}");
    assert_eq!(s[0].second, last + 1);
    assert_eq!(s[0].offset(), Offset::from_nanos(15_000_010_000));
    let st = h.rx.stats();
    assert_eq!(
        (
            st.counts.leap_seconds,
            st.rejected_total(),
            st.counts.missed
        ),
        (1, 0, 0)
    );

    // A track may begin at the leap second.
    let mut h = Harness::new(cfg());
    h.feed(&wire(&leap), stamp(last + 1, 30_000, 0));
    let samples: Vec<_> = (1..=3)
        .flat_map(|i| {
            let e = h.feed(
                &wire(&tick(last + i, 4 + i as u32)),
                stamp(last + 1 + i, 30_000, -NANOS_PER_SEC),
            );
            Harness::samples(&e)
        })
        .map(|s| s.second)
        .collect();
    assert_eq!(
        samples,
        vec![last + 2, last + 3],
        "the leap tick counts towards the lock"
    );
    assert_eq!(h.rx.stats().rejected_total(), 0);

    // Without the flag, a repeated second is a replay.
    let mut h = Harness::new(cfg());
    h.lock(4);
    let e = h.feed(&wire(&tick(last, 4)), stamp(last + 1, 30_000, 0));
    assert_eq!(e, vec![Event::Rejected(Reject::Replay)]);
}

#[test]
fn a_wrong_second_is_rejected_three_in_a_row_start_over() {
    let mut h = Harness::new(cfg());
    h.lock(3);
    // The transmitter's clock jumped 10 s ahead.
    for i in 3..6 {
        let e = h.feed(
            &wire(&tick(T0 + 10 + i, i as u32)),
            stamp(T0 + i, 30_000, 0),
        );
        assert!(
            e.contains(&Event::Rejected(Reject::UnexpectedSecond)),
            "{e:?}"
        );
    }
    assert_eq!(h.rx.stats().state, LockState::Searching);
    let mut samples = 0;
    for i in 6..9 {
        samples += Harness::samples(&h.feed(
            &wire(&tick(T0 + 10 + i, i as u32)),
            stamp(T0 + i, 30_000, 0),
        ))
        .len();
    }
    assert_eq!(samples, 2, "relocked on the new timeline");
}

#[test]
fn a_stepped_system_clock_is_not_tick_jitter() {
    let mut h = Harness::new(cfg());
    h.lock(3);
    // The NTP daemon we feed stepped the system clock by -0.4 s; monotonic time runs on.
    let s = Harness::samples(&h.feed(&wire(&tick(T0 + 3, 3)), stamp(T0 + 3, 30_000, -400_000_000)));
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].offset(), Offset::from_nanos(15_400_010_000));
}

#[test]
fn ticks_stop_samples_stop_and_resume_by_themselves() {
    let mut h = Harness::new(cfg());
    h.lock(3);
    let last = stamp(T0 + 2, 30_000, 0).mono_ns;
    assert!(h.poll(last + 1_400_000_000).is_empty());
    assert_eq!(h.poll(last + 1_500_000_000), vec![Event::Lost]);
    assert_eq!(h.rx.stats().state, LockState::Lost);
    assert_eq!(h.rx.next_deadline(), None);
    assert!(h.poll(last + 9_000_000_000).is_empty(), "reported once");
    // The transmitter comes back 20 s later as a new session.
    let mut samples = 0;
    let mut restarted = false;
    for i in 0..4 {
        let mut t = tick(T0 + 20 + i, i as u32);
        t.session = 2;
        let e = h.feed(&wire(&t), stamp(T0 + 20 + i, 30_000, 0));
        restarted |= e.contains(&Event::Restarted {
            transmitter: 0xabcd,
            session: 2,
        });
        samples += Harness::samples(&e).len();
    }
    assert!(restarted);
    assert_eq!(samples, 2, "relock takes three ticks");
    assert_eq!(h.rx.stats().counts.restarts, 1);
    assert_eq!(h.rx.stats().state, LockState::Locked);
}

#[test]
fn a_restarted_transmitter_cannot_go_back_in_time() {
    let mut h = Harness::new(cfg());
    h.lock(5);
    let mut old = tick(T0 + 1, 0);
    old.session = 99; // a recorded session replayed
    assert_eq!(
        h.feed(&wire(&old), stamp(T0 + 5, 0, 0)),
        vec![Event::Rejected(Reject::Replay)]
    );
}

/// Found by fuzzing (fuzz/fuzz_targets/tick_receiver.rs): once a track was lost and legacy
/// pulses had taken over, recorded ticks of the first transmitter locked again and its
/// seconds were sampled a second time, moving the clock back.
#[test]
fn a_second_once_sampled_is_never_sampled_again_even_after_another_source() {
    let mut h = Harness::new(ReceiverConfig {
        allow_legacy: true,
        ..cfg()
    });
    let taken: Vec<i64> = Harness::samples(&h.lock(5))
        .iter()
        .map(|s| s.second)
        .collect();
    assert_eq!(taken, [T0 + 2, T0 + 3, T0 + 4]);
    h.poll(stamp(T0 + 7, 0, 0).mono_ns);
    // Legacy pulses take over, and are lost in turn.
    for i in 8..10 {
        h.feed(b"time", stamp(T0 + i, 0, 15_000_000_000));
    }
    h.poll(stamp(T0 + 12, 0, 0).mono_ns);
    // The recorded ticks of T0+2..T0+4, played again a second apart.
    let mut events = Vec::new();
    for i in 2..5 {
        events.extend(h.feed(&wire(&tick(T0 + i, i as u32)), stamp(T0 + 11 + i, 0, 0)));
    }
    assert!(Harness::samples(&events).is_empty(), "{events:?}");
    assert_eq!(
        events
            .iter()
            .filter(|e| **e == Event::Rejected(Reject::Replay))
            .count(),
        3
    );
    // The transmitter's own next seconds still count.
    let mut events = Vec::new();
    for i in 20..24 {
        events.extend(h.feed(&wire(&tick(T0 + i, i as u32)), stamp(T0 + i, 30_000, 0)));
    }
    assert_eq!(Harness::samples(&events).len(), 2, "{events:?}");
}

#[test]
fn another_transmitter_is_taken_only_after_the_first_is_lost() {
    let mut h = Harness::new(cfg());
    h.lock(3);
    let mut other = tick(T0 + 3, 0);
    other.transmitter = 0x5555;
    assert_eq!(
        h.feed(&wire(&other), stamp(T0 + 3, 0, 0)),
        vec![Event::Rejected(Reject::OtherTransmitter)]
    );
    h.poll(stamp(T0 + 5, 0, 0).mono_ns);
    other.second = T0 + 6;
    assert!(h.feed(&wire(&other), stamp(T0 + 6, 0, 0)).is_empty());
    assert_eq!(h.rx.stats().transmitter, Some(0x5555));
}

#[test]
fn legacy_pulses_take_their_second_from_the_local_clock() {
    let mut h = Harness::new(ReceiverConfig {
        allow_legacy: true,
        ..cfg()
    });
    let mut samples = Vec::new();
    for i in 0..4 {
        // The local clock is 15.2 s ahead of tick time: 0.2 s off the configured view.
        samples.extend(Harness::samples(
            &h.feed(b"time", stamp(T0 + i, 30_000, 15_200_000_000)),
        ));
    }
    assert_eq!(samples.len(), 2);
    assert!(samples.iter().all(|s| s.legacy && s.transmitter.is_none()));
    assert_eq!(samples[0].second, T0 + 2);
    assert_eq!(
        samples[0].offset(),
        Offset::from_nanos(-200_000_000 + 10_000)
    );
    assert_eq!(
        h.feed(b"time", stamp(T0 + 3, 200_000, 15_200_000_000)),
        vec![Event::Rejected(Reject::Duplicate)]
    );
}

proptest::proptest! {
    #[test]
    fn arbitrary_datagrams_never_panic_or_emit_without_lock(
        packets in proptest::collection::vec(
            (proptest::collection::vec(proptest::num::u8::ANY, 0..80), 0i64..3_000_000_000),
            1..40,
        )
    ) {
        let mut h = Harness::new(ReceiverConfig { allow_legacy: true, allow_unauthenticated: true, ..cfg() });
        let mut mono = MONO0;
        for (data, gap) in packets {
            mono += gap;
            let at = RxStamp { real: Time::from_unix_nanos(mono), mono_ns: mono };
            let events = h.feed(&data, at);
            h.poll(mono);
            let st = h.rx.stats();
            proptest::prop_assert!(st.counts.samples <= st.counts.ticks);
            proptest::prop_assert!(events.len() <= 4);
        }
    }
}
