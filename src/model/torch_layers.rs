//! Convolution and BatchNorm on libtorch's own kernels, forward and backward (`--features
//! tch`, `tch` and `tch-cuda` devices).
//!
//! burn 0.22 runs both as its generic compositions on libtorch: a convolution's weight
//! gradient becomes a convolution of the transposed input with the transposed output gradient
//! (on cuDNN a batch-sized "kernel" of the feature map's size, which few thread blocks share),
//! and a training-mode BatchNorm is about ten tensor ops, each a pass over the feature map.
//! Here each is one libtorch op whose backward is libtorch's native one (cuDNN's backward
//! data and filter convolutions, its fused batch-norm backward), reached through libtorch's
//! autograd: the forward records libtorch's graph on leaves that share the inputs' storage,
//! and the backward seeds it with burn's output gradient (`Σ y·dy`) and reads the leaves'
//! gradients. The seed costs an elementwise product and a sum over the output.
//!
//! `layers::conv2d` and `layers::BatchNorm` use these ops where [`applies`]: on libtorch's CUDA
//! devices by default (`GATESHIFT_TORCH_LAYERS=0` turns them off, `=1` on for its CPU too).

// burn 0.22 marks its libtorch backend deprecated; it is the backend this file extends.
#![allow(deprecated)]

use std::sync::OnceLock;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::libtorch::TchTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchDevice, LibTorch, LibTorchDevice, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Tensor};
use tch::Kind;

/// Stride, symmetric padding, dilation and groups of a 2D convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
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
    /// BatchNorm over dimension 1 with the batch's statistics.
    fn torch_batch_norm_train(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
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
    /// (2, C) float32: the batch mean and *unbiased* variance of every channel (dimension 1),
    /// one pass; never differentiated.
    fn torch_batch_stats(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Whether `layers` runs `x` through these ops: float32 or bfloat16 tensors on libtorch's CUDA
/// devices, where burn's compositions are slow (docs/PERFORMANCE.md). On libtorch's CPU both
/// run at the same speed within noise (a BN-Inception + GSM training step, 1 × 8 × 224²,
/// 2 cores: 1146–1196 ms with these ops, 1194–1275 ms without), so there burn's compositions,
/// the tested reference, stay unless `GATESHIFT_TORCH_LAYERS=1`; `GATESHIFT_TORCH_LAYERS=0`
/// turns these ops off everywhere.
pub fn applies<const D: usize>(x: &Tensor<D>) -> bool {
    static SETTING: OnceLock<Option<bool>> = OnceLock::new();
    let setting = *SETTING.get_or_init(|| match std::env::var("GATESHIFT_TORCH_LAYERS").as_deref() {
        Ok("0") => Some(false),
        Ok("1") => Some(true),
        _ => None,
    });
    if !matches!(x.dtype(), DType::F32 | DType::BF16) {
        return false;
    }
    match x.device().inner().as_dispatch() {
        DispatchDevice::LibTorch(LibTorchDevice::Cuda(_)) => setting != Some(false),
        DispatchDevice::LibTorch(_) => setting == Some(true),
        _ => false,
    }
}

/// The geometry of `conv` when libtorch can take it (symmetric or no padding), else `None`.
pub fn geometry(conv: &Conv2d) -> Option<ConvGeometry> {
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [0, 0],
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => [top, left],
        _ => return None,
    };
    Some(ConvGeometry { stride: conv.stride, padding, dilation: conv.dilation, groups: conv.groups })
}

/// `conv` applied to `x` on libtorch's kernels (see [`applies`], [`geometry`]).
pub fn conv2d(conv: &Conv2d, geometry: ConvGeometry, x: Tensor<4>) -> Tensor<4> {
    let (x, w) = (x.into_dispatch(), conv.weight.val().into_dispatch());
    let y = match &conv.bias {
        Some(b) => <Dispatch as TorchLayers>::torch_conv2d_bias(x, w, b.val().into_dispatch(), geometry),
        None => <Dispatch as TorchLayers>::torch_conv2d(x, w, geometry),
    };
    Tensor::from_dispatch(y)
}

/// BatchNorm of `x` with the batch's statistics (`stats == None`) or the given (2, C) ones.
pub fn batch_norm<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<1>,
    bias: Tensor<1>,
    stats: Option<Tensor<2>>,
    eps: f64,
) -> Tensor<D> {
    let (x, weight, bias) = (x.into_dispatch(), weight.into_dispatch(), bias.into_dispatch());
    let y = match stats {
        None => <Dispatch as TorchLayers>::torch_batch_norm_train(x, weight, bias, eps),
        Some(s) => <Dispatch as TorchLayers>::torch_batch_norm_eval(x, weight, bias, s.into_dispatch(), eps),
    };
    Tensor::from_dispatch(y)
}

