//! The embedded broker, reached only through in-process links: rumqttd's
//! router runs on its own thread and every device session gets a link of
//! its own (a pair of in-memory queues), so a session costs one file
//! descriptor, its device's socket, instead of a loopback connection with
//! two more. The broker keeps what it is good at: subscriptions, QoS 2
//! handshakes, persistent sessions and the fan-out of commands.
use rumqttd::local::{LinkBuilder, LinkError, LinkRx, LinkTx};
use rumqttd::protocol::{Disconnect, DisconnectReasonCode, Packet};
use rumqttd::{Notification, RouterConfig};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

type Open = dyn Fn(&str, bool) -> Result<(LinkTx, LinkRx, Notification), LinkFailed> + Send + Sync;

/// The router refused or dropped a link (rumqttd's own error is large).
#[derive(Debug, thiserror::Error)]
#[error("broker link: {0}")]
pub struct LinkFailed(String);

impl From<LinkError> for LinkFailed {
    fn from(e: LinkError) -> Self {
        LinkFailed(e.to_string())
    }
}

/// A handle on the running router; cheap to clone.
#[derive(Clone)]
pub struct Router {
    // rumqttd does not export the type of its router's queue, so the
    // handle keeps it inside a closure that opens links on it.
    open: Arc<Open>,
    /// Client ids whose session the broker may be keeping (a link opened
    /// not clean, not forgotten since).
    kept: Arc<Mutex<HashSet<String>>>,
}

/// A device session's link.
pub struct Link {
    pub tx: LinkTx,
    pub rx: LinkRx,
    /// The broker still had this client's session (MQTT "session present").
    pub session_present: bool,
}

impl Router {
    /// Starts the router thread.
    pub fn start(config: RouterConfig) -> Router {
        let tx = rumqttd::Router::new(0, config).spawn();
        Router {
            open: Arc::new(move |client_id: &str, clean: bool| {
                LinkBuilder::new(client_id, tx.clone())
                    .clean_session(clean)
                    .dynamic_filters(true)
                    .build()
                    .map_err(LinkFailed::from)
            }),
            kept: Arc::default(),
        }
    }

    /// Opens a link, waiting on this thread for the router's answer.
    pub fn link_blocking(&self, client_id: &str, clean: bool) -> Result<Link, LinkFailed> {
        let (tx, rx, ack) = (self.open)(client_id, clean)?;
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if clean {
            kept.remove(client_id);
        } else {
            kept.insert(client_id.to_string());
        }
        drop(kept);
        let session_present = matches!(
            Option::<Packet>::from(ack),
            Some(Packet::ConnAck(a, _)) if a.session_present
        );
        Ok(Link {
            tx,
            rx,
            session_present,
        })
    }

    /// Opens a link for `client_id`: `clean` starts its session afresh
    /// and lets it go at the end; otherwise the broker restores what it
    /// kept and keeps it after. Opening a link for a client id that has
    /// one ends the older link.
    pub async fn link(&self, client_id: &str, clean: bool) -> Result<Link, LinkFailed> {
        let router = self.clone();
        let id = client_id.to_string();
        // The router answers within microseconds, but the answer is waited
        // for with a blocking receive.
        tokio::task::spawn_blocking(move || router.link_blocking(&id, clean))
            .await
            .map_err(|e| LinkFailed(e.to_string()))?
    }

    /// Makes the broker forget what it keeps for `client_id` (its
    /// subscriptions and undelivered commands): a clean link opened and
    /// closed at once.
    pub async fn forget(&self, client_id: &str) {
        if let Ok(mut l) = self.link(client_id, true).await {
            close(&mut l.tx).await;
        }
    }

    /// Like [`Router::forget`], only when the broker may be keeping a
    /// session for `client_id` (most clients never ask it to).
    pub async fn forget_if_kept(&self, client_id: &str) {
        let kept = self
            .kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(client_id);
        if kept {
            self.forget(client_id).await;
        }
    }
}

/// Ends a link on the broker's side: a persistent session is kept, a
/// clean one let go.
pub async fn close(tx: &mut LinkTx) {
    // `send` pushes to the link's buffer and wakes the router; it never
    // waits, except when a thousand events queue for the router.
    let _ = tx
        .send(Packet::Disconnect(
            Disconnect {
                reason_code: DisconnectReasonCode::NormalDisconnection,
            },
            None,
        ))
        .await;
}

/// A client id the broker accepts: it refuses `+ $ # /`.
pub fn broker_client_id(device_id: &str, client_id: &str) -> String {
    let clean: String = client_id
        .chars()
        .map(|c| if "+$#/".contains(c) { '_' } else { c })
        .collect();
    format!("{device_id}~{clean}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttd::protocol::{Filter, QoS, RetainForwardRule, Subscribe};

    fn config() -> RouterConfig {
        RouterConfig {
            max_connections: 100,
            max_outgoing_packet_count: 200,
            max_segment_size: 1024 * 1024,
            max_segment_count: 2,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_command_reaches_the_link_subscribed_to_it_and_a_kept_session_comes_back() {
        let router = Router::start(config());
        let mut backend = router.link("backend", true).await.unwrap();
        let mut dev = router.link("btn-1~a", false).await.unwrap();
        assert!(!dev.session_present);
        dev.tx
            .send(Packet::Subscribe(
                Subscribe {
                    pkid: 1,
                    filters: vec![Filter {
                        path: "eldercare/v1/btn-1/cmd".into(),
                        qos: QoS::AtLeastOnce,
                        nolocal: false,
                        preserve_retain: false,
                        retain_forward_rule: RetainForwardRule::Never,
                    }],
                },
                None,
            ))
            .await
            .unwrap();
        // The SUBACK.
        let n = dev.rx.next().await.unwrap().unwrap();
        assert!(matches!(
            Option::<Packet>::from(n),
            Some(Packet::SubAck(..))
        ));
        backend
            .tx
            .publish("eldercare/v1/btn-1/cmd", "hello")
            .unwrap();
        let n = loop {
            match dev.rx.next().await.unwrap() {
                Some(Notification::Forward(f)) => break f,
                Some(Notification::Unschedule) => dev.rx.wake().await.unwrap(),
                _ => {}
            }
        };
        assert_eq!(&n.publish.payload[..], b"hello");
        close(&mut dev.tx).await;
        // Same client id again, not clean: the session was kept.
        let again = router.link("btn-1~a", false).await.unwrap();
        assert!(again.session_present);
        drop(again);
        router.forget("btn-1~a").await;
        let after = router.link("btn-1~a", false).await.unwrap();
        assert!(!after.session_present, "forgotten");
    }

    #[test]
    fn client_ids_are_made_acceptable_to_the_broker() {
        assert_eq!(broker_client_id("btn-1", "a/b#"), "btn-1~a_b_");
        assert_eq!(broker_client_id("btn-1", ""), "btn-1~");
    }
}
