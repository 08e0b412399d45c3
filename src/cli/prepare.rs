//! `gateshift data prepare <dataset>`: a benchmark's own annotation files → lists, class
//! names, flip-swap map and a `[data]` config (`data::prepare`), optionally decoding the
//! videos into frame folders, `--jobs` at a time and resumable.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use gateshift::data::prepare::{self, Benchmark, extract, output};

use super::FrameArgs;

#[derive(Args, Debug)]
pub struct PrepareArgs {
    /// The benchmark the annotation files belong to.
    #[arg(value_enum)]
    pub dataset: Benchmark,
    /// Folder with the benchmark's annotation files, under their released names.
    #[arg(long)]
    pub annotations: PathBuf,
    /// Folder with the videos or frame folders (the annotated ones are looked for below it).
    #[arg(long)]
    pub data: PathBuf,
    /// Output folder: train.txt, val.txt, classes.txt (nouns.txt), skipped.txt, data.toml,
    /// and frames/ with --extract.
    #[arg(long)]
    pub out: PathBuf,
    /// UCF101 / HMDB51 official split, 1–3.
    #[arg(long, default_value_t = 1)]
    pub split: usize,
    /// Decode the videos into frame folders under OUT/frames; finished ones are skipped on a
    /// second run.
    #[arg(long)]
    pub extract: bool,
    /// Videos decoded (and frame folders counted) at once.
    #[arg(long, default_value_t = 1, value_parser = super::count_up_to(gateshift::limits::MAX_WORKERS))]
    pub jobs: usize,
    /// With --extract: scale frames to this short side (default: keep the size).
    #[arg(long, value_parser = super::at_least_one::<u32>)]
    pub short_side: Option<u32>,
    /// With --extract: JPEG quality, 1–100.
    #[arg(long, default_value_t = 95, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub quality: u8,
    /// With --extract: how the frame files are named.
    #[command(flatten)]
    pub frames: FrameArgs,
    /// Succeed even when videos fail to decode (they are listed in skipped.txt either way).
    #[arg(long)]
    pub skip_bad: bool,
}

pub fn run(a: PrepareArgs) -> Result<()> {
    let ann = prepare::read(a.dataset, &a.annotations, &a.data, a.split)?;
    let total: usize = ann.splits.iter().map(|s| s.samples.len()).sum();
    say!(
        "{:?}: {} classes{} · {total} samples found · {} annotated but missing",
        a.dataset,
        ann.classes.len(),
        if ann.nouns.is_empty() { String::new() } else { format!(" (verbs) · {} nouns", ann.nouns.len()) },
        ann.missing.len()
    )?;
    let extract = a.extract.then(|| -> Result<extract::Settings> {
        Ok(extract::Settings { naming: a.frames.naming()?, short_side: a.short_side, quality: a.quality, jobs: a.jobs })
    });
    let options =
        output::Options { data: a.data.clone(), out: a.out.clone(), extract: extract.transpose()?, jobs: a.jobs };
    let videos = if a.extract { distinct_videos(&ann) } else { 0 };
    let bar = gateshift::report::progress::progress_bar(a.extract, videos as u64, "extract");
    let s = output::write(&ann, &options, &|| bar.inc(1))?;
    bar.finish_and_clear();
    if a.extract {
        say!("frames: {} videos extracted, {} already done, {} failed", s.extracted, s.skipped, s.failed.len())?;
    }
    for (name, path, n) in &s.lists {
        say!("{name}: {n} entries in {}", path.display())?;
    }
    if !s.flip_swap.is_empty() {
        say!("flip swaps mirrored classes: {}", s.flip_swap)?;
    }
    let skipped = s.missing + s.failed.len();
    if skipped > 0 {
        say!(
            "{} missing and {} unusable sample(s), listed in {}",
            s.missing,
            s.failed.len(),
            a.out.join("skipped.txt").display()
        )?;
    }
    say!("train with: gateshift train --config {}", s.config.display())?;
    if !s.failed.is_empty() && !a.skip_bad {
        bail!(
            "{} sample(s) could not be used (first: {}); see skipped.txt, or pass --skip-bad",
            s.failed.len(),
            s.failed[0]
        );
    }
    Ok(())
}

fn distinct_videos(ann: &prepare::Annotations) -> usize {
    let set: std::collections::BTreeSet<_> = ann.splits.iter().flat_map(|s| &s.samples).map(|s| &s.source).collect();
    set.len()
}
