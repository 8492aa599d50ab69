//! The control socket seen from outside: its versioned [`protocol`], the [`status`] it
//! carries and its [`counters`], and the `ntp-offset status` and `clients` commands ([`client`], [`render`]).
//! The daemons' side is `monitor::control_socket`.

pub mod client;
pub mod counters;
pub mod path;
pub mod protocol;
pub mod render;
pub mod status;
