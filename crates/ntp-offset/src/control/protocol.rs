//! The control socket's protocol, version 1 (docs/control.md).
//!
//! A Unix stream socket; one exchange per connection. The client sends one JSON object on one
//! line (at most [`MAX_REQUEST`] bytes, newline included) within [`REQUEST_TIMEOUT`]:
//!
//! ```text
//! {"version":1,"command":"status"}
//! {"version":1,"command":"clients","view":"b"}      ("view" optional)
//! ```
//!
//! The daemon answers with one JSON object on one line and closes:
//!
//! ```text
//! {"version":1,"reply":{"status":{"serve":{...}}}}
//! {"version":1,"reply":{"clients":[{...}, ...]}}
//! {"version":1,"reply":{"error":"unknown command `foo` (status, clients)"}}
//! ```
//!
//! Compatibility: a daemon answers any request whose `version` is at most its own, and says
//! which version it speaks when asked for a newer one; fields are only ever added within a
//! version, so readers ignore fields they do not know.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::status::{ClientEntry, Status};

pub const VERSION: u32 = 1;
/// A request longer than this is refused: real ones are tens of bytes.
pub const MAX_REQUEST: usize = 4096;
/// A client that has not sent its whole request by then is disconnected.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the daemon waits for a client to take its answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u32,
    pub reply: Reply,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Status(Box<Status>),
    Clients(Vec<ClientEntry>),
    Error(String),
}

/// What a request asks, once checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Status,
    Clients { view: Option<String> },
}

/// Why a request is refused: the daemon says this in an error reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    TooLong,
    NotJson(String),
    UnsupportedVersion(u32),
    UnknownCommand(String),
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::TooLong => write!(f, "request longer than {MAX_REQUEST} bytes"),
            RequestError::NotJson(e) => write!(f, "not a request: {e}"),
            RequestError::UnsupportedVersion(v) => write!(
                f,
                "protocol version {v} is not supported: this daemon speaks version {VERSION}"
            ),
            RequestError::UnknownCommand(c) => {
                write!(f, "unknown command `{c}` (status, clients)")
            }
        }
    }
}

/// Parses one request line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<Command, RequestError> {
    if line.len() >= MAX_REQUEST {
        return Err(RequestError::TooLong);
    }
    let r: Request =
        serde_json::from_slice(line).map_err(|e| RequestError::NotJson(e.to_string()))?;
    if r.version == 0 || r.version > VERSION {
        return Err(RequestError::UnsupportedVersion(r.version));
    }
    match r.command.as_str() {
        "status" => Ok(Command::Status),
        "clients" => Ok(Command::Clients { view: r.view }),
        _ => Err(RequestError::UnknownCommand(r.command)),
    }
}

/// The request line a client sends, newline included.
pub fn request_line(command: &Command) -> String {
    let r = match command {
        Command::Status => Request {
            version: VERSION,
            command: "status".into(),
            view: None,
        },
        Command::Clients { view } => Request {
            version: VERSION,
            command: "clients".into(),
            view: view.clone(),
        },
    };
    serde_json::to_string(&r).expect("a request serializes") + "\n"
}

/// The reply line, newline included.
pub fn reply_line(reply: Reply) -> String {
    let e = Envelope {
        version: VERSION,
        reply,
    };
    serde_json::to_string(&e).expect("a reply serializes") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented examples (docs/control.md), byte for byte.
    #[test]
    fn requests_parse_as_documented() {
        assert_eq!(
            parse_request(br#"{"version":1,"command":"status"}"#),
            Ok(Command::Status)
        );
        assert_eq!(
            parse_request(br#"{"version":1,"command":"clients","view":"b"}"#),
            Ok(Command::Clients {
                view: Some("b".into())
            })
        );
        assert_eq!(
            request_line(&Command::Status),
            "{\"version\":1,\"command\":\"status\"}\n"
        );
        assert_eq!(
            parse_request(br#"{"version":2,"command":"status"}"#),
            Err(RequestError::UnsupportedVersion(2))
        );
        assert!(matches!(
            parse_request(br#"{"version":1,"command":"stop"}"#),
            Err(RequestError::UnknownCommand(c)) if c == "stop"
        ));
        assert!(matches!(
            parse_request(b"status"),
            Err(RequestError::NotJson(_))
        ));
        assert_eq!(
            parse_request(&[b' '; MAX_REQUEST]),
            Err(RequestError::TooLong)
        );
    }

    /// The shared vectors (testvectors/control-v1.txt): each request as the daemon reads
    /// it, each answer as a client reads it and writes it back unchanged.
    #[test]
    fn the_shared_vectors_read_as_they_say() {
        let text = include_str!("../../../../testvectors/control-v1.txt");
        let mut seen = 0;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let mut parts = line.splitn(3, ' ');
            let (kind, want, body) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            match kind {
                "request" => {
                    let got = parse_request(body.as_bytes());
                    let name = match &got {
                        Ok(Command::Status) => "status".to_string(),
                        Ok(Command::Clients { view: None }) => "clients".into(),
                        Ok(Command::Clients { view: Some(v) }) => format!("clients:{v}"),
                        Err(RequestError::UnsupportedVersion(_)) => "error:version".into(),
                        Err(RequestError::UnknownCommand(_)) => "error:command".into(),
                        Err(RequestError::NotJson(_)) => "error:json".into(),
                        Err(RequestError::TooLong) => "error:length".into(),
                    };
                    assert_eq!(name, want, "{line}");
                }
                "reply" => {
                    let env: Envelope =
                        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {line}"));
                    let kind = match &env.reply {
                        Reply::Status(_) => "status",
                        Reply::Clients(_) => "clients",
                        Reply::Error(_) => "error",
                    };
                    assert_eq!(kind, want, "{line}");
                    assert_eq!(
                        reply_line(env.reply).trim_end(),
                        body,
                        "written back as read"
                    );
                }
                other => panic!("unknown vector kind {other}"),
            }
            seen += 1;
        }
        assert!(seen >= 10);
    }

    #[test]
    fn an_error_reply_reads_back() {
        let line = reply_line(Reply::Error("no".into()));
        assert_eq!(line, "{\"version\":1,\"reply\":{\"error\":\"no\"}}\n");
        let e: Envelope = serde_json::from_str(&line).unwrap();
        assert!(matches!(e.reply, Reply::Error(m) if m == "no"));
    }
}
