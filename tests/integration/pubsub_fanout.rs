//! Pub/Sub fan-out at scale, against the shipped binary (its own process, so its connections and
//! RSS are its own): 10,000 subscribers of one channel cost one upstream subscription connection
//! and get every message in order; a subscriber that stops reading is cut off at
//! `limits.pubsub_output_bytes` while the others keep up, and respite's memory stays bounded.
use crate::both;
use crate::support::{Binary, Kind, Raw, Server, encode, rss_kib_of, words};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SUBSCRIBERS: usize = 10_000;

/// The test process holds one socket per subscriber: the Redis and Valkey runs take turns, so
/// together they stay within its descriptor limit.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
const MESSAGES: usize = 100;

fn message(i: usize) -> Vec<u8> {
    let payload = format!("payload-{i:06}");
    format!(
        "*3\r\n$7\r\nmessage\r\n$4\r\nfeed\r\n${}\r\n{payload}\r\n",
        payload.len()
    )
    .into_bytes()
}

/// How many of the upstream's clients are in subscribed mode, by its own CLIENT LIST.
fn upstream_subscriber_connections(server: &Server) -> usize {
    let list = server.raw().cmd(&words("CLIENT LIST TYPE pubsub"));
    String::from_utf8_lossy(&list)
        .lines()
        .filter(|l| l.contains("id="))
        .count()
}

both!(
    ten_thousand_subscribers_share_one_upstream_subscription,
    |kind: Kind| {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let _ = rlimit::increase_nofile_limit(u64::MAX);
        let server = Server::start(kind);
        let binary = Binary::start(
            "[listen]\nmax_clients = 12000\n",
            &["--upstream", &server.url(), "--log-level", "warn"],
        );
        let rss_before = rss_kib_of(&binary.pid().to_string());
        let addr = binary.addr;
        let confirmation = b"*3\r\n$9\r\nsubscribe\r\n$4\r\nfeed\r\n:1\r\n".to_vec();
        let expected: Arc<Vec<u8>> = Arc::new((0..MESSAGES).flat_map(message).collect());
        // One thread for the 10,000 clients: the test leaves a core to the tests beside it.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
        // 1: connected and idle; 2: subscribe; 3: read the messages.
        let (phase_tx, phase_rx) = tokio::sync::watch::channel(1u8);
        // Connections open a few hundred at a time, so the listener's backlog never overflows.
        let opening = Arc::new(tokio::sync::Semaphore::new(256));
        let tasks: Vec<_> = (0..SUBSCRIBERS)
            .map(|_| {
                let (ready, expected, confirmation) =
                    (ready_tx.clone(), expected.clone(), confirmation.clone());
                let opening = opening.clone();
                let mut phase = phase_rx.clone();
                rt.spawn(async move {
                    let permit = opening.acquire().await.unwrap();
                    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                    s.write_all(&encode(&words("PING"))).await.unwrap();
                    let mut got = [0u8; 7];
                    s.read_exact(&mut got).await.unwrap();
                    assert_eq!(&got, b"+PONG\r\n");
                    drop(permit);
                    ready.send(()).unwrap();
                    let _ = phase.wait_for(|p| *p >= 2).await;
                    let permit = opening.acquire().await.unwrap();
                    s.write_all(&encode(&words("SUBSCRIBE feed")))
                        .await
                        .unwrap();
                    let mut got = vec![0u8; confirmation.len()];
                    s.read_exact(&mut got).await.unwrap();
                    assert_eq!(got, confirmation);
                    drop(permit);
                    ready.send(()).unwrap();
                    let _ = phase.wait_for(|p| *p >= 3).await;
                    let mut got = vec![0u8; expected.len()];
                    tokio::time::timeout(Duration::from_secs(120), s.read_exact(&mut got))
                        .await
                        .expect("every message within the deadline")
                        .unwrap();
                    // Every message, in order, and nothing else.
                    got == *expected
                })
            })
            .collect();
        drop(ready_tx);
        let all_ready = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<()>| {
            rt.block_on(async {
                for _ in 0..SUBSCRIBERS {
                    tokio::time::timeout(Duration::from_secs(120), rx.recv())
                        .await
                        .expect("every client within the deadline")
                        .expect("a client failed");
                }
            })
        };
        all_ready(&mut ready_rx);
        let rss_idle = rss_kib_of(&binary.pid().to_string());
        phase_tx.send(2).unwrap();
        all_ready(&mut ready_rx);
        let rss_subscribed = rss_kib_of(&binary.pid().to_string());
        // The upstream's own view: one subscriber connection, one subscription.
        assert_eq!(upstream_subscriber_connections(&server), 1);
        assert_eq!(
            server.raw().cmd(&words("PUBSUB NUMSUB feed")),
            b"*2\r\n$4\r\nfeed\r\n:1\r\n"
        );
        let started = Instant::now();
        phase_tx.send(3).unwrap();
        let mut publisher = server.raw();
        let mut batch = Vec::new();
        for i in 0..MESSAGES {
            batch.extend(encode(&[
                b"PUBLISH",
                b"feed",
                format!("payload-{i:06}").as_bytes(),
            ]));
        }
        publisher.send(&batch);
        for _ in 0..MESSAGES {
            assert_eq!(publisher.reply().unwrap(), b":1\r\n");
        }
        let all = rt.block_on(async {
            let mut ok = 0;
            for t in tasks {
                ok += usize::from(t.await.unwrap());
            }
            ok
        });
        let elapsed = started.elapsed();
        assert_eq!(
            all, SUBSCRIBERS,
            "every subscriber got every message in order"
        );
        let rate = (MESSAGES * SUBSCRIBERS) as f64 / elapsed.as_secs_f64();
        let each = |from: u64, to: u64| to.saturating_sub(from) * 1024 / SUBSCRIBERS as u64;
        println!(
            "{kind:?}: {SUBSCRIBERS} subscribers, 1 upstream subscriber connection; respite RSS \
         {rss_before} KiB at start, {rss_idle} KiB with {SUBSCRIBERS} idle clients (~{} B each), \
         {rss_subscribed} KiB once they subscribed (~{} B more each); {MESSAGES} messages \
         delivered to all in {elapsed:?}: {rate:.0} deliveries/s",
            each(rss_before, rss_idle),
            each(rss_idle, rss_subscribed),
        );
        // Subscribing costs a small part of what an idle client already costs.
        assert!(
            rss_subscribed < rss_idle + 20 * 1024,
            "{rss_subscribed} KiB once {SUBSCRIBERS} clients subscribed (from {rss_idle} KiB idle)"
        );
        drop(rt);
    }
);

