//! A training run's full configuration (`run.toml`): the model, the data and the official
//! optimisation recipe as defaults. Written into every run folder as resolved.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::data::list::ListFormat;
use crate::data::{FrameNaming, FrameOrder, Sampling};
use crate::model::ModelConfig;
use crate::train::schedule::Schedule;
use crate::train::sgd::ParamPolicy;

/// `[model]`: the model configuration (one type with the checkpoints' record and the flags:
/// `ModelConfig`) and where its weights start from.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ModelSection {
    #[serde(flatten)]
    pub net: ModelConfig,
    /// Checkpoint to start from (ImageNet or official weights).
    #[serde(default)]
    pub init: Option<PathBuf>,
    /// How much of the model `init` must fill: `strict` (all), `backbone` (every backbone
    /// tensor; the temporal modules and `new_fc` may stay new) or `any` (`true` = backbone).
    #[serde(default)]
    pub partial: crate::checkpoint::Fit,
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
    /// After the warm-up: `cosine` (GSM, GSF) or `step` (×0.1 at each of `lr_steps`, TSM).
    pub schedule: Schedule,
    /// Epochs at which the step schedule divides the learning rate by 10.
    pub lr_steps: Vec<usize>,
    pub clip_gradient: f64,
    pub policy: ParamPolicy,
    /// Partial BN: every BatchNorm but the first (and GSM's own) frozen, as the official code.
    pub partial_bn: bool,
    /// Every BatchNorm frozen, the first too (running statistics, no updates): fine-tuning
    /// with small batches, and data-parallel runs equal to one rank without `--sync-bn`.
    pub freeze_bn: bool,
    /// Data-parallel runs: BatchNorm in training takes its statistics over the global batch
    /// (every rank's), PyTorch's `SyncBatchNorm`; off, each rank its own (DDP's default).
    pub sync_bn: bool,
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
            schedule: Schedule::Cosine,
            lr_steps: Vec::new(),
            clip_gradient: 20.0,
            policy: ParamPolicy::Official,
            partial_bn: false,
            freeze_bn: false,
            sync_bn: false,
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
    /// Write a line to `train.log` every N iterations (0: none; every iteration is in
    /// `metrics.jsonl` and the TensorBoard events regardless).
    pub print_freq: usize,
    pub seed: u64,
    pub backend: String,
    /// Several devices in this process, one rank each (`--devices flex,flex`,
    /// `cuda:0,cuda:1`); empty: the one device of `backend`. The batch size is per device.
    pub devices: Vec<String>,
    /// Data-parallel runs: how long a rank waits for the others in one collective before
    /// failing with the name of the rank it waits for (a hung device).
    pub collective_timeout_s: u64,
    /// fp32, or bf16 mixed precision (fp32 master weights).
    pub precision: crate::precision::Precision,
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
            print_freq: 20,
            seed: 0,
            backend: "flex".into(),
            devices: Vec::new(),
            collective_timeout_s: 1800,
            precision: Default::default(),
            val_crops: 1,
            val_order: FrameOrder::Normal,
        }
    }
}

