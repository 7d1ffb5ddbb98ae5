//! Handshakes over in-memory pipes against certificates made on the spot.

use super::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use std::fs;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_rustls::{TlsConnector, client, server};

struct Ca {
    pem: String,
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        der: cert.der().clone(),
        issuer: Issuer::new(params, key),
    }
}

/// A leaf signed by `ca`: (certificate PEM, key PEM, certificate DER).
fn leaf(ca: &Ca, sans: &[&str], cn: &str) -> (String, String, CertificateDer<'static>) {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

struct Setup {
    _dir: tempfile::TempDir,
    files: TlsFiles,
    ca: Ca,
    server_der: CertificateDer<'static>,
}

/// A CA and a server certificate for "localhost" in a temporary folder;
/// with `client_ca`, the same CA signs client certificates.
fn setup(client_ca: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("test CA");
    let (cert, key, server_der) = leaf(&ca, &["localhost"], "eldercare test server");
    let files = TlsFiles {
        cert: dir.path().join("server.pem"),
        key: dir.path().join("server.key"),
        client_ca: client_ca.then(|| dir.path().join("clients-ca.pem")),
    };
    fs::write(&files.cert, cert).unwrap();
    fs::write(&files.key, key).unwrap();
    if let Some(path) = &files.client_ca {
        fs::write(path, &ca.pem).unwrap();
    }
    Setup {
        _dir: dir,
        files,
        ca,
        server_der,
    }
}

fn client_config(
    ca: &CertificateDer<'static>,
    client: Option<(String, String)>,
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

type Pair = (
    std::io::Result<client::TlsStream<DuplexStream>>,
    std::io::Result<server::TlsStream<DuplexStream>>,
);

async fn handshake(acceptor: TlsAcceptor, client: Arc<ClientConfig>) -> Pair {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let connector = TlsConnector::from(client);
    let name = ServerName::try_from("localhost").unwrap();
    tokio::join!(connector.connect(name, c), acceptor.accept(s))
}

async fn connected(acceptor: TlsAcceptor, client: Arc<ClientConfig>) -> Connected {
    let (c, s) = handshake(acceptor, client).await;
    Connected {
        client: c.expect("client handshake"),
        server: s.expect("server handshake"),
    }
}

struct Connected {
    client: client::TlsStream<DuplexStream>,
    server: server::TlsStream<DuplexStream>,
}

impl Connected {
    /// The certificate the server showed the client.
    fn server_cert(&self) -> CertificateDer<'static> {
        self.client.get_ref().1.peer_certificates().unwrap()[0].clone()
    }

    /// One message each way over the established session.
    async fn exchange(&mut self, text: &str) {
        self.client.write_all(text.as_bytes()).await.unwrap();
        self.client.flush().await.unwrap();
        let mut buf = vec![0; text.len()];
        self.server.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, text.as_bytes());
        self.server.write_all(&buf).await.unwrap();
        self.server.flush().await.unwrap();
        let mut back = vec![0; text.len()];
        self.client.read_exact(&mut back).await.unwrap();
        assert_eq!(back, text.as_bytes());
    }
}

#[tokio::test]
async fn loads_and_serves_a_handshake_without_client_certificates() {
    let s = setup(false);
    let tls = Tls::load(s.files.clone()).unwrap();
    assert_eq!(tls.files(), &s.files);

    let mut conn = connected(tls.mqtt_acceptor(), client_config(&s.ca.der, None, &[])).await;
    assert_eq!(conn.server_cert(), s.server_der);
    assert_eq!(peer_device_id(conn.server.get_ref().1), None);
    conn.exchange("PINGREQ").await;

    // A client certificate is not even asked for without a client CA: a
    // client that has one connects without showing it.
    let client = leaf(&s.ca, &[], "gw-0001");
    let conn = connected(
        tls.mqtt_acceptor(),
        client_config(&s.ca.der, Some((client.0, client.1)), &[]),
    )
    .await;
    assert_eq!(peer_device_id(conn.server.get_ref().1), None);
}

#[tokio::test]
async fn grpc_acceptor_speaks_h2_and_mqtt_acceptor_asks_for_no_protocol() {
    let s = setup(false);
    let tls = Tls::load(s.files).unwrap();

    let conn = connected(
        tls.grpc_acceptor(),
        client_config(&s.ca.der, None, &[b"h2", b"http/1.1"]),
    )
    .await;
    assert_eq!(conn.client.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    let (_, server) = handshake(
        tls.grpc_acceptor(),
        client_config(&s.ca.der, None, &[b"http/1.1"]),
    )
    .await;
    assert!(server.is_err(), "an HTTP/1.1-only client is refused");

    let conn = connected(
        tls.mqtt_acceptor(),
        client_config(&s.ca.der, None, &[b"mqtt"]),
    )
    .await;
    assert_eq!(conn.client.get_ref().1.alpn_protocol(), None);
}

#[tokio::test]
async fn a_client_certificate_names_the_device() {
    let s = setup(true);
    let tls = Tls::load(s.files).unwrap();

    let (cert, key, _) = leaf(&s.ca, &[], "band-0042");
    let mut conn = connected(
        tls.mqtt_acceptor(),
        client_config(&s.ca.der, Some((cert, key)), &[]),
    )
    .await;
    conn.exchange("CONNECT").await;
    assert_eq!(
        peer_device_id(conn.server.get_ref().1).as_deref(),
        Some("band-0042")
    );

    // Optional: a client without one still connects, and names no device.
    let conn = connected(tls.mqtt_acceptor(), client_config(&s.ca.der, None, &[])).await;
    assert_eq!(peer_device_id(conn.server.get_ref().1), None);

    // A certificate without a Common Name names no device either.
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &s.ca.issuer).unwrap();
    let conn = connected(
        tls.mqtt_acceptor(),
        client_config(&s.ca.der, Some((cert.pem(), key.serialize_pem())), &[]),
    )
    .await;
    assert_eq!(peer_device_id(conn.server.get_ref().1), None);
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let s = setup(true);
    let tls = Tls::load(s.files).unwrap();

    let stranger = ca("someone else's CA");
    let (cert, key, _) = leaf(&stranger, &[], "band-0042");
    let (client, server) = handshake(
        tls.mqtt_acceptor(),
        client_config(&s.ca.der, Some((cert, key)), &[]),
    )
    .await;
    let err = server.expect_err("the server refuses the handshake");
    assert!(
        err.to_string().contains("UnknownIssuer") || err.to_string().contains("unknown issuer"),
        "{err}"
    );
    // Under TLS 1.3 the client finishes first; its first read then fails.
    if let Ok(mut client) = client {
        let mut buf = [0u8; 1];
        assert!(!matches!(client.read(&mut buf).await, Ok(n) if n > 0));
    }
}

