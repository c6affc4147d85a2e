//! The near cache with a cluster upstream (`redis+cluster://`), on a real Redis Cluster and Valkey
//! Cluster: a key is cached from its slot's primary, a write made straight to that primary (not
//! through respite) invalidates it, and when the key's slot moves to another primary the entry
//! read from the old one is not served: writes on the new primary invalidate it there. Hits are
//! judged by the primaries' own GET counts, values by what the nodes hold.
use crate::support::{Cluster, Kind, Proxy, Raw, bulk, text, wait_until};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

const CACHE_ALL: &str = r#"
[near_cache]
enabled = true
[[near_cache.rule]]
pattern = "*"
"#;

/// GET `key` through respite until a read is answered without reaching `port` (a hit); the
/// value it gave.
fn read_cached(c: &mut Raw, cluster: &Cluster, port: u16, key: &str) -> String {
    let mut value = String::new();
    let hit = wait_until(Duration::from_secs(10), || {
        let before = cluster.calls(port, "get");
        value = text(c.cmd(&[b"GET", key.as_bytes()]));
        cluster.calls(port, "get") == before
    });
    assert!(
        hit.is_some(),
        "GET {key} was never answered from the near cache"
    );
    value
}

/// GET `key` through respite until it gives `want` (an invalidation is a push, on its way
/// while the writer already has its reply); true if it did within a few seconds.
fn reads_eventually(c: &mut Raw, key: &str, want: &str) -> bool {
    let want = text(bulk(want));
    wait_until(Duration::from_secs(5), || {
        text(c.cmd(&[b"GET", key.as_bytes()])) == want
    })
    .is_some()
}

fn scenario(kind: Kind) {
    let cluster = Cluster::start(kind);
    let proxy = Proxy::start_with_config(&cluster.url(), CACHE_ALL, &[]);
    let mut c = proxy.raw();
    let primaries = cluster.primaries();
    let key = "nc:user:7";
    let slot = cluster.keyslot(key.as_bytes());
    let owner = cluster.slot_owner(slot).unwrap();
    let other = *primaries.iter().find(|&&p| p != owner).unwrap();
    assert_eq!(c.cmd(&[b"SET", key.as_bytes(), b"v1"]), b"+OK\r\n");
    assert_eq!(read_cached(&mut c, &cluster, owner, key), text(bulk("v1")));

    // Written straight to the owning primary: its invalidation reaches respite.
    assert_eq!(
        cluster.node(owner).cmd(&[b"SET", key.as_bytes(), b"v2"]),
        b"+OK\r\n"
    );
    assert!(
        reads_eventually(&mut c, key, "v2"),
        "the direct write was not seen"
    );
    assert_eq!(read_cached(&mut c, &cluster, owner, key), text(bulk("v2")));

    // A key of another slot on the same primary, cached too.
    let stays = (0..1000)
        .map(|i| format!("nc:stays:{i}"))
        .find(|k| {
            let s = cluster.keyslot(k.as_bytes());
            s != slot && cluster.slot_owner(s) == Some(owner)
        })
        .unwrap();
    assert_eq!(c.cmd(&[b"SET", stays.as_bytes(), b"s1"]), b"+OK\r\n");
    assert_eq!(
        read_cached(&mut c, &cluster, owner, &stays),
        text(bulk("s1"))
    );

    // The slot moves (its key with it) to another primary while the entry is cached: its
    // entry is dropped before its next read is served, and only its.
    let flushes = stat(&proxy, "flushes");
    cluster.move_slot(slot, owner, other);
    assert_eq!(
        cluster.node(other).cmd(&[b"GET", key.as_bytes()]),
        text(bulk("v2")).into_bytes()
    );
    let gets = cluster.calls(owner, "get");
    assert_eq!(text(c.cmd(&[b"GET", stays.as_bytes()])), text(bulk("s1")));
    assert_eq!(
        cluster.calls(owner, "get"),
        gets,
        "the entry of a slot that did not move was dropped"
    );
    assert_eq!(stat(&proxy, "flushes"), flushes, "the cache was emptied");
    // Cached again, now from the new primary; a write straight to it invalidates.
    assert_eq!(read_cached(&mut c, &cluster, other, key), text(bulk("v2")));
    assert_eq!(
        cluster.node(other).cmd(&[b"SET", key.as_bytes(), b"v3"]),
        b"+OK\r\n"
    );
    assert!(
        reads_eventually(&mut c, key, "v3"),
        "a write on the slot's new primary was not seen"
    );
    assert_eq!(read_cached(&mut c, &cluster, other, key), text(bulk("v3")));
    // The entry from the old primary never came back.
    assert_eq!(text(c.cmd(&[b"GET", key.as_bytes()])), text(bulk("v3")));

    // A write through respite is read back at once (read-your-writes), on the new primary.
    assert_eq!(c.cmd(&[b"SET", key.as_bytes(), b"v4"]), b"+OK\r\n");
    assert_eq!(text(c.cmd(&[b"GET", key.as_bytes()])), text(bulk("v4")));
    assert_eq!(
        cluster.node(other).cmd(&[b"GET", key.as_bytes()]),
        text(bulk("v4")).into_bytes()
    );

    // Under load: one client writes a counter through respite, another reads it through the
    // near cache, while the key's slot moves back. No read may give a value older than a
    // write already acknowledged when the read was sent.
    let hits = stat(&proxy, "hits");
    let acked = Arc::new(AtomicI64::new(-1));
    let stop = Arc::new(AtomicBool::new(false));
    let port = proxy.port();
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut w = Raw::connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let r = w.cmd(&[b"SET", key.as_bytes(), i.to_string().as_bytes()]);
                assert_eq!(r, b"+OK\r\n", "SET {i}");
                acked.store(i, Ordering::Release);
                i += 1;
                // A few reads per write, so reads are answered from the cache.
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let reader = {
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut r = Raw::connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
            let (mut reads, mut stale) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let floor = acked.load(Ordering::Acquire);
                let got = text(r.cmd(&[b"GET", key.as_bytes()]));
                let value: i64 = got
                    .lines()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| {
                        if floor < 0 {
                            -1
                        } else {
                            panic!("GET gave {got}")
                        }
                    });
                if value < floor {
                    stale.push((floor, value));
                }
                reads += 1;
            }
            (reads, stale)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    cluster.move_slot(slot, other, owner);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let (reads, stale) = reader.join().unwrap();
    eprintln!(
        "{reads} reads across the move, {} near-cache hits, {} stale",
        stat(&proxy, "hits") - hits,
        stale.len()
    );
    assert!(
        stale.is_empty(),
        "stale reads (acknowledged, read): {stale:?}"
    );
    assert!(
        stat(&proxy, "hits") > hits,
        "reads were answered from the cache"
    );
}

