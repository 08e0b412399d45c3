//! `gateshift check backend --backend B`: one training step of a whole recognizer on backend
//! `B` against the same step on `flex` (itself checked against the official fixtures): logits,
//! loss and the gradient of every parameter; then inference as `test` runs it (fp32, and bf16
//! with `--bf16`) against flex's. It needs no fixture, so it is how a GPU build is
//! checked end to end (`scripts/device-bench.sh`).

use anyhow::{Result, bail};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use clap::Args;
use gateshift::checkpoint;
use gateshift::model::{Arch, ModelConfig, Recognizer, TemporalKind};
use gateshift::parity::max_errors;
use gateshift::train::optim::cross_entropy;
use gateshift::train::precision::{self, Precision};

#[derive(Args, Debug)]
pub struct BackendCheck {
    /// The backend to check (against flex).
    #[arg(long)]
    pub backend: String,
    #[arg(long, value_enum, default_value = "resnet18")]
    pub arch: Arch,
    #[arg(long, value_enum, default_value = "tsm")]
    pub temporal: TemporalKind,
    #[arg(long, default_value_t = 8, value_parser = super::at_least_one::<usize>)]
    pub segments: usize,
    /// Clips in the batch.
    #[arg(long, default_value_t = 2, value_parser = super::at_least_one::<usize>)]
    pub batch: usize,
    /// Frame side (default: the architecture's input size).
    #[arg(long, value_parser = super::at_least_one::<usize>)]
    pub size: Option<usize>,
    /// Largest relative error allowed on a gradient. A random-weight network amplifies float32
    /// rounding in the backward pass: libtorch's CPU gradients differ from flex's by up to
    /// 4.5e-2 on some ResNet-18 layers (docs/FIDELITY.md), so this catches wrong gradients,
    /// not rounding.
    #[arg(long, default_value_t = 1e-1)]
    pub grad_tol: f32,
    /// Also run the inference comparison in bf16 (weights and activations bf16), against
    /// flex's fp32 logits within bf16's rounding.
    #[arg(long)]
    pub bf16: bool,
}

/// Relative error allowed to bf16 inference logits against fp32 ones: every weight and
/// activation rounded to 8 significant bits (3.9e-3 each) through the whole network. On
/// libtorch's CPU (2026-11-27) BN-Inception, ResNet-18, ResNet-Mini and EfficientNet-Lite0,
/// with and without GSM or TSM, stay within 2.7e-3 to 4.6e-3; a wrong kernel is off by O(1).
const BF16_LOGITS_TOL: f32 = 2e-2;

/// Every parameter's gradient by path, copied out at once (see `model::probe`).
struct Grads<'a> {
    grads: &'a GradientsParams,
    path: Vec<String>,
    out: Vec<(String, TensorData)>,
}

impl ModuleVisitor for Grads<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let d = g.into_data();
            let owned = TensorData::from_bytes_vec(d.as_bytes().to_vec(), d.shape().clone(), d.dtype());
            self.out.push((self.path.join("."), owned));
        }
    }
}

/// Logits, loss and every gradient of one step of `model` on `input`.
fn step(model: &Recognizer, input: &TensorData, labels: &TensorData, device: &Device) -> Vec<(String, TensorData)> {
    let x: Tensor<4> = Tensor::from_data(input.clone(), device);
    let y: Tensor<1, Int> = Tensor::from_data(labels.clone(), device);
    let logits = model.forward(x);
    let loss = cross_entropy(logits.clone(), y);
    let mut out = vec![("logits".to_string(), logits.into_data()), ("loss".to_string(), loss.clone().into_data())];
    let grads = GradientsParams::from_grads(loss.backward(), model);
    let mut visitor = Grads { grads: &grads, path: Vec::new(), out: Vec::new() };
    model.visit(&mut visitor);
    out.extend(visitor.out);
    out
}

