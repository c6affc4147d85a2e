//! The near cache: hot reads answered from memory in the proxy, kept coherent by the upstream's
//! invalidations (`CLIENT TRACKING`, default mode: the only one Dragonfly supports).
//!
//! - [`NearCache::read`] serves a cacheable read ([`ReadKind`]) that a rule covers: a hit, or a
//!   fill through the key's tracking connection that every concurrent miss of the same read
//!   shares (single flight). A fill is the read plus `PTTL`, so the entry expires with its key
//!   (or after `near_cache.safety_ttl_ms`).
//! - Every write that passes through respite invalidates its keys here before it is sent and
//!   again once its reply is in ([`NearCache::invalidate`]); the session also bypasses the cache
//!   for a client's reads of keys it has a write of unanswered (of every key, while a script or
//!   a flush is unanswered), so a client always reads its own writes.
//! - The tracking connections (`tracking_conns`) apply fills and invalidation pushes in the order the
//!   upstream sent them, one frame at a time; see [`store`] for why that keeps stale fills out.
//! - A tracking connection silent for `near_cache.max_silence_ms` (no heartbeat answered since)
//!   serves no hits until it answers again; losing it, or its heartbeat deadline, empties the
//!   cache, and nothing is served from it until tracking is acknowledged again. An upstream that refuses `CLIENT TRACKING`
//!   turns the cache off, with an error in the log and `respite_near_cache_enabled 0`.
pub(crate) mod coherence;
pub mod reads;
mod rules;
pub mod store;
mod trackers;
mod tracking_conns;

pub use crate::config::{CacheConfig, Rule};
pub use reads::{ReadKind, Sig};
pub use rules::RuleSet;
use rules::{HitCounts, Rules, build_rules};
pub use store::{Cached, Fetched, Found, Store};

use crate::config::UpstreamConfig;
use crate::policy::Tenants;
use crate::protocol::Protocol;
use crate::upstream::Upstream;
use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use metrics::{Counter, counter, gauge};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

pub const HITS_TOTAL: &str = "respite_near_cache_hits_total";
pub const MISSES_TOTAL: &str = "respite_near_cache_misses_total";
pub const FILLS_TOTAL: &str = "respite_near_cache_fills_total";
pub const FILLS_DISCARDED_TOTAL: &str = "respite_near_cache_fills_discarded_total";
pub const INVALIDATIONS_TOTAL: &str = "respite_near_cache_invalidations_total";
pub const EVICTIONS_TOTAL: &str = "respite_near_cache_evictions_total";
pub const FLUSHES_TOTAL: &str = "respite_near_cache_flushes_total";
pub const BYTES: &str = "respite_near_cache_bytes";
pub const ENTRIES: &str = "respite_near_cache_entries";
pub const ENABLED: &str = "respite_near_cache_enabled";
pub const TRACKING_CONNECTIONS: &str = "respite_near_cache_tracking_connections";

/// Why the whole cache was emptied.
#[derive(Debug, Clone, Copy)]
pub enum FlushReason {
    /// `invalidate` with a null key list: FLUSHALL, FLUSHDB, SWAPDB on the upstream.
    Upstream,
    /// A FLUSHALL / FLUSHDB / SWAPDB sent through respite.
    SentThrough,
    /// A tracking connection was lost or went silent: invalidations may have been missed.
    TrackingLost,
    /// A reload changed the `near_cache.rule` entries.
    Reload,
    /// A cluster's slots moved to another primary: only their entries were dropped (see
    /// [`trackers`]); counted, never passed to [`Shared::flush`].
    SlotsMoved,
}

impl FlushReason {
    fn label(self) -> &'static str {
        match self {
            FlushReason::Upstream => "upstream",
            FlushReason::SentThrough => "local",
            FlushReason::TrackingLost => "tracking_lost",
            FlushReason::Reload => "reload",
            FlushReason::SlotsMoved => "slots_moved",
        }
    }
}

/// What the cache does with one read.
pub enum Lookup {
    /// The reply, encoded for the client's protocol.
    Hit(Bytes),
    /// The reply comes from a fill in flight.
    Wait(oneshot::Receiver<Fetched>),
    /// Not the cache's: forward it as usual.
    Bypass,
}

