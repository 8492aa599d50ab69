//! The server's decision for one request: [`decide`]. Everything the server does with a datagram
//! is decided here, from plain values, so it is tested without sockets.
//!
//! Order of checks: size, version, mode (only client requests, mode 3, are ever answered; mode
//! 6/7 and everything else are dropped), view, rate, then authentication: NTS extension fields
//! if the request has them, else a legacy MAC if it has one, and the view's `auth`. The answer
//! is 48 bytes, plus a MAC exactly as long as the request's (or a 4-byte crypto-NAK), or NTS
//! fields no longer than the request's; every request that gets an answer has at least 48
//! bytes, so an answer is never larger than its request.

use core::net::{IpAddr, SocketAddr};

use crate::interleaved::{self, TransmitLog};
use crate::nts::cookie::{Cookie, MasterKeys};
use crate::nts::extension::{self as nts_ef, NtsRequest};
use crate::nts::{self, Aead, Entropy, SessionKeys, NONCE_LEN};
use crate::packet::{
    set_transmit_timestamp, Header, LeapIndicator, Mode, HEADER_LEN, UNSYNCHRONIZED_STRATUM,
};
use crate::ratelimit::{RateLimiter, RateVerdict};
use crate::symmetric::{self, Auth, UnknownKey};
use crate::system::ServerState;
use crate::time::{NtpShort, NtpTimestamp, Offset, Time};
use crate::view::{Assigner, AuthRequirement, ViewId, ViewTable};

/// The largest request considered. NTP requests are 48 bytes, plus extension fields or a legacy
/// MAC; nothing a client sends for time comes near this.
pub const MAX_REQUEST_LEN: usize = 1024;

/// What to do with a request that matches no view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Unmatched {
    /// Drop it silently (the default: reveal nothing to strangers).
    #[default]
    Ignore,
    /// Answer with a KoD DENY, so a misconfigured client stops asking.
    Deny,
}

/// One received datagram, as the IO edge hands it over.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub packet: &'a [u8],
    /// The address the request arrived on.
    pub local: SocketAddr,
    pub client: IpAddr,
    /// Kernel receive time, already mapped to base time (see `leap`).
    pub receive: Time,
    /// Monotonic clock, for rate limiting.
    pub now_mono_ns: u64,
    /// What this socket sent when, for interleaved answers (None: basic mode only).
    pub sent: Option<&'a TransmitLog>,
}

/// Why a request gets no answer. The IO edge counts these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    Truncated,
    Oversized,
    /// Not a whole number of 32-bit words: no NTP packet looks like that.
    Malformed,
    BadVersion,
    NotClientMode,
    NoView,
    RateLimited,
    /// A MAC that does not verify with its key.
    BadMac,
    /// A MAC with a key this server does not have, under `unknown_key = "drop"`.
    UnknownKey,
    /// Neither a valid MAC nor NTS, for a view whose `auth` needs one.
    Unauthenticated,
    /// NTS fields that are malformed, or whose authenticator does not verify.
    BadNts,
}

