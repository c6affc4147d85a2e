//! A fault-injecting TCP relay: it sits between respite and a real upstream server on loopback and,
//! on command, delays, holds, swallows or cuts the bytes of every connection or of one.
//!
//! Controls on [`Relay`] act relay-wide (on every connection, present and future); controls on
//! [`Relay::conn`] act on one connection, numbered from 0 in accept order. Both levels add up: a
//! connection is paused when the relay or the connection is paused, delayed by the larger delay,
//! blackholed when either is. [`Relay::heal`] lifts everything.
//!
//! Each connection has two directions, each with a reader and a writer task joined by a bounded
//! queue: the reader stamps each chunk with the time it may leave (now + delay), the writer waits
//! for that time and then decides, at the last moment, whether to forward, hold (paused), swallow
//! (blackholed) or forward part and cut. So order is always preserved, and faults apply to bytes
//! already queued when the fault is set.
//!
//! It runs on its own single-threaded tokio runtime in a background thread; dropping the [`Relay`]
//! stops that runtime, which closes every socket it holds.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Which way bytes travel through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client (respite) to the upstream server: commands.
    ToUpstream,
    /// From the upstream server to the client: replies and pushes.
    ToClient,
    Both,
}

const UP: usize = 0;
const DOWN: usize = 1;

impl Direction {
    fn indices(self) -> &'static [usize] {
        match self {
            Direction::ToUpstream => &[UP],
            Direction::ToClient => &[DOWN],
            Direction::Both => &[UP, DOWN],
        }
    }
}

/// Faults set at one level (relay-wide or one connection), indexed by direction.
#[derive(Debug, Default, Clone, Copy)]
struct Faults {
    delay: [Duration; 2],
    paused: [bool; 2],
    blackhole: bool,
}

struct ConnEntry {
    faults: Faults,
    /// Bytes still to forward in each direction before the connection is cut.
    cut_after: [Option<u64>; 2],
    /// Bytes still to forward in each direction before that direction pauses.
    pause_after: [Option<u64>; 2],
    forwarded: [u64; 2],
    /// Connected to the upstream and relaying.
    open: bool,
    kill: CancellationToken,
}

struct State {
    global: Faults,
    refuse_new: bool,
    accepted: usize,
    refused: usize,
    forwarded: [u64; 2],
    conns: Vec<ConnEntry>,
}

struct Shared {
    state: Mutex<State>,
    /// Bumped on every control change, so writers holding bytes look again.
    changed: watch::Sender<()>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let r = f(&mut self.lock());
        self.changed.send_replace(());
        r
    }
}

/// What one relayed connection looks like now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    pub id: usize,
    /// Connected to the upstream and relaying (false before that and after it closed).
    pub open: bool,
    pub to_upstream: u64,
    pub to_client: u64,
}

