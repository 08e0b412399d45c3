//! libtorch's native backward under burn's autodiff, for the ops of `torch_layers`.
//!
//! The forward records libtorch's graph on leaves that share the inputs' storage (only the
//! inputs whose gradient burn wants become leaves); the backward seeds that graph with burn's
//! output gradient (`Σ y·dy`, an elementwise product and a sum over the output), runs
//! libtorch's autograd (cuDNN's backward-data and backward-filter convolutions, its fused
//! batch-norm backward) and hands the leaves' gradients to burn.

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

use crate::model::torch_layers::{ConvGeometry, TorchLayers, bn, bn_kind, conv};

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
