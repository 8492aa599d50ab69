//! Waiting on several sockets at once (poll(2)).

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Waits until one of `sockets` (at most 64) is readable or `timeout` passes. Returns a bit
/// mask of the readable ones (bit i = sockets[i]); 0 on timeout or signal.
pub fn wait_readable<S: AsRawFd>(sockets: &[S], timeout: Option<Duration>) -> io::Result<u64> {
    assert!(sockets.len() <= 64, "at most 64 sockets");
    let mut fds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 64];
    for (pfd, s) in fds.iter_mut().zip(sockets) {
        pfd.fd = s.as_raw_fd();
        pfd.events = libc::POLLIN;
    }
    let ms = match timeout {
        None => -1,
        Some(t) => {
            t.as_millis().min(i32::MAX as u128) as libc::c_int
                + libc::c_int::from(t.subsec_nanos() % 1_000_000 != 0)
        }
    };
    // SAFETY: fds holds sockets.len() initialized entries.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), sockets.len() as libc::nfds_t, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(0)
        } else {
            Err(e)
        };
    }
    let mut mask = 0;
    for (i, pfd) in fds[..sockets.len()].iter().enumerate() {
        if pfd.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0 {
            mask |= 1 << i;
        }
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn reports_which_socket_is_readable() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let socks = [a.try_clone().unwrap(), b.try_clone().unwrap()];
        assert_eq!(
            wait_readable(&socks, Some(Duration::from_millis(10))).unwrap(),
            0
        );
        a.send_to(b"x", b.local_addr().unwrap()).unwrap();
        assert_eq!(
            wait_readable(&socks, Some(Duration::from_secs(1))).unwrap(),
            0b10
        );
    }
}
