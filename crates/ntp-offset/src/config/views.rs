//! `[[view]]` and `[[spread]]`: the views, the rules that choose among them, and the checks
//! that every view can answer and no rule hides behind another.

use std::collections::HashSet;
use std::hash::Hasher;
use std::net::SocketAddr;
use std::ops::Range;

use ntp_offset_proto::move_smear::{Moves, Pace};
use ntp_offset_proto::time::{Offset, MAX_OFFSET};
use ntp_offset_proto::view::{
    AuthRequirement, Balanced, Cidr, LocalAddr, Rebalance, Rule, Spread, Target, View, ViewId,
    ViewTable,
};
use siphasher::sip::SipHasher13;
use toml::Spanned;

use super::raw::{RawFile, RawServer, RawSpread, RawView};
use super::{ConfigError, Context};
use crate::duration;
use crate::text::join_addrs;

/// How long a balanced group remembers a client it has not heard from.
pub const DEFAULT_FORGET_AFTER_S: u64 = 7 * 86_400;
/// How many clients a balanced group's table holds at most.
pub const DEFAULT_MAX_CLIENTS: usize = 100_000;
/// How often the load optimizer looks for moves (`optimize_every`).
pub const DEFAULT_OPTIMIZE_EVERY_S: u64 = 600;
/// A walking client's cruising rate and ramp (`move_rate`, `move_ramp`): see
/// docs/configuration.md for why.
pub const DEFAULT_MOVE_PACE: Pace = Pace {
    rate_ppm: 200.0,
    ramp_s: 3600.0,
};
/// Beyond this a walk is too fast for ntpd, systemd-timesyncd and the kernel's PLL (500 ppm
/// at most, a VM's own drift included): a warning. chronyd follows up to its maxslewrate.
const PLL_MOVE_RATE_PPM: f64 = 400.0;
/// chronyd's maxslewrate is 83,333 ppm; a walk keeps well inside it.
const MAX_MOVE_RATE_PPM: f64 = 50_000.0;

/// View names and their ids, for looking up references to views.
type ViewNames = Vec<(String, ViewId)>;

/// The views a spread group draws from: their names, weights, and the group's number.
struct Group<'a> {
    names: &'a ViewNames,
    weights: &'a [u32],
    index: u16,
}

/// A rule as written: what it is called in messages and where.
struct Written {
    what: String,
    span: std::ops::Range<usize>,
}

