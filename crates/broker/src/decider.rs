//! Where the pipeline's rule decisions go: the alert desk on a single
//! node; a cluster's replicated decision log, in front of the one desk
//! that is active, on a cluster member.
use eldercare_alerts::AlertDesk;
use eldercare_rules::Decision;
use std::future::Future;
use std::pin::Pin;

/// The decision was not taken: the desk has stopped, or (in a cluster)
/// this member no longer owns the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the rule decision was not taken")]
pub struct NotTaken;

pub type Pending<'a> = Pin<Box<dyn Future<Output = Result<(), NotTaken>> + Send + 'a>>;

/// Takes the pipeline's decisions in order.
pub trait Decider: Send + Sync + 'static {
    /// One decision, from the message at log position `pos` (`None`: a
    /// live timer on a single node).
    fn decide(&self, d: Decision, pos: Option<u64>) -> Pending<'_>;
    /// Returns once every decision handed over before is kept: a
    /// checkpoint of the engine must not cover a decision not yet kept.
    fn sync(&self) -> Pending<'_>;
}

impl Decider for AlertDesk {
    fn decide(&self, d: Decision, pos: Option<u64>) -> Pending<'_> {
        Box::pin(async move { self.decide_from(d, pos).await.map_err(|_| NotTaken) })
    }

    fn sync(&self) -> Pending<'_> {
        Box::pin(async move { AlertDesk::sync(self).await.map_err(|_| NotTaken) })
    }
}
