//! `gateshift data extract-flow`: TV-L1 optical flow of videos or frame folders, stored as
//! TSN's `x_{:05d}.jpg` / `y_{:05d}.jpg` pairs (denseflow's ±bound quantisation), with the
//! flow list; parallel and resumable (finished folders are kept, half ones redone).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;
use gateshift::data::flow::extract::{self, FlowSettings, Method};
use gateshift::data::list::{List, ListFormat, VIDEO_EXTENSIONS};
use gateshift::data::prepare::extract::{Job, Outcome};
use gateshift::flow::{Solver, TvL1};
use gateshift::io::write_atomic;

use super::{FrameArgs, float_where};

fn positive(f: f64) -> bool {
    f > 0.0 && f.is_finite()
}

#[derive(Args, Debug)]
pub struct ExtractFlowArgs {
    /// A video file, a frame folder, or a list of either (`<video> <label>` or
    /// `<folder> <frames> <label>`).
    pub input: PathBuf,
    /// Folder for the flow folders (one per input, named as `extract-frames` names them).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// How the frames of frame-folder inputs are named.
    #[command(flatten)]
    pub frames: FrameArgs,
    /// tvl1: TV-L1 optical flow of the decoded frames (TSN's, TSM's); farneback: Farnebäck's
    /// (about 100× faster, coarser); motion-vectors: the block vectors the video stores
    /// (H.264, MPEG-4 part 2, H.263, MPEG-1/2; a build with the `libav` feature).
    #[arg(long, value_enum, default_value = "tvl1")]
    pub method: Method,
    /// motion-vectors: CoViAR's accumulated vectors, each frame's displacement traced back to
    /// its GOP's I-frame (zero at I-frames), rather than each frame's own vectors.
    #[arg(long)]
    pub accumulate: bool,
    /// Flow is clipped to ±BOUND pixels and mapped to 0–255 (denseflow: 20).
    #[arg(long, default_value_t = 20.0, value_parser = float_where(positive, "positive"))]
    pub bound: f64,
    #[command(flatten)]
    pub jpeg: super::JpegArgs,
    /// Threads (default: every core); inputs and frame pairs share them.
    #[arg(long, value_parser = super::count_up_to(gateshift::limits::MAX_WORKERS))]
    pub jobs: Option<usize>,
    /// Write the flow list here (default: OUT/list.txt): `<folder> <pairs> <label>`.
    #[arg(long)]
    pub out_list: Option<PathBuf>,
    #[command(flatten)]
    pub tvl1: Tvl1Args,
    #[command(flatten)]
    pub farneback: FarnebackArgs,
}

/// Farnebäck's parameters; the defaults are those OpenCV's tutorials pass.
#[derive(Args, Debug)]
pub struct FarnebackArgs {
    /// Farneback: size ratio between pyramid levels.
    #[arg(long, default_value_t = 0.5, value_parser = float_where(|f| f > 0.0 && f < 1.0, "in (0, 1)"))]
    pub pyr_scale: f64,
    /// Farneback: pyramid levels above the image (0: the image alone, as OpenCV's; levels
    /// under 32 pixels are skipped).
    #[arg(long, default_value_t = 3, value_parser = levels)]
    pub levels: usize,
    /// Farneback: side of the averaging window (odd).
    #[arg(long, default_value_t = 15, value_parser = odd_side)]
    pub winsize: usize,
    /// Farneback: displacement updates per level.
    #[arg(long, default_value_t = 3, value_parser = super::count_up_to(100))]
    pub iterations: usize,
    /// Farneback: half-side of the polynomial expansion's neighbourhood.
    #[arg(long, default_value_t = 5, value_parser = super::count_up_to(20))]
    pub poly_n: usize,
    /// Farneback: standard deviation of the expansion's Gaussian applicability.
    #[arg(long, default_value_t = 1.2, value_parser = float_where(|f| f > 0.0 && f.is_finite(), "positive"))]
    pub poly_sigma: f64,
}

/// Pyramid levels above the image: 0 to 20.
fn levels(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n <= 20 => Ok(n),
        _ => Err(format!("{s:?} is not a number of levels from 0 to 20")),
    }
}

/// An odd window side from 1 to 101.
fn odd_side(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n % 2 == 1 && n <= 101 => Ok(n),
        _ => Err(format!("{s:?} is not an odd number from 1 to 101")),
    }
}

impl FarnebackArgs {
    fn solver(&self) -> gateshift::flow::Farneback {
        gateshift::flow::Farneback {
            pyr_scale: self.pyr_scale,
            levels: self.levels,
            winsize: self.winsize,
            iterations: self.iterations,
            poly_n: self.poly_n,
            poly_sigma: self.poly_sigma,
        }
    }
}

