//! Depthwise convolution on `flex` (EfficientNet-Lite's k×k convolutions: one filter per
//! channel), forward and backward, with TensorFlow "SAME" padding inside the op and, in
//! inference, the folded BN's bias and the ReLU6 in the same pass.
//!
//! burn's path for such a unit was three passes over the block's widest maps: a zero-padded
//! copy of the input (asymmetric at stride 2), burn-flex's grouped convolution (its backward a
//! transposed 3D convolution), and the ReLU6 clamp. Here each channel plane is copied once into
//! a cache-resident scratch with its padding (at stride s, each row split into its s phases,
//! columns ≡ p mod s, so that every kernel tap reads consecutive values); then blocks of 8
//! outputs are summed in registers over all taps from the bias, clamped, and stored once.
//! The backward uses the same layout: the input gradient is scattered into a padded scratch
//! tap by tap and its interior copied out; the weight gradient is a dot product of the output
//! gradient with each tap's slice of the padded input, summed per channel over the batch in a
//! fixed order.
//!
//! Float32 on flex, with or without autodiff (the clamp only without: inference, where
//! `Recognizer::inference` has folded the BN); burn's convolution stays the tested reference.
//! `GATESHIFT_FAST_DEPTHWISE=0` turns it off, to compare.

use crate::ops::autodiff::{self, OpGeometry, WeightedKernels};
use crate::ops::avx2::with_avx2;
use crate::ops::flex_alloc;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::{Flex, FlexTensor};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Shape, Tensor};
use rayon::prelude::*;

/// Stride, padding (top, bottom, left, right) and the activation's upper bound: outputs are
/// clamped to `[0, max]` (ReLU with ∞, ReLU6 with 6), or left alone when `max` is `None`
/// (the autodiff op refuses a clamp).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Depthwise {
    pub stride: [usize; 2],
    pub padding: [usize; 4],
    pub max: Option<f32>,
}

impl OpGeometry for Depthwise {
    const OP: &'static str = "depthwise";
    fn inference_only(&self) -> bool {
        self.max.is_some()
    }
}

/// The op, routed by burn to the backend a tensor lives on (with or without autodiff).
#[backend_extension(Flex, Autodiff)]
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
/// channels, dilation 1) on a float32 flex tensor.
pub fn applies(conv: &Conv2d, x: &Tensor<4>) -> bool {
    let enabled = crate::ops::route::switches().fast_depthwise;
    let [cout, cin_per_group, _, _] = conv.weight.dims();
    let channels = x.dims()[1];
    enabled
        && conv.groups == channels
        && cout == channels
        && cin_per_group == 1
        && conv.dilation == [1, 1]
        && x.dtype() == DType::F32
        && crate::backend::is_flex(&x.device())
}

/// `conv(pad(x)) + bias`, clamped to `[0, max]` when `max` is given (inference only), where
/// [`applies`] holds; `padding` replaces the convolution's own (which should be none).
pub fn forward(conv: &Conv2d, x: Tensor<4>, padding: [usize; 4], max: Option<f32>) -> Tensor<4> {
    let bias = match &conv.bias {
        Some(b) => b.val(),
        None => Tensor::zeros([conv.weight.dims()[0]], &conv.weight.device()),
    };
    let geometry = Depthwise { stride: conv.stride, padding, max };
    let [kh, s] = [conv.weight.dims()[2], conv.stride[0]];
    crate::ops::profile::timed_map(
        || format!("depthwise {kh}x{kh}/{s}"),
        x.dims(),
        || {
            let (x, w, b) = (x.into_dispatch(), conv.weight.val().into_dispatch(), bias.into_dispatch());
            Tensor::from_dispatch(<Dispatch as DepthwiseConv>::depthwise_conv(x, w, b, geometry))
        },
    )
}

/// Output length along an axis of `input` values padded by `before` and `after`.
fn output_len(input: usize, kernel: usize, stride: usize, before: usize, after: usize) -> usize {
    (input + before + after).saturating_sub(kernel) / stride + 1
}

