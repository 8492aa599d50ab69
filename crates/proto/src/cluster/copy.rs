//! A host's copy of its cluster's records: filled from a full read of the store, kept up to
//! date by the store's watch events, saved in `state_dir` so a host restarted while the store
//! is out of reach still answers its known clients.
//!
//! The copy is what requests are answered from: a request never waits on the store. Events
//! carry the store's revision; the copy remembers the revision it has seen everything up to,
//! so a watch resumes from the next one and a stale event (older than the record it would
//! replace) is ignored.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use super::record::{parse_offset, ClientRecord, Key};
use crate::view::valid_name;

/// A client's last-seen time in the store is refreshed when it is this stale: one write per
/// client per hour at most from each host that serves it, and `forget_after` (at least an
/// hour) still sees a client active anywhere in the cluster.
pub const REFRESH_S: u64 = 3600;

/// A client's record as the copy has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub view: String,
    pub seen_s: u64,
    /// The store's revision of its last change: a write that must not overwrite somebody
    /// else's is conditional on it.
    pub mod_revision: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupCopy {
    /// View name -> offset (ns), as first recorded.
    pub views: HashMap<String, i64>,
    pub clients: HashMap<IpAddr, Entry>,
}

/// One change in the store, as a watch or a read reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Put {
        key: String,
        value: Vec<u8>,
        mod_revision: i64,
    },
    Delete {
        key: String,
        mod_revision: i64,
    },
}

/// A client whose view the copy changed: its group, and its view now (None: deleted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changed {
    pub group: String,
    pub client: IpAddr,
    pub view: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreCopy {
    prefix: String,
    /// Every event up to this store revision is in the copy.
    pub revision: i64,
    groups: HashMap<String, GroupCopy>,
    /// Keys under the prefix that are not ours, or values not in their format: dropped.
    pub foreign: u64,
}

/// A view whose recorded offset is not the config's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub view: String,
    pub recorded_ns: i64,
    pub configured_ns: i64,
}

impl StoreCopy {
    pub fn new(prefix: &str) -> StoreCopy {
        StoreCopy {
            prefix: prefix.to_string(),
            ..StoreCopy::default()
        }
    }

    pub fn group(&self, group: &str) -> Option<&GroupCopy> {
        self.groups.get(group)
    }

    /// Clients, all groups.
    pub fn clients(&self) -> usize {
        self.groups.values().map(|g| g.clients.len()).sum()
    }

    pub fn client(&self, group: &str, client: IpAddr) -> Option<&Entry> {
        self.groups.get(group)?.clients.get(&client)
    }

    /// Replaces the copy with a full read of the store at `revision` (a resync): returns the
    /// clients whose view differs from the copy's before.
    pub fn reset(&mut self, kvs: Vec<Event>, revision: i64) -> Vec<Changed> {
        let before = std::mem::take(&mut self.groups);
        self.foreign = 0;
        for e in kvs {
            self.apply_one(e, &mut Vec::new());
        }
        self.revision = revision;
        let mut changed = Vec::new();
        for (name, g) in &self.groups {
            for (client, e) in &g.clients {
                let old = before.get(name).and_then(|b| b.clients.get(client));
                if old.map(|o| &o.view) != Some(&e.view) {
                    changed.push(Changed {
                        group: name.clone(),
                        client: *client,
                        view: Some(e.view.clone()),
                    });
                }
            }
        }
        for (name, g) in &before {
            for client in g.clients.keys() {
                if self.client(name, *client).is_none() {
                    changed.push(Changed {
                        group: name.clone(),
                        client: *client,
                        view: None,
                    });
                }
            }
        }
        changed
    }

    /// Watch events up to `revision`; returns the clients whose view changed.
    pub fn apply(&mut self, events: Vec<Event>, revision: i64) -> Vec<Changed> {
        let mut changed = Vec::new();
        for e in events {
            self.apply_one(e, &mut changed);
        }
        self.revision = self.revision.max(revision);
        changed
    }