both!(
    a_stalled_subscriber_is_cut_off_and_memory_stays_bounded,
    |kind: Kind| {
        let server = Server::start(kind);
        let limit = 1024 * 1024;
        let binary = Binary::start(
            &format!("[limits]\npubsub_output_bytes = {limit}\n"),
            &["--upstream", &server.url(), "--log-level", "warn"],
        );
        let mut healthy = Raw::connect(binary.addr);
        healthy.cmd(&words("SUBSCRIBE big"));
        let mut stalled = Raw::connect(binary.addr);
        stalled.cmd(&words("SUBSCRIBE big"));
        let rss_before = rss_kib_of(&binary.pid().to_string());
        // 64 MiB in 16 KiB messages. The healthy subscriber stays within a window of 32 messages
        // (512 KiB, under its limit); the stalled one never reads again.
        let payload = vec![b'x'; 16 * 1024];
        let total = 4096;
        let window = 32;
        let mut publisher = server.raw();
        let mut received = 0;
        for i in 0..total {
            publisher.send(&encode(&[b"PUBLISH", b"big", &payload]));
            if i >= window {
                let m = healthy.reply().expect("the healthy subscriber is served");
                assert!(m.ends_with(b"x\r\n"));
                received += 1;
            }
        }
        while received < total {
            healthy
                .reply()
                .expect("the healthy subscriber gets every message");
            received += 1;
        }
        for _ in 0..total {
            publisher.reply().unwrap();
        }
        let rss_after = rss_kib_of(&binary.pid().to_string());
        // The stalled subscriber: what the kernel buffered reaches it, then the connection ends.
        let mut got = 0usize;
        stalled
            .stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        while let Some(m) = stalled.reply() {
            got += m.len();
        }
        assert!(
            got < total * payload.len() / 2,
            "the stalled subscriber was cut off, not served ({got} bytes)"
        );
        let (_, metrics) = binary.admin_get("/metrics");
        assert!(
            metrics.contains("respite_pubsub_slow_subscribers_total 1"),
            "{metrics}"
        );
        // 64 MiB went through; respite held at most about one subscriber's limit of it.
        println!("{kind:?}: respite RSS {rss_before} KiB before, {rss_after} KiB after 64 MiB");
        assert!(
            rss_after < rss_before + 24 * 1024,
            "RSS grew from {rss_before} KiB to {rss_after} KiB"
        );
        // The healthy one is still subscribed and served.
        publisher.cmd(&words("PUBLISH big after"));
        assert_eq!(
            healthy.reply().unwrap(),
            b"*3\r\n$7\r\nmessage\r\n$3\r\nbig\r\n$5\r\nafter\r\n"
        );
    }
);
