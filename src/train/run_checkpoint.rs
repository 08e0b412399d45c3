//! A run checkpoint — weights, momentum buffers, trainer state, the run's configuration and
//! class names in one safetensors file — and how a run starts from one: resumed exactly
//! (its configuration and every momentum buffer checked), or initialised from other weights.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, TensorData};

use crate::checkpoint::{self, StateDict, TRAIN_STATE_PREFIX, metadata};
use crate::model::{ModelConfig, Recognizer};
use crate::report::RunState;
use crate::train::config::TrainConfig;
use crate::train::sgd::Sgd;

/// The run checkpoint: weights, optimizer state, trainer state, configuration, class names.
pub fn run_checkpoint(
    model: &Recognizer,
    model_cfg: &ModelConfig,
    cfg: &TrainConfig,
    sgd: &Sgd,
    state: &mut RunState,
    names: Option<&Vec<String>>,
) -> Result<StateDict> {
    let mut sd = checkpoint::state_dict(model, model_cfg)?;
    if let Some(names) = names {
        metadata::set(&mut sd.metadata, metadata::CLASSES, names)?;
    }
    let buffers = sgd.state();
    state.momentum = Some(buffers.keys().cloned().collect());
    for (path, data) in buffers {
        sd.tensors.insert(format!("{TRAIN_STATE_PREFIX}momentum.{path}"), data);
    }
    metadata::set(&mut sd.metadata, metadata::RUN, state)?;
    // The whole configuration beside the weights, so that a damaged `config.toml` cannot
    // silently change a resumed run.
    sd.metadata.insert(metadata::TRAIN_CONFIG.into(), cfg.to_toml()?);
    Ok(sd)
}

/// Resumes from `last`: weights, momentum (every buffer the run recorded, each shaped as
/// its parameter), trainer state; the configuration it was trained with must be `cfg`'s.
pub fn resume(
    last: &Path,
    cfg: &TrainConfig,
    model_cfg: &ModelConfig,
    model: &mut Recognizer,
    sgd: &mut Sgd,
    device: &Device,
) -> Result<RunState> {
    let sd = StateDict::read(last)?;
    if let Some(stored) = sd.metadata.get(metadata::TRAIN_CONFIG) {
        let mut stored: TrainConfig =
            toml::from_str(stored).with_context(|| format!("the run configuration stored in {}", last.display()))?;
        stored.take_placement(cfg);
        let changed =
            crate::train::config::changed_keys(&toml::Value::try_from(&stored)?, &toml::Value::try_from(cfg)?, "");
        if !changed.is_empty() {
            bail!(
                "config.toml does not match the configuration {} was trained with ({}): was it edited or damaged? \
                 The run's own copy is the `{}` metadata of that file",
                last.display(),
                changed.join(", "),
                metadata::TRAIN_CONFIG
            );
        }
    }
    checkpoint::load(model, model_cfg, &sd, checkpoint::Fit::Strict)
        .with_context(|| format!("loading {}", last.display()))?;
    let state: RunState = metadata::get(&sd.metadata, metadata::RUN)
        .with_context(|| last.display().to_string())?
        .ok_or_else(|| anyhow::anyhow!("{} has no run state", last.display()))?;
    let buffers = momentum_buffers(&sd, model, &state).with_context(|| format!("resuming from {}", last.display()))?;
    sgd.load_state(buffers, device);
    Ok(state)
}

/// The momentum buffers of a run checkpoint, each checked against its parameter's size and
/// against the list of buffers the run recorded.
fn momentum_buffers(sd: &StateDict, model: &Recognizer, state: &RunState) -> Result<BTreeMap<String, TensorData>> {
    let prefix = format!("{TRAIN_STATE_PREFIX}momentum.");
    let sizes = checkpoint::parameter_shapes(model, true);
    let mut buffers = BTreeMap::new();
    for (k, v) in &sd.tensors {
        let Some(path) = k.strip_prefix(&prefix) else { continue };
        match sizes.get(path) {
            None => bail!("momentum buffer {k} is for a parameter the model does not have"),
            Some(shape) if shape.iter().product::<usize>() != v.num_elements() => {
                let n: usize = shape.iter().product();
                bail!(
                    "momentum buffer {k} has shape {:?} ({} values); its parameter has {n}",
                    v.shape(),
                    v.num_elements()
                )
            }
            Some(_) => buffers.insert(path.to_string(), v.clone()),
        };
    }
    if let Some(recorded) = &state.momentum {
        let missing: Vec<&String> = recorded.iter().filter(|p| !buffers.contains_key(*p)).collect();
        if !missing.is_empty() {
            bail!("the momentum buffers of {} parameter(s) are missing, first {}{}", missing.len(), prefix, missing[0]);
        }
    } else if buffers.is_empty() && state.epochs_done > 0 {
        bail!("it holds no momentum buffers");
    }
    Ok(buffers)
}

/// Loads the `init` weights of a new run, reporting a partial load.
pub fn initialise(cfg: &TrainConfig, model_cfg: &ModelConfig, model: &mut Recognizer) -> Result<()> {
    let Some(init) = &cfg.model.init else { return Ok(()) };
    let sd = StateDict::read(init)?;
    let report = checkpoint::load(model, model_cfg, &sd, cfg.model.partial)
        .with_context(|| format!("initialising from {}", init.display()))?;
    if cfg.model.partial != checkpoint::Fit::Strict {
        report.print(&format!("initialised from {}", init.display()));
    }
    Ok(())
}
