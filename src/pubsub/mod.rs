//! Pub/Sub fan-out: every local subscriber of a channel shares one upstream subscription.
//!
//! The [`Hub`] keeps, per upstream channel, pattern or shard channel, the local subscribers and
//! their [`Outbox`]es; the [`link`] is the one dedicated upstream connection (RESP3) that carries
//! respite's own SUBSCRIBEs — one per name, sent when the first local subscriber arrives and
//! withdrawn when the last one leaves — and hands each message to the hub, which copies it into
//! every subscriber's outbox (shared bytes, encoded once per protocol and tenant). Ten thousand
//! subscribers of a channel cost one upstream subscription on one connection.
//!
//! Names here are upstream names: a tenant's channels carry its prefix and its patterns the
//! escaped prefix ([`crate::policy::pubsub`]); what a subscriber sees loses them again. A
//! prefixed tenant's keyspace notifications are the upstream's for its keys
//! ([`crate::policy::keyspace`]): one client name may stand for several upstream names, and a
//! registration's [`View`] says which of a name's messages are the tenant's and how they read.
//! The session side ([`Subscriber`]) owns one client's subscriptions and releases them when
//! dropped. The hub never waits on a subscriber: a full outbox closes that subscriber, not the
//! link.
//!
//! # Invariants
//! - A subscriber's confirmation is queued in its outbox under the registry lock in the same step
//!   that attaches (or detaches) it under every upstream name its client name stands for, so no
//!   message of that channel comes before its `subscribe` confirmation or after its
//!   `unsubscribe` one; messages of one channel reach its outbox in the order the link read them.
//! - A keyspace notification reaches a tenant's registration only if its key carries the
//!   tenant's prefix, in the tenant's database, of a class the tenant's `notify-keyspace-events`
//!   admits, and (for a pattern) the client's pattern matches the name as the tenant sees it
//!   ([`deliver`]).
//! - A subscription is confirmed to the client only after the upstream confirmed it (or after
//!   `upstream.command_timeout`, when the upstream is away), so a message published after the
//!   client saw its confirmation reaches it. In standalone mode and while local-only, PUBLISH is
//!   answered here ([`local`]) under the same lock, so a confirmation there is enough at once.
mod acl;
mod cluster_link;
mod frames;
mod in_process;
mod link;
mod outbox;
mod subscriber;

pub(crate) use acl::{Refusal, dryrun, verdict};
pub(crate) use frames::pong;
pub(crate) use in_process::answer;
pub(crate) use outbox::Outbox;
pub(crate) use subscriber::{Space, Subscriber};

use crate::config::UpstreamConfig;
use crate::policy::keyspace::{self, Carries, Events};
use crate::protocol::Protocol;
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// The three Pub/Sub namespaces of Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Channel,
    Pattern,
    Shard,
}

impl Kind {
    fn subscribe(self) -> &'static str {
        match self {
            Kind::Channel => "subscribe",
            Kind::Pattern => "psubscribe",
            Kind::Shard => "ssubscribe",
        }
    }

    fn unsubscribe(self) -> &'static str {
        match self {
            Kind::Channel => "unsubscribe",
            Kind::Pattern => "punsubscribe",
            Kind::Shard => "sunsubscribe",
        }
    }
}

pub(crate) type Name = (Kind, Bytes);

/// The channel a RESP2 client subscribes to receive the invalidations of clients that track keys
/// with `REDIRECT` to it (see `server::session::tracking`).
pub(crate) const INVALIDATE_CHANNEL: &[u8] = b"__redis__:invalidate";

/// Its hub name: no upstream channel can have it (it starts with a NUL byte, which respite's
/// own registrations only use), so the link never subscribes it upstream, and a PUBLISH to
/// `__redis__:invalidate` (or a tenant's prefixed one) never reaches its subscribers.
const LOCAL_INVALIDATE: &[u8] = b"\0respite:__redis__:invalidate";

fn is_local(name: &Name) -> bool {
    name.0 == Kind::Channel && &name.1[..] == LOCAL_INVALIDATE
}

/// One local subscriber of a name: where its frames go and how they are encoded for it.
#[derive(Clone)]
pub(crate) struct Sub {
    pub outbox: Arc<Outbox>,
    pub proto: Protocol,
    /// The tenant's prefix, taken off the names it is sent.
    pub prefix: Bytes,
    pub view: View,
}

