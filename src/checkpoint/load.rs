//! Loading a state dict into a recognizer: strictly (a checkpoint of this very model), the
//! backbone (ImageNet weights as published, or another task's checkpoint: every backbone
//! tensor must be filled, the temporal modules' new tensors and `new_fc` may stay at their
//! initial values), or whatever fits.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Result, bail};
use burn::module::{Module, ModuleVisitor, Param};
use burn::store::{ApplyError, ModuleSnapshot, PyTorchToBurnAdapter, bridge};
use burn::tensor::{DType, Tensor, TensorData};
use serde::{Deserialize, Deserializer, Serialize};

use super::{StateDict, TRAIN_STATE_PREFIX, names};
use crate::model::{Modality, ModelConfig, Recognizer, TemporalKind};

/// How much of the model a checkpoint must fill.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Every parameter from the file and every file tensor used.
    #[default]
    #[value(skip)]
    Strict,
    /// Every backbone tensor (convolutions, BNs and their statistics) filled; the temporal
    /// modules' new tensors and `new_fc` may stay at their initial values, tensors the model
    /// has no place for (an ImageNet classifier) are left unused. A file that fills no
    /// backbone tensor, or leaves one unfilled, is an error.
    Backbone,
    /// Whatever fits; everything else listed.
    Any,
}

/// `partial = true / false` (older run configurations) or `"strict" / "backbone" / "any"`.
impl<'de> Deserialize<'de> for Fit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Flag(bool),
            Name(String),
        }
        match Either::deserialize(d)? {
            Either::Flag(true) => Ok(Fit::Backbone),
            Either::Flag(false) => Ok(Fit::Strict),
            Either::Name(n) => match n.as_str() {
                "strict" => Ok(Fit::Strict),
                "backbone" => Ok(Fit::Backbone),
                "any" => Ok(Fit::Any),
                _ => Err(serde::de::Error::custom(format!("partial = {n:?}: expected strict, backbone or any"))),
            },
        }
    }
}

/// What a load did; names are official (checkpoint) names.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub applied: usize,
    /// Model parameters not found in the file (left at their initial value).
    pub missing: Vec<String>,
    /// File tensors the model has no place for.
    pub unused: Vec<String>,
    /// Tensors skipped for a shape mismatch.
    pub mismatched: Vec<String>,
    /// File keys whose TSM shift wrapper (`.net`) disagrees with the model's shifts (an
    /// error when strict; loaded, and listed, otherwise).
    pub layout: Vec<String>,
    /// Backbone tensors of the model, and how many of them the file filled.
    pub backbone: usize,
    pub backbone_filled: usize,
}

impl LoadReport {
    /// One line: "backbone N of M tensors filled; left at their initial value: …; not used
    /// from the file: …".
    pub fn summary(&self) -> String {
        let mut s = format!("backbone {} of {} tensors filled", self.backbone_filled, self.backbone);
        let left: Vec<&str> = self.missing.iter().chain(&self.mismatched).map(|m| first_word(m)).collect();
        if !left.is_empty() {
            let temporal = left.iter().filter(|p| is_temporal(p)).count();
            let mut parts: Vec<String> = Vec::new();
            if temporal > 0 {
                parts.push(format!("the temporal modules' {temporal} tensors"));
            }
            parts.extend(left.iter().filter(|p| !is_temporal(p)).map(|p| p.to_string()));
            let _ = write!(s, "; left at their initial value: {}", parts.join(", "));
        }
        if !self.unused.is_empty() {
            let _ = write!(s, "; not used from the file: {}", self.unused.join(", "));
        }
        if !self.layout.is_empty() {
            let _ = write!(s, "; the file's TSM shifts sit elsewhere at {} keys", self.layout.len());
        }
        s
    }

    /// The summary, then every tensor left, skipped or unused, on stderr.
    pub fn print(&self, what: &str) {
        eprintln!("{what}: {}", self.summary());
        for m in &self.missing {
            eprintln!("  left at initial value: {m}");
        }
        for m in &self.mismatched {
            eprintln!("  skipped (shape):       {m}");
        }
        for u in &self.unused {
            eprintln!("  unused from file:      {u}");
        }
        for l in &self.layout {
            eprintln!("  TSM layout:            {l}");
        }
    }
}

