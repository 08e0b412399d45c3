//! The GSM unit in inference: `act(BN(GSM(x)))` — GSM on a branch's first convolution, then
//! the unit's BatchNorm and activation (BN-Inception's and InceptionV3's GSM units, ResNet's
//! `conv1` → GSM → `bn1` → ReLU, EfficientNet's expansion with ReLU6). With both BatchNorms in
//! affine form (`BatchNorm::into_affine`, done by `Recognizer::inference`) each is a
//! per-channel map, and the fused GSM absorbs them:
//! - GSM's BN3d + ReLU before the gate convolution become one pass ([`affine_act`]) instead
//!   of a BN op and a ReLU op;
//! - the unit's BN + activation are applied by the shift kernel to each output plane (or
//!   position) while it is in cache, instead of two more passes over the map.
//!
//! Float32 on flex and libtorch's CPU (`ops/gate_shift/kernels.rs`), float32 and bfloat16 on libtorch's
//! CUDA devices (`ops/gate_shift/cuda.rs`: `affine_act`, `shift_fwd_affine`). Elsewhere (CubeCL), in
//! training and while activations are probed, `Gsm::forward_unit` runs the unit op by op.

// The generated routing names burn's libtorch backend, which burn 0.22 marks deprecated.
#![cfg_attr(feature = "tch", allow(deprecated))]

use burn::backend::flex::{Flex, FlexTensor};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::tensor::{Device, Tensor};

use super::flex::{GateShiftKernels, check_shape, dims, slice};
use super::kernels::{self as kernels, Affine, affine_act};
use crate::ops::flex_alloc;

/// The unit's fused inference ops, routed by burn to the backend a tensor lives on.
#[backend_extension(Flex, LibTorch: cfg(feature = "tch"))]
pub trait GateShiftUnit: Backend {
    /// The whole unit `min(max(post(GSM(x)), 0), max)` with GSM's BN3d (`scale`, `shift`) and
    /// the unit's BN (`post_scale`, `post_shift`) in affine form. On libtorch's CUDA devices a
    /// channels-last `x` takes two passes (`ops/gate_shift/cuda.rs`, `unit_*_nhwc`); elsewhere it is
    /// [`affine_act`](Self::affine_act), the fused gate convolution and
    /// [`gate_shift_affine`](Self::gate_shift_affine).
    #[allow(clippy::too_many_arguments)]
    fn gsm_unit(
        x: FloatTensor<Self>,
        gate_weight: FloatTensor<Self>,
        gate_bias: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        post_scale: FloatTensor<Self>,
        post_shift: FloatTensor<Self>,
        max: f32,
        segments: usize,
    ) -> FloatTensor<Self>;
    /// `min(max(scale[c]·x + shift[c], 0), max)` over `x` (B·T, C, H, W), in its memory order.
    fn affine_act(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        max: f32,
        segments: usize,
    ) -> FloatTensor<Self>;
    /// The gated shift of `x` by `gate_logits` (as `GateShift::gate_shift`), then that map on
    /// each output channel.
    fn gate_shift_affine(
        x: FloatTensor<Self>,
        gate_logits: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        max: f32,
        segments: usize,
    ) -> FloatTensor<Self>;
    /// `x` (N, C, H, W) stored channels-last, as libtorch's channels-last backbones hand it to
    /// a GSM unit (a copy unless it is already); `x` itself on flex. For checks and benchmarks.
    fn channels_last(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl GateShiftUnit for Flex {
    fn channels_last(x: FlexTensor) -> FlexTensor {
        x
    }

    fn gsm_unit(
        x: FlexTensor,
        gate_weight: FlexTensor,
        gate_bias: FlexTensor,
        scale: FlexTensor,
        shift: FlexTensor,
        post_scale: FlexTensor,
        post_shift: FlexTensor,
        max: f32,
        segments: usize,
    ) -> FlexTensor {
        let r = Self::affine_act(x.clone(), scale, shift, f32::INFINITY, segments);
        let gate_logits = <Self as GateShiftKernels>::gate_conv_forward(r, gate_weight, gate_bias, segments);
        Self::gate_shift_affine(x, gate_logits, post_scale, post_shift, max, segments)
    }

    fn affine_act(x: FlexTensor, scale: FlexTensor, shift: FlexTensor, max: f32, segments: usize) -> FlexTensor {
        let d = dims(&x, segments);
        let (x, scale, shift) = (x.to_contiguous(), scale.to_contiguous(), shift.to_contiguous());
        check_shape(&scale, [d.c], "scale");
        check_shape(&shift, [d.c], "shift");
        let mut out = flex_alloc::zeros(x.layout().shape().clone());
        let a = Affine { scale: slice(&scale), shift: slice(&shift), max };
        affine_act(d, slice(&x), &a, false, out.storage_mut::<f32>());
        out
    }

    fn gate_shift_affine(
        x: FlexTensor,
        gate_logits: FlexTensor,
        scale: FlexTensor,
        shift: FlexTensor,
        max: f32,
        segments: usize,
    ) -> FlexTensor {
        let d = dims(&x, segments);
        check_shape(&gate_logits, [d.b, 2, d.t, d.h, d.w], "gate logits");
        check_shape(&scale, [d.c], "scale");
        check_shape(&shift, [d.c], "shift");
        let (x, a) = (x.to_contiguous(), gate_logits.to_contiguous());
        let (scale, shift) = (scale.to_contiguous(), shift.to_contiguous());
        let mut y = flex_alloc::zeros(x.layout().shape().clone());
        let post = Affine { scale: slice(&scale), shift: slice(&shift), max };
        kernels::shift_forward(d, slice(&x), slice(&a), Some(&post), y.storage_mut::<f32>());
        y
    }
}

/// Whether `device` is libtorch's CPU (`cuda` false) or one of its CUDA devices.
pub(super) fn libtorch(device: &Device, cuda: bool) -> bool {
    #[cfg(feature = "tch")]
    {
        use burn::backend::{DispatchDevice, LibTorchDevice};
        match device.clone().inner().as_dispatch() {
            DispatchDevice::LibTorch(LibTorchDevice::Cpu) => return !cuda,
            DispatchDevice::LibTorch(LibTorchDevice::Cuda(_)) => return cuda,
            _ => {}
        }
    }
    let _ = (device, cuda);
    false
}

/// [`GateShiftUnit::gsm_unit`] on high-level tensors: `gate` = the gate convolution's weight
/// and bias, `bn` and `post` = GSM's BN3d and the unit's BN in affine form (scale, shift).
pub fn unit(
    x: Tensor<4>,
    gate: (Tensor<5>, Tensor<1>),
    bn: [Tensor<1>; 2],
    post: [Tensor<1>; 2],
    max: f32,
    segments: usize,
) -> Tensor<4> {
    crate::ops::profile::timed_map(
        || "gsm unit".into(),
        x.dims(),
        || {
            let (w, b) = (gate.0.into_dispatch(), gate.1.into_dispatch());
            let [s, sh] = bn.map(|t| t.into_dispatch());
            let [ps, pb] = post.map(|t| t.into_dispatch());
            let x = x.into_dispatch();
            Tensor::from_dispatch(<Dispatch as GateShiftUnit>::gsm_unit(x, w, b, s, sh, ps, pb, max, segments))
        },
    )
}

/// [`GateShiftUnit::channels_last`] on high-level tensors: the order libtorch's backbones
/// give a GSM unit (`ops::torch::channels_last`) where `x` lives on libtorch, else `x`.
pub fn backbone_order(x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "tch")]
    if (libtorch(&x.device(), false) || libtorch(&x.device(), true)) && crate::ops::torch::channels_last(&x) {
        return Tensor::from_dispatch(<Dispatch as GateShiftUnit>::channels_last(x.into_dispatch()));
    }
    x
}

