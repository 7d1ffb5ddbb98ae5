//! Closing a device's MQTT sessions on every member: the registry API
//! (a rotated secret, a deleted device) runs on one member, the device's
//! session may be on another.
use crate::partition::SESSIONS_CLOSE;
use eldercare_broker::guard::Sessions;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Asks every member to close `device_id`'s sessions.
#[derive(Clone)]
pub struct Closer {
    pub client: async_nats::Client,
}

impl Closer {
    pub fn close_everywhere(&self, device_id: &str) {
        let client = self.client.clone();
        let id = device_id.to_string();
        tokio::spawn(async move {
            if let Err(e) = client.publish(SESSIONS_CLOSE, id.into()).await {
                warn!(error = %e, "Could not ask the other members to close a device's sessions.");
            }
        });
    }
}

/// Closes here the sessions other members ask to close.
pub async fn follow(client: async_nats::Client, sessions: Sessions, stop: CancellationToken) {
    let Ok(mut sub) = client.subscribe(SESSIONS_CLOSE).await else {
        warn!("Cannot follow other members' session closes.");
        return;
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            m = sub.next() => {
                let Some(m) = m else { break };
                if let Ok(id) = std::str::from_utf8(&m.payload) {
                    sessions.disconnect(id);
                }
            }
        }
    }
}
