//! An elder's local time: their timezone and night window.
//!
//! The night window is in local wall-clock time (`21:00`–`07:00` by
//! default), so every check converts event time through the elder's IANA
//! timezone. The UTC offset is cached per half hour, which is where real
//! timezones change offset, so a reading costs no timezone lookup.
use chrono::{Offset, TimeZone};
use chrono_tz::Tz;

use crate::EpochMs;

const DAY_MS: i64 = 86_400_000;
const CACHE_SPAN_MS: i64 = 1_800_000;

#[derive(Debug, Clone)]
pub(crate) struct LocalClock {
    tz: Tz,
    /// Night window in milliseconds after local midnight; empty when equal.
    night_start_ms: i64,
    night_end_ms: i64,
    cache_from: i64,
    cache_offset_ms: i64,
}

impl LocalClock {
    pub(crate) fn new(tz: Tz, night_start_min: u16, night_end_min: u16) -> LocalClock {
        LocalClock {
            tz,
            night_start_ms: i64::from(night_start_min) * 60_000,
            night_end_ms: i64::from(night_end_min) * 60_000,
            cache_from: i64::MIN,
            cache_offset_ms: 0,
        }
    }

    fn offset_ms(&mut self, ts: EpochMs) -> i64 {
        let bucket = ts - ts.rem_euclid(CACHE_SPAN_MS);
        if bucket != self.cache_from {
            let off = match chrono::DateTime::from_timestamp_millis(bucket) {
                Some(dt) => self
                    .tz
                    .offset_from_utc_datetime(&dt.naive_utc())
                    .fix()
                    .local_minus_utc(),
                None => 0,
            };
            self.cache_from = bucket;
            self.cache_offset_ms = i64::from(off) * 1000;
        }
        self.cache_offset_ms
    }

    /// Local wall-clock time as milliseconds since 1970-01-01 00:00 local.
    pub(crate) fn local_ms(&mut self, ts: EpochMs) -> i64 {
        ts + self.offset_ms(ts)
    }

    /// The instant of a local wall-clock time (ms since 1970-01-01 00:00
    /// local). In a gap or overlap of a clock change, one of the instants
    /// near it.
    pub(crate) fn epoch_of_local(&mut self, local: i64) -> EpochMs {
        let guess = local - self.offset_ms(local);
        local - self.offset_ms(guess)
    }

    /// The local day number (days since 1970-01-01, local) of an instant.
    pub(crate) fn day_of(&mut self, ts: EpochMs) -> i64 {
        self.local_ms(ts).div_euclid(DAY_MS)
    }

    /// The instant `minute` minutes after the local midnight starting `day`.
    pub(crate) fn at_minute(&mut self, day: i64, minute: u16) -> EpochMs {
        self.epoch_of_local(day * DAY_MS + i64::from(minute) * 60_000)
    }

    /// Milliseconds after local midnight.
    pub(crate) fn ms_of_day(&mut self, ts: EpochMs) -> i64 {
        (ts + self.offset_ms(ts)).rem_euclid(DAY_MS)
    }

    fn night_at_ms_of_day(&self, m: i64) -> bool {
        let (s, e) = (self.night_start_ms, self.night_end_ms);
        if s == e {
            false
        } else if s < e {
            s <= m && m < e
        } else {
            m >= s || m < e
        }
    }

    pub(crate) fn is_night(&mut self, ts: EpochMs) -> bool {
        let m = self.ms_of_day(ts);
        self.night_at_ms_of_day(m)
    }

    /// Local wall-clock time as `HH:MM`, for summaries.
    pub(crate) fn hhmm(&mut self, ts: EpochMs) -> String {
        let m = self.ms_of_day(ts) / 60_000;
        format!("{:02}:{:02}", m / 60, m % 60)
    }

    /// From `ts`, the end of the stretch that is all night or all day, and
    /// whether it is night.
    fn segment(&mut self, ts: EpochMs) -> (EpochMs, bool) {
        let m = self.ms_of_day(ts);
        let night = self.night_at_ms_of_day(m);
        if self.night_start_ms == self.night_end_ms {
            return (ts + DAY_MS - m, false);
        }
        let next = [self.night_start_ms, self.night_end_ms]
            .into_iter()
            .map(|b| if b > m { b - m } else { b + DAY_MS - m })
            .min()
            .unwrap_or(DAY_MS);
        (ts + next, night)
    }

