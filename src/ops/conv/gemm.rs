//! 2D and 3D convolution on `flex` as im2col + GEMM, forward and backward, registered with
//! burn's autodiff.
//!
//! burn-flex's generic convolution (kernels other than 1×1) first copies the whole input to
//! NHWC on one thread, then per tile of 512 output positions fills a freshly zeroed im2col
//! buffer, multiplies into a fresh result buffer and copies that out with strided writes; its
//! backward runs as a transposed convolution and as a convolution whose "kernel" is the
//! feature map. Here, for `groups = 1`, dilation 1 and symmetric padding, in float32:
//! - forward: per image, the columns `(C·kd·kh·kw, positions)` are built straight from NCHW /
//!   NCDHW (`im2col.rs`, in tiles of output lines of at most 8 MiB, reused per thread), and
//!   GEMMs `W · cols` write the image's output in place, bias pre-filled; 1×1 stride-1
//!   convolutions multiply the input directly;
//! - backward: `dW = Σ_images dy · colsᵀ` (images in a fixed grouping, so the rounding does not
//!   depend on scheduling), `dx = col2im(Wᵀ · dy)`, `db = Σ dy`.
//!
//! Images run in parallel (the GEMMs single-threaded); with fewer images than threads (a 3D
//! clip, one frame) the forward runs an image's tiles in parallel, the backward its GEMMs.
//! `layers::conv2d` and I3D (`ops::conv::gemm::forward_3d`) use it; `GATESHIFT_GEMM_CONV=0` restores
//! burn's own. On BN-Inception it halves the training step (docs/PERFORMANCE.md).
//!
//! A pointwise convolution can also read its input through TSM's shift (ResNet's residual
//! shift, [`shifted`]): image n's columns are then three channel ranges of three images, so
//! the GEMM is split along its inner dimension into one GEMM per range, and the shifted map
//! is never written; the backward splits the same way.

use std::ops::Range;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::{Flex, FlexTensor};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::nn::conv::{Conv2d, Conv3d};
use burn::nn::{PaddingConfig2d, PaddingConfig3d};
use burn::tensor::{DType, Shape, Tensor};
use gemm::{Parallelism, gemm};
use rayon::prelude::*;

use crate::ops::autodiff::{self, OpGeometry, WeightedKernels};
pub use crate::ops::conv::im2col::Geometry;
use crate::ops::conv::im2col::{Sizes, col2im, im2col, with_scratch};
use crate::ops::flex_alloc;
use crate::ops::time_shift::Shift;

impl OpGeometry for Geometry {
    const OP: &'static str = "conv";
    fn inference_only(&self) -> bool {
        self.max.is_some()
    }
}

/// The op, routed by burn to the backend a tensor lives on (with or without autodiff).
#[backend_extension(Flex, Autodiff)]
pub trait GemmConv: Backend {
    /// `x` (N, C, H, W), `weight` (Cout, C, kh, kw), `bias` (Cout) → (N, Cout, H', W'); or
    /// the same with a depth axis after the channels (3D).
    fn gemm_conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        geometry: Geometry,
    ) -> FloatTensor<Self>;
}

/// Whether the op takes `x` at all: float32 on flex, unless `GATESHIFT_GEMM_CONV=0`.
fn takes<const D: usize>(x: &Tensor<D>) -> bool {
    let enabled = crate::ops::route::switches().gemm_conv;
    enabled && x.dtype() == DType::F32 && crate::backend::is_flex(&x.device())
}

/// The geometry of `conv` when this op takes it and `x` ([`takes`]; groups 1, dilation 1,
/// symmetric padding), else `None`.
pub fn applies(conv: &Conv2d, x: &Tensor<4>) -> Option<Geometry> {
    if !(takes(x) && conv.groups == 1 && conv.dilation == [1, 1]) {
        return None;
    }
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [0, 0],
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => [top, left],
        _ => return None,
    };
    Some(Geometry {
        stride: [1, conv.stride[0], conv.stride[1]],
        padding: [0, padding[0], padding[1]],
        max: None,
        shift: None,
    })
}

