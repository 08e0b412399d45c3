//! Videos or frame folders → flow folders: for each pair of consecutive frames t, t+1
//! (1-based t), `x_{t:05d}.jpg` and `y_{t:05d}.jpg`, the horizontal and vertical flow
//! quantised by denseflow's rule; N frames give N − 1 pairs, TSN's layout and count.
//!
//! Frames stream through in chunks (memory bounded for any video length); the pairs of a
//! chunk are computed in parallel. Folders are written through `prepare::extract`'s partial
//! folders, so a killed run leaves no half folder and a second run skips finished ones.

use std::path::Path;

use anyhow::{Context, Result, bail};
use image::{GrayImage, RgbImage};
use rayon::prelude::*;

use crate::data::gop::FrameTypes;
use crate::data::prepare::extract::{self, Job, Outcome};
use crate::data::{FrameNaming, rawframes, video};
use crate::flow::accumulated;
use crate::flow::{Plane, Solver, grey, to_images};

/// The names TSN gives the two components, first index 1.
pub const X_TEMPLATE: &str = "x_{:05d}.jpg";
pub const Y_TEMPLATE: &str = "y_{:05d}.jpg";

/// Where the motion comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// Dense TV-L1 optical flow of the decoded frames.
    Tvl1,
    /// Farnebäck's dense flow of the decoded frames (OpenCV's `calcOpticalFlowFarneback`).
    Farneback,
    /// The block motion vectors the compressed video stores (H.264, MPEG-4 part 2, H.263,
    /// MPEG-1/2; `libav` feature): no flow computed.
    MotionVectors,
}

/// How flow is computed and stored.
#[derive(Clone, Debug)]
pub struct FlowSettings {
    pub method: Method,
    /// The flow algorithm of `Tvl1` and `Farneback`.
    pub solver: Solver,
    /// Flow values are clipped to ±bound pixels before quantising (denseflow: 20).
    pub bound: f32,
    /// JPEG quality 1–100.
    pub quality: u8,
    /// Scale frames to this short side first (None: keep the size).
    pub short_side: Option<u32>,
    /// How the frames of a frame-folder input are named.
    pub frames: FrameNaming,
    /// Threads: videos and frame pairs share them.
    pub jobs: usize,
    /// Motion vectors: CoViAR's accumulated vectors (back to the GOP's I-frame), not each
    /// frame's own.
    pub accumulate: bool,
}

/// The naming of the x component, by which a finished folder is counted.
pub fn x_naming() -> FrameNaming {
    FrameNaming::new(X_TEMPLATE, 1).expect("a valid template")
}

/// Extracts every job (input: `job.video`, a video file or a frame folder) into `job.dir`.
/// The folders lie under `root`.
pub fn run(jobs: &[Job], s: &FlowSettings, root: &Path, done: &(dyn Fn() + Sync)) -> Result<Vec<Outcome>> {
    let naming = x_naming();
    let stamp = stamp(s);
    let folders = extract::Folders { root, naming: &naming, stamp: &stamp };
    extract::run_with(jobs, s.jobs, &folders, &|job, tmp| one(&job.video, tmp, s), done)
}

/// The settings that decide the fields, as the output's record holds them: a rerun with
/// other ones (another method, `--accumulate`, bound, size) does not take folders as done.
fn stamp(s: &FlowSettings) -> String {
    let how = match s.method {
        Method::MotionVectors => format!("motion-vectors accumulate={}", s.accumulate),
        _ => format!("{:?}", s.solver),
    };
    let side = s.short_side.map_or("none".into(), |s| s.to_string());
    format!("flow {how} bound={} short_side={side} quality={}", s.bound, s.quality)
}

/// Frames to hold before computing their pairs: enough to keep every thread busy.
fn chunk(s: &FlowSettings) -> usize {
    (2 * s.jobs).max(4)
}

