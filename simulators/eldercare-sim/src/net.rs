//! How device sessions reach the broker: TLS (rustls with the ring
//! provider, passed explicitly), and the local source addresses they
//! connect from.
//!
//! One source address offers ~28,000 ephemeral ports, and a test of
//! tens of thousands of sessions wants them spread over several
//! (`127.0.0.2`, `127.0.0.3`, ... all reach a loopback listener). rumqttc
//! 0.25 cannot bind a session's socket to a local address, so with
//! [`SourceAddrs`] the sessions go through a [`Relay`]: rumqttc speaks
//! MQTT over a Unix socket to the relay, which opens the TCP (and TLS)
//! connection from the chosen address and copies bytes both ways. A
//! session closed without DISCONNECT closes its TCP connection the same
//! way, so the broker still publishes its last will. The relay costs
//! three descriptors a session instead of one.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Most addresses one range may name: a typo like `127.0.0.2-127.1.0.2`
/// is refused rather than opening 65,000 listeners.
pub const MAX_SOURCE_ADDRS: usize = 4096;

/// Local addresses to connect from, taken in turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceAddrs(Vec<IpAddr>);

impl SourceAddrs {
    /// Parses a comma list of addresses and IPv4 ranges, e.g.
    /// `127.0.0.2-127.0.0.40` or `127.0.0.2,127.0.0.3,::1`.
    pub fn parse(text: &str) -> anyhow::Result<SourceAddrs> {
        let mut out = Vec::new();
        for item in text.split(',').map(str::trim) {
            if item.is_empty() {
                anyhow::bail!("empty item in source addresses `{text}`");
            }
            match item.split_once('-') {
                Some((a, b)) => {
                    let bad = |what: &str| anyhow::anyhow!("source address range `{item}`: {what}");
                    let a: Ipv4Addr = a.trim().parse().map_err(|_| bad("not an IPv4 address"))?;
                    let b: Ipv4Addr = b.trim().parse().map_err(|_| bad("not an IPv4 address"))?;
                    let (a, b) = (u32::from(a), u32::from(b));
                    if a > b {
                        return Err(bad("the first address is after the last"));
                    }
                    if (b - a) as usize >= MAX_SOURCE_ADDRS {
                        return Err(bad(&format!("more than {MAX_SOURCE_ADDRS} addresses")));
                    }
                    out.extend((a..=b).map(|n| IpAddr::V4(Ipv4Addr::from(n))));
                }
                None => out.push(item.parse().map_err(|_| {
                    anyhow::anyhow!("source address `{item}` is not an IP address")
                })?),
            }
        }
        if out.len() > MAX_SOURCE_ADDRS {
            anyhow::bail!("more than {MAX_SOURCE_ADDRS} source addresses");
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = out.iter().find(|a| !seen.insert(**a)) {
            anyhow::bail!("source address {dup} is named twice");
        }
        Ok(SourceAddrs(out))
    }

    pub fn addrs(&self) -> &[IpAddr] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::str::FromStr for SourceAddrs {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<SourceAddrs> {
        SourceAddrs::parse(s)
    }
}

/// The host and port of a `host:port` broker address (`[::1]:8883` for
/// IPv6).
pub fn split_host_port(addr: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("--mqtt-addr `{addr}` must be host:port"))?;
    let port = port
        .parse()
        .map_err(|_| anyhow::anyhow!("--mqtt-addr `{addr}`: `{port}` is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        anyhow::bail!("--mqtt-addr `{addr}` has no host");
    }
    Ok((host.to_string(), port))
}

/// A TLS client configuration that trusts the CA certificates in
/// `ca_pem` and, given both, presents the client certificate chain in
/// `cert_pem` with its key in `key_pem`. The ring provider is passed
/// explicitly: no process-wide default is installed or needed.
pub fn tls_client_config(
    ca_pem: &Path,
    client: Option<(&Path, &Path)>,
) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let cas = CertificateDer::pem_file_iter(ca_pem)
        .map_err(|e| anyhow::anyhow!("--tls-ca {}: {e}", ca_pem.display()))?;
    for ca in cas {
        let ca = ca.map_err(|e| anyhow::anyhow!("--tls-ca {}: {e}", ca_pem.display()))?;
        roots
            .add(ca)
            .map_err(|e| anyhow::anyhow!("--tls-ca {}: {e}", ca_pem.display()))?;
    }
    if roots.is_empty() {
        anyhow::bail!("--tls-ca {} holds no certificate", ca_pem.display());
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| anyhow::anyhow!("--tls-cert {}: {e}", cert.display()))?;
            if chain.is_empty() {
                anyhow::bail!("--tls-cert {} holds no certificate", cert.display());
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| anyhow::anyhow!("--tls-key {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| anyhow::anyhow!("--tls-cert/--tls-key: {e}"))?
        }
    };
    Ok(Arc::new(config))
}

/// Relays sessions to the broker from the source addresses: one Unix
/// socket per address, for rumqttc to connect to, each connection
/// accepted there opened again over TCP (and TLS) from its address.
pub struct Relay {
    /// Holds the sockets' folder, removed when the relay is dropped.
    dir: tempfile::TempDir,
    paths: Vec<PathBuf>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Relay {
    /// Listens for sessions to relay to `broker` (`host:port`), each
    /// from the address its socket stands for; over TLS to the broker's
    /// host as server name when given a configuration.
    pub async fn start(
        sources: &SourceAddrs,
        broker: &str,
        tls: Option<Arc<ClientConfig>>,
    ) -> anyhow::Result<Relay> {
        let (host, port) = split_host_port(broker)?;
        let targets: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| anyhow::anyhow!("cannot resolve {broker}: {e}"))?
            .collect();
        let tls = match tls {
            Some(cfg) => {
                let name = ServerName::try_from(host.clone())
                    .map_err(|e| anyhow::anyhow!("`{host}` is not a TLS server name: {e}"))?;
                Some((tokio_rustls::TlsConnector::from(cfg), name))
            }
            None => None,
        };
        let dir = tempfile::Builder::new()
            .prefix("eldercare-sim-")
            .tempdir()?;
        let mut paths = Vec::new();
        let mut tasks = Vec::new();
        for (i, src) in sources.addrs().iter().enumerate() {
            let target = *targets
                .iter()
                .find(|t| t.is_ipv4() == src.is_ipv4())
                .ok_or_else(|| {
                    anyhow::anyhow!("{broker} has no address of the family of source {src}")
                })?;
            let path = dir.path().join(format!("{i}.sock"));
            let listener = tokio::net::UnixListener::bind(&path)?;
            paths.push(path);
            let (src, tls) = (*src, tls.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((local, _)) = listener.accept().await else {
                        // Out of descriptors, most likely: the session
                        // sees its connection fail and tries again.
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    };
                    tokio::spawn(relay_one(local, src, target, tls.clone()));
                }
            }));
        }
        Ok(Relay { dir, paths, tasks })
    }

    /// The socket for the `n`th session: the addresses in turn.
    pub fn path(&self, n: usize) -> &Path {
        &self.paths[n % self.paths.len()]
    }

    /// The folder of the sockets.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Opens the session's connection from `src` and copies both ways until
