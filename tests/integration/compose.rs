//! deploy/compose/: respite beside Redis, Valkey and Dragonfly with `docker compose`. No Docker
//! here: each file is validated against the Compose specification's own JSON schema (vendored in
//! deploy/compose/schema, checked with python's `jsonschema`, which scripts/test.sh installs), its
//! images are pinned, respite's upstream is the file's cache service, and respite's environment
//! passes `respite --check-config` as the container would run it.
use crate::deploy::{read, repo};
use crate::support::Binary;
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

const FILES: [(&str, &str); 3] = [
    ("deploy/compose/redis.yaml", "redis:"),
    ("deploy/compose/valkey.yaml", "valkey/valkey:"),
    (
        "deploy/compose/dragonfly.yaml",
        "docker.dragonflydb.io/dragonflydb/dragonfly:",
    ),
];

fn compose(path: &str) -> Value {
    serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Errors the Compose schema finds in `doc` (empty: valid), by python's jsonschema (Draft 7, as
/// the schema declares).
fn schema_errors(doc: &Value) -> Vec<String> {
    let script = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
doc = json.load(sys.stdin)
v = jsonschema.Draft7Validator(schema)
for e in sorted(v.iter_errors(doc), key=str):
    print("/".join(str(p) for p in e.absolute_path) + ": " + e.message)
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .arg(repo("deploy/compose/schema/compose-spec.json"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python jsonschema (scripts/test.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_compose_files_follow_the_compose_specification() {
    for (path, _) in FILES {
        let errors = schema_errors(&compose(path));
        assert!(errors.is_empty(), "{path}:\n{}", errors.join("\n"));
    }
    // The check can fail: a port as a bare mapping and an unknown key are refused.
    let mut broken = compose(FILES[0].0);
    broken["services"]["respite"]["ports"] = serde_json::json!({"6380": 6380});
    broken["services"]["respite"]["restart_policy"] = serde_json::json!("always");
    let errors = schema_errors(&broken);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("services/respite/ports"))
            && errors.iter().any(|e| e.contains("restart_policy")),
        "{errors:?}"
    );
}

#[test]
fn each_file_runs_respite_in_front_of_its_server_as_configured() {
    for (path, image) in FILES {
        let doc = compose(path);
        let services = &doc["services"];
        let cache = services["cache"]["image"].as_str().unwrap();
        assert!(cache.starts_with(image), "{path}: cache image {cache}");
        for service in ["cache", "respite"] {
            let image = services[service]["image"].as_str().unwrap();
            let tag = image.rsplit_once(':').map_or("", |t| t.1);
            assert!(
                tag.trim_start_matches('v')
                    .starts_with(|c: char| c.is_ascii_digit()),
                "{path}: {service}'s image {image} is not pinned to a version"
            );
        }
        let respite = &services["respite"];
        assert_eq!(
            respite["build"]["dockerfile"], "deploy/Dockerfile",
            "{path}"
        );
        assert!(
            respite["depends_on"]["cache"].is_object(),
            "{path}: respite waits for the cache"
        );
        // Published on the host's loopback only.
        for port in respite["ports"].as_array().unwrap() {
            assert!(port.as_str().unwrap().starts_with("127.0.0.1:"), "{path}");
        }
        // The environment as the container gets it passes respite's own check, and names the
        // cache service as the upstream.
        let env: Vec<(String, String)> = respite["environment"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let url = &env
            .iter()
            .find(|(k, _)| k == "RESPITE_UPSTREAM_URL")
            .unwrap()
            .1;
        assert_eq!(url, "redis://cache:6379", "{path}");
        let out = Binary::command()
            .args(["--config", repo("proxy.toml").to_str().unwrap()])
            .arg("--check-config")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("url = \"redis://cache:6379\""), "{text}");
        assert!(text.contains("tcp = \"0.0.0.0:6380\""), "{text}");
    }
}
