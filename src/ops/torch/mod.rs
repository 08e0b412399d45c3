//! Convolution and BatchNorm on libtorch's own kernels, forward and backward (`--features
//! tch`, `tch` and `tch-cuda` devices).
//!
//! burn 0.22 runs both as its generic compositions on libtorch: a convolution's weight
//! gradient becomes a convolution of the transposed input with the transposed output gradient
//! (on cuDNN a batch-sized "kernel" of the feature map's size, which few thread blocks share),
//! and a training-mode BatchNorm is about ten tensor ops, each a pass over the feature map.
//! Here each is one libtorch op whose backward is libtorch's native one (cuDNN's backward
//! data and filter convolutions, its fused batch-norm backward), reached through libtorch's
//! autograd (`autograd.rs`).
//!
//! `ops::conv` and `ops::batch_norm` route to these ops where [`applies`]: on libtorch's CUDA
//! devices, and on its CPU in inference (`GATESHIFT_TORCH_LAYERS=0` turns them off, `=1` on
//! for CPU training too). Convolutions there run channels-last ([`channels_last`]).

// burn 0.22 marks its libtorch backend deprecated; it is the backend this file extends.
#![allow(deprecated)]

pub mod autograd;
pub mod shim;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::libtorch::TchTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchDevice, LibTorch, LibTorchDevice, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Tensor};
use tch::Kind;

/// Stride, symmetric padding, dilation and groups of a 2D convolution, and its memory order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
    /// Run in channels-last memory order ([`channels_last`]).
    pub channels_last: bool,
}

/// The ops, routed by burn to the libtorch backend (with or without autodiff).
#[backend_extension(LibTorch: cfg(feature = "tch"), Autodiff)]
pub trait TorchLayers: Backend {
    /// `x` (N, Cin, H, W), `weight` (Cout, Cin/groups, kh, kw) → (N, Cout, H', W').
    fn torch_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>, geometry: ConvGeometry) -> FloatTensor<Self>;
    /// The same with a bias (Cout).
    fn torch_conv2d_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        geometry: ConvGeometry,
    ) -> FloatTensor<Self>;
    /// relu(conv2d(x, weight) + bias), for inference: on CUDA one cuDNN call with the bias and
    /// ReLU fused ([`conv2d_relu`]).
    fn torch_conv2d_bias_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        geometry: ConvGeometry,
    ) -> FloatTensor<Self>;
    /// BatchNorm over dimension 1 with the batch's statistics; `running` = (2, C) running mean
    /// and variance, updated in place by libtorch with PyTorch's rule (momentum, unbiased
    /// variance) in the same pass that computes the statistics. Never differentiated.
    fn torch_batch_norm_train(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        running: FloatTensor<Self>,
        momentum: f64,
        eps: f64,
    ) -> FloatTensor<Self>;
    /// BatchNorm over dimension 1 with `stats` = (2, C) running mean and variance, which get
    /// no gradient.
    fn torch_batch_norm_eval(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;
}

/// Whether `layers` runs `x` through these ops: float32 or bfloat16 tensors on libtorch's CUDA
/// devices, where burn's compositions are slow (docs/PERFORMANCE.md), and on libtorch's CPU in
/// inference, where they run channels-last (see [`channels_last`]). CPU training keeps burn's
/// compositions, the tested reference: there both run at the same speed within noise (a
/// BN-Inception + GSM step, 1 × 8 × 224², 2 cores: 1146–1196 ms with these ops, 1194–1275
/// ms without). `GATESHIFT_TORCH_LAYERS=0` turns these ops off everywhere, `=1` on everywhere.
pub fn applies<const D: usize>(x: &Tensor<D>) -> bool {
    let setting = crate::ops::route::switches().torch_layers;
    if !matches!(x.dtype(), DType::F32 | DType::BF16) {
        return false;
    }
    match x.device().inner().as_dispatch() {
        DispatchDevice::LibTorch(LibTorchDevice::Cuda(_)) => setting != Some(false),
        DispatchDevice::LibTorch(_) => setting.unwrap_or(!x.device().is_autodiff()),
        _ => false,
    }
}

