//! 2D max and average pooling on `flex` as separable row passes, forward and backward,
//! registered with burn's autodiff.
//!
//! burn-flex pools each output value with a scalar loop over its window (a dependent `addss`
//! chain for the average, a compare-and-index chain for the maximum, with bounds checks): a
//! profile of BN-Inception inference put about a third of the time in those two loops. A box
//! maximum or sum is separable, so here each output row reduces its window's input rows into
//! one padded row (element-wise over the whole row, vectorised), then reduces that row's
//! columns, as slices when the stride is 1. Semantics are PyTorch's (and burn's): padding
//! never wins a maximum, NaN propagates, `ceil_mode` drops a last window that would start in
//! the padding, the average's divisor counts the padding or not (`count_include_pad`), and
//! a maximum's gradient goes to the first maximal element of its window in row-major order.
//!
//! Float32 on flex, dilation 1 and symmetric padding (what the backbones use); anything else
//! stays with burn's own. `GATESHIFT_FAST_POOL=0` turns it off, to compare.

use super::flat;
use super::window::{Axis, Reduce, Window, max_nan};
use crate::ops::avx2::with_avx2;
use crate::ops::flex_alloc;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::{Flex, FlexTensor};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::pool::{AvgPool2d, MaxPool2d};
use burn::tensor::{DType, Shape, Tensor};
use rayon::prelude::*;

/// The op, routed by burn to the backend a tensor lives on (with or without autodiff).
#[backend_extension(Flex, Autodiff)]
pub trait FastPool: Backend {
    /// `x` (N, C, H, W) → (N, C, H', W').
    fn fast_pool2d(x: FloatTensor<Self>, window: Window) -> FloatTensor<Self>;
}

/// The kernels a backend provides so that `Autodiff<B>` can differentiate the op.
pub trait PoolKernels: Backend {
    fn pool_forward(x: FloatTensor<Self>, window: Window) -> FloatTensor<Self>;
    /// `dx` from the input, the forward's output and its gradient.
    fn pool_backward(
        x: FloatTensor<Self>,
        y: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        window: Window,
    ) -> FloatTensor<Self>;
}

fn symmetric(padding: &PaddingConfig2d) -> Option<[usize; 2]> {
    match *padding {
        PaddingConfig2d::Valid => Some([0, 0]),
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => Some([top, left]),
        _ => None,
    }
}

/// `f(x)`, a bfloat16 map on flex pooled in float32 and rounded back: burn-flex pools
/// bfloat16 value by value, ten times slower than these kernels plus the two casts (a
/// profile of BN-Inception in bf16 put a third of the forward in its pools). Exact for the
/// maximum; the average sums in float32, then rounds once.
fn through_f32(x: Tensor<4>, f: impl FnOnce(Tensor<4>) -> Tensor<4>) -> Tensor<4> {
    let enabled = crate::ops::route::switches().fast_pool;
    if !(enabled && x.dtype() == DType::BF16 && crate::backend::is_flex(&x.device())) {
        return f(x);
    }
    f(x.cast(DType::F32)).cast(DType::BF16)
}

fn takes(x: &Tensor<4>) -> bool {
    let enabled = crate::ops::route::switches().fast_pool;
    enabled && x.dtype() == DType::F32 && crate::backend::is_flex(&x.device())
}

fn pool(x: Tensor<4>, window: Window) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FastPool>::fast_pool2d(x.into_dispatch(), window))
}

/// `pool.forward(x)`, by this op where it takes `x`.
pub fn max(pool_: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let [k, s] = [pool_.kernel_size[0], pool_.stride[0]];
    crate::ops::profile::timed_map(
        || format!("maxpool {k}x{k}/{s}"),
        x.dims(),
        || through_f32(x, |x| max_route(pool_, x)),
    )
}

fn max_route(pool_: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    match symmetric(&pool_.padding) {
        Some(padding) if pool_.dilation == [1, 1] && takes(&x) => {
            let (kernel, stride, ceil_mode) = (pool_.kernel_size, pool_.stride, pool_.ceil_mode);
            pool(x, Window { reduce: Reduce::Max, kernel, stride, padding, ceil_mode })
        }
        _ => pool_.forward(x),
    }
}