/// Which of an upstream name's messages a registration gets, and how they read.
#[derive(Clone)]
pub(crate) enum View {
    /// Every message, the tenant's prefix taken off the channel and pattern.
    Own,
    /// Keyspace notifications of a prefixed tenant's keys, in upstream database `db`, as its
    /// `events` admit them; `pattern` is the client's own pattern for a PSUBSCRIBE.
    Notices {
        carries: Carries,
        db: u32,
        events: Arc<Events>,
        pattern: Option<Bytes>,
    },
}

/// A registration: the client's id and the name as it subscribed it (one client name may stand
/// for several upstream names, and several client names for one upstream name).
type Key = (u64, Bytes);

struct Entry {
    subs: HashMap<Key, Sub>,
    /// Subscribers waiting for the upstream's confirmation before they attach.
    holds: usize,
    /// True while the upstream has confirmed this name on the current link.
    acked: watch::Sender<bool>,
}

#[derive(Default)]
struct Registry {
    entries: HashMap<Name, Entry>,
    /// Names whose upstream subscription may need to change: the link reconciles them.
    dirty: HashSet<Name>,
    /// The patterns among `entries`, which a local PUBLISH matches its channel against.
    patterns: HashSet<Bytes>,
}

/// A command for the upstream sent on the subscriber connection (PUBSUB NUMSUB), and where its
/// reply goes.
pub(crate) type Query = (Bytes, oneshot::Sender<Result<Bytes, link::LinkDown>>);

/// The proxy's Pub/Sub state, shared by every session.
pub(crate) struct Hub {
    registry: Mutex<Registry>,
    /// Wakes the link: a name changed, or it should connect.
    changed: Notify,
    queries: mpsc::Sender<Query>,
    /// How long a SUBSCRIBE waits for the upstream to confirm.
    confirm_timeout: std::time::Duration,
    /// `limits.pubsub_output_bytes`.
    pub output_limit: usize,
    /// False in standalone mode: no link, nothing to reconcile.
    linked: bool,
}

impl Hub {
    /// The hub, and its link to `config`'s upstream running until `stop`: for a cluster
    /// (`cluster`), its links to the cluster's nodes ([`cluster_link`]).
    pub fn start(
        config: UpstreamConfig,
        cluster: Option<Arc<crate::upstream::cluster::Cluster>>,
        output_limit: usize,
        stop: CancellationToken,
    ) -> Arc<Hub> {
        let (queries, rx) = mpsc::channel(1024);
        let hub = Arc::new(Hub {
            registry: Mutex::new(Registry::default()),
            changed: Notify::new(),
            queries,
            confirm_timeout: config.command_timeout,
            output_limit,
            linked: true,
        });
        match cluster {
            Some(c) => tokio::spawn(cluster_link::run(hub.clone(), config, c, rx, stop)),
            None => tokio::spawn(link::run(hub.clone(), config, rx, stop)),
        };
        hub
    }

    /// The hub of standalone mode: no upstream, so no link; PUBLISH is answered by [`local`].
    pub fn standalone(output_limit: usize) -> Arc<Hub> {
        // Queries have nobody to go to (the receiver is gone): they fail at once.
        let (queries, _) = mpsc::channel(1);
        Arc::new(Hub {
            registry: Mutex::new(Registry::default()),
            changed: Notify::new(),
            queries,
            confirm_timeout: std::time::Duration::ZERO,
            output_limit,
            linked: false,
        })
    }

