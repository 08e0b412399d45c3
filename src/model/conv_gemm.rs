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
//! `layers::conv2d` and I3D (`conv_gemm::forward_3d`) use it; `GATESHIFT_GEMM_CONV=0` restores
//! burn's own. On BN-Inception it halves the training step (docs/PERFORMANCE.md).

use std::ops::Range;
use std::sync::OnceLock;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::{Flex, FlexTensor};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::nn::conv::{Conv2d, Conv3d};
use burn::nn::{PaddingConfig2d, PaddingConfig3d};
use burn::tensor::{DType, Shape, Tensor, TensorData};
use gemm::{Parallelism, gemm};
use rayon::prelude::*;

use crate::model::im2col::{Sizes, col2im, im2col, with_scratch};

/// Stride and symmetric padding (depth, rows, columns) of a convolution this op takes; a 2D
/// convolution has depth stride 1 and no depth padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub stride: [usize; 3],
    pub padding: [usize; 3],
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

/// The kernels a backend provides so that `Autodiff<B>` can differentiate the op.
pub trait ConvKernels: Backend {
    fn conv_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        geometry: Geometry,
    ) -> FloatTensor<Self>;
    /// `(dx, dweight, dbias)`, each only where `wanted`.
    fn conv_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        geometry: Geometry,
        wanted: [bool; 3],
    ) -> [Option<FloatTensor<Self>>; 3];
}

/// Whether the op takes `x` at all: float32 on flex, unless `GATESHIFT_GEMM_CONV=0`.
fn takes<const D: usize>(x: &Tensor<D>) -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    let enabled = *ENABLED.get_or_init(|| std::env::var("GATESHIFT_GEMM_CONV").as_deref() != Ok("0"));
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
    Some(Geometry { stride: [1, conv.stride[0], conv.stride[1]], padding: [0, padding[0], padding[1]] })
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
    Some(Geometry { stride: conv.stride, padding })
}

fn run<const D: usize>(x: Tensor<D>, weight: Tensor<D>, bias: Option<Tensor<1>>, geometry: Geometry) -> Tensor<D> {
    let bias = bias.unwrap_or_else(|| Tensor::zeros([weight.dims()[0]], &weight.device()));
    let (x, weight, bias) = (x.into_dispatch(), weight.into_dispatch(), bias.into_dispatch());
    Tensor::from_dispatch(<Dispatch as GemmConv>::gemm_conv(x, weight, bias, geometry))
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
        Self::conv_forward(x, weight, bias, geometry)
    }
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

