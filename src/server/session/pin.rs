//! Which upstream connection a client's jobs go on ([`Pin`]): its own pinned connection while it
//! needs one, else a shared connection of its lane ([`lanes`](crate::upstream::lanes): shared,
//! slow, bulk for a heavy client), or a connection of its own for one out-of-band command. The
//! [`Outgoing`](super::outgoing::Outgoing) side holds it and sends on what it says; the session
//! takes and gives back the lease here ([`Reader::pin`], [`Reader::unpin`]) and picks the lane
//! before a forwarded command joins a group ([`Reader::enter_lane`]).
//!
//! What a pinned connection carries for a client — WATCH (and the transaction that follows it),
//! blocking commands, a database other than the configured one, an upstream user's AUTH, CLIENT
//! TRACKING, NO-TOUCH — is leased from the upstream's
//! [`PinnedPool`](crate::upstream::PinnedPool) and held for as long as some state needs it
//! ([`Needs`]); it goes back at the first point where none does.
//!
//! # Invariants
//! - A client's commands run on the upstream in the order it sent them, as on one connection:
//!   a move from one lane to another, or between the pinned and a shared connection, first waits
//!   for every earlier reply ([`Reader::barrier`]; after a lease is given back, the next job on a
//!   shared connection waits for the replies owed on it). Moves are rare, so the waits are too.
//! - An out-of-band command (SCRIPT KILL, FUNCTION KILL, SHUTDOWN) waits for nothing: it is sent
//!   alone, at once, on a connection of its own, so it reaches a server busy with a command the
//!   client (or anyone) sent before it. Its reply still takes its place in the client's FIFO.
//! - A pinned connection carries one client's commands only, and goes back to its pool only
//!   reset and verified (see [`crate::upstream::pinned`]); a client gone while a reply is owed on
//!   one has it closed at once ([`Pin::gone`], the `gone` token's guard drops with the session).
use super::Reader;
use crate::command::CommandSpec;
use crate::metrics::{self, ErrorKind};
use crate::protocol::{Request, encode};
use crate::upstream::handshake::Login;
use crate::upstream::lanes::{self, BULK_GROUP, Lane};
use crate::upstream::{Pinned, ReplyBudget};
use bytes::BytesMut;
use tokio_util::sync::{CancellationToken, DropGuard};

/// The client's connection choice.
#[derive(Default)]
pub(crate) struct Pin {
    /// The client's own upstream connection while it needs one.
    pinned: Option<Pinned>,
    /// What it carries for the client now.
    pub needs: Needs,
    /// A pinned connection was just given back with replies possibly owed on it: the next job
    /// on the shared connection waits for them first.
    after_pinned: bool,
    /// Cancelled when the session ends (the guard drops with it) or hangs up: a pinned
    /// connection still owing a reply to a client that is gone is then closed, not reused.
    gone: Option<(CancellationToken, DropGuard)>,
    /// The upstream lane this client's group goes on, and whether the command being forwarded
    /// goes out of band instead.
    lane: Lane,
    oob: bool,
}

/// What the client's pinned connection carries for it now; the lease is given back once none
/// (nor CLIENT TRACKING, nor another database, which the session checks).
#[derive(Default)]
pub(crate) struct Needs {
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

impl Needs {
    fn any(&self) -> bool {
        self.watching || self.multi || self.auth || self.sticky || self.no_touch
    }
}

impl Pin {
    /// The pinned connection, while the client holds one.
    pub(crate) fn held(&self) -> Option<&Pinned> {
        self.pinned.as_ref()
    }

    /// Hold `p`, a lease taken for this client.
    pub(crate) fn lease(&mut self, p: Pinned) {
        self.after_pinned = false;
        self.pinned = Some(p);
    }

    /// Forget the lease and what it carried without giving it back (it failed: tracking lost).
    pub(crate) fn drop_lease(&mut self) {
        self.pinned = None;
        self.needs = Needs::default();
    }

    /// Replies may still be owed on a pinned connection just given back.
    pub(crate) fn after_pinned(&self) -> bool {
        self.after_pinned
    }

    /// Every reply owed on the connection given back has been written.
    pub(crate) fn settled(&mut self) {
        self.after_pinned = false;
    }

    /// The command being forwarded goes out of band.
    pub(crate) fn out_of_band(&self) -> bool {
        self.oob
    }

    /// The lane the client's group goes on now.
    pub(crate) fn lane(&self) -> Lane {
        self.lane
    }

    /// The token cancelled when this session ends (see `gone`).
    pub(crate) fn gone_token(&mut self) -> CancellationToken {
        self.gone
            .get_or_insert_with(|| {
                let token = CancellationToken::new();
                (token.clone(), token.drop_guard())
            })
            .0
            .clone()
    }

    /// The client hung up with a reply owed: its pinned connections close now.
    pub(crate) fn gone(&self) {
        if let Some((gone, _)) = &self.gone {
            gone.cancel();
        }
    }

    /// A heavy client's group is full at [`BULK_GROUP`] commands.
    pub(crate) fn bulk_group_full(&self, held: usize) -> bool {
        self.lane == Lane::Bulk && held >= BULK_GROUP
    }

