use super::*;
use eldercare_model::{Body, DeviceEvent, EventType, Reading, Severity};
use eldercare_store::SqliteStore;

fn sos(elder: &str) -> Trigger {
    sos_at(elder, 1_000)
}

fn sos_at(elder: &str, ts_ms: i64) -> Trigger {
    Trigger {
        elder_id: elder.into(),
        device_id: format!("btn-{elder}"),
        subject: None,
        kind: AlertKind::Sos,
        severity: Severity::Critical,
        at_ms: 1_000,
        summary: eldercare_model::Text::new("SOS button pressed", "紧急呼叫按钮被按下"),
        window: None,
        score: None,
        factors: Vec::new(),
        late_ms: None,
        record: None,
        readings: vec![Reading {
            device_id: format!("btn-{elder}"),
            seq: None,
            ts_ms,
            body: Body::Event(DeviceEvent {
                kind: EventType::Sos,
                confidence: None,
                carer: None,
                action: None,
            }),
        }],
        visit: None,
        route: None,
    }
}

async fn desk() -> (AlertDesk, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let (desk, _) = AlertDesk::start(store).await.unwrap();
    (desk, dir)
}

async fn next(rx: &mut mpsc::Receiver<AlertEvent>) -> AlertEvent {
    rx.recv().await.expect("an event")
}

#[tokio::test]
async fn repeats_fold_and_seq_is_gap_free() {
    let (desk, _dir) = desk().await;
    let (tx, mut rx) = mpsc::channel(16);
    let d = desk.clone();
    tokio::spawn(async move { d.subscribe(0, |_| true, tx).await });
    desk.trigger(sos("e1")).await.unwrap();
    desk.trigger(sos_at("e1", 2_000)).await.unwrap();
    desk.trigger(sos("e2")).await.unwrap();
    let a = next(&mut rx).await;
    let b = next(&mut rx).await;
    let c = next(&mut rx).await;
    assert_eq!((a.seq, b.seq, c.seq), (1, 2, 3));
    assert_eq!(
        (a.kind, b.kind, c.kind),
        (
            AlertEventKind::Raised,
            AlertEventKind::Updated,
            AlertEventKind::Raised
        )
    );
    assert_eq!(b.alert.id, a.alert.id);
    assert_eq!(b.alert.occurrences, 2);
    assert_ne!(c.alert.id, a.alert.id);
}

#[tokio::test]
async fn the_same_evidence_judged_again_is_no_new_occurrence_and_applied_positions_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let (desk, _) = AlertDesk::start_with(
        store.clone(),
        DeskConfig {
            tick: None,
            applied: Some(Arc::new(move |p| s.lock().unwrap().push(p))),
            ..DeskConfig::default()
        },
    )
    .await
    .unwrap();
    desk.decide_from(Decision::Raise(sos("e1")), Some(7))
        .await
        .unwrap();
    // A replay after a crash judges message 7 again, then a new press.
    desk.decide_from(Decision::Raise(sos("e1")), Some(7))
        .await
        .unwrap();
    desk.decide_from(Decision::Raise(sos_at("e1", 5_000)), Some(9))
        .await
        .unwrap();
    desk.stop().await;
    let (tx, mut rx) = mpsc::channel(16);
    let d = desk.clone();
    tokio::spawn(async move { d.subscribe(0, |_| true, tx).await });
    let a = next(&mut rx).await;
    let b = next(&mut rx).await;
    assert_eq!((a.seq, a.kind), (1, AlertEventKind::Raised));
    assert_eq!((b.seq, b.kind), (2, AlertEventKind::Updated));
    assert_eq!(b.alert.occurrences, 2, "the replayed press is not counted");
    assert_eq!(store.last_seq().await.unwrap(), 2);
    assert_eq!(*seen.lock().unwrap(), vec![7, 7, 9]);
}

