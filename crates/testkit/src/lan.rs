//! Several "hosts" on one machine: network namespaces on a bridge, and background processes
//! in them whose logs go to files. Everything is removed or killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{ip, require_root};

/// Namespaces `hosts` joined by a bridge (which lives in a namespace of its own, so nothing
/// touches the root namespace). Host i has 198.18.<subnet>.<i+1>/24.
pub struct Lan {
    pub hosts: Vec<String>,
    hub: String,
    id: String,
    pub subnet: u8,
}

impl Lan {
    pub fn new(tag: &str, subnet: u8, hosts: &[&str]) -> Lan {
        require_root();
        let id = format!("{tag}{}", std::process::id() % 100_000);
        let hub = format!("nto-{id}-hub");
        ip(&["netns", "add", &hub]);
        let mut lan = Lan {
            hosts: Vec::new(),
            hub: hub.clone(),
            id: id.clone(),
            subnet,
        };
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for (i, h) in hosts.iter().enumerate() {
            let ns = format!("nto-{id}-{h}");
            ip(&["netns", "add", &ns]);
            lan.hosts.push(ns.clone());
            let (inner, outer) = (format!("nt{id}{i}"), format!("nt{id}{i}h"));
            ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ]);
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&["link", "set", &outer, "netns", &hub]);
            ip(&["-n", &hub, "link", "set", &outer, "master", "br0"]);
            ip(&["-n", &hub, "link", "set", &outer, "up"]);
            let addr = format!("198.18.{subnet}.{}/24", i + 1);
            let bcast = format!("198.18.{subnet}.255");
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &addr,
                "broadcast",
                &bcast,
                "dev",
                &inner,
            ]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["-n", &ns, "link", "set", &inner, "up"]);
        }
        lan
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

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain([&self.hub]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
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

/// A background process whose stdout and stderr go to `<dir>/<name>.log`; killed on drop.
pub struct Background {
    pub child: Child,
    pub log: PathBuf,
    pub name: String,
}

impl Background {
    pub fn start(dir: &Path, name: &str, argv: &[String]) -> Background {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(&argv[0]);
        crate::own_runtime_dir(&mut cmd);
        let child = cmd
            .args(&argv[1..])
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {argv:?}: {e}"));
        Background {
            child,
            log,
            name: name.into(),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the log) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{} exited ({status}):\n{}", self.name, self.log_text());
        }
    }

    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
