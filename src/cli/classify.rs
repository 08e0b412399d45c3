//! `gateshift classify IMAGE…`: ImageNet classification with a 2D backbone's ImageNet weights
//! (EfficientNet-Lite from `gateshift assets fetch efficientnet-lite0`): the sanity check that
//! the backbone, its padding and its input normalisation are right before video fine-tuning.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, TensorData};
use clap::Args;
use gateshift::checkpoint::{self, StateDict};
use gateshift::data::rawframes::read_rgb;
use gateshift::data::transform::{self, Crop};
use gateshift::model::{Arch, ModelConfig, TemporalKind};

#[derive(Args, Debug)]
pub struct ClassifyArgs {
    /// Image files (PNG, JPEG).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "efficientnet-lite0")]
    pub arch: Arch,
    /// ImageNet weights (default: the cached `efficientnet-lite0` asset).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    #[arg(long, default_value_t = 5, value_parser = super::at_least_one::<usize>)]
    pub topk: usize,
    /// Class names, one per line (ImageNet order).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value = "flex")]
    pub backend: String,
}

/// Top-k (class, probability) of each image.
pub fn classify(a: &ClassifyArgs) -> Result<Vec<Vec<(usize, f32)>>> {
    let weights = match &a.weights {
        Some(w) => w.clone(),
        None => {
            let Some((asset, file)) = gateshift::assets::imagenet_weights(a.arch) else {
                bail!("--weights is required for {}", a.arch.name());
            };
            let root = gateshift::assets::cache_dir();
            asset.fetch(&root)?;
            asset.file(&root, &file)
        }
    };
    let device = gateshift::backend::device(&a.backend)?;
    let sd = StateDict::read(&weights)?;
    let classes = sd
        .tensors
        .get("_fc.weight")
        .or_else(|| sd.tensors.get("new_fc.weight"))
        .map(|w| w.shape()[0])
        .with_context(|| format!("{} has no classifier (`_fc.weight`)", weights.display()))?;
    // A one-segment TSN is a plain image classifier.
    let cfg = ModelConfig::new(a.arch, TemporalKind::None, 1, classes);
    let mut model = cfg.init(&device);
    checkpoint::load(&mut model, &cfg, &sd, gateshift::checkpoint::Fit::Strict)
        .with_context(|| format!("loading {}", weights.display()))?;
    let model = model.inference();
    let spec = a.arch.input();
    let size = spec.size as u32;
    let mut out = Vec::new();
    for path in &a.images {
        let img = read_rgb(path)
            .with_context(|| format!("{} is not an image classify can read (JPEG or PNG)", path.display()))?;
        let img = transform::resize_short(&img, size + 32);
        let (w, h) = img.dimensions();
        let crop = Crop { x: (w - size) / 2, y: (h - size) / 2, w: size, h: size, flip: false };
        let mut data = Vec::new();
        transform::crop_normalise_append(&img, crop, size, &spec, &mut data);
        let x = Tensor::<4>::from_data(TensorData::new(data, [1, 3, size as usize, size as usize]), &device);
        let p: Vec<f32> = softmax(model.forward(x), 1)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let mut ranked: Vec<(usize, f32)> = p.into_iter().enumerate().collect();
        ranked.sort_by(|x, y| y.1.total_cmp(&x.1));
        ranked.truncate(a.topk);
        out.push(ranked);
    }
    Ok(out)
}

pub fn run(a: ClassifyArgs) -> Result<()> {
    let names = a.labels.as_deref().map(gateshift::data::list::read_class_names).transpose()?;
    let name = |i: usize| names.as_ref().and_then(|n| n.get(i).cloned()).unwrap_or_else(|| format!("class {i}"));
    let results = classify(&a)?;
    if a.json {
        let v: Vec<_> = a
            .images
            .iter()
            .zip(&results)
            .map(|(p, r)| serde_json::json!({"image": p, "top": r.iter().map(|&(i, q)| serde_json::json!({"class": i, "label": name(i), "probability": q})).collect::<Vec<_>>()}))
            .collect();
        say!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    for (p, r) in a.images.iter().zip(&results) {
        say!("{}", p.display())?;
        for (k, &(i, q)) in r.iter().enumerate() {
            say!("{:>2}. {:>6.2}%  {}", k + 1, 100.0 * q, name(i))?;
        }
    }
    Ok(())
}
