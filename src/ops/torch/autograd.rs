//! libtorch's native backward under burn's autodiff, for the ops of `ops::torch`.
//!
//! The forward runs the op and saves what its backward needs (the convolution's input and
//! weight; batch norm's input, weight and saved statistics); the backward calls libtorch's own
//! backward functions with burn's output gradient — `at::convolution_backward` (cuDNN's
//! backward-data and backward-filter convolutions on a GPU) and
//! `at::native_batch_norm_backward` — through `shim.cpp`, asking only for the gradients
//! burn wants (no input gradient for a first layer, no weight gradient for a frozen BN). No
//! libtorch autograd graph is recorded, so nothing is spent on recording or on seeding one.

// burn 0.22 marks its libtorch backend deprecated; it is the backend this file extends.
#![allow(deprecated)]

use burn::backend::LibTorch;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::libtorch::TchTensor;
use burn::backend::tensor::FloatTensor;
use tch::Kind;

use super::shim::{ffi, mask, opt_ptr, ptr, shim};
use crate::ops::torch::{ConvGeometry, TorchLayers, bn_kind, conv, ints, to_channels_last, with_stats};

/// What a forward saves for its backward.
#[derive(Clone, Debug)]
pub enum Saved {
    /// The input as the convolution took it (channels-last or not), the weight, whether there
    /// is a bias, the geometry.
    Conv { x: TchTensor, w: TchTensor, has_bias: bool, geometry: ConvGeometry },
    /// The input, the weight in the kind the kernel took it, the running statistics (eval
    /// mode) and the batch statistics libtorch saved (train mode).
    BatchNorm {
        x: TchTensor,
        w: TchTensor,
        running: Option<(TchTensor, TchTensor)>,
        save_mean: TchTensor,
        save_invstd: TchTensor,
        eps: f64,
    },
}

/// One op's backward state: what it saved, which inputs want a gradient, and their kinds.
#[derive(Clone, Debug)]
pub struct Recording {
    saved: Saved,
    grads: [bool; 3],
    kinds: [Kind; 3],
}

fn backward(rec: Recording, dy: TchTensor) -> Vec<TchTensor> {
    let Recording { saved, grads, kinds } = rec;
    let out = match &saved {
        Saved::Conv { x, w, has_bias, geometry } => {
            let dy = dy.tensor.to_kind(x.tensor.kind());
            let g = geometry;
            let (stride, padding, dilation) = (ints(g.stride), ints(g.padding), ints(g.dilation));
            shim("convolution backward", |out| unsafe {
                // SAFETY: live tensors, 2-element arrays, a 3-element mask and output array.
                ffi::gs_convolution_backward(
                    ptr(&dy),
                    ptr(&x.tensor),
                    ptr(&w.tensor),
                    i32::from(*has_bias),
                    stride.as_ptr(),
                    padding.as_ptr(),
                    dilation.as_ptr(),
                    g.groups as i64,
                    mask(grads).as_ptr(),
                    out,
                )
            })
        }
        Saved::BatchNorm { x, w, running, save_mean, save_invstd, eps } => {
            let dy = dy.tensor.to_kind(x.tensor.kind());
            let (rm, rv) = (running.as_ref().map(|r| &r.0), running.as_ref().map(|r| &r.1));
            shim("batch norm backward", |out| unsafe {
                // SAFETY: live tensors or null for absent optional ones; 3-element arrays.
                ffi::gs_batch_norm_backward(
                    ptr(&dy),
                    ptr(&x.tensor),
                    ptr(&w.tensor),
                    opt_ptr(rm),
                    opt_ptr(rv),
                    ptr(&save_mean.tensor),
                    ptr(&save_invstd.tensor),
                    i32::from(running.is_none()),
                    *eps,
                    mask(grads).as_ptr(),
                    out,
                )
            })
        }
    };
    out.into_iter()
        .zip(grads)
        .zip(kinds)
        .filter(|((_, wanted), _)| *wanted)
        .map(|((g, _), k)| TchTensor::new(g.expect("libtorch returned every gradient asked for").to_kind(k)))
        .collect()
}

// ---- autodiff ----------------------------------------------------------------------------

/// The statistics of a batch norm: the batch's, with the (2, C) running statistics updated in
/// place, or the given (2, C) running statistics.
#[derive(Debug)]
pub enum BnMode<T> {
    Train { running: T, momentum: f64 },
    Eval(T),
}

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
        stats: BnMode<FloatTensor<Self>>,
        eps: f64,
        grads: [bool; 3],
    ) -> (FloatTensor<Self>, Self::Recording);
    /// The gradients of the inputs that wanted one, in their order.
    fn replay(recording: Self::Recording, dy: FloatTensor<Self>) -> Vec<FloatTensor<Self>>;
}

impl TorchLayersKernels for LibTorch {
    type Recording = Recording;

    fn conv2d_recorded(
        x: TchTensor,
        weight: TchTensor,
        bias: Option<TchTensor>,
        geometry: ConvGeometry,
        grads: [bool; 3],
    ) -> (TchTensor, Recording) {
        // The input as the convolution takes it (channels-last where the geometry says so),
        // saved as such: the backward then runs in the same memory order.
        let x = if geometry.channels_last { to_channels_last(&x.tensor) } else { x.tensor.shallow_clone() };
        let y = conv(&x, &weight.tensor, bias.as_ref().map(|b| &b.tensor), geometry);
        let kinds = [x.kind(), weight.tensor.kind(), bias.as_ref().map_or(Kind::Float, |b| b.tensor.kind())];
        let saved = Saved::Conv { x: TchTensor::new(x), w: weight, has_bias: bias.is_some(), geometry };
        (TchTensor::new(y), Recording { saved, grads, kinds })
    }