    fn apply_one(&mut self, e: Event, changed: &mut Vec<Changed>) {
        let (key, value, rev) = match &e {
            Event::Put {
                key,
                value,
                mod_revision,
            } => (key, Some(value), *mod_revision),
            Event::Delete { key, mod_revision } => (key, None, *mod_revision),
        };
        match (Key::parse(&self.prefix, key), value) {
            (Ok(Key::View { group, view }), Some(v)) => match parse_offset(v) {
                Ok(off) => {
                    self.groups
                        .entry(group)
                        .or_default()
                        .views
                        .insert(view, off);
                }
                Err(_) => self.foreign += 1,
            },
            (Ok(Key::View { group, view }), None) => {
                if let Some(g) = self.groups.get_mut(&group) {
                    g.views.remove(&view);
                }
            }
            (Ok(Key::Client { group, client }), Some(v)) => {
                let Ok(r) = ClientRecord::parse(v) else {
                    self.foreign += 1;
                    return;
                };
                let g = self.groups.entry(group.clone()).or_default();
                let old = g.clients.get(&client);
                if old.is_some_and(|o| o.mod_revision > rev) {
                    return;
                }
                if old.map(|o| &o.view) != Some(&r.view) {
                    changed.push(Changed {
                        group,
                        client,
                        view: Some(r.view.clone()),
                    });
                }
                g.clients.insert(
                    client,
                    Entry {
                        view: r.view,
                        seen_s: r.seen_s,
                        mod_revision: rev,
                    },
                );
            }
            (Ok(Key::Client { group, client }), None) => {
                if let Some(g) = self.groups.get_mut(&group) {
                    if g.clients
                        .get(&client)
                        .is_some_and(|o| o.mod_revision <= rev)
                    {
                        g.clients.remove(&client);
                        changed.push(Changed {
                            group,
                            client,
                            view: None,
                        });
                    }
                }
            }
            (Err(_), _) => self.foreign += 1,
        }
    }

    /// The views of `group` recorded with another offset than `configured` gives them.
    pub fn conflicts(&self, group: &str, configured: &[(String, i64)]) -> Vec<Conflict> {
        let Some(g) = self.groups.get(group) else {
            return Vec::new();
        };
        configured
            .iter()
            .filter_map(|(view, off)| {
                let rec = *g.views.get(view)?;
                (rec != *off).then(|| Conflict {
                    view: view.clone(),
                    recorded_ns: rec,
                    configured_ns: *off,
                })
            })
            .collect()
    }

    /// Clients of `group` nobody has seen for longer than `forget_after_s`, with the revision
    /// their delete is conditional on (a refresh meanwhile keeps them).
    pub fn idle(&self, group: &str, now_s: u64, forget_after_s: u64) -> Vec<(IpAddr, i64)> {
        self.groups.get(group).map_or_else(Vec::new, |g| {
            g.clients
                .iter()
                .filter(|(_, e)| now_s.saturating_sub(e.seen_s) > forget_after_s)
                .map(|(c, e)| (*c, e.mod_revision))
                .collect()
        })
    }

    /// The copy as `state_dir` keeps it: a header, the revision, then one line per record.
    pub fn to_text(&self) -> String {
        let mut s = String::from(
            "# ntp-offset cluster copy: the store's records as this host last saw them\n",
        );
        let _ = writeln!(s, "revision {}", self.revision);
        let mut names: Vec<&String> = self.groups.keys().collect();
        names.sort();
        for name in names {
            let g = &self.groups[name];
            let mut views: Vec<_> = g.views.iter().collect();
            views.sort();
            for (v, off) in views {
                let _ = writeln!(s, "view {name} {v} {off}");
            }
            let mut clients: Vec<_> = g.clients.iter().collect();
            clients.sort_by_key(|(c, _)| **c);
            for (c, e) in clients {
                let _ = writeln!(
                    s,
                    "client {name} {c} {} {} {}",
                    e.view, e.seen_s, e.mod_revision
                );
            }
        }
        s
    }

