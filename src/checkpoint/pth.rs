//! PyTorch checkpoint reading (zip format of torch ≥ 1.6 and the legacy pickle stream),
//! through burn-store's reader: a pickle *interpreter* for the tensor-rebuild opcodes only,
//! which never imports or executes anything named in the file.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, anyhow};
use burn::store::bridge;
use burn::store::pytorch_reader::PytorchReader;

use super::StateDict;

/// Reads an official checkpoint: a dict whose `state_dict` holds the weights (keys prefixed
/// `module.` when saved from DataParallel), or a bare state dict (torchvision ImageNet files).
pub fn read(path: &Path) -> Result<StateDict> {
    let reader = match PytorchReader::with_top_level_key(path, "state_dict") {
        Ok(r) => r,
        Err(nested_err) => PytorchReader::new(path).map_err(|e| {
            anyhow!("cannot read PyTorch checkpoint {}: {e} (as a training checkpoint: {nested_err})", path.display())
        })?,
    };
    let mut tensors = BTreeMap::new();
    for (key, tensor) in reader.into_tensors() {
        let name = key.strip_prefix("module.").unwrap_or(&key).to_string();
        let data = bridge::into_data(bridge::from_pytorch(tensor))
            .map_err(|e| anyhow!("checkpoint {}: tensor {name} cannot be read: {e:?}", path.display()))?;
        tensors.insert(name, data);
    }
    if tensors.is_empty() {
        return Err(anyhow!("checkpoint {} holds no tensors", path.display()));
    }
    Ok(StateDict { tensors, metadata: BTreeMap::new() })
}
