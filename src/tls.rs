//! TLS material for both sides, built with rustls from the PEM files the configuration names:
//! the server configuration client sessions are accepted with (`listen.tls_*`) and the client
//! configuration upstream connections are opened with (`upstream.tls_*`).
//!
//! The files are read here, at start, at every reload (server side) and at every upstream
//! connect (so a rotated client certificate is used by the next connection), and nowhere else.
//! This module never opens a socket: `server` and `upstream::handshake` do, with what it builds.
//! Errors name the file and the key that named it.
use crate::config::{ServerTls, UpstreamTls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    let mut store = RootCertStore::empty();
    for c in certs(key, path)? {
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
/// carry (also sent as SNI). Verification is always on.
pub fn client_config(
    tls: &UpstreamTls,
) -> Result<(Arc<ClientConfig>, ServerName<'static>), TlsError> {
    let roots = match &tls.ca {
        Some(ca) => roots("upstream.tls_ca", ca)?,
        None => RootCertStore::empty(),
    };
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(
                certs("upstream.tls_cert", cert)?,
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
