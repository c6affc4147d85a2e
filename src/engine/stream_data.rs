//! A stream's data and its entry IDs: [`Stream`] (entries and consumer groups), [`Group`], the
//! [`Id`] and its text form, and an entry as Redis replies it. What both [`super::stream`] (plain
//! stream commands) and [`super::stream_group`] (consumer groups) work on; a leaf, importing
//! neither.
use std::collections::BTreeMap;

use bytes::Bytes;

use super::Call;

/// A stream entry ID: (milliseconds, sequence).
pub(crate) type Id = (u64, u64);
#[derive(Debug, Clone, Default)]
pub(crate) struct Stream {
    pub(crate) entries: BTreeMap<Id, Vec<Bytes>>,
    pub(super) last: Id,
    pub(super) groups: BTreeMap<Bytes, Group>,
}

impl Stream {
    pub(crate) fn size(&self) -> usize {
        self.entries
            .values()
            .take(16)
            .map(|f| f.iter().map(|b| b.len() + 16).sum::<usize>() + 48)
            .sum::<usize>()
            .checked_div(self.entries.len().min(16))
            .map_or(0, |avg| avg * self.entries.len())
    }
}

/// One consumer group: what it has delivered, and to whom, until acknowledged.
#[derive(Debug, Clone, Default)]
pub(crate) struct Group {
    pub(super) last_delivered: Id,
    /// Pending entries: ID → consumer.
    pub(super) pending: BTreeMap<Id, Bytes>,
    /// Consumers by name, as Redis lists them (created by their first read).
    pub(super) consumers: BTreeMap<Bytes, ()>,
}

pub(super) fn fmt_id(id: Id) -> String {
    format!("{}-{}", id.0, id.1)
}

/// `ms[-seq]`; a missing seq is `missing_seq`. None if malformed.
pub(super) fn parse_id(b: &[u8], missing_seq: u64) -> Option<Id> {
    let s = std::str::from_utf8(b).ok()?;
    let (ms, seq) = match s.split_once('-') {
        Some((ms, seq)) => (ms, Some(seq)),
        None => (s, None),
    };
    let ms: u64 = ms.parse().ok().filter(|_| !ms.starts_with('+'))?;
    let seq = match seq {
        Some(q) => q.parse().ok().filter(|_| !q.starts_with('+'))?,
        None => missing_seq,
    };
    Some((ms, seq))
}

pub(super) fn next(id: Id) -> Option<Id> {
    match id.1.checked_add(1) {
        Some(s) => Some((id.0, s)),
        None => Some((id.0.checked_add(1)?, 0)),
    }
}

/// One entry as Redis replies it: [id, [field, value, ...]].
pub(super) fn reply_entry(c: &mut Call, id: Id, fields: &[Bytes]) {
    c.out.array(2);
    c.out.bulk(fmt_id(id).as_bytes());
    c.out.array(fields.len());
    for f in fields {
        c.out.bulk(f);
    }
}
