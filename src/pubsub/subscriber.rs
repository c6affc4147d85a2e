//! One client's subscriptions, as the session holds them: the names it subscribed (as the client
//! spelled them), the counts Redis reports, and the hub registrations behind them, released when
//! it is dropped (QUIT, RESET, a closed or cut-off connection).
use super::{Hub, Kind, Name, Outbox, Sub, View, frames};
use crate::policy::keyspace::{self, Carries, Events};
use crate::policy::pubsub as names;
use crate::protocol::Protocol;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;

/// The namespace a name is subscribed in: the tenant's prefix and, for a prefixed tenant, the
/// upstream database of its keys and its `notify-keyspace-events` (its keyspace notifications).
#[derive(Clone, Default)]
pub(crate) struct Space {
    pub prefix: Bytes,
    pub notices: Option<(u32, Arc<Events>)>,
}

pub(crate) struct Subscriber {
    hub: Arc<Hub>,
    id: u64,
    outbox: Arc<Outbox>,
    /// Client names, each with the namespace it was subscribed under (a RESP3 client may AUTH
    /// as another tenant meanwhile; each name keeps the namespace it was subscribed in). An
    /// UNSUBSCRIBE of all confirms in no set order, as Redis's dict does.
    channels: HashMap<Bytes, Space>,
    patterns: HashMap<Bytes, Space>,
    shards: HashMap<Bytes, Space>,
}

/// Holds taken on the hub and not yet attached; released if the session goes away meanwhile.
struct Holds<'h> {
    hub: &'h Hub,
    names: Vec<Name>,
}

impl Drop for Holds<'_> {
    fn drop(&mut self) {
        for n in &self.names {
            self.hub.release(n);
        }
    }
}

impl Subscriber {
    pub fn new(hub: Arc<Hub>, id: u64, outbox: Arc<Outbox>) -> Self {
        Subscriber {
            hub,
            id,
            outbox,
            channels: HashMap::new(),
            patterns: HashMap::new(),
            shards: HashMap::new(),
        }
    }

