//! `gateshift data`: extract-frames (videos → rawframes), build-list (class folders → list
//! and class names, with a train/val split), check (read every entry, report problems),
//! prepare (a benchmark's annotation files → lists: `prepare.rs`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use gateshift::data::list::{List, ListFormat, VIDEO_EXTENSIONS};
use gateshift::data::rawframes::read_rgb;
use gateshift::data::{FrameNaming, video};
use gateshift::io::write_atomic;

use super::{FrameArgs, JpegArgs, frame_folder_name, root_of};
use gateshift::synth::encode_jpeg;
use rand::SeedableRng;
use rand::seq::SliceRandom;

#[derive(Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Decode videos into rawframe folders (one JPEG per frame) and write the matching list.
    ExtractFrames(ExtractArgs),
    /// TV-L1 optical flow of videos or frame folders as TSN's x_/y_ JPEG pairs, with the
    /// flow list (parallel, resumable).
    ExtractFlow(super::extract_flow::ExtractFlowArgs),
    /// Build a list file and class-name file from a class-per-folder tree.
    BuildList(BuildListArgs),
    /// Read every entry of a list and report unreadable, short or mis-counted ones.
    Check(CheckArgs),
    /// From a benchmark's own annotation files (Something-Something, Diving48, Kinetics,
    /// UCF101, HMDB51, EPIC-Kitchens) to lists, class names and a training config.
    Prepare(super::prepare::PrepareArgs),
}

#[derive(Args, Debug)]
pub struct ExtractArgs {
    /// Video list (`<path> <label>`), or a single video file.
    pub input: PathBuf,
    /// Folder for the frame folders (one per video, named after the file).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub root: Option<PathBuf>,
    #[command(flatten)]
    pub frames: FrameArgs,
    #[command(flatten)]
    pub jpeg: JpegArgs,
    /// Write the rawframe list here (default: OUT/list.txt).
    #[arg(long)]
    pub out_list: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BuildListArgs {
    /// Tree with one folder per class, holding videos or frame folders.
    pub tree: PathBuf,
    /// Output list (train list when --val-fraction > 0).
    #[arg(long)]
    pub out: PathBuf,
    /// Validation list, with --val-fraction.
    #[arg(long)]
    pub val_out: Option<PathBuf>,
    /// Share of the entries (shuffled with --seed) held out for validation, in [0, 1).
    #[arg(long, default_value_t = 0.0, value_parser = super::float_where(|f| (0.0..1.0).contains(&f), "in [0, 1)"))]
    pub val_fraction: f64,
    /// Class-name file to write (default: beside --out, classes.txt).
    #[arg(long)]
    pub classes: Option<PathBuf>,
    #[command(flatten)]
    pub frames: FrameArgs,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    pub list: PathBuf,
    #[arg(long)]
    pub root: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    pub list_format: ListFormat,
    #[command(flatten)]
    pub frames: FrameArgs,
    /// Entries with fewer frames than this are reported as short.
    #[arg(long, default_value_t = 8, value_parser = super::at_least_one::<usize>)]
    pub segments: usize,
}

pub fn run(a: DataArgs) -> Result<()> {
    match a.command {
        DataCommand::ExtractFrames(e) => extract(e),
        DataCommand::ExtractFlow(f) => super::extract_flow::run(f),
        DataCommand::BuildList(b) => build_list(b),
        DataCommand::Check(c) => check(c),
        DataCommand::Prepare(p) => super::prepare::run(p),
    }
}

/// Decodes one video into `dir` as JPEG frames; returns the frame count.
pub fn extract_one(
    video_path: &Path,
    dir: &Path,
    naming: &FrameNaming,
    short: Option<u32>,
    quality: u8,
) -> Result<usize> {
    let info = video::probe(video_path, false)?;
    video::for_each_frame(video_path, &info, short, |i, img| {
        write_atomic(&naming.path(dir, 0, i), &encode_jpeg(&img, quality)?)
    })
}

fn extract(a: ExtractArgs) -> Result<()> {
    let naming = a.frames.naming()?;
    let out_list = a.out_list.clone().unwrap_or_else(|| a.out.join("list.txt"));
    gateshift::io::check_output(&out_list)?;
    let is_list = !a.input.extension().and_then(|e| e.to_str()).is_some_and(|e| VIDEO_EXTENSIONS.contains(&e));
    let jobs: Vec<(String, PathBuf, usize, String)> = if is_list {
        let root = root_of(&a.input, a.root.as_deref());
        let list = List::read(&a.input, Some(&root), ListFormat::Video, None)?;
        let mut jobs = Vec::with_capacity(list.entries.len());
        let mut taken: std::collections::HashMap<String, String> = Default::default();
        for e in &list.entries {
            let name = frame_folder_name(&e.path, &root);
            let at = e.origin(&list.file);
            if let Some(first) = taken.insert(name.clone(), at.clone()) {
                bail!("{first} and {at} would both be extracted into {}", a.out.join(&name).display());
            }
            jobs.push((name, e.path.clone(), e.label, at));
        }
        jobs
    } else {
        let name = frame_folder_name(&a.input, a.input.parent().unwrap_or(Path::new("")));
        vec![(name, a.input.clone(), 0, a.input.display().to_string())]
    };
    for (name, _, _, at) in &jobs {
        let dir = a.out.join(name);
        if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
            bail!(
                "{at}: {} already holds files (an earlier extraction?): remove it or choose another --out",
                dir.display()
            );
        }
    }
    let bar = gateshift::report::progress::progress_bar(true, jobs.len() as u64, "extract");
    let mut lines = Vec::new();
    for (name, path, label, at) in &jobs {
        let n = extract_one(path, &a.out.join(name), &naming, a.jpeg.short_side, a.jpeg.quality)
            .with_context(|| at.clone())?;
        lines.push(format!("{name} {n} {label}"));
        bar.inc(1);
    }
    bar.finish_and_clear();
    write_atomic(&out_list, (lines.join("\n") + "\n").as_bytes())?;
    say!("extracted {} video(s) into {}; list {}", jobs.len(), a.out.display(), out_list.display())?;
    Ok(())
}