fn first_word(line: &str) -> &str {
    line.split(':').next().unwrap_or(line)
}

/// A temporal module's tensor, official (`gsm_X`, `…gsm.`, `gsf_…`) or internal (`.temporal.`).
fn is_temporal(name: &str) -> bool {
    name.contains(".temporal.") || name.split('.').any(|p| p.starts_with("gsm") || p.starts_with("gsf"))
}

fn is_backbone(internal: &str) -> bool {
    internal.starts_with("base_model.") && !internal.contains(".temporal.")
}

/// The shapes of a module's float tensors (parameters and BN statistics), by path: with
/// `variants`, enum variant names are part of the path (`base_model.BnInception.conv1…`, as
/// the optimizer's buffers are keyed), else not (`base_model.conv1…`, as in checkpoints).
pub fn parameter_shapes<M: Module>(model: &M, variants: bool) -> BTreeMap<String, Vec<usize>> {
    struct Shapes {
        variants: bool,
        path: Vec<String>,
        shapes: BTreeMap<String, Vec<usize>>,
    }
    impl ModuleVisitor for Shapes {
        fn enter_module(&mut self, name: &str, container: &str) {
            if self.variants || !container.starts_with("Enum:") {
                self.path.push(name.to_string());
            }
        }
        fn exit_module(&mut self, _: &str, container: &str) {
            if self.variants || !container.starts_with("Enum:") {
                self.path.pop();
            }
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.shapes.insert(self.path.join("."), p.lazy_shape().dims::<D>().to_vec());
        }
    }
    let mut v = Shapes { variants, path: Vec::new(), shapes: BTreeMap::new() };
    model.visit(&mut v);
    v.shapes
}

/// Tensors by model path, and the file key of each model path.
type ByPath = (Vec<(String, TensorData)>, BTreeMap<String, String>);

/// Whether `file` is `model` with one more dimension, of size 1: the Caffe-converted
/// BN-Inception and InceptionV3 ImageNet files store BN statistics as (1, C) (the official
/// code squeezes dimension 0 of every tensor); GST's code builds every 2D convolution as a
/// `Conv3d` of temporal size 1, (O, I, 1, kh, kw).
fn drops_to(file: &[usize], model: &[usize]) -> bool {
    file.len() == model.len() + 1
        && (0..file.len()).any(|d| file[d] == 1 && file[..d] == model[..d] && file[d + 1..] == model[d..])
}

/// A 2D network's 3×3 convolution loaded into GST's narrower spatial half: its first output
/// and input channels, as the official `resnet50()` slices the ImageNet weights
/// (`w[:n_out // alpha * (alpha - 1), :n_in // beta]`); `None` where `file` is not such a
/// superset of `model`'s shape.
fn gst_share(file: &TensorData, model: &[usize]) -> Option<TensorData> {
    let f = file.shape();
    let fits = f.len() == 4 && model.len() == 4 && f[2..] == model[2..] && f[0] >= model[0] && f[1] >= model[1];
    if !fits || f[..] == model[..] {
        return None;
    }
    let t = Tensor::<4>::from_data(file.clone(), &burn::tensor::Device::flex());
    Some(t.slice([0..model[0], 0..model[1], 0..model[2], 0..model[3]]).into_data())
}

/// An RGB network's first convolution `(O, 3, kh, kw)` loaded into an RGB-difference or flow
/// model's `(O, 3·L or 2·L, kh, kw)`: the RGB mean in every channel (`modality::widen_kernel`,
/// TSN's cross-modality initialisation); `None` where `file` is not such a kernel of `model`'s
/// shape.
fn widened_stem(file: &TensorData, model: &[usize], channels: usize) -> Option<TensorData> {
    let f = file.shape();
    let fits = f.len() == 4 && model.len() == 4 && f[1] == 3 && model[1] == channels && channels != 3;
    if !(fits && f[0] == model[0] && f[2..] == model[2..]) {
        return None;
    }
    let rgb = Tensor::<4>::from_data(file.clone(), &burn::tensor::Device::flex());
    Some(crate::model::modality::widen_kernel(rgb, model[1]).into_data())
}