/// A relay on `127.0.0.1:<ephemeral>` in front of one upstream address.
pub struct Relay {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// Listen on 127.0.0.1:0 and relay every accepted connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                global: Faults::default(),
                refuse_new: false,
                accepted: 0,
                refused: 0,
                forwarded: [0; 2],
                conns: Vec::new(),
            }),
            changed: watch::channel(()).0,
        });
        let stop = CancellationToken::new();
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("relay-{}", addr.port()))
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    // Returning drops the runtime, and with it every connection task and socket.
                    rt.block_on(async move {
                        let listener = TcpListener::from_std(listener).unwrap();
                        accept_loop(listener, upstream, shared, stop).await;
                    });
                })
                .unwrap()
        };
        Relay {
            addr,
            upstream,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    /// A relay in front of a harness server.
    pub fn to(server: &crate::support::Server) -> Relay {
        Relay::start(SocketAddr::from(([127, 0, 0, 1], server.port)))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    fn all(&self) -> Control<'_> {
        Control {
            shared: &self.shared,
            target: None,
        }
    }

    /// One connection's controls (ids from 0, in accept order; refused connections get none).
    pub fn conn(&self, id: usize) -> Control<'_> {
        assert!(
            id < self.shared.lock().conns.len(),
            "relay connection {id} does not exist"
        );
        Control {
            shared: &self.shared,
            target: Some(id),
        }
    }

    /// Forward every chunk in `dir` only once `d` has passed since it was read (order preserved).
    pub fn delay(&self, dir: Direction, d: Duration) {
        self.all().delay(dir, d)
    }

    /// Hold the bytes going `dir` (still reading them) until [`Relay::resume`].
    pub fn pause(&self, dir: Direction) {
        self.all().pause(dir)
    }

    /// Release what [`Relay::pause`] held, in order.
    pub fn resume(&self, dir: Direction) {
        self.all().resume(dir)
    }

    /// A silent partition: swallow every byte both ways, and send no FIN (a close seen on one side
    /// is held until [`Relay::heal`]). Swallowed bytes are gone for good.
    pub fn blackhole(&self) {
        self.all().blackhole()
    }

    /// Lift every fault, relay-wide and per connection: blackhole, pauses (releasing held bytes),
    /// delays, armed cuts and `refuse_new`.
    pub fn heal(&self) {
        self.shared.update(|s| {
            s.global = Faults::default();
            s.refuse_new = false;
            for c in &mut s.conns {
                c.faults = Faults::default();
                c.cut_after = [None; 2];
            }
        })
    }

    /// Close every open connection, both sides (FIN, or RST where unread bytes remain).
    pub fn cut(&self) {
        self.all().cut()
    }

    /// On every open connection: forward exactly `n` more bytes going `dir` (in each direction,
    /// for `Both`), then close it. Connections accepted later are not armed.
    pub fn cut_after(&self, dir: Direction, n: u64) {
        self.all().cut_after(dir, n)
    }

    /// While on, accept new connections and close them at once (an upstream that flaps).
    pub fn refuse_new(&self, on: bool) {
        self.shared.update(|s| s.refuse_new = on)
    }

    /// Every connection relayed so far, open or closed, in accept order.
    pub fn connections(&self) -> Vec<ConnInfo> {
        let s = self.shared.lock();
        (0..s.conns.len()).map(|id| info(&s, id)).collect()
    }

    /// The connections open now.
    pub fn open_connections(&self) -> Vec<ConnInfo> {
        self.connections().into_iter().filter(|c| c.open).collect()
    }

    /// Wait until at least `n` connections are open (relaying), and return the open ones.
    pub fn wait_connections(&self, n: usize, limit: Duration) -> Vec<ConnInfo> {
        crate::support::wait_until(limit, || self.open_connections().len() >= n).unwrap_or_else(
            || {
                panic!(
                    "relay: {n} open connections not reached within {limit:?}: {:?}",
                    self.connections()
                )
            },
        );
        self.open_connections()
    }

    /// TCP connections accepted, refused ones included: respite's connection attempts.
    pub fn accepted(&self) -> usize {
        self.shared.lock().accepted
    }

    /// Connections accepted and closed at once because of [`Relay::refuse_new`].
    pub fn refused(&self) -> usize {
        self.shared.lock().refused
    }

    /// Bytes forwarded going `dir`, over all connections (`Both`: the sum).
    pub fn forwarded(&self, dir: Direction) -> u64 {
        let s = self.shared.lock();
        dir.indices().iter().map(|&i| s.forwarded[i]).sum()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn info(s: &State, id: usize) -> ConnInfo {
    let c = &s.conns[id];
    ConnInfo {
        id,
        open: c.open,
        to_upstream: c.forwarded[UP],
        to_client: c.forwarded[DOWN],
    }
}

/// Controls over the whole relay (`target: None`) or one connection.
pub struct Control<'a> {
    shared: &'a Shared,
    target: Option<usize>,
}

