//! SELECT in the middle of a pipeline (issue 21, finding 9): every command runs in the database
//! the client had selected when it sent it, however the pipeline mixes SELECT with reads, writes,
//! MULTI/EXEC, WATCH and blocking commands, and however it arrives (one write). Judged by what
//! each database holds upstream, read over a direct connection (`SELECT n`, `KEYS`, `GET`,
//! `LRANGE`), against a model of where each write must land, and by the replies the same
//! pipeline gets from the server directly.
use crate::both;
use crate::support::{Kind, Proxy, Raw, Server, encode, words};
use std::collections::BTreeMap;

/// Databases the pipelines move between.
const DBS: u32 = 4;

/// A key's value as the model holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Val {
    Str(String),
    List(Vec<String>),
}

/// Where each write must land: the database selected when the client sent it (or, inside
/// MULTI, when EXEC ran the queued commands in order).
struct Model {
    db: usize,
    data: Vec<BTreeMap<String, Val>>,
    /// Commands queued since MULTI, run at EXEC, dropped by DISCARD.
    queued: Option<Vec<Vec<String>>>,
}

impl Model {
    fn new() -> Model {
        Model {
            db: 0,
            data: vec![BTreeMap::new(); DBS as usize],
            queued: None,
        }
    }

    fn apply(&mut self, cmd: &[String]) {
        let name = cmd[0].to_ascii_uppercase();
        if let Some(q) = &mut self.queued {
            match name.as_str() {
                "EXEC" => {
                    for c in self.queued.take().unwrap() {
                        self.run(&c);
                    }
                }
                "DISCARD" => self.queued = None,
                _ => q.push(cmd.to_vec()),
            }
            return;
        }
        if name == "MULTI" {
            self.queued = Some(Vec::new());
        } else {
            self.run(cmd);
        }
    }

    fn run(&mut self, cmd: &[String]) {
        let db = &mut self.data[self.db];
        match cmd[0].to_ascii_uppercase().as_str() {
            "SELECT" => self.db = cmd[1].parse().unwrap(),
            "SET" => {
                db.insert(cmd[1].clone(), Val::Str(cmd[2].clone()));
            }
            "APPEND" => {
                let old = match db.get(&cmd[1]) {
                    Some(Val::Str(s)) => s.clone(),
                    _ => String::new(),
                };
                db.insert(cmd[1].clone(), Val::Str(old + &cmd[2]));
            }
            "INCR" => {
                let n: i64 = match db.get(&cmd[1]) {
                    Some(Val::Str(s)) => s.parse().unwrap(),
                    _ => 0,
                };
                db.insert(cmd[1].clone(), Val::Str((n + 1).to_string()));
            }
            "DEL" => {
                db.remove(&cmd[1]);
            }
            "RPUSH" => {
                let entry = db
                    .entry(cmd[1].clone())
                    .or_insert_with(|| Val::List(Vec::new()));
                let Val::List(l) = entry else {
                    panic!("not a list")
                };
                l.push(cmd[2].clone());
            }
            "LPOP" | "BLPOP" => {
                if let Some(Val::List(l)) = db.get_mut(&cmd[1]) {
                    l.remove(0);
                    if l.is_empty() {
                        db.remove(&cmd[1]);
                    }
                }
            }
            "GET" | "WATCH" | "UNWATCH" | "PING" => {}
            other => panic!("the model has no {other}"),
        }
    }
}

/// Parse a RESP2 reply from a direct connection: a bulk string or an array of them.
fn bulks(reply: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(reply);
    let mut lines = text.split("\r\n");
    let head = lines.next().unwrap();
    let n: usize = match head.as_bytes()[0] {
        b'*' => head[1..].parse().unwrap(),
        b'$' => return vec![lines.next().unwrap().to_string()],
        _ => panic!("not bulks: {text}"),
    };
    (0..n)
        .map(|_| {
            lines.next().unwrap();
            lines.next().unwrap().to_string()
        })
        .collect()
}

