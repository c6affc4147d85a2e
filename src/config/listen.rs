//! `[listen]` (where clients connect) and `[admin]` (the HTTP endpoint's address): both are
//! sockets the server binds, named here and never opened here.
use super::{Check, ConfigError};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The client listeners: at least one of `tcp` and `unix`.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub tcp: Option<SocketAddr>,
    pub unix: Option<PathBuf>,
    /// Permission bits given to the unix socket after bind (`0660` lets a group in); `None`
    /// leaves what the umask made.
    pub unix_mode: Option<u32>,
    /// Owner and group given to the unix socket after bind.
    pub unix_owner: Option<Principal>,
    pub unix_group: Option<Principal>,
    pub max_clients: usize,
    /// `listen.tls`: a TLS listener of its own, beside the plain one, so the plain-TCP path
    /// stays as it is; `None` without it.
    pub tls: Option<SocketAddr>,
    /// The server certificate files, set exactly when `tls` is.
    pub tls_files: Option<ServerTls>,
}

/// `listen.tls_cert`, `tls_key`, `tls_client_ca`: PEM files read by `crate::tls` at start and
/// at every reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate that chains to this CA bundle.
    pub client_ca: Option<PathBuf>,
}

/// A user or group, by number or by name (looked up when the socket is bound, not here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Id(u32),
    Name(String),
}

impl Principal {
    fn parse(s: &str) -> Option<Principal> {
        if s.is_empty() {
            return None;
        }
        Some(match s.parse() {
            Ok(id) => Principal::Id(id),
            Err(_) => Principal::Name(s.to_string()),
        })
    }

    /// The numeric user id: a number as it is, a name looked up through the system's user
    /// database (getpwnam_r: /etc/passwd, and LDAP, sssd or systemd's dynamic users where NSS
    /// is set up for them). `Ok(None)`: no such user.
    pub fn uid(&self) -> std::io::Result<Option<u32>> {
        match self {
            Principal::Id(id) => Ok(Some(*id)),
            Principal::Name(name) => Ok(nix::unistd::User::from_name(name)
                .map_err(std::io::Error::from)?
                .map(|u| u.uid.as_raw())),
        }
    }

    /// The numeric group id, as [`Principal::uid`] (getgrnam_r).
    pub fn gid(&self) -> std::io::Result<Option<u32>> {
        match self {
            Principal::Id(id) => Ok(Some(*id)),
            Principal::Name(name) => Ok(nix::unistd::Group::from_name(name)
                .map_err(std::io::Error::from)?
                .map(|g| g.gid.as_raw())),
        }
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Id(id) => write!(f, "{id}"),
            Principal::Name(n) => f.write_str(n),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawListen {
    tcp: String,
    unix: String,
    unix_mode: String,
    unix_owner: String,
    unix_group: String,
    max_clients: i64,
    tls: String,
    tls_cert: String,
    tls_key: String,
    tls_client_ca: String,
}

impl Default for RawListen {
    fn default() -> Self {
        RawListen {
            tcp: "127.0.0.1:6380".into(),
            unix: String::new(),
            unix_mode: String::new(),
            unix_owner: String::new(),
            unix_group: String::new(),
            max_clients: 10_000,
            tls: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_client_ca: String::new(),
        }
    }
}

impl RawListen {
    pub(super) fn validate(&self, c: &Check) -> Result<ListenConfig, ConfigError> {
        let unix_mode = match self.unix_mode.as_str() {
            "" => None,
            m => match u32::from_str_radix(m, 8) {
                Ok(mode) if mode <= 0o777 && !m.starts_with('+') => Some(mode),
                _ => {
                    return Err(c.invalid(
                        "listen.unix_mode",
                        format!("`{m}` is not an octal mode from 0 to 0777, such as \"0660\""),
                    ));
                }
            },
        };
        for (key, value) in [
            ("listen.unix_owner", &self.unix_owner),
            ("listen.unix_group", &self.unix_group),
        ] {
            if value.contains(|ch: char| ch == ':' || ch.is_whitespace() || ch.is_control()) {
                return Err(c.invalid(key, format!("`{value}` is not a name or number")));
            }
        }
        let listen = ListenConfig {
            tcp: c.addr("listen.tcp", &self.tcp)?,
            unix: (!self.unix.is_empty()).then(|| PathBuf::from(&self.unix)),
            unix_mode,
            unix_owner: Principal::parse(&self.unix_owner),
            unix_group: Principal::parse(&self.unix_group),
            max_clients: c.positive("listen.max_clients", self.max_clients)?,
            tls: c.addr("listen.tls", &self.tls)?,
            tls_files: None,
        };
        let mut listen = listen;
        if listen.tls.is_some() {
            for (key, v) in [
                ("listen.tls_cert", &self.tls_cert),
                ("listen.tls_key", &self.tls_key),
            ] {
                if v.is_empty() {
                    return Err(c.invalid(
                        key,
                        "listen.tls needs a certificate and key (PEM files)".into(),
                    ));
                }
            }
            listen.tls_files = Some(ServerTls {
                cert: PathBuf::from(&self.tls_cert),
                key: PathBuf::from(&self.tls_key),
                client_ca: (!self.tls_client_ca.is_empty())
                    .then(|| PathBuf::from(&self.tls_client_ca)),
            });
        } else {
            for (key, v) in [
                ("listen.tls_cert", &self.tls_cert),
                ("listen.tls_key", &self.tls_key),
                ("listen.tls_client_ca", &self.tls_client_ca),
            ] {
                if !v.is_empty() {
                    return Err(c.invalid(key, "has no effect without listen.tls".into()));
                }
            }
        }
        if listen.unix.is_none() {
            for (key, set) in [
                ("listen.unix_mode", listen.unix_mode.is_some()),
                ("listen.unix_owner", listen.unix_owner.is_some()),
                ("listen.unix_group", listen.unix_group.is_some()),
            ] {
                if set {
                    return Err(c.invalid(key, "has no effect without listen.unix".into()));
                }
            }
        }
        if listen.tcp.is_none() && listen.unix.is_none() && listen.tls.is_none() {
            return Err(c.invalid(
                "listen.tcp",
                "no listener: set listen.tcp, listen.unix or listen.tls".into(),
            ));
        }
        Ok(listen)
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAdmin {
    listen: String,
    reload_token_file: String,
    pub(super) command_histograms: bool,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: "127.0.0.1:9121".into(),
            reload_token_file: String::new(),
            command_histograms: true,
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

    /// `admin.reload_token_file`: `POST /reload` then needs `Authorization: Bearer <the file's
    /// contents>`. The file is read by the admin endpoint (at start, and at each request, so a
    /// rotated token applies at once), not here.
    pub(super) fn reload_token_file(&self, c: &Check) -> Result<Option<PathBuf>, ConfigError> {
        match self.reload_token_file.as_str() {
            "" => Ok(None),
            p if !p.starts_with('/') => Err(c.invalid(
                "admin.reload_token_file",
                format!("`{p}` is not an absolute path"),
            )),
            p => Ok(Some(PathBuf::from(p))),
        }
    }
}
