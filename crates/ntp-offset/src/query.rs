//! `ntp-offset query`: an SNTP client that asks servers and prints each one's offset from the
//! local clock and the differences between them: "are my views exactly 15 s apart?"

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::ErrorKind;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use ntp_offset_proto::client::{evaluate, ResponseError, Sample};
use ntp_offset_proto::packet::{Header, LeapIndicator};
use ntp_offset_proto::time::{NtpTimestamp, Time};
use ntp_offset_sys::batch::{enable_rx_timestamps, is_retryable, RecvBatch};
use ntp_offset_sys::clock::realtime;

use crate::logging::out;

#[derive(Clone, Copy, Debug)]
pub struct QueryOptions {
    /// Requests per server; the one with the smallest delay is reported.
    pub count: u32,
    /// How long to wait for each answer.
    pub timeout: Duration,
    /// Pause between requests to one server.
    pub interval: Duration,
    pub version: u8,
    /// One JSON object per server and line instead of the table.
    pub json: bool,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            count: 4,
            timeout: Duration::from_secs(2),
            interval: Duration::from_millis(50),
            version: 4,
            json: false,
        }
    }
}

/// Why a server gave no report, or no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("cannot resolve `{target}`: {source}")]
    Resolve {
        target: String,
        source: std::io::Error,
    },
    #[error("`{0}` has no address")]
    NoAddress(String),
    /// Opening or connecting the client's socket: `cannot open a socket`, `cannot reach ...`.
    #[error("{step}: {source}")]
    Socket {
        step: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Timestamps(std::io::Error),
    /// Every request went unanswered or failed (the report says how).
    #[error("{}", .0.problem())]
    Unanswered(Box<Report>),
}

/// Resolves `host[:port]` (port 123 when absent; `[v6]:port` for IPv6 with a port).
pub fn resolve(target: &str) -> Result<SocketAddr, QueryError> {
    let with_port = if target.parse::<SocketAddr>().is_ok() {
        target.to_string()
    } else if target.parse::<std::net::IpAddr>().is_ok() {
        SocketAddr::new(target.parse().unwrap(), 123).to_string()
    } else if target
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        target.to_string()
    } else {
        format!("{target}:123")
    };
    with_port
        .to_socket_addrs()
        .map_err(|source| QueryError::Resolve {
            target: target.to_string(),
            source,
        })?
        .next()
        .ok_or_else(|| QueryError::NoAddress(target.to_string()))
}

/// What became of one request.
#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    Answer(Sample),
    /// No answer within the timeout.
    Silence,
    /// A kiss-o'-death, with its code (RATE, DENY, ...).
    Kiss([u8; 4]),
    Failed(String),
}

/// All of one server's requests, and the best answer among them.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub best: Option<Sample>,
    pub requests: u32,
    pub answers: u32,
    pub silent: u32,
    /// Kiss-o'-death codes in the order they came.
    pub kisses: Vec<String>,
    pub errors: Vec<String>,
    /// How long each request waited at most.
    pub timeout: Duration,
}

impl Report {
    fn add(&mut self, o: Outcome) {
        self.requests += 1;
        match o {
            Outcome::Answer(s) => {
                self.answers += 1;
                if self.best.is_none_or(|b| s.delay < b.delay) {
                    self.best = Some(s);
                }
            }
            Outcome::Silence => self.silent += 1,
            Outcome::Kiss(code) => self.kisses.push(
                String::from_utf8_lossy(&code)
                    .trim_end_matches('\0')
                    .to_string(),
            ),
            Outcome::Failed(e) => {
                if !self.errors.contains(&e) {
                    self.errors.push(e);
                }
            }
        }
    }

    /// What went wrong, when nothing usable came back: every request's fate, counted.
    pub fn problem(&self) -> String {
        format!(
            "no time from {} request{}: {}",
            self.requests,
            if self.requests == 1 { "" } else { "s" },
            self.misses().join(", ")
        )
    }

    /// The requests that brought no answer, by fate: unanswered, each kiss-o'-death code (with
    /// what it asks of the client), and each error; empty when every request was answered.
    pub fn misses(&self) -> Vec<String> {
        let mut parts = Vec::new();
        if self.silent > 0 {
            parts.push(format!(
                "{} unanswered within {:.1} s each",
                self.silent,
                self.timeout.as_secs_f64()
            ));
        }
        let mut codes: Vec<&String> = Vec::new();
        for k in &self.kisses {
            if !codes.contains(&k) {
                codes.push(k);
            }
        }
        for code in codes {
            let n = self.kisses.iter().filter(|k| *k == code).count();
            let why = match code.as_str() {
                "RATE" => " (the server rate-limits this client: ask less often)",
                "DENY" | "RSTR" => " (the server refuses this client)",
                _ => "",
            };
            parts.push(format!("{n} kiss-o'-death {code}{why}"));
        }
        parts.extend(self.errors.iter().cloned());
        parts
    }
}

