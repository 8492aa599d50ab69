//! The tick decoder and MAC check on arbitrary datagrams: never panics; what decodes encodes
//! back to the same bytes but for the reserved ones, which receivers ignore (so no two
//! readings of one packet).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntp_offset_proto::tick::{decode, Datagram, AUTH_LEN, BODY_LEN};
use ntp_offset_proto::tick_auth::{encode, verify, KeyRing};

/// Reserved bytes (docs/tick-protocol.md): sent as 0, not read.
const RESERVED: [usize; 3] = [11, 14, 15];

fuzz_target!(|data: &[u8]| {
    let keys =
        KeyRing::parse("1 101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f\n")
            .unwrap();
    if let Ok(Datagram::Tick(t)) = decode(data) {
        let mut body = [0u8; BODY_LEN];
        body.copy_from_slice(&data[..BODY_LEN]);
        for r in RESERVED {
            body[r] = 0;
        }
        let mut again = [0u8; BODY_LEN];
        t.encode_body(&mut again);
        assert_eq!(again, body);
        if t.key_id != 0 && verify(data, t.key_id, &keys).is_ok() && body[..] == data[..BODY_LEN] {
            let mut out = [0u8; AUTH_LEN];
            assert_eq!(encode(&t, keys.get(t.key_id), &mut out), data);
        }
    }
});
