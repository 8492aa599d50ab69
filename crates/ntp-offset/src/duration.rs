//! Durations as people write them in configs and on the command line: an optional sign, then
//! one or more number-unit pairs: `15s`, `-250ms`, `+3650d`, `1h30m`, `1.5s`, `0`.

use ntp_offset_proto::time::Offset;

const UNITS: [(&str, i128); 10] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("min", 60_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
    ("w", 604_800_000_000_000),
];

pub const SYNTAX_HELP: &str =
    "a duration like 15s, -250ms, +3650d or 1h30m (units: ns, us, ms, s, m, h, d, w)";

/// A duration that does not parse; the message quotes the text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("`{0}` is not {SYNTAX_HELP}")]
    Syntax(String),
    #[error("`{0}` is too long a duration")]
    TooLong(String),
}

/// Parses a signed duration.
pub fn parse(text: &str) -> Result<Offset, DurationError> {
    let err = || DurationError::Syntax(text.to_string());
    let s = text.trim();
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Offset::ZERO);
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let (num, after) = rest.split_at(num_len);
        let (unit, scale) = UNITS
            .iter()
            .find(|(u, _)| after.starts_with(u))
            .ok_or_else(err)?;
        // "m" must not swallow the "m" of "ms"/"min": UNITS lists the longer names first.
        total = total
            .checked_add(scaled(num, *scale).ok_or_else(err)?)
            .ok_or_else(err)?;
        rest = &after[unit.len()..];
    }
    let total = if negative { -total } else { total };
    i64::try_from(total)
        .map(Offset::from_nanos)
        .map_err(|_| DurationError::TooLong(text.to_string()))
}

/// `num` (digits with an optional fraction) times `scale` nanoseconds, exactly.
fn scaled(num: &str, scale: i128) -> Option<i128> {
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() || frac.contains('.') {
        return None;
    }
    let int: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut value = int.checked_mul(scale)?;
    let mut unit = scale;
    for digit in frac.bytes() {
        unit /= 10;
        if unit == 0 {
            return None; // finer than a nanosecond
        }
        value = value.checked_add((digit - b'0') as i128 * unit)?;
    }
    Some(value)
}

/// Formats an offset the way `parse` reads it back, in the largest exact unit.
pub fn format(offset: Offset) -> String {
    let ns = offset.nanos() as i128;
    if ns == 0 {
        return "0s".to_string();
    }
    let sign = if ns < 0 { "-" } else { "+" };
    let abs = ns.abs();
    for (unit, scale) in [
        ("d", 86_400_000_000_000i128),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ] {
        if abs % scale == 0 {
            return format!("{sign}{}{unit}", abs / scale);
        }
    }
    unreachable!()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let s = 1_000_000_000i64;
        assert_eq!(parse("15s").unwrap().nanos(), 15 * s);
        assert_eq!(parse("-250ms").unwrap().nanos(), -250_000_000);
        assert_eq!(parse("+3650d").unwrap().nanos(), 3650 * 86_400 * s);
        assert_eq!(parse("1h30m").unwrap().nanos(), 5400 * s);
        assert_eq!(parse("1.5s").unwrap().nanos(), 1_500_000_000);
        assert_eq!(parse("0").unwrap().nanos(), 0);
        assert_eq!(parse("2min").unwrap().nanos(), 120 * s);
        assert_eq!(parse("10us").unwrap().nanos(), 10_000);
        assert_eq!(parse(".5ms").unwrap().nanos(), 500_000);
        assert_eq!(parse("1w").unwrap().nanos(), 604_800 * s);
    }

    #[test]
    fn rejects_garbage_with_a_hint() {
        for bad in [
            "", "15", "s", "15x", "1..5s", "--5s", "1.5ns", "15 s", "+", "1e3s",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.to_string().contains("15s, -250ms"), "{bad}: {e}");
        }
        assert!(parse("400000d")
            .unwrap_err()
            .to_string()
            .contains("too long"));
    }

    #[test]
    fn format_reads_back() {
        for text in ["+15s", "-250ms", "+3650d", "+90m", "0s", "-1ns"] {
            let o = parse(text).unwrap();
            assert_eq!(parse(&format(o)).unwrap(), o);
        }
        assert_eq!(format(parse("1h30m").unwrap()), "+90m");
    }
}