/// State the tracking connections share with the sessions.
pub(crate) struct Shared {
    config: CacheConfig,
    store: Store,
    disabled: AtomicBool,
    flushes: AtomicU64,
    /// Keys named in invalidation pushes.
    pushes: AtomicU64,
    /// Reads answered stale in local-only mode.
    stale_hits: AtomicU64,
    /// A cluster upstream's router, for fills a node answered with a redirection.
    router: Option<Arc<Upstream>>,
}

impl Shared {
    fn flush(&self, reason: FlushReason) {
        self.store
            .flush(matches!(reason, FlushReason::TrackingLost));
        self.flushes.fetch_add(1, Ordering::Relaxed);
        counter!(FLUSHES_TOTAL, "reason" => reason.label()).increment(1);
    }
}

/// The near cache for one upstream.
pub struct NearCache {
    shared: Arc<Shared>,
    trackers: trackers::Trackers,
    hasher: foldhash::fast::FixedState,
    rules: ArcSwap<Rules>,
    /// Hit counters by tenant label ("" for clients without a tenant); only grows.
    counts: Mutex<HashMap<String, Arc<HitCounts>>>,
}

impl NearCache {
    /// Start the tracking connections and the sweeper. They stop once `shutdown` fires.
    pub fn start(
        config: CacheConfig,
        upstream: Arc<UpstreamConfig>,
        router: Option<Arc<Upstream>>,
        tenants: Option<&Tenants>,
        stale_reads: std::time::Duration,
        shutdown: CancellationToken,
    ) -> Arc<NearCache> {
        let counts = Mutex::new(HashMap::new());
        let rules = ArcSwap::from_pointee(build_rules(&config.rules, tenants, &counts));
        let shared = Arc::new(Shared {
            store: {
                let store = Store::with_stale_reads(
                    config.max_memory,
                    config.cooldown_after,
                    config.cooldown,
                    stale_reads,
                );
                match router.as_ref().and_then(|u| u.cluster()) {
                    Some(c) => store.with_slot_moves(c.slot_move_counts()),
                    None => store,
                }
            },
            router: router.clone().filter(|u| u.cluster().is_some()),
            config,
            disabled: AtomicBool::new(false),
            flushes: AtomicU64::new(0),
            pushes: AtomicU64::new(0),
            stale_hits: AtomicU64::new(0),
        });
        // Off until tracking is acknowledged: the sweeper publishes what is actually up.
        gauge!(ENABLED).set(0.0);
        let trackers = trackers::Trackers::start(&shared, upstream, router, shutdown.clone());
        let cache = Arc::new(NearCache {
            shared,
            trackers,
            hasher: foldhash::fast::FixedState::with_seed(0x5eed),
            rules,
            counts,
        });
        tokio::spawn(sweeper(cache.clone(), shutdown));
        cache
    }

