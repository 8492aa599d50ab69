//! Cookies: a session's two keys, sealed with AES-SIV under one of the server's master keys,
//! so the server keeps nothing per client. A cookie's length says its session's AEAD: 100
//! bytes for AES-SIV-CMAC-256's keys, 68 for AES-128-GCM-SIV's. The master key rotates; the last [`KEEP`] keys
//! still open cookies issued under them, so a client that has been away for up to
//! `(KEEP - 1)` rotation periods needs no new key establishment. The keys persist as a small
//! text file (the IO edge writes it), so a restart does not send every client back to KE.
//!
//! A cookie carries the two keys and nothing else: no view, no address, no time.

use core::fmt;

use super::{open, seal, Aead, Entropy, SessionKeys, KEY_LEN, TAG_LEN};

/// A cookie's parts.
pub mod field {
    use core::ops::{Range, RangeFrom};
    /// Which master key sealed it, big-endian.
    pub const KEY_ID: Range<usize> = 0..4;
    pub const NONCE: Range<usize> = 4..20;
    /// The SIV, then the client-to-server key, then the server-to-client key, encrypted: to
    /// the cookie's end, whose length says the session's AEAD.
    pub const SEALED: RangeFrom<usize> = 20..;
}

/// The master keys' AEAD (whatever the session's): a random 16-byte nonce is safe with it.
const MASTER_AEAD: Aead = Aead::AesSivCmac256;

/// A cookie's length for a session of `aead`: a multiple of 4, so it pads nothing.
pub const fn cookie_len(aead: Aead) -> usize {
    field::SEALED.start + TAG_LEN + 2 * aead.key_len()
}

/// The longest cookie this server makes (an AES-SIV-CMAC-256 session's).
pub const MAX_COOKIE_LEN: usize = cookie_len(Aead::AesSivCmac256);
/// Master keys kept: the current one and the two before it.
pub const KEEP: usize = 3;

/// One cookie, as sealed (no allocation: answers seal several on the hot path).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cookie {
    bytes: [u8; MAX_COOKIE_LEN],
    len: usize,
}

impl Cookie {
    pub const EMPTY: Cookie = Cookie {
        bytes: [0; MAX_COOKIE_LEN],
        len: 0,
    };

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cookie({} bytes)", self.len)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CookieError {
    /// Not a cookie of one of this server's lengths.
    Length,
    /// Sealed with a master key this server no longer (or never) had.
    UnknownKey,
    /// The SIV does not verify: altered, or not this server's.
    Forged,
}

impl fmt::Display for CookieError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CookieError::Length => "a cookie of the wrong length",
            CookieError::UnknownKey => "a cookie under an unknown master key",
            CookieError::Forged => "a cookie that does not verify",
        })
    }
}

/// One master key. Its secret is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    pub id: u32,
    /// When it became current, in seconds since 1970.
    pub created: u64,
    key: [u8; KEY_LEN],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({}, created {})", self.id, self.created)
    }
}

impl MasterKey {
    pub fn new(id: u32, created: u64, key: [u8; KEY_LEN]) -> MasterKey {
        MasterKey { id, created, key }
    }
}

/// The master keys, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterKeys {
    keys: Vec<MasterKey>,
}

impl MasterKeys {
    /// A fresh set with one random key, current from `now`.
    pub fn generate(now: u64, rng: &mut dyn Entropy) -> MasterKeys {
        let mut key = [0u8; KEY_LEN];
        rng.fill(&mut key);
        let mut id = [0u8; 4];
        rng.fill(&mut id);
        MasterKeys {
            keys: vec![MasterKey::new(u32::from_be_bytes(id), now, key)],
        }
    }

    /// Keys made elsewhere ([`super::shared_keys`]), the current one first.
    pub(crate) fn from_keys(keys: Vec<MasterKey>) -> MasterKeys {
        assert!(!keys.is_empty(), "a set of master keys has a current one");
        MasterKeys { keys }
    }

    pub fn current(&self) -> &MasterKey {
        &self.keys[0]
    }

    pub fn keys(&self) -> &[MasterKey] {
        &self.keys
    }

    /// Whether the current key has served `period` seconds (or was made in the future: the
    /// clock was stepped back, and a key dated ahead would otherwise never rotate).
    pub fn rotation_due(&self, now: u64, period: u64) -> bool {
        let created = self.current().created;
        now >= created.saturating_add(period) || created > now.saturating_add(period)
    }

    /// A new current key; the oldest beyond [`KEEP`] is forgotten.
    pub fn rotate(&mut self, now: u64, rng: &mut dyn Entropy) {
        let mut key = [0u8; KEY_LEN];
        rng.fill(&mut key);
        let id = self.current().id.wrapping_add(1);
        self.keys.insert(0, MasterKey::new(id, now, key));
        self.keys.truncate(KEEP);
    }

