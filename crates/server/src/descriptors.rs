//! File descriptors: a device session costs the server some, and a
//! process may hold only as many as its soft limit allows, often 1,024
//! by default while the hard limit is far higher. At start the server
//! raises its soft limit to the hard one and says how many device
//! sessions that leaves room for, so an operator learns the ceiling from
//! the log rather than from devices refused at CONNECT.
use std::io;

/// Descriptors one device session holds: its socket alone (its link to
/// the embedded broker, which carries `cmd` to it, is in memory).
pub const PER_SESSION: u64 = 1;
/// Kept for everything else: listeners, the database pool, the intake
/// log's segments, the API's and the console's connections.
pub const RESERVED: u64 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The soft limit before the server raised it.
    pub before: u64,
    /// The soft limit now.
    pub soft: u64,
    pub hard: u64,
}

impl Limits {
    /// Device sessions the soft limit leaves room for.
    pub fn device_sessions(&self) -> u64 {
        sessions_for(self.soft)
    }
}

/// Device sessions that `soft` descriptors leave room for.
pub fn sessions_for(soft: u64) -> u64 {
    soft.saturating_sub(RESERVED) / PER_SESSION
}

/// Raises the soft limit on open files to the hard limit.
pub fn raise() -> io::Result<Limits> {
    let (before, hard) = rlimit::Resource::NOFILE.get()?;
    let soft = rlimit::increase_nofile_limit(hard)?;
    Ok(Limits { before, soft, hard })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_for_sessions_is_what_the_soft_limit_leaves_after_the_reserve() {
        assert_eq!(sessions_for(20_000), 20_000 - RESERVED);
        assert_eq!(sessions_for(1_024), 768);
        assert_eq!(sessions_for(100), 0, "never negative");
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let l = raise().unwrap();
        assert!(l.soft >= l.before);
        let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
        assert_eq!((soft, hard), (l.soft, l.hard));
        assert_eq!(soft, hard, "as high as the process may go");
    }
}
