//! The session's Pub/Sub stage: the SUBSCRIBE family, RESP2's subscribed mode, and PUBSUB NUMSUB
//! counted with respite's own subscribers. The subscriptions themselves live in
//! [`crate::pubsub`]; this file only decides what a request does and queues its reply.
//!
//! # Invariants
//! Pushes (confirmations and messages) go through the client's [`Outbox`], never the FIFO, so they
//! take no reply slot. A (un)subscribe first waits on a [`Pending::Barrier`] for every earlier
//! reply to be written, then queues its confirmations in the outbox; the writer drains the outbox
//! before each reply it writes and while it waits for one, always between whole frames. So the
//! confirmations come after the replies of the commands before them and before the replies of the
//! commands after them, and messages never split a reply.
use crate::command::CommandSpec;
use crate::metrics::{self, ErrorKind};
use crate::policy::Plan;
use crate::protocol::value::{self, Value};
use crate::protocol::{Protocol, Request, encode};
use crate::pubsub::{self, Hub, Kind, Name, Outbox, Space, Subscriber, View};
use crate::server::session::{Flow, Keep, Pending, Reader, unix_ms};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

/// A session's Pub/Sub state: its outbox and its subscriptions.
#[derive(Default)]
pub(crate) struct PubSub {
    pub outbox: Option<Arc<Outbox>>,
    subscriber: Option<Box<Subscriber>>,
}

impl PubSub {
    pub fn new(hub: Option<&Hub>) -> Self {
        PubSub {
            outbox: hub.map(|h| Arc::new(Outbox::new(h.output_limit))),
            subscriber: None,
        }
    }

    /// Its channels, patterns and shard channels (CLIENT LIST's `sub`, `psub`, `ssub`).
    pub(in crate::server::session) fn counts(&self) -> (usize, usize, usize) {
        self.subscriber.as_ref().map_or((0, 0, 0), |s| s.counts())
    }

    pub(in crate::server::session) fn subscribed(&self) -> bool {
        self.subscriber.as_ref().is_some_and(|s| s.total() > 0)
    }
}

fn kind_of(name: &str) -> Option<(Kind, bool)> {
    Some(match name {
        "subscribe" => (Kind::Channel, true),
        "psubscribe" => (Kind::Pattern, true),
        "ssubscribe" => (Kind::Shard, true),
        "unsubscribe" => (Kind::Channel, false),
        "punsubscribe" => (Kind::Pattern, false),
        "sunsubscribe" => (Kind::Shard, false),
        _ => return None,
    })
}

