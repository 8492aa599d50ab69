//! The configuration's schema as a file (or the command line, `flags.rs`) gives it, before
//! any check: every value keeps where it came from, so errors can name the line. The whole
//! schema is here; each section's file checks its part.

use serde::Deserialize;
use toml::Spanned;

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
    #[serde(default)]
    pub vm: Vec<Spanned<RawVm>>,
    pub control: Option<Spanned<RawControl>>,
    pub metrics: Option<Spanned<RawMetrics>>,
    pub keys: Option<Spanned<RawKeys>>,
    pub nts: Option<Spanned<RawNts>>,
    pub cluster: Option<Spanned<RawCluster>>,
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
    #[serde(rename = "move")]
    pub moves: Option<Spanned<String>>,
    pub move_rate: Option<Spanned<f64>>,
    pub move_ramp: Option<Spanned<String>>,
    pub place: Option<Spanned<String>>,
    pub optimize_every: Option<Spanned<String>>,
    pub forget_after: Option<Spanned<String>>,
    pub max_clients: Option<Spanned<i64>>,
    #[serde(default)]
    pub listen: Vec<Spanned<String>>,
    #[serde(default)]
    pub clients: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVm {
    pub name: Spanned<String>,
    pub addresses: Spanned<Vec<Spanned<String>>>,
    pub cgroup: Option<Spanned<String>>,
    pub pid_file: Option<Spanned<String>>,
}

/// A value that came from the command line: it has no place in a file.
pub(super) fn flag<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

/// The keys whose text is a duration (`"15s"`, `"-250ms"`), for the hint when a file gives a
/// bare number.
const DURATION_KEYS: &[&str] = &[
    "offset",
    "interval",
    "leap_smear_window",
    "forget_after",
    "move_ramp",
    "optimize_every",
    "key_rotation",
    "timeout",
    "delay",
    "outlier",
    "holdover",
    "step_threshold",
];

/// The field that the byte at `at` belongs to, named as the checks name it (`server.listen`,
/// ``view `b`.offset``): the key on its line under the nearest table header above, or the
/// header itself. Empty where the line has neither (a value continued over lines).
pub(super) fn field_at(source: &str, at: usize) -> String {
    let at = (0..=at.min(source.len()))
        .rev()
        .find(|&i| source.is_char_boundary(i))
        .unwrap_or(0);
    let header = |l: &str| {
        let l = l.trim();
        l.starts_with('[')
            .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
    };
    let key = |l: &str| {
        l.split_once('=')
            .map(|(k, v)| (k.trim().trim_matches('"').to_string(), v.trim().to_string()))
    };
    let lines: Vec<&str> = source.split('\n').collect();
    let n = source[..at].matches('\n').count();
    // The table: the header above (or on) this line, and the name its block gives itself
    // (`[[view]]` and `[[spread]]` entries are known by name).
    let table = (0..=n)
        .rev()
        .find(|&i| header(lines[i]).is_some())
        .map(|h| {
            let table = header(lines[h]).unwrap_or_default();
            let name = lines[h + 1..]
                .iter()
                .take_while(|l| header(l).is_none())
                .filter_map(|l| key(l))
                .find(|(k, _)| k == "name")
                .map(|(_, v)| v.trim_matches('"').to_string());
            match name {
                Some(name) => format!("{table} `{name}`"),
                None => table,
            }
        });
    if header(lines[n]).is_some() {
        return table.unwrap_or_default();
    }
    match (table, key(lines[n])) {
        (Some(t), Some((k, _))) => format!("{t}.{k}"),
        (None, Some((k, _))) => k,
        (_, None) => String::new(),
    }
}

/// What to write instead, when toml's message is that a number came where text belongs.
pub(super) fn type_hint(field: &str, message: &str) -> Option<String> {
    let rest = message.strip_prefix("invalid type: ")?;
    let number = rest
        .strip_prefix("integer `")
        .or_else(|| rest.strip_prefix("floating point `"))?
        .split_once('`')
        .filter(|(_, tail)| tail.contains("expected a string"))?
        .0;
    let key = field.rsplit('.').next().unwrap_or(field);
    Some(if DURATION_KEYS.contains(&key) {
        format!("a duration is text with a unit: {key} = \"{number}s\" (or \"{number}ms\", \"{number}m\", ...)")
    } else {
        format!("text goes in quotes: {key} = \"{number}\"")
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReference {
    pub source: Spanned<String>,
    pub listen: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub join: Vec<Spanned<String>>,
    /// Share the tick port with other receivers on this host (SO_REUSEADDR on every one).
    pub share_port: Option<bool>,
    pub key_file: Option<Spanned<String>>,
    pub allow_unauthenticated: Option<bool>,
    pub transmitter: Option<Spanned<String>>,
    pub delay: Option<Spanned<String>>,
    pub outlier: Option<Spanned<String>>,
    pub holdover: Option<Spanned<String>>,
    pub step_threshold: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeys {
    pub file: Spanned<String>,
    pub unknown_key: Option<Spanned<String>>,
    pub allow_md5: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNts {
    pub listen: Spanned<Vec<Spanned<String>>>,
    pub certificate: Spanned<String>,
    pub private_key: Spanned<String>,
    pub ntp_server: Option<Spanned<String>>,
    pub ntp_port: Option<Spanned<i64>>,
    pub key_rotation: Option<Spanned<String>>,
    pub key_secret_file: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<i64>>,
    pub timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawControl {
    /// A path, or "none" for no control socket.
    pub socket: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub listen: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub endpoints: Spanned<Vec<Spanned<String>>>,
    pub host: Option<Spanned<String>>,
    pub prefix: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<String>>,
    pub certificate: Option<Spanned<String>>,
    pub private_key: Option<Spanned<String>>,
    pub on_store_unavailable: Option<Spanned<String>>,
}
