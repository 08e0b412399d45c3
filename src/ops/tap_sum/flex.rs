//! The tap sum on `flex`: for image `n` (frame t of its clip) and channel `c` of `C`, with the
//! taps stacked along the channels of `z` (`(B·T, 3·C, H, W)`: tap k's channel c at `k·C + c`),
//!
//! `y[n, c] = z[n−1, c] + z[n, C + c] + z[n+1, 2C + c]`, a neighbour outside the clip adding 0.
//!
//! The composition narrows three taps, shifts two with a zero frame and a concatenation each,
//! and adds twice; this reads each tap once and writes `y` once. The backward is the adjoint,
//! three plane copies per image: `dz[n, c] = dy[n+1, c]`, `dz[n, C + c] = dy[n, c]`,
//! `dz[n, 2C + c] = dy[n−1, c]`.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::{Flex, FlexTensor};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::tensor::{DType, Shape, Tensor};
use rayon::prelude::*;

use crate::ops::flex_alloc;

/// Whether the fused sum takes `z`: float32 on flex, unless `GATESHIFT_FUSED_TAPS=0`.
pub fn applies(z: &Tensor<4>) -> bool {
    crate::ops::route::switches().fused_taps && z.dtype() == DType::F32 && crate::backend::is_flex(&z.device())
}

/// The op, routed by burn to the backend a tensor lives on (with or without autodiff).
#[backend_extension(Flex, Autodiff)]
pub trait TapSum: Backend {
    /// `z` (B·T, 3·C, H, W) → `y` (B·T, C, H, W), clips of `segments` frames.
    fn tap_sum(z: FloatTensor<Self>, segments: usize) -> FloatTensor<Self>;
}

/// `y[t] = Z₀[t−1] + Z₁[t] + Z₂[t+1]` in one pass (see [`applies`]).
pub fn tap_sum(z: Tensor<4>, segments: usize) -> Tensor<4> {
    crate::ops::profile::timed_map(
        || "tap sum".into(),
        z.dims(),
        || Tensor::from_dispatch(<Dispatch as TapSum>::tap_sum(z.into_dispatch(), segments)),
    )
}

/// Images, channels per tap and plane size of `z`, checked.
fn dims(z: &FlexTensor, segments: usize) -> [usize; 3] {
    let s = z.layout().shape();
    assert_eq!(s.num_dims(), 4, "tap sum: the map must be 4-D, got {s:?}");
    assert!(s[1].is_multiple_of(3), "tap sum: {} channels is not three taps", s[1]);
    assert!(segments > 0 && s[0].is_multiple_of(segments), "tap sum: {} frames, {segments} segments", s[0]);
    [s[0], s[1] / 3, s[2] * s[3]]
}

fn f32s(t: FlexTensor) -> FlexTensor {
    assert!(t.dtype() == DType::F32, "tap sum: float32, got {:?}", t.dtype());
    t.to_contiguous()
}

fn forward(z: FlexTensor, segments: usize) -> FlexTensor {
    let z = f32s(z);
    let [n, c, plane] = dims(&z, segments);
    let s = z.layout().shape().clone();
    let mut y = flex_alloc::zeros(Shape::new([n, c, s[2], s[3]]));
    if n * c * plane == 0 {
        return y;
    }
    let zv = z.as_slice::<f32>().expect("float32");
    let at = |image: usize, channel: usize| &zv[(image * 3 * c + channel) * plane..][..plane];
    y.storage_mut::<f32>().par_chunks_mut(plane).enumerate().for_each(|(i, out)| {
        let (image, ch) = (i / c, i % c);
        let t = image % segments;
        out.copy_from_slice(at(image, c + ch));
        if t > 0 {
            out.iter_mut().zip(at(image - 1, ch)).for_each(|(o, v)| *o += v);
        }
        if t + 1 < segments {
            out.iter_mut().zip(at(image + 1, 2 * c + ch)).for_each(|(o, v)| *o += v);
        }
    });
    y
}

/// The adjoint: each tap's gradient is `dy` moved back by the tap's offset.
fn backward(dy: FlexTensor, segments: usize) -> FlexTensor {
    let dy = f32s(dy);
    let s = dy.layout().shape().clone();
    let (n, c, plane) = (s[0], s[1], s[2] * s[3]);
    let mut dz = flex_alloc::zeros(Shape::new([n, 3 * c, s[2], s[3]]));
    if n * c * plane == 0 {
        return dz;
    }
    let dyv = dy.as_slice::<f32>().expect("float32");
    dz.storage_mut::<f32>().par_chunks_mut(plane).enumerate().for_each(|(i, out)| {
        let (image, k, ch) = (i / (3 * c), i % (3 * c) / c, i % c);
        let t = image % segments;
        // Tap k of image `image` feeds frame image + 1 − k.
        let reader = match k {
            0 => (t + 1 < segments).then_some(image + 1),
            1 => Some(image),
            _ => (t > 0).then(|| image - 1),
        };
        if let Some(r) = reader {
            out.copy_from_slice(&dyv[(r * c + ch) * plane..][..plane]);
        }
    });
    dz
}

impl TapSum for Flex {
    fn tap_sum(z: FlexTensor, segments: usize) -> FlexTensor {
        forward(z, segments)
    }
}

/// The kernels a backend provides so that `Autodiff<B>` can differentiate the op.
pub trait TapSumKernels: Backend {
    fn tap_sum_forward(z: FloatTensor<Self>, segments: usize) -> FloatTensor<Self>;
    fn tap_sum_backward(dy: FloatTensor<Self>, segments: usize) -> FloatTensor<Self>;
}

impl TapSumKernels for Flex {
    fn tap_sum_forward(z: FlexTensor, segments: usize) -> FlexTensor {
        forward(z, segments)
    }
    fn tap_sum_backward(dy: FlexTensor, segments: usize) -> FlexTensor {
        backward(dy, segments)
    }
}

#[derive(Debug)]
struct TapSumBackward;

impl<B: TapSumKernels> Backward<B, 1> for TapSumBackward {
    type State = usize;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        if let [Some(parent)] = ops.parents {
            grads.register::<B>(parent.id, B::tap_sum_backward(dy, ops.state));
        }
    }
}

impl<B: TapSumKernels, C: CheckpointStrategy> TapSum for Autodiff<B, C> {
    fn tap_sum(z: FloatTensor<Self>, segments: usize) -> FloatTensor<Self> {
        let prep = TapSumBackward.prepare::<C>([z.node()]).compute_bound().stateful();
        let z = z.into_primitive();
        match prep {
            OpsKind::Tracked(prep) => prep.finish(segments, B::tap_sum_forward(z, segments)),
            OpsKind::UnTracked(prep) => prep.finish(B::tap_sum_forward(z, segments)),
        }
    }
}
