//! [`FileJournal`]: the intake log in segment files on this node's disk,
//! `<dir>/<first position, 20 digits>.log`. A segment is closed once it
//! passes its size and a new one begun; whole segments are deleted once
//! everything in them is processed and stored.
//!
//! Written by hand rather than with an embedded database: the log is
//! append-only, read once at start, and deleted by the segment; what it
//! needs is one `write` and one `fdatasync` per group, which a key-value
//! store would wrap in far more.
use crate::record::{self, Next};
use crate::{Durability, Journal, Record};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use tracing::{debug, warn};

/// A segment is closed once it passes this size.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug)]
struct Segment {
    first: u64,
    path: PathBuf,
}

pub struct FileJournal {
    dir: PathBuf,
    durability: Durability,
    segment_bytes: u64,
    /// Oldest first; the last one is open for appending.
    segments: Vec<Segment>,
    file: File,
    len: u64,
    next: u64,
    buf: Vec<u8>,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.log"))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl FileJournal {
    /// Opens (or creates) the log in `dir`. A record torn by a crash at
    /// the end of the newest segment is cut off: it was never
    /// acknowledged, since acknowledgement follows the write.
    pub fn open(dir: &Path, durability: Durability) -> std::io::Result<FileJournal> {
        FileJournal::open_with(dir, durability, SEGMENT_BYTES)
    }

    pub fn open_with(
        dir: &Path,
        durability: Durability,
        segment_bytes: u64,
    ) -> std::io::Result<FileJournal> {
        std::fs::create_dir_all(dir)?;
        let mut segments: Vec<Segment> = std::fs::read_dir(dir)?
            .filter_map(|e| {
                let path = e.ok()?.path();
                let first = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()?;
                Some(Segment { first, path })
            })
            .collect();
        segments.sort_by_key(|s| s.first);
        if segments.is_empty() {
            let path = segment_path(dir, 1);
            File::create(&path)?;
            sync_dir(dir)?;
            segments.push(Segment { first: 1, path });
        }
        let last = segments
            .last()
            .ok_or_else(|| std::io::Error::other("no segment"))?;
        let (next, len) = scan(&last.path, last.first)?;
        let mut file = OpenOptions::new().read(true).write(true).open(&last.path)?;
        if file.metadata()?.len() != len {
            warn!(
                segment = %last.path.display(),
                kept_bytes = len,
                "Intake log: a record torn by a crash is cut off."
            );
            file.set_len(len)?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::End(0))?;
        debug!(next, segments = segments.len(), "Intake log opened.");
        Ok(FileJournal {
            dir: dir.to_path_buf(),
            durability,
            segment_bytes,
            segments,
            file,
            len,
            next,
            buf: Vec::new(),
        })
    }

    /// Position of the oldest record still kept.
    pub fn first_position(&self) -> u64 {
        self.segments.first().map(|s| s.first).unwrap_or(self.next)
    }

    fn roll(&mut self) -> std::io::Result<()> {
        let path = segment_path(&self.dir, self.next);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.len = 0;
        self.segments.push(Segment {
            first: self.next,
            path,
        });
        metrics::gauge!("eldercare_intake_segments").set(self.segments.len() as f64);
        Ok(())
    }
}

/// The next position after the last whole record of a segment, and the
/// length those records take.
fn scan(path: &Path, first: u64) -> std::io::Result<(u64, u64)> {
    let mut r = BufReader::new(File::open(path)?);
    let (mut next, mut len) = (first, 0u64);
    loop {
        match record::read(&mut r)? {
            Next::Record(rec, n) if rec.pos == next => {
                next += 1;
                len += n as u64;
            }
            Next::Record(..) | Next::Torn | Next::End => return Ok((next, len)),
        }
    }
}

impl Journal for FileJournal {
    fn append(&mut self, records: &[Record]) -> std::io::Result<()> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        if first.pos != self.next {
            return Err(std::io::Error::other(format!(
                "intake log: append at {} but the next position is {}",
                first.pos, self.next
            )));
        }
        if self.len >= self.segment_bytes {
            self.roll()?;
        }
        self.buf.clear();
        for r in records {
            record::encode(r, &mut self.buf);
        }
        let written = self.file.write_all(&self.buf).and_then(|()| {
            if self.durability == Durability::Fsync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // Nothing of this group counts: cut back what may have been
            // written, so the next group follows the last good record.
            let _ = self.file.set_len(self.len);
            let _ = self.file.seek(SeekFrom::Start(self.len));
            return Err(e);
        }
        self.len += self.buf.len() as u64;
        self.next += records.len() as u64;
        if self.buf.capacity() > 16 * 1024 * 1024 {
            self.buf = Vec::new();
        }
        Ok(())
    }

