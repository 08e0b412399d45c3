//! The fused GSM: two passes over the feature map where the composed version (`gsm.rs`)
//! makes about a dozen, each registered with burn's autodiff with a hand-written backward.
//!
//! 1. `gate_conv`: the 2-output grouped 3×3×3 gate convolution, read straight from
//!    ReLU(BN(x)) in the backbone's `(B·T, C, H, W)` layout. BatchNorm3d over (B, C, T, H, W)
//!    normalises each channel over the same B·T·H·W values as a BatchNorm over `(B·T, C, H, W)`,
//!    so no transpose to (B, C, T, H, W) is needed.
//! 2. `gate_shift`: tanh, the gated shift of each channel half, the residual `x − g·x` and the
//!    channel re-interleave, one output frame written once.
//!
//! For a channel `c` of half `k` (shift `s = +1` for half 1, `−1` for half 2), frame `t`:
//! `y[t, π(c)] = (x[t,c] − g[t]·x[t,c]) + g[t+s]·x[t+s,c]` (zero outside the clip), with
//! `g = tanh(a[k])` and `π` the per-half (2, C/4) → (C/4, 2) interleave. Backward, with
//! `dz[t,c] = dy[t, π(c)]`:
//! `dx[t,c] = dz[t,c] − g[t]·dz[t,c] + g[t]·dz[t−s,c]` and
//! `da[k,t] = (1 − g[t]²) · Σ_{c∈k} x[t,c]·(dz[t−s,c] − dz[t,c])`.
//!
//! Kernels exist in float32 for the pure-Rust `flex` backend (`ops/gate_shift/kernels.rs`) and, with
//! `--features tch`, for libtorch on CPU (the same kernels) and CUDA (`ops/gate_shift/cuda.rs`, via
//! `ops/gate_shift/tch.rs`); `Gsm::forward` uses the composed reference elsewhere. Both are tested
//! against each other and against the official fixture.

// The generated routing names burn's libtorch backend, which burn 0.22 marks deprecated.
#![cfg_attr(feature = "tch", allow(deprecated))]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::flex::{Flex, FlexTensor};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, backend_extension};
use burn::tensor::{DType, Shape};

use super::gate_gemm::{self, Layout};
use super::kernels::{self as kernels, Dims};
use crate::ops::flex_alloc;

/// The fused ops, routed by burn to the backend a tensor lives on (with or without autodiff).
#[backend_extension(Flex, LibTorch: cfg(feature = "tch"), Cube: cfg(any(feature = "cuda", feature = "wgpu")), Autodiff)]
pub trait GateShift: Backend {
    /// `r`: ReLU(BN(x)), (B·T, C, H, W); `weight`: (2, C/2, 3, 3, 3); `bias`: (2) →
    /// gate logits (B, 2, T, H, W).
    fn gate_conv(
        r: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        segments: usize,
    ) -> FloatTensor<Self>;
    /// `x`: (B·T, C, H, W); `gate_logits`: (B, 2, T, H, W), before tanh → same shape as `x`.
    fn gate_shift(x: FloatTensor<Self>, gate_logits: FloatTensor<Self>, segments: usize) -> FloatTensor<Self>;
}

