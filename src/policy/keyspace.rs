//! Keyspace notifications in a tenant's namespace: which upstream names a prefixed tenant's
//! `__keyspace@0__:…` / `__keyevent@0__:…` subscriptions stand for, how a notification reads in
//! the tenant's terms, and the tenant's own `notify-keyspace-events` classes.
//!
//! A prefixed tenant has one database, `0`, whatever upstream database its keys live in (`db`, or
//! the URL's). Its channel `__keyspace@0__:k` is the upstream's `__keyspace@D__:<prefix>k`, and
//! its `__keyevent@0__:e` is the upstream's `__keyevent@D__:e`, shared by every tenant of that
//! database, whose payload (a key name) must start with the tenant's prefix and loses it. A
//! pattern that could match a notification channel also stands for `__keyspace@D__:<prefix>*` and
//! `__keyevent@D__:*`, with the client's own pattern checked again on the name as the tenant sees
//! it. Everything here is a pure function of names; the hub ([`crate::pubsub`]) applies it.
//!
//! The upstream decides what is sent at all (its own `notify-keyspace-events`, which the
//! operator sets); a tenant's classes ([`Events`]) choose, within that, what reaches the tenant,
//! as Redis's do on one server. Another tenant's keys never reach it: their upstream names carry
//! another prefix, which a key name of this tenant cannot start with (no prefix starts another).
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::atomic::{AtomicU32, Ordering};

use super::glob;

// Redis's NOTIFY_* bits (server.h), so the text form is Redis's own.
const KEYSPACE: u32 = 1 << 0;
const KEYEVENT: u32 = 1 << 1;
const GENERIC: u32 = 1 << 2;
const STRING: u32 = 1 << 3;
const LIST: u32 = 1 << 4;
const SET: u32 = 1 << 5;
const HASH: u32 = 1 << 6;
const ZSET: u32 = 1 << 7;
const EXPIRED: u32 = 1 << 8;
const EVICTED: u32 = 1 << 9;
const STREAM: u32 = 1 << 10;
const KEY_MISS: u32 = 1 << 11;
const MODULE: u32 = 1 << 13;
const NEW: u32 = 1 << 14;
/// `A`: every class but key-miss and new-key, as in Redis.
const ALL: u32 = GENERIC | STRING | LIST | SET | HASH | ZSET | EXPIRED | EVICTED | STREAM | MODULE;

/// Redis's error for a class character it does not know (CONFIG SET wraps it).
pub const INVALID_CLASS: &str = "Invalid event class character. Use 'Ag$lshzxeKEtmdn'.";

/// `notify-keyspace-events` text to flags, as Redis's `keyspaceEventsStringToFlags`.
pub fn parse(classes: &[u8]) -> Result<u32, &'static str> {
    let mut flags = 0;
    for c in classes {
        flags |= match c {
            b'A' => ALL,
            b'g' => GENERIC,
            b'$' => STRING,
            b'l' => LIST,
            b's' => SET,
            b'h' => HASH,
            b'z' => ZSET,
            b'x' => EXPIRED,
            b'e' => EVICTED,
            b'K' => KEYSPACE,
            b'E' => KEYEVENT,
            b't' => STREAM,
            b'm' => KEY_MISS,
            b'd' => MODULE,
            b'n' => NEW,
            _ => return Err(INVALID_CLASS),
        };
    }
    Ok(flags)
}

/// Flags to text, as Redis's `keyspaceEventsFlagsToString` prints them (`n` is not shown beside
/// `A`, though it is kept, as in Redis).
pub fn render(flags: u32) -> String {
    let mut out = String::new();
    if flags & ALL == ALL {
        out.push('A');
    } else {
        for (bit, c) in [
            (GENERIC, 'g'),
            (STRING, '$'),
            (LIST, 'l'),
            (SET, 's'),
            (HASH, 'h'),
            (ZSET, 'z'),
            (EXPIRED, 'x'),
            (EVICTED, 'e'),
            (STREAM, 't'),
            (MODULE, 'd'),
            (NEW, 'n'),
        ] {
            if flags & bit != 0 {
                out.push(c);
            }
        }
    }
    for (bit, c) in [(KEYSPACE, 'K'), (KEYEVENT, 'E'), (KEY_MISS, 'm')] {
        if flags & bit != 0 {
            out.push(c);
        }
    }
    out
}

