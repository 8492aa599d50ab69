//! Symmetric-key authentication of NTP packets: the MAC after the 48-byte header (RFC 5905
//! §7.3), with chrony's key types: AES-CMAC (RFC 8573) and, for older clients, keyed digests
//! (the digest of key || packet). chrony sends SHA256-512 digests whole (a MAC of up to 68
//! bytes); ntpsec truncates them to 20 bytes, as RFC 7822 keeps a MAC at most 24 bytes. Both
//! are accepted, and the answer's MAC is as long as the request's. And chrony's key file
//! format, parsed from text (the IO edge reads the file and checks its permissions).

use crate::wire;
use core::fmt;

use aes::{Aes128, Aes256};
use cmac::Cmac;
use digest::{Digest, KeyInit, Mac};
use subtle::ConstantTimeEq;

use crate::packet::HEADER_LEN;

/// The MAC's parts, from its start (right after the header).
pub mod field {
    use core::ops::Range;
    /// The key identifier, big-endian; 0 is the crypto-NAK.
    pub const KEY_ID: Range<usize> = 0..4;
    /// The digest follows the key identifier.
    pub const DIGEST: usize = 4;
}

/// The longest digest (SHA512's).
pub const MAX_DIGEST_LEN: usize = 64;
/// What ntpsec truncates longer digests to (RFC 7822's 24-byte MAC, key id included).
pub const TRUNCATED_DIGEST_LEN: usize = 20;
/// The longest MAC, key id included.
pub const MAX_MAC_LEN: usize = 4 + MAX_DIGEST_LEN;
/// A crypto-NAK: a MAC that is only a zero key id.
pub const CRYPTO_NAK_LEN: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    Md5,
    Sha1,
    Sha256,
    Sha384,
    Sha512,
    Aes128,
    Aes256,
}

impl KeyType {
    pub const ALL: [KeyType; 7] = [
        KeyType::Md5,
        KeyType::Sha1,
        KeyType::Sha256,
        KeyType::Sha384,
        KeyType::Sha512,
        KeyType::Aes128,
        KeyType::Aes256,
    ];

    /// chrony's name for it, as in its key file.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Md5 => "MD5",
            KeyType::Sha1 => "SHA1",
            KeyType::Sha256 => "SHA256",
            KeyType::Sha384 => "SHA384",
            KeyType::Sha512 => "SHA512",
            KeyType::Aes128 => "AES128",
            KeyType::Aes256 => "AES256",
        }
    }

    pub fn parse(name: &str) -> Option<KeyType> {
        KeyType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// The whole digest's length.
    pub fn digest_len(self) -> usize {
        match self {
            KeyType::Md5 | KeyType::Aes128 | KeyType::Aes256 => 16,
            KeyType::Sha1 => 20,
            KeyType::Sha256 => 32,
            KeyType::Sha384 => 48,
            KeyType::Sha512 => 64,
        }
    }

    /// Whether a MAC's digest of `len` bytes can be this type's: whole, or truncated to 20.
    pub fn accepts_len(self, len: usize) -> bool {
        len == self.digest_len()
            || (self.digest_len() > TRUNCATED_DIGEST_LEN && len == TRUNCATED_DIGEST_LEN)
    }

    /// The length a cipher's key must have (the digests take any length).
    pub fn secret_len(self) -> Option<usize> {
        match self {
            KeyType::Aes128 => Some(16),
            KeyType::Aes256 => Some(32),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// Key id 0 means crypto-NAK on the wire.
    ZeroId,
    EmptySecret,
    SecretLength {
        kind: KeyType,
        want: usize,
        got: usize,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::ZeroId => write!(
                f,
                "key id 0 is reserved (it marks a crypto-NAK): use 1 to 4294967295"
            ),
            KeyError::EmptySecret => write!(f, "the key is empty"),
            KeyError::SecretLength { kind, want, got } => write!(
                f,
                "an {} key has {want} bytes ({} hex digits), this one {got}",
                kind.name(),
                want * 2
            ),
        }
    }
}

/// One key. Its secret is never printed.
#[derive(Clone)]
pub struct Key {
    id: u32,
    kind: KeyType,
    secret: Vec<u8>,
    /// A cipher key's CMAC state with the key schedule done, cloned per packet: expanding the
    /// AES key for every MAC cost a third of an authenticated answer.
    cmac: Prepared,
}

#[derive(Clone)]
enum Prepared {
    None,
    Aes128(Cmac<Aes128>),
    Aes256(Cmac<Aes256>),
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        (self.id, self.kind, &self.secret) == (other.id, other.kind, &other.secret)
    }
}

