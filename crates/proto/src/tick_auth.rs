//! Tick authentication: HMAC-SHA256 over the 48-byte body, truncated to its first 16 bytes,
//! with numbered keys. The key file format (one key per line, `ID HEX`, `#` comments) is parsed
//! here; checking the file's permissions is the IO edge's job.

use core::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::key_file::KeyFileError;
use crate::tick::{TickPacket, AUTH_LEN, BODY_LEN, MAC_LEN};

type HmacSha256 = Hmac<Sha256>;

/// Shortest key accepted: 128 bits, the MAC's strength.
pub const MIN_KEY_LEN: usize = 16;
pub const MAX_KEY_LEN: usize = 64;

/// Equality compares secrets: it is for telling whether a reloaded key file changed.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    pub id: u16,
    secret: Vec<u8>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({}, {} bytes)", self.id, self.secret.len())
    }
}

impl Key {
    pub fn new(id: u16, secret: &[u8]) -> Result<Key, KeyFileError> {
        if id == 0 {
            return Err(KeyFileError::whole(
                "key id 0 means unauthenticated; use 1-65535",
            ));
        }
        if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&secret.len()) {
            return Err(KeyFileError::whole(format!(
                "key {id} is {} bytes; keys are {MIN_KEY_LEN}-{MAX_KEY_LEN} bytes",
                secret.len()
            )));
        }
        Ok(Key {
            id,
            secret: secret.to_vec(),
        })
    }

    fn mac(&self, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(body);
        mac
    }
}

/// The keys a transmitter or receiver knows.
/// Never empty once parsed from a key file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRing {
    keys: Vec<Key>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// The packet names a key this receiver does not have.
    UnknownKey(u16),
    BadMac,
    /// Key id 0 where authentication is required.
    Unauthenticated,
}

impl AuthError {
    pub fn name(&self) -> &'static str {
        match self {
            AuthError::UnknownKey(_) => "unknown-key",
            AuthError::BadMac => "bad-mac",
            AuthError::Unauthenticated => "unauthenticated",
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::UnknownKey(id) => write!(f, "tick signed with unknown key {id}"),
            AuthError::BadMac => write!(f, "tick MAC does not verify"),
            AuthError::Unauthenticated => write!(f, "unauthenticated tick"),
        }
    }
}

impl KeyRing {
    pub fn new(keys: Vec<Key>) -> KeyRing {
        KeyRing { keys }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The first key of the file (a transmitter's default signing key).
    pub fn first(&self) -> &Key {
        &self.keys[0]
    }

    pub fn get(&self, id: u16) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Parses a key file: `ID HEX` per line (ID 1-65535, 16-64 bytes of key in hex), blank
    /// lines and `#` comments ignored. Errors name the line.
    pub fn parse(text: &str) -> Result<KeyRing, KeyFileError> {
        let mut keys: Vec<Key> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let err = |m: String| KeyFileError::at(n + 1, m);
            let mut words = line.split_whitespace();
            let (Some(id), Some(hex), None) = (words.next(), words.next(), words.next()) else {
                return Err(err("expected `ID HEXKEY`".into()));
            };
            let id: u16 = id
                .parse()
                .map_err(|_| err(format!("key id {id:?} is not a number 1-65535")))?;
            let secret = decode_hex(hex).ok_or_else(|| err("key is not hex".into()))?;
            if keys.iter().any(|k| k.id == id) {
                return Err(err(format!("key {id} appears twice")));
            }
            keys.push(Key::new(id, &secret).map_err(|e| err(e.message))?);
        }
        if keys.is_empty() {
            return Err(KeyFileError::whole("no keys"));
        }
        Ok(KeyRing { keys })
    }
}

/// Hex to bytes; None unless every pair of characters is a hex byte.
pub(crate) fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Formats a key file line for `id` and `secret` (what `pulse keygen` prints).
pub fn format_key_line(id: u16, secret: &[u8]) -> String {
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    format!("{id} {hex}")
}

/// Writes `p` into `out` as it goes on the wire: the body, plus its MAC by `key` when
/// `p.key_id` is not 0 (`key` is then required). Returns the wire bytes.
pub fn encode<'a>(p: &TickPacket, key: Option<&Key>, out: &'a mut [u8; AUTH_LEN]) -> &'a [u8] {
    let mut body = [0u8; BODY_LEN];
    p.encode_body(&mut body);
    out[..BODY_LEN].copy_from_slice(&body);
    if p.key_id == 0 {
        return &out[..BODY_LEN];
    }
    sign(out, key.expect("a packet with a key id needs its key"));
    &out[..]
}

