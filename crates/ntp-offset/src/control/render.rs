//! `status` and `clients` as text, laid out like chronyc's reports.

use std::fmt::Write;

use ntp_offset_proto::responder::DropReason;

use super::counters::{PER_VIEW, TOTALS};
use super::status::{
    ClientEntry, ClusterStatus, ListenStatus, LoadStatus, NtsStatus, ReferenceStatus, SendStatus,
    ServeStatus, Status, ViewStatus,
};

pub fn status(s: &Status) -> String {
    match s {
        Status::Serve(s) => serve(s),
        Status::Listen(l) => listen(l),
        Status::Send(s) => send(s),
    }
}

fn secs(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.6} s"))
}

fn rate(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

fn reference(out: &mut String, r: &ReferenceStatus) {
    let _ = writeln!(
        out,
        "Reference       : {}, {} (stratum {}, refid {}, leap {})",
        r.source, r.state, r.stratum, r.reference_id, r.leap
    );
    let _ = writeln!(
        out,
        "Root dispersion : {}   root delay {}",
        secs(Some(r.root_dispersion_s)),
        secs(Some(r.root_delay_s))
    );
    let _ = writeln!(
        out,
        "Max error       : {}{}",
        secs(r.max_error_s),
        r.estimated_error_s
            .map_or(String::new(), |e| format!("   estimated {}", secs(Some(e))))
    );
    if r.source == "pulse" {
        let _ = writeln!(
            out,
            "Ticks           : {} used, {} missed, {} restarts; last {} ago; transmitter {} ({})",
            r.ticks.unwrap_or(0),
            r.missed.unwrap_or(0),
            r.restarts.unwrap_or(0),
            r.seconds_since_tick
                .map_or("-".into(), |a| format!("{a:.1} s")),
            r.transmitter.as_deref().unwrap_or("-"),
            r.transmitter_state.as_deref().unwrap_or("-")
        );
        let _ = writeln!(
            out,
            "Tick offset     : {}   jitter {}   frequency {}",
            secs(r.offset_s),
            secs(r.jitter_s),
            r.frequency_ppm
                .map_or("-".into(), |f| format!("{f:+.3} ppm"))
        );
        if !r.rejected.is_empty() {
            let list: Vec<String> = r.rejected.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(out, "Ticks rejected  : {}", list.join(", "));
        }
    }
}

fn serve(s: &ServeStatus) -> String {
    let mut out = String::new();
    reference(&mut out, &s.reference);
    let _ = writeln!(
        out,
        "Uptime          : {:.0} s (ntp-offset {})",
        s.uptime_s, s.program_version
    );
    views(&mut out, &s.views);
    let _ = writeln!(
        out,
        "\n{:<28} {:>10} {:>10} {:>6} {:>9} {:>11}",
        "Socket", "Received", "Answered", "KoD", "Dropped", "Send errors"
    );
    for k in &s.sockets {
        let _ = writeln!(
            out,
            "{:<28} {:>10} {:>10} {:>6} {:>9} {:>11}",
            k.address, k.received, k.answered, k.kod, k.dropped, k.send_errors
        );
    }
    let drops: Vec<String> = DropReason::ALL
        .iter()
        .map(|r| format!("{} {}", r.name(), s.totals.dropped(*r)))
        .collect();
    let _ = writeln!(out, "\nDropped         : {}", drops.join(", "));
    for c in TOTALS {
        let n = (c.get)(&s.totals);
        if c.always || n > 0 {
            let _ = writeln!(out, "{:<16}: {n}", c.label);
        }
    }
    if let Some(n) = &s.nts {
        nts(&mut out, n);
    }
    for g in &s.spread {
        let _ = writeln!(
            out,
            "{:<16}: {} clients; moved {}, forgotten {}, hashed while full {}",
            format!("Spread `{}`", g.name),
            g.clients,
            g.moved,
            g.forgotten,
            g.hashed_while_full
        );
    }
    if let Some(l) = &s.load {
        load(&mut out, l);
    }
    if let Some(c) = &s.cluster {
        cluster(&mut out, c);
    }
    let _ = writeln!(
        out,
        "Client log      : {} clients ({} per socket at most); {} requests not logged",
        s.client_log.logged, s.client_log.capacity, s.client_log.not_logged
    );
    if !s.most_rate_limited.is_empty() {
        let _ = writeln!(out, "Most rate-limited:");
        for c in &s.most_rate_limited {
            let _ = writeln!(
                out,
                "  {:<40} {} of {} requests limited (view {})",
                c.address,
                c.rate_limited,
                c.requests,
                c.view.as_deref().unwrap_or("-")
            );
        }
    }
    out
}

fn load(out: &mut String, l: &LoadStatus) {
    let per_view: Vec<String> = l
        .views
        .iter()
        .map(|v| format!("{} {:.2}", v.view, v.peak_cores))
        .collect();
    let _ = writeln!(
        out,
        "VM load         : {} VMs, {} profiled; predicted busiest second :{:02} at {:.2} cores; per view {}",
        l.vms,
        l.profiled,
        l.peak_second,
        l.peak_cores,
        if per_view.is_empty() { "-".to_string() } else { per_view.join(", ") }
    );
    for g in &l.groups {
        let _ = writeln!(
            out,
            "                  group {}: predicted busiest second at {:.2} cores",
            g.group, g.peak_cores
        );
    }
}

fn cluster(out: &mut String, c: &ClusterStatus) {
    let state = if c.available {
        "reachable"
    } else {
        "OUT OF REACH"
    };
    let _ = writeln!(
        out,
        "Cluster         : host {}, etcd {} ({}); revision {}, {} clients",
        c.host,
        state,
        c.endpoints.join(", "),
        c.revision,
        c.clients
    );
    let _ = writeln!(
        out,
        "                  new clients recorded {} (another host first {}), moves recorded {}, followed {}, refreshed {}, forgotten {}",
        c.created, c.lost_races, c.moves_recorded, c.moves_followed, c.refreshed, c.forgotten
    );
    let _ = writeln!(
        out,
        "                  while etcd was out of reach: {} new clients unanswered, {} hashed; {} with a view not configured here; {} resyncs, {} errors",
        c.unanswered_unavailable, c.hashed_unavailable, c.unknown_view, c.resyncs, c.errors
    );
    if !c.refused_groups.is_empty() {
        let _ = writeln!(
            out,
            "                  REFUSED groups (a view recorded with another offset): {}",
            c.refused_groups.join(", ")
        );
    }
}

/// The views' table: the counters' columns from their table, the rest the view's own.
fn views(out: &mut String, views: &[ViewStatus]) {
    let counter_cols = |cells: &mut String, values: &mut dyn Iterator<Item = String>| {
        for (c, v) in PER_VIEW.iter().zip(values) {
            let _ = write!(cells, " {v:>w$}", w = (c.label.len() + 2).max(6));
        }
    };
    let mut head = format!("\n{:<16} {:>14}", "View", "Offset");
    counter_cols(&mut head, &mut PER_VIEW.iter().map(|c| c.label.to_string()));
    let _ = writeln!(
        out,
        "{head} {:>9} {:>9} {:>8} {:>9}",
        "Req/s 1m", "Req/s 5m", "Clients", "Assigned"
    );
    for v in views {
        let mut row = format!("{:<16} {:>14}", v.name, v.offset);
        counter_cols(
            &mut row,
            &mut PER_VIEW.iter().map(|c| (c.get)(&v.counts).to_string()),
        );
        let _ = writeln!(
            out,
            "{row} {:>9} {:>9} {:>8} {:>9}",
            rate(v.requests_per_s_1m),
            rate(v.requests_per_s_5m),
            v.clients_last_hour,
            v.assigned.map_or("-".into(), |a| a.to_string())
        );
    }
}

fn nts(out: &mut String, n: &NtsStatus) {
    let by_aead: Vec<String> = n
        .ke_sessions_by_aead
        .iter()
        .filter(|(_, c)| **c > 0)
        .map(|(a, c)| format!("{c} {}", a.trim_start_matches("AEAD_")))
        .collect();
    let by_aead = if by_aead.is_empty() {
        String::new()
    } else {
        format!(" ({})", by_aead.join(", "))
    };
    let _ = writeln!(
        out,
        "NTS-KE          : {}; {} sessions{by_aead}, {} refused, {} failed, {} timed out, {} busy, {} now",
        n.ke_listen.join(", "),
        n.ke_sessions,
        n.ke_refused,
        n.ke_failed,
        n.ke_timeouts,
        n.ke_busy,
        n.ke_active
    );
    let _ = writeln!(
        out,
        "NTS master key  : id {}, {} old; {} kept (older cookies still open)",
        n.master_key_id,
        ago(n.master_key_age_s, 0),
        n.master_keys
    );
}

fn listen(l: &ListenStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "pulse listen    : {}", l.line());
    let _ = writeln!(
        out,
        "Datagrams       : {}; feeds: sock {} sent ({} failed), shm {} written",
        l.counts.datagrams,
        l.sock_sent.map_or("-".into(), |n| n.to_string()),
        l.sock_failed.map_or("-".into(), |n| n.to_string()),
        l.shm_written.map_or("-".into(), |n| n.to_string())
    );
    out
}

