//! The benchmarks' load generator: C clients over TCP or a unix socket send N GETs and SETs in
//! pipelines of P, on a uniform or Zipf key distribution, and it prints one line of `name=value`
//! pairs — throughput, latency p50/p99/p99.9/max from an HDR histogram, its own CPU per request,
//! and, with `--check`, what the values read say about correctness. `scripts/bench.sh` runs it.
//!
//! Correctness (`--check`): every SET writes `key|run|version|` padded to the value size, with a
//! version counted per key across all clients; a SET's version counts as acknowledged once its +OK
//! arrives. One SET per key is in flight at a time (a client that would write a key another is
//! writing sends a GET instead), so versions reach the server in the order they are numbered. A GET sent after a version was acknowledged must return that version or a later one
//! of this run (else `stale`); a value that does not name its own key and a version is `bad`; a
//! missing key is `miss` (stale when this run had already written it). So a near cache that served a
//! value after a write through the same proxy was acknowledged is caught, whichever client wrote.
//!
//! One thread (a current-thread runtime), as redis-benchmark: the generator's CPU stays one core.
use clap::Parser;
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[derive(Parser, Clone)]
#[command(about = "Redis load generator: throughput and HDR latency percentiles")]
struct Args {
    /// host:port to connect to.
    #[arg(long, default_value = "127.0.0.1:6379")]
    addr: String,
    /// A unix socket path instead of --addr.
    #[arg(long)]
    unix: Option<String>,
    /// Clients (connections).
    #[arg(short, default_value_t = 50)]
    c: usize,
    /// Requests in all.
    #[arg(short, default_value_t = 100_000)]
    n: u64,
    /// Pipeline depth.
    #[arg(short = 'P', default_value_t = 1)]
    pipeline: u64,
    /// Value size of SETs in bytes.
    #[arg(short, default_value_t = 64)]
    d: usize,
    /// Distinct keys (key:0 .. key:K-1).
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Zipf exponent of the key distribution (0: uniform; key:0 is the most frequent).
    #[arg(long, default_value_t = 0.0)]
    zipf: f64,
    /// Fraction of requests that are SETs (0: all GETs, 1: all SETs).
    #[arg(long, default_value_t = 0.0)]
    writes: f64,
    /// Check the values read against the versions written (see the file's comment).
    #[arg(long)]
    check: bool,
}

/// Per-key version counters shared by the clients.
struct Versions {
    next: Vec<AtomicU64>,
    acked: Vec<AtomicU64>,
    writing: Vec<AtomicBool>,
}

#[derive(Default)]
struct Counts {
    errors: u64,
    stale: u64,
    bad: u64,
    misses: u64,
}

enum Op {
    Get { key: usize, floor: u64 },
    Set { key: usize, version: u64 },
}

enum Reply<'a> {
    Simple,
    Error,
    Nil,
    Bulk(&'a [u8]),
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(args));
}

