//! What respite counts, named in one place.
//!
//! Metric names and label sets live here so that `/metrics` stays a stable interface. Recording goes
//! through the `metrics` facade; the Prometheus recorder is installed by [`crate::admin`]. Per-command
//! counters are resolved once into handles, so the hot path pays one atomic add, not a registry lookup.
use crate::command::CommandSpec;
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub const CLIENT_CONNECTIONS: &str = "respite_client_connections";
pub const CLIENT_CONNECTIONS_TOTAL: &str = "respite_client_connections_total";
pub const COMMANDS_TOTAL: &str = "respite_commands_total";
pub const ERRORS_TOTAL: &str = "respite_errors_total";
pub const UPSTREAM_CONNECTIONS: &str = "respite_upstream_connections";
pub const UPSTREAM_PINNED: &str = "respite_upstream_pinned_connections";
pub const UPSTREAM_PINNED_REFUSED_TOTAL: &str = "respite_upstream_pinned_refused_total";
pub const UPSTREAM_RECONNECTS_TOTAL: &str = "respite_upstream_reconnects_total";
pub const UPSTREAM_BATCH_COMMANDS: &str = "respite_upstream_batch_commands";
pub const UPSTREAM_BATCH_BYTES: &str = "respite_upstream_batch_bytes";
pub const TRACKING_CLIENTS: &str = "respite_tracking_clients";
pub const TRACKING_INVALIDATIONS_TOTAL: &str = "respite_tracking_invalidations_total";
pub const TRACKING_LOST_TOTAL: &str = "respite_tracking_lost_total";
pub const TRACKING_OVERFLOWS_TOTAL: &str = "respite_tracking_overflows_total";
pub const UPSTREAM_ERROR_REPLIES_TOTAL: &str = "respite_upstream_error_replies_total";
pub const UPSTREAM_HEALTH: &str = "respite_upstream_health";
pub const UPSTREAM_HEALTH_TRANSITIONS_TOTAL: &str = "respite_upstream_health_transitions_total";
pub const UPSTREAM_PROBE_RTT_SECONDS: &str = "respite_upstream_probe_rtt_seconds";
pub const BUILD_INFO: &str = "respite_build_info";
pub const CLUSTER_REDIRECTS_TOTAL: &str = "respite_cluster_redirects_total";
pub const CLUSTER_REFRESHES_TOTAL: &str = "respite_cluster_topology_refreshes_total";
pub const CLUSTER_SPLITS_TOTAL: &str = "respite_cluster_split_commands_total";
pub const CLUSTER_NODE_COMMANDS_TOTAL: &str = "respite_cluster_node_commands_total";
pub const CLUSTER_NODE_FAILURES_TOTAL: &str = "respite_cluster_node_failures_total";
pub const CLUSTER_NODE_REDIRECTS_TOTAL: &str = "respite_cluster_node_redirects_total";
pub const CLUSTER_NODE_INFLIGHT: &str = "respite_cluster_node_inflight";
pub const CLUSTER_NODE_SLOTS: &str = "respite_cluster_node_slots";
pub const CLUSTER_SLOTS_LOCAL: &str = "respite_cluster_slots_local";
pub const CLIENT_READ_BYTES_TOTAL: &str = "respite_client_read_bytes_total";
pub const CLIENT_WRITTEN_BYTES_TOTAL: &str = "respite_client_written_bytes_total";
pub const LOCAL_ONLY: &str = "respite_local_only";
pub const LOCAL_ENGINE_KEYS: &str = "respite_local_engine_keys";
pub const LOCAL_ENGINE_BYTES: &str = "respite_local_engine_bytes";
pub const PUBSUB_MESSAGES_TOTAL: &str = "respite_pubsub_messages_total";
pub const PUBSUB_DROPPED_TOTAL: &str = "respite_pubsub_dropped_total";
pub const PUBSUB_SLOW_SUBSCRIBERS_TOTAL: &str = "respite_pubsub_slow_subscribers_total";
pub const CLIENTS_CLOSED_FOR_MEMORY_TOTAL: &str = "respite_clients_closed_for_memory_total";
pub const COMMAND_DURATION_SECONDS: &str = "respite_command_duration_seconds";
pub const UPSTREAM_RTT_SECONDS: &str = "respite_upstream_rtt_seconds";
pub const UPSTREAM_INFLIGHT: &str = "respite_upstream_inflight_commands";
pub const UPSTREAM_SHARED_CONNECTIONS: &str = "respite_upstream_shared_connections";
pub const CONFIG_RELOADS_TOTAL: &str = "respite_config_reloads_total";
pub const RECOVERY_REPLAYED_TOTAL: &str = "respite_recovery_replayed_total";
pub const LOCAL_ONLY_JOURNAL_BYTES: &str = "respite_local_only_journal_bytes";
pub const LOCAL_ONLY_JOURNAL_ENTRIES: &str = "respite_local_only_journal_entries";
pub const RECOVERY_CONFLICTS_TOTAL: &str = "respite_recovery_conflicts_total";
pub const RECOVERY_UNKNOWN_TOTAL: &str = "respite_recovery_unknown_fate_total";
pub const RECOVERY_DISCARDED_TOTAL: &str = "respite_recovery_discarded_writes_total";
pub const TLS_CERT_NOT_AFTER: &str = "respite_tls_cert_not_after_seconds";

