//! Reports: figures and tables written from runs and evaluations.

pub mod events;
pub mod gate_maps;
mod metrics;
pub mod plot;
pub mod progress;
pub mod render;
pub mod routing;

pub use metrics::{EpochMetrics, Record, RunState, StepMetrics};
