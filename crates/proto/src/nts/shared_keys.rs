//! Master keys that every server of a cluster derives alike from one secret they all hold
//! (`[nts] key_secret_file`), so a cookie issued by any of them opens on all: a live-migrated
//! VM keeps its NTS session on its new host. The key of rotation period `n` (`now / period`)
//! is HKDF-SHA256 of the secret, salted, with `n` as its context; its id is `n`. No server
//! writes or sends a key, and they rotate together without talking to each other: a host
//! restarted while the cluster's store is down still opens every cookie.
//!
//! The price: whoever learns the secret can derive every key, past and future, where random
//! keys that rotate out are gone. Replacing the secret (a reload) sends every client back to
//! key establishment once.

use core::fmt;

use hkdf::Hkdf;
use sha2::Sha256;

use super::cookie::{MasterKey, MasterKeys, KEEP};
use super::KEY_LEN;

/// A secret shorter than this is refused (the keys it makes are 32 bytes).
pub const MIN_SECRET: usize = 32;
pub const MAX_SECRET: usize = 64;
const SALT: &[u8] = b"ntp-offset NTS cookie master keys v1";

/// The cluster's secret. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedSecret(Vec<u8>);

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedSecret({} bytes)", self.0.len())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretError {
    /// No line with a secret.
    Empty,
    /// This line is not hex digits.
    NotHex { line: usize },
    /// A second secret on this line.
    TwoSecrets { line: usize },
    /// A secret of this many bytes (32 to 64 are taken).
    Length { bytes: usize },
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::Empty => write!(f, "no secret in it (one line of 64 to 128 hex digits)"),
            SecretError::NotHex { line } => write!(f, "line {line}: not hex digits"),
            SecretError::TwoSecrets { line } => write!(f, "line {line}: a second secret"),
            SecretError::Length { bytes } => write!(
                f,
                "a secret of {bytes} bytes: {MIN_SECRET} to {MAX_SECRET} are taken \
                 (`openssl rand -hex 32` makes one)"
            ),
        }
    }
}

impl SharedSecret {
    /// The file's text: one line of hex digits (64 to 128 of them); `#` comments and blank
    /// lines aside.
    pub fn parse(text: &str) -> Result<SharedSecret, SecretError> {
        let mut found: Option<Vec<u8>> = None;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if found.is_some() {
                return Err(SecretError::TwoSecrets { line: i + 1 });
            }
            let bad = SecretError::NotHex { line: i + 1 };
            if line.len() % 2 != 0 || !line.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad);
            }
            let bytes = (0..line.len() / 2)
                .map(|j| u8::from_str_radix(&line[2 * j..2 * j + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| bad)?;
            found = Some(bytes);
        }
        let bytes = found.ok_or(SecretError::Empty)?;
        if !(MIN_SECRET..=MAX_SECRET).contains(&bytes.len()) {
            return Err(SecretError::Length { bytes: bytes.len() });
        }
        Ok(SharedSecret(bytes))
    }

    /// The key of rotation period `n`.
    fn key(&self, n: u64) -> [u8; KEY_LEN] {
        let mut key = [0u8; KEY_LEN];
        Hkdf::<Sha256>::new(Some(SALT), &self.0)
            .expand(&n.to_be_bytes(), &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        key
    }

    /// The keys at `now` (seconds since 1970) rotating every `period` seconds: the current
    /// period's first (it seals), the [`KEEP`]` - 1` before it, and the next one, which opens
    /// the cookies of a server whose clock turned the period a little earlier.
    pub fn master_keys(&self, now: u64, period: u64) -> MasterKeys {
        let period = period.max(1);
        let n = now / period;
        let key = |n: u64| MasterKey::new(n as u32, n * period, self.key(n));
        let mut keys: Vec<MasterKey> = (0..KEEP as u64)
            .filter_map(|back| n.checked_sub(back))
            .map(key)
            .collect();
        keys.push(key(n + 1));
        MasterKeys::from_keys(keys)
    }
}

