//! How things read in log lines and error messages, where several parts print them.

use std::net::SocketAddr;

/// `a, b, c`: addresses as error and log messages list them.
pub fn join_addrs(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