/// The kernels a backend provides so that `Autodiff<B>` can differentiate the fused ops.
pub trait GateShiftKernels: Backend {
    fn gate_conv_forward(
        r: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        segments: usize,
    ) -> FloatTensor<Self>;
    /// Returns `(dr, dweight, dbias)`.
    fn gate_conv_backward(
        r: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        da: FloatTensor<Self>,
        segments: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    fn gate_shift_forward(x: FloatTensor<Self>, gate_logits: FloatTensor<Self>, segments: usize) -> FloatTensor<Self>;
    /// Returns `(dx, d gate_logits)`.
    fn gate_shift_backward(
        x: FloatTensor<Self>,
        gate_logits: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        segments: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

impl GateShift for Flex {
    fn gate_conv(r: FlexTensor, weight: FlexTensor, bias: FlexTensor, segments: usize) -> FlexTensor {
        Self::gate_conv_forward(r, weight, bias, segments)
    }

    fn gate_shift(x: FlexTensor, gate_logits: FlexTensor, segments: usize) -> FlexTensor {
        Self::gate_shift_forward(x, gate_logits, segments)
    }
}

impl GateShiftKernels for Flex {
    fn gate_conv_forward(r: FlexTensor, weight: FlexTensor, bias: FlexTensor, segments: usize) -> FlexTensor {
        let d = dims(&r, segments);
        check_shape(&weight, [2, d.c / 2, 3, 3, 3], "gate weight");
        check_shape(&bias, [2], "gate bias");
        let (r, weight, bias) = (r.to_contiguous(), weight.to_contiguous(), bias.to_contiguous());
        let mut out = flex_alloc::zeros(Shape::new([d.b, 2, d.t, d.h, d.w]));
        gate_gemm::forward(d, Layout::Nchw, slice(&r), slice(&weight), slice(&bias), out.storage_mut::<f32>());
        out
    }

    fn gate_conv_backward(
        r: FlexTensor,
        weight: FlexTensor,
        da: FlexTensor,
        segments: usize,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let d = dims(&r, segments);
        let (r, weight, da) = (r.to_contiguous(), weight.to_contiguous(), da.to_contiguous());
        let mut dr = flex_alloc::zeros(r.layout().shape().clone());
        let (dw, db) = gate_gemm::backward(d, slice(&r), slice(&weight), slice(&da), dr.storage_mut::<f32>());
        (dr, flex_alloc::from_vec(dw, weight.layout().shape().clone()), flex_alloc::from_vec(db, Shape::new([2])))
    }

    fn gate_shift_forward(x: FlexTensor, gate_logits: FlexTensor, segments: usize) -> FlexTensor {
        let d = dims(&x, segments);
        check_shape(&gate_logits, [d.b, 2, d.t, d.h, d.w], "gate logits");
        let (x, a) = (x.to_contiguous(), gate_logits.to_contiguous());
        let mut y = flex_alloc::zeros(x.layout().shape().clone());
        kernels::shift_forward(d, slice(&x), slice(&a), None, y.storage_mut::<f32>());
        y
    }

    fn gate_shift_backward(
        x: FlexTensor,
        gate_logits: FlexTensor,
        dy: FlexTensor,
        segments: usize,
    ) -> (FlexTensor, FlexTensor) {
        let d = dims(&x, segments);
        let (x, a, dy) = (x.to_contiguous(), gate_logits.to_contiguous(), dy.to_contiguous());
        let mut dx = flex_alloc::zeros(x.layout().shape().clone());
        let mut da = flex_alloc::zeros(a.layout().shape().clone());
        kernels::shift_backward(d, slice(&x), slice(&a), slice(&dy), dx.storage_mut::<f32>(), da.storage_mut::<f32>());
        (dx, da)
    }
}

/// Hands each gradient to its input where that input is tracked (`None` otherwise).
fn register<B: Backend>(grads: &mut Gradients, pairs: impl IntoIterator<Item = (Option<NodeId>, FloatTensor<B>)>) {
    for (id, grad) in pairs {
        if let Some(id) = id {
            grads.register::<B>(id, grad);
        }
    }
}

#[derive(Debug)]
struct GateConvBackward;

impl<B: GateShiftKernels> Backward<B, 3> for GateConvBackward {
    /// Input and weight (kept alive, not copied) and the segment count.
    type State = (FloatTensor<B>, FloatTensor<B>, usize);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (r, weight, segments) = ops.state;
        let da = grads.consume::<B>(&ops.node);
        let (dr, dw, db) = B::gate_conv_backward(r, weight, da, segments);
        register::<B>(grads, ops.parents.map(|p| p.map(|n| n.id)).into_iter().zip([dr, dw, db]));
    }
}

#[derive(Debug)]
struct GateShiftBackward;

impl<B: GateShiftKernels> Backward<B, 2> for GateShiftBackward {
    /// The two inputs (kept alive, not copied) and the segment count.
    type State = (FloatTensor<B>, FloatTensor<B>, usize);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, gate_logits, segments) = ops.state;
        let dy = grads.consume::<B>(&ops.node);
        let (dx, da) = B::gate_shift_backward(x, gate_logits, dy, segments);
        register::<B>(grads, ops.parents.map(|p| p.map(|n| n.id)).into_iter().zip([dx, da]));
    }
}

impl<B: GateShiftKernels, C: CheckpointStrategy> GateShift for Autodiff<B, C> {
    fn gate_conv(
        r: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        segments: usize,
    ) -> FloatTensor<Self> {
        let prep = GateConvBackward.prepare::<C>([r.node(), weight.node(), bias.node()]).compute_bound().stateful();
        let (r, weight, bias) = (r.into_primitive(), weight.into_primitive(), bias.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => {
                let a = B::gate_conv_forward(r.clone(), weight.clone(), bias, segments);
                prep.finish((r, weight, segments), a)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::gate_conv_forward(r, weight, bias, segments)),
        }
    }

