//! systemd readiness: under `Type=notify` (deploy/respite.service) systemd starts the units that
//! wait for respite only once it says READY=1, so that message must come after its listeners are
//! up, and STOPPING=1 when SIGTERM begins the drain. systemd's side is played here by a unix
//! datagram socket named by NOTIFY_SOCKET, as systemd passes it.
use crate::support::{Raw, Reaped, free_port, signal, words};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

fn receive(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn ready_is_sent_once_the_listeners_are_up_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let systemd = UnixDatagram::bind(&path).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let respite = Reaped(
        std::process::Command::new(env!("CARGO_BIN_EXE_respite"))
            .args(["--upstream", "none"])
            .args(["--listen", &addr.to_string()])
            .args(["--admin", &admin.to_string()])
            .env("NOTIFY_SOCKET", &path)
            .spawn()
            .unwrap(),
    );
    assert_eq!(receive(&systemd), "READY=1\n");
    // At that moment, not a retry later: both listeners accept and clients are answered.
    TcpStream::connect(admin).expect("the admin port is up at READY=1");
    assert_eq!(Raw::connect(addr).cmd(&words("PING")), b"+PONG\r\n");
    signal(respite.0.id(), "TERM");
    assert_eq!(receive(&systemd), "STOPPING=1\n");
}

/// The shipped unit waits for READY=1. (Without NOTIFY_SOCKET, outside systemd, nothing is sent
/// and nothing fails: every other test starts the binary so.)
#[test]
fn the_unit_waits_for_readiness() {
    let unit = crate::deploy::read("deploy/respite.service");
    assert!(
        unit.lines().any(|l| l == "Type=notify"),
        "Type=notify in deploy/respite.service"
    );
    assert!(!unit.contains("Type=exec"));
}
