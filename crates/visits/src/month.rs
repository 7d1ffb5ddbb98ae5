//! A calendar month (`YYYY-MM`), the unit reports are counted by, and
//! the few date conversions the reports need, without a date library.
use eldercare_model::EpochMs;
use std::fmt;

const DAY_MS: EpochMs = 86_400_000;

/// A month of the proleptic Gregorian calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    pub year: i32,
    /// 1 to 12.
    pub month: u32,
}

/// A month that is not `YYYY-MM`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("month `{0}` is not YYYY-MM (e.g. 2026-11)")]
pub struct MonthError(pub String);

impl Month {
    /// Parses `YYYY-MM`, exactly: four digits, a dash, two digits.
    pub fn parse(s: &str) -> Result<Month, MonthError> {
        let err = || MonthError(s.to_string());
        let b = s.as_bytes();
        if b.len() != 7
            || b[4] != b'-'
            || !s[..4]
                .bytes()
                .chain(s[5..].bytes())
                .all(|c| c.is_ascii_digit())
        {
            return Err(err());
        }
        let year = s[..4].parse().map_err(|_| err())?;
        let month = s[5..].parse().map_err(|_| err())?;
        if !(1..=12).contains(&month) {
            return Err(err());
        }
        Ok(Month { year, month })
    }

    /// Whether a local date `YYYY-MM-DD` (a [`VisitInfo::day`]) falls in
    /// this month.
    ///
    /// [`VisitInfo::day`]: eldercare_model::VisitInfo::day
    pub fn holds_day(&self, day: &str) -> bool {
        let prefix = self.to_string();
        day.len() == 10 && day.starts_with(&prefix) && day.as_bytes()[7] == b'-'
    }

    /// The month after this one.
    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// Midnight UTC of the month's first day, epoch ms.
    pub fn start_utc_ms(self) -> EpochMs {
        days_from_civil(self.year, self.month, 1) * DAY_MS
    }

    /// The times a month's visits can have been recorded at, whatever the
    /// elder's time zone and however late the engine wrote them: from two
    /// days before the month's first UTC midnight to two days after the
    /// next month's, `[from, to)`. A report reads alerts raised in this
    /// range and keeps those whose visit day is in the month.
    pub fn generous_range_ms(self) -> (EpochMs, EpochMs) {
        (
            self.start_utc_ms() - 2 * DAY_MS,
            self.next().start_utc_ms() + 2 * DAY_MS,
        )
    }
}

/// As `YYYY-MM`, the form it is given in.
impl serde::Serialize for Month {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Days from 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count from 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC: the form spreadsheets read as a date
/// and time without being told.
pub fn utc_datetime(ms: EpochMs) -> String {
    let (days, rem) = (ms.div_euclid(DAY_MS), ms.rem_euclid(DAY_MS) / 1000);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_year_dash_month() {
        assert_eq!(
            Month::parse("2026-11"),
            Ok(Month {
                year: 2026,
                month: 11
            })
        );
        for bad in [
            "2026-13",
            "2026-00",
            "2026-1",
            "26-11",
            "2026/11",
            "2026-11-01",
            "",
            "２０２６-11",
        ] {
            assert!(Month::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Month::parse("2026-01").unwrap().to_string(), "2026-01");
    }

    #[test]
    fn a_day_is_in_its_month_only() {
        let m = Month::parse("2026-11").unwrap();
        assert!(m.holds_day("2026-11-30"));
        assert!(!m.holds_day("2026-12-01"));
        assert!(!m.holds_day("2026-1"));
        assert!(!m.holds_day("2026-110"));
    }

    #[test]
    fn months_start_at_utc_midnight_and_roll_over_the_year() {
        // 2026-11-01T00:00:00Z and 2027-01-01T00:00:00Z.
        assert_eq!(
            Month::parse("2026-11").unwrap().start_utc_ms(),
            1_793_491_200_000
        );
        let dec = Month::parse("2026-12").unwrap();
        assert_eq!(
            dec.next(),
            Month {
                year: 2027,
                month: 1
            }
        );
        assert_eq!(dec.next().start_utc_ms(), 1_798_761_600_000);
        let (from, to) = Month::parse("2026-11").unwrap().generous_range_ms();
        assert_eq!(from, 1_793_491_200_000 - 2 * DAY_MS);
        assert_eq!(to, 1_796_083_200_000 + 2 * DAY_MS);
    }

    #[test]
    fn datetimes_are_written_for_spreadsheets() {
        assert_eq!(utc_datetime(0), "1970-01-01 00:00:00");
        assert_eq!(
            utc_datetime(1_793_491_200_000 + 3_723_000),
            "2026-11-01 01:02:03"
        );
        assert_eq!(utc_datetime(951_782_400_000), "2000-02-29 00:00:00");
    }
}
