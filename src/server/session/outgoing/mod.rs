//! The outgoing side of a session: everything between a request the reader has decided on and
//! the writer. It owns the group of forwarded commands not yet sent, the replies already known
//! (near-cache hits) not yet queued, the writes noted for the near cache, the near cache's clock
//! for the batch, the client's connection choice ([`Pin`]: pinned, lane, out of band), the
//! upstream send, the reply FIFO and the waits (for room, for a barrier, for the client to take
//! its replies) during which it keeps reading the client ([`park`]).
//!
//! # Invariants
//! - [`Fifo::push`] is called here only, through [`Outgoing::enqueue`] and the weight-0 markers
//!   below: every entry's weight is the number of requests it answers (a group of `count`
//!   forwarded commands weighs `count`, a run of near-cache hits its length), and markers that
//!   answer no request ([`Pending::Written`], [`Pending::Timed`]) weigh 0. A
//!   [`Pending::Barrier`] of a wait inside a send weighs 1, so a full queue waits for it like for
//!   any reply.
//! - Order: whatever is held (known replies, then the group) is queued before anything queued
//!   after it; a job sent on its own ([`Outgoing::send`]) first sends the group held before it,
//!   so it runs upstream after what the client sent before it.
//! - Nothing here decides what a command means: the reader and the command families do, and
//!   hand over bytes, a weight and how the reply is kept ([`Keep`]).
//! - The replay fence holds for every connection a client's jobs go on — shared, a lane, its
//!   pinned one (WATCH, MULTI … EXEC on it, a blocking command, another database, an upstream
//!   user's login) — because [`Outgoing::send_now`] is the only way a session's job reaches the
//!   upstream: while local-only mode serves, no job is written upstream (each gets "not sent"),
//!   and once it stops, none is written before the outage's journal has been replayed (or its
//!   keys deleted) and the fence lifted. So a command a client sends after a write acknowledged
//!   locally runs upstream after that write, whichever connection carries it. Out-of-band
//!   commands alone (SCRIPT KILL, FUNCTION KILL, SHUTDOWN) pass: they change no data, and a
//!   replay stuck behind a script needs the kill.
mod fairness;
mod fifo;
mod park;

pub(crate) use fairness::gate;
pub(crate) use fifo::Fifo;
pub(crate) use park::ParkedRead;

use super::forward::append_request;
use super::pin::Pin;
use super::{Client, Keep, Pending, group_full};
use crate::cache::NearCache;
use crate::cache::coherence::{Unanswered, Written, note_write};
use crate::command::CommandSpec;
use crate::protocol::Request;
use crate::upstream::scripts::ScriptMark;
use crate::upstream::{Reply, ReplyBudget, Upstream};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

pub(crate) struct Outgoing<'f> {
    fifo: &'f Fifo<Pending>,
    /// Forwarded commands not yet sent upstream, encoded back to back, and how many.
    group: BytesMut,
    group_count: usize,
    /// The group holds a known-slow command ([`crate::command::known_slow`]).
    group_slow: bool,
    /// The group holds scripts: whose, and of which kinds (see [`crate::upstream::scripts`]).
    group_script: Option<ScriptMark>,
    /// The writes among them (near cache only): a box from the thread's spares once one is
    /// noted, none otherwise (see [`Written::spare`]).
    written: Option<Box<Written>>,
    /// Replies already known (near-cache hits) not yet queued, back to back, and how many.
    /// Whatever the group holds came after them.
    ready: BytesMut,
    ready_count: usize,
    /// This client's writes sent upstream and not answered yet (near cache only): while there
    /// are any, its reads bypass the cache, so it always reads its own writes.
    unanswered_writes: &'f Unanswered,
    /// The near cache's clock, read once per batch of requests (and again after any wait).
    cache_now: Option<u64>,
    /// Bytes of upstream replies this client has not taken yet, against limits.max_reply_bytes.
    budget: Option<Arc<ReplyBudget>>,
    upstream: Option<Arc<Upstream>>,
    /// Whether local-only mode serves, and the recovery fence (see the invariants).
    shared: Arc<crate::server::Shared>,
    /// The session's kill token (CLIENT KILL, drain): ends the drain waits.
    kill: CancellationToken,
    /// [`gate`] for this client's limits.max_reply_bytes.
    gate: usize,
    /// Which connection the client's jobs go on.
    pub(in crate::server::session) pin: Pin,
    /// The client's socket, read while a wait is parked ([`park`]); what arrived meanwhile, the
    /// most kept, whether its stream ended then with a reply owed on a pinned connection
    /// (`hung_up`), or otherwise (`parked_eof`: what came before the end is still served).
    sock: &'f dyn ParkedRead,
    parked: BytesMut,
    parked_max: usize,
    hung_up: bool,
    parked_eof: bool,
    /// Bytes the reader has read and not framed yet, as of the request being handled: they
    /// count with `parked` against the client's limit.
    unframed: usize,
}

