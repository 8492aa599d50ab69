//! The configuration's schema as a file (or the command line, `flags.rs`) gives it, before
//! any check: every value keeps where it came from, so errors can name the line.

use serde::Deserialize;
use toml::Spanned;

use super::keys::RawKeys;
use super::monitor::{RawControl, RawMetrics};
use super::nts::RawNts;
use super::reference::RawReference;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub server: Spanned<RawServer>,
    pub reference: Option<Spanned<RawReference>>,
    pub rate_limit: Option<Spanned<RawRateLimit>>,
    #[serde(default)]
    pub view: Vec<Spanned<RawView>>,
    #[serde(default)]
    pub spread: Vec<Spanned<RawSpread>>,
    pub control: Option<Spanned<RawControl>>,
    pub metrics: Option<Spanned<RawMetrics>>,
    pub keys: Option<Spanned<RawKeys>>,
    pub nts: Option<Spanned<RawNts>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub listen: Spanned<Vec<Spanned<String>>>,
    pub unmatched: Option<Spanned<String>>,
    pub default_view: Option<Spanned<String>>,
    pub local_stratum: Option<Spanned<i64>>,
    pub stratum: Option<Spanned<i64>>,
    pub reference_id: Option<Spanned<String>>,
    pub leap: Option<Spanned<String>>,
    pub leap_smear_window: Option<Spanned<String>>,
    pub state_dir: Option<Spanned<String>>,
    pub workers: Option<Spanned<RawWorkers>>,
    pub interleaved: Option<bool>,
}

/// `workers = 2` or `workers = "auto"`.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum RawWorkers {
    Count(i64),
    Word(String),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub enabled: Option<bool>,
    pub interval: Option<Spanned<String>>,
    pub burst: Option<Spanned<i64>>,
    pub kod: Option<bool>,
    pub table_size: Option<Spanned<i64>>,
    pub ipv6_prefix: Option<Spanned<i64>>,
    pub prefix_factor: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawView {
    pub name: Spanned<String>,
    pub offset: Spanned<String>,
    pub weight: Option<Spanned<i64>>,
    #[serde(default)]
    pub listen: Vec<Spanned<String>>,
    #[serde(default)]
    pub clients: Vec<Spanned<String>>,
    pub auth: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpread {
    pub name: Spanned<String>,
    pub views: Spanned<Vec<Spanned<String>>>,
    pub key: Option<Spanned<String>>,
    pub assign: Option<Spanned<String>>,
    pub rebalance: Option<Spanned<String>>,
    pub forget_after: Option<Spanned<String>>,
    pub max_clients: Option<Spanned<i64>>,
    #[serde(default)]
    pub listen: Vec<Spanned<String>>,
    #[serde(default)]
    pub clients: Vec<Spanned<String>>,
}

/// A value that came from the command line: it has no place in a file.
pub(super) fn flag<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}
