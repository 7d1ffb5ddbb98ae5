//! Alerts and events for the tests of the alert log.
use eldercare_model::{Alert, AlertEventKind, AlertKind, AlertState, Severity};
use eldercare_store::NewAlertEvent;

/// An open SOS of elder E1 in community C1.
pub fn alert(id: &str) -> Alert {
    Alert {
        id: id.into(),
        elder_id: "E1".into(),
        device_id: "btn-1".into(),
        kind: AlertKind::Sos,
        severity: Severity::Critical,
        state: AlertState::Open,
        raised_at: 1,
        detected_at: 1,
        updated_at: 1,
        summary: "SOS".into(),
        summary_zh: "紧急呼叫".into(),
        subject: None,
        window: None,
        score: None,
        factors: Vec::new(),
        readings: Vec::new(),
        occurrences: 1,
        outcome: None,
        district: None,
        community: Some("C1".into()),
        muted: false,
        silence_id: None,
        escalations: 0,
        responder: None,
        acknowledged_at: None,
        dispatched_at: None,
        resolved_at: None,
        late_ms: None,
        recorded: false,
        visit: None,
        route: None,
    }
}

pub fn event(kind: AlertEventKind, alert: Alert, at: i64) -> NewAlertEvent {
    NewAlertEvent {
        kind,
        alert,
        actor: String::new(),
        at,
        note: None,
        decision: None,
    }
}