/// Whether `keys` (from [`SharedSecret::master_keys`]) are out of date at `now`.
pub fn rotation_due(keys: &MasterKeys, now: u64, period: u64) -> bool {
    u64::from(keys.current().id) != now / period.max(1) % (1 << 32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nts::cookie::CookieError;
    use crate::nts::{Entropy, SessionKeys};

    struct Counter(u8);
    impl Entropy for Counter {
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
        }
    }

    const SECRET: &str =
        "# the cluster's\n000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";
    const DAY: u64 = 86_400;

    fn session() -> SessionKeys {
        SessionKeys::new(crate::nts::Aead::Aes128GcmSiv, &[7; 16], &[9; 16]).unwrap()
    }

    #[test]
    fn every_server_with_the_secret_opens_every_others_cookies_for_two_periods() {
        let secret = SharedSecret::parse(SECRET).unwrap();
        let t0 = 20_000 * DAY + 5;
        let cookie = secret
            .master_keys(t0, DAY)
            .seal(&session(), &mut Counter(1));
        // Another host, the same moment, a period later, two later: opens. Three: gone.
        for (later, opens) in [(0, true), (DAY, true), (2 * DAY, true), (3 * DAY, false)] {
            let there = SharedSecret::parse(SECRET)
                .unwrap()
                .master_keys(t0 + later, DAY);
            let got = there.open(cookie.as_bytes());
            assert_eq!(got.is_ok(), opens, "{later} s later: {got:?}");
            if opens {
                assert_eq!(got.unwrap(), session());
            } else {
                assert_eq!(got, Err(CookieError::UnknownKey));
            }
        }
        // A host whose clock is a second behind the period's turn opens the new key's cookie.
        let turn = 20_001 * DAY;
        let ahead = secret
            .master_keys(turn, DAY)
            .seal(&session(), &mut Counter(2));
        assert_eq!(
            secret.master_keys(turn - 1, DAY).open(ahead.as_bytes()),
            Ok(session())
        );
    }

    #[test]
    fn another_secret_opens_nothing() {
        let a = SharedSecret::parse(SECRET).unwrap();
        let b = SharedSecret::parse(&"ab".repeat(32)).unwrap();
        let cookie = a
            .master_keys(1_000_000, DAY)
            .seal(&session(), &mut Counter(1));
        assert_eq!(
            b.master_keys(1_000_000, DAY).open(cookie.as_bytes()),
            Err(CookieError::Forged)
        );
        assert_ne!(
            format!("{a:?}"),
            format!("{:?}", a.0),
            "the secret is never printed"
        );
    }

    #[test]
    fn the_keys_rotate_at_each_periods_turn_and_not_before() {
        let s = SharedSecret::parse(SECRET).unwrap();
        let keys = s.master_keys(10 * DAY, DAY);
        assert_eq!(keys.current().id, 10);
        assert!(!rotation_due(&keys, 11 * DAY - 1, DAY));
        assert!(rotation_due(&keys, 11 * DAY, DAY));
        assert_eq!(keys.keys().len(), KEEP + 1);
        // Early in time there are fewer past keys, never a panic.
        assert_eq!(s.master_keys(5, DAY).keys().len(), 2);
    }

    #[test]
    fn secret_files_that_are_not_one_secret_are_refused_with_the_reason() {
        let hex32 = "00".repeat(32);
        for (text, want) in [
            ("", SecretError::Empty),
            ("# only a comment\n\n", SecretError::Empty),
            ("zz", SecretError::NotHex { line: 1 }),
            ("abc", SecretError::NotHex { line: 1 }),
            ("é0", SecretError::NotHex { line: 1 }),
            (&"00".repeat(31), SecretError::Length { bytes: 31 }),
            (&"00".repeat(65), SecretError::Length { bytes: 65 }),
        ] {
            assert_eq!(SharedSecret::parse(text), Err(want), "{text:?}");
        }
        let two = format!("{hex32}\n{hex32}\n");
        assert_eq!(
            SharedSecret::parse(&two),
            Err(SecretError::TwoSecrets { line: 2 })
        );
        assert!(SharedSecret::parse(&format!("  {hex32}  \n")).is_ok());
        assert!(SharedSecret::parse(&"ff".repeat(64)).is_ok());
    }
}
