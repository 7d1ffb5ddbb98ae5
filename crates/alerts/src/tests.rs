use super::*;
use eldercare_model::{Body, DeviceEvent, EventType, Reading, Severity};
use eldercare_store::SqliteStore;

fn sos(elder: &str) -> Trigger {
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
        readings: vec![Reading {
            device_id: format!("btn-{elder}"),
            seq: None,
            ts_ms: 1_000,
            body: Body::Event(DeviceEvent {
                kind: EventType::Sos,
                confidence: None,
            }),
        }],
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
    desk.trigger(sos("e1")).await.unwrap();
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
    assert!(matches!(
        desk.acknowledge(&raised.alert.id, "op-7", None).await,
        Err(DeskError::NotAllowed { .. })
    ));
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
