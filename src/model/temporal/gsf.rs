//! Gate-Shift-Fuse (Sudhakaran, Escalera, Lanz, TPAMI 2023), GSM's successor, as the official
//! `gsf.py`: on the first `gsf_plane` channels (a `ratio` percent of them, rounded up to
//! even), the GSM gate and shift — tanh gates from a 2-output grouped 3×3×3 Conv3d on
//! ReLU(BN3d(x)); half 1 gated from t+1, half 2 from t−1, zero padded — but instead of adding
//! the shifted and the residual parts, each half *fuses* them: the spatial means of the
//! shifted part and of the residual `x − g·x` form a 2-channel (channels × time) map, a 3×3
//! Conv2d and a sigmoid turn it into per-channel, per-frame weights `w`, and the half becomes
//! `w·shifted + (1 − w)·residual`. Then the per-half (2, C/4) → (C/4, 2) re-interleave; the
//! remaining channels pass through unchanged.

// `conv3D` is the official parameter name; keeping it maps checkpoints 1:1.
#![allow(non_snake_case)]

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::PaddingConfig3d;
use burn::nn::conv::{Conv2d, Conv2dConfig, Conv3d, Conv3dConfig};
use burn::tensor::activation::{sigmoid, tanh};
use burn::tensor::{Device, Tensor, s};

use super::module::{Place, Spec, TemporalModule, TemporalOpts, from_future, from_past};
use crate::model::cost;
use crate::model::batch_norm::BatchNorm;
use crate::ops::{gate_shift, gsf_fuse};
use crate::probe;

/// Gate-Shift-Fuse on a feature map of `f_plane` channels, gating the first `gsf_plane`.
#[derive(Module, Debug)]
pub struct Gsf {
    /// Gate convolution: `gsf_plane` → 2 channels, 3×3×3, groups 2 (official name `conv3D`).
    pub conv3D: Conv3d,
    /// BatchNorm3d over the gated channels.
    pub bn: BatchNorm,
    /// Fusion weights of half 1 / half 2: 2 → 1 channels, 3×3 over (channels, time).
    pub channel_conv1: Conv2d,
    pub channel_conv2: Conv2d,
    pub f_plane: usize,
    pub gsf_plane: usize,
    pub num_segments: usize,
}

/// The official channel count: `ratio` percent of `f_plane`, truncated, then made even. The
/// re-interleave views each half as (2, C/4), so the official code fails unless that is a
/// multiple of 4; here such counts are rounded down to one (at least 4) instead.
pub fn gated_channels(f_plane: usize, ratio: usize) -> usize {
    let c = f_plane * ratio.min(100) / 100;
    let c = c + c % 2;
    (c / 4 * 4).max(4)
}

impl Gsf {
    /// PyTorch's default initialisation for the convolutions (the official module sets none),
    /// BN weight 1 and bias 0.
    pub fn new(f_plane: usize, num_segments: usize, ratio: usize, device: &Device) -> Self {
        let gsf_plane = gated_channels(f_plane, ratio);
        assert!(gsf_plane <= f_plane, "GSF needs at least 4 channels, got {f_plane}");
        let conv3d = Conv3dConfig::new([gsf_plane, 2], [3, 3, 3])
            .with_groups(2)
            .with_padding(PaddingConfig3d::Explicit(1, 1, 1))
            .init(device);
        let fuse =
            || Conv2dConfig::new([2, 1], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device);
        Self {
            conv3D: conv3d,
            bn: BatchNorm::new(gsf_plane, device),
            channel_conv1: fuse(),
            channel_conv2: fuse(),
            f_plane,
            gsf_plane,
            num_segments,
        }
    }

    /// `(batch*segments, C, H, W)` → same shape: the fusion in one fused pass where it applies
    /// ([`Gsf::fuse_frames`]), op by op as the official code otherwise ([`Gsf::fuse_composed`]).
    pub fn forward(&self, x_full: Tensor<4>) -> Tensor<4> {
        let [bt, c, _, _] = x_full.dims();
        let (t, cg) = (self.num_segments, self.gsf_plane);
        assert_eq!(c, self.f_plane, "GSF built for {} channels got {c}", self.f_plane);
        assert_eq!(bt % t, 0, "GSF: {bt} frames is not a multiple of {t} segments");
        let gated = x_full.clone().narrow(1, 0, cg);
        probe::tap("gsf.x", &gated);
        let fused = gate_shift::applies(&gated);
        let gate = tanh(self.gate_logits(gated.clone(), fused));
        probe::tap("gsf.tanh", &gate);
        let y = if gsf_fuse::applies(&gated) { self.fuse_frames(gated, gate) } else { self.fuse_composed(gated, gate) };
        // The ungated channels pass through: the fused channels are written over the input's
        // first ones (in place where the map is no longer shared) rather than concatenated.
        let y = if cg < c { x_full.slice_assign(s![.., 0..cg], y) } else { y };
        probe::tap("gsf", &y);
        y
    }
}

