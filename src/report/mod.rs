//! Reports: figures and tables written from runs and evaluations.

pub mod plot;
