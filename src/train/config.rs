//! A training run's full configuration (`run.toml`): the model, the data and the official
//! optimisation recipe as defaults. Written into every run folder as resolved.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::data::list::ListFormat;
use crate::data::{FrameNaming, FrameOrder, Sampling};
use crate::model::{Arch, ModelConfig, ShiftPlace, TemporalKind};
use crate::train::sgd::ParamPolicy;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    pub arch: Arch,
    pub temporal: TemporalKind,
    pub segments: usize,
    /// Number of classes; 0 = from the class-name file or the training list.
    pub classes: usize,
    pub dropout: f64,
    pub shift_div: usize,
    pub shift_place: ShiftPlace,
    /// GSF: percentage of channels gated (unset: 25 on ResNets, 100 elsewhere).
    pub gsf_ratio: Option<usize>,
    /// Checkpoint to start from (ImageNet or official weights).
    pub init: Option<PathBuf>,
    /// How much of the model `init` must fill: `strict` (all), `backbone` (every backbone
    /// tensor; the temporal modules and `new_fc` may stay new) or `any` (`true` = backbone).
    pub partial: crate::checkpoint::Fit,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            arch: Arch::BnInception,
            temporal: TemporalKind::Gsm,
            segments: 8,
            classes: 0,
            dropout: 0.5,
            shift_div: 8,
            shift_place: ShiftPlace::Blockres,
            gsf_ratio: None,
            init: None,
            partial: crate::checkpoint::Fit::Strict,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    pub train_list: PathBuf,
    pub val_list: Option<PathBuf>,
    /// Folder the list paths are relative to (default: the list file's folder).
    pub root: Option<PathBuf>,
    pub list_format: ListFormat,
    pub template: String,
    pub first_index: usize,
    pub class_names: Option<PathBuf>,
    /// Network input side; 0 = the backbone's default.
    pub input_size: u32,
    /// Short side frames are scaled to before cropping; 0 = input_size · 256/224.
    pub scale_size: u32,
    pub sampling: Sampling,
    pub interval: usize,
    pub flip: bool,
    /// Label swaps under flipping, "A:B,C:D".
    pub flip_swap: String,
    pub workers: usize,
    pub prefetch: usize,
    pub skip_bad: bool,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            train_list: PathBuf::new(),
            val_list: None,
            root: None,
            list_format: ListFormat::Auto,
            template: "img_{:05d}.jpg".into(),
            first_index: 1,
            class_names: None,
            input_size: 0,
            scale_size: 0,
            sampling: Sampling::Tsn,
            interval: 2,
            flip: true,
            flip_swap: String::new(),
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            prefetch: 32,
            skip_bad: false,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OptimSection {
    pub epochs: usize,
    pub batch_size: usize,
    /// Gradient accumulation: batches per optimizer step.
    pub iter_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub warmup_epochs: usize,
    pub clip_gradient: f64,
    pub policy: ParamPolicy,
    /// Partial BN: every BatchNorm but the first (and GSM's own) frozen, as the official code.
    pub partial_bn: bool,
}

impl Default for OptimSection {
    fn default() -> Self {
        Self {
            epochs: 60,
            batch_size: 8,
            iter_size: 1,
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 5e-4,
            warmup_epochs: 10,
            clip_gradient: 20.0,
            policy: ParamPolicy::Official,
            partial_bn: false,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub model: ModelSection,
    pub data: DataSection,
    pub optim: OptimSection,
    /// Evaluate on the validation list every N epochs (and after the last).
    pub eval_every: usize,
    pub seed: u64,
    pub backend: String,
    /// fp32, or bf16 mixed precision (fp32 master weights).
    pub precision: crate::train::precision::Precision,
    /// Test-time clips and crops used for validation during training.
    pub val_crops: usize,
    pub val_order: FrameOrder,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            model: ModelSection::default(),
            data: DataSection::default(),
            optim: OptimSection::default(),
            eval_every: 1,
            seed: 0,
            backend: "flex".into(),
            precision: Default::default(),
            val_crops: 1,
            val_order: FrameOrder::Normal,
        }
    }
}

impl TrainConfig {
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = crate::io::read_regular(path, "config")?;
        let text = String::from_utf8(bytes).with_context(|| format!("config {} is not UTF-8", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
    }

    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }

    pub fn input_size(&self) -> u32 {
        if self.data.input_size > 0 { self.data.input_size } else { self.model.arch.input().size as u32 }
    }

    pub fn scale_size(&self) -> u32 {
        if self.data.scale_size > 0 { self.data.scale_size } else { self.input_size() * 256 / 224 }
    }

    pub fn naming(&self) -> Result<FrameNaming> {
        FrameNaming::new(&self.data.template, self.data.first_index)
    }

    /// The model configuration with `classes` resolved.
    pub fn model_config(&self, classes: usize) -> ModelConfig {
        let m = &self.model;
        let mut cfg = ModelConfig::new(m.arch, m.temporal, m.segments, classes);
        cfg.dropout = m.dropout;
        cfg.shift_div = m.shift_div;
        cfg.shift_place = m.shift_place;
        cfg.gsf_ratio = m.gsf_ratio;
        cfg
    }