/// The training step's logits, loss and gradients on the target against flex's: the names of
/// those outside their tolerance (each printed).
fn compare_step(expected: &[(String, TensorData)], got: &[(String, TensorData)], grad_tol: f32) -> Result<Vec<String>> {
    let errors = expected
        .iter()
        .zip(got)
        .map(|((name, e), (_, g))| max_errors(g, e).map_err(|m| anyhow::anyhow!("{name}: {m}")))
        .collect::<Result<Vec<_>>>()?;
    // Small gradients hold mostly rounding noise: errors are measured against at least 1e-4 of
    // the largest gradient.
    let largest = errors.iter().skip(2).map(|&(_, scale)| scale).fold(0.0f32, f32::max);
    let floor = 1e-4 * largest;
    // The bias of a convolution feeding a training-mode BN directly (a unit without temporal
    // module) has a zero gradient in exact arithmetic: both sides hold rounding noise, which
    // grows with the feature map and differs between BN implementations. Those are checked to
    // be noise (both below 1e-3 of the largest gradient), not compared.
    let temporal_units: std::collections::HashSet<&str> =
        expected.iter().filter_map(|(name, _)| name.split_once(".temporal.").map(|(unit, _)| unit)).collect();
    let exactly_zero = |name: &str| name.strip_suffix(".conv.bias").is_some_and(|unit| !temporal_units.contains(unit));
    let (mut failed, mut worst) = (Vec::new(), (String::new(), 0.0f32));
    for (i, ((name, _), &(err, scale))) in expected.iter().zip(&errors).enumerate() {
        if i >= 2 && exactly_zero(name) {
            // Our largest |g| is at most the reference's plus the largest difference.
            let noise = (scale + err) / largest.max(f32::MIN_POSITIVE);
            if noise > 1e-3 {
                say!("{name:<48} |g| {noise:.3e} of the largest gradient, should be 0  FAIL")?;
                failed.push(name.clone());
            }
            continue;
        }
        let scale = if i < 2 { scale } else { scale.max(floor) };
        let rel = if scale > 0.0 { err / scale } else { err };
        let tol = if name == "logits" || name == "loss" { 1e-4 } else { grad_tol };
        if rel > worst.1 && name != "logits" && name != "loss" {
            worst = (name.clone(), rel);
        }
        if name == "logits" || name == "loss" || rel > tol {
            say!("{name:<48} rel {rel:.3e}  tol {tol:.0e}  {}", if rel <= tol { "ok" } else { "FAIL" })?;
        }
        if rel > tol {
            failed.push(name.clone());
        }
    }
    let at = if worst.0.is_empty() { "all equal".to_string() } else { worst.0 };
    say!("{} gradients; largest relative error {:.3e} ({at})", expected.len() - 2, worst.1)?;
    Ok(failed)
}

pub fn run(a: BackendCheck) -> Result<()> {
    let target = gateshift::backend::device(&a.backend)?;
    if let Some(name) = gateshift::backend::describe(&target) {
        say!("device: {name}")?;
    }
    let mut cfg = ModelConfig::new(a.arch, a.temporal, a.segments, 174);
    cfg.dropout = 0.0;
    cfg.check()?;
    let size = a.size.unwrap_or(a.arch.input().size);
    a.arch.check_input_size(size)?;
    // One random model, moved to the target through an official-format state dict.
    let reference_device = Device::flex().autodiff();
    reference_device.seed(7);
    let reference = cfg.init(&reference_device);
    let weights = checkpoint::state_dict(&reference, &cfg)?;
    let mut model = cfg.init(&target.clone().autodiff());
    checkpoint::load(&mut model, &cfg, &weights, gateshift::checkpoint::Fit::Strict)?;
    let input =
        Tensor::<4>::random([a.batch, 3 * a.segments, size, size], Distribution::Normal(0.0, 1.0), &Device::flex())
            .into_data();
    let labels = TensorData::new((0..a.batch as i64).map(|i| (i * 37) % 174).collect::<Vec<i64>>(), [a.batch]);
    let expected = step(&reference, &input, &labels, &reference_device);
    let got = step(&model, &input, &labels, &target.clone().autodiff());
    if expected.len() != got.len() {
        bail!("{} gradients on flex, {} on {}", expected.len(), got.len(), a.backend);
    }
    let mut failed = compare_step(&expected, &got, a.grad_tol)?;
    // Inference as `test` and `predict` run it (BN folded, fused GSM units, channels-last on
    // libtorch), with the running statistics that step left, against flex's.
    let expected_eval = reference.inference().forward(Tensor::from_data(input.clone(), &Device::flex())).into_data();
    let precisions: &[Precision] = if a.bf16 { &[Precision::Fp32, Precision::Bf16] } else { &[Precision::Fp32] };
    for &p in precisions {
        let got = precision::inference(&model, p).forward(Tensor::from_data(input.clone(), &target)).into_data();
        let (err, scale) = max_errors(&got, &expected_eval)?;
        let rel = err / scale.max(f32::MIN_POSITIVE);
        let tol = if p == Precision::Bf16 { BF16_LOGITS_TOL } else { 1e-4 };
        let name = format!("inference logits, {}", p.name());
        say!("{name:<48} rel {rel:.3e}  tol {tol:.0e}  {}", if rel <= tol { "ok" } else { "FAIL" })?;
        if rel > tol {
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!("{} of {} quantities differ from flex on backend {}", failed.len(), expected.len(), a.backend);
    }
    say!("{} + {} training step and inference on {} match flex", a.arch.name(), a.temporal.name(), a.backend)?;
    Ok(())
}