/// Bucket bounds of the latency histograms, in seconds: 50 µs to 5 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

/// One command in this many (per session, starting with its first) is timed for
/// `respite_command_duration_seconds`: the clock is read off the hot path's common case.
pub const COMMAND_SAMPLE_EVERY: u32 = 16;

/// The git revision this binary was built from (build.rs), "unknown" outside a checkout.
pub const GIT_REVISION: &str = env!("BUILD_GIT_REVISION");

/// Bytes read from and written to client sockets, counted by the socket layer (one relaxed add
/// per read or write call, not per request) and published when `/metrics` is scraped.
static CLIENT_READ_BYTES: AtomicU64 = AtomicU64::new(0);
static CLIENT_WRITTEN_BYTES: AtomicU64 = AtomicU64::new(0);

#[inline]
pub fn client_read(n: usize) {
    CLIENT_READ_BYTES.fetch_add(n as u64, Ordering::Relaxed);
}

#[inline]
pub fn client_written(n: usize) {
    CLIENT_WRITTEN_BYTES.fetch_add(n as u64, Ordering::Relaxed);
}

/// Copy what is counted outside the registry into it; the admin port calls this before each
/// render.
pub fn publish() {
    for (i, protocol) in ["resp2", "resp3"].into_iter().enumerate() {
        gauge!(UPSTREAM_INFLIGHT, "protocol" => protocol)
            .set(UPSTREAM_INFLIGHT_N[i].load(Ordering::Relaxed) as f64);
    }
    counter!(CLIENT_READ_BYTES_TOTAL).absolute(CLIENT_READ_BYTES.load(Ordering::Relaxed));
    counter!(CLIENT_WRITTEN_BYTES_TOTAL).absolute(CLIENT_WRITTEN_BYTES.load(Ordering::Relaxed));
}

/// Error kinds, the `kind` label of [`ERRORS_TOTAL`]: which side failed and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The client sent something respite cannot frame.
    Protocol,
    /// A command respite does not know or will not forward.
    UnknownCommand,
    Refused,
    Arity,
    /// The upstream could not be reached or the connection failed mid-command.
    Upstream,
    /// A command's deadline passed.
    Timeout,
    /// A write refused in local-only mode (`local_only.writes = "refuse"`).
    LocalOnly,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Protocol => "protocol",
            ErrorKind::UnknownCommand => "unknown_command",
            ErrorKind::Refused => "refused",
            ErrorKind::Arity => "arity",
            ErrorKind::Upstream => "upstream",
            ErrorKind::Timeout => "timeout",
            ErrorKind::LocalOnly => "local_only",
        }
    }
}

/// Which side an error came from: what a client did, the upstream, respite's configuration, or
/// respite itself. It decides who must act on an error; [`ErrorKind`] refines it for the label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
    Configuration,
    Internal,
}