/// What a session's outgoing side is made from (see [`Outgoing::new`]).
pub(crate) struct Parts<'f> {
    pub fifo: &'f Fifo<Pending>,
    pub unanswered_writes: &'f Unanswered,
    pub budget: Option<Arc<ReplyBudget>>,
    pub upstream: Option<Arc<Upstream>>,
    pub shared: Arc<crate::server::Shared>,
    pub kill: CancellationToken,
    pub max_reply_bytes: usize,
    pub max_query_buffer: usize,
    pub sock: &'f dyn ParkedRead,
}

impl<'f> Outgoing<'f> {
    pub(crate) fn new(p: Parts<'f>) -> Self {
        Outgoing {
            fifo: p.fifo,
            group: BytesMut::new(),
            group_count: 0,
            group_slow: false,
            group_script: None,
            written: None,
            ready: BytesMut::new(),
            ready_count: 0,
            unanswered_writes: p.unanswered_writes,
            cache_now: None,
            budget: p.budget,
            upstream: p.upstream,
            shared: p.shared,
            kill: p.kill,
            gate: gate(p.max_reply_bytes),
            pin: Pin::default(),
            sock: p.sock,
            parked: BytesMut::new(),
            // The client's own limit bounds what waits; the budget says when it is reached.
            parked_max: p.max_reply_bytes.min(p.max_query_buffer),
            hung_up: false,
            parked_eof: false,
            unframed: 0,
        }
    }

    /// The client's reply budget (`None` without an upstream).
    pub(crate) fn budget(&self) -> Option<&Arc<ReplyBudget>> {
        self.budget.as_ref()
    }

    /// The writer has given up on the client (it went away, or hung up while parked).
    pub(crate) fn abandoned(&self) -> bool {
        self.fifo.abandoned()
    }

    /// Some reply is still owed to the client (queued, not yet written).
    pub(crate) fn owes_replies(&self) -> bool {
        !self.fifo.is_empty()
    }

    /// A new batch of requests was read: the near cache's clock is read afresh.
    pub(crate) fn new_batch(&mut self) {
        self.cache_now = None;
    }

    /// The near cache's clock for this batch.
    pub(crate) fn cache_now(&mut self, cache: &NearCache) -> u64 {
        *self.cache_now.get_or_insert_with(|| cache.now())
    }

    /// This client's writes still unanswered (read-your-writes, see [`Unanswered`]).
    pub(crate) fn unanswered_writes(&self) -> &Unanswered {
        self.unanswered_writes
    }

    /// Note a write about to join the group (see [`note_write`]).
    pub(crate) fn note_write(
        &mut self,
        cache: &NearCache,
        spec: &'static CommandSpec,
        args: &[Bytes],
        prefix: &[u8],
    ) {
        note_write(
            cache,
            self.written.get_or_insert_with(Written::spare),
            self.unanswered_writes,
            spec,
            args,
            prefix,
        );
    }

    /// Append an encoded command to the group bound upstream (counted by [`Self::grouped`]).
    /// Note that the group (or the next job, [`Self::send_job`]) holds a script of `owner`'s:
    /// `function` for FCALL, else EVAL.
    pub(crate) fn mark_script(&mut self, owner: Option<Arc<str>>, function: bool) {
        let mark = self.group_script.get_or_insert_with(|| ScriptMark {
            owner,
            ..ScriptMark::default()
        });
        mark.eval |= !function;
        mark.function |= function;
    }

    pub(crate) fn hold(&mut self, command: &[u8], slow: bool) {
        self.group.extend_from_slice(command);
        self.group_slow |= slow;
    }

    /// Append a request, as the upstream gets it, to the group (counted by [`Self::grouped`]).
    pub(crate) fn hold_request(&mut self, req: &Request, slow: bool) {
        append_request(&mut self.group, req);
        self.group_slow |= slow;
    }

    /// Commands held in the group, not yet sent.
    pub(crate) fn held(&self) -> usize {
        self.group_count
    }

    /// Count the command just held; a full group goes upstream now, so big pipelines stream
    /// instead of piling up.
    pub(crate) async fn grouped(&mut self, c: &Client) {
        self.group_count += 1;
        if group_full(self.group_count, self.group.len())
            || self.pin.bulk_group_full(self.group_count)
        {
            self.send_group(c).await;
        }
    }

