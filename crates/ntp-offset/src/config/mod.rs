//! The `serve` configuration: TOML in, a validated [`ServeConfig`] out. Every error names the
//! file, the line and the field, and says what is allowed. The format is documented in
//! `docs/configuration.md`; `examples/` has files that pass `serve --check`.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::Path;

use ntp_offset_proto::leap::LeapPolicy;
use ntp_offset_proto::ratelimit::RateLimitParams;
use ntp_offset_proto::responder::Unmatched;
use ntp_offset_proto::system::ClockPolicy;
use ntp_offset_proto::time::{Offset, MAX_OFFSET};
use ntp_offset_proto::view::{Cidr, LocalAddr, Rule, Spread, Target, View, ViewId, ViewTable};
use serde::Deserialize;
use siphasher::sip::SipHasher13;
use std::hash::Hasher;
use toml::Spanned;

use crate::duration;

mod reference;
use reference::RawReference;
pub use reference::{PulseReference, Reference};

/// Everything `serve` needs, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ServeConfig {
    pub listen: Vec<SocketAddr>,
    pub views: ViewTable,
    pub unmatched: Unmatched,
    pub clock: ClockPolicy,
    pub leap: LeapPolicy,
    /// None: no rate limiting.
    pub rate_limit: Option<RateLimitParams>,
    pub reference: Reference,
}

pub const DEFAULT_STRATUM: u8 = 3;
pub const DEFAULT_REFID: [u8; 4] = *b"OFFS";
pub const DEFAULT_RATE_LIMIT: RateLimitParams = RateLimitParams {
    interval_ns: 2_000_000_000,
    burst: 16,
    kod: false,
    table_size: 16_384,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    server: Spanned<RawServer>,
    reference: Option<Spanned<RawReference>>,
    rate_limit: Option<Spanned<RawRateLimit>>,
    #[serde(default)]
    view: Vec<Spanned<RawView>>,
    #[serde(default)]
    spread: Vec<Spanned<RawSpread>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Spanned<Vec<Spanned<String>>>,
    unmatched: Option<Spanned<String>>,
    default_view: Option<Spanned<String>>,
    local_stratum: Option<Spanned<i64>>,
    stratum: Option<Spanned<i64>>,
    reference_id: Option<Spanned<String>>,
    leap: Option<Spanned<String>>,
    leap_smear_window: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    enabled: Option<bool>,
    interval: Option<Spanned<String>>,
    burst: Option<Spanned<i64>>,
    kod: Option<bool>,
    table_size: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawView {
    name: Spanned<String>,
    offset: Spanned<String>,
    #[serde(default)]
    listen: Vec<Spanned<String>>,
    #[serde(default)]
    clients: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpread {
    name: Spanned<String>,
    views: Spanned<Vec<Spanned<String>>>,
    key: Option<Spanned<String>>,
    #[serde(default)]
    listen: Vec<Spanned<String>>,
    #[serde(default)]
    clients: Vec<Spanned<String>>,
}

/// View names and their ids, for looking up references to views.
type ViewNames = Vec<(String, ViewId)>;

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<ServeConfig, ConfigError> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: None,
        field: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    parse(&source, &file)
}

/// Validates config text; `file` names it in errors.
pub fn parse(source: &str, file: &str) -> Result<ServeConfig, ConfigError> {
    let cx = Context { source, file };
    let raw: RawFile = toml::from_str(source).map_err(|e| {
        let line = e.span().map(|s| cx.line(&s));
        // toml's message says what was expected; the span gives the line.
        ConfigError {
            file: file.to_string(),
            line,
            field: String::new(),
            message: e.message().trim().to_string(),
        }
    })?;
    cx.build(raw)
}

struct Context<'a> {
    source: &'a str,
    file: &'a str,
}