#[tokio::test]
async fn acknowledge_once_then_refused() {
    let (desk, _dir) = desk().await;
    let (tx, mut rx) = mpsc::channel(16);
    let d = desk.clone();
    tokio::spawn(async move { d.subscribe(0, |_| true, tx).await });
    desk.trigger(sos("e1")).await.unwrap();
    let raised = next(&mut rx).await;
    let acked = desk
        .acknowledge(&raised.alert.id, "op-7", None)
        .await
        .unwrap();
    assert_eq!(acked.state, AlertState::Acknowledged);
    let ev = next(&mut rx).await;
    assert_eq!(
        (ev.seq, ev.kind, ev.actor.as_str()),
        (2, AlertEventKind::Acknowledged, "op-7")
    );
    // The second to acknowledge is told who was first.
    match desk.acknowledge(&raised.alert.id, "op-9", None).await {
        Err(e @ DeskError::AlreadyAcknowledged { .. }) => {
            assert!(
                e.to_string().contains("already acknowledged by op-7 at "),
                "{e}"
            );
        }
        r => panic!("expected AlreadyAcknowledged, got {r:?}"),
    }
    assert!(matches!(
        desk.acknowledge("nope", "op-7", None).await,
        Err(DeskError::NotFound(_))
    ));
}

#[tokio::test]
async fn replay_then_live_without_gap_or_duplicate_even_when_lagging() {
    let (desk, _dir) = desk().await;
    for i in 0..10 {
        desk.trigger(sos(&format!("e{i}"))).await.unwrap();
    }
    // A sink of one slot that is not read while 3000 more events are
    // produced: the broadcast buffer overflows and the subscriber must
    // catch up from storage.
    let (tx, mut rx) = mpsc::channel(1);
    let d = desk.clone();
    tokio::spawn(async move { d.subscribe(4, |_| true, tx).await });
    assert_eq!(next(&mut rx).await.seq, 5);
    for i in 0..5000 {
        desk.trigger(sos(&format!("f{i}"))).await.unwrap();
    }
    let mut expect = 6;
    while expect <= 5010 {
        let ev = next(&mut rx).await;
        assert_eq!(ev.seq, expect);
        expect += 1;
    }
}