/// The class of an event, by the name Redis gives it (notify.c's callers). A name Redis's core
/// does not send is a module's (`d`).
fn class(event: &[u8]) -> u32 {
    match event {
        b"del" | b"expire" | b"rename_from" | b"rename_to" | b"move_from" | b"move_to"
        | b"copy_to" | b"restore" | b"persist" => GENERIC,
        b"set" | b"setrange" | b"incrby" | b"incrbyfloat" | b"append" | b"setbit" | b"pfadd" => {
            STRING
        }
        b"lpush" | b"rpush" | b"lpop" | b"rpop" | b"linsert" | b"lset" | b"lrem" | b"ltrim"
        | b"sortstore" => LIST,
        b"sadd" | b"srem" | b"spop" | b"sinterstore" | b"sunionstore" | b"sdiffstore" => SET,
        b"hset" | b"hdel" | b"hincrby" | b"hincrbyfloat" | b"hexpire" | b"hpersist"
        | b"hexpired" => HASH,
        b"zadd" | b"zincr" | b"zrem" | b"zremrangebyscore" | b"zremrangebyrank"
        | b"zremrangebylex" | b"zunionstore" | b"zinterstore" | b"zdiffstore" | b"zrangestore"
        | b"zpopmin" | b"zpopmax" | b"georadiusstore" | b"geosearchstore" => ZSET,
        b"expired" => EXPIRED,
        b"evicted" => EVICTED,
        b"new" => NEW,
        b"keymiss" => KEY_MISS,
        e if e.starts_with(b"x") => STREAM,
        _ => MODULE,
    }
}

/// A tenant's `notify-keyspace-events`, shared by its sessions and the hub's deliveries: set by
/// configuration (`tenant.notify_keyspace_events`) and by the tenant's CONFIG SET, kept across
/// a reload, lost at restart (as Redis's CONFIG SET without REWRITE).
#[derive(Debug, Default)]
pub struct Events(AtomicU32);

impl Events {
    pub fn new(flags: u32) -> Self {
        Events(AtomicU32::new(flags))
    }

    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, flags: u32) {
        self.0.store(flags, Ordering::Relaxed);
    }

    /// Whether an `event` notification on a keyspace (`true`) or keyevent channel reaches the
    /// tenant now, as Redis's `notifyKeyspaceEvent` decides on one server.
    pub fn admits(&self, keyspace: bool, event: &[u8]) -> bool {
        let flags = self.get();
        let channel = if keyspace { KEYSPACE } else { KEYEVENT };
        flags & channel != 0 && flags & class(event) != 0
    }
}

const KEYSPACE_CHANNEL: &[u8] = b"__keyspace@";
const KEYEVENT_CHANNEL: &[u8] = b"__keyevent@";
/// The database a prefixed tenant sees: its only one.
const TENANT_SPACE: &[u8] = b"__keyspace@0__:";
const TENANT_EVENT: &[u8] = b"__keyevent@0__:";

/// What an upstream name a tenant's subscription stands for carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carries {
    /// The tenant's own channels (prefixed names).
    Own,
    /// Keyspace notifications of the tenant's keys.
    Keyspace,
    /// Key-event notifications, every tenant's: the payload says whose.
    Keyevent,
}

fn channel_of(kind: &[u8], db: u32) -> BytesMut {
    let mut out = BytesMut::with_capacity(32);
    out.put_slice(kind);
    out.put_slice(db.to_string().as_bytes());
    out.put_slice(b"__:");
    out
}

