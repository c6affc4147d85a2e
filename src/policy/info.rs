//! INFO as a prefixed tenant sees it: the sections clients read, filled with the tenant's own view
//! (its connections, its commands, its database's keys) or with facts that are the same for every
//! tenant (versions, respite's process, the limits the upstream enforces), in Redis's layout.
//!
//! Must never show what tells one tenant about another or about the upstream's topology: the
//! upstream's clients, memory used, commands, replicas, other databases' keys, its process id,
//! port or host. From the upstream's own INFO only [`UpstreamFacts`] is taken, field by field;
//! nothing of it is copied whole. Pure: the session gathers the facts and sends the text.
use std::fmt::Write;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Facts of respite and of the client's tenant, gathered by the session.
#[derive(Debug, Clone, Default)]
pub struct InfoFacts {
    /// `redis` or `valkey`, as the upstream's HELLO says.
    pub server_name: String,
    pub version: String,
    /// respite's mode: `proxy`, `local-only` or `standalone`.
    pub mode: &'static str,
    /// The port the client connected to (0 for a unix socket).
    pub tcp_port: u16,
    /// The tenant's connections to this respite.
    pub clients: usize,
    /// `listen.max_clients`.
    pub max_clients: usize,
    /// Commands the tenant sent to this respite.
    pub commands: u64,
    pub upstream: UpstreamFacts,
}

/// What the upstream's INFO may tell a tenant: the limits it enforces for every key, and the one
/// database that is the tenant's own (`tenant.db`), shown as `db0`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamFacts {
    pub maxmemory: Option<String>,
    pub maxmemory_human: Option<String>,
    pub maxmemory_policy: Option<String>,
    /// `aof_enabled` (0 or 1): CONFIG GET appendonly.
    pub aof_enabled: Option<String>,
    /// The tenant's database's `keys=…,expires=…,avg_ttl=…` (absent when it holds no key, as
    /// Redis leaves an empty database out).
    pub keyspace: Option<String>,
    /// How many of the tenant's clients the upstream shows blocked (flag `b` on the pinned
    /// connections they hold): `blocked_clients`, which test suites and job queues wait on.
    pub blocked_clients: usize,
}

impl UpstreamFacts {
    /// Pick the allowed fields out of the upstream's INFO text; `db` is the tenant's own
    /// database, whose line alone is read.
    pub fn from_info(text: &str, db: Option<u32>) -> UpstreamFacts {
        let mut facts = UpstreamFacts::default();
        let own = db.map(|d| format!("db{d}"));
        for line in text.lines() {
            let Some((key, value)) = line.trim_end().split_once(':') else {
                continue;
            };
            let value = Some(value.to_string());
            match key {
                "maxmemory" => facts.maxmemory = value,
                "maxmemory_human" => facts.maxmemory_human = value,
                "maxmemory_policy" => facts.maxmemory_policy = value,
                "aof_enabled" => facts.aof_enabled = value,
                k if Some(k) == own.as_deref() => facts.keyspace = value,
                _ => {}
            }
        }
        facts
    }
}

/// When this process started, for `uptime_in_seconds` (set by [`started`]'s first caller, which
/// the server is at start-up).
pub fn started() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// A random id for this respite process, as Redis's `run_id` is per server process.
fn run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        (0..20).fold(String::new(), |mut s, _| {
            let _ = write!(s, "{:02x}", rand::random::<u8>());
            s
        })
    })
}

/// The host's `uname -s -r -m`, as Redis prints `os`: respite's host, not the upstream's.
fn os() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let kernel = match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        other => other,
    };
    format!("{kernel} {} {}", release.trim(), std::env::consts::ARCH)
}

/// Whether INFO's arguments ask for `section` (none, `default`, `all` or `everything` ask for
/// every section shown here). Sections are case-insensitive.
fn wanted(args: &[&[u8]], section: &str) -> bool {
    args.is_empty()
        || args.iter().any(|a| {
            ["all", "default", "everything", section]
                .iter()
                .any(|s| a.eq_ignore_ascii_case(s.as_bytes()))
        })
}

/// True if the reply needs the upstream's INFO (the memory or keyspace section).
pub fn needs_upstream(args: &[&[u8]]) -> bool {
    wanted(args, "memory") || wanted(args, "keyspace")
}

/// True if the reply has the clients section (whose `blocked_clients` the upstream knows).
pub fn needs_blocked(args: &[&[u8]]) -> bool {
    wanted(args, "clients")
}

