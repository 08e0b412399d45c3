//! 2D convolution on `flex` as im2col + one GEMM per image, forward and backward, registered
//! with burn's autodiff.
//!
//! burn-flex's generic convolution (kernels other than 1×1) first copies the whole input to
//! NHWC on one thread, then per tile of 512 output positions fills a freshly zeroed im2col
//! buffer, multiplies into a fresh result buffer and copies that out with strided writes; its
//! backward runs as a transposed convolution and as a convolution whose "kernel" is the
//! feature map. A profile of BN-Inception inference put about 45% of the time outside the
//! GEMM micro-kernels. Here, for `groups = 1`, dilation 1 and symmetric padding, in float32:
//! - forward: per image, the columns `(C·kh·kw, H'·W')` are built straight from NCHW (contiguous
//!   row spans, reused buffer), and one GEMM `W (Cout, C·kh·kw) · cols` writes the image's
//!   output in place, bias pre-filled; 1×1 stride-1 convolutions multiply the input directly;
//! - backward: `dW = Σ_images dy · colsᵀ`, `dx = col2im(Wᵀ · dy)`, `db = Σ dy`, each GEMM on
//!   the image's own slices.
//!
//! Images run in parallel (the GEMMs single-threaded); a batch of fewer images than threads
//! runs them in turn with the GEMM parallel. `GATESHIFT_GEMM_CONV=0` restores burn's own.

use std::cell::RefCell;
use std::sync::OnceLock;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::{Flex, FlexTensor};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Device, Shape, Tensor, TensorData};
use gemm::{Parallelism, gemm};
use rayon::prelude::*;

/// Stride and symmetric padding (rows, columns) of a convolution this op takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

/// The op, routed by burn to the backend a tensor lives on (with or without autodiff).
#[backend_extension(Flex, Autodiff)]
pub trait GemmConv: Backend {
    /// `x` (N, C, H, W), `weight` (Cout, C, kh, kw), `bias` (Cout) → (N, Cout, H', W').
    fn gemm_conv2d(
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

/// The geometry of `conv` when this op takes it and `x` (float32 on flex, groups 1, dilation
/// 1, symmetric padding, unless `GATESHIFT_GEMM_CONV=0`), else `None`.
pub fn applies(conv: &Conv2d, x: &Tensor<4>) -> Option<Geometry> {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    let enabled = *ENABLED.get_or_init(|| std::env::var("GATESHIFT_GEMM_CONV").as_deref() != Ok("0"));
    let device = x.device();
    let flex = device == Device::flex() || device == Device::flex().autodiff();
    if !(enabled && flex && x.dtype() == DType::F32 && conv.groups == 1 && conv.dilation == [1, 1]) {
        return None;
    }
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [0, 0],
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => [top, left],
        _ => return None,
    };
    Some(Geometry { stride: conv.stride, padding })
}

/// `conv` applied to `x` by this op (see [`applies`]).
pub fn conv2d(conv: &Conv2d, geometry: Geometry, x: Tensor<4>) -> Tensor<4> {
    let weight = conv.weight.val();
    let bias = match &conv.bias {
        Some(b) => b.val(),
        None => Tensor::zeros([weight.dims()[0]], &weight.device()),
    };
    let (x, weight, bias) = (x.into_dispatch(), weight.into_dispatch(), bias.into_dispatch());
    Tensor::from_dispatch(<Dispatch as GemmConv>::gemm_conv2d(x, weight, bias, geometry))
}

impl GemmConv for Flex {
    fn gemm_conv2d(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, geometry: Geometry) -> FlexTensor {
        Self::conv_forward(x, weight, bias, geometry)
    }
}

/// Sizes of one convolution: input (n, c, h, w), kernel (o, kh, kw), output (ho, wo).
#[derive(Clone, Copy, Debug)]
struct Sizes {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    ho: usize,
    wo: usize,
    g: Geometry,
}

impl Sizes {
    fn of(x: &FlexTensor, weight: &FlexTensor, g: Geometry) -> Self {
        let (xs, ws) = (x.layout().shape(), weight.layout().shape());
        assert!(xs.num_dims() == 4 && ws.num_dims() == 4, "conv2d: 4-D input and weight");
        assert_eq!(xs[1], ws[1], "conv2d: input channels {} against the weight's {}", xs[1], ws[1]);
        let (n, c, h, w, o, kh, kw) = (xs[0], xs[1], xs[2], xs[3], ws[0], ws[2], ws[3]);
        let out = |size: usize, k: usize, s: usize, p: usize| {
            assert!(size + 2 * p >= k && s > 0, "conv2d: kernel {k} larger than the padded input {size}+2·{p}");
            (size + 2 * p - k) / s + 1
        };
        let (ho, wo) = (out(h, kh, g.stride[0], g.padding[0]), out(w, kw, g.stride[1], g.padding[1]));
        Self { n, c, h, w, o, kh, kw, ho, wo, g }
    }
    /// Rows of the columns matrix (the GEMM's inner dimension).
    fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// Output positions per image.
    fn p(&self) -> usize {
        self.ho * self.wo
    }
    fn image(&self) -> usize {
        self.c * self.h * self.w
    }
    /// A 1×1, stride-1, unpadded convolution: the input image already is its columns matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.g.stride == [1, 1] && self.g.padding == [0, 0]
    }
    /// The output rows and columns at which kernel tap `(i, j)` reads inside the image (not
    /// the padding).
    fn tap(&self, i: usize, j: usize) -> [std::ops::Range<usize>; 2] {
        // o·s + k − pad ∈ [0, size)  ⇔  o ∈ [⌈(pad − k)/s⌉, ⌊(size − 1 + pad − k)/s⌋]
        let inside = |outputs: usize, size: usize, k: usize, s: usize, pad: usize| {
            let lo = pad.saturating_sub(k).div_ceil(s).min(outputs);
            let hi = if size + pad > k { ((size - 1 + pad - k) / s + 1).min(outputs) } else { 0 };
            lo..hi.max(lo)
        };
        let ([sh, sw], [ph, pw]) = (self.g.stride, self.g.padding);
        [inside(self.ho, self.h, i, sh, ph), inside(self.wo, self.w, j, sw, pw)]
    }
}

