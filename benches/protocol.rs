//! Hot-path benchmarks for the wire protocol: request framing and reply boundary scanning.
//!
//! Chunked deliveries are simulated with `split_off`/`unsplit` on one allocation, so what is measured
//! is the framer or scanner and not the copying of bytes into a read buffer.
use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use respite::protocol::{Framer, Limits, ReplyScanner};
use std::hint::black_box;
use std::time::{Duration, Instant};

const CHUNK: usize = 4096;

fn bulk_request(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Times framing `per_iter` requests out of a read buffer that holds many of them back to back, the
/// steady state of a busy connection (the buffer is already shared, so a split is a refcount bump).
fn frame_back_to_back(input: &[u8], per_iter: usize, iters: u64) -> Duration {
    const BATCH: u64 = 2048;
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(BATCH);
        let mut buf = BytesMut::with_capacity(input.len() * (n as usize + 1));
        for _ in 0..=n {
            buf.extend_from_slice(input);
        }
        let mut framer = Framer::new(Limits::default());
        // One request outside the clock makes the buffer shared, as it is after a connection's first.
        for _ in 0..per_iter {
            black_box(framer.next(&mut buf).unwrap().unwrap());
        }
        let start = Instant::now();
        for _ in 0..n {
            for _ in 0..per_iter {
                black_box(framer.next(black_box(&mut buf)).unwrap().unwrap());
            }
        }
        total += start.elapsed();
        left -= n;
    }
    total
}

fn framer(c: &mut Criterion) {
    let mut g = c.benchmark_group("framer");

    let set = bulk_request(&[b"SET", b"key", b"value"]);
    g.throughput(Throughput::Elements(1));
    g.bench_function("set_small", |b| {
        b.iter_custom(|iters| frame_back_to_back(&set, 1, iters))
    });

    // The floor under set_small: what splitting a request off and slicing three arguments out of it
    // costs without any parsing (allocation, refcounts, dropping).
    g.bench_function("baseline_split_3_slices", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(2048);
                let mut buf = BytesMut::with_capacity(set.len() * (n as usize + 1));
                for _ in 0..=n {
                    buf.extend_from_slice(&set);
                }
                black_box(buf.split_to(set.len()).freeze());
                let start = Instant::now();
                for _ in 0..n {
                    let raw = black_box(&mut buf).split_to(set.len()).freeze();
                    let args: Vec<_> = [(8, 11), (15, 18), (22, 27)]
                        .iter()
                        .map(|&(s, e)| raw.slice(s..e))
                        .collect();
                    black_box((args, raw));
                }
                total += start.elapsed();
                left -= n;
            }
            total
        })
    });

    let get = bulk_request(&[b"GET", b"user:1000:session"]);
    let pipeline = get.repeat(16);
    g.throughput(Throughput::Elements(16));
    g.bench_function("pipeline_16_get", |b| {
        b.iter_custom(|iters| frame_back_to_back(&pipeline, 16, iters))
    });

    let big = bulk_request(&[b"SET", b"key", &vec![b'v'; 100 * 1024]]);
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function("bulk_100k_in_4k_chunks", |b| {
        b.iter_batched(
            || BytesMut::from(&big[..]),
            |mut buf| {
                let mut framer = Framer::new(Limits::default());
                let mut tail = buf.split_off(CHUNK);
                loop {
                    if let Some(req) = framer.next(&mut buf).unwrap() {
                        return req;
                    }
                    let n = tail.len().min(CHUNK);
                    buf.unsplit(tail.split_to(n));
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn scanner(c: &mut Criterion) {
    let mut g = c.benchmark_group("scanner");
    g.throughput(Throughput::Elements(1));

    let mut scan_whole = |name: &str, reply: &[u8]| {
        let buf = BytesMut::from(reply);
        let mut scanner = ReplyScanner::new();
        g.bench_function(name, |b| {
            b.iter(|| scanner.scan(black_box(&buf)).unwrap().unwrap())
        });
    };
    scan_whole("ok", b"+OK\r\n");
    let mut bulk64 = b"$64\r\n".to_vec();
    bulk64.extend_from_slice(&[b'x'; 64]);
    bulk64.extend_from_slice(b"\r\n");
    scan_whole("bulk_64", &bulk64);
    let elements: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("value:{i:04}").into_bytes())
        .collect();
    let refs: Vec<&[u8]> = elements.iter().map(|e| &e[..]).collect();
    scan_whole("array_100_bulks", &bulk_request(&refs));

    let mut huge = b"$16777216\r\n".to_vec();
    huge.resize(huge.len() + 16 * 1024 * 1024, b'x');
    huge.extend_from_slice(b"\r\n");
    let mut full = BytesMut::from(&huge[..]);
    g.throughput(Throughput::Bytes(huge.len() as u64));
    g.bench_function("bulk_16m_in_4k_chunks", |b| {
        b.iter(|| {
            let mut scanner = ReplyScanner::new();
            let mut tail = full.split_off(CHUNK);
            loop {
                if let Some(found) = scanner.scan(&full).unwrap() {
                    // Whole again for the next iteration.
                    full.unsplit(tail);
                    return found;
                }
                let n = tail.len().min(CHUNK);
                full.unsplit(tail.split_to(n));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, framer, scanner);
criterion_main!(benches);