impl DropReason {
    pub const ALL: [DropReason; 11] = [
        DropReason::Truncated,
        DropReason::Oversized,
        DropReason::Malformed,
        DropReason::BadVersion,
        DropReason::NotClientMode,
        DropReason::NoView,
        DropReason::RateLimited,
        DropReason::BadMac,
        DropReason::UnknownKey,
        DropReason::Unauthenticated,
        DropReason::BadNts,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Oversized => "oversized",
            DropReason::Malformed => "malformed",
            DropReason::BadVersion => "bad_version",
            DropReason::NotClientMode => "not_client_mode",
            DropReason::NoView => "no_view",
            DropReason::RateLimited => "rate_limited",
            DropReason::BadMac => "bad_mac",
            DropReason::UnknownKey => "unknown_key",
            DropReason::Unauthenticated => "unauthenticated",
            DropReason::BadNts => "bad_nts",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseKind {
    Time,
    KodRate,
    KodDeny,
    /// A KoD `CRYP` with a zero key id: the request's key is not known here.
    CryptoNak,
    /// A KoD `NTSN` with the request's Unique Identifier: its cookie does not open here, so
    /// the client goes back to key establishment.
    NtsNak,
    /// Time marked unsynchronised (leap 3, stratum 16), which clients do not set their
    /// clocks from: the client's address is being matched to its VM ([`Assigned::placing`]).
    Placing,
}

/// The longest answer: no longer than the longest request.
pub const MAX_RESPONSE_LEN: usize = MAX_REQUEST_LEN;

/// How a request was authenticated; its answer is authenticated the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authenticated {
    No,
    /// A valid MAC by this key.
    Key(u32),
    Nts,
}

/// What follows an answer's header.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Trailer {
    None,
    /// A zero key id.
    CryptoNak,
    /// A MAC by this key, computed once the transmit timestamp is in, with a digest of this
    /// many bytes (the request's).
    Mac(u32, usize),
    /// The request's Unique Identifier, alone.
    NtsNak(Box<[u8]>),
    /// NTS fields: the identifier, and this many fresh cookies for the session's keys, all
    /// authenticated once the transmit timestamp is in.
    Nts(Box<NtsReply>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct NtsReply {
    unique_id: Box<[u8]>,
    keys: SessionKeys,
    cookies: usize,
}

/// What authenticates requests: the symmetric keys, and NTS's master keys when NTS is on.
#[derive(Clone, Copy, Debug)]
pub struct Credentials<'a> {
    pub symmetric: &'a Auth,
    pub nts: Option<&'a MasterKeys>,
}

impl<'a> Credentials<'a> {
    pub fn keys_only(symmetric: &'a Auth) -> Credentials<'a> {
        Credentials {
            symmetric,
            nts: None,
        }
    }
}

/// An answer, complete but for its transmit timestamp, which [`Response::finish_into`] writes
/// as late as possible (and then its MAC or NTS fields).
#[derive(Clone, Debug)]
pub struct Response {
    header: [u8; HEADER_LEN],
    len: usize,
    trailer: Trailer,
    offset: Offset,
    /// The header already holds the transmit time of an earlier answer (interleaved mode).
    interleaved: bool,
    /// The answer's receive field, when its transmit time is to be logged: its client may
    /// ask for interleaved mode next.
    pub log_as: Option<NtpTimestamp>,
    pub view: Option<ViewId>,
    pub kind: ResponseKind,
    pub authenticated: Authenticated,
}

#[derive(Clone, Debug)]
pub enum Decision {
    Respond(Response),
    Ignore(DropReason),
    /// Dropped by the rate limiter (counted as [`DropReason::RateLimited`]); the view the
    /// request would have had, for per-view counts and the client log.
    Limited(Option<ViewId>),
}

impl Response {
    /// The answer's length: its header and MAC (never empty).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the answer is in interleaved mode.
    pub fn is_interleaved(&self) -> bool {
        self.interleaved
    }

    /// The view's offset (zero for KoD answers).
    pub fn offset(&self) -> Offset {
        self.offset
    }

    /// Writes the finished answer into `out` (exactly [`len`](Self::len) bytes): transmit
    /// time `transmit` (base time) shifted into the view, unless interleaved, then its MAC or
    /// NTS fields with `creds` (those `decide` saw) and nonces from `rng`. KoD packets keep
    /// the request's own timestamp and tell no time. Returns `transmit` in the view: what a
    /// [`TransmitLog`] keeps for this answer until the kernel's stamp comes.
    pub fn finish_into(
        &mut self,
        transmit: Time,
        creds: &Credentials<'_>,
        rng: &mut dyn Entropy,
        out: &mut [u8],
    ) -> NtpTimestamp {
        let in_view = transmit.add(self.offset).to_ntp();
        if matches!(self.kind, ResponseKind::Time | ResponseKind::Placing) && !self.interleaved {
            set_transmit_timestamp(&mut self.header, in_view);
        }
        out[..HEADER_LEN].copy_from_slice(&self.header);
        let mac = &mut out[HEADER_LEN..];
        match &self.trailer {
            Trailer::None => {}
            Trailer::CryptoNak => mac[symmetric::field::KEY_ID].fill(0),
            Trailer::NtsNak(uid) => {
                nts_ef::write_unique_id(mac, uid);
            }
            Trailer::Nts(reply) => {
                let master = creds.nts.expect("decide opened the cookie with these keys");
                let mut cookies = [Cookie::EMPTY; MAX_COOKIES];
                for c in &mut cookies[..reply.cookies] {
                    *c = master.seal(&reply.keys, rng);
                }
                let mut nonce = [0u8; NONCE_LEN];
                let nonce = &mut nonce[..reply.keys.aead().nonce_len()];
                rng.fill(nonce);
                nts_ef::write_response(
                    out,
                    &reply.unique_id,
                    &reply.keys,
                    nonce,
                    &cookies[..reply.cookies],
                );
            }
            &Trailer::Mac(id, n) => {
                let key = creds
                    .symmetric
                    .keys
                    .get(id)
                    .expect("decide found this key in the same table");
                mac[symmetric::field::KEY_ID].copy_from_slice(&id.to_be_bytes());
                let mut digest = [0u8; symmetric::MAX_DIGEST_LEN];
                key.digest(&self.header, &mut digest);
                mac[symmetric::field::DIGEST..symmetric::field::DIGEST + n]
                    .copy_from_slice(&digest[..n]);
            }
        }
        in_view
    }