/// Sizes of one call and the padded scratch layout of one plane: input `h`×`w`, kernel
/// `kh`×`kw`, output `out_h`×`out_w`; scratch rows of `sw` phases of `phase_len` values.
#[derive(Clone, Copy)]
struct Plan {
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    out_h: usize,
    out_w: usize,
    phase_len: usize,
    g: Depthwise,
}

impl Plan {
    fn new(x: [usize; 2], k: [usize; 2], g: Depthwise) -> Self {
        let ([h, w], [kh, kw], [sh, sw]) = (x, k, g.stride);
        let [top, bottom, left, right] = g.padding;
        assert!(h + top + bottom >= kh && w + left + right >= kw, "depthwise: kernel larger than the padded map");
        let (out_h, out_w) = (output_len(h, kh, sh, top, bottom), output_len(w, kw, sw, left, right));
        // A phase holds every sw-th padded column: as many as the register blocks read
        // (output column o's tap j is phase j mod sw, step o + j / sw) and the input needs.
        let phase_len = (out_w.div_ceil(BLOCK) * BLOCK + (kw - 1) / sw).max((w - 1 + left) / sw + 1);
        Self { h, w, kh, kw, out_h, out_w, phase_len, g }
    }

    fn row_len(&self) -> usize {
        self.g.stride[1] * self.phase_len
    }

    fn scratch_len(&self) -> usize {
        (self.h + self.g.padding[0] + self.g.padding[1]) * self.row_len()
    }

    /// Offset of kernel column j within a scratch row: its phase, then its step.
    fn tap_offsets(&self) -> Vec<usize> {
        let sw = self.g.stride[1];
        (0..self.kw).map(|j| (j % sw) * self.phase_len + j / sw).collect()
    }

    /// Scratch position of input column c: padded column left + c, phase by phase.
    fn position(&self, c: usize) -> usize {
        let (sw, padded) = (self.g.stride[1], c + self.g.padding[2]);
        (padded % sw) * self.phase_len + padded / sw
    }

    /// `scratch` = the plane `x` padded with zeros, rows split into phases.
    fn fill(&self, x: &[f32], scratch: &mut Vec<f32>) {
        let (row_len, top, sw) = (self.row_len(), self.g.padding[0], self.g.stride[1]);
        scratch.clear();
        scratch.resize(self.scratch_len(), 0.0);
        for (r, input_row) in x.chunks_exact(self.w).enumerate() {
            let dst = &mut scratch[(r + top) * row_len..][..row_len];
            // Consecutive input columns c, c + sw, … of one phase sit side by side.
            for first in 0..sw.min(self.w) {
                let start = self.position(first);
                for (d, &v) in dst[start..].iter_mut().zip(input_row[first..].iter().step_by(sw)) {
                    *d = v;
                }
            }
        }
    }

    /// The plane `x` = the interior of a padded, phase-split `scratch` (the inverse of `fill`).
    fn extract(&self, scratch: &[f32], x: &mut [f32]) {
        let (row_len, top, sw) = (self.row_len(), self.g.padding[0], self.g.stride[1]);
        for (r, out_row) in x.chunks_exact_mut(self.w).enumerate() {
            let src = &scratch[(r + top) * row_len..][..row_len];
            for first in 0..sw.min(self.w) {
                let start = self.position(first);
                for (d, &v) in out_row[first..].iter_mut().step_by(sw).zip(&src[start..]) {
                    *d = v;
                }
            }
        }
    }
}

/// Output columns per register block.
const BLOCK: usize = 8;

with_avx2!(plane_forward, forward_body, (x: &[f32], kernel: &[f32], bias: f32, p: &Plan, scratch: &mut Vec<f32>, y: &mut [f32]));
with_avx2!(plane_dx, dx_body, (dy: &[f32], kernel: &[f32], p: &Plan, scratch: &mut Vec<f32>, dx: &mut [f32]));
with_avx2!(plane_dw, dw_body, (x: &[f32], dy: &[f32], p: &Plan, scratch: &mut Vec<f32>, dw: &mut [f32]));

