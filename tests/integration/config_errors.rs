//! Configuration as an operator meets it through the real binary: secrets never printed or
//! logged, every error blaming its true source (file line, variable, flag), listeners that name
//! themselves when they cannot bind, and the unix socket's mode and group.
use crate::support::{Kind, Raw, Server, free_port, http_get, wait_until, words};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

fn respite_bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_respite"));
    // Only what a test sets: an inherited RESPITE_* variable would be (rightly) refused.
    c.env_clear();
    c
}

/// The binary with every line it writes captured (the harness's process guards do not read
/// output), killed by its PID if the test ends before it exits.
struct Logged {
    child: Child,
    readers: Vec<std::thread::JoinHandle<String>>,
}

impl Logged {
    fn spawn(cmd: &mut Command) -> Logged {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read both streams while it runs, so a full pipe never blocks its logging.
        let read = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = r.read_to_string(&mut text);
                text
            })
        };
        let readers = vec![
            read(Box::new(child.stdout.take().unwrap())),
            read(Box::new(child.stderr.take().unwrap())),
        ];
        Logged { child, readers }
    }

    /// Wait for a clean exit; everything it wrote to stdout and stderr.
    fn wait_for_logs(&mut self) -> String {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
        self.readers.drain(..).map(|r| r.join().unwrap()).collect()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// The upstream's password holds an `@`, written `%40` in the URL: percent-decoded, it must still
// let respite in, and neither spelling may ever be printed.
const UPSTREAM_PW: &str = "up@pw-7f3kq";
const UPSTREAM_PW_URL: &str = "up%40pw-7f3kq";
const TENANT_PW: &str = "tenant-pw-9x2qz";

#[test]
fn secrets_never_appear_in_check_output_or_logs() {
    let server = Server::start_with(Kind::Redis, &["--requirepass", UPSTREAM_PW]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    std::fs::write(
        &file,
        format!(
            "[upstream]\nurl = \"redis://:{UPSTREAM_PW_URL}@127.0.0.1:{}\"\n\n\
             [[tenant]]\nname = \"app\"\nusername = \"alice\"\npassword = \"{TENANT_PW}\"\n\
             prefix = \"app:\"\nallow = [\"@all\"]\n",
            server.port
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let secrets = [UPSTREAM_PW, UPSTREAM_PW_URL, TENANT_PW];
    let assert_clean = |what: &str, text: &str| {
        for s in secrets {
            assert!(!text.contains(s), "{what} shows a password:\n{text}");
        }
    };

    let check = respite_bin()
        .args(["--config", file, "--check-config"])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", stderr(&check));
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        stderr(&check)
    );
    assert!(shown.contains("<redacted>"), "{shown}");
    assert_clean("--check-config", &shown);
    // The same URL from the environment, with a mistake in it: the error shows it redacted.
    let bad = respite_bin()
        .args(["--check-config"])
        .env(
            "REDIS_URL",
            format!("redis://u:{UPSTREAM_PW_URL}@127.0.0.1:notaport"),
        )
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("REDIS_URL"), "{}", stderr(&bad));
    assert_clean("a URL error", &stderr(&bad));

    // Run it at the most verbose level: connect upstream with the password, let a tenant
    // authenticate (and fail once), lose the upstream, drain. Every log line is read.
    let port = free_port();
    let admin = free_port();
    let mut child = Logged::spawn(
        respite_bin()
            .args(["--config", file, "--log-level", "trace"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin", &format!("127.0.0.1:{admin}")]),
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(addr).is_ok()
    })
    .expect("listening");
    let mut c = Raw::connect(addr);
    assert!(c.cmd(&words("AUTH alice wrong")).starts_with(b"-WRONGPASS"));
    let auth: [&[u8]; 3] = [b"AUTH", b"alice", TENANT_PW.as_bytes()];
    assert_eq!(c.cmd(&auth), b"+OK\r\n");
    wait_until(Duration::from_secs(5), || {
        c.cmd(&words("SET k v")) == b"+OK\r\n"
    })
    .expect("the upstream accepted respite's decoded password");
    let mut server = server;
    server.kill();
    // Noticed as unreachable (no live connection), then down (local-only mode): either way
    // /readyz no longer answers a plain "ready", and the outage's log lines are written.
    wait_until(Duration::from_secs(10), || {
        http_get(("127.0.0.1", admin), "/readyz").1 != "ready\n"
    })
    .expect("the outage was noticed");
    let ok = Command::new("kill")
        .args(["-TERM", &child.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    drop(c);
    let logs = child.wait_for_logs();
    assert!(logs.lines().count() > 5, "trace logging ran:\n{logs}");
    assert_clean("the log", &logs);
}

#[test]
fn errors_name_the_flag_the_variable_or_the_line() {
    let run = |args: &[&str], env: &[(&str, &str)]| -> String {
        let out = respite_bin()
            .arg("--check-config")
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        stderr(&out)
    };
    let e = run(&["--set", "limits.max_args=lots"], &[]);
    assert!(
        e.contains("command line flag --set limits.max_args:"),
        "{e}"
    );
    let e = run(&[], &[("RESPITE_UPSTREAM_CONNECTIONS", "0")]);
    assert!(
        e.contains("environment variable RESPITE_UPSTREAM_CONNECTIONS:")
            && e.contains("upstream.connections"),
        "{e}"
    );
    let e = run(&[], &[("RESPITE_UPSTRAEM_URL", "redis://127.0.0.1:1")]);
    assert!(e.contains("RESPITE_UPSTRAEM_URL"), "{e}");
    let e = run(&["--log-level", "verbose"], &[]);
    assert!(
        e.contains("command line flag --log-level") && e.contains("verbose"),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    std::fs::write(
        &file,
        "[listen]\nmax_clients = 10\n\n[upstreem]\nurl = \"x\"\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    // The file's mistake is the file's, even with overrides present.
    let e = run(&["--config", file, "--set", "limits.max_args=5"], &[]);
    assert!(
        e.contains(&format!("{file} line 4")) && e.contains("upstreem"),
        "{e}"
    );
}

#[test]
fn bind_errors_name_the_listener_and_its_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let free = format!("127.0.0.1:{}", free_port());
    for (listen, admin, which) in [(&busy, &free, "tcp"), (&free, &busy, "admin")] {
        let out = respite_bin()
            .args(["--listen", listen, "--admin", admin, "--upstream", "none"])
            .output()
            .unwrap();
        let e = stderr(&out);
        assert!(!out.status.success(), "{e}");
        assert!(
            e.contains(&format!("{which} listener {busy}")) && e.contains("in use"),
            "{e}"
        );
    }
}

/// With JSON logs, a listener that cannot bind is one JSON line like every other, at ERROR.
#[test]
fn a_port_in_use_is_reported_in_the_log_format() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let out = respite_bin()
        .args([
            "--listen",
            &busy,
            "--admin",
            "none",
            "--set",
            "log.format=json",
        ])
        .output()
        .unwrap();
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    let lines: Vec<serde_json::Value> = e
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let last = lines.last().expect("a log line");
    assert_eq!(last["level"], "ERROR", "{e}");
    let error = last["fields"]["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("tcp listener {busy}")) && error.contains("in use"),
        "{e}"
    );
}

/// `--check-config` prints the effective configuration as TOML: defaults filled in, the
/// environment and flags applied, passwords redacted; fed back as a file it prints the same.
/// A reader that stops early (`| head -1`) is no error.
#[test]
fn check_config_prints_the_effective_configuration_as_toml() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    std::fs::write(
        &file,
        format!(
            "[upstream]\nurl = \"redis://u:{UPSTREAM_PW_URL}@127.0.0.1:6379/2\"\n\n\
             [[tenant]]\nname = \"web\"\nusername = \"web\"\npassword = \"{TENANT_PW}\"\nprefix = \"web:\"\n\
             allow = [\"@all\"]\n"
        ),
    )
    .unwrap();
    let check = |file: &std::path::Path| {
        let out = respite_bin()
            .args(["--config", file.to_str().unwrap(), "--check-config"])
            .args(["--set", "near_cache.enabled=true"])
            .env("RESPITE_LIMITS_MAX_ARGS", "12")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let shown = check(&file);
    for secret in [UPSTREAM_PW, UPSTREAM_PW_URL, TENANT_PW] {
        assert!(!shown.contains(secret), "{shown}");
    }
    let toml: toml::Table = shown.parse().unwrap_or_else(|e| panic!("{e}\n{shown}"));
    assert_eq!(toml["limits"]["max_args"].as_integer(), Some(12), "{shown}");
    assert_eq!(toml["near_cache"]["enabled"].as_bool(), Some(true));
    assert_eq!(toml["upstream"]["connections"].as_integer(), Some(2));
    assert_eq!(
        toml["upstream"]["url"].as_str(),
        Some("redis://u:<redacted>@127.0.0.1:6379/2")
    );
    assert_eq!(toml["tenant"][0]["password"].as_str(), Some("<redacted>"));
    let again = dir.path().join("effective.toml");
    std::fs::write(&again, &shown).unwrap();
    assert_eq!(check(&again), shown);

    // `| head -1`: the reading end is closed before respite writes.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = respite_bin()
        .arg("--check-config")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

/// URLs the URL standard refuses, port 0, and an upstream that is respite's own listener are
/// configuration errors naming the key and where it was set.
#[test]
fn bad_upstream_urls_are_configuration_errors() {
    let run = |args: &[&str], env: &[(&str, &str)]| -> String {
        let out = respite_bin()
            .arg("--check-config")
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        stderr(&out)
    };
    let e = run(&["--upstream", "redis://bad host:6379"], &[]);
    assert!(
        e.contains("command line flag --upstream: invalid value for `upstream.url`"),
        "{e}"
    );
    let e = run(&[], &[("REDIS_URL", "redis://127.0.0.1:0")]);
    assert!(e.contains("REDIS_URL") && e.contains("port 0"), "{e}");
    let port = free_port();
    let e = run(
        &["--listen", &format!("0.0.0.0:{port}")],
        &[(
            "REDIS_URL",
            &format!("redis://u:{UPSTREAM_PW_URL}@localhost:{port}"),
        )],
    );
    assert!(
        e.contains("REDIS_URL")
            && e.contains("own listener (listen.tcp")
            && !e.contains(UPSTREAM_PW_URL),
        "{e}"
    );
}

#[test]
fn the_unix_socket_gets_its_mode_and_group() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("respite.sock");
    let gid = std::fs::metadata(dir.path()).unwrap().gid();
    let toml = format!(
        "[listen]\ntcp = \"\"\nunix = \"{}\"\nunix_mode = \"0660\"\nunix_group = \"{gid}\"\n",
        path.display()
    );
    let config = respite::config::from_str_with(&toml, "test", &vec![], &vec![]).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let listeners = rt
        .block_on(respite::server::Listeners::bind(&config))
        .unwrap();
    assert!(listeners.unix.is_some());
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), gid);
    // The same group by name, resolved through the system's group database as `getent` does.
    let getent = std::process::Command::new("getent")
        .args(["group", &gid.to_string()])
        .output()
        .unwrap();
    let line = String::from_utf8(getent.stdout).unwrap();
    let name = line.split(':').next().unwrap().to_string();
    assert!(!name.is_empty(), "getent group {gid}: {line}");
    let by_name = toml.replace(&format!("\"{gid}\""), &format!("\"{name}\""));
    drop(listeners);
    std::fs::remove_file(&path).unwrap();
    let config = respite::config::from_str_with(&by_name, "test", &vec![], &vec![]).unwrap();
    let listeners = rt
        .block_on(respite::server::Listeners::bind(&config))
        .unwrap();
    assert!(listeners.unix.is_some());
    assert_eq!(std::fs::metadata(&path).unwrap().gid(), gid, "group {name}");
    drop(listeners);
    // A group that does not exist is an error naming the socket.
    let toml = toml.replace(&format!("\"{gid}\""), "\"no-such-group-x\"");
    let config = respite::config::from_str_with(&toml, "test", &vec![], &vec![]).unwrap();
    let e = rt
        .block_on(respite::server::Listeners::bind(&config))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("unix listener") && e.contains("no-such-group-x"),
        "{e}"
    );
}