/// One exchange with `addr`.
fn exchange(
    socket: &UdpSocket,
    batch: &mut RecvBatch,
    opts: &QueryOptions,
    cookie: u64,
) -> Outcome {
    let sent = NtpTimestamp::from_bits(cookie);
    let request = Header::client_request(opts.version, sent).encode();
    let (s, ns) = realtime();
    if let Err(e) = socket.send(&request) {
        return Outcome::Failed(format!("send failed: {e}"));
    }
    let t1 = Time::from_timespec(s, ns);
    let deadline = Instant::now() + opts.timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Outcome::Silence;
        }
        if let Err(e) = socket.set_read_timeout(Some(left)) {
            return Outcome::Failed(e.to_string());
        }
        match batch.recv(socket) {
            Ok(_) => {}
            Err(e) if is_retryable(&e) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                return Outcome::Failed("connection refused (nothing listens there)".into())
            }
            Err(e) => return Outcome::Failed(format!("receive failed: {e}")),
        }
        let Some(r) = batch.get(0) else { continue };
        let (s4, ns4) = r.rx_time.unwrap_or_else(realtime);
        match evaluate(r.data, sent, t1, Time::from_timespec(s4, ns4)) {
            Ok(sample) => return Outcome::Answer(sample),
            // A stale or foreign packet: keep waiting for ours.
            Err(ResponseError::OriginMismatch) => continue,
            Err(ResponseError::Kiss(code)) => return Outcome::Kiss(code),
            Err(e) => return Outcome::Failed(e.to_string()),
        }
    }
}

/// Asks `addr` `opts.count` times; the report keeps the answer with the smallest delay and
/// what became of the others.
pub fn query_all(addr: SocketAddr, opts: &QueryOptions) -> Result<Report, QueryError> {
    let step = |step: String| move |source| QueryError::Socket { step, source };
    let any: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let socket = UdpSocket::bind(any).map_err(step("cannot open a socket".into()))?;
    socket
        .connect(addr)
        .map_err(step(format!("cannot reach {addr}")))?;
    enable_rx_timestamps(&socket).map_err(QueryError::Timestamps)?;
    let mut batch = RecvBatch::new(1, 1024);
    let cookies = RandomState::new();
    let mut report = Report {
        timeout: opts.timeout,
        ..Report::default()
    };
    for i in 0..opts.count.max(1) {
        if i > 0 {
            std::thread::sleep(opts.interval);
        }
        report.add(exchange(
            &socket,
            &mut batch,
            opts,
            cookies.hash_one((i, addr)),
        ));
    }
    Ok(report)
}

/// The best answer of `opts.count` requests, or what became of them all.
pub fn query(addr: SocketAddr, opts: &QueryOptions) -> Result<Sample, QueryError> {
    let r = query_all(addr, opts)?;
    r.best.ok_or_else(|| QueryError::Unanswered(Box::new(r)))
}

/// The reference ID as people read it (see [`crate::text::refid`]).
pub fn refid_text(h: &Header) -> String {
    crate::text::refid(h.stratum, h.reference_id)
}

/// Runs `query` for every target and prints the table; true when every server answered as
/// synchronized.
pub fn run(targets: &[String], opts: &QueryOptions) -> bool {
    let results: Vec<(String, Result<Report, QueryError>)> = targets
        .iter()
        .map(|t| (t.clone(), resolve(t).and_then(|a| query_all(a, opts))))
        .collect();
    let synchronized = |r: &Result<Report, QueryError>| {
        r.as_ref().is_ok_and(|r| {
            r.best
                .is_some_and(|s| s.header.leap != LeapIndicator::Unsynchronized)
        })
    };
    if opts.json {
        for (target, r) in &results {
            out(format_args!("{}", json_line(target, r)));
        }
    } else {
        table(&results);
    }
    results.iter().all(|(_, r)| synchronized(r))
}

