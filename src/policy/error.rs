//! What a refused command gets back: each variant's `Display` is the whole error reply text
//! (code included, no leading `-`), so the session writes it with `encode::error` as it is.
use crate::command::KeyError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Redis 7.2+'s wording for a command outside the user's ACL.
    #[error("NOPERM User {user} has no permissions to run the '{command}' command")]
    NoPerm { user: String, command: String },
    /// The command acts beyond one namespace and the tenant has a prefix.
    #[error("ERR '{command}' is not available to a tenant with a key prefix: {reason}")]
    OutsideNamespace {
        command: String,
        reason: &'static str,
    },
    #[error(
        "ERR value of {len} bytes is over this tenant's limit of {limit} bytes (tenant.max_value_bytes)"
    )]
    ValueTooLarge { len: usize, limit: usize },
    /// A RESTORE payload whose decoded size respite cannot bound (a stream, a module value, a
    /// truncated payload), for a tenant with a value limit.
    #[error(
        "ERR RESTORE payload of a type whose decoded size respite cannot measure, under this tenant's value limit (tenant.max_value_bytes)"
    )]
    RestoreUnmeasured,
    #[error(
        "ERR TTL of {ttl_ms} ms is over this tenant's limit of {max_ms} ms for this key (tenant.ttl)"
    )]
    TtlOverMax { ttl_ms: i64, max_ms: i64 },
    #[error(
        "ERR {command} would remove the TTL of a key whose TTL is capped at {max_ms} ms (tenant.ttl)"
    )]
    PersistRefused { command: &'static str, max_ms: i64 },
    /// An argument error worded as the upstream words it (`ERR syntax error`, `ERR value is not an
    /// integer or out of range`, `ERR invalid expire time in 'set' command`, …). respite answers
    /// these itself when it had to parse the arguments to apply a rule.
    #[error("ERR {0}")]
    Syntax(String),
    /// FUNCTION LOAD's code could register names outside the tenant's namespace, or is not
    /// Lua (see `policy::functions::load_code`); worded as the servers word a failed load.
    #[error("ERR Error registering functions: {0}")]
    FunctionCode(String),
    /// The key arguments could not be found, so the command cannot be confined to the namespace.
    #[error("ERR {0}")]
    Keys(#[from] KeyError),
}

impl PolicyError {
    /// The `reason` label of the refusal counter.
    pub fn reason(&self) -> &'static str {
        match self {
            PolicyError::NoPerm { .. } => "noperm",
            PolicyError::OutsideNamespace { .. } | PolicyError::FunctionCode(_) => "namespace",
            PolicyError::ValueTooLarge { .. } | PolicyError::RestoreUnmeasured => "value_too_large",
            PolicyError::TtlOverMax { .. } | PolicyError::PersistRefused { .. } => "ttl",
            PolicyError::Syntax(_) => "syntax",
            PolicyError::Keys(_) => "keys",
        }
    }

    pub(super) fn syntax() -> Self {
        PolicyError::Syntax("syntax error".into())
    }

    pub(super) fn not_integer() -> Self {
        PolicyError::Syntax("value is not an integer or out of range".into())
    }

    pub(super) fn expire_time(command: &str) -> Self {
        PolicyError::Syntax(format!("invalid expire time in '{command}' command"))
    }
}
