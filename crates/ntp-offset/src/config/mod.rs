//! The `serve` configuration: a TOML file, or `serve`'s flags, in; a validated
//! [`ServeConfig`] out. Both go one way: flags become the raw structures a file gives
//! (`flags.rs`), and [`Context::build`] checks either, so every limit holds on every path.
//! Every error names the file and line (or the flag) and the field, and says what is allowed.
//! The format is documented in `docs/configuration.md`; `examples/` has files that pass
//! `serve --check`.
//!
//! - `raw.rs`: the schema, unchecked
//! - `server.rs`: `[server]` and `[rate_limit]`
//! - `views.rs`: `[[view]]`, `[[spread]]`, and which of them can answer
//! - `reference.rs`: `[reference]`, where time comes from
//! - `receiver.rs`: tick receiver limits, shared with `pulse listen`'s flags
//! - `keys.rs`: `[keys]`, symmetric keys; `nts.rs`: `[nts]`, the NTS-KE server
//! - `cluster.rs`: `[cluster]`, the etcd cluster a group's assignments are shared through
//! - `flags.rs`: `serve --listen ...` as a config

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use ntp_offset_proto::leap::LeapPolicy;
use ntp_offset_proto::ratelimit::RateLimitParams;
use ntp_offset_proto::responder::Unmatched;
use ntp_offset_proto::system::ClockPolicy;
use ntp_offset_proto::time::Offset;
use ntp_offset_proto::view::{AuthRequirement, ViewTable};

use crate::{duration, text};

pub mod cluster;
mod flags;
mod keys;
mod monitor;
pub mod nts;
mod raw;
pub mod receiver;
mod reference;
mod server;
mod views;
mod vms;

pub use flags::ServeFlags;
pub use reference::{PulseReference, Reference};

/// Everything `serve` needs, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ServeConfig {
    pub listen: Vec<SocketAddr>,
    /// Worker threads (each with its own socket) per listen address.
    pub workers: usize,
    /// Answer clients that ask in interleaved mode (kernel transmit stamps of earlier answers).
    pub interleaved: bool,
    pub views: ViewTable,
    pub unmatched: Unmatched,
    pub clock: ClockPolicy,
    pub leap: LeapPolicy,
    /// None: no rate limiting.
    pub rate_limit: Option<RateLimitParams>,
    pub reference: Reference,
    /// Where balanced spread groups keep their assignment tables.
    pub state_dir: PathBuf,
    /// How each of `views`' rules reads in messages: "spread `vms` (line 40)".
    pub rule_names: Vec<String>,
    /// The control socket and the web listener (metrics, status page).
    pub endpoints: crate::monitor::Endpoints,
    /// Symmetric keys (`[keys]`): requests with a MAC get answers with one.
    pub auth: ntp_offset_proto::symmetric::Auth,
    /// `[nts]`: the NTS-KE server, and NTS requests answered.
    pub nts: Option<nts::NtsConfig>,
    /// `[cluster]`: balanced groups' assignments shared through etcd.
    pub cluster: Option<cluster::ClusterConfig>,
    /// `[[vm]]`: VMs named by hand for load placement, where the host cannot tell.
    pub vms: Vec<crate::vms::configured::VmMapping>,
    /// What may be intended but looks like a mistake (`serve --check` prints them, `serve`
    /// logs them): a rule that never matches, a listening address that selects no view.
    pub warnings: Vec<ConfigError>,
}

/// `server.state_dir` when none is given.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/ntp-offset";

/// A config file larger than this is refused: no real one comes near it, and reading a
/// device or a huge file by mistake must not exhaust memory.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

