//! `[keys]`: chrony's key file, for answers authenticated with symmetric keys (RFC 8573
//! AES-CMAC, keyed SHA digests; MD5 only when allowed), and what a request with a key this
//! server does not have gets. A view's `auth` (views.rs) says whether it needs a valid MAC.

use ntp_offset_proto::symmetric::{self, Auth, KeyType, UnknownKey};
use toml::Spanned;

use super::raw::RawKeys;
use super::{ConfigError, Context};

/// No key file comes near this (chrony's own limit is 65535 keys).
const MAX_KEY_FILE_BYTES: u64 = 4 << 20;

impl Context<'_> {
    pub(super) fn auth(
        &self,
        keys: Option<&Spanned<RawKeys>>,
        warnings: &mut Vec<ConfigError>,
    ) -> Result<Auth, ConfigError> {
        let Some(raw) = keys else {
            return Ok(Auth::default());
        };
        let raw = raw.get_ref();
        let unknown_key = match raw.unknown_key.as_ref() {
            None => UnknownKey::default(),
            Some(u) => match u.get_ref().as_str() {
                "nak" => UnknownKey::Nak,
                "drop" => UnknownKey::Drop,
                other => {
                    return self.err(
                        u.span(),
                        "keys.unknown_key",
                        format!("`{other}`: \"nak\" (a crypto-NAK, as chrony) or \"drop\""),
                    )
                }
            },
        };
        let allow_md5 = raw.allow_md5.unwrap_or(false);
        let path = super::beside(self.file, raw.file.get_ref());
        let shown = path.display();
        let text = crate::files::read_secret(&path, MAX_KEY_FILE_BYTES)
            .map_err(|e| self.error_at(raw.file.span(), "keys.file", format!("{shown}: {e}")))?;
        let keys = symmetric::parse_key_file(&text, allow_md5)
            .map_err(|e| self.error_at(raw.file.span(), "keys.file", format!("{shown}: {e}")))?;
        if keys.is_empty() {
            return self.err(raw.file.span(), "keys.file", format!("{shown} has no keys"));
        }
        if keys.iter().any(|k| k.kind() == KeyType::Md5) {
            warnings.push(self.error_at(
                raw.file.span(),
                "keys.file",
                format!("{shown} has MD5 keys (allow_md5 = true): MD5 is broken; move clients to AES128 keys"),
            ));
        }
        Ok(Auth { keys, unknown_key })
    }
}