async fn run(args: Args) {
    // Tells this run's values from those an earlier run left in the server.
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    let cdf = Arc::new(key_cdf(args.keys, args.zipf));
    let versions = Arc::new(Versions {
        next: (0..args.keys).map(|_| AtomicU64::new(0)).collect(),
        acked: (0..args.keys).map(|_| AtomicU64::new(0)).collect(),
        writing: (0..args.keys).map(|_| AtomicBool::new(false)).collect(),
    });
    let issued = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_ns();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for id in 0..args.c {
        let (args, cdf, versions, issued) =
            (args.clone(), cdf.clone(), versions.clone(), issued.clone());
        tasks.push(tokio::spawn(async move {
            let seed = run_id.wrapping_add((id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let client = Client {
                args: &args,
                cdf: &cdf,
                versions: &versions,
                issued: &issued,
                run_id,
                rng: seed | 1,
            };
            if let Some(path) = &args.unix {
                let s = tokio::net::UnixStream::connect(path)
                    .await
                    .expect("connect unix socket");
                client.drive(s).await
            } else {
                let s = tokio::net::TcpStream::connect(&args.addr)
                    .await
                    .expect("connect");
                s.set_nodelay(true).expect("nodelay");
                client.drive(s).await
            }
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1_000, 600_000_000_000, 3).expect("histogram");
    let mut counts = Counts::default();
    for t in tasks {
        let (h, c) = t.await.expect("client task");
        hist.add(&h).expect("same bounds");
        counts.errors += c.errors;
        counts.stale += c.stale;
        counts.bad += c.bad;
        counts.misses += c.misses;
    }
    let elapsed = start.elapsed();
    let cpu = cpu_ns().saturating_sub(cpu0);
    let n = hist.len().max(1);
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    println!(
        "requests={} rps={:.0} p50_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1} cpu_us={:.3} errors={} stale={} bad={} misses={}",
        hist.len(),
        hist.len() as f64 / elapsed.as_secs_f64(),
        us(0.5),
        us(0.99),
        us(0.999),
        hist.max() as f64 / 1e3,
        cpu as f64 / 1e3 / n as f64,
        counts.errors,
        counts.stale,
        counts.bad,
        counts.misses,
    );
}

/// The cumulative distribution of key ranks: P(rank) proportional to 1 / (rank + 1)^s.
fn key_cdf(keys: usize, s: f64) -> Vec<f64> {
    let mut acc = 0.0;
    let mut cdf: Vec<f64> = (0..keys)
        .map(|r| {
            acc += 1.0 / ((r + 1) as f64).powf(s);
            acc
        })
        .collect();
    for x in &mut cdf {
        *x /= acc;
    }
    cdf
}

/// CPU time of this process so far, all threads, in ns (schedstat: nanosecond resolution).
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

struct Client<'a> {
    args: &'a Args,
    cdf: &'a [f64],
    versions: &'a Versions,
    issued: &'a AtomicU64,
    run_id: u64,
    rng: u64,
}

impl Client<'_> {
    fn random(&mut self) -> f64 {
        // xorshift64*: plenty for picking keys, and free of any shared state.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn key(&mut self) -> usize {
        let u = self.random();
        self.cdf.partition_point(|&p| p < u).min(self.cdf.len() - 1)
    }

    async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
        mut self,
        mut s: S,
    ) -> (Histogram<u64>, Counts) {
        let mut hist =
            Histogram::<u64>::new_with_bounds(1_000, 600_000_000_000, 3).expect("histogram");
        let mut counts = Counts::default();
        let (mut out, mut ops, mut value) = (Vec::new(), Vec::new(), Vec::new());
        let mut inb = Vec::with_capacity(64 * 1024);
        let mut pos = 0;
        let args = self.args;
        loop {
            let first = self.issued.fetch_add(args.pipeline, Ordering::Relaxed);
            if first >= args.n {
                break;
            }
            let depth = args.pipeline.min(args.n - first);
            out.clear();
            ops.clear();
            for _ in 0..depth {
                let key = self.key();
                let name = format!("key:{key}");
                if args.writes > 0.0
                    && self.random() < args.writes
                    && !self.versions.writing[key].swap(true, Ordering::AcqRel)
                {
                    let version = self.versions.next[key].fetch_add(1, Ordering::Relaxed) + 1;
                    value.clear();
                    value.extend_from_slice(
                        format!("{name}|{:x}|{version}|", self.run_id).as_bytes(),
                    );
                    value.resize(value.len().max(args.d), b'x');
                    command(&mut out, &[b"SET", name.as_bytes(), &value]);
                    ops.push(Op::Set { key, version });
                } else {
                    let floor = self.versions.acked[key].load(Ordering::Acquire);
                    command(&mut out, &[b"GET", name.as_bytes()]);
                    ops.push(Op::Get { key, floor });
                }
            }
            let sent = Instant::now();
            s.write_all(&out).await.expect("write");
            for op in &ops {
                let (len, reply) = loop {
                    if let Some(parsed) = parse(&inb[pos..]) {
                        break parsed;
                    }
                    if pos > 0 {
                        inb.drain(..pos);
                        pos = 0;
                    }
                    let at = inb.len();
                    inb.resize(at + 64 * 1024, 0);
                    let n = s.read(&mut inb[at..]).await.expect("read");
                    inb.truncate(at + n);
                    assert!(n > 0, "server closed the connection");
                };
                let latency = sent.elapsed();
                let _ = hist.record(latency.as_nanos().max(1_000) as u64);
                match (reply, op) {
                    (Reply::Error, _) => counts.errors += 1,
                    (Reply::Simple, Op::Set { key, version }) => {
                        self.versions.acked[*key].fetch_max(*version, Ordering::Release);
                    }
                    (Reply::Nil, Op::Get { floor, .. }) => {
                        counts.misses += 1;
                        if *floor > 0 {
                            counts.stale += 1;
                        }
                    }
                    (Reply::Bulk(v), Op::Get { key, floor }) if args.check => {
                        match read_version(v, *key, self.run_id) {
                            None => counts.bad += 1,
                            Some(Some(version)) if version >= *floor => {}
                            Some(None) if *floor == 0 => {}
                            Some(_) => counts.stale += 1,
                        }
                    }
                    (Reply::Bulk(_), Op::Get { .. }) => {}
                    _ => counts.bad += 1,
                }
                if let Op::Set { key, .. } = op {
                    self.versions.writing[*key].store(false, Ordering::Release);
                }
                pos += len;
            }
        }
        (hist, counts)
    }
}

/// Reads the value a SET of this generator wrote: `None` when it does not name `key`, `Some(None)`
/// when it was written by another run, else the version.
fn read_version(v: &[u8], key: usize, run_id: u64) -> Option<Option<u64>> {
    let text = std::str::from_utf8(v).ok()?;
    let mut parts = text.split('|');
    if parts.next()? != format!("key:{key}") {
        return None;
    }
    let run = parts.next()?;
    let version: u64 = parts.next()?.parse().ok()?;
    Some((run == format!("{run_id:x}")).then_some(version))
}

fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// One RESP reply of the kinds GET and SET return, with its length in bytes; `None` until whole.
fn parse(buf: &[u8]) -> Option<(usize, Reply<'_>)> {
    let line_end = memchr::memmem::find(buf, b"\r\n")?;
    let line = &buf[1..line_end];
    match buf[0] {
        b'+' | b':' => Some((line_end + 2, Reply::Simple)),
        b'-' => Some((line_end + 2, Reply::Error)),
        b'_' => Some((line_end + 2, Reply::Nil)),
        b'$' => {
            let len: i64 = std::str::from_utf8(line).ok()?.parse().ok()?;
            if len < 0 {
                return Some((line_end + 2, Reply::Nil));
            }
            let end = line_end + 2 + len as usize;
            (buf.len() >= end + 2).then(|| (end + 2, Reply::Bulk(&buf[line_end + 2..end])))
        }
        other => panic!("unexpected reply type {:?}", other as char),
    }
}
