//! Unmodified clients (redis-rs over RESP2 and RESP3, redis-cli, redis-benchmark, redis-py), each
//! running a realistic workload through respite; every reply is compared with the same workload
//! run directly on the upstream (flushed in between, so both runs see the same state).
use crate::both;
use crate::support::{Kind, Proxy, Server, python, words};
use std::process::Command;

fn flush(server: &Server) {
    assert_eq!(server.raw().cmd(&words("FLUSHALL")), b"+OK\r\n");
}

async fn redis_rs_workload(url: String) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let script: &[&str] = &[
        "SET user:1 ada",
        "GET user:1",
        "SET ttl:1 x EX 1000",
        "TTL ttl:1",
        "SET lock:1 me NX PX 100000",
        "SET lock:1 you NX PX 100000",
        "INCR rate:1",
        "EXPIRE rate:1 60",
        "HSET h name ada lang en",
        "HGETALL h",
        "HMGET h name nope",
        "RPUSH q a b c",
        "LRANGE q 0 -1",
        "SADD s x y z",
        "SISMEMBER s y",
        "ZADD board 30 alice 20 bob 25 carol",
        "ZREVRANGE board 0 -1 WITHSCORES",
        "ZSCORE board bob",
        "ZRANGEBYSCORE board 21 +inf",
        "XADD st 1-1 k v",
        "XRANGE st - +",
        "GET nosuch",
        "GET h",
        "NOSUCHCOMMAND x",
        "MGET user:1 nosuch",
        "DBSIZE",
    ];
    let mut out = Vec::new();
    for line in script {
        let mut cmd = redis::cmd(line.split(' ').next().unwrap());
        for a in line.split(' ').skip(1) {
            cmd.arg(a);
        }
        let r: redis::RedisResult<redis::Value> = cmd.query_async(&mut con).await;
        out.push(format!("{line} => {r:?}"));
    }
    let mut pipe = redis::pipe();
    for i in 0..100 {
        pipe.cmd("SET")
            .arg(format!("p:{i}"))
            .arg(i)
            .cmd("GET")
            .arg(format!("p:{i}"));
    }
    let r: redis::RedisResult<Vec<redis::Value>> = pipe.query_async(&mut con).await;
    out.push(format!("pipeline => {r:?}"));
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("p:*")
        .query_async(&mut con)
        .await
        .unwrap();
    keys.sort();
    out.push(format!("keys => {keys:?}"));
    out
}

fn compare_redis_rs(kind: Kind, query: &str) {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let direct = rt.block_on(redis_rs_workload(format!("{}/{query}", server.url())));
    flush(&server);
    let proxied = rt.block_on(redis_rs_workload(format!("{}/{query}", proxy.url())));
    assert_eq!(proxied, direct);
}

both!(
    redis_rs_resp2_matches_direct,
    |kind: Kind| compare_redis_rs(kind, "")
);
both!(
    redis_rs_resp3_matches_direct,
    |kind: Kind| compare_redis_rs(kind, "?protocol=resp3")
);

fn redis_cli(port: u16, extra: &[&str], args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(extra)
        .args(args);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("redis-cli (scripts/test.sh installs redis-tools)");
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

both!(redis_cli_matches_direct, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    let run = |port: u16| {
        let mut out = Vec::new();
        for args in [
            "SET k1 hello",
            "GET k1",
            "HSET h a 1 b 2",
            "HGETALL h",
            "ZADD z 1 a 2 b",
            "ZRANGE z 0 -1 WITHSCORES",
            "GET missing",
            "LPUSH k1 x",
        ] {
            let args: Vec<&str> = args.split(' ').collect();
            // Each command in RESP2, then in RESP3 (redis-cli -3).
            for extra in [&[][..], &["-3"][..]] {
                out.push(redis_cli(port, extra, &args, None));
            }
        }
        // Commands read from standard input, one per line, as a script would pipe them.
        out.push(redis_cli(
            port,
            &[],
            &[],
            Some("INCR n\nINCR n\nGET n\nMGET k1 n\n"),
        ));
        out
    };
    let direct = run(server.port);
    flush(&server);
    let proxied = run(proxy.port());
    assert_eq!(proxied, direct);
    assert!(direct.iter().any(|o| o.contains("hello")), "{direct:?}");
});

both!(
    redis_benchmark_runs_clean_and_counts_exactly,
    |kind: Kind| {
        let server = Server::start(kind);
        let proxy = Proxy::start(&server.url());
        let port = proxy.port().to_string();
        let out = Command::new("redis-benchmark")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-n",
                "5000",
                "-c",
                "50",
                "-P",
                "4",
                "-q",
            ])
            .args([
                "-t",
                "set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin,lrange_100,mset",
            ])
            .output()
            .expect("redis-benchmark (scripts/test.sh installs redis-tools)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(!text.contains("ERR"), "{text}");
        for t in ["SET:", "GET:", "INCR:", "ZADD:", "MSET (10 keys):"] {
            assert!(text.contains(t), "no {t} result in:\n{text}");
        }
        // Without -r every INCR hits the one key: exactly 5,000 increments, none lost or doubled.
        let count = server.raw().cmd(&words("GET counter:__rand_int__"));
        assert_eq!(String::from_utf8_lossy(&count), "$4\r\n5000\r\n");
    }
);

fn redis_py(port: u16, proto: u8) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/workload.py");
    python(&[script, &port.to_string(), &proto.to_string()])
}

both!(redis_py_matches_direct, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    for proto in [2, 3] {
        let direct = redis_py(server.port, proto);
        flush(&server);
        let proxied = redis_py(proxy.port(), proto);
        flush(&server);
        assert_eq!(proxied, direct, "RESP{proto}");
        assert!(direct.lines().count() > 30);
    }
});
