//! Writing what `data prepare` read: frame folders (with `--extract`), one list per split,
//! class names, `skipped.txt` (missing and undecodable samples, with reasons) and
//! `data.toml`, a `gateshift train --config` file with the `[data]` section filled in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use serde::Serialize;

use super::extract::{self, Job, Outcome, Settings};
use super::{Annotations, Sample, Source, flip_pairs, flip_swap_string};
use crate::data::FrameNaming;
use crate::io::write_atomic;

/// Where the output goes and how videos become frames.
pub struct Options {
    pub data: PathBuf,
    pub out: PathBuf,
    /// Decode the videos into `OUT/frames/` with these settings.
    pub extract: Option<Settings>,
    /// Threads for counting frame folders.
    pub jobs: usize,
}

/// What was written.
#[derive(Debug, Default)]
pub struct Summary {
    /// (split, list file, entries).
    pub lists: Vec<(String, PathBuf, usize)>,
    pub classes: usize,
    pub nouns: usize,
    pub flip_swap: String,
    pub missing: usize,
    /// Samples whose video did not decode or whose frames do not fit: "origin: why".
    pub failed: Vec<String>,
    pub extracted: usize,
    pub skipped: usize,
    pub config: PathBuf,
}

/// Output file names under OUT.
pub const FILES: &[&str] = &["train.txt", "val.txt", "classes.txt", "nouns.txt", "skipped.txt", "data.toml"];

/// Extracts (if asked), counts frames and writes everything under `opts.out`.
pub fn write(ann: &Annotations, opts: &Options, tick: &(dyn Fn() + Sync)) -> Result<Summary> {
    for f in FILES {
        crate::io::check_output(&opts.out.join(f))?;
    }
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let mut summary = Summary {
        classes: ann.classes.len(),
        nouns: ann.nouns.len(),
        missing: ann.missing.len(),
        ..Default::default()
    };
    let (root, naming, frames) = pixels(ann, opts, &mut summary, tick)?;
    let mut counts = BTreeMap::new();
    if let Some(naming) = &naming {
        counts = count_frames(ann, &frames, &root, naming, opts.jobs)?;
    }
    let write_text = |name: &str, lines: &[String]| -> Result<PathBuf> {
        let path = opts.out.join(name);
        let text = if lines.is_empty() { String::new() } else { lines.join("\n") + "\n" };
        write_atomic(&path, text.as_bytes())?;
        Ok(path)
    };
    for split in &ann.splits {
        let mut lines = Vec::with_capacity(split.samples.len());
        for s in &split.samples {
            match line(s, &frames, &counts) {
                Ok(Some(l)) => lines.push(l),
                Ok(None) => {}
                Err(why) => summary.failed.push(format!("{}: {why}", s.origin)),
            }
        }
        if lines.is_empty() {
            bail!("no sample of the {} split was found under {}", split.name, opts.data.display());
        }
        let path = write_text(&format!("{}.txt", split.name), &lines)?;
        summary.lists.push((split.name.to_string(), path, lines.len()));
    }
    summary.failed.sort();
    summary.failed.dedup();
    let classes = write_text("classes.txt", &ann.classes)?;
    if !ann.nouns.is_empty() {
        write_text("nouns.txt", &ann.nouns)?;
    }
    let skipped: Vec<String> = ann.missing.iter().chain(&summary.failed).cloned().collect();
    write_text("skipped.txt", &skipped)?;
    summary.flip_swap = flip_swap_string(&flip_pairs(&ann.classes));
    summary.config = write_config(ann, opts, &root, naming.as_ref(), &classes, &summary)?;
    Ok(summary)
}

/// The folder the lists are relative to, the frame naming (None: video lists) and, with
/// `--extract`, each video's frame folder (None where it failed).
type Pixels = (PathBuf, Option<FrameNaming>, BTreeMap<Source, Option<Source>>);

fn pixels(ann: &Annotations, opts: &Options, summary: &mut Summary, tick: &(dyn Fn() + Sync)) -> Result<Pixels> {
    let sources: BTreeSet<&Source> = ann.splits.iter().flat_map(|s| &s.samples).map(|s| &s.source).collect();
    let videos: Vec<&PathBuf> =
        sources.iter().filter_map(|s| if let Source::Video(v) = s { Some(v) } else { None }).collect();
    let has_frames = sources.iter().any(|s| matches!(s, Source::Frames(_)));
    let Some(settings) = &opts.extract else {
        if !videos.is_empty() && (has_frames || ann.splits.iter().flat_map(|s| &s.samples).any(|s| s.span.is_some())) {
            bail!(
                "{} is a video that must become frames first (segments of recordings, or frames beside videos): add --extract",
                opts.data.join(videos[0]).display()
            );
        }
        let naming = if has_frames { ann.naming.clone() } else { None };
        return Ok((opts.data.clone(), naming, BTreeMap::new()));
    };
    if has_frames && !videos.is_empty() {
        bail!(
            "{} holds both frame folders and videos for this dataset: extract from one kind only",
            opts.data.display()
        );
    }
    if videos.is_empty() {
        return Ok((opts.data.clone(), ann.naming.clone(), BTreeMap::new()));
    }
    let root = opts.out.join("frames");
    let jobs: Vec<Job> = videos
        .iter()
        .map(|v| Job {
            origin: opts.data.join(v).display().to_string(),
            video: opts.data.join(v),
            dir: root.join(v.with_extension("")),
        })
        .collect();
    // `a/clip.mp4` and `a/clip.avi` would share `a/clip`: the second would take the first's frames.
    let mut taken = std::collections::HashMap::new();
    for job in &jobs {
        if let Some(first) = taken.insert(&job.dir, &job.origin) {
            bail!("{first} and {} would both be extracted into {}", job.origin, job.dir.display());
        }
    }
    let outcomes = extract::run(&jobs, settings, &root, tick)?;
    let mut frames = BTreeMap::new();
    for ((v, job), outcome) in videos.iter().zip(&jobs).zip(outcomes) {
        let dir = job.dir.strip_prefix(&root).unwrap_or(&job.dir).to_path_buf();
        match outcome {
            Outcome::Extracted(_) => summary.extracted += 1,
            Outcome::Skipped(_) => summary.skipped += 1,
            Outcome::Failed(why) => {
                summary.failed.push(why);
                frames.insert(Source::Video((*v).clone()), None);
                continue;
            }
        }
        frames.insert(Source::Video((*v).clone()), Some(Source::Frames(dir)));
    }
    Ok((root, Some(settings.naming.clone()), frames))
}

