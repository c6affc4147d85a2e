//! The upstream subscriber connection: respite's own SUBSCRIBEs, one per name the hub wants,
//! and the messages they bring back.
//!
//! It connects only while the hub has something to subscribe (or a query to send), speaks RESP3
//! so that pushes (`>`: messages and confirmations) are told from command replies on one socket,
//! reconciles the hub's changed names into SUBSCRIBE/UNSUBSCRIBE batches, and after losing the
//! connection reconnects with the upstream's backoff and subscribes everything again. It reads
//! without ever waiting on a subscriber (the hub's outboxes never block), so a slow client cannot
//! make the upstream drop respite as a slow subscriber.
use super::{Hub, Kind, Name, Query};
use crate::config::UpstreamConfig;
use crate::protocol::value::{self, Value};
use crate::protocol::{Protocol, ReplyScanner, encode};
use crate::upstream::backoff::Backoff;
use crate::upstream::handshake::{self, BoxRead, BoxWrite};
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The subscriber connection was down or lost before a query's reply.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("upstream subscriber connection unavailable")]
pub(crate) struct LinkDown;

/// The client name respite's subscriber connection carries on the upstream.
pub(crate) const NAME: &str = "respite-pubsub";

pub(super) async fn run(
    hub: Arc<Hub>,
    config: UpstreamConfig,
    mut queries: mpsc::Receiver<Query>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(&config);
    let addr = handshake::addr(&config);
    loop {
        // Connect only when there is something to do.
        while hub.is_idle() && queries.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = hub.changed.notified() => {}
            }
        }
        let opened = tokio::select! {
            _ = stop.cancelled() => return,
            r = handshake::open(&config, Protocol::Resp3, NAME) => r,
        };
        let opened = match opened {
            Ok(o) => o,
            Err(e) => {
                let retry = backoff.failed();
                if retry.failures == 1 {
                    warn!(error = %e, "pubsub: cannot open the upstream subscriber connection");
                }
                // Nothing waits behind a dead connection.
                while let Ok((_, tx)) = queries.try_recv() {
                    let _ = tx.send(Err(LinkDown));
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(retry.delay) => {}
                }
                continue;
            }
        };
        if backoff.succeeded() {
            info!(%addr, "pubsub: upstream subscriber connection restored");
        }
        let mut conn = Conn {
            read: opened.read,
            write: opened.write,
            upstream: HashMap::new(),
            waiting: VecDeque::new(),
        };
        let names = hub.relinked();
        let stopped = conn.serve(&hub, names, &mut queries, &stop).await;
        for tx in conn.waiting.drain(..) {
            let _ = tx.send(Err(LinkDown));
        }
        if stopped {
            return;
        }
        warn!(%addr, "pubsub: upstream subscriber connection lost; resubscribing");
        let retry = backoff.failed();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(retry.delay) => {}
        }
    }
}

struct Conn {
    read: BoxRead,
    write: BoxWrite,
    /// What this connection has asked the upstream to subscribe.
    upstream: HashMap<Name, bool>,
    /// Queries sent, in order, waiting for their (non-push) replies.
    waiting: VecDeque<oneshot::Sender<Result<Bytes, LinkDown>>>,
}

