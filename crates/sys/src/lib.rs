//! The only `unsafe` code of ntp-offset, behind safe types:
//! - [`batch`]: recvmmsg/sendmmsg with preallocated buffers and kernel receive timestamps;
//! - [`clock`]: clock_gettime, clock_nanosleep and a read-only adjtimex;
//! - [`txstamp`]: kernel transmit timestamps from the socket error queue;
//! - [`shm`]: the NTP shared-memory refclock segment;
//! - [`poll`]: waiting on several sockets;
//! - [`steer`]: a SO_REUSEPORT group steered by the client's address (classic BPF);
//! - [`neighbours`]: the kernel's neighbour table over rtnetlink (safe: socket2);
//! - [`gpio`]: a GPIO input line's kernel-timestamped edges (a DCF77 module).
//! - [`serial`]: a serial port's DCD line as edges (a DCF77 module on a serial port).
//! - [`pps`]: a PPS device's pulses (RFC 2783 on Linux).

pub mod batch;
pub mod clock;
pub mod gpio;
pub mod neighbours;
pub mod poll;
pub mod pps;
pub mod serial;
pub mod shm;
pub mod steer;
pub mod txstamp;
