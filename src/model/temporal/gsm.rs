//! The Gate-Shift Module (Sudhakaran, Escalera, Lanz, CVPR 2020), exactly as the official
//! `gsm.py`: a 2-output grouped 3×3×3 Conv3d on ReLU(BN3d(x)) gives one tanh gate per channel
//! half; the gated part of half 1 comes from frame t+1, that of half 2 from frame t−1 (zero
//! padded), the ungated residual `x − g·x` stays; finally each half's channels are
//! re-interleaved by viewing it as (2, C/4) and transposing to (C/4, 2).
//!
//! Causal (`--causal`, for online inference; a documented variant, not the paper's module):
//! both halves' gated parts come from frame t−1, and the gate convolution's three temporal
//! taps read frames t−2, t−1, t (zero before the clip) instead of t−1, t, t+1. Same
//! parameters as GSM, so GSM weights load into it. Online, the earlier frames come from
//! `online`'s cache. It runs op by op (the fused kernels are the bidirectional module's).

// `conv3D` is the official parameter name; keeping it maps checkpoints 1:1.
#![allow(non_snake_case)]

use burn::module::Module;
use burn::nn::Initializer;
use burn::nn::PaddingConfig3d;
use burn::nn::conv::{Conv3d, Conv3dConfig};
use burn::tensor::activation::tanh;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor};

use super::module::{Place, Spec, TemporalModule, TemporalOpts, from_future, from_past};
use super::online;
use crate::model::cost;
use crate::model::batch_norm::BatchNorm;
use crate::ops::gate_shift::{self, unit};
use crate::probe;

/// Gate-Shift Module on a feature map of `f_plane` channels and `num_segments` frames.
#[derive(Module, Debug)]
pub struct Gsm {
    /// Gate convolution: `f_plane` → 2 channels, 3×3×3, groups 2 (official name `conv3D`).
    pub conv3D: Conv3d,
    /// BatchNorm3d over the `f_plane` input channels.
    pub bn: BatchNorm,
    pub f_plane: usize,
    pub num_segments: usize,
    pub causal: bool,
}

impl Gsm {
    /// Official initialisation: gate convolution weights and bias zero, so every gate is 0
    /// and the module starts as a fixed channel permutation.
    pub fn new(f_plane: usize, num_segments: usize, device: &Device) -> Self {
        assert!(f_plane.is_multiple_of(4), "GSM needs a channel count divisible by 4, got {f_plane}");
        let conv3d = Conv3dConfig::new([f_plane, 2], [3, 3, 3])
            .with_groups(2)
            .with_padding(PaddingConfig3d::Explicit(1, 1, 1))
            .with_initializer(Initializer::Zeros)
            .init(device);
        Self { conv3D: conv3d, bn: BatchNorm::new(f_plane, device), f_plane, num_segments, causal: false }
    }

