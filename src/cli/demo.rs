//! `gateshift demo`: the paper's claim on a laptop CPU. Generates the time-reversal-pairs
//! dataset, trains TSN, GSM (and TSM) on ResNet-Mini with the same recipe, tests each with
//! normal and shuffled frame order, prints a comparison table and writes `report.md` with
//! training curves. Re-running continues unfinished runs (`--resume` semantics).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use clap::Args;
use gateshift::data::FrameOrder;
use gateshift::infer::{EvalOptions, Options, Predictor};
use gateshift::io::write_atomic;
use gateshift::model::{Arch, TemporalKind, cost};
use gateshift::train::config::TrainConfig;
use gateshift::train::run_dir::Start;
use gateshift::train::trainer::{self, EpochMetrics};

use super::synth::SynthArgs;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Output folder: data/, one run folder per model, report.md, curves.png.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// Temporal modules to compare.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [TemporalKind::None, TemporalKind::Gsm, TemporalKind::Tsm])]
    pub models: Vec<TemporalKind>,
    #[arg(long, default_value_t = 12, value_parser = super::at_least_one::<usize>)]
    pub epochs: usize,
    /// Reversal pairs (classes = 2 × pairs), in this order: left/right, up/down,
    /// appearing/disappearing, approaching/receding, clockwise/counter-clockwise.
    #[arg(long, default_value_t = 3)]
    pub pairs: usize,
    /// Frame side in pixels (frames are generated at this size and trained at it).
    #[arg(long, default_value_t = 48, value_parser = super::side)]
    pub size: u32,
    #[arg(long, default_value_t = 100, value_parser = super::at_least_one::<usize>)]
    pub train_per_class: usize,
    #[arg(long, default_value_t = 30, value_parser = super::at_least_one::<usize>)]
    pub val_per_class: usize,
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,
    #[arg(long, default_value_t = 8, value_parser = super::at_least_one::<usize>)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 2, value_parser = super::worker_count)]
    pub workers: usize,
    #[arg(long, default_value = "flex")]
    pub backend: String,
    /// Also the two-stream baseline: TV-L1 flow of every clip, a TSN flow stream, RGB + flow
    /// late fusion, and each design's cost per clip with its flow (needs `none` in --models).
    #[arg(long)]
    pub two_stream: bool,
}

/// One model's results.
struct Row {
    name: &'static str,
    temporal: TemporalKind,
    normal: f64,
    shuffled: f64,
    train_seconds: f64,
    history: Vec<EpochMetrics>,
    cost: Cost,
}

/// What a model costs, measured on this machine by this run.
struct Cost {
    params: usize,
    /// Multiply-accumulates of one clip's forward pass (`gateshift info`'s count).
    macs: u64,
    /// Median over the epochs of a training step's time (batch ÷ the epoch's clips/s).
    train_ms_per_step: f64,
    /// Median of a one-clip forward pass of the trained checkpoint, as `test` runs it.
    infer_ms_per_clip: f64,
}

fn display(t: TemporalKind) -> &'static str {
    t.label()
}

