//! The integration tests: the `ntp-offset` binary against real peers, one module per concern.
//!
//! One test binary, not one per file (as cargo's own `tests/testsuite`): each binary links the
//! whole dependency graph with the release profile's LTO, about 22 s of CPU apiece, so fourteen
//! of them cost the suite's build minutes. Run one concern with
//! `cargo test --release --test integration pulse::`.
//!
//! Tests of different modules share a process and run side by side, so what they name in the
//! system carries a tag unique to its call site besides the process id: network namespaces
//! (`Lan::new`, `NetnsPair::new` in crates/testkit) and temporary folders (`tempdir`).

mod auth;
mod cli;
mod cluster;
mod firmware;
mod interleaved;
mod monitor;
mod nts;
mod peers;
mod pulse;
mod pulse_reference;
mod robustness;
mod service;
mod spread;
mod survival;
mod vms;
mod workers;
