//! (2+1)D: the factorisation of P3D (Qiu, Yao, Mei, ICCV 2017) and R(2+1)D (Tran et al., CVPR
//! 2018) in a 2D backbone — a 3×3 spatial convolution followed by a 3×1×1 temporal one over all
//! channels:
//!
//! `y[t] = W₀·x[t−1] + W₁·x[t] + W₂·x[t+1]`  (each `Wₖ` a C×C matrix; zero padded at the clip ends)
//!
//! It sits after each block's spatial convolution, before that convolution's BN and ReLU (which
//! complete the temporal convolution's "with BN and ReLU"): ResNet bottlenecks' `conv2`, basic
//! blocks' `conv1`, and the other backbones' GSM places. `W₁ = I, W₀ = W₂ = 0` at the start, so
//! an ImageNet backbone starts unchanged (P3D-A's serial arrangement; the parallel P3D-B and
//! bottleneck P3D-C are not built).

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Distribution, Tensor};

use super::module::{PERTURBATION, Place, Spec, TemporalInit, TemporalModule, TemporalOpts, from_future, from_past};
use crate::model::cost;

/// The temporal convolution on a feature map of C channels, as a 1×1 convolution of the three
/// frames' channels stacked `[x[t−1], x[t], x[t+1]]` (3C → C).
#[derive(Module, Debug)]
pub struct R2Plus1d {
    /// Weight (C, 3C, 1, 1): input channels `k·C + i` are frame `t−1+k`'s channel `i`.
    pub conv: Conv2d,
    pub num_segments: usize,
}

impl R2Plus1d {
    /// The identity: `W₁ = I`, the other taps zero.
    pub fn new(channels: usize, num_segments: usize, device: &Device) -> Self {
        Self::with_init(channels, num_segments, TemporalInit::Identity, device)
    }

    /// The identity, or ([`TemporalInit::Perturbed`]) with `W₀`, `W₂` drawn from
    /// N(0, 0.3/√C): each output's side contribution then has 0.3 of the identity's scale.
    pub fn with_init(channels: usize, num_segments: usize, init: TemporalInit, device: &Device) -> Self {
        let mut conv = Conv2dConfig::new([3 * channels, channels], [1, 1]).with_bias(false).init(device);
        let eye = Tensor::<2>::eye(channels, device);
        let std = PERTURBATION / (channels as f64).sqrt();
        let side = || match init {
            TemporalInit::Identity => eye.zeros_like(),
            TemporalInit::Perturbed => Tensor::random([channels, channels], Distribution::Normal(0.0, std), device),
        };
        let weight = Tensor::cat(vec![side(), eye.clone(), side()], 1);
        conv.weight = Param::from_tensor(weight.reshape([channels, 3 * channels, 1, 1]));
        Self { conv, num_segments }
    }

    /// `(batch·segments, C, H, W)` → the same shape.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [bt, c, h, w] = x.dims();
        let t = self.num_segments;
        assert_eq!(bt % t, 0, "(2+1)D: {bt} frames is not a multiple of {t} segments");
        let cin = self.conv.weight.dims()[1];
        assert_eq!(3 * c, cin, "(2+1)D built for {} channels got {c}", cin / 3);
        if cost::is_recording() {
            cost::add((bt * c * h * w * 3 * c) as u64);
        }
        // The taps' outputs stacked, Zₖ = Wₖ·x in one pointwise convolution, then
        // y[t] = Z₀[t−1] + Z₁[t] + Z₂[t+1]: no stacked copy of the input.
        let taps = self.conv.weight.val().reshape([c, 3, c]).swap_dims(0, 1).reshape([3 * c, c, 1, 1]);
        let z = crate::ops::conv::conv2d_weight(x, taps, 1, 0);
        super::module::sum_taps(z, t)
    }

    /// The reference: the frames' channels stacked `[x[t−1], x[t], x[t+1]]`, then the 1×1
    /// convolution.
    pub fn forward_stacked(&self, x: Tensor<4>) -> Tensor<4> {
        let [bt, c, h, w] = x.dims();
        let t = self.num_segments;
        let x = x.reshape([bt / t, t, c, h, w]);
        let stacked = Tensor::cat(vec![from_past(x.clone(), 1), x.clone(), from_future(x, 1)], 2);
        crate::ops::conv::conv2d(&self.conv, stacked.reshape([bt, 3 * c, h, w]))
    }
}

