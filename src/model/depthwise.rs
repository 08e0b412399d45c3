//! Depthwise convolution on `flex` in inference, with its padding, bias and activation in the
//! same pass (EfficientNet-Lite's k×k convolutions: one filter per channel).
//!
//! burn's path for such a unit was three passes over the block's widest maps: a zero-padded
//! copy of the input (TensorFlow "SAME" padding, asymmetric at stride 2), burn-flex's grouped
//! convolution, and the ReLU6 clamp. Here each output row starts from the (folded BN's) bias,
//! gains every kernel tap as a multiply-add over a slice of an input row (the padding is the
//! range of output columns a tap skips, so nothing is copied), and is clamped before it
//! leaves the cache: the input is read once and the output written once.
//!
//! Float32 on flex without autodiff (inference: `Recognizer::inference` folds the BN into the
//! convolution's bias); training and other backends keep burn's convolution, which is also the
//! tested reference. `GATESHIFT_FAST_DEPTHWISE=0` turns it off, to compare.

use std::sync::OnceLock;

use burn::backend::flex::{Flex, FlexTensor};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Shape, Tensor};
use rayon::prelude::*;

/// Stride, padding (top, bottom, left, right) and the activation's upper bound: outputs are
/// clamped to `[0, max]` (ReLU with ∞, ReLU6 with 6), or left alone when `max` is `None`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Depthwise {
    pub stride: [usize; 2],
    pub padding: [usize; 4],
    pub max: Option<f32>,
}

/// The op, routed by burn to the backend a tensor lives on (flex only: inference).
#[backend_extension(Flex)]
pub trait DepthwiseConv: Backend {
    /// `x` (N, C, H, W), `weight` (C, 1, kh, kw), `bias` (C) → (N, C, H', W').
    fn depthwise_conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        geometry: Depthwise,
    ) -> FloatTensor<Self>;
}

/// Whether the op computes `conv` on `x`: a depthwise convolution (groups = input = output
/// channels, dilation 1) with a bias, on a float32 flex tensor that autodiff does not track.
pub fn applies(conv: &Conv2d, x: &Tensor<4>) -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    let enabled = *ENABLED.get_or_init(|| std::env::var("GATESHIFT_FAST_DEPTHWISE").as_deref() != Ok("0"));
    let [cout, cin_per_group, _, _] = conv.weight.dims();
    let channels = x.dims()[1];
    enabled
        && conv.groups == channels
        && cout == channels
        && cin_per_group == 1
        && conv.dilation == [1, 1]
        && conv.bias.is_some()
        && x.dtype() == DType::F32
        && !x.device().is_autodiff()
        && crate::backend::is_flex(&x.device())
}

/// `clamp(conv(pad(x)) + bias, 0, max)` where [`applies`] holds; `padding` replaces the
/// convolution's own (which should be none).
pub fn forward(conv: &Conv2d, x: Tensor<4>, padding: [usize; 4], max: Option<f32>) -> Tensor<4> {
    let bias = conv.bias.as_ref().expect("applies() checked the bias").val();
    let geometry = Depthwise { stride: conv.stride, padding, max };
    let (x, w, b) = (x.into_dispatch(), conv.weight.val().into_dispatch(), bias.into_dispatch());
    Tensor::from_dispatch(<Dispatch as DepthwiseConv>::depthwise_conv(x, w, b, geometry))
}

/// Output length along an axis of `input` values padded by `before` and `after`.
fn output_len(input: usize, kernel: usize, stride: usize, before: usize, after: usize) -> usize {
    (input + before + after).saturating_sub(kernel) / stride + 1
}

/// Sizes of one call: input plane `h`×`w`, kernel `kh`×`kw`, output row `out_w`.
#[derive(Clone, Copy)]
struct Sizes {
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    out_w: usize,
}