/// `pool.forward(x)`, by this op where it takes `x`.
pub fn avg(pool_: &AvgPool2d, x: Tensor<4>) -> Tensor<4> {
    let [k, s] = [pool_.kernel_size[0], pool_.stride[0]];
    crate::ops::profile::timed_map(
        || format!("avgpool {k}x{k}/{s}"),
        x.dims(),
        || through_f32(x, |x| avg_route(pool_, x)),
    )
}

fn avg_route(pool_: &AvgPool2d, x: Tensor<4>) -> Tensor<4> {
    match symmetric(&pool_.padding) {
        Some(padding) if takes(&x) => {
            let reduce = Reduce::Avg { count_include_pad: pool_.count_include_pad };
            let (kernel, stride, ceil_mode) = (pool_.kernel_size, pool_.stride, pool_.ceil_mode);
            pool(x, Window { reduce, kernel, stride, padding, ceil_mode })
        }
        _ => pool_.forward(x),
    }
}

impl FastPool for Flex {
    fn fast_pool2d(x: FlexTensor, window: Window) -> FlexTensor {
        Self::pool_forward(x, window)
    }
}

with_avx2!(forward_plane_avx2, plane_body, (win: &Window, rows: &Axis, cols: &Axis, x: &[f32], y: &mut [f32], row: &mut [f32]));

/// Pools one plane `x (h, w)` into `y (h', w')`; `row` is scratch of `cols.padded_row()`;
/// vectorised with AVX2 where the CPU has it.
pub(super) fn forward_plane(win: &Window, rows: &Axis, cols: &Axis, x: &[f32], y: &mut [f32], row: &mut [f32]) {
    forward_plane_avx2(win, rows, cols, x, y, row)
}

#[inline(always)]
fn plane_body(win: &Window, rows: &Axis, cols: &Axis, x: &[f32], y: &mut [f32], row: &mut [f32]) {
    let is_max = win.reduce == Reduce::Max;
    let fill = if is_max { f32::NEG_INFINITY } else { 0.0 };
    let (w, pw) = (cols.input, cols.pad);
    for (oh, out) in y.chunks_exact_mut(cols.output).enumerate() {
        // Rows: the window's input rows reduced element-wise into the padded row.
        let valid = rows.valid(oh);
        row.fill(fill);
        let inner = &mut row[pw..pw + w];
        inner.copy_from_slice(&x[valid.start * w..][..w]);
        for ih in valid.clone().skip(1) {
            let src = &x[ih * w..][..w];
            if is_max {
                inner.iter_mut().zip(src).for_each(|(a, &b)| *a = max_nan(*a, b));
            } else {
                inner.iter_mut().zip(src).for_each(|(a, &b)| *a += b);
            }
        }
        // Columns: each output reduces `kernel` neighbours of the padded row.
        let s = cols.stride;
        let first = &row[..];
        if s == 1 {
            out.copy_from_slice(&first[..cols.output]);
            for j in 1..cols.kernel {
                let shifted = &first[j..][..cols.output];
                if is_max {
                    out.iter_mut().zip(shifted).for_each(|(a, &b)| *a = max_nan(*a, b));
                } else {
                    out.iter_mut().zip(shifted).for_each(|(a, &b)| *a += b);
                }
            }
        } else if s == 2 && cols.kernel == 3 && is_max {
            // 3×3/2 maxima (the backbones' reductions): each window is a pair and the next
            // pair's first value, in the same order as the fold below.
            let wo = cols.output;
            let next = first[2..2 * wo + 1].iter().step_by(2);
            for ((o, p), &n) in out.iter_mut().zip(first[..2 * wo].chunks_exact(2)).zip(next) {
                *o = max_nan(max_nan(p[0], p[1]), n);
            }
        } else {
            for (ow, o) in out.iter_mut().enumerate() {
                let window = &first[ow * s..][..cols.kernel];
                *o = if is_max { window.iter().copied().fold(f32::NEG_INFINITY, max_nan) } else { window.iter().sum() };
            }
        }
        if let Reduce::Avg { count_include_pad } = win.reduce {
            let height = if count_include_pad { rows.padded_len(oh) } else { valid.len() };
            for (ow, o) in out.iter_mut().enumerate() {
                let width = if count_include_pad { cols.padded_len(ow) } else { cols.valid(ow).len() };
                *o /= (height * width) as f32;
            }
        }
    }
}

