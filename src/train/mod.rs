//! Training: the official optimisation recipe, the training loop, evaluation.

pub mod config;
pub mod evaluate;
pub mod flat_step;
pub mod guard;
pub mod metrics;
pub mod optim;
pub mod precision;
pub mod run_checkpoint;
pub mod run_dir;
pub mod run_state;
pub mod schedule;
pub mod sgd;
pub mod trainer;