    fn durable_position(&self) -> u64 {
        self.next - 1
    }

    fn replay(
        &self,
        from: u64,
    ) -> std::io::Result<Box<dyn Iterator<Item = std::io::Result<Record>> + Send + '_>> {
        // Start at the newest segment beginning at or before `from`.
        let start = self
            .segments
            .iter()
            .rposition(|s| s.first <= from)
            .unwrap_or(0);
        let paths: Vec<PathBuf> = self.segments[start..]
            .iter()
            .map(|s| s.path.clone())
            .collect();
        Ok(Box::new(Replay {
            paths: paths.into_iter(),
            reader: None,
            from,
            upto: self.durable_position(),
        }))
    }

    fn release(&mut self, upto: u64) -> std::io::Result<()> {
        // A segment may go when the next one starts at or before `upto + 1`
        // (all of its records are <= upto); the open one always stays.
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[1].first <= upto + 1 {
            let s = self.segments.remove(0);
            std::fs::remove_file(&s.path)?;
            removed += 1;
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
            metrics::gauge!("eldercare_intake_segments").set(self.segments.len() as f64);
        }
        Ok(())
    }
}

struct Replay {
    paths: std::vec::IntoIter<PathBuf>,
    reader: Option<BufReader<File>>,
    from: u64,
    upto: u64,
}

impl Iterator for Replay {
    type Item = std::io::Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.reader.is_none() {
                let path = self.paths.next()?;
                match File::open(&path) {
                    Ok(f) => self.reader = Some(BufReader::new(f)),
                    Err(e) => return Some(Err(e)),
                }
            }
            let r = self.reader.as_mut()?;
            match record::read(r) {
                Ok(Next::Record(rec, _)) if rec.pos > self.upto => return None,
                Ok(Next::Record(rec, _)) if rec.pos < self.from => {}
                Ok(Next::Record(rec, _)) => return Some(Ok(rec)),
                Ok(Next::End | Next::Torn) => self.reader = None,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn rec(pos: u64) -> Record {
        Record {
            pos,
            received_at: 1_000 + pos as i64,
            topic: "eldercare/v1/btn-1/event".into(),
            payload: Bytes::from(format!("{{\"type\":\"sos\",\"seq\":{pos}}}")),
            key: None,
        }
    }

    fn all(j: &FileJournal, from: u64) -> Vec<u64> {
        j.replay(from).unwrap().map(|r| r.unwrap().pos).collect()
    }

    #[test]
    fn appends_survive_reopening_across_segments_and_release_drops_whole_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = FileJournal::open_with(dir.path(), Durability::Fsync, 300).unwrap();
        assert_eq!(j.durable_position(), 0);
        for p in 1..=20 {
            j.append(&[rec(p)]).unwrap();
        }
        assert!(
            j.segments.len() > 3,
            "small segments roll: {}",
            j.segments.len()
        );
        assert_eq!(all(&j, 1), (1..=20).collect::<Vec<_>>());
        assert_eq!(all(&j, 13), (13..=20).collect::<Vec<_>>());
        drop(j);

        let mut j = FileJournal::open_with(dir.path(), Durability::Fsync, 300).unwrap();
        assert_eq!(j.durable_position(), 20);
        j.append(&[rec(21), rec(22)]).unwrap();
        assert!(j.append(&[rec(30)]).is_err(), "a gap is refused");
        j.release(10).unwrap();
        let first = j.first_position();
        assert!(first > 1 && first <= 11, "segments up to 10 gone: {first}");
        assert_eq!(all(&j, 11), (11..=22).collect::<Vec<_>>());
        assert_eq!(all(&j, 1).first().copied(), Some(first));
        j.release(22).unwrap();
        assert_eq!(all(&j, 22), vec![22], "the open segment stays");
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_appending_goes_on_after_the_last_whole_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = FileJournal::open(dir.path(), Durability::None).unwrap();
        j.append(&[rec(1), rec(2), rec(3)]).unwrap();
        let path = j.segments[0].path.clone();
        drop(j);
        // A crash halfway through writing record 4.
        let mut half = Vec::new();
        record::encode(&rec(4), &mut half);
        half.truncate(half.len() / 2);
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&half)
            .unwrap();

        let mut j = FileJournal::open(dir.path(), Durability::None).unwrap();
        assert_eq!(j.durable_position(), 3);
        j.append(&[rec(4)]).unwrap();
        drop(j);
        let j = FileJournal::open(dir.path(), Durability::None).unwrap();
        assert_eq!(all(&j, 1), vec![1, 2, 3, 4]);
    }
}