    /// Each tenant label's (hits, misses) so far.
    fn hit_counts(&self) -> Vec<(String, u64, u64)> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .iter()
            .map(|(t, c)| {
                let h = c.hits.load(Ordering::Relaxed);
                (t.clone(), h, c.misses.load(Ordering::Relaxed))
            })
            .collect()
    }

    /// The rules for a tenant's clients (`None`: clients without a tenant); `None` when no
    /// rule covers them, so their reads skip the cache at once.
    pub fn rules(&self, tenant: Option<&str>) -> Option<Arc<RuleSet>> {
        let all = self.rules.load();
        let set = match tenant {
            Some(name) => all.by_tenant.get(name)?,
            None => &all.untenanted,
        };
        (!set.rules.is_empty()).then(|| set.clone())
    }

    /// A reload: the `near_cache.rule` entries (and the tenants they are matched against) in
    /// force from now on; rebuilt on every reload, since the tenants may have changed. When
    /// the rules differ from those running, the cache is emptied after the swap (a flush with
    /// reason "reload"): nothing filled under the old rules is served under the new ones, and
    /// keys no longer covered stop holding memory. A read racing the swap may fill an entry
    /// after the flush; it is a value the upstream tracks like any other (invalidated on
    /// write), and a key is only looked up when the new rules cover it.
    pub fn replace_rules(&self, rules: &[Rule], tenants: Option<&Tenants>) {
        let changed = format!("{rules:?}") != format!("{:?}", self.rules.load().list);
        self.rules
            .store(Arc::new(build_rules(rules, tenants, &self.counts)));
        if changed {
            self.shared.flush(FlushReason::Reload);
        }
    }

    /// The tracking connection for `key`, if it is acknowledged and has not gone silent for
    /// longer than `near_cache.max_silence_ms` at `now` (no hit and no fill without; see
    /// `tracking_conns`).
    fn tracker(&self, key: &[u8], now: u64) -> Option<trackers::Picked<'_>> {
        let t = self.trackers.pick(key, self.hasher.hash_one(key))?;
        t.trusted_at(now).then_some(t)
    }

    /// Serve a read through the cache if a rule covers it: `args` as the client sent them,
    /// `prefix` the tenant's key prefix (empty for none).
    /// `now` is [`NearCache::now`], taken at most a few microseconds earlier (a session reads
    /// the clock once per batch of requests).
    #[allow(clippy::too_many_arguments)]
    pub fn read(
        &self,
        rules: &RuleSet,
        kind: ReadKind,
        args: &[Bytes],
        prefix: &[u8],
        proto: Protocol,
        now: u64,
    ) -> Lookup {
        if self.shared.disabled.load(Ordering::Relaxed) {
            return Lookup::Bypass;
        }
        if kind == ReadKind::Mget {
            return self.mget(rules, args, prefix, proto, now);
        }
        let Some(key) = covered(rules, kind, args, prefix) else {
            return Lookup::Bypass;
        };
        self.trackers.check_moves();
        let store = &self.shared.store;
        // Before the node is picked: a move after this drops what the fill brings.
        let slot = store.slot_stamp(&key);
        let Some(tracker) = self.tracker(&key, now) else {
            return Lookup::Bypass;
        };
        let sig = Sig::new(kind, args);
        let found = store.read(&key, &sig, slot, now, true, proto, |ticket| {
            self.send_fill(&tracker, ticket, args)
        });
        match found {
            Found::Hit(v) => {
                rules.hit();
                Lookup::Hit(v)
            }
            Found::Wait(rx) => {
                rules.miss();
                Lookup::Wait(rx)
            }
            Found::Bypass => Lookup::Bypass,
        }
    }

    /// The cache's clock, in milliseconds.
    pub fn now(&self) -> u64 {
        self.shared.store.now()
    }

    fn send_fill(
        &self,
        tracker: &tracking_conns::Handle,
        ticket: store::Ticket,
        args: &[Bytes],
    ) -> bool {
        let command = reads::fill_command(args, &ticket.key);
        let job = tracking_conns::FillJob {
            ticket,
            command,
            sent: self.shared.store.now(),
            retried: false,
        };
        tracker.fills.try_send(job).is_ok()
    }

    /// MGET from the keys' GET entries when every key has one; otherwise it goes upstream as it
    /// is (one snapshot of all its keys), and the missing keys are filled for next time.
    fn mget(
        &self,
        rules: &RuleSet,
        args: &[Bytes],
        prefix: &[u8],
        proto: Protocol,
        now: u64,
    ) -> Lookup {
        let keys = &args[1..];
        if !keys.iter().all(|k| rules.covers(ReadKind::Mget, k)) {
            return Lookup::Bypass;
        }
        let store = &self.shared.store;
        // A GET entry has no arguments besides its key: one signature serves every key.
        let sig = Sig::new(ReadKind::Get, &args[..1]);
        let mut out = BytesMut::new();
        crate::protocol::encode::array_header(&mut out, keys.len());
        let mut missing = Vec::new();
        for k in keys {
            let key = upstream_key(prefix, k);
            // Each key's entry only while its own tracking connection is trusted (see `tracker`).
            if self.tracker(&key, now).is_none() {
                return Lookup::Bypass;
            }
            match store.peek(&key, &sig, now) {
                Some(v) if missing.is_empty() => out.extend_from_slice(&v.get(proto)),
                Some(_) => {}
                None => missing.push((key, k)),
            }
        }
        if missing.is_empty() {
            rules.hit();
            return Lookup::Hit(out.freeze());
        }
        rules.miss();
        for (key, k) in missing {
            let slot = store.slot_stamp(&key);
            let Some(tracker) = self.tracker(&key, now) else {
                continue;
            };
            let get = [Bytes::from_static(b"GET"), k.clone()];
            store.read(&key, &sig, slot, now, false, proto, |ticket| {
                self.send_fill(&tracker, ticket, &get)
            });
        }
        Lookup::Bypass
    }

    /// In local-only mode: a cacheable read answered from what the cache held when the upstream
    /// went away, if that is within `local_only.stale_reads_ms` (stale-if-error).
    pub fn stale(
        &self,
        rules: &RuleSet,
        kind: ReadKind,
        args: &[Bytes],
        prefix: &[u8],
        proto: Protocol,
    ) -> Option<Bytes> {
        let key = covered(rules, kind, args, prefix)?;
        let store = &self.shared.store;
        let v = store.peek_stale(&key, &Sig::new(kind, args), store.now())?;
        self.shared.stale_hits.fetch_add(1, Ordering::Relaxed);
        Some(v.get(proto))
    }

    /// A write to `key` (as the upstream names it) is about to be sent, or has been answered.
    pub fn invalidate(&self, key: &[u8]) {
        let store = &self.shared.store;
        store.invalidate_then(key, || store.now());
    }

    /// Fills started so far (see [`Store::fills_started`]).
    pub(crate) fn fills_started(&self) -> u64 {
        self.shared.store.fills_started()
    }

    /// A FLUSHALL, FLUSHDB or SWAPDB passed through respite.
    pub fn flush_sent_through(&self) {
        self.shared.flush(FlushReason::SentThrough);
    }

    /// Numbers for `/stats`.
    pub fn stats(&self) -> serde_json::Value {
        let s = &self.shared;
        let counts = self.hit_counts();
        let hits: u64 = counts.iter().map(|c| c.1).sum();
        let misses: u64 = counts.iter().map(|c| c.2).sum();
        let c = &s.store.counts;
        serde_json::json!({
            "enabled": !s.disabled.load(Ordering::Relaxed),
            "tracking": self.trackers.ready().0,
            "hits": hits,
            "misses": misses,
            "hit_ratio": if hits + misses == 0 { 0.0 } else { hits as f64 / (hits + misses) as f64 },
            "fills": c.fills.load(Ordering::Relaxed),
            "fills_discarded": c.raced.load(Ordering::Relaxed),
            "invalidations": c.invalidations.load(Ordering::Relaxed),
            "invalidations_pushed": s.pushes.load(Ordering::Relaxed),
            "stale_hits": s.stale_hits.load(Ordering::Relaxed),
            "evictions": c.evictions.load(Ordering::Relaxed),
            "flushes": s.flushes.load(Ordering::Relaxed),
            "entries": s.store.entries(),
            "bytes": s.store.bytes(),
            "max_bytes": s.config.max_memory,
        })
    }
}