/// Appends the MAC of `packet[..48]` with `key` into `packet[48..64]`.
pub fn sign(packet: &mut [u8; AUTH_LEN], key: &Key) {
    let tag = key.mac(&packet[..BODY_LEN]).finalize().into_bytes();
    packet[BODY_LEN..].copy_from_slice(&tag[..MAC_LEN]);
}

/// Checks a decoded packet's MAC (constant time). `key_id` is the one the packet names.
pub fn verify(packet: &[u8], key_id: u16, keys: &KeyRing) -> Result<(), AuthError> {
    if key_id == 0 {
        return Err(AuthError::Unauthenticated);
    }
    let key = keys.get(key_id).ok_or(AuthError::UnknownKey(key_id))?;
    if packet.len() != AUTH_LEN {
        return Err(AuthError::BadMac);
    }
    key.mac(&packet[..BODY_LEN])
        .verify_truncated_left(&packet[BODY_LEN..])
        .map_err(|_| AuthError::BadMac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tick::{decode, vectors, Datagram};

    fn ring() -> KeyRing {
        let (keys, _) = vectors::load();
        KeyRing::new(
            keys.iter()
                .map(|(id, s)| Key::new(*id, s).unwrap())
                .collect(),
        )
    }

    #[test]
    fn shared_vectors_authenticate_as_documented() {
        let keys = ring();
        let (_, vectors) = vectors::load();
        let mut checked = 0;
        for v in &vectors {
            let Ok(Datagram::Tick(p)) = decode(&v.bytes) else {
                continue;
            };
            let result = verify(&v.bytes, p.key_id, &keys);
            if p.key_id == 0 {
                assert_eq!(result, Err(AuthError::Unauthenticated), "{}", v.name);
                continue;
            }
            match result {
                Ok(()) => assert_eq!(v.expect, "ok", "{}", v.name),
                Err(e) => assert_eq!(e.name(), v.expect, "{}", v.name),
            }
            // Signing the body again gives the vector's MAC: sign and verify agree.
            if result.is_ok() {
                let mut again: [u8; AUTH_LEN] = v.bytes[..].try_into().unwrap();
                sign(&mut again, keys.get(p.key_id).unwrap());
                assert_eq!(again[..], v.bytes[..], "{}", v.name);
                checked += 1;
            }
        }
        assert!(checked >= 2);
    }

    #[test]
    fn rfc4231_case_1_through_our_key_type() {
        // RFC 4231 test case 1: a 20-byte key, within our limits; the tag is its first half.
        let key = Key::new(1, &[0x0b; 20]).unwrap();
        let tag = key.mac(b"Hi There").finalize().into_bytes();
        assert_eq!(
            tag[..16],
            [
                0xb0, 0x34, 0x4c, 0x61, 0xd8, 0xdb, 0x38, 0x53, 0x5c, 0xa8, 0xaf, 0xce, 0xaf, 0x0b,
                0xf1, 0x2b
            ]
        );
    }

    #[test]
    fn any_flipped_bit_fails_verification() {
        let keys = ring();
        let (_, vectors) = vectors::load();
        let v = vectors
            .iter()
            .find(|v| v.expect == "ok" && v.bytes.len() == AUTH_LEN)
            .unwrap();
        for bit in 0..AUTH_LEN * 8 {
            let mut b = v.bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let key_id = crate::wire::read(&b, crate::tick::field::KEY_ID);
            assert!(verify(&b, key_id, &keys).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn key_file_errors_name_the_line() {
        assert!(KeyRing::parse("# only a comment\n").is_err());
        let ok = KeyRing::parse("# keys\n1 000102030405060708090a0b0c0d0e0f\n\n7 ffeeddccbbaa99887766554433221100ff # spare\n").unwrap();
        assert!(ok.get(1).is_some() && ok.get(7).is_some() && ok.get(2).is_none());
        for (text, want) in [
            ("1 0011", "line 1: key 1 is 2 bytes"),
            ("0 000102030405060708090a0b0c0d0e0f", "line 1: key id 0"),
            ("\nx 00", "line 2: key id \"x\""),
            (
                "1 zz0102030405060708090a0b0c0d0e0f",
                "line 1: key is not hex",
            ),
            ("1", "line 1: expected"),
            (
                "1 000102030405060708090a0b0c0d0e0f\n1 000102030405060708090a0b0c0d0e0f",
                "line 2: key 1 appears twice",
            ),
        ] {
            let e = KeyRing::parse(text).unwrap_err();
            assert!(e.to_string().starts_with(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn key_lines_round_trip() {
        let secret: Vec<u8> = (0..32).collect();
        let ring = KeyRing::parse(&format_key_line(42, &secret)).unwrap();
        assert_eq!(ring.get(42).unwrap().secret, secret);
    }
}