/// The upstream names a prefixed tenant's SUBSCRIBE (`pattern` false) or PSUBSCRIBE of `name`
/// stands for, its keys being in upstream database `db`; the first is the one that counts for
/// PUBSUB NUMSUB. Names outside its database 0's notifications are its own channels, prefixed.
pub fn upstream_names(prefix: &[u8], db: u32, pattern: bool, name: &[u8]) -> Vec<(Bytes, Carries)> {
    if !pattern {
        if let Some(key) = name.strip_prefix(TENANT_SPACE) {
            let mut n = channel_of(KEYSPACE_CHANNEL, db);
            n.put_slice(prefix);
            n.put_slice(key);
            return vec![(n.freeze(), Carries::Keyspace)];
        }
        if let Some(event) = name.strip_prefix(TENANT_EVENT) {
            let mut n = channel_of(KEYEVENT_CHANNEL, db);
            n.put_slice(event);
            return vec![(n.freeze(), Carries::Keyevent)];
        }
        return vec![(super::pubsub::channel(prefix, name), Carries::Own)];
    }
    let mut out = vec![(glob::confine(prefix, name), Carries::Own)];
    if may_match_from(name, TENANT_SPACE) {
        let mut n = channel_of(KEYSPACE_CHANNEL, db);
        glob::escape_into(&mut n, prefix);
        n.put_u8(b'*');
        out.push((n.freeze(), Carries::Keyspace));
    }
    if may_match_from(name, TENANT_EVENT) {
        let mut n = channel_of(KEYEVENT_CHANNEL, db);
        n.put_u8(b'*');
        out.push((n.freeze(), Carries::Keyevent));
    }
    out
}

/// A keyspace notification of upstream `channel` as the tenant sees it: `__keyspace@0__:<key>`,
/// or `None` if the key is not the tenant's (or not in its database).
pub fn keyspace_view(prefix: &[u8], db: u32, channel: &[u8]) -> Option<Bytes> {
    let head = channel_of(KEYSPACE_CHANNEL, db);
    let key = channel.strip_prefix(&head[..])?.strip_prefix(prefix)?;
    let mut out = BytesMut::with_capacity(TENANT_SPACE.len() + key.len());
    out.put_slice(TENANT_SPACE);
    out.put_slice(key);
    Some(out.freeze())
}

/// A key-event notification (upstream `channel`, `payload` the key) as the tenant sees it:
/// `__keyevent@0__:<event>` and the key without the prefix, or `None` if the key is not the
/// tenant's. Also the event, for the tenant's classes.
pub fn keyevent_view<'a>(
    prefix: &[u8],
    db: u32,
    channel: &'a [u8],
    payload: &'a [u8],
) -> Option<(Bytes, &'a [u8], &'a [u8])> {
    let head = channel_of(KEYEVENT_CHANNEL, db);
    let event = channel.strip_prefix(&head[..])?;
    let key = payload.strip_prefix(prefix)?;
    let mut out = BytesMut::with_capacity(TENANT_EVENT.len() + event.len());
    out.put_slice(TENANT_EVENT);
    out.put_slice(event);
    Some((out.freeze(), key, event))
}

