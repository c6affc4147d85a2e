//! The subscriber connections of a cluster upstream (`redis+cluster://`): where [`super::link`]
//! keeps one connection to one server, a cluster needs one per place a name lives.
//!
//! - Channels and patterns (classic Pub/Sub) are cluster-wide: a PUBLISH on any node reaches
//!   every node's subscribers. They all ride one *global* connection, to any node that answers
//!   (a primary of the topology, else a seed), which also carries the hub's queries (PUBSUB
//!   NUMSUB, ACL DRYRUN). When that node fails, the connection moves to the next node and every
//!   channel and pattern is subscribed there again.
//! - Shard channels live on the primary of their slot (SSUBSCRIBE is refused elsewhere with
//!   MOVED): one *shard* connection per primary that owns a wanted shard channel, each carrying
//!   only SSUBSCRIBE and SUNSUBSCRIBE (so any reply that is not a push is one of their errors).
//!   A shard channel follows its slot: on a new topology, on the server's own `sunsubscribe`
//!   push (sent when the slot leaves the node) and on a MOVED refusal, it is withdrawn where it
//!   was and subscribed on the slot's primary now.
//!
//! Every connection is opened by a task of its own that then reads it and hands its frames to
//! the one manager task here, which alone writes and keeps the state, so a node that is slow
//! to connect holds up no other. Messages published while a name moves are lost, as they are
//! for a client reconnecting to Redis.
//!
//! # Invariants
//! - A message is handed to the hub only from the connection that holds its name now (a
//!   connection the name is being withdrawn from may still deliver one: dropped), so a
//!   subscriber never gets two copies from a move.
//! - A name is confirmed to the hub only by the connection that holds it, and unconfirmed
//!   whenever it leaves one (withdrawn, or the connection lost).
use super::link::{LinkDown, NAME, Push, read_push};
use super::{Hub, Kind, Name, Query};
use crate::config::UpstreamConfig;
use crate::protocol::value::{self, Value};
use crate::protocol::{Protocol, ReplyScanner, encode};
use crate::upstream::cluster::Cluster;
use crate::upstream::cluster::slot::key_slot;
use crate::upstream::handshake::{self, BoxWrite};
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long a node that could not be reached is passed over before it is tried again.
const REST: Duration = Duration::from_millis(300);

/// What a connection carries: every channel and pattern (and the queries), or the shard
/// channels of its node's slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Role {
    Global,
    Shard,
}

type Key = (Role, String);

/// What a connection's task tells the manager; each carries the connection's id.
enum Event {
    Opened(BoxWrite),
    Failed(String),
    Frame(Bytes),
    Closed,
}

struct Link {
    id: u64,
    task: JoinHandle<()>,
    /// `None` while connecting.
    write: Option<BoxWrite>,
    /// What this connection has asked the node to subscribe, and whether it confirmed.
    upstream: HashMap<Name, bool>,
    /// Queries sent on it (the global connection only), waiting for their replies in order.
    waiting: VecDeque<oneshot::Sender<Result<Bytes, LinkDown>>>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
        for tx in self.waiting.drain(..) {
            let _ = tx.send(Err(LinkDown));
        }
    }
}

/// Subscriptions and withdrawals to send, per connection, gathered while deciding.
#[derive(Default)]
struct Out(HashMap<Key, (Vec<Name>, Vec<Name>)>);

impl Out {
    fn sub(&mut self, key: &Key, name: Name) {
        self.0.entry(key.clone()).or_default().0.push(name);
    }
    fn unsub(&mut self, key: &Key, name: Name) {
        self.0.entry(key.clone()).or_default().1.push(name);
    }
}

struct Manager {
    hub: Arc<Hub>,
    config: UpstreamConfig,
    cluster: Arc<Cluster>,
    stop: CancellationToken,
    events: mpsc::Sender<(u64, Event)>,
    next_id: u64,
    links: HashMap<Key, Link>,
    /// Every name the hub wants subscribed upstream.
    wanted: HashSet<Name>,
    /// The node the global connection is (to be) on.
    global: Option<String>,
    /// Nodes that could not be reached, passed over until then.
    resting: HashMap<String, Instant>,
    /// Queries waiting for the global connection to open.
    queued: VecDeque<Query>,
    /// When to try again what could not be placed.
    retry_at: Option<Instant>,
}