impl Context<'_> {
    /// The views and their rules; warnings for what can be intended but looks like a mistake.
    pub(super) fn view_table(
        &self,
        raw: &RawFile,
        listen: &[SocketAddr],
        warnings: &mut Vec<ConfigError>,
    ) -> Result<(ViewTable, Vec<String>), ConfigError> {
        let server = raw.server.get_ref();
        let (views, names) = self.views(&raw.view)?;
        let view_weights = raw
            .view
            .iter()
            .map(|v| self.weight(v.get_ref()))
            .collect::<Result<Vec<u32>, _>>()?;
        if views.is_empty() {
            return self.err(raw.server.span(), "view", "no [[view]] is defined; add at least one, e.g.\n[[view]]\nname = \"plus15\"\noffset = \"15s\"");
        }
        // Rules in the order they are tried: the views' own selectors, then spread groups.
        let (mut rules, mut written) = self.view_rules(raw, listen)?;
        let mut spread_names = HashSet::new();
        for s in &raw.spread {
            let group = Group {
                names: &names,
                weights: &view_weights,
                index: spread_names.len() as u16,
            };
            let (rule, w) = self.spread_rule(
                raw,
                s.get_ref(),
                &group,
                listen,
                &mut spread_names,
                warnings,
            )?;
            rules.push(rule);
            written.push(w);
        }
        let default = match &server.default_view {
            None => None,
            Some(d) => Some(self.view_named(&names, d, "server.default_view")?),
        };
        let (reach, live) = self.shadowed(&rules, &written, listen, warnings);
        self.every_view_answers(raw, &rules, &live, default, warnings)?;
        if default.is_none() {
            self.warn_unreached_listen(server, listen, &reach, &live, warnings);
        }
        let rule_names = written
            .iter()
            .map(|w| format!("{} (line {})", w.what, self.line_of(&w.span)))
            .collect();
        Ok((ViewTable::new(views, rules, default), rule_names))
    }

    /// The rules of views that name their own listen addresses or clients.
    fn view_rules(
        &self,
        raw: &RawFile,
        listen: &[SocketAddr],
    ) -> Result<(Vec<Rule>, Vec<Written>), ConfigError> {
        let mut rules = Vec::new();
        let mut written = Vec::new();
        for (i, v) in raw.view.iter().enumerate() {
            let v = v.get_ref();
            let field = format!("view `{}`", v.name.get_ref());
            let local = self.local_addrs(&v.listen, listen, &field)?;
            let clients = self.cidrs(&v.clients, &field)?;
            if !local.is_empty() || !clients.is_empty() {
                rules.push(Rule {
                    listen: local,
                    clients,
                    target: Target::View(ViewId(i as u16)),
                });
                written.push(Written {
                    what: field,
                    span: v.name.span(),
                });
            }
        }
        Ok((rules, written))
    }

    /// One spread group's rule, checked; `seen` holds the names of the groups above it.
    fn spread_rule(
        &self,
        raw: &RawFile,
        s: &RawSpread,
        group: &Group<'_>,
        listen: &[SocketAddr],
        seen: &mut HashSet<String>,
        warnings: &mut Vec<ConfigError>,
    ) -> Result<(Rule, Written), ConfigError> {
        let field = format!("spread `{}`", s.name.get_ref());
        if !ntp_offset_proto::view::valid_name(s.name.get_ref()) {
            return self.err(
                s.name.span(),
                format!("{field}.name"),
                "use letters, digits, `-`, `_` and `.` (the name also names its table file)",
            );
        }
        if !seen.insert(s.name.get_ref().clone()) {
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
        let mut weights = Vec::new();
        for m in s.views.get_ref() {
            let id = self.view_named(group.names, m, &format!("{field}.views"))?;
            if members.iter().any(|&(mid, _)| mid == id) {
                return self.err(
                    m.span(),
                    format!("{field}.views"),
                    format!("`{}` is listed twice", m.get_ref()),
                );
            }
            members.push((id, m.get_ref().as_str()));
            weights.push(group.weights[id.0 as usize]);
        }
        let key_text = s
            .key
            .as_ref()
            .map_or(s.name.get_ref().as_str(), |k| k.get_ref().as_str());
        let mut spread = Spread::new(&members, spread_key(key_text));
        if self.balanced(s, &field)? {
            spread = spread.with_balancer(Balanced {
                name: s.name.get_ref().clone(),
                index: group.index,
                weights,
                rebalance: self.rebalance(s, &field)?,
                moves: self.moves(s, &field, warnings)?,
                by_load: self.by_load(s, &field)?,
                optimize_every_s: self.optimize_every(s, &field)?,
                forget_after_s: self.forget_after(s, &field)?,
                max_clients: self.max_clients(s, &field)?,
            });
        } else {
            self.warn_hash_group(raw, s, &field, &members, &weights, warnings);
        }
        let rule = Rule {
            listen: self.local_addrs(&s.listen, listen, &field)?,
            clients: self.cidrs(&s.clients, &field)?,
            target: Target::Spread(spread),
        };
        Ok((
            rule,
            Written {
                what: field,
                span: s.name.span(),
            },
        ))
    }

    /// What a hash group ignores: the balancer's settings and the members' weights.
    fn warn_hash_group(
        &self,
        raw: &RawFile,
        s: &RawSpread,
        field: &str,
        members: &[(ViewId, &str)],
        weights: &[u32],
        warnings: &mut Vec<ConfigError>,
    ) {
        for (what, set) in [
            ("rebalance", s.rebalance.as_ref().map(Spanned::span)),
            ("move", s.moves.as_ref().map(Spanned::span)),
            ("place", s.place.as_ref().map(Spanned::span)),
            (
                "optimize_every",
                s.optimize_every.as_ref().map(Spanned::span),
            ),
            ("move_rate", s.move_rate.as_ref().map(Spanned::span)),
            ("move_ramp", s.move_ramp.as_ref().map(Spanned::span)),
            ("forget_after", s.forget_after.as_ref().map(Spanned::span)),
            ("max_clients", s.max_clients.as_ref().map(Spanned::span)),
        ] {
            if let Some(span) = set {
                warnings.push(self.error_at(
                    span,
                    format!("{field}.{what}"),
                    "has no effect with assign = \"hash\": a hash group keeps no table",
                ));
            }
        }
        for (&(id, name), w) in members.iter().zip(weights) {
            if *w != 1 {
                let span = raw.view[id.0 as usize]
                    .get_ref()
                    .weight
                    .as_ref()
                    .map_or(0..0, Spanned::span);
                warnings.push(self.error_at(span, format!("view `{name}`.weight"), format!("has no effect in {field}: assign = \"hash\" gives every member an equal share")));
            }
        }
    }

    /// Which rules can ever match, per listen address (`reach`), and which are not shadowed
    /// (`live`): a later rule is shadowed when an earlier one takes every request it would
    /// (first match wins). Each shadowed rule is a warning.
    fn shadowed(
        &self,
        rules: &[Rule],
        written: &[Written],
        listen: &[SocketAddr],
        warnings: &mut Vec<ConfigError>,
    ) -> (Vec<Vec<bool>>, Vec<bool>) {
        let reach: Vec<Vec<bool>> = rules
            .iter()
            .map(|r| {
                listen
                    .iter()
                    .map(|s| r.listen.is_empty() || r.listen.iter().any(|l| l.matches(*s)))
                    .collect()
            })
            .collect();
        let mut live = vec![true; rules.len()];
        for b in 0..rules.len() {
            if let Some(a) = (0..b).find(|&a| covers(&rules[a], &reach[a], &rules[b], &reach[b])) {
                live[b] = false;
                warnings.push(self.error_at(
                    written[b].span.clone(),
                    written[b].what.clone(),
                    format!(
                        "never matches: every request it selects is taken first by {} (line {}); rules are tried in order, views' before spread groups'",
                        written[a].what,
                        self.line_of(&written[a].span)
                    ),
                ));
            }
        }
        (reach, live)
    }

    /// Every view must be reachable: by its own rule, a spread group, or as the default.
    fn every_view_answers(
        &self,
        raw: &RawFile,
        rules: &[Rule],
        live: &[bool],
        default: Option<ViewId>,
        warnings: &[ConfigError],
    ) -> Result<(), ConfigError> {
        let mut answers = vec![false; raw.view.len()];
        if let Some(d) = default {
            answers[d.0 as usize] = true;
        }
        for (rule, _) in rules.iter().zip(live).filter(|(_, l)| **l) {
            match &rule.target {
                Target::View(id) => answers[id.0 as usize] = true,
                Target::Spread(s) => s.members().for_each(|id| answers[id.0 as usize] = true),
            }
        }
        for (i, v) in raw.view.iter().enumerate() {
            if !answers[i] {
                let name = v.get_ref().name.get_ref();
                // The error stops the check, so the warning that explains it is not printed:
                // say here which rule takes this view's requests.
                let field = format!("view `{name}`");
                let message = match warnings.iter().find(|w| w.field == field) {
                    Some(w) => format!("would never answer ({}), and it is in no spread group and is not server.default_view", w.message),
                    None => "has no `listen` or `clients` selector, is in no spread group and is not server.default_view, so it would never answer".to_string(),
                };
                return self.err(v.span(), field, message);
            }
        }
        Ok(())
    }

    /// Without a default view, a listen address no rule selects answers nobody.
    fn warn_unreached_listen(
        &self,
        server: &RawServer,
        listen: &[SocketAddr],
        reach: &[Vec<bool>],
        live: &[bool],
        warnings: &mut Vec<ConfigError>,
    ) {
        for (k, s) in listen.iter().enumerate() {
            if !reach.iter().zip(live).any(|(r, l)| *l && r[k]) {
                warnings.push(self.error_at(
                        server.listen.span(),
                        "server.listen",
                        format!("`{s}` selects no view: no view or spread group lists it and there is no server.default_view, so requests arriving there get no time (server.unmatched decides: dropped, or KoD DENY)"),
                    ));
            }
        }
    }

    fn weight(&self, v: &RawView) -> Result<u32, ConfigError> {
        match &v.weight {
            None => Ok(1),
            Some(w) => match *w.get_ref() {
                n @ 1..=1000 => Ok(n as u32),
                n => self.err(w.span(), format!("view `{}`.weight", v.name.get_ref()), format!("{n}: a weight is 1-1000 (a view with weight 2 takes twice the clients of one with 1)")),
            },
        }
    }

    /// `assign`: true for "balanced" (the default), false for "hash".
    fn balanced(&self, s: &RawSpread, field: &str) -> Result<bool, ConfigError> {
        match s.assign.as_ref().map(|a| (a.get_ref().as_str(), a.span())) {
            None | Some(("balanced", _)) => Ok(true),
            Some(("hash", _)) => Ok(false),
            Some((other, span)) => self.err(span, format!("{field}.assign"), format!("`{other}`: use \"balanced\" (a new client goes to the member with the fewest clients and keeps it; a table in server.state_dir) or \"hash\" (no table; every host with this config answers alike)")),
        }
    }

    fn rebalance(&self, s: &RawSpread, field: &str) -> Result<Rebalance, ConfigError> {
        match s.rebalance.as_ref().map(|a| (a.get_ref().as_str(), a.span())) {
            None | Some(("never", _)) => Ok(Rebalance::Never),
            Some(("on_change", _)) => Ok(Rebalance::OnChange),
            Some((other, span)) => self.err(span, format!("{field}.rebalance"), format!("`{other}`: use \"never\" (a new member fills with new clients; nobody's clock moves) or \"on_change\" (the fewest clients needed move to it at once, as `move` says)")),
        }
    }

    fn optimize_every(&self, s: &RawSpread, field: &str) -> Result<u64, ConfigError> {
        let Some(f) = &s.optimize_every else {
            return Ok(DEFAULT_OPTIMIZE_EVERY_S);
        };
        match duration::parse(f.get_ref()) {
            Ok(o) if o >= Offset::from_secs(60) && o <= Offset::from_secs(86_400) => {
                Ok((o.nanos() / 1_000_000_000) as u64)
            }
            Ok(_) => self.err(
                f.span(),
                format!("{field}.optimize_every"),
                "must be between 1m and 24h",
            ),
            Err(e) => self.err(f.span(), format!("{field}.optimize_every"), e.to_string()),
        }
    }

    fn by_load(&self, s: &RawSpread, field: &str) -> Result<bool, ConfigError> {
        match s.place.as_ref().map(|a| (a.get_ref().as_str(), a.span())) {
            None | Some(("load", _)) => Ok(true),
            Some(("count", _)) => Ok(false),
            Some((other, span)) => self.err(span, format!("{field}.place"), format!("`{other}`: use \"load\" (a new VM goes where its measured load adds least to the host's busiest second, and the busiest VMs are moved apart; by count where nothing is measured) or \"count\" (the member with the fewest clients)")),
        }
    }

    fn moves(
        &self,
        s: &RawSpread,
        field: &str,
        warnings: &mut Vec<ConfigError>,
    ) -> Result<Moves, ConfigError> {
        let smear = match s.moves.as_ref().map(|a| (a.get_ref().as_str(), a.span())) {
            None | Some(("smear", _)) => true,
            Some(("step", _)) => false,
            Some((other, span)) => return self.err(span, format!("{field}.move"), format!("`{other}`: use \"smear\" (a moving client's time walks to its new view at move_rate; its clock never steps) or \"step\" (it is served the new view's time at once; its clock steps or slews)")),
        };
        let mut pace = DEFAULT_MOVE_PACE;
        if let Some(r) = &s.move_rate {
            match *r.get_ref() {
                x if (1.0..=MAX_MOVE_RATE_PPM).contains(&x) => pace.rate_ppm = x,
                x => return self.err(r.span(), format!("{field}.move_rate"), format!("{x}: must be 1-{MAX_MOVE_RATE_PPM} (ppm; chronyd follows up to its maxslewrate, 83333)")),
            }
            if pace.rate_ppm > PLL_MOVE_RATE_PPM {
                warnings.push(self.error_at(r.span(), format!("{field}.move_rate"), format!("above {PLL_MOVE_RATE_PPM} ppm only chronyd follows a walk without stepping: ntpd, systemd-timesyncd and Windows follow at most 500 ppm, their VM's own drift included")));
            }
        }
        if let Some(r) = &s.move_ramp {
            match duration::parse(r.get_ref()) {
                Ok(o) if o >= Offset::ZERO && o <= Offset::from_secs(86_400) => {
                    pace.ramp_s = o.as_secs_f64();
                }
                Ok(_) => {
                    return self.err(
                        r.span(),
                        format!("{field}.move_ramp"),
                        "must be between 0s and 24h",
                    )
                }
                Err(e) => return self.err(r.span(), format!("{field}.move_ramp"), e.to_string()),
            }
        }
        if !smear && (s.move_rate.is_some() || s.move_ramp.is_some()) {
            let span = s.move_rate.as_ref().map_or_else(
                || s.move_ramp.as_ref().expect("one is set").span(),
                Spanned::span,
            );
            return self.err(
                span,
                format!("{field}.move"),
                "move_rate and move_ramp are for move = \"smear\"",
            );
        }
        Ok(if smear {
            Moves::Smear(pace)
        } else {
            Moves::Step
        })
    }

    fn forget_after(&self, s: &RawSpread, field: &str) -> Result<u64, ConfigError> {
        let Some(f) = &s.forget_after else {
            return Ok(DEFAULT_FORGET_AFTER_S);
        };
        match duration::parse(f.get_ref()) {
            Ok(o) if o >= Offset::from_secs(3600) && o <= Offset::from_secs(3650 * 86_400) => {
                Ok((o.nanos() / 1_000_000_000) as u64)
            }
            Ok(_) => self.err(f.span(), format!("{field}.forget_after"), "must be between 1h and 3650d (clients poll at most every 36 h; a shorter time would forget clients that are still there)"),
            Err(e) => self.err(f.span(), format!("{field}.forget_after"), e.to_string()),
        }
    }

    fn max_clients(&self, s: &RawSpread, field: &str) -> Result<usize, ConfigError> {
        match s.max_clients.as_ref().map(|m| (*m.get_ref(), m.span())) {
            None => Ok(DEFAULT_MAX_CLIENTS),
            Some((n @ 1..=10_000_000, _)) => Ok(n as usize),
            Some((n, span)) => self.err(
                span,
                format!("{field}.max_clients"),
                format!("{n}: must be 1-10000000 (each client takes about 140 bytes)"),
            ),
        }
    }

    fn view_named(
        &self,
        names: &ViewNames,
        name: &Spanned<String>,
        field: &str,
    ) -> Result<ViewId, ConfigError> {
        match names.iter().find(|(n, _)| n == name.get_ref()) {
            Some(&(_, id)) => Ok(id),
            None => self.err(
                name.span(),
                field,
                format!(
                    "no view is named `{}`; views: {}",
                    name.get_ref(),
                    name_list(names)
                ),
            ),
        }
    }

    /// A view's `auth`: "none" (the default), "key", "nts" or "any".
    fn view_auth(&self, v: &RawView) -> Result<AuthRequirement, ConfigError> {
        let Some(a) = &v.auth else {
            return Ok(AuthRequirement::None);
        };
        match a.get_ref().as_str() {
            "none" => Ok(AuthRequirement::None),
            "key" => Ok(AuthRequirement::Key),
            "nts" => Ok(AuthRequirement::Nts),
            "any" => Ok(AuthRequirement::Any),
            other => self.err(
                a.span(),
                "view.auth",
                format!("`{other}`: \"none\" (answer anything), \"key\" (only requests with a valid MAC), \"nts\" (only NTS) or \"any\" (a MAC or NTS)"),
            ),
        }
    }

    /// Views whose `auth` needs credentials, by name: what they need ("key", "nts" or
    /// "any") and where it is said.
    pub(super) fn views_needing(&self, raw: &RawFile) -> Vec<(String, &'static str, Range<usize>)> {
        raw.view
            .iter()
            .filter_map(|v| {
                let a = v.get_ref().auth.as_ref()?;
                let needs = match a.get_ref().as_str() {
                    "key" => "key",
                    "nts" => "nts",
                    "any" => "any",
                    _ => return None,
                };
                Some((v.get_ref().name.get_ref().clone(), needs, a.span()))
            })
            .collect()
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
            if !ntp_offset_proto::view::valid_name(name) {
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
            let offset = self.offset(&v.offset, &format!("view `{name}`.offset"))?;
            let auth = self.view_auth(v)?;
            names.push((name.clone(), ViewId(i as u16)));
            views.push(View {
                name: name.clone(),
                offset,
                auth,
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

    /// An offset from true time: a view's, or `pulse listen --offset`.
    pub(super) fn offset(
        &self,
        text: &Spanned<String>,
        field: &str,
    ) -> Result<Offset, ConfigError> {
        match duration::parse(text.get_ref()) {
            Ok(o) if o.abs() <= MAX_OFFSET => Ok(o),
            Ok(_) => self.err(text.span(), field, "offsets are limited to ±68 years: NTP timestamps repeat every 136 years and clients resolve the era from their own clock"),
            Err(e) => self.err(text.span(), field, e.to_string()),
        }
    }
}

/// Whether rule `a` takes every request rule `b` would: on every listening socket `b`
/// matches, for every client `b` matches (`reach`: which of server.listen each matches).
fn covers(a: &Rule, reach_a: &[bool], b: &Rule, reach_b: &[bool]) -> bool {
    let sockets = reach_b.iter().zip(reach_a).all(|(rb, ra)| !rb || *ra);
    let clients = a.clients.is_empty()
        || (!b.clients.is_empty()
            && b.clients
                .iter()
                .all(|cb| a.clients.iter().any(|ca| ca.covers(cb))));
    sockets && clients
}

fn name_list(names: &[(String, ViewId)]) -> String {
    names
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
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