impl ErrorKind {
    /// The side an error of this kind comes from.
    pub fn side(self) -> Side {
        match self {
            ErrorKind::Protocol
            | ErrorKind::UnknownCommand
            | ErrorKind::Refused
            | ErrorKind::Arity => Side::Client,
            // A write refused in local-only mode is refused because the upstream is down.
            ErrorKind::Upstream | ErrorKind::Timeout | ErrorKind::LocalOnly => Side::Upstream,
        }
    }
}

pub fn error(kind: ErrorKind) {
    counter!(ERRORS_TOTAL, "kind" => kind.as_str()).increment(1);
}

/// One handle per built-in command, registered on first use (so `/metrics` lists only commands
/// seen) and then found by the command's dense id. Built once per kind of handle, here only.
struct PerCommand<T>(OnceLock<Box<[OnceLock<T>]>>);

impl<T> PerCommand<T> {
    const fn new() -> Self {
        PerCommand(OnceLock::new())
    }

    /// `spec`'s handle, made by `make` the first time; `None` for a command only the upstream's
    /// own table has ([`crate::command::NOT_BUILT_IN`]), which has no dense id.
    fn get(&self, spec: &'static CommandSpec, make: impl FnOnce() -> T) -> Option<&T> {
        let handles = self.0.get_or_init(|| {
            let n = crate::command::all()
                .iter()
                .map(|s| s.id as usize + 1)
                .max()
                .unwrap_or(0);
            (0..n).map(|_| OnceLock::new()).collect()
        });
        handles.get(spec.id as usize).map(|h| h.get_or_init(make))
    }
}

