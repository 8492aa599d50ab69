//! `/metrics`: the status in Prometheus' text format (0.0.4, which every scraper and
//! `promtool check metrics` read), through the prometheus crate. Built per scrape from one
//! status reading (the workers' counters summed then), so the NTP path keeps no metric
//! objects of its own. Names: `ntp_offset_` prefix, `_total` counters, seconds as the unit.
//! Each daemon's metrics are a table below: name, help, value.

use prometheus::{CounterVec, Encoder, GaugeVec, Opts, Registry, TextEncoder};

use ntp_offset_proto::responder::DropReason;

use ntp_offset_proto::tick_stats::Reject;

use crate::control::counters::{PER_VIEW, TICKS, TOTALS};
use crate::control::status::{ListenStatus, ReferenceStatus, SendStatus, ServeStatus, Status};

pub use prometheus::TEXT_FORMAT as CONTENT_TYPE;

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}
use Kind::{Counter, Gauge};

/// One family's samples: label values (for the family's one label) and values.
type Rows = Vec<(String, f64)>;

/// The exposition text for one status reading.
pub fn render(status: &Status, minute_peak_to_mean: Option<f64>) -> String {
    let mut f = Families {
        registry: Registry::new_custom(Some("ntp_offset".into()), None).expect("a valid prefix"),
    };
    let version = vec![(env!("CARGO_PKG_VERSION").to_string(), 1.0)];
    f.labelled(
        Gauge,
        "build_info",
        "Always 1; the version is a label.",
        "version",
        version,
    );
    f.scalars(&[(
        Gauge,
        "host_cpu_minute_peak_to_mean_ratio",
        "This hour's busiest second of the minute over the mean (1: flat; 60: all load in one second).",
        minute_peak_to_mean,
    )]);
    match status {
        Status::Serve(s) => serve(&mut f, s),
        Status::Listen(l) => listen(&mut f, l),
        Status::Send(s) => send(&mut f, s),
    }
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&f.registry.gather(), &mut out)
        .expect("encoding to memory cannot fail");
    String::from_utf8(out).expect("the text format is UTF-8")
}

/// Registers metric families; those without samples are left out.
struct Families {
    registry: Registry,
}

impl Families {
    /// Metrics without labels; None leaves one out.
    fn scalars(&mut self, rows: &[(Kind, &str, &str, Option<f64>)]) {
        for &(kind, name, help, value) in rows {
            if let Some(v) = value {
                self.family(kind, name, help, &[], &[(Vec::new(), v)]);
            }
        }
    }

    /// A family with one label.
    fn labelled(&mut self, kind: Kind, name: &str, help: &str, label: &str, rows: Rows) {
        let samples: Vec<(Vec<String>, f64)> =
            rows.into_iter().map(|(l, v)| (vec![l], v)).collect();
        self.family(kind, name, help, &[label], &samples);
    }

    fn family(
        &mut self,
        kind: Kind,
        name: &str,
        help: &str,
        labels: &[&str],
        samples: &[(Vec<String>, f64)],
    ) {
        if samples.is_empty() {
            return;
        }
        let opts = Opts::new(name, help);
        let metric: Box<dyn prometheus::core::Collector> = match kind {
            Counter => {
                let v = CounterVec::new(opts, labels).expect("a valid metric");
                for (l, x) in samples {
                    v.with_label_values(&label_values(l)).inc_by(x.max(0.0));
                }
                Box::new(v)
            }
            Gauge => {
                let v = GaugeVec::new(opts, labels).expect("a valid metric");
                for (l, x) in samples {
                    v.with_label_values(&label_values(l)).set(*x);
                }
                Box::new(v)
            }
        };
        self.registry
            .register(metric)
            .expect("each family registered once");
    }
}

fn label_values(l: &[String]) -> Vec<&str> {
    l.iter().map(String::as_str).collect()
}

fn count(n: u64) -> Option<f64> {
    Some(n as f64)
}

