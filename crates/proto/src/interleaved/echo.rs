//! The sent datagram the kernel hands back with its transmit stamp (SO_TIMESTAMPING without
//! OPT_TSONLY): the frame as the device got it, so with the link layer's header on Ethernet
//! devices (veth, loopback: Ethernet framing with zero addresses) and without on IP-only ones
//! (tun, WireGuard). The answer's own bytes, and in them its receive field, say which answer
//! the stamp belongs to, however the kernel numbers or reorders sends.

/// Byte ranges of the headers read here, each named once.
pub mod field {
    use core::ops::Range;

    /// Ethernet II: destination, source, EtherType.
    pub const ETH_TYPE: Range<usize> = 12..14;
    pub const ETH_LEN: usize = 14;
    /// An 802.1Q tag: tag control, then the inner EtherType.
    pub const VLAN_TYPE: Range<usize> = 2..4;
    pub const VLAN_LEN: usize = 4;

    /// IPv4: version and header length (in 32-bit words) share the first byte.
    pub const V4_VERSION_IHL: usize = 0;
    pub const V4_TOTAL_LEN: Range<usize> = 2..4;
    pub const V4_PROTOCOL: usize = 9;
    pub const V4_MIN_LEN: usize = 20;

    /// IPv6: version in the first byte's high nibble; no extension headers here.
    pub const V6_PAYLOAD_LEN: Range<usize> = 4..6;
    pub const V6_NEXT_HEADER: usize = 6;
    pub const V6_LEN: usize = 40;

    pub const UDP_LEN: Range<usize> = 4..6;
    pub const UDP_HEADER_LEN: usize = 8;
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const IPPROTO_UDP: u8 = 17;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EchoError {
    /// Shorter than the headers it announces (the kernel cut it, or it is not ours).
    Truncated,
    /// Neither IPv4 nor IPv6, with or without an Ethernet header.
    NotIp,
    /// IP, but not UDP (or IPv6 with extension headers, which these sockets never add).
    NotUdp,
    /// A length field that disagrees with the bytes.
    BadLength,
}

impl core::fmt::Display for EchoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            EchoError::Truncated => "echoed datagram truncated",
            EchoError::NotIp => "echoed datagram is not IP",
            EchoError::NotUdp => "echoed datagram is not UDP",
            EchoError::BadLength => "echoed datagram's lengths disagree",
        })
    }
}

/// A 16-bit field of a frame that may be cut short.
fn be16(b: &[u8], f: crate::wire::Field) -> Result<u16, EchoError> {
    crate::wire::get(b, f).ok_or(EchoError::Truncated)
}

/// The UDP payload of an echoed frame.
pub fn udp_payload(frame: &[u8]) -> Result<&[u8], EchoError> {
    let ip = ip_packet(frame)?;
    let version = ip.first().ok_or(EchoError::Truncated)? >> 4;
    let udp = match version {
        4 => {
            let ihl = usize::from(ip[field::V4_VERSION_IHL] & 0x0f) * 4;
            if ihl < field::V4_MIN_LEN {
                return Err(EchoError::BadLength);
            }
            if *ip.get(field::V4_PROTOCOL).ok_or(EchoError::Truncated)? != IPPROTO_UDP {
                return Err(EchoError::NotUdp);
            }
            let total = usize::from(be16(ip, field::V4_TOTAL_LEN)?);
            if total < ihl || total > ip.len() {
                return Err(EchoError::BadLength);
            }
            &ip[ihl..total]
        }
        6 => {
            if *ip.get(field::V6_NEXT_HEADER).ok_or(EchoError::Truncated)? != IPPROTO_UDP {
                return Err(EchoError::NotUdp);
            }
            let payload = usize::from(be16(ip, field::V6_PAYLOAD_LEN)?);
            if ip.len() < field::V6_LEN || field::V6_LEN + payload > ip.len() {
                return Err(EchoError::BadLength);
            }
            &ip[field::V6_LEN..field::V6_LEN + payload]
        }
        _ => return Err(EchoError::NotIp),
    };
    let len = usize::from(be16(udp, field::UDP_LEN)?);
    if len < field::UDP_HEADER_LEN || len > udp.len() {
        return Err(EchoError::BadLength);
    }
    Ok(&udp[field::UDP_HEADER_LEN..len])
}

/// The IP packet in a frame: the frame itself on an IP-only device, else behind its Ethernet
/// header (and one VLAN tag, if any). An IP packet starts with version 4 or 6; an Ethernet
/// frame from this host starts with a destination address, which the EtherType then confirms.
fn ip_packet(frame: &[u8]) -> Result<&[u8], EchoError> {
    let first = *frame.first().ok_or(EchoError::Truncated)?;
    if matches!(first >> 4, 4 | 6) && !looks_like_ethernet(frame) {
        return Ok(frame);
    }
    let mut at = field::ETH_LEN;
    let mut kind = be16(frame, field::ETH_TYPE)?;
    if kind == ETHERTYPE_VLAN {
        let tag = frame.get(at..).ok_or(EchoError::Truncated)?;
        kind = be16(tag, field::VLAN_TYPE)?;
        at += field::VLAN_LEN;
    }
    match kind {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => frame.get(at..).ok_or(EchoError::Truncated),
        _ => Err(EchoError::NotIp),
    }
}

/// An Ethernet frame whose destination address happens to start with 0x4_ or 0x6_ (a unicast
/// MAC may): its EtherType names IP and the IP version behind it agrees.
fn looks_like_ethernet(frame: &[u8]) -> bool {
    let Ok(kind) = be16(frame, field::ETH_TYPE) else {
        return false;
    };
    let version = frame.get(field::ETH_LEN).map(|b| b >> 4);
    matches!(
        (kind, version),
        (ETHERTYPE_IPV4, Some(4)) | (ETHERTYPE_IPV6, Some(6))
    )
}