    /// The finished answer as bytes (tests and tools; the server writes into its send buffer).
    pub fn finish(
        &mut self,
        transmit: Time,
        creds: &Credentials<'_>,
        rng: &mut dyn Entropy,
    ) -> Vec<u8> {
        let mut out = vec![0u8; self.len];
        self.finish_into(transmit, creds, rng, &mut out);
        out
    }
}

/// The most cookies one answer carries: as many of the shortest as fit in the largest
/// request.
const MAX_COOKIES: usize =
    (MAX_REQUEST_LEN - HEADER_LEN) / nts_ef::cookie_field_len(Aead::Aes128GcmSiv);

/// What NTS fields make of a request: a trailer and its length, how it was authenticated, or
/// why it is dropped.
fn nts_trailer(
    nts: &NtsRequest<'_>,
    packet_len: usize,
    master: Option<&MasterKeys>,
) -> Result<(Trailer, usize, ResponseKind), DropReason> {
    let nak = || {
        let t = Trailer::NtsNak(nts.unique_id.into());
        (
            t,
            nts_ef::unique_id_len(nts.unique_id.len()),
            ResponseKind::NtsNak,
        )
    };
    // Without NTS configured, no cookie opens: the client learns to go back to KE.
    let Some(keys) = master.and_then(|m| m.open(nts.cookie).ok()) else {
        return Ok(nak());
    };
    let mut buf = [0u8; MAX_REQUEST_LEN];
    let ct = &mut buf[..nts.ciphertext.len()];
    ct.copy_from_slice(nts.ciphertext);
    if !nts::open(keys.aead(), keys.c2s(), nts.aad, nts.nonce, ct) {
        return Err(DropReason::BadNts);
    }
    let aead = keys.aead();
    let cookies = nts_ef::cookies_for(nts, packet_len, aead).min(MAX_COOKIES);
    let len = nts_ef::response_len(aead, nts.unique_id.len(), cookies) - HEADER_LEN;
    let reply = NtsReply {
        unique_id: nts.unique_id.into(),
        keys,
        cookies,
    };
    Ok((Trailer::Nts(Box::new(reply)), len, ResponseKind::Time))
}

/// Decides what to answer to one request. `limiter` is None when rate limiting is off.
pub fn decide(
    req: &Request<'_>,
    views: &ViewTable,
    assigner: &dyn Assigner,
    state: &ServerState,
    unmatched: Unmatched,
    creds: &Credentials<'_>,
    limiter: Option<&mut RateLimiter>,
) -> Decision {
    let request = match client_request(req.packet) {
        Ok(h) => h,
        Err(reason) => return Decision::Ignore(reason),
    };
    let assigned = views.assigned(req.local, req.client, assigner);
    let view = assigned.map(|a| a.view);
    if view.is_none() && unmatched == Unmatched::Ignore {
        return Decision::Ignore(DropReason::NoView);
    }
    let mut kind = if view.is_some() {
        ResponseKind::Time
    } else {
        ResponseKind::KodDeny
    };
    if let Some(limiter) = limiter {
        match limiter.check(req.client, req.now_mono_ns) {
            RateVerdict::Allow => {}
            RateVerdict::Drop => return Decision::Limited(view),
            RateVerdict::Kod => kind = ResponseKind::KodRate,
        }
    }
    // Verified after the cheap checks, so a flood of forged MACs costs a table lookup each
    // once rate-limited.
    let auth = match authenticate(req, creds) {
        Ok(a) => a,
        Err(reason) => return Decision::Ignore(reason),
    };
    if let Some(nak) = auth.nak {
        kind = nak;
    }
    if kind == ResponseKind::Time && assigned.is_some_and(|a| a.placing) {
        kind = ResponseKind::Placing;
    }
    if let Some(id) = view {
        // A NAK still tells a client with stale credentials what to fix.
        let nak = matches!(kind, ResponseKind::CryptoNak | ResponseKind::NtsNak);
        if !satisfies(auth.authenticated, views.view(id).auth) && !nak {
            return Decision::Ignore(DropReason::Unauthenticated);
        }
    }
    // A client walking to its view is served the walk's offset at this request's arrival.
    let offset = assigned.map_or(Offset::ZERO, |a| match a.walk {
        Some(w) => w.offset_at(req.receive),
        None => views.view(a.view).offset,
    });
    let (header, interleaved, log_as) = answer_header(&request, req, state, kind, view, offset);
    Decision::Respond(Response {
        header: header.encode(),
        len: HEADER_LEN + auth.trailer_len,
        trailer: auth.trailer,
        offset,
        interleaved,
        log_as,
        view,
        kind,
        authenticated: auth.authenticated,
    })
}

/// The request's header, if it is one this server answers: a whole NTP client request of
/// version 2 to 4, no longer than any request it knows.
fn client_request(packet: &[u8]) -> Result<Header, DropReason> {
    let len = packet.len();
    if len < HEADER_LEN {
        return Err(DropReason::Truncated);
    }
    if len > MAX_REQUEST_LEN {
        return Err(DropReason::Oversized);
    }
    if !len.is_multiple_of(4) {
        return Err(DropReason::Malformed);
    }
    let request = Header::parse(packet).map_err(|_| DropReason::Truncated)?;
    // Version 1 had no modes; 5-7 do not exist. 2, 3 and 4 clients all get an answer in kind.
    if !(2..=4).contains(&request.version) {
        return Err(DropReason::BadVersion);
    }
    if request.mode != Mode::Client {
        return Err(DropReason::NotClientMode);
    }
    Ok(request)
}

/// What a request's credentials come to: who it is, what its answer carries after the header,
/// and a NAK to send instead of time when its credentials do not open here.
struct Checked {
    authenticated: Authenticated,
    trailer: Trailer,
    trailer_len: usize,
    nak: Option<ResponseKind>,
}

/// A request with a MAC is answered with one by the same key; an NTS request with NTS fields;
/// a request with neither, plainly.
fn authenticate(req: &Request<'_>, creds: &Credentials<'_>) -> Result<Checked, DropReason> {
    let mut auth = Checked {
        authenticated: Authenticated::No,
        trailer: Trailer::None,
        trailer_len: 0,
        nak: None,
    };
    let ef = nts_ef::parse_request(req.packet);
    if let Ok(Some(request)) = &ef {
        let (trailer, len, kind) = nts_trailer(request, req.packet.len(), creds.nts)?;
        (auth.trailer, auth.trailer_len) = (trailer, len);
        if kind == ResponseKind::Time {
            auth.authenticated = Authenticated::Nts;
        } else {
            auth.nak = Some(kind);
        }
    } else if let Some(mac) = symmetric::find_mac(req.packet) {
        let keys = creds.symmetric;
        match keys.keys.get(mac.key_id) {
            Some(key) if key.verify(mac.data, mac.digest) => {
                auth.trailer = Trailer::Mac(key.id(), mac.digest.len());
                auth.trailer_len = 4 + mac.digest.len();
                auth.authenticated = Authenticated::Key(key.id());
            }
            Some(_) => return Err(DropReason::BadMac),
            None if keys.unknown_key == UnknownKey::Drop => return Err(DropReason::UnknownKey),
            None => {
                auth.trailer = Trailer::CryptoNak;
                auth.trailer_len = symmetric::CRYPTO_NAK_LEN;
                auth.nak = Some(ResponseKind::CryptoNak);
            }
        }
    } else if ef.is_err() {
        return Err(DropReason::BadNts);
    }
    Ok(auth)
}

fn satisfies(authenticated: Authenticated, required: AuthRequirement) -> bool {
    match required {
        AuthRequirement::None => true,
        AuthRequirement::Key => matches!(authenticated, Authenticated::Key(_)),
        AuthRequirement::Nts => authenticated == Authenticated::Nts,
        AuthRequirement::Any => authenticated != Authenticated::No,
    }
}

/// The answer's header: time in the view's offset (interleaved when the client asks so and
/// its previous answer's transmit time is logged), or a kiss-o'-death. Also whether it is
/// interleaved, and the receive time to log its transmit time under.
fn answer_header(
    request: &Header,
    req: &Request<'_>,
    state: &ServerState,
    kind: ResponseKind,
    view: Option<ViewId>,
    offset: Offset,
) -> (Header, bool, Option<NtpTimestamp>) {
    let kiss = |code: &[u8; 4]| (kod_header(request, state, *code), false, None);
    match (kind, view) {
        (ResponseKind::Time, Some(_)) => {
            let mut h = time_header(request, state, offset, req.receive);
            let (mut interleaved, mut log_as) = (false, None);
            if let Some(log) = req.sent {
                if let Some(earlier) = interleaved::interleaved_transmit(request, log) {
                    h.origin_timestamp = request.receive_timestamp;
                    h.transmit_timestamp = earlier;
                    interleaved = true;
                }
                if interleaved::may_interleave(request) {
                    log_as = Some(h.receive_timestamp);
                }
            }
            (h, interleaved, log_as)
        }
        (ResponseKind::Placing, Some(_)) => {
            let mut h = time_header(request, state, offset, req.receive);
            (h.leap, h.stratum) = (LeapIndicator::Unsynchronized, UNSYNCHRONIZED_STRATUM);
            (h, false, None)
        }
        (ResponseKind::KodRate, _) => kiss(b"RATE"),
        (ResponseKind::CryptoNak, _) => kiss(b"CRYP"),
        (ResponseKind::NtsNak, _) => kiss(b"NTSN"),
        _ => kiss(b"DENY"),
    }
}

fn time_header(request: &Header, state: &ServerState, offset: Offset, receive: Time) -> Header {
    Header {
        leap: state.leap,
        version: request.version,
        mode: Mode::Server,
        stratum: state.stratum,
        poll: request.poll,
        precision: state.precision,
        root_delay: state.root_delay,
        root_dispersion: state.root_dispersion,
        reference_id: state.reference_id,
        reference_timestamp: state
            .reference_time
            .map_or(NtpTimestamp::ZERO, |t| t.add(offset).to_ntp()),
        origin_timestamp: request.transmit_timestamp,
        receive_timestamp: receive.add(offset).to_ntp(),
        transmit_timestamp: NtpTimestamp::ZERO,
    }
}

/// A kiss-o'-death (RFC 5905 §7.4): stratum 0, the code in the reference ID, no time.
fn kod_header(request: &Header, state: &ServerState, code: [u8; 4]) -> Header {
    Header {
        leap: LeapIndicator::Unsynchronized,
        version: request.version,
        mode: Mode::Server,
        stratum: 0,
        poll: request.poll,
        precision: state.precision,
        root_delay: NtpShort::from_bits(0),
        root_dispersion: NtpShort::from_bits(0),
        reference_id: code,
        reference_timestamp: NtpTimestamp::ZERO,
        origin_timestamp: request.transmit_timestamp,
        receive_timestamp: request.transmit_timestamp,
        transmit_timestamp: request.transmit_timestamp,
    }
}

/// The responder's tests; their fixtures (a server state, a receive time, deterministic
/// "randomness") serve the NTS tests too.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ratelimit::RateLimitParams;
    use crate::symmetric::{Key, KeyType, SymmetricKeys};
    use crate::system::REFID_LOCAL;
    use crate::view::{Assigned, Balanced, HashOnly, LocalAddr, Rule, Target, View};
    use proptest::prelude::*;

