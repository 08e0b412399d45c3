//! The autodiff registration the hand-written flex ops share: gradients handed to their parent
//! nodes, and the whole recording of an op of an input, a weight and a bias with a geometry
//! (the GEMM and depthwise convolutions), whose backward is the backend's kernel.

use std::fmt::Debug;
use std::marker::PhantomData;

use burn::backend::Backend;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::tensor::FloatTensor;

/// Registers each gradient a kernel computed with the parent it belongs to; untracked
/// parents (`None`) and gradients not computed are skipped.
pub fn register<B: Backend, const N: usize>(
    grads: &mut Gradients,
    parents: [Option<NodeId>; N],
    values: [Option<FloatTensor<B>>; N],
) {
    for (id, grad) in parents.into_iter().zip(values) {
        if let (Some(id), Some(grad)) = (id, grad) {
            grads.register::<B>(id, grad);
        }
    }
}

/// The geometry of a weighted op: what the kernels need besides the tensors.
pub trait OpGeometry: Copy + Debug + Send + Sync + 'static {
    /// The op's name in messages.
    const OP: &'static str;
    /// Whether it asks for the inference-only form (an activation clamped in), which has no
    /// backward.
    fn inference_only(&self) -> bool;
}

/// The kernels a backend provides for an op of an input, a weight and a bias with geometry
/// `G`, so that `Autodiff<B>` can differentiate it.
pub trait WeightedKernels<G>: Backend {
    fn weighted_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        g: G,
    ) -> FloatTensor<Self>;
    /// `(dx, dweight, dbias)` for the output gradient `dy`, each only where `wanted`.
    fn weighted_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        g: G,
        wanted: [bool; 3],
    ) -> [Option<FloatTensor<Self>>; 3];
}

#[derive(Debug)]
struct WeightedBackward<G>(PhantomData<G>);

impl<B: WeightedKernels<G>, G: OpGeometry> Backward<B, 3> for WeightedBackward<G> {
    /// Input and weight (kept alive, not copied) and the geometry.
    type State = (FloatTensor<B>, FloatTensor<B>, G);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, weight, geometry) = ops.state;
        let dy = grads.consume::<B>(&ops.node);
        let ids = ops.parents.map(|p| p.map(|n| n.id));
        let computed = B::weighted_backward(x, weight, dy, geometry, ids.map(|id| id.is_some()));
        register::<B, 3>(grads, ids, computed);
    }
}

/// The op on `Autodiff<B, C>` tensors: the forward on `B`, recorded with what its backward
/// needs where any input is tracked.
pub fn weighted<B: WeightedKernels<G>, C: CheckpointStrategy, G: OpGeometry>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: FloatTensor<Autodiff<B, C>>,
    geometry: G,
) -> FloatTensor<Autodiff<B, C>> {
    let nodes = [x.node(), weight.node(), bias.node()];
    let prep = WeightedBackward::<G>(PhantomData).prepare::<C>(nodes).compute_bound().stateful();
    let (x, weight, bias) = (x.into_primitive(), weight.into_primitive(), bias.into_primitive());
    match prep {
        OpsKind::Tracked(prep) => {
            assert!(!geometry.inference_only(), "{}: the clamped form is for inference, not training", G::OP);
            let y = B::weighted_forward(x.clone(), weight.clone(), bias, geometry);
            prep.finish((x, weight, geometry), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::weighted_forward(x, weight, bias, geometry)),
    }
}
