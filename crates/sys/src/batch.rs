//! Batched UDP IO: many datagrams per system call (recvmmsg/sendmmsg), each received datagram
//! with the kernel's receive timestamp (SO_TIMESTAMPNS). All buffers are allocated once; the
//! hot path allocates nothing.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use socket2::SockAddr;

/// Room for an SCM_TIMESTAMPNS control message (CMSG_SPACE of a timespec: 32 bytes) and, on
/// a socket that also reports transmit stamps (SO_TIMESTAMPING, which then stamps received
/// datagrams too), an SCM_TIMESTAMPING one (three timespecs: 64 bytes).
const CMSG_LEN: usize = 128;

/// Room for the SO_TIMESTAMPING control message that asks for one datagram's transmit stamp.
const TX_CMSG_LEN: usize = 32;

/// Room for one datagram's own control messages: an IPV6_PKTINFO (CMSG_SPACE of 20 bytes: 40)
/// and the SO_TIMESTAMPING request (24).
const OWN_CMSG_LEN: usize = 64;

/// One received datagram.
#[derive(Clone, Copy, Debug)]
pub struct Received<'a> {
    pub data: &'a [u8],
    pub peer: SocketAddr,
    /// Kernel receive time (CLOCK_REALTIME) as (seconds, nanoseconds), if the socket has
    /// receive timestamps enabled ([`enable_rx_timestamps`]).
    pub rx_time: Option<(i64, i64)>,
    /// The datagram was longer than the buffer: `data` is only its start.
    pub truncated: bool,
}

/// Preallocated state for receiving up to `n` datagrams per call.
pub struct RecvBatch {
    bufs: Vec<u8>,
    buf_len: usize,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    cmsgs: Vec<[u64; CMSG_LEN / 8]>, // u64 for cmsghdr alignment
    hdrs: Vec<libc::mmsghdr>,
    count: usize,
}

// The raw pointers inside point only into the batch's own heap buffers.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// `n` datagrams of up to `buf_len` bytes each per call.
    pub fn new(n: usize, buf_len: usize) -> RecvBatch {
        let n = n.max(1);
        RecvBatch {
            bufs: vec![0; n * buf_len],
            buf_len,
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                n
            ],
            // SAFETY: sockaddr_storage and mmsghdr are plain C structs for which zero is valid.
            addrs: vec![unsafe { zeroed() }; n],
            cmsgs: vec![[0; CMSG_LEN / 8]; n],
            hdrs: vec![unsafe { zeroed() }; n],
            count: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Receives up to `capacity()` datagrams. Blocks until at least one arrives (or the
    /// socket's receive timeout passes: `WouldBlock`/`TimedOut`), then takes what is queued.
    pub fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        self.count = 0;
        for i in 0..self.hdrs.len() {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i * self.buf_len..].as_mut_ptr().cast(),
                iov_len: self.buf_len,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.cmsgs[i].as_mut_ptr().cast();
            h.msg_controllen = CMSG_LEN as _;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at buffers owned by self, sized as declared above, which
        // outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as _,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.count = n as usize;
        Ok(self.count)
    }

    /// The `i`-th datagram of the last [`recv`](Self::recv); None past the count or for a
    /// datagram from an address family other than IPv4/IPv6.
    pub fn get(&self, i: usize) -> Option<Received<'_>> {
        if i >= self.count {
            return None;
        }
        let h = &self.hdrs[i];
        let len = (h.msg_len as usize).min(self.buf_len);
        let peer = sockaddr_to_std(&self.addrs[i], h.msg_hdr.msg_namelen)?;
        Some(Received {
            data: &self.bufs[i * self.buf_len..i * self.buf_len + len],
            peer,
            rx_time: rx_timestamp(&h.msg_hdr),
            truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        })
    }
}