#[rustfmt::skip] // a table: one metric a line
fn serve(f: &mut Families, s: &ServeStatus) {
    let per_view = |v: &dyn Fn(&crate::control::status::ViewStatus) -> f64| -> Rows {
        s.views.iter().map(|view| (view.name.clone(), v(view))).collect()
    };
    for c in PER_VIEW {
        f.labelled(Counter, c.metric, c.help, "view", per_view(&|v| (c.get)(&v.counts) as f64));
    }
    let views: [(Kind, &str, &str, Rows); 2] = [
        (Gauge, "view_offset_seconds", "Each view's offset from the reference.", per_view(&|v| v.offset_s)),
        (Gauge, "view_clients", "Clients whose last request in the hour chose each view (from the client log).", per_view(&|v| v.clients_last_hour as f64)),
    ];
    for (kind, name, help, rows) in views {
        f.labelled(kind, name, help, "view", rows);
    }
    let assigned = s.views.iter().filter_map(|v| v.assigned.map(|n| (v.name.clone(), n as f64))).collect();
    f.labelled(Gauge, "view_assigned_clients", "Clients a balanced spread group has assigned to each view.", "view", assigned);
    let dropped = DropReason::ALL.iter().map(|r| (r.name().to_string(), s.totals.dropped(*r) as f64)).collect();
    f.labelled(Counter, "dropped_total", "Requests dropped without an answer, by reason.", "reason", dropped);
    let received = s.sockets.iter().map(|k| (k.address.clone(), k.received as f64)).collect();
    f.labelled(Counter, "received_total", "Datagrams received, per listening socket.", "socket", received);
    let errors = s.sockets.iter().map(|k| (k.address.clone(), k.send_errors as f64)).collect();
    f.labelled(Counter, "send_errors_total", "Answers the kernel did not take, per listening socket.", "socket", errors);
    for c in TOTALS {
        f.scalars(&[(Counter, c.metric, c.help, count((c.get)(&s.totals)))]);
    }
    f.scalars(&[
        (Gauge, "client_log_entries", "Clients in the client log.", count(s.client_log.logged)),
        (Counter, "client_log_not_logged_total", "Requests from new clients that found the client log full.", count(s.client_log.not_logged)),
    ]);
    if let Some(l) = &s.load {
        f.scalars(&[
            (Gauge, "vms", "QEMU processes found on this host.", count(l.vms)),
            (Gauge, "vms_profiled", "VMs whose minute profile of host CPU is known.", count(l.profiled)),
            (Gauge, "host_predicted_peak_cores", "The host's predicted CPU in its busiest second of the minute, from the VMs' profiles at their served offsets.", Some(l.peak_cores)),
        ]);
        let rows = l.views.iter().map(|v| (v.view.clone(), v.peak_cores)).collect();
        f.labelled(Gauge, "view_predicted_peak_cores", "Each view's VMs' predicted CPU in their busiest second of the minute.", "view", rows);
        let rows = l.groups.iter().map(|g| (g.group.clone(), g.peak_cores)).collect();
        f.labelled(Gauge, "group_predicted_peak_cores", "Each group placed by load: its VMs' predicted CPU in their busiest second of the minute, all its views together.", "group", rows);
    }
    if let Some(n) = &s.nts {
        let outcomes = [("cookies", n.ke_sessions), ("refused", n.ke_refused), ("failed", n.ke_failed), ("timeout", n.ke_timeouts), ("busy", n.ke_busy)];
        let rows = outcomes.iter().map(|(o, c)| (o.to_string(), *c as f64)).collect();
        f.labelled(Counter, "nts_ke_sessions_total", "NTS-KE connections, by outcome: cookies given, refused with an error record, failed (TLS, ALPN, closed early), timed out, or closed at once while max_connections were busy.", "outcome", rows);
        let rows = n.ke_sessions_by_aead.iter().map(|(a, c)| (a.clone(), *c as f64)).collect();
        f.labelled(Counter, "nts_ke_cookie_sessions_total", "NTS-KE sessions that gave cookies, by the AEAD algorithm negotiated (AEAD_AES_128_GCM_SIV: chrony 4.4 and later; AEAD_AES_SIV_CMAC_256: older clients).", "aead", rows);
        f.scalars(&[
            (Gauge, "nts_ke_active_sessions", "NTS-KE sessions running now.", count(n.ke_active)),
            (Gauge, "nts_master_key_age_seconds", "Age of the current NTS cookie master key.", count(n.master_key_age_s)),
        ]);
    }
    if let Some(c) = &s.cluster {
        cluster(f, c);
    }
    reference(f, &s.reference)
}

