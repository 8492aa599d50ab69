//! `serve --check --explain CLIENT`: which view a client gets, and why: the rule that
//! matches, and for a balanced spread group what its table (read from `server.state_dir`,
//! never written) says or would say.

use std::net::{IpAddr, SocketAddr};

use ntp_offset_proto::balancer::{Balancer, Reason};
use ntp_offset_proto::responder::Unmatched;
use ntp_offset_proto::view::{Balanced, Spread, Target, ViewId, ViewTable};

use super::{assignments, tables};
use crate::config::ServeConfig;
use crate::duration;
use crate::text::utc;

fn view_text(views: &ViewTable, id: ViewId) -> String {
    let v = views.view(id);
    format!("view `{}` ({})", v.name, duration::format(v.offset))
}

/// What a balanced group's table says about `client`, and the view.
fn balanced(
    cfg: &ServeConfig,
    spread: &Spread,
    b: &Balanced,
    client: IpAddr,
    now_s: u64,
) -> (ViewId, String) {
    let views = &cfg.views;
    let members = assignments::members_of(views, spread, b);
    let mut bal = Balancer::new(&members, spread.key(), b.max_clients);
    let file = tables::path(&cfg.state_dir, &b.name);
    let table = match tables::read(&cfg.state_dir, &b.name, b.max_clients) {
        Ok(None) => format!("{} does not exist yet", file.display()),
        Ok(Some(text)) => {
            bal.load_table(&text, |name| {
                super::assignments::member_id(views, spread, name)
            });
            bal.recount_active(now_s);
            format!("{} has {} clients", file.display(), bal.len())
        }
        Err(e) => e.to_string(),
    };
    let counts = bal
        .members()
        .iter()
        .map(|m| format!("{} {}", views.view(m.view).name, bal.active(m.view)))
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(a) = bal.get(client) {
        return (
            a.view,
            format!(
                "assigned in the table since {} (last seen {}; {table})",
                utc(a.first_seen),
                utc(a.last_seen)
            ),
        );
    }
    let (view, reason) = bal.assign(client, now_s);
    let why = match reason {
        Reason::HashTableFull => format!(
            "not in the table, which is full ({table}, max_clients {}): the keyed hash picks",
            b.max_clients
        ),
        _ => format!(
            "not in the table ({table}): as a new client it would go to the member with the fewest active clients for its weight ({counts}; ties by the keyed hash) and keep it"
        ),
    };
    let view = if reason == Reason::HashTableFull {
        spread.pick(client).unwrap_or(view)
    } else {
        view
    };
    (view, why)
}

/// One line per distinct answer over the server's listening addresses.
pub fn explain(cfg: &ServeConfig, client: IpAddr) -> Vec<String> {
    let views = &cfg.views;
    let now_s = super::unix_seconds();
    let mut lines: Vec<(Vec<SocketAddr>, String)> = Vec::new();
    for &local in &cfg.listen {
        let text = match views.rule_for(local, client) {
            Some((i, rule)) => {
                let rule_name = cfg.rule_names.get(i).map_or("a rule", String::as_str);
                match &rule.target {
                    Target::View(id) => format!(
                        "{}: {rule_name} selects it (its `listen`/`clients` match; views' own rules come first, so no spread group moves it)",
                        view_text(views, *id)
                    ),
                    Target::Spread(s) => match s.balanced() {
                        Some(b) => {
                            let (id, why) = balanced(cfg, s, b, client, now_s);
                            format!("{}: {rule_name}, assign = \"balanced\": {why}", view_text(views, id))
                        }
                        None => format!(
                            "{}: {rule_name}, assign = \"hash\": the keyed hash of the address picks it (the same on every host with this config)",
                            view_text(views, s.pick(client).expect("members"))
                        ),
                    },
                }
            }
            None => match views.default_view() {
                Some(id) => format!(
                    "{}: no view or spread group selects it; server.default_view",
                    view_text(views, id)
                ),
                None => match cfg.unmatched {
                    Unmatched::Ignore => "no view: no rule selects it and there is no server.default_view; server.unmatched = \"ignore\" drops its requests".to_string(),
                    Unmatched::Deny => "no view: no rule selects it and there is no server.default_view; server.unmatched = \"deny\" answers KoD DENY".to_string(),
                },
            },
        };
        match lines.iter_mut().find(|(_, t)| *t == text) {
            Some((locals, _)) => locals.push(local),
            None => lines.push((vec![local], text)),
        }
    }
    let all = lines.len() == 1;
    lines
        .into_iter()
        .map(|(locals, text)| {
            if all {
                format!("{client}: {text}")
            } else {
                format!(
                    "{client} asking {}: {text}",
                    crate::text::join_addrs(&locals)
                )
            }
        })
        .collect()
}
