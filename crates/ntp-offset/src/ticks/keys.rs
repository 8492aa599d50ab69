//! Loading the tick key file: refused when others can read it (`files::read_secret`), since
//! anyone holding the key can forge ticks.

use std::path::Path;

use ntp_offset_proto::tick_auth::{format_key_line, KeyRing};

pub fn load(path: &Path) -> Result<KeyRing, String> {
    // Far more than 65535 keys' lines: a bigger file is not a key file.
    let text = crate::files::read_secret(path, 1 << 20)
        .map_err(|e| format!("key file {}: {e}", path.display()))?;
    KeyRing::parse(&text).map_err(|e| format!("key file {}: {e}", path.display()))
}

/// A key file line with 32 fresh random bytes.
pub fn generate(id: u16) -> Result<String, String> {
    let mut secret = [0u8; 32];
    random_bytes(&mut secret)?;
    Ok(format_key_line(id, &secret))
}

pub fn random_bytes(out: &mut [u8]) -> Result<(), String> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(out))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))
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
                Err(e) => assert!(!ok && e.contains("chmod 600"), "{mode:o}: {e}"),
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
