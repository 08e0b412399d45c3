//! The GSM module and TSM shift against a fixture of the official code
//! (`gsm_module.safetensors`: input, parameters, train-mode output and gradients for a given
//! upstream gradient, BN running statistics after the step, eval-mode output, TSM shift).
//! Shared by the parity tests and `gateshift check gsm-module`, which runs it on any backend
//! (the way to check a GPU build).

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::store::{ModuleSnapshot, bridge};
use burn::tensor::activation::relu;
use burn::tensor::{DType, Device, FloatDType, Tensor, TensorData};

use crate::model::temporal::{Gsm, TemporalShift};
use crate::ops::gate_shift::{self, unit};
use crate::precision::CastAll;

/// One compared quantity: `rel` = max|ours − official| / max|official|.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: &'static str,
    pub rel: f32,
    pub tolerance: f32,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.rel <= self.tolerance
    }
}

/// `(max |ours − reference|, max |reference|)` over all elements, as f32.
pub fn max_errors(ours: &TensorData, reference: &TensorData) -> Result<(f32, f32)> {
    if ours.shape() != reference.shape() {
        bail!("shape {:?}, reference has {:?}", ours.shape(), reference.shape());
    }
    let (a, b) = (ours.clone().convert::<f32>(), reference.clone().convert::<f32>());
    let a = a.as_slice::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let b = b.as_slice::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let err = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    Ok((err, b.iter().map(|y| y.abs()).fold(0.0f32, f32::max)))
}

fn check(name: &'static str, ours: TensorData, official: &TensorData, tolerance: f32) -> Result<Check> {
    let (err, scale) = max_errors(&ours, official).with_context(|| name.to_string())?;
    Ok(Check { name, rel: err / scale.max(f32::MIN_POSITIVE), tolerance })
}

fn get<'a>(f: &'a BTreeMap<String, TensorData>, key: &str) -> Result<&'a TensorData> {
    f.get(key).with_context(|| format!("the GSM fixture lacks {key}"))
}

/// Relative error allowed to the bfloat16 unit: inputs, parameters and output each rounded to
/// 8 mantissa bits (3.9e-3 relative per value).
const BF16_TOLERANCE: f32 = 2e-2;

/// The number of segments T a module fixture was made with (its metadata `T`).
pub fn fixture_segments(metadata: &BTreeMap<String, String>) -> Result<usize> {
    let t = metadata.get("T").context("the GSM fixture's metadata does not say its number of segments (T)")?;
    match t.parse::<usize>() {
        Ok(t) if t > 0 => Ok(t),
        _ => bail!("the GSM fixture's metadata says T = {t:?}, not a number of segments"),
    }
}

/// Runs the GSM checks on `device` for a fixture of `segments` frames per clip, through the
/// fused kernels (`fused`) or the composed reference.
pub fn gsm_module(
    f: &BTreeMap<String, TensorData>,
    segments: usize,
    device: &Device,
    fused: bool,
) -> Result<Vec<Check>> {
    if fused && !gate_shift::available(device, DType::F32) {
        bail!("no fused GSM kernels on {device:?}");
    }
    let x_data = get(f, "x")?.clone();
    let [bt, c, _, _] = x_data.shape()[..] else { bail!("fixture x is not 4-D") };
    if segments == 0 || bt % segments != 0 {
        bail!("fixture x has {bt} frames, not a multiple of {segments} segments");
    }
    let ad = device.clone().autodiff();
    let mut gsm = Gsm::new(c, segments, &ad);
    let mut packs = Vec::new();
    for k in ["conv3D.weight", "conv3D.bias", "bn.weight", "bn.bias"] {
        packs.push(bridge::from_data(get(f, &format!("param.{k}"))?.clone(), k.to_string(), None));
    }
    let applied = gsm.apply(packs, None, None, false);
    if !applied.errors.is_empty() || applied.applied.len() != 4 {
        bail!("GSM fixture parameters do not fit: {applied:?}");
    }
    let mut out = train_checks(&mut gsm, &x_data, f, fused)?;
    out.extend(eval_checks(&gsm, &x_data, f, device, fused)?);
    let shifted = TemporalShift::new(segments, 8).forward(Tensor::from_data(x_data, device));
    out.push(check("tsm shift (fold_div 8)", shifted.into_data(), get(f, "tsm.y")?, 0.0)?);
    Ok(out)
}