impl Reader<'_> {
    /// Whether this stage takes the request (cheap: most requests only read two fields).
    /// Inside a (RESP3) transaction, the SUBSCRIBE family is the transaction's business; RESET
    /// still leaves every subscription.
    pub(in crate::server::session) fn pubsub_takes(&self, spec: &CommandSpec) -> bool {
        self.pubsub.outbox.is_some()
            && (self.multi.is_none() || spec.name == "reset")
            && (self.pubsub.subscribed()
                || kind_of(spec.name).is_some()
                || matches!(
                    spec.name,
                    "pubsub|numsub" | "pubsub|shardnumsub" | "publish" | "spublish"
                ))
    }

    /// Handle a request [`Reader::pubsub_takes`] took; `None` hands it on to the usual stages
    /// (PING in RESP3, QUIT, RESET after leaving every subscription).
    pub(in crate::server::session) async fn pubsub(
        &mut self,
        spec: &'static CommandSpec,
        req: &Request,
    ) -> Option<Flow> {
        let proto = self.client.proto;
        if self.pubsub.subscribed() && proto == Protocol::Resp2 {
            match spec.name {
                "ping" => {
                    let msg = req.args.get(1).map_or(&b""[..], |a| &a[..]);
                    self.reply(pubsub::pong(msg)).await;
                    return Some(Flow::Continue);
                }
                "quit" | "reset" => {}
                _ if kind_of(spec.name).is_some() => {}
                _ => {
                    metrics::error(ErrorKind::Refused);
                    let msg = format!(
                        "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                        spec.name
                    );
                    self.reply_error(&msg).await;
                    return Some(Flow::Continue);
                }
            }
        }
        if spec.name == "reset" {
            // RESET leaves subscribed mode (and the tenant whose names it held) at once.
            self.pubsub.subscriber = None;
            self.publish();
            return None;
        }
        // Standalone, or the upstream is down: respite answers Pub/Sub itself (the forwarding
        // path's local engine hands PUBLISH and PUBSUB to the hub, tenants' names rewritten as
        // in proxy mode).
        let local = self.shared.answerer(spec, &req.args).is_some();
        if matches!(spec.name, "publish" | "spublish") {
            if local {
                return None;
            }
            return Box::pin(self.publish_counted(spec, req)).await;
        }
        let Some((kind, subscribe)) = kind_of(spec.name) else {
            if spec.name.starts_with("pubsub|") && !local {
                self.numsub(spec, req).await;
                return Some(Flow::Continue);
            }
            return None;
        };
        if let Some(t) = &self.client.tenant
            && !t.permits(spec)
        {
            let e = t.no_perm(spec);
            crate::policy::metrics::refusal(&t.name, &e);
            self.reply_error(&e.to_string()).await;
            return Some(Flow::Continue);
        }
        if subscribe && !local && !self.upstream_user_may(req).await {
            return Some(Flow::Continue);
        }
        // A cluster node refuses shard channels of several slots in one call: so does respite
        // in front of a cluster, and subscribes (or leaves) none of them.
        if kind == Kind::Shard
            && !local
            && self
                .shared
                .upstream
                .as_ref()
                .is_some_and(|u| u.cluster().is_some())
            && self.shard_channels_cross_slots(&req.args[1..])
        {
            metrics::error(ErrorKind::Refused);
            self.reply_error(crate::upstream::cluster::CROSSSLOT).await;
            return Some(Flow::Continue);
        }
        // Every earlier reply is written before a confirmation is queued (see the invariants).
        self.barrier().await;
        let hub = self.shared.pubsub.clone()?;
        let outbox = self.pubsub.outbox.clone()?;
        let space = self.space();
        let id = self.client.id;
        let sub = self
            .pubsub
            .subscriber
            .get_or_insert_with(|| Box::new(Subscriber::new(hub, id, outbox)));
        if subscribe {
            sub.subscribe(kind, proto, &space, &req.args[1..], local)
                .await;
        } else {
            sub.unsubscribe(kind, proto, &req.args[1..]);
        }
        // CLIENT LIST shows its counts and `P`.
        self.publish();
        Some(Flow::Continue)
    }

    /// Whether shard channels `names` (as the client names them) hash to more than one slot
    /// once in the tenant's namespace, as the upstream gets them.
    fn shard_channels_cross_slots(&self, names: &[Bytes]) -> bool {
        let space = self.space();
        let mut slots = names.iter().map(|a| {
            let (n, _) = Subscriber::upstream_names(&space, Kind::Shard, a).swap_remove(0);
            crate::upstream::cluster::slot::key_slot(&n.1)
        });
        let first = slots.next();
        slots.any(|s| Some(s) != first)
    }

    /// For a client logged in as one of the upstream's own users: whether the upstream lets
    /// that user run this (its channel rules), asked before respite's shared subscription
    /// stands in for it (see [`crate::pubsub::verdict`]). If not, the refusal is queued.
    async fn upstream_user_may(&mut self, req: &Request) -> bool {
        if !self.out.pin.needs.auth {
            return true;
        }
        let Some(hub) = self.shared.pubsub.clone() else {
            return true;
        };
        let user = self.client.user.clone();
        let verdict = match hub.query(pubsub::dryrun(&user, &req.args)).await {
            Ok(reply) => pubsub::verdict(&user, &reply),
            Err(_) => Err(pubsub::Refusal::Unchecked {
                user,
                why: "its subscriber connection is down".into(),
            }),
        };
        match verdict {
            Ok(()) => true,
            Err(refusal) => {
                metrics::error(ErrorKind::Refused);
                self.reply_error(&refusal.to_string()).await;
                false
            }
        }
    }

    /// The namespace the client's names are in: its tenant's prefix and, for a prefixed tenant,
    /// where its keyspace notifications come from (its keys' upstream database) and its
    /// `notify-keyspace-events`.
    fn space(&self) -> Space {
        let Some(t) = self.client.tenant.as_ref().filter(|t| t.has_prefix()) else {
            return Space::default();
        };
        let db = t.db.unwrap_or_else(|| self.configured_db());
        Space {
            prefix: t.prefix.clone(),
            notices: Some((db, t.events.clone())),
        }
    }

    /// PUBLISH / SPUBLISH, sent on the client's own connection in order with its other commands,
    /// its receiver count corrected for respite's fan-out (see [`Hub::receivers`]): two local
    /// subscribers of a channel are two receivers, as they would be on one server. `None` hands
    /// anything but a plain forward (a tenant's refusal) to the usual path.
    async fn publish_counted(&mut self, spec: &'static CommandSpec, req: &Request) -> Option<Flow> {
        let hub = self.shared.pubsub.clone()?;
        let (command, prefix) = match &self.client.tenant {
            None => (
                crate::server::session::forward::request_bytes(req),
                Bytes::new(),
            ),
            Some(t) => match t.check(spec, &req.args, req.raw.as_ref(), unix_ms()) {
                Ok(Plan::Forward(f)) if f.follow_ups.is_empty() => (f.command, t.prefix.clone()),
                _ => return None,
            },
        };
        let kind = if spec.name == "publish" {
            Kind::Channel
        } else {
            Kind::Shard
        };
        // The channel as the upstream gets it; `__redis__:invalidate` too is the upstream's
        // channel here (respite's own stand-in for it hears no PUBLISH).
        let channel = crate::policy::pubsub::channel(&prefix, &req.args[1]);
        // Held by a CLIENT PAUSE WRITE in force: on a connection of the client's own.
        let paused = self.pause_holds(spec, req);
        if paused && !self.pin_for(spec, req).await {
            return Some(Flow::Continue);
        }
        self.forward_rewritten(command, move |bytes| match integer(&bytes) {
            Some(n) => {
                let mut out = BytesMut::new();
                encode::integer(&mut out, hub.receivers(kind, &channel, n));
                out.freeze()
            }
            // An error goes to the client as the upstream sent it.
            None => bytes,
        })
        .await;
        if paused {
            self.unpin_if_done().await;
        }
        Some(Flow::Continue)
    }

    /// PUBSUB NUMSUB / SHARDNUMSUB: the upstream's counts, in which respite's one subscription
    /// per name stands for its local subscribers, so each count is the upstream's, less respite,
    /// plus respite's own subscribers. Names stay within the tenant's namespace.
    async fn numsub(&mut self, spec: &'static CommandSpec, req: &Request) {
        if let Some(t) = &self.client.tenant
            && !t.permits(spec)
        {
            let e = t.no_perm(spec);
            self.reply_error(&e.to_string()).await;
            return;
        }
        if !self.upstream_user_may(req).await {
            return;
        }
        let Some(hub) = self.shared.pubsub.clone() else {
            return;
        };
        let kind = if spec.name == "pubsub|numsub" {
            Kind::Channel
        } else {
            Kind::Shard
        };
        let space = self.space();
        // The name each client name is counted by, and whether it is a notification name that
        // other tenants share (counted within the tenant's namespace only).
        let names: Vec<(Name, bool)> = req.args[2..]
            .iter()
            .map(|a| {
                let (n, view) = Subscriber::upstream_names(&space, kind, a).swap_remove(0);
                (n, matches!(view, View::Notices { .. }))
            })
            .collect();
        let mut args: Vec<&[u8]> = vec![&req.args[0], &req.args[1]];
        args.extend(names.iter().map(|(n, _)| &n.1[..]));
        let mut command = BytesMut::new();
        encode::command(&mut command, &args);
        let client_names = req.args[2..].to_vec();
        let proto = self.client.proto;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let budget = self.out.budget().cloned();
        // A cluster's nodes count only their own subscribers: asked of every node the name is
        // counted on and summed (see `upstream::cluster::counts`).
        let cluster = self
            .shared
            .upstream
            .as_ref()
            .and_then(|u| u.cluster().cloned());
        tokio::spawn(async move {
            let counted = match cluster {
                Some(c) => {
                    let upstream: Vec<Bytes> = names.iter().map(|(n, _)| n.1.clone()).collect();
                    c.numsub(kind == Kind::Shard, &upstream).await
                }
                None => hub
                    .query(command.freeze())
                    .await
                    .map_err(|e| format!("ERR {e}")),
            };
            let reply = match counted {
                Ok(reply) => numsub_reply(&hub, &reply, &names, &space, &client_names, proto),
                Err(e) => {
                    metrics::error(ErrorKind::Upstream);
                    crate::server::session::error_bytes(&e)
                }
            };
            // The writer releases what an upstream reply charged to the client's budget.
            if let Some(b) = budget {
                b.charge(reply.len());
            }
            let _ = tx.send(Ok(reply));
        });
        self.push(Pending::Upstream {
            rx,
            count: 1,
            keep: Keep::All,
        })
        .await;
    }
}

