//! The documentation as a newcomer reads it: README.md and docs/*.md. Every relative link must
//! reach a file that exists and, when it names an anchor, a heading (or `<a id>`) in that file,
//! by GitHub's slug rules; README's test command must be the one CI runs (`.ci/run`).
//!
//! No servers, no network: this reads files only.
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(!docs.is_empty(), "docs/ holds no page");
    pages.extend(docs);
    pages
}

/// Lines outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// GitHub's heading anchor: lower case, punctuation but `-` and `_` dropped, spaces as `-`;
/// a repeated slug gets `-1`, `-2`, ….
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    for line in prose(text) {
        if let Some(h) = line.strip_prefix('#') {
            let h = h.trim_start_matches('#');
            if h.starts_with(' ') {
                let s = slug(h);
                let n = seen.entry(s.clone()).or_insert(0);
                out.insert(if *n == 0 {
                    s.clone()
                } else {
                    format!("{s}-{n}")
                });
                *n += 1;
            }
        }
        let mut rest = line;
        while let Some(i) = rest.find("<a id=\"") {
            let tail = &rest[i + 7..];
            let end = tail.find('"').expect("closed <a id>");
            out.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    out
}

/// `(target)` of every `[text](target)` in the prose.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose(text) {
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let tail = &rest[i + 2..];
            let Some(end) = tail.find(')') else { break };
            out.push(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_reaches_a_file_and_heading() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let dir = page.parent().unwrap();
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match link.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (link.as_str(), None),
            };
            let target: PathBuf = if path.is_empty() {
                page.clone()
            } else {
                dir.join(path)
            };
            let name = page.strip_prefix(root()).unwrap().display().to_string();
            if !target.exists() {
                broken.push(format!("{name}: ({link}): no such file"));
                continue;
            }
            if let Some(a) = anchor {
                let t = std::fs::read_to_string(&target).unwrap();
                if !anchors(&t).contains(a) {
                    broken.push(format!("{name}: ({link}): no such heading"));
                }
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} links found: the link parser broke"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn slugs_follow_githubs_rules() {
    assert_eq!(
        slug(" Client-side caching (CLIENT TRACKING)"),
        "client-side-caching-client-tracking"
    );
    assert_eq!(slug(" Pub/Sub"), "pubsub");
    let a = anchors("# Failure\n## Failure\n```\n# not a heading\n```\n<a id=\"x-y\"></a>");
    assert_eq!(
        a,
        ["failure", "failure-1", "x-y"]
            .map(String::from)
            .into_iter()
            .collect()
    );
}

/// `.ci/run` must run exactly the test command README gives a newcomer.
#[test]
fn readme_gives_the_command_ci_runs() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    let command = ci
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap()
        .trim();
    assert_eq!(command, "./scripts/test.sh");
    let fenced: Vec<&str> = readme
        .split("```sh\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap().trim())
        .collect();
    assert!(
        fenced.contains(&command),
        "README has no code block that is exactly `{command}`: {fenced:?}"
    );
}

/// Every page of docs/ is reachable from README.
#[test]
fn readme_links_every_page() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let linked: BTreeSet<String> = links(&readme)
        .into_iter()
        .map(|l| l.split('#').next().unwrap().to_string())
        .collect();
    for page in pages().into_iter().skip(1) {
        let rel = Path::new("docs").join(page.file_name().unwrap());
        let rel = rel.to_str().unwrap();
        assert!(linked.contains(rel), "README does not link {rel}");
    }
}

/// Every shipped alert carries a `runbook_url` to its runbook, a heading in docs/operations.md.
#[test]
fn every_alert_has_a_runbook() {
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).unwrap();
    let operations = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
    let headings = anchors(&operations);
    let mut alerts = 0;
    let mut current: Option<&str> = None;
    for line in rules.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert: ") {
            assert!(current.is_none(), "{} has no runbook_url", current.unwrap());
            current = Some(name);
            alerts += 1;
        } else if let Some(url) = line.strip_prefix("runbook_url: ") {
            let name = current.take().expect("a runbook_url inside an alert");
            let url = url.trim_matches('"');
            let anchor = url
                .strip_prefix("docs/operations.md#")
                .unwrap_or_else(|| panic!("{name}: {url} is not in docs/operations.md"));
            assert_eq!(anchor, name.to_lowercase(), "{name}: {url}");
            assert!(
                headings.contains(anchor),
                "{name}: no runbook heading #{anchor}"
            );
        }
    }
    assert!(current.is_none(), "{} has no runbook_url", current.unwrap());
    assert!(alerts >= 9, "only {alerts} alerts found");
}