fn sockaddr_to_std(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and it is large enough.
            let a =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = u32::from_be(a.sin_addr.s_addr);
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip.into(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                u32::from_be(a.sin6_flowinfo),
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

impl RecvBatch {
    /// Control messages the kernel attached to datagram `i` of the last call (for tests).
    pub fn control_messages(&self, i: usize) -> usize {
        let h = &self.hdrs[i].msg_hdr;
        if h.msg_control.is_null() {
            return 0;
        }
        let mut n = 0;
        // SAFETY: the kernel filled msg_control/msg_controllen; the CMSG_* macros walk within them.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                n += 1;
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        n
    }
}

fn rx_timestamp(h: &libc::msghdr) -> Option<(i64, i64)> {
    if h.msg_control.is_null() || h.msg_flags & libc::MSG_CTRUNC != 0 {
        return None;
    }
    // SAFETY: the kernel filled msg_control/msg_controllen; the CMSG_* macros walk within them.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                return Some((ts.tv_sec, ts.tv_nsec));
            }
            // A socket that reports transmit stamps gets its receive stamps here instead:
            // three timespecs, the first the software one.
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPING {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                if ts.tv_sec != 0 || ts.tv_nsec != 0 {
                    return Some((ts.tv_sec, ts.tv_nsec));
                }
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// Up to `n` outgoing datagrams, sent with one call.
pub struct SendBatch {
    bufs: Vec<u8>,
    buf_len: usize,
    lens: Vec<usize>,
    /// Ask the kernel for this datagram's transmit stamp (see `txstamp`).
    stamp: Vec<bool>,
    tx_cmsg: [u64; TX_CMSG_LEN / 8], // u64 for cmsghdr alignment
    /// The source address a datagram is sent from, when not the socket's own (`push_from`).
    from: Vec<Option<Ipv6Addr>>,
    own_cmsgs: Vec<[u64; OWN_CMSG_LEN / 8]>,
    addrs: Vec<SockAddr>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    count: usize,
}

unsafe impl Send for SendBatch {}

impl SendBatch {
    pub fn new(n: usize, buf_len: usize) -> SendBatch {
        let n = n.max(1);
        let any = SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0)));
        SendBatch {
            bufs: vec![0; n * buf_len],
            buf_len,
            lens: vec![0; n],
            stamp: vec![false; n],
            tx_cmsg: tx_stamp_cmsg(),
            from: vec![None; n],
            own_cmsgs: Vec::new(),
            addrs: vec![any; n],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                n
            ],
            // SAFETY: mmsghdr is a plain C struct for which zero is valid.
            hdrs: vec![unsafe { zeroed() }; n],
            count: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn is_full(&self) -> bool {
        self.count == self.hdrs.len()
    }

    pub fn clear(&mut self) {
        self.count = 0;
    }

    /// Queues a datagram for `to`; returns its buffer to fill (of `len` bytes), or None when
    /// the batch is full or `len` exceeds the buffer size.
    pub fn push(&mut self, len: usize, to: SocketAddr) -> Option<&mut [u8]> {
        self.push_with(len, to, false)
    }

    /// [`push`](Self::push), asking for the datagram's transmit stamp when `tx_stamp` is set
    /// (the socket must report them: `txstamp::enable_tx_stamp_reports`).
    pub fn push_with(&mut self, len: usize, to: SocketAddr, tx_stamp: bool) -> Option<&mut [u8]> {
        if self.is_full() || len > self.buf_len {
            return None;
        }
        let i = self.count;
        self.count += 1;
        self.lens[i] = len;
        self.stamp[i] = tx_stamp;
        self.from[i] = None;
        self.addrs[i] = SockAddr::from(to);
        Some(&mut self.bufs[i * self.buf_len..i * self.buf_len + len])
    }

    /// [`push`](Self::push) from source address `from` (IPV6_PKTINFO), which need not be one
    /// of the host's: the socket must be IPv6 and allow it ([`allow_any_source`]). For load
    /// generators that play many clients from one socket.
    pub fn push_from(&mut self, len: usize, to: SocketAddrV6, from: Ipv6Addr) -> Option<&mut [u8]> {
        if self.is_full() || len > self.buf_len {
            return None;
        }
        if self.own_cmsgs.is_empty() {
            self.own_cmsgs = vec![[0; OWN_CMSG_LEN / 8]; self.hdrs.len()];
        }
        let i = self.count;
        self.push_with(len, SocketAddr::V6(to), false)?;
        self.from[i] = Some(from);
        Some(&mut self.bufs[i * self.buf_len..i * self.buf_len + len])
    }

    /// The buffer of queued datagram `i`, to change it before sending (e.g. its transmit time).
    pub fn buffer_mut(&mut self, i: usize) -> &mut [u8] {
        let len = self.lens[i];
        &mut self.bufs[i * self.buf_len..i * self.buf_len + len]
    }

    /// Sends the queued datagrams; returns how many the kernel took (the rest are dropped, as
    /// UDP would) and clears the batch.
    pub fn send(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        let mut sent = 0;
        while sent < self.count {
            for i in sent..self.count {
                self.iovs[i] = libc::iovec {
                    iov_base: self.bufs[i * self.buf_len..].as_mut_ptr().cast(),
                    iov_len: self.lens[i],
                };
                let h = &mut self.hdrs[i].msg_hdr;
                h.msg_name = self.addrs[i].as_ptr() as *mut libc::c_void;
                h.msg_namelen = self.addrs[i].len();
                h.msg_iov = &mut self.iovs[i];
                h.msg_iovlen = 1;
                if let Some(from) = self.from[i] {
                    h.msg_control = self.own_cmsgs[i].as_mut_ptr().cast();
                    h.msg_controllen = pktinfo_cmsg(&mut self.own_cmsgs[i], from) as _;
                } else if self.stamp[i] {
                    // The kernel only reads it: one shared copy serves every stamped datagram.
                    h.msg_control = self.tx_cmsg.as_mut_ptr().cast();
                    // SAFETY: CMSG_SPACE is a pure size computation.
                    h.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<u32>() as _) } as _;
                } else {
                    h.msg_control = std::ptr::null_mut();
                    h.msg_controllen = 0;
                }
                h.msg_flags = 0;
            }
            // SAFETY: headers sent..count point at buffers and addresses owned by self.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.hdrs[sent..].as_mut_ptr(),
                    (self.count - sent) as _,
                    0,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // A datagram the kernel refuses (e.g. an unroutable peer) must not stop the
                // rest: skip it and go on.
                if sent + 1 < self.count && err.raw_os_error() != Some(libc::EAGAIN) {
                    sent += 1;
                    continue;
                }
                self.count = 0;
                return if sent > 0 { Ok(sent) } else { Err(err) };
            }
            if n == 0 {
                break;
            }
            sent += n as usize;
        }
        self.count = 0;
        Ok(sent)
    }
}