/// (2, C) float32 batch mean and unbiased variance of `x` over every dimension but 1.
pub fn batch_stats<const D: usize>(x: Tensor<D>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as TorchLayers>::torch_batch_stats(x.into_dispatch()))
}

// ---- libtorch ----------------------------------------------------------------------------

fn ints(v: [usize; 2]) -> [i64; 2] {
    [v[0] as i64, v[1] as i64]
}

fn conv(x: &tch::Tensor, w: &tch::Tensor, b: Option<&tch::Tensor>, g: ConvGeometry) -> tch::Tensor {
    x.conv2d(w, b, ints(g.stride), ints(g.padding), ints(g.dilation), g.groups as i64)
}

/// BatchNorm parameters as libtorch's kernels take them next to an `x` of kind `kind`: a
/// bfloat16 input with float32 parameters (autocast's pairing), else all of the input's kind.
fn bn_kind(kind: Kind) -> Kind {
    if kind == Kind::BFloat16 { Kind::Float } else { kind }
}

fn bn(x: &tch::Tensor, w: &tch::Tensor, b: &tch::Tensor, stats: Option<&tch::Tensor>, eps: f64) -> tch::Tensor {
    let k = bn_kind(x.kind());
    let (w, b) = (w.to_kind(k), b.to_kind(k));
    let (mean, var) = match stats {
        Some(s) => (Some(s.get(0).to_kind(k)), Some(s.get(1).to_kind(k))),
        None => (None, None),
    };
    x.batch_norm(Some(&w), Some(&b), mean.as_ref(), var.as_ref(), stats.is_none(), 0.0, eps, true)
}

impl TorchLayers for LibTorch {
    fn torch_conv2d(x: TchTensor, weight: TchTensor, geometry: ConvGeometry) -> TchTensor {
        TchTensor::new(conv(&x.tensor, &weight.tensor, None, geometry))
    }

    fn torch_conv2d_bias(x: TchTensor, weight: TchTensor, bias: TchTensor, geometry: ConvGeometry) -> TchTensor {
        TchTensor::new(conv(&x.tensor, &weight.tensor, Some(&bias.tensor), geometry))
    }

    fn torch_batch_norm_train(x: TchTensor, weight: TchTensor, bias: TchTensor, eps: f64) -> TchTensor {
        TchTensor::new(bn(&x.tensor, &weight.tensor, &bias.tensor, None, eps))
    }

    fn torch_batch_norm_eval(
        x: TchTensor,
        weight: TchTensor,
        bias: TchTensor,
        stats: TchTensor,
        eps: f64,
    ) -> TchTensor {
        TchTensor::new(bn(&x.tensor, &weight.tensor, &bias.tensor, Some(&stats.tensor), eps))
    }

    fn torch_batch_stats(x: TchTensor) -> TchTensor {
        let x = &x.tensor;
        let dims: Vec<i64> = (0..x.dim() as i64).filter(|&d| d != 1).collect();
        let (var, mean) = x.var_mean_correction(dims.as_slice(), 1, false);
        TchTensor::new(tch::Tensor::stack(&[mean, var], 0).to_kind(Kind::Float))
    }
}

/// A libtorch graph recorded in a forward: its output and its leaves, which share the
/// inputs' storage.
#[derive(Clone, Debug)]
pub struct Recorded {
    output: TchTensor,
    leaves: Vec<TchTensor>,
}

/// One input of a recorded op: the tensor, the kind the op takes it in, and whether burn
/// wants its gradient.
struct Input<'a> {
    tensor: &'a tch::Tensor,
    kind: Kind,
    grad: bool,
}