    /// Daytime (outside the night window) between two instants, in ms.
    pub(crate) fn day_ms_between(&mut self, from: EpochMs, to: EpochMs) -> i64 {
        let mut total = 0;
        let mut c = from;
        while c < to {
            let (end, night) = self.segment(c);
            let end = end.min(to);
            if !night {
                total += end - c;
            }
            c = end;
        }
        total
    }

    /// The instant at which `amount` ms of daytime have passed since `from`.
    pub(crate) fn after_day_ms(&mut self, from: EpochMs, amount: i64) -> EpochMs {
        let mut left = amount;
        let mut c = from;
        loop {
            let (end, night) = self.segment(c);
            if !night {
                if end - c >= left {
                    return c + left;
                }
                left -= end - c;
            }
            c = end;
        }
    }
}

/// The weekday of a local day number, Monday = 0.
pub(crate) fn weekday(day: i64) -> usize {
    // 1970-01-01 was a Thursday.
    (day + 3).rem_euclid(7) as usize
}

/// A local day number as `YYYY-MM-DD`.
pub(crate) fn date(day: i64) -> String {
    chrono::DateTime::from_timestamp_millis(day * DAY_MS)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Parses a local window `HH:MM-HH:MM` (start before end, one day).
pub fn parse_window(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.trim().split_once('-')?;
    let (a, b) = (parse_hhmm(a.trim())?, parse_hhmm(b.trim())?);
    (a < b).then_some((a, b))
}

/// Parses local `HH:MM` into minutes after midnight.
pub fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-23 00:00 Asia/Shanghai (UTC+8) = 2026-11-22 16:00 UTC.
    const MIDNIGHT_CST: i64 = 1_795_363_200_000;
    const H: i64 = 3_600_000;

    fn clock() -> LocalClock {
        LocalClock::new(chrono_tz::Asia::Shanghai, 21 * 60, 7 * 60)
    }

    #[test]
    fn night_window_in_local_time() {
        let mut c = clock();
        assert_eq!(c.hhmm(MIDNIGHT_CST + 2 * H), "02:00");
        assert!(c.is_night(MIDNIGHT_CST + 2 * H));
        assert!(c.is_night(MIDNIGHT_CST + 7 * H - 1));
        assert!(!c.is_night(MIDNIGHT_CST + 7 * H));
        assert!(!c.is_night(MIDNIGHT_CST + 21 * H - 1));
        assert!(c.is_night(MIDNIGHT_CST + 21 * H));
        let mut day_only = LocalClock::new(chrono_tz::Asia::Shanghai, 9 * 60, 17 * 60);
        assert!(day_only.is_night(MIDNIGHT_CST + 12 * H));
        assert!(!day_only.is_night(MIDNIGHT_CST + 18 * H));
    }

    #[test]
    fn daytime_spans_skip_the_night() {
        let mut c = clock();
        // 20:00 to 10:00 next day: 1 h before the night, 3 h after.
        let from = MIDNIGHT_CST + 20 * H;
        assert_eq!(c.day_ms_between(from, from + 14 * H), 4 * H);
        assert_eq!(c.after_day_ms(from, 4 * H), from + 14 * H);
        assert_eq!(
            c.after_day_ms(MIDNIGHT_CST + 8 * H, H),
            MIDNIGHT_CST + 9 * H
        );
        assert_eq!(c.day_ms_between(MIDNIGHT_CST, MIDNIGHT_CST + 6 * H), 0);
    }

    #[test]
    fn hhmm_parsing() {
        assert_eq!(parse_hhmm("21:00"), Some(1260));
        assert_eq!(parse_hhmm("07:30"), Some(450));
        assert_eq!(parse_hhmm("24:00"), None);
        assert_eq!(parse_hhmm("7"), None);
    }
}
