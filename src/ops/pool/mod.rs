//! 2D max and average pooling: `max` / `avg` run burn's `MaxPool2d` / `AvgPool2d` modules
//! through the separable flex kernels where they take the input (`flex.rs`), through burn's
//! own pooling (the reference) elsewhere; the size-keeping stride-1 pools in whole-plane passes
//! (`flat.rs`).

mod flat;
mod flex;
mod window;

pub use flex::{FastPool, PoolKernels, avg, max};
pub use window::{Reduce, Window};