/// The gradient of one plane: `dx (h, w)` from `x`, `y`, `dy (h', w')`; `row` as above.
#[allow(clippy::too_many_arguments)]
fn backward_plane(
    win: &Window,
    rows: &Axis,
    cols: &Axis,
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    row: &mut [f32],
) {
    dx.fill(0.0);
    let (w, wo) = (cols.input, cols.output);
    match win.reduce {
        Reduce::Max => {
            for oh in 0..rows.output {
                for ow in 0..wo {
                    let (m, g) = (y[oh * wo + ow], dy[oh * wo + ow]);
                    let hit = rows.valid(oh).flat_map(|ih| cols.valid(ow).map(move |iw| ih * w + iw)).find(|&i| {
                        let v = x[i];
                        v == m || (m.is_nan() && v.is_nan())
                    });
                    if let Some(i) = hit {
                        dx[i] += g;
                    }
                }
            }
        }
        Reduce::Avg { count_include_pad } => {
            let pw = cols.pad;
            for oh in 0..rows.output {
                // Spread each output's share over its window's columns, then add to its rows.
                let valid = rows.valid(oh);
                let height = if count_include_pad { rows.padded_len(oh) } else { valid.len() };
                row.fill(0.0);
                for ow in 0..wo {
                    let width = if count_include_pad { cols.padded_len(ow) } else { cols.valid(ow).len() };
                    let share = dy[oh * wo + ow] / (height * width) as f32;
                    row[ow * cols.stride..][..cols.kernel].iter_mut().for_each(|r| *r += share);
                }
                for ih in valid {
                    dx[ih * w..][..w].iter_mut().zip(&row[pw..pw + w]).for_each(|(d, &r)| *d += r);
                }
            }
        }
    }
}

fn float32(t: FlexTensor, what: &str) -> FlexTensor {
    assert!(t.dtype() == DType::F32, "pool2d: {what} is {:?}, not float32", t.dtype());
    t.to_contiguous()
}

fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous float32 tensor")
}

/// `(planes, rows, columns)` of a pooling of `x`.
fn axes(x: &FlexTensor, win: &Window) -> (usize, Axis, Axis) {
    let s = x.layout().shape();
    assert!(s.num_dims() == 4, "pool2d: 4-D input, got {:?}", s.as_slice());
    let [k, st, p] = [win.kernel, win.stride, win.padding];
    let rows = Axis::new(s[2], k[0], st[0], p[0], win.ceil_mode);
    let cols = Axis::new(s[3], k[1], st[1], p[1], win.ceil_mode);
    (s[0] * s[1], rows, cols)
}

impl PoolKernels for Flex {
    fn pool_forward(x: FlexTensor, win: Window) -> FlexTensor {
        let x = float32(x, "input");
        let (planes, rows, cols) = axes(&x, &win);
        let s = x.layout().shape();
        let mut y = flex_alloc::zeros(Shape::new([s[0], s[1], rows.output, cols.output]));
        if planes * rows.output * cols.output == 0 {
            return y;
        }
        let (xv, plane) = (slice(&x), rows.input * cols.input);
        if flat::applies(&rows, &cols) {
            let divisor = match win.reduce {
                Reduce::Avg { count_include_pad } => flat::divisors(&rows, &cols, count_include_pad),
                Reduce::Max => Vec::new(),
            };
            // Tasks of several planes: a 14×14 plane is a few hundred cycles of work.
            let per = (4096 / plane).max(1);
            y.storage_mut::<f32>().par_chunks_mut(per * plane).enumerate().for_each_init(
                || vec![0f32; plane],
                |v, (i, out)| {
                    for (j, out) in out.chunks_exact_mut(plane).enumerate() {
                        let x = &xv[(i * per + j) * plane..][..plane];
                        flat::forward_plane(win.reduce, &rows, &cols, x, out, v, &divisor);
                    }
                },
            );
            return y;
        }
        y.storage_mut::<f32>().par_chunks_mut(rows.output * cols.output).enumerate().for_each_init(
            || vec![0f32; cols.padded_row()],
            |row, (i, out)| forward_plane(&win, &rows, &cols, &xv[i * plane..][..plane], out, row),
        );
        y
    }