impl Gsf {
    /// The reference fusion, op by op as the official code: on the gated channels `(B·T, Cg,
    /// H, W)` and tanh gates `(B, 2, T, H, W)`, each half gated, its gated part shifted (half 1
    /// from t+1, half 2 from t−1), fused with the residual by the weights its spatial means
    /// give, re-interleaved: `(B·T, Cg, H, W)`.
    pub fn fuse_composed(&self, gated: Tensor<4>, gate: Tensor<5>) -> Tensor<4> {
        let [bt, cg, h, w] = gated.dims();
        let (t, half) = (self.num_segments, cg / 2);
        let b = bt / t;
        // (B, T, Cg, H, W) → (B, Cg, T, H, W): time becomes the depth axis, as in the official code.
        let x = gated.reshape([b, t, cg, h, w]).swap_dims(1, 2);
        let fuse = |x: Tensor<5>, g: Tensor<5>, conv: &Conv2d, from_future_frame: bool| {
            let y = x.clone() * g;
            let r = x - y.clone();
            let y = if from_future_frame { from_future(y, 2) } else { from_past(y, 2) };
            // Spatial means (B, C/2, T) of the shifted and residual parts, stacked as 2 channels.
            let mean = |v: Tensor<5>| v.mean_dim(4).mean_dim(3).reshape([b, half, t]);
            let map = Tensor::stack::<4>(vec![mean(y.clone()), mean(r.clone())], 1);
            let weights = sigmoid(conv.forward(map)).reshape([b, half, t, 1, 1]);
            y * weights.clone() + r * weights.neg().add_scalar(1.0)
        };
        let z1 = fuse(x.clone().narrow(1, 0, half), gate.clone().narrow(1, 0, 1), &self.channel_conv1, true);
        let z2 = fuse(x.narrow(1, half, half), gate.narrow(1, 1, 1), &self.channel_conv2, false);
        let y = Tensor::cat(vec![super::gsm::interleave(z1), super::gsm::interleave(z2)], 1);
        y.swap_dims(1, 2).reshape([bt, cg, h, w])
    }

    /// The same fusion in the frames' layout: the spatial means from two reductions (the
    /// shifted part's mean is the gated product's mean of the neighbouring frame; the
    /// residual's is the map's mean minus the gated product's), the fusion weights from them
    /// as in [`Gsf::fuse_composed`], then the weighting, shift and re-interleave in one pass
    /// (`ops::gsf_fuse`).
    pub fn fuse_frames(&self, gated: Tensor<4>, gate: Tensor<5>) -> Tensor<4> {
        let [bt, cg, h, w] = gated.dims();
        let (t, half, hw) = (self.num_segments, cg / 2, h * w);
        let b = bt / t;
        let g = gate.swap_dims(1, 2).reshape([bt, 2, h, w]);
        let x = gated.clone().reshape([b, t, 2, half, hw]);
        let gated_mean = (x.clone() * g.clone().reshape([b, t, 2, 1, hw])).mean_dim(4);
        let residual_mean = x.mean_dim(4) - gated_mean.clone();
        let shifted_mean = Tensor::cat(
            vec![from_future(gated_mean.clone().narrow(2, 0, 1), 1), from_past(gated_mean.narrow(2, 1, 1), 1)],
            2,
        );
        let weights = |k: usize, conv: &Conv2d| {
            let map = |m: &Tensor<5>| m.clone().narrow(2, k, 1).reshape([b, t, half]).swap_dims(1, 2);
            let map = Tensor::stack::<4>(vec![map(&shifted_mean), map(&residual_mean)], 1);
            sigmoid(conv.forward(map)).reshape([b, half, t]).swap_dims(1, 2)
        };
        let weights = Tensor::cat(vec![weights(0, &self.channel_conv1), weights(1, &self.channel_conv2)], 2);
        gsf_fuse::fuse(gated, g, weights.reshape([bt, cg]), gsf_fuse::Fuse { segments: t })
    }

    /// The gate convolution on ReLU(BN3d(x)) of the gated channels `(B·T, Cg, H, W)`, before
    /// tanh: `(B, 2, T, H, W)`. GSM's gate exactly, so GSM's fused gate convolution runs it
    /// where it applies (`ops::gate_shift::gate_conv`, reading the frames' layout as it is);
    /// burn's grouped Conv3d on the transposed clip otherwise (the reference).
    pub fn gate_logits(&self, x: Tensor<4>, fused: bool) -> Tensor<5> {
        let [bt, cg, h, w] = x.dims();
        let t = self.num_segments;
        if cost::is_recording() {
            cost::add((bt * 2 * h * w * (cg / 2) * 27) as u64);
        }
        let r = self.bn.forward_clamp(x, f32::INFINITY);
        if fused {
            let bias = match &self.conv3D.bias {
                Some(b) => b.val(),
                None => Tensor::<1>::zeros([2], &r.device()).cast(r.dtype()),
            };
            return gate_shift::gate_conv(r, self.conv3D.weight.val(), bias, t);
        }
        self.conv3D.forward(r.reshape([bt / t, t, cg, h, w]).swap_dims(1, 2))
    }
}

impl TemporalModule for Gsf {
    const SPEC: Spec = Spec { name: "gsf", label: "GSF", official: Some("gsf"), place: Place::AfterLastConv };

