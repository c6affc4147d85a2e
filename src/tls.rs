//! TLS material for both sides, built with rustls from the PEM files the configuration names:
//! the server configuration client sessions are accepted with (`listen.tls_*`) and the client
//! configuration upstream connections are opened with (`upstream.tls_*`).
//!
//! The files are read here, at start, at every reload (server side) and at every upstream
//! connect (so a rotated client certificate is used by the next connection), and nowhere else.
//! This module never opens a socket: `server` and `upstream::handshake` do, with what it builds.
//! Errors name the file and the key that named it.
//!
//! Without `upstream.tls_ca`, the upstream is verified against the system's trust store
//! (rustls-native-certs: the platform's bundle, or `SSL_CERT_FILE` / `SSL_CERT_DIR` when set),
//! read once per process; `upstream.tls_ca` replaces it, never adds to it, so a private CA pinned
//! there is the only one trusted.
//!
//! Every certificate respite holds or is shown has its expiry exported as
//! `respite_tls_cert_not_after_seconds{side}` (the earliest in its chain): recorded here when the
//! files are read, and at each upstream handshake for the chain the upstream presents.
use crate::config::{ServerTls, UpstreamTls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Why TLS material could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key} {}: {source}", path.display())]
    Pem {
        key: &'static str,
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{key} {}: no certificate in the file", path.display())]
    NoCertificate { key: &'static str, path: PathBuf },
    #[error("{key} {}: {source}", path.display())]
    Rejected {
        key: &'static str,
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("listen.tls_client_ca: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    #[error("`{0}` is not a valid TLS server name (upstream.tls_server_name)")]
    ServerName(String),
    #[error(
        "upstream.tls_ca is not set and the system's trust store has no certificate{0}: set \
         upstream.tls_ca to the CA bundle the upstream's certificate chains to"
    )]
    NoSystemRoots(String),
}

/// The system's trust store, read once per process (a few hundred certificates: not at every
/// connect). `Err` carries why it is empty, for [`TlsError::NoSystemRoots`].
fn system_roots() -> Result<Arc<RootCertStore>, TlsError> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            store.add_parsable_certificates(found.certs);
            if !store.is_empty() {
                return Ok(Arc::new(store));
            }
            let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
            Err(match why.is_empty() {
                true => String::new(),
                false => format!(" ({})", why.join("; ")),
            })
        })
        .clone()
        .map_err(TlsError::NoSystemRoots)
}

/// The earliest `notAfter` among `certs`, in seconds since the epoch (`None` if none parses).
pub fn not_after(certs: &[CertificateDer<'_>]) -> Option<i64> {
    certs
        .iter()
        .filter_map(|c| x509_parser::parse_x509_certificate(c).ok())
        .map(|(_, x509)| x509.validity().not_after.timestamp())
        .min()
}

/// Export the expiry of one side's chain (see the module's doc for the sides).
pub fn record_expiry(side: &'static str, certs: &[CertificateDer<'_>]) {
    if let Some(t) = not_after(certs) {
        crate::metrics::tls_cert_not_after(side, t);
    }
}

/// The expiry of the chain the upstream at `addr` presented: side `upstream` is the earliest
/// over every address's latest handshake, so with a cluster the node whose certificate expires
/// first is the one shown, and a renewal raises it only once every node has renewed. The map is
/// bounded by the upstream's addresses (a cluster's nodes).
pub fn record_upstream_expiry(addr: &str, chain: &[CertificateDer<'_>]) {
    static LATEST: OnceLock<std::sync::Mutex<std::collections::HashMap<String, i64>>> =
        OnceLock::new();
    let Some(t) = not_after(chain) else { return };
    let mut latest = LATEST
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    latest.insert(addr.to_string(), t);
    if let Some(earliest) = latest.values().min() {
        crate::metrics::tls_cert_not_after("upstream", *earliest);
    }
}

/// The expiry of what clients are served with: `listen.tls_cert` (side `listen`) and
/// `listen.tls_client_ca` (side `listen_client_ca`). Called when they are put in service (start
/// and each reload); a file that no longer reads leaves the last value.
pub fn record_server_expiry(files: &ServerTls) {
    if let Ok(chain) = certs("listen.tls_cert", &files.cert) {
        record_expiry("listen", &chain);
    }
    if let Some(ca) = &files.client_ca
        && let Ok(ca) = certs("listen.tls_client_ca", ca)
    {
        record_expiry("listen_client_ca", &ca);
    }
}

fn certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem {
        key,
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            key,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn private_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Pem {
        key,
        path: path.to_path_buf(),
        source,
    })
}

fn roots(key: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    roots_of(key, path, certs(key, path)?)
}

fn roots_of(
    key: &'static str,
    path: &Path,
    certs: Vec<CertificateDer<'static>>,
) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs {
        store.add(c).map_err(|source| TlsError::Rejected {
            key,
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(store)
}

/// What client TLS sessions are accepted with: the certificate and key, and, with
/// `listen.tls_client_ca`, a client certificate that must chain to that CA.
pub fn server_config(files: &ServerTls) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder();
    let builder = match &files.client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder(Arc::new(roots("listen.tls_client_ca", ca)?)).build()?,
        ),
        None => builder.with_no_client_auth(),
    };
    let chain = certs("listen.tls_cert", &files.cert)?;
    let key = private_key("listen.tls_key", &files.key)?;
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Rejected {
            key: "listen.tls_key",
            path: files.key.clone(),
            source,
        })?;
    Ok(Arc::new(config))
}

/// What upstream connections are opened with, and the name the upstream's certificate must
/// carry (also sent as SNI). Verification is always on: against `upstream.tls_ca` when set, else
/// the system's trust store. Records the expiry of the CA file (side `upstream_ca`) and of
/// respite's client certificate (side `upstream_client`).
pub fn client_config(
    tls: &UpstreamTls,
) -> Result<(Arc<ClientConfig>, ServerName<'static>), TlsError> {
    let roots = match &tls.ca {
        Some(ca) => {
            let bundle = certs("upstream.tls_ca", ca)?;
            record_expiry("upstream_ca", &bundle);
            Arc::new(roots_of("upstream.tls_ca", ca, bundle)?)
        }
        None => system_roots()?,
    };
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(
                {
                    let chain = certs("upstream.tls_cert", cert)?;
                    record_expiry("upstream_client", &chain);
                    chain
                },
                private_key("upstream.tls_key", key)?,
            )
            .map_err(|source| TlsError::Rejected {
                key: "upstream.tls_key",
                path: key.clone(),
                source,
            })?,
        _ => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from(tls.server_name.clone())
        .map_err(|_| TlsError::ServerName(tls.server_name.clone()))?;
    Ok((Arc::new(config), name))
}
