//! What a segment's input is (Wang et al., "Temporal Segment Networks", ECCV 2016;
//! tsn-pytorch `models.py`):
//!
//! - **RGB:** one frame, 3 channels.
//! - **RGB difference** (`_get_diff`): `L + 1` consecutive frames whose `L` successive
//!   differences are stacked as `3·L` channels, `d[i] = f[i+1] − f[i]` (i = 0 … L−1; L =
//!   `new_length`, 5), the cheap motion cue TSN pairs with RGB. The frames are normalised
//!   before they are differenced, so a difference is `Δ/std` per colour. tsn-pytorch's loader
//!   reads `new_length` frames where `_get_diff` views `new_length + 1`; here `L + 1` are read.
//! - **Optical flow** (the temporal stream): `L` consecutive flow fields, each an x and a y
//!   plane (`data extract-flow`'s `x_`/`y_` images), stacked as `2·L` channels x₁ y₁ x₂ y₂ …
//!
//! The first convolution then takes `3·L` or `2·L` channels; from an RGB network (ImageNet)
//! each of them gets the mean over R, G, B of the RGB kernel (`_construct_diff_model`,
//! `_construct_flow_model`: TSN's cross-modality initialisation).

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// The input modality of a recognizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    /// One RGB frame per segment.
    #[default]
    Rgb,
    /// `--new-length` differences of `--new-length` + 1 consecutive frames per segment.
    Rgbdiff,
    /// `--new-length` consecutive optical-flow fields (x, y) per segment.
    Flow,
}

impl Modality {
    pub fn name(self) -> &'static str {
        match self {
            Self::Rgb => "rgb",
            Self::Rgbdiff => "rgbdiff",
            Self::Flow => "flow",
        }
    }
}

/// A recognizer's input: the modality and its `new_length` (ignored for RGB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Input {
    pub modality: Modality,
    pub length: usize,
}

impl Input {
    pub const RGB: Self = Self { modality: Modality::Rgb, length: 1 };

    pub fn new(modality: Modality, length: usize) -> Self {
        Self { modality, length }
    }

    /// The images a segment reads: 1 RGB frame, `L + 1` RGB frames for `L` differences, or
    /// `L` flow fields.
    pub fn frames_per_segment(self) -> usize {
        match self.modality {
            Modality::Rgb => 1,
            Modality::Rgbdiff => self.length.saturating_add(1),
            Modality::Flow => self.length.max(1),
        }
    }

    /// Planes of one image: 3 (R, G, B) or 2 (x, y).
    pub fn planes_per_frame(self) -> usize {
        if self.modality == Modality::Flow { 2 } else { 3 }
    }

    /// Channels of one segment as the loaders give it.
    pub fn channels_per_segment(self) -> usize {
        self.frames_per_segment().saturating_mul(self.planes_per_frame())
    }

    /// The channels the backbone's first convolution takes: 3, `3·L` or `2·L`.
    pub fn backbone_channels(self) -> usize {
        match self.modality {
            Modality::Rgb => 3,
            Modality::Rgbdiff => 3usize.saturating_mul(self.length),
            Modality::Flow => 2usize.saturating_mul(self.length),
        }
    }

    /// `(batch, segments·channels per segment, H, W)` → `(batch·segments, backbone channels,
    /// H, W)`: the frames, differences or stacked flow fields the backbone sees.
    pub fn to_backbone(self, x: Tensor<4>, segments: usize) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let expected = segments * self.channels_per_segment();
        assert_eq!(c, expected, "input has {c} channels, expected segments·frames·planes = {expected}");
        match self.modality {
            Modality::Rgbdiff => differences(x, segments, self.length),
            _ => x.reshape([b * segments, self.backbone_channels(), h, w]),
        }
    }
}

/// `(batch, segments·(L+1)·3, H, W)` → `(batch·segments, 3·L, H, W)`: each segment's `L`
/// successive frame differences, in time order, each as R, G, B.
pub fn differences(x: Tensor<4>, segments: usize, diff_length: usize) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let (t, l) = (segments, diff_length);
    assert_eq!(c, t * (l + 1) * 3, "RGB difference input has {c} channels, expected segments·(L+1)·3");
    let frames = x.reshape([b * t, l + 1, 3, h, w]);
    let d = frames.clone().narrow(1, 1, l) - frames.narrow(1, 0, l);
    d.reshape([b * t, 3 * l, h, w])
}

