use super::*;

fn hex(s: &str) -> Vec<u8> {
    decode_hex(&s.replace(' ', "")).unwrap()
}

fn digest_of(key: &Key, data: &[u8]) -> Vec<u8> {
    let mut out = [0u8; MAX_DIGEST_LEN];
    let n = key.digest(data, &mut out);
    out[..n].to_vec()
}

/// RFC 4493 §4 (AES-128) and NIST SP 800-38B D.3 (AES-256): AES-CMAC, which RFC 8573 puts in
/// NTP's MAC unchanged.
#[test]
fn aes_cmac_matches_rfc_4493_and_sp_800_38b() {
    let k128 = Key::new(
        1,
        KeyType::Aes128,
        hex("2b7e1516 28aed2a6 abf71588 09cf4f3c"),
    )
    .unwrap();
    let m64 = hex(
        "6bc1bee2 2e409f96 e93d7e11 7393172a ae2d8a57 1e03ac9c 9eb76fac 45af8e51 \
         30c81c46 a35ce411 e5fbc119 1a0a52ef f69f2445 df4f9b17 ad2b417b e66c3710",
    );
    for (len, want) in [
        (0, "bb1d6929 e9593728 7fa37d12 9b756746"),
        (16, "070a16b4 6b4d4144 f79bdd9d d04a287c"),
        (40, "dfa66747 de9ae630 30ca3261 1497c827"),
        (64, "51f0bebf 7e3b9d92 fc497417 79363cfe"),
    ] {
        assert_eq!(
            digest_of(&k128, &m64[..len]),
            hex(want),
            "AES-128, {len} bytes"
        );
        assert!(k128.verify(&m64[..len], &hex(want)));
    }
    let k256 = Key::new(
        2,
        KeyType::Aes256,
        hex("603deb10 15ca71be 2b73aef0 857d7781 1f352c07 3b6108d7 2d9810a3 0914dff4"),
    )
    .unwrap();
    assert_eq!(
        digest_of(&k256, &[]),
        hex("028962f6 1b7bf89e fc6b551f 4667d983")
    );
    assert_eq!(
        digest_of(&k256, &m64[..16]),
        hex("28a7023f 452e8f82 bd4bf28d 8c37c35c")
    );
}

/// The keyed digests are of key || data (RFC 5905's MD5, chrony's others): with key "a" and
/// data "bc", the digest of "abc" (FIPS 180 and RFC 1321 vectors).
#[test]
fn keyed_digests_hash_the_key_then_the_packet() {
    for (kind, abc) in [
        (KeyType::Md5, "900150983cd24fb0d6963f7d28e17f72"),
        (KeyType::Sha1, "a9993e364706816aba3e25717850c26c9cd0d89d"),
        (
            KeyType::Sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ),
        (
            KeyType::Sha512,
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        ),
    ] {
        let key = Key::new(7, kind, b"a".to_vec()).unwrap();
        let want = hex(abc);
        assert_eq!(digest_of(&key, b"bc"), want, "{}", kind.name());
        assert!(key.verify(b"bc", &want));
        // ntpsec's clients truncate digests longer than 20 bytes; chrony's send them whole.
        assert!(
            key.verify(b"bc", &want[..want.len().min(20)]),
            "{}",
            kind.name()
        );
        if want.len() > 24 {
            assert!(!key.verify(b"bc", &want[..24]), "only whole or 20 bytes");
        }
        assert!(!key.verify(b"bc", &want[..12]));
    }
}

#[test]
fn verify_rejects_any_changed_bit_and_wrong_lengths() {
    for kind in KeyType::ALL {
        let secret = vec![0x5a; kind.secret_len().unwrap_or(20)];
        let key = Key::new(9, kind, secret).unwrap();
        let data = [0x23u8; HEADER_LEN];
        let good = digest_of(&key, &data);
        assert!(key.verify(&data, &good));
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(!key.verify(&data, &bad), "{} bit {bit}", kind.name());
        }
        assert!(!key.verify(&data, &good[..good.len() - 1]));
        let mut other = data;
        other[47] ^= 1;
        assert!(!key.verify(&other, &good));
    }
}

