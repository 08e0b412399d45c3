//! `gateshift bench gsm`: the Gate-Shift Modules of BN-Inception alone (the 10 official
//! places, 8 segments at 224² input), fused kernels against the composed reference,
//! inference and forward+backward. Less noisy than whole-model timings for seeing what GSM
//! itself costs.

use std::time::Instant;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{DType, Device, Distribution, Tensor};
use clap::Args;
use gateshift::model::layers;
use gateshift::model::temporal::{Gsm, gsm_fused};

use super::bench::BenchMode;

/// BN-Inception's GSM places: (layer, channels, side) at 224² input.
const PLACES: [(&str, usize, usize); 10] = [
    ("inception_3a_1x1", 64, 28),
    ("inception_3b_1x1", 64, 28),
    ("inception_3c_3x3_reduce", 128, 28),
    ("inception_4a_1x1", 224, 14),
    ("inception_4b_1x1", 192, 14),
    ("inception_4c_1x1", 160, 14),
    ("inception_4d_1x1", 96, 14),
    ("inception_4e_3x3_reduce", 128, 14),
    ("inception_5a_1x1", 352, 7),
    ("inception_5b_1x1", 352, 7),
];

#[derive(Args, Debug)]
pub struct GsmBench {
    #[arg(long, default_value_t = 8)]
    pub segments: usize,
    /// Clips per batch.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[arg(long, value_enum, default_value = "infer")]
    pub mode: BenchMode,
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    #[arg(long, default_value = "flex")]
    pub backend: String,
}

pub fn run(a: GsmBench) -> Result<()> {
    let base = gateshift::backend::device(&a.backend)?;
    if !gsm_fused::available(&base, DType::F32) {
        bail!("backend {} has no fused GSM kernels to compare (they exist for flex)", a.backend);
    }
    let train = a.mode == BenchMode::Train;
    let device = if train { base.clone().autodiff() } else { base.clone() };
    println!(
        "GSM of BN-Inception, {:?}, batch {} × {} segments, backend {}: median ms over {} runs",
        a.mode, a.batch, a.segments, a.backend, a.iters
    );
    println!("{:<26} {:>9} {:>9} {:>7}", "place (C, side)", "fused", "composed", "ratio");
    let mut totals = [0f64; 2];
    for (name, c, side) in PLACES {
        let mut gsm = Gsm::new(c, a.segments, &device);
        // A non-zero gate (the official init is zero), as after training.
        gsm.conv3D.weight = burn::module::Param::from_tensor(Tensor::random(
            [2, c / 2, 3, 3, 3],
            Distribution::Normal(0.0, 0.05),
            &device,
        ));
        let gsm = if train { gsm } else { gsm.valid() };
        let x = Tensor::<4>::random([a.batch * a.segments, c, side, side], Distribution::Normal(0.0, 1.0), &device);
        // Through an identity 1×1 convolution, so that the map comes in the memory order a
        // backbone's convolution gives it (channels-last on libtorch, `torch_layers`).
        let x = layers::conv2d(&identity_conv(c, &device), x).detach();
        let mut medians = [0f64; 2];
        for (slot, fused) in [(0, true), (1, false)] {
            let mut times = Vec::with_capacity(a.iters);
            for i in 0..a.iters + 3 {
                base.sync().map_err(|e| anyhow::anyhow!("{e:?}"))?;
                let t = Instant::now();
                if train {
                    let x = x.clone().require_grad();
                    let _ = gsm.forward_path(x.clone(), fused).sum().backward();
                } else {
                    // The output stays on the device (`sync` waits for it): reading it back
                    // would time a copy and an allocation, not the module.
                    let y = gsm.forward_path(x.clone(), fused);
                    base.sync().map_err(|e| anyhow::anyhow!("{e:?}"))?;
                    drop(y);
                }
                base.sync().map_err(|e| anyhow::anyhow!("{e:?}"))?;
                if i >= 3 {
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            times.sort_by(f64::total_cmp);
            medians[slot] = times[times.len() / 2];
            totals[slot] += medians[slot];
        }
        let label = format!("{} ({c}, {side})", name.trim_start_matches("inception_"));
        println!("{label:<26} {:>9.2} {:>9.2} {:>6.2}×", medians[0], medians[1], medians[1] / medians[0]);
    }
    println!("{:<26} {:>9.2} {:>9.2} {:>6.2}×", "all 10", totals[0], totals[1], totals[1] / totals[0]);
    Ok(())
}

/// A bias-free 1×1 convolution from `c` to `c` channels with the identity as its weight.
fn identity_conv(c: usize, device: &Device) -> Conv2d {
    let mut conv = Conv2dConfig::new([c, c], [1, 1]).with_bias(false).init(device);
    let eye: Tensor<2> = Tensor::eye(c, device);
    conv.weight = burn::module::Param::from_tensor(eye.reshape([c, c, 1, 1]));
    conv
}