/// For a first convolution whose input channels differ as RGB, RGB difference and flow do,
/// the flags that fit the file's.
fn stem_hint(expected: &[usize], found: &[usize]) -> String {
    let stem = |s: &[usize]| s.len() == 4 && s[1] > 0;
    if !(stem(expected) && stem(found)) || expected[0] != found[0] || expected[2..] != found[2..] {
        return String::new();
    }
    let c = found[1];
    let mut fits = Vec::new();
    if c == 3 {
        fits.push("an RGB network: --modality rgb, or --partial to widen it for RGB difference or flow".to_string());
    } else if c.is_multiple_of(3) {
        fits.push(format!("an RGB-difference network: --modality rgbdiff --new-length {}", c / 3));
    }
    if c != 3 && c.is_multiple_of(2) {
        fits.push(format!("a flow network: --modality flow --new-length {}", c / 2));
    }
    if fits.is_empty() { String::new() } else { format!(" ({})", fits.join("; or ")) }
}

/// The file's tensors by model path, as float32, and the file key each came from; a
/// dimension of 1 the model does not have is dropped ([`drops_to`]).
fn by_model_path(sd: &StateDict, cfg: &ModelConfig, shapes: &BTreeMap<String, Vec<usize>>, fit: Fit) -> Result<ByPath> {
    let mut sources: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for (key, data) in &sd.tensors {
        if key.ends_with(".num_batches_tracked") || key.starts_with(TRAIN_STATE_PREFIX) {
            continue;
        }
        let internal = names::to_internal(cfg.arch, key);
        // Two file tensors for one parameter: which one is meant cannot be known.
        if let Some(other) = sources.insert(internal.clone(), key.clone()) {
            bail!("the checkpoint holds both {other} and {key}, which name the same parameter");
        }
        let mut data = if data.dtype() == DType::F32 { data.clone() } else { data.clone().convert::<f32>() };
        if let Some(expected) = shapes.get(&internal)
            && drops_to(data.shape(), expected)
        {
            data = TensorData::new(data.try_to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?, expected.clone());
        }
        if fit != Fit::Strict
            && cfg.temporal == TemporalKind::Gst
            && let Some(expected) = shapes.get(&internal)
            && let Some(part) = gst_share(&data, expected)
        {
            data = part;
        }
        if fit != Fit::Strict
            && cfg.modality != Modality::Rgb
            && let Some(expected) = shapes.get(&internal)
            && let Some(wide) = widened_stem(&data, expected, cfg.input().backbone_channels())
        {
            data = wide;
        }
        out.push((internal, data));
    }
    Ok((out, sources))
}

/// File keys whose TSM shift wrapper (`.net`) sits where the model has none, or is absent
/// where the model has one — only for files that have such wrappers at all (an ImageNet
/// backbone has none, and fits any shift placement).
fn shift_layout_mismatches(sd: &StateDict, cfg: &ModelConfig) -> Vec<String> {
    if !sd.tensors.keys().any(|k| k.contains(".net.")) {
        return Vec::new();
    }
    let plain = |k: &str| k.replace(".net.", ".");
    let mut out = Vec::new();
    for key in sd.tensors.keys().filter(|k| !k.starts_with(TRAIN_STATE_PREFIX)) {
        let back = names::to_official(cfg.arch, cfg.temporal, cfg.shift_place, &names::to_internal(cfg.arch, key));
        if back != *key && plain(&back) == plain(key) {
            out.push(if key.contains(".net.") {
                format!("{key}: the file shifts here, the model does not")
            } else {
                format!("{key}: the model shifts here ({back}), the file does not")
            });
        }
    }
    out
}