impl Control<'_> {
    fn faults(&self, f: impl Fn(&mut Faults)) {
        self.shared.update(|s| match self.target {
            None => f(&mut s.global),
            Some(id) => f(&mut s.conns[id].faults),
        })
    }

    fn each_conn(&self, f: impl Fn(&mut ConnEntry)) {
        self.shared.update(|s| match self.target {
            None => s.conns.iter_mut().filter(|c| c.open).for_each(f),
            Some(id) => f(&mut s.conns[id]),
        })
    }

    pub fn delay(&self, dir: Direction, d: Duration) {
        self.faults(|f| dir.indices().iter().for_each(|&i| f.delay[i] = d))
    }

    pub fn pause(&self, dir: Direction) {
        self.faults(|f| dir.indices().iter().for_each(|&i| f.paused[i] = true))
    }

    pub fn resume(&self, dir: Direction) {
        self.faults(|f| dir.indices().iter().for_each(|&i| f.paused[i] = false))
    }

    pub fn blackhole(&self) {
        self.faults(|f| f.blackhole = true)
    }

    /// Lift this level's faults (for one connection: its own faults and armed cuts).
    pub fn heal(&self) {
        self.faults(|f| *f = Faults::default());
        if self.target.is_some() {
            self.each_conn(|c| {
                c.cut_after = [None; 2];
                c.pause_after = [None; 2];
            });
        }
    }

    pub fn cut(&self) {
        self.each_conn(|c| c.kill.cancel())
    }

    pub fn cut_after(&self, dir: Direction, n: u64) {
        if n == 0 {
            return self.cut();
        }
        self.each_conn(|c| dir.indices().iter().for_each(|&i| c.cut_after[i] = Some(n)))
    }

    /// Forward `n` more bytes in `dir` (splitting a chunk if need be), then pause that direction
    /// of this connection until [`Control::resume`] (one connection only).
    pub fn pause_after(&self, dir: Direction, n: u64) {
        assert!(self.target.is_some(), "pause_after acts on one connection");
        self.each_conn(|c| {
            dir.indices()
                .iter()
                .for_each(|&i| c.pause_after[i] = Some(n))
        })
    }

    /// This connection now (panics on the relay-wide control).
    pub fn info(&self) -> ConnInfo {
        info(&self.shared.lock(), self.target.expect("a connection"))
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    loop {
        let client = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => {
                    // Out of file descriptors or similar: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let refuse = shared.update(|s| {
            s.accepted += 1;
            s.refused += s.refuse_new as usize;
            s.refuse_new
        });
        if refuse {
            drop(client);
            continue;
        }
        let kill = stop.child_token();
        // The id is taken at accept, so connections are numbered in accept order.
        let id = shared.update(|s| {
            s.conns.push(ConnEntry {
                faults: Faults::default(),
                cut_after: [None; 2],
                pause_after: [None; 2],
                forwarded: [0; 2],
                open: false,
                kill: kill.clone(),
            });
            s.conns.len() - 1
        });
        tokio::spawn(serve_conn(id, client, upstream, shared.clone(), kill));
    }
}

async fn serve_conn(
    id: usize,
    client: TcpStream,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    kill: CancellationToken,
) {
    // An upstream that cannot be reached closes the client at once, as a refused connect would.
    let connect = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(upstream));
    let server = tokio::select! {
        _ = kill.cancelled() => None,
        r = connect => r.ok().and_then(Result::ok),
    };
    if let Some(server) = server {
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        shared.update(|s| s.conns[id].open = true);
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        let link = Link {
            id,
            shared: &shared,
            kill: &kill,
        };
        tokio::select! {
            _ = kill.cancelled() => {}
            _ = async { tokio::join!(link.pump(cr, sw, UP), link.pump(sr, cw, DOWN)) } => {}
        }
    }
    // The sockets drop here (or with the runtime): both sides see the close.
    shared.update(|s| s.conns[id].open = false);
}

enum Chunk {
    Data(Bytes),
    Eof,
}

/// What the writer does with the chunk at the head of its queue, decided under the lock.
enum Verdict {
    Hold,
    Swallow,
    /// Write the first `n` bytes; then cut the connection if `cut`.
    Forward {
        n: usize,
        cut: bool,
    },
    /// Pass the close on (FIN).
    Close,
}

struct Link<'a> {
    id: usize,
    shared: &'a Shared,
    kill: &'a CancellationToken,
}