/// either side closes. A failure drops the local end: rumqttc sees the
/// connection fail.
async fn relay_one(
    mut local: tokio::net::UnixStream,
    src: IpAddr,
    target: SocketAddr,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
) {
    let tcp = async {
        let socket = match src {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_nodelay(true)?;
        socket.bind(SocketAddr::new(src, 0))?;
        socket.connect(target).await
    };
    let tcp = match tcp.await {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(%src, %target, error = %e, "Relay could not connect.");
            return;
        }
    };
    let r = match tls {
        None => {
            let mut tcp = tcp;
            tokio::io::copy_bidirectional(&mut local, &mut tcp).await
        }
        Some((connector, name)) => match connector.connect(name, tcp).await {
            Ok(mut s) => tokio::io::copy_bidirectional(&mut local, &mut s).await,
            Err(e) => {
                tracing::debug!(%src, %target, error = %e, "Relay's TLS handshake failed.");
                return;
            }
        },
    };
    if let Err(e) = r {
        tracing::debug!(%src, %target, error = %e, "Relayed session ended.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_range_names_every_address_in_it_in_order() {
        let s = SourceAddrs::parse("127.0.0.2-127.0.0.5").unwrap();
        assert_eq!(
            s.addrs(),
            &[
                v4("127.0.0.2"),
                v4("127.0.0.3"),
                v4("127.0.0.4"),
                v4("127.0.0.5")
            ]
        );
        let across = SourceAddrs::parse("127.0.0.254-127.0.1.1").unwrap();
        assert_eq!(across.len(), 4);
        assert_eq!(across.addrs()[2], v4("127.0.1.0"));
    }

    #[test]
    fn lists_mix_ranges_and_single_addresses() {
        let s = SourceAddrs::parse("127.0.0.2-127.0.0.3, 127.0.1.9,::1").unwrap();
        assert_eq!(
            s.addrs(),
            &[
                v4("127.0.0.2"),
                v4("127.0.0.3"),
                v4("127.0.1.9"),
                "::1".parse().unwrap()
            ]
        );
        assert_eq!(SourceAddrs::parse("127.0.0.7").unwrap().len(), 1);
    }

    #[test]
    fn bad_lists_say_which_item_is_wrong() {
        for (text, says) in [
            ("127.0.0.9-127.0.0.2", "after the last"),
            ("127.0.0.2-", "not an IPv4"),
            ("127.0.0.2,,127.0.0.3", "empty item"),
            ("localhost", "`localhost` is not an IP"),
            ("127.0.0.2,127.0.0.2", "named twice"),
            ("10.0.0.0-10.1.0.0", "more than 4096"),
            ("::1-::2", "not an IPv4"),
        ] {
            let e = SourceAddrs::parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn broker_addresses_split_into_host_and_port() {
        assert_eq!(
            split_host_port("127.0.0.1:8883").unwrap(),
            ("127.0.0.1".into(), 8883)
        );
        assert_eq!(split_host_port("[::1]:1883").unwrap(), ("::1".into(), 1883));
        assert_eq!(
            split_host_port("mqtt.example:1883").unwrap(),
            ("mqtt.example".into(), 1883)
        );
        assert!(split_host_port("127.0.0.1").is_err());
        assert!(split_host_port(":1883").is_err());
        assert!(split_host_port("h:x").is_err());
    }

    #[tokio::test]
    async fn the_relay_connects_from_each_source_address_in_turn() {
        let broker = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = broker.local_addr().unwrap().to_string();
        let sources = SourceAddrs::parse("127.0.0.2-127.0.0.3").unwrap();
        let relay = Relay::start(&sources, &addr, None).await.unwrap();
        let mut from = Vec::new();
        for n in 0..4 {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut c = tokio::net::UnixStream::connect(relay.path(n))
                .await
                .unwrap();
            c.write_all(b"hi").await.unwrap();
            let (mut s, peer) = broker.accept().await.unwrap();
            let mut buf = [0u8; 2];
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"hi");
            s.write_all(b"ok").await.unwrap();
            c.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ok");
            from.push(peer.ip());
        }
        assert_eq!(
            from,
            [
                v4("127.0.0.2"),
                v4("127.0.0.3"),
                v4("127.0.0.2"),
                v4("127.0.0.3")
            ]
        );
    }
}
