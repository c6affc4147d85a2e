//! One `[[tenant.ttl]]` rule ([`TtlRule`], [`OnExcess`]): what a [`super::auth::Tenant`] holds and
//! [`super::ttl`] applies. A leaf: it imports neither.
use bytes::Bytes;

/// What to do with a TTL over the rule's maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExcess {
    /// Lower it to the maximum; the client's reply is unchanged.
    Cap,
    /// Refuse the command with an error naming the limit.
    Refuse,
}

/// One `[[tenant.ttl]]` rule. The first rule whose pattern matches a key applies to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtlRule {
    /// Redis glob over the client's key name (without the prefix).
    pub pattern: Bytes,
    pub max_ms: Option<i64>,
    /// Given to keys written without a TTL. Validation sets it to `max_ms` when only that is given.
    pub default_ms: Option<i64>,
    pub on_excess: OnExcess,
}

impl TtlRule {
    pub fn new(
        pattern: &str,
        max_ms: Option<i64>,
        default_ms: Option<i64>,
        on_excess: OnExcess,
    ) -> Self {
        TtlRule {
            pattern: Bytes::copy_from_slice(pattern.as_bytes()),
            max_ms,
            default_ms: default_ms.or(max_ms),
            on_excess,
        }
    }
}