impl Eq for Key {}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Key({} {}, {} bytes)",
            self.id,
            self.kind.name(),
            self.secret.len()
        )
    }
}

impl Key {
    pub fn new(id: u32, kind: KeyType, secret: Vec<u8>) -> Result<Key, KeyError> {
        if id == 0 {
            return Err(KeyError::ZeroId);
        }
        if secret.is_empty() {
            return Err(KeyError::EmptySecret);
        }
        if let Some(want) = kind.secret_len() {
            if secret.len() != want {
                return Err(KeyError::SecretLength {
                    kind,
                    want,
                    got: secret.len(),
                });
            }
        }
        let cmac = match kind {
            KeyType::Aes128 => Prepared::Aes128(
                <Cmac<Aes128> as KeyInit>::new_from_slice(&secret).expect("length checked above"),
            ),
            KeyType::Aes256 => Prepared::Aes256(
                <Cmac<Aes256> as KeyInit>::new_from_slice(&secret).expect("length checked above"),
            ),
            _ => Prepared::None,
        };
        Ok(Key {
            id,
            kind,
            secret,
            cmac,
        })
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn kind(&self) -> KeyType {
        self.kind
    }

    /// The whole digest of `data` (the packet before the MAC) into `out`; returns its length.
    pub fn digest(&self, data: &[u8], out: &mut [u8; MAX_DIGEST_LEN]) -> usize {
        fn keyed<D: Digest>(secret: &[u8], data: &[u8], out: &mut [u8]) {
            let full = D::new().chain_update(secret).chain_update(data).finalize();
            out.copy_from_slice(&full[..out.len()]);
        }
        fn cmac<C: Mac + Clone>(prepared: &C, data: &[u8], out: &mut [u8]) {
            let mut mac = prepared.clone();
            mac.update(data);
            out.copy_from_slice(&mac.finalize().into_bytes()[..out.len()]);
        }
        let len = self.kind.digest_len();
        let o = &mut out[..len];
        match self.kind {
            KeyType::Md5 => keyed::<md5::Md5>(&self.secret, data, o),
            KeyType::Sha1 => keyed::<sha1::Sha1>(&self.secret, data, o),
            KeyType::Sha256 => keyed::<sha2::Sha256>(&self.secret, data, o),
            KeyType::Sha384 => keyed::<sha2::Sha384>(&self.secret, data, o),
            KeyType::Sha512 => keyed::<sha2::Sha512>(&self.secret, data, o),
            KeyType::Aes128 | KeyType::Aes256 => match &self.cmac {
                Prepared::Aes128(c) => cmac(c, data, o),
                Prepared::Aes256(c) => cmac(c, data, o),
                Prepared::None => unreachable!("Key::new prepares every cipher key"),
            },
        }
        len
    }

    /// Whether `digest` is this key's digest of `data`, whole or truncated to 20 bytes,
    /// compared in constant time.
    pub fn verify(&self, data: &[u8], digest: &[u8]) -> bool {
        if !self.kind.accepts_len(digest.len()) {
            return false;
        }
        let mut want = [0u8; MAX_DIGEST_LEN];
        self.digest(data, &mut want);
        bool::from(want[..digest.len()].ct_eq(digest))
    }
}

/// The server's keys, by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SymmetricKeys {
    keys: Vec<Key>, // sorted by id, ids unique
}