    /// Whether a SUBSCRIBE waits for the upstream's confirmation (never without a link).
    pub fn linked(&self) -> bool {
        self.linked
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ask for `name`'s upstream subscription: the receiver turns true once it is confirmed.
    /// Every hold ends with [`Hub::attach`] or [`Hub::release`].
    fn hold(&self, name: &Name) -> watch::Receiver<bool> {
        let mut reg = self.lock();
        match reg.entries.get_mut(name) {
            Some(e) => {
                e.holds += 1;
                e.acked.subscribe()
            }
            None => {
                // Served here: confirmed at once, never subscribed upstream.
                let (acked, rx) = watch::channel(is_local(name));
                reg.entries.insert(
                    name.clone(),
                    Entry {
                        subs: HashMap::new(),
                        holds: 1,
                        acked,
                    },
                );
                if name.0 == Kind::Pattern {
                    reg.patterns.insert(name.1.clone());
                }
                self.mark(&mut reg, name);
                rx
            }
        }
    }

    /// End a hold without attaching (the session went away while waiting).
    fn release(&self, name: &Name) {
        let mut reg = self.lock();
        if let Some(e) = reg.entries.get_mut(name) {
            e.holds -= 1;
        }
        self.forget_if_unused(&mut reg, name);
    }

    /// Turn the holds on `names` into registration `key`'s, each with its view, queueing the
    /// confirmation first, in one step.
    fn attach(&self, names: &[(Name, View)], key: &Key, sub: Sub, confirmation: Bytes) {
        let mut reg = self.lock();
        sub.outbox.push(confirmation);
        for (name, view) in names {
            let Some(e) = reg.entries.get_mut(name) else {
                continue;
            };
            e.holds -= 1;
            let sub = Sub {
                view: view.clone(),
                ..sub.clone()
            };
            e.subs.insert(key.clone(), sub);
        }
    }

    /// Remove registration `key` from `names`, queueing its confirmation (if any) in the same
    /// step.
    fn detach(&self, names: &[Name], key: &Key, confirmation: Option<(&Outbox, Bytes)>) {
        let mut reg = self.lock();
        if let Some((outbox, frame)) = confirmation {
            outbox.push(frame);
        }
        for name in names {
            if let Some(e) = reg.entries.get_mut(name) {
                e.subs.remove(key);
            }
            self.forget_if_unused(&mut reg, name);
        }
    }

    fn forget_if_unused(&self, reg: &mut Registry, name: &Name) {
        if reg
            .entries
            .get(name)
            .is_some_and(|e| e.subs.is_empty() && e.holds == 0)
        {
            reg.entries.remove(name);
            if name.0 == Kind::Pattern {
                reg.patterns.remove(&name.1);
            }
            self.mark(reg, name);
        }
    }

    /// Tell the link `name` changed (with no link, nobody would ever take the mark).
    fn mark(&self, reg: &mut Registry, name: &Name) {
        if self.linked && !is_local(name) {
            reg.dirty.insert(name.clone());
            self.changed.notify_one();
        }
    }

    /// In-process subscribers of `name`, and whether respite's own upstream subscription to it is
    /// confirmed (the upstream then counts respite as one subscriber).
    pub fn in_process(&self, name: &Name) -> (usize, bool) {
        let reg = self.lock();
        reg.entries
            .get(name)
            .map_or((0, false), |e| (e.subs.len(), *e.acked.borrow()))
    }

    /// In-process subscribers of `name` in the namespace of `prefix` (a notification name is
    /// shared by tenants; each counts only its own).
    pub fn in_process_of(&self, name: &Name, prefix: &[u8]) -> usize {
        let reg = self.lock();
        reg.entries.get(name).map_or(0, |e| {
            e.subs.values().filter(|s| &s.prefix[..] == prefix).count()
        })
    }

    /// PUBLISH's (or SPUBLISH's) receiver count as one server would give it, from the
    /// upstream's `upstream` count for `channel` (an upstream name): respite's own upstream
    /// subscriptions that the message reached (the channel's, and every matching pattern's, once
    /// confirmed) are taken out, and the local subscribers they stand for put in, counted as
    /// [`Hub::publish`] counts them.
    pub fn receivers(&self, kind: Kind, channel: &Bytes, upstream: i64) -> i64 {
        let reg = self.lock();
        let (mut local, mut ours) = (0, 0);
        let mut count = |name: &Name| {
            if let Some(e) = reg.entries.get(name) {
                local += e.subs.len() as i64;
                ours += i64::from(*e.acked.borrow());
            }
        };
        count(&(kind, channel.clone()));
        if kind == Kind::Channel {
            for p in reg
                .patterns
                .iter()
                .filter(|p| crate::policy::glob::matches(p, channel))
            {
                count(&(Kind::Pattern, p.clone()));
            }
        }
        (upstream - ours).max(0) + local
    }

    /// Client `id`'s outbox and protocol, if it is subscribed to `__redis__:invalidate` (where
    /// the invalidations of clients tracking with `REDIRECT` to it go).
    pub fn tracking_subscriber(&self, id: u64) -> Option<(Arc<Outbox>, Protocol)> {
        let reg = self.lock();
        let name = (Kind::Channel, Bytes::from_static(LOCAL_INVALIDATE));
        let key = (id, Bytes::from_static(INVALIDATE_CHANNEL));
        let sub = reg.entries.get(&name)?.subs.get(&key)?;
        Some((sub.outbox.clone(), sub.proto))
    }

    /// Send `command` on the subscriber connection and wait for its reply.
    pub async fn query(&self, command: Bytes) -> Result<Bytes, link::LinkDown> {
        let (tx, rx) = oneshot::channel();
        self.queries
            .send((command, tx))
            .await
            .map_err(|_| link::LinkDown)?;
        self.changed.notify_one();
        rx.await.map_err(|_| link::LinkDown)?
    }

    /// Hand one message to every local subscriber of `name`: `channel` and `payload` as the
    /// upstream sent them (`channel` is the name itself except for pattern messages).
    fn dispatch(&self, name: &Name, channel: &[u8], payload: &[u8]) {
        let reg = self.lock();
        deliver(&reg, name, channel, payload);
    }
}

/// [`Hub::dispatch`] under the registry lock; the number of subscribers it reached (as Redis
/// counts receivers: those closed for their limit too).
fn deliver(reg: &Registry, name: &Name, channel: &[u8], payload: &[u8]) -> usize {
    let Some(e) = reg.entries.get(name) else {
        return 0;
    };
    // Encoded once per protocol and tenant prefix; every subscriber shares the bytes.
    let mut encoded: Vec<(Protocol, &[u8], Bytes)> = Vec::new();
    let (mut reached, mut dropped) = (0u64, 0u64);
    for ((_, client), sub) in &e.subs {
        let frame = match &sub.view {
            View::Own => match encoded
                .iter()
                .find(|(p, pre, _)| *p == sub.proto && *pre == &sub.prefix[..])
            {
                Some((_, _, f)) => f.clone(),
                None => {
                    let f = encode_for(sub, name, channel, payload);
                    encoded.push((sub.proto, &sub.prefix[..], f.clone()));
                    f
                }
            },
            // Not the tenant's (another tenant's key, a class it did not ask for): nothing.
            View::Notices { .. } => match notice_for(sub, client, channel, payload) {
                Some(f) => f,
                None => continue,
            },
        };
        reached += 1;
        if !sub.outbox.push(frame) {
            dropped += 1;
        }
    }
    crate::metrics::pubsub_delivered(reached - dropped, dropped);
    reached as usize
}

/// A keyspace notification as a prefixed tenant's registration sees it, or `None` if it is not
/// for the tenant (see the invariants).
fn notice_for(sub: &Sub, client: &[u8], channel: &[u8], payload: &[u8]) -> Option<Bytes> {
    let View::Notices {
        carries,
        db,
        events,
        pattern,
    } = &sub.view
    else {
        return None;
    };
    let p = &sub.prefix[..];
    let (chan, payload, event, space) = match carries {
        Carries::Keyspace => (
            keyspace::keyspace_view(p, *db, channel)?,
            payload,
            payload,
            true,
        ),
        Carries::Keyevent => {
            let (chan, key, event) = keyspace::keyevent_view(p, *db, channel, payload)?;
            (chan, key, event, false)
        }
        Carries::Own => return None,
    };
    if !events.admits(space, event) {
        return None;
    }
    match pattern {
        // The upstream pattern stood for more than the client's: its own pattern decides.
        Some(_) if !crate::policy::glob::matches(client, &chan) => None,
        Some(_) => Some(frames::message(
            sub.proto,
            b"pmessage",
            &[client, &chan],
            payload,
        )),
        None => Some(frames::message(sub.proto, b"message", &[&chan], payload)),
    }
}

impl Hub {
    /// The link is (re)connected: every name is to be subscribed afresh, and none is confirmed.
    fn relinked(&self) -> Vec<Name> {
        let mut reg = self.lock();
        reg.dirty.clear();
        reg.entries
            .iter()
            .filter(|(name, _)| !is_local(name))
            .map(|(name, e)| {
                e.acked.send_replace(false);
                name.clone()
            })
            .collect()
    }

