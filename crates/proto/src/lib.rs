//! The sans-IO core of ntp-offset: everything the server decides, as pure functions and small
//! state machines over plain values. No sockets, no clocks, no threads: the `ntp-offset` crate
//! reads the kernel and the network and hands the values in.
//!
//! - [`time`]: instants, offsets, NTP timestamps and their era arithmetic.
//! - [`packet`]: the NTP header codec, next to its byte vectors.
//! - [`view`]: views, and how a request's addresses choose one.
//! - [`balancer`]: balanced, sticky assignment of clients to a spread group's views.
//! - [`cluster`]: the records a cluster of hosts shares through etcd, and a host's copy.
//! - [`load`]: each VM's minute profile of host CPU, and placement that lowers the host's peak.
//! - [`move_smear`]: moving a client to another view by walking its offset, not stepping it.
//! - [`neighbours`]: the kernel's neighbour table over rtnetlink: which MAC an address is.
//! - [`local_addrs`]: a network namespace's own addresses from `/proc/PID/net` (containers).
//! - [`ratelimit`]: per-client rate limiting in a fixed-size table.
//! - [`leap`]: leap-second handling shared by all views (smear or step).
//! - [`system`]: the header fields every answer shares, from the kernel's clock status.
//! - [`symmetric`]: symmetric keys (chrony's key file) and the NTP MACs they make (AES-CMAC,
//!   keyed digests), RFC 8573.
//! - [`nts`]: Network Time Security: key establishment records, cookies, extension fields.
//! - [`responder`]: [`responder::decide`], the server's decision for one request.
//! - [`interleaved`]: interleaved mode: which answers to log, and the log of their real
//!   transmit times.
//! - [`client`]: the client side of one exchange (offset, delay), for `query`.
//! - [`clock_model`]: the pulse-disciplined clock (phase, frequency, error bound, holdover).
//! - [`tick`]: the tick protocol's wire format; [`tick_auth`]: its MAC and key file.
//! - [`tick_receiver`]: which received ticks become samples for the NTP daemon.
//! - [`dcf77`]: the DCF77 decoder: a radio clock's second marks and minute frames from edges.
//! - [`pps_pulses`]: which ticks a PPS device's pulses become (`pulse send --source pps`).
//! - [`refclock`]: those samples as chrony's SOCK and the NTP SHM refclocks read them.
#![forbid(unsafe_code)]

pub mod balancer;
pub mod client;
pub mod clock_model;
pub mod cluster;
pub mod dcf77;
pub mod interleaved;
pub mod key_file;
pub mod leap;
pub mod load;
pub mod local_addrs;
pub mod move_smear;
pub mod neighbours;
pub mod nts;
pub mod packet;
pub mod pps_pulses;
pub mod ratelimit;
pub mod refclock;
pub mod responder;
pub mod symmetric;
pub mod system;
pub mod tick;
pub mod tick_auth;
pub mod tick_receiver;
pub mod tick_stats;
pub mod time;
pub mod view;
pub mod wire;
