//! The recognizer, its backbones and temporal modules.

pub(crate) mod avx2;
pub mod backbone;
pub mod bn_fused;
pub mod conv_gemm;
pub mod cost;
pub mod depthwise;
pub mod flex_alloc;
pub mod i3d;
pub mod im2col;
pub mod layers;
pub mod pool2d;
pub mod probe;
pub mod recognizer;
pub mod temporal;
#[cfg(feature = "tch")]
pub mod torch_autograd;
#[cfg(feature = "tch")]
pub mod torch_layers;

pub use backbone::{Arch, InputSpec, ShiftPlace};
pub use probe::capture;
pub use recognizer::{ModelConfig, Recognizer};
pub use temporal::TemporalKind;