impl Link<'_> {
    fn delay(&self, dir: usize) -> Duration {
        let s = self.shared.lock();
        s.global.delay[dir].max(s.conns[self.id].faults.delay[dir])
    }

    fn verdict(&self, dir: usize, chunk: &Chunk) -> Verdict {
        let mut s = self.shared.lock();
        let global = s.global;
        let c = &mut s.conns[self.id];
        let blackhole = global.blackhole || c.faults.blackhole;
        let paused = global.paused[dir] || c.faults.paused[dir];
        match chunk {
            Chunk::Eof if blackhole || paused => Verdict::Hold,
            Chunk::Eof => Verdict::Close,
            Chunk::Data(_) if blackhole => Verdict::Swallow,
            Chunk::Data(_) if paused => Verdict::Hold,
            Chunk::Data(d) if c.pause_after[dir].is_some() => {
                let left = c.pause_after[dir].unwrap_or(0);
                if left == 0 {
                    c.pause_after[dir] = None;
                    c.faults.paused[dir] = true;
                    Verdict::Hold
                } else {
                    let n = left.min(d.len() as u64);
                    c.pause_after[dir] = Some(left - n);
                    Verdict::Forward {
                        n: n as usize,
                        cut: false,
                    }
                }
            }
            Chunk::Data(d) => match c.cut_after[dir] {
                Some(left) if left <= d.len() as u64 => {
                    c.cut_after[dir] = Some(0);
                    Verdict::Forward {
                        n: left as usize,
                        cut: true,
                    }
                }
                Some(left) => {
                    c.cut_after[dir] = Some(left - d.len() as u64);
                    Verdict::Forward {
                        n: d.len(),
                        cut: false,
                    }
                }
                None => Verdict::Forward {
                    n: d.len(),
                    cut: false,
                },
            },
        }
    }

    fn count(&self, dir: usize, n: usize) {
        let mut s = self.shared.lock();
        s.forwarded[dir] += n as u64;
        s.conns[self.id].forwarded[dir] += n as u64;
    }

    /// Relay one direction until its source closes (then FIN the destination) or the connection
    /// is cut.
    async fn pump(&self, mut from: OwnedReadHalf, mut to: OwnedWriteHalf, dir: usize) {
        // Bounded: 64 chunks of at most 64 KiB; past it the reader stops and TCP pushes back.
        let (tx, mut rx) = mpsc::channel::<(Instant, Chunk)>(64);
        let read = async {
            let mut buf = BytesMut::new();
            loop {
                buf.reserve(64 * 1024);
                let chunk = match from.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => Chunk::Eof,
                    Ok(_) => Chunk::Data(buf.split().freeze()),
                };
                let eof = matches!(chunk, Chunk::Eof);
                let at = Instant::now() + self.delay(dir);
                if tx.send((at, chunk)).await.is_err() || eof {
                    return;
                }
            }
        };
        let write = async {
            let mut changed = self.shared.changed.subscribe();
            while let Some((at, mut chunk)) = rx.recv().await {
                tokio::time::sleep_until(at).await;
                loop {
                    changed.borrow_and_update();
                    match self.verdict(dir, &chunk) {
                        Verdict::Hold => {
                            if changed.changed().await.is_err() {
                                return;
                            }
                        }
                        Verdict::Swallow => break,
                        Verdict::Close => {
                            let _ = to.shutdown().await;
                            return;
                        }
                        Verdict::Forward { n, cut } => {
                            let Chunk::Data(d) = &chunk else {
                                unreachable!()
                            };
                            // Counted first, so a peer that has read the bytes finds them counted.
                            self.count(dir, n);
                            if to.write_all(&d[..n]).await.is_err() {
                                self.kill.cancel();
                                return;
                            }
                            if cut {
                                self.kill.cancel();
                                return;
                            }
                            if n < d.len() {
                                // Part of the chunk went (pause_after): the rest waits its turn.
                                chunk = Chunk::Data(d.slice(n..));
                                continue;
                            }
                            break;
                        }
                    }
                }
            }
        };
        tokio::join!(read, write);
    }
}

#[cfg(test)]
mod tests {
    //! The relay against a real redis-server: each fault does what it says.
    use super::*;
    use crate::support::{Kind, Raw, Server, bulk, encode, wait_until, words};
    use std::io::Read;
    use std::time::Instant;

