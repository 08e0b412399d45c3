//! `gateshift train`: a TOML config (`--config`) and/or flags (flags win), written into the
//! run folder with the checkpoints, metrics and curves; `--resume RUN_DIR` continues a run.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use gateshift::data::list::ListFormat;
use gateshift::data::{FrameOrder, Sampling};
use gateshift::model::ModelConfig;
use gateshift::train::config::TrainConfig;
use gateshift::train::run_dir::Start;
use gateshift::train::sgd::ParamPolicy;
use gateshift::train::trainer;
use serde::Serialize;

/// `train`'s flags. Each configuration flag is named as the configuration key it sets
/// (`--batch-size` → `optim.batch_size`, `--no-flip` → `data.flip`), so that [`apply`] sets the
/// flags given over the file's values without a hand copy per flag; the model flags are
/// `ModelConfig` itself.
#[derive(Args, Debug, Serialize)]
pub struct TrainArgs {
    /// Run configuration (TOML); flags override its values.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Run folder to create.
    #[arg(long, default_value = "runs/train")]
    #[serde(skip)]
    pub out: PathBuf,
    /// Continue the run in this folder from its `last` checkpoint (its config.toml is used).
    #[arg(long, conflicts_with = "config")]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
    /// Start a new run in `--out` even if it holds an earlier run: that run's files
    /// (config.toml, checkpoints, metrics, curves) are removed first; nothing else is.
    #[arg(long, conflicts_with = "resume")]
    #[serde(skip)]
    pub overwrite: bool,
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelConfig,
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
    #[arg(long = "no-flip", action = clap::ArgAction::SetFalse)]
    pub flip: bool,
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
    /// Base learning rate (linear warm-up from 0.1·lr, then --schedule).
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
    /// After the warm-up: cosine (GSM, GSF) or step (×0.1 at each --lr-steps epoch, TSM).
    #[arg(long, value_enum)]
    pub schedule: Option<gateshift::train::schedule::Schedule>,
    /// Epochs where the step schedule divides the rate by 10, e.g. 20,40.
    #[arg(long, value_delimiter = ',')]
    pub lr_steps: Option<Vec<usize>>,
    /// Global gradient-norm clip.
    #[arg(long)]
    pub clip_gradient: Option<f64>,
    /// Per-parameter policy: official (biases lr×2 no decay, BN no decay) or uniform.
    #[arg(long, value_enum)]
    pub policy: Option<ParamPolicy>,
    /// Partial BN on (every BN but the first frozen).
    #[arg(long)]
    pub partial_bn: bool,
    /// Every BN frozen, the first too (running statistics, no updates).
    #[arg(long)]
    pub freeze_bn: bool,
    /// Validate every N epochs.
    #[arg(long, value_parser = super::at_least_one::<usize>)]
    pub eval_every: Option<usize>,
    /// A line in the run's train.log every N iterations (0: none).
    #[arg(long)]
    pub print_freq: Option<usize>,
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
    /// Data-parallel on several devices of this process, one rank each: `cuda:0,cuda:1`,
    /// `tch-cuda:0,tch-cuda:1`, or `flex,flex` (CPU workers). The batch size is per device.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub devices: Option<Vec<String>>,
    /// Data-parallel runs: BatchNorm statistics over the global batch (SyncBatchNorm).
    #[arg(long)]
    pub sync_bn: bool,
    /// Data-parallel runs: seconds a rank waits for the others in one collective before
    /// failing, naming the rank it waited for.
    #[arg(long, value_parser = super::at_least_one::<u64>)]
    pub collective_timeout_s: Option<u64>,
    /// fp32, or bf16 mixed precision (fp32 master weights; pays off on GPUs).
    #[arg(long, value_enum)]
    pub precision: Option<gateshift::train::precision::Precision>,
    /// No progress bars.
    #[arg(long)]
    #[serde(skip)]
    pub quiet: bool,
}

/// The resolved configuration: file (or defaults), then flags.
pub fn resolve(a: &TrainArgs) -> Result<TrainConfig> {
    let mut c = match &a.config {
        Some(p) => TrainConfig::read(p)?,
        None => TrainConfig::default(),
    };
    apply(a, &mut c)?;
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
    apply(a, &mut wanted)?;
    let mut resumed = stored.clone();
    // Another world size continues the same global order; the global batch is per-device
    // batch × ranks, so keep it when changing the device count.
    resumed.take_placement(&wanted);
    let changed =
        gateshift::train::config::changed_keys(&toml::Value::try_from(&resumed)?, &toml::Value::try_from(&wanted)?, "");
    if !changed.is_empty() {
        bail!(
            "--resume continues {} exactly as its config.toml says; these flags would change it: {} \
             (only --workers, --backend, --devices, --collective-timeout-s and --print-freq may be given; start a new run to change the others)",
            dir.display(),
            changed.join(", ")
        );
    }
    Ok(resumed)
}

