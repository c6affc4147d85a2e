//! `[limits]`: what one client may send and leave unread. The framing limits fill the framer's
//! own [`Limits`], and none may exceed Redis's (the framer's defaults).
use super::{Check, ConfigError};
use crate::protocol::Limits;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLimits {
    max_args: i64,
    max_bulk_len: i64,
    max_inline_len: i64,
    max_query_buffer: i64,
    max_inflight_per_client: i64,
    max_reply_bytes: i64,
    pubsub_output_bytes: i64,
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
            max_reply_bytes: 1024 * 1024 * 1024,
            // Redis's soft pubsub limit: a sidecar's subscribers rarely fall that far behind.
            pubsub_output_bytes: 8 * 1024 * 1024,
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
}
