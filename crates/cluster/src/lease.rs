//! Leases in a JetStream key-value bucket: one member owns a partition
//! (or the desk) while its lease runs. Taken with a create, or an update
//! expecting the revision read, so two members never both win; renewed
//! the same way, so an owner that was stopped (SIGSTOP, a long pause)
//! finds its revision stale and knows it lost.
use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

/// What a lease entry holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    /// Wall time (ms) it runs until, unless renewed.
    pub until_ms: i64,
}

impl Lease {
    /// Whether another member may take it at `now`.
    pub fn free_at(&self, now: i64) -> bool {
        self.until_ms <= now
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[derive(Clone)]
pub struct Leases {
    pub kv: kv::Store,
    pub member: String,
    pub ttl_ms: i64,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

impl Leases {
    fn mine(&self, until_ms: i64) -> bytes::Bytes {
        serde_json::to_vec(&Lease {
            owner: self.member.clone(),
            until_ms,
        })
        .unwrap_or_default()
        .into()
    }

    /// The lease as it stands, and its revision.
    pub async fn read(&self, key: &str) -> Result<Option<(Lease, u64)>, Error> {
        Ok(match self.kv.entry(key).await? {
            Some(e) if e.operation == kv::Operation::Put => {
                serde_json::from_slice::<Lease>(&e.value)
                    .ok()
                    .map(|l| (l, e.revision))
            }
            _ => None,
        })
    }

    /// Takes the lease if it is free (or already this member's, from a
    /// previous run); the new revision when taken.
    pub async fn try_take(&self, key: &str) -> Result<Option<u64>, Error> {
        let now = now_ms();
        let value = self.mine(now + self.ttl_ms);
        match self.kv.entry(key).await? {
            Some(e) if e.operation == kv::Operation::Put => {
                let held = serde_json::from_slice::<Lease>(&e.value).ok();
                if held.is_some_and(|l| !l.free_at(now) && l.owner != self.member) {
                    return Ok(None);
                }
                Ok(self.kv.update(key, value, e.revision).await.ok())
            }
            Some(e) => Ok(self.kv.update(key, value, e.revision).await.ok()),
            None => Ok(self.kv.create(key, value).await.ok()),
        }
    }

    /// Renews a lease held at `revision`; `None` when it was lost.
    pub async fn renew(&self, key: &str, revision: u64) -> Result<Option<u64>, Error> {
        let value = self.mine(now_ms() + self.ttl_ms);
        match self.kv.update(key, value, revision).await {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives a lease up at once (a clean stop, or a partition handed to a
    /// member with fewer).
    pub async fn release(&self, key: &str, revision: u64) {
        let _ = self.kv.update(key, self.mine(0), revision).await;
    }
}

/// What a member's running part (a partition's owner, the desk) knows of
/// its lease: until when it surely holds it, as the manager last renewed
/// it, and whether it is being handed back. A part resumed after a pause
/// (SIGSTOP) finds its lease past and writes nothing before the manager
/// has learnt whether it still holds it.
#[derive(Debug, Default)]
pub struct Held {
    until_ms: std::sync::atomic::AtomicI64,
    handed_back: std::sync::atomic::AtomicBool,
}

impl Held {
    /// Taken or renewed by a request sent at `sent_ms`: held until then
    /// plus the lease.
    pub fn renewed(&self, sent_ms: i64, ttl_ms: i64) {
        self.until_ms
            .store(sent_ms + ttl_ms, std::sync::atomic::Ordering::Release);
    }

    pub fn valid(&self) -> bool {
        now_ms() < self.until_ms.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn hand_back(&self) {
        self.handed_back
            .store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn handed_back(&self) -> bool {
        self.handed_back.load(std::sync::atomic::Ordering::Acquire)
    }
}

pub fn wall_ms() -> i64 {
    now_ms()
}

#[cfg(test)]
mod tests {
    use super::Lease;

    #[test]
    fn a_lease_is_free_once_it_has_run_out() {
        let l = Lease {
            owner: "m1".into(),
            until_ms: 1_000,
        };
        assert!(!l.free_at(999));
        assert!(l.free_at(1_000));
    }
}
