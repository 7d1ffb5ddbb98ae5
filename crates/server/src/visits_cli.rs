//! `eldercare visits report`: a provider's month of carers' visits
//! (VisitService.ProviderReport) from a shell, as a readable summary or
//! as CSV for a spreadsheet, over gRPC with the same bearer tokens and
//! TLS options as `eldercare alerts`.
use crate::alerts_cli::{Api, ApiArgs, EXIT_UNAVAILABLE, emit, fail, output_ended, status_failure};
use clap::Subcommand;
use eldercare_proto::v1 as pb;
use pb::visit_service_client::VisitServiceClient;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum VisitsCmd {
    /// One provider's month: planned, done, late, missed visits, flags,
    /// follow-up calls and minutes delivered.
    Report {
        #[command(flatten)]
        api: ApiArgs,
        /// The provider's id.
        #[arg(long)]
        provider: String,
        /// The month, YYYY-MM (visits count by the elder's local date).
        #[arg(long)]
        month: String,
        /// One CSV row per visit (RFC 4180, with a header row) instead of
        /// the summary.
        #[arg(long, conflicts_with = "summary_csv")]
        csv: bool,
        /// The counts as CSV: a header row and one row.
        #[arg(long)]
        summary_csv: bool,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub async fn run(cmd: VisitsCmd) -> anyhow::Result<ExitCode> {
    let VisitsCmd::Report {
        api,
        provider,
        month,
        csv,
        summary_csv,
        out,
    } = cmd;
    let result = async {
        let api = Api::new(&api)?;
        let channel = api.channel().await.map_err(|m| fail(EXIT_UNAVAILABLE, m))?;
        let mut client = VisitServiceClient::with_interceptor(channel, api.bearer());
        let report = client
            .provider_report(pb::ProviderReportRequest {
                provider_id: provider.clone(),
                month: month.clone(),
            })
            .await
            .map_err(|st| status_failure(&format!("report of {provider} for {month}"), &st))?
            .into_inner();
        let text = if csv {
            report.csv
        } else if summary_csv {
            report.summary_csv
        } else {
            summary(&report)
        };
        match out {
            Some(path) => std::fs::write(&path, text)
                .map(|()| ExitCode::SUCCESS)
                .map_err(|e| fail(1, format!("writing {}: {e}", path.display()))),
            None => match emit(text.trim_end_matches(['\r', '\n'])) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => output_ended(e),
            },
        }
    }
    .await;
    Ok(result.unwrap_or_else(|f| {
        eprintln!("eldercare: {}", f.message);
        ExitCode::from(f.code)
    }))
}

/// The report as a person reads it: the counts, then the visits that
/// need a look (flagged, missed, or with a complaint).
pub fn summary(r: &pb::ProviderReport) -> String {
    let c = r.counts.unwrap_or_default();
    let mut s = String::new();
    let _ = writeln!(s, "Provider {}, {}", r.provider_id, r.month);
    let _ = writeln!(
        s,
        "  planned {}: on time {}, late {}, missed {}, no check-in {}",
        c.planned,
        c.on_time,
        c.late,
        c.missed,
        c.planned.saturating_sub(c.on_time + c.late + c.missed)
    );
    let _ = writeln!(
        s,
        "  done {} (unplanned {}), {} of {} planned minutes delivered",
        c.done, c.unplanned, c.minutes_delivered, c.minutes_planned
    );
    let _ = writeln!(
        s,
        "  flags: short {}, uncorroborated {}, unverified {}, no check-in {}, no check-out {}",
        c.short, c.uncorroborated, c.unverified, c.no_check_in, c.no_check_out
    );
    let _ = writeln!(
        s,
        "  follow-up calls {}: satisfied {}, complaint {}, no answer {}, open {}",
        c.follow_ups, c.satisfied, c.complaint, c.no_answer, c.follow_up_open
    );
    let worth_a_look: Vec<_> = r
        .visits
        .iter()
        .filter(|v| {
            !v.flags.is_empty()
                || v.status == "missed"
                || v.status == "no_check_in"
                || v.follow_up == "complaint"
        })
        .collect();
    if !worth_a_look.is_empty() {
        let _ = writeln!(s, "Visits to look at:");
    }
    for v in worth_a_look {
        let mut notes: Vec<&str> = vec![v.status.as_str()];
        notes.extend(v.flags.iter().map(String::as_str).filter(|f| *f != "late"));
        if v.follow_up == "complaint" {
            notes.push("complaint");
        }
        let _ = writeln!(
            s,
            "  {}  {}  carer {}  {}",
            v.day,
            v.visit_id,
            if v.carer_id.is_empty() {
                "-"
            } else {
                &v.carer_id
            },
            notes.join(", ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_reads_as_sentences_and_lists_the_visits_to_look_at() {
        let r = pb::ProviderReport {
            provider_id: "P1".into(),
            month: "2026-11".into(),
            counts: Some(pb::VisitCounts {
                planned: 7,
                done: 6,
                on_time: 4,
                late: 1,
                missed: 1,
                unplanned: 1,
                complaint: 1,
                follow_ups: 1,
                minutes_delivered: 165,
                minutes_planned: 420,
                ..Default::default()
            }),
            visits: vec![
                pb::VisitRow {
                    visit_id: "e1/p1/2026-11-02".into(),
                    day: "2026-11-02".into(),
                    status: "on_time".into(),
                    carer_id: "c1".into(),
                    ..Default::default()
                },
                pb::VisitRow {
                    visit_id: "e1/p1/2026-11-03".into(),
                    day: "2026-11-03".into(),
                    status: "late".into(),
                    carer_id: "c1".into(),
                    flags: vec!["late".into(), "short".into()],
                    follow_up: "complaint".into(),
                    ..Default::default()
                },
                pb::VisitRow {
                    visit_id: "e1/p1/2026-11-04".into(),
                    day: "2026-11-04".into(),
                    status: "missed".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let s = summary(&r);
        assert!(s.starts_with("Provider P1, 2026-11\n"), "{s}");
        assert!(
            s.contains("planned 7: on time 4, late 1, missed 1, no check-in 1"),
            "{s}"
        );
        assert!(s.contains("165 of 420 planned minutes"), "{s}");
        assert!(
            s.contains("2026-11-03  e1/p1/2026-11-03  carer c1  late, short, complaint"),
            "{s}"
        );
        assert!(
            s.contains("2026-11-04  e1/p1/2026-11-04  carer -  missed"),
            "{s}"
        );
        assert!(!s.contains("2026-11-02  e1"), "nothing to look at: {s}");
    }
}
