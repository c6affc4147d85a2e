//! The whole file, environment and flag path, as `from_str_with` sees it.
use super::*;

fn parse(s: &str) -> Result<Config, ConfigError> {
    from_str_with(s, "proxy.toml", &vec![], &vec![])
}

#[test]
fn urls() {
    let u = parse_url("redis://u:p@10.0.0.1:7000/3").unwrap();
    assert_eq!(u.addr, UpstreamAddr::Tcp("10.0.0.1:7000".into()));
    assert_eq!(
        (u.username.as_deref(), u.password.as_deref(), u.db),
        (Some("u"), Some("p"), 3)
    );
    let u = parse_url("redis://:secret@localhost").unwrap();
    assert_eq!(u.addr, UpstreamAddr::Tcp("localhost:6379".into()));
    assert_eq!((u.username, u.password.as_deref()), (None, Some("secret")));
    let u = parse_url("unix:///tmp/r.sock?db=2").unwrap();
    assert_eq!(
        (u.addr, u.db),
        (UpstreamAddr::Unix("/tmp/r.sock".into()), 2)
    );
    assert!(parse_url("http://x").is_err());
    assert!(parse_url("redis://h:99999").unwrap_err().contains("port"));
    assert!(parse_url("redis://h:1/x").unwrap_err().contains("database"));
}

#[test]
fn cluster_urls_list_their_seeds() {
    let u = parse_url("redis+cluster://u:p%40@10.0.0.1:7000,10.0.0.2:7001,h3").unwrap();
    assert!(u.is_cluster() && !u.tls);
    assert_eq!(u.seeds, ["10.0.0.1:7000", "10.0.0.2:7001", "h3:6379"]);
    assert_eq!(u.addr, UpstreamAddr::Tcp("10.0.0.1:7000".into()));
    assert_eq!(
        (u.username.as_deref(), u.password.as_deref()),
        (Some("u"), Some("p@"))
    );
    let u = parse_url("rediss+cluster://h:1").unwrap();
    assert!(u.is_cluster() && u.tls);
    assert!(!parse_url("redis://h:1").unwrap().is_cluster());
    assert!(
        parse_url("redis+cluster://h:1/2")
            .unwrap_err()
            .contains("database 0")
    );
    assert!(
        parse_url("redis+cluster://h:1,,h:2")
            .unwrap_err()
            .contains("missing host")
    );
    assert!(
        parse_url("redis+cluster://h:1,h:x")
            .unwrap_err()
            .contains("port")
    );
    // The same form as a setting (REDIS_URL and --upstream both set `upstream.url`).
    let c = from_str_with(
        "",
        "proxy.toml",
        &vec![(
            "upstream.url".to_string(),
            "redis+cluster://a:1,b:2".to_string(),
        )],
        &vec![],
    )
    .unwrap();
    assert_eq!(c.upstream.unwrap().url.seeds, ["a:1", "b:2"]);
    let c =
        parse("[upstream]\nurl = \"redis+cluster://a:1\"\n[local_only]\nenabled = true\n").unwrap();
    assert!(
        c.local_only.enabled,
        "local-only mode is on for a cluster (it takes over when no node serves)"
    );
}