/// One training step of the fixture's GSM: output, gradients and BN running statistics.
fn train_checks(
    gsm: &mut Gsm,
    x_data: &TensorData,
    f: &BTreeMap<String, TensorData>,
    fused: bool,
) -> Result<Vec<Check>> {
    let ad = gsm.bn.weight.val().device();
    // The fixture's BN running statistics were calibrated on `x` before the recorded step
    // (they are not stored): reproduce that with one cumulative pass (momentum 1).
    gsm.bn.momentum = 1.0;
    let _ = gsm.forward_path(Tensor::from_data(x_data.clone(), &ad), fused);
    gsm.bn.momentum = 0.1;
    let x: Tensor<4> = Tensor::from_data(x_data.clone(), &ad).require_grad();
    let y = gsm.forward_path(x.clone(), fused);
    let mut out = vec![check("train-mode output", y.to_data(), get(f, "train.y")?, 1e-4)?];
    let grad_y: Tensor<4> = Tensor::from_data(get(f, "train.grad_y")?.clone(), &ad);
    let grads = (y * grad_y).sum().backward();
    let grad = |t: Option<Tensor<4>>| t.map(|g| g.into_data()).context("no gradient");
    out.push(check("grad x", grad(x.grad(&grads))?, get(f, "train.grad_x")?, 1e-3)?);
    let w = gsm.conv3D.weight.grad(&grads).context("no gradient")?.into_data();
    out.push(check("grad conv3D.weight", w, get(f, "train.grad.conv3D.weight")?, 1e-3)?);
    let bias = gsm.conv3D.bias.as_ref().context("GSM conv without bias")?;
    let b = bias.grad(&grads).context("no gradient")?.into_data();
    out.push(check("grad conv3D.bias", b, get(f, "train.grad.conv3D.bias")?, 1e-3)?);
    let bw = gsm.bn.weight.grad(&grads).context("no gradient")?.into_data();
    out.push(check("grad bn.weight", bw, get(f, "train.grad.bn.weight")?, 1e-3)?);
    let bb = gsm.bn.bias.grad(&grads).context("no gradient")?.into_data();
    out.push(check("grad bn.bias", bb, get(f, "train.grad.bn.bias")?, 1e-3)?);
    let rm = gsm.bn.running_mean.value_sync().into_data();
    out.push(check("bn running_mean", rm, get(f, "train.buffer_after.bn.running_mean")?, 1e-4)?);
    let rv = gsm.bn.running_var.value_sync().into_data();
    out.push(check("bn running_var", rv, get(f, "train.buffer_after.bn.running_var")?, 1e-4)?);
    Ok(out)
}

/// Eval mode after that step, then the inference unit ReLU(BN(GSM)) in float32 and, where
/// the unit has bfloat16 kernels, in bfloat16.
fn eval_checks(
    gsm: &Gsm,
    x_data: &TensorData,
    f: &BTreeMap<String, TensorData>,
    device: &Device,
    fused: bool,
) -> Result<Vec<Check>> {
    // Eval mode with the updated running statistics, on the plain device.
    let eval = gsm.clone().valid();
    let y = eval.forward_path(Tensor::from_data(x_data.clone(), device), fused);
    let mut out = vec![];
    out.push(check("eval-mode output", y.into_data(), get(f, "eval.y")?, 1e-4)?);
    // The inference unit ReLU(BN(GSM(x))) with both BNs in affine form (`Gsm::forward_unit`:
    // fused where the backend has the unit's kernels), the unit's BN here a copy of GSM's own,
    // against that BN and ReLU applied to the official eval output.
    let post = eval.bn.clone();
    let reference = relu(post.forward(Tensor::<4>::from_data(get(f, "eval.y")?.clone(), device)));
    let (mut unit, mut unit_post) = (eval.clone(), post);
    unit.bn.into_affine();
    unit_post.into_affine();
    let y = unit.forward_unit(Tensor::from_data(x_data.clone(), device), &unit_post, f32::INFINITY);
    out.push(check("eval-mode unit ReLU(BN(GSM))", y.into_data(), &reference.clone().into_data(), 1e-4)?);
    // The same on the map stored as the backbone hands it over (channels-last on libtorch,
    // where the CUDA unit then runs its two channels-last kernels).
    let x = unit::backbone_order(Tensor::from_data(x_data.clone(), device));
    let y = unit.forward_unit(x, &unit_post, f32::INFINITY);
    out.push(check("eval-mode unit, backbone order", y.into_data(), &reference.clone().into_data(), 1e-4)?);
    // Where the unit has bfloat16 kernels (libtorch's CUDA devices), the same in bfloat16:
    // module and map rounded to bf16, computed in float32, the output rounded to bf16.
    let x16 = Tensor::<4>::from_data(x_data.clone(), device).cast(DType::BF16);
    if gate_shift::unit_applies(&x16) {
        let (unit16, post16) =
            (unit.map(&mut CastAll(FloatDType::BF16)), unit_post.map(&mut CastAll(FloatDType::BF16)));
        let y = unit16.forward_unit(x16.clone(), &post16, f32::INFINITY).cast(DType::F32);
        out.push(check("bf16 unit", y.into_data(), &reference.clone().into_data(), BF16_TOLERANCE)?);
        let y = unit16.forward_unit(unit::backbone_order(x16), &post16, f32::INFINITY).cast(DType::F32);
        out.push(check("bf16 unit, backbone order", y.into_data(), &reference.into_data(), BF16_TOLERANCE)?);
    }
    Ok(out)
}
