//! The `ntp-offset` program's parts, as a library so that fuzz targets (`fuzz/`) reach the
//! configuration parser. The program itself is `main.rs`: the command line and its dispatch.
//!
//! Data flow: a source (`serve/system_reference.rs`, `serve/pulse_reference.rs` fed by
//! `ticks/`) -> the clock (`serve/clock.rs`) -> views (`config/views.rs`, `proto::view`) ->
//! the responder (`serve/worker.rs`, `proto::responder`). Watching it run: `monitor/` (the
//! control socket, metrics, status page) and `control/` (its protocol, `status`, `clients`).
//! A cluster of hosts shares its balanced groups' assignments through etcd: `cluster/`.
#![forbid(unsafe_code)]

pub mod args;
pub mod cluster;
pub mod config;
pub mod control;
pub mod demo;
pub mod duration;
pub mod entropy;
pub mod files;
pub mod logging;
pub mod monitor;
pub mod pulse;
pub mod query;
pub mod serve;
pub mod service;
pub mod text;
pub mod ticks;
pub mod tls;
pub mod udp;
pub mod vms;
