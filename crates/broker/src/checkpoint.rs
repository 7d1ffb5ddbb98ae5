//! What the ingest pipeline keeps on disk beside the intake log, so that a
//! restart carries on where the last run stopped:
//!
//! - a **checkpoint**: the rule engine's state as of an intake log
//!   position, written every few seconds and at a clean stop (replace by
//!   rename, so a crash leaves the old one or the new one, never half);
//! - the **applied mark**: the newest log position whose rule decisions
//!   the alert desk has persisted, written after each one. A replay
//!   judges the messages after the checkpoint again, and hands the desk
//!   only the decisions of messages past the mark.
use eldercare_intake::EpochMs;
use eldercare_rules::EngineSnapshot;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tracing::warn;

#[derive(Serialize, Deserialize)]
pub struct Checkpoint {
    /// Every message up to this log position is in `engine`.
    pub pos: u64,
    /// When the message at `pos` was received.
    pub received_at: EpochMs,
    pub engine: EngineSnapshot,
}

const CHECKPOINT: &str = "engine-checkpoint.json";
const APPLIED: &str = "applied-position";

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes the checkpoint durably (temporary file, fsync, rename, fsync of
/// the directory).
pub fn save(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{CHECKPOINT}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, dir.join(CHECKPOINT))?;
    sync_dir(dir)
}

/// The last checkpoint, if there is a readable one. An unreadable one is
/// reported and ignored: the replay then starts from the oldest message
/// the log still has.
pub fn load(dir: &Path) -> Option<Checkpoint> {
    let path = dir.join(CHECKPOINT);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "Cannot read the rule engine checkpoint; starting without it.");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(c) => Some(c),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "Rule engine checkpoint unreadable; starting without it.");
            None
        }
    }
}

/// The applied mark: eight bytes rewritten in place.
pub struct AppliedMark {
    file: Mutex<File>,
    path: PathBuf,
}

impl AppliedMark {
    /// Opens the mark, returning it and the position it holds (0: none).
    pub fn open(dir: &Path) -> std::io::Result<(AppliedMark, u64)> {
        let path = dir.join(APPLIED);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut b = [0u8; 8];
        let pos = match file.read_exact_at(&mut b, 0) {
            Ok(()) => u64::from_le_bytes(b),
            Err(_) => 0,
        };
        Ok((
            AppliedMark {
                file: Mutex::new(file),
                path,
            },
            pos,
        ))
    }

    /// Records `pos`. Not fsynced: the alert event it follows is, and a
    /// mark lost with the machine's power only makes the replay hand the
    /// desk decisions it already has, which it recognises by their
    /// evidence.
    pub fn record(&self, pos: u64) {
        let f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all_at(&pos.to_le_bytes(), 0) {
            warn!(path = %self.path.display(), error = %e, "Cannot record the applied position.");
        }
    }
}
