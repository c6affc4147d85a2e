//! The benchmarks' stand-in for a network hop: a TCP relay that delays every byte by the same
//! one-way time in each direction, keeps order, and adds as little of its own as it can. It is
//! shared by the `delay_relay` example (what `scripts/bench.sh` runs) and the suite's test of it
//! (tests/integration/delay_relay.rs), which holds it to those three promises.
//!
//! Each direction of a connection has a reader and a writer thread joined by a bounded queue. The
//! reader stamps each chunk with the time it may leave (arrival + delay) and the writer sleeps until
//! then: the due time is absolute, so pipelined chunks do not add their delays up (no per-chunk
//! drift), and a writer that wakes late sends everything else already due in the same `writev`.
//! Threads and blocking sockets rather than an async runtime: a timer wheel rounds to a millisecond,
//! and a thread asleep in `clock_nanosleep` wakes within microseconds once its timer slack is
//! lowered (Linux's default slack is 50 us, a fifth of the 250 us delay the benchmarks use).
#![allow(dead_code)]

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Bytes per read; a chunk's buffer goes back to its reader once written, so a steady stream
/// allocates nothing.
const CHUNK: usize = 16 * 1024;
/// Chunks in flight per direction: a receiver that stops reading back-pressures the sender through
/// TCP instead of the relay buffering without end (at most CHUNK * QUEUE = 8 MiB per direction).
const QUEUE: usize = 512;

/// A running relay; dropping it stops accepting (connections already relayed run until either side
/// closes).
pub struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Relay {
    /// Relays every connection accepted on `listener` to `target`, `delay` each way.
    pub fn start(listener: TcpListener, target: SocketAddr, delay: Duration) -> io::Result<Relay> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let accept = thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::Acquire) {
                    break;
                }
                let Ok(client) = client else { continue };
                thread::spawn(move || relay(client, target, delay));
            }
        });
        Ok(Relay {
            addr,
            stop,
            accept: Some(accept),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn relay(client: TcpStream, target: SocketAddr, delay: Duration) {
    let Ok(server) = TcpStream::connect(target) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = thread::spawn(move || pipe(client, server, delay));
    pipe(server2, client2, delay);
    let _ = up.join();
}

/// Copies `from` to `to`, each chunk leaving `delay` after it arrived.
fn pipe(mut from: TcpStream, to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::sync_channel::<(Instant, Vec<u8>, usize)>(QUEUE);
    let (back_tx, back_rx) = mpsc::channel::<Vec<u8>>();
    let Ok(from2) = from.try_clone() else { return };
    let writer = thread::spawn(move || {
        write_side(rx, back_tx, to);
        // The receiver is gone: stop reading what can no longer be delivered.
        let _ = from2.shutdown(Shutdown::Read);
    });
    loop {
        let mut buf = back_rx.try_recv().unwrap_or_else(|_| vec![0; CHUNK]);
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send((Instant::now() + delay, buf, n)).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.join();
}

fn write_side(
    rx: mpsc::Receiver<(Instant, Vec<u8>, usize)>,
    back: mpsc::Sender<Vec<u8>>,
    mut to: TcpStream,
) {
    lower_timer_slack();
    let mut held = None;
    let mut batch: Vec<(Vec<u8>, usize)> = Vec::new();
    loop {
        let (due, buf, n) = match held.take() {
            Some(chunk) => chunk,
            None => match rx.recv() {
                Ok(chunk) => chunk,
                Err(_) => break,
            },
        };
        sleep_until(due);
        batch.push((buf, n));
        let now = Instant::now();
        while let Ok((due, buf, n)) = rx.try_recv() {
            if due > now {
                held = Some((due, buf, n));
                break;
            }
            batch.push((buf, n));
        }
        if write_all(&mut to, &batch).is_err() {
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
        for (buf, _) in batch.drain(..) {
            let _ = back.send(buf);
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn write_all(to: &mut TcpStream, batch: &[(Vec<u8>, usize)]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = batch.iter().map(|(b, n)| IoSlice::new(&b[..*n])).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = to.write_vectored(rest)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

fn sleep_until(due: Instant) {
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        thread::sleep(due - now);
    }
}

#[allow(unsafe_code)]
fn lower_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and changes only this thread's timer
    // slack; no memory is passed.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}
