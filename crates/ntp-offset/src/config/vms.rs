//! `[[vm]]`: VMs named by hand, for load placement where the host cannot tell a client's VM
//! (docs/vm-hosts.md). Each has a unique name, the client addresses it asks from, and where
//! its CPU time is read: `cgroup` (a cgroup v2 directory, relative to /sys/fs/cgroup unless
//! absolute) or `pid_file`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::raw::RawVm;
use super::{ConfigError, Context};
use crate::vms::configured::{CpuSource, VmMapping, CGROUP_ROOT};

impl Context<'_> {
    pub(super) fn vm_mappings(
        &self,
        raw: &[Spanned<RawVm>],
        warnings: &mut Vec<ConfigError>,
    ) -> Result<Vec<VmMapping>, ConfigError> {
        let mut out: Vec<VmMapping> = Vec::new();
        for v in raw {
            let v = v.get_ref();
            let name = v.name.get_ref().trim();
            let field = format!("vm `{name}`");
            if name.is_empty() {
                return self.err(v.name.span(), "vm.name", "must not be empty");
            }
            if out.iter().any(|m| m.name == name) {
                return self.err(v.name.span(), "vm.name", format!("`{name}` is named twice"));
            }
            let addresses = self.vm_addresses(v, &field, &out)?;
            let cpu = match (&v.cgroup, &v.pid_file) {
                (Some(c), None) => {
                    let dir = Path::new(CGROUP_ROOT).join(c.get_ref());
                    if !dir.join("cpu.stat").exists() {
                        warnings.push(self.error_at(
                            c.span(),
                            format!("{field}.cgroup"),
                            format!("{} has no cpu.stat now (not a cgroup v2 directory, or the VM is not running): its load is measured once it has", dir.display()),
                        ));
                    }
                    CpuSource::Cgroup(dir)
                }
                (None, Some(p)) => CpuSource::PidFile(PathBuf::from(p.get_ref())),
                (Some(c), Some(_)) => {
                    return self.err(
                        c.span(),
                        format!("{field}.cgroup"),
                        "give `cgroup` or `pid_file`, not both",
                    )
                }
                (None, None) => {
                    return self.err(
                        v.name.span(),
                        field,
                        "needs `cgroup` (its cgroup v2 directory) or `pid_file` (its process's), where its CPU time is read",
                    )
                }
            };
            out.push(VmMapping {
                name: name.to_string(),
                addresses,
                cpu,
            });
        }
        Ok(out)
    }

    fn vm_addresses(
        &self,
        v: &RawVm,
        field: &str,
        earlier: &[VmMapping],
    ) -> Result<Vec<IpAddr>, ConfigError> {
        let at = format!("{field}.addresses");
        if v.addresses.get_ref().is_empty() {
            return self.err(v.addresses.span(), at, "needs at least one client address");
        }
        let mut addresses = Vec::new();
        for a in v.addresses.get_ref() {
            let ip: IpAddr = a.get_ref().trim().parse().map_err(|_| {
                self.error_at(
                    a.span(),
                    &at,
                    format!(
                        "`{}` is not an IP address (one address, no prefix)",
                        a.get_ref()
                    ),
                )
            })?;
            if let Some(other) = earlier.iter().find(|m| m.addresses.contains(&ip)) {
                return self.err(
                    a.span(),
                    &at,
                    format!("{ip} is VM `{}`'s already: a client is one VM", other.name),
                );
            }
            if !addresses.contains(&ip) {
                addresses.push(ip);
            }
        }
        Ok(addresses)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, ConfigError, ServeConfig};
    use super::*;

    fn config(vms: &str) -> Result<ServeConfig, ConfigError> {
        parse(
            &format!(
                "[server]\nlisten = [\"127.0.0.1:11123\"]\ndefault_view = \"a\"\n[[view]]\nname = \"a\"\noffset = \"0s\"\n{vms}"
            ),
            "t.toml",
        )
    }

    #[test]
    fn named_vms_are_read_with_their_addresses_and_cpu_source() {
        let c = config(
            "[[vm]]\nname = \"db1\"\naddresses = [\"10.0.0.5\", \"2001:db8::5\", \"10.0.0.5\"]\n\
             cgroup = \"machine.slice/db1.scope\"\n\
             [[vm]]\nname = \"web\"\naddresses = [\"10.0.0.6\"]\npid_file = \"/run/web.pid\"\n",
        )
        .unwrap();
        assert_eq!(
            c.vms,
            [
                VmMapping {
                    name: "db1".into(),
                    addresses: vec!["10.0.0.5".parse().unwrap(), "2001:db8::5".parse().unwrap()],
                    cpu: CpuSource::Cgroup(PathBuf::from("/sys/fs/cgroup/machine.slice/db1.scope")),
                },
                VmMapping {
                    name: "web".into(),
                    addresses: vec!["10.0.0.6".parse().unwrap()],
                    cpu: CpuSource::PidFile(PathBuf::from("/run/web.pid")),
                },
            ]
        );
        assert!(
            c.warnings.iter().any(|w| w.field == "vm `db1`.cgroup"),
            "a cgroup without cpu.stat is worth a warning: {:?}",
            c.warnings
        );
    }

    #[test]
    fn a_named_vm_that_cannot_be_one_is_refused() {
        for (vm, field, says) in [
            ("name = \"\"\naddresses = [\"10.0.0.5\"]\npid_file = \"p\"", "vm.name", "empty"),
            ("name = \"x\"\naddresses = []\npid_file = \"p\"", "vm `x`.addresses", "at least one"),
            ("name = \"x\"\naddresses = [\"10.0.0.0/24\"]\npid_file = \"p\"", "vm `x`.addresses", "not an IP address"),
            ("name = \"x\"\naddresses = [\"10.0.0.5\"]", "vm `x`", "needs `cgroup`"),
            ("name = \"x\"\naddresses = [\"10.0.0.5\"]\npid_file = \"p\"\ncgroup = \"c\"", "vm `x`.cgroup", "not both"),
            ("name = \"x\"\naddresses = [\"10.0.0.5\"]\npid_file = \"p\"\nmac = \"52:54:00:00:00:01\"", "vm `x`.mac", "unknown field"),
        ] {
            let e = config(&format!("[[vm]]\n{vm}\n")).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.message.contains(says), "{e}");
        }
        let twice = "[[vm]]\nname = \"x\"\naddresses = [\"10.0.0.5\"]\npid_file = \"p\"\n";
        let e = config(&format!("{twice}{}", twice.replace("x", "y"))).unwrap_err();
        assert!(e.message.contains("VM `x`'s already"), "{e}");
        let e = config(&format!("{twice}{twice}")).unwrap_err();
        assert!(e.message.contains("named twice"), "{e}");
    }
}
