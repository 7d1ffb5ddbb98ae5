//! A provider's month as CSV for a city officer's spreadsheet: two
//! files, a one-row summary ([`summary`]) and one row per visit
//! ([`visits`]). RFC 4180: comma-separated, CRLF line ends, a header
//! row, fields quoted when they hold a comma, quote or line break. Ids
//! only, never a name. Times are UTC, `YYYY-MM-DD HH:MM:SS`, which
//! spreadsheets read as dates; the visit's `day` is the elder's own date.
use crate::month::utc_datetime;
use crate::report::{ProviderMonth, VisitRow};

/// The summary's columns, in order.
pub const SUMMARY_HEADER: [&str; 20] = [
    "provider_id",
    "month",
    "planned",
    "done",
    "on_time",
    "late",
    "missed",
    "unplanned",
    "short",
    "uncorroborated",
    "unverified",
    "no_check_in",
    "no_check_out",
    "follow_ups",
    "satisfied",
    "complaint",
    "no_answer",
    "follow_up_open",
    "minutes_delivered",
    "minutes_planned",
];

/// The visit rows' columns, in order.
pub const VISITS_HEADER: [&str; 15] = [
    "provider_id",
    "elder_id",
    "visit_id",
    "day",
    "plan_id",
    "service",
    "carer_id",
    "status",
    "check_in_utc",
    "check_out_utc",
    "length_min",
    "planned_min",
    "flags",
    "follow_up",
    "alert_id",
];

/// One field, quoted when RFC 4180 needs it.
pub fn field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn line<S: AsRef<str>>(out: &mut String, fields: impl IntoIterator<Item = S>) {
    let mut first = true;
    for f in fields {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&field(f.as_ref()));
    }
    out.push_str("\r\n");
}

/// The header and one row of counts.
pub fn summary(r: &ProviderMonth) -> String {
    let c = &r.counts;
    let mut out = String::new();
    line(&mut out, SUMMARY_HEADER);
    let mut row = vec![r.provider_id.clone(), r.month.to_string()];
    row.extend(
        [
            c.planned,
            c.done,
            c.on_time,
            c.late,
            c.missed,
            c.unplanned,
            c.short,
            c.uncorroborated,
            c.unverified,
            c.no_check_in,
            c.no_check_out,
            c.follow_ups,
            c.satisfied,
            c.complaint,
            c.no_answer,
            c.follow_up_open,
            c.minutes_delivered,
            c.minutes_planned,
        ]
        .map(|n| n.to_string()),
    );
    line(&mut out, row);
    out
}

/// The header and one row per visit, by elder and day. `flags` holds
/// the visit's flags separated by `;` (one cell, easy to filter on).
pub fn visits<'a>(rows: impl IntoIterator<Item = &'a VisitRow>) -> String {
    let mut out = String::new();
    line(&mut out, VISITS_HEADER);
    let opt = |s: &Option<String>| s.clone().unwrap_or_default();
    let num = |n: Option<u32>| n.map(|n| n.to_string()).unwrap_or_default();
    for r in rows {
        line(
            &mut out,
            [
                r.provider_id.clone(),
                r.elder_id.clone(),
                r.visit_id.clone(),
                r.day.clone(),
                opt(&r.plan_id),
                opt(&r.service),
                opt(&r.carer_id),
                r.status.as_str().to_string(),
                r.check_in.map(utc_datetime).unwrap_or_default(),
                r.check_out.map(utc_datetime).unwrap_or_default(),
                num(r.length_min),
                num(r.planned_min),
                r.flags
                    .iter()
                    .map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(";"),
                r.follow_up.as_str().to_string(),
                r.alert_id.clone(),
            ],
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Month;
    use crate::report::tests::november;

    fn report() -> ProviderMonth {
        ProviderMonth::compute("P1", Month::parse("2026-11").unwrap(), &november())
    }

    #[test]
    fn fields_are_quoted_only_when_they_must_be() {
        assert_eq!(field("e1/p1/2026-11-02"), "e1/p1/2026-11-02");
        assert_eq!(field("meals, shopping"), "\"meals, shopping\"");
        assert_eq!(field("the \"big\" bath"), "\"the \"\"big\"\" bath\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn the_summary_is_a_header_and_one_row() {
        let s = summary(&report());
        let lines: Vec<_> = s.split_terminator("\r\n").collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], SUMMARY_HEADER.join(","));
        assert_eq!(
            lines[1],
            "P1,2026-11,7,6,4,1,1,1,1,1,1,1,1,4,1,1,1,1,165,420"
        );
        assert!(s.ends_with("\r\n"));
    }

    #[test]
    fn one_row_per_visit_with_flags_in_one_cell() {
        let mut r = report();
        r.elders[0].visits[0].service = Some("meals, shopping".into());
        let s = visits(r.visits());
        let lines: Vec<_> = s.split_terminator("\r\n").collect();
        assert_eq!(lines[0], VISITS_HEADER.join(","));
        assert_eq!(lines.len(), 1 + 8);
        assert_eq!(
            lines[1],
            "P1,e1,e1/p1/2026-11-02,2026-11-02,p1,\"meals, shopping\",c1,on_time,\
             2026-11-02 10:00:00,2026-11-02 11:00:00,60,60,,satisfied,a1"
        );
        assert_eq!(
            lines[3],
            "P1,e1,e1/p1/2026-11-04,2026-11-04,p1,bathing,,missed,,,,60,,,m3"
        );
        assert!(
            lines[4].contains(",on_time,") && lines[4].contains(",short;uncorroborated,no_answer,")
        );
        assert!(!s.contains('\n') || s.matches('\n').count() == s.matches("\r\n").count());
    }
}
