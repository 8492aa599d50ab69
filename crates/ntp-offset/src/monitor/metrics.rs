//! `/metrics`: the status in Prometheus' text format (0.0.4, which every scraper and
//! `promtool check metrics` read), through the prometheus crate. Built per scrape from one
//! status reading (the workers' counters summed then), so the NTP path keeps no metric
//! objects of its own. Names: `ntp_offset_` prefix, `_total` counters, seconds as the unit.

use prometheus::{CounterVec, Encoder, GaugeVec, Opts, Registry, TextEncoder};

use crate::control::status::{ListenStatus, ReferenceStatus, SendStatus, ServeStatus, Status};

pub use prometheus::TEXT_FORMAT as CONTENT_TYPE;

type Labels = Vec<(&'static str, String)>;

/// The exposition text for one status reading.
pub fn render(status: &Status, minute_peak_to_mean: Option<f64>) -> String {
    let mut f = Family {
        registry: Registry::new_custom(Some("ntp_offset".into()), None).expect("a valid prefix"),
    };
    f.gauge(
        "build_info",
        "Always 1; the version is a label.",
        &[(
            vec![("version", env!("CARGO_PKG_VERSION").to_string())],
            1.0,
        )],
    );
    f.gauge(
        "host_cpu_minute_peak_to_mean_ratio",
        "This hour's busiest second of the minute over the mean (1: flat; 60: all load in one second).",
        &some(minute_peak_to_mean),
    );
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

/// Registers one metric family per call; families without samples are left out.
struct Family {
    registry: Registry,
}

impl Family {
    fn counter(&mut self, name: &str, help: &str, samples: &[(Labels, f64)]) {
        let Some(names) = label_names(samples) else {
            return;
        };
        let v = CounterVec::new(Opts::new(name, help), &names).expect("a valid metric");
        for (labels, x) in samples {
            v.with_label_values(&values(labels)).inc_by(x.max(0.0));
        }
        self.registry
            .register(Box::new(v))
            .expect("each family registered once");
    }

    fn gauge(&mut self, name: &str, help: &str, samples: &[(Labels, f64)]) {
        let Some(names) = label_names(samples) else {
            return;
        };
        let v = GaugeVec::new(Opts::new(name, help), &names).expect("a valid metric");
        for (labels, x) in samples {
            v.with_label_values(&values(labels)).set(*x);
        }
        self.registry
            .register(Box::new(v))
            .expect("each family registered once");
    }
}

fn label_names(samples: &[(Labels, f64)]) -> Option<Vec<&'static str>> {
    samples
        .first()
        .map(|(l, _)| l.iter().map(|(k, _)| *k).collect())
}

fn values(labels: &Labels) -> Vec<&str> {
    labels.iter().map(|(_, v)| v.as_str()).collect()
}

fn one(v: f64) -> Vec<(Labels, f64)> {
    vec![(Vec::new(), v)]
}

fn some(v: Option<f64>) -> Vec<(Labels, f64)> {
    v.map(one).unwrap_or_default()
}

fn by_view(
    s: &ServeStatus,
    v: impl Fn(&crate::control::status::ViewStatus) -> f64,
) -> Vec<(Labels, f64)> {
    s.views
        .iter()
        .map(|view| (vec![("view", view.name.clone())], v(view)))
        .collect()
}

fn serve(f: &mut Family, s: &ServeStatus) {
    f.counter(
        "requests_total",
        "Requests that chose each view (answered, KoD or rate-limited).",
        &by_view(s, |v| v.requests as f64),
    );
    f.counter(
        "answers_total",
        "Time answers sent, per view.",
        &by_view(s, |v| v.answered as f64),
    );
    f.counter(
        "kod_rate_total",
        "KoD RATE answers, per view.",
        &by_view(s, |v| v.kod_rate as f64),
    );
    f.counter(
        "rate_limited_total",
        "Requests dropped by the rate limiter, per view.",
        &by_view(s, |v| v.rate_limited as f64),
    );
    f.gauge(
        "view_offset_seconds",
        "Each view's offset from the reference.",
        &by_view(s, |v| v.offset_s),
    );
    f.gauge(
        "view_clients",
        "Clients whose last request in the hour chose each view (from the client log).",
        &by_view(s, |v| v.clients_last_hour as f64),
    );
    let assigned: Vec<(Labels, f64)> = s
        .views
        .iter()
        .filter_map(|v| {
            v.assigned
                .map(|n| (vec![("view", v.name.clone())], n as f64))
        })
        .collect();
    f.gauge(
        "view_assigned_clients",
        "Clients a balanced spread group has assigned to each view.",
        &assigned,
    );
    f.counter(
        "kod_deny_total",
        "KoD DENY answers (requests matching no view, with unmatched = \"deny\").",
        &one(s.totals.kod_deny as f64),
    );
    let dropped: Vec<(Labels, f64)> = s
        .totals
        .dropped
        .iter()
        .map(|(r, n)| (vec![("reason", r.clone())], *n as f64))
        .collect();
    f.counter(
        "dropped_total",
        "Requests dropped without an answer, by reason.",
        &dropped,
    );
    let socket = |v: &dyn Fn(&crate::control::status::SocketStatus) -> u64| -> Vec<(Labels, f64)> {
        s.sockets
            .iter()
            .map(|k| (vec![("socket", k.address.clone())], v(k) as f64))
            .collect()
    };
    f.counter(
        "received_total",
        "Datagrams received, per listening socket.",
        &socket(&|k| k.received),
    );
    f.counter(
        "send_errors_total",
        "Answers the kernel did not take, per listening socket.",
        &socket(&|k| k.send_errors),
    );
    f.gauge(
        "client_log_entries",
        "Clients in the client log.",
        &one(s.client_log.logged as f64),
    );
    f.counter(
        "client_log_not_logged_total",
        "Requests from new clients that found the client log full.",
        &one(s.client_log.not_logged as f64),
    );
    reference(f, &s.reference)
}

fn reference(f: &mut Family, r: &ReferenceStatus) {
    let states: &[&str] = if r.source == "pulse" {
        &["locked", "holdover", "unsynchronized"]
    } else {
        &["synchronized", "local", "unsynchronized"]
    };
    let state: Vec<(Labels, f64)> = states
        .iter()
        .map(|st| {
            (
                vec![("source", r.source.clone()), ("state", st.to_string())],
                f64::from(u8::from(r.state == *st)),
            )
        })
        .collect();
    f.gauge(
        "reference_state",
        "1 for the reference's current state.",
        &state,
    );
    f.gauge(
        "reference_stratum",
        "The stratum answers carry (16: unsynchronized).",
        &one(f64::from(r.stratum)),
    );
    f.gauge(
        "reference_root_dispersion_seconds",
        "The root dispersion answers carry.",
        &one(r.root_dispersion_s),
    );
    f.gauge(
        "reference_error_bound_seconds",
        "Maximum error: the kernel's (system) or the pulse model's.",
        &some(r.max_error_s),
    );
    f.gauge(
        "reference_offset_seconds",
        "Tick time (+ offset) minus the host clock, latest tick.",
        &some(r.offset_s),
    );
    f.gauge(
        "reference_jitter_seconds",
        "Standard deviation of the recent ticks' offsets.",
        &some(r.jitter_s),
    );
    f.gauge(
        "reference_frequency_ppm",
        "The pulse model's frequency against the host's monotonic clock.",
        &some(r.frequency_ppm),
    );
    f.counter(
        "ticks_total",
        "Ticks used.",
        &some(r.ticks.map(|n| n as f64)),
    );
    f.counter(
        "ticks_missed_total",
        "Seconds without a tick while following a transmitter.",
        &some(r.missed.map(|n| n as f64)),
    );
    f.counter(
        "tick_restarts_total",
        "Times the tick receiver had to lock again.",
        &some(r.restarts.map(|n| n as f64)),
    );
    rejected(f, &r.rejected)
}

fn rejected(f: &mut Family, r: &std::collections::BTreeMap<String, u64>) {
    let rows: Vec<(Labels, f64)> = r
        .iter()
        .map(|(k, n)| (vec![("reason", k.clone())], *n as f64))
        .collect();
    f.counter(
        "ticks_rejected_total",
        "Tick datagrams rejected, by reason.",
        &rows,
    );
}

fn listen(f: &mut Family, l: &ListenStatus) {
    let state: Vec<(Labels, f64)> = ["searching", "locked", "lost"]
        .iter()
        .map(|st| {
            (
                vec![("state", st.to_string())],
                f64::from(u8::from(l.state == *st)),
            )
        })
        .collect();
    f.gauge(
        "listen_state",
        "1 for the receiver's current state.",
        &state,
    );
    f.counter(
        "tick_datagrams_total",
        "Tick datagrams received.",
        &one(l.datagrams as f64),
    );
    f.counter("ticks_total", "Ticks accepted.", &one(l.ticks as f64));
    f.counter(
        "samples_total",
        "Samples made from ticks (fed to chrony or ntpd).",
        &one(l.samples as f64),
    );
    f.counter(
        "ticks_missed_total",
        "Seconds without a tick while following a transmitter.",
        &one(l.missed as f64),
    );
    f.counter(
        "tick_restarts_total",
        "Times the receiver had to lock again.",
        &one(l.restarts as f64),
    );
    f.counter(
        "follow_ups_missing_total",
        "Ticks whose announced follow-up never came.",
        &one(l.follow_ups_missing as f64),
    );
    f.gauge(
        "reference_offset_seconds",
        "Tick time (+ offset + delay) minus the local clock, latest sample.",
        &some(l.offset_ns.map(|n| n as f64 / 1e9)),
    );
    f.gauge(
        "reference_jitter_seconds",
        "Standard deviation of the recent samples' offsets.",
        &some(l.jitter_ns.map(|n| n as f64 / 1e9)),
    );
    f.gauge(
        "last_sample_age_seconds",
        "Age of the latest sample.",
        &some(l.seconds_since_sample),
    );
    f.counter(
        "sock_samples_total",
        "Samples sent to chrony's SOCK refclock.",
        &some(l.sock_sent.map(|n| n as f64)),
    );
    f.counter(
        "shm_samples_total",
        "Samples written to the SHM refclock segment.",
        &some(l.shm_written.map(|n| n as f64)),
    );
    rejected(f, &l.rejected)
}

fn send(f: &mut Family, s: &SendStatus) {
    f.counter(
        "ticks_sent_total",
        "Ticks sent (to every destination).",
        &one(s.ticks_sent as f64),
    );
    f.counter(
        "tick_send_errors_total",
        "Tick datagrams the kernel did not take.",
        &one(s.send_errors as f64),
    );
    let state: Vec<(Labels, f64)> = ["synchronized", "holdover", "unsynchronized"]
        .iter()
        .map(|st| {
            (
                vec![("state", st.to_string())],
                f64::from(u8::from(s.clock == *st)),
            )
        })
        .collect();
    f.gauge(
        "source_clock_state",
        "1 for the state of the clock the ticks mark.",
        &state,
    )
}

/// A check that the text is what a scraper expects, used by tests (promtool is the real one).
pub fn sample_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.starts_with('#'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::status::ViewStatus;

    #[test]
    fn serve_metrics_have_the_prefix_units_and_per_view_labels() {
        let mut s = ServeStatus::default();
        s.reference.source = "system".into();
        s.reference.state = "synchronized".into();
        s.views.push(ViewStatus {
            name: "b".into(),
            offset_s: 15.0,
            requests: 7,
            ..ViewStatus::default()
        });
        s.totals.dropped.insert("no_view".into(), 3);
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