    /// `(batch*segments, C, H, W)` → same shape: the fused kernel where it exists (see
    /// `ops::gate_shift`), the composed reference otherwise.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if self.causal && online::active() {
            return self.forward_online(x);
        }
        if self.causal {
            return self.forward_causal(x);
        }
        let fused = gate_shift::applies(&x);
        self.forward_path(x, fused)
    }

    /// Causal GSM on a clip `(B·T, C, H, W)`, in the frames' layout (as `forward_online`
    /// computes it a frame at a time): the gate from frames t−2, t−1, t, both halves' gated
    /// parts from frame t−1, the halves re-interleaved.
    fn forward_causal(&self, x: Tensor<4>) -> Tensor<4> {
        let [bt, c, h, w] = x.dims();
        let (t, hw) = (self.num_segments, h * w);
        assert_eq!(bt % t, 0, "GSM: {bt} frames is not a multiple of {t} segments");
        let b = bt / t;
        probe::tap("gsm.x", &x);
        let gate = tanh(self.gate_logits(x.clone(), false)).swap_dims(1, 2).reshape([b, t, 2, 1, hw]);
        let halves = x.reshape([b, t, 2, c / 2, hw]);
        let y = halves.clone() * gate;
        let z = from_past(y.clone(), 1) + halves - y;
        let y = z.reshape([b, t, 2, 2, c / 4, hw]).swap_dims(3, 4).reshape([bt, c, h, w]);
        probe::tap("gsm", &y);
        y
    }

    /// `forward` with the path chosen by the caller (`fused` needs float32 on flex).
    pub fn forward_path(&self, x: Tensor<4>, fused: bool) -> Tensor<4> {
        probe::tap("gsm.x", &x);
        let gate_logits = self.gate_logits(x.clone(), fused);
        let y = if fused {
            gate_shift::gate_shift(x, gate_logits, self.num_segments)
        } else {
            self.shift_composed(x, gate_logits)
        };
        probe::tap("gsm", &y);
        y
    }

    /// The gate convolution on ReLU(BN3d(x)), before tanh: `(B, 2, T, H, W)`.
    pub fn gate_logits(&self, x: Tensor<4>, fused: bool) -> Tensor<5> {
        let [bt, c, h, w] = x.dims();
        let t = self.num_segments;
        assert_eq!(c, self.f_plane, "GSM built for {} channels got {c}", self.f_plane);
        assert_eq!(bt % t, 0, "GSM: {bt} frames is not a multiple of {t} segments");
        let gate_logits = if fused {
            // BatchNorm3d's per-channel statistics over (B, T, H, W) are those of a BatchNorm
            // over (B·T, H, W): the fused convolution reads the 4-D map as it is.
            self.gate_conv_fused(self.bn.forward_clamp(x, f32::INFINITY))
        } else {
            self.record_gate_macs(&x);
            // (B, T, C, H, W) → (B, C, T, H, W): time becomes the Conv3d depth axis.
            let x = x.reshape([bt / t, t, c, h, w]).swap_dims(1, 2);
            let r = self.bn.forward_clamp(x, f32::INFINITY);
            if self.causal {
                // Two zero frames before the clip: the taps read t−2, t−1, t.
                let zeros = Tensor::<5>::zeros([bt / t, c, 2, h, w], &r.device()).cast(r.dtype());
                self.gate_conv_causal(Tensor::cat(vec![zeros, r], 2))
            } else {
                self.conv3D.forward(r)
            }
        };
        if probe::active() {
            probe::tap("gsm.tanh", &tanh(gate_logits.clone()));
        }
        gate_logits
    }

    /// The causal gate convolution on `r` = ReLU(BN3d(x)) `(B, C, T + 2, H, W)` whose first two
    /// frames are the ones before the clip: `(B, 2, T, H, W)`, no padding in time.
    fn gate_conv_causal(&self, r: Tensor<5>) -> Tensor<5> {
        let bias = self.conv3D.bias.as_ref().map(|b| b.val());
        let options = ConvOptions::new([1, 1, 1], [0, 1, 1], [1, 1, 1], 2);
        burn::tensor::module::conv3d(r, self.conv3D.weight.val(), bias, options)
    }

    /// Causal, online: one frame per stream `(B, C, H, W)`; the gate from this and the two
    /// previous frames' ReLU(BN3d(x)), both gated halves from the previous frame's product.
    fn forward_online(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        self.record_gate_macs(&x);
        let r = self.bn.forward_clamp(x.clone(), f32::INFINITY);
        let mut frames = online::history(r.clone(), 2);
        frames.push(r);
        let gate = tanh(self.gate_conv_causal(Tensor::stack(frames, 2))).reshape([b, 2, 1, h * w]);
        let halves = x.clone().reshape([b, 2, c / 2, h * w]);
        let y = (halves * gate).reshape([b, c, h, w]);
        let past = online::history(y.clone(), 1).remove(0);
        let z = (past + x - y).reshape([b, 2, c / 2, 1, h * w]);
        let half = |k: usize| interleave(z.clone().narrow(1, k, 1).reshape([b, c / 2, 1, h, w]));
        Tensor::cat(vec![half(0), half(1)], 1).reshape([b, c, h, w])
    }

    /// The fused gate convolution on `r` = ReLU(BN3d(x)), `(B·T, C, H, W)`.
    fn gate_conv_fused(&self, r: Tensor<4>) -> Tensor<5> {
        self.record_gate_macs(&r);
        let bias = self.gate_bias(&r);
        gate_shift::gate_conv(r, self.conv3D.weight.val(), bias, self.num_segments)
    }

    /// Counts the gate convolution's multiply-accumulates on a `(B·T, C, H, W)` map while
    /// `info` records the model's cost.
    fn record_gate_macs(&self, x: &Tensor<4>) {
        if cost::is_recording() {
            let [bt, _, h, w] = x.dims();
            cost::add((bt * 2 * h * w * (self.f_plane / 2) * 27) as u64);
        }
    }

    /// The gate convolution's bias (zeros without one) in `x`'s dtype, for the fused kernels.
    fn gate_bias(&self, x: &Tensor<4>) -> Tensor<1> {
        match &self.conv3D.bias {
            Some(b) => b.val(),
            None => Tensor::<1>::zeros([2], &x.device()).cast(x.dtype()),
        }
    }

    /// The GSM unit `act(post(GSM(x)))`, `act` the ReLU clamped at `max` (∞: ReLU, 6: ReLU6):
    /// in inference with both BNs in affine form (`BatchNorm::into_affine`), GSM's BN3d + ReLU
    /// and `post` + `act` ride along in the fused passes (`ops::gate_shift::unit`); otherwise op by op.
    pub fn forward_unit(&self, x: Tensor<4>, post: &BatchNorm, max: f32) -> Tensor<4> {
        if !self.causal && self.bn.affine && post.affine && gate_shift::unit_applies(&x) {
            self.record_gate_macs(&x);
            let gate = (self.conv3D.weight.val(), self.gate_bias(&x));
            let bn = [self.bn.weight.val(), self.bn.bias.val()];
            let post = [post.weight.val(), post.bias.val()];
            return unit::unit(x, gate, bn, post, max, self.num_segments);
        }
        post.forward_clamp(self.forward(x), max)
    }

    /// The reference composition of tanh, gated shift, residual and re-interleave, op by op
    /// as the official code does it.
    pub fn shift_composed(&self, x: Tensor<4>, gate_logits: Tensor<5>) -> Tensor<4> {
        let [bt, c, h, w] = x.dims();
        let t = self.num_segments;
        let x = x.reshape([bt / t, t, c, h, w]).swap_dims(1, 2);
        let gate = tanh(gate_logits);
        let half = c / 2;
        let x1 = x.clone().narrow(1, 0, half);
        let x2 = x.narrow(1, half, half);
        let g1 = gate.clone().narrow(1, 0, 1);
        let g2 = gate.narrow(1, 1, 1);
        let y1 = x1.clone() * g1;
        let y2 = x2.clone() * g2;
        // Gated part moves in time, residual stays: half 1 from t+1 (causal: t−1), half 2 from t−1.
        let moved = if self.causal { from_past(y1.clone(), 2) } else { from_future(y1.clone(), 2) };
        let z1 = moved + (x1 - y1);
        let z2 = from_past(y2.clone(), 2) + (x2 - y2);
        let y = Tensor::cat(vec![interleave(z1), interleave(z2)], 1);
        y.swap_dims(1, 2).reshape([bt, c, h, w])
    }
}

impl TemporalModule for Gsm {
    const SPEC: Spec = Spec { name: "gsm", label: "GSM", official: Some("gsm"), place: Place::AfterConv };

    fn build(channels: usize, segments: usize, opts: TemporalOpts, device: &Device) -> Self {
        Gsm { causal: opts.causal, ..Gsm::new(channels, segments, device) }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        Gsm::forward(self, x)
    }

    fn forward_unit(&self, x: Tensor<4>, post: &BatchNorm, max: f32) -> Tensor<4> {
        Gsm::forward_unit(self, x, post, max)
    }

    /// GSM's BN3d and the unit's BN go to affine form; `forward_unit` then fuses both into
    /// GSM's passes.
    fn fold_unit(&mut self, post: &mut BatchNorm) {
        self.bn.into_affine();
        post.into_affine();
    }
}

/// Within one half (B, C/2, T, H, W): view channels as (2, C/4), transpose to (C/4, 2).
pub(crate) fn interleave(x: Tensor<5>) -> Tensor<5> {
    let [b, c, t, h, w] = x.dims();
    x.reshape([b, 2, c / 2, t * h * w]).swap_dims(1, 2).reshape([b, c, t, h, w])
}