/// How many connections of a `CLIENT LIST` reply are blocked (`b` among their `flags`).
pub fn count_blocked(client_list: &str) -> usize {
    client_list
        .lines()
        .filter(|line| {
            line.split(' ')
                .find_map(|field| field.strip_prefix("flags="))
                .is_some_and(|flags| flags.contains('b'))
        })
        .count()
}

/// The INFO text for `args` (the sections asked for, after `INFO`). Sections other than these
/// come back empty, as Redis answers an unknown section.
pub fn render(f: &InfoFacts, args: &[&[u8]]) -> String {
    let mut out = String::new();
    let w = &mut out;
    if wanted(args, "server") {
        let uptime = started().elapsed();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let _ = write!(
            w,
            "# Server\r\nredis_version:{v}\r\nredis_git_sha1:00000000\r\nredis_git_dirty:0\r\nredis_build_id:0\r\nredis_mode:standalone\r\nos:{os}\r\narch_bits:{bits}\r\nmonotonic_clock:POSIX clock_gettime\r\nmultiplexing_api:epoll\r\nprocess_id:{pid}\r\nprocess_supervised:no\r\nrun_id:{run}\r\ntcp_port:{port}\r\nserver_time_usec:{usec}\r\nuptime_in_seconds:{up}\r\nuptime_in_days:{days}\r\nhz:10\r\nconfigured_hz:10\r\nexecutable:\r\nconfig_file:\r\nserver_name:{name}\r\nrespite_version:{rv}\r\nrespite_mode:{mode}\r\n\r\n",
            v = f.version,
            os = os(),
            bits = usize::BITS,
            pid = std::process::id(),
            run = run_id(),
            port = f.tcp_port,
            usec = now.as_micros(),
            up = uptime.as_secs(),
            days = uptime.as_secs() / 86_400,
            name = f.server_name,
            rv = env!("CARGO_PKG_VERSION"),
            mode = f.mode,
        );
    }
    if wanted(args, "clients") {
        let _ = write!(
            w,
            "# Clients\r\nconnected_clients:{}\r\ncluster_connections:0\r\nmaxclients:{}\r\nblocked_clients:{}\r\n\r\n",
            f.clients, f.max_clients, f.upstream.blocked_clients
        );
    }
    if wanted(args, "memory") {
        w.push_str("# Memory\r\n");
        let u = &f.upstream;
        for (key, value) in [
            ("maxmemory", &u.maxmemory),
            ("maxmemory_human", &u.maxmemory_human),
            ("maxmemory_policy", &u.maxmemory_policy),
        ] {
            if let Some(v) = value {
                let _ = write!(w, "{key}:{v}\r\n");
            }
        }
        w.push_str("\r\n");
    }
    if wanted(args, "persistence") {
        w.push_str("# Persistence\r\nloading:0\r\nasync_loading:0\r\n\r\n");
    }
    if wanted(args, "stats") {
        let _ = write!(
            w,
            "# Stats\r\ntotal_commands_processed:{}\r\n\r\n",
            f.commands
        );
    }
    if wanted(args, "replication") {
        w.push_str("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n");
    }
    if wanted(args, "cluster") {
        // Clients see one standalone server through respite, whatever the upstream is
        // (redis-py's test session reads this field at start).
        w.push_str("# Cluster\r\ncluster_enabled:0\r\n\r\n");
    }
    if wanted(args, "keyspace") {
        w.push_str("# Keyspace\r\n");
        if let Some(k) = &f.upstream.keyspace {
            let _ = write!(w, "db0:{k}\r\n");
        }
    }
    let mut text = out.trim_end_matches("\r\n").to_string();
    text.push_str("\r\n");
    if text == "\r\n" {
        text.clear();
    }
    text
}

/// The one parameter a prefixed tenant may CONFIG SET: it has a meaning per tenant.
pub const TENANT_SETTABLE: &str = "notify-keyspace-events";

