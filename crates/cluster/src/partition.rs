//! Which partition an elder's messages go to, and the subjects of the
//! cluster's streams. Pure.
//!
//! The hash is NATS's own for subject mapping (`partition(N, wildcard)`:
//! FNV-1a, 32 bits, mod N), computed here so any server version works and
//! a member knows an elder's partition without asking the server.

/// Partitions of the intake log: fixed, since an elder's partition must
/// not move while the log holds their messages. Sixteen spread a city's
/// rule engines over up to sixteen members.
pub const PARTITIONS: u16 = 16;

/// The intake stream: device messages, the owners' ticks, registry
/// changes, all under `eldercare.in.<partition>.<kind>`.
pub const INTAKE_STREAM: &str = "ELDERCARE_IN";
/// The decision stream: each partition owner's rule decisions, under
/// `eldercare.decisions.<partition>`.
pub const DECISION_STREAM: &str = "ELDERCARE_DECISIONS";
/// Leases: `p<partition>` and `desk`.
pub const LEASES: &str = "eldercare_leases";
/// Snapshots of each partition's rule engine, `p<partition>`.
pub const SNAPSHOTS: &str = "eldercare_snapshots";
/// The active desk's alert events, as it keeps them (core NATS).
pub const EVENTS: &str = "eldercare.events";
/// A device whose sessions every member closes (core NATS).
pub const SESSIONS_CLOSE: &str = "eldercare.sessions.close";
/// Operators' actions, asked of the active desk (request-reply).
pub const DESK_RPC: &str = "eldercare.desk.rpc";

/// FNV-1a, 32 bits.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(2_166_136_261u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(16_777_619)
    })
}

/// The partition of an elder.
pub fn partition_of(elder_id: &str) -> u16 {
    (fnv1a32(elder_id.as_bytes()) % u32::from(PARTITIONS)) as u16
}

/// What an intake record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A device message (header `Ec-Topic` has its MQTT topic).
    Message,
    /// The owner's tick: the partition's clock moves to its time.
    Tick,
    /// A registry change (header `Ec-Change`).
    Registry,
}

impl Kind {
    fn token(self) -> &'static str {
        match self {
            Kind::Message => "m",
            Kind::Tick => "t",
            Kind::Registry => "r",
        }
    }

    /// The kind of a subject's last token.
    pub fn of_subject(subject: &str) -> Option<Kind> {
        match subject.rsplit('.').next()? {
            "m" => Some(Kind::Message),
            "t" => Some(Kind::Tick),
            "r" => Some(Kind::Registry),
            _ => None,
        }
    }
}

pub fn intake_subject(partition: u16, kind: Kind) -> String {
    format!("eldercare.in.{partition}.{}", kind.token())
}

/// Every record of one partition.
pub fn intake_filter(partition: u16) -> String {
    format!("eldercare.in.{partition}.>")
}

pub fn decision_subject(partition: u16) -> String {
    format!("eldercare.decisions.{partition}")
}

pub fn lease_key(partition: u16) -> String {
    format!("p{partition}")
}

pub const DESK_LEASE: &str = "desk";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv1a_32() {
        // Reference values of FNV-1a 32.
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn every_elder_has_one_partition_and_elders_spread() {
        let mut seen = [0u32; PARTITIONS as usize];
        for i in 0..1600 {
            let p = partition_of(&format!("E{i:05}"));
            assert_eq!(p, partition_of(&format!("E{i:05}")));
            seen[p as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }

    #[test]
    fn subjects_name_their_partition_and_kind() {
        assert_eq!(intake_subject(3, Kind::Tick), "eldercare.in.3.t");
        assert_eq!(Kind::of_subject("eldercare.in.3.m"), Some(Kind::Message));
        assert_eq!(Kind::of_subject("eldercare.in.3.x"), None);
        assert_eq!(intake_filter(12), "eldercare.in.12.>");
    }
}
