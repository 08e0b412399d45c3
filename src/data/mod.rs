//! The video data pipeline: list files, frame sources (rawframes, video files), sampling,
//! group transforms and the parallel loader.

pub mod dataset;
pub mod ffmpeg;
pub mod flow;
pub mod gop;
pub mod list;
pub mod live_flow;
pub mod loader;
pub mod prepare;
pub mod rawframes;
pub mod sampling;
pub mod transform;
pub mod video;

pub use dataset::{Clip, ClipDataset, FrameOrder, Mode, Pipeline, Sampling};
pub use list::{Entry, List, ListFormat};
pub use loader::{Batch, Loader};
pub use rawframes::FrameNaming;
