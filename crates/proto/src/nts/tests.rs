//! NTS: KE records, cookies, extension fields, and whole exchanges through the responder, as
//! a client would check them. chrony is the real peer (crates/ntp-offset/tests/integration/nts.rs).

use proptest::prelude::*;

use super::cookie::{cookie_len, CookieError, MasterKeys, KEEP, MAX_COOKIE_LEN};
use super::extension::{self as ef, EfError, ResponseError};
use super::ke::{self, KeError, Negotiated, RequestRead, Session};
use super::{Aead, SessionKeys, NONCE_LEN};
use crate::packet::{Header, HEADER_LEN};
use crate::responder::tests::{state, Counter, CLIENT_TX, RX};
use crate::responder::{
    decide, Authenticated, Credentials, Decision, DropReason, Request, ResponseKind, Unmatched,
};
use crate::symmetric::Auth;
use crate::time::{NtpTimestamp, Offset};
use crate::view::{AuthRequirement, HashOnly, View, ViewTable};

/// chrony 4.3's KE request, as it goes over TLS: next protocol NTPv4, AEAD AES-SIV-CMAC-256,
/// end of message.
const CHRONY_KE_REQUEST: [u8; 16] = [
    0x80, 0x01, 0x00, 0x02, 0x00, 0x00, // next protocol: NTPv4
    0x80, 0x04, 0x00, 0x02, 0x00, 0x0f, // AEAD: 15
    0x80, 0x00, 0x00, 0x00, // end of message
];

#[test]
fn reads_chronys_ke_request_and_only_once_it_has_ended() {
    for cut in 0..CHRONY_KE_REQUEST.len() {
        assert_eq!(
            ke::read_request(&CHRONY_KE_REQUEST[..cut]),
            RequestRead::Incomplete,
            "{cut} bytes"
        );
    }
    let RequestRead::Complete(req) = ke::read_request(&CHRONY_KE_REQUEST) else {
        panic!()
    };
    assert_eq!(req.negotiate(), Ok(ntpv4(Aead::AesSivCmac256, false)));
    assert_eq!(ke::client_request(&[15]), CHRONY_KE_REQUEST);
}

fn ntpv4(aead: Aead, compliant_128gcm: bool) -> Negotiated {
    Negotiated::Ntpv4(Session {
        aead,
        compliant_128gcm,
    })
}