/// `x` detached from any libtorch graph, in kind `kind` (a cast copy if it differs), and a
/// leaf of the new graph if its gradient is wanted.
fn leaf(input: &Input) -> tch::Tensor {
    let x = input.tensor.detach();
    let x = if x.kind() == input.kind { x } else { x.to_kind(input.kind) };
    if input.grad { x.set_requires_grad(true) } else { x }
}

/// Runs `f` on fresh leaves with libtorch's autograd on; returns the output without its graph
/// (for burn) and the recording (for the backward), whose leaves are the inputs whose gradient
/// is wanted (libtorch computes no other: no input gradient for a first layer, no weight
/// gradient for a frozen BN).
fn record(inputs: &[Input], f: impl FnOnce(&[tch::Tensor]) -> tch::Tensor) -> (TchTensor, Recorded) {
    let tensors: Vec<tch::Tensor> = inputs.iter().map(leaf).collect();
    let output = tch::with_grad(|| f(&tensors));
    let detached = TchTensor::new(output.detach());
    let leaves = tensors.into_iter().zip(inputs).filter(|(_, i)| i.grad).map(|(t, _)| TchTensor::new(t)).collect();
    (detached, Recorded { output: TchTensor::new(output), leaves })
}

/// The leaves' gradients for output gradient `dy`, each given its input's kind (`kinds`: one
/// per leaf).
fn replay(rec: Recorded, dy: TchTensor, kinds: &[Kind]) -> Vec<TchTensor> {
    let seed = (&rec.output.tensor * &dy.tensor.to_kind(rec.output.tensor.kind())).sum(Kind::Float);
    let leaves: Vec<&tch::Tensor> = rec.leaves.iter().map(|l| &l.tensor).collect();
    let grads = tch::Tensor::run_backward(&[seed], &leaves, false, false);
    grads.into_iter().zip(kinds).map(|(g, &k)| TchTensor::new(g.to_kind(k))).collect()
}

// ---- autodiff ----------------------------------------------------------------------------

/// What `Autodiff<B>` needs from `B` to differentiate the ops: the libtorch recording.
pub trait TorchLayersKernels: TorchLayers {
    type Recording: Clone + Send + std::fmt::Debug + 'static;
    /// `grads`: whether each input (x, weight, bias) wants its gradient.
    fn conv2d_recorded(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        geometry: ConvGeometry,
        grads: [bool; 3],
    ) -> (FloatTensor<Self>, Self::Recording);
    fn batch_norm_recorded(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stats: Option<FloatTensor<Self>>,
        eps: f64,
        grads: [bool; 3],
    ) -> (FloatTensor<Self>, Self::Recording);
    /// The gradients of the inputs that wanted one, in their order.
    fn replay(recording: Self::Recording, dy: FloatTensor<Self>) -> Vec<FloatTensor<Self>>;
}

impl TorchLayersKernels for LibTorch {
    type Recording = (Recorded, Vec<Kind>);

    fn conv2d_recorded(
        x: TchTensor,
        weight: TchTensor,
        bias: Option<TchTensor>,
        geometry: ConvGeometry,
        grads: [bool; 3],
    ) -> (TchTensor, Self::Recording) {
        let tensors = [Some(&x.tensor), Some(&weight.tensor), bias.as_ref().map(|b| &b.tensor)];
        let inputs: Vec<Input> = tensors
            .into_iter()
            .zip(grads)
            .filter_map(|(t, grad)| t.map(|tensor| Input { tensor, kind: tensor.kind(), grad }))
            .collect();
        let kinds = inputs.iter().filter(|i| i.grad).map(|i| i.kind).collect();
        let (y, rec) = record(&inputs, |l| conv(&l[0], &l[1], l.get(2), geometry));
        (y, (rec, kinds))
    }

    fn batch_norm_recorded(
        x: TchTensor,
        weight: TchTensor,
        bias: TchTensor,
        stats: Option<TchTensor>,
        eps: f64,
        grads: [bool; 3],
    ) -> (TchTensor, Self::Recording) {
        let k = bn_kind(x.tensor.kind());
        let inputs = [
            Input { tensor: &x.tensor, kind: x.tensor.kind(), grad: grads[0] },
            Input { tensor: &weight.tensor, kind: k, grad: grads[1] },
            Input { tensor: &bias.tensor, kind: k, grad: grads[2] },
        ];
        // Gradients go back in the inputs' own kinds.
        let own = [x.tensor.kind(), weight.tensor.kind(), bias.tensor.kind()];
        let kinds = own.into_iter().zip(grads).filter(|&(_, g)| g).map(|(k, _)| k).collect();
        let stats = stats.map(|s| s.tensor);
        let (y, rec) = record(&inputs, |l| bn(&l[0], &l[1], &l[2], stats.as_ref(), eps));
        (y, (rec, kinds))
    }