/// `g` (of `conv`, from [`applies`]) reading its input shifted by `shift`, where `conv` is
/// pointwise (1×1, stride 1, unpadded); else `None` (shift the map, then convolve).
pub fn shifted(conv: &Conv2d, g: Geometry, shift: Shift) -> Option<Geometry> {
    let [_, _, kh, kw] = conv.weight.dims();
    ([kh, kw] == [1, 1] && g.stride == [1; 3] && g.padding == [0; 3]).then_some(Geometry { shift: Some(shift), ..g })
}

/// The same for a 3D convolution.
pub fn applies_3d(conv: &Conv3d, x: &Tensor<5>) -> Option<Geometry> {
    if !(takes(x) && conv.groups == 1 && conv.dilation == [1, 1, 1]) {
        return None;
    }
    let padding = match conv.padding {
        PaddingConfig3d::Valid => [0, 0, 0],
        PaddingConfig3d::Explicit(d, h, w) => [d, h, w],
        PaddingConfig3d::Same => return None,
    };
    Some(Geometry { stride: conv.stride, padding, max: None, shift: None })
}

fn run<const D: usize>(x: Tensor<D>, weight: Tensor<D>, bias: Option<Tensor<1>>, geometry: Geometry) -> Tensor<D> {
    let bias = bias.unwrap_or_else(|| Tensor::zeros([weight.dims()[0]], &weight.device()));
    let (x, weight, bias) = (x.into_dispatch(), weight.into_dispatch(), bias.into_dispatch());
    Tensor::from_dispatch(<Dispatch as GemmConv>::gemm_conv(x, weight, bias, geometry))
}

/// Whether this op takes `x` for a convolution with a weight tensor ([`conv2d_weight`]).
pub fn takes_input(x: &Tensor<4>) -> bool {
    takes(x)
}

/// A bias-free 2D convolution of `x` with a weight tensor (not a layer's parameter), stride
/// and padding symmetric, by this op (see [`takes_input`]).
pub fn conv2d_weight(x: Tensor<4>, weight: Tensor<4>, stride: usize, padding: usize) -> Tensor<4> {
    let geometry = Geometry { stride: [1, stride, stride], padding: [0, padding, padding], max: None, shift: None };
    run(x, weight, None, geometry)
}

/// `conv` applied to `x` by this op (see [`applies`]).
pub fn conv2d(conv: &Conv2d, geometry: Geometry, x: Tensor<4>) -> Tensor<4> {
    run(x, conv.weight.val(), conv.bias.as_ref().map(|b| b.val()), geometry)
}

/// `conv` applied to `x` by this op (see [`applies_3d`]).
pub fn conv3d(conv: &Conv3d, geometry: Geometry, x: Tensor<5>) -> Tensor<5> {
    run(x, conv.weight.val(), conv.bias.as_ref().map(|b| b.val()), geometry)
}

/// `conv.forward(x)`, by this op where it takes `x`.
pub fn forward_3d(conv: &Conv3d, x: Tensor<5>) -> Tensor<5> {
    match applies_3d(conv, &x) {
        Some(g) => conv3d(conv, g, x),
        None => conv.forward(x),
    }
}

impl GemmConv for Flex {
    fn gemm_conv(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, geometry: Geometry) -> FlexTensor {
        Self::weighted_forward(x, weight, bias, geometry)
    }
}

/// In inference, the end of a residual block as one op (flex, no autodiff).
#[backend_extension(Flex)]
pub trait GemmConvResidual: Backend {
    /// `conv(x) + bias + residual`, clamped to `[0, geometry.max]` where given.
    fn gemm_conv_residual(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        geometry: Geometry,
    ) -> FloatTensor<Self>;
}

impl GemmConvResidual for Flex {
    fn gemm_conv_residual(x: FlexTensor, w: FlexTensor, b: FlexTensor, r: FlexTensor, g: Geometry) -> FlexTensor {
        forward(x, w, b, Some(r), g)
    }
}