/// Whether some string starting with `start` may match the glob `pattern`. It may say yes where
/// the answer is no (after a `*`, or at an unterminated class): that only costs an upstream
/// subscription whose messages the client's own pattern then turns away; it never says no where
/// a match exists.
fn may_match_from(pattern: &[u8], start: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    while i < start.len() {
        let Some(&c) = pattern.get(p) else {
            return false;
        };
        match c {
            b'*' => return true,
            b'?' => p += 1,
            b'\\' if p + 1 < pattern.len() => {
                if pattern[p + 1] != start[i] {
                    return false;
                }
                p += 2;
            }
            b'[' => {
                // The class's extent, escapes included; its verdict is the matcher's own.
                let mut q = p + 1;
                while q < pattern.len() && pattern[q] != b']' {
                    q += if pattern[q] == b'\\' { 2 } else { 1 };
                }
                if q >= pattern.len() {
                    return true;
                }
                if !glob::matches(&pattern[p..=q], &start[i..=i]) {
                    return false;
                }
                p = q + 1;
            }
            c => {
                if c != start[i] {
                    return false;
                }
                p += 1;
            }
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_read_and_print_as_redis_does() {
        // Checked against redis-server 7.0's CONFIG SET / CONFIG GET.
        for (set, get) in [
            ("KEAn", "AKE"),
            ("KEA", "AKE"),
            ("Egx", "gxE"),
            ("g$lshzxetdn", "A"),
            ("KEAm", "AKEm"),
            ("Ex", "xE"),
            ("", ""),
        ] {
            assert_eq!(render(parse(set.as_bytes()).unwrap()), get, "{set}");
        }
        assert_eq!(parse(b"KEQ"), Err(INVALID_CLASS));
        let e = Events::new(parse(b"Kx").unwrap());
        assert!(e.admits(true, b"expired"));
        assert!(!e.admits(false, b"expired"), "no E");
        assert!(!e.admits(true, b"set"), "no $");
        e.set(parse(b"E$").unwrap());
        assert!(e.admits(false, b"set") && !e.admits(false, b"del"));
        assert!(!Events::new(parse(b"KEA").unwrap()).admits(true, b"new"));
        assert!(Events::new(parse(b"KEA").unwrap()).admits(true, b"xgroup-create"));
    }

    #[test]
    fn channels_map_to_the_tenants_own_notifications() {
        let names = |pattern, n: &str| upstream_names(b"t:", 3, pattern, n.as_bytes());
        assert_eq!(
            names(false, "__keyspace@0__:k"),
            [(Bytes::from_static(b"__keyspace@3__:t:k"), Carries::Keyspace)]
        );
        assert_eq!(
            names(false, "__keyevent@0__:set"),
            [(Bytes::from_static(b"__keyevent@3__:set"), Carries::Keyevent)]
        );
        // Another database's notifications are not the tenant's: a channel of its own.
        assert_eq!(
            names(false, "__keyspace@3__:k"),
            [(Bytes::from_static(b"t:__keyspace@3__:k"), Carries::Own)]
        );
        let all: Vec<_> = names(true, "__key*@*__:*")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            all,
            [
                Bytes::from_static(b"t:__key*@*__:*"),
                Bytes::from_static(b"__keyspace@3__:t:*"),
                Bytes::from_static(b"__keyevent@3__:*"),
            ]
        );
        assert_eq!(names(true, "news*").len(), 1);
        assert_eq!(names(true, "__keye[v]ent@0__:s*").len(), 2);
        assert_eq!(
            names(true, "__keyevent@1__:*").len(),
            1,
            "database 1 is not the tenant's"
        );
        assert_eq!(
            names(true, "?").len(),
            1,
            "one byte cannot be a notification channel"
        );
        assert_eq!(names(true, "*").len(), 3);
        // The prefix is escaped in the pattern: a glob character in it matches only itself.
        let odd = upstream_names(b"t*", 0, true, b"__keyspace@0__:*");
        assert_eq!(&odd[1].0[..], b"__keyspace@0__:t\\**");
    }

    #[test]
    fn notifications_read_in_the_tenants_terms() {
        assert_eq!(
            keyspace_view(b"t:", 3, b"__keyspace@3__:t:k").as_deref(),
            Some(&b"__keyspace@0__:k"[..])
        );
        assert_eq!(keyspace_view(b"t:", 3, b"__keyspace@3__:u:t:k"), None);
        assert_eq!(keyspace_view(b"t:", 3, b"__keyspace@0__:t:k"), None);
        let (channel, key, event) = keyevent_view(b"t:", 3, b"__keyevent@3__:set", b"t:k").unwrap();
        assert_eq!(
            (&channel[..], key, event),
            (&b"__keyevent@0__:set"[..], &b"k"[..], &b"set"[..])
        );
        assert!(keyevent_view(b"t:", 3, b"__keyevent@3__:set", b"u:t:k").is_none());
        assert!(keyevent_view(b"t:", 3, b"__keyevent@4__:set", b"t:k").is_none());
    }

    #[test]
    fn may_match_from_never_misses_a_match() {
        for (pattern, yes) in [
            ("*", true),
            ("__key*", true),
            ("__keyspace@0__:", true),
            ("__keyspace@0__:abc", true),
            ("__keyspace@?__:*", true),
            ("_[_x]keyspace@0__:*", true),
            ("__keyspace@[1-9]__:*", false),
            ("\\_\\_keyspace@0__:*", true),
            ("__keyspac", false),
            ("news", false),
            ("__keyspace@0_[", true),
        ] {
            assert_eq!(
                may_match_from(pattern.as_bytes(), TENANT_SPACE),
                yes,
                "{pattern}"
            );
        }
    }
}
