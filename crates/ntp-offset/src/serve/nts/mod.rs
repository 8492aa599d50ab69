//! NTS for `serve` (RFC 8915): the key establishment server ([`ke_server`], over [`crate::tls`]) and
//! the cookie master keys ([`master_keys`]). NTP requests with NTS fields are answered by the
//! workers, through `proto::responder`, with the keys published in `Shared::nts_keys`.

pub mod ke_server;
pub mod master_keys;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::nts::NtsConfig;
use crate::serve::error::{ReloadError, ServeError};
use crate::serve::Shared;
use ke_server::{KeServer, Params};
use master_keys::Rotator;

/// The running NTS parts.
pub struct NtsService {
    ke: KeServer,
    rotator: Rotator,
    config: NtsConfig,
    state_dir: std::path::PathBuf,
}

fn params(cfg: &NtsConfig) -> Result<Params, crate::tls::TlsError> {
    let tls = crate::tls::load(&cfg.certificate, &cfg.private_key)?;
    Ok(Params {
        tls,
        ntp_server: cfg.ntp_server.clone(),
        ntp_port: cfg.ntp_port,
        timeout: cfg.timeout,
        max_connections: cfg.max_connections,
    })
}

impl NtsService {
    pub fn start(
        cfg: &NtsConfig,
        shared: &Arc<Shared>,
        state_dir: &std::path::Path,
    ) -> Result<NtsService, ServeError> {
        let period = cfg.key_rotation.as_secs();
        let secret = cfg.key_secret.as_ref().map(|(_, s)| s.clone());
        let keys = master_keys::initial(secret.as_ref(), state_dir, period);
        shared.nts_keys.store(Some(Arc::new(keys)));
        let ke = KeServer::start(&cfg.listen, params(cfg)?, shared.clone())?;
        let rotator = Rotator::start(
            shared.clone(),
            state_dir.to_path_buf(),
            cfg.key_rotation,
            secret,
        )
        .map_err(ServeError::thread("the NTS key thread"))?;
        Ok(NtsService {
            ke,
            rotator,
            config: cfg.clone(),
            state_dir: state_dir.to_path_buf(),
        })
    }

    /// Takes a reloaded `[nts]`: the certificate and key are read again (a renewal), and
    /// the limits and names apply to new sessions; a changed cluster secret replaces the
    /// master keys at once. The KE addresses need a restart.
    pub fn reload(&mut self, cfg: &NtsConfig, shared: &Shared) -> Result<(), ReloadError> {
        if cfg.listen != self.config.listen {
            return Err(ReloadError::NeedsRestart {
                setting: "[nts] listen",
                change: String::new(),
                why: "move the NTS-KE listener",
            });
        }
        let p = params(cfg)?;
        self.ke.params.store(Arc::new(p));
        self.rotator.set_period(cfg.key_rotation);
        let secret = cfg.key_secret.as_ref().map(|(_, s)| s.clone());
        self.rotator.set_secret(shared, secret, &self.state_dir);
        self.config = cfg.clone();
        Ok(())
    }

    pub fn ke_addrs(&self) -> &[SocketAddr] {
        &self.ke.bound
    }

    pub fn stop(self) {
        self.ke.stop();
        self.rotator.stop();
    }
}
