//! `[listen]` (where clients connect) and `[admin]` (the HTTP endpoint's address): both are
//! sockets the server binds, named here and never opened here.
use super::{Check, ConfigError};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The client listeners: at least one of `tcp` and `unix`.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub tcp: Option<SocketAddr>,
    pub unix: Option<PathBuf>,
    pub max_clients: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawListen {
    tcp: String,
    unix: String,
    max_clients: i64,
}

impl Default for RawListen {
    fn default() -> Self {
        RawListen {
            tcp: "127.0.0.1:6380".into(),
            unix: String::new(),
            max_clients: 10_000,
        }
    }
}

impl RawListen {
    pub(super) fn validate(&self, c: &Check) -> Result<ListenConfig, ConfigError> {
        let listen = ListenConfig {
            tcp: c.addr("listen.tcp", &self.tcp)?,
            unix: (!self.unix.is_empty()).then(|| PathBuf::from(&self.unix)),
            max_clients: c.positive("listen.max_clients", self.max_clients)?,
        };
        if listen.tcp.is_none() && listen.unix.is_none() {
            return Err(c.invalid(
                "listen.tcp",
                "no listener: set listen.tcp or listen.unix".into(),
            ));
        }
        Ok(listen)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAdmin {
    listen: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: "127.0.0.1:9121".into(),
        }
    }
}

impl RawAdmin {
    /// The admin HTTP address; `None` for `""` or `"none"`.
    pub(super) fn validate(&self, c: &Check) -> Result<Option<SocketAddr>, ConfigError> {
        match self.listen.as_str() {
            "" | "none" => Ok(None),
            v => c.addr("admin.listen", v),
        }
    }
}
