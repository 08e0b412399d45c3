//! The sum of a temporal kernel's three taps over neighbouring frames, `y[t] = Z₀[t−1] + Z₁[t]
//! + Z₂[t+1]` (zero outside the clip), as one op: (2+1)D and GST compute their temporal
//! convolutions as one 2D convolution whose outputs are the taps stacked, then this. One
//! route, flex (`flex.rs`); elsewhere the narrow / shift / add composition in the callers.

mod flex;

pub use flex::{TapSum, applies, tap_sum};
