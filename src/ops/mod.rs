//! The hand-written kernels the model calls for its fast paths: one folder per op, its API and
//! routing in `mod.rs`, one file per backend route (`flex.rs` / `gemm.rs`: burn's pure-Rust CPU
//! backend with the op's autodiff registration; `tch.rs`, `cuda.rs`, `cube.rs`: libtorch,
//! CUDA and CubeCL). Each op has a reference composition of burn ops (in the model layer that
//! calls it) that every route is tested against. Which route runs is decided here, from the
//! tensor's device and dtype and the switches of [`route`], never in `model/`.

pub mod all_reduce;
pub mod autodiff;
pub(crate) mod avx2;
pub mod batch_norm;
pub mod conv;
pub mod depthwise;
pub mod flex_alloc;
pub mod gate_shift;
pub mod gsf_fuse;
pub mod motion_filter;
pub mod pool;
pub mod profile;
pub mod route;
pub mod tap_sum;
pub mod time_shift;
#[cfg(feature = "tch")]
pub mod torch;

use burn::tensor::Tensor;
use burn::tensor::activation::relu;

/// `clamp(x, 0, max)`: ReLU with ∞ (burn's own ReLU), ReLU6 with 6.
pub fn clamp<const D: usize>(x: Tensor<D>, max: f32) -> Tensor<D> {
    if max == f32::INFINITY { relu(x) } else { x.clamp(0.0, max) }
}