/// A desk on a clock the test moves.
async fn driven() -> (
    AlertDesk,
    Arc<std::sync::atomic::AtomicI64>,
    tempfile::TempDir,
) {
    use std::sync::atomic::{AtomicI64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let now = Arc::new(AtomicI64::new(1_000_000));
    let n = now.clone();
    let (desk, _) = AlertDesk::start_with(
        store,
        DeskConfig {
            escalation: Escalation::default(),
            clock: Arc::new(move || n.load(Ordering::SeqCst)),
            tick: None,
            applied: None,
        },
    )
    .await
    .unwrap();
    (desk, now, dir)
}

fn set(now: &std::sync::atomic::AtomicI64, t: i64) {
    now.store(t, std::sync::atomic::Ordering::SeqCst);
}

/// Everything the desk has persisted, in order.
async fn log(desk: &AlertDesk) -> Vec<AlertEvent> {
    // A round trip through the desk's queue: everything sent before is applied.
    desk.tick().await;
    let _ = desk.act("none", Action::AddNote, "t", None).await;
    desk.store().events_after(0, 1000).await.unwrap()
}

#[tokio::test]
async fn an_unacknowledged_critical_alert_escalates_at_each_deadline_until_acknowledged() {
    let (desk, now, _dir) = driven().await;
    let t0 = 1_000_000;
    desk.trigger(sos("e1")).await.unwrap();
    let id = log(&desk).await[0].alert.id.clone();
    for (t, want) in [
        (59_999, 1),
        (60_000, 2),
        (119_999, 2),
        (120_000, 3),
        (180_000, 4),
    ] {
        set(&now, t0 + t);
        let events = log(&desk).await;
        assert_eq!(events.len(), want, "at +{t} ms: {events:?}");
    }
    let events = log(&desk).await;
    assert_eq!(events[1].kind, AlertEventKind::Escalated);
    assert_eq!(events[1].actor, "");
    assert!(events[1].note.as_deref().unwrap().contains("60 s"));
    assert!(events[2].note.as_deref().unwrap().starts_with("Reminder 2"));
    assert_eq!(events[3].alert.escalations, 3);
    // Acknowledged: no more reminders.
    desk.acknowledge(&id, "op-1", None).await.unwrap();
    set(&now, t0 + 600_000);
    let events = log(&desk).await;
    assert_eq!(events.len(), 5);
    assert_eq!(events[4].kind, AlertEventKind::Acknowledged);
    assert_eq!(events[4].alert.acknowledged_at, Some(t0 + 180_000));
}

#[tokio::test]
async fn high_waits_three_minutes_and_low_never_escalates() {
    let (desk, now, _dir) = driven().await;
    let t0 = 1_000_000;
    let mut high = sos("e1");
    high.kind = AlertKind::VitalOutOfRange;
    high.severity = Severity::High;
    let mut low = sos("e2");
    low.kind = AlertKind::LowBattery;
    low.severity = Severity::Low;
    desk.trigger(high).await.unwrap();
    desk.trigger(low).await.unwrap();
    assert_eq!(log(&desk).await.len(), 2, "both raised at t0");
    set(&now, t0 + 179_999);
    assert_eq!(log(&desk).await.len(), 2);
    set(&now, t0 + 3_600_000);
    let events = log(&desk).await;
    let escalated: Vec<_> = events
        .iter()
        .filter(|e| e.kind == AlertEventKind::Escalated)
        .collect();
    assert_eq!(
        escalated.len(),
        1,
        "one check at +1 h: one event, not a burst"
    );
    assert_eq!(escalated[0].alert.kind, AlertKind::VitalOutOfRange);
    assert_eq!(
        escalated[0].alert.escalations, 20,
        "it counts every missed deadline"
    );
}

#[tokio::test]
async fn a_silenced_alert_is_muted_goes_to_operations_and_is_not_escalated() {
    let (desk, now, _dir) = driven().await;
    let t0 = 1_000_000;
    let base = Silence {
        id: String::new(),
        kind: AlertKind::Sos,
        elder_id: Some("e1".into()),
        device_id: None,
        reason: "in hospital until Friday".into(),
        created_by: "op-1".into(),
        created_at: 0,
        until: t0 + 3_600_000,
        ended_at: None,
    };
    let bad = |f: fn(&mut Silence)| {
        let mut s = base.clone();
        f(&mut s);
        s
    };
    for s in [
        bad(|s| s.reason = " ".into()),
        bad(|s| s.device_id = Some("btn-e1".into())),
        bad(|s| s.elder_id = None),
        bad(|s| s.until = 1),
        bad(|s| s.until = 1_000_000 + MAX_SILENCE_MS + 1),
    ] {
        assert!(matches!(desk.silence(s).await, Err(DeskError::Invalid(_))));
    }
    let sil = desk.silence(base.clone()).await.unwrap();
    desk.trigger(sos("e1")).await.unwrap();
    desk.trigger(sos("e2")).await.unwrap();
    assert_eq!(log(&desk).await.len(), 2, "both raised at t0");
    set(&now, t0 + 600_000);
    let events = log(&desk).await;
    let e1 = &events[0].alert;
    assert!(e1.muted);
    assert_eq!(e1.silence_id.as_deref(), Some(sil.id.as_str()));
    assert_eq!(e1.queue(), eldercare_model::Queue::Operations);
    let escalated: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == AlertEventKind::Escalated)
        .map(|e| e.alert.elder_id.as_str())
        .collect();
    assert_eq!(escalated, vec!["e2"], "only the unmuted alert escalates");
    // Ended: the next alert is not muted.
    desk.end_silence(&sil.id, "op-1").await.unwrap();
    assert!(matches!(
        desk.end_silence(&sil.id, "op-1").await,
        Err(DeskError::NotFound(_))
    ));
    let id = e1.id.clone();
    desk.act(&id, Action::Resolve(Outcome::FalseAlarm), "op-1", None)
        .await
        .unwrap();
    desk.trigger(sos("e1")).await.unwrap();
    let last = log(&desk).await.pop().unwrap();
    assert_eq!(last.kind, AlertEventKind::Raised);
    assert!(!last.alert.muted);
}