/// The flags given on the command line (not their defaults) over `c`: each sets the
/// configuration key of its own name, in whichever section holds it.
fn apply(a: &TrainArgs, c: &mut TrainConfig) -> Result<()> {
    let flags = toml::Value::try_from(a)?;
    let mut config = toml::Value::try_from(&*c)?;
    for (key, value) in flags.as_table().into_iter().flatten() {
        if !super::given(key) {
            continue;
        }
        let Some(section) = TrainConfig::section_of(key) else {
            bail!("--{} sets no configuration key", key.replace('_', "-"));
        };
        let table = match &section {
            Some(name) => config.get_mut(name.as_str()).and_then(toml::Value::as_table_mut),
            None => config.as_table_mut(),
        };
        table.expect("configuration sections are tables").insert(key.clone(), value.clone());
    }
    *c = config.try_into()?;
    Ok(())
}

pub fn run(a: TrainArgs) -> Result<()> {
    super::install_sigint();
    if a.backend.is_some() && a.devices.is_some() {
        bail!("--backend and --devices both given: --devices names each device with its backend (cuda:0,cuda:1)");
    }
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
            (_, "flip") => "flip on".to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Command, parse_from};

    /// `train` parsed from `args` (flags given recorded), resolved over the config `toml`.
    fn resolved(toml: &str, args: &[&str]) -> Result<TrainConfig> {
        let dir = tempfile::tempdir()?;
        let cfg = dir.path().join("run.toml");
        std::fs::write(&cfg, toml)?;
        let mut argv = vec!["gateshift", "train", "--config", cfg.to_str().unwrap()];
        argv.extend(args);
        let Command::Train(a) = parse_from(argv)?.command else { panic!("not train") };
        resolve(&a)
    }

    /// A flag given wins over the file; a flag left at its default does not (the file's
    /// `segments = 16` stays though `--segments` defaults to 8); the file's keys merge over
    /// the official defaults.
    #[test]
    fn flags_given_win_over_the_file_and_defaults_do_not() {
        let file = "[model]\nsegments = 16\n[data]\ntrain_list = \"t.txt\"\nflip = true\n[optim]\nlr = 0.1\n";
        let c = resolved(file, &[]).unwrap();
        assert_eq!((c.model.net.segments, c.optim.lr, c.data.flip, c.optim.epochs), (16, 0.1, true, 60));
        let c =
            resolved(file, &["--segments", "4", "--lr", "0.5", "--no-flip", "--partial", "--gsf-ratio", "50"]).unwrap();
        assert_eq!((c.model.net.segments, c.optim.lr, c.data.flip), (4, 0.5, false));
        assert_eq!((c.model.partial, c.model.net.gsf_ratio), (gateshift::checkpoint::Fit::Backbone, Some(50)));
        let c = resolved(file, &["--arch", "resnet50", "--val-list", "v.txt", "--skip-bad"]).unwrap();
        assert_eq!(c.model.net.arch, gateshift::model::Arch::Resnet50);
        assert_eq!((c.data.val_list.as_deref(), c.data.skip_bad), (Some(std::path::Path::new("v.txt")), true));
    }

    /// A key the configuration does not have is refused by name, in any section.
    #[test]
    fn unknown_keys_are_refused_by_name() {
        for (file, key) in [
            ("[model]\nsegmnets = 8\n", "model.segmnets"),
            ("lrr = 1\n", "lrr"),
            ("[optim]\nmomentun = 0.9\n", "optim.momentun"),
        ] {
            let e = resolved(file, &[]).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    /// Every configuration flag of `train` sets a configuration key of its own name.
    #[test]
    fn every_flag_names_a_configuration_key() {
        let cmd = <crate::cli::Cli as clap::CommandFactory>::command();
        let train = cmd.find_subcommand("train").unwrap();
        let plain = ["config", "out", "resume", "overwrite", "quiet", "help"];
        for arg in train.get_arguments().map(|a| a.get_id().as_str()).filter(|id| !plain.contains(id)) {
            assert!(TrainConfig::section_of(arg).is_some(), "--{arg} sets no configuration key");
        }
    }
}