pub fn run(a: DemoArgs) -> Result<()> {
    gateshift::synth::check_pairs(a.pairs)?;
    // Each model trains into its own folder, OUT/<module>: naming one twice would only
    // report the same run twice.
    if let Some((i, t)) = a.models.iter().enumerate().find(|(i, t)| a.models[..*i].contains(t)) {
        anyhow::bail!("--models names {} twice (entry {})", t.name(), i + 1);
    }
    if a.two_stream && !a.models.contains(&TemporalKind::None) {
        anyhow::bail!("--two-stream fuses the RGB TSN with a flow TSN: keep none in --models");
    }
    super::install_sigint();
    let start = Instant::now();
    let data_dir = a.out.join("data");
    let synth = SynthArgs {
        out: data_dir.clone(),
        train_per_class: a.train_per_class,
        val_per_class: a.val_per_class,
        pairs: a.pairs,
        size: a.size,
        min_frames: 16,
        max_frames: 32,
        seed: a.seed,
        objects: gateshift::synth::sources::FASHION_MNIST_DIR.into(),
        backgrounds: None,
    };
    let synth_cfg = synth.config();
    let stamp = data_dir.join("synth.toml");
    let fresh =
        std::fs::read_to_string(&stamp).ok().is_some_and(|t| t == toml::to_string(&synth_cfg).unwrap_or_default());
    if !fresh {
        eprintln!("[1/3] generating the time-reversal-pairs dataset in {}", data_dir.display());
        super::synth::run(synth)?;
    } else {
        eprintln!("[1/3] dataset {} is up to date", data_dir.display());
    }
    let mut rows = Vec::new();
    for (k, &temporal) in a.models.iter().enumerate() {
        let name = display(temporal);
        eprintln!("[2/3] training {name} on ResNet-Mini ({}/{})", k + 1, a.models.len());
        let cfg = train_config(&a, temporal, &data_dir);
        // OUT/tsn, OUT/gsm, …: the module's flag name (TSN's folder keeps its label).
        let dir = a.out.join(if temporal == TemporalKind::None { "tsn" } else { temporal.name() });
        let (outcome, train_seconds) = train_or_resume(&cfg, &dir)?;
        let (p, cfg_model) = open_trained(&dir.join("last.safetensors"), &cfg)?;
        let (normal, shuffled) = test_orders(&p, &cfg)?;
        eprintln!("      {name}: val top-1 {:.1}% (shuffled frames {:.1}%)", 100.0 * normal, 100.0 * shuffled);
        let cost = measure(&p, &cfg_model, a.batch_size, &outcome.state.history)?;
        let history = outcome.state.history;
        rows.push(Row { name, temporal, normal, shuffled, train_seconds, history, cost });
    }
    let two_stream = if a.two_stream { Some(two_stream(&a, &data_dir, &rows)?) } else { None };
    eprintln!("[3/3] writing the report");
    let table = report(&a, &rows, two_stream.as_deref(), start.elapsed().as_secs_f64())?;
    say!("{table}")?;
    if let Some(section) = &two_stream {
        say!("{section}")?;
    }
    say!("report: {}", a.out.join("report.md").display())?;
    Ok(())
}

/// The two-stream section (`--two-stream`), from the RGB TSN run and the demo's rows.
fn two_stream(a: &DemoArgs, data_dir: &Path, rows: &[Row]) -> Result<String> {
    let tsn = train_config(a, TemporalKind::None, data_dir);
    let mut rgb: Vec<&Row> = rows.iter().filter(|r| r.temporal == TemporalKind::None).collect();
    rgb.extend(rows.iter().filter(|r| r.temporal != TemporalKind::None));
    let rgb = rgb
        .into_iter()
        .map(|r| super::two_stream::RgbRow {
            name: r.name.to_string(),
            normal: r.normal,
            shuffled: r.shuffled,
            infer_ms: r.cost.infer_ms_per_clip,
        })
        .collect();
    super::two_stream::run(super::two_stream::Setup {
        out: &a.out,
        data_dir,
        tsn: &tsn,
        tsn_checkpoint: a.out.join("tsn").join("last.safetensors"),
        rgb,
        train: train_or_resume,
    })
}

/// Trains `cfg` into `dir`, continuing a run of the same configuration found there; returns
/// the outcome and the training time (the epochs' recorded times on a resume).
pub fn train_or_resume(cfg: &TrainConfig, dir: &Path) -> Result<(trainer::Outcome, f64)> {
    let resume = dir.join("last.safetensors").exists();
    // A run of ours that stopped before its first epoch ended is started again.
    let ours = std::fs::read_to_string(dir.join("config.toml")).is_ok_and(|t| t == cfg.to_toml().unwrap_or_default());
    let start = if resume { Start::Resume } else { Start::Fresh { overwrite: ours } };
    let t0 = Instant::now();
    let outcome = trainer::train(cfg, dir, start, true)?;
    if outcome.interrupted {
        anyhow::bail!("interrupted: run `gateshift demo` again to continue");
    }
    let seconds =
        if resume { outcome.state.history.iter().map(|m| m.seconds).sum() } else { t0.elapsed().as_secs_f64() };
    Ok((outcome, seconds))
}