    pub fn validate(&self) -> Result<()> {
        self.model_config(1).check()?;
        self.model.arch.check_input_size(self.input_size() as usize)?;
        let o = &self.optim;
        if self.data.train_list.as_os_str().is_empty() {
            bail!("no training list (--train-list or data.train_list)");
        }
        if o.epochs == 0 || o.batch_size == 0 || o.iter_size == 0 || self.model.segments == 0 {
            bail!("epochs, batch_size, iter_size and segments must be positive");
        }
        if !(o.lr > 0.0 && o.lr.is_finite()) {
            bail!("lr must be positive");
        }
        if !(0.0..1.0).contains(&o.momentum) {
            bail!("momentum must be in [0, 1), got {}", o.momentum);
        }
        if !(o.weight_decay >= 0.0 && o.weight_decay.is_finite()) {
            bail!("weight_decay must be zero or positive, got {}", o.weight_decay);
        }
        // A negative bound would flip the gradient's sign; `inf` turns clipping off.
        if o.clip_gradient.is_nan() || o.clip_gradient <= 0.0 {
            bail!("clip_gradient must be positive (inf for no clipping), got {}", o.clip_gradient);
        }
        if self.eval_every == 0 || self.data.interval == 0 {
            bail!("eval_every and interval must be at least 1");
        }
        if self.scale_size() < self.input_size() {
            bail!(
                "scale_size {} is smaller than input_size {}: frames are scaled to scale_size before the input_size crop",
                self.scale_size(),
                self.input_size()
            );
        }
        crate::data::transform::check_crops(self.val_crops).context("val_crops")?;
        // Values that size threads, queues and buffers (prefetch = 1e12 once asked the
        // loader's queue for all of memory).
        use crate::limits::{self, at_most};
        at_most("data.workers", self.data.workers, limits::MAX_WORKERS)?;
        at_most("data.prefetch", self.data.prefetch, limits::MAX_PREFETCH)?;
        at_most("data.interval", self.data.interval, limits::MAX_LIST_FRAMES)?;
        at_most("optim.batch_size", o.batch_size, limits::MAX_BATCH)?;
        at_most("data.input_size", self.input_size(), limits::MAX_SIDE)?;
        at_most("data.scale_size", self.scale_size(), limits::MAX_SIDE)?;
        Ok(())
    }
}

/// The dotted keys whose values differ between two TOML tables.
pub fn changed_keys(a: &toml::Value, b: &toml::Value, prefix: &str) -> Vec<String> {
    match (a, b) {
        (toml::Value::Table(x), toml::Value::Table(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter()
                .flat_map(|k| match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => changed_keys(u, v, &format!("{prefix}{k}.")),
                    _ => vec![format!("{prefix}{k}")],
                })
                .collect()
        }
        _ if a == b => vec![],
        _ => vec![prefix.trim_end_matches('.').to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_official_recipe_and_round_trip_through_toml() {
        let c = TrainConfig::default();
        assert_eq!((c.optim.lr, c.optim.momentum, c.optim.weight_decay), (0.01, 0.9, 5e-4));
        assert_eq!((c.optim.warmup_epochs, c.optim.clip_gradient, c.model.dropout), (10, 20.0, 0.5));
        let back: TrainConfig = toml::from_str(&c.to_toml().unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(toml::from_str::<TrainConfig>("[optim]\nlr = 0.1\nbogus = 1\n").is_err(), "unknown keys are errors");
    }

    /// Settings that would train something other than what was asked (a negative clip
    /// bound flips the gradient, momentum ≥ 1 diverges) are refused, naming the setting.
    #[test]
    fn validate_refuses_nonsense_settings() {
        let mut ok = TrainConfig::default();
        ok.data.train_list = "train.txt".into();
        ok.validate().unwrap();
        type Edit = dyn Fn(&mut TrainConfig);
        let cases: [(&Edit, &str); 14] = [
            (&|c| c.optim.momentum = -0.1, "momentum"),
            (&|c| c.optim.momentum = 1.0, "momentum"),
            (&|c| c.optim.weight_decay = -1e-4, "weight_decay"),
            (&|c| c.optim.weight_decay = f64::NAN, "weight_decay"),
            (&|c| c.optim.clip_gradient = -1.0, "clip_gradient"),
            (&|c| c.optim.clip_gradient = 0.0, "clip_gradient"),
            (&|c| c.eval_every = 0, "eval_every"),
            (&|c| c.data.interval = 0, "interval"),
            (&|c| (c.data.input_size, c.data.scale_size) = (224, 200), "scale_size 200"),
            (&|c| c.model.dropout = 1.0, "dropout"),
            (&|c| c.data.prefetch = 1_000_000_000_000, "data.prefetch"),
            (&|c| c.data.workers = 100_000, "data.workers"),
            (&|c| c.data.scale_size = u32::MAX, "data.scale_size"),
            (&|c| c.val_crops = 2, "val_crops"),
        ];
        for (edit, says) in cases {
            let mut c = ok.clone();
            edit(&mut c);
            let e = c.validate().expect_err(says).to_string();
            assert!(e.contains(says), "{e:?} should mention {says:?}");
        }
        let mut no_clip = ok.clone();
        no_clip.optim.clip_gradient = f64::INFINITY;
        no_clip.validate().unwrap();
    }

    #[test]
    fn example_config_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gsm_bninception_something_v1.toml");
        let c = TrainConfig::read(Path::new(path)).unwrap();
        assert_eq!((c.model.classes, c.data.flip_swap.as_str()), (174, "86:87,93:94,166:167"));
        // The official command: --batch-size 16 --iter_size 2 --dropout 0.5 --lr 0.01
        // --warmup 10 --epochs 60 --eval-freq 5 --gd 20 --npb.
        let o = &c.optim;
        assert_eq!((o.batch_size, o.iter_size, o.lr, o.warmup_epochs, o.epochs), (16, 2, 0.01, 10, 60));
        assert_eq!((c.model.dropout, o.clip_gradient, o.partial_bn, c.eval_every), (0.5, 20.0, false, 5));
        assert_eq!((c.model.arch, c.model.temporal, c.model.segments), (Arch::BnInception, TemporalKind::Gsm, 8));
        c.validate().unwrap();
    }
}
