//! One client's subscriptions, as the session holds them: the names it subscribed (as the client
//! spelled them), the counts Redis reports, and the hub registrations behind them, released when
//! it is dropped (QUIT, RESET, a closed or cut-off connection).
use super::{Hub, Kind, Name, Outbox, Sub, frames};
use crate::policy::pubsub as names;
use crate::protocol::Protocol;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) struct Subscriber {
    hub: Arc<Hub>,
    id: u64,
    outbox: Arc<Outbox>,
    /// Client names, each with the tenant prefix it was subscribed under (a RESP3 client may AUTH
    /// as another tenant meanwhile; each name keeps the namespace it was subscribed in). An
    /// UNSUBSCRIBE of all confirms in no set order, as Redis's dict does.
    channels: HashMap<Bytes, Bytes>,
    patterns: HashMap<Bytes, Bytes>,
    shards: HashMap<Bytes, Bytes>,
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

    fn set(&mut self, kind: Kind) -> &mut HashMap<Bytes, Bytes> {
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

    /// The upstream name of a client's name.
    pub fn upstream_name(prefix: &[u8], kind: Kind, name: &[u8]) -> Name {
        if kind == Kind::Channel && name == super::INVALIDATE_CHANNEL {
            // Served by respite itself, in every namespace (see `Hub::tracking_subscriber`).
            return (kind, Bytes::from_static(super::LOCAL_INVALIDATE));
        }
        let n = match kind {
            Kind::Pattern => names::pattern(prefix, name),
            _ => names::channel(prefix, name),
        };
        (kind, n)
    }

    /// SUBSCRIBE / PSUBSCRIBE / SSUBSCRIBE in the namespace of `prefix`: wait until the upstream
    /// carries every name (see the hub's invariants) unless `local` (standalone, or the upstream
    /// is down: PUBLISH is answered within respite, and the link subscribes the names once the
    /// upstream is back), then attach each and queue its confirmation, in argument order.
    pub async fn subscribe(
        &mut self,
        kind: Kind,
        proto: Protocol,
        prefix: &Bytes,
        args: &[Bytes],
        local: bool,
    ) {
        let mut holds = Holds {
            hub: &self.hub,
            names: Vec::with_capacity(args.len()),
        };
        let mut acks = Vec::new();
        for a in args {
            let name = Self::upstream_name(prefix, kind, a);
            acks.push(holds.hub.hold(&name));
            holds.names.push(name);
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
        let names = std::mem::take(&mut holds.names);
        drop(holds);
        for (a, name) in args.iter().zip(names) {
            if let Some(old) = self.set(kind).insert(a.clone(), prefix.clone())
                && old != *prefix
            {
                // The same name in another namespace: that subscription ends.
                let old = Self::upstream_name(&old, kind, a);
                self.hub.detach(&old, self.id, None);
            }
            let frame = frames::confirmation(proto, kind.subscribe(), Some(a), self.count(kind));
            let sub = Sub {
                outbox: self.outbox.clone(),
                proto,
                prefix: prefix.clone(),
            };
            // A second SUBSCRIBE of the same name replaces the first registration: one copy of
            // each message, as Redis sends.
            self.hub.attach(&name, self.id, sub, frame);
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
                Some(prefix) => {
                    let name = Self::upstream_name(&prefix, kind, &a);
                    self.hub.detach(&name, self.id, Some((&self.outbox, frame)));
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
            for (a, prefix) in std::mem::take(self.set(kind)) {
                let name = Self::upstream_name(&prefix, kind, &a);
                self.hub.detach(&name, self.id, None);
            }
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.leave_all();
    }
}
