//! TLS for direct connections (rustls): the member is the TLS server and requires a client
//! certificate signed by the group's CA; the producer is the TLS client, presents its
//! certificate and checks the member's chain against the same CA.
//!
//! Members are found by address (static peers, mDNS), not by name, so by default a producer
//! checks the member certificate's chain, validity and key usage but not the name in it; with
//! a server name configured it checks that name too. `docs/direct-protocol.md` ("TLS") says why.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read {what} from {path}: {message}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{path} holds no certificate")]
    Empty { path: PathBuf },
    #[error("a certificate needs its key and a key its certificate")]
    Incomplete,
    #[error("invalid server name {0:?}")]
    ServerName(String),
    #[error("TLS configuration refused: {0}")]
    Rustls(String),
}

/// PEM files of one side: the CA bundle that signs the group's certificates, and this side's
/// certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub certificate: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// A member's TLS: a server configuration that requires client certificates from the CA.
#[derive(Clone)]
pub struct MemberTls {
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for MemberTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemberTls(..)")
    }
}

impl MemberTls {
    /// Loads the member's certificate and key and the CA that producers' certificates must
    /// chain to.
    pub fn load(files: &TlsFiles) -> Result<MemberTls, TlsError> {
        let (Some(certificate), Some(key)) = (&files.certificate, &files.key) else {
            return Err(TlsError::Incomplete);
        };
        let roots = roots(&files.ca)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certificates(certificate)?, private_key(key)?)
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        Ok(MemberTls {
            config: Arc::new(config),
        })
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

/// A producer's TLS: a client configuration with its certificate (if any: without one, members
/// refuse it) that checks members' certificates against the CA.
#[derive(Clone)]
pub struct PublisherTls {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for PublisherTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl PublisherTls {
    /// Loads the CA and, if given, the producer's certificate and key. With `server_name`, the
    /// member's certificate must also be valid for that name; without, its chain is checked but
    /// not its name.
    pub fn load(files: &TlsFiles, server_name: Option<&str>) -> Result<PublisherTls, TlsError> {
        let roots = roots(&files.ca)?;
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let server_name = server_name
            .map(|name| {
                ServerName::try_from(name.to_string())
                    .map_err(|_| TlsError::ServerName(name.to_string()))
            })
            .transpose()?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let builder = if server_name.is_some() {
            builder.with_webpki_verifier(webpki)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
        };
        let config = match (&files.certificate, &files.key) {
            (Some(certificate), Some(key)) => builder
                .with_client_auth_cert(certificates(certificate)?, private_key(key)?)
                .map_err(|e| TlsError::Rustls(e.to_string()))?,
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(TlsError::Incomplete),
        };
        Ok(PublisherTls {
            config: Arc::new(config),
            server_name,
        })
    }

    pub(crate) fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }

    /// The name sent (SNI) and, when configured, checked: the configured one, else the member's
    /// address, which [`ChainOnly`] does not check.
    pub(crate) fn server_name(&self, addr: SocketAddr) -> ServerName<'static> {
        self.server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
    }
}

/// Checks a member's certificate like the WebPKI verifier (chain to the CA, validity period,
/// key usage, signatures) except for the name: members are reached by address and a group's
/// members share one CA, so the CA is what identifies them. The WebPKI verifier checks the
/// name last, after everything else passed, so accepting only its name error accepts nothing
/// else.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// rustls on ring, as the broker's listeners use it.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(ca)? {
        roots
            .add(certificate)
            .map_err(|e| TlsError::Rustls(format!("CA {}: {e}", ca.display())))?;
    }
    Ok(Arc::new(roots))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |message: String| TlsError::Pem {
        what: "certificates",
        path: path.to_path_buf(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        what: "the private key",
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