#[test]
fn ke_negotiation_follows_rfc_8915() {
    let complete = |bytes: &[u8]| match ke::read_request(bytes) {
        RequestRead::Complete(r) => r.negotiate(),
        other => panic!("{other:?}"),
    };
    // The client's order of preference: AES-128-GCM-SIV (30) first, as chrony 4.4 and later
    // offer, or only AES-SIV-CMAC-256 (15), as chrony 4.3 does.
    assert_eq!(
        complete(&ke::client_request(&[30, 15])),
        Ok(ntpv4(Aead::Aes128GcmSiv, false))
    );
    assert_eq!(
        complete(&ke::client_request(&[15, 30])),
        Ok(ntpv4(Aead::AesSivCmac256, false))
    );
    // chrony's compliant-exporter record counts only with AES-128-GCM-SIV.
    assert_eq!(
        complete(&ke::client_request_with(&[30, 15], true)),
        Ok(ntpv4(Aead::Aes128GcmSiv, true))
    );
    assert_eq!(
        complete(&ke::client_request_with(&[15], true)),
        Ok(ntpv4(Aead::AesSivCmac256, false))
    );
    assert_eq!(
        complete(&ke::client_request(&[16, 17])),
        Err(KeError::BadRequest(
            "no AEAD algorithm this server supports"
        ))
    );
    let mut w = ke::Writer::default();
    w.record(true, ke::record::NEXT_PROTOCOL, &[0x80, 0x01]);
    assert_eq!(
        complete(&w.finish()),
        Ok(Negotiated::NoCommonProtocol),
        "an unknown protocol only"
    );

    let refused = |bytes: &[u8]| match ke::read_request(bytes) {
        RequestRead::Refused(e) => e,
        other => panic!("{other:?}"),
    };
    let mut w = ke::Writer::default();
    w.record(true, ke::record::NEXT_PROTOCOL, &[0, 0]);
    w.record(true, 0x4242, &[]);
    assert_eq!(refused(&w.finish()), KeError::UnrecognizedCritical(0x4242));
    assert_eq!(
        KeError::UnrecognizedCritical(1).code(),
        ke::ErrorCode::UnrecognizedCriticalRecord
    );
    // An unknown record that is not critical is ignored.
    let mut w = ke::Writer::default();
    w.record(true, ke::record::NEXT_PROTOCOL, &[0, 0]);
    w.record(false, 0x4242, b"whatever");
    w.record(true, ke::record::AEAD_ALGORITHM, &[0, 15]);
    assert!(complete(&w.finish()).is_ok());
    // No next protocol; two of them; data after the end.
    assert!(matches!(
        refused(&ke::Writer::default().finish()),
        KeError::BadRequest(_)
    ));
    let twice = [&CHRONY_KE_REQUEST[..6], &CHRONY_KE_REQUEST[..]].concat();
    assert!(matches!(refused(&twice), KeError::BadRequest(_)));
    let after = [&CHRONY_KE_REQUEST[..], &[0]].concat();
    assert!(matches!(refused(&after), KeError::BadRequest(_)));
    // A client that never ends its message is cut off at 1024 bytes.
    let mut endless = Vec::new();
    while endless.len() < ke::MAX_REQUEST_LEN {
        endless.extend_from_slice(&[0x00, 0x63, 0x00, 0x04, 1, 2, 3, 4]);
    }
    assert!(matches!(refused(&endless), KeError::BadRequest(_)));
}

#[test]
fn ke_responses_read_back() {
    let cookies = vec![vec![7u8; MAX_COOKIE_LEN]; ke::COOKIES_PER_SESSION];
    let bytes = ke::ntp_response(
        Session {
            aead: Aead::AesSivCmac256,
            compliant_128gcm: false,
        },
        &cookies,
        Some("ntp.example"),
        Some(1123),
    );
    let r = ke::read_server_response(&bytes).unwrap();
    assert_eq!(
        (
            r.protocols,
            r.aead,
            r.cookies.len(),
            r.server.as_deref(),
            r.port,
            r.error
        ),
        (vec![0], Some(15), 8, Some("ntp.example"), Some(1123), None)
    );
    let r = ke::read_server_response(&ke::error_response(ke::ErrorCode::BadRequest)).unwrap();
    assert_eq!(r.error, Some(1));
    let r = ke::read_server_response(&ke::no_protocol_response()).unwrap();
    assert_eq!((r.protocols.len(), r.aead), (0, None));
    assert_eq!(
        ke::exporter_context(Aead::AesSivCmac256, true),
        [0, 0, 0, 15, 1]
    );
    assert_eq!(
        ke::exporter_context(Aead::Aes128GcmSiv, false),
        [0, 0, 0, 30, 0]
    );
}

/// AES-128-GCM-SIV's keys come from a context that says 15 unless both sides sent chrony's
/// Compliant AES-128-GCM-SIV Exporter Context record (type 1024, empty, not critical): what
/// chrony 4.4 and later clients and servers do, and chrony is the peer that matters.
#[test]
fn aes_128_gcm_siv_keys_use_chronys_exporter_context_unless_both_ask_for_the_rfcs() {
    let session = |aead, compliant_128gcm| Session {
        aead,
        compliant_128gcm,
    };
    assert_eq!(
        session(Aead::Aes128GcmSiv, false).exporter_context(true),
        [0, 0, 0, 15, 1]
    );
    assert_eq!(
        session(Aead::Aes128GcmSiv, true).exporter_context(false),
        [0, 0, 0, 30, 0]
    );
    assert_eq!(
        session(Aead::AesSivCmac256, false).exporter_context(false),
        [0, 0, 0, 15, 0]
    );
    // The answer carries the record back exactly when the session uses it.
    for compliant in [false, true] {
        let bytes = ke::ntp_response(session(Aead::Aes128GcmSiv, compliant), &[], None, None);
        let r = ke::read_server_response(&bytes).unwrap();
        assert_eq!((r.aead, r.compliant_128gcm), (Some(30), compliant));
    }
    // The record with a body is a bad request, as chrony's server has it.
    let mut w = ke::Writer::default();
    w.record(true, ke::record::NEXT_PROTOCOL, &[0, 0]);
    w.record(true, ke::record::AEAD_ALGORITHM, &[0, 30]);
    w.record(false, ke::record::COMPLIANT_128GCM_EXPORT, &[1]);
    assert!(matches!(
        ke::read_request(&w.finish()),
        RequestRead::Refused(KeError::BadRequest(_))
    ));
}

