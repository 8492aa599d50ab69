//! Opening the UDP sockets that receive with kernel timestamps (`serve`, `pulse listen`): one
//! place for the set-up and for errors that say what to do.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// A UDP socket that would not open: what was being done, to which address, and a hint at
/// what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("cannot {what} {addr}: {source}{hint}")]
pub struct BindError {
    pub what: String,
    pub addr: SocketAddr,
    pub source: io::Error,
    pub hint: String,
}

/// Opens a UDP socket bound to `addr` with kernel receive timestamps (SO_TIMESTAMPNS); an IPv6
/// address gets IPV6_V6ONLY, so [::] and 0.0.0.0 can be bound side by side. `configure` sets
/// the caller's options before the bind and names the option in its error. `in_use` explains
/// an address already in use, for the caller's kind of socket.
pub fn bind_timestamped(
    addr: SocketAddr,
    in_use: &str,
    configure: impl FnOnce(&Socket) -> Result<(), (String, io::Error)>,
) -> Result<UdpSocket, BindError> {
    let explain = |what: &str, e: io::Error| {
        let hint = if e.kind() == io::ErrorKind::PermissionDenied && addr.port() < 1024 {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE: see docs/service.md, \"Port 123 and the units\")"
        } else if e.kind() == io::ErrorKind::AddrInUse {
            in_use
        } else if e.kind() == io::ErrorKind::AddrNotAvailable {
            " (no interface of this host has that address)"
        } else {
            ""
        };
        BindError {
            what: what.to_string(),
            addr,
            source: e,
            hint: hint.to_string(),
        }
    };
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| explain("create a socket for", e))?;
    if addr.is_ipv6() {
        socket
            .set_only_v6(true)
            .map_err(|e| explain("set IPV6_V6ONLY on", e))?;
    }
    configure(&socket).map_err(|(what, e)| explain(&what, e))?;
    socket
        .bind(&addr.into())
        .map_err(|e| explain("listen on", e))?;
    let socket: UdpSocket = socket.into();
    ntp_offset_sys::batch::enable_rx_timestamps(&socket)
        .map_err(|e| explain("enable receive timestamps on", e))?;
    Ok(socket)
}