    /// True when nothing arrives on `raw` for `d` (and nothing was buffered).
    fn silent_for(raw: &mut Raw, d: Duration) -> bool {
        raw.stream.set_read_timeout(Some(d)).unwrap();
        let mut b = [0u8; 1];
        let silent = matches!(raw.stream.read(&mut b), Err(e)
            if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
        raw.stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        silent
    }

    #[test]
    fn forwards_counts_and_stops_when_dropped() {
        let server = Server::start(Kind::Redis);
        let relay = Relay::to(&server);
        let mut c = Raw::connect(relay.addr());
        assert_eq!(c.cmd(&words("PING")), b"+PONG\r\n");
        assert_eq!(relay.forwarded(Direction::ToUpstream), 14);
        assert_eq!(relay.forwarded(Direction::ToClient), 7);
        assert_eq!(relay.accepted(), 1);
        let conns = relay.wait_connections(1, Duration::from_secs(5));
        assert_eq!(
            conns,
            vec![ConnInfo {
                id: 0,
                open: true,
                to_upstream: 14,
                to_client: 7
            }]
        );
        let addr = relay.addr();
        drop(relay);
        assert!(c.closed(), "dropping the relay closes its connections");
        assert!(std::net::TcpStream::connect(addr).is_err(), "and its port");
    }

    #[test]
    fn delay_delays_each_direction_in_order() {
        let server = Server::start(Kind::Redis);
        let relay = Relay::to(&server);
        let mut c = Raw::connect(relay.addr());
        assert_eq!(c.cmd(&words("PING")), b"+PONG\r\n");
        relay.delay(Direction::ToClient, Duration::from_millis(300));
        let t = Instant::now();
        assert_eq!(c.cmd(&words("PING")), b"+PONG\r\n");
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
        relay.delay(Direction::ToUpstream, Duration::from_millis(200));
        let t = Instant::now();
        assert_eq!(c.cmd(&words("PING")), b"+PONG\r\n");
        assert!(
            t.elapsed() >= Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        // Commands sent one by one (separate chunks) while delayed: replies come back in order.
        for i in 0..20 {
            c.send(&encode(&[
                b"SET",
                format!("k{i}").as_bytes(),
                format!("v{i}").as_bytes(),
            ]));
            c.send(&encode(&[b"GET", format!("k{i}").as_bytes()]));
        }
        for i in 0..20 {
            assert_eq!(c.reply().unwrap(), b"+OK\r\n");
            assert_eq!(c.reply().unwrap(), bulk(format!("v{i}")));
        }
        relay.delay(Direction::Both, Duration::ZERO);
        let t = Instant::now();
        assert_eq!(c.cmd(&words("PING")), b"+PONG\r\n");
        assert!(
            t.elapsed() < Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn pause_holds_then_releases_in_order_per_connection() {
        let server = Server::start(Kind::Redis);
        let relay = Relay::to(&server);
        let mut a = Raw::connect(relay.addr());
        let mut b = Raw::connect(relay.addr());
        assert_eq!(a.cmd(&words("PING")), b"+PONG\r\n");
        assert_eq!(b.cmd(&words("PING")), b"+PONG\r\n");
        relay.conn(0).pause(Direction::ToClient);
        for i in 0..50 {
            a.send(&encode(&[
                b"SET",
                format!("p{i}").as_bytes(),
                format!("v{i}").as_bytes(),
            ]));
        }
        // The commands reach the server (only replies are held) ...
        wait_until(Duration::from_secs(5), || {
            server.raw().cmd(&words("GET p49")) == bulk("v49")
        })
        .expect("paused replies, not commands");
        // ... the replies stay in the relay, and the other connection is unaffected.
        assert!(silent_for(&mut a, Duration::from_millis(200)));
        assert_eq!(b.cmd(&words("GET p0")), bulk("v0"));
        a.send(&encode(&[b"GET", b"p7"]));
        relay.conn(0).resume(Direction::ToClient);
        for _ in 0..50 {
            assert_eq!(a.reply().unwrap(), b"+OK\r\n");
        }
        assert_eq!(a.reply().unwrap(), bulk("v7"));
        // Pausing commands holds them before the server: nothing runs until resume.
        relay.pause(Direction::ToUpstream);
        a.send(&encode(&[b"SET", b"held", b"1"]));
        assert!(silent_for(&mut a, Duration::from_millis(200)));
        assert_eq!(server.raw().cmd(&words("EXISTS held")), b":0\r\n");
        relay.resume(Direction::Both);
        assert_eq!(a.reply().unwrap(), b"+OK\r\n");
    }

    #[test]
    fn blackhole_swallows_without_closing_and_heal_restores() {
        let server = Server::start(Kind::Redis);
        let relay = Relay::to(&server);
        let mut c = Raw::connect(relay.addr());
        assert_eq!(c.cmd(&words("PING")), b"+PONG\r\n");
        relay.blackhole();
        c.send(&encode(&[b"SET", b"lost", b"1"]));
        assert!(silent_for(&mut c, Duration::from_millis(300)));
        assert_eq!(server.raw().cmd(&words("EXISTS lost")), b":0\r\n");
        // New connections are swallowed too, but not closed.
        let mut d = Raw::connect(relay.addr());
        d.send(&encode(&[b"PING"]));
        assert!(silent_for(&mut d, Duration::from_millis(100)));
        relay.heal();
        // What was swallowed is gone for good: the next command gets exactly its own reply.
        assert_eq!(c.cmd(&words("ECHO after")), bulk("after"));
        assert_eq!(server.raw().cmd(&words("EXISTS lost")), b":0\r\n");
        assert_eq!(d.cmd(&words("ECHO d")), bulk("d"));
    }

    #[test]
    fn cut_closes_both_sides_and_cut_after_forwards_exactly_n() {
        let server = Server::start(Kind::Redis);
        let relay = Relay::to(&server);
        let clients = |s: &Server| {
            let info = String::from_utf8(s.raw().cmd(&words("INFO clients"))).unwrap();
            info.lines()
                .find_map(|l| l.strip_prefix("connected_clients:"))
                .and_then(|v| v.trim().parse::<u32>().ok())
                .unwrap()
        };
        let mut c = Raw::connect(relay.addr());
        assert_eq!(c.cmd(&words("PING")), b"+PONG\r\n");
        // The server sees this client plus the INFO connection (once earlier probes have gone).
        wait_until(Duration::from_secs(5), || clients(&server) == 2).expect("two clients");
        relay.cut();
        assert!(c.closed());
        wait_until(Duration::from_secs(5), || clients(&server) == 1)
            .expect("the server saw the close");
        wait_until(Duration::from_secs(5), || !relay.connections()[0].open).unwrap();

        let value = "x".repeat(100_000);
        assert_eq!(
            server.raw().cmd(&[b"SET", b"big", value.as_bytes()]),
            b"+OK\r\n"
        );
        let mut c = Raw::connect(relay.addr());
        relay.wait_connections(1, Duration::from_secs(5));
        relay.cut_after(Direction::ToClient, 1000);
        c.send(&encode(&[b"GET", b"big"]));
        let mut got = Vec::new();
        c.stream.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), 1000);
        assert!(got.starts_with(b"$100000\r\nxxx"));
        assert_eq!(relay.conn(1).info().to_client, 1000);
    }

    #[test]
    fn refuse_new_closes_new_connections_only() {
        let server = Server::start(Kind::Redis);
        let relay = Relay::to(&server);
        let mut old = Raw::connect(relay.addr());
        assert_eq!(old.cmd(&words("PING")), b"+PONG\r\n");
        relay.refuse_new(true);
        for _ in 0..3 {
            let mut c = Raw::connect(relay.addr());
            assert!(c.closed());
        }
        assert_eq!(old.cmd(&words("PING")), b"+PONG\r\n");
        relay.refuse_new(false);
        let mut c = Raw::connect(relay.addr());
        assert_eq!(c.cmd(&words("PING")), b"+PONG\r\n");
        assert_eq!((relay.accepted(), relay.refused()), (5, 3));
        assert_eq!(relay.connections().len(), 2);
    }
}