#[rustfmt::skip] // a table: one metric a line
fn cluster(f: &mut Families, c: &crate::control::status::ClusterStatus) {
    let count = |n: u64| Some(n as f64);
    f.scalars(&[
        (Gauge, "cluster_store_available", "1 while the cluster's etcd answered this host's last call, 0 while it is out of reach.", count(u64::from(c.available))),
        (Gauge, "cluster_store_revision", "The etcd revision this host's copy has every change up to.", Some(c.revision as f64)),
        (Gauge, "cluster_clients", "Clients in this host's copy of the cluster's tables, all groups.", count(c.clients)),
        (Counter, "cluster_resyncs_total", "Full reads of the cluster's store (start, compaction, after an outage).", count(c.resyncs)),
        (Counter, "cluster_store_errors_total", "Calls to etcd that failed.", count(c.errors)),
        (Counter, "cluster_unknown_view_total", "Requests from clients whose recorded view this host's config does not have.", count(c.unknown_view)),
    ]);
    let writes = [("created", c.created), ("lost_race", c.lost_races), ("move", c.moves_recorded), ("refresh", c.refreshed), ("forget", c.forgotten)];
    let rows = writes.iter().map(|(k, n)| (k.to_string(), *n as f64)).collect();
    f.labelled(Counter, "cluster_writes_total", "This host's records in etcd, by kind: new clients' views (created, or lost_race: another host's was first), moves made here, last-seen refreshes, idle clients deleted.", "kind", rows);
    let fates = [("unanswered", c.unanswered_unavailable), ("hashed", c.hashed_unavailable)];
    let rows = fates.iter().map(|(k, n)| (k.to_string(), *n as f64)).collect();
    f.labelled(Counter, "cluster_new_clients_while_unavailable_total", "Requests from clients new to the cluster while etcd could not record their view: not answered with time, or given the keyed hash's view.", "fate", rows);
    f.scalars(&[(Counter, "cluster_moves_followed_total", "Clients this host moved because another host recorded a move.", count(c.moves_followed))]);
}

/// 1 for the state among `states` that is `now`, 0 for the others.
fn one_of(states: &[&str], now: &str) -> Rows {
    states
        .iter()
        .map(|st| (st.to_string(), f64::from(u8::from(now == *st))))
        .collect()
}

fn rejected<'a>(f: &mut Families, r: impl Iterator<Item = (&'a str, u64)>) {
    let rows = r.map(|(k, n)| (k.to_string(), n as f64)).collect();
    f.labelled(
        Counter,
        "ticks_rejected_total",
        "Tick datagrams rejected, by reason.",
        "reason",
        rows,
    );
}

#[rustfmt::skip] // a table: one metric a line
fn reference(f: &mut Families, r: &ReferenceStatus) {
    let states: &[&str] = if r.source == "pulse" {
        &["locked", "holdover", "unsynchronized"]
    } else {
        &["synchronized", "local", "unsynchronized"]
    };
    // Two labels: the source, then the state.
    let samples: Vec<(Vec<String>, f64)> = one_of(states, &r.state)
        .into_iter()
        .map(|(st, v)| (vec![r.source.clone(), st], v))
        .collect();
    f.family(Gauge, "reference_state", "1 for the reference's current state.", &["source", "state"], &samples);
    f.scalars(&[
        (Gauge, "reference_stratum", "The stratum answers carry (16: unsynchronized).", Some(f64::from(r.stratum))),
        (Gauge, "reference_root_dispersion_seconds", "The root dispersion answers carry.", Some(r.root_dispersion_s)),
        (Gauge, "reference_error_bound_seconds", "Maximum error: the kernel's (system) or the pulse model's.", r.max_error_s),
        (Gauge, "reference_offset_seconds", "Tick time (+ offset) minus the host clock, latest tick.", r.offset_s),
        (Gauge, "reference_jitter_seconds", "Standard deviation of the recent ticks' offsets.", r.jitter_s),
        (Gauge, "reference_frequency_ppm", "The pulse model's frequency against the host's monotonic clock.", r.frequency_ppm),
        (Counter, "ticks_total", "Ticks used.", r.ticks.and_then(count)),
        (Counter, "ticks_missed_total", "Seconds without a tick while following a transmitter.", r.missed.and_then(count)),
        (Counter, "tick_restarts_total", "Times the tick receiver had to lock again.", r.restarts.and_then(count)),
    ]);
    rejected(f, r.rejected.iter().map(|(k, n)| (k.as_str(), *n)));
}