/// What each database holds upstream, read over a direct connection.
fn upstream_state(server: &Server) -> Vec<BTreeMap<String, Val>> {
    let mut c = server.raw();
    (0..DBS)
        .map(|db| {
            c.cmd(&[b"SELECT", db.to_string().as_bytes()]);
            let mut keys = bulks(&c.cmd(&words("KEYS *")));
            keys.sort();
            keys.into_iter()
                .map(|k| {
                    let kind = c.cmd(&[b"TYPE", k.as_bytes()]);
                    let val = match &kind[..] {
                        b"+string\r\n" => {
                            Val::Str(bulks(&c.cmd(&[b"GET", k.as_bytes()])).remove(0))
                        }
                        b"+list\r\n" => {
                            Val::List(bulks(&c.cmd(&[b"LRANGE", k.as_bytes(), b"0", b"-1"])))
                        }
                        other => panic!("{k}: {}", String::from_utf8_lossy(other)),
                    };
                    (k, val)
                })
                .collect()
        })
        .collect()
}

fn flush(server: &Server) {
    server.raw().cmd(&words("FLUSHALL"));
}

/// Send `pipeline` in one write (after HELLO 3 when `resp3`) and read one reply per command.
fn run(c: &mut Raw, pipeline: &[Vec<String>], resp3: bool) -> Vec<String> {
    if resp3 {
        c.cmd(&words("HELLO 3"));
    }
    let mut out = Vec::new();
    for cmd in pipeline {
        let args: Vec<&[u8]> = cmd.iter().map(|a| a.as_bytes()).collect();
        out.extend_from_slice(&encode(&args));
    }
    c.send(&out);
    pipeline
        .iter()
        .map(|cmd| {
            let reply = c.reply().expect("a reply");
            format!("{} -> {}", cmd.join(" "), String::from_utf8_lossy(&reply))
        })
        .collect()
}

/// Run `pipeline` directly and through respite on a flushed server: the same replies, and each
/// database upstream holds what the model says (checked for the direct run too, so the model
/// itself is held to the server).
fn check(server: &Server, proxy: &Proxy, pipeline: &[Vec<String>], resp3: bool, what: &str) {
    let mut model = Model::new();
    for cmd in pipeline {
        model.apply(cmd);
    }
    flush(server);
    let direct = run(&mut server.raw(), pipeline, resp3);
    assert_eq!(
        upstream_state(server),
        model.data,
        "{what}: the model, directly"
    );
    flush(server);
    let proxied = run(&mut proxy.raw(), pipeline, resp3);
    assert_eq!(
        upstream_state(server),
        model.data,
        "{what}: what respite wrote, by database"
    );
    assert_eq!(proxied, direct, "{what}: replies");
}

fn pipeline(lines: &str) -> Vec<Vec<String>> {
    lines
        .split(';')
        .map(|c| c.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|c| !c.is_empty())
        .collect()
}

/// Pipelines sent in one write, each moving between databases more than once.
const SCRIPTED: &[&str] = &[
    // The issue's own: the second SELECT overtook `SET foo 3`.
    "SET foo 2; SELECT 3; SET foo 3; SELECT 0; GET foo; SELECT 3; GET foo",
    "SELECT 1; SET a 1; SELECT 2; SET a 2; SELECT 3; SET a 3; SELECT 0; SET a 0; GET a",
    "SELECT 2; SET a x; APPEND a y; SELECT 2; APPEND a z; SELECT 1; SET a w; SELECT 0; GET a",
    // Transactions, with SELECT before, inside and after them.
    "SELECT 1; MULTI; SET t 1; INCR n; EXEC; SELECT 2; MULTI; SET t 2; SELECT 3; SET t 3; EXEC; SET u 3; SELECT 0; SET u 0",
    "SET a 0; SELECT 2; MULTI; SET a 2; DISCARD; SET b 2; SELECT 0; MULTI; SET c 0; EXEC; SELECT 1; SET d 1",
    // WATCH pins the connection; SELECT moves it on.
    "SELECT 1; WATCH w; SET x 1; SELECT 2; SET x 2; MULTI; SET y 2; EXEC; SELECT 0; SET y 0",
    "WATCH w; SELECT 3; MULTI; SET w 3; EXEC; SELECT 1; SET w 1; SELECT 0; GET w",
    // Blocking commands (answered at once, or timing out) among SELECTs.
    "SELECT 1; RPUSH l a; RPUSH l b; SELECT 2; RPUSH l c; BLPOP l 1; SELECT 1; BLPOP l 1; SELECT 0; SET z 0",
    "SELECT 2; BLPOP empty 0.01; SET after 2; SELECT 3; SET after 3; SELECT 0; BLPOP empty 0.01; SET after 0",
    // Ending in another database, then the configured one again, many times over.
    "SELECT 1; SET k 1; SELECT 0; SET k 0; SELECT 1; INCR c; SELECT 0; INCR c; SELECT 1; INCR c; SELECT 0; GET k; GET c",
];

