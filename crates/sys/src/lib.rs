//! The only `unsafe` code of ntp-offset, behind safe types:
//! - [`batch`]: recvmmsg/sendmmsg with preallocated buffers and kernel receive timestamps;
//! - [`clock`]: clock_gettime and a read-only adjtimex.

pub mod batch;
pub mod clock;