    fn set(&mut self, kind: Kind) -> &mut HashMap<Bytes, Space> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
            Kind::Shard => &mut self.shards,
        }
    }

    /// The count Redis reports in a confirmation of `kind`: channels and patterns together, shard
    /// channels apart.
    fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::Shard => self.shards.len(),
            _ => self.channels.len() + self.patterns.len(),
        }
    }

    /// Subscriptions of every kind: in RESP2 the client is in subscribed mode while any remain.
    /// Its channels, patterns and shard channels: CLIENT LIST's `sub`, `psub` and `ssub`.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.channels.len(), self.patterns.len(), self.shards.len())
    }

    pub fn total(&self) -> usize {
        self.channels.len() + self.patterns.len() + self.shards.len()
    }

    /// The upstream names a client's name stands for in `space`, each with what its
    /// registration sees; the first is the name PUBSUB NUMSUB counts.
    pub fn upstream_names(space: &Space, kind: Kind, name: &[u8]) -> Vec<(Name, View)> {
        if kind == Kind::Channel && name == super::INVALIDATE_CHANNEL {
            // Served by respite itself, in every namespace (see `Hub::tracking_subscriber`).
            return vec![(
                (kind, Bytes::from_static(super::LOCAL_INVALIDATE)),
                View::Own,
            )];
        }
        match (&space.notices, kind) {
            (Some((db, events)), Kind::Channel | Kind::Pattern) => {
                let pattern = kind == Kind::Pattern;
                keyspace::upstream_names(&space.prefix, *db, pattern, name)
                    .into_iter()
                    .map(|(n, carries)| {
                        let view = match carries {
                            Carries::Own => View::Own,
                            _ => View::Notices {
                                carries,
                                db: *db,
                                events: events.clone(),
                                pattern: pattern.then(|| Bytes::copy_from_slice(name)),
                            },
                        };
                        ((kind, n), view)
                    })
                    .collect()
            }
            (_, Kind::Pattern) => vec![((kind, names::pattern(&space.prefix, name)), View::Own)],
            _ => vec![((kind, names::channel(&space.prefix, name)), View::Own)],
        }
    }

    fn names_only(space: &Space, kind: Kind, name: &[u8]) -> Vec<Name> {
        Self::upstream_names(space, kind, name)
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    /// SUBSCRIBE / PSUBSCRIBE / SSUBSCRIBE in `space`: wait until the upstream carries every
    /// name (see the hub's invariants) unless `local` (standalone, or the upstream is down:
    /// PUBLISH is answered within respite, and the link subscribes the names once the upstream
    /// is back), then attach each and queue its confirmation, in argument order.
    pub async fn subscribe(
        &mut self,
        kind: Kind,
        proto: Protocol,
        space: &Space,
        args: &[Bytes],
        local: bool,
    ) {
        let mut holds = Holds {
            hub: &self.hub,
            names: Vec::with_capacity(args.len()),
        };
        let mut acks = Vec::new();
        let mut wanted = Vec::with_capacity(args.len());
        for a in args {
            let names = Self::upstream_names(space, kind, a);
            for (name, _) in &names {
                acks.push(holds.hub.hold(name));
                holds.names.push(name.clone());
            }
            wanted.push(names);
        }
        let confirmed = async {
            for mut rx in acks {
                let _ = rx.wait_for(|ok| *ok).await;
            }
        };
        // An upstream that is away does not hold the client: the subscription stays registered and
        // the link subscribes it once it is back.
        if !local && self.hub.linked() {
            let _ = tokio::time::timeout(self.hub.confirm_timeout, confirmed).await;
        }
        holds.names.clear();
        drop(holds);
        for (a, names) in args.iter().zip(wanted) {
            let key = (self.id, a.clone());
            if let Some(old) = self.set(kind).insert(a.clone(), space.clone()) {
                // The same name subscribed again, perhaps in another namespace: the names it no
                // longer stands for are left (the others are replaced in place by `attach`).
                let gone: Vec<Name> = Self::names_only(&old, kind, a)
                    .into_iter()
                    .filter(|n| names.iter().all(|(m, _)| m != n))
                    .collect();
                self.hub.detach(&gone, &key, None);
            }
            let frame = frames::confirmation(proto, kind.subscribe(), Some(a), self.count(kind));
            let sub = Sub {
                outbox: self.outbox.clone(),
                proto,
                prefix: space.prefix.clone(),
                view: View::Own,
            };
            // A second SUBSCRIBE of the same name replaces the first registration: one copy of
            // each message, as Redis sends.
            self.hub.attach(&names, &key, sub, frame);
        }
    }

    /// UNSUBSCRIBE / PUNSUBSCRIBE / SUNSUBSCRIBE: the named ones, or all of `kind` when none is
    /// named; one confirmation each, or one with a null name when there was nothing to leave.
    pub fn unsubscribe(&mut self, kind: Kind, proto: Protocol, args: &[Bytes]) {
        let names: Vec<Bytes> = if args.is_empty() {
            self.set(kind).keys().cloned().collect()
        } else {
            args.to_vec()
        };
        if names.is_empty() {
            let frame = frames::confirmation(proto, kind.unsubscribe(), None, self.count(kind));
            self.outbox.push(frame);
            return;
        }
        for a in names {
            let was = self.set(kind).remove(&a);
            let frame = frames::confirmation(proto, kind.unsubscribe(), Some(&a), self.count(kind));
            match was {
                Some(space) => {
                    let names = Self::names_only(&space, kind, &a);
                    let key = (self.id, a);
                    self.hub.detach(&names, &key, Some((&self.outbox, frame)));
                }
                None => {
                    self.outbox.push(frame);
                }
            }
        }
    }

    /// Leave everything without confirmations (RESET, and the end of the session).
    pub fn leave_all(&mut self) {
        for kind in [Kind::Channel, Kind::Pattern, Kind::Shard] {
            for (a, space) in std::mem::take(self.set(kind)) {
                let names = Self::names_only(&space, kind, &a);
                self.hub.detach(&names, &(self.id, a), None);
            }
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.leave_all();
    }
}
