//! A real etcd cluster on loopback (Debian's etcd-server): members on free ports, each with
//! its data in the test's directory, started, stopped and killed one by one. `etcdctl`
//! reads what the cluster holds.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{run_bounded, Background};
use crate::{peer, s, wait_until};

/// How long a member or the whole cluster gets to answer after a start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Free TCP ports (etcd's client and peer ports), held until all are chosen.
pub fn free_tcp_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

pub struct EtcdCluster {
    dir: PathBuf,
    token: String,
    pub client_urls: Vec<String>,
    peer_urls: Vec<String>,
    /// Per member, the command prefix that enters its network namespace (empty: this one).
    prefixes: Vec<Vec<String>>,
    members: Vec<Option<Background>>,
    pub tls: Option<EtcdTls>,
}

/// A CA, etcd's server certificate, and a client certificate for etcd's `--client-cert-auth`.
#[derive(Clone, Debug)]
pub struct EtcdTls {
    pub ca: PathBuf,
    server: (PathBuf, PathBuf),
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl EtcdCluster {
    /// `n` members on loopback in `dir`, started and healthy.
    pub fn start(dir: &Path, n: usize) -> EtcdCluster {
        let ports = free_tcp_ports(2 * n);
        let urls = |port: usize| -> Vec<String> {
            (0..n)
                .map(|i| format!("http://127.0.0.1:{}", ports[2 * i + port]))
                .collect()
        };
        Self::start_members(dir, urls(0), urls(1), vec![Vec::new(); n], None)
    }

    /// `n` members on loopback serving clients over TLS only, and only to clients with a
    /// certificate of the cluster's CA (`--client-cert-auth`).
    pub fn start_tls(dir: &Path, n: usize) -> EtcdCluster {
        crate::nts::make_pki(dir, "etcd");
        // etcd 3.4's JSON gateway dials its own gRPC server with the server certificate, so
        // with --client-cert-auth that certificate must be good for client auth too.
        let server = crate::nts::issue_cert(
            dir,
            "etcd",
            "member",
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n",
        );
        let (client_cert, client_key) = crate::nts::issue_cert(
            dir,
            "etcd",
            "client",
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        );
        let tls = EtcdTls {
            ca: dir.join("etcd-ca.pem"),
            server,
            client_cert,
            client_key,
        };
        let ports = free_tcp_ports(2 * n);
        let urls = |scheme: &str, port: usize| -> Vec<String> {
            (0..n)
                .map(|i| format!("{scheme}://127.0.0.1:{}", ports[2 * i + port]))
                .collect()
        };
        Self::start_members(
            dir,
            urls("https", 0),
            urls("http", 1),
            vec![Vec::new(); n],
            Some(tls),
        )
    }

    /// One member per (namespace prefix, address): each in its own network namespace
    /// (`Lan::enter`), on etcd's own ports 2379 and 2380 at that address.
    pub fn start_in(dir: &Path, members: &[(Vec<String>, String)]) -> EtcdCluster {
        let url = |port: u16| -> Vec<String> {
            members
                .iter()
                .map(|(_, a)| format!("http://{a}:{port}"))
                .collect()
        };
        let prefixes = members.iter().map(|(p, _)| p.clone()).collect();
        Self::start_members(dir, url(2379), url(2380), prefixes, None)
    }

    fn start_members(
        dir: &Path,
        client_urls: Vec<String>,
        peer_urls: Vec<String>,
        prefixes: Vec<Vec<String>>,
        tls: Option<EtcdTls>,
    ) -> EtcdCluster {
        let n = client_urls.len();
        let mut c = EtcdCluster {
            dir: dir.to_path_buf(),
            token: format!("ntp-offset-test-{}", std::process::id()),
            client_urls,
            peer_urls,
            prefixes,
            members: (0..n).map(|_| None).collect(),
            tls,
        };
        for i in 0..n {
            c.start_member(i);
        }
        c.wait_healthy(&(0..n).collect::<Vec<_>>());
        c
    }

    fn argv(&self, i: usize) -> Vec<String> {
        let initial: Vec<String> = self
            .peer_urls
            .iter()
            .enumerate()
            .map(|(j, u)| format!("m{j}={u}"))
            .collect();
        let mut argv = self.prefixes[i].clone();
        argv.extend([
            peer("etcd").display().to_string(),
            format!("--name=m{i}"),
            format!(
                "--data-dir={}",
                self.dir.join(format!("m{i}.etcd")).display()
            ),
            format!("--listen-client-urls={}", self.client_urls[i]),
            format!("--advertise-client-urls={}", self.client_urls[i]),
            format!("--listen-peer-urls={}", self.peer_urls[i]),
            format!("--initial-advertise-peer-urls={}", self.peer_urls[i]),
            format!("--initial-cluster={}", initial.join(",")),
            s("--initial-cluster-state=new"),
            format!("--initial-cluster-token={}", self.token),
            s("--log-level=warn"),
        ]);
        if let Some(t) = &self.tls {
            argv.extend([
                format!("--cert-file={}", t.server.0.display()),
                format!("--key-file={}", t.server.1.display()),
                format!("--trusted-ca-file={}", t.ca.display()),
                s("--client-cert-auth"),
            ]);
        }
        argv
    }

    /// Starts member `i` again (its data kept).
    pub fn start_member(&mut self, i: usize) {
        let argv = self.argv(i);
        self.members[i] = Some(Background::start(&self.dir, &format!("etcd-m{i}"), &argv));
    }

    /// Stops member `i` (SIGTERM, waited for).
    pub fn stop_member(&mut self, i: usize) {
        if let Some(mut m) = self.members[i].take() {
            m.stop();
        }
    }

    /// Kills member `i` with SIGKILL.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut m) = self.members[i].take() {
            let _ = m.child.kill();
            let _ = m.child.wait();
        }
    }

    /// Waits until each of `members` answers a quorum read.
    pub fn wait_healthy(&self, members: &[usize]) {
        for &i in members {
            let ok = wait_until(START_TIMEOUT, || {
                let out = self.etcdctl_at(i, &["endpoint", "health"]);
                out.0.then_some(())
            });
            if ok.is_none() {
                let log = self.members[i]
                    .as_ref()
                    .map_or(String::new(), Background::log_text);
                panic!("etcd member m{i} not healthy within {START_TIMEOUT:?}:\n{log}");
            }
        }
    }

    /// `etcdctl` in member `i`'s namespace.
    fn ctl(&self, i: usize) -> Command {
        let mut c = match self.prefixes[i].split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(peer("etcdctl"));
                c
            }
            None => Command::new(peer("etcdctl")),
        };
        c.env("ETCDCTL_API", "3");
        if let Some(t) = &self.tls {
            c.arg(format!("--cacert={}", t.ca.display()))
                .arg(format!("--cert={}", t.client_cert.display()))
                .arg(format!("--key={}", t.client_key.display()));
        }
        c
    }

    fn etcdctl_at(&self, i: usize, args: &[&str]) -> (bool, String) {
        let out = run_bounded(
            self.ctl(i)
                .arg(format!("--endpoints={}", self.client_urls[i]))
                .arg("--command-timeout=2s")
                .args(args),
            Duration::from_secs(10),
        );
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    /// `etcdctl ARGS` against every running member; panics if it fails.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let running: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].is_some())
            .collect();
        let urls: Vec<&str> = running
            .iter()
            .map(|&i| self.client_urls[i].as_str())
            .collect();
        let out = run_bounded(
            self.ctl(*running.first().expect("a running member"))
                .arg(format!("--endpoints={}", urls.join(",")))
                .arg("--command-timeout=5s")
                .args(args),
            Duration::from_secs(15),
        );
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The member that leads now.
    pub fn leader(&self) -> usize {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("etcdctl's JSON");
        let statuses = v.as_array().expect("one status per endpoint");
        let leader = statuses[0]["Status"]["leader"].as_u64().expect("a leader");
        let ep = statuses
            .iter()
            .find(|s| s["Status"]["header"]["member_id"].as_u64() == Some(leader))
            .and_then(|s| s["Endpoint"].as_str())
            .expect("the leader among the endpoints");
        self.client_urls
            .iter()
            .position(|u| u == ep)
            .expect("a member's URL")
    }

    /// `[cluster]`'s endpoints line.
    pub fn endpoints_toml(&self) -> String {
        let quoted: Vec<String> = self
            .client_urls
            .iter()
            .map(|u| format!("\"{u}\""))
            .collect();
        format!("endpoints = [{}]", quoted.join(", "))
    }
}
