//! etcd's v3 API through its JSON gateway (`/v3/kv/range`, `/v3/kv/txn`, `/v3/watch`): the
//! few calls a cluster needs, over blocking HTTP/1.1 (ureq, rustls).
//!
//! Why not the gRPC client (the `etcd-client` crate): it needs tokio, tonic and prost (about
//! 150 crates more, and `protoc` to build), for five calls a background thread makes a few
//! times a minute. The gateway is part of etcd (`etcd --help`: "grpc-gateway"), speaks the
//! same v3 API with the same guarantees, and is what etcd documents for clients without
//! gRPC. Its JSON: 64-bit numbers as strings, keys and values base64, fields at their
//! default value (false, 0, PUT) left out.

use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ntp_offset_proto::cluster::copy::Event;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::cluster::ClusterConfig;

/// A call's whole time: etcd answers in milliseconds, or (without a quorum) not at all.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// A watch that says nothing this long is made again (from the revision it had reached):
/// a member cut off from the others keeps the stream open but silent.
pub const WATCH_IDLE: Duration = Duration::from_secs(20);
/// Bounds what a misbehaving endpoint can make this host read.
const MAX_BODY: u64 = 64 << 20;
const MAX_WATCH_LINE: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint answered (refused, timed out, TLS failed).
    #[error("no etcd endpoint answered: {0}")]
    Unreachable(String),
    /// An endpoint answered with an error (no leader, request timed out, ...).
    #[error("etcd: {0}")]
    Refused(String),
    #[error("etcd's answer is not what its API says: {0}")]
    Protocol(String),
}

#[derive(Deserialize, Default)]
struct Header {
    #[serde(default, deserialize_with = "num")]
    revision: i64,
}

#[derive(Deserialize)]
struct Kv {
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default, deserialize_with = "num")]
    mod_revision: i64,
}

#[derive(Deserialize)]
struct RangeResponse {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    kvs: Vec<Kv>,
    #[serde(default)]
    more: bool,
}

#[derive(Deserialize)]
struct TxnResponse {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    succeeded: bool,
    #[serde(default)]
    responses: Vec<Value>,
}

#[derive(Deserialize)]
struct WatchLine {
    result: Option<WatchResult>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct WatchResult {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    events: Vec<WatchEvent>,
    #[serde(default)]
    canceled: bool,
    #[serde(default, deserialize_with = "num")]
    compact_revision: i64,
}

#[derive(Deserialize)]
struct WatchEvent {
    #[serde(default, rename = "type")]
    kind: String,
    kv: Kv,
}

/// int64 fields: the gateway writes them as strings.
fn num<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => s.parse().map_err(serde::de::Error::custom),
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| serde::de::Error::custom("not an i64")),
        _ => Err(serde::de::Error::custom("not a number")),
    }
}

fn b64(s: &[u8]) -> String {
    B64.encode(s)
}

fn unb64(s: &str) -> Result<Vec<u8>, EtcdError> {
    B64.decode(s)
        .map_err(|e| EtcdError::Protocol(format!("base64: {e}")))
}

/// The key range of everything under `prefix`: [prefix, prefix + 1 in the last byte).
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Kv {
    fn into_event(self, delete: bool) -> Result<Event, EtcdError> {
        let key = String::from_utf8(unb64(&self.key)?)
            .map_err(|_| EtcdError::Protocol("a key that is not UTF-8".into()))?;
        Ok(if delete {
            Event::Delete {
                key,
                mod_revision: self.mod_revision,
            }
        } else {
            Event::Put {
                key,
                value: unb64(&self.value)?,
                mod_revision: self.mod_revision,
            }
        })
    }
}

/// What a create-if-absent found.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    /// Ours is the record, at this revision.
    Yes { revision: i64 },
    /// Somebody's was there first: its value and revision.
    Exists { value: Vec<u8>, mod_revision: i64 },
}

