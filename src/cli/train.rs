//! `gateshift train`: a TOML config (`--config`) and/or flags (flags win), written into the
//! run folder with the checkpoints, metrics and curves; `--resume RUN_DIR` continues a run.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use gateshift::data::list::ListFormat;
use gateshift::data::{FrameOrder, Sampling};
use gateshift::model::{Arch, ShiftPlace, TemporalKind};
use gateshift::train::config::TrainConfig;
use gateshift::train::run_dir::Start;
use gateshift::train::sgd::ParamPolicy;
use gateshift::train::trainer;

#[derive(Args, Debug, Default)]
pub struct TrainArgs {
    /// Run configuration (TOML); flags override its values.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run folder to create.
    #[arg(long, default_value = "runs/train")]
    pub out: PathBuf,
    /// Continue the run in this folder from its `last` checkpoint (its config.toml is used).
    #[arg(long, conflicts_with = "config")]
    pub resume: Option<PathBuf>,
    /// Start a new run in `--out` even if it holds an earlier run: that run's files
    /// (config.toml, checkpoints, metrics, curves) are removed first; nothing else is.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Backbone.
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
    /// Temporal module: none (TSN), tsm, gsm or gsf.
    #[arg(long, value_enum)]
    pub temporal: Option<TemporalKind>,
    /// Segments (frames) per clip.
    #[arg(long, value_parser = super::at_least_one::<usize>)]
    pub segments: Option<usize>,
    /// Number of classes (new_fc's outputs); 0: from the class names or the training list.
    #[arg(long, value_parser = super::at_least_one::<usize>)]
    pub classes: Option<usize>,
    /// Dropout before new_fc.
    #[arg(long)]
    pub dropout: Option<f64>,
    /// TSM: 1/shift_div of the channels shift each way.
    #[arg(long)]
    pub shift_div: Option<usize>,
    /// TSM on ResNets: where the shift goes (blockres: the residual branch).
    #[arg(long, value_enum)]
    pub shift_place: Option<ShiftPlace>,
    /// GSF: percentage of channels gated; none: 25 on ResNets, 100 elsewhere.
    #[arg(long)]
    pub gsf_ratio: Option<usize>,
    /// Initial weights (ImageNet or official checkpoint).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Let --init fill the backbone only (ImageNet weights, another task's checkpoint): every
    /// backbone tensor must be filled, the temporal modules and new_fc may stay new; `--partial
    /// any` loads whatever fits. What was left is listed.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "backbone")]
    pub partial: Option<gateshift::checkpoint::Fit>,
    /// Training list (frame folders `path frames label`, or videos `path label`).
    #[arg(long)]
    pub train_list: Option<PathBuf>,
    /// Validation list; none: no validation.
    #[arg(long)]
    pub val_list: Option<PathBuf>,
    /// Folder list paths are relative to (default: each list's folder).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// List format (auto: decided from the first entry).
    #[arg(long, value_enum)]
    pub list_format: Option<ListFormat>,
    /// Frame file template, e.g. img_{:05d}.jpg.
    #[arg(long)]
    pub template: Option<String>,
    /// Index of a clip's first frame file.
    #[arg(long)]
    pub first_index: Option<usize>,
    /// Class names, one per line (stored in the checkpoints).
    #[arg(long)]
    pub class_names: Option<PathBuf>,
    /// Network input side (crop), pixels; 0: the backbone's own.
    #[arg(long, value_parser = super::side)]
    pub input_size: Option<u32>,
    /// Short side frames are scaled to before cropping, pixels; 0: input side · 256/224.
    #[arg(long, value_parser = super::side)]
    pub scale_size: Option<u32>,
    /// Frame sampling (tsn: one frame per segment).
    #[arg(long, value_enum)]
    pub sampling: Option<Sampling>,
    /// No horizontal flip in training augmentation.
    #[arg(long)]
    pub no_flip: bool,
    /// Label swaps when flipping, e.g. 86:87,93:94,166:167.
    #[arg(long)]
    pub flip_swap: Option<String>,
    /// Data-loading worker threads (0: in the training thread).
    #[arg(long, value_parser = super::worker_count)]
    pub workers: Option<usize>,
    /// Skip (and report) samples that cannot be read instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
    /// Epochs to train.
    #[arg(long, value_parser = super::at_least_one::<usize>)]
    pub epochs: Option<usize>,
    /// Clips per batch.
    #[arg(long, value_parser = super::at_least_one::<usize>)]
    pub batch_size: Option<usize>,
    /// Batches whose gradients are accumulated per SGD step.
    #[arg(long, value_parser = super::at_least_one::<usize>)]
    pub iter_size: Option<usize>,
    /// Base learning rate (linear warm-up from 0.1·lr, then cosine).
    #[arg(long)]
    pub lr: Option<f64>,
    /// SGD momentum.
    #[arg(long)]
    pub momentum: Option<f64>,
    /// L2 weight decay (not on biases and BN, official policy).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Epochs of linear learning-rate warm-up.
    #[arg(long)]
    pub warmup_epochs: Option<usize>,
    /// Global gradient-norm clip.
    #[arg(long)]
    pub clip_gradient: Option<f64>,
    /// Per-parameter policy: official (biases lr×2 no decay, BN no decay) or uniform.
    #[arg(long, value_enum)]
    pub policy: Option<ParamPolicy>,
    /// Partial BN on (every BN but the first frozen).
    #[arg(long)]
    pub partial_bn: bool,
    /// Validate every N epochs.
    #[arg(long, value_parser = super::at_least_one::<usize>)]
    pub eval_every: Option<usize>,
    /// Crops per validation clip.
    #[arg(long, value_parser = super::crop_count)]
    pub val_crops: Option<usize>,
    /// Frame order in validation (a shuffled or reversed order tests temporal reasoning).
    #[arg(long, value_enum)]
    pub val_order: Option<FrameOrder>,
    /// Seed of initialisation, sampling, augmentation and dropout.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Backend: flex (pure Rust CPU); tch, tch-cuda[:N], cuda[:N], wgpu where compiled in.
    #[arg(long)]
    pub backend: Option<String>,
    /// fp32, or bf16 mixed precision (fp32 master weights; pays off on GPUs).
    #[arg(long, value_enum)]
    pub precision: Option<gateshift::train::precision::Precision>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// The resolved configuration: file (or defaults), then flags.
pub fn resolve(a: &TrainArgs) -> Result<TrainConfig> {
    let mut c = match &a.config {
        Some(p) => TrainConfig::read(p)?,
        None => TrainConfig::default(),
    };
    apply(a, &mut c);
    Ok(c)
}

/// A resumed run's configuration: its own `config.toml`, with only what does not change what
/// is trained taken from the flags (`--workers`: the loader gives the same batches for any
/// worker count; `--backend`). Any other setting given is refused, naming it, rather than
/// ignored.
fn resume_config(a: &TrainArgs, dir: &std::path::Path) -> Result<TrainConfig> {
    gateshift::train::run_dir::resumable(dir)?;
    let stored = TrainConfig::read(&dir.join("config.toml"))?;
    let mut wanted = stored.clone();
    apply(a, &mut wanted);
    let mut resumed = stored.clone();
    resumed.data.workers = wanted.data.workers;
    resumed.backend = wanted.backend.clone();
    let changed =
        gateshift::train::config::changed_keys(&toml::Value::try_from(&resumed)?, &toml::Value::try_from(&wanted)?, "");
    if !changed.is_empty() {
        bail!(
            "--resume continues {} exactly as its config.toml says; these flags would change it: {} \
             (only --workers and --backend may be given; start a new run to change the others)",
            dir.display(),
            changed.join(", ")
        );
    }
    Ok(resumed)
}

/// The flags given, over `c`.
fn apply(a: &TrainArgs, c: &mut TrainConfig) {
    macro_rules! set {
        ($field:expr, $v:expr) => {
            if let Some(v) = $v.clone() {
                $field = v;
            }
        };
    }
    set!(c.model.arch, a.arch);
    set!(c.model.temporal, a.temporal);
    set!(c.model.segments, a.segments);
    set!(c.model.classes, a.classes);
    set!(c.model.dropout, a.dropout);
    set!(c.model.shift_div, a.shift_div);
    set!(c.model.shift_place, a.shift_place);
    if a.gsf_ratio.is_some() {
        c.model.gsf_ratio = a.gsf_ratio;
    }
    if a.init.is_some() {
        c.model.init = a.init.clone();
    }
    set!(c.model.partial, a.partial);
    set!(c.data.train_list, a.train_list);
    if a.val_list.is_some() {
        c.data.val_list = a.val_list.clone();
    }
    if a.root.is_some() {
        c.data.root = a.root.clone();
    }
    set!(c.data.list_format, a.list_format);
    set!(c.data.template, a.template);
    set!(c.data.first_index, a.first_index);
    if a.class_names.is_some() {
        c.data.class_names = a.class_names.clone();
    }
    set!(c.data.input_size, a.input_size);
    set!(c.data.scale_size, a.scale_size);
    set!(c.data.sampling, a.sampling);
    if a.no_flip {
        c.data.flip = false;
    }
    set!(c.data.flip_swap, a.flip_swap);
    set!(c.data.workers, a.workers);
    c.data.skip_bad |= a.skip_bad;
    set!(c.optim.epochs, a.epochs);
    set!(c.optim.batch_size, a.batch_size);
    set!(c.optim.iter_size, a.iter_size);
    set!(c.optim.lr, a.lr);
    set!(c.optim.momentum, a.momentum);
    set!(c.optim.weight_decay, a.weight_decay);
    set!(c.optim.warmup_epochs, a.warmup_epochs);
    set!(c.optim.clip_gradient, a.clip_gradient);
    set!(c.optim.policy, a.policy);
    c.optim.partial_bn |= a.partial_bn;
    set!(c.eval_every, a.eval_every);
    set!(c.val_crops, a.val_crops);
    set!(c.val_order, a.val_order);
    set!(c.seed, a.seed);
    set!(c.backend, a.backend);
    set!(c.precision, a.precision);
}

pub fn run(a: TrainArgs) -> Result<()> {
    super::install_sigint();
    let (cfg, dir, start) = match &a.resume {
        Some(dir) => (resume_config(&a, dir)?, dir.clone(), Start::Resume),
        None => (resolve(&a)?, a.out.clone(), Start::Fresh { overwrite: a.overwrite }),
    };
    let outcome = trainer::train(&cfg, &dir, start, !a.quiet)?;
    if outcome.interrupted {
        bail!("interrupted: resume with `gateshift train --resume {}`", dir.display());
    }
    let s = &outcome.state;
    match (s.best_top1, s.best_epoch) {
        (Some(b), Some(e)) => {
            say!("done: best val top-1 {:.2}% at epoch {e}; run folder {}", 100.0 * b, dir.display())?
        }
        _ => say!("done: {} epochs; run folder {}", s.epochs_done, dir.display())?,
    }
    Ok(())
}

/// `train`'s flags with their defaults in `--help`: the values of `TrainConfig::default()` (the
/// official recipe), which a run takes where neither `--config` nor a flag sets them; "none"
/// for settings that are off unless given, "off" for switches.
pub fn with_defaults(cmd: clap::Command) -> clap::Command {
    let defaults = config_defaults();
    let args: Vec<(String, bool, bool)> = cmd
        .get_arguments()
        .filter(|a| !a.is_positional() && a.get_id() != "help")
        .map(|a| {
            let switch = matches!(a.get_action(), clap::ArgAction::SetTrue);
            (a.get_id().to_string(), switch, !a.get_default_values().is_empty())
        })
        .collect();
    args.into_iter().fold(cmd, |cmd, (id, switch, has_default)| {
        let default = match (defaults.get(id.as_str()), id.as_str()) {
            _ if has_default => return cmd,
            (_, "no_flip") => "flip on".to_string(),
            (Some(v), _) => v.clone(),
            (None, _) if switch => "off".to_string(),
            (None, _) => "none".to_string(),
        };
        cmd.mut_arg(id, |a| {
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            a.help(format!("{help} [default: {default}]"))
        })
    })
}

/// Every leaf of the default `TrainConfig` by its name (`batch_size` → `8`), as flags name them.
fn config_defaults() -> std::collections::BTreeMap<String, String> {
    fn leaves(v: &toml::Value, out: &mut std::collections::BTreeMap<String, String>, key: &str) {
        match v {
            toml::Value::Table(t) => t.iter().for_each(|(k, v)| leaves(v, out, k)),
            toml::Value::String(s) if s.is_empty() => {}
            toml::Value::String(s) => {
                out.insert(key.to_string(), s.clone());
            }
            other => {
                out.insert(key.to_string(), other.to_string());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    if let Ok(v) = toml::Value::try_from(TrainConfig::default()) {
        leaves(&v, &mut out, "");
    }
    out
}