impl Context<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        self.source[..span.start.min(self.source.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn err<T>(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Result<T, ConfigError> {
        Err(ConfigError {
            file: self.file.to_string(),
            line: Some(self.line(&span)),
            field: field.into(),
            message: message.into(),
        })
    }

    fn build(&self, raw: RawFile) -> Result<ServeConfig, ConfigError> {
        let server = raw.server.get_ref();
        let listen = self.listen(server)?;
        let (views, names) = self.views(&raw.view)?;
        let mut rules = Vec::new();
        let mut used: HashSet<usize> = HashSet::new();
        for (i, v) in raw.view.iter().enumerate() {
            let v = v.get_ref();
            let field = format!("view `{}`", v.name.get_ref());
            let local = self.local_addrs(&v.listen, &listen, &field)?;
            let clients = self.cidrs(&v.clients, &field)?;
            if !local.is_empty() || !clients.is_empty() {
                used.insert(i);
                rules.push(Rule {
                    listen: local,
                    clients,
                    target: Target::View(ViewId(i as u16)),
                });
            }
        }
        let mut spread_names = HashSet::new();
        for s in &raw.spread {
            let s = s.get_ref();
            let field = format!("spread `{}`", s.name.get_ref());
            if !spread_names.insert(s.name.get_ref().clone()) {
                return self.err(
                    s.name.span(),
                    field,
                    "a spread group of this name is defined above; names must be unique",
                );
            }
            if s.views.get_ref().is_empty() {
                return self.err(
                    s.views.span(),
                    format!("{field}.views"),
                    "a spread group needs at least one view",
                );
            }
            let mut members = Vec::new();
            for m in s.views.get_ref() {
                let Some(&id) = names
                    .iter()
                    .find(|(n, _)| n == m.get_ref())
                    .map(|(_, id)| id)
                else {
                    return self.err(
                        m.span(),
                        format!("{field}.views"),
                        format!(
                            "no view is named `{}`; views: {}",
                            m.get_ref(),
                            name_list(&names)
                        ),
                    );
                };
                if members.iter().any(|&(mid, _)| mid == id) {
                    return self.err(
                        m.span(),
                        format!("{field}.views"),
                        format!("`{}` is listed twice", m.get_ref()),
                    );
                }
                used.insert(id.0 as usize);
                members.push((id, m.get_ref().as_str()));
            }
            let key_text = s
                .key
                .as_ref()
                .map_or(s.name.get_ref().as_str(), |k| k.get_ref().as_str());
            let rule = Rule {
                listen: self.local_addrs(&s.listen, &listen, &field)?,
                clients: self.cidrs(&s.clients, &field)?,
                target: Target::Spread(Spread::new(&members, spread_key(key_text))),
            };
            rules.push(rule);
        }
        let default = match &server.default_view {
            None => None,
            Some(d) => match names.iter().find(|(n, _)| n == d.get_ref()) {
                Some(&(_, id)) => {
                    used.insert(id.0 as usize);
                    Some(id)
                }
                None => {
                    return self.err(
                        d.span(),
                        "server.default_view",
                        format!(
                            "no view is named `{}`; views: {}",
                            d.get_ref(),
                            name_list(&names)
                        ),
                    )
                }
            },
        };
        if views.is_empty() {
            return self.err(raw.server.span(), "view", "no [[view]] is defined; add at least one, e.g.\n[[view]]\nname = \"plus15\"\noffset = \"15s\"");
        }
        for (i, v) in raw.view.iter().enumerate() {
            if !used.contains(&i) {
                let name = v.get_ref().name.get_ref();
                return self.err(v.span(), format!("view `{name}`"), "has no `listen` or `clients` selector, is in no spread group and is not server.default_view, so it would never answer");
            }
        }
        Ok(ServeConfig {
            listen,
            views: ViewTable::new(views, rules, default),
            unmatched: self.unmatched(server)?,
            clock: self.clock(server)?,
            leap: self.leap(server)?,
            rate_limit: self.rate_limit(raw.rate_limit.as_ref())?,
            reference: self.reference(raw.reference.as_ref(), server)?,
        })
    }

    fn listen(&self, server: &RawServer) -> Result<Vec<SocketAddr>, ConfigError> {
        let mut out = Vec::new();
        if server.listen.get_ref().is_empty() {
            return self.err(
                server.listen.span(),
                "server.listen",
                "needs at least one address, e.g. [\"127.0.0.1:11123\"]",
            );
        }
        for l in server.listen.get_ref() {
            let Ok(addr) = l.get_ref().parse::<SocketAddr>() else {
                return self.err(
                    l.span(),
                    "server.listen",
                    format!(
                        "`{}` is not IP:PORT (e.g. 127.0.0.1:123, [::1]:123, 0.0.0.0:123)",
                        l.get_ref()
                    ),
                );
            };
            if out.contains(&addr) {
                return self.err(
                    l.span(),
                    "server.listen",
                    format!("`{addr}` is listed twice"),
                );
            }
            out.push(addr);
        }
        Ok(out)
    }

    fn views(&self, raw: &[Spanned<RawView>]) -> Result<(Vec<View>, ViewNames), ConfigError> {
        let mut views = Vec::new();
        let mut names: Vec<(String, ViewId)> = Vec::new();
        if raw.len() > u16::MAX as usize {
            return self.err(0..0, "view", "too many views");
        }
        for (i, v) in raw.iter().enumerate() {
            let v = v.get_ref();
            let name = v.name.get_ref();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return self.err(
                    v.name.span(),
                    "view.name",
                    format!("`{name}`: use letters, digits, `-`, `_` and `.`"),
                );
            }
            if names.iter().any(|(n, _)| n == name) {
                return self.err(
                    v.name.span(),
                    "view.name",
                    format!("`{name}` is defined above; view names must be unique"),
                );
            }
            let field = format!("view `{name}`.offset");
            let offset = match duration::parse(v.offset.get_ref()) {
                Ok(o) => o,
                Err(e) => return self.err(v.offset.span(), field, e),
            };
            if offset.abs() > MAX_OFFSET {
                return self.err(v.offset.span(), field, "offsets are limited to ±68 years: NTP timestamps repeat every 136 years and clients resolve the era from their own clock");
            }
            names.push((name.clone(), ViewId(i as u16)));
            views.push(View {
                name: name.clone(),
                offset,
            });
        }
        Ok((views, names))
    }

    fn local_addrs(
        &self,
        raw: &[Spanned<String>],
        listen: &[SocketAddr],
        field: &str,
    ) -> Result<Vec<LocalAddr>, ConfigError> {
        let mut out = Vec::new();
        for l in raw {
            let addr = match l.get_ref().parse::<LocalAddr>() {
                Ok(a) => a,
                Err(e) => return self.err(l.span(), format!("{field}.listen"), e),
            };
            let served = listen.iter().any(|s| match addr {
                LocalAddr::Socket(a) => a == *s,
                LocalAddr::Ip(ip) => ip == s.ip(),
            });
            if !served {
                return self.err(l.span(), format!("{field}.listen"), format!("`{}` is not one of server.listen ({}); a view can only select among the addresses the server listens on", l.get_ref(), join_addrs(listen)));
            }
            out.push(addr);
        }
        Ok(out)
    }

    fn cidrs(&self, raw: &[Spanned<String>], field: &str) -> Result<Vec<Cidr>, ConfigError> {
        raw.iter()
            .map(|c| {
                c.get_ref()
                    .parse::<Cidr>()
                    .or_else(|e| self.err(c.span(), format!("{field}.clients"), e.to_string()))
            })
            .collect()
    }

    fn unmatched(&self, server: &RawServer) -> Result<Unmatched, ConfigError> {
        match server
            .unmatched
            .as_ref()
            .map(|u| (u.get_ref().as_str(), u.span()))
        {
            None | Some(("ignore", _)) => Ok(Unmatched::Ignore),
            Some(("deny", _)) => Ok(Unmatched::Deny),
            Some((other, span)) => self.err(
                span,
                "server.unmatched",
                format!("`{other}`: use \"ignore\" (drop silently) or \"deny\" (answer KoD DENY)"),
            ),
        }
    }

    fn stratum(&self, s: &Spanned<i64>, field: &str) -> Result<u8, ConfigError> {
        match *s.get_ref() {
            n @ 1..=15 => Ok(n as u8),
            n => self.err(s.span(), field, format!("{n}: a stratum is 1-15")),
        }
    }

    fn clock(&self, server: &RawServer) -> Result<ClockPolicy, ConfigError> {
        let local_stratum = match &server.local_stratum {
            Some(s) => Some(self.stratum(s, "server.local_stratum")?),
            None => None,
        };
        let stratum = match &server.stratum {
            Some(s) => self.stratum(s, "server.stratum")?,
            None => DEFAULT_STRATUM,
        };
        let reference_id = match &server.reference_id {
            None => DEFAULT_REFID,
            Some(r) => match parse_refid(r.get_ref()) {
                Some(id) => id,
                None => {
                    return self.err(
                        r.span(),
                        "server.reference_id",
                        format!(
                            "`{}`: use an IPv4 address (your upstream server) or 1-4 ASCII letters",
                            r.get_ref()
                        ),
                    )
                }
            },
        };
        Ok(ClockPolicy {
            local_stratum,
            stratum,
            reference_id,
        })
    }

    fn leap(&self, server: &RawServer) -> Result<LeapPolicy, ConfigError> {
        let window = match &server.leap_smear_window {
            None => LeapPolicy::DEFAULT_SMEAR_WINDOW,
            Some(w) => match duration::parse(w.get_ref()) {
                Ok(o) if o >= Offset::from_secs(2) && o <= Offset::from_secs(7 * 86_400) => o,
                Ok(_) => {
                    return self.err(
                        w.span(),
                        "server.leap_smear_window",
                        "must be between 2s and 7d",
                    )
                }
                Err(e) => return self.err(w.span(), "server.leap_smear_window", e),
            },
        };
        match server.leap.as_ref().map(|l| (l.get_ref().as_str(), l.span())) {
            None | Some(("smear", _)) => Ok(LeapPolicy::Smear { window }),
            Some(("step", _)) => Ok(LeapPolicy::Step),
            Some((other, span)) => self.err(span, "server.leap", format!("`{other}`: use \"smear\" (all views smear the leap; offsets stay exact) or \"step\" (pass the kernel's step through and announce it)")),
        }
    }

    fn rate_limit(
        &self,
        raw: Option<&Spanned<RawRateLimit>>,
    ) -> Result<Option<RateLimitParams>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(Some(DEFAULT_RATE_LIMIT));
        };
        let r = raw.get_ref();
        if r.enabled == Some(false) {
            return Ok(None);
        }
        let mut p = DEFAULT_RATE_LIMIT;
        if let Some(i) = &r.interval {
            match duration::parse(i.get_ref()) {
                Ok(o) if o > Offset::ZERO => p.interval_ns = o.nanos() as u64,
                Ok(_) => return self.err(i.span(), "rate_limit.interval", "must be positive"),
                Err(e) => return self.err(i.span(), "rate_limit.interval", e),
            }
        }
        if let Some(b) = &r.burst {
            match *b.get_ref() {
                n @ 1..=100_000 => p.burst = n as u32,
                n => {
                    return self.err(
                        b.span(),
                        "rate_limit.burst",
                        format!("{n}: must be 1-100000"),
                    )
                }
            }
        }
        if let Some(t) = &r.table_size {
            match *t.get_ref() {
                n @ 2..=16_777_216 => p.table_size = n as usize,
                n => {
                    return self.err(
                        t.span(),
                        "rate_limit.table_size",
                        format!("{n}: must be 2-16777216 (each slot takes 32 bytes)"),
                    )
                }
            }
        }
        p.kod = r.kod.unwrap_or(false);
        Ok(Some(p))
    }
}