/// A read's reply as the cache holds it, in both protocols (`value` is RESP3); a reply that
/// RESP2 cannot carry becomes an error there.
fn cached(value: &[u8], scored: bool) -> Arc<Cached> {
    // Copied out of the read buffer, so a cached entry does not pin the buffer it came in.
    let resp3 = Bytes::copy_from_slice(value);
    let resp2 = if scored {
        crate::protocol::resp3::to_resp2_flattening_pairs(value)
    } else {
        crate::protocol::resp3::to_resp2(value)
    };
    Arc::new(Cached {
        resp2: resp2.unwrap_or_else(|| {
            let mut out = BytesMut::new();
            crate::protocol::encode::error(
                &mut out,
                "ERR respite could not re-encode the upstream's reply for RESP2",
            );
            out.freeze()
        }),
        resp3,
    })
}

/// The key (as the upstream knows it) of a single-key read that a rule covers.
fn covered(rules: &RuleSet, kind: ReadKind, args: &[Bytes], prefix: &[u8]) -> Option<Bytes> {
    (kind.single_key(args) && rules.covers(kind, &args[1])).then(|| upstream_key(prefix, &args[1]))
}

/// The key as the upstream knows it: the tenant's prefix, then the client's key.
pub fn upstream_key(prefix: &[u8], key: &Bytes) -> Bytes {
    if prefix.is_empty() {
        return key.clone();
    }
    let mut k = BytesMut::with_capacity(prefix.len() + key.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(key);
    k.freeze()
}

/// Reclaim dead entries and publish the counters and gauges, once a second, off the async
/// workers.
async fn sweeper(cache: Arc<NearCache>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut last = (0, 0, 0, 0);
    // By tenant label: a reload may add tenants, whose counters join here.
    let mut tenants: HashMap<String, (Counter, Counter, u64, u64)> = HashMap::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let shared = cache.shared.clone();
        let _ = tokio::task::spawn_blocking(move || shared.store.sweep()).await;
        for (label, h, m) in cache.hit_counts() {
            let (hits, misses, h0, m0) = tenants.entry(label.clone()).or_insert_with(|| {
                (
                    counter!(HITS_TOTAL, "tenant" => label.clone()),
                    counter!(MISSES_TOTAL, "tenant" => label),
                    0,
                    0,
                )
            });
            hits.increment(h - *h0);
            misses.increment(m - *m0);
            (*h0, *m0) = (h, m);
        }
        let shared = &cache.shared;
        let c = &shared.store.counts;
        let now = (
            c.fills.load(Ordering::Relaxed),
            c.raced.load(Ordering::Relaxed),
            c.evictions.load(Ordering::Relaxed),
            c.invalidations.load(Ordering::Relaxed),
        );
        counter!(FILLS_TOTAL).increment(now.0 - last.0);
        counter!(FILLS_DISCARDED_TOTAL).increment(now.1 - last.1);
        counter!(EVICTIONS_TOTAL).increment(now.2 - last.2);
        counter!(INVALIDATIONS_TOTAL).increment(now.3 - last.3);
        last = now;
        gauge!(BYTES).set(shared.store.bytes() as f64);
        gauge!(ENTRIES).set(shared.store.entries() as f64);
        let (up, all) = cache.trackers.ready();
        gauge!(TRACKING_CONNECTIONS).set(up as f64);
        let serving = !shared.disabled.load(Ordering::Relaxed) && up == all;
        gauge!(ENABLED).set(if serving { 1.0 } else { 0.0 });
    }
}

