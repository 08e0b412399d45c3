//! GSF's fusion of the shifted and residual parts (`model::temporal::gsf`) as one op: one route,
//! flex (`flex.rs`, forward and backward each one pass over the gated channels); elsewhere,
//! and with `GATESHIFT_FUSED_GSF=0`, the composition of burn ops in `gsf.rs`, the reference
//! it is tested against.

mod flex;

pub use flex::{Fuse, GsfFuse, applies, fuse};
