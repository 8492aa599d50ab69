//! The NTS-KE server's IO: one thread polls the KE listeners and accepts; each session runs
//! in a thread of its own, at most `max_connections` at once (more are closed at once and
//! counted), and within `timeout` from accept to close whatever the client does, so slow or
//! half-open clients cannot hold it. The records themselves are `proto::nts::ke`'s.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ntp_offset_proto::nts::ke::{self, Negotiated, RequestRead};
use ntp_offset_proto::nts::{Aead, SessionKeys};
use rustls::{ServerConfig, ServerConnection};
use tracing::warn;

use crate::entropy::OsEntropy;
use crate::serve::error::ServeError;
use crate::serve::Shared;

/// What a session needs that a reload may change.
pub struct Params {
    pub tls: Arc<ServerConfig>,
    pub ntp_server: Option<String>,
    pub ntp_port: Option<u16>,
    pub timeout: Duration,
    pub max_connections: usize,
}

/// KE counters, for `status` and the metrics.
#[derive(Default)]
pub struct KeStats {
    /// Sessions that ended with cookies.
    pub sessions: AtomicU64,
    /// The same, by the AEAD negotiated (in [`Aead::ALL`]'s order).
    pub sessions_by_aead: [AtomicU64; Aead::ALL.len()],
    /// Requests answered with an error record, or with no protocol in common.
    pub refused: AtomicU64,
    /// Handshakes or TLS records that failed, and clients that closed early.
    pub tls_errors: AtomicU64,
    pub timeouts: AtomicU64,
    /// Connections closed at once: `max_connections` were busy.
    pub busy: AtomicU64,
    pub active: AtomicUsize,
}

/// Logs failures at most once a minute, with how many there were.
struct QuietLog {
    last: Mutex<Option<(Instant, u64)>>,
}

impl QuietLog {
    fn note(&self, what: &str) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *last {
            Some((at, n)) if at.elapsed() < Duration::from_secs(60) => *n += 1,
            _ => {
                let before = last.map_or(0, |(_, n)| n);
                if before > 0 {
                    warn!("NTS-KE: {before} more failed sessions in the last minute");
                }
                warn!("NTS-KE session failed: {what} (further failures are logged once a minute)");
                *last = Some((Instant::now(), 0));
            }
        }
    }
}

