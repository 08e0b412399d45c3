//! gateshift: Gate-Shift Networks for video action recognition, on burn.
//!
//! The data path: list line → frame indices → frames → clip tensor `(batch, segments·3, H, W)`
//! → 2D backbone with a temporal module → per-frame logits → average consensus → scores.

pub mod assets;
pub mod backend;
pub mod checkpoint;
pub mod collective;
pub mod data;
pub mod export;
pub mod flow;
pub mod infer;
pub mod io;
pub mod limits;
pub mod model;
pub mod ops;
pub mod parity;
pub mod precision;
pub mod probe;
pub mod report;
pub mod stream;
pub mod synth;
pub mod train;