/// TV-L1's parameters; the defaults are OpenCV's, with which TSN's and TSM's flow was made.
#[derive(Args, Debug)]
pub struct Tvl1Args {
    /// Weight of the data term (smaller: smoother flow).
    #[arg(long, default_value_t = 0.15, value_parser = float_where(positive, "positive"))]
    pub lambda: f64,
    /// Time step of the dual update (converges for ≤ 0.25).
    #[arg(long, default_value_t = 0.25, value_parser = float_where(|f| f > 0.0 && f <= 0.25, "in (0, 0.25]"))]
    pub tau: f64,
    /// Coupling of the two TV-L1 variables.
    #[arg(long, default_value_t = 0.3, value_parser = float_where(positive, "positive"))]
    pub theta: f64,
    /// Pyramid levels.
    #[arg(long, default_value_t = 5, value_parser = super::count_up_to(20))]
    pub scales: usize,
    /// Relinearisations per level.
    #[arg(long, default_value_t = 5, value_parser = super::count_up_to(100))]
    pub warps: usize,
    /// Stop iterating when the RMS change of the flow falls below this.
    #[arg(long, default_value_t = 0.01, value_parser = float_where(|f| f >= 0.0 && f.is_finite(), "zero or positive"))]
    pub epsilon: f64,
    /// Iterations between median filterings, and how many such rounds at most.
    #[arg(long, default_value_t = 30, value_parser = super::count_up_to(10_000))]
    pub inner_iterations: usize,
    #[arg(long, default_value_t = 10, value_parser = super::count_up_to(10_000))]
    pub outer_iterations: usize,
    /// No 5×5 median filter of the flow between rounds.
    #[arg(long)]
    pub no_median: bool,
}

impl Tvl1Args {
    fn solver(&self) -> TvL1 {
        TvL1 {
            tau: self.tau,
            lambda: self.lambda,
            theta: self.theta,
            scales: self.scales,
            warps: self.warps,
            epsilon: self.epsilon,
            inner_iterations: self.inner_iterations,
            outer_iterations: self.outer_iterations,
            median: !self.no_median,
            ..TvL1::default()
        }
    }
}

pub fn run(a: ExtractFlowArgs) -> Result<()> {
    let out_list = a.out_list.clone().unwrap_or_else(|| a.out.join("list.txt"));
    gateshift::io::check_output(&out_list)?;
    if a.accumulate && a.method != Method::MotionVectors {
        bail!("--accumulate traces stored motion vectors back to the I-frame: it needs --method motion-vectors");
    }
    let (jobs, labels) = jobs(&a)?;
    let settings = FlowSettings {
        method: a.method,
        solver: match a.method {
            Method::Farneback => Solver::Farneback(a.farneback.solver()),
            _ => Solver::TvL1(a.tvl1.solver()),
        },
        bound: a.bound as f32,
        quality: a.jpeg.quality,
        short_side: a.jpeg.short_side,
        frames: a.frames.naming()?,
        jobs: a.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        accumulate: a.accumulate,
    };
    let what = match a.method {
        Method::Tvl1 => "TV-L1 flow",
        Method::Farneback => "Farneback flow",
        Method::MotionVectors if a.accumulate => "accumulated motion vectors (CoViAR)",
        Method::MotionVectors => "stored motion vectors",
    };
    say!("extract-flow: {what} of {} input(s) into {} on {} thread(s)", jobs.len(), a.out.display(), settings.jobs)?;
    let bar = gateshift::report::progress::progress_bar(true, jobs.len() as u64, "flow");
    let outcomes = extract::run(&jobs, &settings, &a.out, &|| bar.inc(1))?;
    bar.finish_and_clear();
    let (mut lines, mut failed, mut skipped) = (Vec::new(), Vec::new(), 0);
    for ((job, label), outcome) in jobs.iter().zip(&labels).zip(&outcomes) {
        match outcome {
            Outcome::Failed(why) => failed.push(why.clone()),
            Outcome::Skipped(n) | Outcome::Extracted(n) => {
                skipped += matches!(outcome, Outcome::Skipped(_)) as usize;
                let name = job.dir.strip_prefix(&a.out).unwrap_or(&job.dir).display().to_string();
                lines.push(format!("{name} {n} {label}"));
            }
        }
    }
    if !lines.is_empty() {
        write_atomic(&out_list, (lines.join("\n") + "\n").as_bytes())?;
    }
    let kept = if skipped > 0 { format!(" ({skipped} already there from an earlier run)") } else { String::new() };
    say!("flow of {} input(s) in {}{kept}; list {}", lines.len(), a.out.display(), out_list.display())?;
    if jobs.len() == 1 && failed.len() == 1 {
        bail!("{}", failed[0]);
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} input(s) failed, first: {}; the others are done and kept: fix these and run again",
            failed.len(),
            jobs.len(),
            failed[0]
        );
    }
    Ok(())
}

/// One job per input, and its label (0 for a single input).
fn jobs(a: &ExtractFlowArgs) -> Result<(Vec<Job>, Vec<usize>)> {
    let ext = a.input.extension().and_then(|e| e.to_str()).unwrap_or("");
    let single = std::fs::metadata(&a.input).is_ok_and(|m| m.is_dir()) || VIDEO_EXTENSIONS.contains(&ext);
    if single {
        let name = super::frame_folder_name(&a.input, a.input.parent().unwrap_or(Path::new("")));
        let job = Job { origin: a.input.display().to_string(), video: a.input.clone(), dir: a.out.join(name) };
        return Ok((vec![job], vec![0]));
    }
    let root = super::root_of(&a.input, a.root.as_deref());
    let list = List::read(&a.input, Some(&root), ListFormat::Auto, None)?;
    let mut taken = std::collections::HashMap::new();
    let (mut jobs, mut labels) = (Vec::new(), Vec::new());
    for e in &list.entries {
        let name = super::frame_folder_name(&e.path, &root);
        let origin = e.origin(&list.file);
        if let Some(first) = taken.insert(name.clone(), origin.clone()) {
            bail!("{first} and {origin} would both write {}", a.out.join(&name).display());
        }
        jobs.push(Job { origin, video: e.path.clone(), dir: a.out.join(name) });
        labels.push(e.label);
    }
    Ok((jobs, labels))
}