fn build_list(a: BuildListArgs) -> Result<()> {
    let naming = a.frames.naming()?;
    for out in [Some(&a.out), a.val_out.as_ref(), a.classes.as_ref()].into_iter().flatten() {
        gateshift::io::check_output(out)?;
    }
    let mut classes: Vec<PathBuf> = std::fs::read_dir(&a.tree)
        .with_context(|| format!("reading {}", a.tree.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    if classes.is_empty() {
        bail!("{} has no class folders", a.tree.display());
    }
    let base = a.out.parent().map(Path::to_path_buf).unwrap_or_default();
    let rel = |p: &Path| -> String {
        let abs = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let b = std::fs::canonicalize(&base).unwrap_or_else(|_| base.clone());
        abs.strip_prefix(&b).map(|r| r.display().to_string()).unwrap_or_else(|_| abs.display().to_string())
    };
    let mut lines = Vec::new();
    eprintln!("listing {} class folders of {}", classes.len(), a.tree.display());
    let bar = gateshift::report::progress::progress_bar(true, classes.len() as u64, "build-list");
    for (label, class) in classes.iter().enumerate() {
        bar.inc(1);
        bar.set_message(format!("{} entries", lines.len()));
        let mut items: Vec<PathBuf> = std::fs::read_dir(class)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        items.sort();
        for item in items {
            if item.is_dir() {
                let n = naming.count(&item)?;
                if n > 0 {
                    lines.push(format!("{} {n} {label}", rel(&item)));
                }
            } else if item
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            {
                lines.push(format!("{} {label}", rel(&item)));
            }
        }
    }
    bar.finish_and_clear();
    if lines.is_empty() {
        bail!(
            "{}: no frame folder (with frames named like {}) or video file in its class folders",
            a.tree.display(),
            naming.path(Path::new(""), 0, 0).display()
        );
    }
    let names: Vec<String> =
        classes.iter().map(|c| c.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect();
    let classes_file = a.classes.unwrap_or_else(|| base.join("classes.txt"));
    write_atomic(&classes_file, (names.join("\n") + "\n").as_bytes())?;
    let mut val = Vec::new();
    if a.val_fraction > 0.0 {
        let val_out = a.val_out.as_ref().ok_or_else(|| anyhow::anyhow!("--val-fraction needs --val-out"))?;
        lines.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(a.seed));
        let k = ((lines.len() as f64) * a.val_fraction).round() as usize;
        if k >= lines.len() {
            bail!("--val-fraction {} of {} entries leaves none to train on", a.val_fraction, lines.len());
        }
        val = lines.drain(..k).collect();
        write_atomic(val_out, (val.join("\n") + "\n").as_bytes())?;
    }
    write_atomic(&a.out, (lines.join("\n") + "\n").as_bytes())?;
    say!(
        "{} classes · {} entries in {} · {} in validation · names {}",
        names.len(),
        lines.len(),
        a.out.display(),
        val.len(),
        classes_file.display()
    )?;
    Ok(())
}

fn check(a: CheckArgs) -> Result<()> {
    let naming = a.frames.naming()?;
    let list = List::read(&a.list, Some(&root_of(&a.list, a.root.as_deref())), a.list_format, None)?;
    eprintln!("reading every frame or video of the {} entries of {}", list.entries.len(), a.list.display());
    let bar = gateshift::report::progress::progress_bar(true, list.entries.len() as u64, "check");
    let mut problems = Vec::new();
    for e in &list.entries {
        let at = e.origin(&list.file);
        if e.is_video {
            match video::probe(&e.path, true) {
                Err(err) => problems.push(format!("{at}: unreadable: {err:#}")),
                Ok(info) => {
                    let packets = video::probe(&e.path, false).map(|i| i.frames).unwrap_or(0);
                    if video::falls_short(info.frames, packets) {
                        problems.push(format!(
                            "{at}: {} decodes {} frames but has {packets} packets",
                            e.path.display(),
                            info.frames
                        ));
                    }
                    if info.frames < a.segments {
                        problems.push(format!("{at}: short: {} frames < {} segments", info.frames, a.segments));
                    }
                }
            }
        } else {
            let listed = e.num_frames.unwrap_or(0);
            match naming.count(&e.path) {
                Err(err) => problems.push(format!("{at}: {err:#}")),
                Ok(n) if n < e.start + listed => {
                    problems.push(format!("{at}: list says {listed} frames from {}, folder has {n}", e.start))
                }
                Ok(_) => {}
            }
            for i in 0..listed {
                let f = naming.path(&e.path, e.start, i);
                if let Err(err) = read_rgb(&f) {
                    problems.push(format!("{at}: {err:#}"));
                    break;
                }
            }
            if listed < a.segments {
                problems.push(format!("{at}: short: {listed} frames < {} segments", a.segments));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    for p in &problems {
        say!("{p}")?;
    }
    say!("{} entries checked, {} problem(s)", list.entries.len(), problems.len())?;
    if !problems.is_empty() {
        bail!("{} problem(s) in {}", problems.len(), a.list.display());
    }
    Ok(())
}
