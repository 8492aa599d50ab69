//! Network Time Security (RFC 8915), the server's side, sans IO.
//!
//! - [`ke`]: the key establishment records a client and server exchange over TLS.
//! - [`cookie`]: cookies, the session keys sealed under the server's rotating master keys.
//! - [`shared_keys`]: master keys a cluster's servers derive alike from one secret.
//! - [`extension`]: the NTP extension fields of an NTS request and of its answer.
//!
//! The data flow: a client's KE session ends with keys exported from TLS and eight cookies;
//! each NTP request then carries one cookie (which gives the server back the session's keys,
//! so the server keeps no per-client state) and is authenticated with the client-to-server
//! key; the answer is authenticated with the server-to-client key and carries fresh cookies,
//! encrypted. A cookie carries only the two keys: which view answers is still chosen by the
//! request's addresses.

pub mod cookie;
pub mod extension;
pub mod ke;
pub mod shared_keys;

use aes_gcm_siv::aead::AeadInOut;
use aes_gcm_siv::Aes128GcmSiv;
use aes_siv::siv::Aes128Siv;
use aes_siv::KeyInit;
use core::ops::Range;

/// AEAD algorithms (IANA "AEAD Algorithms" registry). A session's keys are for one of them,
/// negotiated in key establishment; the master keys that seal cookies are always AES-SIV.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Aead {
    /// AEAD_AES_SIV_CMAC_256 (RFC 5297): the one RFC 8915 requires.
    AesSivCmac256,
    /// AEAD_AES_128_GCM_SIV (RFC 8452): chrony's first choice since 4.4. Half the keys, so
    /// cookies of 68 bytes instead of 100, and requests 64 bytes shorter with 8 cookies.
    Aes128GcmSiv,
}

impl Aead {
    /// Every algorithm this server has.
    pub const ALL: [Aead; 2] = [Aead::Aes128GcmSiv, Aead::AesSivCmac256];

    pub fn id(self) -> u16 {
        match self {
            Aead::AesSivCmac256 => 15,
            Aead::Aes128GcmSiv => 30,
        }
    }

    pub fn from_id(id: u16) -> Option<Aead> {
        Aead::ALL.into_iter().find(|a| a.id() == id)
    }

    pub const fn key_len(self) -> usize {
        match self {
            Aead::AesSivCmac256 => 32,
            Aead::Aes128GcmSiv => 16,
        }
    }

    /// The nonces this server makes: RFC 5297 asks at least 128 bits of a random nonce for
    /// AES-SIV; AES-GCM-SIV takes exactly 96.
    pub fn nonce_len(self) -> usize {
        match self {
            Aead::AesSivCmac256 => 16,
            Aead::Aes128GcmSiv => 12,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Aead::AesSivCmac256 => "AEAD_AES_SIV_CMAC_256",
            Aead::Aes128GcmSiv => "AEAD_AES_128_GCM_SIV",
        }
    }

    /// Where the plaintext sits in a ciphertext of `ct_len` bytes: after the SIV for AES-SIV
    /// (RFC 5297's V || C), before the tag for AES-GCM-SIV (RFC 8452's C || T).
    pub fn text(self, ct_len: usize) -> Range<usize> {
        match self {
            Aead::AesSivCmac256 => TAG_LEN..ct_len,
            Aead::Aes128GcmSiv => 0..ct_len - TAG_LEN,
        }
    }
}

/// The longest session key (AES-SIV-CMAC-256's), and the master keys' length.
pub const KEY_LEN: usize = 32;
/// The tag (AES-SIV's SIV, AES-GCM-SIV's tag): 16 bytes for both.
pub const TAG_LEN: usize = 16;
/// The longest nonce this server makes.
pub const NONCE_LEN: usize = 16;

/// One session's keys, as exported from its TLS session, for its AEAD.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    aead: Aead,
    /// The first `aead.key_len()` bytes are the key; the rest stay zero.
    c2s: [u8; KEY_LEN],
    s2c: [u8; KEY_LEN],
}

impl core::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SessionKeys({}, ..)", self.aead.name())
    }
}

impl SessionKeys {
    /// Keys for `aead`; None unless both are its key's length.
    pub fn new(aead: Aead, c2s: &[u8], s2c: &[u8]) -> Option<SessionKeys> {
        let n = aead.key_len();
        if c2s.len() != n || s2c.len() != n {
            return None;
        }
        let mut keys = SessionKeys {
            aead,
            c2s: [0; KEY_LEN],
            s2c: [0; KEY_LEN],
        };
        keys.c2s[..n].copy_from_slice(c2s);
        keys.s2c[..n].copy_from_slice(s2c);
        Some(keys)
    }