/// ReLU(conv(x) + residual) in one op, for a residual block's last convolution with its BN
/// folded, in inference ([`applies`] holds for `x`, `residual` is a flex float32 tensor of the
/// output's shape and autodiff tracks neither): the residual and the bias pre-fill the output
/// the GEMMs add to, and each tile is clamped as it is written — no separate add and ReLU
/// passes over the block's output.
pub fn conv2d_residual_relu(conv: &Conv2d, geometry: Geometry, x: Tensor<4>, residual: Tensor<4>) -> Tensor<4> {
    let bias =
        conv.bias.as_ref().map(|b| b.val()).unwrap_or_else(|| Tensor::zeros([conv.weight.dims()[0]], &x.device()));
    let (x, w, b, r) =
        (x.into_dispatch(), conv.weight.val().into_dispatch(), bias.into_dispatch(), residual.into_dispatch());
    Tensor::from_dispatch(<Dispatch as GemmConvResidual>::gemm_conv_residual(
        x,
        w,
        b,
        r,
        geometry.clamped(f32::INFINITY),
    ))
}

/// `f(columns, row stride)` with the columns `(k, tile)` of output `lines` of image `x`: the
/// image itself for a pointwise convolution, else built by [`im2col`] in this thread's
/// buffer `slot`.
fn with_columns<R>(s: &Sizes, x: &[f32], lines: Range<usize>, slot: usize, f: impl FnOnce(&[f32], usize) -> R) -> R {
    if s.pointwise() {
        return f(&x[lines.start * s.output[2]..], s.p());
    }
    let tile = lines.len() * s.output[2];
    with_scratch(slot, s.k() * tile, |cols| {
        im2col(s, x, lines, cols);
        f(cols, tile)
    })
}

/// A row-major matrix view for [`matmul`]: pointer, row stride, column stride.
#[derive(Clone, Copy)]
struct View(*const f32, isize, isize);

impl View {
    fn rows(m: &[f32], cols: usize) -> Self {
        Self(m.as_ptr(), cols as isize, 1)
    }
    /// The transpose of a row-major `(rows, cols)` matrix.
    fn transposed(m: &[f32], cols: usize) -> Self {
        Self(m.as_ptr(), 1, cols as isize)
    }
}

/// `dst (m, n) = [dst +] a (m, k) · b (k, n)`, `dst` row-major with row stride `dst_rs`.
#[allow(clippy::too_many_arguments)]
fn matmul(dst: &mut [f32], dst_rs: usize, accumulate: bool, a: View, b: View, [m, k, n]: [usize; 3], par: Parallelism) {
    assert!(n <= dst_rs && (m == 0 || dst.len() >= (m - 1) * dst_rs + n));
    // SAFETY: `dst` holds the m rows of n values at stride dst_rs, and is borrowed mutably.
    unsafe { gemm_at(dst.as_mut_ptr(), dst_rs, accumulate, a, b, [m, k, n], par) }
}

