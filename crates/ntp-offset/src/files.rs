//! Reading the files a user names (configs, key files): capped in size, so a device or a
//! huge file given by mistake is refused instead of read until memory runs out.

use std::io::Read;
use std::path::Path;

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
