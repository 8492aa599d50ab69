//! The NTP extension fields of NTS (RFC 8915 §5, on RFC 7822's format): what a request
//! carries, and how its answer is laid out.
//!
//! A request: the header, then a Unique Identifier, one cookie, any number of cookie
//! placeholders (one more cookie wanted each), and last the authenticator, whose ciphertext
//! authenticates everything before it with the client-to-server key. The answer: the
//! header, the same Unique Identifier, and an authenticator (server-to-client key) whose
//! encrypted part holds one fresh cookie per cookie and placeholder sent, so the answer is
//! exactly as long as the request when the client's cookies are this server's length.

use crate::wire;
use core::fmt;

use super::cookie::{cookie_len, Cookie, MAX_COOKIE_LEN};
use super::{seal, Aead, SessionKeys, TAG_LEN};
use crate::packet::HEADER_LEN;

/// An extension field's parts, from its start.
pub mod field {
    use core::ops::Range;
    pub const TYPE: Range<usize> = 0..2;
    /// The whole field's length, header included; a multiple of 4.
    pub const LENGTH: Range<usize> = 2..4;
    pub const VALUE: usize = 4;
}

/// The authenticator's body, from the start of the field's value.
pub mod authenticator {
    use core::ops::Range;
    pub const NONCE_LEN: Range<usize> = 0..2;
    pub const CIPHERTEXT_LEN: Range<usize> = 2..4;
    /// The nonce, padded to 4 bytes, then the ciphertext, padded to 4.
    pub const NONCE: usize = 4;
}

/// Field types (RFC 8915 §7.5).
pub mod kind {
    pub const UNIQUE_IDENTIFIER: u16 = 0x0104;
    pub const COOKIE: u16 = 0x0204;
    pub const COOKIE_PLACEHOLDER: u16 = 0x0304;
    pub const AUTHENTICATOR: u16 = 0x0404;
}

/// RFC 8915 §5.3: at least 32 bytes of randomness.
pub const MIN_UNIQUE_ID_LEN: usize = 32;
/// Larger identifiers are not echoed, so an answer's size stays bounded.
pub const MAX_UNIQUE_ID_LEN: usize = 64;

/// Why an NTS request is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EfError {
    /// A field's length is not a multiple of 4, below 4, or runs past the packet.
    Length,
    UniqueId,
    /// No cookie, or two.
    Cookie,
    NoAuthenticator,
    /// The authenticator's lengths do not fit its field.
    Authenticator,
    /// A field after the authenticator, which it would not cover.
    AfterAuthenticator,
}

impl fmt::Display for EfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EfError::Length => "an extension field's length is wrong",
            EfError::UniqueId => "no unique identifier of 32 to 64 bytes, or two",
            EfError::Cookie => "not exactly one cookie",
            EfError::NoAuthenticator => "no authenticator",
            EfError::Authenticator => "the authenticator's lengths do not fit",
            EfError::AfterAuthenticator => "a field after the authenticator",
        })
    }
}

/// An NTS request's fields, borrowed from the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NtsRequest<'a> {
    pub unique_id: &'a [u8],
    pub cookie: &'a [u8],
    /// Placeholders no longer than one of this server's cookies (a longer one asks for
    /// nothing this server's answer could not fit).
    pub placeholders: usize,
    /// Everything the authenticator covers: the packet up to it.
    pub aad: &'a [u8],
    pub nonce: &'a [u8],
    /// The SIV and the encrypted fields (which this server reads nothing from).
    pub ciphertext: &'a [u8],
}

/// A field's type and its whole length, header included.
fn header(b: &[u8]) -> (u16, usize) {
    let len: u16 = wire::read(b, field::LENGTH);
    (wire::read(b, field::TYPE), usize::from(len))
}