/// One plane forward: each block of [`BLOCK`] outputs summed in registers over all taps from
/// the bias, clamped, stored once.
#[inline(always)]
fn forward_body(x: &[f32], kernel: &[f32], bias: f32, p: &Plan, scratch: &mut Vec<f32>, y: &mut [f32]) {
    p.fill(x, scratch);
    let (row_len, sh, taps) = (p.row_len(), p.g.stride[0], p.tap_offsets());
    for (oh, out) in y.chunks_exact_mut(p.out_w).enumerate() {
        for o in (0..p.out_w).step_by(BLOCK) {
            let mut acc = [bias; BLOCK];
            for i in 0..p.kh {
                let row = &scratch[(oh * sh + i) * row_len..][..row_len];
                for (&weight, &offset) in kernel[i * p.kw..][..p.kw].iter().zip(&taps) {
                    for (a, &v) in acc.iter_mut().zip(&row[offset + o..][..BLOCK]) {
                        *a += weight * v;
                    }
                }
            }
            if let Some(max) = p.g.max {
                for a in &mut acc {
                    *a = a.max(0.0).min(max);
                }
            }
            let n = BLOCK.min(p.out_w - o);
            out[o..o + n].copy_from_slice(&acc[..n]);
        }
    }
}

/// One plane's input gradient: every output gradient added, tap by tap, into a zeroed padded
/// scratch where its inputs sit, then the interior copied out.
#[inline(always)]
fn dx_body(dy: &[f32], kernel: &[f32], p: &Plan, scratch: &mut Vec<f32>, dx: &mut [f32]) {
    scratch.clear();
    scratch.resize(p.scratch_len(), 0.0);
    let (row_len, sh, taps) = (p.row_len(), p.g.stride[0], p.tap_offsets());
    for (oh, g) in dy.chunks_exact(p.out_w).enumerate() {
        for i in 0..p.kh {
            let row = &mut scratch[(oh * sh + i) * row_len..][..row_len];
            for (&weight, &offset) in kernel[i * p.kw..][..p.kw].iter().zip(&taps) {
                for (d, &v) in row[offset..offset + p.out_w].iter_mut().zip(g) {
                    *d += weight * v;
                }
            }
        }
    }
    p.extract(scratch, dx);
}

/// One plane's contribution to its channel's weight gradient: per tap the dot product of the
/// output gradient with the padded input slice that tap read, added to `dw`.
#[inline(always)]
fn dw_body(x: &[f32], dy: &[f32], p: &Plan, scratch: &mut Vec<f32>, dw: &mut [f32]) {
    p.fill(x, scratch);
    let (row_len, sh, taps) = (p.row_len(), p.g.stride[0], p.tap_offsets());
    for (oh, g) in dy.chunks_exact(p.out_w).enumerate() {
        for i in 0..p.kh {
            let row = &scratch[(oh * sh + i) * row_len..][..row_len];
            for (sum, &offset) in dw[i * p.kw..][..p.kw].iter_mut().zip(&taps) {
                let mut acc = [0f32; BLOCK];
                let (src, gs) = (&row[offset..offset + p.out_w], g);
                let (src_blocks, gs_blocks) = (src.chunks_exact(BLOCK), gs.chunks_exact(BLOCK));
                let tail: f32 = src_blocks.remainder().iter().zip(gs_blocks.remainder()).map(|(a, b)| a * b).sum();
                for (a, b) in src_blocks.zip(gs_blocks) {
                    for l in 0..BLOCK {
                        acc[l] += a[l] * b[l];
                    }
                }
                *sum += acc.iter().sum::<f32>() + tail;
            }
        }
    }
}

fn contiguous_f32(t: FlexTensor, what: &str) -> FlexTensor {
    assert!(t.dtype() == DType::F32, "depthwise: {what} is {:?}, not float32", t.dtype());
    t.to_contiguous()
}

fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous float32 tensor")
}

