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

use aes_siv::siv::Aes128Siv;
use aes_siv::KeyInit;

/// AEAD algorithms (IANA "AEAD Algorithms" registry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Aead {
    /// AEAD_AES_SIV_CMAC_256 (RFC 5297): the one RFC 8915 requires.
    AesSivCmac256,
}

impl Aead {
    pub fn id(self) -> u16 {
        match self {
            Aead::AesSivCmac256 => 15,
        }
    }

    pub fn from_id(id: u16) -> Option<Aead> {
        (id == 15).then_some(Aead::AesSivCmac256)
    }

    pub fn key_len(self) -> usize {
        match self {
            Aead::AesSivCmac256 => KEY_LEN,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Aead::AesSivCmac256 => "AEAD_AES_SIV_CMAC_256",
        }
    }
}

/// An AES-SIV-CMAC-256 key's length.
pub const KEY_LEN: usize = 32;
/// The SIV (the tag) that starts every ciphertext.
pub const TAG_LEN: usize = 16;
/// The nonces this server makes (RFC 5297 asks at least 128 bits for random nonces).
pub const NONCE_LEN: usize = 16;

/// One session's keys, as exported from its TLS session.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    pub c2s: [u8; KEY_LEN],
    pub s2c: [u8; KEY_LEN],
}

impl core::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SessionKeys(..)")
    }
}

/// Random bytes, from the IO edge (the OS's generator, buffered).
pub trait Entropy {
    fn fill(&mut self, out: &mut [u8]);
}

/// Encrypts `buf` in place after a 16-byte tag slot at its start (`buf[..TAG_LEN]` is
/// overwritten with the SIV): RFC 5297's output, V || C, with the associated data and the
/// nonce as its two header components, as RFC 8915 uses it.
pub fn seal(key: &[u8; KEY_LEN], aad: &[u8], nonce: &[u8], buf: &mut [u8]) {
    let (tag, text) = buf.split_at_mut(TAG_LEN);
    let mut siv = Aes128Siv::new(key.into());
    let v = siv
        .encrypt_inout_detached([aad, nonce], text.into())
        .expect("two headers and a short text are within AES-SIV's limits");
    tag.copy_from_slice(&v);
}

/// Decrypts and verifies `buf` (V || C) in place; on success the plaintext is
/// `buf[TAG_LEN..]`. On failure `buf` is left as it was.
pub fn open(key: &[u8; KEY_LEN], aad: &[u8], nonce: &[u8], buf: &mut [u8]) -> bool {
    if buf.len() < TAG_LEN {
        return false;
    }
    let (tag, text) = buf.split_at_mut(TAG_LEN);
    let v = aes_siv::Tag::try_from(&*tag).expect("split at the tag's length");
    let mut siv = Aes128Siv::new(key.into());
    siv.decrypt_inout_detached([aad, nonce], text.into(), &v)
        .is_ok()
}

#[cfg(test)]
mod tests;