fn padded(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// The NTS fields of `packet`: None if it carries none (a plain request, or one with a
/// legacy MAC, which reads as no field of these types), an error if it carries them wrongly.
pub fn parse_request(packet: &[u8]) -> Result<Option<NtsRequest<'_>>, EfError> {
    let mut at = HEADER_LEN;
    let mut unique_id = None;
    let mut cookie = None;
    let mut placeholders = 0;
    let mut auth = None;
    let mut seen_nts = false;
    while at < packet.len() {
        let rest = &packet[at..];
        let parsed = (rest.len() >= field::VALUE)
            .then(|| header(rest))
            .filter(|&(_, len)| len >= field::VALUE && len.is_multiple_of(4) && len <= rest.len());
        let Some((ty, len)) = parsed else {
            // A legacy MAC (4 + 16 to 64 bytes) does not read as fields; only a packet
            // that has shown NTS fields is malformed here.
            return if seen_nts {
                Err(EfError::Length)
            } else {
                Ok(None)
            };
        };
        let value = &rest[field::VALUE..len];
        if auth.is_some() {
            return Err(EfError::AfterAuthenticator);
        }
        match ty {
            kind::UNIQUE_IDENTIFIER => {
                if unique_id.is_some()
                    || !(MIN_UNIQUE_ID_LEN..=MAX_UNIQUE_ID_LEN).contains(&value.len())
                {
                    return Err(EfError::UniqueId);
                }
                unique_id = Some(value);
            }
            kind::COOKIE => {
                if cookie.is_some() {
                    return Err(EfError::Cookie);
                }
                cookie = Some(value);
            }
            // A longer placeholder asks for a cookie this server's answer could not fit.
            kind::COOKIE_PLACEHOLDER if value.len() <= MAX_COOKIE_LEN => placeholders += 1,
            kind::AUTHENTICATOR => {
                let (nonce, ciphertext) = authenticator_parts(value)?;
                auth = Some((&packet[..at], nonce, ciphertext));
            }
            _ => {}
        }
        seen_nts |= matches!(
            ty,
            kind::UNIQUE_IDENTIFIER | kind::COOKIE | kind::COOKIE_PLACEHOLDER | kind::AUTHENTICATOR
        );
        at += len;
    }
    if !seen_nts {
        return Ok(None);
    }
    let unique_id = unique_id.ok_or(EfError::UniqueId)?;
    let cookie = cookie.ok_or(EfError::Cookie)?;
    let (aad, nonce, ciphertext) = auth.ok_or(EfError::NoAuthenticator)?;
    Ok(Some(NtsRequest {
        unique_id,
        cookie,
        placeholders,
        aad,
        nonce,
        ciphertext,
    }))
}

/// An authenticator's nonce and ciphertext (the SIV tag first), within its value.
fn authenticator_parts(value: &[u8]) -> Result<(&[u8], &[u8]), EfError> {
    let nonce_len = wire::get::<u16, 2>(value, authenticator::NONCE_LEN).map(usize::from);
    let ct_len = wire::get::<u16, 2>(value, authenticator::CIPHERTEXT_LEN).map(usize::from);
    let (Some(n), Some(c)) = (nonce_len, ct_len) else {
        return Err(EfError::Authenticator);
    };
    let ct_at = authenticator::NONCE + padded(n);
    if n == 0 || c < TAG_LEN || ct_at + padded(c) > value.len() {
        return Err(EfError::Authenticator);
    }
    Ok((
        &value[authenticator::NONCE..authenticator::NONCE + n],
        &value[ct_at..ct_at + c],
    ))
}

/// A Unique Identifier field of a `uid_len`-byte identifier.
pub fn unique_id_len(uid_len: usize) -> usize {
    field::VALUE + padded(uid_len)
}

/// One cookie's field for a session of `aead`, as the answer's encrypted part holds it.
pub const fn cookie_field_len(aead: Aead) -> usize {
    field::VALUE + cookie_len(aead)
}

/// The authenticator's length for a session of `aead` whose ciphertext is `ct_len` bytes.
fn authenticator_len(aead: Aead, ct_len: usize) -> usize {
    field::VALUE + authenticator::NONCE + padded(aead.nonce_len()) + padded(ct_len)
}