/// A path in the config (key file, state directory) is relative to the config file's
/// directory.
fn beside(config_file: &str, path: &str) -> PathBuf {
    let p = Path::new(path);
    match Path::new(config_file).parent() {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

impl ServeConfig {
    /// What `serve --check` says of a good config, after `OK:`: the views (with their
    /// offsets and authentication), the addresses, the keys, NTS and how many warnings.
    pub fn summary(&self) -> String {
        let views: Vec<String> = self
            .views
            .views()
            .iter()
            .map(|v| match v.auth {
                AuthRequirement::None => format!("{} {}", v.name, duration::format(v.offset)),
                a => format!(
                    "{} {} auth {}",
                    v.name,
                    duration::format(v.offset),
                    a.name()
                ),
            })
            .collect();
        let keys = match self.auth.keys.len() {
            0 => String::new(),
            n => format!(
                "; {n} key{} (unknown keys: {})",
                if n == 1 { "" } else { "s" },
                self.auth.unknown_key.name()
            ),
        };
        let nts = match &self.nts {
            None => String::new(),
            Some(n) => format!(
                "; NTS-KE on {} ({} loaded, key rotation {})",
                text::join_addrs(&n.listen),
                n.certificate.display(),
                duration::format(Offset::from_nanos(n.key_rotation.as_nanos() as i64))
                    .trim_start_matches('+')
            ),
        };
        let cluster = match &self.cluster {
            None => String::new(),
            Some(c) => format!(
                "; cluster: host `{}`, etcd at {} (keys under {}{}; new clients while it is out of reach: {})",
                c.host,
                c.endpoints.join(", "),
                c.prefix,
                if c.tls.is_some() { ", TLS" } else { "" },
                match c.on_unavailable {
                    cluster::OnUnavailable::Refuse => "not answered",
                    cluster::OnUnavailable::Hash => "the keyed hash's view",
                }
            ),
        };
        let warnings = match self.warnings.len() {
            0 => String::new(),
            n => format!("; {n} warning{}", if n == 1 { "" } else { "s" }),
        };
        format!(
            "{} views ({}), listening on {}{keys}{nts}{cluster}{warnings}",
            views.len(),
            views.join(", "),
            text::join_addrs(&self.listen)
        )
    }
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

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<ServeConfig, ConfigError> {
    let file = path.display().to_string();
    let source = crate::files::read_capped(path, MAX_FILE_BYTES).map_err(|e| ConfigError {
        file: file.clone(),
        line: None,
        field: String::new(),
        message: e.to_string(),
    })?;
    parse(&source, &file)
}

/// Validates config text; `file` names it in errors.
pub fn parse(source: &str, file: &str) -> Result<ServeConfig, ConfigError> {
    let cx = Context {
        source,
        file,
        flag_names: None,
    };
    let raw: raw::RawFile = toml::from_str(source).map_err(|e| {
        // toml's message says what was expected; the span gives the line, and the line and
        // the table header above it the field.
        let span = e.span();
        let field = span
            .as_ref()
            .map(|s| raw::field_at(source, s.start))
            .unwrap_or_default();
        let mut message = e.message().trim().to_string();
        if let Some(hint) = raw::type_hint(&field, &message) {
            message = format!("{message}: {hint}");
        }
        ConfigError {
            file: file.to_string(),
            line: span.map(|s| cx.line_of(&s)),
            field,
            message,
        }
    })?;
    cx.build(raw)
}

/// Validates `serve`'s flags, as the file's checks would the same settings.
pub fn from_flags(flags: &ServeFlags) -> Result<ServeConfig, ConfigError> {
    Context::flags(flags::FLAG_NAMES).build(flags.to_raw())
}

/// Where the values being checked came from, for error messages.
pub(crate) struct Context<'a> {
    source: &'a str,
    file: &'a str,
    /// From the command line: how the fields read as flags.
    flag_names: Option<&'a [(&'a str, &'a str)]>,
}

impl<'a> Context<'a> {
    fn flags(names: &'a [(&'a str, &'a str)]) -> Context<'a> {
        Context {
            source: "",
            file: "the command line",
            flag_names: Some(names),
        }
    }

    fn is_flags(&self) -> bool {
        self.flag_names.is_some()
    }

    fn line_of(&self, span: &Range<usize>) -> usize {
        self.source[..span.start.min(self.source.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn error_at(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let mut field = field.into();
        if let Some(names) = self.flag_names {
            if let Some((_, flag)) = names.iter().find(|(f, _)| *f == field) {
                field = flag.to_string();
            }
        }
        ConfigError {
            file: self.file.to_string(),
            line: (!self.is_flags()).then(|| self.line_of(&span)),
            field,
            message: message.into(),
        }
    }

    fn err<T>(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Result<T, ConfigError> {
        Err(self.error_at(span, field, message))
    }

    /// The one check, for a file and for flags alike.
    fn build(&self, raw: raw::RawFile) -> Result<ServeConfig, ConfigError> {
        let server = raw.server.get_ref();
        let listen = self.listen(server)?;
        let mut warnings = Vec::new();
        let (views, rule_names) = self.view_table(&raw, &listen, &mut warnings)?;
        let auth = self.auth(raw.keys.as_ref(), &mut warnings)?;
        let nts = self.nts(raw.nts.as_ref(), &listen)?;
        let cluster = self.cluster(raw.cluster.as_ref())?;
        for (v, needs, span) in self.views_needing(&raw) {
            let missing = match needs {
                "key" => auth
                    .keys
                    .is_empty()
                    .then_some("a key, but there is no [keys] file"),
                "nts" => nts
                    .is_none()
                    .then_some("NTS, but there is no [nts] section"),
                _ => (auth.keys.is_empty() && nts.is_none())
                    .then_some("a key or NTS, but there is neither [keys] nor [nts]"),
            };
            if let Some(m) = missing {
                return self.err(span, "view.auth", format!("view `{v}` needs {m}"));
            }
        }
        Ok(ServeConfig {
            workers: self.workers(server)?,
            interleaved: server.interleaved.unwrap_or(true),
            listen,
            views,
            unmatched: self.unmatched(server)?,
            clock: self.clock(server)?,
            leap: self.leap(server)?,
            rate_limit: self.rate_limit(raw.rate_limit.as_ref())?,
            reference: self.reference(raw.reference.as_ref(), server)?,
            state_dir: self.state_dir(server)?,
            endpoints: self.endpoints(raw.control.as_ref(), raw.metrics.as_ref(), &mut warnings)?,
            auth,
            nts,
            cluster,
            vms: self.vm_mappings(&raw.vm, &mut warnings)?,
            rule_names,
            warnings,
        })
    }
}

impl Context<'_> {
    fn state_dir(&self, server: &raw::RawServer) -> Result<PathBuf, ConfigError> {
        match &server.state_dir {
            None => Ok(PathBuf::from(DEFAULT_STATE_DIR)),
            Some(d) if d.get_ref().trim().is_empty() => {
                self.err(d.span(), "server.state_dir", "must name a directory")
            }
            Some(d) => Ok(beside(self.file, d.get_ref())),
        }
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
    use super::server::DEFAULT_RATE_LIMIT;
    use super::*;
    use ntp_offset_proto::view::ViewId;

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
        assert_eq!(
            (rl.ipv6_prefix, rl.prefix_factor),
            (64, 256),
            "the defaults"
        );
        let c = parse(
            &GOOD.replace(
                "kod = true",
                "kod = true\nipv6_prefix = 56\nprefix_factor = 64",
            ),
            "t.toml",
        )
        .unwrap();
        let rl = c.rate_limit.unwrap();
        assert_eq!((rl.ipv6_prefix, rl.prefix_factor), (56, 64));
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
    fn a_value_of_the_wrong_type_names_its_field_and_what_to_write() {
        let e = error(&GOOD.replace("offset = \"+15s\"", "offset = 15"));
        assert_eq!(
            (e.line, e.field.as_str()),
            (Some(19), "view `plus15`.offset")
        );
        assert!(e.message.contains("offset = \"15s\""), "{e}");
        let e = error(&GOOD.replace("name = \"vms\"", "name = 7"));
        assert_eq!(e.field, "spread `7`.name", "{e}");
        assert!(
            e.message.ends_with("text goes in quotes: name = \"7\""),
            "{e}"
        );
        // A header's own error names the entry; CRLF lines and text that is not ASCII do not
        // move the field.
        let e = error(&GOOD.replace(
            "[[spread]]\nname = \"vms\"",
            "[[spread]]\nname = \"vms\"\nbogus = 1",
        ));
        assert_eq!(e.field, "spread `vms`.bogus", "{e}");
        let crlf = GOOD
            .replace("offset = \"+15s\"", "offset = 15")
            .replace('\n', "\r\n");
        assert_eq!(error(&crlf).field, "view `plus15`.offset");
        let e = error(
            &GOOD
                .replace("name = \"a\"", "name = \"ä\"")
                .replace("offset = \"30s\"", "offset = 30"),
        );
        assert_eq!(e.field, "view `ä`.offset", "{e}");
        assert_eq!(raw::field_at("[server]\nlisten = 1", 99), "server.listen");
        assert_eq!(raw::field_at("x = \"é\"", 6), "x");
        let e = error(&GOOD.replace("burst = 4", "burst = \"4\""));
        assert_eq!(e.field, "rate_limit.burst", "{e}");
        assert!(!e.message.contains("quotes"), "{e}");
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
            (
                GOOD.replace("burst = 4", "burst = 4\nipv6_prefix = 129"),
                "must be a prefix length of 16-128",
            ),
            (
                GOOD.replace("burst = 4", "burst = 4\nprefix_factor = 0"),
                "must be 1-1000000",
            ),
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

    const MINIMAL: &str = "[server]\nlisten = [\"127.0.0.1:11123\", \"127.0.0.1:11124\"]\n";

    #[test]
    fn a_view_behind_an_identical_one_is_an_error_naming_both() {
        let text = format!("{MINIMAL}[[view]]\nname = \"a\"\noffset = \"0s\"\nlisten = [\"127.0.0.1:11123\"]\n[[view]]\nname = \"b\"\noffset = \"15s\"\nlisten = [\"127.0.0.1:11123\"]\n[[view]]\nname = \"c\"\noffset = \"30s\"\nlisten = [\"127.0.0.1:11124\"]\n");
        let e = error(&text);
        assert_eq!((e.line, e.field.as_str()), (Some(7), "view `b`"), "{e}");
        assert!(e.message.contains("would never answer"), "{e}");
    }

    #[test]
    fn a_clients_rule_behind_a_broader_one_is_an_error() {
        let text = format!("{MINIMAL}default_view = \"all\"\n[[view]]\nname = \"all\"\noffset = \"0s\"\n[[view]]\nname = \"lab\"\noffset = \"1h\"\nclients = [\"198.18.0.0/15\"]\n[[view]]\nname = \"one\"\noffset = \"2h\"\nclients = [\"198.18.7.0/24\"]\nlisten = [\"127.0.0.1:11124\"]\n");
        let e = error(&text);
        assert_eq!(e.field, "view `one`", "{e}");
    }

    #[test]
    fn a_shadowed_rule_whose_view_answers_elsewhere_is_a_warning() {
        // `b` is shadowed on 11123 but is the default: a warning, not an error.
        let text = format!("{MINIMAL}default_view = \"b\"\n[[view]]\nname = \"a\"\noffset = \"0s\"\nlisten = [\"127.0.0.1:11123\"]\n[[view]]\nname = \"b\"\noffset = \"15s\"\nlisten = [\"127.0.0.1:11123\"]\n");
        let c = parse(&text, "t.toml").unwrap();
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        let w = c.warnings[0].to_string();
        assert!(
            w.starts_with("t.toml:9: view `b`: never matches") && w.contains("view `a` (line 5)"),
            "{w}"
        );
    }

    #[test]
    fn a_listening_address_that_selects_no_view_is_a_warning() {
        let text = format!(
            "{MINIMAL}[[view]]\nname = \"a\"\noffset = \"0s\"\nlisten = [\"127.0.0.1:11123\"]\n"
        );
        let c = parse(&text, "t.toml").unwrap();
        assert_eq!(c.warnings.len(), 1);
        assert!(
            c.warnings[0]
                .to_string()
                .contains("`127.0.0.1:11124` selects no view"),
            "{:?}",
            c.warnings
        );
        // Clients' rules select on every address: no warning.
        let text = format!("{MINIMAL}[[view]]\nname = \"a\"\noffset = \"0s\"\nclients = [\"::/0\", \"0.0.0.0/0\"]\n");
        assert!(parse(&text, "t.toml").unwrap().warnings.is_empty());
        assert!(parse(GOOD, "t.toml").unwrap().warnings.is_empty());
    }

    fn flags(listen: &str, offset: &str) -> ServeFlags {
        ServeFlags {
            listen: vec![listen.into()],
            offset: Some(offset.into()),
            ..ServeFlags::default()
        }
    }

    #[test]
    fn flags_pass_the_checks_of_a_file() {
        let c = from_flags(&flags("127.0.0.1:11123", "-250ms")).unwrap();
        assert_eq!(
            c.views.views()[0].offset,
            ntp_offset_proto::time::Offset::from_micros(-250_000)
        );
        assert_eq!(c.rate_limit, Some(DEFAULT_RATE_LIMIT));
        let e = from_flags(&flags("127.0.0.1:11123", "99999d")).unwrap_err();
        assert_eq!(e.to_string(), "the command line: --offset: offsets are limited to ±68 years: NTP timestamps repeat every 136 years and clients resolve the era from their own clock");
        let e = from_flags(&flags("127.0.0.1", "0s")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("the command line: --listen: `127.0.0.1` is not IP:PORT"),
            "{e}"
        );
        let e = from_flags(&ServeFlags {
            local_stratum: Some(16),
            ..flags("127.0.0.1:1", "0s")
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("--local-stratum: 16: a stratum is 1-15"),
            "{e}"
        );
        let e = from_flags(&ServeFlags {
            holdover: Some("1s".into()),
            ..flags("127.0.0.1:1", "0s")
        })
        .unwrap_err();
        assert!(e.to_string().contains("--reference: tick settings"), "{e}");
        let e = from_flags(&ServeFlags {
            reference: Some(flags::ReferenceSource::Pulse),
            allow_unauthenticated: true,
            holdover: Some("1s".into()),
            ..flags("127.0.0.1:1", "0s")
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("--holdover: must be between +3s and"),
            "{e}"
        );
        let e = from_flags(&ServeFlags {
            reference: Some(flags::ReferenceSource::Pulse),
            ..flags("127.0.0.1:1", "0s")
        })
        .unwrap_err();
        assert!(e.to_string().contains("--key-file FILE"), "{e}");
    }

    #[test]
    fn a_huge_or_endless_file_is_refused_not_read_to_the_end() {
        let e = load(Path::new("/dev/zero")).unwrap_err();
        assert!(
            e.to_string().contains("larger than 1024 KiB: not the file"),
            "{e}"
        );
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
