//! `gateshift test`: 1 or 2 clips × 1/3/5/10 crops per video, logits (or softmax) averaged;
//! top-1, top-5, mean-class accuracy, per-class accuracy, confusion matrix (CSV + PNG),
//! per-video score dumps, and the frame-order diagnostic (`--frame-order shuffle|reverse`
//! also runs the normal order and reports the drop). Two-head models add verb, noun and
//! action accuracy.
//!
//! The official test protocols, as flags:
//!
//! | official | gateshift |
//! |---|---|
//! | GSM `test_models.py --test_crops 1 --num_clips 1` (scale 256 → crop 224; InceptionV3 261 → 229) | `--crops 1 --clips 1` (sizes from the checkpoint) |
//! | GSM `--num_clips 2` (starts and centres of the segments) | `--clips 2` |
//! | GSM `--test_crops 10` / `5` (`GroupOverSample`, `GroupFiveCrops`) | `--crops 10` / `--crops 5` |
//! | GSF `--test_crops 3 --num_clips 2` (`GroupFullResSample` of input-size crops) | `--crops 3 --clips 2` |
//! | TSM `--twice_sample` | `--twice-sample` (= `--clips 2`) |
//! | TSM `--full_res --test_crops 3` (three 256² crops of the 256-scaled frame) | `--full-res --crops 3` |
//! | `--softmax 1` | `--softmax` |

use gateshift::train::precision::Precision;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use gateshift::checkpoint::Fit;
use gateshift::data::list::{List, ListFormat};
use gateshift::data::{ClipDataset, FrameOrder, Pipeline, Sampling};
use gateshift::infer::{EvalOptions, Evaluation, Options, Predictor};
use gateshift::io::write_atomic;
use gateshift::model::ModelConfig;
use serde_json::json;

use super::{FrameArgs, Metadata, SizeArgs, open_checkpoint};

/// Where test data comes from and how it is read.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// List file (rawframes `<dir> <n> <label>`, `<dir> <start> <n> <label>`, or videos `<path> <label>`).
    #[arg(long)]
    pub list: PathBuf,
    /// Folder list paths are relative to (default: the list's folder).
    #[arg(long)]
    pub root: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    pub list_format: ListFormat,
    #[command(flatten)]
    pub frames: FrameArgs,
    /// Class-name file, one per line (default: the names stored in the checkpoint).
    #[arg(long)]
    pub class_names: Option<PathBuf>,
    #[command(flatten)]
    pub sizes: SizeArgs,
    #[arg(long, value_enum, default_value = "tsn")]
    pub sampling: Sampling,
    #[arg(long, default_value_t = 2, value_parser = super::at_least_one::<usize>)]
    pub interval: usize,
    #[command(flatten)]
    pub live_flow: super::predict::LiveFlowArgs,
    #[arg(long, default_value_t = 2, value_parser = super::worker_count)]
    pub workers: usize,
    #[arg(long, default_value_t = 8, value_parser = super::count_up_to(gateshift::limits::MAX_BATCH))]
    pub batch_size: usize,
    /// Skip (and report) unreadable videos instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
}