/// The control message asking for a software transmit stamp of one datagram (SO_TIMESTAMPING
/// with a recording flag, Linux 4.13 and later).
fn tx_stamp_cmsg() -> [u64; TX_CMSG_LEN / 8] {
    let mut buf = [0u64; TX_CMSG_LEN / 8];
    // SAFETY: a msghdr pointing at `buf`, which is large enough for one u32 control message
    // (checked by CMSG_FIRSTHDR against msg_controllen); the payload is written unaligned.
    unsafe {
        let mut msg: libc::msghdr = zeroed();
        msg.msg_control = buf.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(size_of::<u32>() as _) as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SO_TIMESTAMPING;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<u32>() as _) as _;
        let flags = libc::SOF_TIMESTAMPING_TX_SOFTWARE;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u32>(), flags);
    }
    buf
}

/// Writes an IPV6_PKTINFO control message choosing source address `from` into `buf`;
/// returns its length.
fn pktinfo_cmsg(buf: &mut [u64; OWN_CMSG_LEN / 8], from: Ipv6Addr) -> usize {
    let info = libc::in6_pktinfo {
        ipi6_addr: libc::in6_addr {
            s6_addr: from.octets(),
        },
        ipi6_ifindex: 0,
    };
    // SAFETY: a msghdr pointing at `buf`, which is large enough for one in6_pktinfo control
    // message (checked by CMSG_FIRSTHDR against msg_controllen); the payload is written
    // unaligned.
    unsafe {
        let mut msg: libc::msghdr = zeroed();
        msg.msg_control = buf.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as _) as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::IPPROTO_IPV6;
        (*c).cmsg_type = libc::IPV6_PKTINFO;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as _) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::in6_pktinfo>(), info);
        msg.msg_controllen as usize
    }
}

/// Lets an IPv6 socket send from addresses that are not the host's (IPV6_FREEBIND), with
/// [`SendBatch::push_from`]; replies reach it where a route delivers the addresses locally.
pub fn allow_any_source(socket: &impl AsRawFd) -> io::Result<()> {
    set_int_option(socket, libc::IPPROTO_IPV6, libc::IPV6_FREEBIND, 1)
}

