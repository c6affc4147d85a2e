//! The near cache's hit path, as a session runs it for one request: frame `GET key` out of the
//! read buffer, resolve the command, find the entry, and append its reply for the client's
//! protocol to the output buffer, for a batch of 1,024 pipelined requests over 10,000 cached keys.
//! Target: under 300 ns per request.
use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use respite::cache::store::{Cached, Found, Store, Ticket};
use respite::cache::{ReadKind, Sig};
use respite::command;
use respite::protocol::{Framer, Limits, Protocol};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn store_with(keys: usize) -> Store {
    let store = Store::new(256 << 20, 10, Duration::from_secs(1));
    let value = Arc::new(Cached {
        resp2: Bytes::from(format!("$64\r\n{}\r\n", "v".repeat(64))),
        resp3: Bytes::from(format!("$64\r\n{}\r\n", "v".repeat(64))),
    });
    for i in 0..keys {
        let key = Bytes::from(format!("key:{i:012}"));
        let args = [Bytes::from_static(b"GET"), key.clone()];
        let sig = Sig::new(ReadKind::Get, &args);
        let mut ticket: Option<Ticket> = None;
        let _ = store.read(&key, &sig, None, store.now(), false, Protocol::Resp2, |t| {
            ticket = Some(t);
            true
        });
        let ticket = ticket.expect("a fill starts");
        store.complete(ticket, Some((value.clone(), u64::MAX)), Ok(value.clone()));
    }
    store
}

fn hit_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("near_cache");
    g.throughput(Throughput::Elements(1));
    let keys = 10_000;
    let store = store_with(keys);
    let requests: Vec<Vec<u8>> = (0..keys)
        .map(|i| {
            let key = format!("key:{i:012}");
            format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).into_bytes()
        })
        .collect();
    g.bench_function("hit", |b| {
        b.iter_custom(|iters| {
            let mut framer = Framer::new(Limits::default());
            let mut input = BytesMut::new();
            let mut out = BytesMut::with_capacity(64 * 1024);
            let mut total = Duration::ZERO;
            let mut i = 0;
            let mut left = iters;
            while left > 0 {
                let n = left.min(1024) as usize;
                input.clear();
                for k in 0..n {
                    input.extend_from_slice(&requests[(i + k) % keys]);
                }
                out.clear();
                let start = Instant::now();
                // As a session does: one clock reading per batch of requests read together.
                let now = store.now();
                for _ in 0..n {
                    let req = framer.next(&mut input).unwrap().unwrap();
                    let spec = command::resolve(&req.args).unwrap();
                    let kind = ReadKind::of(spec).unwrap();
                    let sig = Sig::new(kind, &req.args);
                    match store.read(&req.args[1], &sig, None, now, true, Protocol::Resp2, |_| {
                        false
                    }) {
                        Found::Hit(v) => out.extend_from_slice(&v),
                        _ => panic!("every key is cached"),
                    }
                }
                total += start.elapsed();
                black_box(&out);
                i += n;
                left -= n as u64;
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, hit_path);
criterion_main!(benches);