impl SymmetricKeys {
    /// Fails on a repeated id.
    pub fn new(mut keys: Vec<Key>) -> Result<SymmetricKeys, u32> {
        keys.sort_by_key(|k| k.id);
        if let Some(w) = keys.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(w[0].id);
        }
        Ok(SymmetricKeys { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn get(&self, id: u32) -> Option<&Key> {
        self.keys
            .binary_search_by_key(&id, |k| k.id)
            .ok()
            .map(|i| &self.keys[i])
    }

    pub fn iter(&self) -> impl Iterator<Item = &Key> {
        self.keys.iter()
    }
}

/// What a request authenticated with a key the server does not have gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum UnknownKey {
    /// A crypto-NAK (RFC 5905 §7.4: a KoD `CRYP` with a zero key id), as chrony answers: the
    /// client learns its key is not known here instead of timing out.
    #[default]
    Nak,
    /// Nothing (counted).
    Drop,
}

impl UnknownKey {
    pub fn name(self) -> &'static str {
        match self {
            UnknownKey::Nak => "nak",
            UnknownKey::Drop => "drop",
        }
    }
}

/// The server's symmetric-key authentication: its keys and what an unknown key gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Auth {
    pub keys: SymmetricKeys,
    pub unknown_key: UnknownKey,
}

/// A request's MAC, if it has one: 4 + 16, 20, 32, 48 or 64 bytes after the header. 20 and 24
/// are always a MAC (RFC 7822: an extension field that ends a packet is at least 28 bytes);
/// the longer ones are, unless the bytes read as one extension field of exactly that length
/// (a MAC's first word is its key id, whose low half would be that length).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestMac<'a> {
    pub key_id: u32,
    /// What the MAC covers: the header.
    pub data: &'a [u8],
    pub digest: &'a [u8],
}

pub fn find_mac(packet: &[u8]) -> Option<RequestMac<'_>> {
    let rest = packet.get(HEADER_LEN..)?;
    if ![4 + 16, 4 + 20, 4 + 32, 4 + 48, 4 + 64].contains(&rest.len()) {
        return None;
    }
    // Longer than the shortest MAC and its bytes 2..4 give its whole length: an extension field.
    let ext_len: u16 = wire::read(rest, 2..4);
    if rest.len() > 24 && usize::from(ext_len) == rest.len() {
        return None;
    }
    Some(RequestMac {
        key_id: wire::read(rest, field::KEY_ID),
        data: &packet[..HEADER_LEN],
        digest: &rest[field::DIGEST..],
    })
}

pub use crate::key_file::KeyFileError;

/// chrony's key file: `ID [TYPE] KEY` lines, `#` comments. TYPE is one of [`KeyType`]'s
/// names (MD5 when left out, as chrony); KEY is `HEX:` and hex digits, or ASCII without
/// spaces (optionally after `ASCII:`). MD5 keys are refused unless `allow_md5`.
pub fn parse_key_file(text: &str, allow_md5: bool) -> Result<SymmetricKeys, KeyFileError> {
    let mut keys = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let err = |message: String| KeyFileError::at(line, message);
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let words: Vec<&str> = content.split_whitespace().collect();
        let (id, kind, value) = match words.as_slice() {
            [id, value] => (*id, KeyType::Md5, *value),
            [id, kind, value] => (
                *id,
                KeyType::parse(kind).ok_or_else(|| {
                    err(format!(
                        "unknown key type `{kind}` (one of MD5, SHA1, SHA256, SHA384, SHA512, AES128, AES256)"
                    ))
                })?,
                *value,
            ),
            _ => return Err(err("expected `ID TYPE KEY` (or `ID KEY` for MD5)".into())),
        };
        let id: u32 = id
            .parse()
            .map_err(|_| err(format!("`{id}` is not a key id (1 to 4294967295)")))?;
        let secret = if let Some(hex) = value.strip_prefix("HEX:") {
            decode_hex(hex).ok_or_else(|| {
                err("HEX: must be followed by an even number of hex digits".into())
            })?
        } else {
            value
                .strip_prefix("ASCII:")
                .unwrap_or(value)
                .as_bytes()
                .to_vec()
        };
        if kind == KeyType::Md5 && !allow_md5 {
            return Err(err(format!(
                "key {id} is MD5, which is broken; set `allow_md5 = true` in [keys] to accept it anyway"
            )));
        }
        keys.push(Key::new(id, kind, secret).map_err(|e| err(format!("key {id}: {e}")))?);
    }
    SymmetricKeys::new(keys).map_err(|id| KeyFileError::whole(format!("key id {id} appears twice")))
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
#[path = "symmetric_tests.rs"]
mod tests;
