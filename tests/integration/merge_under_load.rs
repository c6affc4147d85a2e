//! `local_only.on_recovery = "merge"` under load (issue 13): clients keep writing while the
//! upstream freezes (local-only mode takes over), comes back and the local data is merged, and
//! after. Judged on the upstream afterwards against docs/local-only.md's merge contract:
//! - a key only written during the outage (the upstream lacks it) is created there with the value
//!   acknowledged for it: no acknowledged write is lost;
//! - a key the upstream already had keeps the upstream's value: the outage's writes to it are
//!   lost, as the contract says, and writes after recovery land on it as usual;
//! - no reply is another key's value, and no error names anything but the upstream's failure.
use super::faults::{Outcome, outcome};
use crate::support::{Binary, Kind, Raw, Server, bulk, encode, wait_until};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// What one client wrote and was told.
#[derive(Debug, Default)]
struct Wrote {
    /// Unique keys acknowledged with their value (upstream or local-only, before, during or
    /// after the outage): each must be on the upstream afterwards.
    acked: Vec<(String, String)>,
    /// Unique keys whose SET may or may not have run (connection lost with it in flight).
    unknown: Vec<(String, String)>,
    /// The last value acknowledged for this client's shared key, `last:{c}`.
    last: Option<String>,
}

#[test]
fn merge_on_recovery_under_load_keeps_every_write_the_contract_keeps() {
    let server = Server::start(Kind::Redis);
    // Its own process: its clients are not in the connection gauge other tests of this process
    // read.
    let url = server.url();
    let proxy = Binary::start(
        "",
        &[
            "--upstream",
            &url,
            "--log-level",
            "error",
            "--set",
            "local_only.on_recovery=merge",
            "--set",
            "upstream.connections=1",
        ],
    );
    let health = |proxy: &Binary| -> String {
        let (_, body) = proxy.admin_get("/stats");
        let v: serde_json::Value = serde_json::from_str(&body).expect("stats are JSON");
        v["upstream"]["health"]["state"]
            .as_str()
            .expect("state")
            .to_string()
    };
    const CLIENTS: usize = 4;
    let mut d = server.raw();
    for c in 0..CLIENTS {
        // On the upstream before the outage: its value wins over the outage's writes.
        assert_eq!(
            d.cmd(&[b"SET", format!("last:{c}").as_bytes(), b"before"]),
            b"+OK\r\n"
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let addr = proxy.addr;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut conn = Raw::connect(addr);
                let mut w = Wrote::default();
                for j in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let (k, v) = (format!("m:{c}:{j}"), format!("v{c}:{j}"));
                    let last = format!("last:{c}");
                    // A pipeline of a unique key, a read of it, and the client's shared key.
                    let mut batch = encode(&[b"SET", k.as_bytes(), v.as_bytes()]);
                    batch.extend(encode(&[b"GET", k.as_bytes()]));
                    batch.extend(encode(&[b"SET", last.as_bytes(), v.as_bytes()]));
                    conn.send(&batch);
                    let mut reply = || outcome(conn.reply().expect("a reply"));
                    let (set, get, set_last) = (reply(), reply(), reply());
                    let mut ok = false;
                    match set {
                        Outcome::Ok(r) => {
                            assert_eq!(r, b"+OK\r\n", "{k}");
                            w.acked.push((k.clone(), v.clone()));
                            acked.fetch_add(1, Ordering::Relaxed);
                            ok = true;
                        }
                        Outcome::Lost(_) => w.unknown.push((k.clone(), v.clone())),
                        o => assert!(o.not_run(), "{k}: {o:?}"),
                    }
                    if let Outcome::Ok(g) = get {
                        // Its own value, or nil: right after recovery a key written locally a
                        // moment before is read upstream while the merge still runs.
                        assert!(g == bulk(&v) || g == b"$-1\r\n", "GET {k} gave {g:?}");
                    }
                    if let Outcome::Ok(r) = set_last {
                        assert_eq!(r, b"+OK\r\n");
                        w.last = Some(v.clone());
                    }
                    if !ok {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                w
            })
        })
        .collect();
    let progress = |n: u64| {
        let from = acked.load(Ordering::Relaxed);
        wait_until(Duration::from_secs(20), || {
            acked.load(Ordering::Relaxed) >= from + n
        })
        .unwrap_or_else(|| panic!("clients stopped making progress: {:?}", health(&proxy)));
    };
    progress(500);
    server.signal("STOP");
    wait_until(Duration::from_secs(10), || health(&proxy) == "down")
        .unwrap_or_else(|| panic!("never down: {:?}", health(&proxy)));
    // Written locally: thousands of keys the upstream lacks, and the shared keys it has.
    progress(2_000);
    server.signal("CONT");
    wait_until(Duration::from_secs(10), || health(&proxy) == "healthy")
        .unwrap_or_else(|| panic!("never healthy: {:?}", health(&proxy)));
    // Writes go on through the merge and after it.
    progress(2_000);
    stop.store(true, Ordering::Relaxed);
    let wrote: Vec<Wrote> = clients
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect();
    let all: Vec<&(String, String)> = wrote.iter().flat_map(|w| &w.acked).collect();
    // The merge runs beside forwarding: give it a moment before calling a key lost.
    let mut missing: Vec<&(String, String)> = all.clone();
    wait_until(Duration::from_secs(5), || {
        missing.retain(|(k, v)| d.cmd(&[b"GET", k.as_bytes()]) != bulk(v));
        missing.is_empty()
    });
    let missing: Vec<(String, Vec<u8>)> = missing
        .iter()
        .map(|(k, _)| (k.clone(), d.cmd(&[b"GET", k.as_bytes()])))
        .collect();
    for w in &wrote {
        for (k, v) in &w.unknown {
            let got = d.cmd(&[b"GET", k.as_bytes()]);
            assert!(got == bulk(v) || got == b"$-1\r\n", "{k}: {got:?}");
        }
    }
    eprintln!(
        "merge under load: {} unique keys acknowledged ({} in flight when the upstream froze), \
         {} missing upstream afterwards",
        all.len(),
        wrote.iter().map(|w| w.unknown.len()).sum::<usize>(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "acknowledged writes lost: {:?}",
        &missing[..missing.len().min(10)]
    );
    for (c, w) in wrote.iter().enumerate() {
        // The upstream had it: the outage's writes are not merged into it, and the writes after
        // recovery land on it; the last acknowledged one is there.
        let last = w.last.as_ref().expect("some write to the shared key");
        assert_eq!(
            d.cmd(&[b"GET", format!("last:{c}").as_bytes()]),
            bulk(last),
            "last:{c}"
        );
    }
}
