//! The VMs on this host and their load: which QEMU process or container each NTP client is,
//! and each VM's minute profile of host CPU, for load-aware spreading (docs/vm-hosts.md).
//!
//! - [`qemu`]: QEMU processes and the MACs, names and cgroups their command lines give.
//! - [`machines`]: containers in `machine.slice`, known by their network namespaces' addresses.
//! - [`configured`]: VMs the config names (`[[vm]]`), where the host cannot tell.
//! - [`cpu`]: a VM's CPU time, from its cgroup or its process.
//! - [`watch`]: the thread that finds VMs, maps client addresses to them through the kernel's
//!   neighbour table, samples their CPU several times a second into profiles by second of
//!   each VM's own minute, and keeps the host's predicted load for placement.

pub mod configured;
pub mod cpu;
pub mod machines;
pub mod qemu;
pub mod watch;

pub use watch::{Located, VmRow, Vms, Watch};
