//! `gateshift info`: parameters and multiply-accumulates per clip, by stage.

use anyhow::Result;
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use clap::Args;
use gateshift::model::cost;

use gateshift::model::ModelConfig;

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelConfig,
    /// Input size (default: the backbone's own, e.g. 224).
    #[arg(long, value_parser = super::at_least_one::<usize>)]
    pub size: Option<usize>,
}

pub fn run(a: InfoArgs) -> Result<()> {
    let cfg = super::resolve_model(&a.model, None)?;
    let device = Device::flex();
    let model = cfg.init(&device).valid();
    let size = a.size.unwrap_or(cfg.arch.input().size);
    cfg.arch.check_input_size(size)?;
    let t = cfg.segments;
    let x = Tensor::<4>::zeros([1, cfg.input_channels(), size, size], &device);
    let (_, stages) = cost::record(|| model.forward(x));
    let total: u64 = stages.iter().map(|(_, m)| m).sum();
    let n = gateshift::train::optim::learnable_params(&model);
    say!(
        "model      {} + {} ({} segments, {} classes, {size}×{size})",
        cfg.arch.name(),
        cfg.temporal.name(),
        t,
        cfg.classes
    )?;
    let l = cfg.new_length;
    match cfg.modality {
        gateshift::model::Modality::Rgb => {}
        gateshift::model::Modality::Rgbdiff => {
            say!("input      rgbdiff: {l} differences of {} frames per segment, {} channels", l + 1, 3 * l)?
        }
        gateshift::model::Modality::Flow => say!("input      flow: {l} x/y fields per segment, {} channels", 2 * l)?,
    }
    say!("parameters {} ({:.2} M)", n, n as f64 / 1e6)?;
    say!("{:<14} {:>12} {:>12}", "stage", "GMACs/clip", "GMACs/frame")?;
    for (name, macs) in &stages {
        say!("{:<14} {:>12.4} {:>12.4}", name, *macs as f64 / 1e9, *macs as f64 / 1e9 / t as f64)?;
    }
    say!("{:<14} {:>12.4} {:>12.4}", "total", total as f64 / 1e9, total as f64 / 1e9 / t as f64)?;
    Ok(())
}