/// The value of an integer reply.
fn integer(reply: &[u8]) -> Option<i64> {
    match value::parse(reply) {
        Ok(Value::Line(b':', n)) => std::str::from_utf8(n).ok()?.parse().ok(),
        _ => None,
    }
}

/// The client's NUMSUB reply from the upstream's: its own names, adjusted counts.
fn numsub_reply(
    hub: &Hub,
    reply: &Bytes,
    names: &[(Name, bool)],
    space: &Space,
    client_names: &[Bytes],
    proto: Protocol,
) -> Bytes {
    let items = match value::parse(reply) {
        Ok(Value::Agg(_, items)) => items,
        // An error (or anything unexpected) goes to the client as the upstream sent it.
        _ => return reply.clone(),
    };
    let mut out = BytesMut::new();
    if reply.first() == Some(&b'%') {
        encode::map_header(&mut out, proto, names.len());
    } else {
        encode::array_header(&mut out, names.len() * 2);
    }
    for (i, ((name, shared), client)) in names.iter().zip(client_names).enumerate() {
        if *shared {
            // Who else listens to a notification channel is not the tenant's to know.
            encode::bulk(&mut out, client);
            encode::integer(&mut out, hub.in_process_of(name, &space.prefix) as i64);
            continue;
        }
        let upstream: i64 = match items.get(i * 2 + 1) {
            Some(Value::Line(b':', n)) => std::str::from_utf8(n)
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            _ => 0,
        };
        let (local, ours) = hub.in_process(name);
        let count = (upstream - i64::from(ours)).max(0) + local as i64;
        encode::bulk(&mut out, client);
        encode::integer(&mut out, count);
    }
    out.freeze()
}
