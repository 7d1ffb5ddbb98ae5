//! The active desk: applies every partition's decisions in the order of
//! the decision stream, keeps them in PostgreSQL with the one gap-free
//! `seq`, publishes each kept event to every member, and answers the
//! operators' actions forwarded by any member. And the forwarding side
//! every member's API uses.
use crate::Shared;
use crate::decisions::FENCE_HEADER;
use crate::partition::{DECISION_STREAM, DESK_RPC, EVENTS};
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use eldercare_alerts::{Action, AlertDesk, DeskConfig, DeskError, Forward, Forwarded, WireError};
use eldercare_model::{Alert, AlertEvent, Silence};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// An operator's request, as forwarded to the active desk.
#[derive(Debug, Serialize, Deserialize)]
enum Request {
    Act {
        id: String,
        action: Action,
        operator: String,
        note: Option<String>,
    },
    Silence(Silence),
    EndSilence {
        id: String,
        operator: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Alert(Box<Alert>),
    Silence(Silence),
    Refused(WireError),
}

/// Runs the desk until `stop` is cancelled (lease lost, or stopping).
/// While `held` is not valid (resumed after a pause, before the manager
/// knows whether the lease is still this member's) it applies nothing
/// and answers no one.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken, held: Arc<crate::lease::Held>) {
    let cfg = DeskConfig {
        escalation: shared.escalation,
        ..Default::default()
    };
    let (desk, desk_task) = match AlertDesk::start_with(shared.store.clone(), cfg).await {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "The desk could not start.");
            return;
        }
    };
    // Every decision past the newest one the alert log keeps: the log
    // itself is the desk's progress (each event carries its decision, in
    // decision order), so a desk taking over continues exactly there.
    // Decisions past it that changed nothing are applied again and change
    // nothing again; one whose event is kept is refused by the store.
    let consumer = async {
        let from = shared.store.last_decision().await? + 1;
        let stream = shared.js.get_stream(DECISION_STREAM).await?;
        let c = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: "eldercare.decisions.>".into(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ..Default::default()
            })
            .await?;
        info!(from, "Desk reading decisions.");
        Ok::<_, async_nats::Error>(c.messages().await?)
    }
    .await;
    let mut decisions = match consumer {
        Ok(m) => m,
        Err(e) => {
            warn!(error = %e, "The desk cannot read the decision stream.");
            desk.stop().await;
            let _ = desk_task.await;
            return;
        }
    };
    let mut rpc = match shared.client.subscribe(DESK_RPC).await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "The desk cannot take operators' requests.");
            desk.stop().await;
            let _ = desk_task.await;
            return;
        }
    };
    let mut live = desk.live();
    info!("Active desk: applying the partitions' decisions.");
    let mut recheck = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            // Wakes the loop while the lease is not known to be held.
            _ = recheck.tick() => {}
            ev = live.recv() => match ev {
                Ok(ev) => publish_event(&shared, &ev).await,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    // Members catch the gap up from storage.
                    warn!(missed = n, "Events not published live; subscribers read them from storage.");
                }
                Err(_) => break,
            },
            Some(req) = rpc.next(), if held.valid() => {
                let desk = desk.clone();
                let client = shared.client.clone();
                tokio::spawn(async move { answer(&desk, &client, req).await });
            }
            m = decisions.next(), if held.valid() => {
                let Some(m) = m else { break };
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(error = %e, "Reading decisions failed; retrying.");
                        continue;
                    }
                };
                let Ok(seq) = m.info().map(|i| i.stream_sequence) else { continue };
                if m.headers.as_ref().is_some_and(|h| h.get(FENCE_HEADER).is_some()) {
                    continue;
                }
                match serde_json::from_slice::<eldercare_rules::Decision>(&m.payload) {
                    Ok(d) => {
                        if desk.decide_once(d, seq).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => warn!(error = %e, seq, "A decision that does not parse; skipped."),
                }
            }
        }
    }
    // Unacknowledged decisions go to the next desk.
    desk.stop().await;
    let _ = desk_task.await;
    info!("Desk stopped.");
}