/// A client of one etcd cluster: its endpoints, tried in turn from the last that answered.
pub struct Etcd {
    agent: ureq::Agent,
    /// Without read timeout: a watch waits as long as etcd has nothing to say.
    watch_agent: ureq::Agent,
    endpoints: Vec<String>,
    current: AtomicUsize,
}

impl Etcd {
    pub fn new(cfg: &ClusterConfig) -> Etcd {
        let build = |timeout: Option<Duration>| {
            let mut b = ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(2))
                .max_idle_connections_per_host(2)
                .user_agent(concat!("ntp-offset/", env!("CARGO_PKG_VERSION")));
            if let Some(t) = timeout {
                b = b.timeout(t);
            } else {
                b = b.timeout_read(WATCH_IDLE);
            }
            if let Some(tls) = &cfg.tls {
                b = b.tls_config(Arc::clone(&tls.config));
            }
            b.build()
        };
        Etcd {
            agent: build(Some(CALL_TIMEOUT)),
            watch_agent: build(None),
            endpoints: cfg.endpoints.clone(),
            current: AtomicUsize::new(0),
        }
    }

    /// POSTs `body` to `path` at each endpoint in turn until one answers.
    fn call(
        &self,
        agent: &ureq::Agent,
        path: &str,
        body: &Value,
    ) -> Result<ureq::Response, EtcdError> {
        let n = self.endpoints.len();
        let first = self.current.load(Ordering::Relaxed);
        let mut last = String::new();
        for i in 0..n {
            let at = (first + i) % n;
            let url = format!("{}{path}", self.endpoints[at]);
            match agent
                .post(&url)
                .set("Content-Type", "application/json")
                .send_string(&body.to_string())
            {
                Ok(r) => {
                    self.current.store(at, Ordering::Relaxed);
                    return Ok(r);
                }
                // etcd's own errors (no leader, timed out) come as HTTP errors with a JSON
                // body: another member may do better.
                Err(ureq::Error::Status(code, r)) => {
                    let text = r.into_string().unwrap_or_default();
                    last = format!("{} answered {code}: {}", self.endpoints[at], message(&text));
                    if i + 1 == n {
                        return Err(EtcdError::Refused(last));
                    }
                }
                Err(e) => last = format!("{}: {e}", self.endpoints[at]),
            }
        }
        Err(EtcdError::Unreachable(last))
    }

    fn call_json<T: for<'a> Deserialize<'a>>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<T, EtcdError> {
        let r = self.call(&self.agent, path, body)?;
        let mut text = String::new();
        r.into_reader()
            .take(MAX_BODY)
            .read_to_string(&mut text)
            .map_err(|e| EtcdError::Unreachable(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| EtcdError::Protocol(format!("{path}: {e}")))
    }

    /// Everything under `prefix`, and the store's revision it was read at (linearizable: a
    /// member without a quorum does not answer). Read in pages, all at that revision.
    pub fn range_prefix(&self, prefix: &str) -> Result<(Vec<Event>, i64), EtcdError> {
        let end = b64(&range_end(prefix));
        let mut from = prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut out = Vec::new();
        loop {
            let mut body = json!({"key": b64(&from), "range_end": end, "limit": "10000"});
            if revision > 0 {
                body["revision"] = json!(revision.to_string());
            }
            let r: RangeResponse = self.call_json("/v3/kv/range", &body)?;
            if revision == 0 {
                revision = r.header.revision;
            }
            let last = r.kvs.last().map(|kv| kv.key.clone());
            for kv in r.kvs {
                out.push(kv.into_event(false)?);
            }
            match (r.more, last) {
                (true, Some(k)) => {
                    from = unb64(&k)?;
                    from.push(0);
                }
                _ => return Ok((out, revision)),
            }
        }
    }

    /// A quorum read of one key: whether this host can reach a working etcd now.
    pub fn healthy(&self, key: &str) -> Result<i64, EtcdError> {
        let r: RangeResponse = self.call_json(
            "/v3/kv/range",
            &json!({"key": b64(key.as_bytes()), "count_only": true}),
        )?;
        Ok(r.header.revision)
    }

    /// Puts `value` at `key` unless the key exists.
    pub fn create(&self, key: &str, value: &str) -> Result<Created, EtcdError> {
        let k = b64(key.as_bytes());
        let body = json!({
            "compare": [{"key": k, "target": "CREATE", "create_revision": "0", "result": "EQUAL"}],
            "success": [{"request_put": {"key": k, "value": b64(value.as_bytes())}}],
            "failure": [{"request_range": {"key": k}}],
        });
        let r: TxnResponse = self.call_json("/v3/kv/txn", &body)?;
        if r.succeeded {
            return Ok(Created::Yes {
                revision: r.header.revision,
            });
        }
        let kv = r
            .responses
            .into_iter()
            .next()
            .and_then(|v| v.get("response_range")?.get("kvs")?.get(0).cloned())
            .ok_or_else(|| EtcdError::Protocol("a failed create without the record".into()))?;
        let kv: Kv = serde_json::from_value(kv).map_err(|e| EtcdError::Protocol(e.to_string()))?;
        Ok(Created::Exists {
            value: unb64(&kv.value)?,
            mod_revision: kv.mod_revision,
        })
    }

    /// Puts `value` at `key` if its last change is still `mod_revision`; false if not.
    pub fn put_if(&self, key: &str, value: &str, mod_revision: i64) -> Result<bool, EtcdError> {
        let k = b64(key.as_bytes());
        let body = json!({
            "compare": [{"key": k, "target": "MOD", "mod_revision": mod_revision.to_string(), "result": "EQUAL"}],
            "success": [{"request_put": {"key": k, "value": b64(value.as_bytes())}}],
        });
        let r: TxnResponse = self.call_json("/v3/kv/txn", &body)?;
        Ok(r.succeeded)
    }

    /// Deletes `key` if its last change is still `mod_revision`; false if not.
    pub fn delete_if(&self, key: &str, mod_revision: i64) -> Result<bool, EtcdError> {
        let k = b64(key.as_bytes());
        let body = json!({
            "compare": [{"key": k, "target": "MOD", "mod_revision": mod_revision.to_string(), "result": "EQUAL"}],
            "success": [{"request_delete_range": {"key": k}}],
        });
        let r: TxnResponse = self.call_json("/v3/kv/txn", &body)?;
        Ok(r.succeeded)
    }

    /// Watches everything under `prefix` from `start_revision`.
    pub fn watch(&self, prefix: &str, start_revision: i64) -> Result<Watch, EtcdError> {
        let body = json!({"create_request": {
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&range_end(prefix)),
            "start_revision": start_revision.to_string(),
        }});
        let r = self.call(&self.watch_agent, "/v3/watch", &body)?;
        Ok(Watch {
            lines: BufReader::new(Box::new(r.into_reader())),
        })
    }
}