impl Conn {
    /// Serve until the connection fails (false) or respite stops (true).
    async fn serve(
        &mut self,
        hub: &Hub,
        initial: Vec<Name>,
        queries: &mut mpsc::Receiver<Query>,
        stop: &CancellationToken,
    ) -> bool {
        let first: Vec<(Name, bool)> = initial.into_iter().map(|n| (n, true)).collect();
        if self.reconcile(hub, first).await.is_err() {
            return false;
        }
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut scanner = ReplyScanner::new();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return true,
                r = self.read.read_buf(&mut buf) => {
                    match r {
                        Ok(0) | Err(_) => return false,
                        Ok(_) => {}
                    }
                    loop {
                        match scanner.scan(&buf) {
                            Ok(Some(found)) => {
                                let frame = buf.split_to(found.len).freeze();
                                if self.frame(hub, &frame).is_err() {
                                    return false;
                                }
                            }
                            Ok(None) => break,
                            Err(_) => return false,
                        }
                    }
                    if buf.capacity() - buf.len() < 4096 {
                        buf.reserve(16 * 1024);
                    }
                }
                _ = hub.changed.notified() => {
                    if self.reconcile(hub, hub.take_dirty()).await.is_err() {
                        return false;
                    }
                    while let Ok(q) = queries.try_recv() {
                        if self.send_query(q).await.is_err() {
                            return false;
                        }
                    }
                }
                Some(q) = queries.recv() => {
                    if self.send_query(q).await.is_err() {
                        return false;
                    }
                }
            }
        }
    }

    async fn send_query(&mut self, (command, tx): Query) -> Result<(), ()> {
        self.write.write_all(&command).await.map_err(|_| ())?;
        self.waiting.push_back(tx);
        Ok(())
    }

    /// Bring the upstream's subscriptions in line with what the hub wants, for these names.
    async fn reconcile(&mut self, hub: &Hub, names: Vec<(Name, bool)>) -> Result<(), ()> {
        let mut sub: HashMap<Kind, Vec<Bytes>> = HashMap::new();
        let mut unsub: HashMap<Kind, Vec<Bytes>> = HashMap::new();
        for (name, wanted) in names {
            match (wanted, self.upstream.get(&name).copied()) {
                (true, None) => {
                    sub.entry(name.0).or_default().push(name.1.clone());
                    self.upstream.insert(name, false);
                }
                // Already confirmed on this connection: a new hold needs no new SUBSCRIBE.
                (true, Some(true)) => hub.confirmed(&name),
                (true, Some(false)) => {}
                (false, Some(_)) => {
                    unsub.entry(name.0).or_default().push(name.1.clone());
                    self.upstream.remove(&name);
                }
                (false, None) => {}
            }
        }
        let mut out = BytesMut::new();
        for (kinds, word) in [(&sub, true), (&unsub, false)] {
            for (kind, names) in kinds {
                // Batches of a bounded size: a command never exceeds the upstream's limits.
                for chunk in names.chunks(1024) {
                    let verb = if word {
                        kind.subscribe()
                    } else {
                        kind.unsubscribe()
                    };
                    let mut args: Vec<&[u8]> = vec![verb.as_bytes()];
                    args.extend(chunk.iter().map(|n| &n[..]));
                    encode::command(&mut out, &args);
                }
            }
        }
        if !out.is_empty() {
            self.write.write_all(&out).await.map_err(|_| ())?;
        }
        Ok(())
    }

    /// One frame from the upstream: a push (message or confirmation) or a query's reply.
    fn frame(&mut self, hub: &Hub, frame: &Bytes) -> Result<(), ()> {
        if frame.first() != Some(&b'>') {
            return match self.waiting.pop_front() {
                Some(tx) => {
                    let _ = tx.send(Ok(frame.clone()));
                    Ok(())
                }
                // A reply nobody asked for: the connection is out of step.
                None => Err(()),
            };
        }
        let Ok(Value::Agg(_, items)) = value::parse(frame) else {
            return Err(());
        };
        match read_push(&items) {
            Push::Message(kind, name, channel, payload) => {
                hub.dispatch(&(kind, Bytes::copy_from_slice(name)), channel, payload);
            }
            Push::Subscribed(kind, name) => {
                let n = (kind, Bytes::copy_from_slice(name));
                if let Some(c) = self.upstream.get_mut(&n) {
                    *c = true;
                    hub.confirmed(&n);
                }
            }
            // Its own UNSUBSCRIBEs' confirmations, and pushes respite does not use.
            Push::Unsubscribed(..) | Push::Other => {}
        }
        Ok(())
    }
}

/// A push frame of a subscriber connection, as respite uses it.
pub(super) enum Push<'v> {
    /// A message for the name (`kind`, `name`): `channel` as published (the name itself except
    /// for a pattern's), and its payload.
    Message(Kind, &'v [u8], &'v [u8], &'v [u8]),
    /// The upstream confirmed a subscription.
    Subscribed(Kind, &'v [u8]),
    /// The upstream ended one: respite's own UNSUBSCRIBE, or (shard channels) the server's own
    /// when the channel's slot left the node.
    Unsubscribed(Kind, &'v [u8]),
    /// Anything else (an invalidation is never on a subscriber connection).
    Other,
}

/// What the items of a push frame say.
pub(super) fn read_push<'v>(items: &'v [Value<'_>]) -> Push<'v> {
    let word = |i: usize| items.get(i).and_then(|v| v.bulk());
    let (Some(kind), Some(name)) = (word(0), word(1)) else {
        return Push::Other;
    };
    match kind {
        b"message" | b"smessage" => match word(2) {
            Some(payload) => {
                let k = if kind == b"message" {
                    Kind::Channel
                } else {
                    Kind::Shard
                };
                Push::Message(k, name, name, payload)
            }
            None => Push::Other,
        },
        b"pmessage" => match (word(2), word(3)) {
            (Some(channel), Some(payload)) => Push::Message(Kind::Pattern, name, channel, payload),
            _ => Push::Other,
        },
        b"subscribe" => Push::Subscribed(Kind::Channel, name),
        b"psubscribe" => Push::Subscribed(Kind::Pattern, name),
        b"ssubscribe" => Push::Subscribed(Kind::Shard, name),
        b"unsubscribe" => Push::Unsubscribed(Kind::Channel, name),
        b"punsubscribe" => Push::Unsubscribed(Kind::Pattern, name),
        b"sunsubscribe" => Push::Unsubscribed(Kind::Shard, name),
        _ => Push::Other,
    }
}