#[test]
fn keys_are_checked() {
    assert_eq!(
        Key::new(0, KeyType::Sha1, b"x".to_vec()),
        Err(KeyError::ZeroId)
    );
    assert_eq!(
        Key::new(1, KeyType::Sha1, vec![]),
        Err(KeyError::EmptySecret)
    );
    assert!(matches!(
        Key::new(1, KeyType::Aes128, vec![1; 32]),
        Err(KeyError::SecretLength {
            want: 16,
            got: 32,
            ..
        })
    ));
    assert!(!format!(
        "{:?}",
        Key::new(3, KeyType::Sha1, b"hunter2".to_vec()).unwrap()
    )
    .contains("hunter2"));
}

#[test]
fn chrony_key_files_parse() {
    let text = "# chrony.keys\n\
                1 AES128 HEX:2b7e151628aed2a6abf7158809cf4f3c\n\
                \n\
                2 SHA1 HEX:0102030405060708090a0b0c0d0e0f1011121314  # trailing comment\n\
                3 sha256 ASCII:correcthorse\n\
                4 AES256 HEX:603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4\n";
    let keys = parse_key_file(text, false).unwrap();
    assert_eq!(keys.len(), 4);
    assert_eq!(keys.get(1).unwrap().kind(), KeyType::Aes128);
    assert_eq!(keys.get(3).unwrap().kind(), KeyType::Sha256);
    assert_eq!(keys.get(3).unwrap().secret, b"correcthorse");
    assert!(keys.get(5).is_none());

    // MD5, the type chrony assumes without one, only when allowed.
    let md5 = "10 tulip\n11 MD5 HEX:00ff\n";
    let e = parse_key_file(md5, false).unwrap_err();
    assert_eq!(e.line, Some(1));
    assert!(e.message.contains("allow_md5"), "{e}");
    let keys = parse_key_file(md5, true).unwrap();
    assert_eq!(keys.get(10).unwrap().kind(), KeyType::Md5);
    assert_eq!(keys.get(11).unwrap().secret, vec![0, 0xff]);

    for (bad, line, says) in [
        ("1 SHA1 x\n2 SHA1 x y\n", 2, "expected"),
        ("1 SHA1 x\n2\n", 2, "expected"),
        ("1 SHA1 x\nx SHA1 y\n", 2, "not a key id"),
        ("0 SHA1 x\n", 1, "reserved"),
        ("1 SHA3 x\n", 1, "unknown key type"),
        ("1 SHA1 HEX:abc\n", 1, "hex digits"),
        ("1 SHA1 HEX:zz\n", 1, "hex digits"),
        ("1 AES128 HEX:00\n", 1, "16 bytes"),
        ("5 SHA1 a\n5 SHA1 b\n", 0, "twice"),
    ] {
        let e = parse_key_file(bad, false).unwrap_err();
        // Line 0: the whole file (a duplicate id), which names no line.
        assert_eq!(e.line, (line > 0).then_some(line), "{bad:?}: {e}");
        assert!(e.message.contains(says), "{bad:?}: {e}");
    }
}

#[test]
fn a_mac_is_exactly_20_or_24_bytes_after_the_header() {
    let mut p = vec![0u8; HEADER_LEN];
    assert_eq!(find_mac(&p), None);
    for (extra, mac) in [
        (4, false),
        (16, false),
        (20, true),
        (24, true),
        (28, false),
        (36, true),
        (52, true),
        (68, true),
        (72, false),
    ] {
        p.truncate(HEADER_LEN);
        p.extend_from_slice(&[0, 0, 1, 2]);
        p.resize(HEADER_LEN + extra, 0xee);
        let found = find_mac(&p);
        assert_eq!(found.is_some(), mac, "{extra} bytes");
        if let Some(m) = found {
            assert_eq!(m.key_id, 0x0102);
            assert_eq!(m.data.len(), HEADER_LEN);
            assert_eq!(m.digest.len(), extra - 4);
        }
    }
    assert_eq!(find_mac(&p[..20]), None);
    // 36 bytes that read as one extension field of 36 bytes are that, not a MAC.
    p.truncate(HEADER_LEN);
    p.extend_from_slice(&[0x01, 0x04, 0, 36]);
    p.resize(HEADER_LEN + 36, 0);
    assert_eq!(find_mac(&p), None);
}