/// Whether convolutions of `x` take their input in channels-last memory order (NHWC strides
/// under the logical (N, C, H, W) shape). cuDNN's fastest bf16 and fp32 tensor-core
/// convolutions are NHWC ones: fed NCHW, it transposes around them or picks slower kernels;
/// oneDNN on the CPU likewise (BN-Inception + GSM inference, 1 × 8 × 224² on 2 cores: 248–277
/// ms channels-last, 293–343 ms NCHW). libtorch keeps the order through its ops (a
/// channels-last convolution writes channels-last output; BatchNorm, ReLU, pooling and
/// concatenation keep it), so after the first layer the conversion is free except behind ops
/// that need contiguous NCHW (the fused GSM). Default: on CUDA, and on the CPU in inference
/// (CPU training keeps NCHW, the order the parity fixtures were checked in);
/// `GATESHIFT_CHANNELS_LAST=0`/`=1` overrides.
pub fn channels_last<const D: usize>(x: &Tensor<D>) -> bool {
    let setting = crate::ops::route::switches().channels_last;
    let cuda = matches!(x.device().inner().as_dispatch(), DispatchDevice::LibTorch(LibTorchDevice::Cuda(_)));
    setting.unwrap_or(cuda || !x.device().is_autodiff())
}

/// The geometry of `conv` when libtorch can take it (symmetric or no padding), else `None`.
pub fn geometry(conv: &Conv2d) -> Option<ConvGeometry> {
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [0, 0],
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => [top, left],
        _ => return None,
    };
    Some(ConvGeometry {
        stride: conv.stride,
        padding,
        dilation: conv.dilation,
        groups: conv.groups,
        channels_last: false,
    })
}

/// `conv` applied to `x` on libtorch's kernels (see [`applies`], [`geometry`]), channels-last
/// where [`channels_last`] says so.
pub fn conv2d(conv: &Conv2d, geometry: ConvGeometry, x: Tensor<4>) -> Tensor<4> {
    let geometry = ConvGeometry { channels_last: channels_last(&x), ..geometry };
    let (x, w) = (x.into_dispatch(), conv.weight.val().into_dispatch());
    let y = match &conv.bias {
        Some(b) => <Dispatch as TorchLayers>::torch_conv2d_bias(x, w, b.val().into_dispatch(), geometry),
        None => <Dispatch as TorchLayers>::torch_conv2d(x, w, geometry),
    };
    Tensor::from_dispatch(y)
}

/// Whether [`conv2d_relu`] fuses (`GATESHIFT_CONV_RELU=1`; off by default until measured on a
/// GPU, docs/PERFORMANCE.md); turned off for the process if cuDNN finds no fused engine.
static CONV_RELU: OnceLock<AtomicBool> = OnceLock::new();

fn conv_relu_flag() -> &'static AtomicBool {
    CONV_RELU.get_or_init(|| AtomicBool::new(crate::ops::route::switches().conv_relu))
}

/// Turns the fused convolution + ReLU on or off process-wide (tests; `GATESHIFT_CONV_RELU`).
pub fn set_conv_relu(on: bool) {
    conv_relu_flag().store(on, Ordering::Relaxed);
}

