//! BatchNorm's routes: libtorch's batch-norm kernels (`ops::torch`, `--features tch`) where
//! they apply, the fused training BN on flex (`flex.rs`: statistics in one pass, normalisation
//! and an optional ReLU / ReLU6 in another, hand-written backward), or the composition of
//! burn ops in `model::layers::BatchNorm` (the reference) — [`path`] says which.

pub mod flex;

use burn::tensor::Tensor;

pub use flex::{batch_stats, normalize};

/// Which route runs a BatchNorm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// libtorch's native batch norm, forward and backward ([`library_eval`], [`library_train`]).
    Library,
    /// The fused flex op ([`batch_stats`], [`normalize`]), float32 training only.
    Fused,
    /// burn ops, on every backend.
    Composed,
    /// Training with the global batch's statistics (`train --sync-bn`): burn ops around
    /// `ops::all_reduce::sum`, on every backend.
    Synced,
}

/// The route for `x`; `training`: batch statistics on an autodiff device.
pub fn path<const D: usize>(x: &Tensor<D>, training: bool) -> Path {
    if training && crate::ops::all_reduce::active() {
        return Path::Synced;
    }
    #[cfg(feature = "tch")]
    if crate::ops::torch::applies(x) {
        return Path::Library;
    }
    if training && flex::applies(x) { Path::Fused } else { Path::Composed }
}

/// BatchNorm with `stats` = (2, C) running mean and variance, on libtorch ([`Path::Library`]).
pub fn library_eval<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<1>,
    bias: Tensor<1>,
    stats: Tensor<2>,
    eps: f64,
) -> Tensor<D> {
    #[cfg(feature = "tch")]
    return crate::ops::torch::batch_norm_eval(x, weight, bias, stats, eps);
    #[cfg(not(feature = "tch"))]
    {
        let _ = (x, weight, bias, stats, eps);
        unreachable!("path() picks the library route only with --features tch")
    }
}

/// BatchNorm with batch statistics on libtorch ([`Path::Library`]); libtorch writes the
/// updated running statistics (PyTorch's rule) into `running`, (2, C).
pub fn library_train<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<1>,
    bias: Tensor<1>,
    running: Tensor<2>,
    momentum: f64,
    eps: f64,
) -> Tensor<D> {
    #[cfg(feature = "tch")]
    return crate::ops::torch::batch_norm_train(x, weight, bias, running, momentum, eps);
    #[cfg(not(feature = "tch"))]
    {
        let _ = (x, weight, bias, running, momentum, eps);
        unreachable!("path() picks the library route only with --features tch")
    }
}
