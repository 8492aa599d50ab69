//! Kernel transmit timestamps (SO_TIMESTAMPING): the instant a datagram left the network stack
//! for the device, read back from the socket's error queue. Used by `pulse send` to tell
//! receivers, in a follow-up, when each tick really left (numbered, every datagram stamped),
//! and by `serve` for interleaved answers (only the datagrams it asks for, each echoed back so
//! its own bytes say which answer it was).

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// One transmit timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxTimestamp {
    /// The socket's send counter at the stamped datagram: 0 for the first datagram sent after
    /// [`enable_tx_timestamps`], then 1, 2, ...
    pub id: u32,
    /// CLOCK_REALTIME (seconds, nanoseconds).
    pub time: (i64, i64),
}

/// Asks for a software transmit timestamp of every datagram sent on `socket`, numbered
/// (OPT_ID) and without the payload echoed back (OPT_TSONLY).
pub fn enable_tx_timestamps(socket: &impl AsRawFd) -> io::Result<()> {
    let flags = libc::SOF_TIMESTAMPING_TX_SOFTWARE
        | libc::SOF_TIMESTAMPING_SOFTWARE
        | libc::SOF_TIMESTAMPING_OPT_ID
        | libc::SOF_TIMESTAMPING_OPT_TSONLY;
    crate::batch::set_socket_option(socket, libc::SO_TIMESTAMPING, flags as libc::c_int)
}

/// Lets `socket` report the transmit stamps that single datagrams ask for
/// (`SendBatch::push_with`), each with the datagram echoed back as the device got it.
/// Received datagrams then carry their receive stamp in an SCM_TIMESTAMPING message alone
/// (`RecvBatch` reads either): SO_TIMESTAMPNS is turned off, which would add a second message
/// per datagram, 1-2 % of a saturated server's CPU in the kernel (perf).
pub fn enable_tx_stamp_reports(socket: &impl AsRawFd) -> io::Result<()> {
    let flags = libc::SOF_TIMESTAMPING_SOFTWARE | libc::SOF_TIMESTAMPING_RX_SOFTWARE;
    crate::batch::set_socket_option(socket, libc::SO_TIMESTAMPING, flags as libc::c_int)?;
    crate::batch::set_socket_option(socket, libc::SO_TIMESTAMPNS, 0)
}

/// A transmit stamp with the datagram it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxEcho {
    /// Bytes of the echoed frame in the caller's buffer (link-layer header included, if the
    /// device has one).
    pub len: usize,
    /// The frame was longer than the buffer.
    pub truncated: bool,
    /// CLOCK_REALTIME (seconds, nanoseconds).
    pub time: (i64, i64),
}

/// The next transmit stamp waiting on `socket`'s error queue, its frame in `frame`, without
/// blocking. Ok(None): the queue is empty. Messages without a stamp are skipped.
pub fn next_tx_echo(socket: &impl AsRawFd, frame: &mut [u8]) -> io::Result<Option<TxEcho>> {
    loop {
        let Some(m) = read_error_queue(socket.as_raw_fd(), frame)? else {
            return Ok(None);
        };
        if let Some(time) = m.time {
            return Ok(Some(TxEcho {
                len: m.len.min(frame.len()),
                truncated: m.truncated,
                time,
            }));
        }
    }
}

