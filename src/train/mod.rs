//! Training: the official optimisation recipe and the training loop; validation runs through
//! `infer`.

pub mod config;
pub mod devices;
pub mod flat_step;
pub mod guard;
pub mod log;
pub mod optim;
pub mod partial_bn;
pub mod run_checkpoint;
pub mod run_dir;
pub mod schedule;
pub mod seeds;
pub mod sgd;
pub mod trainer;
pub mod world;
pub mod world_local;
#[cfg(feature = "mpi")]
mod world_mpi;

/// Accuracy metrics live with evaluation (`infer::metrics`); their old path stays.
pub use crate::infer::metrics;
/// `precision` lives at the crate root (inference uses it too); its old path stays.
pub use crate::precision;
