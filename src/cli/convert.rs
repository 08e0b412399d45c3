//! `gateshift convert`: official `.pth(.tar)` ↔ safetensors, names unchanged.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use gateshift::checkpoint::StateDict;

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Input checkpoint (.pth, .pth.tar, .safetensors).
    pub input: PathBuf,
    /// Output file; `.safetensors` is written (PyTorch pickle output is not supported).
    pub output: PathBuf,
}

pub fn run(a: ConvertArgs) -> Result<()> {
    if a.output.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        bail!("{}: only .safetensors output is supported", a.output.display());
    }
    gateshift::io::check_output_apart(&a.output, &[&a.input])?;
    let sd = StateDict::read(&a.input)?;
    sd.write_safetensors(&a.output)?;
    eprintln!("wrote {} tensors to {}", sd.tensors.len(), a.output.display());
    Ok(())
}