    /// A reply known at once (a near-cache hit): consecutive ones are queued together, one FIFO
    /// entry and one copy into the client's output for a whole pipeline of hits.
    pub(crate) async fn ready_reply(&mut self, c: &Client, bytes: Bytes) {
        if self.group_count > 0 {
            self.send_group(c).await;
        }
        self.ready.extend_from_slice(&bytes);
        self.ready_count += 1;
        if group_full(self.ready_count, self.ready.len()) {
            self.flush_ready().await;
        }
    }

    async fn flush_ready(&mut self) {
        if self.ready_count == 0 {
            return;
        }
        let count = std::mem::take(&mut self.ready_count);
        // Taken whole: an idle client keeps no buffer.
        let bytes = std::mem::take(&mut self.ready).freeze();
        self.enqueue(Pending::Ready(bytes), count).await
    }

    /// Queue a reply for one request; whatever is held goes first, keeping the order.
    pub(crate) async fn push(&mut self, c: &Client, p: Pending) {
        self.send_group(c).await;
        self.enqueue(p, 1).await
    }

    /// Send the group of forwarded commands, if any, and queue the slot for their replies.
    pub(crate) async fn send_group(&mut self, c: &Client) {
        self.send_group_keeping(c, Keep::All).await
    }

    /// As [`Self::send_group`], the client seeing only the replies `keep` picks.
    pub(crate) async fn send_group_keeping(&mut self, c: &Client, keep: Keep) {
        // Replies already known are older than anything in the group (a hit sends the group
        // before it joins them).
        self.flush_ready().await;
        if self.group_count == 0 {
            return;
        }
        // A client that leaves its replies unread sends nothing more until it takes them.
        self.wait_for_drain().await;
        let count = std::mem::take(&mut self.group_count);
        let bytes = self.group.split().freeze();
        let slow = std::mem::take(&mut self.group_slow);
        let script = self.group_script.take();
        let rx = self
            .send_now(c, bytes, count, self.budget.clone(), slow, script)
            .await;
        // The send may have waited for room upstream.
        self.cache_now = None;
        self.enqueue(Pending::Upstream { rx, count, keep }, count)
            .await;
        self.release_written().await
    }

    /// Send `job` (`count` commands, its parts back to back) as one job with one reply slot,
    /// after what is held, the client seeing the replies `keep` picks. `slow`: it holds a
    /// known-slow command.
    pub(crate) async fn send_job(
        &mut self,
        c: &Client,
        job: &[&[u8]],
        count: usize,
        slow: bool,
        keep: Keep,
    ) {
        self.send_group(c).await;
        for part in job {
            self.group.extend_from_slice(part);
        }
        self.group_slow = slow;
        self.group_count = count;
        self.send_group_keeping(c, keep).await
    }

    /// The writes noted since the last job: a marker after it (or nothing pending, for a
    /// transaction that is not sent) that invalidates their keys again once answered.
    pub(crate) async fn release_written(&mut self) {
        if let Some(written) = self.written.take() {
            self.fifo.push(Pending::Written(written), 0).await;
        }
    }

    /// The end of a batch: a sampled command's latency is recorded once the replies before
    /// this marker are written.
    pub(crate) async fn timed(&mut self, spec: &'static CommandSpec, framed: std::time::Instant) {
        self.fifo.push(Pending::Timed(spec, framed), 0).await
    }

    /// Wait until every reply owed before this point has been written, reading the client
    /// meanwhile (see [`park`]).
    pub(crate) async fn barrier(&mut self, c: &Client) {
        let (tx, rx) = oneshot::channel();
        self.push(c, Pending::Barrier(tx)).await;
        let _ = self.park(rx).await;
    }

    /// Queue a reply slot standing for `weight` requests. Only when the queue is full (the
    /// client has not taken its earlier replies, or one of them is a blocking command's) does
    /// this wait, reading the client meanwhile.
    pub(crate) async fn enqueue(&mut self, p: Pending, weight: usize) {
        if let (Pending::Ready(bytes), Some(b)) = (&p, &self.budget) {
            // Held until written, like an upstream reply: a client that does not read its
            // near-cache hits or respite's own answers holds them against its limits too (the
            // writer releases them).
            b.owe(bytes.len());
        }
        let fifo = self.fifo;
        // Queued at once under one lock when there is room, the usual case.
        let Some(p) = fifo.try_push(p, weight) else {
            return;
        };
        // About to wait for the client: the batch's clock reading will be old by then.
        self.cache_now = None;
        let push = fifo.push(p, weight);
        tokio::pin!(push);
        if self.park(push.as_mut()).await.is_none() {
            // Hung up: the queue is abandoned, so this no longer waits.
            push.await
        }
    }

