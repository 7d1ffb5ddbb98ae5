//! Commands (`eldercare/v1/{device_id}/cmd`) for the sessions that keep
//! nothing after their connection, through one broker link for all of
//! them: the hub subscribes to every `cmd` topic once and hands each
//! command to the sessions subscribed to it. A device may only subscribe
//! to its own `cmd` topic (a gateway to its devices'), by name, so the
//! hub's table is a map from topic to sessions, not a topic tree.
//!
//! Why not a broker link per session: each link holds the broker's
//! queues for one connection (several hundred preallocated packets),
//! which at tens of thousands of devices is most of the server's memory,
//! for sessions that mostly never receive a command. Sessions the broker
//! must keep (MQTT 3.1.1 without clean session, MQTT 5 with a session
//! expiry) still get a link of their own: the broker keeps their
//! subscriptions and undelivered commands while they are away.
use crate::links::{Link, Router};
use bytes::Bytes;
use rumqttd::Notification;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Commands waiting for one session's writer; a session that does not
/// take them (it is not reading its socket) loses the newest, counted.
const QUEUE: usize = 16;

/// One command for a session: its topic, payload, and the QoS the
/// session subscribed with (0 or 1).
#[derive(Debug, Clone)]
pub struct Command {
    pub topic: Bytes,
    pub payload: Bytes,
    pub qos: u8,
}

type Table = HashMap<String, Vec<(u64, u8, mpsc::Sender<Command>)>>;

/// The hub; cheap to clone.
#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    table: Mutex<Table>,
    next: std::sync::atomic::AtomicU64,
}

/// One session's place in the hub: its queue, and the topics it listens
/// to, let go when it is dropped.
pub struct Listener {
    hub: Hub,
    id: u64,
    tx: mpsc::Sender<Command>,
    topics: Vec<String>,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session's place in the hub, and where its commands arrive.
    pub fn listener(&self) -> (Listener, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = self
            .inner
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let l = Listener {
            hub: self.clone(),
            id,
            tx,
            topics: Vec::new(),
        };
        (l, rx)
    }

    /// Hands a command to every session subscribed to its topic.
    pub fn deliver(&self, topic: &str, payload: &Bytes) -> usize {
        let table = self.lock();
        let Some(subs) = table.get(topic) else {
            return 0;
        };
        let mut sent = 0;
        for (_, qos, tx) in subs {
            let c = Command {
                topic: Bytes::copy_from_slice(topic.as_bytes()),
                payload: payload.clone(),
                qos: *qos,
            };
            match tx.try_send(c) {
                Ok(()) => sent += 1,
                Err(_) => metrics::counter!("eldercare_mqtt_commands_dropped_total").increment(1),
            }
        }
        sent
    }

    /// Subscribes to every `cmd` topic through one broker link of its
    /// own; what is published after this returns reaches the hub.
    pub async fn connect(router: &Router) -> std::io::Result<Link> {
        metrics::counter!("eldercare_mqtt_commands_dropped_total").absolute(0);
        let mut link = router
            .link("eldercare-commands", true)
            .await
            .map_err(std::io::Error::other)?;
        link.tx
            .subscribe("eldercare/v1/+/cmd")
            .map_err(|e| std::io::Error::other(format!("broker subscribe: {e}")))?;
        Ok(link)
    }

    /// Delivers what comes on `link` (from [`Hub::connect`]) until
    /// `shutdown`.
    pub async fn run(self, mut link: Link, shutdown: CancellationToken) {
        loop {
            let n = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = link.rx.next() => n,
            };
            match n {
                Ok(Some(Notification::Forward(f))) => {
                    let topic = String::from_utf8_lossy(&f.publish.topic);
                    self.deliver(&topic, &f.publish.payload);
                }
                Ok(Some(Notification::Unschedule)) => {
                    if link.rx.wake().await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "The broker link for commands closed.");
                    return;
                }
            }
        }
    }
}

