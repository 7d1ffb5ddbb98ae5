//! TLS for the device listener (MQTT over TLS, port 8883) and the
//! operator API (gRPC over TLS): one server certificate and key, read from
//! PEM files, and optionally a CA bundle that gateways' client
//! certificates are checked against.
//!
//! [`Tls`] holds the configuration in force. The listeners take an
//! acceptor from it for each connection they accept, so [`Tls::reload`]
//! (on SIGHUP) changes what new connections see while connections already
//! up keep the session they negotiated. A file that does not load leaves
//! the running configuration in place.
//!
//! With a client CA, a client certificate is optional but verified when
//! presented; [`peer_device_id`] reads the device id it names (its subject
//! Common Name), which the listener then checks against the registry.
//!
//! rustls runs on the ring provider, passed explicitly to every builder,
//! so nothing depends on a process-wide default provider.
#![forbid(unsafe_code)]

pub use rustls::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

/// Where the server's TLS material lives; every file is PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain: its own certificate first, then any
    /// intermediates.
    pub cert: PathBuf,
    /// The private key of the first certificate in `cert` (PKCS#8, PKCS#1
    /// or SEC1).
    pub key: PathBuf,
    /// CA certificates that sign gateways' client certificates. Without it
    /// no client certificate is asked for.
    pub client_ca: Option<PathBuf>,
}

/// Why TLS material could not be loaded. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not valid PEM: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("no certificate in {} (expected a PEM \"CERTIFICATE\" block)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("no private key in {} (expected a PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block)", path.display())]
    NoPrivateKey { path: PathBuf },
    #[error("unusable private key in {}: {source}", path.display())]
    BadKey {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("unusable certificate in {}: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("the private key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("unusable client CA bundle {}: {reason}", path.display())]
    ClientCa { path: PathBuf, reason: String },
    #[error("TLS configuration refused: {0}")]
    Config(rustls::Error),
}

/// The TLS configuration in force, shared by every listener that uses it.
/// Cloning is cheap: clones see the same configuration and the same
/// reloads.
#[derive(Clone)]
pub struct Tls {
    inner: Arc<Inner>,
}

struct Inner {
    files: TlsFiles,
    current: RwLock<Configs>,
}

/// One load of the files, as the two listeners need it.
#[derive(Clone)]
struct Configs {
    mqtt: Arc<ServerConfig>,
    grpc: Arc<ServerConfig>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.inner.files)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the certificate chain, the key and, if named, the client CA
    /// bundle, and checks that the key belongs to the certificate.
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let configs = build(&files)?;
        Ok(Tls {
            inner: Arc::new(Inner {
                files,
                current: RwLock::new(configs),
            }),
        })
    }

    /// An acceptor for the device listener with the configuration in force
    /// now. It asks for no application protocol (ALPN), so any MQTT client
    /// connects whether or not it offers one.
    pub fn mqtt_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current().mqtt)
    }

    /// An acceptor for the gRPC listener with the configuration in force
    /// now, offering HTTP/2 (ALPN "h2").
    pub fn grpc_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current().grpc)
    }

    /// Reads the files again and puts what they hold in force for new
    /// connections. On an error the running configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let configs = build(&self.inner.files)?;
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = configs;
        Ok(())
    }

    /// The files this configuration is read from.
    pub fn files(&self) -> &TlsFiles {
        &self.inner.files
    }

    fn current(&self) -> Configs {
        // Nothing panics while holding the lock (the write only swaps two
        // Arcs), so a poisoned lock still holds a whole configuration.
        self.inner
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// The device id a client certificate names: the leaf's subject Common Name
/// (None without a client certificate or without a Common Name).
///
/// Only certificates the client CA vouched for get this far: rustls refuses
/// the handshake when a presented certificate does not verify.
pub fn peer_device_id(conn: &ServerConnection) -> Option<String> {
    let leaf = conn.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    let id = cn.as_str().ok()?;
    (!id.is_empty()).then(|| id.to_owned())
}

/// A client's TLS configuration for gRPC (ALPN h2) trusting only the CAs
/// in `ca` (PEM): what `eldercare alerts` uses against a server with a
/// certificate.
pub fn grpc_client_config(ca: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = read_roots(ca)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(files: &TlsFiles) -> Result<Configs, TlsError> {
    let provider = provider();
    let chain = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|source| TlsError::BadKey {
            path: files.key.clone(),
            source,
        })?;
    match CertifiedKey::new(chain.clone(), signing_key).keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            });
        }
        Err(e) => {
            return Err(TlsError::BadCertificate {
                path: files.cert.clone(),
                reason: e.to_string(),
            });
        }
    }
    let validity = validity(&files.cert, &chain[0])?;

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = read_roots(path)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mqtt = builder
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    let mut grpc = mqtt.clone();
    grpc.alpn_protocols = vec![b"h2".to_vec()];
    // An expired certificate still loads (clients decide, and refusing it
    // would take the listeners down at start), but an operator hears of it.
    if validity.now {
        info!(
            path = %files.cert.display(),
            not_after = %validity.not_after,
            "Server certificate loaded."
        );
    } else {
        warn!(
            path = %files.cert.display(),
            not_before = %validity.not_before,
            not_after = %validity.not_after,
            "Server certificate is outside its validity period; clients will refuse it."
        );
    }
    Ok(Configs {
        mqtt: Arc::new(mqtt),
        grpc: Arc::new(grpc),
    })
}

fn pem_error(path: &Path, e: pem::Error) -> TlsError {
    match e {
        pem::Error::Io(source) => TlsError::Read {
            path: path.to_owned(),
            source,
        },
        other => TlsError::Pem {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    match PrivateKeyDer::from_pem_file(path) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(TlsError::NoPrivateKey {
            path: path.to_owned(),
        }),
        Err(e) => Err(pem_error(path, e)),
    }
}

fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::ClientCa {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The leaf's validity period, which also refuses a leaf that is not
/// X.509 at all.
struct Validity {
    not_before: String,
    not_after: String,
    now: bool,
}

fn validity(path: &Path, leaf: &CertificateDer<'_>) -> Result<Validity, TlsError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| TlsError::BadCertificate {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    let v = cert.validity();
    Ok(Validity {
        not_before: v.not_before.to_string(),
        not_after: v.not_after.to_string(),
        now: v.is_valid(),
    })
}

#[cfg(test)]
mod tests;
