//! The flow stream's stored data: `extract.rs` writes the motion of videos and frame folders
//! (`crate::flow`: TV-L1 or Farnebäck flow, or the stored motion vectors, as they are or
//! accumulated) as TSN's `x_{:05d}.jpg` / `y_{:05d}.jpg` pairs.

pub mod extract;
