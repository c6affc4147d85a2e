//! The benchmarks' delay relay (examples/delay_relay) keeps its three promises: every byte arrives,
//! in order; each arrives no sooner than the delay after it was sent; and pipelined chunks do not
//! add their delays up (a burst of 200 writes comes back about one delay after its last write, not
//! 200 delays). Plain std sockets and an echo server: no upstream involved.
#[path = "../../examples/delay_relay/relay.rs"]
mod relay;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// The relay's delay each way; an echo crosses it twice.
const DELAY: Duration = Duration::from_millis(20);
/// How late a byte may arrive on this shared, loaded machine and still count as on time. The
/// drift check is what it guards: 200 chunks whose delays added up would take 8 s.
const TOLERANCE: Duration = Duration::from_millis(400);

fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 8192];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    addr
}

#[test]
fn delays_every_byte_once_in_order_without_drift() {
    let target = echo_server();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let relay = relay::Relay::start(listener, target, DELAY).unwrap();
    let mut client = TcpStream::connect(relay.addr()).unwrap();
    client.set_nodelay(true).unwrap();

    // 200 chunks of 1..=997 bytes, each byte a function of its offset, written back to back.
    let chunks: Vec<usize> = (0..200).map(|i| 1 + (i * 389) % 997).collect();
    let total: usize = chunks.iter().sum();
    let sent: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
    let mut reader = client.try_clone().unwrap();
    let mut sent_at = Vec::new();
    let writer = {
        let sent = sent.clone();
        let chunks = chunks.clone();
        thread::spawn(move || {
            let mut at = Vec::new();
            let mut off = 0;
            for len in chunks {
                at.push(Instant::now());
                client.write_all(&sent[off..off + len]).unwrap();
                off += len;
            }
            (client, at)
        })
    };
    // When each chunk's last byte came back.
    let mut ends = Vec::new();
    let mut got = Vec::with_capacity(total);
    let mut next_end = chunks[0];
    let mut buf = [0u8; 16384];
    reader
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    while got.len() < total {
        let n = reader.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "the relay closed after {} of {total} bytes",
            got.len()
        );
        got.extend_from_slice(&buf[..n]);
        let now = Instant::now();
        while ends.len() < chunks.len() && got.len() >= next_end {
            ends.push(now);
            if ends.len() < chunks.len() {
                next_end += chunks[ends.len()];
            }
        }
    }
    let (_client, at) = writer.join().unwrap();
    sent_at.extend(at);

    assert!(got == sent, "bytes lost, added or reordered");
    for (i, (sent, back)) in sent_at.iter().zip(&ends).enumerate() {
        let took = back.duration_since(*sent);
        assert!(
            took >= 2 * DELAY,
            "chunk {i} came back after {took:?}, under the {:?} round trip",
            2 * DELAY
        );
    }
    let last = ends
        .last()
        .unwrap()
        .duration_since(*sent_at.last().unwrap());
    assert!(
        last <= 2 * DELAY + TOLERANCE,
        "the last chunk came back {last:?} after it was sent: delays add up across chunks"
    );
    let whole = ends.last().unwrap().duration_since(sent_at[0]);
    assert!(
        whole <= 2 * DELAY + TOLERANCE,
        "200 pipelined chunks took {whole:?}"
    );
}
