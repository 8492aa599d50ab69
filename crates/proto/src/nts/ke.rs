//! NTS Key Establishment records (RFC 8915 §4), the server's side: read a client's request
//! from the bytes TLS has delivered so far, decide what to answer, and write the answer's
//! records. The TLS session, the key export and the cookies are the caller's.
//!
//! A record is a 16-bit word (critical bit and 15-bit type), a 16-bit body length, and the
//! body. A message ends with a critical End of Message record.

use crate::wire;
use core::fmt;

use super::Aead;

/// A record's parts, from its start.
pub mod field {
    use core::ops::Range;
    /// The critical bit (the top bit) and the record type (the other 15).
    pub const TYPE: Range<usize> = 0..2;
    /// The body's length in bytes.
    pub const BODY_LEN: Range<usize> = 2..4;
    pub const BODY: usize = 4;
    pub const CRITICAL_BIT: u16 = 0x8000;
}

/// Record types (RFC 8915 §7.6).
pub mod record {
    pub const END_OF_MESSAGE: u16 = 0;
    pub const NEXT_PROTOCOL: u16 = 1;
    pub const ERROR: u16 = 2;
    pub const WARNING: u16 = 3;
    pub const AEAD_ALGORITHM: u16 = 4;
    pub const NEW_COOKIE: u16 = 5;
    pub const SERVER: u16 = 6;
    pub const PORT: u16 = 7;
    /// chrony's Compliant AES-128-GCM-SIV Exporter Context (non-critical, empty): see
    /// [`context_aead`].
    pub const COMPLIANT_128GCM_EXPORT: u16 = 1024;
}

/// The only next protocol: NTPv4.
pub const PROTOCOL_NTPV4: u16 = 0;

/// The ALPN name a KE server and its clients must agree on.
pub const ALPN: &[u8] = b"ntske/1";

/// The label of the TLS exporter that gives the session's NTP keys (RFC 8915 §5.1).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-network-time-security";

/// No client request comes near this: a handful of small records. A client that sends more
/// without ending its message is refused.
pub const MAX_REQUEST_LEN: usize = 1024;

/// Cookies handed out per KE session, as chrony and ntpd-rs do.
pub const COOKIES_PER_SESSION: usize = 8;

/// Error codes (RFC 8915 §4.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    UnrecognizedCriticalRecord = 0,
    BadRequest = 1,
    InternalServerError = 2,
}

/// Why a client's request is refused; each maps to the error record the client gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeError {
    UnrecognizedCritical(u16),
    /// Malformed or missing records; the reason, for the log.
    BadRequest(&'static str),
}

impl KeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            KeError::UnrecognizedCritical(_) => ErrorCode::UnrecognizedCriticalRecord,
            KeError::BadRequest(_) => ErrorCode::BadRequest,
        }
    }
}

impl fmt::Display for KeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeError::UnrecognizedCritical(t) => write!(f, "unrecognized critical record {t}"),
            KeError::BadRequest(why) => write!(f, "bad request: {why}"),
        }
    }
}

/// One record, borrowed from the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub critical: bool,
    pub kind: u16,
    pub body: &'a [u8],
}

/// The record at the start of `buf` and its length, or None if it has not all arrived.
pub fn next_record(buf: &[u8]) -> Option<(Record<'_>, usize)> {
    let head = buf.get(..field::BODY)?;
    let word: u16 = wire::read(head, field::TYPE);
    let len = usize::from(wire::read::<u16, 2>(head, field::BODY_LEN));
    let body = buf.get(field::BODY..field::BODY + len)?;
    Some((
        Record {
            critical: word & field::CRITICAL_BIT != 0,
            kind: word & !field::CRITICAL_BIT,
            body,
        },
        field::BODY + len,
    ))
}

/// What the client asked for, once its message has ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRequest {
    pub protocols: Vec<u16>,
    pub aeads: Vec<u16>,
    /// It sent the Compliant AES-128-GCM-SIV Exporter Context record.
    pub compliant_128gcm: bool,
}

/// Reading a request as it arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestRead {
    /// The message has not ended yet: read more.
    Incomplete,
    Complete(ClientRequest),
    Refused(KeError),
}

fn u16_list(body: &[u8]) -> Option<Vec<u16>> {
    body.len()
        .is_multiple_of(2)
        .then(|| body.chunks_exact(2).map(|c| wire::read(c, 0..2)).collect())
}

