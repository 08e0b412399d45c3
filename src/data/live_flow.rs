//! Flow computed when a flow network reads a video (`predict`, `test` on a video list): the
//! sampled fields only, each from its two decoded frames, with the settings `data
//! extract-flow` stores them with — the same solver at the same frame size, quantised to the same grey
//! levels — so the network sees what it was trained on (less the JPEG round trip). A
//! network trained on motion vectors reads the video's own, as they are or accumulated.

use std::path::Path;

use anyhow::{Result, bail};
use image::GrayImage;
use rayon::prelude::*;

use crate::data::gop::FrameTypes;
use crate::data::video::{self, VideoInfo};
use crate::flow::accumulated;
use crate::flow::{Solver, grey, motion_vectors, to_images};

/// Where a video's motion comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Motion {
    /// Optical flow of the decoded frames.
    Flow(Solver),
    /// The motion vectors the video stores (`extract-flow --method motion-vectors`), each
    /// frame's own or accumulated back to its I-frame (`--accumulate`).
    Vectors { accumulate: bool },
}

/// How a video's flow is computed on demand.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveFlow {
    pub motion: Motion,
    /// Quantisation bound in pixels (denseflow's 20).
    pub bound: f32,
    /// Frames scaled to this short side before the flow (None: the video's size), as
    /// `extract-flow --short-side` was given.
    pub short_side: Option<u32>,
}

impl Default for LiveFlow {
    fn default() -> Self {
        Self { motion: Motion::Flow(Solver::default()), bound: 20.0, short_side: None }
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
        let solver = match &self.motion {
            Motion::Flow(solver) => solver,
            Motion::Vectors { accumulate } => return self.read_vectors(path, &wanted, *accumulate, indices),
        };
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
            wanted.par_iter().map(|&i| to_images(&solver.flow(at(i), at(i + 1)), self.bound)).collect();
        Ok(indices.iter().map(|i| computed[wanted.binary_search(i).expect("present")].clone()).collect())
    }

    /// The stored motion vectors of fields `wanted` (sorted, distinct) as `extract-flow
    /// --method motion-vectors` stores them: field i is frame i + 1's vectors; returned in
    /// the order of `indices`. The whole video is decoded (the accumulation needs every frame).
    fn read_vectors(
        &self,
        path: &Path,
        wanted: &[usize],
        accumulate: bool,
        indices: &[usize],
    ) -> Result<Vec<(GrayImage, GrayImage)>> {
        if self.short_side.is_some() {
            bail!("motion vectors are at the video's own size: --flow-short-side does not apply to them");
        }
        let mut found: Vec<Option<(GrayImage, GrayImage)>> = vec![None; wanted.len()];
        // Frame k's field is field k − 1.
        let mut k = 0usize;
        let frames = accumulated::read_fields(path, accumulate, &mut |flow| {
            if let Some(at) = k.checked_sub(1).and_then(|i| wanted.binary_search(&i).ok()) {
                found[at] = Some(to_images(&flow, self.bound));
            }
            k += 1;
            Ok(())
        })?
        .len();
        let fields: Vec<_> = found
            .into_iter()
            .zip(wanted)
            .map(|(f, i)| {
                f.ok_or_else(|| {
                    anyhow::anyhow!("video {}: motion field {i} asked, but it decoded {frames} frames", path.display())
                })
            })
            .collect::<Result<_>>()?;
        Ok(indices.iter().map(|i| fields[wanted.binary_search(i).expect("present")].clone()).collect())
    }

    /// The picture types of the video's frames, for GOP sampling (motion vectors only).
    pub fn frame_types(&self, path: &Path) -> Result<FrameTypes> {
        if !matches!(self.motion, Motion::Vectors { .. }) {
            bail!(
                "--sampling coviar on the video {}: it samples by the video's GOPs, for a network on \
                 motion vectors (--flow-method motion-vectors)",
                path.display()
            );
        }
        let mut types = FrameTypes::default();
        motion_vectors::read(path, &mut |_, vectors| {
            types.0.push(vectors.kind);
            Ok(())
        })?;
        Ok(types)
    }
}
