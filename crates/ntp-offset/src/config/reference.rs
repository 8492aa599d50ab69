//! `[reference]`: where `serve` takes its time from. `source = "system"` (the default) is the
//! host clock as the kernel keeps it; `source = "pulse"` is a clock model disciplined by
//! received ticks, which leaves the host clock alone.

use std::net::{IpAddr, SocketAddr};

use ntp_offset_proto::clock_model::ModelConfig;
use ntp_offset_proto::tick::DEFAULT_PORT;
use ntp_offset_proto::tick_auth::KeyRing;
use ntp_offset_proto::tick_receiver::ReceiverConfig;
use toml::Spanned;

use super::raw::RawReference;
use super::raw::RawServer;
use super::receiver::{DELAY, HOLDOVER, OUTLIER, STEP_THRESHOLD};
use super::{beside, ConfigError, Context};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    System,
    Pulse(PulseReference),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PulseReference {
    pub listen: Vec<SocketAddr>,
    pub join: Vec<IpAddr>,
    /// Other receivers on this host may bind the tick port too (only broadcast and
    /// multicast ticks reach them all; a unicast tick goes to one).
    pub share_port: bool,
    pub receiver: ReceiverConfig,
    pub model: ModelConfig,
}

impl PulseReference {
    /// Defaults, with the given keys (an empty ring needs `allow_unauthenticated`).
    pub fn new(keys: KeyRing, allow_unauthenticated: bool) -> PulseReference {
        PulseReference {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))],
            join: Vec::new(),
            share_port: false,
            receiver: ReceiverConfig {
                keys,
                allow_unauthenticated,
                ..ReceiverConfig::default()
            },
            model: ModelConfig::default(),
        }
    }
}

