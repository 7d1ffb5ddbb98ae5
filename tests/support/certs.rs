//! Test certificates made on the spot (rcgen): a CA, a server certificate
//! for 127.0.0.1 and localhost, and client certificates whose Common Name
//! is a device id.
#![allow(dead_code)]

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};

pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A self-signed CA named `name`.
pub fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

impl Ca {
    /// Writes the CA's certificate to `path`.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, &self.pem).unwrap();
        path.to_path_buf()
    }
}

/// Writes a server certificate for 127.0.0.1 and localhost, signed by
/// `ca`, and its key.
pub fn server_cert(ca: &Ca, cert: &Path, key: &Path) {
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    signed(ca, params, "eldercare test server", cert, key);
}

/// Writes a client certificate naming `common_name` (a device id), signed
/// by `ca`, and its key.
pub fn client_cert(ca: &Ca, common_name: &str, cert: &Path, key: &Path) {
    let params = CertificateParams::new(Vec::<String>::new()).unwrap();
    signed(ca, params, common_name, cert, key);
}

fn signed(ca: &Ca, mut params: CertificateParams, cn: &str, cert: &Path, key: &Path) {
    params.distinguished_name.push(DnType::CommonName, cn);
    let pair = KeyPair::generate().unwrap();
    let signed = params.signed_by(&pair, &ca.issuer).unwrap();
    std::fs::write(cert, signed.pem()).unwrap();
    std::fs::write(key, pair.serialize_pem()).unwrap();
}
