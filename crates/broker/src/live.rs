//! The live MQTT sessions of each device, so that the registry API can
//! end them, and so that a lost session knows whether the device already
//! connected again (a takeover) before its last will is published.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// The live MQTT sessions of each device, so that rotating a device's
/// secret or deleting the device ends them at once: a session is only
/// authenticated at CONNECT, so without this a revoked device would stay
/// connected for as long as it liked.
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<SessionsInner>,
}

#[derive(Default)]
struct SessionsInner {
    next_id: AtomicU64,
    /// device id -> connection id -> its session. A std mutex: it is never
    /// held across an await.
    map: std::sync::Mutex<HashMap<String, HashMap<u64, SessionEntry>>>,
}

struct SessionEntry {
    close: CancellationToken,
    /// Past CONNECT: authenticated and forwarded to the broker.
    live: bool,
    /// The MQTT client id the device chose (empty: none, so never the
    /// same as another session's).
    client_id: String,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<u64, SessionEntry>>> {
        self.inner.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection that claims to be `device_id`, before its
    /// credentials are checked: a rotation that commits while the old
    /// secret is being verified then still finds (and closes) it.
    pub(crate) fn register(&self, device_id: &str, client_id: &str) -> SessionHandle {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let close = CancellationToken::new();
        self.lock()
            .entry(device_id.to_string())
            .or_default()
            .insert(
                id,
                SessionEntry {
                    close: close.clone(),
                    live: false,
                    client_id: client_id.to_string(),
                },
            );
        SessionHandle {
            sessions: self.clone(),
            device_id: device_id.to_string(),
            id,
            close,
        }
    }

    /// Closes every session of `device_id`, including connections still
    /// being authenticated; returns how many were live (past CONNECT).
    pub fn disconnect(&self, device_id: &str) -> usize {
        let Some(entries) = self.lock().remove(device_id) else {
            return 0;
        };
        let mut live = 0;
        for e in entries.into_values() {
            live += usize::from(e.live);
            e.close.cancel();
        }
        metrics::counter!("eldercare_mqtt_sessions_closed_total").increment(live as u64);
        if live > 0 {
            info!(%device_id, sessions = live, "MQTT sessions closed by the registry.");
        }
        live
    }

    /// Live sessions of `device_id`.
    /// Sessions past CONNECT, all devices together.
    pub fn live_total(&self) -> usize {
        self.lock()
            .values()
            .map(|m| m.values().filter(|e| e.live).count())
            .sum()
    }

    pub fn live(&self, device_id: &str) -> usize {
        self.lock()
            .get(device_id)
            .map(|m| m.values().filter(|e| e.live).count())
            .unwrap_or(0)
    }
}

/// One connection's place in [`Sessions`]; leaves it when dropped.
pub(crate) struct SessionHandle {
    sessions: Sessions,
    device_id: String,
    id: u64,
    pub(crate) close: CancellationToken,
}

impl SessionHandle {
    /// Whether a newer live session of the same device with the same
    /// client id exists: the device connected again, and the broker ends
    /// this session for it (an MQTT session takeover).
    pub(crate) fn taken_over(&self) -> bool {
        let map = self.sessions.lock();
        let Some(m) = map.get(&self.device_id) else {
            return false;
        };
        let Some(me) = m.get(&self.id).filter(|e| !e.client_id.is_empty()) else {
            return false;
        };
        m.iter()
            .any(|(id, e)| *id > self.id && e.live && e.client_id == me.client_id)
    }

    /// Marks the session live, and closes the older live sessions of the
    /// same device under the same client id: it takes them over (MQTT
    /// 3.1.1 §3.1.4-2, MQTT 5 §3.1.4-3). They then find themselves
    /// [`taken_over`](Self::taken_over).
    pub(crate) fn set_live(&self) {
        let mut map = self.sessions.lock();
        let Some(m) = map.get_mut(&self.device_id) else {
            return;
        };
        let Some(client_id) = m.get_mut(&self.id).map(|e| {
            e.live = true;
            e.client_id.clone()
        }) else {
            return;
        };
        if client_id.is_empty() {
            return;
        }
        for (id, e) in m.iter() {
            if *id < self.id && e.live && e.client_id == client_id {
                e.close.cancel();
            }
        }
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        let mut map = self.sessions.lock();
        if let Some(m) = map.get_mut(&self.device_id) {
            m.remove(&self.id);
            if m.is_empty() {
                map.remove(&self.device_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_closed_per_device_and_leave_when_they_end() {
        let s = Sessions::default();
        let a1 = s.register("a", "x");
        let a2 = s.register("a", "x");
        let b = s.register("b", "x");
        a1.set_live();
        a2.set_live();
        b.set_live();
        // Still checking its credentials: closed too, but not counted as live.
        let pending = s.register("a", "x");
        assert_eq!(s.live("a"), 2);
        assert_eq!(s.live_total(), 3, "a pending CONNECT is not live");
        assert_eq!(s.disconnect("a"), 2);
        assert!(a1.close.is_cancelled() && a2.close.is_cancelled());
        assert!(pending.close.is_cancelled(), "a CONNECT racing the change");
        assert!(!b.close.is_cancelled(), "other devices untouched");
        assert_eq!(s.disconnect("a"), 0);
        drop(b);
        assert_eq!(s.live("b"), 0);
        assert!(s.lock().is_empty(), "ended sessions leave no entry");
        drop((a1, a2, pending));
        assert!(s.lock().is_empty());
    }

    #[test]
    fn only_a_newer_session_with_the_same_client_id_takes_one_over() {
        let s = Sessions::default();
        let old = s.register("a", "x");
        let other = s.register("a", "y");
        let anonymous = s.register("a", "");
        let anonymous2 = s.register("a", "");
        for h in [&old, &other, &anonymous, &anonymous2] {
            h.set_live();
        }
        assert!(!old.taken_over(), "another client id is another session");
        assert!(!anonymous.taken_over(), "no client id: never the same");
        let pending = s.register("a", "x");
        assert!(!old.taken_over(), "not before the new one is past CONNECT");
        pending.set_live();
        assert!(old.taken_over());
        assert!(old.close.is_cancelled(), "and closed");
        assert!(!other.close.is_cancelled() && !anonymous.close.is_cancelled());
        assert!(!pending.taken_over(), "the newest is not taken over");
        assert!(!pending.close.is_cancelled());
        assert!(!s.register("b", "x").taken_over());
    }
}