/// Frame counts of every frame folder the samples use, `jobs` folders at a time.
fn count_frames(
    ann: &Annotations,
    frames: &BTreeMap<Source, Option<Source>>,
    root: &Path,
    naming: &FrameNaming,
    jobs: usize,
) -> Result<BTreeMap<PathBuf, Result<usize, String>>> {
    let dirs: BTreeSet<PathBuf> = ann
        .splits
        .iter()
        .flat_map(|s| &s.samples)
        .filter_map(|s| match frames.get(&s.source).unwrap_or(&Some(s.source.clone())) {
            Some(Source::Frames(d)) => Some(d.clone()),
            _ => None,
        })
        .collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(jobs.max(1)).build()?;
    let counted: Vec<(PathBuf, Result<usize, String>)> = pool.install(|| {
        dirs.into_par_iter()
            .map(|d| {
                let n = naming.count(&root.join(&d)).map_err(|e| format!("{e:#}"));
                (d, n)
            })
            .collect()
    });
    Ok(counted.into_iter().collect())
}

/// The list line of one sample; `Ok(None)` for a video whose extraction failed (reported
/// there), `Err` for a sample that does not fit its frames.
fn line(
    s: &Sample,
    frames: &BTreeMap<Source, Option<Source>>,
    counts: &BTreeMap<PathBuf, Result<usize, String>>,
) -> Result<Option<String>, String> {
    let source = match frames.get(&s.source) {
        Some(None) => return Ok(None),
        Some(Some(f)) => f,
        None => &s.source,
    };
    let path = match source {
        Source::Video(p) | Source::Frames(p) => p.to_string_lossy().into_owned(),
    };
    if path.contains(['\n', '\r']) {
        return Err(format!("{path:?} has a line break and cannot be listed"));
    }
    let labels = match s.noun {
        Some(n) => format!("{} {n}", s.label),
        None => s.label.to_string(),
    };
    let Source::Frames(dir) = source else { return Ok(Some(format!("{path} {labels}"))) };
    let n = counts.get(dir).cloned().unwrap_or_else(|| Err(format!("{path}: not counted")))?;
    if n == 0 {
        return Err(format!("frame folder {path} holds no frame"));
    }
    Ok(Some(match s.span {
        None => format!("{path} {n} {labels}"),
        Some((start, len)) if start + len <= n => format!("{path} {start} {len} {labels}"),
        Some((start, len)) => {
            return Err(format!("frames {}..={} lie beyond the {n} frames of {path}", start + 1, start + len));
        }
    }))
}

#[derive(Serialize)]
struct ModelPart {
    classes: usize,
    #[serde(skip_serializing_if = "is_zero")]
    noun_classes: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct DataPart {
    train_list: PathBuf,
    val_list: PathBuf,
    root: PathBuf,
    template: String,
    first_index: usize,
    class_names: PathBuf,
    flip: bool,
    flip_swap: String,
}

#[derive(Serialize)]
struct ConfigFile {
    model: ModelPart,
    data: DataPart,
}

/// `data.toml`: `[model] classes` and the whole `[data]` section, absolute paths.
fn write_config(
    ann: &Annotations,
    opts: &Options,
    root: &Path,
    naming: Option<&FrameNaming>,
    classes: &Path,
    s: &Summary,
) -> Result<PathBuf> {
    let abs = |p: &Path| {
        std::fs::canonicalize(p).unwrap_or_else(|_| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
    };
    let list = |name: &str| s.lists.iter().find(|(n, _, _)| n == name).map(|(_, p, _)| abs(p)).unwrap_or_default();
    let defaults = crate::train::config::DataSection::default();
    let file = ConfigFile {
        model: ModelPart { classes: ann.classes.len(), noun_classes: ann.nouns.len() },
        data: DataPart {
            train_list: list("train"),
            val_list: list("val"),
            root: abs(root),
            template: naming.map_or(defaults.template, |n| n.template.format_string()),
            first_index: naming.map_or(defaults.first_index, |n| n.first_index),
            class_names: abs(classes),
            flip: true,
            flip_swap: s.flip_swap.clone(),
        },
    };
    let header = "# Written by `gateshift data prepare`: a `gateshift train --config` file (add [model] and\n\
                  # [optim] settings, or give them as flags). Flipping swaps the mirrored classes' labels.\n";
    let path = opts.out.join("data.toml");
    write_atomic(&path, (header.to_string() + &toml::to_string(&file)?).as_bytes())?;
    Ok(path)
}