    /// The lane for a command that would go on the shared connection: the bulk lane while the
    /// client is heavy (see `outgoing::fairness`). Decided when a group starts (a group travels
    /// whole), and not while the client holds a pinned connection, which carries everything of
    /// its anyway.
    fn size_lane(&self, held: usize, budget: Option<&ReplyBudget>) -> Lane {
        if (held > 0 || self.pinned.is_some()) && matches!(self.lane, Lane::Shared | Lane::Bulk) {
            return self.lane;
        }
        match budget {
            Some(b) if b.is_heavy() => Lane::Bulk,
            _ => Lane::Shared,
        }
    }
}

impl Reader<'_> {
    /// Choose the lane for `spec`, about to be forwarded. Marks a command that goes out of
    /// band; [`Reader::leave_out_of_band`] sends its group as soon as the command has joined it.
    pub(super) async fn enter_lane(&mut self, spec: &'static CommandSpec) {
        // Whether anyone answers instead of the upstream does not depend on the arguments (they
        // only choose between the engine and a refusal).
        if self.shared.upstream.is_none() || self.shared.answerer(spec, &[]).is_some() {
            return;
        }
        if lanes::out_of_band(spec) {
            self.send_group().await;
            self.out.pin.oob = true;
            return;
        }
        let mut lane = lanes::lane(spec);
        if lane == Lane::Shared {
            // Heavy clients apart (see `outgoing::fairness`).
            let out = &self.out;
            lane = out.pin.size_lane(out.held(), out.budget().map(|b| &**b));
        }
        if lane != self.out.pin.lane {
            self.send_group().await;
            self.barrier().await;
            self.out.pin.lane = lane;
        }
    }

    /// Send an out-of-band command's group now (it is alone in it) and go back to the lanes.
    pub(super) async fn leave_out_of_band(&mut self) {
        if self.out.pin.oob {
            self.send_group().await;
            self.out.pin.oob = false;
        }
    }

    /// Take a pinned connection if the client has none. Every earlier reply is waited for first,
    /// so what the client sent before runs before anything on the new connection.
    pub(super) async fn pin(&mut self) -> bool {
        self.pin_on(None, None).await
    }

    /// [`Reader::pin`] for a command on keys: in a cluster, the connection goes to the node
    /// serving the slot of its first key (as the upstream gets it, prefix included); WAIT and
    /// WAITAOF, which have none, to the node of the client's last write.
    pub(super) async fn pin_for(&mut self, spec: &'static CommandSpec, req: &Request) -> bool {
        if matches!(spec.name, "wait" | "waitaof") {
            return self.pin_on(self.client.last_write_slot, None).await;
        }
        let slot = crate::command::keys(spec, &req.args)
            .ok()
            .and_then(|k| k.positions().next())
            .and_then(|pos| req.args.get(pos))
            .map(|key| {
                let prefix = self
                    .client
                    .tenant
                    .as_ref()
                    .map_or(&[][..], |t| &t.prefix[..]);
                crate::upstream::cluster::slot::key_slot(&[prefix, &key[..]].concat())
            });
        self.pin_on(slot, None).await
    }

    /// [`Reader::pin`]; a new connection is set up with `login` (the client's own credentials)
    /// when given, instead of respite's.
    pub(super) async fn pin_as(&mut self, login: Option<Login>) -> bool {
        self.pin_on(None, login).await
    }

    /// Take a pinned connection from the pool for `slot` (see [`Reader::pin_for`]), set up with
    /// `login` when given.
    async fn pin_on(&mut self, slot: Option<u16>, login: Option<Login>) -> bool {
        if self.out.pin.held().is_some() {
            return true;
        }
        let Some(upstream) = self.shared.upstream.clone() else {
            return false;
        };
        self.send_group().await;
        self.barrier().await;
        if self.out.hung_up() {
            return false;
        }
        self.out.pin.settled();
        let gone = self.out.pin.gone_token();
        match upstream
            .pinned_for(slot)
            .take(self.client.proto, gone, login.as_ref())
            .await
        {
            Ok(mut p) => {
                if let Some(mark) = upstream.pinned_mark(slot) {
                    p.hold(mark);
                }
                *super::commands::clients::lock(&self.registered.entry.blockable) =
                    Some(p.blockable());
                self.out.pin.lease(p);
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
        let reply = self.out.park(rx).await;
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

    /// Give the pinned connection back if nothing needs it any more: the client's state on it
    /// has ended (no WATCH, no transaction, the configured database).
    pub(super) async fn unpin_if_done(&mut self) {
        if self.out.pin.held().is_none()
            || self.out.pin.needs.any()
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
        let pin = &mut self.out.pin;
        if let Some(p) = pin.pinned.take() {
            p.release().await;
            pin.after_pinned = true;
        }
        pin.needs = Needs::default();
        // Its reset ended the upstream's tracking (RESET ends the client's as well).
        self.tracking = None;
    }

    /// The database the shared connections use.
    pub(super) fn configured_db(&self) -> u32 {
        self.shared
            .config
            .upstream
            .as_ref()
            .map(|u| u.url.db)
            .unwrap_or(0)
    }
}
