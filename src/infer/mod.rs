//! Inference: a trained recognizer opened from its checkpoint together with what it was
//! trained for (input sizes, class names), and evaluation over clips. `test`, `predict`,
//! `stream`, `forward`, the demo and validation inside `train` all run models through here.

mod evaluate;
pub mod explain;
pub mod metrics;
pub mod online;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;

pub use evaluate::{EvalOptions, Evaluation, evaluate};

use crate::checkpoint::metadata::{self, CLASSES, RUN};
use crate::checkpoint::{self, Fit, StateDict};
use crate::data::ClipDataset;
use crate::data::list::read_class_names;
use crate::model::{ModelConfig, Recognizer};
use crate::precision::{self, Precision};
use crate::report::RunState;

/// A checkpoint's model ready for inference.
pub struct Predictor {
    /// BN folded into the convolutions, cast to the precision asked for.
    pub model: Recognizer,
    pub config: ModelConfig,
    /// The records stored beside the weights.
    pub metadata: BTreeMap<String, String>,
    pub device: Device,
}

/// How [`Predictor::open`] loads a checkpoint.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// How much of the model the file must fill (`Fit::Strict`: all of it, nothing left over).
    pub fit: Fit,
    pub precision: Precision,
}

impl Predictor {
    /// Opens the checkpoint at `path`: `configure` gives the model configuration from the file
    /// (its stored record, its tensors' names and shapes, and whatever the caller was told),
    /// the weights load as `options.fit` says, and every record gateshift reads from the
    /// metadata must parse, or the file is named now.
    pub fn open(
        path: &Path,
        options: Options,
        device: &Device,
        configure: impl FnOnce(&StateDict) -> Result<ModelConfig>,
    ) -> Result<Self> {
        let (model, config, metadata) = load(path, options.fit, device, configure)?;
        let model = precision::inference(&model, options.precision);
        Ok(Self { model, config, metadata, device: device.clone() })
    }

    /// Class names: from `file` if given, else those the checkpoint stores; as many as the
    /// model has classes.
    pub fn class_names(&self, file: Option<&Path>) -> Result<Option<Vec<String>>> {
        class_names(file, &self.metadata, self.config.classes)
    }

    /// Input and pre-crop sizes: those given, else what the run recorded, else the backbone's.
    pub fn input_sizes(&self, input: Option<u32>, scale: Option<u32>) -> Result<(u32, u32)> {
        input_sizes(&self.config, &self.metadata, input, scale)
    }

    /// Every video of `dataset` through the model: one score per class of each head.
    pub fn evaluate(&self, dataset: Arc<ClipDataset>, options: &EvalOptions) -> Result<Evaluation> {
        dataset.list.check_nouns(self.config.noun_classes)?;
        evaluate(&self.model, dataset, &self.config.heads(), &self.device, options)
    }
}

/// The model of the checkpoint at `path` in training form (see [`Predictor::open`]).
fn load(
    path: &Path,
    fit: Fit,
    device: &Device,
    configure: impl FnOnce(&StateDict) -> Result<ModelConfig>,
) -> Result<(Recognizer, ModelConfig, BTreeMap<String, String>)> {
    let sd = StateDict::read(path)?;
    let config = configure(&sd).with_context(|| path.display().to_string())?;
    stored_input(&sd.metadata).with_context(|| path.display().to_string())?;
    stored_class_names(&sd.metadata).with_context(|| path.display().to_string())?;
    let mut model = config.init(device);
    let report =
        checkpoint::load(&mut model, &config, &sd, fit).with_context(|| format!("loading {}", path.display()))?;
    if fit != Fit::Strict {
        report.print(&format!("loaded {}", path.display()));
    }
    Ok((model, config, sd.metadata))
}

/// The (input size, scale size) a run checkpoint was trained with, if it records them; a
/// run record that does not parse is an error, not a silent fall-back to default sizes.
pub fn stored_input(meta: &BTreeMap<String, String>) -> Result<Option<(u32, u32)>> {
    let state: Option<RunState> = metadata::get(meta, RUN)?;
    Ok(state.filter(|s| s.input_size > 0 && s.scale_size > 0).map(|s| (s.input_size, s.scale_size)))
}

/// The class names a checkpoint stores, if any.
pub fn stored_class_names(meta: &BTreeMap<String, String>) -> Result<Option<Vec<String>>> {
    metadata::get(meta, CLASSES)
}

/// Class names: from the file if given, else those stored in the checkpoint; as many as the
/// model has classes, or an error naming where they came from.
pub fn class_names(
    file: Option<&Path>,
    meta: &BTreeMap<String, String>,
    classes: usize,
) -> Result<Option<Vec<String>>> {
    let names = match file {
        Some(f) => Some(read_class_names(f)?),
        None => stored_class_names(meta)?,
    };
    if let Some(n) = &names
        && n.len() != classes
    {
        let source = file.map_or("the checkpoint".to_string(), |f| f.display().to_string());
        bail!("{source} holds {} class names but the model has {classes} classes", n.len());
    }
    Ok(names)
}

/// Input and pre-crop sizes: those given, else what the run checkpoint recorded, else the
/// backbone's default (input, input · 256/224); an input the backbone cannot take is an error.
pub fn input_sizes(
    config: &ModelConfig,
    meta: &BTreeMap<String, String>,
    input: Option<u32>,
    scale: Option<u32>,
) -> Result<(u32, u32)> {
    let stored = stored_input(meta)?;
    let size = input.or(stored.map(|s| s.0)).unwrap_or(config.arch.input().size as u32);
    let scale = scale.or(stored.filter(|s| s.0 == size).map(|s| s.1)).unwrap_or(size * 256 / 224);
    config.arch.check_input_size(size as usize)?;
    Ok((size, scale))
}
