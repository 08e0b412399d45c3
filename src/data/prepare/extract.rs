//! Videos → frame folders, `jobs` at a time, resumable.
//!
//! A video is decoded into a hidden sibling `.NAME.partial.PID` and renamed to `NAME` only
//! when every frame is written, so a folder named `NAME` is always complete: a second run
//! skips it, a run killed mid-video leaves only a partial folder, which the next run
//! removes (its process no longer runs) and redoes. Two runs on one output decode into
//! their own partial folders; the first rename wins and the other keeps it. The output
//! folder records the settings its folders are made with ([`STAMP`]); a run with other
//! settings is refused before it starts rather than taking folders made otherwise as done.

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

/// The hidden file in an output folder naming the settings its folders were made with.
pub const STAMP: &str = ".gateshift-extract";

/// What a finished folder holds: files named by `naming`, made with the settings `stamp`
/// describes; all of them lie under `root`.
pub struct Folders<'a> {
    pub root: &'a Path,
    pub naming: &'a FrameNaming,
    pub stamp: &'a str,
}

/// What fills one job's folder: writes into the partial folder it is given and returns the
/// number of frames written.
pub type Produce<'a> = dyn Fn(&Job, &Path) -> Result<usize> + Sync + 'a;

/// Runs every job, `settings.jobs` in parallel; `done` is called after each. Outcomes come
/// back in job order; one video's failure does not stop the others.
/// The folders lie under `root`.
pub fn run(jobs: &[Job], settings: &Settings, root: &Path, done: &(dyn Fn() + Sync)) -> Result<Vec<Outcome>> {
    let stamp = format!(
        "frames {} short_side={} quality={}",
        settings.naming.template.format(settings.naming.first_index),
        settings.short_side.map_or("none".into(), |s| s.to_string()),
        settings.quality
    );
    let folders = Folders { root, naming: &settings.naming, stamp: &stamp };
    run_with(jobs, settings.jobs, &folders, &|job, tmp| decode(job, settings, tmp), done)
}

/// Runs `produce` for every job whose folder is not yet complete, on `threads` threads
/// (shared with whatever `produce` runs in parallel itself); a complete folder is one
/// holding files named by `folders.naming`. Refused if `folders.root` was filled with
/// other settings.
pub fn run_with(
    jobs: &[Job],
    threads: usize,
    folders: &Folders,
    produce: &Produce,
    done: &(dyn Fn() + Sync),
) -> Result<Vec<Outcome>> {
    claim(folders.root, folders.stamp)?;
    let naming = folders.naming;
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

/// Records in `root` that its folders are made with the settings `stamp`, or checks that an
/// earlier run recorded the same. The record is created whole or not at all (a hard link of
/// a finished file), so of two runs starting at once one records and the other compares.
/// An output from before records were kept is taken as it is.
fn claim(root: &Path, stamp: &str) -> Result<()> {
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let path = root.join(STAMP);
    if !path.exists() {
        let tmp = root.join(format!("{STAMP}.{}", std::process::id()));
        std::fs::write(&tmp, format!("{stamp}\n")).with_context(|| format!("writing {}", tmp.display()))?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => return Ok(()),
            // A file system without hard links: created in place.
            Err(_) if !path.exists() => {
                return std::fs::write(&path, format!("{stamp}\n"))
                    .with_context(|| format!("writing {}", path.display()));
            }
            Err(_) => {}
        }
    }
    let bytes = crate::io::read_regular(&path, "settings record")?;
    let recorded = String::from_utf8_lossy(&bytes);
    if recorded.trim_end() != stamp {
        bail!(
            "{} holds folders made with other settings ({}) than this run's ({stamp}): write to \
             another output folder, or remove it to redo them",
            root.display(),
            recorded.trim_end()
        );
    }
    Ok(())
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
