//! The session's pinned connection: what a shared, multiplexed upstream connection cannot carry
//! for a client — WATCH (and the transaction that follows it), blocking commands, a database
//! other than the configured one — runs on a connection of the client's own, leased from the
//! upstream's [`PinnedPool`](crate::upstream::PinnedPool).
//!
//! While a client holds one, every command it sends upstream goes over it, in order, through
//! the same grouping and FIFO as the shared connection ([`super::forward`]). It holds the lease
//! for as long as some state needs it ([`Pin`]) and gives it back at the first point where none
//! does: after EXEC, DISCARD or UNWATCH, once a blocking command is sent (the connection returns
//! once its reply is read), or on SELECT of the configured database again. A client that
//! authenticates as one of the upstream's own users (AUTH, when respite has no tenants) keeps
//! its connection until RESET or it leaves. Moving between the
//! pinned and the shared connection waits for every earlier reply first, so the client's
//! commands still run on the upstream in the order it sent them.
//!
//! This file never answers for the upstream: replies, including errors for what the upstream
//! refuses (`DB index is out of range`, a broken WATCH's null EXEC), are the upstream's own.
use super::{Pending, Reader, error_bytes, simple};
use crate::command::CommandSpec;
use crate::metrics::{self, ErrorKind};
use crate::protocol::{Request, encode};
use crate::upstream::handshake::Login;
use crate::upstream::{Reply, ReplyBudget};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// What the client's pinned connection carries for it now; the lease is given back once none.
#[derive(Default)]
pub(crate) struct Pin {
    /// Keys are WATCHed on it.
    pub watching: bool,
    /// A transaction is open on it (MULTI forwarded; the upstream queues).
    pub multi: bool,
    /// The client authenticated as one of the upstream's own users on it (no tenants).
    pub auth: bool,
    /// A SELECT ran inside a transaction: which database the connection is in is the
    /// upstream's to say, so the client keeps it until RESET or it leaves.
    pub sticky: bool,
    /// CLIENT NO-TOUCH ON was forwarded on it: the client keeps it until OFF or RESET.
    pub no_touch: bool,
}