/// RFC 8452's vectors (Appendix C.1), through `seal` and `open` as NTS lays them out: the
/// ciphertext, then the tag.
#[test]
fn aes_128_gcm_siv_gives_rfc_8452s_vectors() {
    let key = [1u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let nonce = [3u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    for (plain, result) in [
        ("", "dc20e2d83f25705bb49e439eca56de25"),
        (
            "0100000000000000",
            "b5d839330ac7b786578782fff6013b815b287c22493a364c",
        ),
    ] {
        let plain = hex(plain);
        let aead = Aead::Aes128GcmSiv;
        let mut buf = vec![0u8; plain.len() + super::TAG_LEN];
        let text = aead.text(buf.len());
        buf[text.clone()].copy_from_slice(&plain);
        assert!(super::seal(aead, &key, &[], &nonce, &mut buf));
        assert_eq!(buf, hex(result));
        assert!(super::open(aead, &key, &[], &nonce, &mut buf));
        assert_eq!(buf[text], plain[..]);
        buf[0] ^= 1;
        assert!(!super::open(aead, &key, &[], &nonce, &mut buf));
        // Its nonces are 12 bytes, its keys 16: nothing else seals.
        assert!(!super::seal(aead, &key, &[], &[0; 16], &mut buf));
        assert!(!super::seal(aead, &[0; 32], &[], &nonce, &mut buf));
    }
}

fn session_for(aead: Aead) -> SessionKeys {
    let n = aead.key_len();
    SessionKeys::new(aead, &[0xc2; 32][..n], &[0x52; 32][..n]).unwrap()
}

fn session() -> SessionKeys {
    session_for(Aead::AesSivCmac256)
}

#[test]
fn a_cookie_opens_to_its_keys_and_any_change_spoils_it() {
    for aead in Aead::ALL {
        a_cookie_of(aead);
    }
    assert_eq!(cookie_len(Aead::AesSivCmac256), 100);
    assert_eq!(
        cookie_len(Aead::Aes128GcmSiv),
        68,
        "chrony's length for its sessions"
    );
    assert!(SessionKeys::new(Aead::Aes128GcmSiv, &[0; 32], &[0; 32]).is_none());
}

fn a_cookie_of(aead: Aead) {
    let mut rng = Counter(0);
    let master = MasterKeys::generate(1_000, &mut rng);
    let cookie = master.seal(&session_for(aead), &mut rng);
    let cookie = cookie.as_bytes();
    assert_eq!(cookie.len(), cookie_len(aead));
    assert_eq!(master.open(cookie), Ok(session_for(aead)));
    assert_ne!(
        master.seal(&session_for(aead), &mut rng).as_bytes(),
        cookie,
        "a fresh nonce each time: cookies cannot be linked"
    );
    for i in 0..cookie.len() {
        let mut bad = cookie.to_vec();
        bad[i] ^= 0x01;
        let e = master.open(&bad).unwrap_err();
        if i < 4 {
            assert_eq!(e, CookieError::UnknownKey, "byte {i}");
        } else {
            assert_eq!(e, CookieError::Forged, "byte {i}");
        }
    }
    assert_eq!(master.open(&cookie[1..]), Err(CookieError::Length));
    let other = MasterKeys::generate(1_000, &mut Counter(99));
    assert!(other.open(cookie).is_err(), "another server's cookie");
}

#[test]
fn master_keys_rotate_and_keep_the_last_three() {
    let mut rng = Counter(0);
    let day = 86_400;
    let t0 = 1_000_000;
    let mut master = MasterKeys::generate(t0, &mut rng);
    let first = master.seal(&session(), &mut rng);
    let first = first.as_bytes();
    assert!(!master.rotation_due(t0 + day - 1, day));
    assert!(master.rotation_due(t0 + day, day));
    assert!(
        master.rotation_due(t0 - 2 * day, day),
        "a key dated after a step back"
    );
    for n in 1..=KEEP {
        master.rotate(t0 + n as u64 * day, &mut rng);
        assert_eq!(master.keys().len(), (n + 1).min(KEEP));
        let opens = master.open(first).is_ok();
        assert_eq!(opens, n < KEEP, "after {n} rotations");
        assert_eq!(
            master.open(master.seal(&session(), &mut rng).as_bytes()),
            Ok(session())
        );
    }
    let text = master.to_text();
    assert_eq!(MasterKeys::parse(&text), Ok(master.clone()));
    assert!(!text.contains("c2c2"), "no session key in the state");
}

#[test]
fn the_state_file_is_read_strictly() {
    let good = MasterKeys::generate(5, &mut Counter(3)).to_text();
    let line = good.lines().last().unwrap().to_string();
    for (text, what) in [
        ("", "no keys"),
        ("# only a comment\n", "no keys"),
        ("1 2\n", "not `ID CREATED KEY`"),
        ("x 2 00\n", "the key id is not a 32-bit number"),
        ("1 -2 00\n", "the creation time is not a number"),
        ("1 2 00ff\n", "the key is not 64 hex digits"),
    ] {
        assert_eq!(MasterKeys::parse(text).unwrap_err().what, what, "{text:?}");
    }
    assert_eq!(
        MasterKeys::parse(&format!("{line}\n{line}\n"))
            .unwrap_err()
            .what,
        "a key id twice"
    );
    let four: String = (1..=4)
        .map(|i| format!("{i} {i} {}\n", "ab".repeat(32)))
        .collect();
    assert!(MasterKeys::parse(&four).is_err());
    let nonascii = format!("1 2 {}é\n", "a".repeat(62));
    assert!(MasterKeys::parse(&nonascii).is_err());
}

fn table(auth: AuthRequirement) -> ViewTable {
    let mut t = ViewTable::single("plus15", Offset::from_secs(15));
    let views = vec![View {
        name: "plus15".into(),
        offset: Offset::from_secs(15),
        auth,
    }];
    t = ViewTable::new(views, t.rules().to_vec(), t.default_view());
    t
}

struct Client {
    keys: SessionKeys,
    cookie: Vec<u8>,
    uid: [u8; 32],
}

fn client_of(master: &MasterKeys, aead: Aead) -> Client {
    Client {
        keys: session_for(aead),
        cookie: master
            .seal(&session_for(aead), &mut Counter(40))
            .as_bytes()
            .to_vec(),
        uid: [0x11; 32],
    }
}

fn client(master: &MasterKeys) -> Client {
    client_of(master, Aead::AesSivCmac256)
}

fn request(c: &Client, placeholders: usize) -> Vec<u8> {
    let header = Header::client_request(4, NtpTimestamp::from_bits(CLIENT_TX)).encode();
    let nonce = &[0x77; NONCE_LEN][..c.keys.aead().nonce_len()];
    ef::client_request(&header, &c.uid, &c.cookie, placeholders, &c.keys, nonce)
}

fn decide_nts(packet: &[u8], views: &ViewTable, master: Option<&MasterKeys>) -> Decision {
    let auth = Auth::default();
    let creds = Credentials {
        symmetric: &auth,
        nts: master,
    };
    decide(
        &Request {
            packet,
            local: "127.0.0.1:123".parse().unwrap(),
            client: "127.0.0.1".parse().unwrap(),
            receive: RX,
            now_mono_ns: 1,
            sent: None,
        },
        views,
        &HashOnly,
        &state(),
        Unmatched::Ignore,
        &creds,
        None,
    )
}

fn finish(d: Decision, master: &MasterKeys) -> (ResponseKind, Authenticated, Vec<u8>) {
    let Decision::Respond(mut r) = d else {
        panic!("no answer: {d:?}")
    };
    let auth = Auth::default();
    let creds = Credentials {
        symmetric: &auth,
        nts: Some(master),
    };
    let out = r.finish(RX, &creds, &mut Counter(200));
    assert_eq!(out.len(), r.len());
    (r.kind, r.authenticated, out)
}

#[test]
fn an_nts_request_gets_an_authenticated_answer_with_fresh_cookies() {
    for aead in Aead::ALL {
        an_answer_for(aead);
    }
}

fn an_answer_for(aead: Aead) {
    let master = MasterKeys::generate(1, &mut Counter(9));
    let c = client_of(&master, aead);
    let wrong = SessionKeys::new(aead, &[0; 32][..aead.key_len()], c.keys.c2s()).unwrap();
    for placeholders in [0, 1, 7] {
        let req = request(&c, placeholders);
        let (kind, auth, out) = finish(
            decide_nts(&req, &table(AuthRequirement::Nts), Some(&master)),
            &master,
        );
        assert_eq!((kind, auth), (ResponseKind::Time, Authenticated::Nts));
        assert_eq!(out.len(), req.len(), "exactly as long as the request");
        let cookies = ef::read_response(&out, &c.uid, &c.keys).unwrap();
        assert_eq!(cookies.len(), 1 + placeholders);
        for k in &cookies {
            assert_eq!(
                master.open(k),
                Ok(c.keys.clone()),
                "each fresh cookie opens"
            );
        }
        let h = Header::parse(&out).unwrap();
        assert_eq!(h.origin_timestamp.to_bits(), CLIENT_TX);
        assert_eq!(h.transmit_timestamp, RX.add(Offset::from_secs(15)).to_ntp());
        // The client rejects the answer under another key, or for another request.
        assert_eq!(
            ef::read_response(&out, &c.uid, &wrong),
            Err(ResponseError::Forged)
        );
        assert_eq!(
            ef::read_response(&out, &[0x22; 32], &c.keys),
            Err(ResponseError::UniqueId)
        );
        let mut altered = out.clone();
        altered[40] ^= 1; // the transmit timestamp
        assert_eq!(
            ef::read_response(&altered, &c.uid, &c.keys),
            Err(ResponseError::Forged)
        );
    }
}

#[test]
fn a_bad_cookie_gets_an_nts_nak_and_a_bad_authenticator_nothing() {
    let master = MasterKeys::generate(1, &mut Counter(9));
    let mut c = client(&master);
    c.cookie[30] ^= 0x80;
    let req = request(&c, 0);
    let (kind, _, out) = finish(
        decide_nts(&req, &table(AuthRequirement::Nts), Some(&master)),
        &master,
    );
    assert_eq!(kind, ResponseKind::NtsNak);
    let h = Header::parse(&out).unwrap();
    assert_eq!((h.stratum, h.reference_id), (0, *b"NTSN"));
    assert_eq!(h.transmit_timestamp.to_bits(), CLIENT_TX, "no time");
    assert_eq!(
        &out[HEADER_LEN + 4..HEADER_LEN + 36],
        &c.uid,
        "the identifier, echoed"
    );
    assert_eq!(out.len(), HEADER_LEN + 36);
    // Without NTS on, no cookie opens.
    let good = request(&client(&master), 0);
    assert!(matches!(
        decide_nts(&good, &table(AuthRequirement::None), None),
        Decision::Respond(r) if r.kind == ResponseKind::NtsNak
    ));

    let mut forged = request(&client(&master), 0);
    let n = forged.len();
    forged[n - 1] ^= 1; // the SIV's last byte
    assert!(matches!(
        decide_nts(&forged, &table(AuthRequirement::None), Some(&master)),
        Decision::Ignore(DropReason::BadNts)
    ));
    let mut moved = request(&client(&master), 0);
    moved[2] ^= 1; // a header byte the authenticator covers
    assert!(matches!(
        decide_nts(&moved, &table(AuthRequirement::None), Some(&master)),
        Decision::Ignore(DropReason::BadNts)
    ));
}

#[test]
fn views_require_what_they_say() {
    let master = MasterKeys::generate(1, &mut Counter(9));
    let nts = request(&client(&master), 0);
    let plain = Header::client_request(4, NtpTimestamp::from_bits(CLIENT_TX)).encode();
    for (auth, plain_ok, nts_ok) in [
        (AuthRequirement::None, true, true),
        (AuthRequirement::Key, false, false),
        (AuthRequirement::Nts, false, true),
        (AuthRequirement::Any, false, true),
    ] {
        let t = table(auth);
        let answered = |p: &[u8]| matches!(decide_nts(p, &t, Some(&master)), Decision::Respond(_));
        assert_eq!(answered(&plain), plain_ok, "{auth:?} plain");
        assert_eq!(answered(&nts), nts_ok, "{auth:?} nts");
    }
}

#[test]
fn malformed_nts_fields_are_dropped() {
    let master = MasterKeys::generate(1, &mut Counter(9));
    let good = request(&client(&master), 1);
    assert!(ef::parse_request(&good).unwrap().is_some());
    // Two cookies.
    let cookie_field = &good[HEADER_LEN + 36..HEADER_LEN + 36 + 104];
    let two = [
        &good[..HEADER_LEN + 36],
        cookie_field,
        &good[HEADER_LEN + 36..],
    ]
    .concat();
    assert_eq!(ef::parse_request(&two), Err(EfError::Cookie));
    // A field after the authenticator.
    let after = [&good[..], &[0x01, 0x04, 0x00, 0x04]].concat();
    assert_eq!(ef::parse_request(&after), Err(EfError::AfterAuthenticator));
    // No authenticator.
    let n = good.len() - 40;
    assert_eq!(ef::parse_request(&good[..n]), Err(EfError::NoAuthenticator));
    // A short identifier.
    let mut short = good.clone();
    short[HEADER_LEN + 3] = 8;
    assert!(ef::parse_request(&short).is_err());
    assert!(matches!(
        decide_nts(&two, &table(AuthRequirement::None), Some(&master)),
        Decision::Ignore(DropReason::BadNts)
    ));
    // A legacy MAC reads as no NTS fields.
    let plain = Header::client_request(4, NtpTimestamp::from_bits(CLIENT_TX)).encode();
    let mac = [&plain[..], &[0, 0, 0, 1], &[0xaa; 16]].concat();
    assert_eq!(ef::parse_request(&mac), Ok(None));
    assert_eq!(ef::parse_request(&plain), Ok(None));
}

proptest! {
    #[test]
    fn any_ke_bytes_are_read_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
        if let RequestRead::Complete(r) = ke::read_request(&bytes) {
            let _ = r.negotiate();
        }
        let _ = ke::read_server_response(&bytes);
    }

    #[test]
    fn any_mutation_of_an_nts_request_is_answered_smaller_or_dropped(
        at in 0usize..292, xor in 1u8..=255, placeholders in 0usize..3, cut in 0usize..300,
        aead in proptest::sample::select(Aead::ALL.to_vec()),
    ) {
        let master = MasterKeys::generate(1, &mut Counter(9));
        let mut req = request(&client_of(&master, aead), placeholders);
        let at = at % req.len();
        req[at] ^= xor;
        req.truncate(req.len() - (cut % 5) * 4);
        match decide_nts(&req, &table(AuthRequirement::None), Some(&master)) {
            Decision::Respond(mut r) => {
                let auth = Auth::default();
                let creds = Credentials { symmetric: &auth, nts: Some(&master) };
                let out = r.finish(RX, &creds, &mut Counter(1));
                prop_assert!(out.len() <= req.len());
            }
            Decision::Ignore(_) | Decision::Limited(_) => {}
        }
    }
}