/// Flow of one input into the folder `out`; returns the number of pairs.
pub fn one(input: &Path, out: &Path, s: &FlowSettings) -> Result<usize> {
    if s.method == Method::MotionVectors {
        return motion_vectors(input, out, s);
    }
    let mut pending: Vec<Plane> = Vec::new();
    let mut written = 0usize;
    let mut push = |_: usize, img: RgbImage| -> Result<()> {
        pending.push(grey(&img));
        if pending.len() > chunk(s) {
            written += pairs(&pending, written, out, s)?;
            pending.drain(..pending.len() - 1);
        }
        Ok(())
    };
    let frames = if std::fs::metadata(input).is_ok_and(|m| m.is_dir()) {
        for_each_folder_frame(input, s, &mut push)?
    } else {
        let info = video::probe(input, false)?;
        video::for_each_frame(input, &info, s.short_side, &mut push)?
    };
    if frames < 2 {
        bail!("{} has {frames} frame(s): flow needs at least two", input.display());
    }
    if pending.len() > 1 {
        written += pairs(&pending, written, out, s)?;
    }
    Ok(written)
}

/// The frames of a frame folder, scaled as a video's would be.
fn for_each_folder_frame(
    dir: &Path,
    s: &FlowSettings,
    f: &mut impl FnMut(usize, RgbImage) -> Result<()>,
) -> Result<usize> {
    let n = s.frames.count(dir)?;
    let mut size = None;
    for i in 0..n {
        let path = s.frames.path(dir, 0, i);
        let mut img = rawframes::read_rgb(&path)?;
        if *size.get_or_insert(img.dimensions()) != img.dimensions() {
            bail!(
                "{} is {}×{}, unlike the first frame of {}",
                path.display(),
                img.width(),
                img.height(),
                dir.display()
            );
        }
        if let Some(side) = s.short_side {
            let (w, h) = img.dimensions();
            let k = side as f64 / w.min(h) as f64;
            let size = |v: u32| ((v as f64 * k).round() as u32).max(1);
            img = image::imageops::resize(&img, size(w), size(h), image::imageops::FilterType::Triangle);
        }
        f(i, img)?;
    }
    Ok(n)
}

/// Computes the pairs of consecutive `frames` in parallel and writes them, numbered from
/// `first` + 1; returns how many.
fn pairs(frames: &[Plane], first: usize, out: &Path, s: &FlowSettings) -> Result<usize> {
    let (w, h) = (frames[0].w, frames[0].h);
    if w < 3 || h < 3 {
        bail!("frames of {w}×{h} are too small for flow (at least 3×3)");
    }
    let x = FrameNaming::new(X_TEMPLATE, 1)?;
    let y = FrameNaming::new(Y_TEMPLATE, 1)?;
    (0..frames.len() - 1).into_par_iter().try_for_each(|k| {
        let flow = s.solver.flow(&frames[k], &frames[k + 1]);
        let (fx, fy) = to_images(&flow, s.bound);
        write_jpeg(&fx, &x.path(out, 0, first + k), s.quality)?;
        write_jpeg(&fy, &y.path(out, 0, first + k), s.quality)
    })?;
    Ok(frames.len() - 1)
}

fn write_jpeg(img: &GrayImage, path: &Path, quality: u8) -> Result<()> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode_image(img)
        .context("encoding JPEG")?;
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// The stored motion vectors of a video as flow pairs: frame t + 1's vectors from frame t (or,
/// accumulated, its displacement since its GOP's I-frame) are pair t; intra-coded frames give
/// zero fields. The picture type of every frame goes to [`crate::data::gop::FILE`] for GOP sampling.
fn motion_vectors(input: &Path, out: &Path, s: &FlowSettings) -> Result<usize> {
    if std::fs::metadata(input).is_ok_and(|m| m.is_dir()) {
        bail!("{} is a frame folder: motion vectors come from a compressed video", input.display());
    }
    if s.short_side.is_some() {
        bail!("--short-side does not apply to motion vectors: they are at the video's own size");
    }
    let x = FrameNaming::new(X_TEMPLATE, 1)?;
    let y = FrameNaming::new(Y_TEMPLATE, 1)?;
    // Frame k's field (its vectors from frame k − 1) is pair k − 1; frame 0 has none to give.
    let mut k = 0usize;
    let kinds = accumulated::read_fields(input, s.accumulate, &mut |flow| {
        if k > 0 {
            let (fx, fy) = to_images(&flow, s.bound);
            write_jpeg(&fx, &x.path(out, 0, k - 1), s.quality)?;
            write_jpeg(&fy, &y.path(out, 0, k - 1), s.quality)?;
        }
        k += 1;
        Ok(())
    })?;
    let frames = kinds.len();
    if frames < 2 {
        bail!("{} has {frames} frame(s): motion needs at least two", input.display());
    }
    FrameTypes(kinds).write(out)?;
    Ok(frames - 1)
}
