//! `ntp-offset status` and `ntp-offset clients`: one request to a daemon's control socket,
//! printed as text (like chronyc) or as JSON.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::path::{ControlPath, SYSTEM_DIR};
use super::protocol::{request_line, Command, Envelope, Reply};
use super::render;

/// The whole answer must arrive within this.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Larger answers are refused (a client log of 100,000 entries is about 20 MB).
const MAX_REPLY: u64 = 256 << 20;

/// Without --socket: the first of the daemons' default sockets that exists, this user's
/// own (a daemon run by hand, in `$XDG_RUNTIME_DIR`) before the system's (`/run/ntp-offset/`,
/// where the packaged services keep theirs), so an admin in group ntp-offset needs no flag.
pub fn default_socket() -> PathBuf {
    let roles = ["serve", "pulse-listen", "pulse-send"];
    let mut candidates: Vec<PathBuf> = roles
        .iter()
        .map(|r| ControlPath::default_for(r).path)
        .collect();
    for role in roles {
        let system = Path::new(SYSTEM_DIR).join(format!("{role}.sock"));
        if !candidates.contains(&system) {
            candidates.push(system);
        }
    }
    // One this user may not even look at (/run/ntp-offset/ is 0750) counts as there, so the
    // error says "permission denied" rather than "no control socket".
    let there = |p: &&PathBuf| match std::fs::symlink_metadata(p) {
        Ok(_) => true,
        Err(e) => e.kind() == ErrorKind::PermissionDenied,
    };
    candidates
        .iter()
        .find(there)
        .unwrap_or(&candidates[0])
        .clone()
}

/// Why `status` or `clients` printed nothing; each names the socket it asked.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("{0}: no control socket there: is the daemon running? (serve, pulse listen and pulse send each open one; see --control-socket)")]
    NoSocket(String),
    #[error("{0}: nobody answers (a stale socket: the daemon has stopped)")]
    Stale(String),
    #[error("{0}: permission denied (the socket is mode 0660: join its group, or use sudo)")]
    PermissionDenied(String),
    #[error("{socket}: {source}")]
    Io {
        socket: String,
        source: std::io::Error,
    },
    #[error("{socket}: no whole answer: {source}")]
    Incomplete {
        socket: String,
        source: std::io::Error,
    },
    #[error("{socket}: not an answer this version understands: {source}")]
    NotUnderstood {
        socket: String,
        source: serde_json::Error,
    },
    /// The daemon's own error reply (an unknown view, say).
    #[error("{socket}: {message}")]
    Refused { socket: String, message: String },
}

/// Asks `socket` and returns the reply (an error reply becomes Err).
pub fn ask(socket: &Path, command: &Command) -> Result<Reply, AskError> {
    let shown = socket.display().to_string();
    let io = |source| AskError::Io {
        socket: shown.clone(),
        source,
    };
    let mut conn = UnixStream::connect(socket).map_err(|e| match e.kind() {
        ErrorKind::NotFound => AskError::NoSocket(shown.clone()),
        ErrorKind::ConnectionRefused => AskError::Stale(shown.clone()),
        ErrorKind::PermissionDenied => AskError::PermissionDenied(shown.clone()),
        _ => io(e),
    })?;
    conn.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    conn.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    conn.write_all(request_line(command).as_bytes())
        .map_err(io)?;
    let mut text = String::new();
    conn.take(MAX_REPLY)
        .read_to_string(&mut text)
        .map_err(|source| AskError::Incomplete {
            socket: shown.clone(),
            source,
        })?;
    let env: Envelope =
        serde_json::from_str(text.trim_end()).map_err(|source| AskError::NotUnderstood {
            socket: shown.clone(),
            source,
        })?;
    match env.reply {
        Reply::Error(message) => Err(AskError::Refused {
            socket: shown,
            message,
        }),
        r => Ok(r),
    }
}

/// Runs `status` or `clients` and prints the answer.
pub fn run(socket: Option<&Path>, command: Command, json: bool) -> Result<(), AskError> {
    let socket = socket.map_or_else(default_socket, Path::to_path_buf);
    let reply = ask(&socket, &command)?;
    let now = (ntp_offset_sys::clock::realtime_ns() / 1_000_000_000).max(0) as u64;
    // Plain data (strings, numbers, maps with string keys): serializing it cannot fail.
    let out = match (&reply, json) {
        (Reply::Status(s), true) => serde_json::to_string_pretty(s).expect("plain data"),
        (Reply::Clients(c), true) => serde_json::to_string_pretty(c).expect("plain data"),
        (Reply::Status(s), false) => render::status(s),
        (Reply::Clients(c), false) => render::clients(c, now),
        (Reply::Error(message), _) => {
            return Err(AskError::Refused {
                socket: socket.display().to_string(),
                message: message.clone(),
            })
        }
    };
    crate::logging::out(format_args!("{}", out.trim_end()));
    Ok(())
}
