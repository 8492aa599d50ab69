//! NTS requests that start out valid (a real cookie, a real authenticator) and are then
//! changed by the fuzzer: bytes flipped, fields cut or appended. `decide` never panics, never
//! answers larger than the request, and a request it authenticates yields an answer the
//! client accepts, with cookies that open.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use ntp_offset_proto::nts::cookie::MasterKeys;
use ntp_offset_proto::nts::extension as ef;
use ntp_offset_proto::nts::{Aead, Entropy, SessionKeys};
use ntp_offset_proto::packet::{Header, LeapIndicator};
use ntp_offset_proto::responder::{
    decide, Authenticated, Credentials, Decision, Request, Unmatched,
};
use ntp_offset_proto::symmetric::Auth;
use ntp_offset_proto::system::ServerState;
use ntp_offset_proto::time::{NtpShort, NtpTimestamp, Offset, Time};
use ntp_offset_proto::view::{HashOnly, ViewTable};

struct Counter(u8);
impl Entropy for Counter {
    fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            self.0 = self.0.wrapping_add(1);
            *b = self.0;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // data: [placeholders and AEAD, cut, then (position, xor) pairs, then bytes to append
    // after 0xff].
    let (head, rest) = data.split_at(data.len().min(2));
    let placeholders = usize::from(head.first().copied().unwrap_or(0) % 4);
    let aead = Aead::ALL[usize::from(head.first().copied().unwrap_or(0) / 4 % 2)];
    let cut = usize::from(head.get(1).copied().unwrap_or(0) % 16) * 4;
    let master = MasterKeys::generate(1_767_225_600, &mut Counter(0));
    let n = aead.key_len();
    let keys = SessionKeys::new(aead, &[3; 32][..n], &[4; 32][..n]).expect("the AEAD's lengths");
    let cookie = master.seal(&keys, &mut Counter(50));
    let nonce = &[5; 16][..aead.nonce_len()];
    let header = Header::client_request(4, NtpTimestamp::from_bits(0xe9a0_1234_5678_9abc)).encode();
    let uid = [9u8; 32];
    let mut packet =
        ef::client_request(&header, &uid, cookie.as_bytes(), placeholders, &keys, nonce);
    let (edits, tail) = match rest.iter().position(|&b| b == 0xff) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    for pair in edits.chunks_exact(2) {
        let at = usize::from(pair[0]) * packet.len() / 256;
        packet[at] ^= pair[1];
    }
    packet.truncate(packet.len().saturating_sub(cut));
    packet.extend_from_slice(tail);

    let views = ViewTable::single("v", Offset::from_secs(15));
    let state = ServerState {
        leap: LeapIndicator::NoWarning,
        stratum: 3,
        reference_id: *b"OFFS",
        root_delay: NtpShort::from_bits(0),
        root_dispersion: NtpShort::from_bits(7),
        precision: -24,
        reference_time: Some(Time::from_unix_nanos(1_767_225_600_000_000_000)),
    };
    let auth = Auth::default();
    let creds = Credentials {
        symmetric: &auth,
        nts: Some(&master),
    };
    let req = Request {
        packet: &packet,
        local: SocketAddr::from(([127, 0, 0, 1], 123)),
        client: IpAddr::from([198, 18, 0, 1]),
        receive: Time::from_unix_nanos(1_767_225_600_000_000_000),
        now_mono_ns: 1,
        sent: None,
    };
    if let Decision::Respond(mut r) = decide(
        &req,
        &views,
        &HashOnly,
        &state,
        Unmatched::Ignore,
        &creds,
        None,
    ) {
        let answer = r.finish(
            Time::from_unix_nanos(1_767_225_600_000_100_000),
            &creds,
            &mut Counter(7),
        );
        assert!(
            answer.len() <= packet.len(),
            "{} bytes answer {}",
            answer.len(),
            packet.len()
        );
        if r.authenticated == Authenticated::Nts {
            let cookies = ef::read_response(&answer, &uid, &keys).expect("the client accepts it");
            assert!(!cookies.is_empty());
            for c in cookies {
                assert_eq!(master.open(&c), Ok(keys.clone()));
            }
        }
    }
});