    fn replay((rec, kinds): Self::Recording, dy: TchTensor) -> Vec<TchTensor> {
        replay(rec, dy, &kinds)
    }
}

#[derive(Debug)]
struct ReplayBackward<const N: usize>;

impl<B: TorchLayersKernels, const N: usize> Backward<B, N> for ReplayBackward<N> {
    type State = B::Recording;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        // One gradient per tracked parent, in order (the recording made leaves of those alone).
        let mut input_grads = B::replay(ops.state, dy).into_iter();
        for node in ops.parents.iter().flatten() {
            let grad = input_grads.next().expect("one recorded gradient per tracked input");
            grads.register::<B>(node.id, grad);
        }
    }
}

impl<B: TorchLayersKernels, C: CheckpointStrategy> TorchLayers for Autodiff<B, C> {
    fn torch_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>, geometry: ConvGeometry) -> FloatTensor<Self> {
        let grads = [x.is_tracked(), weight.is_tracked(), false];
        let prep = ReplayBackward::<2>.prepare::<C>([x.node(), weight.node()]).compute_bound().stateful();
        let (x, w) = (x.into_primitive(), weight.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => {
                let (y, rec) = B::conv2d_recorded(x, w, None, geometry, grads);
                prep.finish(rec, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::torch_conv2d(x, w, geometry)),
        }
    }

    fn torch_conv2d_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        geometry: ConvGeometry,
    ) -> FloatTensor<Self> {
        let grads = [x.is_tracked(), weight.is_tracked(), bias.is_tracked()];
        let prep = ReplayBackward::<3>.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful();
        let (x, w, b) = (x.into_primitive(), weight.into_primitive(), bias.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => {
                let (y, rec) = B::conv2d_recorded(x, w, Some(b), geometry, grads);
                prep.finish(rec, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::torch_conv2d_bias(x, w, b, geometry)),
        }
    }

    fn torch_batch_norm_train(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        batch_norm_op::<B, C>(x, weight, bias, None, eps)
    }

    fn torch_batch_norm_eval(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        batch_norm_op::<B, C>(x, weight, bias, Some(stats.into_primitive()), eps)
    }

    fn torch_batch_stats(x: FloatTensor<Self>) -> FloatTensor<Self> {
        // No parents: never tracked, whatever `x` is.
        match ReplayBackward::<0>.prepare::<C>([]).compute_bound().stateful() {
            OpsKind::UnTracked(prep) => prep.finish(B::torch_batch_stats(x.into_primitive())),
            OpsKind::Tracked(_) => unreachable!("an op without inputs is never tracked"),
        }
    }
}

/// Both batch-norm ops on `Autodiff<B>`: batch statistics (`stats == None`) or the given ones.
fn batch_norm_op<B: TorchLayersKernels, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: FloatTensor<Autodiff<B, C>>,
    stats: Option<FloatTensor<B>>,
    eps: f64,
) -> FloatTensor<Autodiff<B, C>> {
    let grads = [x.is_tracked(), weight.is_tracked(), bias.is_tracked()];
    let prep = ReplayBackward::<3>.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful();
    let (x, w, b) = (x.into_primitive(), weight.into_primitive(), bias.into_primitive());
    match prep {
        OpsKind::Tracked(prep) => {
            let (y, rec) = B::batch_norm_recorded(x, w, b, stats, eps, grads);
            prep.finish(rec, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(match stats {
            None => B::torch_batch_norm_train(x, w, b, eps),
            Some(s) => B::torch_batch_norm_eval(x, w, b, s, eps),
        }),
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Distribution, TensorData};

    use super::*;
    use crate::model::layers::BatchNorm;
    use crate::model::temporal::parity::max_errors;

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
            let y = if torch { bn.forward_torch(x.clone()) } else { bn.forward_composed(x.clone()) };
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
            let y = bn.forward_torch(conv2d(&conv, g, x.clone()));
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