impl Reader<'_> {
    /// Take a pinned connection if the client has none. Every earlier reply is waited for first,
    /// so what the client sent before runs before anything on the new connection.
    pub(super) async fn pin(&mut self) -> bool {
        self.pin_on(None, None).await
    }

    /// [`Reader::pin`] for a command on keys: in a cluster, the connection goes to the node
    /// serving the slot of its first key (as the upstream gets it, prefix included).
    pub(super) async fn pin_for(&mut self, spec: &'static CommandSpec, req: &Request) -> bool {
        let key = crate::command::keys(spec, &req.args)
            .ok()
            .and_then(|k| k.positions().next())
            .and_then(|pos| req.args.get(pos))
            .map(|key| match &self.client.tenant {
                Some(t) => [&t.prefix[..], &key[..]].concat(),
                None => key.to_vec(),
            });
        self.pin_on(key, None).await
    }

    /// [`Reader::pin`]; a new connection is set up with `login` (the client's own credentials)
    /// when given, instead of respite's.
    async fn pin_as(&mut self, login: Option<Login>) -> bool {
        self.pin_on(None, login).await
    }

    /// Take a pinned connection from the pool for `key` (see [`Reader::pin_for`]), set up with
    /// `login` when given.
    async fn pin_on(&mut self, key: Option<Vec<u8>>, login: Option<Login>) -> bool {
        if self.pinned.is_some() {
            return true;
        }
        let Some(upstream) = self.shared.upstream.clone() else {
            return false;
        };
        self.send_group().await;
        self.barrier().await;
        if self.hung_up() {
            return false;
        }
        self.after_pinned = false;
        let gone = self.gone_token();
        match upstream
            .pinned_for(key.as_deref())
            .take(self.client.proto, gone, login.as_ref())
            .await
        {
            Ok(p) => {
                *super::clients::lock(&self.registered.entry.blockable) = Some(p.blockable());
                self.pinned = Some(p);
            }
            Err(e) => {
                metrics::error(ErrorKind::Refused);
                self.reply_error(&e.to_string()).await;
                return false;
            }
        }
        if let Err(msg) = self.enter_tenant_db().await {
            self.unpin().await;
            metrics::error(ErrorKind::Upstream);
            self.reply_error(&msg).await;
            return false;
        }
        true
    }

    /// A tenant with a database of its own (`tenant.db`) works in it on a pinned connection too:
    /// a lease comes reset to the URL's database, so it SELECTs the tenant's first. Nothing to
    /// do for other clients.
    pub(super) async fn enter_tenant_db(&mut self) -> Result<(), String> {
        let Some(db) = self.client.tenant.as_ref().and_then(|t| t.db) else {
            return Ok(());
        };
        let mut cmd = BytesMut::new();
        encode::command(&mut cmd, &[&b"SELECT"[..], db.to_string().as_bytes()]);
        let rx = self.upstream_send(cmd.freeze(), 1, None).await;
        let reply = self.park(rx).await;
        self.took_reply();
        match reply {
            Some(Ok(Ok(bytes))) if &bytes[..] == b"+OK\r\n" => Ok(()),
            Some(Ok(Ok(bytes))) => Err(format!(
                "ERR the upstream refused this tenant's database {db} (tenant.db): {}",
                String::from_utf8_lossy(bytes.strip_prefix(b"-").unwrap_or(&bytes)).trim_end()
            )),
            _ => Err("ERR upstream connection closed before replying".into()),
        }
    }

    /// The token cancelled when this session ends (see `Reader::gone`).
    pub(super) fn gone_token(&mut self) -> CancellationToken {
        self.gone
            .get_or_insert_with(|| {
                let token = CancellationToken::new();
                (token.clone(), token.drop_guard())
            })
            .0
            .clone()
    }

    /// Give the pinned connection back if nothing needs it any more: the client's state on it
    /// has ended (no WATCH, no transaction, the configured database).
    pub(super) async fn unpin_if_done(&mut self) {
        if self.pinned.is_none()
            || self.pin.watching
            || self.pin.multi
            || self.pin.auth
            || self.pin.sticky
            || self.pin.no_touch
            || self.tracking.is_some()
            || self.client.db != self.configured_db()
        {
            return;
        }
        self.unpin().await
    }

    /// Give the pinned connection back whatever is on it: its reset clears it.
    pub(super) async fn unpin(&mut self) {
        self.send_group().await;
        if let Some(p) = self.pinned.take() {
            p.release().await;
            self.after_pinned = true;
        }
        self.pin = Pin::default();
        // Its reset ended the upstream's tracking (RESET ends the client's as well).
        self.tracking = None;
    }

    pub(super) fn configured_db(&self) -> u32 {
        self.shared
            .config
            .upstream
            .as_ref()
            .map(|u| u.url.db)
            .unwrap_or(0)
    }

    /// Send a job on the client's connection: its pinned one if it holds one, else its shared
    /// one, after the replies owed on a pinned connection just given back.
    ///
    /// # Invariants
    /// Nothing the client sent before this job is still held back: the group of forwarded
    /// commands and the queued ready replies go first, here, whoever the caller is. (SELECT,
    /// AUTH, HELLO, CLIENT TRACKING and the like send their own command and await its reply
    /// inline; a SELECT sent while `SET k v` waited in the group ran before it and the write
    /// landed in the next database, issue 21 finding 9.)
    pub(super) async fn upstream_send(
        &mut self,
        bytes: Bytes,
        count: usize,
        budget: Option<Arc<ReplyBudget>>,
    ) -> oneshot::Receiver<Reply> {
        if self.group_count > 0 || self.ready_count > 0 {
            // `send_group` empties both before it calls back in here, so this recurses once.
            Box::pin(self.send_group()).await;
        }
        // The group's known-slow mark goes with it, whichever way it goes.
        let slow = std::mem::take(&mut self.group_slow);
        if self.hung_up() {
            // The client is gone (see `park`): nothing more runs for it.
            return oneshot::channel().1;
        }
        if let Some(p) = &self.pinned {
            if slow && let Some(upstream) = &self.shared.upstream {
                // What ends a slow command must not wait for a connection to open behind it.
                upstream.ready_out_of_band();
            }
            // Boxed: rare, and inline its state would grow every idle session.
            return Box::pin(p.send_marked(bytes, count, budget, slow)).await;
        }
        if self.after_pinned {
            // Not `barrier`: that would send the group this job is made of. `after_pinned`
            // stays set while waiting: a client leaving meanwhile still owes the pinned
            // connection a reply, so it hangs up (see `park`).
            let (tx, rx) = oneshot::channel();
            self.enqueue(Pending::Barrier(tx), 1).await;
            let _ = self.park(rx).await;
            self.after_pinned = false;
            if self.hung_up() {
                return oneshot::channel().1;
            }
        }
        let upstream = self
            .shared
            .upstream
            .as_ref()
            .expect("sent only with an upstream");
        if self.oob {
            // SCRIPT KILL and the like: a connection of its own, not behind the busy command.
            return upstream.out_of_band(self.client.proto, bytes, budget);
        }
        if let Some(db) = self.client.tenant.as_ref().and_then(|t| t.db) {
            // Boxed: rare, and inline its state would grow every idle session.
            let conn = upstream.conn_in_db(db, self.lane(), self.client.proto, self.client.id);
            return Box::pin(conn.send_marked(bytes, count, budget, slow)).await;
        }
        upstream
            .conn_in(self.lane(), self.client.proto, self.client.id)
            .send_marked(bytes, count, budget, slow)
            .await
    }

    /// A blocking command (BLPOP, BLMOVE, XREAD BLOCK, WAIT, …) on a pinned connection, never
    /// behind or in front of other clients' commands. Without other state on it, the
    /// connection goes back once the reply is read.
    pub(super) async fn blocking(&mut self, spec: &'static CommandSpec, req: &Request) {
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
    pub(super) async fn watch(&mut self, spec: &'static CommandSpec, req: &Request) {
        if self.shared.upstream.is_none() || self.shared.answerer(spec, &[]).is_some() {
            return self.not_supported(spec, "transaction").await;
        }
        if !self.pin_for(spec, req).await {
            return;
        }
        self.pin.watching = true;
        self.forward_any(spec, req).await;
    }

    /// Forward under the client's rules (a tenant's prefixes), to whichever connection it uses.
    pub(super) async fn forward_any(&mut self, spec: &'static CommandSpec, req: &Request) {
        match self.client.tenant.clone() {
            Some(tenant) => Box::pin(self.forward_for(tenant, spec, req)).await,
            None => self.forward(spec, req).await,
        }
    }

    /// SELECT of a database other than the one the shared connections use: the upstream
    /// answers it on a pinned connection (its own errors for a bad index), and the client keeps
    /// that connection until it selects the configured database again.
    pub(super) async fn select(&mut self, req: &Request) {
        let db = std::str::from_utf8(&req.args[1])
            .ok()
            .and_then(|s| s.parse::<i64>().ok());
        let configured = self.configured_db();
        if db == Some(configured as i64) && self.pinned.is_none() {
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
        super::forward::append_request(&mut cmd, req);
        let rx = self.upstream_send(cmd.freeze(), 1, None).await;
        let reply = match self.park(rx).await {
            Some(Ok(Ok(bytes))) => bytes,
            _ => error_bytes("ERR upstream connection closed before replying"),
        };
        self.took_reply();
        if &reply[..] == b"+OK\r\n" {
            self.client.db = db.expect("the upstream accepted it") as u32;
        }
        self.push(Pending::Ready(reply)).await;
        self.unpin_if_done().await
    }

    /// AUTH when respite has no tenants: the upstream checks it against its own users, on a
    /// pinned connection the client then keeps (until RESET or it leaves), so the upstream's
    /// ACLs apply to everything it sends. A refusal is the upstream's own (WRONGPASS).
    pub(super) async fn auth_upstream(&mut self, req: &Request) {
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
    pub(super) async fn login_upstream(
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
        let rx = self.upstream_send(cmd.freeze(), 1, None).await;
        let answered = self.park(rx).await;
        self.took_reply();
        let reply = match answered {
            Some(Ok(Ok(bytes))) => bytes,
            _ => error_bytes("ERR upstream connection closed before replying"),
        };
        if reply.first() != Some(&b'-') {
            self.pin.auth = true;
            self.client.user = match creds {
                [user, _] => String::from_utf8_lossy(user).into_owned(),
                _ => "default".into(),
            };
        }
        Some(reply)
    }

    async fn not_supported(&mut self, spec: &'static CommandSpec, why: &str) {
        metrics::error(ErrorKind::Refused);
        let msg = format!(
            "ERR {} is not supported by respite without an upstream: {why} needs a connection of its own",
            spec.name.replace('|', " ").to_uppercase()
        );
        self.reply_error(&msg).await
    }
}