#[tokio::test]
async fn reload_serves_the_new_certificate_to_new_connections_only() {
    let s = setup(false);
    let tls = Tls::load(s.files.clone()).unwrap();
    let client = client_config(&s.ca.der, None, &[]);

    let mut old = connected(tls.mqtt_acceptor(), client.clone()).await;
    assert_eq!(old.server_cert(), s.server_der);
    let grpc_before = tls.grpc_acceptor();

    let (cert, key, renewed) = leaf(&s.ca, &["localhost"], "eldercare test server, renewed");
    fs::write(&s.files.cert, cert).unwrap();
    fs::write(&s.files.key, key).unwrap();
    tls.reload().unwrap();

    let clone = tls.clone();
    let new = connected(clone.mqtt_acceptor(), client.clone()).await;
    assert_eq!(new.server_cert(), renewed, "a clone sees the reload");
    let new = connected(tls.grpc_acceptor(), client.clone()).await;
    assert_eq!(new.server_cert(), renewed);
    // The connection made before the reload goes on with its session.
    old.exchange("PUBLISH after reload").await;
    // An acceptor taken before the reload keeps what it was given.
    let kept = connected(grpc_before, client).await;
    assert_eq!(kept.server_cert(), s.server_der);
}

#[tokio::test]
async fn a_bad_file_on_reload_keeps_the_running_certificate() {
    let s = setup(false);
    let tls = Tls::load(s.files.clone()).unwrap();
    let client = client_config(&s.ca.der, None, &[]);

    // A new certificate whose key has not been put in place yet.
    let (cert, _, _) = leaf(&s.ca, &["localhost"], "half-renewed");
    fs::write(&s.files.cert, cert).unwrap();
    let err = tls.reload().unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    assert_eq!(
        connected(tls.mqtt_acceptor(), client.clone())
            .await
            .server_cert(),
        s.server_der
    );

    fs::write(&s.files.key, "not a key").unwrap();
    let err = tls.reload().unwrap_err();
    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err}");
    assert_eq!(
        connected(tls.mqtt_acceptor(), client).await.server_cert(),
        s.server_der
    );
}

#[test]
fn errors_name_the_file_and_what_is_wrong() {
    let s = setup(true);
    let dir = s.files.cert.parent().unwrap();
    let message = |files: TlsFiles| Tls::load(files).unwrap_err().to_string();

    let missing = dir.join("missing.pem");
    let m = message(TlsFiles {
        cert: missing.clone(),
        ..s.files.clone()
    });
    assert!(
        m.starts_with(&format!("cannot read {}", missing.display())),
        "{m}"
    );

    // The key file holds no certificate; the certificate file no key.
    let m = message(TlsFiles {
        cert: s.files.key.clone(),
        ..s.files.clone()
    });
    assert_eq!(
        m,
        format!(
            "no certificate in {} (expected a PEM \"CERTIFICATE\" block)",
            s.files.key.display()
        )
    );
    let m = message(TlsFiles {
        key: s.files.cert.clone(),
        ..s.files.clone()
    });
    assert!(
        m.starts_with(&format!("no private key in {}", s.files.cert.display())),
        "{m}"
    );

    let other_key = dir.join("other.key");
    fs::write(&other_key, KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let m = message(TlsFiles {
        key: other_key.clone(),
        ..s.files.clone()
    });
    assert_eq!(
        m,
        format!(
            "the private key in {} does not match the certificate in {}",
            other_key.display(),
            s.files.cert.display()
        )
    );

    let broken = dir.join("broken.pem");
    fs::write(&broken, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    let m = message(TlsFiles {
        cert: broken.clone(),
        ..s.files.clone()
    });
    assert!(
        m.starts_with(&format!("{} is not valid PEM", broken.display())),
        "{m}"
    );

    let empty = dir.join("empty.pem");
    fs::write(&empty, "").unwrap();
    let m = message(TlsFiles {
        client_ca: Some(empty.clone()),
        ..s.files.clone()
    });
    assert!(
        m.starts_with(&format!("no certificate in {}", empty.display())),
        "{m}"
    );
}
