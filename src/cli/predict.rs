//! `gateshift predict`: top-k classes of one video file or rawframe folder.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use burn::module::Module;
use clap::Args;
use gateshift::data::list::{Entry, List, ListFormat};
use gateshift::data::{ClipDataset, Pipeline};
use gateshift::train::evaluate::evaluate;
use serde_json::json;

use super::{FrameArgs, ModelArgs, load_model};

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// A video file or a folder of frames.
    pub input: PathBuf,
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Class names, one per line (default: the names stored in the checkpoint).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    pub topk: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub frames: FrameArgs,
    #[arg(long, default_value_t = 1)]
    pub clips: usize,
    #[arg(long, default_value_t = 1)]
    pub crops: usize,
    #[arg(long)]
    pub input_size: Option<u32>,
    #[arg(long)]
    pub scale_size: Option<u32>,
    #[arg(long, default_value = "flex")]
    pub backend: String,
}

pub fn run(a: PredictArgs) -> Result<()> {
    let device = gateshift::backend::device(&a.backend)?;
    let (model, cfg, meta) = load_model(&a.model, &a.checkpoint, false, &device)?;
    let model = model.valid();
    let names = super::test::class_names(a.labels.as_deref(), &meta)?;
    if let Some(n) = &names
        && n.len() != cfg.classes
    {
        bail!("{} class names but the model has {} classes", n.len(), cfg.classes);
    }
    let naming = a.frames.naming()?;
    let entry = if a.input.is_dir() {
        Entry {
            path: a.input.clone(),
            start: 0,
            num_frames: Some(naming.count(&a.input)?),
            label: 0,
            line: 1,
            is_video: false,
        }
    } else if a.input.is_file() {
        Entry { path: a.input.clone(), start: 0, num_frames: None, label: 0, line: 1, is_video: true }
    } else {
        bail!("{} is neither a video file nor a frame folder", a.input.display());
    };
    let (size, scale) = super::test::input_sizes(a.input_size, a.scale_size, &cfg, &meta);
    let pipeline = Pipeline::test(cfg.arch.input(), size, scale, cfg.segments, a.crops, a.clips);
    let list = List { file: a.input.clone(), format: ListFormat::Auto, entries: vec![entry] };
    let ds = Arc::new(ClipDataset { list, naming, pipeline });
    let ev = evaluate(&model, ds, cfg.classes, 1, 1, 0, true, false, &device, None)?;
    let (_, _, probs) = &ev.scores[0];
    let mut ranked: Vec<(usize, f32)> = probs.iter().copied().enumerate().collect();
    ranked.sort_by(|x, y| y.1.total_cmp(&x.1));
    ranked.truncate(a.topk.max(1));
    let name = |i: usize| names.as_ref().map(|n| n[i].clone()).unwrap_or_else(|| format!("class {i}"));
    if a.json {
        let top: Vec<_> =
            ranked.iter().map(|&(i, p)| json!({"class": i, "label": name(i), "probability": p})).collect();
        println!("{}", serde_json::to_string_pretty(&json!({"input": a.input, "top": top}))?);
    } else {
        println!("{}", a.input.display());
        for (rank, &(i, p)) in ranked.iter().enumerate() {
            println!("{:>2}. {:>6.2}%  {}", rank + 1, 100.0 * p, name(i));
        }
    }
    Ok(())
}
