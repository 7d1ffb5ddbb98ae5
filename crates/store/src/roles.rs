//! The store's interface, by role. A component that uses one role takes
//! only that one ([`Registry`], [`Telemetry`], [`AlertLog`] or
//! [`DeadLetters`]), so a test can hand it a small fake of that role
//! alone. [`Store`] is all four: for the server that wires the
//! components, and for what uses several roles (the spool in front of a
//! backend, the rule pipeline, the telemetry writer, the operator API's
//! registry and telemetry services).
//!
//! Every backend implements the four roles, and so is a [`Store`]: the
//! blanket impl below makes any type with the four one, and an
//! `Arc<dyn Store>` upcasts to an `Arc<dyn AlertLog>` (or any other role)
//! where a component needs only that.
mod alert_log;
mod dead_letters;
mod registry;
mod telemetry;

pub use alert_log::AlertLog;
pub use dead_letters::DeadLetters;
pub use registry::Registry;
pub use telemetry::Telemetry;

/// The whole store: the registry, telemetry, the alert log and the
/// dead letters, of one database.
pub trait Store: Registry + Telemetry + AlertLog + DeadLetters {}

impl<T: Registry + Telemetry + AlertLog + DeadLetters + ?Sized> Store for T {}
