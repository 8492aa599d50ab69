//! The kernel's neighbour table, dumped over an rtnetlink socket (no `unsafe`: socket2 opens
//! it; proto's [`neighbours`](ntp_offset_proto::neighbours) speaks the protocol).

use std::io::{self, Read};
use std::time::Duration;

use ntp_offset_proto::neighbours::{dump_request, parse, Neighbour};
use socket2::{Domain, Protocol, Socket, Type};

/// Every neighbour entry with a known MAC, both families. Waits at most `timeout` for each
/// datagram of the answer.
pub fn neighbour_table(timeout: Duration) -> io::Result<Vec<Neighbour>> {
    let socket = Socket::new(
        Domain::from(libc::AF_NETLINK),
        Type::RAW,
        Some(Protocol::from(libc::NETLINK_ROUTE)),
    )?;
    socket.set_read_timeout(Some(timeout))?;
    // No destination: an unconnected netlink socket sends to the kernel.
    socket.send(&dump_request(1))?;
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // A dump of a few hundred thousand entries is a few hundred datagrams: bounded anyway.
    for _ in 0..100_000 {
        let n = (&socket).read(&mut buf)?;
        let d = parse(&buf[..n]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        all.extend(d.neighbours);
        if d.done {
            return Ok(all);
        }
    }
    Err(io::Error::other("the neighbour dump did not end"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's own table dumps (it may be empty) without an error.
    #[test]
    fn the_hosts_table_dumps() {
        neighbour_table(Duration::from_secs(2)).expect("a neighbour dump");
    }
}
