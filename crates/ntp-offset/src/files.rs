//! Reading the files a user names (configs, key files): capped in size, so a device or a
//! huge file given by mistake is refused instead of read until memory runs out. And
//! replacing the server's own state files so that a crash leaves the old or the new one.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Permission bits that make a secret file unsafe: anything for "other", or group write.
/// Group read is fine: the packaged services read key files as group ntp-offset.
const UNSAFE_SECRET_BITS: u32 = 0o027;

/// Why a named file was not read. The message leaves the path to the caller, who names the
/// file as the user knows it (`key file /etc/...`, a config field).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read: {0}")]
    Read(#[from] std::io::Error),
    #[error("not a file")]
    NotAFile,
    #[error(
        "mode {mode:04o}: others can read or change it, so anyone could forge time with its \
         keys. Fix it with: chmod 600 {path} (or 640, group-readable by the services' group: \
         chgrp ntp-offset {path})"
    )]
    UnsafeMode { mode: u32, path: String },
    #[error("larger than {} KiB: not the file it should be?", max / 1024)]
    TooLarge { max: u64 },
}

impl FileError {
    /// The file is not there (a state file not written yet, say).
    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::Read(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

/// A file holding secrets (tick keys, NTP keys), refused when others could read or change it,
/// as ssh refuses an unprotected private key: anyone holding the key can forge time.
pub fn read_secret(path: &Path, max: u64) -> Result<String, FileError> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(FileError::NotAFile);
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & UNSAFE_SECRET_BITS != 0 {
        let path = path.display().to_string();
        return Err(FileError::UnsafeMode { mode, path });
    }
    read_capped(path, max)
}

/// A file of at most `max` bytes, as text; the error says what went wrong.
pub fn read_capped(path: &Path, max: u64) -> Result<String, FileError> {
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    file.take(max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(FileError::TooLarge { max });
    }
    Ok(text)
}

/// Replaces `target` crash-safely: `write` fills a temporary file beside it (created with
/// `mode`), which is synced, renamed over `target`, and the directory synced. kill -9 at
/// any moment leaves the old file or the new one; a failed write leaves the old one.
pub fn replace(
    target: &Path,
    mode: u32,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy());
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let _ = std::fs::remove_file(&tmp);
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        let mut out = BufWriter::new(f);
        write(&mut out)?;
        let f = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, target)?;
        // The rename itself is durable once the directory is.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