/// An RGB first-layer kernel `(O, 3, kh, kw)` for `channels` inputs: the mean over its R, G, B
/// in every input channel, as TSN builds its RGB-difference and flow networks.
pub fn widen_kernel(rgb: Tensor<4>, channels: usize) -> Tensor<4> {
    let [o, c, kh, kw] = rgb.dims();
    assert_eq!(c, 3, "an RGB kernel has 3 input channels, got {c}");
    rgb.mean_dim(1).expand([o, channels, kh, kw])
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, TensorData, Tolerance};

    use super::*;

    /// Segment s, difference i, colour k is frame i+1 minus frame i of that segment and colour.
    #[test]
    fn differences_follow_the_definition() {
        let (b, t, l, hw) = (2, 3, 2, 4);
        let n = b * t * (l + 1) * 3 * hw;
        let xs: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32 * 0.25).collect();
        let x = Tensor::<4>::from_data(TensorData::new(xs.clone(), [b, t * (l + 1) * 3, 2, 2]), &Device::flex());
        let d = differences(x, t, l);
        assert_eq!(d.dims(), [b * t, 3 * l, 2, 2]);
        let at = |seg: usize, f: usize, k: usize, p: usize| xs[((seg * (l + 1) + f) * 3 + k) * hw + p];
        let expected: Vec<f32> = (0..b * t)
            .flat_map(|seg| (0..l).flat_map(move |i| (0..3).flat_map(move |k| (0..hw).map(move |p| (seg, i, k, p)))))
            .map(|(seg, i, k, p)| at(seg, i + 1, k, p) - at(seg, i, k, p))
            .collect();
        d.into_data()
            .assert_approx_eq::<f32>(&TensorData::new(expected, [b * t, 3 * l, 2, 2]), Tolerance::absolute(1e-6));
    }

    /// Every widened input channel is the RGB mean; a still clip's differences are all zero.
    #[test]
    fn the_widened_kernel_is_the_rgb_mean() {
        let device = Device::flex();
        let rgb = Tensor::<4>::from_data(TensorData::new((0..12).map(|i| i as f32).collect(), [2, 3, 2, 1]), &device);
        let wide = widen_kernel(rgb, 6).into_data().try_to_vec::<f32>().unwrap();
        // Output 0: means of (0, 2, 4) = 2 and (1, 3, 5) = 3; output 1: 8 and 9.
        assert_eq!(wide, [[2.0, 3.0].repeat(6), [8.0, 9.0].repeat(6)].concat());
        let still = Tensor::<4>::ones([1, 2 * 3 * 3, 2, 2], &device);
        assert_eq!(differences(still, 2, 2).abs().sum().into_scalar::<f32>(), 0.0);
        let (diff, flow) = (Input::new(Modality::Rgbdiff, 5), Input::new(Modality::Flow, 5));
        assert_eq!([Input::RGB.frames_per_segment(), diff.frames_per_segment(), flow.frames_per_segment()], [1, 6, 5]);
        assert_eq!([Input::RGB.backbone_channels(), diff.backbone_channels(), flow.backbone_channels()], [3, 15, 10]);
        assert_eq!(flow.channels_per_segment(), 10);
        assert_eq!(widen_kernel(Tensor::<4>::ones([2, 3, 1, 1], &device), 10).dims(), [2, 10, 1, 1]);
    }

    /// Flow input keeps each segment's x₁ y₁ … x_L y_L planes together, in order.
    #[test]
    fn flow_segments_stack_their_fields() {
        let (b, t, l) = (2, 3, 2);
        let xs: Vec<f32> = (0..b * t * 2 * l).map(|i| i as f32).collect();
        let x = Tensor::<4>::from_data(TensorData::new(xs.clone(), [b, t * 2 * l, 1, 1]), &Device::flex());
        let y = Input::new(Modality::Flow, l).to_backbone(x, t);
        assert_eq!(y.dims(), [b * t, 2 * l, 1, 1]);
        assert_eq!(y.into_data().try_to_vec::<f32>().unwrap(), xs);
    }
}