/// A prefixed tenant's CONFIG SET (`args` whole), as Redis answers it: `Ok` with the new
/// `notify-keyspace-events` flags, or the error text. `None` if it names any other parameter
/// (refused by the policy, as every server-wide setting is).
pub fn config_set(args: &[bytes::Bytes]) -> Option<Result<u32, String>> {
    let pairs = args.get(2..).unwrap_or_default();
    if pairs
        .iter()
        .step_by(2)
        .any(|p| !p.eq_ignore_ascii_case(TENANT_SETTABLE.as_bytes()))
    {
        return None;
    }
    if pairs.is_empty() || pairs.len() % 2 != 0 {
        return Some(Err(
            "ERR wrong number of arguments for 'config|set' command".into(),
        ));
    }
    let failed = |why: &str| {
        let name = String::from_utf8_lossy(&pairs[0]).into_owned();
        Err(format!(
            "ERR CONFIG SET failed (possibly related to argument '{name}') - {why}"
        ))
    };
    if pairs.len() > 2 {
        return Some(failed("duplicate parameter"));
    }
    Some(super::keyspace::parse(&pairs[1]).or_else(failed))
}

/// Server parameters no tenant may read or set upstream, whatever `tenant.server_config` says:
/// where the server writes files (CONFIG SET dir + dbfilename writes anywhere), passwords,
/// addresses, replication and cluster topology, and the settings respite answers per tenant.
/// Persistence policy (`save`, `appendonly`) and tuning are the operator's to give.
const NEVER: &[&str] = &[
    "*dir*",
    "*file*",
    "*pass*",
    "master*",
    "replica*",
    "slave*",
    "cluster*",
    "bind*",
    "port",
    "tls-*",
    "unixsocket*",
    "enable-*",
    "protected-mode",
    "*announce*",
    "notify-keyspace-events",
    "databases",
    "timeout",
];

/// True if a tenant whose `tenant.server_config` holds `allowed` may CONFIG GET and SET the
/// server parameter `name` upstream (names are matched case-insensitively, as Redis does).
pub fn server_param(allowed: &[String], name: &[u8]) -> bool {
    let name = name.to_ascii_lowercase();
    allowed
        .iter()
        .any(|p| super::glob::matches(p.as_bytes(), &name))
        && !NEVER
            .iter()
            .any(|p| super::glob::matches(p.as_bytes(), &name))
}