impl TemporalModule for R2Plus1d {
    const SPEC: Spec = Spec { name: "r2plus1d", label: "(2+1)D", official: Some("r2plus1d"), place: Place::AfterSpatialConv };

    fn build(channels: usize, segments: usize, opts: TemporalOpts, device: &Device) -> Self {
        R2Plus1d::with_init(channels, segments, opts.init, device)
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        R2Plus1d::forward(self, x)
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{TensorData, Tolerance};

    use super::*;
    use crate::model::temporal::tests::{check_gradients, check_identity, sits_in_every_backbone};

    /// Identity-initialised: the output is the input, shape and values.
    #[test]
    fn starts_as_the_identity() {
        check_identity(R2Plus1d::new(6, 4, &Device::flex()), [8, 6, 3, 5]);
    }

    /// Output channel o of frame t is Σₖ Σᵢ W[o, k·C + i]·x[t−1+k, i], zero outside the clip.
    #[test]
    fn taps_follow_the_definition() {
        let device = Device::flex();
        let (t, c) = (3, 2);
        let mut m = R2Plus1d::new(c, t, &device);
        let wv: Vec<f32> = (0..c * 3 * c).map(|i| (i as f32 + 1.0) * 0.5).collect();
        m.conv.weight = Param::from_tensor(Tensor::from_data(TensorData::new(wv.clone(), [c, 3 * c, 1, 1]), &device));
        let xs: Vec<f32> = (0..t * c).map(|i| (i as f32) * 1.5 - 2.0).collect();
        let y = m.forward(Tensor::from_data(TensorData::new(xs.clone(), [t, c, 1, 1]), &device));
        let x = |f: isize, i: usize| if (0..t as isize).contains(&f) { xs[f as usize * c + i] } else { 0.0 };
        let expected: Vec<f32> = (0..t as isize)
            .flat_map(|f| {
                let (x, wv) = (&x, &wv);
                (0..c).map(move |o| {
                    (0..3).flat_map(|k| (0..c).map(move |i| wv[o * 3 * c + k * c + i] * x(f - 1 + k as isize, i))).sum()
                })
            })
            .collect();
        y.into_data().assert_approx_eq::<f32>(&TensorData::new(expected, [t, c, 1, 1]), Tolerance::absolute(1e-3));
    }

    /// The stacked-outputs form gives the stacked-inputs reference, values and gradients.
    #[test]
    fn stacked_outputs_match_stacked_inputs() {
        let device = Device::flex().autodiff();
        let mut m = R2Plus1d::new(5, 3, &device);
        let w = Tensor::<4>::random([5, 15, 1, 1], Distribution::Normal(0.0, 0.5), &device);
        m.conv.weight = Param::from_tensor(w.require_grad());
        let x = Tensor::<4>::random([6, 5, 3, 4], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let r = Tensor::<4>::random([6, 5, 3, 4], Distribution::Normal(0.0, 1.0), &device);
        let (y, reference) = (m.forward(x.clone()), m.forward_stacked(x.clone()));
        let close = Tolerance::absolute(1e-5);
        y.clone().into_data().assert_approx_eq::<f32>(&reference.clone().into_data(), close);
        let (a, b) = ((y * r.clone()).sum().backward(), (reference * r).sum().backward());
        x.grad(&a).unwrap().into_data().assert_approx_eq::<f32>(&x.grad(&b).unwrap().into_data(), close);
        let (wa, wb) = (m.conv.weight.grad(&a).unwrap(), m.conv.weight.grad(&b).unwrap());
        wa.into_data().assert_approx_eq::<f32>(&wb.into_data(), Tolerance::absolute(1e-4));
    }

    #[test]
    fn gradients_match_finite_differences() {
        let device = Device::flex();
        let mut m = R2Plus1d::new(3, 2, &device);
        let w = Tensor::<4>::random([3, 9, 1, 1], Distribution::Normal(0.0, 0.5), &device);
        m.conv.weight = Param::from_tensor(w);
        check_gradients(m, [4, 3, 2, 2]);
    }

    #[test]
    fn sits_in_every_backbone_where_its_spec_places_it() {
        sits_in_every_backbone(crate::model::TemporalKind::R2plus1d, &["r2plus1d", ".temporal."]);
    }
}
