//! deploy/ as shipped: the container's command line (the Dockerfile's ENTRYPOINT plus the sidecar's
//! args) run against the real binary with the ConfigMap's proxy.toml, the YAML and unit files
//! parsed and held to what they promise (native sidecar, Pod Security "restricted", pinned images,
//! ports and probes that match the configuration, a memory budget that fits the pod), and the
//! systemd unit reviewed by `systemd-analyze security`.
//!
//! Only what cannot run here is adapted, and each adaptation is named where it is made: the
//! binary's and config's paths, the upstream's address, and ephemeral ports in place of fixed ones.
use crate::support::{Kind, Reaped, Server, free_port, http_get, wait_until, words};
use serde_norway::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every YAML document in a deploy file.
pub fn yaml_docs(path: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(&read(path))
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

/// The Dockerfile's instructions, continuation lines joined: (INSTRUCTION, rest of the line).
fn dockerfile() -> Vec<(String, String)> {
    let text = read("deploy/Dockerfile").replace("\\\n", " ");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (i, rest) = l.split_once(' ').unwrap_or((l, ""));
            (i.to_ascii_uppercase(), rest.trim().to_string())
        })
        .collect()
}

/// An exec-form instruction's argument vector (`["a", "b"]`).
fn exec_form(instruction: &str) -> Vec<String> {
    let found: Vec<_> = dockerfile()
        .into_iter()
        .filter(|(i, _)| i == instruction)
        .collect();
    assert_eq!(found.len(), 1, "one {instruction} in deploy/Dockerfile");
    serde_json::from_str(&found[0].1)
        .unwrap_or_else(|e| panic!("{instruction} is not in exec form ({e}): {}", found[0].1))
}

fn sidecar_docs() -> Vec<Value> {
    yaml_docs("deploy/kubernetes/sidecar.yaml")
}

fn deployment() -> Value {
    sidecar_docs()
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment")
}

/// The respite container of the pod (a native sidecar: an init container).
fn respite_container() -> Value {
    let d = deployment();
    d["spec"]["template"]["spec"]["initContainers"]
        .as_sequence()
        .expect("initContainers")
        .iter()
        .find(|c| c["name"] == "respite")
        .expect("respite among the init containers")
        .clone()
}

/// The ConfigMap's proxy.toml, as shipped.
pub fn configmap_toml() -> String {
    let cm = sidecar_docs()
        .into_iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("a ConfigMap");
    cm["data"]["proxy.toml"]
        .as_str()
        .expect("data.proxy.toml")
        .to_string()
}

fn configmap_table() -> toml::Table {
    configmap_toml()
        .parse()
        .expect("the ConfigMap's proxy.toml is TOML")
}

/// A quantity such as `256Mi` in bytes.
fn quantity(q: &str) -> u64 {
    let units = [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)];
    for (suffix, m) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap() * m;
        }
    }
    q.parse().unwrap()
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

#[test]
fn the_dockerfile_runs_the_binary_with_no_overrides_from_pinned_images() {
    let steps = dockerfile();
    for (_, image) in steps.iter().filter(|(i, _)| i == "FROM") {
        let image = image.split_whitespace().next().unwrap();
        let tag = image.rsplit_once(':').map(|t| t.1).unwrap_or("");
        assert!(
            tag.chars().next().is_some_and(|c| c.is_ascii_digit()) && !tag.contains("latest"),
            "base image {image} is not pinned to a version tag"
        );
    }
    // Nothing in the image overrides the configuration it is given (a RESPITE_LISTEN_TCP here once
    // moved the client listener to 0.0.0.0 whatever the ConfigMap said).
    for (_, env) in steps.iter().filter(|(i, _)| i == "ENV") {
        assert!(
            !env.contains("RESPITE_LISTEN") && !env.contains("RESPITE_ADMIN"),
            "ENV overrides the configuration: {env}"
        );
    }
    assert_eq!(exec_form("ENTRYPOINT"), ["/usr/local/bin/respite"]);
    // The build stage's Rust is the project's pinned toolchain.
    let toolchain: toml::Table = read("rust-toolchain.toml").parse().unwrap();
    let channel = toolchain["toolchain"]["channel"].as_str().unwrap();
    assert!(
        steps
            .iter()
            .any(|(i, r)| i == "FROM" && r.starts_with(&format!("rust:{channel}-"))),
        "the build stage runs rust {channel}"
    );
    assert!(
        steps
            .iter()
            .any(|(i, r)| i == "ENV" && r == &format!("RUSTUP_TOOLCHAIN={channel}"))
    );
    let user = steps.iter().rfind(|(i, _)| i == "USER").expect("a USER");
    assert!(
        user.1
            .split(':')
            .all(|id| id.parse::<u32>().is_ok_and(|n| n > 0)),
        "USER must be a numeric non-root id for runAsNonRoot: {}",
        user.1
    );
    // The stripped `dist` profile is what the image ships.
    assert!(
        steps
            .iter()
            .any(|(i, r)| i == "RUN" && r.contains("--profile dist"))
    );
    assert!(
        steps
            .iter()
            .any(|(i, r)| i == "COPY" && r.contains("target/dist/respite"))
    );
    let cargo: toml::Table = read("Cargo.toml").parse().unwrap();
    let dist = &cargo["profile"]["dist"];
    assert_eq!(dist["inherits"].as_str(), Some("release"));
    assert_eq!(dist["strip"].as_bool(), Some(true));
    assert_eq!(dist["debug"].as_integer(), Some(0));
    let ignore = read(".dockerignore");
    assert!(
        ignore
            .lines()
            .any(|l| l.trim().trim_end_matches('/') == "target"),
        ".dockerignore keeps target/ out of the build context"
    );
}

