use super::*;

/// The shared signal cases (testvectors/generate_dcf77.py), also read by the firmware tests.
const CASES: &str = include_str!("../../../testvectors/dcf77-signals.txt");

struct Case {
    name: String,
    calibration_ms: i64,
    duration_ms: i64,
    pulses: Vec<(i64, i64)>,
    expected: Vec<Mark>,
}

fn field(words: &[&str], key: &str) -> String {
    words
        .iter()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key} in {words:?}"))
        .to_string()
}

fn cases() -> Vec<Case> {
    let mut out: Vec<Case> = Vec::new();
    for line in CASES
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let w: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| w[i].parse::<i64>().unwrap();
        match w[0] {
            "case" => out.push(Case {
                name: field(&w, "name"),
                calibration_ms: field(&w, "calibration_ms").parse().unwrap(),
                duration_ms: field(&w, "duration_ms").parse().unwrap(),
                pulses: Vec::new(),
                expected: Vec::new(),
            }),
            "pulse" => out.last_mut().unwrap().pulses.push((num(1), num(2))),
            "expect" => out.last_mut().unwrap().expected.push(Mark {
                at_ns: num(1) * MS,
                second: Some(num(2)),
                state: match w[3] {
                    "sync" => MarkState::Synchronized,
                    "holdover" => MarkState::Holdover,
                    s => panic!("state {s}"),
                },
                leap_second: w.get(4) == Some(&"leap"),
                leap_announced: false,
            }),
            "end" => {}
            other => panic!("unknown line {other}"),
        }
    }
    out
}

/// Feeds a case's edges in time order, polling at every deadline, and returns all marks.
fn run(case: &Case) -> Vec<Mark> {
    let mut d = Decoder::new(DecoderConfig {
        calibration_ns: case.calibration_ms * MS,
        ..Default::default()
    });
    let mut edges: Vec<(i64, bool)> = case
        .pulses
        .iter()
        .flat_map(|&(s, w)| [(s * MS, true), ((s + w) * MS, false)])
        .collect();
    edges.sort();
    let mut out = Vec::new();
    let poll_until = |d: &mut Decoder, t: i64, out: &mut Vec<Mark>| {
        while let Some(deadline) = d.next_deadline().filter(|&x| x <= t) {
            d.poll(deadline, out);
        }
    };
    for (t, high) in edges {
        poll_until(&mut d, t, &mut out);
        d.on_edge(t, high, &mut out);
    }
    poll_until(&mut d, case.duration_ms * MS, &mut out);
    out
}

#[test]
fn every_shared_signal_case_decodes_to_its_marks() {
    let cases = cases();
    assert!(cases.len() >= 6);
    for case in &cases {
        let got: Vec<Mark> = run(case)
            .into_iter()
            .filter(|m| m.state != MarkState::Unsynchronized)
            .map(|m| Mark {
                leap_announced: false,
                ..m
            })
            .collect();
        for (i, (g, e)) in got.iter().zip(&case.expected).enumerate() {
            assert_eq!(g, e, "{}: mark {i}", case.name);
        }
        assert_eq!(
            got.len(),
            case.expected.len(),
            "{}: number of marks",
            case.name
        );
    }
}

#[test]
fn marks_before_sync_are_unsynchronized_and_never_numbered() {
    for case in &cases() {
        let marks = run(case);
        let first_sync = marks
            .iter()
            .position(|m| m.state != MarkState::Unsynchronized)
            .unwrap();
        assert!(
            first_sync > 0,
            "{}: phase locks before it synchronizes",
            case.name
        );
        assert!(marks[..first_sync].iter().all(|m| m.second.is_none()));
    }
}

#[test]
fn the_leap_minute_is_announced_and_has_61_seconds() {
    let case = cases()
        .into_iter()
        .find(|c| c.name.starts_with("leap"))
        .unwrap();
    let marks = run(&case);
    let leap = marks.iter().position(|m| m.leap_second).unwrap();
    assert!(marks[leap].leap_announced);
    assert_eq!(
        marks[leap - 1].second,
        marks[leap].second,
        "23:59:60 repeats 23:59:59"
    );
    assert_eq!(
        marks[leap + 1].second.unwrap(),
        1_483_228_800,
        "then 2017-01-01T00:00:00Z"
    );
}

#[test]
fn dates_and_weekdays() {
    assert_eq!(days_from_civil(1970, 1, 1), 0);
    assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    assert_eq!(days_from_civil(2026, 13, 1), days_from_civil(2027, 1, 1));
    assert_eq!(
        days_from_civil(2024, 3, 1) - days_from_civil(2024, 2, 1),
        29
    );
}

#[test]
fn arbitrary_edges_never_panic() {
    // A noisy line: edges at pseudo-random times, both levels, for ten minutes.
    let mut d = Decoder::new(DecoderConfig::default());
    let mut out = Vec::new();
    let mut seed = 7u64;
    let mut t = 0i64;
    for _ in 0..20_000 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        t += ((seed >> 33) % 300_000_000) as i64;
        d.on_edge(t, seed & 1 == 0, &mut out);
        d.poll(t, &mut out);
    }
    assert!(out
        .iter()
        .all(|m| m.state == MarkState::Unsynchronized || m.second.is_some()));
}