impl ConvKernels for Flex {
    fn conv_forward(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, g: Geometry) -> FlexTensor {
        let (x, weight, bias) = (float32(x, "input"), float32(weight, "weight"), float32(bias, "bias"));
        let s = Sizes::of(&x, &weight, g);
        assert_eq!(bias.layout().shape().as_slice(), [s.o], "conv: bias shape");
        let (xv, wv, bv) = (slice(&x), slice(&weight), slice(&bias));
        let (k, p) = (s.k(), s.p());
        let mut y = FlexTensor::empty(s.output_shape(), DType::F32);
        // Per image: bias rows, then W · columns tile by tile, each GEMM on one thread. With
        // fewer images than threads (a 3D clip, a single frame) an image's tiles run in
        // parallel, each writing its own columns of the output rows.
        let image = |b: usize, out: &mut [f32], tiles_in_parallel: bool| {
            out.chunks_exact_mut(p).zip(bv).for_each(|(row, &bias)| row.fill(bias));
            let x = &xv[b * s.image()..][..s.image()];
            let rows = SharedRows(out.as_mut_ptr(), out.len());
            let tile = |lines: Range<usize>| {
                let (first, n) = (lines.start * s.output[2], lines.len() * s.output[2]);
                with_columns(&s, x, lines, 0, |cols, rs| {
                    // SAFETY: the tiles' column ranges are disjoint, so no two tasks write one
                    // value; the rows at stride p stay inside `out` (checked by `matmul`).
                    unsafe { rows.matmul(first, p, View::rows(wv, k), View::rows(cols, rs), [s.o, k, n]) }
                })
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

    fn conv_backward(
        x: FlexTensor,
        weight: FlexTensor,
        dy: FlexTensor,
        g: Geometry,
        [want_dx, want_dw, want_db]: [bool; 3],
    ) -> [Option<FlexTensor>; 3] {
        let (x, weight, dy) = (float32(x, "input"), float32(weight, "weight"), float32(dy, "output gradient"));
        let s = Sizes::of(&x, &weight, g);
        assert_eq!(dy.layout().shape(), &s.output_shape(), "conv: output gradient shape");
        let (xv, wv, gv) = (slice(&x), slice(&weight), slice(&dy));
        let (k, p) = (s.k(), s.p());
        let parallel = images_parallel(s.n);

        // dx: per image, Wᵀ (k, o) · dy (o, p), folded back by col2im.
        let dx = want_dx.then(|| {
            let mut dx = FlexTensor::empty(x.layout().shape().clone(), DType::F32);
            let image = |(b, dx): (usize, &mut [f32])| {
                let (dy, wt) = (&gv[b * s.o * p..][..s.o * p], View::transposed(wv, k));
                if s.pointwise() {
                    matmul(dx, p, false, wt, View::rows(dy, p), [k, s.o, p], gemm_par(parallel));
                    return;
                }
                dx.fill(0.0);
                for lines in s.tiles(1) {
                    let (first, tile) = (lines.start * s.output[2], lines.len() * s.output[2]);
                    with_scratch(1, k * tile, |cols| {
                        matmul(cols, tile, false, wt, View::rows(&dy[first..], p), [k, s.o, tile], gemm_par(parallel));
                        col2im(&s, cols, lines, dx);
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
        });

        // dW: Σ over images of dy (o, p) · colsᵀ (p, k). Images are split into a fixed number
        // of consecutive groups, each summed in order, then the groups in order: the same
        // rounding on every run (rayon's own fold would split where threads steal).
        let dw = want_dw.then(|| {
            let add_image = |acc: &mut [f32], b: usize, par: Parallelism| {
                let (x, dy) = (&xv[b * s.image()..][..s.image()], &gv[b * s.o * p..][..s.o * p]);
                for lines in s.tiles(1) {
                    let (first, n) = (lines.start * s.output[2], lines.len() * s.output[2]);
                    with_columns(&s, x, lines, 0, |cols, rs| {
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
            FlexTensor::from_data(TensorData::new(sum, weight.layout().shape().clone()))
        });

        // db: Σ dy per output channel.
        let db = want_db.then(|| {
            let sums: Vec<f32> = (0..s.o)
                .into_par_iter()
                .map(|o| {
                    let total: f64 = (0..s.n).map(|b| gv[(b * s.o + o) * p..][..p].iter().sum::<f32>() as f64).sum();
                    total as f32
                })
                .collect();
            FlexTensor::from_data(TensorData::new(sums, Shape::new([s.o])))
        });
        [dx, dw, db]
    }
}

#[derive(Debug)]
struct ConvBackward;

impl<B: ConvKernels> Backward<B, 3> for ConvBackward {
    /// Input and weight (kept alive, not copied) and the geometry.
    type State = (FloatTensor<B>, FloatTensor<B>, Geometry);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, weight, geometry) = ops.state;
        let dy = grads.consume::<B>(&ops.node);
        let ids = ops.parents.map(|p| p.map(|n| n.id));
        let grads_out = B::conv_backward(x, weight, dy, geometry, ids.map(|id| id.is_some()));
        for (id, grad) in ids.into_iter().zip(grads_out) {
            if let (Some(id), Some(grad)) = (id, grad) {
                grads.register::<B>(id, grad);
            }
        }
    }
}

impl<B: ConvKernels, C: CheckpointStrategy> GemmConv for Autodiff<B, C> {
    fn gemm_conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        geometry: Geometry,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), weight.node(), bias.node()];
        let prep = ConvBackward.prepare::<C>(nodes).compute_bound().stateful();
        let (x, weight, bias) = (x.into_primitive(), weight.into_primitive(), bias.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => {
                let y = B::conv_forward(x.clone(), weight.clone(), bias, geometry);
                prep.finish((x, weight, geometry), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::conv_forward(x, weight, bias, geometry)),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::conv::{Conv2dConfig, Conv3dConfig};
    use burn::tensor::{Distribution, TensorData};

    use burn::tensor::Device;

    use super::*;

    fn rel(ours: TensorData, reference: TensorData) -> f32 {
        let (err, scale) = crate::model::temporal::parity::max_errors(&ours, &reference).expect("same shapes");
        err / scale
    }

    /// Error of a weight or bias gradient against `bound`, an upper bound of the sum of the
    /// magnitudes it adds up (per entry). Those gradients sum over every output position of
    /// the batch, tens of thousands of terms here that largely cancel: float32 rounding grows
    /// with the magnitudes summed, not with the result, so measured against the result two
    /// correct summation orders can differ by more than 1e-5 on some random inputs. A wrong
    /// or missing term is still caught: one term is about 1 / (terms · 0.8) of the bound.
    fn sum_rel(ours: TensorData, reference: TensorData, bound: f32) -> f32 {
        let (err, _) = crate::model::temporal::parity::max_errors(&ours, &reference).expect("same shapes");
        err / bound
    }

    /// Σ |dy| over every position of the batch, largest over output channels (`dy` is
    /// (N, O, …)), and max |x|: bounds of what a bias (Σ dy) and a weight gradient (Σ x·dy)
    /// add up per entry.
    fn sum_bounds<const D: usize>(x: &Tensor<D>, dy: &Tensor<D>) -> (f32, f32) {
        let o = dy.dims()[1];
        let per_channel = dy.clone().abs().swap_dims(0, 1).reshape([o as i64, -1]).sum_dim(1);
        let db = per_channel.max().into_scalar::<f32>();
        (db, db * x.clone().abs().max().into_scalar::<f32>())
    }

    /// Output and the input, weight and bias gradients of this op against burn's own
    /// convolution (`Conv2d::forward`), for one geometry.
    fn compare(
        n: usize,
        [c, o]: [usize; 2],
        [h, w]: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        bias: bool,
    ) {
        let device = Device::flex().autodiff();
        let conv = Conv2dConfig::new([c, o], kernel)
            .with_stride(stride)
            .with_padding(PaddingConfig2d::Explicit(padding[0], padding[1], padding[0], padding[1]))
            .with_bias(bias)
            .init(&device);
        let x = Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &device);
        let g = applies(&conv, &x).expect("the op takes this convolution");
        let out = conv.forward(x.clone()).dims();
        let upstream = Tensor::<4>::random(out, Distribution::Normal(0.0, 1.0), &device);
        let run = |ours: bool| {
            let x = x.clone().require_grad();
            let y = if ours { conv2d(&conv, g, x.clone()) } else { conv.forward(x.clone()) };
            let grads = (y.clone() * upstream.clone()).sum().backward();
            let db = conv.bias.as_ref().map(|b| b.grad(&grads).expect("bias gradient").into_data());
            (
                y.into_data(),
                x.grad(&grads).expect("dx").into_data(),
                conv.weight.grad(&grads).expect("dw").into_data(),
                db,
            )
        };
        let (ours, burn) = (run(true), run(false));
        let (db_bound, dw_bound) = sum_bounds(&x, &upstream);
        let what = format!("n {n}, {c}→{o}, {h}×{w}, kernel {kernel:?} stride {stride:?} padding {padding:?}");
        let dw = sum_rel(ours.2, burn.2, dw_bound);
        for (name, e) in [("y", rel(ours.0, burn.0)), ("dx", rel(ours.1, burn.1)), ("dw / Σ|x·dy|", dw)] {
            assert!(e <= 1e-5, "{what}: {name} rel {e:e}");
        }
        if let (Some(a), Some(b)) = (ours.3, burn.3) {
            let e = sum_rel(a, b, db_bound);
            assert!(e <= 1e-5, "{what}: db / Σ|dy| rel {e:e}");
        }
    }

    #[test]
    fn matches_burns_convolution() {
        let threads = rayon::current_num_threads();
        for n in [1, threads + 1] {
            compare(n, [5, 7], [9, 11], [1, 1], [1, 1], [0, 0], true); // pointwise
            compare(n, [6, 4], [9, 10], [1, 1], [2, 2], [0, 0], false); // 1×1, stride 2
            compare(n, [4, 6], [8, 7], [3, 3], [1, 1], [1, 1], true);
            compare(n, [3, 5], [13, 12], [3, 3], [2, 2], [1, 1], false);
            compare(n, [3, 8], [17, 15], [7, 7], [2, 2], [3, 3], true); // BN-Inception's conv1
            compare(n, [4, 4], [6, 9], [1, 3], [1, 1], [0, 1], true); // InceptionV3's 1×n
            compare(n, [4, 4], [9, 6], [3, 1], [1, 1], [1, 0], false);
            compare(n, [2, 3], [5, 5], [3, 3], [2, 2], [0, 0], true); // no padding, stride 2
            compare(n, [2, 3], [4, 4], [5, 5], [1, 1], [2, 2], true); // kernel wider than the map's half
            compare(n, [64, 4], [120, 121], [3, 3], [1, 1], [1, 1], true); // columns in several tiles
            compare(n, [64, 3], [121, 120], [3, 3], [2, 2], [1, 1], false);
        }
    }

    /// The same for a 3D convolution (I3D's units): `kernel`, `stride`, `padding` per (depth,
    /// rows, columns).
    fn compare_3d(
        n: usize,
        [c, o]: [usize; 2],
        size: [usize; 3],
        kernel: [usize; 3],
        stride: [usize; 3],
        padding: [usize; 3],
    ) {
        let device = Device::flex().autodiff();
        let conv = Conv3dConfig::new([c, o], kernel)
            .with_stride(stride)
            .with_padding(PaddingConfig3d::Explicit(padding[0], padding[1], padding[2]))
            .with_bias(true)
            .init(&device);
        let [d, h, w] = size;
        let x = Tensor::<5>::random([n, c, d, h, w], Distribution::Normal(0.0, 1.0), &device);
        let g = applies_3d(&conv, &x).expect("the op takes this convolution");
        let upstream = Tensor::<5>::random(conv.forward(x.clone()).dims(), Distribution::Normal(0.0, 1.0), &device);
        let run = |ours: bool| {
            let x = x.clone().require_grad();
            let y = if ours { conv3d(&conv, g, x.clone()) } else { conv.forward(x.clone()) };
            let grads = (y.clone() * upstream.clone()).sum().backward();
            let grad = |t: Option<Tensor<1>>| t.expect("bias gradient").into_data();
            [
                y.into_data(),
                x.grad(&grads).expect("dx").into_data(),
                conv.weight.grad(&grads).expect("dw").into_data(),
                grad(conv.bias.as_ref().and_then(|b| b.grad(&grads))),
            ]
        };
        let (ours, burn) = (run(true), run(false));
        let (db_bound, dw_bound) = sum_bounds(&x, &upstream);
        for (i, (name, (a, b))) in
            ["y", "dx", "dw / Σ|x·dy|", "db / Σ|dy|"].iter().zip(ours.into_iter().zip(burn)).enumerate()
        {
            let e = match i {
                2 => sum_rel(a, b, dw_bound),
                3 => sum_rel(a, b, db_bound),
                _ => rel(a, b),
            };
            assert!(
                e <= 1e-5,
                "3D n {n}, {c}→{o}, {size:?}, kernel {kernel:?} stride {stride:?} padding {padding:?}: {name} rel {e:e}"
            );
        }
    }

    #[test]
    fn matches_burns_3d_convolution() {
        for n in [1, rayon::current_num_threads() + 1] {
            compare_3d(n, [3, 4], [5, 6, 7], [1, 1, 1], [1, 1, 1], [0, 0, 0]);
            compare_3d(n, [3, 4], [5, 6, 7], [3, 3, 3], [1, 1, 1], [1, 1, 1]);
            compare_3d(n, [2, 5], [9, 11, 10], [7, 7, 7], [2, 2, 2], [0, 0, 0]); // I3D's stem (input padded first)
            compare_3d(n, [4, 3], [4, 7, 6], [1, 3, 3], [1, 2, 2], [0, 1, 1]);
            compare_3d(n, [2, 3], [6, 5, 5], [3, 1, 1], [2, 1, 1], [1, 0, 0]);
            compare_3d(n, [8, 4], [5, 64, 63], [3, 3, 3], [1, 1, 1], [1, 1, 1]); // several tiles
        }
    }

    /// Grouped, dilated and asymmetrically padded convolutions, and other backends' tensors,
    /// stay with burn's own.
    #[test]
    fn declines_what_it_does_not_compute() {
        let device = Device::flex();
        let x = Tensor::<4>::zeros([1, 4, 6, 6], &device);
        let config = || Conv2dConfig::new([4, 4], [3, 3]);
        assert!(applies(&config().init(&device), &x).is_some());
        assert!(applies(&config().with_groups(2).init(&device), &x).is_none());
        assert!(applies(&config().with_dilation([2, 2]).init(&device), &x).is_none());
        let asymmetric = config().with_padding(PaddingConfig2d::Explicit(0, 0, 1, 1)).init(&device);
        assert!(applies(&asymmetric, &x).is_none());
        assert!(applies(&config().init(&device), &x.clone().cast(DType::F64)).is_none());
    }
}