fn send(s: &SendStatus) -> String {
    format!(
        "pulse send      : transmitter {}, session {}, source {} (clock {})\nTicks           : {} sent, sequence {}, {} send errors; {}, {}\nDestinations    : {}\n",
        s.transmitter,
        s.session,
        s.source,
        s.clock,
        s.ticks_sent,
        s.sequence,
        s.send_errors,
        if s.authenticated { "signed" } else { "unsigned" },
        if s.follow_ups { "with follow-ups" } else { "no follow-ups" },
        s.destinations.join(", ")
    )
}

fn ago(now: u64, t: u64) -> String {
    let d = now.saturating_sub(t);
    match d {
        0..=119 => format!("{d}s"),
        120..=7199 => format!("{}m", d / 60),
        7200..=172_799 => format!("{}h", d / 3600),
        _ => format!("{}d", d / 86_400),
    }
}

/// Like `chronyc clients`: one line per client, most requests first. Where the host's VMs are
/// watched, each client's VM and load follow: its busiest second of its own minute, its CPU
/// then, and its part of the host's predicted busiest second (`?` while not yet measured;
/// `-` for a client that is no VM found on the host, placed by count).
pub fn clients(list: &[ClientEntry], now: u64) -> String {
    let with_vms = list.iter().any(|c| c.vm.is_some());
    let mut out = format!(
        "{:<40} {:<16} {:<9} {:>9} {:>8} {:>6} {:>6}",
        "Address", "View", "Chosen by", "Requests", "Limited", "First", "Last"
    );
    if with_vms {
        let _ = write!(
            out,
            " {:<16} {:>4} {:>6} {:>6}",
            "VM", "Peak", "Cores", "Share"
        );
    }
    out.push('\n');
    for c in list {
        let _ = write!(
            out,
            "{:<40} {:<16} {:<9} {:>9} {:>8} {:>6} {:>6}",
            c.address,
            c.view.as_deref().unwrap_or("-"),
            c.chosen_by,
            c.requests,
            c.rate_limited,
            ago(now, c.first_seen),
            ago(now, c.last_seen)
        );
        if with_vms {
            let _ = match &c.vm {
                Some(v) if v.minutes >= 2 => write!(
                    out,
                    " {:<16} {:>4} {:>6.2} {:>5.0}%",
                    v.name,
                    format!(":{:02}", v.peak_second),
                    v.peak_cores,
                    v.share_of_host_peak * 100.0
                ),
                Some(v) => write!(out, " {:<16} {:>4} {:>6} {:>6}", v.name, "?", "?", "?"),
                None => write!(out, " {:<16} {:>4} {:>6} {:>6}", "-", "-", "-", "-"),
            };
        }
        if let Some(left) = c.walk_left_s {
            let _ = write!(out, "  walking, {left:+.3} s to go");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_read_like_chronyc() {
        let c = ClientEntry {
            address: "198.18.0.5".into(),
            view: Some("b".into()),
            chosen_by: "balancer".into(),
            rule: None,
            first_seen: 1000,
            last_seen: 1290,
            requests: 12,
            rate_limited: 1,
            ..Default::default()
        };
        let text = clients(&[c], 1300);
        let line = text.lines().nth(1).unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            fields,
            ["198.18.0.5", "b", "balancer", "12", "1", "5m", "10s"]
        );
    }

    #[test]
    fn clients_with_vms_show_their_load_and_walks() {
        use super::super::status::VmLoad;
        let vm = VmLoad {
            name: "web1".into(),
            pid: 4242,
            source: "process".into(),
            minutes: 5,
            peak_second: 0,
            peak_cores: 0.8,
            share_of_host_peak: 0.31,
        };
        let with = ClientEntry {
            address: "198.18.0.5".into(),
            view: Some("s15".into()),
            chosen_by: "balancer".into(),
            vm: Some(vm),
            walk_left_s: Some(-12.5),
            ..Default::default()
        };
        let without = ClientEntry {
            address: "198.18.0.6".into(),
            view: Some("s00".into()),
            chosen_by: "balancer".into(),
            ..Default::default()
        };
        let text = clients(&[with, without], 100);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[0][8..], ["VM", "Peak", "Cores", "Share"]);
        assert_eq!(lines[1][7..11], ["web1", ":00", "0.80", "31%"]);
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .ends_with("walking, -12.500 s to go"),
            "{text}"
        );
        assert_eq!(lines[2][7..], ["-", "-", "-", "-"]);
    }
}
