//! Steering a SO_REUSEPORT group by the client's address: a classic BPF program, attached with
//! SO_ATTACH_REUSEPORT_CBPF, picks the socket for each datagram from a hash of its source IP
//! only. The kernel's own choice hashes address *and port*, so a client sending from several
//! ports would reach several workers, each with its own rate-limit table, and multiply its
//! budget by their number; by source IP alone, each client always meets the same worker.

use std::io;
use std::os::fd::AsRawFd;

/// asm-generic's value (x86-64, aarch64 and the other architectures this project builds for).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// The program: the source address (IPv4's word, or IPv6's four words XORed), times a
/// Fibonacci constant, its top 16 bits, modulo `groups`: the index of the socket in the group.
pub fn program(groups: u32, ipv6: bool) -> Vec<libc::sock_filter> {
    use libc::{
        BPF_A, BPF_ABS, BPF_ALU, BPF_K, BPF_LD, BPF_MISC, BPF_MOD, BPF_MUL, BPF_RET, BPF_RSH,
        BPF_TAX, BPF_W, BPF_X, BPF_XOR,
    };
    // The IP header, from the UDP payload the program starts at.
    let net = |offset: i32| (libc::SKF_NET_OFF + offset) as u32;
    let load = |offset| stmt(BPF_LD | BPF_W | BPF_ABS, net(offset));
    let mut p = Vec::new();
    if ipv6 {
        // Source address: bytes 8-23 of the IPv6 header.
        p.push(load(8));
        for off in [12, 16, 20] {
            p.push(stmt(BPF_MISC | BPF_TAX, 0));
            p.push(load(off));
            p.push(stmt(BPF_ALU | BPF_XOR | BPF_X, 0));
        }
    } else {
        // Source address: bytes 12-15 of the IPv4 header.
        p.push(load(12));
    }
    p.push(stmt(BPF_ALU | BPF_MUL | BPF_K, 0x9e37_79b1));
    p.push(stmt(BPF_ALU | BPF_RSH | BPF_K, 16));
    p.push(stmt(BPF_ALU | BPF_MOD | BPF_K, groups.max(1)));
    p.push(stmt(BPF_RET | BPF_A, 0));
    p
}

/// Attaches [`program`] to the reuseport group of `socket` (it applies to the whole group;
/// the index is the sockets' order of binding).
pub fn steer_by_source_ip(socket: &impl AsRawFd, groups: u32, ipv6: bool) -> io::Result<()> {
    let mut filter = program(groups, ipv6);
    let prog = libc::sock_fprog {
        len: filter.len() as libc::c_ushort,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: prog points at `filter`, which lives across the call; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
