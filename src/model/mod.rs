//! The recognizer, its backbones and temporal modules.

pub mod backbone;
pub mod cost;
pub mod i3d;
pub mod layers;
pub mod probe;
pub mod recognizer;
pub mod temporal;

pub use backbone::{Arch, InputSpec, ShiftPlace};
pub use probe::capture;
pub use recognizer::{ModelConfig, Recognizer};
pub use temporal::TemporalKind;