impl TrainConfig {
    /// Reads a configuration file: what it sets over the defaults (the official recipe); a
    /// key the configuration does not have is refused by name.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = crate::io::read_regular(path, "config")?;
        let text = String::from_utf8(bytes).with_context(|| format!("config {} is not UTF-8", path.display()))?;
        let file: toml::Value = toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
        let unknown = unknown_keys(&file, &Self::schema(), "");
        if !unknown.is_empty() {
            bail!("config {}: unknown key(s) {}", path.display(), unknown.join(", "));
        }
        let defaults = toml::Value::try_from(Self::default())?;
        let mut merged = defaults.clone();
        merge(&mut merged, file.clone());
        merged.try_into().map_err(|e: toml::de::Error| {
            // The merged value has no lines: name the key of the file that does not fit, and its line.
            match misfit(&defaults, &file, "") {
                Some((key, why)) => {
                    let line = line_of(&text, &key).map_or(String::new(), |n| format!(" line {n}"));
                    anyhow::anyhow!("config {}{line}: {key}: {why}", path.display())
                }
                None => anyhow::anyhow!("config {}: {e}", path.display()),
            }
        })
    }

    /// Every key of the configuration, `None`-valued ones included (as JSON nulls), by section.
    pub fn schema() -> serde_json::Value {
        serde_json::to_value(Self::default()).expect("the default configuration serialises")
    }

    /// The section (`model`, `data`, `optim`; `None`: top level) that holds `key`.
    pub fn section_of(key: &str) -> Option<Option<String>> {
        let schema = Self::schema();
        let map = schema.as_object()?;
        if map.get(key).is_some_and(|v| !v.is_object()) {
            return Some(None);
        }
        map.iter().find(|(_, v)| v.as_object().is_some_and(|s| s.contains_key(key))).map(|(k, _)| Some(k.clone()))
    }

    /// Takes from `other` the settings that say where and how a run computes, not what it
    /// trains (loader threads, backend, devices, collective timeout, log frequency): a resumed run may
    /// change them — another world size continues the same global order.
    pub fn take_placement(&mut self, other: &TrainConfig) {
        self.data.workers = other.data.workers;
        self.backend = other.backend.clone();
        self.devices = other.devices.clone();
        self.collective_timeout_s = other.collective_timeout_s;
        self.print_freq = other.print_freq;
    }

    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }

    pub fn input_size(&self) -> u32 {
        if self.data.input_size > 0 { self.data.input_size } else { self.model.net.arch.input().size as u32 }
    }

    pub fn scale_size(&self) -> u32 {
        if self.data.scale_size > 0 { self.data.scale_size } else { self.input_size() * 256 / 224 }
    }

    pub fn naming(&self) -> Result<FrameNaming> {
        FrameNaming::for_modality(&self.data.template, self.data.first_index, self.model.net.modality)
    }

    /// The model configuration with `classes` resolved.
    pub fn model_config(&self, classes: usize) -> ModelConfig {
        ModelConfig { classes, ..self.model.net.clone() }
    }

    pub fn validate(&self) -> Result<()> {
        self.model_config(1).check()?;
        self.model.net.arch.check_input_size(self.input_size() as usize)?;
        self.data.sampling.check(&self.model.net.input())?;
        let o = &self.optim;
        if self.data.train_list.as_os_str().is_empty() {
            bail!("no training list (--train-list or data.train_list)");
        }
        if o.epochs == 0 || o.batch_size == 0 || o.iter_size == 0 || self.model.net.segments == 0 {
            bail!("epochs, batch_size, iter_size and segments must be positive");
        }
        if o.schedule == Schedule::Step && o.lr_steps.is_empty() {
            bail!(
                "optim.schedule = \"step\" needs optim.lr_steps, the epochs where the rate falls ×0.1 (TSM: [20, 40])"
            );
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
        at_most("devices", self.devices.len(), limits::MAX_DEVICES)?;
        if self.collective_timeout_s == 0 {
            bail!("collective_timeout_s must be at least 1");
        }
        at_most("collective_timeout_s", self.collective_timeout_s, limits::MAX_WAIT_S)?;
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

/// The keys of `file` that `schema` lacks, as `section.key`.
fn unknown_keys(file: &toml::Value, schema: &serde_json::Value, prefix: &str) -> Vec<String> {
    let Some(table) = file.as_table() else { return Vec::new() };
    let mut out = Vec::new();
    for (key, value) in table {
        let name = format!("{prefix}{key}");
        match schema.get(key) {
            None => out.push(name),
            Some(section) if section.is_object() => out.extend(unknown_keys(value, section, &format!("{name}."))),
            Some(_) => {}
        }
    }
    out
}

/// The first key of `file` (as `section.key`) that the configuration cannot take, set alone
/// over the defaults, and why.
fn misfit(defaults: &toml::Value, file: &toml::Value, prefix: &str) -> Option<(String, String)> {
    for (key, value) in file.as_table()? {
        let name = format!("{prefix}{key}");
        if let (Some(toml::Value::Table(_)), toml::Value::Table(_)) = (defaults.get(key), value) {
            if let Some(found) = misfit(defaults, value, &format!("{name}.")) {
                return Some(found);
            }
            continue;
        }
        let mut one = defaults.clone();
        let mut over = toml::Table::new();
        over.insert(key.clone(), value.clone());
        let over = prefix.trim_end_matches('.').split('.').filter(|s| !s.is_empty()).rev().fold(
            toml::Value::Table(over),
            |v, s| {
                let mut t = toml::Table::new();
                t.insert(s.to_string(), v);
                toml::Value::Table(t)
            },
        );
        merge(&mut one, over);
        if let Err(e) = one.try_into::<TrainConfig>() {
            return Some((name, e.message().to_string()));
        }
    }
    None
}

/// The 1-based line of `text` that sets `section.key` (or a top-level `key`).
fn line_of(text: &str, key: &str) -> Option<usize> {
    let (section, key) = key.rsplit_once('.').map_or(("", key), |(s, k)| (s, k));
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(header) = t.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            current = header.trim().to_string();
        } else if current == section && t.strip_prefix(key).is_some_and(|r| r.trim_start().starts_with('=')) {
            return Some(i + 1);
        }
    }
    None
}

