//! CLIENT PAUSE and UNPAUSE forwarded, their outcome noted in [`crate::server::pause`]; and the
//! commands a WRITE pause in force holds, sent on a pinned connection of the client's own (see
//! there why). The upstream's replies are its own.
use crate::command::CommandSpec;
use crate::protocol::Request;
use crate::server::session::{Pending, Reader};
use bytes::BytesMut;

impl Reader<'_> {
    /// CLIENT PAUSE / UNPAUSE: forwarded, and noted once the upstream accepted it (before its
    /// reply is queued, so the client's next command, and any other client's sent after it saw
    /// the reply, is routed with the pause known).
    pub(in crate::server::session) async fn pause_command(
        &mut self,
        spec: &'static CommandSpec,
        req: &Request,
    ) {
        if self.shared.upstream.is_none() || self.shared.answerer(spec, &req.args).is_some() {
            return self.forward_any(spec, req).await;
        }
        self.send_group().await;
        let mut cmd = BytesMut::new();
        crate::server::session::forward::append_request(&mut cmd, req);
        let reply = self.upstream_reply(cmd.freeze()).await;
        if &reply[..] == b"+OK\r\n" {
            match (spec.name, crate::server::pause::parse(&req.args)) {
                ("client|pause", Some((ms, true))) => self.shared.pause.write_paused(ms),
                // A pause of ALL replaces a WRITE pause (and is not tracked: see there).
                ("client|pause", _) | ("client|unpause", _) => self.shared.pause.unpaused(),
                _ => {}
            }
        }
        self.push(Pending::Ready(reply)).await
    }

    /// Whether `spec` is held by a WRITE pause in force and should go on a pinned connection
    /// of the client's own (it has none yet; a held one carries it anyway).
    pub(in crate::server::session) fn pause_holds(
        &self,
        spec: &'static CommandSpec,
        req: &Request,
    ) -> bool {
        self.out.pin.held().is_none()
            && self.shared.upstream.is_some()
            && self.shared.pause.holds(spec)
            && self.shared.answerer(spec, &req.args).is_none()
    }
}