    fn gate_shift(x: FloatTensor<Self>, gate_logits: FloatTensor<Self>, segments: usize) -> FloatTensor<Self> {
        let prep = GateShiftBackward.prepare::<C>([x.node(), gate_logits.node()]).compute_bound().stateful();
        let (x, a) = (x.into_primitive(), gate_logits.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => {
                let y = B::gate_shift_forward(x.clone(), a.clone(), segments);
                prep.finish((x, a, segments), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::gate_shift_forward(x, a, segments)),
        }
    }
}

/// Sizes of a `(B·T, C, H, W)` float32 feature map cut into `segments`.
pub(in crate::ops::gate_shift) fn dims(x: &FlexTensor, segments: usize) -> Dims {
    assert!(x.dtype() == DType::F32, "fused GSM kernels are float32, got {:?}", x.dtype());
    Dims::of_feature_map(x.layout().shape(), segments)
}

pub(in crate::ops::gate_shift) fn check_shape<const D: usize>(x: &FlexTensor, expected: [usize; D], what: &str) {
    assert!(x.dtype() == DType::F32, "fused GSM: {what} is {:?}, not float32", x.dtype());
    assert_eq!(x.layout().shape(), &Shape::new(expected), "fused GSM: {what} shape");
}

pub(in crate::ops::gate_shift) fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous float32 tensor")
}

#[cfg(test)]
mod tests {
    use burn::module::{Module, Param};
    use burn::tensor::{Distribution, Tensor, TensorData};

    use super::*;
    use crate::model::temporal::Gsm;
    use crate::ops::gate_shift::{applies, gate_conv, gate_shift};
    use crate::parity::max_errors;
    use burn::tensor::Device;

    /// Shapes that exercise one segment, odd sizes and several clips.
    const SHAPES: [(usize, usize, usize, usize, usize); 4] =
        [(2, 8, 16, 5, 7), (1, 3, 8, 4, 4), (3, 1, 12, 2, 3), (1, 16, 64, 7, 7)];

    fn rel(ours: TensorData, reference: TensorData) -> f32 {
        let (err, scale) = max_errors(&ours, &reference).expect("same shapes");
        err / scale
    }