    /// Names to reconcile, each with whether it is wanted now.
    fn take_dirty(&self) -> Vec<(Name, bool)> {
        let mut reg = self.lock();
        let dirty = std::mem::take(&mut reg.dirty);
        dirty
            .into_iter()
            .map(|n| {
                let wanted = reg.entries.contains_key(&n);
                (n, wanted)
            })
            .collect()
    }

    /// The upstream confirmed `name` on the current link.
    fn confirmed(&self, name: &Name) {
        if let Some(e) = self.lock().entries.get(name) {
            e.acked.send_replace(true);
        }
    }

    /// `name` is no longer confirmed where it is (withdrawn, or its connection lost): a new
    /// SUBSCRIBE of it waits for its next confirmation.
    fn unconfirmed(&self, name: &Name) {
        if let Some(e) = self.lock().entries.get(name) {
            e.acked.send_replace(false);
        }
    }

    fn is_idle(&self) -> bool {
        self.lock().entries.is_empty()
    }
}

/// One message as `sub` sees it: the tenant's prefix off the channel (and pattern).
fn encode_for(sub: &Sub, name: &Name, channel: &[u8], payload: &[u8]) -> Bytes {
    use crate::policy::pubsub::{unprefix_channel, unprefix_pattern};
    let p = &sub.prefix[..];
    let chan = unprefix_channel(p, channel).unwrap_or(channel);
    match name.0 {
        Kind::Channel => frames::message(sub.proto, b"message", &[chan], payload),
        Kind::Shard => frames::message(sub.proto, b"smessage", &[chan], payload),
        Kind::Pattern => {
            let pat = unprefix_pattern(p, &name.1).unwrap_or_else(|| name.1.clone());
            frames::message(sub.proto, b"pmessage", &[&pat, chan], payload)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Hub {
        let (queries, _) = mpsc::channel(1);
        Hub {
            registry: Mutex::new(Registry::default()),
            changed: Notify::new(),
            queries,
            confirm_timeout: std::time::Duration::from_secs(1),
            output_limit: 1 << 20,
            linked: true,
        }
    }

    fn drained(o: &Outbox) -> String {
        let mut out = bytes::BytesMut::new();
        o.drain_into(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn one_upstream_name_many_subscribers_each_in_its_own_terms() {
        let hub = hub();
        let name = (Kind::Channel, Bytes::from_static(b"t:news"));
        let plain = Arc::new(Outbox::new(1 << 20));
        let pushed = Arc::new(Outbox::new(1 << 20));
        for (id, outbox, proto, prefix) in [
            (1, &plain, Protocol::Resp2, &b"t:"[..]),
            (2, &pushed, Protocol::Resp3, &b""[..]),
        ] {
            let _acked = hub.hold(&name);
            let sub = Sub {
                outbox: outbox.clone(),
                proto,
                prefix: Bytes::copy_from_slice(prefix),
                view: View::Own,
            };
            let names = [(name.clone(), View::Own)];
            let key = (id, Bytes::from_static(b"news"));
            hub.attach(&names, &key, sub, Bytes::from_static(b"+confirmed\r\n"));
        }
        // The first hold asked the link for one upstream subscription; the second did not.
        assert_eq!(hub.take_dirty(), vec![(name.clone(), true)]);
        hub.dispatch(&name, b"t:news", b"hi");
        assert_eq!(
            drained(&plain),
            "+confirmed\r\n*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
        );
        assert_eq!(
            drained(&pushed),
            "+confirmed\r\n>3\r\n$7\r\nmessage\r\n$6\r\nt:news\r\n$2\r\nhi\r\n"
        );
        assert_eq!(hub.in_process(&name), (2, false));
        let names = [name.clone()];
        let key = |id| (id, Bytes::from_static(b"news"));
        hub.detach(
            &names,
            &key(1),
            Some((&plain, Bytes::from_static(b"+left\r\n"))),
        );
        hub.dispatch(&name, b"t:news", b"again");
        assert_eq!(drained(&plain), "+left\r\n", "nothing after leaving");
        assert!(hub.take_dirty().is_empty(), "one subscriber remains");
        hub.detach(&names, &key(2), None);
        // The last one left: the link withdraws the upstream subscription.
        assert_eq!(hub.take_dirty(), vec![(name.clone(), false)]);
        assert!(hub.is_idle());
    }

    #[test]
    fn a_tenant_gets_only_its_own_keys_notifications_in_its_own_terms() {
        use crate::policy::keyspace::parse;
        let hub = hub();
        let outbox = |_| Arc::new(Outbox::new(1 << 20));
        let (t, u) = (outbox(0), outbox(1));
        let t_events = Arc::new(Events::new(parse(b"KEA").unwrap()));
        let u_events = Arc::new(Events::new(parse(b"KEA").unwrap()));
        // Tenant t (keys in upstream db 0) and tenant u each PSUBSCRIBE `*`; t also SUBSCRIBEs
        // its key `k`'s keyspace channel.
        for (id, out, prefix, events, kind, name) in [
            (1, &t, "t:", &t_events, Kind::Pattern, "*"),
            (1, &t, "t:", &t_events, Kind::Channel, "__keyspace@0__:k"),
            (2, &u, "u:", &u_events, Kind::Pattern, "*"),
        ] {
            let space = Space {
                prefix: Bytes::copy_from_slice(prefix.as_bytes()),
                notices: Some((0, events.clone())),
            };
            let names = Subscriber::upstream_names(&space, kind, name.as_bytes());
            for (n, _) in &names {
                let _ = hub.hold(n);
            }
            let sub = Sub {
                outbox: out.clone(),
                proto: Protocol::Resp2,
                prefix: space.prefix.clone(),
                view: View::Own,
            };
            let key = (id, Bytes::copy_from_slice(name.as_bytes()));
            hub.attach(&names, &key, sub, Bytes::new());
        }
        let space = |c: &'static [u8]| (Kind::Pattern, Bytes::from_static(c));
        // t's key k was set (u's pattern entry for its own keys never sees it).
        hub.dispatch(
            &(Kind::Channel, Bytes::from_static(b"__keyspace@0__:t:k")),
            b"__keyspace@0__:t:k",
            b"set",
        );
        hub.dispatch(&space(b"__keyspace@0__:t:*"), b"__keyspace@0__:t:k", b"set");
        // The shared key-event channel: one for t's key, one for u's key named like t's.
        for key in [&b"t:k"[..], b"u:t:k"] {
            hub.dispatch(&space(b"__keyevent@0__:*"), b"__keyevent@0__:set", key);
        }
        let k = "$16\r\n__keyspace@0__:k\r\n$3\r\nset\r\n";
        assert_eq!(
            drained(&t),
            format!(
                "*3\r\n$7\r\nmessage\r\n{k}*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n{k}\
                 *4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$18\r\n__keyevent@0__:set\r\n$1\r\nk\r\n"
            )
        );
        assert_eq!(
            drained(&u),
            "*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$18\r\n__keyevent@0__:set\r\n$3\r\nt:k\r\n"
        );
        // t's classes now leave out strings: nothing more of `set` reaches it, u still hears it.
        t_events.set(parse(b"KEg").unwrap());
        hub.dispatch(&space(b"__keyevent@0__:*"), b"__keyevent@0__:set", b"t:k");
        hub.dispatch(&space(b"__keyevent@0__:*"), b"__keyevent@0__:set", b"u:x");
        assert_eq!(drained(&t), "");
        assert!(drained(&u).ends_with("$1\r\nx\r\n"));
        assert_eq!(hub.in_process_of(&space(b"__keyevent@0__:*"), b"t:"), 1);
    }

    #[test]
    fn a_released_hold_leaves_nothing_behind() {
        let hub = hub();
        let name = (Kind::Pattern, Bytes::from_static(b"t:*"));
        let _rx = hub.hold(&name);
        hub.release(&name);
        assert!(hub.is_idle());
        // Asked for and withdrawn before the link looked: it is told the name is not wanted.
        assert_eq!(hub.take_dirty(), vec![(name, false)]);
    }
}