    /// Reads [`Self::to_text`]'s format back: the whole file or an error naming its line.
    pub fn from_text(prefix: &str, text: &str) -> Result<StoreCopy, CopyFileError> {
        let mut copy = StoreCopy::new(prefix);
        let mut revision = None;
        for (i, line) in text.lines().enumerate() {
            let bad = |what| CopyFileError { line: i + 1, what };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            match f.as_slice() {
                ["revision", r] => {
                    revision = Some(r.parse::<i64>().map_err(|_| bad("a bad revision"))?);
                }
                ["view", group, view, off] => {
                    if !valid_name(group) || !valid_name(view) {
                        return Err(bad("a bad group or view name"));
                    }
                    let off = parse_offset(off.as_bytes()).map_err(|_| bad("a bad offset"))?;
                    copy.groups
                        .entry(group.to_string())
                        .or_default()
                        .views
                        .insert(view.to_string(), off);
                }
                ["client", group, client, view, seen, rev] => {
                    if !valid_name(group) || !valid_name(view) {
                        return Err(bad("a bad group or view name"));
                    }
                    let client: IpAddr = client.parse().map_err(|_| bad("a bad address"))?;
                    let seen_s = seen.parse().map_err(|_| bad("a bad last-seen time"))?;
                    let mod_revision = rev.parse().map_err(|_| bad("a bad revision"))?;
                    copy.groups
                        .entry(group.to_string())
                        .or_default()
                        .clients
                        .insert(
                            crate::view::canonical_ip(client),
                            Entry {
                                view: view.to_string(),
                                seen_s,
                                mod_revision,
                            },
                        );
                }
                _ => return Err(bad("not a line of a cluster copy")),
            }
        }
        copy.revision = revision.ok_or(CopyFileError {
            line: 0,
            what: "no revision line",
        })?;
        Ok(copy)
    }
}

/// Why a saved copy cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyFileError {
    pub line: usize,
    pub what: &'static str,
}

impl std::fmt::Display for CopyFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.what)
        } else {
            write!(f, "line {}: {}", self.line, self.what)
        }
    }
}

impl std::error::Error for CopyFileError {}

#[cfg(test)]
mod tests {
    use super::super::record::{encode_offset, Key};
    use super::*;
    use proptest::prelude::*;

    const P: &str = "/ntp-offset";

    fn put_client(group: &str, client: &str, view: &str, seen: u64, rev: i64) -> Event {
        Event::Put {
            key: Key::Client {
                group: group.into(),
                client: client.parse().unwrap(),
            }
            .encode(P),
            value: ClientRecord {
                view: view.into(),
                seen_s: seen,
            }
            .encode()
            .into_bytes(),
            mod_revision: rev,
        }
    }

