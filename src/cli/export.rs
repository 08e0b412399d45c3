//! `gateshift export`: a checkpoint as a standard ONNX model (`gateshift::export`), for ONNX
//! Runtime, OpenVINO or TensorRT.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use gateshift::export::{self, Export};
use gateshift::infer::Options;
use gateshift::model::ModelConfig;

use super::open_checkpoint;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A gateshift or official checkpoint.
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub model: ModelConfig,
    /// Where to write the ONNX model.
    #[arg(long)]
    pub onnx: PathBuf,
    /// A fixed batch size (default: a dynamic `batch` dimension).
    #[arg(long, value_parser = super::count_up_to(gateshift::limits::MAX_BATCH))]
    pub batch: Option<usize>,
    /// Side of the frames the model takes (default: the checkpoint's training input, else the
    /// backbone's).
    #[arg(long, value_parser = super::side)]
    pub input_size: Option<u32>,
    /// Class names, one per line, stored in the model (default: the checkpoint's).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Allow a checkpoint that fills only the backbone (`--partial any`: whatever fits).
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "backbone")]
    pub partial: Option<gateshift::checkpoint::Fit>,
}

pub fn run(a: ExportArgs) -> Result<()> {
    let inputs: Vec<&std::path::Path> =
        [Some(&a.checkpoint), a.labels.as_ref()].into_iter().flatten().map(|p| p.as_path()).collect();
    gateshift::io::check_output_apart(&a.onnx, &inputs)?;
    let device = burn::tensor::Device::flex();
    let options = Options { fit: a.partial.unwrap_or_default(), ..Options::default() };
    let p = open_checkpoint(&a.model, &a.checkpoint, options, &device)?;
    let classes = p.class_names(a.labels.as_deref())?;
    let (size, _) = p.input_sizes(a.input_size, None)?;
    let e = Export { config: &p.config, size: size as usize, batch: a.batch, classes: classes.as_deref() };
    let bytes = export::onnx(&p.model, &e).with_context(|| format!("exporting {}", a.checkpoint.display()))?;
    gateshift::io::write_atomic(&a.onnx, &bytes)?;
    let batch = a.batch.map_or("dynamic".to_string(), |b| b.to_string());
    eprintln!(
        "wrote {} ({:.1} MB, opset {}): {} + {}, {} segments × {size}², batch {batch}",
        a.onnx.display(),
        bytes.len() as f64 / 1e6,
        export::graph::OPSET,
        p.config.arch.name(),
        p.config.temporal.label(),
        p.config.segments,
    );
    Ok(())
}
