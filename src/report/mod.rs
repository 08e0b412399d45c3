//! Reports: figures and tables written from runs and evaluations.

mod metrics;
pub mod plot;

pub use metrics::{EpochMetrics, RunState};
