//! DeepMind's Kinetics-400 I3D weights (flax variables in a numpy pickle) as a state dict of
//! `model::i3d::I3d`, and their strict load.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Result, bail};
use burn::store::{ModuleSnapshot, bridge};
use burn::tensor::TensorData;

use crate::checkpoint::StateDict;
use crate::checkpoint::npickle::Array;
use crate::model::i3d::{I3d, MIXED};

/// Our module path of a flax block (`Mixed_4b` → `mixed.2`, `Conv3d_1a_7x7` → `conv3d_1a_7x7`).
fn block_name(flax_block: &str) -> Option<String> {
    let lower = flax_block.to_lowercase();
    match lower.as_str() {
        "conv3d_1a_7x7" | "conv3d_2b_1x1" | "conv3d_2c_3x3" => Some(lower),
        _ => {
            let i = MIXED.iter().position(|(n, _)| format!("mixed_{n}") == lower)?;
            Some(format!("mixed.{i}"))
        }
    }
}

/// Maps a flax unit path (`Mixed_3b/Branch_1/Conv3d_0b_3x3`) onto our module path
/// (`mixed.0.branch_1b`).
fn unit_path(parts: &[&str]) -> Option<String> {
    match parts {
        [block] => block_name(block),
        [block, branch, conv] => {
            let b = branch.strip_prefix("Branch_")?;
            let suffix = match (b, &conv[..8.min(conv.len())]) {
                ("0" | "3", _) => "",
                ("1" | "2", "Conv3d_0") => &conv[8..9],
                _ => return None,
            };
            Some(format!("{}.branch_{b}{suffix}", block_name(block)?))
        }
        _ => None,
    }
}

/// Converts the flax variables (`params/…`, `batch_stats/…`) into a state dict of this
/// module: kernels `(T, H, W, Cin, Cout)` → `(Cout, Cin, T, H, W)`, BN `bias`/`mean`/`var`
/// → `bias`/`running_mean`/`running_var` plus a unit `weight` (the weights have no scale).
pub fn from_flax(arrays: &BTreeMap<String, Array>) -> Result<StateDict> {
    let mut tensors = BTreeMap::new();
    for (key, a) in arrays {
        let parts: Vec<&str> = key.split('/').collect();
        let n = parts.len();
        if n < 4 {
            bail!("unexpected I3D variable {key}");
        }
        let (collection, unit, layer, leaf) = (parts[0], &parts[1..n - 2], parts[n - 2], parts[n - 1]);
        let target = if unit == ["Logits", "Conv3d_0c_1x1"] { Some("logits".to_string()) } else { unit_path(unit) };
        let Some(target) = target else { bail!("unexpected I3D variable {key}") };
        match (collection, layer, leaf) {
            ("params", "Conv_0", "kernel") => {
                let [t, h, w, ci, co] = a.shape[..] else { bail!("{key}: kernel of shape {:?}", a.shape) };
                let mut out = vec![0.0f32; a.data.len()];
                for (i, &v) in a.data.iter().enumerate() {
                    let (o, r) = (i % co, i / co);
                    let (c, r) = (r % ci, r / ci);
                    let (x, r) = (r % w, r / w);
                    let (y, z) = (r % h, r / h);
                    out[(((o * ci + c) * t + z) * h + y) * w + x] = v;
                }
                let name = if target == "logits" { "logits.weight".into() } else { format!("{target}.conv.weight") };
                tensors.insert(name, TensorData::new(out, [co, ci, t, h, w]));
            }
            ("params", "Conv_0", "bias") => {
                tensors.insert(format!("{target}.bias"), TensorData::new(a.data.clone(), [a.data.len()]));
            }
            ("params", "BatchNorm_0", "bias") => {
                let c = a.data.len();
                tensors.insert(format!("{target}.bn.bias"), TensorData::new(a.data.clone(), [c]));
                tensors.insert(format!("{target}.bn.weight"), TensorData::new(vec![1.0f32; c], [c]));
            }
            ("batch_stats", "BatchNorm_0", "mean" | "var") => {
                let name = if leaf == "mean" { "running_mean" } else { "running_var" };
                tensors.insert(format!("{target}.bn.{name}"), TensorData::new(a.data.clone(), [a.data.len()]));
            }
            _ => bail!("unexpected I3D variable {key}"),
        }
    }
    let mut metadata = BTreeMap::new();
    metadata.insert(crate::checkpoint::metadata::MODEL.into(), crate::checkpoint::metadata::I3D_MODEL.into());
    Ok(StateDict { tensors, metadata })
}

/// Loads a converted state dict strictly: every tensor used, every parameter filled.
pub fn load(mut model: I3d, sd: &StateDict) -> Result<I3d> {
    let packs: Vec<_> = sd.tensors.iter().map(|(k, d)| bridge::from_data(d.clone(), k.clone(), None)).collect();
    let result = model.apply(packs, None, None, true);
    let mut problems = String::new();
    for e in &result.errors {
        let _ = writeln!(problems, "  {e}");
    }
    for (path, _) in &result.missing {
        let _ = writeln!(problems, "  missing in file {path}");
    }
    for path in &result.unused {
        let _ = writeln!(problems, "  not in model    {path}");
    }
    if !problems.is_empty() {
        bail!("weights do not fit I3D:\n{problems}");
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_paths() {
        assert_eq!(unit_path(&["Conv3d_1a_7x7"]).unwrap(), "conv3d_1a_7x7");
        assert_eq!(unit_path(&["Mixed_3b", "Branch_0", "Conv3d_0a_1x1"]).unwrap(), "mixed.0.branch_0");
        assert_eq!(unit_path(&["Mixed_4b", "Branch_1", "Conv3d_0b_3x3"]).unwrap(), "mixed.2.branch_1b");
        assert_eq!(unit_path(&["Mixed_5c", "Branch_2", "Conv3d_0a_1x1"]).unwrap(), "mixed.8.branch_2a");
        assert_eq!(unit_path(&["Mixed_3c", "Branch_3", "Conv3d_0b_1x1"]).unwrap(), "mixed.1.branch_3");
        assert!(unit_path(&["Mixed_6a"]).is_none());
    }
}