/// [`matmul`] on a raw destination.
///
/// # Safety
/// `dst` must address m rows of n writable values at stride `dst_rs` that no one else touches
/// meanwhile; the views must have been made from slices of at least the sizes their strides
/// address for (m, k) and (k, n).
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_at(
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    a: View,
    b: View,
    [m, k, n]: [usize; 3],
    par: Parallelism,
) {
    // SAFETY: as the caller guarantees.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            a.0,
            a.2,
            a.1,
            b.0,
            b.2,
            b.1,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// An image's output rows, written by several tasks at once, each in its own columns.
#[derive(Clone, Copy)]
struct SharedRows(*mut f32, usize);

// SAFETY: only `matmul`, whose callers give each task disjoint columns, writes through it.
unsafe impl Send for SharedRows {}
unsafe impl Sync for SharedRows {}

impl SharedRows {
    /// `rows[first..][r·rs + col] += a (m, k) · b (k, n)` for r < m, col < n.
    ///
    /// # Safety
    /// No other task may touch these (row, column) positions meanwhile.
    unsafe fn matmul(self, first: usize, rs: usize, a: View, b: View, dims @ [m, _, n]: [usize; 3]) {
        assert!(n <= rs && (m == 0 || first + (m - 1) * rs + n <= self.1));
        // SAFETY: inside the allocation (checked above); exclusive per the caller's contract.
        unsafe { gemm_at(self.0.add(first), rs, true, a, b, dims, Parallelism::None) }
    }

    /// `rows[first..][r·rs + col]` clamped to `[0, max]` for r < m, col < n.
    ///
    /// # Safety
    /// As for [`SharedRows::matmul`].
    unsafe fn clamp(self, first: usize, rs: usize, [m, n]: [usize; 2], max: f32) {
        assert!(n <= rs && (m == 0 || first + (m - 1) * rs + n <= self.1));
        for r in 0..m {
            // SAFETY: inside the allocation (checked above); exclusive per the caller's contract.
            let row = unsafe { std::slice::from_raw_parts_mut(self.0.add(first + r * rs), n) };
            for v in row {
                *v = v.max(0.0).min(max);
            }
        }
    }
}

/// Whether a batch of `n` images runs its images in parallel (GEMMs on one thread each): when
/// there are at least as many images as threads; else the forward runs an image's tiles in
/// parallel and the backward its GEMMs.
fn images_parallel(n: usize) -> bool {
    n >= rayon::current_num_threads()
}

/// How many groups the weight gradient's sum over `n` images is split into: one per thread, and
/// at least four, so that 2- and 4-thread machines round alike.
fn dw_groups(n: usize) -> usize {
    n.min(rayon::current_num_threads().max(4))
}

fn gemm_par(parallel_images: bool) -> Parallelism {
    if parallel_images { Parallelism::None } else { Parallelism::Rayon(0) }
}

fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous float32 tensor")
}

fn float32(t: FlexTensor, what: &str) -> FlexTensor {
    assert!(t.dtype() == DType::F32, "conv: {what} is {:?}, not float32", t.dtype());
    t.to_contiguous()
}

/// The sizes of a call, its shift (if any) checked against them.
fn sizes(x: &FlexTensor, weight: &FlexTensor, g: Geometry) -> Sizes {
    let s = Sizes::of(x, weight, g);
    if let Some(shift) = g.shift {
        assert!(s.pointwise() && s.dims == 4, "conv: only a pointwise 2D convolution reads a shifted input");
        shift.check(s.n, s.c);
    }
    s
}