    /// Deterministic "randomness" for tests: a counter's bytes, so failures reproduce.
    pub(crate) struct Counter(pub u8);
    impl Entropy for Counter {
        fn fill(&mut self, out: &mut [u8]) {
            for b in out {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
        }
    }

    pub(crate) const RX: Time = Time::from_unix_nanos(1_795_000_000_123_456_789);
    pub(crate) const CLIENT_TX: u64 = 0xecd4_1c39_8000_0000;

    /// Synchronized at stratum 10 (`LOCL`), last reference reading at `RX`.
    pub(crate) fn state() -> ServerState {
        ServerState {
            leap: LeapIndicator::NoWarning,
            stratum: 10,
            reference_id: REFID_LOCAL,
            root_delay: NtpShort::from_bits(0),
            root_dispersion: NtpShort::from_bits(7),
            precision: -24,
            reference_time: Some(RX),
        }
    }

    pub(crate) fn views() -> ViewTable {
        views_needing(None)
    }

    /// Three views, one per port from 11123; `keyed` needs a key.
    fn views_needing(keyed: Option<usize>) -> ViewTable {
        let offsets = [
            ("zero", Offset::ZERO),
            ("plus15", Offset::from_secs(15)),
            ("minus250ms", Offset::from_nanos(-250_000_000)),
        ];
        let rules = (0..3)
            .map(|i| Rule {
                listen: vec![LocalAddr::Socket(
                    format!("127.0.0.1:{}", 11123 + i).parse().unwrap(),
                )],
                clients: vec![],
                target: Target::View(ViewId(i)),
            })
            .collect();
        let views = offsets
            .iter()
            .enumerate()
            .map(|(i, (n, o))| View {
                name: n.to_string(),
                offset: *o,
                auth: if keyed == Some(i) {
                    AuthRequirement::Key
                } else {
                    AuthRequirement::None
                },
            })
            .collect();
        ViewTable::new(views, rules, None)
    }

