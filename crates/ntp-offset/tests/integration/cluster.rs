//! Hosts sharing a balanced group through a real etcd cluster (3 members on loopback,
//! Debian's etcd-server): each host a `serve` on its own port, clients loopback addresses
//! (127.1.0.0/16) that ask one host or another, as VMs on different hosts and VMs that
//! migrate do. A client's view is read off the offset of the answer; an answer at stratum 16
//! (leap 3) is the server not answering with time yet.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ntp_offset_testkit::etcd::EtcdCluster;
use ntp_offset_testkit::{
    self as common, control_json, ntp_exchange_from, run_cli, tempdir, wait_until, ServerProcess,
};

const OFFSETS: [(&str, i64); 4] = [("s00", 0), ("s15", 15), ("s30", 30), ("s45", 45)];
/// How long a new client may wait for its view: a few of its requests, each answered at
/// once, with the recording (one etcd transaction on loopback) between them.
const ASSIGN_TIMEOUT: Duration = Duration::from_secs(30);
/// etcd's members notice a dead one and elect a leader within seconds (election timeout
/// 1 s); a host notices an outage at its next health check (every 2 s, 3-s calls).
const NOTICE_TIMEOUT: Duration = Duration::from_secs(30);

fn client(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8))
}

struct Host {
    name: String,
    dir: PathBuf,
    port: u16,
    cfg: PathBuf,
    sock: PathBuf,
    server: Option<ServerProcess>,
}

impl Host {
    fn new(tag: &str, name: &str, etcd: &EtcdCluster, offsets: &[(&str, i64)]) -> Host {
        let dir = tempdir(&format!("{tag}-{name}"));
        let port = common::free_ports(1)[0];
        let sock = dir.join("serve.sock");
        let mut text = format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nlocal_stratum = 10\nstate_dir = \"state\"\n\
             [rate_limit]\nenabled = false\n[control]\nsocket = \"{}\"\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n",
            sock.display()
        );
        for (view, secs) in offsets {
            text += &format!("[[view]]\nname = \"{view}\"\noffset = \"{secs}s\"\n");
        }
        let views: Vec<String> = offsets.iter().map(|(v, _)| format!("\"{v}\"")).collect();
        text += &format!(
            "[[spread]]\nname = \"vms\"\nviews = [{}]\nclients = [\"127.0.0.0/8\"]\n\
             [cluster]\n{}\nhost = \"{name}\"\n",
            views.join(", "),
            etcd.endpoints_toml()
        );
        let cfg = dir.join("serve.toml");
        std::fs::write(&cfg, text).unwrap();
        Host {
            name: name.into(),
            dir,
            port,
            cfg,
            sock,
            server: None,
        }
    }

    fn start(&mut self) -> &mut Self {
        self.server = Some(ServerProcess::start(&[
            "--config",
            self.cfg.to_str().unwrap(),
        ]));
        self
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn status(&self) -> serde_json::Value {
        control_json("status", &self.sock, &[])["serve"]["cluster"].clone()
    }

    /// Waits until this host's cluster status satisfies `f`.
    fn wait_status(&self, what: &str, f: impl Fn(&serde_json::Value) -> bool) {
        let last = std::cell::RefCell::new(serde_json::Value::Null);
        let ok = wait_until(NOTICE_TIMEOUT, || {
            let s = self.status();
            let ok = f(&s);
            *last.borrow_mut() = s;
            ok.then_some(())
        });
        assert!(
            ok.is_some(),
            "{}: not {what} within {NOTICE_TIMEOUT:?}: {}",
            self.name,
            last.borrow()
        );
    }
}

/// One request from `from` to `host`: Some(view's offset in s) if answered with time, None if
/// answered unsynchronised (its view not recorded yet); panics if not answered at all.
fn ask(host: SocketAddr, from: IpAddr) -> Option<i64> {
    let s = (0..3)
        .find_map(|_| ntp_exchange_from(from, host, Duration::from_secs(1)))
        .unwrap_or_else(|| panic!("{host} did not answer {from}"));
    (s.header.stratum != 16).then(|| s.offset.as_secs_f64().round() as i64)
}

