//! Tick receiver settings, one set of limits wherever they come from: `serve`'s
//! `[reference] source = "pulse"` (and its flags) and `pulse listen`'s flags.

use ntp_offset_proto::time::Offset;
use toml::Spanned;

use super::raw::flag;
use super::{ConfigError, Context};
use crate::duration;

/// The ticks' travel time from the transmitter.
pub const DELAY: (Offset, Offset) = (Offset::ZERO, Offset::from_secs(1));
/// How far a tick may arrive from where the previous ones put it.
pub const OUTLIER: (Offset, Offset) = (Offset::from_micros(10), Offset::from_nanos(500_000_000));
/// No tick for this long: the source is lost (ticks come once a second).
pub const TIMEOUT: (Offset, Offset) = (Offset::from_nanos(1_100_000_000), Offset::from_secs(3600));
/// Without ticks for this long, `serve` says unsynchronized.
pub const HOLDOVER: (Offset, Offset) = (Offset::from_secs(3), Offset::from_secs(30 * 86_400));
/// A larger error is stepped, a smaller one slewed.
pub const STEP_THRESHOLD: (Offset, Offset) = (Offset::from_micros(1000), Offset::from_secs(1000));

impl Context<'_> {
    /// A duration within `limits`, if given.
    pub(super) fn within(
        &self,
        d: Option<&Spanned<String>>,
        field: &str,
        (lo, hi): (Offset, Offset),
    ) -> Result<Option<Offset>, ConfigError> {
        let Some(d) = d else { return Ok(None) };
        match duration::parse(d.get_ref()) {
            Ok(o) if o >= lo && o <= hi => Ok(Some(o)),
            Ok(_) => self.err(
                d.span(),
                field,
                format!(
                    "must be between {} and {}",
                    duration::format(lo),
                    duration::format(hi)
                ),
            ),
            Err(e) => self.err(d.span(), field, e.to_string()),
        }
    }
}

/// `pulse listen`'s receiver flags as given.
pub struct ListenFlags<'a> {
    pub offset: &'a str,
    pub delay: &'a str,
    pub outlier: &'a str,
    pub timeout: &'a str,
}

/// `pulse listen`'s receiver settings, checked.
#[derive(Debug, PartialEq)]
pub struct ListenTimes {
    pub offset: Offset,
    pub delay: Offset,
    pub outlier: Offset,
    pub timeout: Offset,
}

/// Checks `pulse listen`'s flags with the limits `serve` applies to the same settings.
pub fn check_listen_flags(f: &ListenFlags) -> Result<ListenTimes, ConfigError> {
    let names = [
        ("listen.offset", "--offset"),
        ("listen.delay", "--delay"),
        ("listen.outlier", "--outlier"),
        ("listen.timeout", "--timeout"),
    ];
    let cx = Context::flags(&names);
    let get = |text: &str, field: &str, limits| {
        cx.within(Some(&flag(text.to_string())), field, limits)
            .map(|o| o.unwrap_or(Offset::ZERO))
    };
    Ok(ListenTimes {
        offset: cx.offset(&flag(f.offset.to_string()), "listen.offset")?,
        delay: get(f.delay, "listen.delay", DELAY)?,
        outlier: get(f.outlier, "listen.outlier", OUTLIER)?,
        timeout: get(f.timeout, "listen.timeout", TIMEOUT)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags<'a>(offset: &'a str, outlier: &'a str) -> ListenFlags<'a> {
        ListenFlags {
            offset,
            delay: "0s",
            outlier,
            timeout: "1500ms",
        }
    }

    #[test]
    fn listen_flags_have_the_limits_of_the_config_file() {
        assert!(check_listen_flags(&flags("15s", "20ms")).is_ok());
        let e = check_listen_flags(&flags("99999d", "20ms")).unwrap_err();
        assert_eq!(e.to_string(), "the command line: --offset: offsets are limited to ±68 years: NTP timestamps repeat every 136 years and clients resolve the era from their own clock");
        let e = check_listen_flags(&flags("0s", "1us")).unwrap_err();
        assert!(
            e.to_string()
                .contains("--outlier: must be between +10us and +500ms"),
            "{e}"
        );
        let e = check_listen_flags(&ListenFlags {
            timeout: "100ms",
            ..flags("0s", "20ms")
        })
        .unwrap_err();
        assert!(e.to_string().contains("--timeout"), "{e}");
    }
}
