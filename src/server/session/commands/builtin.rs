//! Commands the session answers itself, with the replies Redis gives: PING (where respite is the
//! server; an upstream in service answers it), ECHO, HELLO, QUIT,
//! RESET, AUTH, CLIENT SETNAME/GETNAME/ID/INFO/SETINFO, and INFO for a tenant with a key
//! prefix (or without an upstream).
//!
//! These touch only the client's own state in [`Client`] (reached through the reader's fields,
//! as a stage of the session); they must never reach a shared upstream connection, where they
//! would change state for every client multiplexed on it.
use crate::command::CommandSpec;
use crate::policy::info;
use crate::protocol::{Protocol, Request, encode};
use crate::server::session::{Client, Flow, Reader};
use bytes::{Bytes, BytesMut};

pub(in crate::server::session) async fn answer(
    r: &mut Reader<'_>,
    spec: &'static CommandSpec,
    req: &Request,
) -> Flow {
    let args = &req.args;
    let mut out = BytesMut::new();
    match spec.name {
        // While an upstream serves, PING is its to answer: `-BUSY` while a script runs past its
        // time limit, `-LOADING` while it loads (what a client's health check must see). respite
        // answers only where it is the server (standalone, local-only mode).
        // (A client whose pinned connection failed under it is answered here: nothing of its
        // would reach the upstream.)
        "ping"
            if r.shared.upstream.is_some()
                && r.shared.answerer(spec, args).is_none()
                && !r.out.pin.held().is_some_and(|p| p.is_closed()) =>
        {
            r.enter_lane(spec).await;
            r.forward(spec, req).await;
            return Flow::Continue;
        }
        "ping" => match &args[..] {
            [_] => encode::simple(&mut out, "PONG"),
            [_, msg] => encode::bulk(&mut out, msg),
            _ => encode::error(&mut out, "ERR wrong number of arguments for 'ping' command"),
        },
        "echo" => encode::bulk(&mut out, &args[1]),
        "quit" => {
            r.end_monitor().await;
            encode::simple(&mut out, "OK");
            r.reply(out).await;
            return Flow::Close;
        }
        "reset" => {
            r.end_monitor().await;
            // The pinned connection's own reset clears what the client set on it.
            r.unpin().await;
            if r.client.proto != Protocol::Resp2 {
                r.barrier().await;
            }
            let db = upstream_db(r);
            let default = r.tenants.as_ref().and_then(|t| t.default_tenant().cloned());
            let c = &mut r.client;
            c.proto = Protocol::Resp2;
            c.name = None;
            c.user = "default".into();
            c.tenant = default;
            c.db = db;
            encode::simple(&mut out, "RESET");
        }
        "auth" if r.tenants.is_none() && r.shared.upstream.is_some() => {
            Box::pin(r.auth_upstream(req)).await;
            return Flow::Continue;
        }
        "auth" => match auth(r, &args[1..]).await {
            Ok(user) => {
                r.client.user = user;
                encode::simple(&mut out, "OK");
            }
            Err(e) => encode::error(&mut out, &e),
        },
        "hello" => return hello(r, args).await,
        "select" => {
            Box::pin(r.select(req)).await;
            return Flow::Continue;
        }
        "client|setname" | "client|getname" | "client|id" | "client|info" | "client|setinfo" => {
            r.answer_client(spec.name, args, &mut out);
        }
        other => encode::error(
            &mut out,
            &format!("ERR respite has no local answer for '{other}'"),
        ),
    }
    r.reply(out).await;
    Flow::Continue
}

impl Reader<'_> {
    /// CLIENT SETNAME, GETNAME, ID, INFO and SETINFO, answered into `out` from (and applied to)
    /// the client's own state, as Redis answers them: on their own here, and in their place in
    /// EXEC's array ([`super::exec_splice`]). False, with nothing written, for any other command.
    pub(in crate::server::session) fn answer_client(
        &mut self,
        name: &str,
        args: &[Bytes],
        out: &mut BytesMut,
    ) -> bool {
        let proto = self.client.proto;
        match name {
            "client|setname" => match valid_name(&args[2]) {
                Ok(()) => {
                    self.client.name = (!args[2].is_empty()).then(|| args[2].clone());
                    encode::simple(out, "OK");
                }
                Err(e) => encode::error(out, e),
            },
            "client|getname" => match &self.client.name {
                Some(n) => encode::bulk(out, n),
                None => encode::null(out, proto),
            },
            "client|id" => encode::integer(out, self.client.id as i64),
            "client|info" => {
                let line = super::clients::own_line(self, args);
                encode::verbatim(out, proto, "txt", line.as_bytes());
            }
            "client|setinfo" => match setinfo(&mut self.client, &args[2], &args[3]) {
                Ok(()) => encode::simple(out, "OK"),
                Err(e) => encode::error(out, &e),
            },
            _ => return false,
        }
        true
    }
}

