//! The cookie master keys' life: read from `state_dir/nts-master-keys` at start (or made
//! fresh), rotated by a thread when the current key has served `key_rotation`, written back
//! (mode 0600, replaced atomically) after each rotation, and published to the workers and
//! the KE server through `Shared::nts_keys`. With `key_secret_file` the keys are derived
//! from the cluster's secret instead (`proto::nts::shared_keys`): nothing is written, and the
//! thread derives the next period's keys at its turn.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ntp_offset_proto::nts::cookie::MasterKeys;
use ntp_offset_proto::nts::shared_keys::{self, SharedSecret};
use tracing::{info, warn};

use crate::entropy::OsEntropy;
use crate::serve::{unix_seconds, Shared};

pub const FILE_NAME: &str = "nts-master-keys";

/// How often the thread looks at the clock; a rotation is due at most this late.
const CHECK_EVERY: Duration = Duration::from_secs(10);

pub struct Rotator {
    period_s: Arc<AtomicU64>,
    /// The cluster's secret, when the keys are derived from it.
    secret: Arc<Mutex<Option<SharedSecret>>>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// The keys a server starts with: derived from `secret` if there is one, else
/// [`load_or_create`]'s.
pub fn initial(secret: Option<&SharedSecret>, dir: &Path, period_s: u64) -> MasterKeys {
    match secret {
        Some(s) => {
            let keys = s.master_keys(unix_seconds(), period_s);
            info!(key = keys.current().id, "NTS master keys derived from the cluster's secret: cookies of every server with it open here");
            keys
        }
        None => load_or_create(dir, period_s),
    }
}

/// The keys in `dir`, or fresh ones (then written there). A file that cannot be read or
/// written is logged, not fatal: NTS still works, but a restart sends clients back to KE.
pub fn load_or_create(dir: &Path, period_s: u64) -> MasterKeys {
    let path = dir.join(FILE_NAME);
    let mut rng = OsEntropy::default();
    let now = unix_seconds();
    let mut keys = match crate::files::read_secret(&path, 64 * 1024) {
        Ok(text) => match MasterKeys::parse(&text) {
            Ok(k) => {
                info!(file = %path.display(), key = k.current().id, "NTS master keys read: cookies issued before the restart still open");
                k
            }
            Err(e) => {
                warn!(file = %path.display(), "NTS master keys unreadable ({e}): new keys, so clients will go back to key establishment");
                fresh(&path, now, &mut rng)
            }
        },
        Err(e) if path.exists() => {
            warn!(file = %path.display(), "NTS master keys not used: {e}; new keys, so clients will go back to key establishment");
            fresh(&path, now, &mut rng)
        }
        Err(_) => fresh(&path, now, &mut rng),
    };
    if keys.rotation_due(now, period_s) {
        keys.rotate(now, &mut rng);
        save(&path, &keys);
    }
    keys
}

fn fresh(path: &Path, now: u64, rng: &mut OsEntropy) -> MasterKeys {
    let keys = MasterKeys::generate(now, rng);
    save(path, &keys);
    keys
}

/// Writes the keys beside their file and renames over it, so a crash leaves the old or
/// the new keys, never half of them.
fn save(path: &Path, keys: &MasterKeys) {
    if let Err(e) = crate::files::replace(path, 0o600, |f| f.write_all(keys.to_text().as_bytes())) {
        warn!(file = %path.display(), "cannot keep the NTS master keys ({e}): cookies will not survive a restart");
    }
}

/// A rotation, if the current keys are due one: derived from `secret`, or a random key
/// written to `path`.
fn rotate_if_due(
    shared: &Shared,
    path: &Path,
    period: u64,
    secret: Option<SharedSecret>,
    rng: &mut OsEntropy,
) {
    let Some(current) = shared.nts_keys.load_full() else {
        return;
    };
    let now = unix_seconds();
    let next = match secret {
        Some(s) if shared_keys::rotation_due(&current, now, period) => s.master_keys(now, period),
        None if current.rotation_due(now, period) => {
            let mut next = (*current).clone();
            next.rotate(now, rng);
            save(path, &next);
            next
        }
        _ => return,
    };
    info!(key = next.current().id, "NTS master key rotated");
    shared.nts_keys.store(Some(Arc::new(next)));
}

impl Rotator {
    pub fn start(
        shared: Arc<Shared>,
        state_dir: PathBuf,
        period: Duration,
        secret: Option<SharedSecret>,
    ) -> std::io::Result<Rotator> {
        let period_s = Arc::new(AtomicU64::new(period.as_secs()));
        let secret = Arc::new(Mutex::new(secret));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, k, s) = (period_s.clone(), secret.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("nts keys".into())
            .spawn(move || {
                let mut rng = OsEntropy::default();
                let path = state_dir.join(FILE_NAME);
                loop {
                    // Held through the rotation: a reload's new secret is published under
                    // it, and a rotation with the old one must not land after that.
                    let secret = k.lock().unwrap_or_else(|e| e.into_inner());
                    let period = p.load(Ordering::Relaxed);
                    rotate_if_due(&shared, &path, period, secret.clone(), &mut rng);
                    drop(secret);
                    // CHECK_EVERY in short steps, so a stop is prompt.
                    for _ in 0..(CHECK_EVERY.as_millis() / 200) {
                        if s.load(Ordering::Relaxed) {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            })?;
        Ok(Rotator {
            period_s,
            secret,
            stop,
            thread,
        })
    }

    /// A reload's secret (or none): published at once if it changed, since the keys it makes
    /// differ (clients with cookies of the old keys go back to key establishment once).
    pub fn set_secret(&self, shared: &Shared, secret: Option<SharedSecret>, state_dir: &Path) {
        let mut held = self.secret.lock().unwrap_or_else(|e| e.into_inner());
        if *held == secret {
            return;
        }
        let period = self.period_s.load(Ordering::Relaxed);
        let keys = initial(secret.as_ref(), state_dir, period);
        info!(
            key = keys.current().id,
            "NTS master keys replaced: the cluster's secret changed"
        );
        shared.nts_keys.store(Some(Arc::new(keys)));
        *held = secret;
    }

    pub fn set_period(&self, period: Duration) {
        self.period_s.store(period.as_secs(), Ordering::Relaxed);
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}
