//! Flow computed when a flow network reads a video (`predict`, `test` on a video list): the
//! sampled fields only, each from its two decoded frames, with the settings `data
//! extract-flow` stores them with — the same solver at the same frame size, quantised to the same grey
//! levels — so the network sees what it was trained on (less the JPEG round trip).

use std::path::Path;

use anyhow::{Result, bail};
use image::GrayImage;
use rayon::prelude::*;

use crate::data::video::{self, VideoInfo};
use crate::flow::{Solver, grey, to_images};

/// How a video's flow is computed on demand.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveFlow {
    pub solver: Solver,
    /// Quantisation bound in pixels (denseflow's 20).
    pub bound: f32,
    /// Frames scaled to this short side before the flow (None: the video's size), as
    /// `extract-flow --short-side` was given.
    pub short_side: Option<u32>,
}

impl Default for LiveFlow {
    fn default() -> Self {
        Self { solver: Solver::default(), bound: 20.0, short_side: None }
    }
}

/// Fields in a video of `frames` frames: one per consecutive pair.
pub fn fields(frames: usize) -> usize {
    frames.saturating_sub(1)
}

impl LiveFlow {
    /// Flow fields `indices` (field i: frame i → i + 1; any order, repeats allowed) of the
    /// video at `path`, as the grey x and y images `extract-flow` stores, in the order asked.
    pub fn read(&self, path: &Path, info: &VideoInfo, indices: &[usize]) -> Result<Vec<(GrayImage, GrayImage)>> {
        let mut wanted: Vec<usize> = indices.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        if let Some(&last) = wanted.last()
            && last >= fields(info.frames)
        {
            bail!("video {}: flow field {last} asked, but it has {} frames", path.display(), info.frames);
        }
        let mut frames: Vec<usize> = wanted.iter().flat_map(|&i| [i, i + 1]).collect();
        frames.dedup();
        let decoded = video::read_frames(path, info, &frames, self.short_side)?;
        let planes: Vec<_> = decoded.iter().map(grey).collect();
        let at = |f: usize| &planes[frames.binary_search(&f).expect("decoded")];
        let computed: Vec<(GrayImage, GrayImage)> =
            wanted.par_iter().map(|&i| to_images(&self.solver.flow(at(i), at(i + 1)), self.bound)).collect();
        Ok(indices.iter().map(|i| computed[wanted.binary_search(i).expect("present")].clone()).collect())
    }
}
