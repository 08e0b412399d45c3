//! Videos → frame folders, `jobs` at a time, resumable.
//!
//! A video is decoded into a hidden sibling `.NAME.partial.PID` and renamed to `NAME` only
//! when every frame is written, so a folder named `NAME` is always complete: a second run
//! skips it, a run killed mid-video leaves only a partial folder, which the next run
//! removes (its process no longer runs) and redoes. Two runs on one output decode into
//! their own partial folders; the first rename wins and the other keeps it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rayon::prelude::*;

use crate::data::{FrameNaming, video};

/// One video to decode into `dir`.
#[derive(Clone, Debug)]
pub struct Job {
    pub origin: String,
    pub video: PathBuf,
    pub dir: PathBuf,
}

/// How frames are written.
#[derive(Clone, Debug)]
pub struct Settings {
    pub naming: FrameNaming,
    /// Scale to this short side (None: keep the size).
    pub short_side: Option<u32>,
    /// JPEG quality 1–100.
    pub quality: u8,
    /// Videos decoded at once.
    pub jobs: usize,
}

/// What became of one job.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Decoded now: frame count.
    Extracted(usize),
    /// Already complete from an earlier run: frame count.
    Skipped(usize),
    Failed(String),
}

impl Outcome {
    pub fn frames(&self) -> Option<usize> {
        match self {
            Outcome::Extracted(n) | Outcome::Skipped(n) => Some(*n),
            Outcome::Failed(_) => None,
        }
    }
}

/// What fills one job's folder: writes into the partial folder it is given and returns the
/// number of frames written.
pub type Produce<'a> = dyn Fn(&Job, &Path) -> Result<usize> + Sync + 'a;

/// Runs every job, `settings.jobs` in parallel; `done` is called after each. Outcomes come
/// back in job order; one video's failure does not stop the others.
pub fn run(jobs: &[Job], settings: &Settings, done: &(dyn Fn() + Sync)) -> Result<Vec<Outcome>> {
    run_with(jobs, settings.jobs, &settings.naming, &|job, tmp| decode(job, settings, tmp), done)
}

/// Runs `produce` for every job whose folder is not yet complete, on `threads` threads
/// (shared with whatever `produce` runs in parallel itself); a complete folder is one
/// holding frames named by `naming`.
pub fn run_with(
    jobs: &[Job],
    threads: usize,
    naming: &FrameNaming,
    produce: &Produce,
    done: &(dyn Fn() + Sync),
) -> Result<Vec<Outcome>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("extract-{i}"))
        .build()
        .context("starting the extraction threads")?;
    Ok(pool.install(|| {
        jobs.par_iter()
            .with_max_len(1)
            .map(|job| {
                let outcome =
                    one(job, naming, produce).unwrap_or_else(|e| Outcome::Failed(format!("{}: {e:#}", job.origin)));
                done();
                outcome
            })
            .collect()
    }))
}

/// The partial folder of `dir` for process `pid`.
fn partial(dir: &Path, pid: u32) -> PathBuf {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    dir.with_file_name(format!(".{name}.partial.{pid}"))
}

/// Removes partial folders of `dir` left by processes that no longer run.
fn remove_stale_partials(dir: &Path) {
    let name = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let prefix = format!(".{name}.partial.");
    let Some(parent) = dir.parent() else { return };
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let owner = e.file_name().to_str().and_then(|n| n.strip_prefix(&prefix)?.parse::<i32>().ok());
        if let Some(pid) = owner
            && !crate::io::process_alive(pid)
            && e.file_type().is_ok_and(|t| t.is_dir())
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn one(job: &Job, naming: &FrameNaming, produce: &Produce) -> Result<Outcome> {
    remove_stale_partials(&job.dir);
    if let Ok(meta) = std::fs::symlink_metadata(&job.dir) {
        if !meta.is_dir() {
            bail!("{} exists and is not a frame folder", job.dir.display());
        }
        return Ok(Outcome::Skipped(complete(&job.dir, naming)?));
    }
    let parent = job.dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = partial(&job.dir, std::process::id());
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let decoded = produce(job, &tmp);
    let n = match decoded {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    match std::fs::rename(&tmp, &job.dir) {
        Ok(()) => Ok(Outcome::Extracted(n)),
        // Another run finished this video first: keep its folder.
        Err(_) if job.dir.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(Outcome::Skipped(complete(&job.dir, naming)?))
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e).with_context(|| format!("renaming {} to {}", tmp.display(), job.dir.display()))
        }
    }
}

/// Frames of a finished folder (contiguous from the first index, at least one).
fn complete(dir: &Path, naming: &FrameNaming) -> Result<usize> {
    match naming.count(dir)? {
        0 => bail!(
            "{} exists but holds no frame named like {}",
            dir.display(),
            naming.template.format(naming.first_index)
        ),
        n => Ok(n),
    }
}

fn decode(job: &Job, s: &Settings, tmp: &Path) -> Result<usize> {
    let info = video::probe(&job.video, false)?;
    video::for_each_frame(&job.video, &info, s.short_side, |i, img| {
        let path = s.naming.path(tmp, 0, i);
        std::fs::write(&path, crate::synth::encode_jpeg(&img, s.quality)?)
            .with_context(|| format!("writing {}", path.display()))
    })
}