/// Asks until answered with time: the view, and how long it took from the first request.
fn ask_until_answered(host: SocketAddr, from: IpAddr) -> (i64, Duration) {
    let start = Instant::now();
    loop {
        if let Some(v) = ask(host, from) {
            return (v, start.elapsed());
        }
        assert!(
            start.elapsed() < ASSIGN_TIMEOUT,
            "{from} not answered by {host} within {ASSIGN_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn three_hosts_give_each_client_one_view_and_a_migrated_client_keeps_it() {
    let dir = tempdir("cluster-share");
    let etcd = EtcdCluster::start(&dir, 3);
    let mut hosts: Vec<Host> = ["a", "b", "c"]
        .iter()
        .map(|n| Host::new("cluster-share", n, &etcd, &OFFSETS))
        .collect();
    for h in &mut hosts {
        h.start();
    }
    // 1,000 clients at once, each asking one host (client i asks host i % 3): 3 threads a
    // host, each asking for its share of that host's clients until answered.
    const N: u32 = 1000;
    let addrs: Vec<SocketAddr> = hosts.iter().map(Host::addr).collect();
    let results: Vec<(u32, i64, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..9)
            .map(|t| {
                let host = addrs[t % 3];
                s.spawn(move || {
                    (0..N)
                        .filter(|i| (i % 9) as usize == t)
                        .map(|i| {
                            let (v, took) = ask_until_answered(host, client(i));
                            (i, v, took)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut per_host: Vec<BTreeMap<i64, usize>> = vec![BTreeMap::new(); 3];
    let mut views = HashMap::new();
    let mut took: Vec<Duration> = Vec::new();
    for (i, v, t) in &results {
        *per_host[(*i % 3) as usize].entry(*v).or_default() += 1;
        views.insert(*i, *v);
        took.push(*t);
    }
    took.sort();
    println!(
        "1,000 new clients at 3 hosts at once: answered with time after p50 {:?}, p99 {:?}, max {:?}",
        percentile(&took, 0.5),
        percentile(&took, 0.99),
        took.last().unwrap()
    );
    for (h, counts) in per_host.iter().enumerate() {
        let (lo, hi) = (
            counts.values().min().unwrap(),
            counts.values().max().unwrap(),
        );
        assert!(
            counts.len() == 4 && hi - lo <= 1,
            "host {}: clients per view {counts:?}: not within one of each other",
            hosts[h].name
        );
    }
    // One record per client in etcd, with the view each was answered from.
    let listed = etcd.etcdctl(&["get", "--prefix", "/ntp-offset/v1/groups/vms/clients/"]);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2 * N as usize, "one key and value per client");
    let offset_of: HashMap<&str, i64> = OFFSETS.iter().copied().collect();
    for pair in lines.chunks(2) {
        let addr: IpAddr = pair[0].rsplit('/').next().unwrap().parse().unwrap();
        let i = (0..N).find(|&i| client(i) == addr).expect("one of ours");
        let view = pair[1].split(' ').next().unwrap();
        assert_eq!(offset_of[view], views[&i], "{addr}: etcd says {view}");
    }
    let defined = etcd.etcdctl(&["get", "--prefix", "/ntp-offset/v1/groups/vms/views/"]);
    assert!(defined.contains("/views/s15\n15000000000"), "{defined}");
    // Every host's copy has every client: then a VM that migrates is answered with its view
    // from its first request on the new host (client i moves from host i % 3 to the next).
    for h in &hosts {
        h.wait_status("holding 1,000 clients", |s| s["clients"] == N);
    }
    for i in 0..N {
        let to = addrs[((i + 1) % 3) as usize];
        assert_eq!(
            ask(to, client(i)),
            Some(views[&i]),
            "client {i} migrated to {to}"
        );
    }
    let a = hosts[0].status();
    println!("host a: {a}");
    assert_eq!(a["available"], true);
    // A host whose config gives a recorded view another offset refuses to start.
    let mut wrong = OFFSETS;
    wrong[1] = ("s15", 16);
    let d = Host::new("cluster-share", "d", &etcd, &wrong);
    let (ok, out) = run_cli(&["serve", "--config", d.cfg.to_str().unwrap()]);
    assert!(!ok, "a host with s15 at +16 s started:\n{out}");
    assert!(
        out.contains("view `s15` is recorded in etcd at +15s and configured here at +16s"),
        "{out}"
    );
}

#[test]
fn known_clients_are_answered_through_an_etcd_outage_and_new_ones_wait_for_it() {
    let dir = tempdir("cluster-outage");
    let mut etcd = EtcdCluster::start(&dir, 3);
    let mut a = Host::new("cluster-outage", "a", &etcd, &OFFSETS);
    let mut b = Host::new("cluster-outage", "b", &etcd, &OFFSETS);
    a.start();
    b.start();
    let known: BTreeMap<u32, i64> = (0..20)
        .map(|i| (i, ask_until_answered(a.addr(), client(i)).0))
        .collect();
    b.wait_status("holding the 20 clients", |s| s["clients"] == 20);
    // b's saved copy has them too (written within seconds of a change).
    let saved = b.dir.join("state/cluster.copy");
    wait_until(NOTICE_TIMEOUT, || {
        let text = std::fs::read_to_string(&saved).ok()?;
        (text.lines().filter(|l| l.starts_with("client ")).count() == 20).then_some(())
    })
    .unwrap_or_else(|| panic!("{} does not list the 20 clients", saved.display()));

    // No quorum: two of three members stopped.
    etcd.stop_member(1);
    etcd.stop_member(2);
    a.wait_status("out of reach", |s| s["available"] == false);
    for (&i, &v) in &known {
        assert_eq!(ask(a.addr(), client(i)), Some(v), "known client {i} at a");
        assert_eq!(ask(b.addr(), client(i)), Some(v), "known client {i} at b");
    }
    let new = client(500);
    for _ in 0..3 {
        assert_eq!(
            ask(a.addr(), new),
            None,
            "a new client answered during the outage"
        );
    }
    a.wait_status("counting the unanswered new client", |s| {
        s["unanswered_unavailable"].as_u64() >= Some(3)
    });
    // b killed and restarted during the outage: its known clients from the saved copy.
    b.server.take().unwrap().child.kill().unwrap();
    b.start();
    for (&i, &v) in &known {
        assert_eq!(
            ask(b.addr(), client(i)),
            Some(v),
            "known client {i} at b after kill -9"
        );
    }

    // Back: the new client is answered; nobody moved.
    etcd.start_member(1);
    etcd.start_member(2);
    etcd.wait_healthy(&[0, 1, 2]);
    a.wait_status("reachable again", |s| s["available"] == true);
    let (v_new, _) = ask_until_answered(a.addr(), new);
    assert_eq!(
        ask_until_answered(b.addr(), new).0,
        v_new,
        "one view for the new client"
    );
    // The leader killed: a new leader is elected; hosts go on.
    let leader = etcd.leader();
    etcd.kill_member(leader);
    let newer = client(501);
    let (v1, _) = ask_until_answered(a.addr(), newer);
    assert_eq!(ask_until_answered(b.addr(), newer).0, v1);
    for (&i, &v) in &known {
        assert_eq!(ask(a.addr(), client(i)), Some(v), "known client {i} moved");
        assert_eq!(
            ask(b.addr(), client(i)),
            Some(v),
            "known client {i} moved at b"
        );
    }
    let s = a.status();
    println!("host a after the outage: {s}");
    // The exporter says what status says, and Prometheus' linter passes it.
    let web = a.server.as_mut().unwrap().web_addr();
    let (code, metrics) = common::http_get(&format!("http://{web}/metrics"));
    assert_eq!(code, 200);
    common::promtool_check(&metrics);
    for line in [
        "ntp_offset_cluster_store_available 1".to_string(),
        format!("ntp_offset_cluster_clients {}", s["clients"]),
        format!(
            "ntp_offset_cluster_new_clients_while_unavailable_total{{fate=\"unanswered\"}} {}",
            s["unanswered_unavailable"]
        ),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in\n{metrics}"
        );
    }
    assert_eq!(s["moves_followed"], 0);
    assert_eq!(s["moves_recorded"], 0);
}

#[test]
fn check_explains_cluster_mistakes() {
    let dir = tempdir("cluster-check");
    let pki = ntp_offset_testkit::nts::make_pki(&dir, "etcd");
    let check = |section: &str| {
        let cfg = dir.join("check.toml");
        std::fs::write(
            &cfg,
            format!(
                "[server]\nlisten = [\"127.0.0.1:1123\"]\nstate_dir = \".\"\n\
                 [[view]]\nname = \"a\"\noffset = \"0s\"\n[[view]]\nname = \"b\"\noffset = \"15s\"\n\
                 [[spread]]\nname = \"vms\"\nviews = [\"a\", \"b\"]\nclients = [\"0.0.0.0/0\"]\n\
                 [cluster]\n{section}\n"
            ),
        )
        .unwrap();
        run_cli(&["serve", "--check", "--config", cfg.to_str().unwrap()])
    };
    let (ok, out) =
        check("endpoints = [\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379\"]\nhost = \"h1\"");
    assert!(ok, "{out}");
    assert!(
        out.contains("cluster: host `h1`, etcd at http://10.0.0.1:2379, http://10.0.0.2:2379 (keys under /ntp-offset; new clients while it is out of reach: not answered)"),
        "{out}"
    );
    let tls = format!(
        "endpoints = [\"https://10.0.0.1:2379\"]\nca_file = \"{}\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\non_store_unavailable = \"hash\"\nprefix = \"/site-a/ntp/\"",
        pki.ca.display(),
        pki.cert.display(),
        pki.key.display()
    );
    let (ok, out) = check(&tls);
    assert!(ok && out.contains("keys under /site-a/ntp, TLS; new clients while it is out of reach: the keyed hash's view"), "{out}");
    for (section, says) in [
        (
            "endpoints = []",
            "cluster.endpoints: needs etcd's client URLs",
        ),
        (
            "endpoints = [\"10.0.0.1:2379\"]",
            "is not http(s)://HOST:PORT",
        ),
        (
            "endpoints = [\"http://10.0.0.1\"]",
            "is not http(s)://HOST:PORT",
        ),
        (
            "endpoints = [\"http://a:1\", \"http://a:1/\"]",
            "is listed twice",
        ),
        (
            "endpoints = [\"http://a:1\", \"https://b:1\"]",
            "all https or all http",
        ),
        (
            "endpoints = [\"https://a:1\"]",
            "cluster.ca_file: https endpoints need the CA",
        ),
        (
            "endpoints = [\"http://a:1\"]\nca_file = \"x\"",
            "cluster.ca_file: is for https endpoints",
        ),
        (
            "endpoints = [\"http://a:1\"]\nhost = \"a b\"",
            "cluster.host",
        ),
        (
            "endpoints = [\"http://a:1\"]\nprefix = \"ntp\"",
            "cluster.prefix",
        ),
        (
            "endpoints = [\"http://a:1\"]\nprefix = \"/a b\"",
            "cluster.prefix",
        ),
        (
            "endpoints = [\"http://a:1\"]\non_store_unavailable = \"serve\"",
            "cluster.on_store_unavailable",
        ),
        (
            "endpoints = [\"http://a:1\"]\nretries = 3",
            "unknown field `retries`",
        ),
    ] {
        let (ok, out) = check(section);
        assert!(!ok && out.contains(says), "{section}: {out}");
    }
    let (ok, out) = check(&format!(
        "endpoints = [\"https://a:1\"]\nca_file = \"{}\"\ncertificate = \"{}\"",
        pki.ca.display(),
        pki.cert.display()
    ));
    assert!(
        !ok && out.contains("certificate and private_key go together"),
        "{out}"
    );
    let (ok, out) = check(&format!(
        "endpoints = [\"https://a:1\"]\nca_file = \"{}\"",
        pki.key.display()
    ));
    assert!(
        !ok && out.contains("cluster.ca_file") && out.contains("no certificate"),
        "{out}"
    );
}
