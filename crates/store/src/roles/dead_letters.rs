use crate::Result;
use async_trait::async_trait;
use eldercare_model::DeadLetter;

/// The bounded dead-letter store: messages refused at intake, and
/// readings the database refused, kept for an operator to look at.
#[async_trait]
pub trait DeadLetters: Send + Sync + 'static {
    /// Keeps a refused message; the store holds the newest
    /// [`DEAD_LETTER_CAPACITY`](crate::DEAD_LETTER_CAPACITY).
    async fn insert_dead_letter(&self, dl: &DeadLetter) -> Result<()>;
    /// Newest first.
    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>>;
}
