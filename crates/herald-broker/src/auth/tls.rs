//! TLS for the SSL and SASL_SSL listeners, with rustls: the certificate chain and key from PEM
//! files, optional client certificates checked against a CA bundle (on SSL listeners: a
//! SASL_SSL client authenticates with SASL, so it is not asked for one), and [`TlsConfig::reload`]
//! (SIGHUP in `herald serve`), which swaps the configuration new connections get while the
//! open ones keep theirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// Whether TLS listeners ask clients for a certificate (Kafka's `ssl.client.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// A certificate is asked for; a client without one connects as `User:ANONYMOUS`.
    Requested,
    /// A client without a valid certificate is refused during the handshake.
    Required,
}

/// Why the TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A TLS listener is configured but the certificate or key path is not.
    #[error("a TLS listener needs ssl_certificate_path and ssl_key_path")]
    Missing,
    /// Client authentication is on but no CA bundle is configured.
    #[error("ssl_client_auth = {0:?} needs ssl_client_ca_path")]
    NoClientCa(ClientAuth),
    /// A PEM file could not be read or holds nothing usable.
    #[error("cannot read {what} from {path}: {message}")]
    Pem {
        /// What was being read.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// rustls refused the certificate, key or CA bundle.
    #[error("TLS configuration refused: {0}")]
    Rustls(String),
}

/// Paths of the PEM files TLS listeners use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// Certificate chain, leaf first.
    pub certificate: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA bundle client certificates are checked against.
    pub client_ca: Option<PathBuf>,
    /// Whether client certificates are asked for.
    pub client_auth: ClientAuth,
}

/// The live TLS configuration of every TLS listener.
pub struct TlsConfig {
    paths: TlsPaths,
    /// For SSL listeners (client certificates as configured) and SASL_SSL ones (none asked).
    current: RwLock<(Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>)>,
}

impl TlsConfig {
    /// Loads the files; fails with the reason if any is missing or unusable.
    pub fn load(paths: TlsPaths) -> Result<TlsConfig, TlsError> {
        let configs = build_both(&paths)?;
        Ok(TlsConfig {
            paths,
            current: RwLock::new(configs),
        })
    }

    /// Reads the files again and, if they are usable, gives new connections the new
    /// configuration; open connections are not touched. On error the old one stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        *self.current.write() = build_both(&self.paths)?;
        Ok(())
    }

    /// The configuration for a connection accepted now; `client_certificates` on SSL
    /// listeners.
    pub(crate) fn acceptor(&self, client_certificates: bool) -> tokio_rustls::TlsAcceptor {
        let current = self.current.read();
        let config = if client_certificates {
            current.0.clone()
        } else {
            current.1.clone()
        };
        tokio_rustls::TlsAcceptor::from(config)
    }
}

fn build_both(
    paths: &TlsPaths,
) -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>), TlsError> {
    let without = TlsPaths {
        client_auth: ClientAuth::None,
        ..paths.clone()
    };
    Ok((Arc::new(build(paths)?), Arc::new(build(&without)?)))
}

/// ring with rustls's safe cipher suites, AES-128-GCM first: as strong as TLS needs and about a
/// third cheaper than AES-256 for the bulk of produced and fetched bytes, on both ends.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|suite| {
        use rustls::CipherSuite::*;
        match suite.suite() {
            TLS13_AES_128_GCM_SHA256
            | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
            _ => 1,
        }
    });
    Arc::new(provider)
}

fn build(paths: &TlsPaths) -> Result<rustls::ServerConfig, TlsError> {
    let chain = certificates(&paths.certificate, "the certificate chain")?;
    let key = PrivateKeyDer::from_pem_file(&paths.key).map_err(|error| TlsError::Pem {
        what: "the private key",
        path: paths.key.clone(),
        message: error.to_string(),
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Rustls(error.to_string()))?;
    let builder = match paths.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        auth => {
            let ca = paths.client_ca.as_ref().ok_or(TlsError::NoClientCa(auth))?;
            builder.with_client_cert_verifier(client_verifier(ca, auth)?)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|error| TlsError::Rustls(error.to_string()))?;
    // Our order, not the client's: OpenSSL clients (librdkafka) put AES-256 first.
    config.ignore_client_order = true;
    Ok(config)
}

fn client_verifier(ca: &Path, auth: ClientAuth) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(ca, "the client CA bundle")? {
        roots
            .add(certificate)
            .map_err(|error| TlsError::Rustls(format!("client CA {}: {error}", ca.display())))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let builder = if auth == ClientAuth::Requested {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    builder
        .build()
        .map_err(|error| TlsError::Rustls(error.to_string()))
}

fn certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |message: String| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|error| pem_error(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(error.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error("no certificate in the file".to_string()));
    }
    Ok(chain)
}

/// Feeds arbitrary bytes to a server-side TLS handshake, as a client's first flight: the body
/// of the TLS fuzz target and its proptest. Must return without panicking.
#[doc(hidden)]
pub fn fuzz_handshake(config: &Arc<rustls::ServerConfig>, data: &[u8]) {
    let Ok(mut connection) = rustls::ServerConnection::new(config.clone()) else {
        return;
    };
    let mut input = data;
    while !input.is_empty() {
        match connection.read_tls(&mut input) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if connection.process_new_packets().is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = connection.write_tls(&mut out);
}

/// A server configuration for fuzzing the handshake, from a DER certificate and PKCS#8 key
/// the fuzzer generates (the library ships no key).
#[doc(hidden)]
pub fn fuzz_config(certificate: Vec<u8>, pkcs8_key: Vec<u8>) -> Option<Arc<rustls::ServerConfig>> {
    let key = PrivateKeyDer::Pkcs8(pkcs8_key.into());
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .ok()?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(certificate)], key)
        .ok()?;
    Some(Arc::new(config))
}