    fn pool_backward(x: FlexTensor, y: FlexTensor, dy: FlexTensor, win: Window) -> FlexTensor {
        let (x, y, dy) = (float32(x, "input"), float32(y, "output"), float32(dy, "output gradient"));
        let (_, rows, cols) = axes(&x, &win);
        assert_eq!(dy.layout().shape(), y.layout().shape(), "pool2d: output gradient shape");
        let (plane, out) = (rows.input * cols.input, rows.output * cols.output);
        let (xv, yv, gv) = (slice(&x), slice(&y), slice(&dy));
        let mut dx = flex_alloc::zeros(x.layout().shape().clone());
        if plane == 0 {
            return dx;
        }
        dx.storage_mut::<f32>().par_chunks_mut(plane).enumerate().for_each_init(
            || vec![0f32; cols.padded_row()],
            |row, (i, dx)| {
                let (x, y, g) = (&xv[i * plane..][..plane], &yv[i * out..][..out], &gv[i * out..][..out]);
                backward_plane(&win, &rows, &cols, x, y, g, dx, row)
            },
        );
        dx
    }
}

#[derive(Debug)]
struct PoolBackward;

impl<B: PoolKernels> Backward<B, 1> for PoolBackward {
    /// Input and output (kept alive, not copied) and the window.
    type State = (FloatTensor<B>, FloatTensor<B>, Window);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, y, window) = ops.state;
        let dy = grads.consume::<B>(&ops.node);
        if let [Some(parent)] = ops.parents {
            grads.register::<B>(parent.id, B::pool_backward(x, y, dy, window));
        }
    }
}

