//! VMs named in the config (`[[vm]]`): the last resort where the host cannot tell a client's
//! VM by itself (VMs routed to the host rather than on its bridge, so without a neighbour
//! entry; VMs that are neither QEMU processes nor containers in `machine.slice`). Each names
//! its client addresses and where its CPU time is read: a cgroup v2 directory, or the pid
//! file of its process.

use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::qemu::QemuVm;

/// Where the cgroup v2 hierarchy is mounted: a relative `cgroup` is under it.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

#[derive(Clone, Debug, PartialEq)]
pub struct VmMapping {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub cpu: CpuSource,
}

#[derive(Clone, Debug, PartialEq)]
pub enum CpuSource {
    /// A cgroup v2 directory (its `cpu.stat`), absolute.
    Cgroup(PathBuf),
    /// A file holding the VM process's PID (libvirt's `/run/libvirt/qemu/NAME.pid`).
    PidFile(PathBuf),
}

impl VmMapping {
    /// The VM as the watcher keeps found ones: its id (`config:NAME`, never a QEMU VM's),
    /// the process its pid file names now (0: none, or a cgroup), and its cgroup.
    pub fn found(&self) -> QemuVm {
        let (pid, cgroup) = match &self.cpu {
            CpuSource::Cgroup(dir) => (0, Some(dir.clone())),
            CpuSource::PidFile(file) => (read_pid_file(file).unwrap_or(0), None),
        };
        QemuVm {
            pid,
            id: format!("config:{}", self.name),
            name: self.name.clone(),
            macs: Vec::new(),
            cgroup,
        }
    }
}

/// The PID a pid file holds (a decimal number and perhaps a newline; at most 32 bytes read).
pub fn read_pid_file(path: &Path) -> Option<u32> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(32)
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok().filter(|&p| p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_gives_its_process_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("nto-pidfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (text, pid) in [
            ("4242\n", Some(4242)),
            ("4242", Some(4242)),
            ("0\n", None),
            ("-1\n", None),
            ("web\n", None),
            ("", None),
            ("99999999999999999999999999999999999", None),
        ] {
            let f = dir.join("vm.pid");
            std::fs::write(&f, text).unwrap();
            assert_eq!(read_pid_file(&f), pid, "{text:?}");
        }
        assert_eq!(read_pid_file(&dir.join("missing.pid")), None);
        let m = VmMapping {
            name: "db1".into(),
            addresses: vec!["10.0.0.5".parse().unwrap()],
            cpu: CpuSource::PidFile(dir.join("missing.pid")),
        };
        let found = m.found();
        assert_eq!((found.id.as_str(), found.pid), ("config:db1", 0));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