    /// A cookie for `keys` under the current master key.
    pub fn seal(&self, keys: &SessionKeys, rng: &mut dyn Entropy) -> Cookie {
        let master = self.current();
        let n = keys.aead().key_len();
        let len = cookie_len(keys.aead());
        let mut cookie = Cookie {
            bytes: [0; MAX_COOKIE_LEN],
            len,
        };
        let bytes = &mut cookie.bytes[..len];
        crate::wire::write(bytes, field::KEY_ID, master.id);
        rng.fill(&mut bytes[field::NONCE]);
        let (head, sealed) = bytes.split_at_mut(field::SEALED.start);
        let text = &mut sealed[TAG_LEN..];
        text[..n].copy_from_slice(keys.c2s());
        text[n..].copy_from_slice(keys.s2c());
        let sealed_ok = seal(
            MASTER_AEAD,
            &master.key,
            &head[field::KEY_ID],
            &head[field::NONCE],
            sealed,
        );
        debug_assert!(sealed_ok, "a master key and nonce of AES-SIV's lengths");
        cookie
    }

    /// The session keys in `cookie`, if this server sealed it under a key it still has.
    pub fn open(&self, cookie: &[u8]) -> Result<SessionKeys, CookieError> {
        let aead = Aead::ALL
            .into_iter()
            .find(|a| cookie_len(*a) == cookie.len())
            .ok_or(CookieError::Length)?;
        let id: u32 = crate::wire::read(cookie, field::KEY_ID);
        let master = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or(CookieError::UnknownKey)?;
        let mut sealed = [0u8; MAX_COOKIE_LEN];
        let sealed = &mut sealed[..cookie.len() - field::SEALED.start];
        sealed.copy_from_slice(&cookie[field::SEALED]);
        if !open(
            MASTER_AEAD,
            &master.key,
            &cookie[field::KEY_ID],
            &cookie[field::NONCE],
            sealed,
        ) {
            return Err(CookieError::Forged);
        }
        let (c2s, s2c) = sealed[TAG_LEN..].split_at(aead.key_len());
        Ok(SessionKeys::new(aead, c2s, s2c).expect("the cookie's length is the keys'"))
    }

    /// The state file's text: a comment, then `ID CREATED HEX` per key, newest first.
    pub fn to_text(&self) -> String {
        let mut out = String::from(
            "# ntp-offset's NTS master keys: secret (whoever has them can read every cookie).\n\
             # Rewritten at each rotation. Format: key id, created (seconds since 1970), key.\n",
        );
        for k in &self.keys {
            out.push_str(&format!("{} {} ", k.id, k.created));
            for b in k.key {
                out.push_str(&format!("{b:02x}"));
            }
            out.push('\n');
        }
        out
    }

    /// Reads [`to_text`](Self::to_text)'s format.
    pub fn parse(text: &str) -> Result<MasterKeys, StateError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |what| StateError {
                line: line_no,
                what,
            };
            let mut parts = line.split_ascii_whitespace();
            let (Some(id), Some(created), Some(hex), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad("not `ID CREATED KEY`"));
            };
            let id = id
                .parse()
                .map_err(|_| bad("the key id is not a 32-bit number"))?;
            let created = created
                .parse()
                .map_err(|_| bad("the creation time is not a number"))?;
            let key = decode_key(hex).ok_or(bad("the key is not 64 hex digits"))?;
            if keys.iter().any(|k: &MasterKey| k.id == id) {
                return Err(bad("a key id twice"));
            }
            if keys.len() == KEEP {
                return Err(bad("more keys than are kept (3)"));
            }
            keys.push(MasterKey::new(id, created, key));
        }
        if keys.is_empty() {
            return Err(StateError {
                line: 0,
                what: "no keys",
            });
        }
        keys.sort_by_key(|k| core::cmp::Reverse(k.created));
        Ok(MasterKeys { keys })
    }
}

fn decode_key(hex: &str) -> Option<[u8; KEY_LEN]> {
    if hex.len() != 2 * KEY_LEN || !hex.is_ascii() {
        return None;
    }
    let mut key = [0u8; KEY_LEN];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

/// Why the state file was not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateError {
    /// 0: the file as a whole.
    pub line: usize,
    pub what: &'static str,
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.what)
        } else {
            write!(f, "line {}: {}", self.line, self.what)
        }
    }
}

/// The layout's lengths are the AEADs'.
const _: () = assert!(field::NONCE.end - field::NONCE.start == super::NONCE_LEN);
const _: () = assert!(MAX_COOKIE_LEN == field::SEALED.start + TAG_LEN + 2 * KEY_LEN);
const _: () = assert!(cookie_len(Aead::Aes128GcmSiv) == 68);