async fn publish_event(shared: &Shared, ev: &AlertEvent) {
    if let Ok(body) = serde_json::to_vec(ev)
        && let Err(e) = shared.client.publish(EVENTS, body.into()).await
    {
        warn!(error = %e, seq = ev.seq, "Could not publish an alert event to the members.");
    }
}

async fn answer(desk: &AlertDesk, client: &async_nats::Client, req: async_nats::Message) {
    let Some(reply_to) = req.reply.clone() else {
        return;
    };
    let reply = match serde_json::from_slice::<Request>(&req.payload) {
        Ok(Request::Act {
            id,
            action,
            operator,
            note,
        }) => match desk.act(&id, action, &operator, note).await {
            Ok(a) => Reply::Alert(Box::new(a)),
            Err(e) => Reply::Refused(WireError::from(&e)),
        },
        Ok(Request::Silence(s)) => match desk.silence(s).await {
            Ok(s) => Reply::Silence(s),
            Err(e) => Reply::Refused(WireError::from(&e)),
        },
        Ok(Request::EndSilence { id, operator }) => match desk.end_silence(&id, &operator).await {
            Ok(s) => Reply::Silence(s),
            Err(e) => Reply::Refused(WireError::from(&e)),
        },
        Err(e) => Reply::Refused(WireError::Invalid(format!("unreadable request: {e}"))),
    };
    if let Ok(body) = serde_json::to_vec(&reply) {
        let _ = client.publish(reply_to, body.into()).await;
    }
}

/// Forwards a member's operator actions to the active desk.
pub struct ToActiveDesk {
    pub client: async_nats::Client,
}

/// How long an operator's action waits for the active desk.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);

impl ToActiveDesk {
    async fn ask(&self, req: Request) -> Result<Reply, DeskError> {
        let body = serde_json::to_vec(&req).map_err(|e| DeskError::Invalid(e.to_string()))?;
        let answer = tokio::time::timeout(RPC_TIMEOUT, self.client.request(DESK_RPC, body.into()))
            .await
            .map_err(|_| DeskError::Closed)?
            .map_err(|_| DeskError::Closed)?;
        let reply: Reply = serde_json::from_slice(&answer.payload)
            .map_err(|e| DeskError::Invalid(format!("unreadable answer from the desk: {e}")))?;
        match reply {
            Reply::Refused(w) => Err(w.into()),
            r => Ok(r),
        }
    }
}

impl Forward for ToActiveDesk {
    fn act(
        &self,
        id: String,
        action: Action,
        operator: String,
        note: Option<String>,
    ) -> Forwarded<'_, Alert> {
        Box::pin(async move {
            match self
                .ask(Request::Act {
                    id,
                    action,
                    operator,
                    note,
                })
                .await?
            {
                Reply::Alert(a) => Ok(*a),
                _ => Err(DeskError::Invalid("unexpected answer from the desk".into())),
            }
        })
    }

    fn silence(&self, silence: Silence) -> Forwarded<'_, Silence> {
        Box::pin(async move {
            match self.ask(Request::Silence(silence)).await? {
                Reply::Silence(s) => Ok(s),
                _ => Err(DeskError::Invalid("unexpected answer from the desk".into())),
            }
        })
    }

    fn end_silence(&self, id: String, operator: String) -> Forwarded<'_, Silence> {
        Box::pin(async move {
            match self.ask(Request::EndSilence { id, operator }).await? {
                Reply::Silence(s) => Ok(s),
                _ => Err(DeskError::Invalid("unexpected answer from the desk".into())),
            }
        })
    }
}

/// Feeds the active desk's events to this member's subscribers.
pub async fn follow_events(
    client: async_nats::Client,
    events: broadcast::Sender<AlertEvent>,
    stop: CancellationToken,
) {
    let mut sub = match client.subscribe(EVENTS).await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "Cannot follow the desk's events; subscribers read storage.");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            m = sub.next() => {
                let Some(m) = m else { break };
                if let Ok(ev) = serde_json::from_slice::<AlertEvent>(&m.payload) {
                    let _ = events.send(ev);
                }
            }
        }
    }
}
