//! The web listener (`[metrics] listen`, `--metrics`): `/metrics` for Prometheus, `/` the
//! status page, `/plots` its live part, `/status.json` the control socket's status. HTTP is
//! tiny_http's (a small synchronous server: no async runtime for one low-rate endpoint); this
//! thread only routes. Opt-in, and meant for loopback or a management network.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tiny_http::{Header, Method, Response, Server};
use tracing::{info, warn};

use super::{metrics, page, Monitor};

pub struct WebServer {
    pub addr: SocketAddr,
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Why the web listener did not start. (tiny_http's own error is a boxed one, kept as text.)
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("metrics listener {addr}: {message}")]
    Listen { addr: SocketAddr, message: String },
    #[error("cannot start the metrics thread: {0}")]
    Thread(std::io::Error),
}

impl WebServer {
    pub fn start(
        addr: SocketAddr,
        monitor: Arc<Monitor>,
        title: &str,
    ) -> Result<WebServer, WebError> {
        let listener = |message: String| WebError::Listen { addr, message };
        let server = Arc::new(Server::http(addr).map_err(|e| listener(e.to_string()))?);
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| listener("not an IP socket".into()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (server, stop, title) = (server.clone(), stop.clone(), title.to_string());
            std::thread::Builder::new()
                .name("metrics http".into())
                .spawn(move || route(&server, &monitor, &stop, &title))
                .map_err(WebError::Thread)?
        };
        info!(metrics = %format!("http://{bound}/metrics"), page = %format!("http://{bound}/"), "web listener ready");
        Ok(WebServer {
            addr: bound,
            server,
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid header")
}

fn route(server: &Server, monitor: &Monitor, stop: &AtomicBool, title: &str) {
    while !stop.load(Ordering::Relaxed) {
        let req = match server.recv_timeout(Duration::from_millis(500)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                warn!("metrics listener: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let path = req.url().split('?').next().unwrap_or("/").to_string();
        let (body, kind, code) = match (req.method(), path.as_str()) {
            (Method::Get | Method::Head, "/metrics") => {
                let peak = monitor.cpu().current().and_then(|h| h.peak_to_mean());
                (
                    metrics::render(&monitor.status(), peak),
                    metrics::CONTENT_TYPE,
                    200,
                )
            }
            (Method::Get | Method::Head, "/") => {
                let st = monitor.status();
                let body = page::page(
                    title,
                    &st,
                    &monitor.history(),
                    &monitor.cpu(),
                    &monitor.vms(),
                );
                (body, "text/html; charset=utf-8", 200)
            }
            (Method::Get | Method::Head, "/plots") => {
                let st = monitor.status();
                let body = page::plots(&st, &monitor.history(), &monitor.cpu(), &monitor.vms());
                (body, "text/html; charset=utf-8", 200)
            }
            (Method::Get | Method::Head, "/status.json") => (
                serde_json::to_string_pretty(&monitor.status()).unwrap_or_default(),
                "application/json",
                200,
            ),
            (Method::Get | Method::Head, _) => (
                "not found: try /, /metrics or /status.json\n".into(),
                "text/plain; charset=utf-8",
                404,
            ),
            _ => ("only GET\n".into(), "text/plain; charset=utf-8", 405),
        };
        let resp = Response::from_string(body)
            .with_status_code(code)
            .with_header(header("Content-Type", kind))
            .with_header(header("Cache-Control", "no-store"));
        let _ = req.respond(resp);
    }
}
