//! A network namespace's own addresses as `/proc/PID/net` shows them to any user: IPv4 in
//! `fib_trie` (each local address is a `/32 host LOCAL` leaf under its `|-- A.B.C.D` line),
//! IPv6 in `if_inet6` (32 hex digits first on each line). The VM watcher reads them for the
//! containers in `machine.slice`, whose NTP requests come from these addresses. Loopback is
//! left out; malformed lines are skipped, never fatal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The local IPv4 addresses a `fib_trie` text names, each once, in order of appearance.
pub fn fib_trie_local(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut current: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(addr) = t.strip_prefix("|-- ") {
            current = addr.trim().parse().ok();
        } else if t.starts_with("+-- ") {
            current = None; // a prefix node, not an address
        } else if t == "/32 host LOCAL" {
            if let Some(a) = current.filter(|a| !a.is_loopback() && !out.contains(a)) {
                out.push(a);
            }
        }
    }
    out
}

/// The IPv6 addresses an `if_inet6` text names, each once.
pub fn if_inet6(text: &str) -> Vec<Ipv6Addr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(hex) = line.split_whitespace().next() else {
            continue;
        };
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let Ok(bits) = u128::from_str_radix(hex, 16) else {
            continue;
        };
        let a = Ipv6Addr::from(bits);
        if !a.is_loopback() && !a.is_unspecified() && !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// Both files' addresses, IPv4 first.
pub fn local_addrs(fib_trie: &str, inet6: &str) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = fib_trie_local(fib_trie)
        .into_iter()
        .map(IpAddr::V4)
        .collect();
    out.extend(if_inet6(inet6).into_iter().map(IpAddr::V6));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A network namespace with lo and a veth holding 198.18.50.5/24 and fd00::5/64, as
    /// Linux 6.1 prints it (read by an unprivileged user from another user's process).
    const FIB_TRIE: &str = "\
Main:
  +-- 0.0.0.0/0 2 0 2
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 198.18.50.0/24 2 0 2
        +-- 198.18.50.0/29 2 0 2
           |-- 198.18.50.0
              /24 link UNICAST
           |-- 198.18.50.5
              /32 host LOCAL
        |-- 198.18.50.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 2 0 2
     +-- 198.18.50.0/24 2 0 2
           |-- 198.18.50.5
              /32 host LOCAL
";
    const IF_INET6: &str = "\
00000000000000000000000000000001 01 80 10 80       lo
fd000000000000000000000000000005 301 40 00 c0      vt1
fe80000000000000a8c1abfffe123456 02 40 20 80     vt1
";

    #[test]
    fn a_namespaces_own_addresses_without_loopback_broadcast_or_networks() {
        assert_eq!(
            local_addrs(FIB_TRIE, IF_INET6),
            vec![
                "198.18.50.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap(),
                "fe80::a8c1:abff:fe12:3456".parse().unwrap(),
            ]
        );
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert!(fib_trie_local("|-- 300.1.2.3\n/32 host LOCAL\n|--\n/32 host LOCAL\n").is_empty());
        // A LOCAL leaf under a prefix node names no address.
        assert!(fib_trie_local("|-- 10.0.0.1\n+-- 10.0.0.0/8 2 0 2\n/32 host LOCAL\n").is_empty());
        assert!(if_inet6("xyz 01\nfd00 01\n\n0000000000000000000000000000000g\n").is_empty());
    }

    proptest::proptest! {
        /// Whatever the text, the parsers return (no panic), and only addresses it spells.
        #[test]
        fn any_text_parses_to_addresses_it_contains(text in "(\\PC{0,40}\n){0,12}") {
            for a in fib_trie_local(&text) {
                proptest::prop_assert!(text.contains(&a.to_string()));
            }
            proptest::prop_assert!(if_inet6(&text).len() <= text.lines().count());
        }
    }
}