/// The counter of one command: one atomic add per command on the hot path (see [`PerCommand`]).
pub fn command(spec: &'static CommandSpec) -> &'static Counter {
    static HANDLES: PerCommand<Counter> = PerCommand::new();
    match HANDLES.get(spec, || counter!(COMMANDS_TOTAL, "command" => spec.name)) {
        Some(h) => h,
        None => upstream_command(spec.name),
    }
}

/// The counter of a command read from the upstream's own table (not in the built-in one): by
/// name, one leaked handle per name, bounded by what the upstream lists.
fn upstream_command(name: &'static str) -> &'static Counter {
    static HANDLES: OnceLock<
        std::sync::Mutex<std::collections::HashMap<&'static str, &'static Counter>>,
    > = OnceLock::new();
    let mut map = HANDLES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    map.entry(name)
        .or_insert_with(|| Box::leak(Box::new(counter!(COMMANDS_TOTAL, "command" => name))))
}

pub fn client_connections() -> Gauge {
    gauge!(CLIENT_CONNECTIONS)
}

pub fn client_accepted() {
    counter!(CLIENT_CONNECTIONS_TOTAL).increment(1);
}

pub fn upstream_connections(protocol: &'static str) -> Gauge {
    gauge!(UPSTREAM_CONNECTIONS, "protocol" => protocol)
}

/// Pinned connections now, `state` = `in_use` (leased to a client) or `idle` (clean, waiting).
pub fn upstream_pinned(state: &'static str) -> Gauge {
    gauge!(UPSTREAM_PINNED, "state" => state)
}

pub fn upstream_pinned_refused() {
    counter!(UPSTREAM_PINNED_REFUSED_TOTAL).increment(1);
}

/// A cluster redirection followed (`moved`, `ask`, `tryagain`).
pub fn cluster_redirect(kind: &'static str) {
    counter!(CLUSTER_REDIRECTS_TOTAL, "kind" => kind).increment(1);
}

/// A cluster topology read that changed the slot map.
pub fn cluster_refresh() {
    counter!(CLUSTER_REFRESHES_TOTAL).increment(1);
}

/// A multi-key command split over nodes (`node`: how many parts) or fanned out to every primary.
pub fn cluster_split(kind: &'static str) {
    counter!(CLUSTER_SPLITS_TOTAL, "kind" => kind).increment(1);
}

/// One cluster node's series (`node` is its `host:port`: labels bounded by the cluster's size),
/// registered once when respite first uses the node, so the routers' hot path increments held
/// handles instead of looking a labelled series up per job.
pub struct ClusterNode {
    /// Commands routed to the node.
    pub commands: metrics::Counter,
    /// Jobs to the node that failed whole or in part (its connection lost or down).
    pub failures: metrics::Counter,
    /// Commands routed to the node and not yet answered.
    pub inflight: metrics::Gauge,
    /// Redirections the node answered with that respite followed: MOVED, ASK, TRYAGAIN.
    pub moved: metrics::Counter,
    pub ask: metrics::Counter,
    pub tryagain: metrics::Counter,
    /// Slots the node serves as a primary in respite's topology (0 for a replica).
    pub slots: metrics::Gauge,
}

impl ClusterNode {
    pub fn new(node: &str) -> ClusterNode {
        let redirects = |kind: &'static str| {
            let c =
                counter!(CLUSTER_NODE_REDIRECTS_TOTAL, "node" => node.to_string(), "kind" => kind);
            c.increment(0);
            c
        };
        let commands = counter!(CLUSTER_NODE_COMMANDS_TOTAL, "node" => node.to_string());
        let failures = counter!(CLUSTER_NODE_FAILURES_TOTAL, "node" => node.to_string());
        commands.increment(0);
        failures.increment(0);
        ClusterNode {
            commands,
            failures,
            inflight: gauge!(CLUSTER_NODE_INFLIGHT, "node" => node.to_string()),
            moved: redirects("moved"),
            ask: redirects("ask"),
            tryagain: redirects("tryagain"),
            slots: gauge!(CLUSTER_NODE_SLOTS, "node" => node.to_string()),
        }
    }
}

pub fn upstream_reconnect(protocol: &'static str) {
    counter!(UPSTREAM_RECONNECTS_TOTAL, "protocol" => protocol).increment(1);
}

/// The `state`/`to` labels of the upstream health metrics: `upstream::health::State`'s names
/// (its tests check they are the same), listed here so this module imports no part it counts.
pub const HEALTH_STATES: [&str; 4] = ["healthy", "degraded", "down", "recovering"];

/// 1 for the upstream's current health state, 0 for the others.
pub fn upstream_health(state: &'static str) -> Gauge {
    gauge!(UPSTREAM_HEALTH, "state" => state)
}

pub fn upstream_health_transition(to: &'static str) {
    counter!(UPSTREAM_HEALTH_TRANSITIONS_TOTAL, "to" => to).increment(1);
}

/// Error replies (`-ERR`, `-WRONGTYPE`, RESP3 blob errors, …) the upstream sent back for
/// forwarded commands, counted once per batch read.
pub fn upstream_error_replies() -> Counter {
    counter!(UPSTREAM_ERROR_REPLIES_TOTAL)
}

/// `admin.command_histograms`: one latency histogram per command (the default) or one for all
/// commands (`command="all"`). Set once at start (the admin section needs a restart); process-wide
/// like the registry it shapes.
static PER_COMMAND_HISTOGRAMS: AtomicBool = AtomicBool::new(true);

/// Choose per-command latency histograms or one for all commands (see the static).
pub fn set_command_histograms(per_command: bool) {
    PER_COMMAND_HISTOGRAMS.store(per_command, Ordering::Relaxed);
}

/// The `command` label of the one latency histogram kept when per-command ones are off: no
/// command table entry is named so.
pub const ALL_COMMANDS: &str = "all";

/// A sampled command's latency as its client sees it, labelled by the table's name for it; the
/// handle is found by the command's dense id, as [`command`]'s counter is. With per-command
/// histograms off, every command records into one series (16 buckets per pod instead of up to
/// 16 per command seen, ~5,000 series with a few hundred commands).
pub fn command_duration(spec: &'static CommandSpec, seconds: f64) {
    if !PER_COMMAND_HISTOGRAMS.load(Ordering::Relaxed) {
        static ALL: OnceLock<Histogram> = OnceLock::new();
        ALL.get_or_init(|| histogram!(COMMAND_DURATION_SECONDS, "command" => ALL_COMMANDS))
            .record(seconds);
        return;
    }
    static HANDLES: PerCommand<Histogram> = PerCommand::new();
    match HANDLES.get(
        spec,
        || histogram!(COMMAND_DURATION_SECONDS, "command" => spec.name),
    ) {
        Some(h) => h.record(seconds),
        // A command only the upstream's own table has (NOT_BUILT_IN): by name, bounded by what
        // the upstream lists. Rare, so the registry's lookup is fine here.
        None => histogram!(COMMAND_DURATION_SECONDS, "command" => spec.name).record(seconds),
    }
}

/// The round trip of one upstream batch, from its write to its last reply (one per batch
/// read, timed from the oldest slot's send time), and the commands in flight on the upstream.
pub fn upstream_rtt(protocol: &'static str) -> Histogram {
    histogram!(UPSTREAM_RTT_SECONDS, "protocol" => protocol)
}

/// Commands in flight on the upstream per protocol: a relaxed add per job and per read (a
/// gauge's add is a compare-and-swap loop on a float), published at scrape time.
static UPSTREAM_INFLIGHT_N: [std::sync::atomic::AtomicI64; 2] =
    [const { std::sync::atomic::AtomicI64::new(0) }; 2];

#[inline]
pub fn upstream_inflight_add(protocol: &'static str, n: i64) {
    let i = (protocol == "resp3") as usize;
    UPSTREAM_INFLIGHT_N[i].fetch_add(n, Ordering::Relaxed);
}

/// Shared (multiplexed pool) upstream connections up now.
pub fn upstream_shared_connections() -> Gauge {
    gauge!(UPSTREAM_SHARED_CONNECTIONS)
}

pub fn config_reload(ok: bool) {
    counter!(CONFIG_RELOADS_TOTAL, "result" => if ok { "ok" } else { "error" }).increment(1);
}

/// A `POST /reload` the admin port's gate turned away (no token, a wrong one, or a listener that
/// is not loopback): nothing was reloaded.
pub fn reload_refused() {
    counter!(CONFIG_RELOADS_TOTAL, "result" => "refused").increment(1);
}

/// What one recovery's replay did: writes applied upstream, those whose upstream reply differed
/// in kind from the local one, and those whose fate is unknown (the upstream failed with them in
/// flight; never resent).
pub fn recovery_replayed(replayed: u64, conflicts: u64, unknown: u64) {
    counter!(RECOVERY_REPLAYED_TOTAL).increment(replayed);
    counter!(RECOVERY_CONFLICTS_TOTAL).increment(conflicts);
    counter!(RECOVERY_UNKNOWN_TOTAL).increment(unknown);
}

/// The replay journal's gauges (entries, bytes), whose handles the journal keeps.
pub fn journal_gauges() -> (metrics::Gauge, metrics::Gauge) {
    (
        metrics::gauge!(LOCAL_ONLY_JOURNAL_ENTRIES),
        metrics::gauge!(LOCAL_ONLY_JOURNAL_BYTES),
    )
}

/// Writes acknowledged in local-only mode and discarded at recovery (`drop`, `invalidate`).
pub fn recovery_discarded(n: u64) {
    counter!(RECOVERY_DISCARDED_TOTAL).increment(n);
}

pub fn batch_histograms() -> (Histogram, Histogram) {
    (
        histogram!(UPSTREAM_BATCH_COMMANDS),
        histogram!(UPSTREAM_BATCH_BYTES),
    )
}

/// When a certificate on one side expires (its chain's earliest `notAfter`), seconds since the
/// epoch: `side` is `listen`, `listen_client_ca`, `upstream` (the chain the upstream presented at
/// its latest handshake; a cluster's earliest node), `upstream_ca` or `upstream_client` (see
/// `crate::tls`).
pub fn tls_cert_not_after(side: &'static str, unix_seconds: i64) {
    gauge!(TLS_CERT_NOT_AFTER, "side" => side).set(unix_seconds as f64);
}

/// Pub/Sub messages handed to subscribers' outboxes, and those dropped because their subscriber
/// was over `limits.pubsub_output_bytes`.
pub fn pubsub_delivered(delivered: u64, dropped: u64) {
    counter!(PUBSUB_MESSAGES_TOTAL).increment(delivered);
    if dropped > 0 {
        counter!(PUBSUB_DROPPED_TOTAL).increment(dropped);
    }
}

/// A subscriber closed for going over `limits.pubsub_output_bytes`.
pub fn pubsub_slow_subscriber() {
    counter!(PUBSUB_SLOW_SUBSCRIBERS_TOTAL).increment(1);
}

/// A client closed for what respite held for it: its own `limits.max_reply_bytes`, or the
/// clients' total `limits.max_client_memory` (Redis's `client_output_buffer_limit_disconnections`
/// and `evicted_clients`).
pub fn client_closed_for_memory(by_total: bool) {
    let limit = if by_total {
        "max_client_memory"
    } else {
        "max_reply_bytes"
    };
    counter!(CLIENTS_CLOSED_FOR_MEMORY_TOTAL, "limit" => limit).increment(1);
}

/// Clients with `CLIENT TRACKING` on now.
pub fn tracking_clients() -> Gauge {
    gauge!(TRACKING_CLIENTS)
}

/// Invalidation messages handed to tracking clients (or their redirect targets).
pub fn tracking_invalidations(n: u64) {
    counter!(TRACKING_INVALIDATIONS_TOTAL).increment(n);
}

/// A tracking client's upstream tracking was lost (its connection failed): it was told to flush.
pub fn tracking_lost() {
    counter!(TRACKING_LOST_TOTAL).increment(1);
}

/// A tracking client's queued invalidations went over their bound and became one flush.
pub fn tracking_overflow() {
    counter!(TRACKING_OVERFLOWS_TOTAL).increment(1);
}

/// Every counter whose labels are known in advance, registered at 0 when the recorder is
/// installed: a series that appears only at its first event breaks `rate()` and `increase()` over
/// that event (the first increment is lost) and hides from a dashboard that nothing happened yet.
/// Counters labelled by what clients send (`command`) or by tenant (registered when the tenants
/// are loaded) are not here. `increment(0)`, not `absolute(0)`: a second proxy in one process
/// (the tests) must not reset the first one's counts.
fn zero_counters() {
    for name in [
        CLIENT_CONNECTIONS_TOTAL,
        UPSTREAM_PINNED_REFUSED_TOTAL,
        UPSTREAM_ERROR_REPLIES_TOTAL,
        CLUSTER_REFRESHES_TOTAL,
        PUBSUB_MESSAGES_TOTAL,
        PUBSUB_DROPPED_TOTAL,
        PUBSUB_SLOW_SUBSCRIBERS_TOTAL,
        TRACKING_INVALIDATIONS_TOTAL,
        TRACKING_LOST_TOTAL,
        TRACKING_OVERFLOWS_TOTAL,
        RECOVERY_REPLAYED_TOTAL,
        RECOVERY_CONFLICTS_TOTAL,
        RECOVERY_UNKNOWN_TOTAL,
        RECOVERY_DISCARDED_TOTAL,
        CLIENT_READ_BYTES_TOTAL,
        CLIENT_WRITTEN_BYTES_TOTAL,
    ] {
        counter!(name).increment(0);
    }
    for protocol in ["resp2", "resp3"] {
        counter!(UPSTREAM_RECONNECTS_TOTAL, "protocol" => protocol).increment(0);
    }
    for to in HEALTH_STATES {
        counter!(UPSTREAM_HEALTH_TRANSITIONS_TOTAL, "to" => to).increment(0);
    }
    for kind in [
        ErrorKind::Protocol,
        ErrorKind::UnknownCommand,
        ErrorKind::Refused,
        ErrorKind::Arity,
        ErrorKind::Upstream,
        ErrorKind::Timeout,
        ErrorKind::LocalOnly,
    ] {
        counter!(ERRORS_TOTAL, "kind" => kind.as_str()).increment(0);
    }
    for kind in ["moved", "ask", "tryagain"] {
        counter!(CLUSTER_REDIRECTS_TOTAL, "kind" => kind).increment(0);
    }
    for kind in ["split", "fanout"] {
        counter!(CLUSTER_SPLITS_TOTAL, "kind" => kind).increment(0);
    }
    for result in ["ok", "error", "refused"] {
        counter!(CONFIG_RELOADS_TOTAL, "result" => result).increment(0);
    }
    for limit in ["max_reply_bytes", "max_client_memory"] {
        counter!(CLIENTS_CLOSED_FOR_MEMORY_TOTAL, "limit" => limit).increment(0);
    }
}

pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    zero_counters();
    describe_gauge!(TRACKING_CLIENTS, "Clients with CLIENT TRACKING on");
    describe_counter!(
        CLUSTER_REDIRECTS_TOTAL,
        "Redirections from a cluster upstream that respite followed (kind: moved, ask, tryagain)"
    );
    describe_counter!(
        CLUSTER_NODE_COMMANDS_TOTAL,
        "Commands sent to each node of a cluster upstream, by node (bounded by the cluster's size)"
    );
    describe_counter!(
        CLUSTER_NODE_FAILURES_TOTAL,
        "Jobs to each node of a cluster upstream that failed whole or in part (its connection lost or down), by node"
    );
    describe_counter!(
        CLUSTER_NODE_REDIRECTS_TOTAL,
        "Redirections each node of a cluster upstream answered with that respite followed, by node and kind (moved, ask, tryagain)"
    );
    describe_gauge!(
        CLUSTER_NODE_INFLIGHT,
        "Commands routed to each node of a cluster upstream and not yet answered, by node"
    );
    describe_gauge!(
        CLUSTER_NODE_SLOTS,
        "Hash slots each primary of a cluster upstream serves in respite's topology, by node (0 once it serves none)"
    );
    describe_gauge!(
        CLUSTER_SLOTS_LOCAL,
        "Hash slots whose commands respite answers from its local engine now: all 16384 in local-only mode (which is for the whole cluster), else 0"
    );
    describe_counter!(
        CLUSTER_REFRESHES_TOTAL,
        "Reads of a cluster upstream's topology that changed the slot map"
    );
    describe_counter!(
        CLUSTER_SPLITS_TOTAL,
        "Commands split over a cluster upstream's nodes or fanned out to every primary, by kind"
    );
    describe_counter!(
        TRACKING_INVALIDATIONS_TOTAL,
        "Invalidation messages sent to tracking clients (or the clients they redirect to)"
    );
    describe_counter!(
        TRACKING_LOST_TOTAL,
        "Times a tracking client's upstream tracking was lost and the client told to flush everything"
    );
    describe_counter!(
        TRACKING_OVERFLOWS_TOTAL,
        "Times a tracking client's queued invalidations went over their bound and were replaced by one flush"
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels say which version and git revision is running"
    );
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "git_revision" => GIT_REVISION)
        .set(1.0);
    describe_counter!(
        CLIENT_READ_BYTES_TOTAL,
        "Bytes read from client connections (TCP and unix)"
    );
    describe_counter!(
        CLIENT_WRITTEN_BYTES_TOTAL,
        "Bytes written to client connections (TCP and unix)"
    );
    describe_gauge!(
        UPSTREAM_PROBE_RTT_SECONDS,
        "Round trip of the latest health probe (PING) to the upstream, in seconds; NaN while the latest probe failed (no round trip to report)"
    );
    describe_gauge!(
        LOCAL_ONLY,
        "1 while local-only mode answers clients (the upstream is down), else 0"
    );
    describe_gauge!(LOCAL_ENGINE_KEYS, "Keys the local engine holds");
    describe_gauge!(
        LOCAL_ONLY_JOURNAL_BYTES,
        "Bytes the replay journal holds now (writes acknowledged in local-only mode, not yet replayed; bounded by local_only.journal_max_bytes)"
    );
    describe_gauge!(
        LOCAL_ONLY_JOURNAL_ENTRIES,
        "Writes the replay journal holds now (acknowledged in local-only mode, not yet replayed)"
    );
    describe_gauge!(
        TLS_CERT_NOT_AFTER,
        "When a certificate expires (the earliest notAfter of its chain), in seconds since the epoch, by side: listen, listen_client_ca, upstream (as presented at the latest handshake), upstream_ca, upstream_client"
    );
    describe_counter!(
        RECOVERY_REPLAYED_TOTAL,
        "Writes acknowledged in local-only mode and replayed upstream at recovery"
    );
    describe_counter!(
        RECOVERY_CONFLICTS_TOTAL,
        "Replayed writes whose upstream reply differed in kind from the local one"
    );
    describe_counter!(
        RECOVERY_UNKNOWN_TOTAL,
        "Replayed writes in flight when the upstream failed again: fate unknown, not resent"
    );
    describe_counter!(
        RECOVERY_DISCARDED_TOTAL,
        "Writes acknowledged in local-only mode and discarded at recovery (on_recovery drop or invalidate)"
    );

    describe_gauge!(
        LOCAL_ENGINE_BYTES,
        "Memory the local engine accounts for, in bytes"
    );
    describe_histogram!(
        COMMAND_DURATION_SECONDS,
        "Latency of sampled commands (1 in 16 per client) from framing to the write of their reply batch, by command"
    );
    describe_histogram!(
        UPSTREAM_RTT_SECONDS,
        "Upstream round trip: from a batch's write to the read that completes its oldest command"
    );
    describe_gauge!(
        UPSTREAM_INFLIGHT,
        "Commands sent to the upstream on pool connections and not answered yet"
    );
    describe_gauge!(
        UPSTREAM_SHARED_CONNECTIONS,
        "Shared (pool) upstream connections established now"
    );
    describe_counter!(
        CONFIG_RELOADS_TOTAL,
        "Configuration reloads (SIGHUP or POST /reload), by result: ok, error, or refused (a POST /reload the admin port turned away)"
    );
    describe_gauge!(CLIENT_CONNECTIONS, "Client connections open now");
    describe_counter!(CLIENT_CONNECTIONS_TOTAL, "Client connections accepted");
    describe_counter!(COMMANDS_TOTAL, "Commands received, by command");
    describe_counter!(ERRORS_TOTAL, "Error replies sent to clients, by kind");
    describe_gauge!(UPSTREAM_CONNECTIONS, "Upstream connections established now");
    describe_gauge!(
        UPSTREAM_PINNED,
        "Pinned upstream connections (one client's own), by state: in_use or idle"
    );
    describe_counter!(
        UPSTREAM_PINNED_REFUSED_TOTAL,
        "Commands refused because every pinned connection (upstream.max_pinned) was taken"
    );
    describe_counter!(
        UPSTREAM_RECONNECTS_TOTAL,
        "Upstream connection attempts after a failure"
    );
    describe_histogram!(
        UPSTREAM_BATCH_COMMANDS,
        "Commands coalesced into one upstream write"
    );
    describe_histogram!(UPSTREAM_BATCH_BYTES, "Bytes in one upstream write");
    describe_counter!(
        UPSTREAM_ERROR_REPLIES_TOTAL,
        "Error replies the upstream sent to forwarded commands (top level), relayed to clients"
    );
    describe_gauge!(
        UPSTREAM_HEALTH,
        "1 for the upstream's health state now (healthy, degraded, down, recovering), 0 for the others"
    );
    describe_counter!(
        UPSTREAM_HEALTH_TRANSITIONS_TOTAL,
        "Upstream health transitions, by the state entered"
    );
    describe_counter!(
        PUBSUB_MESSAGES_TOTAL,
        "Pub/Sub messages written to subscribers' outboxes (one per subscriber)"
    );
    describe_counter!(
        PUBSUB_DROPPED_TOTAL,
        "Pub/Sub messages dropped for a subscriber over limits.pubsub_output_bytes"
    );
    describe_counter!(
        PUBSUB_SLOW_SUBSCRIBERS_TOTAL,
        "Subscribers closed for going over limits.pubsub_output_bytes"
    );
    describe_counter!(
        CLIENTS_CLOSED_FOR_MEMORY_TOTAL,
        "Clients closed for what respite held for them, by the limit passed"
    );
}
