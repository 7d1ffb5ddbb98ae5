//! One module per rule: what it watches, when it raises, how it clears.
//! The engine (`crate::engine`) routes readings and ticks to them.

pub(crate) mod battery;
pub(crate) mod check_in;
pub(crate) mod fall;
pub(crate) mod geofence;
pub(crate) mod inactivity;
pub(crate) mod news2;
pub(crate) mod no_breathing;
pub(crate) mod offline;
pub(crate) mod out_of_bed;
pub(crate) mod sos;
pub(crate) mod trend;
pub(crate) mod visit;
pub(crate) mod vital;