impl Listener {
    /// Listens to `topic` at `qos` (0 or 1; a command is never sent at 2).
    /// Returns the QoS granted.
    pub fn subscribe(&mut self, topic: &str, qos: u8) -> u8 {
        let qos = qos.min(1);
        let mut table = self.hub.lock();
        let subs = table.entry(topic.to_string()).or_default();
        subs.retain(|(id, ..)| *id != self.id);
        subs.push((self.id, qos, self.tx.clone()));
        if !self.topics.iter().any(|t| t == topic) {
            self.topics.push(topic.to_string());
        }
        qos
    }

    /// Stops listening to `topic`; whether it was listened to.
    pub fn unsubscribe(&mut self, topic: &str) -> bool {
        let Some(i) = self.topics.iter().position(|t| t == topic) else {
            return false;
        };
        self.topics.swap_remove(i);
        let mut table = self.hub.lock();
        remove(&mut table, topic, self.id);
        true
    }
}

fn remove(table: &mut Table, topic: &str, id: u64) {
    if let Some(subs) = table.get_mut(topic) {
        subs.retain(|(i, ..)| *i != id);
        if subs.is_empty() {
            table.remove(topic);
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut table = self.hub.lock();
        for t in &self.topics {
            remove(&mut table, t, self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_reaches_each_session_on_its_topic_until_it_leaves() {
        let hub = Hub::default();
        let (mut btn, mut btn_rx) = hub.listener();
        let (mut gw, mut gw_rx) = hub.listener();
        assert_eq!(
            btn.subscribe("eldercare/v1/btn-1/cmd", 2),
            1,
            "at most QoS 1"
        );
        assert_eq!(gw.subscribe("eldercare/v1/btn-1/cmd", 0), 0);
        gw.subscribe("eldercare/v1/btn-1/cmd", 0);
        let payload = Bytes::from_static(b"{}");
        assert_eq!(
            hub.deliver("eldercare/v1/btn-1/cmd", &payload),
            2,
            "once each"
        );
        assert_eq!(btn_rx.try_recv().unwrap().qos, 1);
        assert_eq!(gw_rx.try_recv().unwrap().qos, 0);
        assert!(gw_rx.try_recv().is_err());
        assert_eq!(hub.deliver("eldercare/v1/btn-2/cmd", &payload), 0);
        assert!(gw.unsubscribe("eldercare/v1/btn-1/cmd"));
        assert!(!gw.unsubscribe("eldercare/v1/btn-1/cmd"));
        assert_eq!(hub.deliver("eldercare/v1/btn-1/cmd", &payload), 1);
        drop(btn);
        assert_eq!(hub.deliver("eldercare/v1/btn-1/cmd", &payload), 0);
        assert!(hub.lock().is_empty(), "nothing left behind");
    }

    #[test]
    fn a_session_that_does_not_take_its_commands_loses_the_newest() {
        let hub = Hub::default();
        let (mut l, mut rx) = hub.listener();
        l.subscribe("t", 1);
        for _ in 0..QUEUE + 3 {
            hub.deliver("t", &Bytes::new());
        }
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, QUEUE);
    }
}

#[cfg(test)]
mod through_the_broker {
    use super::*;
    use rumqttd::RouterConfig;

    #[tokio::test]
    async fn a_command_published_to_the_broker_reaches_the_listener() {
        let router = Router::start(RouterConfig {
            max_connections: 10,
            max_outgoing_packet_count: 200,
            max_segment_size: 1024 * 1024,
            max_segment_count: 2,
            ..Default::default()
        });
        let hub = Hub::default();
        let (mut l, mut rx) = hub.listener();
        l.subscribe("eldercare/v1/btn-1/cmd", 1);
        let link = Hub::connect(&router).await.unwrap();
        tokio::spawn(hub.clone().run(link, CancellationToken::new()));
        let mut backend = router.link("backend", true).await.unwrap();
        backend.tx.publish("eldercare/v1/btn-1/cmd", "x").unwrap();
        let c = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("no command arrived")
            .unwrap();
        assert_eq!((&c.payload[..], c.qos), (&b"x"[..], 1));
    }
}