impl<B: PoolKernels, C: CheckpointStrategy> FastPool for Autodiff<B, C> {
    fn fast_pool2d(x: FloatTensor<Self>, window: Window) -> FloatTensor<Self> {
        let prep = PoolBackward.prepare::<C>([x.node()]).compute_bound().stateful();
        let x = x.into_primitive();
        match prep {
            OpsKind::Tracked(prep) => {
                let y = B::pool_forward(x.clone(), window);
                prep.finish((x, y.clone(), window), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::pool_forward(x, window)),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::pool::{AvgPool2dConfig, MaxPool2dConfig};
    use burn::tensor::activation::relu;
    use burn::tensor::{Distribution, TensorData};

    use burn::tensor::Device;

    use super::*;

    fn rel(ours: TensorData, reference: TensorData) -> f32 {
        let (err, scale) = crate::parity::max_errors(&ours, &reference).expect("same shapes");
        err / scale.max(f32::MIN_POSITIVE)
    }

    /// Output and input gradient of this op against burn's pooling for one window, on a map
    /// with ties (after ReLU about half the values are 0, so many windows hold several maxima).
    fn compare(shape: [usize; 4], kernel: usize, stride: usize, pad: usize, ceil_mode: bool) {
        let device = Device::flex().autodiff();
        let padding = PaddingConfig2d::Explicit(pad, pad, pad, pad);
        let max_pool = MaxPool2dConfig::new([kernel, kernel])
            .with_strides([stride, stride])
            .with_padding(padding.clone())
            .with_ceil_mode(ceil_mode)
            .init();
        let avg_pools = [true, false].map(|count_include_pad| {
            AvgPool2dConfig::new([kernel, kernel])
                .with_strides([stride, stride])
                .with_padding(padding.clone())
                .with_count_include_pad(count_include_pad)
                .with_ceil_mode(ceil_mode)
                .init()
        });
        let x = relu(Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device));
        // One upstream gradient for both runs, drawn once: the random generator is the
        // process's, which tests running in parallel draw from too, so seeding it before each
        // run would not give both runs the same values.
        let upstream = Tensor::<4>::random(max_pool.forward(x.clone()).dims(), Distribution::Normal(0.0, 1.0), &device);
        let run = |ours: bool, which: usize| {
            let x = x.clone().require_grad();
            let y = match (which, ours) {
                (0, true) => max(&max_pool, x.clone()),
                (0, false) => max_pool.forward(x.clone()),
                (i, true) => avg(&avg_pools[i - 1], x.clone()),
                (i, false) => avg_pools[i - 1].forward(x.clone()),
            };
            let grads = (y.clone() * upstream.clone()).sum().backward();
            (y.into_data(), x.grad(&grads).expect("dx").into_data())
        };
        for (which, name) in ["max", "avg counting padding", "avg"].iter().enumerate() {
            let ours = run(true, which);
            let theirs = run(false, which);
            let what = format!("{name} {shape:?} kernel {kernel} stride {stride} pad {pad} ceil {ceil_mode}");
            assert_eq!(ours.0.shape(), theirs.0.shape(), "{what}: output shape");
            assert!(rel(ours.0, theirs.0) <= 1e-6, "{what}: output");
            let e = rel(ours.1, theirs.1);
            assert!(e <= 1e-6, "{what}: dx rel {e:e}");
        }
    }

    #[test]
    fn matches_burns_pooling() {
        for ceil_mode in [false, true] {
            compare([2, 3, 9, 9], 3, 2, 0, ceil_mode); // BN-Inception's and InceptionV3's reductions
            compare([2, 3, 8, 10], 3, 2, 0, ceil_mode); // even sizes: ceil mode adds a window
            compare([2, 3, 7, 6], 3, 1, 1, ceil_mode); // the inception blocks' pool branch
            compare([1, 2, 10, 11], 3, 2, 1, ceil_mode); // ResNet's stem pool
            compare([1, 2, 7, 7], 7, 1, 0, ceil_mode); // a global pool
            compare([1, 2, 6, 9], 2, 2, 0, ceil_mode);
            compare([1, 2, 11, 5], 5, 3, 2, ceil_mode);
            compare([1, 2, 3, 3], 3, 2, 0, ceil_mode);
            // Size-keeping stride-1 pools (`flat.rs`), incl. maps smaller than the window.
            compare([2, 3, 14, 14], 3, 1, 1, ceil_mode);
            compare([1, 2, 9, 9], 5, 1, 2, ceil_mode);
            compare([1, 2, 3, 3], 5, 1, 2, ceil_mode);
            compare([1, 2, 1, 7], 3, 1, 1, ceil_mode);
            compare([1, 2, 2, 1], 3, 1, 1, ceil_mode);
            if ceil_mode {
                // A map smaller than the kernel (BN-Inception's last reduction at 32² input).
                compare([2, 3, 2, 2], 3, 2, 0, true);
                compare([1, 2, 1, 1], 3, 2, 0, true);
            }
        }
    }

    /// The whole-plane passes (`flat.rs`) give the row-wise passes' values bit for bit (same order of
    /// reduction, same divisors), NaN and infinities included.
    #[test]
    fn equals_the_row_wise_passes_bit_for_bit() {
        for (h, w, k) in [(14, 14, 3), (28, 28, 3), (5, 9, 5), (2, 3, 3), (1, 1, 3), (7, 3, 7)] {
            for reduce in
                [Reduce::Max, Reduce::Avg { count_include_pad: true }, Reduce::Avg { count_include_pad: false }]
            {
                let p = k / 2;
                let win = Window { reduce, kernel: [k, k], stride: [1, 1], padding: [p, p], ceil_mode: true };
                let (rows, cols) = (Axis::new(h, k, 1, p, true), Axis::new(w, k, 1, p, true));
                assert!(flat::applies(&rows, &cols));
                let mut x: Vec<f32> = (0..h * w).map(|i| ((i * 7919) % 23) as f32 / 3.0 - 3.5).collect();
                x[h * w / 2] = f32::NAN;
                x[0] = f32::NEG_INFINITY;
                let (mut want, mut got, mut v) = (vec![0.0; h * w], vec![0.0; h * w], vec![0.0; h * w]);
                forward_plane(&win, &rows, &cols, &x, &mut want, &mut vec![0.0; cols.padded_row()]);
                let divisor = match reduce {
                    Reduce::Avg { count_include_pad } => flat::divisors(&rows, &cols, count_include_pad),
                    Reduce::Max => Vec::new(),
                };
                flat::forward_plane(reduce, &rows, &cols, &x, &mut got, &mut v, &divisor);
                let bits =
                    |v: &[f32]| v.iter().map(|f| if f.is_nan() { u32::MAX } else { f.to_bits() }).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{h}x{w} kernel {k} {reduce:?}");
            }
        }
    }

    /// A bfloat16 map comes back bfloat16: its maximum exactly burn's, its average within
    /// bfloat16's rounding of burn's.
    #[test]
    fn bfloat16_maps_pool_in_float32() {
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 3, 9, 9], Distribution::Normal(0.0, 1.0), &device).cast(DType::BF16);
        for (k, s, p) in [(3, 2, 0), (3, 1, 1)] {
            let padding = PaddingConfig2d::Explicit(p, p, p, p);
            let max_pool = MaxPool2dConfig::new([k, k]).with_strides([s, s]).with_padding(padding.clone()).init();
            let ours = max(&max_pool, x.clone());
            assert_eq!(ours.dtype(), DType::BF16);
            ours.into_data().assert_eq(&max_pool.forward(x.clone()).into_data(), true);
            let avg_pool = AvgPool2dConfig::new([k, k]).with_strides([s, s]).with_padding(padding).init();
            let ours = avg(&avg_pool, x.clone());
            assert_eq!(ours.dtype(), DType::BF16);
            let theirs = avg_pool.forward(x.clone()).cast(DType::F32);
            let e = rel(ours.cast(DType::F32).into_data(), theirs.into_data());
            assert!(e <= 1e-2, "avg {k}x{k}/{s}: {e:e}");
        }
    }