/// The forward: `conv(x) + bias`, plus `residual` (the output's shape) where given, clamped
/// to `[0, geometry.max]` where given.
fn forward(
    x: FlexTensor,
    weight: FlexTensor,
    bias: FlexTensor,
    residual: Option<FlexTensor>,
    g: Geometry,
) -> FlexTensor {
    let (x, weight, bias) = (float32(x, "input"), float32(weight, "weight"), float32(bias, "bias"));
    let s = sizes(&x, &weight, g);
    assert_eq!(bias.layout().shape().as_slice(), [s.o], "conv: bias shape");
    let residual = residual.map(|r| float32(r, "residual"));
    if let Some(r) = &residual {
        assert_eq!(r.layout().shape(), &s.output_shape(), "conv: residual shape");
    }
    let (xv, wv, bv, rv) = (slice(&x), slice(&weight), slice(&bias), residual.as_ref().map(slice));
    let (k, p) = (s.k(), s.p());
    let mut y = flex_alloc::zeros(s.output_shape());
    // Per image: bias (+ residual) rows, then W · columns tile by tile, each GEMM on one
    // thread. With fewer images than threads (a 3D clip, a single frame) an image's tiles run
    // in parallel, each writing its own columns of the output rows.
    let image = |b: usize, out: &mut [f32], tiles_in_parallel: bool| {
        match rv {
            Some(r) => out
                .chunks_exact_mut(p)
                .zip(r[b * s.o * p..].chunks_exact(p))
                .zip(bv)
                .for_each(|((row, res), &bias)| row.iter_mut().zip(res).for_each(|(v, &r)| *v = r + bias)),
            None => out.chunks_exact_mut(p).zip(bv).for_each(|(row, &bias)| row.fill(bias)),
        }
        let x = &xv[b * s.image()..][..s.image()];
        let rows = SharedRows(out.as_mut_ptr(), out.len());
        // SAFETY (each `matmul` and `clamp` below): the tiles' column ranges are disjoint, so
        // no two tasks write one value; the rows at stride p stay inside `out` (checked).
        let tile = |lines: Range<usize>| {
            let (first, n) = (lines.start * s.output[2], lines.len() * s.output[2]);
            match g.shift {
                None => with_columns(&s, x, lines, 0, |cols, rs| unsafe {
                    rows.matmul(first, p, View::rows(wv, k), View::rows(cols, rs), [s.o, k, n])
                }),
                // Pointwise: the columns of channels r are the planes r of image `from`.
                Some(shift) => {
                    for (r, from) in shift.sources(b, s.c) {
                        if let (Some(from), false) = (from, r.is_empty()) {
                            let cols = View::rows(&xv[from * s.image() + r.start * p + first..], p);
                            unsafe { rows.matmul(first, p, View::rows(&wv[r.start..], k), cols, [s.o, r.len(), n]) }
                        }
                    }
                }
            }
            if let Some(max) = g.max {
                unsafe { rows.clamp(first, p, [s.o, n], max) }
            }
        };
        if tiles_in_parallel {
            s.tiles(rayon::current_num_threads()).collect::<Vec<_>>().into_par_iter().for_each(tile);
        } else {
            s.tiles(1).for_each(tile);
        }
    };
    let out = y.storage_mut::<f32>();
    if images_parallel(s.n) {
        out.par_chunks_mut(s.o * p).enumerate().for_each(|(b, out)| image(b, out, false));
    } else {
        out.chunks_mut(s.o * p).enumerate().for_each(|(b, out)| image(b, out, true));
    }
    y
}

impl WeightedKernels<Geometry> for Flex {
    fn weighted_forward(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, g: Geometry) -> FlexTensor {
        forward(x, weight, bias, None, g)
    }

    fn weighted_backward(
        x: FlexTensor,
        weight: FlexTensor,
        dy: FlexTensor,
        g: Geometry,
        [want_dx, want_dw, want_db]: [bool; 3],
    ) -> [Option<FlexTensor>; 3] {
        let (x, weight, dy) = (float32(x, "input"), float32(weight, "weight"), float32(dy, "output gradient"));
        let s = sizes(&x, &weight, g);
        assert_eq!(dy.layout().shape(), &s.output_shape(), "conv: output gradient shape");
        let (xv, wv, gv) = (slice(&x), slice(&weight), slice(&dy));
        let parallel = images_parallel(s.n);
        let dx = want_dx.then(|| input_grad(&x, wv, gv, &s, g, parallel));
        let dw = want_dw.then(|| weight_grad(xv, gv, &weight, &s, g, parallel));
        let db = want_db.then(|| bias_grad(gv, &s));
        [dx, dw, db]
    }
}

// dx: per image, Wᵀ (k, o) · dy (o, p), folded back by col2im.
fn input_grad(x: &FlexTensor, wv: &[f32], gv: &[f32], s: &Sizes, g: Geometry, parallel: bool) -> FlexTensor {
    let (k, p) = (s.k(), s.p());
    let mut dx = flex_alloc::zeros(x.layout().shape().clone());
    let image = |(b, dx): (usize, &mut [f32])| {
        let dy_of = |b: usize| &gv[b * s.o * p..][..s.o * p];
        let (dy, wt) = (dy_of(b), View::transposed(wv, k));
        if let Some(shift) = g.shift {
            // Channels r of this image were read by image `reader` (zero where none).
            for (r, reader) in shift.adjoint().sources(b, s.c) {
                if let (Some(reader), false) = (reader, r.is_empty()) {
                    let (wt, dy) = (View::transposed(&wv[r.start..], k), View::rows(dy_of(reader), p));
                    let dst = &mut dx[r.start * p..r.end * p];
                    matmul(dst, p, false, wt, dy, [r.len(), s.o, p], gemm_par(parallel));
                }
            }
            return;
        }
        if s.pointwise() {
            matmul(dx, p, false, wt, View::rows(dy, p), [k, s.o, p], gemm_par(parallel));
            return;
        }
        dx.fill(0.0);
        for lines in s.tiles(1) {
            let (first, tile) = (lines.start * s.output[2], lines.len() * s.output[2]);
            with_scratch(1, k * tile, |cols| {
                matmul(cols, tile, false, wt, View::rows(&dy[first..], p), [k, s.o, tile], gemm_par(parallel));
                col2im(s, cols, lines, dx);
            });
        }
    };
    let out = dx.storage_mut::<f32>();
    if parallel {
        out.par_chunks_mut(s.image()).enumerate().for_each(image);
    } else {
        out.chunks_mut(s.image()).enumerate().for_each(image);
    }
    dx
}