    pub(crate) fn request(bytes: &[u8], port: u16) -> Request<'_> {
        Request {
            packet: bytes,
            local: format!("127.0.0.1:{port}").parse().unwrap(),
            client: "127.0.0.1".parse().unwrap(),
            receive: RX,
            now_mono_ns: 5_000_000_000,
            sent: None,
        }
    }

    fn client_packet(version: u8) -> [u8; 48] {
        Header::client_request(version, NtpTimestamp::from_bits(CLIENT_TX)).encode()
    }

    fn answer(bytes: &[u8], port: u16) -> Decision {
        decide(
            &request(bytes, port),
            &views(),
            &HashOnly,
            &state(),
            Unmatched::Ignore,
            &Credentials::keys_only(&Auth::default()),
            None,
        )
    }

    #[test]
    fn answers_a_client_with_the_views_time() {
        let tx = RX.add(Offset::from_micros(12));
        for (port, offset) in [
            (11123, Offset::ZERO),
            (11124, Offset::from_secs(15)),
            (11125, Offset::from_nanos(-250_000_000)),
        ] {
            let Decision::Respond(mut r) = answer(&client_packet(4), port) else {
                panic!("no answer")
            };
            let h = Header::parse(&r.finish(
                tx,
                &Credentials::keys_only(&Auth::default()),
                &mut Counter(0),
            ))
            .unwrap();
            assert_eq!(
                (h.leap, h.version, h.mode, h.stratum),
                (LeapIndicator::NoWarning, 4, Mode::Server, 10)
            );
            assert_eq!(
                h.origin_timestamp.to_bits(),
                CLIENT_TX,
                "origin echoes the client's transmit"
            );
            assert_eq!(h.receive_timestamp, RX.add(offset).to_ntp());
            assert_eq!(h.transmit_timestamp, tx.add(offset).to_ntp());
            assert_eq!(h.reference_timestamp, RX.add(offset).to_ntp());
            assert_eq!(
                (h.precision, h.reference_id, h.root_dispersion.to_bits()),
                (-24, *b"LOCL", 7)
            );
        }
    }