/// The demo's recipe for one model: ResNet-Mini from scratch on the synthetic pairs.
fn train_config(a: &DemoArgs, temporal: TemporalKind, data_dir: &Path) -> TrainConfig {
    let mut cfg = TrainConfig::default();
    cfg.model.net.arch = Arch::ResnetMini;
    cfg.model.net.temporal = temporal;
    cfg.model.net.segments = 8;
    // From scratch: the modules that can start as the identity start off it (an exact
    // identity is a saddle they barely leave, `TemporalInit`).
    cfg.model.net.temporal_init = gateshift::model::temporal::TemporalInit::Perturbed;
    // From scratch on a small dataset: no dropout, no warm-up (both slow the start).
    cfg.model.net.dropout = 0.0;
    cfg.data.train_list = data_dir.join("train.txt");
    cfg.data.val_list = Some(data_dir.join("val.txt"));
    cfg.data.class_names = Some(data_dir.join("classes.txt"));
    cfg.data.input_size = a.size;
    cfg.data.scale_size = a.size;
    // Flipping turns "left to right" into "right to left": swap those labels.
    cfg.data.flip = true;
    cfg.data.flip_swap = gateshift::synth::flip_swap(a.pairs);
    cfg.data.workers = a.workers;
    cfg.optim.epochs = a.epochs;
    cfg.optim.batch_size = a.batch_size;
    cfg.optim.lr = a.lr;
    cfg.optim.warmup_epochs = 0;
    cfg.eval_every = 1;
    cfg.seed = a.seed;
    cfg.backend = a.backend.clone();
    cfg
}

/// The trained checkpoint, opened for inference on the run's backend, and its configuration.
fn open_trained(checkpoint: &Path, cfg: &TrainConfig) -> Result<(Predictor, gateshift::model::ModelConfig)> {
    let device = gateshift::backend::device(&cfg.backend)?;
    let data = trainer::load_data(cfg)?;
    let model_cfg = cfg.model_config(data.classes);
    let p = Predictor::open(checkpoint, Options::default(), &device, |_| Ok(model_cfg.clone()))?;
    Ok((p, model_cfg))
}

/// Val top-1 with normal and with shuffled frame order, on the run's own validation set.
fn test_orders(p: &Predictor, cfg: &TrainConfig) -> Result<(f64, f64)> {
    let data = trainer::load_data(cfg)?;
    let val = data.val.ok_or_else(|| anyhow::anyhow!("the demo run has no validation list"))?;
    let mut out = [0.0; 2];
    for (i, order) in [FrameOrder::Normal, FrameOrder::Shuffle].into_iter().enumerate() {
        let mut ds = (*val).clone();
        ds.pipeline.order = order;
        let options = EvalOptions { batch_size: 16, workers: cfg.data.workers, seed: cfg.seed, ..Default::default() };
        out[i] = p.evaluate(Arc::new(ds), &options)?.accuracy.top1();
    }
    Ok((out[0], out[1]))
}

