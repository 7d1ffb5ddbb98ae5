//! What the broker keeps of a device session after its connection, and
//! for how long: a session that keeps nothing listens through the command
//! hub; one kept (MQTT 3.1.1 without clean session, MQTT 5 with a session
//! expiry) gets a broker link of its own, which the broker remembers
//! until a clean start, or until the expiry passes without the client
//! coming back.
//!
//! A client's connections follow one another: the start of a connection
//! (taking the session over, opening its link) and the end of the one
//! before it (closing its link, letting an expired session go) never
//! interleave, so a client reconnecting at once finds either the session
//! it left, or none, as its terms say (MQTT 5 §3.1.2.11.2).
use crate::commands::Hub;
use crate::conn::Broker;
use crate::links::{self, LinkFailed, Router};
use crate::terms::{Expiry, Terms};
use rumqttd::local::LinkTx;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OwnedMutexGuard;

/// Sessions as the broker keeps them; cheap to clone.
#[derive(Clone)]
pub struct Keeper {
    router: Router,
    hub: Hub,
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The latest connection of each client (by broker client id) whose
    /// session or delayed will outlives it.
    owners: Mutex<HashMap<String, u64>>,
    /// One lock per client with a connection starting or ending.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    next: std::sync::atomic::AtomicU64,
}

/// Held while a client's connection starts or ends.
pub struct ClientLock {
    inner: Arc<Inner>,
    id: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for ClientLock {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.inner.locks.lock().unwrap_or_else(|p| p.into_inner());
        if locks
            .get(&self.id)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(&self.id);
        }
    }
}

/// How a connection ended, for what the broker keeps.
pub struct End {
    /// The connection's link, unless the broker already ended it.
    pub link: Option<LinkTx>,
    /// Whether the connection had a link of its own.
    pub linked: bool,
    /// The expiry in force at the end (an MQTT 5 DISCONNECT may change it).
    pub expiry: Expiry,
}

impl Keeper {
    pub fn new(router: Router, hub: Hub) -> Keeper {
        Keeper {
            router,
            hub,
            inner: Arc::default(),
        }
    }

    /// Waits for the client's connections before this one to be done
    /// starting or ending.
    pub async fn lock(&self, broker_id: &str) -> ClientLock {
        let lock = self
            .inner
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(broker_id.to_string())
            .or_default()
            .clone();
        ClientLock {
            inner: self.inner.clone(),
            id: broker_id.to_string(),
            guard: Some(lock.lock_owned().await),
        }
    }

    /// Marks a new connection as its client's latest; its generation.
    pub fn claim(&self, broker_id: &str) -> u64 {
        let g = self
            .inner
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.owners().insert(broker_id.to_string(), g);
        g
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.inner.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `generation` is still its client's latest connection.
    pub fn still_latest(&self, broker_id: &str, generation: u64) -> bool {
        self.owners().get(broker_id) == Some(&generation)
    }

    fn release(&self, broker_id: &str, generation: u64) {
        let mut owners = self.owners();
        if owners.get(broker_id) == Some(&generation) {
            owners.remove(broker_id);
        }
    }

    /// Where a new connection's commands come from, and whether the
    /// broker still had its session ("session present"). Under the
    /// client's lock.
    pub(crate) async fn start(
        &self,
        broker_id: &str,
        terms: &Terms,
    ) -> Result<(Broker, bool), LinkFailed> {
        if !terms.resume && !terms.expiry.kept() {
            let (listener, commands) = self.hub.listener();
            // Whatever the broker kept for this client (an earlier session
            // that asked to be kept) ends with a clean start.
            self.router.forget_if_kept(broker_id).await;
            return Ok((Broker::Hub(listener, commands), false));
        }
        // A clean start of a session kept after it: what the broker held
        // for the client goes first.
        if !terms.resume {
            self.router.forget(broker_id).await;
        }
        let link = self.router.link(broker_id, false).await?;
        let present = link.session_present;
        Ok((Broker::Link(link), present))
    }

    /// Ends a connection on the broker's side, under the client's lock:
    /// a session kept with no expiry left is let go at once; one with an
    /// expiry when it passes, unless the client came back.
    pub async fn end(&self, broker_id: &str, generation: u64, end: End) {
        if let Some(mut tx) = end.link {
            links::close(&mut tx).await;
        }
        let after = match end.expiry {
            _ if !end.linked => None,
            // MQTT 3.1.1: kept until a clean session takes it.
            Expiry::Never => None,
            Expiry::After(d) => Some(d),
        };
        match after {
            None => self.release(broker_id, generation),
            Some(d) if d.is_zero() => {
                if self.still_latest(broker_id, generation) {
                    self.router.forget(broker_id).await;
                }
                self.release(broker_id, generation);
            }
            Some(d) => self.expire_after(broker_id, generation, d),
        }
    }

    fn expire_after(&self, broker_id: &str, generation: u64, after: Duration) {
        let me = self.clone();
        let id = broker_id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _lock = me.lock(&id).await;
            if me.still_latest(&id, generation) {
                me.router.forget(&id).await;
                me.release(&id, generation);
            }
        });
    }
}