/// The answer's length with `cookies` fresh cookies for a session of `aead`.
pub fn response_len(aead: Aead, uid_len: usize, cookies: usize) -> usize {
    HEADER_LEN
        + unique_id_len(uid_len)
        + authenticator_len(aead, TAG_LEN + cookies * cookie_field_len(aead))
}

/// How many cookies an answer to `request` (of `request_len` bytes, in a session of
/// `aead`) carries: one per cookie and placeholder sent, but never so many that the answer
/// outgrows the request.
pub fn cookies_for(request: &NtsRequest<'_>, request_len: usize, aead: Aead) -> usize {
    let uid = request.unique_id.len();
    let mut n = 1 + request.placeholders;
    while n > 0 && response_len(aead, uid, n) > request_len {
        n -= 1;
    }
    n
}

fn put_field_header(out: &mut [u8], ty: u16, len: usize) {
    wire::write(out, field::TYPE, ty);
    let len = u16::try_from(len).expect("an answer's field fits in 16 bits");
    wire::write(out, field::LENGTH, len);
}

/// Writes the Unique Identifier field at the start of `out`; returns its length.
pub fn write_unique_id(out: &mut [u8], uid: &[u8]) -> usize {
    let len = unique_id_len(uid.len());
    put_field_header(out, kind::UNIQUE_IDENTIFIER, len);
    out[field::VALUE..field::VALUE + uid.len()].copy_from_slice(uid);
    out[field::VALUE + uid.len()..len].fill(0);
    len
}

/// Writes an authenticator at the start of `out` over `aad` with `keys` (`c2s` or `s2c`
/// of a session of `aead`) and `nonce`; its plaintext is `fields` (cookie fields, or none).
/// Returns its length.
fn write_authenticator(
    out: &mut [u8],
    aad: &[u8],
    aead: Aead,
    key: &[u8],
    nonce: &[u8],
    fields: impl FnOnce(&mut [u8]),
    text_len: usize,
) -> usize {
    let ct_len = TAG_LEN + text_len;
    let len = authenticator_len(aead, ct_len);
    put_field_header(out, kind::AUTHENTICATOR, len);
    let body = &mut out[field::VALUE..len];
    body.fill(0);
    wire::write(body, authenticator::NONCE_LEN, nonce.len() as u16);
    wire::write(body, authenticator::CIPHERTEXT_LEN, ct_len as u16);
    let ct_at = authenticator::NONCE + padded(nonce.len());
    body[authenticator::NONCE..authenticator::NONCE + nonce.len()].copy_from_slice(nonce);
    let ct = &mut body[ct_at..ct_at + ct_len];
    fields(&mut ct[aead.text(ct_len)]);
    let sealed = seal(aead, key, aad, nonce, ct);
    debug_assert!(sealed, "a key and nonce of the AEAD's lengths");
    len
}

/// Completes an answer in `out` (exactly [`response_len`] bytes), whose header is already
/// in place: the Unique Identifier `uid`, then an authenticator under `keys`' server-to-client
/// key with `nonce` (the AEAD's nonce length) over the header and identifier, holding
/// `cookies` encrypted.
pub fn write_response(
    out: &mut [u8],
    uid: &[u8],
    keys: &SessionKeys,
    nonce: &[u8],
    cookies: &[Cookie],
) {
    let aead = keys.aead();
    let aad_len = HEADER_LEN + write_unique_id(&mut out[HEADER_LEN..], uid);
    let (aad, auth) = out.split_at_mut(aad_len);
    let field_len = cookie_field_len(aead);
    let fill = |text: &mut [u8]| {
        for (c, f) in cookies.iter().zip(text.chunks_exact_mut(field_len)) {
            put_field_header(f, kind::COOKIE, field_len);
            f[field::VALUE..].copy_from_slice(c.as_bytes());
        }
    };
    let text_len = cookies.len() * field_len;
    write_authenticator(auth, aad, aead, keys.s2c(), nonce, fill, text_len);
}

