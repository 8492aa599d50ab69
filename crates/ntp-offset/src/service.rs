//! Running under systemd: `Type=notify` readiness. Outside systemd (no NOTIFY_SOCKET) this
//! does nothing.

use tracing::warn;

/// Tells systemd the daemon is ready: its sockets are bound, so `systemctl start` returns
/// with the service usable.
pub fn ready() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        warn!("cannot tell systemd we are ready: {e}");
    }
}