    fn batch_norm_recorded(
        x: TchTensor,
        weight: TchTensor,
        bias: TchTensor,
        stats: BnMode<TchTensor>,
        eps: f64,
        grads: [bool; 3],
    ) -> (TchTensor, Recording) {
        // A bfloat16 input takes float32 parameters (autocast's pairing); gradients go back in
        // the inputs' own kinds.
        let k = bn_kind(x.tensor.kind());
        let kinds = [x.tensor.kind(), weight.tensor.kind(), bias.tensor.kind()];
        let (w, b) = (weight.tensor.to_kind(k), bias.tensor.to_kind(k));
        let (stats_tensor, train, momentum) = match &stats {
            BnMode::Train { running, momentum } => (&running.tensor, true, *momentum),
            BnMode::Eval(s) => (&s.tensor, false, 0.0),
        };
        let ([y, save_mean, save_invstd], running) = with_stats(stats_tensor, k, |mean, var| {
            let out = shim("batch norm", |out| unsafe {
                // SAFETY: live tensors and a 3-element output array.
                ffi::gs_batch_norm_forward(
                    ptr(&x.tensor),
                    ptr(&w),
                    ptr(&b),
                    ptr(mean),
                    ptr(var),
                    i32::from(train),
                    momentum,
                    eps,
                    out,
                )
            })
            .map(|t| TchTensor::new(t.expect("native_batch_norm returns three tensors")));
            // Eval mode's backward needs the running statistics; train mode's the saved ones.
            let running = (!train).then(|| (TchTensor::new(mean.shallow_clone()), TchTensor::new(var.shallow_clone())));
            (out, running)
        });
        let saved = Saved::BatchNorm { x, w: TchTensor::new(w), running, save_mean, save_invstd, eps };
        (y, Recording { saved, grads, kinds })
    }

    fn replay(recording: Recording, dy: TchTensor) -> Vec<TchTensor> {
        backward(recording, dy)
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

    /// Inference only in practice (`ops::torch::conv2d_relu` declines tracked inputs); under
    /// autodiff the two ops apart, so that a gradient is still right.
    fn torch_conv2d_bias_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        geometry: ConvGeometry,
    ) -> FloatTensor<Self> {
        let y = <Self as TorchLayers>::torch_conv2d_bias(x, weight, bias, geometry);
        <Self as burn::backend::ops::ActivationOps<Self>>::relu(y)
    }

    fn torch_batch_norm_train(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        running: FloatTensor<Self>,
        momentum: f64,
        eps: f64,
    ) -> FloatTensor<Self> {
        batch_norm_op::<B, C>(x, weight, bias, BnMode::Train { running: running.into_primitive(), momentum }, eps)
    }

    fn torch_batch_norm_eval(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        batch_norm_op::<B, C>(x, weight, bias, BnMode::Eval(stats.into_primitive()), eps)
    }
}

/// Both batch-norm ops on `Autodiff<B>`.
fn batch_norm_op<B: TorchLayersKernels, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: FloatTensor<Autodiff<B, C>>,
    stats: BnMode<FloatTensor<B>>,
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
            BnMode::Train { running, momentum } => B::torch_batch_norm_train(x, w, b, running, momentum, eps),
            BnMode::Eval(s) => B::torch_batch_norm_eval(x, w, b, s, eps),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: &tch::Tensor, r: &tch::Tensor) -> f64 {
        f64::try_from((a - r).abs().max()).unwrap() / f64::try_from(r.abs().max()).unwrap()
    }

    /// The saved-tensor backward in channels-last order gives the NCHW one's gradients, and
    /// both give libtorch autograd's (input, weight and bias, grouped and strided).
    #[test]
    fn conv_backward_matches_autograd_in_both_orders() {
        let opts = (Kind::Float, tch::Device::Cpu);
        let g = ConvGeometry { stride: [2, 2], padding: [1, 1], dilation: [1, 1], groups: 2, channels_last: false };
        let x = tch::Tensor::randn([2, 8, 9, 7], opts);
        let w = tch::Tensor::randn([6, 4, 3, 3], opts);
        let b = tch::Tensor::randn([6], opts);
        let dy = tch::Tensor::randn([2, 6, 5, 4], opts);
        let (xl, wl, bl) = (
            x.detach().set_requires_grad(true),
            w.detach().set_requires_grad(true),
            b.detach().set_requires_grad(true),
        );
        let y = tch::with_grad(|| xl.conv2d(&wl, Some(&bl), [2, 2], [1, 1], [1, 1], 2));
        (&y * &dy).sum(Kind::Float).backward();
        let reference = [xl.grad(), wl.grad(), bl.grad()];
        for channels_last in [false, true] {
            let geometry = ConvGeometry { channels_last, ..g };
            let (out, rec) = <LibTorch as TorchLayersKernels>::conv2d_recorded(
                TchTensor::new(x.shallow_clone()),
                TchTensor::new(w.shallow_clone()),
                Some(TchTensor::new(b.shallow_clone())),
                geometry,
                [true, true, true],
            );
            assert!(rel(&out.tensor, &y.detach()) <= 1e-5);
            let grads = <LibTorch as TorchLayersKernels>::replay(rec, TchTensor::new(dy.shallow_clone()));
            for (i, (ours, r)) in grads.iter().zip(&reference).enumerate() {
                let e = rel(&ours.tensor, r);
                assert!(e <= 1e-5, "channels-last {channels_last}, gradient {i}: rel {e:e}");
            }
        }
    }
}
