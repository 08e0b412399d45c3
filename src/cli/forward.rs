//! `gateshift forward`: stored input → logits, the way anyone checks parity.

use gateshift::train::precision::Precision;
use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use burn::tensor::Tensor;
use clap::Args;
use gateshift::checkpoint::safetensors;

use super::open_checkpoint;
use gateshift::model::ModelConfig;

#[derive(Args, Debug)]
pub struct ForwardArgs {
    /// Checkpoint (.pth, .pth.tar or .safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub model: ModelConfig,
    /// safetensors file with key `input`, shape (batch, segments·3, H, W).
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write `logits` (safetensors).
    #[arg(long)]
    pub output: PathBuf,
    /// Backend: flex (pure Rust), tch, tch-cuda[:N], auto.
    #[arg(long, default_value = "flex")]
    pub backend: String,
    /// Allow a checkpoint that fills only the backbone (`--partial any`: whatever fits).
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "backbone")]
    pub partial: Option<gateshift::checkpoint::Fit>,
    /// Inference arithmetic: fp32, or bf16 (weights and activations in bf16, scores f32; fast
    /// on GPUs, slower than fp32 on the CPU backends).
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: Precision,
}

pub fn run(a: ForwardArgs) -> Result<()> {
    gateshift::io::check_output_apart(&a.output, &[&a.checkpoint, &a.input])?;
    let device = gateshift::backend::device(&a.backend)?;
    let options = gateshift::infer::Options { fit: a.partial.unwrap_or_default(), precision: a.precision };
    let gateshift::infer::Predictor { model, config: cfg, .. } =
        open_checkpoint(&a.model, &a.checkpoint, options, &device)?;
    let (tensors, _) = safetensors::read(&a.input)?;
    let input = tensors
        .get("input")
        .ok_or_else(|| anyhow!("{} has no tensor named `input`", a.input.display()))?
        .clone()
        .convert::<f32>();
    let shape = input.shape().to_vec();
    if shape.len() != 4 {
        return Err(anyhow!(
            "{}: `input` must be 4-D (batch, segments·frames·planes, H, W), got {shape:?}",
            a.input.display()
        ));
    }
    let per_segment = cfg.input().channels_per_segment();
    if shape[1] != cfg.input_channels() {
        let hint = if shape[1] % per_segment == 0 {
            format!(" (for {} segments pass --segments {})", shape[1] / per_segment, shape[1] / per_segment)
        } else {
            String::new()
        };
        return Err(anyhow!(
            "{}: `input` has {} channels, but the model takes {} segments × {per_segment} = {}{hint}",
            a.input.display(),
            shape[1],
            cfg.segments,
            cfg.input_channels()
        ));
    }
    for side in [shape[2], shape[3]] {
        cfg.arch.check_input_size(side).with_context(|| format!("{}: `input` is {shape:?}", a.input.display()))?;
    }
    let x: Tensor<4> = Tensor::from_data(input, &device);
    let logits = model.forward(x).into_data().convert::<f32>();
    let mut out = BTreeMap::new();
    out.insert("logits".to_string(), logits);
    safetensors::write(&a.output, &out, &BTreeMap::new()).context("writing logits")?;
    eprintln!("wrote logits {:?} to {}", out["logits"].shape().to_vec(), a.output.display());
    Ok(())
}
