//! gRPC over TLS: the accept loop that hands tonic finished TLS streams.
//!
//! Each connection takes its acceptor from [`Tls`] when it is accepted, so
//! a reload applies to new connections and leaves those already up alone.
//! Handshakes run in tasks of their own under a deadline: a client that
//! connects and never finishes its handshake costs one task for ten
//! seconds and never holds up the next accept.

use eldercare_tls::Tls;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::{debug, warn};

/// How long a client has from its TCP connect to the end of its TLS
/// handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait after a failed accept (out of file descriptors, most
/// likely) before the next, so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Connections whose handshake is done and that tonic has not taken yet.
const READY_QUEUE: usize = 64;

/// A gRPC connection over TLS. tonic sees it as the TCP connection it
/// runs on (`Request::remote_addr` works as over plain TCP).
pub struct TlsConn(tokio_rustls::server::TlsStream<TcpStream>);

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Accepts on `listener` until `shutdown` (or until tonic drops the
/// stream), and yields each connection once its handshake is done.
pub(crate) fn incoming(
    listener: TcpListener,
    tls: Tls,
    shutdown: CancellationToken,
) -> ReceiverStream<io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel(READY_QUEUE);
    tokio::spawn(accept_loop(listener, tls, shutdown, tx));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Tls,
    shutdown: CancellationToken,
    ready: mpsc::Sender<io::Result<TlsConn>>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ready.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "Accepting a gRPC connection failed.");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            },
        };
        let acceptor = tls.grpc_acceptor();
        let ready = ready.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            // gRPC's small frames (an alert, an acknowledgement) should not
            // wait for Nagle.
            let _ = tcp.set_nodelay(true);
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = handshake => outcome,
            };
            match outcome {
                Ok(Ok(stream)) => {
                    let _ = ready.send(Ok(TlsConn(stream))).await;
                }
                Ok(Err(error)) => debug!(%peer, %error, "gRPC TLS handshake failed."),
                Err(_) => debug!(%peer, "gRPC TLS handshake timed out."),
            }
        });
    }
}

/// The client side: gRPC over TLS to a server with a certificate, as a
/// connector for tonic's `Endpoint::connect_with_connector` (tonic is
/// built without its own TLS here). `config` from
/// [`eldercare_tls::grpc_client_config`]; the server name is the URI's
/// host.
pub fn connector(
    config: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
) -> tower::util::BoxCloneService<
    tonic::transport::Uri,
    hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    io::Error,
> {
    let connector = tokio_rustls::TlsConnector::from(config);
    tower::util::BoxCloneService::new(tower::service_fn(move |uri: tonic::transport::Uri| {
        let connector = connector.clone();
        async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::other(format!("no host in {uri}")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host)
                .map_err(io::Error::other)?;
            let tls = connector.connect(name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use eldercare_tls::TlsFiles;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use tokio::io::AsyncReadExt;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    /// A CA's PEM and a server certificate for localhost it signed, in
    /// `dir`.
    fn certificates(dir: &std::path::Path) -> (String, TlsFiles) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(params, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let files = TlsFiles {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            client_ca: None,
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        (ca.pem(), files)
    }

    async fn check(addr: std::net::SocketAddr, ca: Option<&str>) -> Result<i32, String> {
        let mut tls = ClientTlsConfig::new().domain_name("localhost");
        if let Some(ca) = ca {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("{e:?}"))?;
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok(reply.into_inner().status)
    }

    #[tokio::test]
    async fn serves_grpc_over_tls_and_a_silent_client_holds_up_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, files) = certificates(dir.path());
        let tls = Tls::load(files).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let stopped = shutdown.clone();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(
                    incoming(listener, tls, shutdown.clone()),
                    async move { stopped.cancelled().await },
                ),
        );

        // Connects and never starts its handshake.
        let mut silent = TcpStream::connect(addr).await.unwrap();

        assert_eq!(
            check(addr, Some(&ca)).await,
            Ok(ServingStatus::Serving as i32)
        );
        let refused = check(addr, None).await.unwrap_err();
        assert!(
            refused.contains("UnknownIssuer") || refused.contains("invalid peer certificate"),
            "{refused}"
        );

        // The silent client is let go once its handshake time is up.
        tokio::task::yield_now().await;
        tokio::time::pause();
        tokio::time::advance(HANDSHAKE_TIMEOUT + Duration::from_secs(1)).await;
        tokio::time::resume();
        let mut buf = [0u8; 1];
        assert_eq!(silent.read(&mut buf).await.unwrap(), 0);

        shutdown.cancel();
        server.await.unwrap().unwrap();
    }
}