    /// Send a job of the client's own (SELECT, AUTH, a transaction, a namespace step) on its
    /// connection, after the group held before it; the caller waits for the reply. (The group
    /// goes first: a SELECT sent while `SET k v` waited in the group ran before it and the
    /// write landed in the next database, issue 21 finding 9.)
    pub(crate) async fn send(
        &mut self,
        c: &Client,
        bytes: Bytes,
        count: usize,
        budget: Option<Arc<ReplyBudget>>,
        slow: bool,
    ) -> oneshot::Receiver<Reply> {
        if self.group_count > 0 || self.ready_count > 0 {
            // Boxed: `send_group` calls `send_now`, not this, so this recurses once at most.
            Box::pin(self.send_group(c)).await;
        }
        self.send_now(c, bytes, count, budget, slow, None).await
    }

    /// Send a job on the client's connection: its pinned one if it holds one, else its shared
    /// one for its lane (or out of band), after the replies owed on a pinned connection just
    /// given back.
    async fn send_now(
        &mut self,
        c: &Client,
        bytes: Bytes,
        count: usize,
        budget: Option<Arc<ReplyBudget>>,
        slow: bool,
        script: Option<ScriptMark>,
    ) -> oneshot::Receiver<Reply> {
        if self.hung_up {
            // The client is gone (see `park`): nothing more runs for it.
            return oneshot::channel().1;
        }
        if !self.pin.out_of_band()
            && let Some(refused) = self.held_back().await
        {
            return refused;
        }
        if let Some(p) = self.pin.held() {
            if slow && let Some(upstream) = &self.upstream {
                // What ends a slow command must not wait for a connection to open behind it.
                upstream.ready_out_of_band();
            }
            // Boxed: rare, and inline its state would grow every idle session.
            return Box::pin(p.send_marked(bytes, count, budget, slow)).await;
        }
        if self.pin.after_pinned() {
            // Not `barrier`: that would send the group this job is made of. `after_pinned`
            // stays set while waiting: a client leaving meanwhile still owes the pinned
            // connection a reply, so it hangs up (see `park`).
            let (tx, rx) = oneshot::channel();
            self.enqueue(Pending::Barrier(tx), 1).await;
            let _ = self.park(rx).await;
            self.pin.settled();
            if self.hung_up {
                return oneshot::channel().1;
            }
        }
        let upstream = self.upstream.as_ref().expect("sent only with an upstream");
        if self.pin.out_of_band() {
            // SCRIPT KILL and the like: a connection of its own, not behind the busy command.
            return upstream.out_of_band(c.proto, bytes, budget);
        }
        // Registered until answered: a tenant's SCRIPT KILL asks whose script may be running.
        let tag = script.map(|mark| upstream.scripts().tag(mark));
        if let Some(db) = c.tenant.as_ref().and_then(|t| t.db) {
            // Boxed: rare, and inline its state would grow every idle session.
            let conn = upstream.conn_in_db(db, self.pin.lane(), c.proto, c.id);
            return Box::pin(conn.send_scripts(bytes, count, budget, slow, tag)).await;
        }
        upstream
            .conn_in(self.pin.lane(), c.proto, c.id)
            .send_scripts(bytes, count, budget, slow, tag)
            .await
    }

    /// The replay fence (see the invariants): `None` to send now, after waiting while the fence
    /// is up; or, while local-only mode serves, the "not sent" outcome to give the job instead.
    /// On a pinned connection that survived the outage (a frozen upstream) a job written now
    /// would run when the upstream wakes, before the replay: a MULTI … EXEC after a WATCH
    /// taken before the outage, or a SELECT-ed session's write. Costs two atomic loads.
    async fn held_back(&self) -> Option<oneshot::Receiver<Reply>> {
        let mut waited = false;
        loop {
            if self.shared.local_only_serves() {
                let (tx, rx) = oneshot::channel();
                let upstream = self.upstream.as_ref().expect("sent only with an upstream");
                let cause = crate::upstream::UpstreamError::new(
                    crate::upstream::handshake::addr(upstream.config()),
                    crate::upstream::error::Kind::Closed(crate::upstream::error::Closer::LocalOnly),
                );
                let _ = tx.send(Err(
                    crate::upstream::NoReply::NotSent(Arc::new(cause)).into()
                ));
                return Some(rx);
            }
            if waited || !self.shared.outage.fenced() {
                return None;
            }
            self.shared.outage.wait().await;
            // Down again during the replay: checked once more before sending.
            waited = true;
        }
    }
}