/// The servers' table, like ntpdate -q's, then each pair's difference.
fn table(results: &[(String, Result<Report, QueryError>)]) {
    let width = results
        .iter()
        .map(|(t, _)| t.len())
        .max()
        .unwrap_or(6)
        .max(6);
    out(format_args!(
        "{:width$}  {:>20}  {:>11}  {:>2}  LI  REFID",
        "SERVER", "OFFSET", "DELAY", "ST"
    ));
    for (target, r) in results {
        let row = match r {
            Ok(report @ Report { best: Some(s), .. }) => answered_row(report, s),
            Ok(r) => r.problem(),
            Err(e) => e.to_string(),
        };
        out(format_args!("{target:width$}  {row}"));
    }
    let answered: Vec<(&String, &Sample)> = results
        .iter()
        .filter_map(|(t, r)| {
            r.as_ref()
                .ok()
                .and_then(|r| r.best.as_ref())
                .map(|s| (t, s))
        })
        .collect();
    if answered.len() >= 2 {
        out(format_args!("\ndifferences between servers:"));
        for (i, (a, sa)) in answered.iter().enumerate() {
            for (b, sb) in &answered[i + 1..] {
                out(format_args!(
                    "  {b} - {a} = {:.6} s",
                    sb.offset.add(sa.offset.neg())
                ));
            }
        }
    }
}

/// A server's row after its name: the best answer, and what became of the other requests.
fn answered_row(report: &Report, s: &Sample) -> String {
    let h = &s.header;
    let mut note = String::new();
    if h.leap == LeapIndicator::Unsynchronized {
        note += "  unsynchronized";
    }
    if report.answers < report.requests {
        // Say what the JSON says: the others' fates, kiss codes included.
        note += &format!(
            "  ({} of {} answered; {})",
            report.answers,
            report.requests,
            report.misses().join(", ")
        );
    }
    format!(
        "{:>18} s  {:>9} s  {:>2}  {:>2}  {}{note}",
        format!("{:.6}", s.offset),
        format!("{:.6}", s.delay).trim_start_matches('+'),
        h.stratum,
        h.leap as u8,
        refid_text(h)
    )
}

/// One server's result for scripts: times in seconds, header fields as on the wire, and what
/// became of the requests.
fn json_line(target: &str, r: &Result<Report, QueryError>) -> serde_json::Value {
    match r {
        Ok(r) => {
            let mut v = match &r.best {
                Some(s) => {
                    let h = &s.header;
                    serde_json::json!({
                        "server": target,
                        "offset": s.offset.as_secs_f64(),
                        "delay": s.delay.as_secs_f64(),
                        "stratum": h.stratum,
                        "leap": h.leap as u8,
                        "refid": refid_text(h),
                        "root_delay": h.root_delay.to_offset().as_secs_f64(),
                        "root_dispersion": h.root_dispersion.to_offset().as_secs_f64(),
                    })
                }
                None => serde_json::json!({ "server": target, "error": r.problem() }),
            };
            v["requests"] = r.requests.into();
            v["answers"] = r.answers.into();
            v["unanswered"] = r.silent.into();
            v["kiss_codes"] = r.kisses.clone().into();
            v
        }
        Err(e) => serde_json::json!({ "server": target, "error": e.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_counts_every_request_and_names_kiss_codes() {
        let mut r = Report {
            timeout: Duration::from_secs(2),
            ..Report::default()
        };
        r.add(Outcome::Kiss(*b"RATE"));
        r.add(Outcome::Silence);
        r.add(Outcome::Kiss(*b"RATE"));
        r.add(Outcome::Kiss(*b"DENY"));
        assert_eq!(r.problem(), "no time from 4 requests: 1 unanswered within 2.0 s each, 2 kiss-o'-death RATE (the server rate-limits this client: ask less often), 1 kiss-o'-death DENY (the server refuses this client)");
    }

    #[test]
    fn a_partly_answered_report_still_names_the_misses() {
        let mut r = Report {
            timeout: Duration::from_secs(2),
            ..Report::default()
        };
        r.add(Outcome::Silence);
        r.add(Outcome::Kiss(*b"RATE"));
        r.add(Outcome::Silence);
        assert_eq!(
            r.misses(),
            [
                "2 unanswered within 2.0 s each",
                "1 kiss-o'-death RATE (the server rate-limits this client: ask less often)"
            ]
        );
        assert!(Report::default().misses().is_empty());
    }

    #[test]
    fn targets_resolve_with_default_port() {
        assert_eq!(
            resolve("127.0.0.1").unwrap(),
            "127.0.0.1:123".parse().unwrap()
        );
        assert_eq!(
            resolve("127.0.0.1:11123").unwrap(),
            "127.0.0.1:11123".parse().unwrap()
        );
        assert_eq!(resolve("::1").unwrap(), "[::1]:123".parse().unwrap());
        assert_eq!(resolve("[::1]:5").unwrap(), "[::1]:5".parse().unwrap());
        assert_eq!(resolve("localhost:7").unwrap().port(), 7);
        assert!(resolve("no-such-host.invalid").is_err());
    }
}
