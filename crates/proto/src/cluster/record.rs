//! What a cluster keeps in its store (etcd) for one balanced spread group, as keys and values.
//!
//! Under the configured prefix (default `/ntp-offset`), version 1:
//!
//! ```text
//! PREFIX/v1/groups/GROUP/views/VIEW      -> "OFFSET_NS"          the view's offset, once
//! PREFIX/v1/groups/GROUP/clients/ADDR    -> "VIEW SEEN_UNIX_S"   a client's view, last seen
//! ```
//!
//! Values are short ASCII text, so `etcdctl get --prefix` reads like the table file. A view's
//! offset is recorded by the first host that serves it and never rewritten: a host whose
//! config gives that name another offset refuses the group rather than serve it. Group and
//! view names are the config's (letters, digits, `-`, `_`, `.`: no `/` or space).

use std::fmt;
use std::net::IpAddr;

use crate::view::{canonical_ip, valid_name};

/// The layout's version: a later layout lives beside this one under its own prefix.
pub const LAYOUT: &str = "v1";

/// One key of a cluster's store, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    /// A group's view and its offset.
    View { group: String, view: String },
    /// A client's record in a group.
    Client { group: String, client: IpAddr },
}

/// A client's record: its view, and when a host last saw it ask (coarsely: see
/// [`super::copy::REFRESH_S`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRecord {
    pub view: String,
    pub seen_s: u64,
}

/// Why a key or value is not one of ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Not under the prefix and layout version.
    OutsidePrefix,
    /// Under the prefix, but no key this layout has.
    UnknownKey,
    BadAddress,
    BadName,
    /// A value that is not the key's format.
    BadValue,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            RecordError::OutsidePrefix => "not under the cluster's prefix",
            RecordError::UnknownKey => "not a key of layout v1",
            RecordError::BadAddress => "not an IP address",
            RecordError::BadName => "not a group or view name",
            RecordError::BadValue => "a value not in its key's format",
        })
    }
}

impl std::error::Error for RecordError {}

/// Every key of one group starts with this.
pub fn group_prefix(prefix: &str, group: &str) -> String {
    format!("{}/{LAYOUT}/groups/{group}/", prefix.trim_end_matches('/'))
}

/// Every key of the cluster starts with this.
pub fn cluster_prefix(prefix: &str) -> String {
    format!("{}/{LAYOUT}/groups/", prefix.trim_end_matches('/'))
}

impl Key {
    pub fn encode(&self, prefix: &str) -> String {
        match self {
            Key::View { group, view } => format!("{}views/{view}", group_prefix(prefix, group)),
            Key::Client { group, client } => {
                format!(
                    "{}clients/{}",
                    group_prefix(prefix, group),
                    canonical_ip(*client)
                )
            }
        }
    }

    pub fn parse(prefix: &str, key: &str) -> Result<Key, RecordError> {
        let rest = key
            .strip_prefix(&cluster_prefix(prefix))
            .ok_or(RecordError::OutsidePrefix)?;
        let mut parts = rest.split('/');
        let (Some(group), Some(kind), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(RecordError::UnknownKey);
        };
        if !valid_name(group) {
            return Err(RecordError::BadName);
        }
        let group = group.to_string();
        match kind {
            "views" if valid_name(name) => Ok(Key::View {
                group,
                view: name.to_string(),
            }),
            "views" => Err(RecordError::BadName),
            "clients" => {
                let client: IpAddr = name.parse().map_err(|_| RecordError::BadAddress)?;
                // One client, one key: a v4-mapped IPv6 spelling is not a second record.
                if canonical_ip(client).to_string() != name {
                    return Err(RecordError::BadAddress);
                }
                Ok(Key::Client { group, client })
            }
            _ => Err(RecordError::UnknownKey),
        }
    }
}

/// A view's offset value: nanoseconds, decimal.
pub fn encode_offset(offset_ns: i64) -> String {
    offset_ns.to_string()
}

pub fn parse_offset(value: &[u8]) -> Result<i64, RecordError> {
    let s = std::str::from_utf8(value).map_err(|_| RecordError::BadValue)?;
    if s.is_empty() || s.starts_with('+') || s.len() > 20 {
        return Err(RecordError::BadValue);
    }
    s.parse().map_err(|_| RecordError::BadValue)
}

impl ClientRecord {
    pub fn encode(&self) -> String {
        format!("{} {}", self.view, self.seen_s)
    }

