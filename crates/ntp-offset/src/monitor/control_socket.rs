//! The control socket's server side (protocol: `control::protocol`). Read-only: nothing a
//! client sends changes the daemon. A client gets [`REQUEST_TIMEOUT`] for its whole request and
//! [`MAX_REQUEST`] bytes; at most [`MAX_CLIENTS`] are served at once and the rest are told so.
//! None of this runs on an NTP worker's thread.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tracing::{debug, info, warn};

use super::Monitor;
use crate::control::protocol::{
    parse_request, reply_line, Reply, RequestError, MAX_REQUEST, REPLY_TIMEOUT, REQUEST_TIMEOUT,
};

/// Control clients served at once.
pub const MAX_CLIENTS: usize = 4;

pub enum BindError {
    /// A live process answers on the path.
    InUse(String),
    Other(String),
}

pub struct ControlSocket {
    path: PathBuf,
    inode: u64,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Binds `path`: replaces a stale socket (nobody answers), refuses one a live process holds
/// and anything that is not a socket. Mode 0660, so an admin group may read.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    let shown = path.display();
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(BindError::Other(format!(
                "control socket {shown}: exists and is not a socket; remove it or give another path"
            )));
        }
        match UnixStream::connect(path) {
            Ok(_) => {
                return Err(BindError::InUse(format!(
                    "control socket {shown}: another process is answering there (is this daemon already running? give each its own --control-socket)"
                )))
            }
            Err(_) => {
                // Stale: left by a process that died without cleaning up.
                std::fs::remove_file(path).map_err(|e| {
                    BindError::Other(format!("control socket {shown}: cannot remove the stale socket: {e}"))
                })?;
                info!(socket = %shown, "replaced a stale control socket");
            }
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| {
                    BindError::Other(format!(
                        "control socket {shown}: cannot create {}: {e}",
                        dir.display()
                    ))
                })?;
        }
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| BindError::Other(format!("control socket {shown}: {e}")))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| BindError::Other(format!("control socket {shown}: {e}")))?;
    Ok(listener)
}

impl ControlSocket {
    pub fn start(path: &Path, monitor: Arc<Monitor>) -> Result<ControlSocket, BindError> {
        let listener = bind(path)?;
        let inode = std::fs::metadata(path).map(|m| m.ino()).unwrap_or(0);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("control socket".into())
                .spawn(move || accept(listener, monitor, &stop))
                .map_err(|e| BindError::Other(format!("cannot start the control thread: {e}")))?
        };
        info!(socket = %path.display(), "control socket ready");
        Ok(ControlSocket {
            path: path.to_path_buf(),
            inode,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops accepting and removes the socket, if it is still ours.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn accept(listener: UnixListener, monitor: Arc<Monitor>, stop: &AtomicBool) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                warn!("control socket: accept: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        };
        if active.load(Ordering::SeqCst) >= MAX_CLIENTS {
            let _ = conn.set_write_timeout(Some(REPLY_TIMEOUT));
            let _ = conn.write_all(
                reply_line(Reply::Error(format!(
                    "busy: {MAX_CLIENTS} control clients already connected; try again"
                )))
                .as_bytes(),
            );
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (monitor, active) = (monitor.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("control client".into())
            .spawn(move || {
                serve_client(&mut conn, &monitor);
                // Before the close: a client that saw its answer end may count on the slot.
                active.fetch_sub(1, Ordering::SeqCst);
                drop(conn);
            });
        if spawned.is_err() {
            warn!("control socket: cannot start a thread for a client");
        }
    }
}

/// One exchange: the request line within its deadline, then the answer.
fn serve_client(conn: &mut UnixStream, monitor: &Monitor) {
    let reply = match read_request(conn) {
        Ok(line) => match parse_request(&line) {
            Ok(cmd) => monitor.reply(&cmd),
            Err(e) => Reply::Error(e.to_string()),
        },
        Err(ReadError::TooLong) => Reply::Error(RequestError::TooLong.to_string()),
        Err(ReadError::Gone(why)) => {
            debug!("control client dropped: {why}");
            return;
        }
    };
    let _ = conn.set_write_timeout(Some(REPLY_TIMEOUT));
    let _ = conn.write_all(reply_line(reply).as_bytes());
}

enum ReadError {
    TooLong,
    Gone(String),
}

/// Reads up to the first newline; the deadline covers the whole request, so a client that
/// trickles a byte at a time is cut off as surely as a silent one.
fn read_request(conn: &mut UnixStream) -> Result<Vec<u8>, ReadError> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::Gone("timed out".into()));
        }
        conn.set_read_timeout(Some(left))
            .map_err(|e| ReadError::Gone(e.to_string()))?;
        let n = match conn.read(&mut chunk) {
            Ok(0) => return Err(ReadError::Gone("closed before a whole request".into())),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadError::Gone(e.to_string())),
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            buf.truncate(end);
            return Ok(buf);
        }
        if buf.len() >= MAX_REQUEST {
            return Err(ReadError::TooLong);
        }
    }
}