/// The client's side: a request with `cookie` and `placeholders` placeholders, authenticated
/// with `keys`' client-to-server key and `nonce` (tests, the load generator, `query`).
pub fn client_request(
    header: &[u8; HEADER_LEN],
    uid: &[u8],
    cookie: &[u8],
    placeholders: usize,
    keys: &SessionKeys,
    nonce: &[u8],
) -> Vec<u8> {
    let mut out = header.to_vec();
    let mut push = |ty: u16, value: &[u8]| {
        let len = field::VALUE + padded(value.len());
        let at = out.len();
        out.resize(at + len, 0);
        put_field_header(&mut out[at..], ty, len);
        out[at + field::VALUE..at + field::VALUE + value.len()].copy_from_slice(value);
    };
    push(kind::UNIQUE_IDENTIFIER, uid);
    push(kind::COOKIE, cookie);
    for _ in 0..placeholders {
        push(kind::COOKIE_PLACEHOLDER, &vec![0u8; cookie.len()]);
    }
    let aad_len = out.len();
    let aead = keys.aead();
    out.resize(aad_len + authenticator_len(aead, TAG_LEN), 0);
    let (aad, auth) = out.split_at_mut(aad_len);
    write_authenticator(auth, aad, aead, keys.c2s(), nonce, |_| {}, 0);
    out
}

/// Why a client rejects an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseError {
    Length,
    /// No Unique Identifier, or not the request's.
    UniqueId,
    NoAuthenticator,
    /// The authenticator does not verify under the server-to-client key.
    Forged,
}

/// The client's side: checks an answer to a request with `uid` under `keys`, and returns the
/// fresh cookies it carries.
pub fn read_response(
    packet: &[u8],
    uid: &[u8],
    keys: &SessionKeys,
) -> Result<Vec<Vec<u8>>, ResponseError> {
    let aead = keys.aead();
    let mut at = HEADER_LEN;
    let mut uid_ok = false;
    while at < packet.len() {
        let rest = &packet[at..];
        if rest.len() < field::VALUE {
            return Err(ResponseError::Length);
        }
        let (ty, len) = header(rest);
        if len < field::VALUE || !len.is_multiple_of(4) || len > rest.len() {
            return Err(ResponseError::Length);
        }
        let value = &rest[field::VALUE..len];
        match ty {
            kind::UNIQUE_IDENTIFIER => uid_ok = value.get(..uid.len()) == Some(uid),
            kind::AUTHENTICATOR => {
                if !uid_ok {
                    return Err(ResponseError::UniqueId);
                }
                let n = wire::get::<u16, 2>(value, authenticator::NONCE_LEN).map(usize::from);
                let c = wire::get::<u16, 2>(value, authenticator::CIPHERTEXT_LEN).map(usize::from);
                let (Some(n), Some(c)) = (n, c) else {
                    return Err(ResponseError::Length);
                };
                let ct_at = authenticator::NONCE + padded(n);
                let (Some(nonce), Some(ct)) = (
                    value.get(authenticator::NONCE..authenticator::NONCE + n),
                    value.get(ct_at..ct_at + c),
                ) else {
                    return Err(ResponseError::Length);
                };
                let mut buf = ct.to_vec();
                if !super::open(aead, keys.s2c(), &packet[..at], nonce, &mut buf) {
                    return Err(ResponseError::Forged);
                }
                let mut cookies = Vec::new();
                let mut p = &buf[aead.text(buf.len())];
                while p.len() >= field::VALUE {
                    let (ty, len) = header(p);
                    if len < field::VALUE || len > p.len() {
                        return Err(ResponseError::Length);
                    }
                    if ty == kind::COOKIE {
                        cookies.push(p[field::VALUE..len].to_vec());
                    }
                    p = &p[len..];
                }
                return Ok(cookies);
            }
            _ => {}
        }
        at += len;
    }
    Err(if uid_ok {
        ResponseError::NoAuthenticator
    } else {
        ResponseError::UniqueId
    })
}