    pub fn parse(value: &[u8]) -> Result<ClientRecord, RecordError> {
        let s = std::str::from_utf8(value).map_err(|_| RecordError::BadValue)?;
        let (view, seen) = s.split_once(' ').ok_or(RecordError::BadValue)?;
        if !valid_name(view) || seen.is_empty() || !seen.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RecordError::BadValue);
        }
        Ok(ClientRecord {
            view: view.to_string(),
            seen_s: seen.parse().map_err(|_| RecordError::BadValue)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: &str = "/ntp-offset";

    /// The layout, byte for byte: what `etcdctl get --prefix /ntp-offset` shows.
    #[test]
    fn keys_and_values_are_the_documented_text() {
        let v = Key::View {
            group: "vms".into(),
            view: "s15".into(),
        };
        assert_eq!(v.encode(P), "/ntp-offset/v1/groups/vms/views/s15");
        let c = Key::Client {
            group: "vms".into(),
            client: "192.0.2.7".parse().unwrap(),
        };
        assert_eq!(c.encode(P), "/ntp-offset/v1/groups/vms/clients/192.0.2.7");
        // A v4-mapped address is the IPv4 client's key.
        let mapped = Key::Client {
            group: "vms".into(),
            client: "::ffff:192.0.2.7".parse().unwrap(),
        };
        assert_eq!(mapped.encode(P), c.encode(P));
        assert_eq!(
            Key::Client {
                group: "g".into(),
                client: "2001:db8::1".parse().unwrap()
            }
            .encode("/x/"),
            "/x/v1/groups/g/clients/2001:db8::1"
        );
        assert_eq!(encode_offset(-15_000_000_000), "-15000000000");
        let r = ClientRecord {
            view: "s15".into(),
            seen_s: 1_796_000_000,
        };
        assert_eq!(r.encode(), "s15 1796000000");
        assert_eq!(ClientRecord::parse(b"s15 1796000000"), Ok(r));
        assert_eq!(parse_offset(b"-15000000000"), Ok(-15_000_000_000));
    }

    #[test]
    fn foreign_and_malformed_keys_and_values_are_told_apart() {
        use RecordError::*;
        for (key, err) in [
            ("/other/v1/groups/vms/views/a", OutsidePrefix),
            ("/ntp-offset/v2/groups/vms/views/a", OutsidePrefix),
            ("/ntp-offset/v1/groups/vms/views", UnknownKey),
            ("/ntp-offset/v1/groups/vms/leases/a", UnknownKey),
            ("/ntp-offset/v1/groups/vms/views/a/b", UnknownKey),
            ("/ntp-offset/v1/groups//views/a", BadName),
            ("/ntp-offset/v1/groups/vms/views/a b", BadName),
            ("/ntp-offset/v1/groups/.vms/views/a", BadName),
            ("/ntp-offset/v1/groups/vms/clients/300.1.1.1", BadAddress),
            (
                "/ntp-offset/v1/groups/vms/clients/::ffff:1.2.3.4",
                BadAddress,
            ),
            ("/ntp-offset/v1/groups/vms/clients/2001:DB8::1", BadAddress),
        ] {
            assert_eq!(Key::parse(P, key), Err(err), "{key}");
        }
        for v in [
            &b""[..],
            b"s15",
            b"s15 ",
            b" 1",
            b"s15 -1",
            b"s15 1 2",
            b"s 15 1",
            b"\xff 1",
        ] {
            assert_eq!(ClientRecord::parse(v), Err(BadValue), "{v:?}");
        }
        for v in [
            &b""[..],
            b"+1",
            b"1.5",
            b"99999999999999999999",
            b"0x10",
            b" 1",
        ] {
            assert_eq!(parse_offset(v), Err(BadValue), "{v:?}");
        }
    }

    proptest! {
        #[test]
        fn every_key_and_value_reads_back_as_written(
            group in "[a-z0-9_-][a-z0-9_.-]{0,19}",
            view in "[A-Za-z0-9_-][A-Za-z0-9_.-]{0,19}",
            v4 in any::<[u8; 4]>(),
            v6 in any::<[u8; 16]>(),
            seen_s in any::<u64>(),
            offset in any::<i64>(),
            prefix in "(/[a-z0-9-]{1,10}){1,3}/?",
        ) {
            let keys = [
                Key::View { group: group.clone(), view: view.clone() },
                Key::Client { group: group.clone(), client: IpAddr::from(v4) },
                Key::Client { group: group.clone(), client: canonical_ip(IpAddr::from(v6)) },
            ];
            for k in keys {
                prop_assert_eq!(Key::parse(&prefix, &k.encode(&prefix)), Ok(k));
            }
            let r = ClientRecord { view, seen_s };
            prop_assert_eq!(ClientRecord::parse(r.encode().as_bytes()), Ok(r));
            prop_assert_eq!(parse_offset(encode_offset(offset).as_bytes()), Ok(offset));
        }

        #[test]
        fn arbitrary_bytes_never_panic(key in ".{0,80}", value in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = Key::parse(P, &key);
            let _ = ClientRecord::parse(&value);
            let _ = parse_offset(&value);
        }
    }
}
