//! The kernel's neighbour table (ARP for IPv4, NDP for IPv6) over rtnetlink: the dump request
//! and the parser of its answers. A VM asks for time from an address on the host's bridge; the
//! neighbour table says which MAC it came from, and QEMU's command line says whose MAC that is.
//!
//! Netlink is the host's byte order, not the network's (rtnetlink(7), netlink(7)). The parser
//! is fed whatever the socket returns: a truncated or malformed message is an error, never a
//! panic (fuzzed: `fuzz/fuzz_targets/neighbours.rs`).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where each field lies in a message.
pub mod field {
    use crate::wire::Field;

    /// `struct nlmsghdr`.
    pub const NL_LEN: Field = 0..4;
    pub const NL_TYPE: Field = 4..6;
    pub const NL_FLAGS: Field = 6..8;
    pub const NL_SEQ: Field = 8..12;
    pub const NL_PID: Field = 12..16;
    pub const NL_HEADER_LEN: usize = 16;
    /// `struct ndmsg`, after the header.
    pub const ND_FAMILY: usize = 16;
    pub const ND_IFINDEX: Field = 20..24;
    pub const ND_STATE: Field = 24..26;
    pub const ND_LEN: usize = 12;
    /// `struct rtattr`, from the attribute's start.
    pub const RTA_LEN: Field = 0..2;
    pub const RTA_TYPE: Field = 2..4;
    pub const RTA_HEADER_LEN: usize = 4;
    /// `struct nlmsgerr`'s error number, after the header.
    pub const ERR_CODE: Field = 16..20;
}

const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// States whose link-layer address is not known (yet or any more).
const NUD_INCOMPLETE: u16 = 0x01;
const NUD_FAILED: u16 = 0x20;

/// An address the host has seen, and the MAC it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: IpAddr,
    pub mac: [u8; 6],
    pub ifindex: i32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NeighError {
    Truncated(usize),
    BadLength { len: usize, have: usize },
    Kernel(i32),
}

impl core::fmt::Display for NeighError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NeighError::Truncated(n) => write!(f, "netlink message cut short: {n} bytes"),
            NeighError::BadLength { len, have } => {
                write!(f, "netlink message of length {len} in {have} bytes")
            }
            NeighError::Kernel(e) => write!(f, "the kernel refused the neighbour dump: errno {e}"),
        }
    }
}

impl std::error::Error for NeighError {}

fn ne_u16(b: &[u8], f: crate::wire::Field) -> u16 {
    u16::from_ne_bytes(b[f].try_into().expect("two bytes"))
}

fn ne_u32(b: &[u8], f: crate::wire::Field) -> u32 {
    u32::from_ne_bytes(b[f].try_into().expect("four bytes"))
}

/// The dump request for every neighbour of both families, numbered `seq`.
pub fn dump_request(seq: u32) -> [u8; 28] {
    let mut b = [0u8; 28];
    b[field::NL_LEN].copy_from_slice(&28u32.to_ne_bytes());
    b[field::NL_TYPE].copy_from_slice(&RTM_GETNEIGH.to_ne_bytes());
    b[field::NL_FLAGS].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b[field::NL_SEQ].copy_from_slice(&seq.to_ne_bytes());
    // pid 0: the kernel fills it in; family 0 (AF_UNSPEC): both families.
    b
}

/// What one datagram of the dump's answer holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Datagram {
    pub neighbours: Vec<Neighbour>,
    /// The dump ended (NLMSG_DONE).
    pub done: bool,
}

/// Parses one datagram of the answer: its neighbour entries with a usable MAC (others, such
/// as incomplete entries or those of other link types, are skipped).
pub fn parse(datagram: &[u8]) -> Result<Datagram, NeighError> {
    let mut out = Datagram::default();
    let mut rest = datagram;
    while !rest.is_empty() {
        if rest.len() < field::NL_HEADER_LEN {
            return Err(NeighError::Truncated(rest.len()));
        }
        let len = ne_u32(rest, field::NL_LEN) as usize;
        if len < field::NL_HEADER_LEN || len > rest.len() {
            return Err(NeighError::BadLength {
                len,
                have: rest.len(),
            });
        }
        let msg = &rest[..len];
        match ne_u16(msg, field::NL_TYPE) {
            NLMSG_DONE => {
                out.done = true;
                return Ok(out);
            }
            NLMSG_ERROR => {
                if msg.len() < field::ERR_CODE.end {
                    return Err(NeighError::Truncated(msg.len()));
                }
                let code = ne_u32(msg, field::ERR_CODE) as i32;
                if code != 0 {
                    return Err(NeighError::Kernel(-code));
                }
            }
            RTM_NEWNEIGH => out.neighbours.extend(entry(msg)?),
            _ => {}
        }
        // Messages are 4-byte aligned.
        let next = len.div_ceil(4) * 4;
        rest = rest.get(next..).unwrap_or(&[]);
    }
    Ok(out)
}