/// Waits up to `timeout` for the next transmit timestamp on `socket`'s error queue.
/// Ok(None): none came in time. Other error-queue messages (e.g. ICMP errors) are skipped.
pub fn recv_tx_timestamp(
    socket: &impl AsRawFd,
    timeout: Duration,
) -> io::Result<Option<TxTimestamp>> {
    let fd = socket.as_raw_fd();
    let deadline = std::time::Instant::now() + timeout;
    let mut data = [0u8; 64];
    loop {
        while let Some(m) = read_error_queue(fd, &mut data)? {
            if let (Some(time), Some(id)) = (m.time, m.id) {
                return Ok(Some(TxTimestamp { id, time }));
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        // The error queue signals readiness as POLLERR, which poll reports unasked.
        let mut pfd = libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// One error-queue message: what it said of a transmit stamp.
struct ErrorMessage {
    len: usize,
    truncated: bool,
    time: Option<(i64, i64)>,
    id: Option<u32>,
}

/// Reads one message from the error queue into `data` without blocking. Ok(None) when the
/// queue is empty.
fn read_error_queue(fd: libc::c_int, data: &mut [u8]) -> io::Result<Option<ErrorMessage>> {
    let mut control = [0u64; 64]; // u64 for cmsghdr alignment
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is a plain C struct; all pointers refer to locals that outlive the call.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 64]>() as _;
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        };
    }
    let mut time = None;
    let mut id = None;
    // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_* walk within them, and each
    // payload is read unaligned with the type its level/type pair defines.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let level = (*c).cmsg_level;
            let kind = (*c).cmsg_type;
            if level == libc::SOL_SOCKET && kind == libc::SCM_TIMESTAMPING {
                // struct scm_timestamping { struct timespec ts[3]; }: [0] is software.
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                if ts.tv_sec != 0 || ts.tv_nsec != 0 {
                    time = Some((ts.tv_sec, ts.tv_nsec));
                }
            } else if (level == libc::IPPROTO_IP && kind == libc::IP_RECVERR)
                || (level == libc::IPPROTO_IPV6 && kind == libc::IPV6_RECVERR)
            {
                let err =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::sock_extended_err>());
                if err.ee_errno == libc::ENOMSG as u32
                    && err.ee_origin == libc::SO_EE_ORIGIN_TIMESTAMPING
                {
                    id = Some(err.ee_data);
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(Some(ErrorMessage {
        len: n as usize,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        time,
        id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn loopback_sends_are_stamped_in_order_close_to_the_send() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_tx_timestamps(&tx).unwrap();
        for i in 0..3u32 {
            let before = crate::clock::realtime();
            tx.send_to(b"tick", rx.local_addr().unwrap()).unwrap();
            let ts = recv_tx_timestamp(&tx, Duration::from_secs(1))
                .unwrap()
                .expect("a TX timestamp");
            let after = crate::clock::realtime();
            assert_eq!(ts.id, i);
            let ns = |t: (i64, i64)| t.0 as i128 * 1_000_000_000 + t.1 as i128;
            assert!(
                ns(before) <= ns(ts.time) && ns(ts.time) <= ns(after),
                "{ts:?}"
            );
        }
        assert_eq!(
            recv_tx_timestamp(&tx, Duration::from_millis(20)).unwrap(),
            None
        );
    }

    /// The server's way: only the datagrams that ask are stamped, each echoed with its bytes;
    /// and a socket that reports transmit stamps still reads its receive stamps.
    #[test]
    fn a_batch_gets_stamps_for_the_datagrams_that_ask_echoed_with_their_bytes() {
        use crate::batch::{enable_rx_timestamps, RecvBatch, SendBatch};
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_rx_timestamps(&server).unwrap();
        enable_tx_stamp_reports(&server).unwrap();
        client
            .send_to(b"request", server.local_addr().unwrap())
            .unwrap();
        let mut rx = RecvBatch::new(4, 64);
        assert_eq!(rx.recv(&server).unwrap(), 1);
        assert!(rx.get(0).unwrap().rx_time.is_some(), "receive stamp kept");
        assert_eq!(rx.control_messages(0), 1, "one stamp per datagram, not two");

        let to = client.local_addr().unwrap();
        let mut batch = SendBatch::new(4, 64);
        let before = crate::clock::realtime();
        for (i, ask) in [false, true, false, true].into_iter().enumerate() {
            let buf = batch.push_with(12, to, ask).unwrap();
            buf.copy_from_slice(format!("answer {i:05}").as_bytes());
        }
        assert_eq!(batch.send(&server).unwrap(), 4);
        let after = crate::clock::realtime();
        let mut frame = [0u8; 256];
        let mut echoed = Vec::new();
        while let Some(e) = next_tx_echo(&server, &mut frame).unwrap() {
            assert!(!e.truncated);
            let ns = |t: (i64, i64)| t.0 as i128 * 1_000_000_000 + t.1 as i128;
            assert!(ns(before) <= ns(e.time) && ns(e.time) <= ns(after), "{e:?}");
            echoed.push(String::from_utf8_lossy(&frame[e.len - 12..e.len]).into_owned());
        }
        assert_eq!(echoed, ["answer 00001", "answer 00003"]);
    }
}
