//! A desk handle whose changes are made by a desk elsewhere: on a
//! cluster member that is not the active desk, operators' actions are
//! forwarded to the one that is, and its events come back to be fanned
//! out to this member's subscribers (from storage, then live, as ever).
use crate::{Action, AlertDesk, Command, DeskError};
use eldercare_model::{Alert, AlertEvent, AlertState, Silence};
use eldercare_store::Store;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};

pub type Forwarded<'a, T> = Pin<Box<dyn Future<Output = Result<T, DeskError>> + Send + 'a>>;

/// Where a forwarding desk sends operators' actions.
pub trait Forward: Send + Sync + 'static {
    fn act(
        &self,
        id: String,
        action: Action,
        operator: String,
        note: Option<String>,
    ) -> Forwarded<'_, Alert>;
    fn silence(&self, silence: Silence) -> Forwarded<'_, Silence>;
    fn end_silence(&self, id: String, operator: String) -> Forwarded<'_, Silence>;
}

impl AlertDesk {
    /// A desk handle that forwards actions to `to` and fans out the events
    /// sent on the returned sender. Rule decisions are not taken here (a
    /// cluster's partition owners send theirs to the active desk).
    pub fn forwarding(
        store: Arc<dyn Store>,
        to: Arc<dyn Forward>,
    ) -> (AlertDesk, broadcast::Sender<AlertEvent>) {
        let (tx, mut rx) = mpsc::channel::<Command>(1024);
        let (events, _) = broadcast::channel(4096);
        tokio::spawn(async move {
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    Command::Stop => break,
                    Command::Act {
                        id,
                        action,
                        operator,
                        note,
                        reply,
                    } => {
                        let to = to.clone();
                        tokio::spawn(async move {
                            let _ = reply.send(to.act(id, action, operator, note).await);
                        });
                    }
                    Command::Silence { silence, reply } => {
                        let to = to.clone();
                        tokio::spawn(async move {
                            let _ = reply.send(to.silence(silence).await);
                        });
                    }
                    Command::EndSilence {
                        id,
                        operator,
                        reply,
                    } => {
                        let to = to.clone();
                        tokio::spawn(async move {
                            let _ = reply.send(to.end_silence(id, operator).await);
                        });
                    }
                    Command::Sync(reply) => {
                        let _ = reply.send(());
                    }
                    Command::Decide(..) => {
                        tracing::error!("A forwarding desk was handed a rule decision; ignored.");
                    }
                    Command::Tick => {}
                }
            }
        });
        (
            AlertDesk {
                tx,
                events: events.clone(),
                store,
            },
            events,
        )
    }
}

/// A desk's refusal as it crosses the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireError {
    NotFound(String),
    NotAllowed {
        id: String,
        state: String,
        action: String,
    },
    AlreadyAcknowledged {
        id: String,
        by: String,
        at: String,
        state: String,
    },
    Invalid(String),
    /// Storage failed, or no desk is active: worth trying again.
    Unavailable(String),
}

/// The static texts a desk answers with, found again by value.
fn known(s: &str, among: &[&'static str]) -> &'static str {
    among
        .iter()
        .find(|k| **k == s)
        .copied()
        .unwrap_or("this action")
}

fn state_str(s: &str) -> &'static str {
    AlertState::parse(s).map_or("in another state", |st| st.as_str())
}

impl From<&DeskError> for WireError {
    fn from(e: &DeskError) -> WireError {
        match e {
            DeskError::NotFound(id) => WireError::NotFound(id.clone()),
            DeskError::NotAllowed { id, state, action } => WireError::NotAllowed {
                id: id.clone(),
                state: (*state).into(),
                action: (*action).into(),
            },
            DeskError::AlreadyAcknowledged { id, by, at, state } => {
                WireError::AlreadyAcknowledged {
                    id: id.clone(),
                    by: by.clone(),
                    at: at.clone(),
                    state: (*state).into(),
                }
            }
            DeskError::Invalid(m) => WireError::Invalid(m.clone()),
            other => WireError::Unavailable(other.to_string()),
        }
    }
}

impl From<WireError> for DeskError {
    fn from(e: WireError) -> DeskError {
        const ACTIONS: &[&str] = &[
            "acknowledge",
            "dispatch",
            "escalate",
            "resolve",
            "add a note",
            "resolve as handled_by_phone (acknowledge first)",
            "resolve with this outcome (dispatch first)",
        ];
        match e {
            WireError::NotFound(id) => DeskError::NotFound(id),
            WireError::NotAllowed { id, state, action } => DeskError::NotAllowed {
                id,
                state: state_str(&state),
                action: known(&action, ACTIONS),
            },
            WireError::AlreadyAcknowledged { id, by, at, state } => {
                DeskError::AlreadyAcknowledged {
                    id,
                    by,
                    at,
                    state: state_str(&state),
                }
            }
            WireError::Invalid(m) => DeskError::Invalid(m),
            WireError::Unavailable(_) => DeskError::Closed,
        }
    }
}
