//! Checkpoints: reading official PyTorch `.pth(.tar)` files and safetensors, and loading them
//! strictly into a recognizer (every tensor used, every parameter filled, mismatches named).

pub mod i3d;
pub mod load;
pub mod metadata;
pub mod names;
pub mod npickle;
pub mod pth;
pub mod safetensors;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, bridge};
use burn::tensor::{DType, TensorData};

pub use load::{Fit, LoadReport, load, parameter_shapes};

use crate::model::{ModelConfig, Recognizer};

/// A state dict with official key names (no `module.` prefix) and f32/int tensors.
#[derive(Clone, Debug, Default)]
pub struct StateDict {
    pub tensors: BTreeMap<String, TensorData>,
    /// Extra information stored beside the weights (official `arch`, `epoch`; our model config).
    pub metadata: BTreeMap<String, String>,
}

impl StateDict {
    /// Reads `.pth`/`.pth.tar`/`.pt` (PyTorch) or `.safetensors`, by content: a file whose
    /// first bytes validate as a safetensors header (length, then a JSON object that fits
    /// the file) is safetensors, anything else is tried as PyTorch. Only regular files.
    pub fn read(path: &Path) -> Result<Self> {
        let sd = if is_safetensors(path)? {
            let (tensors, metadata) = safetensors::read(path)?;
            Self { tensors, metadata }
        } else {
            pth::read(path)?
        };
        for (name, data) in &sd.tensors {
            if data.dtype() == DType::F32
                && let Ok(values) = data.as_slice::<f32>()
                && let Some(bad) = values.iter().find(|v| !v.is_finite())
            {
                bail!("checkpoint {}: tensor {name} holds a non-finite value ({bad})", path.display());
            }
        }
        Ok(sd)
    }

    pub fn write_safetensors(&self, path: &Path) -> Result<()> {
        safetensors::write(path, &self.tensors, &self.metadata)
    }
}

/// Whether the regular file `path` starts with a valid safetensors header (see
/// [`safetensors::is_header`]); a header cut short by the end of the file is an error.
fn is_safetensors(path: &Path) -> Result<bool> {
    use std::io::Read;
    let file = crate::io::open_regular(path, "checkpoint")?;
    let len = file.metadata()?.len();
    let mut head = Vec::with_capacity(8);
    let mut file = file.take(8);
    file.read_to_end(&mut head).with_context(|| format!("reading checkpoint {}", path.display()))?;
    if let Some(n) = safetensors::header_len(&head, len) {
        file.set_limit(n as u64);
        file.read_to_end(&mut head).with_context(|| format!("reading checkpoint {}", path.display()))?;
        return Ok(safetensors::is_header(&head, len));
    }
    // A plausible header length past the end, before a JSON object: a safetensors file cut short.
    if head.len() == 8 {
        let n = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        let mut next = [0u8; 2];
        let opens_json = file.into_inner().read(&mut next).is_ok_and(|k| k == 2 && next == *b"{\"");
        if opens_json && n <= safetensors::MAX_HEADER {
            bail!(
                "checkpoint {} is a truncated safetensors file: its header declares {n} bytes, the file has {len}",
                path.display()
            );
        }
    }
    Ok(false)
}

/// Prefix of the optimizer state that run checkpoints carry beside the weights.
pub const TRAIN_STATE_PREFIX: &str = "optimizer.";

/// The model's weights as an official-format state dict (BN counters not included).
pub fn state_dict(model: &Recognizer, cfg: &ModelConfig) -> Result<StateDict> {
    let mut tensors = BTreeMap::new();
    for pack in model.collect(None, Some(Box::new(BurnToPyTorchAdapter)), true) {
        let name = names::to_official(cfg.arch, cfg.temporal, cfg.shift_place, &pack.name);
        let data = bridge::into_data(pack).map_err(|e| anyhow::anyhow!("reading tensor {name}: {e:?}"))?;
        tensors.insert(name, data);
    }
    let mut metadata = BTreeMap::new();
    self::metadata::set(&mut metadata, self::metadata::MODEL, cfg)?;
    Ok(StateDict { tensors, metadata })
}