#[tokio::test]
async fn every_action_from_every_state_is_allowed_or_refused_as_the_lifecycle_says() {
    use AlertState::*;
    let responder = Responder {
        kind: eldercare_model::ResponderType::CommunityWorker,
        name: "Worker".into(),
        phone: "123".into(),
    };
    let actions = [
        Action::Acknowledge,
        Action::Dispatch(responder.clone()),
        Action::Escalate,
        Action::AddNote,
        Action::Resolve(Outcome::FalseAlarm),
        Action::Resolve(Outcome::HandledByPhone),
        Action::Resolve(Outcome::ResponderOnSite),
        Action::Resolve(Outcome::SentToHospital),
    ];
    // Steps that bring a fresh alert to each state.
    let paths: [(AlertState, Vec<Action>); 4] = [
        (Open, vec![]),
        (Acknowledged, vec![Action::Acknowledge]),
        (
            Dispatched,
            vec![Action::Acknowledge, Action::Dispatch(responder.clone())],
        ),
        (Resolved, vec![Action::Resolve(Outcome::FalseAlarm)]),
    ];
    let allowed = |state: AlertState, a: &Action| match (state, a) {
        (_, Action::AddNote) => true,
        (Resolved, _) => false,
        (Open, Action::Acknowledge | Action::Escalate) => true,
        (Open, Action::Resolve(Outcome::FalseAlarm)) => true,
        (Open, _) => false,
        (Acknowledged, Action::Acknowledge) => false,
        (Acknowledged, Action::Resolve(o)) => {
            matches!(o, Outcome::FalseAlarm | Outcome::HandledByPhone)
        }
        (Acknowledged, _) => true,
        (Dispatched, Action::Acknowledge) => false,
        (Dispatched, _) => true,
    };
    let (desk, _now, _dir) = driven().await;
    let mut n = 0;
    for (state, path) in &paths {
        for a in &actions {
            n += 1;
            desk.trigger(sos(&format!("e{n}"))).await.unwrap();
            let id = log(&desk)
                .await
                .into_iter()
                .rev()
                .find(|e| e.kind == AlertEventKind::Raised)
                .unwrap()
                .alert
                .id;
            for step in path {
                desk.act(&id, step.clone(), "op-1", None).await.unwrap();
            }
            let r = desk.act(&id, a.clone(), "op-2", Some("n".into())).await;
            if allowed(*state, a) {
                let got = r.unwrap_or_else(|e| panic!("{a:?} from {state:?}: {e}"));
                assert_eq!(
                    desk.store()
                        .events_of_alert(&id)
                        .await
                        .unwrap()
                        .last()
                        .unwrap()
                        .actor,
                    "op-2"
                );
                if let Action::Resolve(o) = a {
                    assert_eq!(got.outcome.as_deref(), Some(o.as_str()));
                    assert!(got.resolved_at.is_some());
                }
            } else {
                assert!(
                    matches!(
                        r,
                        Err(DeskError::NotAllowed { .. } | DeskError::AlreadyAcknowledged { .. })
                    ),
                    "{a:?} from {state:?}: {r:?}"
                );
            }
        }
    }
    assert!(matches!(
        desk.act("missing", Action::Acknowledge, "op", None).await,
        Err(DeskError::NotFound(_))
    ));
}

/// Elders as a registry read found them.
struct Elders(HashMap<String, Elder>);

#[async_trait]
impl ElderLookup for Elders {
    async fn elder(&self, elder_id: &str) -> Result<Option<Elder>, StoreError> {
        Ok(self.0.get(elder_id).cloned())
    }
}