#[derive(Args, Debug)]
pub struct TestArgs {
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub model: ModelConfig,
    #[command(flatten)]
    pub data: DataArgs,
    /// Clips per video: 1 (segment centres) or 2 (centres and starts, the official two-clip test).
    #[arg(long, default_value_t = 1)]
    pub clips: usize,
    /// TSM's `--twice_sample`: two clips, segment starts and centres (the same as --clips 2).
    #[arg(long, conflicts_with = "clips")]
    pub twice_sample: bool,
    /// TSM's `--full_res`: crops as large as the scaled short side (256² of a 256-scaled
    /// frame) instead of the training input size.
    #[arg(long, conflicts_with = "input_size")]
    pub full_res: bool,
    /// Crops per clip: 1, 3, 5 or 10.
    #[arg(long, default_value_t = 1, value_parser = super::crop_count)]
    pub crops: usize,
    /// Average softmax probabilities instead of logits over clips and crops.
    #[arg(long)]
    pub softmax: bool,
    /// Frame order fed to the model; shuffle/reverse also runs the normal order and reports the drop.
    #[arg(long, value_enum, default_value = "normal")]
    pub frame_order: FrameOrder,
    /// Write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the confusion matrix to PREFIX.csv and PREFIX.png and per-class accuracy to PREFIX_per_class.csv.
    #[arg(long)]
    pub confusion: Option<PathBuf>,
    /// Save per-video scores (JSON lines: index, label, scores) for `gateshift ensemble`.
    #[arg(long)]
    pub dump_scores: Option<PathBuf>,
    #[arg(long, default_value = "flex")]
    pub backend: String,
    /// Inference arithmetic: fp32, or bf16 (weights and activations in bf16, scores f32; fast
    /// on GPUs, slower than fp32 on the CPU backends).
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: Precision,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Builds the test dataset for a model.
pub fn dataset(
    d: &DataArgs,
    cfg: &ModelConfig,
    meta: &Metadata,
    clips: usize,
    crops: usize,
    full_res: bool,
) -> Result<ClipDataset> {
    gateshift::data::transform::check_crops(crops).context("--crops")?;
    if clips == 0 {
        bail!("--clips must be at least 1");
    }
    let root = d.root.clone().unwrap_or_else(|| d.list.parent().map(Path::to_path_buf).unwrap_or_default());
    let list = List::read(&d.list, Some(&root), d.list_format, Some(cfg.classes))?;
    let (size, scale) = d.sizes.resolve(cfg, meta)?;
    let size = if full_res { scale } else { size };
    d.sampling.check(&cfg.input())?;
    let pipeline = Pipeline {
        sampling: d.sampling,
        interval: d.interval,
        live_flow: d.live_flow.live_flow()?,
        ..Pipeline::for_model(cfg, size, scale, crops, clips)
    };
    Ok(ClipDataset { list, naming: d.frames.naming_for(cfg.modality)?, pipeline })
}

/// Runs one evaluation pass with a progress bar.
fn run_once(p: &Predictor, ds: ClipDataset, d: &DataArgs, seed: u64, softmax: bool, label: &str) -> Result<Evaluation> {
    let ds = Arc::new(ds);
    let (clips, crops) = match ds.pipeline.mode {
        gateshift::data::Mode::Test { clips, crops, .. } => (clips, crops),
        _ => (1, 1),
    };
    eprintln!("{label}: {} videos of {}, {clips} clip(s) × {crops} crop(s) each", ds.len(), d.list.display());
    let bar = gateshift::report::progress::progress_bar(true, ds.len() as u64, label);
    let options = EvalOptions {
        batch_size: d.batch_size,
        workers: d.workers,
        seed,
        softmax,
        skip_bad: d.skip_bad,
        progress: Some(&bar),
        ..Default::default()
    };
    let ev = p.evaluate(ds, &options)?;
    bar.finish_and_clear();
    gateshift::data::loader::report_skips(&ev.skipped);
    Ok(ev)
}

pub fn run(a: TestArgs) -> Result<()> {
    // Outputs that cannot be written are found now, not after the whole evaluation.
    let confusion = a.confusion.iter().flat_map(|p| [".csv", "_per_class.csv", ".png"].map(|e| with_suffix(p, e)));
    let outputs: Vec<PathBuf> = a.json.iter().chain(&a.dump_scores).cloned().chain(confusion).collect();
    let outputs: Vec<&Path> = outputs.iter().map(|p| p.as_path()).collect();
    gateshift::io::check_outputs(&outputs, &[&a.checkpoint, &a.data.list])?;
    let device = gateshift::backend::device(&a.backend)?;
    let options = Options { fit: Fit::Strict, precision: a.precision };
    let p = open_checkpoint(&a.model, &a.checkpoint, options, &device)?;
    let names = p.class_names(a.data.class_names.as_deref())?;
    let clips = if a.twice_sample { 2 } else { a.clips };
    let normal_ds = dataset(&a.data, &p.config, &p.metadata, clips, a.crops, a.full_res)?;
    let mut ds = normal_ds.clone();
    ds.pipeline.order = a.frame_order;
    let ev = run_once(&p, ds, &a.data, a.seed, a.softmax, "test")?;
    let acc = &ev.accuracy;
    say!(
        "{} videos · {} clip(s) × {} crop(s) · order {:?} · top-1 {:.2}% · top-5 {:.2}% · mean class {:.2}% · {:.1} videos/s",
        acc.count,
        clips,
        a.crops,
        a.frame_order,
        100.0 * acc.top1(),
        100.0 * acc.top5(),
        100.0 * acc.mean_class(),
        acc.count as f64 / ev.seconds
    )?;
    let mut report = json!({
        "checkpoint": a.checkpoint, "list": a.data.list, "videos": acc.count, "clips": clips, "crops": a.crops, "full_res": a.full_res,
        "frame_order": a.frame_order, "top1": acc.top1(), "top5": acc.top5(), "mean_class": acc.mean_class(),
        "per_class": acc.per_class(), "skipped": ev.skipped.len(),
    });
    if let Some(vn) = &ev.verb_noun {
        say!(
            "verb top-1 {:.2}% top-5 {:.2}% · noun top-1 {:.2}% top-5 {:.2}% · action top-1 {:.2}% top-5 {:.2}%",
            100.0 * vn.verb.top1(),
            100.0 * vn.verb.top5(),
            100.0 * vn.noun.top1(),
            100.0 * vn.noun.top5(),
            100.0 * vn.action_top1(),
            100.0 * vn.action_top5()
        )?;
        report["verb"] = json!({"top1": vn.verb.top1(), "top5": vn.verb.top5(), "mean_class": vn.verb.mean_class()});
        report["noun"] = json!({"top1": vn.noun.top1(), "top5": vn.noun.top5(), "mean_class": vn.noun.mean_class()});
        report["action"] = json!({"top1": vn.action_top1(), "top5": vn.action_top5()});
    }
    if a.frame_order != FrameOrder::Normal {
        let normal = run_once(&p, normal_ds, &a.data, a.seed, a.softmax, "normal")?;
        let drop = normal.accuracy.top1() - acc.top1();
        say!(
            "normal order top-1 {:.2}% → {:?} {:.2}%: drop {:.2} points",
            100.0 * normal.accuracy.top1(),
            a.frame_order,
            100.0 * acc.top1(),
            100.0 * drop
        )?;
        report["normal_top1"] = json!(normal.accuracy.top1());
        report["drop"] = json!(drop);
    }
    if let Some(prefix) = &a.confusion {
        write_confusion(prefix, &acc.confusion, &acc.per_class(), names.as_deref())?;
    }
    if let Some(path) = &a.dump_scores {
        let mut text = String::new();
        for (i, label, scores) in &ev.scores {
            text.push_str(&json!({"index": i, "label": label, "scores": scores}).to_string());
            text.push('\n');
        }
        write_atomic(path, text.as_bytes())?;
    }
    if let Some(path) = &a.json {
        write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    Ok(())
}

/// `PREFIX` with `suffix` appended (`runs/gsm/confusion` + `.csv`).
fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// `PREFIX.csv` (rows true class, columns predicted), `PREFIX_per_class.csv`, `PREFIX.png`.
pub fn write_confusion(
    prefix: &Path,
    m: &[Vec<usize>],
    per_class: &[Option<f64>],
    names: Option<&[String]>,
) -> Result<()> {
    let k = m.len();
    let name = |i: usize| names.and_then(|n| n.get(i)).cloned().unwrap_or_else(|| i.to_string());
    let mut csv = String::from("true\\predicted");
    for j in 0..k {
        csv.push_str(&format!(",{j}"));
    }
    csv.push('\n');
    for (i, row) in m.iter().enumerate() {
        csv.push_str(&i.to_string());
        for v in row {
            csv.push_str(&format!(",{v}"));
        }
        csv.push('\n');
    }
    let with = |ext: &str| with_suffix(prefix, ext);
    write_atomic(&with(".csv"), csv.as_bytes())?;
    let mut pc = String::from("class,name,samples,accuracy\n");
    for (i, acc) in per_class.iter().enumerate() {
        let n: usize = m[i].iter().sum();
        let acc = acc.map(|a| format!("{a:.4}")).unwrap_or_default();
        pc.push_str(&format!("{i},\"{}\",{n},{acc}\n", name(i).replace('"', "'")));
    }
    write_atomic(&with("_per_class.csv"), pc.as_bytes())?;
    let labels: Vec<String> = (0..k).map(name).collect();
    gateshift::report::plot::confusion(m, &labels, &with(".png"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use gateshift::data::Mode;
    use gateshift::model::{Arch, TemporalKind};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        test: TestArgs,
    }

    /// TSM's accurate protocol, `--twice_sample --full_res --test_crops 3`: two clips of
    /// three 256² crops from frames scaled to 256, whatever size the model trained at.
    #[test]
    fn tsm_protocol_flags() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("val.txt");
        std::fs::write(&list, "clip 10 0\n").unwrap();
        let args = ["test", "--checkpoint", "c.safetensors", "--twice-sample", "--full-res", "--crops", "3", "--list"];
        let a = Cli::try_parse_from(args.iter().copied().chain([list.to_str().unwrap()])).unwrap().test;
        assert!(a.twice_sample && a.full_res);
        let cfg = ModelConfig::new(Arch::Resnet50, TemporalKind::Tsm, 8, 174);
        let ds = dataset(&a.data, &cfg, &Metadata::new(), 2, a.crops, a.full_res).unwrap();
        assert_eq!(ds.pipeline.size, 256);
        assert!(matches!(ds.pipeline.mode, Mode::Test { scale: 256, crops: 3, clips: 2 }));
        // The centre-crop protocol keeps the 224 input; --full-res and --input-size conflict.
        let ds = dataset(&a.data, &cfg, &Metadata::new(), 1, 1, false).unwrap();
        assert_eq!(ds.pipeline.size, 224);
        let both = args.iter().copied().chain(["x", "--input-size", "224"]);
        assert!(Cli::try_parse_from(both).is_err());
        assert!(
            Cli::try_parse_from(["t", "--checkpoint", "c", "--list", "l", "--clips", "2", "--twice-sample"]).is_err()
        );
    }
}