    #[test]
    fn a_ten_year_view_crosses_the_2036_era() {
        let ten_years = Offset::from_secs(3650 * 86_400);
        let table = ViewTable::single("decade", ten_years);
        let packet = client_packet(4);
        let req = request(&packet, 123);
        let Decision::Respond(mut r) = decide(
            &req,
            &table,
            &HashOnly,
            &state(),
            Unmatched::Ignore,
            &Credentials::keys_only(&Auth::default()),
            None,
        ) else {
            panic!()
        };
        let h = Header::parse(&r.finish(
            RX,
            &Credentials::keys_only(&Auth::default()),
            &mut Counter(0),
        ))
        .unwrap();
        // 2026-11 + 10 years is past 2036-02-07: era 1, and the client resolves it correctly.
        assert_eq!(h.transmit_timestamp.to_time_near(RX), RX.add(ten_years));
        assert!(
            h.transmit_timestamp.to_bits() < RX.to_ntp().to_bits(),
            "wrapped into era 1"
        );
    }

    #[test]
    fn answers_v2_v3_v4_in_kind_and_drops_others() {
        for v in 2..=4 {
            let Decision::Respond(mut r) = answer(&client_packet(v), 11123) else {
                panic!("v{v}")
            };
            assert_eq!(
                Header::parse(&r.finish(
                    RX,
                    &Credentials::keys_only(&Auth::default()),
                    &mut Counter(0)
                ))
                .unwrap()
                .version,
                v
            );
        }
        for v in [0, 1, 5, 7] {
            assert!(
                matches!(
                    answer(&client_packet(v), 11123),
                    Decision::Ignore(DropReason::BadVersion)
                ),
                "v{v}"
            );
        }
    }

    #[test]
    fn only_client_mode_is_answered() {
        for mode in [0u8, 1, 2, 4, 5, 6, 7] {
            let mut p = client_packet(4);
            p[0] = (p[0] & !7) | mode;
            assert!(
                matches!(
                    answer(&p, 11123),
                    Decision::Ignore(DropReason::NotClientMode)
                ),
                "mode {mode}"
            );
        }
    }

    #[test]
    fn sizes_are_checked() {
        let p = client_packet(4);
        assert!(matches!(
            answer(&p[..47], 11123),
            Decision::Ignore(DropReason::Truncated)
        ));
        assert!(matches!(
            answer(&[], 11123),
            Decision::Ignore(DropReason::Truncated)
        ));
        let mut odd = p.to_vec();
        odd.push(0);
        assert!(matches!(
            answer(&odd, 11123),
            Decision::Ignore(DropReason::Malformed)
        ));
        let big = [p.as_slice(), &[0u8; MAX_REQUEST_LEN]].concat();
        assert!(matches!(
            answer(&big, 11123),
            Decision::Ignore(DropReason::Oversized)
        ));
        // A legacy MAC (key id + 16 bytes) is fine: the answer is 48 bytes, smaller.
        let with_mac = [p.as_slice(), &[0u8; 20]].concat();
        assert!(matches!(answer(&with_mac, 11123), Decision::Respond(_)));
    }

    #[test]
    fn unmatched_is_ignored_or_denied() {
        let p = client_packet(4);
        assert!(matches!(
            answer(&p, 9999),
            Decision::Ignore(DropReason::NoView)
        ));
        let Decision::Respond(mut r) = decide(
            &request(&p, 9999),
            &views(),
            &HashOnly,
            &state(),
            Unmatched::Deny,
            &Credentials::keys_only(&Auth::default()),
            None,
        ) else {
            panic!()
        };
        assert_eq!(r.kind, ResponseKind::KodDeny);
        let h = Header::parse(&r.finish(
            RX,
            &Credentials::keys_only(&Auth::default()),
            &mut Counter(0),
        ))
        .unwrap();
        assert_eq!(
            (h.leap, h.stratum, h.reference_id),
            (LeapIndicator::Unsynchronized, 0, *b"DENY")
        );
        assert_eq!(
            h.transmit_timestamp.to_bits(),
            CLIENT_TX,
            "a KoD tells no time"
        );
    }

    /// Every client of a balanced spread over the three views is being placed.
    struct Placing;
    impl Assigner for Placing {
        fn assign(&self, spread: &crate::view::Spread, _: &Balanced, c: IpAddr) -> Assigned {
            Assigned {
                placing: true,
                ..Assigned::view(spread.pick(c).unwrap())
            }
        }
    }

