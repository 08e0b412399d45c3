//! `gateshift bench gsm`: the Gate-Shift Modules of BN-Inception (the 10 official places) or
//! EfficientNet-Lite0 (its 15 expanded blocks) alone, 8 segments at 224² input, fused kernels
//! against the composed reference,
//! inference and forward+backward; in inference also the whole GSM unit ReLU(BN(GSM(x))), op
//! by op against fused (`Gsm::forward_unit`). Less noisy than whole-model timings for seeing what GSM
//! itself costs.

use std::time::Instant;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{DType, Device, Distribution, FloatDType, Tensor};
use clap::Args;
use gateshift::model::Arch;
use gateshift::model::layers::{self, BatchNorm};
use gateshift::model::temporal::Gsm;
use gateshift::ops::gate_shift::{self, unit};
use gateshift::train::precision::{CastAll, CastFloats, Precision};

use super::BenchMode;

/// A GSM place: (layer, channels, side) at 224² input.
type Place = (&'static str, usize, usize);

/// BN-Inception's GSM places.
const BNINCEPTION_PLACES: [Place; 10] = [
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

/// EfficientNet-Lite0's GSM places (`efficientnet.rs`: on the expanded features of every
/// block that expands, before its depthwise convolution): (block, channels, side) at 224².
const LITE0_PLACES: [Place; 15] = [
    ("blocks.1", 96, 112),
    ("blocks.2", 144, 56),
    ("blocks.3", 144, 56),
    ("blocks.4", 240, 28),
    ("blocks.5", 240, 28),
    ("blocks.6", 480, 14),
    ("blocks.7", 480, 14),
    ("blocks.8", 480, 14),
    ("blocks.9", 672, 14),
    ("blocks.10", 672, 14),
    ("blocks.11", 672, 14),
    ("blocks.12", 1152, 7),
    ("blocks.13", 1152, 7),
    ("blocks.14", 1152, 7),
    ("blocks.15", 1152, 7),
];

/// The GSM places of `arch` and the clamp of its units (∞: ReLU, 6: ReLU6).
fn places(arch: Arch) -> Result<(&'static [Place], f32)> {
    match arch {
        Arch::BnInception => Ok((&BNINCEPTION_PLACES, f32::INFINITY)),
        Arch::EfficientnetLite0 => Ok((&LITE0_PLACES, 6.0)),
        other => bail!("bench gsm knows the GSM places of bninception and efficientnet-lite0, not {other:?}"),
    }
}

#[derive(Args, Debug)]
pub struct GsmBench {
    /// Whose GSM places: bninception or efficientnet-lite0.
    #[arg(long, value_enum, default_value = "bninception")]
    pub arch: Arch,
    #[arg(long, default_value_t = 8, value_parser = crate::cli::at_least_one::<usize>)]
    pub segments: usize,
    /// Clips per batch.
    #[arg(long, default_value_t = 1, value_parser = crate::cli::at_least_one::<usize>)]
    pub batch: usize,
    #[arg(long, value_enum, default_value = "infer")]
    pub mode: BenchMode,
    #[arg(long, default_value_t = 20, value_parser = crate::cli::at_least_one::<usize>)]
    pub iters: usize,
    #[arg(long, default_value = "flex")]
    pub backend: String,
    /// fp32, or bf16 (modules and maps in bf16; training keeps fp32 master weights): the
    /// fused kernels have bf16 versions on `tch-cuda` and CubeCL `cuda`.
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: Precision,
}

pub fn run(a: GsmBench) -> Result<()> {
    let base = gateshift::backend::device(&a.backend)?;
    let dtype = if a.precision == Precision::Bf16 { DType::BF16 } else { DType::F32 };
    if !gate_shift::available(&base, dtype) {
        bail!(
            "backend {} has no {} fused GSM kernels to compare (float32: flex, tch, tch-cuda, CubeCL; bfloat16: tch-cuda, cuda)",
            a.backend,
            a.precision.name()
        );
    }
    let (places, max) = places(a.arch)?;
    let train = a.mode == BenchMode::Train;
    let device = if train { base.clone().autodiff() } else { base.clone() };
    say!(
        "GSM of {:?}, {:?}, batch {} × {} segments, {}, backend {}: median ms over {} runs",
        a.arch,
        a.mode,
        a.batch,
        a.segments,
        a.precision.name(),
        a.backend,
        a.iters
    )?;
    // Inference also times the whole unit ReLU(BN(GSM(x))): op by op (the fused GSM, then
    // BN and ReLU) and fused (`Gsm::forward_unit` with both BNs in affine form).
    let columns: &[&str] = if train { &["fused", "composed"] } else { &["fused", "composed", "unit ops", "unit"] };
    let header: String = columns.iter().map(|c| format!(" {c:>9}")).collect();
    say!("{:<26}{header} {:>7}", "place (C, side)", "ratio")?;
    let mut totals = vec![0f64; columns.len()];
    for &(name, c, side) in places {
        let medians = time_place(&a, &base, &device, c, side, max, columns.len())?;
        for (t, m) in totals.iter_mut().zip(&medians) {
            *t += m;
        }
        print_row(&format!("{} ({c}, {side})", name.trim_start_matches("inception_")), &medians)?;
    }
    print_row(&format!("all {}", places.len()), &totals)?;
    Ok(())
}

/// The median ms of each column for one GSM of `c` channels on `side`² maps.
fn time_place(
    a: &GsmBench,
    base: &Device,
    device: &Device,
    c: usize,
    side: usize,
    max: f32,
    columns: usize,
) -> Result<Vec<f64>> {
    let train = a.mode == BenchMode::Train;
    let bf16 = a.precision == Precision::Bf16;
    let float = if bf16 { FloatDType::BF16 } else { FloatDType::F32 };
    let mut gsm = Gsm::new(c, a.segments, device);
    // A non-zero gate (the official init is zero), as after training.
    gsm.conv3D.weight =
        burn::module::Param::from_tensor(Tensor::random([2, c / 2, 3, 3, 3], Distribution::Normal(0.0, 0.05), device));
    let gsm = match (train, bf16) {
        (true, true) => gsm.map(&mut CastFloats(float)),
        (true, false) => gsm,
        (false, true) => gsm.valid().map(&mut CastAll(float)),
        (false, false) => gsm.valid(),
    };
    let post = BatchNorm::new(c, device).valid();
    let post = if bf16 { post.map(&mut CastAll(float)) } else { post };
    let (mut gsm_affine, mut post_affine) = (gsm.clone(), post.clone());
    if !train {
        gsm_affine.bn.into_affine();
        post_affine.into_affine();
    }
    let x = Tensor::<4>::random([a.batch * a.segments, c, side, side], Distribution::Normal(0.0, 1.0), device);
    // Through an identity 1×1 convolution, so that the map comes in the memory order a
    // backbone's convolution gives it (channels-last on libtorch, `ops::torch`).
    let x = layers::conv2d(&identity_conv(c, device), x).detach();
    // In bf16 the map is cast, then put back in the backbone's order should the cast
    // have changed it.
    let x = if bf16 { unit::backbone_order(x.cast(float)) } else { x };
    let run = |column: usize| -> Tensor<4> {
        match column {
            0 | 1 => gsm.forward_path(x.clone(), column == 0),
            2 => layers::clamp(post.forward(gsm.forward_path(x.clone(), true)), max),
            _ => gsm_affine.forward_unit(x.clone(), &post_affine, max),
        }
    };
    let sync = || base.sync().map_err(|e| anyhow::anyhow!("{e:?}"));
    // Round-robin over the columns, so that each sees the same cache and allocator state.
    let mut times = vec![Vec::with_capacity(a.iters); columns];
    for i in 0..a.iters + 3 {
        for (column, column_times) in times.iter_mut().enumerate() {
            sync()?;
            let t = Instant::now();
            if train {
                let x = x.clone().require_grad();
                let _ = gsm.forward_path(x, column == 0).sum().backward();
            } else {
                // The output stays on the device (`sync` waits for it): reading it back
                // would time a copy and an allocation, not the module.
                let y = run(column);
                sync()?;
                drop(y);
            }
            sync()?;
            if i >= 3 {
                column_times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    Ok(times
        .iter_mut()
        .map(|t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect())
}

/// One row: the times, then composed over fused (and in inference unit ops over unit).
fn print_row(label: &str, ms: &[f64]) -> Result<()> {
    let mut row = format!("{label:<26}");
    for m in ms {
        row += &format!(" {m:>9.2}");
    }
    row += &format!(" {:>6.2}×", ms[1] / ms[0]);
    if ms.len() == 4 {
        row += &format!(" {:>6.2}×", ms[2] / ms[3]);
    }
    say!("{row}")
}

/// A bias-free 1×1 convolution from `c` to `c` channels with the identity as its weight.
fn identity_conv(c: usize, device: &Device) -> Conv2d {
    let mut conv = Conv2dConfig::new([c, c], [1, 1]).with_bias(false).init(device);
    let eye: Tensor<2> = Tensor::eye(c, device);
    conv.weight = burn::module::Param::from_tensor(eye.reshape([c, c, 1, 1]));
    conv
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;
    use gateshift::model::TemporalKind;
    use gateshift::model::backbone::efficientnet::{EfficientNet, Lite};
    use gateshift::model::temporal::{Temporal, TemporalOpts};

    use super::*;

    /// The table's places, channel counts and sides are those of the GSMs EfficientNet-Lite0
    /// builds: a GSM on block i's expanded features sees the block's input side, 112 after the
    /// stem at 224² input, halved by every earlier block's depthwise stride.
    #[test]
    fn lite0_places_are_the_models() {
        let opts = TemporalOpts { shift_div: 8, gsf_ratio: 100, ..TemporalOpts::default() };
        let m = EfficientNet::new(Lite::Lite0, TemporalKind::Gsm, 8, opts, &Device::flex());
        let mut side = 224 / m.conv_stem.stride;
        let mut built = Vec::new();
        for (i, b) in m.blocks.iter().enumerate() {
            if let Some(Temporal::Gsm(g)) = &b.temporal {
                built.push((format!("blocks.{i}"), g.f_plane, side));
            }
            side /= b.depthwise_conv.stride;
        }
        let table: Vec<(String, usize, usize)> = LITE0_PLACES.iter().map(|&(n, c, s)| (n.to_string(), c, s)).collect();
        assert_eq!(built, table);
    }
}