/// ReLU(conv(x)) in one libtorch call where it applies: the fusion turned on, `x` not tracked
/// by autodiff (inference), [`applies`], a convolution with a bias and a [`geometry`] (in
/// inference a folded BN leaves every conv → BN → ReLU unit in this form). On CUDA that is
/// cuDNN's convolution with the bias and ReLU in its epilogue: one pass over the output fewer
/// per unit. `None` where it does not apply.
pub fn conv2d_relu(conv: &Conv2d, x: &Tensor<4>) -> Option<Tensor<4>> {
    let (bias, geometry) = (conv.bias.as_ref()?, geometry(conv)?);
    if !conv_relu_flag().load(Ordering::Relaxed) || x.device().is_autodiff() || !applies(x) {
        return None;
    }
    let geometry = ConvGeometry { channels_last: channels_last(x), ..geometry };
    let (x, w, b) = (x.clone().into_dispatch(), conv.weight.val().into_dispatch(), bias.val().into_dispatch());
    Some(Tensor::from_dispatch(<Dispatch as TorchLayers>::torch_conv2d_bias_relu(x, w, b, geometry)))
}

/// BatchNorm of `x` with the given (2, C) running statistics.
pub fn batch_norm_eval<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<1>,
    bias: Tensor<1>,
    stats: Tensor<2>,
    eps: f64,
) -> Tensor<D> {
    let (x, weight, bias) = (x.into_dispatch(), weight.into_dispatch(), bias.into_dispatch());
    Tensor::from_dispatch(<Dispatch as TorchLayers>::torch_batch_norm_eval(x, weight, bias, stats.into_dispatch(), eps))
}

/// BatchNorm of `x` with the batch's statistics; `running` (2, C), a tensor of the caller's
/// own, holds the updated running statistics afterwards.
pub fn batch_norm_train<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<1>,
    bias: Tensor<1>,
    running: Tensor<2>,
    momentum: f64,
    eps: f64,
) -> Tensor<D> {
    let (x, weight, bias) = (x.into_dispatch(), weight.into_dispatch(), bias.into_dispatch());
    let running = running.into_dispatch();
    Tensor::from_dispatch(<Dispatch as TorchLayers>::torch_batch_norm_train(x, weight, bias, running, momentum, eps))
}

// ---- libtorch ----------------------------------------------------------------------------

pub(crate) fn ints(v: [usize; 2]) -> [i64; 2] {
    [v[0] as i64, v[1] as i64]
}

pub(crate) fn conv(x: &tch::Tensor, w: &tch::Tensor, b: Option<&tch::Tensor>, g: ConvGeometry) -> tch::Tensor {
    let converted;
    let x = if g.channels_last {
        converted = to_channels_last(x);
        &converted
    } else {
        x
    };
    x.conv2d(w, b, ints(g.stride), ints(g.padding), ints(g.dilation), g.groups as i64)
}

/// `x` (N, C, H, W) with dense channels-last strides (C is the fastest-moving index): itself when
/// it has them already, else a copy. libtorch infers the memory format from the strides.
pub(crate) fn to_channels_last(x: &tch::Tensor) -> tch::Tensor {
    if is_channels_last(x) { x.shallow_clone() } else { x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]) }
}

pub(crate) fn is_channels_last(x: &tch::Tensor) -> bool {
    let (size, stride) = (x.size(), x.stride());
    size.len() == 4
        && stride[1] == 1
        && stride[3] == size[1]
        && stride[2] == size[1] * size[3]
        && (size[0] == 1 || stride[0] == size[1] * size[2] * size[3])
}

/// BatchNorm parameters as libtorch's kernels take them next to an `x` of kind `kind`: a
/// bfloat16 input with float32 parameters (autocast's pairing), else all of the input's kind.
pub(crate) fn bn_kind(kind: Kind) -> Kind {
    if kind == Kind::BFloat16 { Kind::Float } else { kind }
}

