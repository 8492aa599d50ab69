//! Reading the files a user names (configs, key files): capped in size, so a device or a
//! huge file given by mistake is refused instead of read until memory runs out.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Permission bits that make a secret file unsafe: anything for "other", or group write.
/// Group read is fine: the packaged services read key files as group ntp-offset.
const UNSAFE_SECRET_BITS: u32 = 0o027;

/// A file holding secrets (tick keys, NTP keys), refused when others could read or change it,
/// as ssh refuses an unprotected private key: anyone holding the key can forge time.
pub fn read_secret(path: &Path, max: u64) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a file".into());
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & UNSAFE_SECRET_BITS != 0 {
        return Err(format!(
            "mode {mode:04o}: others can read or change it, so anyone could forge time with its \
             keys. Fix it with: chmod 600 {} (or 640, group-readable by the services' group: \
             chgrp ntp-offset {})",
            path.display(),
            path.display()
        ));
    }
    read_capped(path, max)
}

/// A file of at most `max` bytes, as text; the error says what went wrong.
pub fn read_capped(path: &Path, max: u64) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut text = String::new();
    file.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read: {e}"))?;
    if text.len() as u64 > max {
        return Err(format!(
            "larger than {} KiB: not the file it should be?",
            max / 1024
        ));
    }
    Ok(text)
}
