//! `delay_relay LISTEN TARGET DELAY_US`: relays TCP connections accepted on LISTEN (host:port) to
//! TARGET, DELAY_US microseconds each way, until killed. What `scripts/bench.sh` puts between a
//! proxy (or a client) and redis-server to stand in for an upstream across a network; see relay.rs.
mod relay;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, target, delay] = args.as_slice() else {
        eprintln!("usage: delay_relay LISTEN_HOST:PORT TARGET_HOST:PORT DELAY_US");
        std::process::exit(2);
    };
    let target: SocketAddr = target.parse().expect("TARGET is host:port");
    let delay = Duration::from_micros(delay.parse().expect("DELAY_US is a number"));
    let listener = TcpListener::bind(listen).expect("bind LISTEN");
    let _relay = relay::Relay::start(listener, target, delay).expect("start relay");
    loop {
        std::thread::park();
    }
}