    /// Keys for `aead` filled by `export(out, server_to_client)` (TLS's exporter).
    pub fn export<E>(
        aead: Aead,
        mut export: impl FnMut(&mut [u8], bool) -> Result<(), E>,
    ) -> Result<SessionKeys, E> {
        let n = aead.key_len();
        let mut keys = SessionKeys {
            aead,
            c2s: [0; KEY_LEN],
            s2c: [0; KEY_LEN],
        };
        export(&mut keys.c2s[..n], false)?;
        export(&mut keys.s2c[..n], true)?;
        Ok(keys)
    }

    pub fn aead(&self) -> Aead {
        self.aead
    }

    /// The client-to-server key: requests are sealed with it.
    pub fn c2s(&self) -> &[u8] {
        &self.c2s[..self.aead.key_len()]
    }

    /// The server-to-client key: answers are sealed with it.
    pub fn s2c(&self) -> &[u8] {
        &self.s2c[..self.aead.key_len()]
    }
}

/// Random bytes, from the IO edge (the OS's generator, buffered).
pub trait Entropy {
    fn fill(&mut self, out: &mut [u8]);
}

/// Encrypts `buf` in place under `key` (one of `aead`'s keys) with the associated data and
/// the nonce as RFC 8915 uses them: the plaintext is in `buf[aead.text(buf.len())]`, and
/// the tag's slot is overwritten. False when the key or the nonce has the wrong length for
/// `aead` (AES-GCM-SIV takes 12-byte nonces only).
pub fn seal(aead: Aead, key: &[u8], aad: &[u8], nonce: &[u8], buf: &mut [u8]) -> bool {
    if buf.len() < TAG_LEN || key.len() != aead.key_len() {
        return false;
    }
    match aead {
        Aead::AesSivCmac256 => {
            let (tag, text) = buf.split_at_mut(TAG_LEN);
            let Ok(mut siv) = Aes128Siv::new_from_slice(key) else {
                return false;
            };
            let Ok(v) = siv.encrypt_inout_detached([aad, nonce], text.into()) else {
                return false;
            };
            tag.copy_from_slice(&v);
        }
        Aead::Aes128GcmSiv => {
            let split = buf.len() - TAG_LEN;
            let (text, tag) = buf.split_at_mut(split);
            let (Ok(cipher), Ok(nonce)) = (
                Aes128GcmSiv::new_from_slice(key),
                aes_gcm_siv::Nonce::try_from(nonce),
            ) else {
                return false;
            };
            let Ok(t) = cipher.encrypt_inout_detached(&nonce, aad, text.into()) else {
                return false;
            };
            tag.copy_from_slice(&t);
        }
    }
    true
}

/// Decrypts and verifies `buf` in place; on success the plaintext is
/// `buf[aead.text(buf.len())]`. On failure `buf` is left as it was.
pub fn open(aead: Aead, key: &[u8], aad: &[u8], nonce: &[u8], buf: &mut [u8]) -> bool {
    if buf.len() < TAG_LEN || key.len() != aead.key_len() {
        return false;
    }
    match aead {
        Aead::AesSivCmac256 => {
            let (tag, text) = buf.split_at_mut(TAG_LEN);
            let v = aes_siv::Tag::try_from(&*tag).expect("split at the tag's length");
            let Ok(mut siv) = Aes128Siv::new_from_slice(key) else {
                return false;
            };
            siv.decrypt_inout_detached([aad, nonce], text.into(), &v)
                .is_ok()
        }
        Aead::Aes128GcmSiv => {
            let split = buf.len() - TAG_LEN;
            let (text, tag) = buf.split_at_mut(split);
            let t = aes_gcm_siv::Tag::try_from(&*tag).expect("split at the tag's length");
            let (Ok(cipher), Ok(nonce)) = (
                Aes128GcmSiv::new_from_slice(key),
                aes_gcm_siv::Nonce::try_from(nonce),
            ) else {
                return false;
            };
            cipher
                .decrypt_inout_detached(&nonce, aad, text.into(), &t)
                .is_ok()
        }
    }
}

#[cfg(test)]
mod tests;