#[test]
fn the_sidecar_is_native_restricted_and_pinned() {
    let d = deployment();
    let pod = &d["spec"]["template"]["spec"];
    let c = respite_container();
    assert_eq!(c["restartPolicy"], "Always", "a native sidecar");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let all: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|k| pod[*k].as_sequence().unwrap())
        .collect();
    assert_eq!(all.len(), 2);
    // Pod Security "restricted", container by container.
    for c in &all {
        let s = &c["securityContext"];
        let name = c["name"].as_str().unwrap();
        assert_eq!(s["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(
            s["capabilities"]["drop"],
            serde_norway::from_str::<Value>("[ALL]").unwrap(),
            "{name}"
        );
        assert_eq!(s["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        assert_ne!(s["runAsNonRoot"], false, "{name}");
        let image = c["image"].as_str().unwrap();
        let tag = image.rsplit_once(':').map(|t| t.1).unwrap_or("");
        assert!(
            !tag.is_empty() && tag != "latest",
            "{name}'s image {image} is not pinned"
        );
    }
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    // Its args replace the image's CMD and keep its ENTRYPOINT: --config once.
    let args: Vec<String> = serde_norway::from_value(c["args"].clone()).unwrap();
    let line: Vec<String> = exec_form("ENTRYPOINT").into_iter().chain(args).collect();
    assert_eq!(line.iter().filter(|a| *a == "--config").count(), 1);
    assert_eq!(args_of(&c), exec_form("CMD"), "args and CMD agree");
}

fn args_of(c: &Value) -> Vec<String> {
    serde_norway::from_value(c["args"].clone()).unwrap()
}

/// Ports, probes and limits in the YAML against the configuration they go with.
#[test]
fn ports_probes_and_limits_match_the_configmap() {
    let config = configmap_table();
    let tcp = config["listen"]["tcp"].as_str().unwrap();
    assert!(
        tcp.starts_with("127.0.0.1:"),
        "clients on loopback only: {tcp}"
    );
    let admin = port_of(config["admin"]["listen"].as_str().unwrap());
    let d = deployment();
    let template = &d["spec"]["template"];
    let c = respite_container();
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(
        annotations["prometheus.io/port"],
        admin.to_string().as_str()
    );
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    assert_eq!(c["ports"][0]["containerPort"].as_u64(), Some(admin as u64));
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(
            c[probe]["httpGet"]["port"].as_u64(),
            Some(admin as u64),
            "{probe}"
        );
    }
    // The app reaches respite where respite listens.
    let app = &template["spec"]["containers"][0];
    let redis_url = app["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "REDIS_URL")
        .unwrap()["value"]
        .as_str()
        .unwrap();
    assert_eq!(redis_url, format!("redis://{tcp}"));
    // respite drains within the pod's grace period.
    let grace = config["runtime"]["shutdown_grace_ms"].as_integer().unwrap() as u64;
    let pod_grace = template["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(grace < pod_grace * 1000, "{grace} ms within {pod_grace} s");
    // Memory: every bound reached at once, plus 32 MiB for the runtime, fits the limit.
    let int = |section: &str, key: &str| config[section][key].as_integer().unwrap() as u64;
    let worst = int("local", "max_memory_bytes")
        + int("near_cache", "max_memory_bytes")
        + int("listen", "max_clients")
            * (int("limits", "max_query_buffer")
                + int("limits", "max_reply_bytes")
                + int("limits", "pubsub_output_bytes"))
        + (32 << 20);
    let limit = quantity(c["resources"]["limits"]["memory"].as_str().unwrap());
    assert!(
        worst <= limit,
        "worst case {worst} bytes over the container's limit {limit}"
    );
}

/// Every key the ConfigMap names is one respite knows: its own --check-config accepts the file.
#[test]
fn the_configmap_passes_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, configmap_toml()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_respite"))
        .args(["--config", path.to_str().unwrap(), "--check-config"])
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "--check-config refused the ConfigMap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A misspelled key is refused, so the pass above means something.
    std::fs::write(&path, configmap_toml().replace("max_clients", "max_client")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_respite"))
        .args(["--config", path.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a configuration error exits 2");
}

/// The image's own command line (ENTRYPOINT + CMD) with the proxy.toml it copies passes
/// `--check-config`: the shipped file is a valid configuration, as the container runs it.
#[test]
fn the_image_command_line_with_the_shipped_file_passes_check_config() {
    let root = env!("CARGO_MANIFEST_DIR");
    let copied = dockerfile()
        .into_iter()
        .any(|(i, a)| i == "COPY" && a.contains("proxy.toml /etc/respite/proxy.toml"));
    assert!(
        copied,
        "the image ships proxy.toml as /etc/respite/proxy.toml"
    );
    let line: Vec<String> = exec_form("ENTRYPOINT")
        .into_iter()
        .chain(exec_form("CMD"))
        .map(|a| match a.as_str() {
            "/usr/local/bin/respite" => env!("CARGO_BIN_EXE_respite").to_string(),
            "/etc/respite/proxy.toml" => format!("{root}/proxy.toml"),
            _ => a,
        })
        .collect();
    assert!(line.len() > 1, "{line:?}");
    let out = Command::new(&line[0])
        .args(&line[1..])
        .arg("--check-config")
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{line:?} --check-config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Listening TCP sockets on `port` (from /proc/net/tcp and tcp6): their local addresses.
fn listening_on(port: u16) -> Vec<String> {
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (addr, p) = f[1].rsplit_once(':').unwrap();
            if f[3] == "0A" && u16::from_str_radix(p, 16).unwrap() == port {
                found.push(addr.to_string());
            }
        }
    }
    found
}

/// The pod's command line, as Kubernetes builds it (ENTRYPOINT + the container's args), run
/// against the real binary with the ConfigMap's configuration.
#[test]
fn the_shipped_command_line_starts_listens_on_loopback_and_answers() {
    let server = Server::start(Kind::Redis);
    server
        .raw()
        .cmd(&words("ACL SETUSER app on >s3cret-pw ~* &* +@all"));
    let dir = tempfile::tempdir().unwrap();
    let (tcp, admin) = (free_port(), free_port());
    let socket = dir.path().join("respite.sock");
    // Adapted: fixed ports to free ones (hosts kept), the socket into the test's directory, the
    // upstream to a real server, and the admin port to loopback (tests stay on loopback).
    let config = configmap_toml()
        .replace("127.0.0.1:6380", &format!("127.0.0.1:{tcp}"))
        .replace("/var/run/respite/respite.sock", socket.to_str().unwrap())
        .replace(
            "redis://dragonfly.cache.svc.cluster.local:6379",
            &format!("redis://app:s3cret-pw@127.0.0.1:{}", server.port),
        )
        .replace("0.0.0.0:9121", &format!("127.0.0.1:{admin}"));
    let config_path = dir.path().join("proxy.toml");
    std::fs::write(&config_path, &config).unwrap();
    let c = respite_container();
    let line: Vec<String> = exec_form("ENTRYPOINT")
        .into_iter()
        .chain(args_of(&c))
        .map(|a| match a.as_str() {
            "/usr/local/bin/respite" => env!("CARGO_BIN_EXE_respite").to_string(),
            "/etc/respite/proxy.toml" => config_path.to_str().unwrap().to_string(),
            _ => a,
        })
        .collect();
    let mut cmd = Command::new(&line[0]);
    cmd.args(&line[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // The container's environment: the Dockerfile's ENV and the container's env, nothing else.
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("RESPITE_") || k == "REDIS_URL") {
        cmd.env_remove(k);
    }
    for env in c["env"].as_sequence().into_iter().flatten() {
        cmd.env(
            env["name"].as_str().unwrap(),
            env["value"].as_str().unwrap(),
        );
    }
    let mut child = Reaped(cmd.spawn().unwrap());
    wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok()
    })
    .expect("the admin port comes up");
    assert_eq!(child.0.try_wait().unwrap(), None, "respite is running");
    assert_eq!(
        listening_on(tcp),
        ["0100007F"],
        "clients are served on 127.0.0.1 only"
    );
    let mut client = crate::support::Raw::connect(([127, 0, 0, 1], tcp).into());
    assert_eq!(client.cmd(&words("PING")), b"+PONG\r\n");
    assert_eq!(client.cmd(&words("SET deployed yes")), b"+OK\r\n");
    assert_eq!(
        server.raw().cmd(&words("GET deployed")),
        b"$3\r\nyes\r\n",
        "the write reached the upstream"
    );
    let mut unix = crate::support::Raw::connect_unix(&socket);
    use std::io::{Read, Write};
    unix.write_all(b"PING\r\n").unwrap();
    let mut pong = [0u8; 7];
    unix.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
    for (path, status) in [("/healthz", 200), ("/readyz", 200), ("/metrics", 200)] {
        wait_until(Duration::from_secs(5), || {
            http_get(("127.0.0.1", admin), path).0 == status
        })
        .unwrap_or_else(|| panic!("{path} answers {status}"));
    }
    // SIGTERM drains and exits 0; the log is JSON (log.format in the ConfigMap).
    let ok = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    drop(client);
    drop(unix);
    let mut log = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(child.0.wait().unwrap().success(), "exit status 0:\n{log}");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let started = lines
        .iter()
        .find(|l| l["fields"]["message"] == "respite started")
        .unwrap_or_else(|| panic!("a startup summary in:\n{log}"));
    let f = &started["fields"];
    assert_eq!(f["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(f["mode"], "proxy");
    assert_eq!(f["tcp"], format!("127.0.0.1:{tcp}"));
    assert_eq!(f["admin"], format!("127.0.0.1:{admin}"));
    assert_eq!(f["upstream"], format!("127.0.0.1:{}", server.port));
    assert!(!log.contains("s3cret-pw"), "the password is never logged");
    assert!(!log.contains('\x1b'), "no colour codes into a pipe");
}

/// The systemd unit: no config printed at start, no restart on a configuration error (exit 2, as
/// main.rs exits), and a hardened sandbox, by systemd's own review.
#[test]
fn the_systemd_unit_is_hardened() {
    let unit = read("deploy/respite.service");
    let keys: Vec<(&str, &str)> = unit
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let get = |k: &str| keys.iter().find(|(key, _)| *key == k).map(|kv| kv.1);
    assert_eq!(
        get("ExecStartPre"),
        None,
        "nothing prints the config at start"
    );
    assert_eq!(get("RestartPreventExitStatus"), Some("2"));
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
        ("MemoryDenyWriteExecute", "yes"),
        ("DynamicUser", "yes"),
    ] {
        assert_eq!(get(k), Some(v), "{k}");
    }
    let analyze = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(repo("deploy/respite.service"))
        .output()
        .expect("systemd-analyze runs (scripts/test.sh installs systemd)");
    let text = String::from_utf8_lossy(&analyze.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for respite.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no score in:\n{text}"));
    assert!(score <= 2.0, "exposure {score} (was 8.4 before hardening)");
}

/// yamllint's default rules (deploy/.yamllint.yml lists the three it relaxes) hold in every YAML
/// file under deploy/.
#[test]
fn yamllint_accepts_the_deploy_files() {
    let out = Command::new("yamllint")
        .args(["--strict", "-f", "parsable", "-c"])
        .arg(repo("deploy/.yamllint.yml"))
        .arg(repo("deploy"))
        .output()
        .expect("yamllint runs (scripts/test.sh installs it: apt-get install yamllint)");
    assert!(
        out.status.success(),
        "yamllint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kubernetes 1.29 is the first with native sidecars (`restartPolicy: Always` on an init
/// container), the oldest version sidecar.yaml supports.
const KUBERNETES_VERSION: &str = "1.29.0";

/// `kubernetes-validate --strict` (Kubernetes' own OpenAPI schemas, bundled, offline) on the given
/// files: whether they pass, and what it said.
fn kubernetes_validate(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--no-warn", "-k", KUBERNETES_VERSION])
        .args(files)
        .output()
        .expect("kubernetes-validate runs (scripts/test.sh installs it: pip install kubernetes-validate)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every file under deploy/kubernetes holds to Kubernetes' schema for its kind, unknown fields
/// refused; and the check is live: the same file with one misspelled container field fails it.
#[test]
fn the_kubernetes_files_pass_the_schema_check() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("deploy/kubernetes"))
        .expect("deploy/kubernetes")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML under deploy/kubernetes");
    let (ok, text) = kubernetes_validate(&files);
    assert!(ok, "kubernetes-validate:\n{text}");
    for f in &files {
        let name = f.display().to_string();
        assert!(text.contains(&name), "{name} was not checked:\n{text}");
    }

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("sidecar.yaml");
    let shipped = read("deploy/kubernetes/sidecar.yaml");
    let line = "          restartPolicy: Always\n";
    assert!(
        shipped.contains(line),
        "the sidecar's restartPolicy line moved"
    );
    std::fs::write(
        &broken,
        shipped.replacen(
            line,
            &format!("{line}          restartPolicyy: Always\n"),
            1,
        ),
    )
    .unwrap();
    let (ok, text) = kubernetes_validate(&[broken]);
    assert!(!ok, "an unknown container field passed:\n{text}");
    assert!(text.contains("'restartPolicyy' was unexpected"), "{text}");
}