/// Reads the client's request from everything received so far.
pub fn read_request(buf: &[u8]) -> RequestRead {
    let mut protocols: Option<Vec<u16>> = None;
    let mut aeads: Option<Vec<u16>> = None;
    let mut compliant_128gcm = false;
    let mut at = 0;
    let refuse = |why| RequestRead::Refused(KeError::BadRequest(why));
    loop {
        let Some((rec, used)) = next_record(&buf[at..]) else {
            return if buf.len() >= MAX_REQUEST_LEN {
                refuse("no end of message in the first 1024 bytes")
            } else {
                RequestRead::Incomplete
            };
        };
        at += used;
        match rec.kind {
            record::END_OF_MESSAGE => {
                if !rec.body.is_empty() {
                    return refuse("end of message with a body");
                }
                if at != buf.len() {
                    return refuse("data after end of message");
                }
                let Some(protocols) = protocols else {
                    return refuse("no next protocol record");
                };
                return RequestRead::Complete(ClientRequest {
                    protocols,
                    aeads: aeads.unwrap_or_default(),
                    compliant_128gcm,
                });
            }
            record::NEXT_PROTOCOL => {
                if !rec.critical {
                    return refuse("next protocol record not critical");
                }
                if protocols.is_some() {
                    return refuse("two next protocol records");
                }
                let Some(list) = u16_list(rec.body) else {
                    return refuse("next protocol record of odd length");
                };
                protocols = Some(list);
            }
            record::AEAD_ALGORITHM => {
                if aeads.is_some() {
                    return refuse("two AEAD algorithm records");
                }
                let Some(list) = u16_list(rec.body) else {
                    return refuse("AEAD algorithm record of odd length");
                };
                aeads = Some(list);
            }
            record::COMPLIANT_128GCM_EXPORT => {
                if !rec.body.is_empty() {
                    return refuse("compliant AES-128-GCM-SIV exporter record with a body");
                }
                compliant_128gcm = true;
            }
            // A client has no business sending these to a server.
            record::ERROR | record::WARNING | record::NEW_COOKIE => {
                return refuse("error, warning or cookie record from a client")
            }
            // A client may say which NTP server or port it would prefer; this server names
            // its own (RFC 8915 §4.1.7-8).
            record::SERVER | record::PORT => {}
            other if rec.critical => {
                return RequestRead::Refused(KeError::UnrecognizedCritical(other))
            }
            _ => {}
        }
    }
}

/// What the server answers to a complete request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Negotiated {
    /// NTPv4 with this algorithm: export the keys and hand out cookies.
    Ntpv4(Session),
    /// The client offered no protocol this server speaks: an empty next protocol record.
    NoCommonProtocol,
}

/// A negotiated NTPv4 session's AEAD, and whether its keys come from RFC 8915's exporter
/// context for AES-128-GCM-SIV (see [`context_aead`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    pub aead: Aead,
    pub compliant_128gcm: bool,
}

impl Session {
    /// The TLS exporter's context for one direction's key.
    pub fn exporter_context(self, server_to_client: bool) -> [u8; 5] {
        exporter_context(
            context_aead(self.aead, self.compliant_128gcm),
            server_to_client,
        )
    }
}

/// The AEAD id the key exporter's context carries. RFC 8915 §5.1 says the negotiated one,
/// but chrony, the first to offer AES-128-GCM-SIV (4.4), put 15 (AES-SIV-CMAC-256) there,
/// and every chrony client since does so unless it sent chrony's Compliant AES-128-GCM-SIV
/// Exporter Context record (type 1024) and the server sent it back. A server that followed
/// the RFC alone would answer chrony 4.4 and later with keys neither could use; so, as
/// chrony's own server does: 30 only when both say so, 15 otherwise.
pub fn context_aead(aead: Aead, compliant_128gcm: bool) -> Aead {
    match aead {
        Aead::Aes128GcmSiv if !compliant_128gcm => Aead::AesSivCmac256,
        other => other,
    }
}

impl ClientRequest {
    /// The client's first choice this server supports (RFC 8915: the client lists in order of
    /// preference).
    pub fn negotiate(&self) -> Result<Negotiated, KeError> {
        if !self.protocols.contains(&PROTOCOL_NTPV4) {
            return Ok(Negotiated::NoCommonProtocol);
        }
        if self.aeads.is_empty() {
            return Err(KeError::BadRequest(
                "NTPv4 without an AEAD algorithm record",
            ));
        }
        self.aeads
            .iter()
            .find_map(|&id| Aead::from_id(id))
            .map(|aead| {
                Negotiated::Ntpv4(Session {
                    aead,
                    compliant_128gcm: aead == Aead::Aes128GcmSiv && self.compliant_128gcm,
                })
            })
            .ok_or(KeError::BadRequest(
                "no AEAD algorithm this server supports",
            ))
    }
}

/// Writes records into a message.
#[derive(Default)]
pub struct Writer {
    out: Vec<u8>,
}