    fn build(channels: usize, segments: usize, opts: TemporalOpts, device: &Device) -> Self {
        Gsf::new(channels, segments, opts.gsf_ratio, device)
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        Gsf::forward(self, x)
    }
}


#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::tensor::{Distribution, Tolerance};

    use super::*;
    use crate::model::temporal::tests::{check_gradients, sits_in_every_backbone};

    /// A GSF with a drawn gate (the default gate convolution is nearly flat), and a BN bias of
    /// 4 that keeps ReLU(BN(x)) off its kink, where finite differences are no derivative.
    fn drawn(f_plane: usize, segments: usize, device: &Device) -> Gsf {
        let mut m = Gsf::new(f_plane, segments, 100, device);
        let cg = m.gsf_plane;
        let w = Tensor::random([2, cg / 2, 3, 3, 3], Distribution::Normal(0.0, 0.3), device);
        m.conv3D.weight = Param::from_tensor(if device.is_autodiff() { w.require_grad() } else { w });
        m.bn.bias = Param::from_tensor(Tensor::ones([cg], device).mul_scalar(4.0));
        m
    }

    /// GSM's fused gate convolution gives the reference Conv3d's logits, and the same
    /// gradients to the input and to the BN before it.
    #[test]
    fn the_fused_gate_matches_the_conv3d() {
        let device = Device::flex().autodiff();
        let m = drawn(8, 3, &device);
        let x = Tensor::<4>::random([6, 8, 5, 4], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let r = Tensor::<5>::random([2, 2, 3, 5, 4], Distribution::Normal(0.0, 1.0), &device);
        let run = |fused| {
            let logits = m.gate_logits(x.clone(), fused);
            let grads = (logits.clone() * r.clone()).sum().backward();
            (logits, x.grad(&grads).unwrap(), m.bn.bias.grad(&grads).unwrap())
        };
        let (fused, reference) = (run(true), run(false));
        assert_eq!(fused.0.dims(), [2, 2, 3, 5, 4]);
        let close = Tolerance::absolute(1e-4);
        fused.0.into_data().assert_approx_eq::<f32>(&reference.0.into_data(), close);
        fused.1.into_data().assert_approx_eq::<f32>(&reference.1.into_data(), close);
        fused.2.into_data().assert_approx_eq::<f32>(&reference.2.into_data(), close);
    }

    /// The fused fusion gives the official composition's output and gradients (input, gates,
    /// fusion convolutions), with one and several clips, and with one segment (no neighbours).
    #[test]
    fn the_fused_fusion_matches_the_composition() {
        let device = Device::flex().autodiff();
        for [b, t, cg, h, w] in [[1, 3, 8, 4, 5], [2, 2, 12, 3, 3], [1, 1, 4, 2, 2]] {
            let m = drawn(cg, t, &device);
            let x = Tensor::<4>::random([b * t, cg, h, w], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let gate = Tensor::<5>::random([b, 2, t, h, w], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let r = Tensor::<4>::random([b * t, cg, h, w], Distribution::Normal(0.0, 1.0), &device);
            let run = |fused: bool| {
                let g = tanh(gate.clone());
                let z = if fused { m.fuse_frames(x.clone(), g) } else { m.fuse_composed(x.clone(), g) };
                let grads = (z.clone() * r.clone()).sum().backward();
                let dw = m.channel_conv2.weight.grad(&grads).unwrap();
                let db = m.channel_conv1.bias.as_ref().unwrap().grad(&grads).unwrap();
                (z, x.grad(&grads).unwrap(), dw, db, gate.grad(&grads).unwrap())
            };
            let (fused, reference) = (run(true), run(false));
            let close = Tolerance::absolute(1e-4);
            fused.0.into_data().assert_approx_eq::<f32>(&reference.0.into_data(), close);
            fused.1.into_data().assert_approx_eq::<f32>(&reference.1.into_data(), close);
            fused.2.into_data().assert_approx_eq::<f32>(&reference.2.into_data(), close);
            fused.3.into_data().assert_approx_eq::<f32>(&reference.3.into_data(), close);
            fused.4.into_data().assert_approx_eq::<f32>(&reference.4.into_data(), close);
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let m = drawn(8, 2, &Device::flex());
        check_gradients(m, [4, 8, 3, 3]);
    }

    #[test]
    fn sits_in_every_backbone_where_its_spec_places_it() {
        sits_in_every_backbone(crate::model::TemporalKind::Gsf, &["gsf", ".conv3D."]);
    }

    #[test]
    fn gated_channel_counts() {
        // Official: BN-Inception at 100%, ResNet-50 bottlenecks at 25%.
        assert_eq!(gated_channels(64, 100), 64);
        assert_eq!(gated_channels(256, 25), 64);
        assert_eq!(gated_channels(2048, 25), 512);
        // Truncate, make even (official), then down to a multiple of 4 (ours).
        assert_eq!(gated_channels(24, 50), 12);
        assert_eq!(gated_channels(32, 30), 8);
        assert_eq!(gated_channels(64, 1), 4);
    }
}