impl Context<'_> {
    pub(super) fn reference(
        &self,
        raw: Option<&Spanned<RawReference>>,
        server: &RawServer,
    ) -> Result<Reference, ConfigError> {
        let Some(raw) = raw else {
            return Ok(Reference::System);
        };
        if !self.is_pulse(raw)? {
            return Ok(Reference::System);
        }
        self.pulse_leaves_alone(server)?;
        let r = raw.get_ref();
        let (keys, unauthenticated) = self.tick_keys(raw)?;
        let mut p = PulseReference::new(keys, unauthenticated);
        self.tick_addresses(raw, &mut p)?;
        self.tick_limits(r, &mut p)?;
        Ok(Reference::Pulse(p))
    }

    /// `source`: "pulse", or "system" with no tick settings.
    fn is_pulse(&self, raw: &Spanned<RawReference>) -> Result<bool, ConfigError> {
        let r = raw.get_ref();
        match r.source.get_ref().as_str() {
            "system" => {
                let pulse_only = r.listen.is_some()
                    || !r.join.is_empty()
                    || r.share_port.is_some()
                    || r.key_file.is_some()
                    || r.allow_unauthenticated.is_some()
                    || r.transmitter.is_some()
                    || r.delay.is_some()
                    || r.outlier.is_some()
                    || r.holdover.is_some()
                    || r.step_threshold.is_some();
                if pulse_only {
                    return self.err(
                        raw.span(),
                        "reference",
                        "tick settings (listen, key_file, ...) only apply with source = \"pulse\"",
                    );
                }
                Ok(false)
            }
            "pulse" => Ok(true),
            other => self.err(
                r.source.span(),
                "reference.source",
                format!("`{other}`: use \"system\" (the host clock, as the kernel keeps it) or \"pulse\" (a clock disciplined by received ticks; the host clock is left alone)"),
            ),
        }
    }

    /// The `[server]` settings the pulse reference sets itself.
    fn pulse_leaves_alone(&self, server: &RawServer) -> Result<(), ConfigError> {
        for (field, set) in [
            (
                "local_stratum",
                server.local_stratum.as_ref().map(|s| s.span()),
            ),
            ("stratum", server.stratum.as_ref().map(|s| s.span())),
            (
                "reference_id",
                server.reference_id.as_ref().map(|s| s.span()),
            ),
        ] {
            if let Some(span) = set {
                return self.err(span, format!("server.{field}"), "does not apply with [reference] source = \"pulse\": the stratum is the transmitter's + 1 and the refid names the transmitter; remove it");
            }
        }
        Ok(())
    }

    /// The tick keys, or the explicit choice to go without.
    fn tick_keys(&self, raw: &Spanned<RawReference>) -> Result<(KeyRing, bool), ConfigError> {
        let r = raw.get_ref();
        let keys = match &r.key_file {
            Some(k) => crate::ticks::keys::load(&beside(self.file, k.get_ref()))
                .or_else(|e| self.err(k.span(), "reference.key_file", e.to_string()))?,
            None => KeyRing::default(),
        };
        let unauthenticated = r.allow_unauthenticated.unwrap_or(false);
        if r.key_file.is_none() && !unauthenticated {
            let what = if self.is_flags() {
                "give --key-file FILE (make one with `ntp-offset pulse keygen`), or --allow-unauthenticated on a network you trust"
            } else {
                "give key_file = \"/etc/ntp-offset/tick.keys\" (make one with `ntp-offset pulse keygen`), or allow_unauthenticated = true on a network you trust"
            };
            return self.err(raw.span(), "reference", what);
        }
        Ok((keys, unauthenticated))
    }

    /// Where ticks arrive: listen addresses, multicast groups, the transmitter followed.
    fn tick_addresses(
        &self,
        raw: &Spanned<RawReference>,
        p: &mut PulseReference,
    ) -> Result<(), ConfigError> {
        let r = raw.get_ref();
        if let Some(listen) = &r.listen {
            p.listen = listen
                .iter()
                .map(|a| {
                    a.get_ref().parse().or_else(|_| {
                        self.err(
                            a.span(),
                            "reference.listen",
                            format!("`{}` is not IP:PORT, e.g. 0.0.0.0:8123", a.get_ref()),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
            if p.listen.is_empty() {
                return self.err(raw.span(), "reference.listen", "needs an address");
            }
        }
        for g in &r.join {
            match crate::args::parse_multicast(g.get_ref()) {
                Ok(ip) => p.join.push(ip),
                Err(e) => return self.err(g.span(), "reference.join", e),
            }
        }
        if let Some(t) = &r.transmitter {
            p.receiver.transmitter = Some(crate::args::parse_u32(t.get_ref()).or_else(|e| {
                self.err(
                    t.span(),
                    "reference.transmitter",
                    format!("{e}: an id such as 0x1a2b3c4d"),
                )
            })?);
        }
        Ok(())
    }

    /// The receiver's and the clock model's limits.
    fn tick_limits(&self, r: &RawReference, p: &mut PulseReference) -> Result<(), ConfigError> {
        p.share_port = r.share_port.unwrap_or(false);
        if let Some(d) = self.within(r.delay.as_ref(), "reference.delay", DELAY)? {
            p.receiver.path_delay = d;
        }
        if let Some(o) = self.within(r.outlier.as_ref(), "reference.outlier", OUTLIER)? {
            p.receiver.outlier = o;
            p.model.outlier_ns = o.nanos().min(p.model.outlier_ns);
        }
        if let Some(h) = self.within(r.holdover.as_ref(), "reference.holdover", HOLDOVER)? {
            p.model.holdover_limit_ns = h.nanos();
        }
        if let Some(s) = self.within(
            r.step_threshold.as_ref(),
            "reference.step_threshold",
            STEP_THRESHOLD,
        )? {
            p.model.step_threshold_ns = s.nanos();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, ConfigError};
    use super::*;
    use ntp_offset_proto::time::Offset;

    const VIEWS: &str =
        "[[view]]\nname = \"zero\"\noffset = \"0s\"\nlisten = [\"127.0.0.1:11123\"]\n";

    fn with(reference: &str) -> Result<Reference, ConfigError> {
        let text = format!("[server]\nlisten = [\"127.0.0.1:11123\"]\n\n{reference}\n{VIEWS}");
        parse(&text, "/etc/ntp-offset/serve.toml").map(|c| c.reference)
    }

    #[test]
    fn system_is_the_default() {
        assert_eq!(with(""), Ok(Reference::System));
        assert_eq!(
            with("[reference]\nsource = \"system\""),
            Ok(Reference::System)
        );
    }

    #[test]
    fn pulse_settings_are_read() {
        let r = with(
            "[reference]\nsource = \"pulse\"\nallow_unauthenticated = true\nlisten = [\"198.18.1.2:9000\"]\njoin = [\"239.1.2.3\"]\ntransmitter = \"0x1a2b\"\ndelay = \"50us\"\nholdover = \"5s\"\nstep_threshold = \"1s\"",
        )
        .unwrap();
        let Reference::Pulse(p) = r else {
            panic!("{r:?}")
        };
        assert_eq!(p.listen, vec!["198.18.1.2:9000".parse().unwrap()]);
        assert_eq!(p.join, vec!["239.1.2.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(p.receiver.transmitter, Some(0x1a2b));
        assert_eq!(p.receiver.path_delay, Offset::from_micros(50));
        assert!(p.receiver.allow_unauthenticated);
        assert_eq!(p.model.holdover_limit_ns, 5_000_000_000);
        assert_eq!(p.model.step_threshold_ns, 1_000_000_000);
    }

    #[test]
    fn pulse_errors_name_the_line_and_say_what_to_do() {
        let cases = [
            ("[reference]\nsource = \"gps\"", 5, "\"system\""),
            ("[reference]\nsource = \"pulse\"", 4, "pulse keygen"),
            ("[reference]\nsource = \"pulse\"\nkey_file = \"missing.keys\"", 6, "/etc/ntp-offset/missing.keys"),
            ("[reference]\nsource = \"pulse\"\nallow_unauthenticated = true\nholdover = \"1s\"", 7, "between +3s and"),
            ("[reference]\nsource = \"pulse\"\nallow_unauthenticated = true\njoin = [\"198.18.0.1\"]", 7, "multicast"),
            ("[reference]\nsource = \"system\"\nlisten = [\"0.0.0.0:8123\"]", 4, "only apply"),
        ];
        for (text, line, needle) in cases {
            let e = with(text).unwrap_err();
            assert_eq!(e.line, Some(line), "{text}: {e}");
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
        let text = "[server]\nlisten = [\"127.0.0.1:11123\"]\nlocal_stratum = 1\n[reference]\nsource = \"pulse\"\nallow_unauthenticated = true\n".to_string() + VIEWS;
        let e = parse(&text, "x.toml").unwrap_err();
        assert_eq!(
            (e.line, e.field.as_str()),
            (Some(3), "server.local_stratum"),
            "{e}"
        );
    }
}
