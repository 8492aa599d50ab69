//! Network namespaces for the tests, made one way: [`Netns`] (deleted on drop, with the
//! devices in it), joined by [`veth`] pairs and brought [`up`]. [`NetnsPair`] is a server and
//! a client on one link; `lan::Lan` is several hosts on a bridge.

use std::process::Command;

use crate::{ip, require_root};

/// A network namespace this test made; deleted on drop, and its end of every veth with it.
pub struct Netns(pub String);

impl Netns {
    pub fn add(name: String) -> Netns {
        ip(&["netns", "add", &name]);
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A veth pair: device `a.1` in namespace `a.0`, its peer `b.1` in `b.0`.
pub fn veth(a: (&Netns, &str), b: (&Netns, &str)) {
    ip(&["link", "add", a.1, "type", "veth", "peer", "name", b.1]);
    ip(&["link", "set", a.1, "netns", &a.0 .0]);
    ip(&["link", "set", b.1, "netns", &b.0 .0]);
}

/// Gives `dev` in `ns` its addresses (with `broadcast`, when given), then brings up the
/// namespace's loopback and `dev`.
pub fn up(ns: &Netns, dev: &str, addrs: &[String], broadcast: Option<&str>) {
    for a in addrs {
        match broadcast {
            Some(b) => ip(&["-n", &ns.0, "addr", "add", a, "broadcast", b, "dev", dev]),
            None => ip(&["-n", &ns.0, "addr", "add", a, "dev", dev]),
        }
    }
    ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
    ip(&["-n", &ns.0, "link", "set", dev, "up"]);
}

/// Two network namespaces, "server" and "client", joined by a veth pair on 198.18.0.0/24:
/// the server side holds 198.18.0.1..=N, the client 198.18.0.100. Deleted on drop.
pub struct NetnsPair {
    pub server: String,
    pub client: String,
    _namespaces: [Netns; 2],
}

impl NetnsPair {
    pub fn new(tag: &str, server_addrs: usize) -> NetnsPair {
        require_root();
        let id = format!("{}{}", tag, std::process::id() % 100_000);
        let (server, client) = (
            Netns::add(format!("nto-{id}-s")),
            Netns::add(format!("nto-{id}-c")),
        );
        let (vs, vc) = (format!("nto{id}s"), format!("nto{id}c"));
        veth((&server, &vs), (&client, &vc));
        let addrs: Vec<String> = (1..=server_addrs)
            .map(|i| format!("198.18.0.{i}/24"))
            .collect();
        up(&server, &vs, &addrs, None);
        up(&client, &vc, &["198.18.0.100/24".to_string()], None);
        NetnsPair {
            server: server.0.clone(),
            client: client.0.clone(),
            _namespaces: [server, client],
        }
    }

    /// `ip netns exec NS` as a command prefix.
    pub fn exec<'a>(&'a self, ns: &'a str) -> [&'a str; 4] {
        ["ip", "netns", "exec", ns]
    }
}
