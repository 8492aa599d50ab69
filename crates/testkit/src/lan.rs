//! Several "hosts" on one machine: network namespaces on a bridge (their processes start
//! through `process::Background`), and a private IPC namespace. Everything is removed or
//! killed on drop.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::netns::{up, veth, Netns};
use crate::{ip, require_root};

/// Namespaces `hosts` joined by a bridge (which lives in a namespace of its own, so nothing
/// touches the root namespace). Host i has 198.18.<subnet>.<i+1>/24.
pub struct Lan {
    pub hosts: Vec<String>,
    id: String,
    pub subnet: u8,
    /// The hosts', then the hub's: deleted in that order.
    _namespaces: Vec<Netns>,
}

impl Lan {
    pub fn new(tag: &str, subnet: u8, hosts: &[&str]) -> Lan {
        require_root();
        let id = format!("{tag}{}", std::process::id() % 100_000);
        let hub = Netns::add(format!("nto-{id}-hub"));
        ip(&["-n", &hub.0, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub.0, "link", "set", "br0", "up"]);
        let mut namespaces = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            let ns = Netns::add(format!("nto-{id}-{h}"));
            let (inner, outer) = (format!("nt{id}{i}"), format!("nt{id}{i}h"));
            veth((&ns, &inner), (&hub, &outer));
            ip(&["-n", &hub.0, "link", "set", &outer, "master", "br0"]);
            ip(&["-n", &hub.0, "link", "set", &outer, "up"]);
            let addr = format!("198.18.{subnet}.{}/24", i + 1);
            up(&ns, &inner, &[addr], Some(&format!("198.18.{subnet}.255")));
            namespaces.push(ns);
        }
        namespaces.push(hub);
        Lan {
            hosts: namespaces[..hosts.len()]
                .iter()
                .map(|n| n.0.clone())
                .collect(),
            id,
            subnet,
            _namespaces: namespaces,
        }
    }

    /// Host i's network device.
    pub fn device(&self, i: usize) -> String {
        format!("nt{}{i}", self.id)
    }

    pub fn broadcast(&self, port: u16) -> String {
        format!("198.18.{}.255:{port}", self.subnet)
    }

    /// `nsenter --net=...` prefix for host i (plus `--ipc=` of `ipc` when given).
    pub fn enter(&self, i: usize, ipc: Option<&IpcNamespace>) -> Vec<String> {
        let mut v = vec![
            "nsenter".to_string(),
            format!("--net=/run/netns/{}", self.hosts[i]),
        ];
        if let Some(ipc) = ipc {
            v.push(format!("--ipc=/proc/{}/ns/ipc", ipc.holder.id()));
        }
        v.push("--".into());
        v
    }
}

/// A private System V IPC namespace (SHM segments), held open by a sleeping process, so a
/// test's SHM refclock never meets the host's ntpd or gpsd.
pub struct IpcNamespace {
    holder: Child,
}

impl IpcNamespace {
    pub fn start() -> IpcNamespace {
        let holder = Command::new("unshare")
            .args(["--ipc", "sleep", "600"])
            .spawn()
            .expect("unshare (util-linux)");
        // unshare execs sleep once the namespace exists.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !std::fs::read_link(format!("/proc/{}/exe", holder.id()))
            .is_ok_and(|p| p.ends_with("sleep"))
        {
            assert!(Instant::now() < deadline, "unshare --ipc did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        IpcNamespace { holder }
    }
}

impl Drop for IpcNamespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