/// `cols (k, p)` of one image `x (c, h, w)`; zero where the kernel reads padding.
fn im2col(s: &Sizes, x: &[f32], cols: &mut [f32]) {
    let (p, plane, [sh, sw], [ph, pw]) = (s.p(), s.h * s.w, s.g.stride, s.g.padding);
    for i in 0..s.kh {
        for j in 0..s.kw {
            let [rows, span] = s.tap(i, j);
            for c in 0..s.c {
                let row = &mut cols[((c * s.kh + i) * s.kw + j) * p..][..p];
                row[..rows.start * s.wo].fill(0.0);
                row[rows.end * s.wo..].fill(0.0);
                for oh in rows.clone() {
                    let out = &mut row[oh * s.wo..][..s.wo];
                    let src = &x[c * plane + (oh * sh + i - ph) * s.w..][..s.w];
                    out[..span.start].fill(0.0);
                    out[span.end..].fill(0.0);
                    if sw == 1 {
                        out[span.clone()].copy_from_slice(&src[span.start + j - pw..][..span.len()]);
                    } else {
                        span.clone().for_each(|ow| out[ow] = src[ow * sw + j - pw]);
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds `cols (k, p)` back onto one image's gradient `dx (c, h, w)`
/// (which it overwrites first).
fn col2im(s: &Sizes, cols: &[f32], dx: &mut [f32]) {
    dx.fill(0.0);
    let (p, plane, [sh, sw], [ph, pw]) = (s.p(), s.h * s.w, s.g.stride, s.g.padding);
    for i in 0..s.kh {
        for j in 0..s.kw {
            let [rows, span] = s.tap(i, j);
            for c in 0..s.c {
                let row = &cols[((c * s.kh + i) * s.kw + j) * p..][..p];
                for oh in rows.clone() {
                    let g = &row[oh * s.wo..][..s.wo];
                    let dst = &mut dx[c * plane + (oh * sh + i - ph) * s.w..][..s.w];
                    if sw == 1 {
                        let dst = &mut dst[span.start + j - pw..][..span.len()];
                        dst.iter_mut().zip(&g[span.clone()]).for_each(|(d, &v)| *d += v);
                    } else {
                        span.clone().for_each(|ow| dst[ow * sw + j - pw] += g[ow]);
                    }
                }
            }
        }
    }
}

thread_local! {
    /// Per-thread column buffers (two: the backward needs the input's and the gradient's).
    static SCRATCH: [RefCell<Vec<f32>>; 2] = const { [RefCell::new(Vec::new()), RefCell::new(Vec::new())] };
}

/// `f` with a per-thread buffer of `len` values (contents unspecified); a fresh one if this
/// thread's is in use (a task run while another waits inside a parallel GEMM).
fn with_scratch<R>(slot: usize, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|s| match s[slot].try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
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

/// `dst (m, n) = [dst +] a (m, k) · b (k, n)`, `dst` row-major.
fn matmul(dst: &mut [f32], accumulate: bool, a: View, b: View, [m, k, n]: [usize; 3], par: Parallelism) {
    assert!(dst.len() >= m * n);
    // SAFETY: `dst` holds m·n values; the views were made from slices of at least the sizes
    // their strides address for (m, k) and (k, n).
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
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

/// Runs `f(image, parallelism)` over the images: in parallel (GEMMs on one thread each) when
/// there are at least as many images as threads, else in turn with the GEMMs parallel.
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
    assert!(t.dtype() == DType::F32, "conv2d: {what} is {:?}, not float32", t.dtype());
    t.to_contiguous()
}

impl ConvKernels for Flex {
    fn conv_forward(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, g: Geometry) -> FlexTensor {
        let (x, weight, bias) = (float32(x, "input"), float32(weight, "weight"), float32(bias, "bias"));
        let s = Sizes::of(&x, &weight, g);
        assert_eq!(bias.layout().shape().as_slice(), [s.o], "conv2d: bias shape");
        let (xv, wv, bv) = (slice(&x), slice(&weight), slice(&bias));
        let (k, p) = (s.k(), s.p());
        let mut y = FlexTensor::empty(Shape::new([s.n, s.o, s.ho, s.wo]), DType::F32);
        let image = |(b, out): (usize, &mut [f32]), par: Parallelism| {
            for (row, &bias) in out.chunks_exact_mut(p).zip(bv) {
                row.fill(bias);
            }
            let x = &xv[b * s.image()..][..s.image()];
            if s.pointwise() {
                matmul(out, true, View::rows(wv, k), View::rows(x, p), [s.o, k, p], par);
            } else {
                with_scratch(0, k * p, |cols| {
                    im2col(&s, x, cols);
                    matmul(out, true, View::rows(wv, k), View::rows(cols, p), [s.o, k, p], par);
                });
            }
        };
        let out = y.storage_mut::<f32>();
        if images_parallel(s.n) {
            out.par_chunks_mut(s.o * p).enumerate().for_each(|t| image(t, Parallelism::None));
        } else {
            out.chunks_mut(s.o * p).enumerate().for_each(|t| image(t, gemm_par(false)));
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
        assert_eq!(dy.layout().shape().as_slice(), [s.n, s.o, s.ho, s.wo], "conv2d: output gradient shape");
        let (xv, wv, gv) = (slice(&x), slice(&weight), slice(&dy));
        let (k, p) = (s.k(), s.p());
        let parallel = images_parallel(s.n);

        // dx: per image, Wᵀ (k, o) · dy (o, p), folded back by col2im.
        let dx = want_dx.then(|| {
            let mut dx = FlexTensor::empty(x.layout().shape().clone(), DType::F32);
            let image = |(b, dx): (usize, &mut [f32])| {
                let dy = &gv[b * s.o * p..][..s.o * p];
                let (wt, dy) = (View::transposed(wv, k), View::rows(dy, p));
                if s.pointwise() {
                    matmul(dx, false, wt, dy, [k, s.o, p], gemm_par(parallel));
                } else {
                    with_scratch(1, k * p, |cols| {
                        matmul(cols, false, wt, dy, [k, s.o, p], gemm_par(parallel));
                        col2im(&s, cols, dx);
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
                let (x, dy) = (&xv[b * s.image()..][..s.image()], View::rows(&gv[b * s.o * p..][..s.o * p], p));
                if s.pointwise() {
                    matmul(acc, true, dy, View::transposed(x, p), [s.o, p, k], par);
                } else {
                    with_scratch(0, k * p, |cols| {
                        im2col(&s, x, cols);
                        matmul(acc, true, dy, View::transposed(cols, p), [s.o, p, k], par);
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
    fn gemm_conv2d(
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
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Distribution, TensorData};

    use super::*;

    fn rel(ours: TensorData, reference: TensorData) -> f32 {
        let (err, scale) = crate::model::temporal::parity::max_errors(&ours, &reference).expect("same shapes");
        err / scale
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
        let what = format!("n {n}, {c}→{o}, {h}×{w}, kernel {kernel:?} stride {stride:?} padding {padding:?}");
        for (name, e) in [("y", rel(ours.0, burn.0)), ("dx", rel(ours.1, burn.1)), ("dw", rel(ours.2, burn.2))] {
            assert!(e <= 1e-5, "{what}: {name} rel {e:e}");
        }
        if let (Some(a), Some(b)) = (ours.3, burn.3) {
            let e = rel(a, b);
            assert!(e <= 1e-5, "{what}: db rel {e:e}");
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