/// dW: Σ over images of dy (o, p) · colsᵀ (p, k). Images are split into a fixed number
/// of consecutive groups, each summed in order, then the groups in order: the same
/// rounding on every run (rayon's own fold would split where threads steal).
fn weight_grad(xv: &[f32], gv: &[f32], weight: &FlexTensor, s: &Sizes, g: Geometry, parallel: bool) -> FlexTensor {
    let (k, p) = (s.k(), s.p());
    let add_image = |acc: &mut [f32], b: usize, par: Parallelism| {
        let (x, dy) = (&xv[b * s.image()..][..s.image()], &gv[b * s.o * p..][..s.o * p]);
        if let Some(shift) = g.shift {
            // Columns k of dW take the planes k of the image the shift read them from.
            for (r, from) in shift.sources(b, s.c) {
                if let (Some(from), false) = (from, r.is_empty()) {
                    let cols = View::transposed(&xv[from * s.image() + r.start * p..], p);
                    matmul(&mut acc[r.start..], k, true, View::rows(dy, p), cols, [s.o, p, r.len()], par);
                }
            }
            return;
        }
        for lines in s.tiles(1) {
            let (first, n) = (lines.start * s.output[2], lines.len() * s.output[2]);
            with_columns(s, x, lines, 0, |cols, rs| {
                matmul(acc, k, true, View::rows(&dy[first..], p), View::transposed(cols, rs), [s.o, n, k], par)
            });
        }
    };
    let mut sum = vec![0f32; s.o * k];
    if parallel {
        let per_group = s.n.div_ceil(dw_groups(s.n));
        let partials: Vec<Vec<f32>> = (0..s.n)
            .step_by(per_group)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|first| {
                let mut acc = vec![0f32; s.o * k];
                (first..(first + per_group).min(s.n)).for_each(|b| add_image(&mut acc, b, Parallelism::None));
                acc
            })
            .collect();
        for partial in partials {
            sum.iter_mut().zip(&partial).for_each(|(a, b)| *a += b);
        }
    } else {
        (0..s.n).for_each(|b| add_image(&mut sum, b, gemm_par(false)));
    }
    flex_alloc::from_vec(sum, weight.layout().shape().clone())
}

/// Σ dy per output channel.
fn bias_grad(gv: &[f32], s: &Sizes) -> FlexTensor {
    let p = s.p();
    let sums: Vec<f32> = (0..s.o)
        .into_par_iter()
        .map(|o| {
            let total: f64 = (0..s.n).map(|b| gv[(b * s.o + o) * p..][..p].iter().sum::<f32>() as f64).sum();
            total as f32
        })
        .collect();
    flex_alloc::from_vec(sums, Shape::new([s.o]))
}

impl<B: WeightedKernels<Geometry>, C: CheckpointStrategy> GemmConv for Autodiff<B, C> {
    fn gemm_conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        geometry: Geometry,
    ) -> FloatTensor<Self> {
        autodiff::weighted::<B, C, Geometry>(x, weight, bias, geometry)
    }
}

#[cfg(test)]
mod tests;
