//! Load-aware spreading: each VM's measured minute profile ([`profile`]) and placement by it
//! so that the host's busiest second is as light as it can be ([`placement`]).

pub mod host;
pub mod placement;
pub mod profile;