fn stat(p: &Proxy, name: &str) -> u64 {
    let (status, body) = p.admin_get("/stats");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["near_cache"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("stat {name}"))
}

crate::both!(near_cache_per_node, scenario);

/// Valkey 9's atomic slot migration (`CLUSTER MIGRATESLOTS`) of 1,000 slots under load through
/// respite with the near cache on: a writer increments 60 counters (40 of them in the moving
/// slots) and a reader GETs them, through respite. No client error, no wrong reply, and no read
/// older than an increment acknowledged before it was sent; afterwards every counter on its
/// node is the last value acknowledged.
#[test]
fn valkey_atomic_slot_migration() {
    let cluster = Cluster::start(Kind::Valkey);
    let proxy = Proxy::start_with_config(&cluster.url(), CACHE_ALL, &[]);
    let source = cluster.slot_owner(0).unwrap();
    let target = *cluster.primaries().iter().find(|&&p| p != source).unwrap();
    let slot_of = |k: &str| respite::upstream::cluster::slot::key_slot(k.as_bytes());
    let mut keys: Vec<String> = (0..100_000)
        .map(|i| format!("asm:{i}"))
        .filter(|k| slot_of(k) < 1000)
        .take(40)
        .collect();
    keys.extend(
        (0..100_000)
            .map(|i| format!("asm:{i}"))
            .filter(|k| slot_of(k) >= 1000)
            .take(20),
    );
    let keys = Arc::new(keys);
    let acked: Arc<Vec<AtomicI64>> = Arc::new((0..keys.len()).map(|_| AtomicI64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let port = proxy.port();
    let connect = move || Raw::connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let writer = {
        let (keys, acked, stop) = (keys.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut w = connect();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let i = n % keys.len();
                let r = text(w.cmd(&[b"INCR", keys[i].as_bytes()]));
                let v: i64 = r
                    .strip_prefix(':')
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or_else(|| panic!("INCR {}: {r}", keys[i]));
                assert_eq!(v, acked[i].load(Ordering::Acquire) + 1, "INCR {}", keys[i]);
                acked[i].store(v, Ordering::Release);
                n += 1;
            }
            n
        })
    };
    let reader = {
        let (keys, acked, stop) = (keys.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut r = connect();
            let (mut reads, mut stale) = (0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let i = reads % keys.len();
                let floor = acked[i].load(Ordering::Acquire);
                let got = text(r.cmd(&[b"GET", keys[i].as_bytes()]));
                let value: i64 = match got.as_str() {
                    "$-1\r\n" => 0,
                    _ => got
                        .lines()
                        .nth(1)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or_else(|| panic!("GET {}: {got}", keys[i])),
                };
                if value < floor {
                    stale.push((keys[i].clone(), floor, value));
                }
                reads += 1;
            }
            (reads, stale)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let hits = stat(&proxy, "hits");
    let target_id = text(cluster.node(target).cmd(&[b"CLUSTER", b"MYID"]));
    let target_id = target_id.lines().nth(1).unwrap().to_string();
    let started = std::time::Instant::now();
    let r = cluster.node(source).cmd(&[
        b"CLUSTER",
        b"MIGRATESLOTS",
        b"SLOTSRANGE",
        b"0",
        b"999",
        b"NODE",
        target_id.as_bytes(),
    ]);
    assert_eq!(text(&r), "+OK\r\n");
    let moved = wait_until(Duration::from_secs(30), || {
        cluster.slot_owner(0) == Some(target) && cluster.slot_owner(999) == Some(target)
    });
    assert!(moved.is_some(), "the slots did not move");
    eprintln!("migration took {:?}", started.elapsed());
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    let (reads, stale) = reader.join().unwrap();
    eprintln!(
        "{writes} writes, {reads} reads across the migration, {} near-cache hits, {} stale",
        stat(&proxy, "hits") - hits,
        stale.len()
    );
    assert!(
        stale.is_empty(),
        "stale reads (key, acknowledged, read): {stale:?}"
    );
    assert!(
        stat(&proxy, "hits") > hits,
        "reads were answered from the cache"
    );
    // Each counter on its slot's primary is the last increment acknowledged.
    for (i, k) in keys.iter().enumerate() {
        let owner = cluster.slot_owner(slot_of(k)).unwrap();
        if i < 40 {
            assert_eq!(owner, target, "{k}");
        }
        let want = acked[i].load(Ordering::Acquire);
        let got = text(cluster.node(owner).cmd(&[b"GET", k.as_bytes()]));
        assert_eq!(got, text(bulk(want.to_string())), "{k} on {owner}");
    }
}