    /// NaN wins a maximum (PyTorch's rule), and a window whose values are all below zero
    /// ignores its padding.
    #[test]
    fn nan_propagates_and_padding_never_wins() {
        let device = Device::flex();
        let pool = MaxPool2dConfig::new([3, 3])
            .with_strides([1, 1])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init();
        let x = Tensor::<4>::from_floats([[[[-3.0, -2.0, -5.0], [-4.0, f32::NAN, -1.0], [-6.0, -7.0, -8.0]]]], &device);
        let y: Vec<f32> = max(&pool, x).into_data().try_to_vec::<f32>().expect("f32");
        assert!(y.iter().all(|v| v.is_nan()), "{y:?}");
        let x = Tensor::<4>::from_floats([[[[-3.0, -2.0], [-4.0, -1.0]]]], &device);
        let y = max(&pool, x).into_data();
        y.assert_eq(&TensorData::from([[[[-1.0f32, -1.0], [-1.0, -1.0]]]]), true);
        // The same at stride 2 (the 3×3/2 path), a NaN in one window only.
        let pool = MaxPool2dConfig::new([3, 3]).with_strides([2, 2]).with_ceil_mode(true).init();
        let mut v: Vec<f32> = (0..25).map(|i| -(i as f32)).collect();
        v[2 * 5 + 4] = f32::NAN;
        let x = Tensor::<4>::from_data(TensorData::new(v, [1, 1, 5, 5]), &device);
        let y: Vec<f32> = max(&pool, x).into_data().try_to_vec::<f32>().expect("f32");
        assert!(y[0] == 0.0 && y[1].is_nan() && y[2] == -10.0 && y[3].is_nan(), "{y:?}");
    }
}