impl Writer {
    pub fn record(&mut self, critical: bool, kind: u16, body: &[u8]) -> &mut Self {
        let len = u16::try_from(body.len()).expect("a record body fits in 16 bits");
        let word = kind | if critical { field::CRITICAL_BIT } else { 0 };
        self.out.extend_from_slice(&word.to_be_bytes());
        self.out.extend_from_slice(&len.to_be_bytes());
        self.out.extend_from_slice(body);
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.record(true, record::END_OF_MESSAGE, &[]);
        self.out
    }
}

/// The answer to a negotiated NTPv4 session: protocol, algorithm (and the compliant exporter
/// record when the session uses it), cookies, and the NTP server and port when they differ
/// from the KE server's address and 123.
pub fn ntp_response(
    session: Session,
    cookies: &[Vec<u8>],
    server: Option<&str>,
    port: Option<u16>,
) -> Vec<u8> {
    let mut w = Writer::default();
    w.record(true, record::NEXT_PROTOCOL, &PROTOCOL_NTPV4.to_be_bytes());
    w.record(
        true,
        record::AEAD_ALGORITHM,
        &session.aead.id().to_be_bytes(),
    );
    if session.compliant_128gcm {
        w.record(false, record::COMPLIANT_128GCM_EXPORT, &[]);
    }
    for c in cookies {
        w.record(false, record::NEW_COOKIE, c);
    }
    if let Some(s) = server {
        w.record(true, record::SERVER, s.as_bytes());
    }
    if let Some(p) = port {
        w.record(true, record::PORT, &p.to_be_bytes());
    }
    w.finish()
}

/// The answer when the client offers no protocol in common: an empty next protocol record.
pub fn no_protocol_response() -> Vec<u8> {
    let mut w = Writer::default();
    w.record(true, record::NEXT_PROTOCOL, &[]);
    w.finish()
}

pub fn error_response(code: ErrorCode) -> Vec<u8> {
    let mut w = Writer::default();
    w.record(true, record::ERROR, &(code as u16).to_be_bytes());
    w.finish()
}

/// The TLS exporter's context for one direction's key (RFC 8915 §5.1): the protocol id, the
/// AEAD id, and 0 for client-to-server or 1 for server-to-client.
pub fn exporter_context(aead: Aead, server_to_client: bool) -> [u8; 5] {
    let p = PROTOCOL_NTPV4.to_be_bytes();
    let a = aead.id().to_be_bytes();
    [p[0], p[1], a[0], a[1], u8::from(server_to_client)]
}

/// A client's request: NTPv4, with these algorithms in order of preference (tests, the load
/// generator, `query`).
pub fn client_request(aeads: &[u16]) -> Vec<u8> {
    client_request_with(aeads, false)
}

/// The same, and with `compliant_128gcm` chrony's Compliant AES-128-GCM-SIV Exporter Context
/// record, as chrony clients that know of the exporter bug send it.
pub fn client_request_with(aeads: &[u16], compliant_128gcm: bool) -> Vec<u8> {
    let mut w = Writer::default();
    w.record(true, record::NEXT_PROTOCOL, &PROTOCOL_NTPV4.to_be_bytes());
    let list: Vec<u8> = aeads.iter().flat_map(|a| a.to_be_bytes()).collect();
    w.record(true, record::AEAD_ALGORITHM, &list);
    if compliant_128gcm {
        w.record(false, record::COMPLIANT_128GCM_EXPORT, &[]);
    }
    w.finish()
}

/// A server's answer, as a client reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerResponse {
    pub protocols: Vec<u16>,
    pub aead: Option<u16>,
    pub cookies: Vec<Vec<u8>>,
    pub server: Option<String>,
    pub port: Option<u16>,
    pub error: Option<u16>,
    /// The server confirmed RFC 8915's exporter context for AES-128-GCM-SIV.
    pub compliant_128gcm: bool,
}

/// Reads a server's answer; None until its End of Message has arrived, or if it is malformed.
pub fn read_server_response(buf: &[u8]) -> Option<ServerResponse> {
    let mut r = ServerResponse::default();
    let mut at = 0;
    loop {
        let (rec, used) = next_record(&buf[at..])?;
        at += used;
        match rec.kind {
            record::END_OF_MESSAGE => return Some(r),
            record::NEXT_PROTOCOL => r.protocols = u16_list(rec.body)?,
            record::AEAD_ALGORITHM => r.aead = u16_list(rec.body)?.first().copied(),
            record::NEW_COOKIE => r.cookies.push(rec.body.to_vec()),
            record::SERVER => r.server = Some(String::from_utf8(rec.body.to_vec()).ok()?),
            record::PORT => r.port = u16_list(rec.body)?.first().copied(),
            record::ERROR => r.error = u16_list(rec.body)?.first().copied(),
            record::COMPLIANT_128GCM_EXPORT => r.compliant_128gcm = true,
            _ => {}
        }
    }
}
