//! The commands that need a connection of the client's own: blocking commands, WATCH (and the
//! transaction that follows it), SELECT of a database other than the configured one, and AUTH
//! as one of the upstream's own users. They run on the client's pinned connection, leased and
//! given back by [`pin`](crate::server::session::pin), which says for how long; while a client
//! holds one, every command it sends upstream goes over it, in order, through the same
//! [`outgoing`](crate::server::session::outgoing) side as the shared connection.
//!
//! This file never answers for the upstream: replies, including errors for what the upstream
//! refuses (`DB index is out of range`, a broken WATCH's null EXEC), are the upstream's own.
use crate::command::CommandSpec;
use crate::metrics::{self, ErrorKind};
use crate::protocol::{Request, encode};
use crate::server::session::{Pending, Reader, error_bytes, simple};
use crate::upstream::handshake::Login;
use bytes::{Bytes, BytesMut};

impl Reader<'_> {
    /// A blocking command (BLPOP, BLMOVE, XREAD BLOCK, WAIT, …) on a pinned connection, never
    /// behind or in front of other clients' commands. Without other state on it, the
    /// connection goes back once the reply is read.
    pub(in crate::server::session) async fn blocking(
        &mut self,
        spec: &'static CommandSpec,
        req: &Request,
    ) {
        if self.shared.upstream.is_none() || self.shared.answerer(spec, &[]).is_some() {
            return self.not_supported(spec, "blocking command").await;
        }
        if !self.pin_for(spec, req).await {
            return;
        }
        self.forward_any(spec, req).await;
        self.unpin_if_done().await
    }

    /// WATCH: pinned until EXEC, DISCARD or UNWATCH.
    pub(in crate::server::session) async fn watch(
        &mut self,
        spec: &'static CommandSpec,
        req: &Request,
    ) {
        if self.shared.upstream.is_none() || self.shared.answerer(spec, &[]).is_some() {
            return self.not_supported(spec, "transaction").await;
        }
        if !self.pin_for(spec, req).await {
            return;
        }
        self.out.pin.needs.watching = true;
        self.forward_any(spec, req).await;
    }

    /// Forward under the client's rules (a tenant's prefixes), to whichever connection it uses.
    pub(in crate::server::session) async fn forward_any(
        &mut self,
        spec: &'static CommandSpec,
        req: &Request,
    ) {
        match self.client.tenant.clone() {
            Some(tenant) => Box::pin(self.forward_for(tenant, spec, req)).await,
            None => self.forward(spec, req).await,
        }
    }

    /// SELECT of a database other than the one the shared connections use: the upstream
    /// answers it on a pinned connection (its own errors for a bad index), and the client keeps
    /// that connection until it selects the configured database again.
    pub(in crate::server::session) async fn select(&mut self, req: &Request) {
        let db = std::str::from_utf8(&req.args[1])
            .ok()
            .and_then(|s| s.parse::<i64>().ok());
        let configured = self.configured_db();
        if db == Some(configured as i64) && self.out.pin.held().is_none() {
            self.client.db = configured;
            return self.reply(simple("OK")).await;
        }
        if self.shared.upstream.is_none() {
            let msg = match db {
                None => "ERR value is not an integer or out of range",
                Some(_) => "ERR DB index is out of range",
            };
            return self.reply_error(msg).await;
        }
        if self.client.tenant.as_ref().is_some_and(|t| t.has_prefix()) {
            // A prefix confines a tenant to its namespace in the configured database.
            return self
                .reply_error(&format!(
                    "ERR SELECT is not allowed for a tenant with a key prefix: its keys live in database {configured}"
                ))
                .await;
        }
        if !self.pin().await {
            return;
        }
        let mut cmd = BytesMut::new();
        crate::server::session::forward::append_request(&mut cmd, req);
        let reply = self.upstream_reply(cmd.freeze()).await;
        if &reply[..] == b"+OK\r\n" {
            self.client.db = db.expect("the upstream accepted it") as u32;
        }
        self.push(Pending::Ready(reply)).await;
        self.unpin_if_done().await
    }

    /// AUTH when respite has no tenants: the upstream checks it against its own users, on a
    /// pinned connection the client then keeps (until RESET or it leaves), so the upstream's
    /// ACLs apply to everything it sends. A refusal is the upstream's own (WRONGPASS).
    pub(in crate::server::session) async fn auth_upstream(&mut self, req: &Request) {
        let Some(reply) = self.login_upstream(&req.args[1..], None).await else {
            return;
        };
        self.push(Pending::Ready(reply)).await;
        self.unpin_if_done().await
    }

    /// AUTH's arguments (`[username] password`, from AUTH or HELLO's AUTH option) checked by
    /// the upstream on the client's pinned connection: its reply (`+OK`, or for HELLO, whose
    /// `protover` is given, the upstream's HELLO map: the connection then speaks it, switched
    /// in the same command as the upstream switches its own clients). An error is the
    /// upstream's refusal (WRONGPASS, NOPROTO). `None`: no pinned connection could be had (the
    /// pool's error is queued). The caller queues any error and then gives the connection back
    /// ([`Reader::unpin_if_done`]).
    pub(in crate::server::session) async fn login_upstream(
        &mut self,
        creds: &[Bytes],
        hello: Option<&[u8]>,
    ) -> Option<Bytes> {
        // A connection opened for this login is set up as the client: respite's own
        // credentials may no longer be the upstream's (a password changed through respite).
        let login = match creds {
            [user, password] => Login {
                user: Some(user.clone()),
                password: password.clone(),
            },
            [password] => Login {
                user: None,
                password: password.clone(),
            },
            _ => return Some(error_bytes("ERR syntax error")),
        };
        if !self.pin_as(Some(login)).await {
            return None;
        }
        let mut cmd = BytesMut::new();
        let verb: &[&[u8]] = match hello {
            Some(protover) => &[b"HELLO", protover, b"AUTH"],
            None => &[b"AUTH"],
        };
        let args: Vec<&[u8]> = verb
            .iter()
            .copied()
            .chain(creds.iter().map(|a| &a[..]))
            .collect();
        encode::command(&mut cmd, &args);
        let reply = self.upstream_reply(cmd.freeze()).await;
        if reply.first() != Some(&b'-') {
            self.out.pin.needs.auth = true;
            self.client.user = match creds {
                [user, _] => String::from_utf8_lossy(user).into_owned(),
                _ => "default".into(),
            };
        }
        Some(reply)
    }

    async fn not_supported(&mut self, spec: &'static CommandSpec, why: &str) {
        metrics::error(ErrorKind::Refused);
        let name = spec.name.replace('|', " ").to_uppercase();
        if self.shared.upstream.is_some() {
            // Local-only mode: the same command succeeds once the upstream is back.
            let msg = format!(
                "TRYAGAIN upstream is down and respite is in local-only mode, which cannot serve {name}: a {why} needs an upstream connection of its own"
            );
            return self.reply_error(&msg).await;
        }
        let msg = format!(
            "ERR {name} is not supported by respite without an upstream: {why} needs a connection of its own"
        );
        self.reply_error(&msg).await
    }
}
