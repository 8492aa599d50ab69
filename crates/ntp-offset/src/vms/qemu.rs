//! Finding the VMs on this host: QEMU processes, as libvirt, Proxmox and OpenStack start them,
//! carry each NIC's MAC on their command line (`-device virtio-net-pci,...,mac=52:54:00:..`,
//! or `-net nic,macaddr=..`), and their name (`-name guest=NAME,...`) and UUID (`-uuid`).

use std::fs;
use std::path::{Path, PathBuf};

/// A QEMU process and what its command line says about its VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuVm {
    pub pid: u32,
    /// How the VM is known across restarts: its UUID, else its name, else its first MAC.
    pub id: String,
    /// Its name for people (the `-name`, else the id).
    pub name: String,
    pub macs: Vec<[u8; 6]>,
    /// Its cgroup v2 directory, when it has one of its own (libvirt's `machine.slice`).
    pub cgroup: Option<PathBuf>,
}

/// `52:54:00:12:34:56` (or with `-`).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

pub fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Whether `argv0` is a QEMU system emulator (`qemu-system-x86_64`, `qemu-kvm`, `kvm`).
fn is_qemu(argv0: &str) -> bool {
    let base = argv0.rsplit('/').next().unwrap_or(argv0);
    base.starts_with("qemu-system-") || base == "qemu-kvm" || base == "kvm"
}

/// The value of `key=` in a comma-separated option list.
fn option<'a>(list: &'a str, key: &str) -> Option<&'a str> {
    list.split(',')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// What a QEMU command line says: (id, name, MACs); None if it is not QEMU's.
pub fn parse_cmdline(args: &[&str]) -> Option<(String, String, Vec<[u8; 6]>)> {
    if !is_qemu(args.first()?) {
        return None;
    }
    let (mut name, mut uuid, mut macs) = (None, None, Vec::new());
    for pair in args.windows(2) {
        let (flag, value) = (pair[0].trim_start_matches('-'), pair[1]);
        match flag {
            // `-name guest=web1,debug-threads=on` or `-name web1`.
            "name" => {
                let n = option(value, "guest").unwrap_or(value.split(',').next().unwrap_or(""));
                name = Some(n.to_string());
            }
            "uuid" => uuid = Some(value.to_string()),
            "device" | "net" | "nic" => {
                if let Some(m) = option(value, "mac").or(option(value, "macaddr")) {
                    macs.extend(parse_mac(m));
                }
            }
            _ => {}
        }
    }
    let id = uuid
        .clone()
        .or(name.clone())
        .or(macs.first().map(|m| format!("mac-{}", mac_text(m))))?;
    let name = name.unwrap_or_else(|| id.clone());
    Some((id, name, macs))
}

