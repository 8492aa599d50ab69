//! Ticks on the wire, for every part that sends or receives them: the key file, the tick
//! input that `pulse listen` and `serve`'s pulse reference share, and the transmitter that
//! `pulse send`'s sources share. The protocol itself is sans-IO, in `ntp-offset-proto`.

pub mod input;
pub mod keys;
pub mod transmit;
