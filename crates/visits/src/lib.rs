//! Reports on carers' home visits, for the city that pays providers for
//! them: what one provider delivered in a month ([`ProviderMonth`]) and
//! what one elder received ([`ElderMonth`]), worked out from the
//! `visit`, `visit_missed` and `follow_up` alerts the rule engine keeps
//! (see `docs/visits.md`).
//!
//! Pure: the caller reads the alerts (generously around the month) and
//! hands them in; `report` keeps those whose visit falls in the month by
//! the elder's local date and counts them, `csv` writes the result for a
//! spreadsheet, and `month` knows the calendar. No I/O, no clock.
#![forbid(unsafe_code)]

pub mod csv;
pub mod month;
pub mod report;

pub use month::{Month, MonthError};
pub use report::{Counts, ElderMonth, FollowUp, ProviderMonth, VisitRow, VisitStatus};