/// The configuration parameters a tenant may read (CONFIG GET), with the values that hold for it:
/// the upstream's limits every tenant's keys live under, the one database a tenant has, and
/// respite's own idle timeout (the one its connections get). Every other parameter — the
/// upstream's address, users, files, replication, other limits — is not shown, as CONFIG GET
/// shows nothing for a name it does not know. `notify-keyspace-events` is the tenant's own
/// setting (`notify`, see [`super::keyspace`]).
pub fn config_get(
    patterns: &[&[u8]],
    upstream: &UpstreamFacts,
    idle_timeout_secs: u64,
    notify: u32,
) -> Vec<(&'static str, String)> {
    let candidates = [
        ("maxmemory", upstream.maxmemory.clone()),
        ("maxmemory-policy", upstream.maxmemory_policy.clone()),
        (
            "appendonly",
            upstream
                .aof_enabled
                .as_deref()
                .map(|a| if a == "1" { "yes" } else { "no" }.to_string()),
        ),
        ("databases", Some("1".to_string())),
        ("timeout", Some(idle_timeout_secs.to_string())),
        (
            "notify-keyspace-events",
            Some(super::keyspace::render(notify)),
        ),
    ];
    candidates
        .into_iter()
        .filter_map(|(name, value)| {
            // Redis matches config names case-insensitively.
            let hit = patterns
                .iter()
                .any(|p| super::glob::matches(&p.to_ascii_lowercase(), name.as_bytes()));
            Some((name, value?)).filter(|_| hit)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM: &str = "# Server\r\nredis_version:7.0.15\r\nprocess_id:4242\r\ntcp_port:6379\r\n\r\n# Clients\r\nconnected_clients:900\r\n\r\n# Memory\r\nused_memory:123456789\r\nmaxmemory:1048576\r\nmaxmemory_human:1.00M\r\nmaxmemory_policy:allkeys-lru\r\n\r\n# Keyspace\r\ndb0:keys=1000000,expires=0,avg_ttl=0\r\ndb3:keys=20,expires=2,avg_ttl=5000\r\n";

    #[test]
    fn blocked_connections_are_those_flagged_b() {
        let list = "$200\r\nid=7 addr=x fd=8 name=respite-pinned flags=b db=0 cmd=blpop\r\n\
                    id=8 addr=y fd=9 name=respite-pinned flags=N db=0 cmd=get\r\n\
                    id=9 addr=z fd=10 name=b flags=xb db=0 cmd=exec\r\n";
        assert_eq!(count_blocked(list), 2);
        // A name holding `b` is not a flag.
        assert_eq!(count_blocked("id=1 name=flags=b flags=N\r\n"), 0);
        assert_eq!(count_blocked(""), 0);
    }

    fn facts(db: Option<u32>) -> InfoFacts {
        InfoFacts {
            server_name: "redis".into(),
            version: "7.0.15".into(),
            mode: "proxy",
            tcp_port: 6380,
            clients: 2,
            max_clients: 10000,
            commands: 17,
            upstream: UpstreamFacts::from_info(UPSTREAM, db),
        }
    }

    #[test]
    fn only_the_tenants_own_view_and_shared_limits() {
        let text = render(&facts(Some(3)), &[]);
        for want in [
            "redis_version:7.0.15\r\n",
            "arch_bits:64\r\n",
            &format!("process_id:{}\r\n", std::process::id()),
            "tcp_port:6380\r\n",
            "connected_clients:2\r\n",
            "maxmemory:1048576\r\n",
            "maxmemory_policy:allkeys-lru\r\n",
            "total_commands_processed:17\r\n",
            "role:master\r\n",
            "# Cluster\r\ncluster_enabled:0\r\n",
            "# Keyspace\r\ndb0:keys=20,expires=2,avg_ttl=5000\r\n",
        ] {
            assert!(text.contains(want), "{want:?} in {text}");
        }
        // Nothing of the upstream's own: its process, port, clients, memory used, other dbs.
        // (As whole fields: a bare "900" may be part of respite's own process id or clock.)
        for never in [
            ":4242\r\n",
            ":6379\r\n",
            "connected_clients:900\r\n",
            "used_memory:",
            "keys=1000000",
            "db3",
        ] {
            assert!(!text.contains(never), "{never:?} in {text}");
        }
        assert!(text.ends_with("avg_ttl=5000\r\n"), "{text}");
    }

    #[test]
    fn server_params_never_reach_files_passwords_or_addresses() {
        let all = vec!["*".to_string()];
        for name in [
            "list-max-listpack-size",
            "LUA-TIME-LIMIT",
            "hz",
            "slowlog-max-len",
        ] {
            assert!(server_param(&all, name.as_bytes()), "{name}");
        }
        for name in [
            "dir",
            "DBFILENAME",
            "appendfilename",
            "aclfile",
            "requirepass",
            "masterauth",
            "replicaof",
            "bind",
            "port",
            "tls-port",
            "enable-debug-command",
            "notify-keyspace-events",
        ] {
            assert!(!server_param(&all, name.as_bytes()), "{name}");
        }
        let some = vec!["list-max-*".to_string()];
        assert!(server_param(&some, b"List-Max-Listpack-Size"));
        assert!(!server_param(&some, b"hash-max-listpack-entries"));
        assert!(!server_param(&[], b"hz"));
    }

    #[test]
    fn config_get_shows_the_safe_subset_only() {
        let up = UpstreamFacts::from_info(
            "maxmemory:0\r\nmaxmemory_policy:noeviction\r\naof_enabled:0\r\n",
            None,
        );
        let got = config_get(&[b"*"], &up, 300, 0);
        let names: Vec<&str> = got.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "maxmemory",
                "maxmemory-policy",
                "appendonly",
                "databases",
                "timeout",
                "notify-keyspace-events"
            ]
        );
        assert_eq!(
            config_get(&[b"MAXMEMORY-*"], &up, 0, 0),
            [("maxmemory-policy", "noeviction".to_string())]
        );
        assert_eq!(
            config_get(&[b"appendonly", b"timeout"], &up, 0, 0),
            [("appendonly", "no".into()), ("timeout", "0".into())]
        );
        assert!(config_get(&[b"requirepass", b"dir", b"port"], &up, 0, 0).is_empty());
        // Without the upstream's INFO (standalone, local-only), its limits are left out.
        let none = config_get(&[b"*"], &UpstreamFacts::default(), 0, 0);
        assert_eq!(none.len(), 3);
    }

    #[test]
    fn sections_as_asked() {
        // A tenant in the shared database has no keyspace line of its own.
        assert_eq!(render(&facts(None), &[b"keyspace"]), "# Keyspace\r\n");
        let server = render(&facts(None), &[b"SERVER"]);
        assert!(server.starts_with("# Server\r\n") && !server.contains("# Clients"));
        assert_eq!(render(&facts(None), &[b"nosuch"]), "");
        assert!(needs_upstream(&[]) && needs_upstream(&[b"memory"]));
        assert!(!needs_upstream(&[b"server", b"clients"]));
    }
}