/// The statistics a batch norm normalises with.
pub(crate) enum BnStats<'a> {
    /// The batch's; the (2, C) running statistics updated in place with `momentum`.
    Batch { running: &'a tch::Tensor, momentum: f64 },
    /// The given (2, C) running statistics.
    Running(&'a tch::Tensor),
}

/// Runs `f` with the (2, C) statistics as two tensors of kind `k`; when they are stored in
/// another kind, converted copies, written back afterwards (libtorch may update them).
pub(crate) fn with_stats<R>(stats: &tch::Tensor, k: Kind, f: impl FnOnce(&tch::Tensor, &tch::Tensor) -> R) -> R {
    let (mean, var) = (stats.get(0), stats.get(1));
    if mean.kind() == k {
        return f(&mean, &var);
    }
    let (mk, vk) = (mean.to_kind(k), var.to_kind(k));
    let r = f(&mk, &vk);
    let (mut mean, mut var) = (mean, var);
    mean.copy_(&mk);
    var.copy_(&vk);
    r
}

pub(crate) fn bn(x: &tch::Tensor, w: &tch::Tensor, b: &tch::Tensor, stats: BnStats, eps: f64) -> tch::Tensor {
    let k = bn_kind(x.kind());
    let (w, b) = (w.to_kind(k), b.to_kind(k));
    let (s, train, momentum) = match stats {
        BnStats::Batch { running, momentum } => (running, true, momentum),
        BnStats::Running(s) => (s, false, 0.0),
    };
    with_stats(s, k, |mean, var| x.batch_norm(Some(&w), Some(&b), Some(mean), Some(var), train, momentum, eps, true))
}

impl TorchLayers for LibTorch {
    fn torch_conv2d(x: TchTensor, weight: TchTensor, geometry: ConvGeometry) -> TchTensor {
        TchTensor::new(conv(&x.tensor, &weight.tensor, None, geometry))
    }

    fn torch_conv2d_bias(x: TchTensor, weight: TchTensor, bias: TchTensor, geometry: ConvGeometry) -> TchTensor {
        TchTensor::new(conv(&x.tensor, &weight.tensor, Some(&bias.tensor), geometry))
    }

    fn torch_conv2d_bias_relu(x: TchTensor, weight: TchTensor, bias: TchTensor, geometry: ConvGeometry) -> TchTensor {
        let converted;
        let input = if geometry.channels_last {
            converted = to_channels_last(&x.tensor);
            &converted
        } else {
            &x.tensor
        };
        let dims = [ints(geometry.stride), ints(geometry.padding), ints(geometry.dilation)];
        match shim::conv2d_bias_relu([input, &weight.tensor, &bias.tensor], dims, geometry.groups as i64) {
            Ok(y) => TchTensor::new(y),
            Err(message) => {
                set_conv_relu(false);
                eprintln!("fused convolution + ReLU unavailable, running them apart from now on: {message}");
                TchTensor::new(conv(&x.tensor, &weight.tensor, Some(&bias.tensor), geometry).relu())
            }
        }
    }

    fn torch_batch_norm_train(
        x: TchTensor,
        weight: TchTensor,
        bias: TchTensor,
        running: TchTensor,
        momentum: f64,
        eps: f64,
    ) -> TchTensor {
        let stats = BnStats::Batch { running: &running.tensor, momentum };
        TchTensor::new(bn(&x.tensor, &weight.tensor, &bias.tensor, stats, eps))
    }

    fn torch_batch_norm_eval(
        x: TchTensor,
        weight: TchTensor,
        bias: TchTensor,
        stats: TchTensor,
        eps: f64,
    ) -> TchTensor {
        TchTensor::new(bn(&x.tensor, &weight.tensor, &bias.tensor, BnStats::Running(&stats.tensor), eps))
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Distribution, TensorData};

    use super::*;
    use crate::model::layers::BatchNorm;
    use crate::parity::max_errors;

    fn rel(ours: TensorData, reference: TensorData) -> f32 {
        let (err, scale) = max_errors(&ours, &reference).expect("same shapes");
        err / scale
    }

    fn normal<const D: usize>(shape: [usize; D], device: &burn::tensor::Device) -> Tensor<D> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
    }

    /// libtorch's convolution and its native backward against burn's composition, on
    /// libtorch's CPU: output and the gradients of input, weight and bias.
    #[test]
    fn conv2d_matches_burns_composition() {
        let device = burn::tensor::Device::libtorch().autodiff();
        // (cin, cout, kernel, stride, padding, groups, bias)
        let cases =
            [(3, 8, 7, 2, 3, 1, true), (8, 12, 3, 1, 1, 1, false), (8, 8, 3, 2, 1, 2, true), (6, 4, 1, 1, 0, 1, false)];
        for (cin, cout, k, s, p, groups, bias) in cases {
            let conv = Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([s, s])
                .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                .with_groups(groups)
                .with_bias(bias)
                .init(&device);
            let g = geometry(&conv).expect("symmetric padding");
            let x = normal([2, cin, 11, 9], &device);
            let y_shape = conv.forward(x.clone()).dims();
            let dy = normal(y_shape, &device);
            let run = |torch: bool| {
                let x = x.clone().require_grad();
                let y = if torch { conv2d(&conv, g, x.clone()) } else { conv.forward(x.clone()) };
                let grads = (y.clone() * dy.clone()).sum().backward();
                let mut out = vec![y.into_data(), x.grad(&grads).unwrap().into_data()];
                out.push(conv.weight.grad(&grads).unwrap().into_data());
                if let Some(b) = &conv.bias {
                    out.push(b.grad(&grads).unwrap().into_data());
                }
                out
            };
            for (i, (t, r)) in run(true).into_iter().zip(run(false)).enumerate() {
                let e = rel(t, r);
                assert!(e <= 1e-5, "case {cin}->{cout} k{k} s{s} p{p} g{groups}: quantity {i} rel {e:e}");
            }
        }
    }

    /// A channels-last convolution gives the NCHW one's output and gradients, writes
    /// channels-last output, and BatchNorm and ReLU keep that order (what makes the
    /// conversion a no-op after the first layer).
    /// The fused convolution + ReLU (on the CPU the shim's two ops, so this checks the
    /// plumbing: memory order, bias, geometry; cuDNN's fused kernel is checked on a GPU by
    /// `check backend`) equals burn's convolution then ReLU, and is declined for a bias-less
    /// convolution and under autodiff.
    #[test]
    fn conv_relu_matches_conv_then_relu() {
        let device = burn::tensor::Device::libtorch();
        set_conv_relu(true);
        for (cin, cout, k, s, p, groups) in [(3, 8, 7, 2, 3, 1), (8, 8, 3, 2, 1, 2), (6, 4, 1, 1, 0, 1)] {
            let conv = Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([s, s])
                .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                .with_groups(groups)
                .init(&device);
            let x = normal([2, cin, 11, 9], &device);
            let reference = burn::tensor::activation::relu(conv.forward(x.clone()));
            let y = conv2d_relu(&conv, &x).unwrap_or_else(|| panic!("declined {cin}->{cout} k{k}"));
            assert!(!y.clone().lower_elem(0.0).any().into_scalar::<bool>(), "negative values after ReLU");
            let e = rel(y.into_data(), reference.into_data());
            assert!(e <= 1e-5, "{cin}->{cout} k{k} s{s} p{p} g{groups}: rel {e:e}");
        }
        let no_bias = Conv2dConfig::new([2, 2], [1, 1]).with_bias(false).init(&device);
        assert!(conv2d_relu(&no_bias, &normal([1, 2, 3, 3], &device)).is_none());
        let autodiff = device.clone().autodiff();
        let conv = Conv2dConfig::new([2, 2], [1, 1]).init(&autodiff);
        assert!(conv2d_relu(&conv, &normal([1, 2, 3, 3], &autodiff)).is_none());
        set_conv_relu(false);
    }

    #[test]
    fn channels_last_conv_matches_and_keeps_the_order() {
        let g = ConvGeometry { stride: [2, 2], padding: [1, 1], dilation: [1, 1], groups: 2, channels_last: false };
        let x = tch::Tensor::randn([2, 8, 9, 7], (Kind::Float, tch::Device::Cpu));
        let w = tch::Tensor::randn([6, 4, 3, 3], (Kind::Float, tch::Device::Cpu));
        let b = tch::Tensor::randn([6], (Kind::Float, tch::Device::Cpu));
        let dy = tch::Tensor::randn([2, 6, 5, 4], (Kind::Float, tch::Device::Cpu));
        let run = |channels_last: bool| {
            let (x, w) = (x.detach().set_requires_grad(true), w.detach().set_requires_grad(true));
            let y = tch::with_grad(|| conv(&x, &w, Some(&b), ConvGeometry { channels_last, ..g }));
            assert_eq!(is_channels_last(&y), channels_last);
            (&y * &dy).sum(Kind::Float).backward();
            (y.detach(), x.grad(), w.grad())
        };
        let (y_cl, dx_cl, dw_cl) = run(true);
        let (y, dx, dw) = run(false);
        for (a, r, what) in [(&y_cl, &y, "output"), (&dx_cl, &dx, "input grad"), (&dw_cl, &dw, "weight grad")] {
            let err = f64::try_from((a - r).abs().max()).unwrap() / f64::try_from(r.abs().max()).unwrap();
            assert!(err <= 1e-5, "{what}: rel {err:e}");
        }
        let ones = tch::Tensor::ones([6], (Kind::Float, tch::Device::Cpu));
        let running = tch::Tensor::stack(&[ones.zeros_like(), ones.shallow_clone()], 0);
        let stats = BnStats::Batch { running: &running, momentum: 0.1 };
        let normed = bn(&y_cl, &ones, &ones.zeros_like(), stats, 1e-5).relu();
        assert!(is_channels_last(&normed), "BatchNorm + ReLU keep channels-last");
        assert!(is_channels_last(&to_channels_last(&y)) && !is_channels_last(&y));
    }

    /// Only tracked inputs get gradients: a first layer (input not tracked) and a frozen bias.
    #[test]
    fn untracked_inputs_get_no_gradient() {
        let device = burn::tensor::Device::libtorch().autodiff();
        let mut conv =
            Conv2dConfig::new([3, 4], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(&device);
        conv.bias = conv.bias.map(|b| b.set_require_grad(false));
        let g = geometry(&conv).unwrap();
        let x = normal([2, 3, 5, 5], &device);
        let dy = normal([2, 4, 5, 5], &device);
        let run = |torch: bool| {
            let y = if torch { conv2d(&conv, g, x.clone()) } else { conv.forward(x.clone()) };
            let grads = (y * dy.clone()).sum().backward();
            assert!(x.grad(&grads).is_none());
            assert!(conv.bias.as_ref().unwrap().grad(&grads).is_none());
            conv.weight.grad(&grads).unwrap().into_data()
        };
        let e = rel(run(true), run(false));
        assert!(e <= 1e-5, "weight gradient rel {e:e}");
    }

    /// Asymmetric padding stays on burn's path.
    #[test]
    fn asymmetric_padding_is_not_taken() {
        let conv = Conv2dConfig::new([2, 2], [2, 2])
            .with_padding(PaddingConfig2d::Explicit(0, 0, 1, 1))
            .init(&burn::tensor::Device::libtorch());
        assert!(geometry(&conv).is_none());
        assert!(!applies(&normal([1, 2, 3, 3], &burn::tensor::Device::flex())));
    }

    /// libtorch's batch norm against the composed one: training-mode output, the gradients of
    /// input, weight and bias, the running statistics after the update (unbiased variance),
    /// and eval mode on an autodiff device (frozen BN: gradients still reach the input).
    #[test]
    fn batch_norm_matches_the_composed_one() {
        let device = burn::tensor::Device::libtorch().autodiff();
        let (gamma, beta) = (normal([6], &device), normal([6], &device));
        let (mean, var) = (normal([6], &device), normal([6], &device).abs().add_scalar(0.5));
        // A fresh module per run: clones of a module share its running state.
        let make = |training: bool| {
            let mut bn = BatchNorm::new(6, &device);
            bn.weight = Param::from_tensor(gamma.clone());
            bn.bias = Param::from_tensor(beta.clone());
            if !training {
                bn.training = Param::from_bool(false);
                bn.running_mean.update(mean.clone());
                bn.running_var.update(var.clone());
            }
            bn
        };
        let x = normal([4, 6, 5, 3], &device).mul_scalar(3.0).add_scalar(1.5);
        let dy = normal([4, 6, 5, 3], &device);
        let run = |torch: bool, bn: &BatchNorm| {
            let x = x.clone().require_grad();
            let y = if torch { bn.forward_library(x.clone()) } else { bn.forward_composed(x.clone()) };
            let grads = (y.clone() * dy.clone()).sum().backward();
            let mut out = vec![y.into_data(), x.grad(&grads).unwrap().into_data()];
            if let Some(g) = bn.weight.grad(&grads) {
                out.push(g.into_data());
                out.push(bn.bias.grad(&grads).unwrap().into_data());
            }
            out.push(bn.running_mean.value_sync().into_data());
            out.push(bn.running_var.value_sync().into_data());
            out
        };
        let (torch, composed) = (run(true, &make(true)), run(false, &make(true)));
        for (i, (t, r)) in torch.into_iter().zip(composed).enumerate() {
            let e = rel(t, r);
            assert!(e <= 1e-5, "training, quantity {i}: rel {e:e}");
        }
        for (i, (t, r)) in run(true, &make(false)).into_iter().zip(run(false, &make(false))).enumerate() {
            let e = rel(t, r);
            assert!(e <= 1e-5, "frozen, quantity {i}: rel {e:e}");
        }
    }

    /// bf16 (mixed precision): the ops keep the input's dtype, gradients come back in each
    /// parameter's dtype, and values agree with float32 within bf16's rounding.
    #[test]
    fn bf16_keeps_dtypes_and_agrees_with_f32() {
        let device = burn::tensor::Device::libtorch().autodiff();
        let conv = Conv2dConfig::new([4, 6], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(&device);
        let bn = BatchNorm::new(6, &device);
        let g = geometry(&conv).unwrap();
        let x = normal([2, 4, 6, 6], &device);
        let dy = normal([2, 6, 6, 6], &device);
        let run = |dtype: DType| {
            let mut conv = conv.clone();
            conv.weight = Param::from_tensor(conv.weight.val().cast(dtype).detach());
            conv.bias = conv.bias.map(|b| Param::from_tensor(b.val().cast(dtype).detach()));
            let bn = bn.clone();
            let bn = BatchNorm {
                weight: Param::from_tensor(bn.weight.val().cast(dtype).detach()),
                bias: Param::from_tensor(bn.bias.val().cast(dtype).detach()),
                ..bn
            };
            let x = x.clone().cast(dtype).detach().require_grad();
            let y = bn.forward_library(conv2d(&conv, g, x.clone()));
            assert_eq!(y.dtype(), dtype);
            let grads = (y.clone().cast(DType::F32) * dy.clone()).sum().backward();
            let dw = conv.weight.grad(&grads).unwrap();
            let dgamma = bn.weight.grad(&grads).unwrap();
            assert_eq!((dw.dtype(), dgamma.dtype()), (dtype, dtype));
            let f32 = DType::F32;
            [
                y.cast(f32).into_data(),
                x.grad(&grads).unwrap().cast(f32).into_data(),
                dw.cast(f32).into_data(),
                dgamma.cast(f32).into_data(),
            ]
        };
        for (i, (b, f)) in run(DType::BF16).into_iter().zip(run(DType::F32)).enumerate() {
            let e = rel(b, f);
            assert!(e <= 5e-2, "quantity {i}: bf16 against f32 rel {e:e}");
        }
    }
}
