//! Reports: figures and tables written from runs and evaluations.

mod metrics;
pub mod plot;
pub mod render;

pub use metrics::{EpochMetrics, RunState};