/// `a, b, c`: addresses as error and log messages list them.
pub fn join_addrs(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn name_list(names: &[(String, ViewId)]) -> String {
    names
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A reference ID: an IPv4 address, or up to four ASCII characters padded with NULs.
pub fn parse_refid(text: &str) -> Option<[u8; 4]> {
    if let Ok(ip) = text.parse::<Ipv4Addr>() {
        return Some(ip.octets());
    }
    if text.is_empty() || text.len() > 4 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let mut id = [0u8; 4];
    id[..text.len()].copy_from_slice(text.as_bytes());
    Some(id)
}

/// The spread hash key: derived from the configured text, so the same config gives the same
/// assignment on every host and across restarts.
fn spread_key(text: &str) -> (u64, u64) {
    let mut a = SipHasher13::new_with_keys(0x6e74_702d_6f66_6673, 1);
    a.write(text.as_bytes());
    let mut b = SipHasher13::new_with_keys(0x6e74_702d_6f66_6673, 2);
    b.write(text.as_bytes());
    (a.finish(), b.finish())
}

/// The config of `serve --listen ... --offset ...`: one view answering every request.
pub fn quick(
    listen: Vec<SocketAddr>,
    offset: Offset,
    local_stratum: Option<u8>,
    rate_limit: bool,
) -> ServeConfig {
    ServeConfig {
        listen,
        views: ViewTable::single("cli", offset),
        unmatched: Unmatched::Ignore,
        clock: ClockPolicy {
            local_stratum,
            stratum: DEFAULT_STRATUM,
            reference_id: DEFAULT_REFID,
        },
        leap: LeapPolicy::default(),
        rate_limit: rate_limit.then_some(DEFAULT_RATE_LIMIT),
        reference: Reference::System,
    }
}

/// Whether an address is a wildcard (0.0.0.0 or ::), for the startup warning about replies'
/// source addresses on multi-homed hosts.
pub fn is_wildcard(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(v4) => v4.is_unspecified(),
        IpAddr::V6(v6) => v6.is_unspecified(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
listen = ["127.0.0.1:11123", "127.0.0.1:11124", "[::1]:11123"]
local_stratum = 10
unmatched = "deny"

[rate_limit]
interval = "1s"
burst = 4
kod = true

[[view]]
name = "zero"
offset = "0s"
listen = ["127.0.0.1:11123"]

[[view]]
name = "plus15"
offset = "+15s"
listen = ["127.0.0.1:11124"]

[[view]]
name = "a"
offset = "30s"

[[view]]
name = "b"
offset = "45s"

[[spread]]
name = "vms"
views = ["a", "b"]
clients = ["198.18.0.0/15", "::1"]
"#;

    fn error(text: &str) -> ConfigError {
        parse(text, "t.toml").unwrap_err()
    }

    #[test]
    fn a_full_config_is_understood() {
        let c = parse(GOOD, "t.toml").unwrap();
        assert_eq!(c.listen.len(), 3);
        assert_eq!(c.views.views().len(), 4);
        assert_eq!(c.unmatched, Unmatched::Deny);
        assert_eq!(c.clock.local_stratum, Some(10));
        assert_eq!(c.leap, LeapPolicy::default());
        let rl = c.rate_limit.unwrap();
        assert_eq!((rl.interval_ns, rl.burst, rl.kod), (1_000_000_000, 4, true));
        let local: SocketAddr = "127.0.0.1:11124".parse().unwrap();
        assert_eq!(
            c.views.select(local, "127.0.0.1".parse().unwrap()),
            Some(ViewId(1))
        );
        let spread = c
            .views
            .select("[::1]:11123".parse().unwrap(), "::1".parse().unwrap());
        assert!(matches!(spread, Some(ViewId(2 | 3))));
        assert_eq!(
            c.views.select(
                "[::1]:11123".parse().unwrap(),
                "2001:db8::1".parse().unwrap()
            ),
            None
        );
    }

    #[test]
    fn spread_assignment_is_the_same_on_every_load() {
        let a = parse(GOOD, "t.toml").unwrap();
        let b = parse(GOOD, "t.toml").unwrap();
        let local: SocketAddr = "[::1]:11123".parse().unwrap();
        for i in 0..200u32 {
            let ip = IpAddr::from((0xc612_0000u32 + i).to_be_bytes());
            assert_eq!(a.views.select(local, ip), b.views.select(local, ip));
        }
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = error(&GOOD.replace("offset = \"+15s\"", "offset = \"15x\""));
        assert_eq!(
            (e.file.as_str(), e.line, e.field.as_str()),
            ("t.toml", Some(19), "view `plus15`.offset")
        );
        assert!(e.message.contains("15s, -250ms"), "{e}");
        assert!(
            e.to_string()
                .starts_with("t.toml:19: view `plus15`.offset: "),
            "{e}"
        );
    }

    #[test]
    fn typos_and_unknown_fields_are_caught_by_line() {
        let e = error(&GOOD.replace("burst = 4", "brust = 4"));
        assert_eq!(e.line, Some(9));
        assert!(e.message.contains("brust"), "{e}");
        let e = error("[server]\nlisten = [\"127.0.0.1:1\"\n");
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn semantic_errors_say_what_is_allowed() {
        let cases = [
            (
                GOOD.replace("\"[::1]:11123\"]", "\"[::1]:11123\", \"127.0.0.1:11123\"]"),
                "listed twice",
            ),
            (
                GOOD.replace(
                    "listen = [\"127.0.0.1:11124\"]",
                    "listen = [\"127.0.0.1:9\"]",
                ),
                "not one of server.listen",
            ),
            (
                GOOD.replace("views = [\"a\", \"b\"]", "views = [\"a\", \"c\"]"),
                "no view is named `c`; views: zero, plus15, a, b",
            ),
            (
                GOOD.replace("\"198.18.0.0/15\"", "\"198.18.0.1/15\""),
                "network address",
            ),
            (
                GOOD.replace("local_stratum = 10", "local_stratum = 16"),
                "a stratum is 1-15",
            ),
            (
                GOOD.replace("unmatched = \"deny\"", "unmatched = \"reject\""),
                "\"ignore\"",
            ),
            (GOOD.replace("name = \"b\"", "name = \"a\""), "unique"),
            (
                GOOD.replace("offset = \"45s\"", "offset = \"70y\""),
                "not a duration",
            ),
            (
                GOOD.replace("offset = \"45s\"", "offset = \"25000d\""),
                "±68 years",
            ),
            (
                GOOD.replace("views = [\"a\", \"b\"]", "views = [\"a\"]"),
                "would never answer",
            ),
            (GOOD.replace("burst = 4", "burst = 0"), "must be 1-100000"),
        ];
        for (text, expected) in cases {
            let e = error(&text);
            assert!(
                e.to_string().contains(expected),
                "expected `{expected}` in: {e}"
            );
            assert!(e.line.is_some(), "{e}");
        }
    }

    #[test]
    fn rate_limit_defaults_and_off() {
        let minimal = "[server]\nlisten = [\"127.0.0.1:11123\"]\ndefault_view = \"v\"\n[[view]]\nname = \"v\"\noffset = \"15s\"\n";
        assert_eq!(
            parse(minimal, "m").unwrap().rate_limit,
            Some(DEFAULT_RATE_LIMIT)
        );
        let off = format!("{minimal}[rate_limit]\nenabled = false\n");
        assert_eq!(parse(&off, "m").unwrap().rate_limit, None);
    }

    #[test]
    fn reference_ids() {
        assert_eq!(parse_refid("198.18.0.1"), Some([198, 18, 0, 1]));
        assert_eq!(parse_refid("GPS"), Some(*b"GPS\0"));
        assert_eq!(parse_refid("TOOLONG"), None);
        assert_eq!(parse_refid(""), None);
    }

    #[test]
    fn shipped_examples_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                load(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(
            n >= 2,
            "examples/ should hold the try-out and production configs"
        );
    }
}
