//! `ntp-offset demo`: the one-command tour. Serves four views 15 s apart on loopback, queries
//! each, prints configured against measured offsets, and stops by itself.

use std::net::{SocketAddr, UdpSocket};

use ntp_offset_proto::time::Offset;

use crate::config::ServeConfig;
use crate::logging::out;
use crate::query::{self, QueryOptions};
use crate::serve::Server;

const PREFERRED_PORTS: [u16; 4] = [11123, 11124, 11125, 11126];

/// Four loopback addresses to serve on: the preferred ports when free, else the kernel's pick.
fn pick_addrs() -> Vec<SocketAddr> {
    let preferred: Vec<SocketAddr> = PREFERRED_PORTS
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    if preferred.iter().all(|a| UdpSocket::bind(a).is_ok()) {
        return preferred;
    }
    let held: Vec<UdpSocket> = (0..4)
        .filter_map(|_| UdpSocket::bind("127.0.0.1:0").ok())
        .collect();
    held.iter().filter_map(|s| s.local_addr().ok()).collect()
}

/// The tour's config, through the same checks as a file: a view per address, 15 s apart.
fn config(addrs: &[SocketAddr]) -> ServeConfig {
    let quoted: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    // This machine's clock may be kept by no daemon: the demo host is its own reference.
    let mut text = format!(
        "[server]\nlisten = [{}]\nlocal_stratum = 10\n[rate_limit]\nenabled = false\n",
        quoted.join(", ")
    );
    for (i, a) in addrs.iter().enumerate() {
        text += &format!(
            "[[view]]\nname = \"q{}\"\noffset = \"{}s\"\nlisten = [\"{a}\"]\n",
            15 * i,
            15 * i
        );
    }
    crate::config::parse(&text, "the demo's config").expect("the demo's config is valid")
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot find four free UDP ports on 127.0.0.1")]
    NoPorts,
    #[error(transparent)]
    Serve(#[from] crate::serve::error::ServeError),
}

/// Runs the tour; true when every view measured within 1 ms of its configured offset.
pub fn run() -> Result<bool, DemoError> {
    let addrs = pick_addrs();
    if addrs.len() != 4 {
        return Err(DemoError::NoPorts);
    }
    let cfg = config(&addrs);
    out(format_args!(
        "ntp-offset demo: one server, four views 15 s apart, on loopback."
    ));
    out(format_args!(
        "Each view answers on its own address; the client below is `ntp-offset query`.\n"
    ));
    let server = Server::start(cfg.clone())?;
    let opts = QueryOptions {
        count: 5,
        ..QueryOptions::default()
    };
    out(format_args!(
        "{:<5}  {:<16}  {:>11}  {:>18}  {:>9}  {:>9}",
        "VIEW", "ADDRESS", "CONFIGURED", "MEASURED", "ERROR", "DELAY"
    ));
    let mut measured = Vec::new();
    let mut ok = true;
    for (view, addr) in cfg.views.views().iter().zip(&addrs) {
        match query::query(*addr, &opts) {
            Ok(s) => {
                let err = s.offset.add(view.offset.neg());
                ok &= err.abs() < Offset::from_micros(1000);
                out(format_args!(
                    "{:<5}  {:<16}  {:>9} s  {:>16} s  {:>6} us  {:>6} us",
                    view.name,
                    addr.to_string(),
                    format!("{:.0}", view.offset),
                    format!("{:.6}", s.offset),
                    format!("{:+}", err.nanos() / 1000),
                    s.delay.nanos() / 1000
                ));
                measured.push(s.offset);
            }
            Err(e) => {
                ok = false;
                out(format_args!(
                    "{:<5}  {:<16}  {e}",
                    view.name,
                    addr.to_string()
                ));
            }
        }
    }
    if measured.len() == 4 {
        let gaps: Vec<String> = measured
            .windows(2)
            .map(|w| format!("{:.6}", w[1].add(w[0].neg())))
            .collect();
        out(format_args!(
            "\nAdjacent views measured apart by {} s (configured: 15 s).",
            gaps.join(", ")
        ));
    }
    out(format_args!("\nServer counters: {}", server.stats()));
    server.stop();
    out(format_args!(
        "\n{}",
        if ok {
            "Every view is within 1 ms of its configured offset. Next: `ntp-offset serve --config examples/try-it.toml`."
        } else {
            "Some view is off by 1 ms or more, or did not answer: see above."
        }
    ));
    Ok(ok)
}