    #[test]
    fn a_client_being_placed_is_answered_unsynchronised() {
        let mut t = views();
        let spread = crate::view::Spread::new(&[(ViewId(1), "plus15"), (ViewId(2), "m")], (1, 2))
            .with_balancer(Balanced {
                name: "g".into(),
                index: 0,
                weights: vec![1, 1],
                rebalance: crate::view::Rebalance::Never,
                moves: crate::move_smear::Moves::Step,
                by_load: true,
                optimize_every_s: 600,
                forget_after_s: 3600,
                max_clients: 10,
            });
        t = ViewTable::new(
            t.views().to_vec(),
            vec![Rule {
                listen: vec![],
                clients: vec![],
                target: Target::Spread(spread),
            }],
            None,
        );
        let auth = Auth::default();
        let creds = Credentials::keys_only(&auth);
        let Decision::Respond(mut r) = decide(
            &request(&client_packet(4), 123),
            &t,
            &Placing,
            &state(),
            Unmatched::Ignore,
            &creds,
            None,
        ) else {
            panic!()
        };
        assert_eq!(r.kind, ResponseKind::Placing);
        assert!(!r.is_interleaved() && r.log_as.is_none(), "nothing to log");
        let h = Header::parse(&r.finish(RX, &creds, &mut Counter(0))).unwrap();
        assert_eq!(
            (h.leap, h.stratum),
            (LeapIndicator::Unsynchronized, UNSYNCHRONIZED_STRATUM),
            "clients do not set their clocks from it"
        );
        assert_eq!(h.origin_timestamp.to_bits(), CLIENT_TX, "it is an answer");
        assert_ne!(h.transmit_timestamp.to_bits(), 0);
    }

    #[test]
    fn rate_limit_drops_or_kisses() {
        let p = client_packet(4);
        let params = RateLimitParams {
            interval_ns: 1_000_000_000,
            burst: 2,
            kod: true,
            table_size: 16,
            ipv6_prefix: 64,
            prefix_factor: 256,
        };
        let mut rl = RateLimiter::new(params, (1, 2));
        let mut kinds = Vec::new();
        for _ in 0..4 {
            match decide(
                &request(&p, 11123),
                &views(),
                &HashOnly,
                &state(),
                Unmatched::Ignore,
                &Credentials::keys_only(&Auth::default()),
                Some(&mut rl),
            ) {
                Decision::Respond(r) => kinds.push(format!("{:?}", r.kind)),
                Decision::Ignore(d) => kinds.push(format!("{d:?}")),
                Decision::Limited(_) => kinds.push("RateLimited".into()),
            }
        }
        assert_eq!(kinds, ["Time", "Time", "KodRate", "RateLimited"]);
    }

    #[test]
    fn unsynchronized_state_is_passed_on() {
        let unsync = ServerState::unsynchronized(-24);
        let packet = client_packet(4);
        let req = request(&packet, 11123);
        let Decision::Respond(mut r) = decide(
            &req,
            &views(),
            &HashOnly,
            &unsync,
            Unmatched::Ignore,
            &Credentials::keys_only(&Auth::default()),
            None,
        ) else {
            panic!()
        };
        let h = Header::parse(&r.finish(
            RX,
            &Credentials::keys_only(&Auth::default()),
            &mut Counter(0),
        ))
        .unwrap();
        assert_eq!((h.leap, h.stratum), (LeapIndicator::Unsynchronized, 0));
    }

    fn keyed(unknown_key: UnknownKey) -> Auth {
        let keys = SymmetricKeys::new(vec![
            Key::new(1, KeyType::Aes128, vec![0x11; 16]).unwrap(),
            Key::new(2, KeyType::Sha256, b"pass".to_vec()).unwrap(),
        ])
        .unwrap();
        Auth { keys, unknown_key }
    }

    /// `packet` with a MAC by `key` (or, with `id`, claiming that key id).
    fn signed(packet: &[u8; 48], key: &Key, id: u32) -> Vec<u8> {
        let mut digest = [0u8; symmetric::MAX_DIGEST_LEN];
        let n = key.digest(packet, &mut digest);
        [packet.as_slice(), &id.to_be_bytes(), &digest[..n]].concat()
    }

    fn decide_with(bytes: &[u8], port: u16, views: &ViewTable, auth: &Auth) -> Decision {
        decide(
            &request(bytes, port),
            views,
            &HashOnly,
            &state(),
            Unmatched::Ignore,
            &Credentials::keys_only(auth),
            None,
        )
    }

