//! Telling a redelivery from a new message.
//!
//! A QoS 1 redelivery is the same message again: same device, same
//! `seq`, same `ts` (MQTT resends the same payload). A device whose
//! battery was changed starts its `seq` over, so a known `seq` with a new
//! `ts` is a new message, never a duplicate. Without a `seq`, the payload
//! itself is compared.
//!
//! Per device only the fingerprints of its last [`WINDOW`] messages are
//! kept, in a fixed ring, under a 64-bit hash of its id: a redelivery
//! follows its original within the device's in-flight window, and memory
//! must stay small with 600,000 devices (see the test for the measured
//! size). Nothing here is persisted: after a restart the replay of the
//! intake log fills it again.
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};

/// Messages remembered per device.
pub const WINDOW: usize = 8;

#[derive(Default)]
struct Ring {
    seen: [u64; WINDOW],
    next: u8,
}

/// The recent messages of every device.
#[derive(Default)]
pub struct Dedup {
    /// Keyed by [`id_key`]; the table's own hasher only spreads those.
    devices: HashMap<u64, Ring, BuildHasherDefault<IdentityHasher>>,
}

/// The keys are hashes already.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// SipHash of a device id: 600,000 ids collide with odds of about 1e-8.
fn id_key(device_id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    device_id.hash(&mut h);
    h.finish()
}

/// What identifies a message for redelivery: `seq` and `ts` when the
/// device numbers its messages, else the payload.
pub fn fingerprint(stream: &str, seq: Option<u64>, ts_ms: i64, payload: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    stream.hash(&mut h);
    match seq {
        Some(s) => (1u8, s, ts_ms).hash(&mut h),
        None => (0u8, payload).hash(&mut h),
    }
    // 0 marks an empty slot.
    h.finish().max(1)
}

impl Dedup {
    /// Whether `device_id` sent this message lately; remembers it if not.
    pub fn is_repeat(&mut self, device_id: &str, fp: u64) -> bool {
        let ring = self.devices.entry(id_key(device_id)).or_default();
        if ring.seen.contains(&fp) {
            return true;
        }
        ring.seen[usize::from(ring.next)] = fp;
        ring.next = (ring.next + 1) % WINDOW as u8;
        false
    }

    /// A device left the registry.
    pub fn forget(&mut self, device_id: &str) {
        self.devices.remove(&id_key(device_id));
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Bytes held: the table's buckets (a power of two at most 7/8
    /// full), each a key, a ring and a control byte.
    pub fn approx_bytes(&self) -> usize {
        let buckets = (self.devices.capacity() * 8)
            .div_ceil(7)
            .next_power_of_two();
        buckets * (std::mem::size_of::<(u64, Ring)>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redelivery_is_a_repeat_but_a_reused_seq_with_a_new_ts_is_not() {
        let mut d = Dedup::default();
        let first = fingerprint("event", Some(5), 1_000, b"{\"type\":\"sos\"}");
        assert!(!d.is_repeat("btn-1", first));
        assert!(d.is_repeat("btn-1", first), "QoS 1 redelivery");
        assert!(!d.is_repeat("btn-2", first), "another device");
        // Battery changed: seq starts over, minutes later.
        let after_reboot = fingerprint("event", Some(5), 301_000, b"{\"type\":\"sos\"}");
        assert!(!d.is_repeat("btn-1", after_reboot));
        // Without seq, the payload decides.
        let a = fingerprint("vitals", None, 0, b"{\"ts\":1,\"hr\":70}");
        let b = fingerprint("vitals", None, 0, b"{\"ts\":2,\"hr\":70}");
        assert!(!d.is_repeat("band-1", a));
        assert!(!d.is_repeat("band-1", b));
        assert!(d.is_repeat("band-1", a));
        // The window is bounded: the oldest is forgotten.
        for i in 0..WINDOW as u64 {
            assert!(!d.is_repeat("btn-1", fingerprint("event", Some(100 + i), 0, b"")));
        }
        assert!(
            !d.is_repeat("btn-1", first),
            "forgotten after {WINDOW} newer"
        );
        d.forget("btn-1");
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn six_hundred_thousand_devices_take_well_under_256_bytes_each() {
        let mut d = Dedup::default();
        for i in 0..600_000u64 {
            let id = format!("dev-{i:07}");
            for s in 0..WINDOW as u64 {
                d.is_repeat(&id, fingerprint("vitals", Some(s), 0, b""));
            }
        }
        let per_device = d.approx_bytes() / d.len();
        assert!(per_device < 160, "{per_device} bytes per device");
        println!("dedup: {per_device} bytes per device at 600,000 devices");
    }
}
