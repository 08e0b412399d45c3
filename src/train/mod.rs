//! Training: the official optimisation recipe's pieces.

pub mod optim;