#[cfg(test)]
mod tests {
    use crate::probe;
    use burn::module::{Module, Param};
    use burn::tensor::{Device, Distribution, Tensor, Tolerance};

    use crate::model::layers::tests::trained_bn;
    use crate::model::temporal::Gsm;

    /// The fused unit (flex) gives the op-by-op `act(BN(GSM(x)))` for ReLU and ReLU6; under a
    /// probe (which taps GSM's own output) the unit runs op by op.
    #[test]
    fn fused_unit_matches_op_by_op() {
        let device = Device::flex();
        let (b, t, c, h, w) = (2, 4, 16, 5, 6);
        let mut gsm = Gsm::new(c, t, &device);
        gsm.conv3D.weight =
            Param::from_tensor(Tensor::random([2, c / 2, 3, 3, 3], Distribution::Normal(0.0, 0.2), &device));
        gsm.bn = trained_bn(c, &device);
        let gsm = gsm.valid();
        let post = trained_bn(c, &device);
        let x = Tensor::<4>::random([b * t, c, h, w], Distribution::Normal(0.0, 2.0), &device);
        for max in [f32::INFINITY, 6.0] {
            let reference = gsm.forward_unit(x.clone(), &post, max);
            let (mut fused_gsm, mut fused_post) = (gsm.clone(), post.clone());
            fused_gsm.bn.into_affine();
            fused_post.into_affine();
            assert!(crate::ops::gate_shift::unit_applies(&x));
            let fused = fused_gsm.forward_unit(x.clone(), &fused_post, max);
            fused.to_data().assert_approx_eq::<f32>(&reference.to_data(), Tolerance::absolute(1e-4));
            let (probed, _) = probe::capture(|| fused_gsm.forward_unit(x.clone(), &fused_post, max));
            probed.to_data().assert_approx_eq::<f32>(&reference.to_data(), Tolerance::absolute(1e-4));
            assert!(max.is_infinite() || reference.clone().max().into_scalar::<f32>() <= 6.0);
        }
    }
}