#[test]
fn near_cache_errors_name_the_key_and_line() {
    let base = "[upstream]\nurl = \"redis://a:1\"\n[near_cache]\nenabled = true\n";
    let c = parse(&format!(
        "{base}[[near_cache.rule]]\npattern = \"user:*\"\n"
    ))
    .unwrap();
    let cache = c.near_cache.expect("enabled");
    assert_eq!(cache.rules.len(), 1);
    assert_eq!(
        cache.rules[0].reads.count_ones() as usize,
        ReadKind::ALL.len()
    );
    let e = parse(&format!(
        "{base}[[near_cache.rule]]\npattern = \"*\"\n[[near_cache.rule]]\npattern = \"a*\"\ncommands = [\"GET\", \"SET\"]\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("near_cache.rule[1].commands") && e.contains("line 9") && e.contains("`SET`"),
        "{e}"
    );
    let e = parse(&format!(
        "{base}[[near_cache.rule]]\ntenant = \"nobody\"\npattern = \"*\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("near_cache.rule[0].tenant") && e.contains("line 6"),
        "{e}"
    );
    let e = parse("[near_cache]\nenabled = true\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("near_cache.enabled") && e.contains("upstream"),
        "{e}"
    );
    let e = parse(&format!("{base}heartbeat_ms = 5000\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("near_cache.heartbeat_timeout_ms"), "{e}");
    let e = parse(&format!("{base}heartbeat_ms = 500\nmax_silence_ms = 500\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("near_cache.max_silence_ms"), "{e}");
    // Off unless enabled, and its keys are still checked.
    assert!(
        parse("[near_cache]\nmax_memory_bytes = 1000000\n")
            .unwrap()
            .near_cache
            .is_none()
    );
    assert!(parse("[near_cache]\nmax_memory_bytes = 0\n").is_err());
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let e = parse("[upstream]\nurl = \"redis://a:1\"\nconections = 3\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("conections"), "{e}");
    assert!(e.contains("line 3"), "{e}");
}

#[test]
fn invalid_value_is_named_with_its_line() {
    let e = parse("[limits]\n\nmax_args = 0\n").unwrap_err().to_string();
    assert!(
        e.contains("`limits.max_args`") && e.contains("line 3"),
        "{e}"
    );
    let e = parse("[upstream]\nurl = \"redis://a:1\"\nmax_inflight = 20000\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("upstream.max_inflight") && e.contains("Dragonfly"),
        "{e}"
    );
}

#[test]
fn overrides_take_precedence_and_are_named() {
    let env = env_overrides(vec![
        ("REDIS_URL".to_string(), "redis://a:1".to_string()),
        ("RESPITE_UPSTREAM_CONNECTIONS".to_string(), "7".to_string()),
        ("HOME".to_string(), "/root".to_string()),
    ]);
    let flags = vec![("listen.tcp".to_string(), "127.0.0.1:1".to_string())];
    let c = from_str_with("[upstream]\nconnections = 3\n", "f", &env, &flags).unwrap();
    let up = c.upstream.unwrap();
    assert_eq!(up.connections, 7);
    assert_eq!(up.url.addr, UpstreamAddr::Tcp("a:1".into()));
    assert_eq!(c.listen.tcp, Some("127.0.0.1:1".parse().unwrap()));
    let bad = vec![("upstream.connections".to_string(), "-1".to_string())];
    let e = from_str_with("", "f", &bad, &vec![])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("environment") && e.contains("upstream.connections"),
        "{e}"
    );
}

#[test]
fn health_and_local_only() {
    let c = parse("[upstream]\nurl = \"redis://a:1\"\n").unwrap();
    let h = c.upstream.unwrap().health;
    assert_eq!(
        (h.probe_interval, h.probe_timeout, h.recover_after),
        (Duration::from_millis(250), Duration::from_millis(1000), 2)
    );
    assert_eq!(
        c.local_only,
        LocalOnlyConfig {
            enabled: true,
            writes: LocalWrites::Apply,
            on_recovery: OnRecovery::Replay,
            journal_max_bytes: 64 * 1024 * 1024,
            stale_reads: Duration::ZERO,
            rules: Vec::new(),
            serve_before_first_contact: false,
        }
    );
    assert_eq!(h.busy_grace, Duration::from_secs(30));
    let c = parse(
        "[local_only]\non_recovery = \"drop\"\n[[local_only.rule]]\npattern = \"lock:*\"\nwrites = \"refuse\"\n",
    )
    .unwrap();
    assert_eq!(c.local_only.on_recovery, OnRecovery::Drop);
    assert_eq!(
        c.local_only.rules,
        vec![crate::config::local_only::LocalRule {
            pattern: b"lock:*".to_vec(),
            writes: LocalWrites::Refuse
        }]
    );
    let e = parse("[[local_only.rule]]\npattern = \"lock:*\"\nwrites = \"never\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("local_only.rule.writes"), "{e}");
    let e = parse("[health]\nbusy_grace_ms = 10\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("health.busy_grace_ms"), "{e}");
    let c = parse("[local_only]\nwrites = \"refuse\"\nenabled = false\n").unwrap();
    assert_eq!(
        (c.local_only.writes, c.local_only.enabled),
        (LocalWrites::Refuse, false)
    );
    let e = parse("[local_only]\n\nwrites = \"maybe\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`local_only.writes`") && e.contains("line 3"),
        "{e}"
    );
    assert_eq!(
        parse("[local_only]\non_recovery = \"merge\"\n")
            .unwrap()
            .local_only
            .on_recovery,
        OnRecovery::Merge
    );
    let e = parse("[local_only]\non_recovery = \"keep\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`local_only.on_recovery`") && e.contains("drop"),
        "{e}"
    );
    let e = parse("[health]\nprobe_interval_ms = 500\nprobe_timeout_ms = 500\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`health.probe_timeout_ms`") && e.contains("line 3"),
        "{e}"
    );
    let e = parse("[health]\nrecover_after = 0\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("`health.recover_after`"), "{e}");
    let e = parse("[health]\nprobe_every = 1\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("probe_every") && e.contains("line 2"), "{e}");
}

#[test]
fn env_overrides_pick_the_longest_section() {
    let env = env_overrides(vec![
        (
            "RESPITE_LOCAL_ONLY_WRITES".to_string(),
            "refuse".to_string(),
        ),
        (
            "RESPITE_LOCAL_MAX_MEMORY_BYTES".to_string(),
            "5".to_string(),
        ),
        ("RESPITE_HEALTH_RECOVER_AFTER".to_string(), "3".to_string()),
        (
            "RESPITE_NEAR_CACHE_MAX_ENTRY_BYTES".to_string(),
            "7".to_string(),
        ),
    ]);
    assert_eq!(
        env,
        vec![
            ("local_only.writes".to_string(), "refuse".to_string()),
            ("local.max_memory_bytes".to_string(), "5".to_string()),
            ("health.recover_after".to_string(), "3".to_string()),
            ("near_cache.max_entry_bytes".to_string(), "7".to_string()),
        ]
    );
    let c = from_str_with("", "f", &env, &vec![]).unwrap();
    assert_eq!(c.local_only.writes, LocalWrites::Refuse);
    assert_eq!(c.local_max_memory, 5);
}

#[test]
fn no_upstream_means_standalone() {
    assert!(parse("").unwrap().upstream.is_none());
    assert!(
        parse("[upstream]\nurl = \"none\"\n")
            .unwrap()
            .upstream
            .is_none()
    );
}

fn with(settings: &[(&str, &str, &str)], source: &str) -> Result<Config, String> {
    let settings: Vec<Setting> = settings
        .iter()
        .map(|(k, v, o)| Setting::new(k, v, o))
        .collect();
    from_source(source, "proxy.toml", &settings).map_err(|e| e.to_string())
}

#[test]
fn a_bad_override_is_blamed_on_its_source_not_the_file() {
    // A type error (serde's) and a validation error, each from a flag and from a variable.
    let file = "[limits]\nmax_args = 10\n";
    let e = with(
        &[(
            "limits.max_args",
            "lots",
            "command line flag --set limits.max_args",
        )],
        file,
    )
    .unwrap_err();
    assert!(
        e.starts_with("command line flag --set limits.max_args:"),
        "{e}"
    );
    let e = with(
        &[(
            "upstream.connections",
            "0",
            "environment variable RESPITE_UPSTREAM_CONNECTIONS",
        )],
        file,
    )
    .unwrap_err();
    assert!(
        e.starts_with("environment variable RESPITE_UPSTREAM_CONNECTIONS:")
            && e.contains("upstream.connections"),
        "{e}"
    );
    // An unknown key in an override names the override.
    let e = with(
        &[(
            "upstream.conections",
            "3",
            "environment variable RESPITE_UPSTREAM_CONECTIONS",
        )],
        "",
    )
    .unwrap_err();
    assert!(
        e.contains("RESPITE_UPSTREAM_CONECTIONS") && e.contains("conections"),
        "{e}"
    );
    // A flag replaces the environment's bad value: the last setting of a key is the one that counts.
    let c = with(
        &[
            (
                "limits.max_args",
                "lots",
                "environment variable RESPITE_LIMITS_MAX_ARGS",
            ),
            (
                "limits.max_args",
                "12",
                "command line flag --set limits.max_args",
            ),
        ],
        "",
    )
    .unwrap();
    assert_eq!(c.limits.max_args, 12);
    // The file's own type error names its line, though an override is present.
    let e = with(
        &[(
            "limits.max_args",
            "5",
            "command line flag --set limits.max_args",
        )],
        "[upstream]\n\nconnections = \"two\"\n",
    )
    .unwrap_err();
    assert!(e.starts_with("proxy.toml line 3:"), "{e}");
}

#[test]
fn unknown_sections_and_variables_are_named() {
    let e = parse("[listen]\ntcp = \"127.0.0.1:1\"\n\n[upstreem]\nurl = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("upstreem") && e.contains("line 4"), "{e}");
    let e = parse("a = 1\n").unwrap_err().to_string();
    assert!(e.contains("line 1") && e.contains("`a`"), "{e}");
    let vars = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let e = env_settings(vars(&[("RESPITE_UPSTRAEM_URL", "redis://a:1")]))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("RESPITE_UPSTRAEM_URL"), "{e}");
    assert!(env_settings(vars(&[("RESPITE_LISTEN", "x")])).is_err());
    let ok = env_settings(vars(&[
        ("RESPITE_CONFIG", "/etc/respite.toml"),
        ("HOME", "/root"),
        ("REDIS_URL", "redis://b:2"),
        ("RESPITE_UPSTREAM_URL", "redis://a:1"),
    ]))
    .unwrap();
    let got: Vec<(&str, &str)> = ok
        .iter()
        .map(|s| (s.key.as_str(), s.origin.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("upstream.url", "environment variable REDIS_URL"),
            ("upstream.url", "environment variable RESPITE_UPSTREAM_URL"),
        ]
    );
}

#[test]
fn log_levels_tracing_would_not_understand_are_refused() {
    for bad in ["verbose", "info,verbose", "respite=loud", "warning"] {
        let e = parse(&format!("[log]\nlevel = \"{bad}\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("log.level") && e.contains("line 2"),
            "{bad}: {e}"
        );
    }
    for good in [
        "INFO",
        "off",
        "warn,respite=debug",
        "respite::upstream=trace",
    ] {
        assert!(
            parse(&format!("[log]\nlevel = \"{good}\"\n")).is_ok(),
            "{good}"
        );
    }
}

#[test]
fn url_credentials_are_percent_decoded_and_never_shown() {
    let u = parse_url("redis://us%40er:p%40ss%3Aw%2Frd@h:1").unwrap();
    assert_eq!(
        (u.username.as_deref(), u.password.as_deref()),
        (Some("us@er"), Some("p@ss:w/rd"))
    );
    let e = parse_url("redis://u:hunter2@h:99999").unwrap_err();
    assert!(e.contains("port") && !e.contains("hunter2"), "{e}");
    let e = parse_url("redis://u:bad%zz@h:1").unwrap_err();
    assert!(e.contains("password") && !e.contains("bad%zz"), "{e}");
    let debug = format!("{u:?}");
    assert!(
        !debug.contains("p@ss") && debug.contains("<redacted>"),
        "{debug}"
    );
}

#[test]
fn tenant_passwords_never_appear_in_debug() {
    let c = parse(
        "[[tenant]]\nname = \"a\"\nusername = \"alice\"\npassword = \"s3cr3t-pw\"\nprefix = \"a:\"\n\
         [[tenant]]\nname = \"b\"\nusername = \"bob\"\nprefix = \"b:\"\npassword_sha256 = \
         \"2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\"\n\
         [upstream]\nurl = \"redis://:up-pw@h:1\"\n",
    )
    .unwrap();
    let debug = format!("{c:?} {c:#?}");
    for secret in ["s3cr3t-pw", "up-pw", "2bb80d", "43, 184"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
}

#[test]
fn unix_socket_mode_and_owner() {
    let c = parse("[listen]\nunix = \"/tmp/r.sock\"\nunix_mode = \"0660\"\nunix_group = \"100\"\n")
        .unwrap();
    assert_eq!(c.listen.unix_mode, Some(0o660));
    assert_eq!(c.listen.unix_group, Some(Principal::Id(100)));
    for bad in ["660x", "1777", "+660", "rw"] {
        let e = parse(&format!(
            "[listen]\nunix = \"/tmp/r.sock\"\nunix_mode = \"{bad}\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("listen.unix_mode") && e.contains("line 3"),
            "{e}"
        );
    }
    let e = parse("[listen]\nunix_mode = \"0660\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("listen.unix_mode") && e.contains("listen.unix"),
        "{e}"
    );
    // Names through the system's user database (every system has root, user and group 0).
    assert_eq!(Principal::Name("root".into()).uid().unwrap(), Some(0));
    assert_eq!(Principal::Name("root".into()).gid().unwrap(), Some(0));
    assert_eq!(Principal::Id(999).uid().unwrap(), Some(999));
    let nobody = "respite-no-such-user";
    assert_eq!(Principal::Name(nobody.into()).uid().unwrap(), None);
    assert_eq!(Principal::Name(nobody.into()).gid().unwrap(), None);
}

#[test]
fn values_in_dotted_keys_and_inline_tables_have_lines_too() {
    let e = parse("# respite\nupstream.connections = 0\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("upstream.connections") && e.contains("line 2"),
        "{e}"
    );
    let e = parse("\nlimits = { max_args = 1 }\nlocal = { max_memory_bytes = -1 }\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("local.max_memory_bytes") && e.contains("line 3"),
        "{e}"
    );
    let e = parse(
        "[upstream]\nurl = \"redis://a:1\"\n[near_cache]\nenabled = true\nrule = [\n  { pattern = \"*\" },\n  { pattern = \"\" },\n]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("near_cache.rule[1].pattern") && e.contains("line 7"),
        "{e}"
    );
}

#[test]
fn tls_on_both_sides() {
    let u = parse_url("rediss://user:p%40ss@cache.internal:6380/2").unwrap();
    assert!(u.tls);
    assert_eq!(u.host(), "cache.internal");
    assert_eq!(u.password.as_deref(), Some("p@ss"));
    assert_eq!(parse_url("rediss://[::1]:7000").unwrap().host(), "::1");
    assert!(!parse_url("redis://h:1").unwrap().tls);
    let c = parse(
        "[upstream]\nurl = \"rediss://10.0.0.1:6380\"\ntls_ca = \"/ca.pem\"\n\
         [listen]\ntls = \"127.0.0.1:6390\"\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n",
    )
    .unwrap();
    let tls = c.upstream.unwrap().tls.unwrap();
    assert_eq!(tls.server_name, "10.0.0.1", "SNI from the URL's host");
    assert_eq!(tls.cert, None);
    let files = c.listen.tls_files.unwrap();
    assert_eq!(files.client_ca, None);
    assert_eq!(files.key, std::path::PathBuf::from("/k.pem"));
    let named = parse(
        "[upstream]\nurl = \"rediss://10.0.0.1\"\ntls_ca = \"/ca.pem\"\ntls_server_name = \"redis.internal\"\n",
    )
    .unwrap();
    assert_eq!(
        named.upstream.unwrap().tls.unwrap().server_name,
        "redis.internal"
    );
    // Without tls_ca: the system's trust store (read when a connection is opened).
    let system = parse("[upstream]\nurl = \"rediss://h:1\"\n").unwrap();
    assert_eq!(system.upstream.unwrap().tls.unwrap().ca, None);
    for (toml, key, why) in [
        (
            "[upstream]\nurl = \"redis://h:1\"\ntls_ca = \"/x\"\n",
            "upstream.tls_ca",
            "rediss://",
        ),
        (
            "[upstream]\nurl = \"rediss://h:1\"\ntls_ca = \"/x\"\ntls_cert = \"/c\"\n",
            "upstream.tls_key",
            "go together",
        ),
        (
            "[listen]\ntls = \"127.0.0.1:1\"\n",
            "listen.tls_cert",
            "certificate and key",
        ),
        (
            "[listen]\ntls_client_ca = \"/x\"\n",
            "listen.tls_client_ca",
            "without listen.tls",
        ),
    ] {
        let e = parse(toml).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains(why), "{toml}: {e}");
    }
}

#[test]
fn local_maxmemory_policy_is_a_redis_policy_name() {
    assert_eq!(parse("").unwrap().local_eviction, Eviction::AllKeysLru);
    let c = parse("[local]\nmaxmemory_policy = \"volatile-lfu\"\n").unwrap();
    assert_eq!(c.local_eviction, Eviction::VolatileLfu);
    let e = parse("[local]\nmaxmemory_policy = \"lru\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("local.maxmemory_policy"), "{e}");
}

#[test]
fn urls_the_url_standard_refuses_are_refused_naming_key_and_source() {
    for (url, says) in [
        ("redis://bad host:6379", "not a valid URL"),
        ("redis://h:0", "port 0"),
        ("redis://h:65536", "1 to 65535"),
        ("redis://h:1?db=2", "path"),
        ("unix://relative/r.sock", "absolute path"),
        ("redis://:6379", "valid URL"),
    ] {
        let e = parse_url(url).unwrap_err();
        assert!(e.contains(says), "{url}: {e}");
        let e = from_str_with(
            "",
            "proxy.toml",
            &vec![],
            &vec![("upstream.url".into(), url.into())],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("command line: invalid value for `upstream.url`"),
            "{url}: {e}"
        );
    }
    let e = parse("\n[upstream]\nurl = \"redis://bad host:6379\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("proxy.toml line 3:"), "{e}");
    // Still read: a password alone, IPv6, unix paths with an escaped space.
    let u = parse_url("redis://secret@h").unwrap();
    assert_eq!((u.username, u.password.as_deref()), (None, Some("secret")));
    assert_eq!(
        parse_url("redis://[::1]:7000").unwrap().addr,
        UpstreamAddr::Tcp("[::1]:7000".into())
    );
    assert_eq!(
        parse_url("unix:///tmp/a%20b.sock").unwrap().addr,
        UpstreamAddr::Unix("/tmp/a b.sock".into())
    );
}

#[test]
fn an_upstream_that_is_respites_own_listener_is_refused() {
    let flags = |url: &str, listen: &str| -> Overrides {
        vec![
            ("upstream.url".into(), url.into()),
            ("listen.tcp".into(), listen.into()),
        ]
    };
    for (url, listen) in [
        ("redis://127.0.0.1:6380", "127.0.0.1:6380"),
        ("redis://localhost:6380", "127.0.0.1:6380"),
        ("redis://127.0.0.1:7000", "0.0.0.0:7000"),
        ("redis://u:pw@[::1]:6380", "[::]:6380"),
    ] {
        let e = from_str_with("", "proxy.toml", &vec![], &flags(url, listen))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("upstream.url") && e.contains("own listener") && !e.contains("pw@"),
            "{url}: {e}"
        );
    }
    for (url, listen) in [
        ("redis://127.0.0.1:6379", "127.0.0.1:6380"),
        ("redis://10.0.0.1:6380", "127.0.0.1:6380"),
    ] {
        assert!(from_str_with("", "proxy.toml", &vec![], &flags(url, listen)).is_ok());
    }
    let e = parse("[listen]\nunix = \"/run/r.sock\"\n[upstream]\nurl = \"unix:///run/r.sock\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("listen.unix") && e.contains("line 4"), "{e}");
}

/// The shipped proxy.toml holds exactly the built-in defaults (what differs appears only as a
/// commented example), and every key the docs' configuration table lists is in it.
#[test]
fn the_shipped_file_is_the_defaults_and_lists_every_documented_key() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("proxy.toml")).unwrap();
    let default = format!("{:?}", RawConfig::default());
    let table: toml::Table = toml::from_str(&shipped).expect("proxy.toml is TOML");
    let mut keys = std::collections::BTreeSet::new();
    for (section, v) in &table {
        let toml::Value::Table(t) = v else {
            panic!("top-level `{section}` is not a section")
        };
        for (key, value) in t {
            keys.insert(format!("{section}.{key}"));
            // Each key alone, so a difference names its key.
            let one = format!("[{section}]\n{key} = {value}\n");
            let raw: RawConfig = toml::from_str(&one).unwrap();
            assert_eq!(
                format!("{raw:?}"),
                default,
                "proxy.toml: {section}.{key} = {value} is not the default"
            );
        }
    }
    let raw: RawConfig = toml::from_str(&shipped).unwrap();
    assert_eq!(format!("{raw:?}"), default);
    // The documented keys: the first column of the configuration tables (`section.key`).
    let mut docs = std::fs::read_to_string(root.join("README.md")).unwrap();
    if let Ok(dir) = std::fs::read_dir(root.join("docs")) {
        for f in dir.flatten() {
            docs.push_str(&std::fs::read_to_string(f.path()).unwrap_or_default());
        }
    }
    let mut missing = Vec::new();
    for line in docs.lines().filter(|l| l.starts_with("| `")) {
        let first = line.split('|').nth(1).unwrap_or("");
        if first.contains("[[") || first.contains("[]") {
            continue;
        }
        for key in first.split('`').skip(1).step_by(2) {
            let Some((section, _)) = key.split_once('.') else {
                continue;
            };
            let sections = [
                "listen",
                "limits",
                "upstream",
                "admin",
                "log",
                "runtime",
                "local",
                "health",
                "local_only",
                "near_cache",
            ];
            if sections.contains(&section) && !keys.contains(key) {
                missing.push(key.to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "documented, not in proxy.toml: {missing:?}"
    );
}

#[test]
fn a_tenant_database_is_its_own() {
    let tenant = |name: &str, prefix: &str, db: &str| {
        format!(
            "[[tenant]]\nname = \"{name}\"\nusername = \"{name}\"\npassword = \"pw-{name}\"\nprefix = \"{prefix}\"\nallow = [\"@all\"]\n{db}\n"
        )
    };
    let up = "[upstream]\nurl = \"redis://h:1/2\"\n";
    let c = parse(&format!(
        "{up}{}{}",
        tenant("a", "a:", "db = 3"),
        tenant("b", "b:", "")
    ))
    .unwrap();
    let t = c.tenants.unwrap();
    assert_eq!((t.tenants[0].db, t.tenants[1].db), (Some(3), None));
    for (toml, key, says) in [
        (
            format!(
                "{up}{}{}",
                tenant("a", "a:", "db = 3"),
                tenant("b", "b:", "db = 3")
            ),
            "tenant[1].db",
            "also tenant[0]'s",
        ),
        (
            format!("{up}{}", tenant("a", "a:", "db = 2")),
            "tenant[0].db",
            "upstream.url's",
        ),
        (
            format!("{up}{}", tenant("a", "", "db = 3")),
            "tenant[0].db",
            "needs a prefix",
        ),
        (
            format!("{up}{}", tenant("a", "a:", "db = -1")),
            "tenant[0].db",
            "from 0",
        ),
        (
            tenant("a", "a:", "db = 3"),
            "tenant[0].db",
            "needs an upstream",
        ),
        (
            format!(
                "[upstream]\nurl = \"redis+cluster://h:1\"\n{}",
                tenant("a", "a:", "db = 3")
            ),
            "tenant[0].db",
            "database 0 only",
        ),
    ] {
        let e = parse(&toml).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains(says), "{e}");
    }
}

#[test]
fn reads_from_replicas_need_a_cluster() {
    let on = "read_from_replicas = true\n";
    let c = parse(&format!("[upstream]\nurl = \"redis+cluster://h:1\"\n{on}")).unwrap();
    assert!(c.upstream.as_ref().unwrap().read_from_replicas);
    let off = parse("[upstream]\nurl = \"redis+cluster://h:1\"\n").unwrap();
    assert!(!off.upstream.unwrap().read_from_replicas);
    let e = parse(&format!("[upstream]\nurl = \"redis://h:1\"\n{on}"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("upstream.read_from_replicas"), "{e}");
}