/// Describe the near cache's metrics for `/metrics`.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    // At 0 from start (see `crate::metrics::zero_counters`); hits and misses are per tenant and
    // appear with the first read a rule covers.
    for name in [
        FILLS_TOTAL,
        FILLS_DISCARDED_TOTAL,
        INVALIDATIONS_TOTAL,
        EVICTIONS_TOTAL,
    ] {
        counter!(name).increment(0);
    }
    for reason in [
        FlushReason::Upstream,
        FlushReason::SentThrough,
        FlushReason::TrackingLost,
        FlushReason::Reload,
        FlushReason::SlotsMoved,
    ] {
        counter!(FLUSHES_TOTAL, "reason" => reason.label()).increment(0);
    }
    describe_counter!(HITS_TOTAL, "Reads answered from the near cache, by tenant");
    describe_counter!(
        MISSES_TOTAL,
        "Cacheable reads the near cache filled or joined a fill for, by tenant"
    );
    describe_counter!(FILLS_TOTAL, "Near-cache fills completed");
    describe_counter!(
        FILLS_DISCARDED_TOTAL,
        "Fills answered but not cached: their key was invalidated, or the cache flushed, while they were in flight"
    );
    describe_counter!(
        INVALIDATIONS_TOTAL,
        "Key invalidations: tracking pushes and writes through respite"
    );
    describe_counter!(
        EVICTIONS_TOTAL,
        "Entries evicted to stay within the byte bound"
    );
    describe_counter!(FLUSHES_TOTAL, "Whole-cache flushes, by reason");
    describe_gauge!(BYTES, "Bytes the near cache holds");
    describe_gauge!(ENTRIES, "Entries the near cache holds");
    describe_gauge!(
        ENABLED,
        "1 while the near cache serves: every tracking connection up (0 while one is down, and for good once the upstream refused CLIENT TRACKING)"
    );
    describe_gauge!(
        TRACKING_CONNECTIONS,
        "Near-cache tracking connections up now (CLIENT TRACKING acknowledged)"
    );
}
