//! The recognizer, its backbones and temporal modules.

pub mod backbone;
pub mod batch_norm;
pub mod cost;
pub mod i3d;
pub mod layers;
pub mod recognizer;
pub mod temporal;

pub use crate::probe::{self, capture};
pub use backbone::{Arch, InputSpec, ShiftPlace};
pub use recognizer::{ModelConfig, Recognizer};
pub use temporal::TemporalKind;