/// `(n, c)` and the plan of a call on `x` with `weight`.
fn plan(x: &FlexTensor, weight: &FlexTensor, g: Depthwise) -> (usize, usize, Plan) {
    let (s, ws) = (x.layout().shape(), weight.layout().shape());
    assert!(s.num_dims() == 4 && ws.num_dims() == 4, "depthwise: 4-D input and weight");
    assert!(ws[0] == s[1] && ws[1] == 1, "depthwise: weight {:?} for {} channels", ws.as_slice(), s[1]);
    (s[0], s[1], Plan::new([s[2], s[3]], [ws[2], ws[3]], g))
}

impl WeightedKernels<Depthwise> for Flex {
    fn weighted_forward(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, g: Depthwise) -> FlexTensor {
        let (x, weight, bias) =
            (contiguous_f32(x, "input"), contiguous_f32(weight, "weight"), contiguous_f32(bias, "bias"));
        let (n, c, p) = plan(&x, &weight, g);
        assert_eq!(bias.layout().shape().num_elements(), c, "depthwise: bias");
        let mut y = flex_alloc::zeros(Shape::new([n, c, p.out_h, p.out_w]));
        if n * c * p.out_h * p.out_w == 0 {
            return y;
        }
        let (xv, wv, bv, k) = (slice(&x), slice(&weight), slice(&bias), p.kh * p.kw);
        y.storage_mut::<f32>().par_chunks_mut(p.out_h * p.out_w).enumerate().for_each_init(
            Vec::new,
            |scratch, (i, out)| {
                let ch = i % c;
                plane_forward(&xv[i * p.h * p.w..][..p.h * p.w], &wv[ch * k..][..k], bv[ch], &p, scratch, out);
            },
        );
        y
    }

    fn weighted_backward(
        x: FlexTensor,
        weight: FlexTensor,
        dy: FlexTensor,
        g: Depthwise,
        wanted: [bool; 3],
    ) -> [Option<FlexTensor>; 3] {
        let (x, weight, dy) = (contiguous_f32(x, "input"), contiguous_f32(weight, "weight"), contiguous_f32(dy, "dy"));
        let (n, c, p) = plan(&x, &weight, g);
        let (xv, wv, dyv, k) = (slice(&x), slice(&weight), slice(&dy), p.kh * p.kw);
        let (plane_in, plane_out) = (p.h * p.w, p.out_h * p.out_w);
        assert_eq!(dyv.len(), n * c * plane_out, "depthwise: output gradient size");
        let dx = wanted[0].then(|| {
            let mut dx = flex_alloc::zeros(x.layout().shape().clone());
            dx.storage_mut::<f32>().par_chunks_mut(plane_in.max(1)).enumerate().for_each_init(
                Vec::new,
                |scratch, (i, out)| {
                    let ch = i % c;
                    plane_dx(&dyv[i * plane_out..][..plane_out], &wv[ch * k..][..k], &p, scratch, out);
                },
            );
            dx
        });
        // Per channel, the images in order: the same sums whatever the thread count.
        let mut dw = vec![0f32; c * k];
        if wanted[1] {
            dw.par_chunks_mut(k).enumerate().for_each_init(Vec::new, |scratch, (ch, sum)| {
                for b in 0..n {
                    let i = b * c + ch;
                    plane_dw(&xv[i * plane_in..][..plane_in], &dyv[i * plane_out..][..plane_out], &p, scratch, sum);
                }
            });
        }
        let db = wanted[2].then(|| {
            let sums: Vec<f32> = (0..c)
                .into_par_iter()
                .map(|ch| (0..n).map(|b| dyv[(b * c + ch) * plane_out..][..plane_out].iter().sum::<f32>()).sum())
                .collect();
            flex_alloc::from_vec(sums, Shape::new([c]))
        });
        let dw = wanted[1].then(|| flex_alloc::from_vec(dw, weight.layout().shape().clone()));
        [dx, dw, db]
    }
}

impl DepthwiseConv for Flex {
    fn depthwise_conv(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, g: Depthwise) -> FlexTensor {
        Self::weighted_forward(x, weight, bias, g)
    }
}