/// Parameters and MACs of the model, its training step's time from the run's epochs, and a
/// one-clip forward pass timed here (one warm-up, then the median of five).
fn measure(p: &Predictor, cfg: &gateshift::model::ModelConfig, batch: usize, history: &[EpochMetrics]) -> Result<Cost> {
    let size = p.input_sizes(None, None)?.0 as usize;
    let x = Tensor::<4>::zeros([1, cfg.input_channels(), size, size], &p.device);
    // Counted as `gateshift info` counts them: the model as configured, BN not folded.
    let fresh = cfg.init(&Device::flex()).valid();
    let (_, stages) =
        cost::record(|| fresh.forward(Tensor::zeros([1, cfg.input_channels(), size, size], &Device::flex())));
    let time = || {
        let t0 = Instant::now();
        let _ = p.model.forward(x.clone()).into_data();
        t0.elapsed().as_secs_f64() * 1e3
    };
    time();
    let steps: Vec<f64> =
        history.iter().filter(|m| m.clips_per_s > 0.0).map(|m| 1e3 * batch as f64 / m.clips_per_s).collect();
    Ok(Cost {
        params: gateshift::train::optim::learnable_params(&fresh),
        macs: stages.iter().map(|(_, m)| m).sum(),
        train_ms_per_step: median(steps),
        infer_ms_per_clip: median((0..5).map(|_| time()).collect()),
    })
}

/// The median of `v` (NaN when empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn report(a: &DemoArgs, rows: &[Row], two_stream: Option<&str>, seconds: f64) -> Result<String> {
    let mut table = String::from(
        "| model | temporal module | val top-1 | val top-1, shuffled frames | drop | parameters | MMACs/clip | train ms/step | infer ms/clip | training time |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        table.push_str(&format!(
            "| {} ResNet-Mini | {} | {:.1}% | {:.1}% | {:.1} pts | {} | {:.1} | {:.0} | {:.1} | {:.0} s |\n",
            r.name,
            r.temporal.name(),
            100.0 * r.normal,
            100.0 * r.shuffled,
            100.0 * (r.normal - r.shuffled),
            r.cost.params,
            r.cost.macs as f64 / 1e6,
            r.cost.train_ms_per_step,
            r.cost.infer_ms_per_clip,
            r.train_seconds
        ));
    }
    let runs: Vec<(String, Vec<EpochMetrics>)> = rows.iter().map(|r| (r.name.to_string(), r.history.clone())).collect();
    gateshift::report::plot::curves_many(&runs, &a.out.join("curves.png"))?;
    let md = format!(
        "# gateshift demo: temporal reasoning on time-reversal pairs\n\n\
         Dataset: {} classes in {} time-reversal pairs ({}); {} training and {} validation clips per class,\n\
         {}×{} px, Fashion-MNIST objects over scikit-image photos. The second class of each pair is the first\n\
         one played backwards, so averaging per-frame scores (TSN) cannot tell a pair apart: chance within a\n\
         pair is 50%.\n\n\
         Recipe: ResNet-Mini from scratch, 8 segments, {} epochs, SGD lr {} (cosine, no warm-up), momentum 0.9,\n\
         weight decay 5e-4, no dropout, batch {}, gradient clip 20, multi-scale crop + flip (flip swaps the\n\
         mirrored pairs), backend {}, seed {}.\n\n{table}\n\
         Shuffled frames: the same clips with their 8 frames in a random order (`test --frame-order shuffle`).\n\
         Costs measured by this run on this machine: MACs of one clip's forward pass (`gateshift info`), a\n\
         training step's median time over the epochs (batch ÷ clips/s, data loading included), and a one-clip\n\
         forward pass of the trained checkpoint (median of five).\n\n\
         ![training curves](curves.png)\n\n{}Total time: {:.0} s.\n",
        2 * a.pairs,
        a.pairs,
        gateshift::synth::class_names(a.pairs).join(", "),
        a.train_per_class,
        a.val_per_class,
        a.size,
        a.size,
        a.epochs,
        a.lr,
        a.batch_size,
        a.backend,
        a.seed,
        two_stream.map(|s| format!("{s}\n")).unwrap_or_default(),
        seconds
    );
    write_atomic(&a.out.join("report.md"), md.as_bytes())?;
    Ok(table)
}