    #[test]
    fn a_request_with_a_mac_gets_an_answer_with_one_by_the_same_key() {
        let auth = keyed(UnknownKey::Nak);
        for id in [1, 2] {
            let key = auth.keys.get(id).unwrap();
            let req = signed(&client_packet(4), key, id);
            let Decision::Respond(mut r) = decide_with(&req, 11124, &views(), &auth) else {
                panic!("key {id}")
            };
            assert_eq!(
                (r.kind, r.authenticated),
                (ResponseKind::Time, Authenticated::Key(id))
            );
            let out = r
                .finish(RX, &Credentials::keys_only(&auth), &mut Counter(0))
                .to_vec();
            assert_eq!(out.len(), req.len(), "as long as the request, never longer");
            let mac = symmetric::find_mac(&out).unwrap();
            assert_eq!(mac.key_id, id);
            assert!(
                key.verify(mac.data, mac.digest),
                "the answer verifies with the key"
            );
            let h = Header::parse(&out).unwrap();
            assert_eq!(h.origin_timestamp.to_bits(), CLIENT_TX);
            assert_eq!(h.transmit_timestamp, RX.add(Offset::from_secs(15)).to_ntp());
        }
    }

    #[test]
    fn a_bad_mac_is_dropped_and_an_unknown_key_gets_a_crypto_nak_or_nothing() {
        let auth = keyed(UnknownKey::Nak);
        let key = auth.keys.get(1).unwrap();
        let mut req = signed(&client_packet(4), key, 1);
        *req.last_mut().unwrap() ^= 1;
        assert!(matches!(
            decide_with(&req, 11123, &views(), &auth),
            Decision::Ignore(DropReason::BadMac)
        ));
        // A MAC on a changed header does not verify either.
        let mut req = signed(&client_packet(4), key, 1);
        req[2] ^= 1;
        assert!(matches!(
            decide_with(&req, 11123, &views(), &auth),
            Decision::Ignore(DropReason::BadMac)
        ));

        let unknown = signed(&client_packet(4), key, 7);
        let Decision::Respond(mut r) = decide_with(&unknown, 11123, &views(), &auth) else {
            panic!()
        };
        assert_eq!(
            (r.kind, r.authenticated),
            (ResponseKind::CryptoNak, Authenticated::No)
        );
        let out = r
            .finish(RX, &Credentials::keys_only(&auth), &mut Counter(0))
            .to_vec();
        assert_eq!(out.len(), 52, "a header and a zero key id");
        assert_eq!(out[48..], [0, 0, 0, 0]);
        let h = Header::parse(&out).unwrap();
        assert_eq!(
            (h.stratum, h.reference_id),
            (0, *b"CRYP"),
            "a KoD CRYP: no time"
        );
        assert_eq!(h.transmit_timestamp.to_bits(), CLIENT_TX);

        let drop = keyed(UnknownKey::Drop);
        assert!(matches!(
            decide_with(&unknown, 11123, &views(), &drop),
            Decision::Ignore(DropReason::UnknownKey)
        ));
        // Without keys at all, a MAC is an unknown key.
        assert!(matches!(
            decide_with(&unknown, 11123, &views(), &Auth::default()),
            Decision::Respond(Response {
                kind: ResponseKind::CryptoNak,
                ..
            })
        ));
    }

    #[test]
    fn a_view_that_needs_a_key_answers_only_valid_macs() {
        let auth = keyed(UnknownKey::Nak);
        let table = views_needing(Some(0));
        let plain = client_packet(4);
        assert!(matches!(
            decide_with(&plain, 11123, &table, &auth),
            Decision::Ignore(DropReason::Unauthenticated)
        ));
        assert!(
            matches!(
                decide_with(&plain, 11124, &table, &auth),
                Decision::Respond(_)
            ),
            "other views"
        );
        let key = auth.keys.get(2).unwrap();
        assert!(matches!(
            decide_with(&signed(&plain, key, 2), 11123, &table, &auth),
            Decision::Respond(Response {
                kind: ResponseKind::Time,
                authenticated: Authenticated::Key(2),
                ..
            })
        ));
        // A client with a key this server lacks still learns so.
        assert!(matches!(
            decide_with(&signed(&plain, key, 9), 11123, &table, &auth),
            Decision::Respond(Response {
                kind: ResponseKind::CryptoNak,
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn any_datagram_is_dropped_or_answered_smaller(
            bytes in proptest::collection::vec(any::<u8>(), 0..1200),
            port in 11120u16..11128,
        ) {
            if let Decision::Respond(mut r) = answer(&bytes, port) {
                prop_assert!(r.finish(RX, &Credentials::keys_only(&Auth::default()), &mut Counter(0)).len() <= bytes.len());
                prop_assert_eq!(bytes[0] & 7, 3, "only mode 3 is answered");
            }
        }

        #[test]
        fn mutated_requests_never_panic(flip in 0usize..48, bit in 0u8..8, extra in 0usize..64) {
            let mut p = client_packet(4).to_vec();
            p[flip] ^= 1 << bit;
            p.extend(std::iter::repeat_n(0xa5u8, extra));
            let _ = answer(&p, 11123);
        }
    }
}