pub(super) async fn run(
    hub: Arc<Hub>,
    config: UpstreamConfig,
    cluster: Arc<Cluster>,
    mut queries: mpsc::Receiver<Query>,
    stop: CancellationToken,
) {
    let (events, mut rx) = mpsc::channel(4096);
    let mut topology = cluster.watch();
    let mut m = Manager {
        wanted: hub.relinked().into_iter().collect(),
        hub,
        config,
        cluster,
        stop: stop.clone(),
        events,
        next_id: 0,
        links: HashMap::new(),
        global: None,
        resting: HashMap::new(),
        queued: VecDeque::new(),
        retry_at: None,
    };
    m.sync().await;
    loop {
        let retry = m.retry_at;
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            Some((id, event)) = rx.recv() => m.event(id, event).await,
            _ = m.hub.changed.notified() => {
                let mut out = Out::default();
                for (name, wanted) in m.hub.take_dirty() {
                    if wanted {
                        m.wanted.insert(name.clone());
                        m.place(name, &mut out);
                    } else {
                        m.wanted.remove(&name);
                        m.withdraw(&name, None, &mut out);
                    }
                }
                m.flush(out).await;
                m.drop_idle();
            }
            Ok(()) = topology.changed() => m.sync().await,
            Some(q) = queries.recv() => m.query(q).await,
            _ = sleep_until(retry) => {
                m.retry_at = None;
                m.sync().await;
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Manager {
    /// Where `name` belongs now: its slot's primary, or the global connection's node. `None`
    /// when that is not known or every candidate is resting.
    fn home(&mut self, name: &Name) -> Option<Key> {
        match name.0 {
            Kind::Shard => {
                let topo = self.cluster.current()?;
                let addr = topo.primary(key_slot(&name.1))?;
                Some((Role::Shard, addr.to_string()))
            }
            _ => Some((Role::Global, self.global_node()?)),
        }
    }

    /// The global connection's node: the one it is on, else the first node that is not
    /// resting (the topology's primaries, then the seeds).
    fn global_node(&mut self) -> Option<String> {
        if let Some(g) = &self.global {
            return Some(g.clone());
        }
        let now = Instant::now();
        self.resting.retain(|_, until| *until > now);
        let mut candidates: Vec<String> = self
            .cluster
            .current()
            .map(|t| t.primaries().to_vec())
            .unwrap_or_default();
        candidates.extend(self.config.url.seeds.iter().cloned());
        let pick = candidates
            .into_iter()
            .find(|a| !self.resting.contains_key(a))?;
        self.global = Some(pick.clone());
        Some(pick)
    }

    fn is_resting(&mut self, addr: &str) -> bool {
        match self.resting.get(addr) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                self.resting.remove(addr);
                false
            }
            None => false,
        }
    }

    fn retry_soon(&mut self) {
        let at = Instant::now() + REST;
        self.retry_at = Some(self.retry_at.map_or(at, |t| t.min(at)));
    }

    /// Subscribe `name` where it belongs, withdrawing it from anywhere else; open that
    /// connection if need be.
    fn place(&mut self, name: Name, out: &mut Out) {
        let Some(key) = self.home(&name) else {
            self.retry_soon();
            return;
        };
        if let Some(&confirmed) = self.links.get(&key).and_then(|l| l.upstream.get(&name)) {
            if confirmed {
                // A new hold on a name already confirmed here needs no new SUBSCRIBE.
                self.hub.confirmed(&name);
            }
            return;
        }
        self.withdraw(&name, Some(&key), out);
        match self.links.get_mut(&key) {
            Some(link) if link.write.is_some() => {
                link.upstream.insert(name.clone(), false);
                out.sub(&key, name);
            }
            // Subscribed once it opens.
            Some(_) => {}
            None => {
                if self.is_resting(&key.1) {
                    self.retry_soon();
                } else {
                    self.connect(key);
                }
            }
        }
    }

    /// Take `name` off every connection but `keep`'s.
    fn withdraw(&mut self, name: &Name, keep: Option<&Key>, out: &mut Out) {
        for (key, link) in self.links.iter_mut() {
            if Some(key) != keep && link.upstream.remove(name).is_some() {
                self.hub.unconfirmed(name);
                out.unsub(key, name.clone());
            }
        }
    }

    /// Bring every connection in line with where each name belongs now.
    async fn sync(&mut self) {
        let mut out = Out::default();
        let held: Vec<(Key, Name)> = self
            .links
            .iter()
            .flat_map(|(k, l)| l.upstream.keys().map(move |n| (k.clone(), n.clone())))
            .collect();
        for (key, name) in held {
            let home = self
                .wanted
                .contains(&name)
                .then(|| self.home(&name))
                .flatten();
            if home.as_ref() != Some(&key) {
                self.withdraw(&name, home.as_ref(), &mut out);
            }
        }
        let wanted: Vec<Name> = self.wanted.iter().cloned().collect();
        for name in wanted {
            self.place(name, &mut out);
        }
        if !self.queued.is_empty() {
            self.ensure_global();
        }
        self.flush(out).await;
        self.drop_idle();
    }

    /// Open the global connection if it is neither open nor opening.
    fn ensure_global(&mut self) {
        match self.global_node() {
            Some(addr) => {
                let key = (Role::Global, addr);
                if !self.links.contains_key(&key) {
                    self.connect(key);
                }
            }
            None => self.retry_soon(),
        }
    }

    /// Shard connections that hold nothing and have nothing to hold are closed.
    fn drop_idle(&mut self) {
        let wanted_at: HashSet<Key> = self
            .wanted
            .iter()
            .filter(|n| n.0 == Kind::Shard)
            .filter_map(|n| {
                let topo = self.cluster.current()?;
                Some((Role::Shard, topo.primary(key_slot(&n.1))?.to_string()))
            })
            .collect();
        self.links.retain(|key, link| {
            key.0 == Role::Global || !link.upstream.is_empty() || wanted_at.contains(key)
        });
    }

    fn connect(&mut self, key: Key) {
        self.next_id += 1;
        let id = self.next_id;
        let config = self.config.for_node(&key.1);
        let task = tokio::spawn(connection(
            config,
            id,
            self.events.clone(),
            self.stop.clone(),
        ));
        self.links.insert(
            key,
            Link {
                id,
                task,
                write: None,
                upstream: HashMap::new(),
                waiting: VecDeque::new(),
            },
        );
    }

    /// Write what `out` gathered; a connection that fails to take it is lost.
    async fn flush(&mut self, out: Out) {
        for (key, (subs, unsubs)) in out.0 {
            let mut bytes = BytesMut::new();
            encode_commands(&mut bytes, &subs, true);
            encode_commands(&mut bytes, &unsubs, false);
            let Some(link) = self.links.get_mut(&key) else {
                continue;
            };
            let Some(write) = link.write.as_mut() else {
                continue;
            };
            if write.write_all(&bytes).await.is_err() {
                let id = link.id;
                self.lost(key, id, "write failed").await;
            }
        }
    }

    /// A query for the global connection: sent now, or once it opens.
    async fn query(&mut self, (command, tx): Query) {
        let global = self.global.clone().map(|g| (Role::Global, g));
        if let Some(key) = global
            && let Some(link) = self.links.get_mut(&key)
            && let Some(write) = link.write.as_mut()
        {
            if write.write_all(&command).await.is_ok() {
                link.waiting.push_back(tx);
            } else {
                let _ = tx.send(Err(LinkDown));
                let id = link.id;
                self.lost(key, id, "write failed").await;
            }
            return;
        }
        self.queued.push_back((command, tx));
        self.ensure_global();
    }

    fn key_of(&self, id: u64) -> Option<Key> {
        self.links
            .iter()
            .find(|(_, l)| l.id == id)
            .map(|(k, _)| k.clone())
    }

    async fn event(&mut self, id: u64, event: Event) {
        // A connection since withdrawn: whatever it says is over.
        let Some(key) = self.key_of(id) else {
            return;
        };
        match event {
            Event::Opened(write) => {
                if let Some(link) = self.links.get_mut(&key) {
                    link.write = Some(write);
                }
                info!(node = %key.1, role = ?key.0, "pubsub: cluster subscriber connection open");
                if key.0 == Role::Global {
                    for q in std::mem::take(&mut self.queued) {
                        self.query(q).await;
                    }
                }
                self.sync().await;
            }
            Event::Failed(error) => {
                warn!(node = %key.1, %error, "pubsub: cannot open a cluster subscriber connection");
                self.lost(key, id, "not reachable").await;
            }
            Event::Closed => self.lost(key, id, "connection lost").await,
            Event::Frame(frame) => self.frame(key, &frame).await,
        }
    }

    /// Connection `id` at `key` is gone: its names are unconfirmed and placed again (the
    /// global connection's on the next node), the node rests, the topology is read again.
    async fn lost(&mut self, key: Key, id: u64, why: &str) {
        if self.links.get(&key).is_none_or(|l| l.id != id) {
            return;
        }
        let Some(mut link) = self.links.remove(&key) else {
            return;
        };
        if link.write.is_some() {
            warn!(node = %key.1, role = ?key.0, why, "pubsub: cluster subscriber connection lost; resubscribing");
        }
        for name in link.upstream.keys() {
            self.hub.unconfirmed(name);
        }
        link.upstream.clear();
        drop(link);
        self.resting.insert(key.1.clone(), Instant::now() + REST);
        if key.0 == Role::Global && self.global.as_ref() == Some(&key.1) {
            self.global = None;
            // Nothing waits behind a node that cannot be reached.
            for (_, tx) in self.queued.drain(..) {
                let _ = tx.send(Err(LinkDown));
            }
        }
        self.cluster.request_refresh();
        self.retry_soon();
        Box::pin(self.sync()).await;
    }

    async fn frame(&mut self, key: Key, frame: &Bytes) {
        if frame.first() != Some(&b'>') {
            return self.reply(key, frame).await;
        }
        let Ok(Value::Agg(_, items)) = value::parse(frame) else {
            return;
        };
        let Some(link) = self.links.get_mut(&key) else {
            return;
        };
        match read_push(&items) {
            Push::Message(kind, name, channel, payload) => {
                let name = (kind, Bytes::copy_from_slice(name));
                // Only the connection that holds the name (see the invariants).
                if link.upstream.contains_key(&name) {
                    self.hub.dispatch(&name, channel, payload);
                }
            }
            Push::Subscribed(kind, name) => {
                let name = (kind, Bytes::copy_from_slice(name));
                if let Some(c) = link.upstream.get_mut(&name) {
                    *c = true;
                    self.hub.confirmed(&name);
                }
            }
            Push::Unsubscribed(Kind::Shard, name) => {
                // Still held here: the node dropped it (its slot moved away). Read where the
                // slot went; placing it again meanwhile is answered with MOVED, which says.
                let name = (Kind::Shard, Bytes::copy_from_slice(name));
                if link.upstream.remove(&name).is_some() {
                    self.hub.unconfirmed(&name);
                    self.cluster.request_refresh();
                    if self.wanted.contains(&name) {
                        let mut out = Out::default();
                        self.place(name, &mut out);
                        self.flush(out).await;
                    }
                }
            }
            Push::Unsubscribed(..) | Push::Other => {}
        }
    }

    /// A frame that is not a push: a query's reply on the global connection; on a shard
    /// connection, the refusal of an SSUBSCRIBE or SUNSUBSCRIBE.
    async fn reply(&mut self, key: Key, frame: &Bytes) {
        let Some(link) = self.links.get_mut(&key) else {
            return;
        };
        if key.0 == Role::Global {
            match link.waiting.pop_front() {
                Some(tx) => {
                    let _ = tx.send(Ok(frame.clone()));
                }
                None => {
                    // A reply nobody asked for: the connection is out of step.
                    let id = link.id;
                    self.lost(key, id, "unexpected reply").await;
                }
            }
            return;
        }
        let text = String::from_utf8_lossy(frame);
        let text = text.trim_end();
        let mut words = text.trim_start_matches('-').split(' ');
        if words.next() == Some("MOVED")
            && let (Some(Ok(slot)), Some(to)) = (words.next().map(str::parse::<u16>), words.next())
        {
            // The slot is elsewhere: what is unconfirmed of it here goes there.
            let stale: Vec<Name> = link
                .upstream
                .iter()
                .filter(|(n, c)| !**c && key_slot(&n.1) == slot)
                .map(|(n, _)| n.clone())
                .collect();
            for n in &stale {
                link.upstream.remove(n);
            }
            self.cluster.moved(slot, to);
            let mut out = Out::default();
            for n in stale {
                if self.wanted.contains(&n) {
                    self.place(n, &mut out);
                }
            }
            self.flush(out).await;
            return;
        }
        warn!(node = %key.1, reply = %text, "pubsub: a shard subscription was refused; trying again");
        // Which of its unconfirmed names it was is not said: each is tried again shortly.
        link.upstream.retain(|_, confirmed| *confirmed);
        self.retry_soon();
    }
}

/// SUBSCRIBE / PSUBSCRIBE in batches of at most 1,024 names; SSUBSCRIBE one command per slot
/// (a node refuses shard channels of several slots in one command). `subscribe` false for the
/// UNSUBSCRIBE family.
fn encode_commands(out: &mut BytesMut, names: &[Name], subscribe: bool) {
    let verb = |k: Kind| {
        if subscribe {
            k.subscribe()
        } else {
            k.unsubscribe()
        }
    };
    for kind in [Kind::Channel, Kind::Pattern] {
        let of: Vec<&Bytes> = names.iter().filter(|n| n.0 == kind).map(|n| &n.1).collect();
        for chunk in of.chunks(1024) {
            let mut args: Vec<&[u8]> = vec![verb(kind).as_bytes()];
            args.extend(chunk.iter().map(|n| &n[..]));
            encode::command(out, &args);
        }
    }
    let mut by_slot: HashMap<u16, Vec<&[u8]>> = HashMap::new();
    for n in names.iter().filter(|n| n.0 == Kind::Shard) {
        by_slot.entry(key_slot(&n.1)).or_default().push(&n.1);
    }
    for (_, channels) in by_slot {
        for chunk in channels.chunks(1024) {
            let mut args: Vec<&[u8]> = vec![verb(Kind::Shard).as_bytes()];
            args.extend(chunk.iter().copied());
            encode::command(out, &args);
        }
    }
}

/// One subscriber connection: open it, hand over its write half, then read its frames until
/// it ends; everything is told to the manager as events of `id`.
async fn connection(
    config: UpstreamConfig,
    id: u64,
    events: mpsc::Sender<(u64, Event)>,
    stop: CancellationToken,
) {
    let opened = tokio::select! {
        _ = stop.cancelled() => return,
        r = handshake::open(&config, Protocol::Resp3, NAME) => r,
    };
    let mut read = match opened {
        Ok(o) => {
            if events.send((id, Event::Opened(o.write))).await.is_err() {
                return;
            }
            o.read
        }
        Err(e) => {
            let _ = events.send((id, Event::Failed(e.to_string()))).await;
            return;
        }
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut scanner = ReplyScanner::new();
    loop {
        match read.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        loop {
            match scanner.scan(&buf) {
                Ok(Some(found)) => {
                    let frame = buf.split_to(found.len).freeze();
                    if events.send((id, Event::Frame(frame))).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    let _ = events.send((id, Event::Closed)).await;
                    return;
                }
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
    }
    let _ = events.send((id, Event::Closed)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_channels_go_one_slot_per_command() {
        let names: Vec<Name> = ["{a}1", "{a}2", "{b}1", "news"]
            .iter()
            .map(|n| (Kind::Shard, Bytes::copy_from_slice(n.as_bytes())))
            .chain([(Kind::Channel, Bytes::from_static(b"plain"))])
            .collect();
        let mut out = BytesMut::new();
        encode_commands(&mut out, &names, true);
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text.matches("subscribe\r\n").count(), 4, "{text}");
        assert!(
            text.contains("*2\r\n$9\r\nsubscribe\r\n$5\r\nplain\r\n"),
            "{text}"
        );
        assert!(
            text.contains("*3\r\n$10\r\nssubscribe\r\n$4\r\n{a}1\r\n$4\r\n{a}2\r\n"),
            "{text}"
        );
    }
}
