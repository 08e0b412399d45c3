//! The data pipeline (so far: frame-index sampling).

pub mod sampling;