pub struct KeServer {
    pub bound: Vec<SocketAddr>,
    pub params: Arc<ArcSwap<Params>>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl KeServer {
    pub fn start(
        listen: &[SocketAddr],
        params: Params,
        shared: Arc<Shared>,
    ) -> Result<KeServer, ServeError> {
        let mut listeners = Vec::new();
        for addr in listen {
            let l = TcpListener::bind(addr)
                .map_err(ServeError::socket(format!("NTS-KE {addr}: cannot listen")))?;
            l.set_nonblocking(true)
                .map_err(ServeError::socket(format!("NTS-KE {addr}")))?;
            listeners.push(l);
        }
        let bound = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<io::Result<Vec<_>>>()
            .map_err(ServeError::socket("NTS-KE"))?;
        shared.ke_addrs.store(Arc::new(bound.clone()));
        let params = Arc::new(ArcSwap::from_pointee(params));
        let stop = Arc::new(AtomicBool::new(false));
        let (pa, sp) = (params.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("nts-ke".into())
            .spawn(move || accept_loop(listeners, pa, sp, shared))
            .map_err(ServeError::thread("the NTS-KE thread"))?;
        Ok(KeServer {
            bound,
            params,
            stop,
            thread,
        })
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

fn accept_loop(
    listeners: Vec<TcpListener>,
    params: Arc<ArcSwap<Params>>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
) {
    let stats = &shared.ke_stats;
    let log = Arc::new(QuietLog {
        last: Mutex::new(None),
    });
    while !stop.load(Ordering::Relaxed) {
        let ready =
            ntp_offset_sys::poll::wait_readable(&listeners, Some(Duration::from_millis(200)))
                .unwrap_or(0);
        for (i, l) in listeners.iter().enumerate() {
            if ready & (1 << i) == 0 {
                continue;
            }
            let Ok((stream, _)) = l.accept() else {
                continue;
            };
            let p = params.load_full();
            if stats.active.load(Ordering::Relaxed) >= p.max_connections {
                stats.busy.fetch_add(1, Ordering::Relaxed);
                drop(stream);
                continue;
            }
            stats.active.fetch_add(1, Ordering::Relaxed);
            let (sh, lg) = (shared.clone(), log.clone());
            let spawned = std::thread::Builder::new()
                .name("nts-ke session".into())
                .spawn(move || {
                    let st = &sh.ke_stats;
                    let outcome = session(stream, &p, &sh, st);
                    st.active.fetch_sub(1, Ordering::Relaxed);
                    if let Err(e) = outcome {
                        match e {
                            Failure::Timeout => st.timeouts.fetch_add(1, Ordering::Relaxed),
                            _ => st.tls_errors.fetch_add(1, Ordering::Relaxed),
                        };
                        lg.note(&e.to_string());
                    }
                });
            if spawned.is_err() {
                stats.active.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

#[derive(Debug)]
enum Failure {
    Timeout,
    Io(io::Error),
    Tls(rustls::Error),
    NoAlpn,
    Closed,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => write!(f, "timed out"),
            Failure::Io(e) => write!(f, "{e}"),
            Failure::Tls(e) => write!(f, "TLS: {e}"),
            Failure::NoAlpn => write!(f, "the client did not offer ALPN ntske/1"),
            Failure::Closed => write!(
                f,
                "the client closed the connection before its request ended"
            ),
        }
    }
}

/// One KE session: handshake, the client's request, the answer, close.
fn session(
    mut stream: TcpStream,
    params: &Params,
    shared: &Shared,
    stats: &KeStats,
) -> Result<(), Failure> {
    let deadline = Instant::now() + params.timeout;
    stream.set_nonblocking(false).map_err(Failure::Io)?;
    let _ = stream.set_nodelay(true);
    let mut conn = ServerConnection::new(params.tls.clone()).map_err(Failure::Tls)?;
    let mut request = Vec::new();
    let answer = loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(Failure::Timeout)?;
        stream.set_read_timeout(Some(left)).map_err(Failure::Io)?;
        stream.set_write_timeout(Some(left)).map_err(Failure::Io)?;
        if conn.wants_write() {
            conn.write_tls(&mut stream).map_err(io_failure)?;
            continue;
        }
        if !conn.is_handshaking() {
            if conn.alpn_protocol() != Some(ke::ALPN) {
                return Err(Failure::NoAlpn);
            }
            let mut chunk = [0u8; 1024];
            match conn.reader().read(&mut chunk) {
                Ok(0) => return Err(Failure::Closed),
                Ok(n) => {
                    request.extend_from_slice(&chunk[..n]);
                    match ke::read_request(&request) {
                        RequestRead::Incomplete => continue,
                        RequestRead::Complete(req) => {
                            break answer_for(req.negotiate(), &conn, shared, params)
                        }
                        RequestRead::Refused(e) => break refusal(ke::error_response(e.code())),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Failure::Io(e)),
            }
        }
        if conn.read_tls(&mut stream).map_err(io_failure)? == 0 {
            return Err(Failure::Closed);
        }
        if let Err(e) = conn.process_new_packets() {
            // Send the alert that says why, then give up.
            let _ = conn.write_tls(&mut stream);
            return Err(Failure::Tls(e));
        }
    };
    let Answer { records, cookies } = answer;
    conn.writer().write_all(&records).map_err(Failure::Io)?;
    conn.send_close_notify();
    while conn.wants_write() {
        if Instant::now() >= deadline {
            return Err(Failure::Timeout);
        }
        conn.write_tls(&mut stream).map_err(io_failure)?;
    }
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Write);
    match cookies {
        Some(aead) => {
            stats.sessions.fetch_add(1, Ordering::Relaxed);
            if let Some(i) = Aead::ALL.iter().position(|a| *a == aead) {
                stats.sessions_by_aead[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        None => {
            stats.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

fn io_failure(e: io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Timeout,
        _ => Failure::Io(e),
    }
}

/// A session's answer: its records, and the AEAD of the cookies they hand out (counted as a
/// session) or None (refused).
struct Answer {
    records: Vec<u8>,
    cookies: Option<Aead>,
}

fn refusal(records: Vec<u8>) -> Answer {
    Answer {
        records,
        cookies: None,
    }
}

/// The answer to a complete request: cookies, or the record that says why not.
fn answer_for(
    negotiated: Result<Negotiated, ke::KeError>,
    conn: &ServerConnection,
    shared: &Shared,
    params: &Params,
) -> Answer {
    let session = match negotiated {
        Ok(Negotiated::Ntpv4(session)) => session,
        Ok(Negotiated::NoCommonProtocol) => return refusal(ke::no_protocol_response()),
        Err(e) => return refusal(ke::error_response(e.code())),
    };
    cookies_for(session, conn, shared, params)
        .map(|records| Answer {
            records,
            cookies: Some(session.aead),
        })
        .unwrap_or_else(|| refusal(ke::error_response(ke::ErrorCode::InternalServerError)))
}

/// The NTPv4 answer with eight cookies; None when the keys cannot be had.
fn cookies_for(
    session: ke::Session,
    conn: &ServerConnection,
    shared: &Shared,
    params: &Params,
) -> Option<Vec<u8>> {
    let master = shared.nts_keys.load_full()?;
    let keys = SessionKeys::export(session.aead, |out, s2c| {
        let context = session.exporter_context(s2c);
        conn.export_keying_material(out, ke::EXPORTER_LABEL, Some(&context[..]))
            .map(|_| ())
    })
    .ok()?;
    let mut rng = OsEntropy::default();
    let cookies: Vec<Vec<u8>> = (0..ke::COOKIES_PER_SESSION)
        .map(|_| master.seal(&keys, &mut rng).as_bytes().to_vec())
        .collect();
    Some(ke::ntp_response(
        session,
        &cookies,
        params.ntp_server.as_deref(),
        params.ntp_port,
    ))
}
