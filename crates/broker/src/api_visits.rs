//! Carers' check-ins sent by a provider's system through the API rather
//! than read at the home: written to the intake log like a device's
//! message (so an acknowledged check-in survives a crash), on a topic of
//! their own that no device can publish to (the guard lets a device
//! publish only under `eldercare/v1/{its id}/`), and handed by the
//! pipeline to the rule engine.
use bytes::Bytes;
use eldercare_intake::{Appender, Closed, Lane};
use eldercare_model::{EpochMs, VisitAction};
use serde::{Deserialize, Serialize};

/// The intake topic of API check-ins: the prefix, then the elder's id.
pub const TOPIC_PREFIX: &str = "eldercare/api/visit/";

/// What the log keeps of one API check-in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiCheck {
    pub carer: String,
    pub action: VisitAction,
    pub ts: EpochMs,
}

/// Appends API check-ins to the intake log; cheap to clone.
#[derive(Clone)]
pub struct VisitIntake(Appender);

impl VisitIntake {
    pub(crate) fn new(a: Appender) -> VisitIntake {
        VisitIntake(a)
    }

    /// Resolves once the check-in is durable in the intake log.
    pub async fn append(&self, elder_id: &str, check: &ApiCheck) -> Result<(), Closed> {
        let payload = serde_json::to_vec(check).map_err(|_| Closed)?;
        let durable = self
            .0
            .append(
                Lane::Routine,
                // A cluster's log is partitioned by elder: the check-in
                // goes to the partition judging the elder's home.
                Some(elder_id.into()),
                format!("{TOPIC_PREFIX}{elder_id}"),
                Bytes::from(payload),
            )
            .await?;
        durable.await
    }
}

/// The elder and check-in of an intake record written by
/// [`VisitIntake::append`]; `None` for any other topic.
pub fn decode(topic: &str, payload: &[u8]) -> Option<Result<(String, ApiCheck), String>> {
    let elder = topic.strip_prefix(TOPIC_PREFIX)?;
    Some(
        serde_json::from_slice::<ApiCheck>(payload)
            .map(|c| (elder.to_string(), c))
            .map_err(|e| e.to_string()),
    )
}
