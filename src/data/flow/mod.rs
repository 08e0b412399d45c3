//! The flow stream's data: `extract.rs` stores TV-L1 flow (`crate::flow`) of videos and
//! frame folders as TSN's `x_{:05d}.jpg` / `y_{:05d}.jpg` pairs; `motion_vectors.rs` the block
//! vectors compressed video already holds (`--features libav`), as the same pairs.

pub mod extract;
pub mod motion_vectors;
