//! The key file parsers on arbitrary text, the tick key file's, chrony's (NTP symmetric
//! keys), NTS's master key state and a cluster's NTS secret: never panic, and what they
//! accept has distinct, nonzero ids (every NTP key verifies its own MAC; NTS state writes
//! back as it was read; a secret's keys open their own cookies).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntp_offset_proto::nts::cookie::MasterKeys;
use ntp_offset_proto::nts::shared_keys::SharedSecret;
use ntp_offset_proto::nts::{Aead, Entropy, SessionKeys};
use ntp_offset_proto::symmetric::{parse_key_file, MAX_DIGEST_LEN};
use ntp_offset_proto::tick_auth::KeyRing;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ring) = KeyRing::parse(text) {
        let ids: Vec<u16> = (1..=u16::MAX)
            .filter(|&id| ring.get(id).is_some())
            .take(ring.len() + 1)
            .collect();
        assert_eq!(ids.len(), ring.len(), "ids must be distinct and nonzero");
    }
    if let Ok(master) = MasterKeys::parse(text) {
        assert_eq!(MasterKeys::parse(&master.to_text()), Ok(master));
    }
    if let Ok(secret) = SharedSecret::parse(text) {
        struct Zeros;
        impl Entropy for Zeros {
            fn fill(&mut self, buf: &mut [u8]) {
                buf.fill(0);
            }
        }
        let keys = secret.master_keys(1_800_000_000, 86_400);
        for aead in Aead::ALL {
            let n = aead.key_len();
            let session = SessionKeys::new(aead, &[1; 32][..n], &[2; 32][..n]).unwrap();
            let cookie = keys.seal(&session, &mut Zeros);
            assert_eq!(keys.open(cookie.as_bytes()), Ok(session));
        }
    }
    if let Ok(keys) = parse_key_file(text, true) {
        let mut last = 0;
        for key in keys.iter() {
            assert!(key.id() > last, "ids must be distinct, nonzero and sorted");
            last = key.id();
            let mut digest = [0u8; MAX_DIGEST_LEN];
            let n = key.digest(&data[..data.len().min(48)], &mut digest);
            assert!(key.verify(&data[..data.len().min(48)], &digest[..n]));
        }
    }
});
