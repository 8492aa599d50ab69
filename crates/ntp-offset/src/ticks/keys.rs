//! Loading the tick key file: refused when others can read it (`files::read_secret`), since
//! anyone holding the key can forge ticks.

use std::path::Path;

use ntp_offset_proto::key_file::KeyFileError;
use ntp_offset_proto::tick_auth::{format_key_line, Key, KeyRing};

use crate::files::FileError;

/// A tick key file that did not give the keys asked for; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyLoadError {
    #[error("key file {path}: {source}")]
    Read { path: String, source: FileError },
    #[error("key file {path}: {source}")]
    Parse { path: String, source: KeyFileError },
    #[error("key {id} is not in {path}")]
    NoSuchKey { id: u16, path: String },
}

/// No randomness for a key or a session id.
#[derive(Debug, thiserror::Error)]
#[error("cannot read /dev/urandom: {0}")]
pub struct EntropyError(#[from] std::io::Error);

pub fn load(path: &Path) -> Result<KeyRing, KeyLoadError> {
    let shown = || path.display().to_string();
    // Far more than 65535 keys' lines: a bigger file is not a key file.
    let text = crate::files::read_secret(path, 1 << 20).map_err(|source| KeyLoadError::Read {
        path: shown(),
        source,
    })?;
    KeyRing::parse(&text).map_err(|source| KeyLoadError::Parse {
        path: shown(),
        source,
    })
}

/// The key ticks are signed with: `id`'s, or the file's first.
pub fn signing_key(path: &Path, id: Option<u16>) -> Result<Key, KeyLoadError> {
    let ring = load(path)?;
    match id {
        Some(id) => ring.get(id).cloned().ok_or(KeyLoadError::NoSuchKey {
            id,
            path: path.display().to_string(),
        }),
        None => Ok(ring.first().clone()),
    }
}

/// A key file line with 32 fresh random bytes.
pub fn generate(id: u16) -> Result<String, EntropyError> {
    let mut secret = [0u8; 32];
    random_bytes(&mut secret)?;
    Ok(format_key_line(id, &secret))
}

pub fn random_bytes(out: &mut [u8]) -> Result<(), EntropyError> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(out))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn refuses_a_key_file_others_can_read_and_names_the_fix() {
        let dir = std::env::temp_dir().join(format!("ntp-offset-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tick.keys");
        std::fs::write(&path, generate(1).unwrap() + "\n").unwrap();
        for (mode, ok) in [(0o600, true), (0o640, true), (0o644, false), (0o660, false)] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            match load(&path) {
                Ok(ring) => assert!(ok && ring.get(1).is_some(), "{mode:o}"),
                Err(e) => assert!(!ok && e.to_string().contains("chmod 600"), "{mode:o}: {e}"),
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