both!(select_in_a_pipeline_never_overtakes, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    for resp3 in [false, true] {
        for lines in SCRIPTED {
            check(
                &server,
                &proxy,
                &pipeline(lines),
                resp3,
                &format!("resp3 {resp3}: {lines}"),
            );
        }
    }
});

/// A small deterministic generator (xorshift64*), so a failing pipeline is reproduced by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A pipeline of at most about 60 commands: plain reads and writes, SELECTs, transactions
/// (with SELECT inside, some discarded), WATCH blocks and blocking pops, in random order.
fn generate(rng: &mut Rng) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut value = 0;
    let mut v = |rng: &mut Rng| {
        value += 1;
        format!("v{value}-{}", rng.below(10))
    };
    let key = |rng: &mut Rng| format!("s{}", rng.below(3));
    let simple = |rng: &mut Rng, v: &mut dyn FnMut(&mut Rng) -> String| -> Vec<String> {
        let k = key(rng);
        match rng.below(6) {
            0 | 1 => vec!["SET".into(), k, v(rng)],
            2 => vec!["GET".into(), k],
            3 => vec!["APPEND".into(), k, v(rng)],
            4 => vec!["INCR".into(), "n".into()],
            _ => vec!["DEL".into(), k],
        }
    };
    let blocks = 4 + rng.below(16);
    for _ in 0..blocks {
        match rng.below(10) {
            0..=2 => out.push(vec!["SELECT".into(), rng.below(DBS as u64).to_string()]),
            3..=5 => out.push(simple(rng, &mut v)),
            6 => {
                out.push(vec!["MULTI".into()]);
                for _ in 0..1 + rng.below(3) {
                    if rng.below(3) == 0 {
                        out.push(vec!["SELECT".into(), rng.below(DBS as u64).to_string()]);
                    }
                    out.push(simple(rng, &mut v));
                }
                let end = if rng.below(4) == 0 { "DISCARD" } else { "EXEC" };
                out.push(vec![end.into()]);
            }
            7 => {
                // Nothing in the pipeline touches `w`, so the EXEC always runs.
                out.push(vec!["WATCH".into(), "w".into()]);
                if rng.below(2) == 0 {
                    out.push(vec!["SELECT".into(), rng.below(DBS as u64).to_string()]);
                }
                out.push(vec!["MULTI".into()]);
                out.push(simple(rng, &mut v));
                out.push(vec!["EXEC".into()]);
            }
            8 => {
                let val = v(rng);
                out.push(vec!["RPUSH".into(), "l".into(), val]);
                out.push(vec!["BLPOP".into(), "l".into(), "1".into()]);
            }
            _ => out.push(vec!["BLPOP".into(), "empty".into(), "0.01".into()]),
        }
    }
    out
}

both!(random_pipelines_write_where_the_model_says, |kind: Kind| {
    let server = Server::start(kind);
    let proxy = Proxy::start(&server.url());
    // Bounded: 30 pipelines of at most ~60 commands each per server, RESP2 and RESP3 alternating.
    for seed in 1..=30u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let p = generate(&mut rng);
        let shown: Vec<String> = p.iter().map(|c| c.join(" ")).collect();
        check(
            &server,
            &proxy,
            &p,
            seed % 2 == 0,
            &format!("seed {seed}: {}", shown.join("; ")),
        );
    }
});