fn upstream_db(r: &Reader<'_>) -> u32 {
    r.shared
        .config
        .upstream
        .as_ref()
        .map(|u| u.url.db)
        .unwrap_or(0)
}

/// `AUTH [username] password`. With tenants configured, the credentials choose the tenant
/// (repeated failures from one peer are answered ever more slowly); without them, respite behaves
/// as Redis does with the default user on `nopass`. Returns the user name for CLIENT INFO.
async fn auth(r: &mut Reader<'_>, args: &[Bytes]) -> Result<String, String> {
    let (user, password): (&[u8], &[u8]) = match args {
        [password] => (b"default", password),
        [user, password] => (user, password),
        _ => return Err("ERR syntax error".into()),
    };
    let Some(tenants) = r.tenants.clone() else {
        return match args {
            [_] => Err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?".into()),
            _ if user == b"default" => Ok("default".into()),
            _ => Err("WRONGPASS invalid username-password pair or user is disabled.".into()),
        };
    };
    let peer = r
        .client
        .peer
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    match tenants.authenticate(user, password) {
        Ok(tenant) => {
            r.shared.auth_failures.succeeded(peer, user);
            let name = tenant.user_label().to_string();
            r.client.tenant = Some(tenant);
            Ok(name)
        }
        Err(e) => {
            crate::policy::metrics::auth_failure(None);
            let delay = r
                .shared
                .auth_failures
                .failed(peer, user, std::time::Instant::now());
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Err(e.to_string())
        }
    }
}

/// INFO for a client whose tenant has a key prefix, when there is no upstream, or while local-only
/// mode answers: the upstream's own INFO would describe other tenants (or cannot be had), so
/// respite answers with the tenant's own view and facts shared by every tenant
/// ([`crate::policy::info`]). For the memory and keyspace sections it reads the upstream's INFO,
/// on the client's own connection so the reply keeps its place, and takes only the limits and the
/// tenant's own database's line from it.
pub(in crate::server::session) async fn tenant_info(
    r: &mut Reader<'_>,
    args: &[Bytes],
) -> BytesMut {
    let (server_name, version) = match r.shared.upstream.as_ref().and_then(|u| u.server_info()) {
        Some(i) => (i.server, i.version),
        None => ("redis".to_string(), "7.0.0".to_string()),
    };
    let mode = serving_mode(r);
    let sections: Vec<&[u8]> = args[1..].iter().map(|a| &a[..]).collect();
    let mut upstream = match mode == "proxy" && info::needs_upstream(&sections) {
        true => upstream_facts(r).await,
        false => info::UpstreamFacts::default(),
    };
    if mode == "proxy" && info::needs_blocked(&sections) {
        upstream.blocked_clients = blocked_clients(r).await;
    }
    tenant_info_with(r, args, upstream, server_name, version)
}

/// Tenant INFO from facts at hand (inside a transaction, at EXEC: without the upstream's).
fn tenant_info_with(
    r: &mut Reader<'_>,
    args: &[Bytes],
    upstream: info::UpstreamFacts,
    server_name: String,
    version: String,
) -> BytesMut {
    let mode = serving_mode(r);
    let sections: Vec<&[u8]> = args[1..].iter().map(|a| &a[..]).collect();
    let tenant = r.client.tenant.clone();
    let facts = info::InfoFacts {
        server_name,
        version,
        mode,
        tcp_port: r
            .client
            .local_addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(0),
        clients: r.tenant_clients(),
        max_clients: r.shared.config.listen.max_clients,
        commands: tenant
            .as_deref()
            .map_or(0, crate::policy::metrics::commands_seen),
        upstream,
    };
    let text = info::render(&facts, &sections);
    let mut out = BytesMut::new();
    encode::verbatim(&mut out, r.client.proto, "txt", text.as_bytes());
    out
}