/// One channel plane: `x` (h × w) → `y` (out_h × out_w) with this channel's `kernel` and
/// `bias`; `scratch` is this thread's reusable buffer. Compiled twice: for AVX2 (chosen at
/// run time where the CPU has it) and baseline.
fn plane(x: &[f32], kernel: &[f32], bias: f32, z: Sizes, g: &Depthwise, scratch: &mut Vec<f32>, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { plane_avx2(x, kernel, bias, z, g, scratch, y) };
    }
    plane_body(x, kernel, bias, z, g, scratch, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn plane_avx2(x: &[f32], kernel: &[f32], bias: f32, z: Sizes, g: &Depthwise, scratch: &mut Vec<f32>, y: &mut [f32]) {
    plane_body(x, kernel, bias, z, g, scratch, y)
}

/// Output columns per register block.
const BLOCK: usize = 8;

/// The plane is first copied into `scratch` with its padding (zeros around it, and on the
/// right as far as the last register block reads) and, with stride s > 1, each row split into
/// its s phases (columns ≡ p mod s, each contiguous): a plane fits in cache, and afterwards
/// every kernel tap of a block of [`BLOCK`] outputs reads [`BLOCK`] consecutive values. Each
/// block is summed in registers over all taps from the bias, clamped, and stored once.
#[inline(always)]
fn plane_body(x: &[f32], kernel: &[f32], bias: f32, z: Sizes, g: &Depthwise, scratch: &mut Vec<f32>, y: &mut [f32]) {
    let [sh, sw] = g.stride;
    let [top, bottom, left, _] = g.padding;
    let blocks = z.out_w.div_ceil(BLOCK);
    // A phase holds every sw-th padded column: as many as the blocks read (output column o's
    // tap j is phase j mod sw, step o + j / sw) and the input's columns need.
    let phase_len = (blocks * BLOCK + (z.kw - 1) / sw).max((z.w - 1 + left) / sw + 1);
    let row_len = sw * phase_len;
    let rows = z.h + top + bottom;
    scratch.clear();
    scratch.resize(rows * row_len, 0.0);
    for (r, input_row) in x.chunks_exact(z.w).enumerate() {
        let dst = &mut scratch[(r + top) * row_len..][..row_len];
        if sw == 1 {
            dst[left..left + z.w].copy_from_slice(input_row);
            continue;
        }
        // Padded column left + c goes to phase (left + c) mod sw, step (left + c) / sw.
        for p in 0..sw {
            let first = (p + sw - left % sw) % sw; // the first input column of phase p
            let phase = &mut dst[p * phase_len + (left + first) / sw..];
            for (d, &v) in phase.iter_mut().zip(input_row.iter().skip(first).step_by(sw)) {
                *d = v;
            }
        }
    }
    // Offset of tap column j within a row: its phase, then its step within the phase.
    let tap_offsets: Vec<usize> = (0..z.kw).map(|j| (j % sw) * phase_len + j / sw).collect();
    for (oh, out) in y.chunks_exact_mut(z.out_w).enumerate() {
        for b in 0..blocks {
            let o = b * BLOCK;
            let mut acc = [bias; BLOCK];
            for i in 0..z.kh {
                let row = &scratch[(oh * sh + i) * row_len..][..row_len];
                let taps = &kernel[i * z.kw..][..z.kw];
                for (&weight, &offset) in taps.iter().zip(&tap_offsets) {
                    let src = &row[offset + o..][..BLOCK];
                    for (a, &v) in acc.iter_mut().zip(src) {
                        *a += weight * v;
                    }
                }
            }
            if let Some(max) = g.max {
                for a in &mut acc {
                    *a = a.max(0.0).min(max);
                }
            }
            let n = BLOCK.min(z.out_w - o);
            out[o..o + n].copy_from_slice(&acc[..n]);
        }
    }
}

fn contiguous_f32(t: FlexTensor, what: &str) -> FlexTensor {
    assert!(t.dtype() == DType::F32, "depthwise: {what} is {:?}, not float32", t.dtype());
    t.to_contiguous()
}

impl DepthwiseConv for Flex {
    fn depthwise_conv(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, g: Depthwise) -> FlexTensor {
        let (x, weight, bias) =
            (contiguous_f32(x, "input"), contiguous_f32(weight, "weight"), contiguous_f32(bias, "bias"));
        let s = x.layout().shape();
        let ws = weight.layout().shape();
        assert!(s.num_dims() == 4 && ws.num_dims() == 4, "depthwise: 4-D input and weight");
        let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
        let (kh, kw) = (ws[2], ws[3]);
        assert!(ws[0] == c && ws[1] == 1 && bias.layout().shape().num_elements() == c, "depthwise: weight {ws:?}");
        let [top, bottom, left, right] = g.padding;
        assert!(h + top + bottom >= kh && w + left + right >= kw, "depthwise: kernel larger than the padded map");
        let (out_h, out_w) = (output_len(h, kh, g.stride[0], top, bottom), output_len(w, kw, g.stride[1], left, right));
        let mut y = FlexTensor::empty(Shape::new([n, c, out_h, out_w]), DType::F32);
        if n * c * out_h * out_w == 0 {
            return y;
        }
        let z = Sizes { h, w, kh, kw, out_w };
        let xv = x.as_slice::<f32>().expect("contiguous");
        let (wv, bv) = (weight.as_slice::<f32>().expect("contiguous"), bias.as_slice::<f32>().expect("contiguous"));
        y.storage_mut::<f32>().par_chunks_mut(out_h * out_w).enumerate().for_each_init(
            Vec::new,
            |scratch, (p, out)| {
                let ch = p % c;
                plane(&xv[p * h * w..][..h * w], &wv[ch * kh * kw..][..kh * kw], bv[ch], z, &g, scratch, out);
            },
        );
        y
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::ops::PadMode;
    use burn::tensor::{Device, Distribution};

    use super::*;

    /// Against burn's path — padded copy, grouped convolution, clamp — for EfficientNet's
    /// geometries (3×3 and 5×5, stride 1 and 2, SAME padding on even and odd sizes), maps
    /// smaller than the kernel's reach, ReLU, ReLU6 and no activation.
    #[test]
    fn matches_pad_conv_clamp() {
        let device = Device::flex();
        // (channels, h, w, kernel, stride, padding top/bottom/left/right, max)
        type Case = (usize, usize, usize, usize, usize, [usize; 4], Option<f32>);
        let cases: [Case; 12] = [
            // wide enough for several register blocks per row, both strides
            (3, 9, 41, 3, 2, [0, 1, 0, 1], Some(6.0)),
            (2, 10, 40, 5, 2, [1, 2, 1, 2], None),
            (2, 6, 33, 5, 1, [2, 2, 2, 2], Some(6.0)),
            (4, 12, 12, 3, 1, [1, 1, 1, 1], Some(6.0)),
            (4, 12, 12, 3, 2, [0, 1, 0, 1], Some(6.0)),
            (3, 11, 13, 3, 2, [1, 1, 1, 1], Some(6.0)),
            (5, 14, 14, 5, 1, [2, 2, 2, 2], Some(6.0)),
            (5, 14, 10, 5, 2, [1, 2, 1, 2], None),
            (2, 7, 7, 5, 1, [2, 2, 2, 2], Some(f32::INFINITY)),
            (2, 3, 2, 5, 1, [2, 2, 2, 2], Some(6.0)),
            (3, 9, 8, 3, 1, [0, 0, 0, 0], None),
            (2, 1, 1, 3, 2, [1, 1, 1, 1], Some(6.0)),
        ];
        for (c, h, w, k, s, pad, max) in cases {
            let conv = Conv2dConfig::new([c, c], [k, k])
                .with_stride([s, s])
                .with_groups(c)
                .with_padding(PaddingConfig2d::Valid)
                .init(&device);
            let x = Tensor::<4>::random([2, c, h, w], Distribution::Normal(0.0, 2.0), &device);
            assert!(applies(&conv, &x));
            let padded = x.clone().pad((pad[2], pad[3], pad[0], pad[1]), PadMode::Constant(0.0));
            let reference = conv.forward(padded);
            let reference = match max {
                Some(m) => reference.clamp(0.0, m.min(f32::MAX)),
                None => reference,
            };
            let y = forward(&conv, x, pad, max);
            let what = format!("{c}×{h}×{w}, kernel {k}, stride {s}, padding {pad:?}, max {max:?}");
            assert_eq!(y.dims(), reference.dims(), "{what}");
            y.into_data().assert_approx_eq::<f32>(&reference.into_data(), burn::tensor::Tolerance::absolute(1e-5));
        }
    }

    /// Grouped but not depthwise, bias-less, dilated, tracked by autodiff: burn's own.
    #[test]
    fn declines_what_it_does_not_compute() {
        let device = Device::flex();
        let x = Tensor::<4>::zeros([1, 4, 6, 6], &device);
        let depthwise = || Conv2dConfig::new([4, 4], [3, 3]).with_groups(4);
        assert!(applies(&depthwise().init(&device), &x));
        assert!(!applies(&Conv2dConfig::new([4, 4], [3, 3]).with_groups(2).init(&device), &x));
        assert!(!applies(&depthwise().with_bias(false).init(&device), &x));
        assert!(!applies(&depthwise().with_dilation([2, 2]).init(&device), &x));
        let autodiff = device.autodiff();
        assert!(!applies(&depthwise().init(&autodiff), &Tensor::<4>::zeros([1, 4, 6, 6], &autodiff)));
    }
}
