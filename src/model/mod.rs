//! The recognizer, its backbones and temporal modules.

pub mod backbone;
pub mod batch_norm;
pub mod config;
pub mod cost;
pub mod dropout;
pub mod i3d;
pub mod layers;
pub mod modality;
pub mod recognizer;
pub mod temporal;

pub use crate::probe::{self, capture};
pub use backbone::{Arch, InputSpec, ShiftPlace};
pub use config::ModelConfig;
pub use modality::Modality;
pub use recognizer::Recognizer;
pub use temporal::TemporalKind;