/// `over` set into `base`, tables key by key.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(base), toml::Value::Table(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_official_recipe_and_round_trip_through_toml() {
        let c = TrainConfig::default();
        assert_eq!((c.optim.lr, c.optim.momentum, c.optim.weight_decay), (0.01, 0.9, 5e-4));
        assert_eq!((c.optim.warmup_epochs, c.optim.clip_gradient, c.model.net.dropout), (10, 20.0, 0.5));
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
        let cases: [(&Edit, &str); 17] = [
            (&|c| c.optim.momentum = -0.1, "momentum"),
            (&|c| c.optim.momentum = 1.0, "momentum"),
            (&|c| c.optim.weight_decay = -1e-4, "weight_decay"),
            (&|c| c.optim.weight_decay = f64::NAN, "weight_decay"),
            (&|c| c.optim.clip_gradient = -1.0, "clip_gradient"),
            (&|c| c.optim.clip_gradient = 0.0, "clip_gradient"),
            (&|c| c.eval_every = 0, "eval_every"),
            (&|c| c.data.interval = 0, "interval"),
            (&|c| (c.data.input_size, c.data.scale_size) = (224, 200), "scale_size 200"),
            (&|c| c.model.net.dropout = 1.0, "dropout"),
            (&|c| c.data.prefetch = 1_000_000_000_000, "data.prefetch"),
            (&|c| c.data.workers = 100_000, "data.workers"),
            (&|c| c.data.scale_size = u32::MAX, "data.scale_size"),
            (&|c| c.val_crops = 2, "val_crops"),
            (&|c| c.devices = vec!["flex".into(); 1000], "devices"),
            (&|c| c.collective_timeout_s = 0, "collective_timeout_s"),
            (&|c| c.collective_timeout_s = u64::MAX, "collective_timeout_s"),
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

    /// A value of the wrong type or range is refused naming the file, its line and the key
    /// (the merge over the defaults would otherwise lose both).
    #[test]
    fn a_value_that_does_not_fit_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("[model]\nsegments = -3\n", "line 2: model.segments"),
            ("seed = 1\n[optim]\nlr = \"fast\"\n", "line 3: optim.lr"),
            ("model = 3\n", "line 1: model"),
            ("[data]\n# a comment\nworkers = 1.5\n", "line 3: data.workers"),
        ];
        for (text, says) in cases {
            let path = dir.path().join("run.toml");
            std::fs::write(&path, text).unwrap();
            let e = TrainConfig::read(&path).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("run.toml"), "{text:?}: {e}");
        }
    }
}
