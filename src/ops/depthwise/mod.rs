//! Depthwise convolution with SAME padding inside the op (EfficientNet-Lite's k×k
//! convolutions): one route, flex (`flex.rs`); elsewhere the caller pads and runs burn's
//! grouped convolution, the reference.

mod flex;

pub use flex::{Depthwise, DepthwiseConv, applies, forward};