    fn put_view(group: &str, view: &str, off: i64, rev: i64) -> Event {
        Event::Put {
            key: Key::View {
                group: group.into(),
                view: view.into(),
            }
            .encode(P),
            value: encode_offset(off).into_bytes(),
            mod_revision: rev,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn events_fill_the_copy_and_report_view_changes_only() {
        let mut c = StoreCopy::new(P);
        let ch = c.apply(
            vec![
                put_view("vms", "a", 0, 2),
                put_client("vms", "192.0.2.1", "a", 100, 3),
            ],
            3,
        );
        assert_eq!(c.revision, 3);
        assert_eq!(ch.len(), 1);
        assert_eq!(c.client("vms", ip("192.0.2.1")).unwrap().view, "a");
        // A refresh (same view) is no change; a move is.
        assert!(c
            .apply(vec![put_client("vms", "192.0.2.1", "a", 200, 4)], 4)
            .is_empty());
        assert_eq!(c.client("vms", ip("192.0.2.1")).unwrap().seen_s, 200);
        let ch = c.apply(vec![put_client("vms", "192.0.2.1", "b", 200, 5)], 5);
        assert_eq!(ch[0].view.as_deref(), Some("b"));
        // A stale event (an older revision than the record) is ignored.
        assert!(c
            .apply(vec![put_client("vms", "192.0.2.1", "a", 300, 4)], 6)
            .is_empty());
        assert_eq!(c.client("vms", ip("192.0.2.1")).unwrap().view, "b");
        let ch = c.apply(
            vec![Event::Delete {
                key: Key::Client {
                    group: "vms".into(),
                    client: ip("192.0.2.1"),
                }
                .encode(P),
                mod_revision: 7,
            }],
            7,
        );
        assert_eq!(ch[0].view, None);
        assert!(c.client("vms", ip("192.0.2.1")).is_none());
    }

    #[test]
    fn foreign_keys_and_bad_values_are_dropped_and_counted() {
        let mut c = StoreCopy::new(P);
        c.apply(
            vec![
                Event::Put {
                    key: "/ntp-offset/v1/groups/vms/clients/not-an-ip".into(),
                    value: b"a 1".to_vec(),
                    mod_revision: 2,
                },
                Event::Put {
                    key: Key::Client {
                        group: "vms".into(),
                        client: ip("192.0.2.1"),
                    }
                    .encode(P),
                    value: b"garbage".to_vec(),
                    mod_revision: 3,
                },
                put_view("vms", "a", 0, 4),
                Event::Put {
                    key: Key::View {
                        group: "vms".into(),
                        view: "b".into(),
                    }
                    .encode(P),
                    value: b"fifteen".to_vec(),
                    mod_revision: 5,
                },
            ],
            5,
        );
        assert_eq!(c.foreign, 3);
        assert_eq!(c.group("vms").unwrap().views.len(), 1);
        assert!(c.client("vms", ip("192.0.2.1")).is_none());
    }

    #[test]
    fn a_resync_reports_what_differs_and_what_went() {
        let mut c = StoreCopy::new(P);
        c.apply(
            vec![
                put_client("vms", "192.0.2.1", "a", 1, 2),
                put_client("vms", "192.0.2.2", "a", 1, 3),
            ],
            3,
        );
        let mut ch = c.reset(
            vec![
                put_client("vms", "192.0.2.1", "a", 5, 9),
                put_client("vms", "192.0.2.3", "b", 1, 8),
            ],
            10,
        );
        ch.sort_by_key(|c| c.client);
        assert_eq!(c.revision, 10);
        assert_eq!(
            ch,
            vec![
                Changed {
                    group: "vms".into(),
                    client: ip("192.0.2.2"),
                    view: None
                },
                Changed {
                    group: "vms".into(),
                    client: ip("192.0.2.3"),
                    view: Some("b".into())
                },
            ]
        );
    }

    #[test]
    fn conflicts_name_views_recorded_with_another_offset() {
        let mut c = StoreCopy::new(P);
        c.apply(
            vec![
                put_view("vms", "a", 0, 2),
                put_view("vms", "b", 15_000_000_000, 3),
            ],
            3,
        );
        let ours = [
            ("a".to_string(), 0),
            ("b".to_string(), 16_000_000_000),
            ("c".to_string(), 30_000_000_000),
        ];
        assert_eq!(
            c.conflicts("vms", &ours),
            vec![Conflict {
                view: "b".into(),
                recorded_ns: 15_000_000_000,
                configured_ns: 16_000_000_000
            }]
        );
        assert!(c.conflicts("other", &ours).is_empty());
    }

    #[test]
    fn idle_clients_come_with_the_revision_their_delete_needs() {
        let mut c = StoreCopy::new(P);
        c.apply(
            vec![
                put_client("vms", "192.0.2.1", "a", 1_000, 2),
                put_client("vms", "192.0.2.2", "a", 90_000, 3),
            ],
            3,
        );
        assert_eq!(c.idle("vms", 100_000, 86_400), vec![(ip("192.0.2.1"), 2)]);
    }

    #[test]
    fn a_saved_copy_names_the_line_it_cannot_read() {
        for (text, line) in [
            ("revision x\n", 1),
            ("revision 1\nview vms a\n", 2),
            ("revision 1\n\nclient vms 1.2.3 a 1 2\n", 3),
            ("revision 1\nclient vms 1.2.3.4 a/b 1 2\n", 2),
            ("revision 1\nwhatever\n", 2),
            ("view vms a 0\n", 0),
        ] {
            assert_eq!(
                StoreCopy::from_text(P, text).unwrap_err().line,
                line,
                "{text}"
            );
        }
    }

    proptest! {
        /// Whatever the events, the saved copy reads back as the same copy.
        #[test]
        fn a_saved_copy_reads_back_whole(
            clients in proptest::collection::vec(
                (any::<[u8; 4]>(), 0usize..4, any::<u64>(), 1i64..1_000_000), 0..50),
            offsets in proptest::collection::vec(any::<i64>(), 4),
        ) {
            let views = ["a", "b", "c-1", "d.2"];
            let mut c = StoreCopy::new(P);
            let mut events: Vec<Event> =
                views.iter().zip(&offsets).map(|(v, o)| put_view("g", v, *o, 1)).collect();
            for (a, v, seen, rev) in &clients {
                events.push(put_client("g", &IpAddr::from(*a).to_string(), views[*v], *seen, *rev));
            }
            c.apply(events, 2_000_000);
            let back = StoreCopy::from_text(P, &c.to_text()).unwrap();
            prop_assert_eq!(back, c);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "(revision|view|client| |[0-9a-z.:]|\n){0,200}") {
            let _ = StoreCopy::from_text(P, &text);
        }
    }
}