/// Loads `sd` into `model` as `fit` says; every problem is named.
pub fn load(model: &mut Recognizer, cfg: &ModelConfig, sd: &StateDict, fit: Fit) -> Result<LoadReport> {
    let shapes = parameter_shapes(&*model, false);
    let (tensors, sources) = by_model_path(sd, cfg, &shapes, fit)?;
    let packs = tensors.into_iter().map(|(path, data)| bridge::from_data(data, path, None)).collect();
    let result = model.apply(packs, None, Some(Box::new(PyTorchToBurnAdapter)), true);
    let official = |p: &str| names::to_official(cfg.arch, cfg.temporal, cfg.shift_place, p);
    let backbone = shapes.keys().filter(|p| is_backbone(p)).count();
    let backbone_filled = result.applied.iter().filter(|p| is_backbone(p)).count();
    let mut report = LoadReport { applied: result.applied.len(), backbone, backbone_filled, ..Default::default() };
    let mut problems = String::new();
    // Whether leaving `path` of the model unfilled (or skipping it) is a problem.
    let required = |path: &str| match fit {
        Fit::Strict => true,
        Fit::Backbone => is_backbone(path),
        Fit::Any => false,
    };
    for err in &result.errors {
        match err {
            ApplyError::ShapeMismatch { path, expected, found } => {
                let line = format!(
                    "{}: model expects shape {:?}, file has {:?}",
                    official(path),
                    expected.as_slice(),
                    found.as_slice()
                );
                if required(path) {
                    let _ = writeln!(problems, "  shape mismatch  {line}{}", stem_hint(expected, found));
                }
                report.mismatched.push(line);
            }
            other => {
                let _ = writeln!(problems, "  {other}");
            }
        }
    }
    for (path, _) in &result.missing {
        if required(path) {
            let _ = writeln!(problems, "  missing in file {}", official(path));
        }
        report.missing.push(official(path));
    }
    for path in &result.unused {
        // Named as the file names it (an ImageNet file's `fc.weight`, not ours).
        let key = sources.get(path).cloned().unwrap_or_else(|| official(path));
        if fit == Fit::Strict {
            let _ = writeln!(problems, "  not in model    {key}");
        }
        report.unused.push(key);
    }
    for line in shift_layout_mismatches(sd, cfg) {
        if fit == Fit::Strict {
            let _ = writeln!(problems, "  TSM layout      {line}");
        }
        report.layout.push(line);
    }
    if fit == Fit::Backbone && backbone_filled == 0 {
        let _ =
            writeln!(problems, "  it fills none of the model's {backbone} backbone tensors (another architecture?)");
    }
    if !problems.is_empty() {
        let hint = match fit {
            Fit::Strict => "(use --partial to load a backbone, --partial any to load whatever fits)",
            Fit::Backbone => "(--partial any loads whatever fits)",
            Fit::Any => "",
        };
        bail!(
            "checkpoint does not fit the model ({} {} segments {} classes {}{}{}):\n{problems}{hint}",
            cfg.arch.name(),
            cfg.temporal.name(),
            cfg.segments,
            cfg.classes,
            match cfg.modality {
                Modality::Rgb => String::new(),
                m => format!(", {} {}", m.name(), cfg.new_length),
            },
            if cfg.temporal == TemporalKind::Tsm { format!(", shift {:?}", cfg.shift_place) } else { String::new() },
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A singleton dimension the model lacks is dropped wherever it is; nothing else.
    #[test]
    fn singleton_dimensions_drop_only_where_they_are_extra() {
        assert!(drops_to(&[1, 64], &[64]));
        assert!(drops_to(&[64, 3, 1, 7, 7], &[64, 3, 7, 7]));
        assert!(!drops_to(&[64, 3, 2, 7, 7], &[64, 3, 7, 7]));
        assert!(!drops_to(&[64, 3, 7, 7], &[64, 3, 7, 7]));
        assert!(!drops_to(&[1, 32], &[64]));
    }

    /// GST's spatial half takes the ImageNet 3×3's first channels; equal or unrelated shapes
    /// are left to the shape check.
    #[test]
    fn gst_takes_the_first_channels_of_a_wider_convolution() {
        let values: Vec<f32> = (0..4 * 4 * 9).map(|v| v as f32).collect();
        let file = TensorData::new(values, [4, 4, 3, 3]);
        let part = gst_share(&file, &[3, 2, 3, 3]).unwrap();
        assert_eq!(part.shape().to_vec(), [3, 2, 3, 3]);
        let v = part.try_to_vec::<f32>().unwrap();
        assert_eq!((v[0], v[9], v[18]), (0.0, 9.0, 36.0));
        assert!(gst_share(&file, &[4, 4, 3, 3]).is_none());
        assert!(gst_share(&file, &[3, 2, 1, 1]).is_none());
        assert!(gst_share(&file, &[5, 2, 3, 3]).is_none());
    }

    /// An RGB network fills an RGB-difference model of the same backbone (`--partial`): its
    /// stem takes the RGB kernel's mean in all `3·L` channels, the rest loads as it is; a
    /// strict load names the stem's shapes and the flags that fit them.
    #[test]
    fn an_rgb_network_fills_an_rgb_difference_model() {
        use crate::model::{Arch, Modality};
        let device = burn::tensor::Device::flex();
        let rgb_cfg = ModelConfig::new(Arch::ResnetMini, TemporalKind::Tsm, 2, 4);
        let rgb = rgb_cfg.init(&device);
        let sd = crate::checkpoint::state_dict(&rgb, &rgb_cfg).unwrap();
        let mut cfg = rgb_cfg.clone();
        (cfg.modality, cfg.new_length) = (Modality::Rgbdiff, 3);
        let mut diff = cfg.init(&device);
        let err = load(&mut diff, &cfg, &sd, Fit::Strict).unwrap_err().to_string();
        assert!(err.contains("[32, 9, 7, 7]") && err.contains("an RGB network: --modality rgb"), "{err}");
        assert!(err.contains("rgbdiff 3"), "{err}");
        let report = load(&mut diff, &cfg, &sd, Fit::Backbone).unwrap();
        assert!(report.mismatched.is_empty(), "{:?}", report.mismatched);
        let mut rgb = rgb;
        let (stem, wide) = (rgb.base_model.stem_mut().weight.val(), diff.base_model.stem_mut().weight.val());
        assert_eq!(wide.dims()[1], 9);
        let mean = stem.mean_dim(1).expand([wide.dims()[0], 9, 7, 7]);
        wide.into_data().assert_approx_eq::<f32>(&mean.into_data(), burn::tensor::Tolerance::absolute(1e-6));
        // The other way round, the hint names the file's modality.
        let sd = crate::checkpoint::state_dict(&diff, &cfg).unwrap();
        let err = load(&mut rgb, &rgb_cfg, &sd, Fit::Strict).unwrap_err().to_string();
        assert!(err.contains("--modality rgbdiff --new-length 3"), "{err}");
        let k = TensorData::new(vec![0f32; 9], [1, 3, 3, 1]);
        assert!(widened_stem(&k, &[1, 9, 3, 1], 9).is_some());
        assert!(widened_stem(&k, &[1, 8, 3, 1], 9).is_none());
        assert!(widened_stem(&k, &[1, 3, 3, 1], 3).is_none());
    }

    /// TSN's cross-modality initialisation: an RGB network fills a flow model's `2·L`-channel
    /// stem with its RGB mean (`--partial`); a flow network in an RGB model is named as one.
    #[test]
    fn an_rgb_network_fills_a_flow_model() {
        use crate::model::{Arch, Modality};
        let device = burn::tensor::Device::flex();
        let rgb_cfg = ModelConfig::new(Arch::ResnetMini, TemporalKind::None, 2, 4);
        let mut rgb = rgb_cfg.init(&device);
        let sd = crate::checkpoint::state_dict(&rgb, &rgb_cfg).unwrap();
        let mut cfg = rgb_cfg.clone();
        (cfg.modality, cfg.new_length) = (Modality::Flow, 5);
        let mut flow = cfg.init(&device);
        assert!(load(&mut flow, &cfg, &sd, Fit::Strict).unwrap_err().to_string().contains("flow 5"));
        assert!(load(&mut flow, &cfg, &sd, Fit::Backbone).unwrap().mismatched.is_empty());
        let (stem, wide) = (rgb.base_model.stem_mut().weight.val(), flow.base_model.stem_mut().weight.val());
        assert_eq!(wide.dims()[1], 10);
        let mean = stem.mean_dim(1).expand([wide.dims()[0], 10, 7, 7]);
        wide.into_data().assert_approx_eq::<f32>(&mean.into_data(), burn::tensor::Tolerance::absolute(1e-6));
        let sd = crate::checkpoint::state_dict(&flow, &cfg).unwrap();
        let err = load(&mut rgb, &rgb_cfg, &sd, Fit::Strict).unwrap_err().to_string();
        assert!(err.contains("--modality flow --new-length 5"), "{err}");
        assert!(!err.contains("rgbdiff"), "{err}");
    }
}