/// The process's own cgroup v2 directory under `cgroup_root`, if it is a VM's scope (libvirt
/// puts each VM in `machine.slice/machine-qemu-N-NAME.scope`; QEMU's threads may sit in
/// sub-groups below it, which the scope's `cpu.stat` includes).
fn vm_cgroup(proc_dir: &Path, cgroup_root: &Path) -> Option<PathBuf> {
    let text = fs::read_to_string(proc_dir.join("cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mut scope = PathBuf::from(cgroup_root);
    for part in path.trim_start_matches('/').split('/') {
        scope.push(part);
        if part.ends_with(".scope") && part.starts_with("machine-") {
            return Some(scope);
        }
    }
    None
}

/// Every QEMU process under `proc_root` (normally `/proc`).
pub fn scan(proc_root: &Path, cgroup_root: &Path) -> Vec<QemuVm> {
    let Ok(dir) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut vms = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A process that exits meanwhile reads as nothing: skip it.
        let Ok(raw) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&raw);
        let args: Vec<&str> = text.split('\0').filter(|a| !a.is_empty()).collect();
        if let Some((id, name, macs)) = parse_cmdline(&args) {
            let cgroup = vm_cgroup(&entry.path(), cgroup_root);
            vms.push(QemuVm {
                pid,
                id,
                name,
                macs,
                cgroup,
            });
        }
    }
    vms.sort_by_key(|v| v.pid);
    vms
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];

    #[test]
    fn libvirt_proxmox_and_plain_command_lines() {
        // libvirt (trimmed): name, uuid, a -device NIC.
        let libvirt = [
            "/usr/bin/qemu-system-x86_64",
            "-name",
            "guest=web1,debug-threads=on",
            "-uuid",
            "5f3c6a9e-1b2d-4c3e-8f70-0123456789ab",
            "-netdev",
            "tap,fd=33,id=hostnet0",
            "-device",
            "virtio-net-pci,netdev=hostnet0,id=net0,mac=52:54:00:ab:cd:ef,bus=pci.1,addr=0x0",
        ];
        let (id, name, macs) = parse_cmdline(&libvirt).unwrap();
        assert_eq!(
            (id.as_str(), name.as_str()),
            ("5f3c6a9e-1b2d-4c3e-8f70-0123456789ab", "web1")
        );
        assert_eq!(macs, vec![MAC]);
        // Proxmox: /usr/bin/kvm, -id, -name NAME,debug-threads=on, two NICs.
        let proxmox = [
            "/usr/bin/kvm",
            "-id",
            "101",
            "-name",
            "db,debug-threads=on",
            "-device",
            "virtio-net-pci,mac=BC:24:11:00:00:01,netdev=net0",
            "-device",
            "e1000,mac=BC:24:11:00:00:02,netdev=net1",
        ];
        let (id, name, macs) = parse_cmdline(&proxmox).unwrap();
        assert_eq!((id.as_str(), name.as_str()), ("db", "db"));
        assert_eq!(macs.len(), 2);
        // The old -net nic form, no name: known by its MAC.
        let plain = [
            "qemu-system-aarch64",
            "-net",
            "nic,macaddr=52:54:00:ab:cd:ef",
            "-net",
            "user",
        ];
        let (id, _, macs) = parse_cmdline(&plain).unwrap();
        assert_eq!(id, "mac-52:54:00:ab:cd:ef");
        assert_eq!(macs, vec![MAC]);
        // Not QEMU, or QEMU with nothing to know it by.
        assert_eq!(parse_cmdline(&["/usr/sbin/chronyd", "-name", "x"]), None);
        assert_eq!(parse_cmdline(&["qemu-system-x86_64", "-nographic"]), None);
        assert_eq!(parse_cmdline(&[]), None);
    }

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(parse_mac("52:54:00:ab:cd:ef"), Some(MAC));
        assert_eq!(parse_mac("52-54-00-AB-CD-EF"), Some(MAC));
        for bad in [
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:ef:01",
            "5:54:00:ab:cd:ef",
            "zz:54:00:ab:cd:ef",
            "",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        assert_eq!(mac_text(&MAC), "52:54:00:ab:cd:ef");
    }

    #[test]
    fn a_fake_proc_tree_is_scanned_with_cgroups() {
        let root =
            std::env::temp_dir().join(format!("ntp-offset-qemu-scan-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let proc_root = root.join("proc");
        for (pid, cmdline, cgroup) in [
            ("4242", "qemu-system-x86_64\0-name\0guest=a\0-device\0virtio-net-pci,mac=52:54:00:ab:cd:ef\0", "0::/machine.slice/machine-qemu\\x2d1\\x2da.scope/libvirt/emulator\n"),
            ("77", "/bin/sh\0-c\0true\0", "0::/user.slice\n"),
            ("self", "x", ""),
        ] {
            let d = proc_root.join(pid);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("cmdline"), cmdline).unwrap();
            fs::write(d.join("cgroup"), cgroup).unwrap();
        }
        let vms = scan(&proc_root, Path::new("/sys/fs/cgroup"));
        assert_eq!(vms.len(), 1, "{vms:?}");
        assert_eq!(vms[0].pid, 4242);
        assert_eq!(vms[0].name, "a");
        assert_eq!(
            vms[0].cgroup.as_deref(),
            Some(Path::new(
                "/sys/fs/cgroup/machine.slice/machine-qemu\\x2d1\\x2da.scope"
            ))
        );
        fs::remove_dir_all(&root).unwrap();
    }
}