/// etcd's error message out of its JSON error body (`{"error": ..., "message": ...}`).
fn message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .or(v.get("error"))?
                .as_str()
                .map(String::from)
        })
        .unwrap_or_else(|| body.chars().take(200).collect())
}

/// An open watch: batches of events, as etcd sends them.
pub struct Watch {
    lines: BufReader<Box<dyn Read + Send + Sync>>,
}

/// What a watch said next.
#[derive(Debug)]
pub enum WatchNews {
    /// Changes up to `revision` (none: the watch's creation, or progress).
    Events { events: Vec<Event>, revision: i64 },
    /// etcd ended the watch: its start revision was compacted away. Read everything again.
    Compacted { revision: i64 },
}

impl Watch {
    /// Blocks until etcd says something; an error when the stream breaks or stays silent
    /// for [`WATCH_IDLE`].
    pub fn next_news(&mut self) -> Result<WatchNews, EtcdError> {
        let mut line = String::new();
        let n = (&mut self.lines)
            .take(MAX_WATCH_LINE)
            .read_line(&mut line)
            .map_err(|e| EtcdError::Unreachable(format!("watch: {e}")))?;
        if n == 0 {
            return Err(EtcdError::Unreachable(
                "watch: etcd closed the stream".into(),
            ));
        }
        parse_watch_line(&line)
    }
}

