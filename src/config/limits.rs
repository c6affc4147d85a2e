//! `[limits]`: what one client may send and leave unread. The framing limits fill the framer's
//! own [`Limits`], and none may exceed Redis's (the framer's defaults).
use super::{Check, ConfigError};
use crate::protocol::Limits;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What all clients together may hold, and how long a client may idle or dawdle over a request.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// `limits.max_client_memory`: bytes of unread replies and unfinished requests across all
    /// clients (Redis's `maxmemory-clients`); over it, the client holding the most is closed.
    pub max_client_memory: usize,
    /// `limits.idle_timeout_ms` (Redis's `timeout`): close a client silent this long; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// `limits.request_timeout_ms`: close a client whose request has started arriving and not
    /// finished within this (slowloris); `None`: never.
    pub request_timeout: Option<Duration>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLimits {
    max_args: i64,
    max_bulk_len: i64,
    max_inline_len: i64,
    max_query_buffer: i64,
    max_inflight_per_client: i64,
    max_reply_bytes: i64,
    pubsub_output_bytes: i64,
    max_client_memory: i64,
    idle_timeout_ms: i64,
    request_timeout_ms: i64,
}

impl Default for RawLimits {
    fn default() -> Self {
        let l = Limits::default();
        RawLimits {
            max_args: l.max_args as i64,
            max_bulk_len: l.max_bulk_len as i64,
            max_inline_len: l.max_inline_len as i64,
            max_query_buffer: l.max_query_buffer as i64,
            max_inflight_per_client: 1024,
            // A sidecar's budget: a client may leave 32 MiB of replies unread, all clients
            // together 256 MiB (plus unfinished requests).
            max_reply_bytes: 32 * 1024 * 1024,
            // Redis's soft pubsub limit: a sidecar's subscribers rarely fall that far behind.
            pubsub_output_bytes: 8 * 1024 * 1024,
            max_client_memory: 256 * 1024 * 1024,
            idle_timeout_ms: 0,
            request_timeout_ms: 0,
        }
    }
}

impl RawLimits {
    /// The framing limits, then `max_inflight_per_client`, `max_reply_bytes` and
    /// `pubsub_output_bytes`.
    pub(super) fn validate(&self, c: &Check) -> Result<(Limits, usize, usize, usize), ConfigError> {
        let limits = Limits {
            max_args: c.positive("limits.max_args", self.max_args)?,
            max_bulk_len: c.positive("limits.max_bulk_len", self.max_bulk_len)?,
            max_inline_len: c.positive("limits.max_inline_len", self.max_inline_len)?,
            max_query_buffer: c.positive("limits.max_query_buffer", self.max_query_buffer)?,
        };
        let hard = Limits::default();
        for (key, v, max) in [
            ("limits.max_args", limits.max_args, hard.max_args),
            (
                "limits.max_bulk_len",
                limits.max_bulk_len,
                hard.max_bulk_len,
            ),
            (
                "limits.max_inline_len",
                limits.max_inline_len,
                hard.max_inline_len,
            ),
            (
                "limits.max_query_buffer",
                limits.max_query_buffer,
                hard.max_query_buffer,
            ),
        ] {
            if v > max {
                return Err(c.invalid(key, format!("{v} is over Redis's own limit of {max}")));
            }
        }
        let inflight = c.positive(
            "limits.max_inflight_per_client",
            self.max_inflight_per_client,
        )?;
        let reply_bytes = c.positive("limits.max_reply_bytes", self.max_reply_bytes)?;
        let pubsub = c.positive("limits.pubsub_output_bytes", self.pubsub_output_bytes)?;
        Ok((limits, inflight, reply_bytes, pubsub))
    }

    /// The limits across clients and in time.
    pub(super) fn sessions(&self, c: &Check) -> Result<SessionLimits, ConfigError> {
        let off_or_millis = |key: &str, v: i64| -> Result<Option<Duration>, ConfigError> {
            match v {
                0 => Ok(None),
                v => c.millis(key, v).map(Some),
            }
        };
        Ok(SessionLimits {
            max_client_memory: c.positive("limits.max_client_memory", self.max_client_memory)?,
            idle_timeout: off_or_millis("limits.idle_timeout_ms", self.idle_timeout_ms)?,
            request_timeout: off_or_millis("limits.request_timeout_ms", self.request_timeout_ms)?,
        })
    }
}