/// One RTM_NEWNEIGH message's entry, if it has an address and a 6-byte MAC.
fn entry(msg: &[u8]) -> Result<Option<Neighbour>, NeighError> {
    let attrs_at = field::NL_HEADER_LEN + field::ND_LEN;
    if msg.len() < attrs_at {
        return Err(NeighError::Truncated(msg.len()));
    }
    let family = msg[field::ND_FAMILY];
    let ifindex = ne_u32(msg, field::ND_IFINDEX) as i32;
    let state = ne_u16(msg, field::ND_STATE);
    let (mut ip, mut mac) = (None, None);
    let mut rest = &msg[attrs_at..];
    while rest.len() >= field::RTA_HEADER_LEN {
        let len = usize::from(ne_u16(rest, field::RTA_LEN));
        if len < field::RTA_HEADER_LEN || len > rest.len() {
            return Err(NeighError::BadLength {
                len,
                have: rest.len(),
            });
        }
        let value = &rest[field::RTA_HEADER_LEN..len];
        match (ne_u16(rest, field::RTA_TYPE), family, value.len()) {
            (NDA_DST, AF_INET, 4) => {
                ip = Some(IpAddr::V4(Ipv4Addr::from(
                    <[u8; 4]>::try_from(value).expect("4"),
                )));
            }
            (NDA_DST, AF_INET6, 16) => {
                ip = Some(IpAddr::V6(Ipv6Addr::from(
                    <[u8; 16]>::try_from(value).expect("16"),
                )));
            }
            (NDA_LLADDR, _, 6) => mac = Some(<[u8; 6]>::try_from(value).expect("6")),
            _ => {}
        }
        let next = len.div_ceil(4) * 4;
        rest = rest.get(next..).unwrap_or(&[]);
    }
    if state & (NUD_INCOMPLETE | NUD_FAILED) != 0 {
        return Ok(None);
    }
    Ok(ip.zip(mac).map(|(ip, mac)| Neighbour { ip, mac, ifindex }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RTM_NEWNEIGH message as the kernel writes it (x86-64's byte order is little-endian,
    /// as are all the targets the suite runs on).
    fn newneigh(family: u8, ifindex: i32, state: u16, dst: &[u8], mac: Option<[u8; 6]>) -> Vec<u8> {
        let mut attrs = Vec::new();
        let mut attr = |ty: u16, v: &[u8]| {
            attrs.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
            attrs.extend_from_slice(&ty.to_ne_bytes());
            attrs.extend_from_slice(v);
            while attrs.len() % 4 != 0 {
                attrs.push(0);
            }
        };
        attr(NDA_DST, dst);
        if let Some(m) = mac {
            attr(NDA_LLADDR, &m);
        }
        let len = 16 + 12 + attrs.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&RTM_NEWNEIGH.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
        m.extend_from_slice(&7u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&[family, 0, 0, 0]);
        m.extend_from_slice(&ifindex.to_ne_bytes());
        m.extend_from_slice(&state.to_ne_bytes());
        m.extend_from_slice(&[0, 1]); // flags, type
        m.extend_from_slice(&attrs);
        m
    }

    fn done() -> Vec<u8> {
        let mut m = vec![0u8; 20];
        m[0..4].copy_from_slice(&20u32.to_ne_bytes());
        m[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        m
    }

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    #[test]
    fn the_request_is_a_dump_of_both_families() {
        let r = dump_request(9);
        assert_eq!(ne_u32(&r, field::NL_LEN), 28);
        assert_eq!(ne_u16(&r, field::NL_TYPE), RTM_GETNEIGH);
        assert_eq!(ne_u16(&r, field::NL_FLAGS), 0x301);
        assert_eq!(ne_u32(&r, field::NL_SEQ), 9);
        assert_eq!(ne_u32(&r, field::NL_PID), 0);
        assert_eq!(r[field::ND_FAMILY], 0);
    }

    #[test]
    fn entries_of_both_families_parse_and_unresolved_ones_are_skipped() {
        let mut d = newneigh(AF_INET, 3, 0x02, &[198, 18, 0, 7], Some(MAC));
        let v6: Ipv6Addr = "2001:db8::7".parse().unwrap();
        d.extend(newneigh(AF_INET6, 3, 0x04, &v6.octets(), Some(MAC)));
        d.extend(newneigh(AF_INET, 3, NUD_INCOMPLETE, &[198, 18, 0, 8], None));
        d.extend(newneigh(
            AF_INET,
            3,
            NUD_FAILED,
            &[198, 18, 0, 9],
            Some(MAC),
        ));
        d.extend(newneigh(AF_INET, 3, 0x80, &[198, 18, 0, 10], None));
        let got = parse(&d).unwrap();
        assert!(!got.done);
        assert_eq!(
            got.neighbours,
            vec![
                Neighbour {
                    ip: "198.18.0.7".parse().unwrap(),
                    mac: MAC,
                    ifindex: 3
                },
                Neighbour {
                    ip: IpAddr::V6(v6),
                    mac: MAC,
                    ifindex: 3
                },
            ]
        );
        assert!(parse(&done()).unwrap().done);
    }

    #[test]
    fn cut_and_lying_messages_are_errors() {
        let d = newneigh(AF_INET, 3, 0x02, &[198, 18, 0, 7], Some(MAC));
        for cut in 1..d.len() {
            assert!(parse(&d[..cut]).is_err(), "{cut}");
        }
        let mut lying = d.clone();
        lying[0..4].copy_from_slice(&4000u32.to_ne_bytes());
        assert_eq!(
            parse(&lying),
            Err(NeighError::BadLength {
                len: 4000,
                have: d.len()
            })
        );
        let mut attr_lies = d.clone();
        attr_lies[28..30].copy_from_slice(&200u16.to_ne_bytes());
        assert!(matches!(
            parse(&attr_lies),
            Err(NeighError::BadLength { .. })
        ));
        let mut err = done();
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[16..20].copy_from_slice(&(-13i32).to_ne_bytes());
        assert_eq!(parse(&err), Err(NeighError::Kernel(13)));
    }
}