impl<B: WeightedKernels<Depthwise>, C: CheckpointStrategy> DepthwiseConv for Autodiff<B, C> {
    fn depthwise_conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        geometry: Depthwise,
    ) -> FloatTensor<Self> {
        autodiff::weighted::<B, C, Depthwise>(x, weight, bias, geometry)
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

    /// The backward against burn's (autodiff through the padded copy and the grouped
    /// convolution): input, weight and bias gradients, with and without a bias, for the
    /// geometries above, batch 3 (the weight gradient sums over images).
    #[test]
    fn gradients_match_burns() {
        let device = Device::flex().autodiff();
        type Case = (usize, usize, usize, usize, usize, [usize; 4], bool);
        let cases: [Case; 7] = [
            (3, 9, 41, 3, 2, [0, 1, 0, 1], true),
            (2, 10, 40, 5, 2, [1, 2, 1, 2], false),
            (2, 6, 33, 5, 1, [2, 2, 2, 2], true),
            (4, 12, 12, 3, 1, [1, 1, 1, 1], false),
            (3, 11, 13, 3, 2, [1, 1, 1, 1], true),
            (2, 3, 2, 5, 1, [2, 2, 2, 2], true),
            (2, 1, 1, 3, 2, [1, 1, 1, 1], false),
        ];
        for (c, h, w, k, s, pad, bias) in cases {
            let conv = Conv2dConfig::new([c, c], [k, k])
                .with_stride([s, s])
                .with_groups(c)
                .with_bias(bias)
                .with_padding(PaddingConfig2d::Valid)
                .init(&device);
            let x = Tensor::<4>::random([3, c, h, w], Distribution::Normal(0.0, 1.0), &device);
            assert!(applies(&conv, &x));
            let out = conv.forward(x.clone().pad((pad[2], pad[3], pad[0], pad[1]), PadMode::Constant(0.0))).dims();
            let upstream = Tensor::<4>::random(out, Distribution::Normal(0.0, 1.0), &device);
            let run = |ours: bool| {
                let x = x.clone().require_grad();
                let y = if ours {
                    forward(&conv, x.clone(), pad, None)
                } else {
                    conv.forward(x.clone().pad((pad[2], pad[3], pad[0], pad[1]), PadMode::Constant(0.0)))
                };
                let grads = (y.clone() * upstream.clone()).sum().backward();
                let mut out = vec![y.into_data(), x.grad(&grads).expect("dx").into_data()];
                out.push(conv.weight.grad(&grads).expect("dw").into_data());
                if let Some(b) = &conv.bias {
                    out.push(b.grad(&grads).expect("db").into_data());
                }
                out
            };
            let what = format!("{c}×{h}×{w}, kernel {k}, stride {s}, padding {pad:?}, bias {bias}");
            for (name, (a, b)) in ["y", "dx", "dw", "db"].iter().zip(run(true).into_iter().zip(run(false))) {
                let (err, scale) = crate::parity::max_errors(&a, &b).expect("same shapes");
                assert!(err <= 1e-5 * scale.max(1.0), "{what}: {name} off by {err:e} (scale {scale})");
            }
        }
    }

    /// Grouped but not depthwise, dilated, other dtypes: burn's own; a clamp under autodiff is
    /// refused.
    #[test]
    fn declines_what_it_does_not_compute() {
        let device = Device::flex();
        let x = Tensor::<4>::zeros([1, 4, 6, 6], &device);
        let depthwise = || Conv2dConfig::new([4, 4], [3, 3]).with_groups(4);
        assert!(applies(&depthwise().init(&device), &x));
        assert!(applies(&depthwise().with_bias(false).init(&device), &x));
        assert!(!applies(&Conv2dConfig::new([4, 4], [3, 3]).with_groups(2).init(&device), &x));
        assert!(!applies(&depthwise().with_dilation([2, 2]).init(&device), &x));
        assert!(!applies(&depthwise().init(&device), &x.clone().cast(DType::F64)));
        let autodiff = device.autodiff();
        let conv = depthwise().init(&autodiff);
        let tracked = Tensor::<4>::zeros([1, 4, 6, 6], &autodiff).require_grad();
        let clamped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            forward(&conv, tracked, [1, 1, 1, 1], Some(6.0));
        }));
        assert!(clamped.is_err(), "a clamp under autodiff must be refused");
    }
}
