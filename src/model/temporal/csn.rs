//! Channel-separated temporal convolution: CSN's idea (Tran, Wang, Torresani, Feiszli, ICCV
//! 2019: separate channel interactions from spatio-temporal ones) in a 2D backbone, as the
//! seed's comparison asks for it — a depthwise 3×1×1 convolution over time, one 3-tap filter
//! per channel, zero padded at the clip ends:
//!
//! `y[t, c] = w[c, 0]·x[t−1, c] + w[c, 1]·x[t, c] + w[c, 2]·x[t+1, c]`
//!
//! initialised to the identity (`w[c] = (0, 1, 0)`), so that an ImageNet backbone starts
//! unchanged. It sits where GSM does (between a branch's first convolution and its BN).

use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Tensor};

use super::module::{PERTURBATION, Place, Spec, TemporalInit, TemporalModule, TemporalOpts, from_future, from_past};
use crate::model::cost;

/// The temporal convolution on a feature map of `weight.dims()[0]` channels.
#[derive(Module, Debug)]
pub struct ChannelSeparated {
    /// (C, 3): each channel's taps on frames t−1, t and t+1.
    pub weight: Param<Tensor<2>>,
    pub num_segments: usize,
}

impl ChannelSeparated {
    /// The identity: every channel's centre tap 1, the others 0.
    pub fn new(channels: usize, num_segments: usize, device: &Device) -> Self {
        Self::with_init(channels, num_segments, TemporalInit::Identity, device)
    }

    /// The identity, or ([`TemporalInit::Perturbed`]) with side taps drawn from N(0, 0.3).
    pub fn with_init(channels: usize, num_segments: usize, init: TemporalInit, device: &Device) -> Self {
        let centre = Tensor::<2>::ones([channels, 1], device);
        let side = || match init {
            TemporalInit::Identity => centre.zeros_like(),
            TemporalInit::Perturbed => Tensor::random([channels, 1], Distribution::Normal(0.0, PERTURBATION), device),
        };
        let weight = Tensor::cat(vec![side(), centre.clone(), side()], 1);
        Self { weight: Param::from_tensor(weight), num_segments }
    }

    /// `(batch·segments, C, H, W)` → the same shape.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [bt, c, h, w] = x.dims();
        let t = self.num_segments;
        assert_eq!(bt % t, 0, "CSN: {bt} frames is not a multiple of {t} segments");
        assert_eq!(c, self.weight.dims()[0], "CSN built for {} channels got {c}", self.weight.dims()[0]);
        if cost::is_recording() {
            cost::add((bt * c * h * w * 3) as u64);
        }
        let x = x.reshape([bt / t, t, c, h, w]);
        let taps = self.weight.val().cast(x.dtype());
        let tap = |k: usize| taps.clone().narrow(1, k, 1).reshape([1, 1, c, 1, 1]);
        let y = from_past(x.clone(), 1) * tap(0) + x.clone() * tap(1) + from_future(x, 1) * tap(2);
        y.reshape([bt, c, h, w])
    }
}

impl TemporalModule for ChannelSeparated {
    const SPEC: Spec = Spec { name: "csn", label: "CSN", official: Some("csn"), place: Place::AfterConv };

    fn build(channels: usize, segments: usize, opts: TemporalOpts, device: &Device) -> Self {
        ChannelSeparated::with_init(channels, segments, opts.init, device)
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        ChannelSeparated::forward(self, x)
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
        check_identity(ChannelSeparated::new(6, 4, &Device::flex()), [8, 6, 3, 5]);
    }

    /// Each channel's taps reach frames t−1, t, t+1 of that channel only, zero outside the clip.
    #[test]
    fn taps_follow_the_definition() {
        let device = Device::flex();
        let (t, c) = (3, 2);
        let mut m = ChannelSeparated::new(c, t, &device);
        let taps = [1.0f32, 10.0, 100.0, 2.0, 20.0, 200.0];
        m.weight = Param::from_tensor(Tensor::from_data(TensorData::new(taps.to_vec(), [c, 3]), &device));
        // x[t, c] = (t + 1) + 1000·c, one pixel.
        let xs: Vec<f32> = (0..t).flat_map(|f| (0..c).map(move |ch| (f + 1) as f32 + 1000.0 * ch as f32)).collect();
        let y = m.forward(Tensor::from_data(TensorData::new(xs.clone(), [t, c, 1, 1]), &device));
        let x = |f: isize, ch: usize| if (0..t as isize).contains(&f) { xs[f as usize * c + ch] } else { 0.0 };
        let expected: Vec<f32> = (0..t as isize)
            .flat_map(|f| {
                (0..c).map(move |ch| taps[3 * ch] * x(f - 1, ch) + taps[3 * ch + 1] * x(f, ch) + taps[3 * ch + 2] * x(f + 1, ch))
            })
            .collect();
        y.into_data().assert_approx_eq::<f32>(&TensorData::new(expected, [t, c, 1, 1]), Tolerance::absolute(1e-3));
    }

    /// The gradients autodiff gives agree with central finite differences (the output is
    /// linear in the taps and in the input, so they are exact up to rounding).
    #[test]
    fn gradients_match_finite_differences() {
        let device = Device::flex();
        let mut m = ChannelSeparated::new(3, 2, &device);
        m.weight = Param::from_tensor(Tensor::random([3, 3], Distribution::Normal(0.0, 1.0), &device));
        check_gradients(m, [4, 3, 2, 2]);
    }

    /// Checkpoint names: `csn_X`, `.csn.`; EfficientNet keeps `.temporal.`, having no
    /// official temporal code.
    #[test]
    fn sits_in_every_backbone_where_its_spec_places_it() {
        sits_in_every_backbone(crate::model::TemporalKind::Csn, &["csn", ".temporal."]);
    }
}
