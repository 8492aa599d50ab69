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
        if let Some(t) = &etcd.tls {
            text += &format!(
                "ca_file = \"{}\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
                t.ca.display(),
                t.client_cert.display(),
                t.client_key.display()
            );
        }
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

/// Every answer a test got: (client, host, view or None for unsynchronised), checked at the
/// end: no client was ever answered with time from two views (these tests move nobody).
#[derive(Default)]
struct History(std::sync::Mutex<Vec<(IpAddr, SocketAddr, Option<i64>)>>);

impl History {
    fn ask(&self, host: SocketAddr, from: IpAddr) -> Option<i64> {
        let v = ask(host, from);
        self.0.lock().unwrap().push((from, host, v));
        v
    }

    fn until_answered(&self, host: SocketAddr, from: IpAddr) -> (i64, Duration) {
        let start = Instant::now();
        loop {
            if let Some(v) = self.ask(host, from) {
                return (v, start.elapsed());
            }
            assert!(
                start.elapsed() < ASSIGN_TIMEOUT,
                "{from} not answered by {host} within {ASSIGN_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn check_one_view_each(&self) {
        let all = self.0.lock().unwrap();
        let mut seen: HashMap<IpAddr, (i64, SocketAddr)> = HashMap::new();
        for &(client, host, view) in all.iter() {
            let Some(v) = view else { continue };
            let (first, at) = *seen.entry(client).or_insert((v, host));
            assert_eq!(
                v, first,
                "{client} answered from {first} s by {at} and from {v} s by {host}"
            );
        }
        println!(
            "history: {} answers to {} clients, one view each",
            all.len(),
            seen.len()
        );
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
    let hist = History::default();
    let results: Vec<(u32, i64, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..9)
            .map(|t| {
                let (host, hist) = (addrs[t % 3], &hist);
                s.spawn(move || {
                    (0..N)
                        .filter(|i| (i % 9) as usize == t)
                        .map(|i| {
                            let (v, took) = hist.until_answered(host, client(i));
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
            hist.ask(to, client(i)),
            Some(views[&i]),
            "client {i} migrated to {to}"
        );
    }
    hist.check_one_view_each();
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
    let hist = History::default();
    let mut etcd = EtcdCluster::start(&dir, 3);
    let mut a = Host::new("cluster-outage", "a", &etcd, &OFFSETS);
    let mut b = Host::new("cluster-outage", "b", &etcd, &OFFSETS);
    a.start();
    b.start();
    let known: BTreeMap<u32, i64> = (0..20)
        .map(|i| (i, hist.until_answered(a.addr(), client(i)).0))
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
    let outage = Instant::now();
    a.wait_status("out of reach", |s| s["available"] == false);
    for (&i, &v) in &known {
        assert_eq!(
            hist.ask(a.addr(), client(i)),
            Some(v),
            "known client {i} at a"
        );
        assert_eq!(
            hist.ask(b.addr(), client(i)),
            Some(v),
            "known client {i} at b"
        );
    }
    let new = client(500);
    for _ in 0..3 {
        assert_eq!(
            hist.ask(a.addr(), new),
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
            hist.ask(b.addr(), client(i)),
            Some(v),
            "known client {i} at b after kill -9"
        );
    }

    // 30 s without a quorum, the known clients asking every second.
    while outage.elapsed() < Duration::from_secs(30) {
        for (&i, &v) in &known {
            assert_eq!(
                hist.ask(a.addr(), client(i)),
                Some(v),
                "known client {i} at a"
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }

    // Back: the new client is answered; nobody moved.
    etcd.start_member(1);
    etcd.start_member(2);
    etcd.wait_healthy(&[0, 1, 2]);
    a.wait_status("reachable again", |s| s["available"] == true);
    let (v_new, _) = hist.until_answered(a.addr(), new);
    assert_eq!(
        hist.until_answered(b.addr(), new).0,
        v_new,
        "one view for the new client"
    );
    // The leader killed: a new leader is elected; hosts go on.
    let leader = etcd.leader();
    etcd.kill_member(leader);
    let newer = client(501);
    let (v1, _) = hist.until_answered(a.addr(), newer);
    assert_eq!(hist.until_answered(b.addr(), newer).0, v1);
    for (&i, &v) in &known {
        assert_eq!(
            hist.ask(a.addr(), client(i)),
            Some(v),
            "known client {i} moved"
        );
        assert_eq!(
            hist.ask(b.addr(), client(i)),
            Some(v),
            "known client {i} moved at b"
        );
    }
    hist.check_one_view_each();
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
fn a_cluster_over_tls_with_client_certificates() {
    let dir = tempdir("cluster-tls");
    let etcd = EtcdCluster::start_tls(&dir, 1);
    let mut a = Host::new("cluster-tls", "a", &etcd, &OFFSETS);
    a.start();
    let hist = History::default();
    let (v, _) = hist.until_answered(a.addr(), client(7));
    let listed = etcd.etcdctl(&["get", "--prefix", "/ntp-offset/v1/groups/vms/clients/"]);
    let view = OFFSETS.iter().find(|(_, o)| *o == v).unwrap().0;
    assert!(
        listed.contains(&format!("/clients/{}\n{view} ", client(7))),
        "{listed}"
    );
    // Without a client certificate etcd refuses the host: it says so, and new clients wait.
    let b = Host::new("cluster-tls", "b", &etcd, &OFFSETS);
    let text = std::fs::read_to_string(&b.cfg).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("certificate") && !l.starts_with("private_key"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&b.cfg, text).unwrap();
    let mut b = b;
    b.start();
    b.wait_status("refused by etcd", |s| s["available"] == false);
    assert_eq!(
        hist.ask(b.addr(), client(8)),
        None,
        "answered without a record"
    );
    let log = b
        .server
        .as_mut()
        .unwrap()
        .wait_for_log("etcd is out of reach", NOTICE_TIMEOUT);
    println!("without a client certificate: {log}");
    hist.check_one_view_each();
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

/// Three VM hosts as libvirt makes them: each its own network namespace with a bridge at the
/// same address (198.18.0.1, and the same MAC, so a VM's neighbour entry stays good), its
/// `serve` answering there, NTP and NTS-KE, with the same NTS secret; etcd's three members in
/// namespaces of their own, all on one backbone. A VM is a namespace whose link sits on a
/// host's bridge; it migrates when its link moves to another host's bridge.
/// Fields drop in order: the servers and etcd stop before their namespaces go.
struct VmHosts {
    hosts: Vec<(String, ServerProcess, PathBuf)>,
    _etcd: EtcdCluster,
    vms: Vec<ntp_offset_testkit::netns::Netns>,
    lan: ntp_offset_testkit::lan::Lan,
    dir: PathBuf,
    id: String,
}

const SUBNET: u8 = 41;
const SERVER: &str = "198.18.0.1";

impl VmHosts {
    fn new(tag: &str) -> VmHosts {
        let lan =
            ntp_offset_testkit::lan::Lan::new(tag, SUBNET, &["e0", "e1", "e2", "a", "b", "c"]);
        let dir = tempdir(tag);
        let members: Vec<(Vec<String>, String)> = (0..3)
            .map(|i| (lan.enter(i, None), format!("198.18.{SUBNET}.{}", i + 1)))
            .collect();
        let etcd = EtcdCluster::start_in(&dir, &members);
        let pki = ntp_offset_testkit::nts::make_pki(&dir, "hosts");
        let secret = dir.join("nts.secret");
        std::fs::write(&secret, format!("{}\n", "5a".repeat(32))).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut hosts = Vec::new();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let ns = &lan.hosts[3 + i];
            common::ip(&["-n", ns, "link", "add", "vmbr", "type", "bridge"]);
            common::ip(&[
                "-n",
                ns,
                "link",
                "set",
                "vmbr",
                "address",
                "52:54:00:18:00:01",
            ]);
            common::ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{SERVER}/24"),
                "dev",
                "vmbr",
            ]);
            common::ip(&["-n", ns, "link", "set", "vmbr", "up"]);
            let hdir = dir.join(name);
            std::fs::create_dir_all(&hdir).unwrap();
            let sock = hdir.join("serve.sock");
            let mut text = format!(
                "[server]\nlisten = [\"{SERVER}:123\"]\nlocal_stratum = 10\nstate_dir = \"state\"\n\
                 [rate_limit]\nenabled = false\n[control]\nsocket = \"{}\"\n\
                 [nts]\nlisten = [\"{SERVER}:4460\"]\ncertificate = \"{}\"\nprivate_key = \"{}\"\nkey_secret_file = \"{}\"\n",
                sock.display(),
                pki.cert.display(),
                pki.key.display(),
                secret.display()
            );
            for (view, secs) in OFFSETS {
                text += &format!("[[view]]\nname = \"{view}\"\noffset = \"{secs}s\"\n");
            }
            text += &format!(
                "[[spread]]\nname = \"vms\"\nviews = [\"s00\", \"s15\", \"s30\", \"s45\"]\nclients = [\"198.18.0.0/24\"]\n\
                 [cluster]\n{}\nhost = \"{name}\"\n",
                etcd.endpoints_toml()
            );
            let cfg = hdir.join("serve.toml");
            std::fs::write(&cfg, text).unwrap();
            let prefix = lan.enter(3 + i, None);
            let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
            let server = ServerProcess::start_with(&prefix, &["--config", cfg.to_str().unwrap()]);
            hosts.push((name.to_string(), server, sock));
        }
        let id = format!("{tag}{}", std::process::id() % 100_000);
        VmHosts {
            hosts,
            _etcd: etcd,
            vms: Vec::new(),
            lan,
            dir,
            id,
        }
    }

    fn host_ns(&self, h: usize) -> &str {
        &self.lan.hosts[3 + h]
    }

    /// VM `v`'s link on its host's side.
    fn link(&self, v: usize) -> String {
        format!("nt{}v{v}", self.id)
    }

    /// A new VM on host `h`, at 198.18.0.(10 + its number).
    fn add_vm(&mut self, h: usize) -> usize {
        let v = self.vms.len();
        let ns = ntp_offset_testkit::netns::Netns::add(format!("nto-{}-vm{v}", self.id));
        let (outer, inner) = (self.link(v), format!("nt{}i{v}", self.id));
        common::ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ]);
        common::ip(&["link", "set", &inner, "netns", &ns.0]);
        common::ip(&["link", "set", &outer, "netns", self.host_ns(h)]);
        ntp_offset_testkit::netns::up(&ns, &inner, &[format!("198.18.0.{}/24", 10 + v)], None);
        self.vms.push(ns);
        self.plug(v, h);
        v
    }

    fn plug(&self, v: usize, h: usize) {
        let link = self.link(v);
        common::ip(&[
            "-n",
            self.host_ns(h),
            "link",
            "set",
            &link,
            "master",
            "vmbr",
        ]);
        common::ip(&["-n", self.host_ns(h), "link", "set", &link, "up"]);
    }

    /// Live migration, as the network sees it: the VM's link leaves host `from`'s bridge for
    /// host `to`'s.
    fn migrate(&self, v: usize, from: usize, to: usize) {
        common::ip(&[
            "-n",
            self.host_ns(from),
            "link",
            "set",
            &self.link(v),
            "netns",
            self.host_ns(to),
        ]);
        self.plug(v, to);
    }

    fn vm_prefix(&self, v: usize) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.vms[v].0.clone(),
        ]
    }

    fn status(&self, h: usize) -> serde_json::Value {
        control_json("status", &self.hosts[h].2, &[])["serve"].clone()
    }

    /// Host `h`'s view of client VM `v` (from `clients`), if it has seen it.
    fn view_at(&self, h: usize, v: usize) -> Option<String> {
        let addr = format!("198.18.0.{}", 10 + v);
        let list = control_json("clients", &self.hosts[h].2, &[]);
        list.as_array()?
            .iter()
            .find(|c| c["address"] == addr.as_str())
            .and_then(|c| c["view"].as_str().map(String::from))
    }
}

/// One ntpdig exchange from VM namespace `prefix`: the offset, or None when the server did
/// not answer with time (a new client's first requests, stratum 16).
fn ntpdig_once(prefix: &[String]) -> Option<f64> {
    let (first, rest) = prefix.split_first().unwrap();
    let out = common::run_bounded(
        std::process::Command::new(first)
            .args(rest)
            .arg(common::peer("ntpdig"))
            .args(["-j", "-t", "2", SERVER]),
        Duration::from_secs(10),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("\"stratum\":16") {
        return None;
    }
    text.split("\"offset\":")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn vms_behind_one_address_on_three_hosts_migrate_with_their_view_and_nts_cookies() {
    common::require_root();
    let mut c = VmHosts::new("clmig");
    // Six plain VMs, two on each host, asking with ntpdig until answered with time.
    let mut views = Vec::new();
    for v in 0..6 {
        let h = v % 3;
        c.add_vm(h);
        let offset = wait_until(ASSIGN_TIMEOUT, || ntpdig_once(&c.vm_prefix(v)))
            .unwrap_or_else(|| panic!("VM {v} on host {h} never answered with time"));
        views.push(offset.round() as i64);
    }
    // One VM with chronyd over NTS, on host a.
    let nts_vm = c.add_vm(0);
    let cdir = c.dir.join("chrony");
    std::fs::create_dir_all(&cdir).unwrap();
    let conf = cdir.join("chrony.conf");
    std::fs::write(
        &conf,
        format!(
            "server {SERVER} iburst nts minpoll 0 maxpoll 0\nntstrustedcerts {}\ncmdport 0\n\
             bindcmdaddress {}/chronyd.sock\npidfile {}/chronyd.pid\nntsdumpdir {}\n",
            c.dir.join("hosts-ca.pem").display(),
            cdir.display(),
            cdir.display(),
            cdir.display()
        ),
    )
    .unwrap();
    let mut argv = c.vm_prefix(nts_vm);
    argv.extend(common::chronyd_without_clock(&conf));
    let _chronyd = common::Background::start(&cdir, "chronyd", &argv);
    wait_until(ASSIGN_TIMEOUT, || {
        (c.status(0)["nts"]["ke_sessions"].as_u64() >= Some(1)).then_some(())
    })
    .expect("the NTS VM's key establishment at host a");
    // Every host holds every VM's record before anybody migrates.
    for h in 0..3 {
        wait_until(NOTICE_TIMEOUT, || {
            (c.status(h)["cluster"]["clients"] == 7).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "host {h} does not hold the 7 VMs: {}",
                c.status(h)["cluster"]
            )
        });
    }
    // The view its requests are answered from now (chronyd asks every second; its first
    // answers, while its view was being recorded, were unsynchronised).
    std::thread::sleep(Duration::from_secs(2));
    let nts_view = c.view_at(0, nts_vm).expect("host a answers the NTS VM");
    // Migrations: each plain VM to the next host; its first answer there is its view.
    let placing_before: Vec<u64> = (0..3)
        .map(|h| c.status(h)["totals"]["placing"].as_u64().unwrap_or(0))
        .collect();
    for (v, &view) in views.iter().enumerate() {
        let (from, to) = (v % 3, (v + 1) % 3);
        c.migrate(v, from, to);
        let first = ntpdig_once(&c.vm_prefix(v)).map(|o| o.round() as i64);
        assert_eq!(
            first,
            Some(view),
            "VM {v} migrated from host {from} to {to}"
        );
    }
    // The NTS VM to host b: its requests go on with the cookies host a gave (no KE at b).
    let b_requests = |c: &VmHosts| {
        let s = c.status(1);
        (
            s["nts"]["ke_sessions"].as_u64().unwrap_or(0),
            s["totals"]["nts_nak"].as_u64().unwrap_or(0),
        )
    };
    assert_eq!(b_requests(&c), (0, 0));
    c.migrate(nts_vm, 0, 1);
    let at_b = wait_until(NOTICE_TIMEOUT, || c.view_at(1, nts_vm))
        .expect("host b never answered the migrated NTS VM");
    assert_eq!(at_b, nts_view, "the NTS VM's view at b");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        b_requests(&c),
        (0, 0),
        "host b: KE sessions and NTS-NAKs after the migration"
    );
    let placing_after: Vec<u64> = (0..3)
        .map(|h| c.status(h)["totals"]["placing"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(
        placing_before, placing_after,
        "a migrated VM was answered unsynchronised"
    );
    no_moves(&c);

    // Host c cut off from etcd (its backbone link down): its known VMs are answered, a new
    // VM there is not; a new VM on host a is. Back: c's new VM gets a view, nobody moved.
    let (c_ns, c_dev) = (c.host_ns(2).to_string(), c.lan.device(5));
    common::ip(&["-n", &c_ns, "link", "set", &c_dev, "down"]);
    wait_until(NOTICE_TIMEOUT, || {
        (c.status(2)["cluster"]["available"] == false).then_some(())
    })
    .expect("host c never noticed it was cut off");
    for v in (0..6).filter(|v| (v + 1) % 3 == 2) {
        let got = ntpdig_once(&c.vm_prefix(v)).map(|o| o.round() as i64);
        assert_eq!(got, Some(views[v]), "VM {v} on the cut-off host c");
    }
    let new_c = c.add_vm(2);
    for _ in 0..3 {
        assert_eq!(
            ntpdig_once(&c.vm_prefix(new_c)),
            None,
            "a new VM answered by the cut-off host"
        );
    }
    let new_a = c.add_vm(0);
    wait_until(ASSIGN_TIMEOUT, || ntpdig_once(&c.vm_prefix(new_a)))
        .expect("a new VM on host a while c is cut off");
    common::ip(&["-n", &c_ns, "link", "set", &c_dev, "up"]);
    let back = wait_until(Duration::from_secs(60), || ntpdig_once(&c.vm_prefix(new_c)))
        .expect("host c's new VM never answered after it was back");
    println!(
        "host c back: its new VM at {back:+.3} s; {}",
        c.status(2)["cluster"]
    );
    for (v, &view) in views.iter().enumerate() {
        let got = ntpdig_once(&c.vm_prefix(v)).map(|o| o.round() as i64);
        assert_eq!(got, Some(view), "VM {v} after host c's outage");
    }
    no_moves(&c);
}

/// No host moved a client because another host had.
fn no_moves(c: &VmHosts) {
    for h in 0..3 {
        let s = c.status(h);
        assert_eq!(
            s["cluster"]["moves_followed"], 0,
            "host {h}: {}",
            s["cluster"]
        );
    }
}