/// One line of a watch stream (one JSON object), as etcd's gateway writes it.
pub fn parse_watch_line(line: &str) -> Result<WatchNews, EtcdError> {
    let w: WatchLine =
        serde_json::from_str(line).map_err(|e| EtcdError::Protocol(format!("watch: {e}")))?;
    if let Some(e) = w.error {
        return Err(EtcdError::Refused(format!("watch: {e}")));
    }
    let r = w
        .result
        .ok_or_else(|| EtcdError::Protocol("watch: neither result nor error".into()))?;
    if r.canceled {
        return Ok(WatchNews::Compacted {
            revision: r.compact_revision,
        });
    }
    let mut events = Vec::with_capacity(r.events.len());
    for e in r.events {
        events.push(e.kv.into_event(e.kind == "DELETE")?);
    }
    Ok(WatchNews::Events {
        events,
        revision: r.header.revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_ends_after_its_last_key() {
        assert_eq!(range_end("/ntp-offset/"), b"/ntp-offset0".to_vec());
        assert_eq!(range_end("a\u{7f}"), b"a\x80".to_vec());
    }

    /// The gateway's own words (etcd 3.4.23, recorded): numbers as strings, PUT left out.
    #[test]
    fn watch_lines_as_etcd_writes_them() {
        let text = concat!(
            r#"{"result":{"header":{"cluster_id":"3249","member_id":"3319","revision":"2","raft_term":"2"},"created":true}}"#,
            "\n",
            r#"{"result":{"header":{"revision":"2"},"events":[{"kv":{"key":"L3QvYQ==","create_revision":"2","mod_revision":"2","version":"1","value":"djE="}}]}}"#,
            "\n",
            r#"{"result":{"header":{"revision":"3"},"events":[{"type":"DELETE","kv":{"key":"L3QvYQ==","mod_revision":"3"}}]}}"#,
            "\n",
            r#"{"result":{"header":{"revision":"9"},"canceled":true,"compact_revision":"5"}}"#,
            "\n",
        );
        let mut w = Watch {
            lines: BufReader::new(Box::new(std::io::Cursor::new(text.as_bytes().to_vec()))),
        };
        assert!(
            matches!(w.next_news().unwrap(), WatchNews::Events { events, revision: 2 } if events.is_empty())
        );
        match w.next_news().unwrap() {
            WatchNews::Events { events, revision } => {
                assert_eq!(revision, 2);
                assert_eq!(
                    events,
                    vec![Event::Put {
                        key: "/t/a".into(),
                        value: b"v1".to_vec(),
                        mod_revision: 2
                    }]
                );
            }
            n => panic!("{n:?}"),
        }
        match w.next_news().unwrap() {
            WatchNews::Events { events, .. } => assert_eq!(
                events,
                vec![Event::Delete {
                    key: "/t/a".into(),
                    mod_revision: 3
                }]
            ),
            n => panic!("{n:?}"),
        }
        assert!(matches!(
            w.next_news().unwrap(),
            WatchNews::Compacted { revision: 5 }
        ));
        assert!(matches!(w.next_news(), Err(EtcdError::Unreachable(_))));
    }

    #[test]
    fn a_garbled_watch_line_is_an_error_not_a_panic() {
        for line in [
            "not json\n",
            "{}\n",
            r#"{"result":{"events":[{"kv":{"key":"%%%"}}]}}"#,
        ] {
            let mut w = Watch {
                lines: BufReader::new(Box::new(std::io::Cursor::new(
                    format!("{line}\n").into_bytes(),
                ))),
            };
            assert!(w.next_news().is_err(), "{line}");
        }
    }
}