    fn normal<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
    }

    #[test]
    fn forward_matches_the_composed_reference() {
        let device = Device::flex();
        for (b, t, c, h, w) in SHAPES {
            let gsm = Gsm::new(c, t, &device);
            let x = normal([b * t, c, h, w], &device);
            let a = normal([b, 2, t, h, w], &device).mul_scalar(2.0);
            assert!(applies(&x));
            let fused = gate_shift(x.clone(), a.clone(), t).into_data();
            let composed = gsm.shift_composed(x, a).into_data();
            let r = rel(fused, composed);
            assert!(r <= 1e-6, "{b}×{t}×{c}×{h}×{w}: rel {r:e}");
        }
    }

    #[test]
    fn backward_matches_the_composed_reference() {
        let device = Device::flex().autodiff();
        for (b, t, c, h, w) in SHAPES {
            let gsm = Gsm::new(c, t, &device);
            let x = normal([b * t, c, h, w], &device);
            let a = normal([b, 2, t, h, w], &device);
            let dy = normal([b * t, c, h, w], &device);
            let grads_of = |fused: bool| {
                let (x, a) = (x.clone().require_grad(), a.clone().require_grad());
                let y =
                    if fused { gate_shift(x.clone(), a.clone(), t) } else { gsm.shift_composed(x.clone(), a.clone()) };
                let g = (y * dy.clone()).sum().backward();
                (x.grad(&g).unwrap().into_data(), a.grad(&g).unwrap().into_data())
            };
            let ((dx, da), (dx_ref, da_ref)) = (grads_of(true), grads_of(false));
            let (rx, ra) = (rel(dx, dx_ref), rel(da, da_ref));
            assert!(rx <= 1e-6 && ra <= 1e-5, "{b}×{t}×{c}×{h}×{w}: dx rel {rx:e}, da rel {ra:e}");
        }
    }

    /// The gate convolution against burn's Conv3d on the transposed clip, forward and the
    /// gradients of its input, weight and bias.
    #[test]
    fn gate_conv_matches_conv3d() {
        let device = Device::flex().autodiff();
        for (b, t, c, h, w) in SHAPES {
            let gsm = Gsm::new(c, t, &device);
            let r = normal([b * t, c, h, w], &device);
            let weight = normal([2, c / 2, 3, 3, 3], &device);
            let bias = normal([2], &device);
            let da = normal([b, 2, t, h, w], &device);
            let run = |fused: bool| {
                let (r, weight, bias) =
                    (r.clone().require_grad(), weight.clone().require_grad(), bias.clone().require_grad());
                let a = if fused {
                    gate_conv(r.clone(), weight.clone(), bias.clone(), t)
                } else {
                    let mut conv = gsm.conv3D.clone();
                    conv.weight = Param::from_tensor(weight.clone());
                    conv.bias = Some(Param::from_tensor(bias.clone()));
                    conv.forward(r.clone().reshape([b, t, c, h, w]).swap_dims(1, 2))
                };
                let g = (a.clone() * da.clone()).sum().backward();
                let dr = r.grad(&g).unwrap().into_data();
                let dw = weight.grad(&g).unwrap().into_data();
                let db = bias.grad(&g).unwrap().into_data();
                (a.into_data(), dr, dw, db)
            };
            let (f, c_) = (run(true), run(false));
            // The bias gradient is a plain sum of B·T·H·W gate gradients per gate: two summation
            // orders differ by rounding relative to Σ|terms|, which can be far above |sum| when
            // the terms cancel (random data), so it is measured against Σ|da| per gate.
            let (db_err, _) = max_errors(&f.3, &c_.3).expect("same shapes");
            let abs_sum: f32 = da.clone().abs().sum_dims(&[0, 2, 3, 4]).max().into_scalar::<f32>();
            let errs = [rel(f.0, c_.0), rel(f.1, c_.1), rel(f.2, c_.2), db_err / abs_sum];
            assert!(errs.iter().all(|&e| e <= 1e-5), "{b}×{t}×{c}×{h}×{w}: logits, dr, dw, db rel {errs:?}");
        }
    }

    #[test]
    fn only_tracked_inputs_receive_gradients() {
        let device = Device::flex().autodiff();
        let x = normal([4, 8, 3, 3], &device).require_grad();
        let a = normal([1, 2, 4, 3, 3], &device);
        let g = gate_shift(x.clone(), a.clone(), 4).sum().backward();
        assert!(x.grad(&g).is_some() && a.grad(&g).is_none());
        // Neither tracked: an untracked op whose output still works downstream.
        let y = gate_shift(normal([4, 8, 3, 3], &device), a, 4);
        assert_eq!(y.dims(), [4, 8, 3, 3]);
    }

    /// The whole module, fused against composed: output and the gradients of x, the gate
    /// convolution and the BatchNorm, with a non-zero gate so every term matters.
    #[test]
    fn gsm_module_paths_agree() {
        let device = Device::flex().autodiff();
        let (b, t, c, h, w) = (2, 8, 32, 6, 5);
        let mut gsm = Gsm::new(c, t, &device);
        gsm.conv3D.weight = Param::from_tensor(normal([2, c / 2, 3, 3, 3], &device).mul_scalar(0.2));
        let x = normal([b * t, c, h, w], &device);
        let dy = normal([b * t, c, h, w], &device);
        let run = |fused: bool| {
            let x = x.clone().require_grad();
            let y = gsm.forward_path(x.clone(), fused);
            let g = (y.clone() * dy.clone()).sum().backward();
            let w = gsm.conv3D.weight.grad(&g).unwrap().into_data();
            let bn = gsm.bn.weight.grad(&g).unwrap().into_data();
            (y.into_data(), x.grad(&g).unwrap().into_data(), w, bn)
        };
        let (fused, composed) = (run(true), run(false));
        assert!(rel(fused.0, composed.0) <= 1e-6);
        assert!(rel(fused.1, composed.1) <= 1e-5);
        assert!(rel(fused.2, composed.2) <= 1e-5);
        assert!(rel(fused.3, composed.3) <= 1e-5);
        // Inference on the plain device takes the fused path too.
        let eval = gsm.valid();
        let x = normal([b * t, c, h, w], &Device::flex());
        assert!(rel(eval.forward_path(x.clone(), true).into_data(), eval.forward_path(x, false).into_data()) <= 1e-6);
    }

    #[test]
    fn bf16_takes_the_composed_path() {
        let x: Tensor<4> = normal([2, 8, 2, 2], &Device::flex()).cast(DType::BF16);
        assert!(!applies(&x));
    }
}