/// Who answers this client now, as tenant INFO's `respite_mode` says: `standalone` (no upstream),
/// `local-only` (the local engine, the upstream down), or `proxy` (the upstream, whose INFO the
/// tenant's INFO and CONFIG GET read their shared limits from).
fn serving_mode(r: &Reader<'_>) -> &'static str {
    match &r.shared.health {
        None => "standalone",
        Some(h) if r.shared.engine.is_some() && h.state().is_local() && !h.rejected() => {
            "local-only"
        }
        Some(_) => "proxy",
    }
}

/// The fields of the upstream's INFO a tenant may see ([`info::UpstreamFacts`]), read on the
/// client's own connection after everything it sent before; none if the upstream does not answer.
async fn upstream_facts(r: &mut Reader<'_>) -> info::UpstreamFacts {
    r.send_group().await;
    let rx = r
        .upstream_send(Bytes::from_static(b"*1\r\n$4\r\nINFO\r\n"), 1, None)
        .await;
    let mut facts = info::UpstreamFacts::default();
    if let Ok(Ok(reply)) = rx.await {
        let db = r.client.tenant.as_ref().and_then(|t| t.db);
        facts = info::UpstreamFacts::from_info(&String::from_utf8_lossy(&reply), db);
    }
    r.took_reply();
    facts
}

/// How many of the tenant's clients are blocked now. Only the upstream knows whether a BLPOP
/// is waiting or already answered, so it is asked about the pinned connections the tenant's
/// clients hold (blocking commands run there), by id: never about another tenant's.
async fn blocked_clients(r: &mut Reader<'_>) -> usize {
    let leases = r.tenant_leases();
    if leases.is_empty() {
        return 0;
    }
    let ids: Vec<String> = leases.iter().map(u64::to_string).collect();
    let mut words: Vec<&[u8]> = vec![b"CLIENT", b"LIST", b"ID"];
    words.extend(ids.iter().map(|i| i.as_bytes()));
    let mut command = BytesMut::new();
    crate::protocol::encode::command(&mut command, &words);
    r.send_group().await;
    let rx = r.upstream_send(command.freeze(), 1, None).await;
    let blocked = match rx.await {
        Ok(Ok(reply)) => info::count_blocked(&String::from_utf8_lossy(&reply)),
        _ => 0,
    };
    r.took_reply();
    blocked
}

/// CONFIG GET for a prefixed tenant: the safe subset [`info::config_get`] allows, as Redis
/// replies (a flat array in RESP2, a map in RESP3). The upstream's limits come from its INFO.
pub(in crate::server::session) async fn tenant_config_get(
    r: &mut Reader<'_>,
    args: &[Bytes],
) -> BytesMut {
    let proxy = serving_mode(r) == "proxy";
    let upstream = match proxy {
        true => upstream_facts(r).await,
        false => info::UpstreamFacts::default(),
    };
    let mut out = tenant_config_get_with(r, args, &upstream);
    let allowed = r
        .client
        .tenant
        .as_ref()
        .map(|t| t.server_config.clone())
        .unwrap_or_default();
    if proxy && !allowed.is_empty() && args.len() > 2 {
        // The server parameters `tenant.server_config` lets it read, as the upstream has them.
        let mut cmd = BytesMut::new();
        encode::command(&mut cmd, args);
        let rx = r.upstream_send(cmd.freeze(), 1, None).await;
        let reply = match rx.await {
            Ok(Ok(reply)) => reply,
            _ => Bytes::new(),
        };
        r.took_reply();
        let own: Vec<Vec<u8>> = match crate::protocol::value::parse(&out) {
            Ok(v) => v
                .items()
                .unwrap_or_default()
                .iter()
                .step_by(2)
                .filter_map(|n| n.bulk().map(<[u8]>::to_vec))
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if let Ok(v) = crate::protocol::value::parse(&reply) {
            for kv in v.items().unwrap_or_default().chunks(2) {
                if let [k, val] = kv
                    && let (Some(k), Some(val)) = (k.bulk(), val.bulk())
                    && info::server_param(&allowed, k)
                    && !own.iter().any(|o| o.eq_ignore_ascii_case(k))
                {
                    pairs.push((k.to_vec(), val.to_vec()));
                }
            }
        }
        if !pairs.is_empty() {
            let mut merged = BytesMut::new();
            encode::map_header(&mut merged, r.client.proto, own.len() + pairs.len());
            // Respite's own pairs as encoded, after their header line (`*N` or `%N`).
            let header = out.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
            merged.extend_from_slice(&out[header..]);
            for (k, v) in pairs {
                encode::bulk(&mut merged, &k);
                encode::bulk(&mut merged, &v);
            }
            out = merged;
        }
    }
    out
}

/// Tenant CONFIG GET from facts at hand (inside a transaction, at EXEC: without the upstream's).
fn tenant_config_get_with(
    r: &mut Reader<'_>,
    args: &[Bytes],
    upstream: &info::UpstreamFacts,
) -> BytesMut {
    let patterns: Vec<&[u8]> = args[2..].iter().map(|a| &a[..]).collect();
    let idle = r
        .shared
        .config
        .sessions
        .idle_timeout
        .map_or(0, |t| t.as_secs());
    let notify = r.client.tenant.as_ref().map_or(0, |t| t.events.get());
    let pairs = info::config_get(&patterns, upstream, idle, notify);
    let mut out = BytesMut::new();
    encode::map_header(&mut out, r.client.proto, pairs.len());
    for (name, value) in pairs {
        encode::bulk(&mut out, name.as_bytes());
        encode::bulk(&mut out, value.as_bytes());
    }
    out
}

/// CONFIG SET of a prefixed tenant's own `notify-keyspace-events` (the caller checked
/// [`info::config_set`] takes it): it chooses which of its keys' notifications reach every
/// subscriber of the tenant, at once; the upstream's own setting is not touched.
pub(in crate::server::session) fn tenant_config_set(
    r: &mut Reader<'_>,
    args: &[Bytes],
) -> BytesMut {
    let mut out = BytesMut::new();
    match (info::config_set(args), &r.client.tenant) {
        (Some(Ok(flags)), Some(t)) => {
            t.events.set(flags);
            encode::simple(&mut out, "OK");
        }
        (Some(Err(e)), _) => encode::error(&mut out, &e),
        _ => encode::error(&mut out, "ERR no tenant"),
    }
    out
}

/// A prefixed tenant's INFO or CONFIG GET queued in a transaction, answered at EXEC in its place
/// (see `exec_splice`): without the upstream's fields (its limits and the tenant database's
/// keyspace line), which would take a round trip of their own in the middle of EXEC's reply.
pub(in crate::server::session) fn tenant_answer_in_exec(
    r: &mut Reader<'_>,
    name: &str,
    args: &[Bytes],
) -> BytesMut {
    let none = info::UpstreamFacts::default();
    if name == "config|get" {
        return tenant_config_get_with(r, args, &none);
    }
    let (server_name, version) = match r.shared.upstream.as_ref().and_then(|u| u.server_info()) {
        Some(i) => (i.server, i.version),
        None => ("redis".to_string(), "7.0.0".to_string()),
    };
    tenant_info_with(r, args, none, server_name, version)
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`.
async fn hello(r: &mut Reader<'_>, args: &[Bytes]) -> Flow {
    let mut out = BytesMut::new();
    let mut proto = r.client.proto;
    let mut name = None;
    let mut user = None;
    let mut switched = false;
    if let Some(v) = args.get(1) {
        proto = match std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
        {
            Some(2) => Protocol::Resp2,
            Some(3) => Protocol::Resp3,
            Some(_) => return error(r, "NOPROTO unsupported protocol version").await,
            None => {
                return error(r, "ERR Protocol version is not an integer or out of range").await;
            }
        };
        // Every option is read before any takes effect, as Redis reads them.
        let mut creds = None;
        let mut i = 2;
        while i < args.len() {
            let opt = &args[i];
            let more = args.len() - i - 1;
            if opt.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
                creds = Some(&args[i + 1..i + 3]);
                i += 3;
            } else if opt.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
                if let Err(e) = valid_name(&args[i + 1]) {
                    return error(r, e).await;
                }
                name = Some(args[i + 1].clone());
                i += 2;
            } else {
                let msg = format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(opt)
                );
                return error(r, &msg).await;
            }
        }
        match creds {
            // Without tenants, the upstream's own users (see `auth_upstream`).
            Some(creds) if r.tenants.is_none() && r.shared.upstream.is_some() => {
                let Some(reply) = Box::pin(r.login_upstream(creds, Some(&args[1]))).await else {
                    return Flow::Continue;
                };
                if reply.first() == Some(&b'-') {
                    r.push(crate::server::session::Pending::Ready(reply)).await;
                    r.unpin_if_done().await;
                    return Flow::Continue;
                }
                user = Some(r.client.user.clone());
                // The pinned connection speaks `proto` now, and was waited for.
                switched = true;
            }
            Some(creds) => match auth(r, creds).await {
                Ok(u) => user = Some(u),
                Err(e) => return error(r, &e).await,
            },
            None => {}
        }
    }
    if user.is_none() && r.tenants.is_some() && r.client.tenant.is_none() {
        return error(
            r,
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        )
        .await;
    }
    if proto != r.client.proto && !switched {
        // Earlier commands went to the other protocol's pool: let them finish first so this
        // client's commands still run in the order it sent them.
        r.barrier().await;
        if r.out.pin.held().is_some() {
            // The pinned connection keeps the client's state: it switches protocol in place,
            // unless its user may not (an upstream user without HELLO: its NOPERM).
            let mut cmd = BytesMut::new();
            let version = proto.version().to_string();
            encode::command(&mut cmd, &[&b"HELLO"[..], version.as_bytes()]);
            let rx = r.upstream_send(cmd.freeze(), 1, None).await;
            let answered = r.out.park(rx).await;
            r.took_reply();
            match answered {
                Some(Ok(Ok(reply))) if reply.first() == Some(&b'-') => {
                    r.push(crate::server::session::Pending::Ready(reply)).await;
                    return Flow::Continue;
                }
                Some(Ok(Ok(_))) => {}
                _ => return error(r, "ERR upstream connection closed before replying").await,
            }
        }
    }
    let info = r.shared.upstream.as_ref().and_then(|u| u.server_info());
    let c = &mut r.client;
    c.proto = proto;
    if let Some(u) = user {
        c.user = u;
    }
    if let Some(n) = name {
        c.name = (!n.is_empty()).then_some(n);
    }
    let (server, version) = match info {
        Some(i) => (i.server, i.version),
        None => ("redis".to_string(), "7.0.0".to_string()),
    };
    encode::map_header(&mut out, proto, 7);
    encode::bulk(&mut out, b"server");
    encode::bulk(&mut out, server.as_bytes());
    encode::bulk(&mut out, b"version");
    encode::bulk(&mut out, version.as_bytes());
    encode::bulk(&mut out, b"proto");
    encode::integer(&mut out, proto.version());
    encode::bulk(&mut out, b"id");
    encode::integer(&mut out, c.id as i64);
    encode::bulk(&mut out, b"mode");
    encode::bulk(&mut out, b"standalone");
    encode::bulk(&mut out, b"role");
    encode::bulk(&mut out, b"master");
    encode::bulk(&mut out, b"modules");
    encode::array_header(&mut out, 0);
    r.reply(out).await;
    Flow::Continue
}

async fn error(r: &mut Reader<'_>, msg: &str) -> Flow {
    let mut out = BytesMut::new();
    encode::error(&mut out, msg);
    r.reply(out).await;
    Flow::Continue
}

/// Redis refuses names with spaces, newlines or other characters outside `!`..`~`.
fn valid_name(name: &[u8]) -> Result<(), &'static str> {
    if name.iter().all(|&b| (b'!'..=b'~').contains(&b)) {
        Ok(())
    } else {
        Err("ERR Client names cannot contain spaces, newlines or special characters.")
    }
}

/// `CLIENT SETINFO LIB-NAME|LIB-VER value`, as Redis 7.2 and Valkey answer it.
fn setinfo(c: &mut Client, attr: &Bytes, value: &Bytes) -> Result<(), String> {
    if !value.iter().all(|&b| (b'!'..=b'~').contains(&b)) {
        let what = String::from_utf8_lossy(attr).to_ascii_lowercase();
        return Err(format!(
            "ERR {what} cannot contain spaces, newlines or special characters."
        ));
    }
    let v = (!value.is_empty()).then(|| value.clone());
    if attr.eq_ignore_ascii_case(b"lib-name") {
        c.lib_name = v;
    } else if attr.eq_ignore_ascii_case(b"lib-ver") {
        c.lib_ver = v;
    } else {
        return Err(format!(
            "ERR Unrecognized option '{}'",
            String::from_utf8_lossy(attr)
        ));
    }
    Ok(())
}
