//! Reading the upstream's own command table ([`UpstreamCommands`]) once, at start: a
//! connection of its own, `COMMAND`, closed. Retried while the upstream cannot be reached, given
//! up (the built-in table alone then) if the upstream refuses `COMMAND` or answers something
//! that is not a command table. It never serves a client; sessions read the result.
use super::backoff::Backoff;
use super::error::{Kind, Refusal};
use super::handshake;
use crate::command::{TableError, UpstreamCommands};
use crate::config::UpstreamConfig;
use crate::protocol::{Protocol, encode};
use bytes::BytesMut;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Where reading the table stands.
#[derive(Debug, Clone, Default)]
pub enum Fetched {
    /// Not read yet: a command the built-in table lacks waits a moment for it.
    #[default]
    Pending,
    /// Read (`Some`), or given up (`None`: the built-in table alone).
    Done(Option<Arc<UpstreamCommands>>),
}

/// Read the table and publish it on `tx`; returns once it is read, given up, or `shutdown`.
pub(super) async fn fetch(
    config: Arc<UpstreamConfig>,
    tx: watch::Sender<Fetched>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(&config);
    let addr = handshake::addr(&config);
    let mut command = BytesMut::new();
    encode::command(&mut command, &[b"COMMAND"]);
    loop {
        let attempt = async {
            let mut opened = handshake::open(&config, Protocol::Resp2, "respite-commands").await?;
            handshake::request(
                &mut opened.read,
                &mut opened.write,
                &addr,
                "COMMAND",
                &command,
            )
            .await
        };
        // A COMMAND reply is some 100 KB: the connect deadline, doubled, is time enough.
        let deadline = config.connect_timeout * 2;
        let outcome = tokio::select! {
            r = tokio::time::timeout(deadline, attempt) => r,
            _ = shutdown.cancelled() => return,
        };
        match outcome {
            Ok(Ok(reply)) => {
                // Some 100 KB of nested reply: 11 ms (Redis 7.0) to 45 ms (Valkey 9.1) in a debug
                // build, so off the runtime's workers, which serve clients meanwhile.
                let parsed = tokio::task::spawn_blocking(move || UpstreamCommands::parse(&reply))
                    .await
                    .unwrap_or(Err(TableError::Malformed));
                let table = match parsed {
                    Ok(t) => {
                        info!(upstream = %addr, listed = t.listed, added = t.extra(), "read the upstream's command table");
                        Some(Arc::new(t))
                    }
                    Err(e) => {
                        warn!(upstream = %addr, error = %e, "the upstream's command table could not be read; using the built-in table only");
                        None
                    }
                };
                let _ = tx.send(Fetched::Done(table));
                return;
            }
            // Refused outright (an ACL without +command, a server with no COMMAND); LOADING and
            // BUSY only say "not now".
            Ok(Err(e))
                if matches!(&e.kind, Kind::Refused(Refusal::Command { reply, .. })
                    if !reply.starts_with("LOADING") && !reply.starts_with("BUSY")) =>
            {
                warn!(upstream = %addr, error = %e, "the upstream refused COMMAND; using the built-in table only");
                let _ = tx.send(Fetched::Done(None));
                return;
            }
            Ok(Err(_)) | Err(_) => {}
        }
        let delay = backoff.failed().delay.max(Duration::from_millis(50));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