#[tokio::test]
async fn a_new_alert_is_filed_under_its_elders_district_and_community() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let e1 = Elder {
        elder_id: "e1".into(),
        district: Some("D1".into()),
        community: Some("C1".into()),
        ..Elder::default()
    };
    let elders = Elders(HashMap::from([("e1".to_string(), e1)]));
    let cfg = DeskConfig {
        tick: None,
        ..DeskConfig::default()
    };
    let (desk, _) = AlertDesk::start_on(store, Box::new(elders), cfg)
        .await
        .unwrap();
    desk.trigger(sos("e1")).await.unwrap();
    desk.trigger(sos("e2")).await.unwrap();
    desk.sync().await.unwrap();
    let events = desk.store().events_after(0, 10).await.unwrap();
    let filed: Vec<_> = events
        .iter()
        .map(|e| {
            let a = &e.alert;
            (
                a.elder_id.as_str(),
                a.district.as_deref(),
                a.community.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        filed,
        vec![("e1", Some("D1"), Some("C1")), ("e2", None, None)],
        "an elder the registry does not know files the alert under neither"
    );
}

fn out_of_bed(elder: &str) -> Trigger {
    let mut t = sos(elder);
    t.kind = AlertKind::OutOfBedTooLong;
    t.severity = Severity::High;
    t.readings.clear();
    t
}

#[tokio::test]
async fn a_recorded_trigger_is_born_resolved_on_the_care_queue_beside_an_open_alert() {
    let (desk, now, _dir) = driven().await;
    let t0 = 1_000_000;
    // An open out-of-bed alert, then an earlier episode the late readings
    // show already over.
    desk.trigger(out_of_bed("e1")).await.unwrap();
    let mut rec = out_of_bed("e1");
    rec.late_ms = Some(3_600_000);
    rec.record = Some(eldercare_rules::Record::OverInLateData(
        eldercare_model::Text::new("Back in bed at 02:38", "02:38 已回床"),
    ));
    desk.trigger(rec).await.unwrap();
    let events = log(&desk).await;
    assert_eq!(events.len(), 2, "{events:?}");
    let (open, recorded) = (&events[0].alert, &events[1].alert);
    assert_ne!(open.id, recorded.id, "not folded into the open alert");
    assert_eq!(events[1].kind, AlertEventKind::Raised);
    assert_eq!(recorded.state, AlertState::Resolved);
    assert!(recorded.recorded);
    assert_eq!(recorded.outcome.as_deref(), Some("recorded"));
    assert_eq!(recorded.late_ms, Some(3_600_000));
    assert_eq!(recorded.queue(), eldercare_model::Queue::Care);
    assert_eq!(events[1].note.as_deref(), Some("Back in bed at 02:38"));
    // The open alert is still open: a repeat folds into it, and it
    // escalates as a HIGH alert does.
    desk.trigger(out_of_bed("e1")).await.unwrap();
    set(&now, t0 + 180_000);
    let events = log(&desk).await;
    assert_eq!(events[2].kind, AlertEventKind::Updated);
    assert_eq!(events[2].alert.id, open.id);
    assert_eq!(events[2].alert.occurrences, 2);
    assert_eq!(events[3].kind, AlertEventKind::Escalated);
    assert_eq!(events[3].alert.id, open.id);
}

#[tokio::test]
async fn a_trend_goes_to_the_care_queue_and_never_escalates() {
    let (desk, now, _dir) = driven().await;
    let mut t = out_of_bed("e1");
    t.kind = AlertKind::Trend;
    t.severity = Severity::Medium;
    t.subject = Some("night_bathroom_visits".into());
    desk.trigger(t).await.unwrap();
    set(&now, 1_000_000 + 24 * 3_600_000);
    let events = log(&desk).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].alert.queue(), eldercare_model::Queue::Care);
    assert_eq!(events[0].alert.state, AlertState::Open);
}
