//! Containers and other machines in `machine.slice` (libvirt-lxc's `machine-lxc\x2d…scope`,
//! systemd-nspawn's `systemd-nspawn@NAME.service`, any unit an operator starts there): each
//! runs in a network namespace of its own, whose addresses `/proc/PID/net` shows to any user,
//! so its NTP requests are known to be its own without a MAC. Its CPU time is its unit's
//! cgroup. A unit whose processes share the host's namespace (a QEMU VM: found by its MACs in
//! [`super::qemu`]) has none of its own and is left out.

use std::fs;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ntp_offset_proto::local_addrs::local_addrs;

use super::qemu::QemuVm;

/// Reading more of a namespace's `fib_trie` than this is a host with huge routing tables in
/// its containers: the addresses come first, and the rest is not needed.
const MAX_READ: u64 = 256 * 1024;
/// How deep below its unit a machine's processes are looked for (nspawn puts them in
/// `payload/` and `supervisor/`; cgroup v2 keeps processes in leaves only).
const MAX_DEPTH: usize = 3;

/// One machine: as the watcher keeps found VMs, and its own addresses.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    pub vm: QemuVm,
    pub addrs: Vec<IpAddr>,
}

/// A unit's name as people know the machine: `machine-lxc\x2d4242\x2dweb1.scope` is `web1`,
/// `systemd-nspawn@db.service` is `db`, `machine-build.scope` is `build`.
pub fn machine_name(unit: &str) -> String {
    let stem = unit
        .strip_suffix(".scope")
        .or_else(|| unit.strip_suffix(".service"))
        .unwrap_or(unit);
    let stem = stem.split_once('@').map_or(stem, |(_, instance)| instance);
    let stem = stem.strip_prefix("machine-").unwrap_or(stem);
    let name = unescape(stem);
    // libvirt's `lxc-PID-NAME` and `qemu-ID-NAME`.
    for driver in ["lxc-", "qemu-"] {
        if let Some((id, rest)) = name.strip_prefix(driver).and_then(|r| r.split_once('-')) {
            if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !rest.is_empty() {
                return rest.to_string();
            }
        }
    }
    name
}

/// systemd's unit-name escaping undone: `\x2d` is `-`.
fn unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 2..i + 4)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(byte) if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') => {
                out.push(byte);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_capped(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(f) = fs::File::open(path) {
        let _ = f.take(MAX_READ).read_to_string(&mut text);
    }
    text
}

/// A namespace's own addresses, through any process in it (`proc_root/PID`, or `self`).
pub fn addrs_of(proc_root: &Path, pid: &str) -> Vec<IpAddr> {
    let net = proc_root.join(pid).join("net");
    local_addrs(
        &read_capped(&net.join("fib_trie")),
        &read_capped(&net.join("if_inet6")),
    )
}

/// The first process in `dir` or a cgroup below it.
fn first_pid(dir: &Path, depth: usize) -> Option<u32> {
    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    if let Some(pid) = procs.lines().find_map(|l| l.trim().parse().ok()) {
        return Some(pid);
    }
    if depth == 0 {
        return None;
    }
    let mut children: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    children.sort();
    children.iter().find_map(|c| first_pid(c, depth - 1))
}

/// Every unit in `cgroup_root/machine.slice` whose processes have a network namespace of
/// their own: none of `host` (this server's own addresses) among its addresses.
pub fn scan(proc_root: &Path, cgroup_root: &Path, host: &[IpAddr]) -> Vec<Machine> {
    let Ok(dir) = fs::read_dir(cgroup_root.join("machine.slice")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let unit = entry.file_name().to_string_lossy().into_owned();
        if !(unit.ends_with(".scope") || unit.ends_with(".service")) {
            continue;
        }
        let Some(pid) = first_pid(&entry.path(), MAX_DEPTH) else {
            continue;
        };
        let addrs = addrs_of(proc_root, &pid.to_string());
        if addrs.is_empty() || addrs.iter().any(|a| host.contains(a)) {
            continue;
        }
        let name = machine_name(&unit);
        out.push(Machine {
            vm: QemuVm {
                pid,
                id: format!("machine:{unit}"),
                name,
                macs: Vec::new(),
                cgroup: Some(entry.path()),
            },
            addrs,
        });
    }
    out.sort_by(|a, b| a.vm.id.cmp(&b.vm.id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_become_machine_names() {
        for (unit, name) in [
            ("machine-lxc\\x2d4242\\x2dweb1.scope", "web1"),
            ("machine-qemu\\x2d3\\x2ddb\\x2dprimary.scope", "db-primary"),
            ("systemd-nspawn@build.service", "build"),
            ("machine-build.scope", "build"),
            ("machine-lxc\\x2dweb.scope", "lxc-web"),
            ("odd\\x2.scope", "odd\\x2"),
            ("tail\\x", "tail\\x"),
            ("\\xff.scope", "\u{fffd}"),
        ] {
            assert_eq!(machine_name(unit), name, "{unit}");
        }
    }

    /// A fake `/proc` and cgroup tree: a container with its own addresses (its process in
    /// `payload/`, as nspawn puts it), a QEMU unit in the host's namespace, an empty unit,
    /// and a slice that is not a machine.
    #[test]
    fn containers_with_namespaces_of_their_own_are_found_the_rest_left_out() {
        let root = std::env::temp_dir().join(format!("nto-machines-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let (procs, cgroups) = (root.join("proc"), root.join("cgroup"));
        let net = |pid: &str, v4: &str| {
            let d = procs.join(pid).join("net");
            fs::create_dir_all(&d).unwrap();
            let trie =
                format!("Main:\n  +-- 0.0.0.0/0 2 0 2\n     |-- {v4}\n        /32 host LOCAL\n");
            fs::write(d.join("fib_trie"), trie).unwrap();
            fs::write(d.join("if_inet6"), "").unwrap();
        };
        net("self", "192.168.122.1");
        net("100", "192.168.122.50");
        net("200", "192.168.122.1"); // QEMU: the host's namespace
        let unit = |name: &str, pid: Option<&str>| {
            let d = cgroups.join("machine.slice").join(name);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("cgroup.procs"), "").unwrap();
            if let Some(pid) = pid {
                fs::create_dir_all(d.join("payload")).unwrap();
                fs::write(d.join("payload/cgroup.procs"), format!("{pid}\n")).unwrap();
            }
        };
        unit("systemd-nspawn@web.service", Some("100"));
        unit("machine-qemu\\x2d1\\x2dvm1.scope", Some("200"));
        unit("machine-gone.scope", None);
        fs::create_dir_all(cgroups.join("machine.slice/other.slice")).unwrap();
        let host = addrs_of(&procs, "self");
        let found = scan(&procs, &cgroups, &host);
        assert_eq!(found.len(), 1, "{found:#?}");
        let m = &found[0];
        assert_eq!(
            (m.vm.name.as_str(), m.vm.pid, m.addrs.clone()),
            (
                "web",
                100,
                vec!["192.168.122.50".parse::<IpAddr>().unwrap()]
            )
        );
        assert_eq!(m.vm.id, "machine:systemd-nspawn@web.service");
        assert_eq!(
            m.vm.cgroup.as_deref(),
            Some(
                cgroups
                    .join("machine.slice/systemd-nspawn@web.service")
                    .as_path()
            )
        );
        assert!(scan(&procs, &root.join("none"), &host).is_empty());
        let _ = fs::remove_dir_all(&root);
    }
}