/// True for receive errors that only mean "nothing yet": a receive timeout (SO_RCVTIMEO), an
/// empty non-blocking socket, or a signal. Callers loop on these.
pub fn is_retryable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Asks the kernel to stamp every received datagram with CLOCK_REALTIME (SO_TIMESTAMPNS).
pub fn enable_rx_timestamps(socket: &impl AsRawFd) -> io::Result<()> {
    set_socket_option(socket, libc::SO_TIMESTAMPNS, 1)
}

/// Sets the IPv4 Don't Fragment bit on everything `socket` sends, without path MTU discovery
/// (IP_PMTUDISC_PROBE). A datagram with DF set needs no IP identifier, and choosing one for
/// each unconnected datagram (a keyed hash and an atomic add in a table shared by all
/// sockets) was 2.3 % of a saturated server's CPU (perf). For answers no longer than their
/// requests, which arrived whole.
pub fn set_dont_fragment(socket: &impl AsRawFd) -> io::Result<()> {
    set_int_option(
        socket,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_PROBE,
    )
}

/// A SOL_SOCKET option whose value is an int.
pub(crate) fn set_socket_option(
    socket: &impl AsRawFd,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    set_int_option(socket, libc::SOL_SOCKET, name, value)
}

/// A socket option at `level` whose value is an int.
fn set_int_option(
    socket: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a plain setsockopt with an int-sized value that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    #[test]
    fn round_trip_with_rx_timestamps_on_loopback() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        enable_rx_timestamps(&server).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dest = server.local_addr().unwrap();

        let mut out = SendBatch::new(8, 64);
        for i in 0..5u8 {
            out.push(3, dest).unwrap().copy_from_slice(&[i, i, i]);
        }
        assert_eq!(out.send(&client).unwrap(), 5);
        assert!(out.is_empty());

        let mut batch = RecvBatch::new(8, 2); // 2-byte buffers: every datagram is truncated
        let mut got = 0;
        while got < 5 {
            let n = batch.recv(&server).unwrap();
            for i in 0..n {
                let r = batch.get(i).unwrap();
                assert_eq!(r.peer, client.local_addr().unwrap());
                assert_eq!(r.data, &[got as u8, got as u8]);
                assert!(r.truncated);
                let (secs, _) = r.rx_time.expect("kernel timestamp");
                assert!(secs > 1_600_000_000);
                got += 1;
            }
        }
    }

    #[test]
    fn push_from_sets_each_datagrams_source() {
        let server = UdpSocket::bind("[::1]:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let client = UdpSocket::bind("[::1]:0").unwrap();
        allow_any_source(&client).unwrap();
        let SocketAddr::V6(dest) = server.local_addr().unwrap() else {
            unreachable!()
        };
        // Benchmarking addresses (RFC 5180) that are not this host's: only FREEBIND allows
        // them; the datagrams still travel on loopback.
        let sources: Vec<Ipv6Addr> = (1..=3u16)
            .map(|i| Ipv6Addr::new(0x2001, 2, 0, 0xff00, 0, 0, 0, i))
            .chain([Ipv6Addr::LOCALHOST])
            .collect();
        let mut out = SendBatch::new(8, 64);
        for (i, from) in sources.iter().enumerate() {
            out.push_from(1, dest, *from).unwrap()[0] = i as u8;
        }
        // A plain datagram after them goes out from the socket's own address.
        out.push(1, SocketAddr::V6(dest)).unwrap()[0] = 9;
        assert_eq!(out.send(&client).unwrap(), 5);
        let port = client.local_addr().unwrap().port();
        let mut batch = RecvBatch::new(8, 64);
        let mut got = Vec::new();
        while got.len() < 5 {
            let n = batch.recv(&server).unwrap();
            for i in 0..n {
                let r = batch.get(i).unwrap();
                assert_eq!(r.peer.port(), port);
                got.push((r.data[0], r.peer.ip()));
            }
        }
        got.sort();
        let mut want: Vec<(u8, std::net::IpAddr)> = sources
            .iter()
            .enumerate()
            .map(|(i, a)| (i as u8, (*a).into()))
            .collect();
        want.push((9, Ipv6Addr::LOCALHOST.into()));
        assert_eq!(got, want);
    }

    #[test]
    fn full_batch_refuses_more() {
        let mut out = SendBatch::new(1, 48);
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert!(out.push(48, to).is_some());
        assert!(out.push(48, to).is_none());
        assert!(SendBatch::new(1, 48).push(49, to).is_none());
    }
}