#[rustfmt::skip] // a table: one metric a line
fn listen(f: &mut Families, l: &ListenStatus) {
    f.labelled(Gauge, "listen_state", "1 for the receiver's current state.", "state", one_of(&["searching", "locked", "lost"], &l.state));
    for c in TICKS {
        f.scalars(&[(Counter, c.metric, c.help, count((c.get)(&l.counts)))]);
    }
    f.scalars(&[
        (Gauge, "reference_offset_seconds", "Tick time (+ offset + delay) minus the local clock, latest sample.", l.offset_ns.map(|n| n as f64 / 1e9)),
        (Gauge, "reference_jitter_seconds", "Standard deviation of the recent samples' offsets.", l.jitter_ns.map(|n| n as f64 / 1e9)),
        (Gauge, "last_sample_age_seconds", "Age of the latest sample.", l.seconds_since_sample),
        (Counter, "sock_samples_total", "Samples sent to chrony's SOCK refclock.", l.sock_sent.and_then(count)),
        (Counter, "shm_samples_total", "Samples written to the SHM refclock segment.", l.shm_written.and_then(count)),
    ]);
    let rows = Reject::ALL.iter().filter(|r| l.counts.rejected[**r as usize] > 0);
    rejected(f, rows.map(|r| (r.name(), l.counts.rejected[*r as usize])));
}

#[rustfmt::skip] // a table: one metric a line
fn send(f: &mut Families, s: &SendStatus) {
    f.scalars(&[
        (Counter, "ticks_sent_total", "Ticks sent (to every destination).", count(s.ticks_sent)),
        (Counter, "tick_send_errors_total", "Tick datagrams the kernel did not take.", count(s.send_errors)),
    ]);
    let states = one_of(&["synchronized", "holdover", "unsynchronized"], &s.clock);
    f.labelled(Gauge, "source_clock_state", "1 for the state of the clock the ticks mark.", "state", states);
}

/// The sample lines (not comments) of an exposition.
pub fn sample_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.starts_with('#'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::counters::ViewCounts;
    use crate::control::status::ViewStatus;

    #[test]
    fn serve_metrics_have_the_prefix_units_and_per_view_labels() {
        let mut s = ServeStatus::default();
        s.reference.source = "system".into();
        s.reference.state = "synchronized".into();
        s.views.push(ViewStatus {
            name: "b".into(),
            offset_s: 15.0,
            counts: ViewCounts {
                requests: 7,
                ..ViewCounts::default()
            },
            ..ViewStatus::default()
        });
        s.totals.drops[DropReason::NoView as usize] = 3;
        let text = render(&Status::Serve(s), Some(1.5));
        for want in [
            "ntp_offset_requests_total{view=\"b\"} 7",
            "ntp_offset_view_offset_seconds{view=\"b\"} 15",
            "ntp_offset_dropped_total{reason=\"no_view\"} 3",
            "ntp_offset_reference_state{source=\"system\",state=\"synchronized\"} 1",
            "ntp_offset_host_cpu_minute_peak_to_mean_ratio 1.5",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
        assert!(
            sample_lines(&text).all(|l| l.starts_with("ntp_offset_")),
            "{text}"
        );
    }
}
