//! A cluster of hosts as one server: the records its hosts share through a store (etcd), and
//! each host's copy of them. Sans IO: `ntp-offset`'s `cluster` module talks to the store.
//!
//! - [`record`]: the keys and values of the store, next to their vectors.
//! - [`copy`]: a host's copy, updated by the store's events and saved in `state_dir`.

pub mod copy;
pub mod record;
