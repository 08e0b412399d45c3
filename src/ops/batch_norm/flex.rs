//! Training-mode BatchNorm on `flex` in two passes forward and two backward, registered with
//! burn's autodiff with a hand-written backward.
//!
//! Composed from tensor ops (`BatchNorm::forward_composed`), a training BatchNorm is about
//! seven passes over the feature map forward and a dozen backward (each op's own backward);
//! fused, a ResNet-Mini + GSM training step on the CPU takes 7–8% less (docs/PERFORMANCE.md).
//! Here,
//! per channel `c` over the `n` values of every other axis, with `x̂ = (x − μ)·σ̂⁻¹`,
//! `σ̂⁻¹ = 1/√(σ² + ε)` (μ, σ² the batch mean and biased variance):
//! - forward: one pass for μ and σ² ([`batch_stats`], two reads: mean, then centred squares),
//!   one for `y = γ·x̂ + β`;
//! - backward: one pass for `Σdy` and `Σdy·(x − μ)` (the bias and weight gradients), one for
//!   `dx = γ·σ̂⁻¹·(dy − Σdy/n − x̂·Σ(dy·x̂)/n)`, the statistics' dependence on `x` included.
//!
//! Every sum runs in 8 float32 partial sums per plane (so that the adds need not wait on each
//! other), the planes' sums added in f64. The plane loops take their channel's constants as
//! arguments, so they vectorise; they are compiled for AVX2 as well, chosen at run time
//! (`avx2.rs`).
//!
//! The ReLU or ReLU6 after a BN can ride along (`clamp`: `y = min(max(z, 0), max)` with
//! `z = γ·x̂ + β`): the forward clamps as it writes, and the backward recomputes `z` from `x` and
//! lets `dy` through only where `0 < z < max` (PyTorch's ReLU and hardtanh rule) in both of its
//! passes — where burn's clamp or ReLU alone is a pass forward and a masking pass backward.
//!
//! Float32 on flex; `BatchNorm` uses the composed reference elsewhere (libtorch has its own
//! fused op, `ops/torch/mod.rs`). `GATESHIFT_FUSED_BN=0` turns it off, to compare.

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
use burn::tensor::{DType, Device, Shape, Tensor};
use rayon::prelude::*;

/// The fused ops, routed by burn to the backend a tensor lives on (with or without autodiff).
#[backend_extension(Flex, Autodiff)]
pub trait FusedBatchNorm: Backend {
    /// `(2, C)`: the mean and biased variance of `x` per channel (axis 1) over every other
    /// axis. Never differentiated.
    fn bn_batch_stats(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `(x − mean)/√(var + eps)·weight + bias` per channel, `stats` = `bn_batch_stats(x)`,
    /// then clamped to `[0, max]` if `clamp` is `Some(max)` (∞: ReLU); differentiated as
    /// training-mode BatchNorm (through the batch statistics too) and the clamp.
    fn bn_train_normalize(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        eps: f64,
        clamp: Option<f32>,
    ) -> FloatTensor<Self>;
}

/// The kernels a backend provides so that `Autodiff<B>` can differentiate the fused op.
pub trait BatchNormKernels: Backend {
    fn bn_stats(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `affine`: weight and bias.
    fn bn_forward(
        x: FloatTensor<Self>,
        affine: [FloatTensor<Self>; 2],
        stats: FloatTensor<Self>,
        eps: f64,
        clamp: Option<f32>,
    ) -> FloatTensor<Self>;
    /// `affine`: weight and bias. Returns `(dx, dweight, dbias)`.
    fn bn_backward(
        x: FloatTensor<Self>,
        affine: [FloatTensor<Self>; 2],
        stats: FloatTensor<Self>,
        eps: f64,
        clamp: Option<f32>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// Whether `BatchNorm` in training runs `x` through the fused op: float32 on flex with autodiff,
/// unless `GATESHIFT_FUSED_BN=0`.
pub fn applies<const D: usize>(x: &Tensor<D>) -> bool {
    let enabled = crate::ops::route::switches().fused_bn;
    let device = x.device();
    enabled && D >= 2 && x.dtype() == DType::F32 && device.is_autodiff() && device == Device::flex().autodiff()
}

/// [`FusedBatchNorm::bn_batch_stats`] on high-level tensors.
pub fn batch_stats<const D: usize>(x: Tensor<D>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as FusedBatchNorm>::bn_batch_stats(x.into_dispatch()))
}

/// [`FusedBatchNorm::bn_train_normalize`] on high-level tensors.
pub fn normalize<const D: usize>(
    x: Tensor<D>,
    [weight, bias]: [Tensor<1>; 2],
    stats: Tensor<2>,
    eps: f64,
    clamp: Option<f32>,
) -> Tensor<D> {
    let (x, weight, bias, stats) =
        (x.into_dispatch(), weight.into_dispatch(), bias.into_dispatch(), stats.into_dispatch());
    Tensor::from_dispatch(<Dispatch as FusedBatchNorm>::bn_train_normalize(x, weight, bias, stats, eps, clamp))
}

impl FusedBatchNorm for Flex {
    fn bn_batch_stats(x: FlexTensor) -> FlexTensor {
        Self::bn_stats(x)
    }

    fn bn_train_normalize(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        stats: FlexTensor,
        eps: f64,
        clamp: Option<f32>,
    ) -> FlexTensor {
        Self::bn_forward(x, [weight, bias], stats, eps, clamp)
    }
}

/// A contiguous float32 map seen as `(outer, C, inner)` planes, C = axis 1.
struct Planes {
    outer: usize,
    c: usize,
    inner: usize,
}

impl Planes {
    fn of(x: &FlexTensor) -> Self {
        assert!(x.dtype() == DType::F32, "fused BatchNorm is float32, got {:?}", x.dtype());
        let s = x.layout().shape();
        assert!(s.num_dims() >= 2, "BatchNorm needs a channel axis");
        Self { outer: s[0], c: s[1], inner: s.iter().skip(2).product() }
    }

    fn count(&self) -> f64 {
        (self.outer * self.inner) as f64
    }

    /// The planes of channel `c`, each `inner` values.
    fn of_channel<'a>(&self, v: &'a [f32], c: usize) -> impl Iterator<Item = &'a [f32]> {
        (0..self.outer).map(move |n| &v[(n * self.c + c) * self.inner..][..self.inner])
    }

    /// `f(channel, plane of out)` for every plane, in parallel.
    fn map(&self, out: &mut [f32], f: impl Fn(usize, usize, &mut [f32]) + Sync) {
        out.par_chunks_mut(self.inner.max(1)).enumerate().for_each(|(i, plane)| f(i % self.c, i, plane));
    }
}

/// Per channel `(μ, a, β)` with `γ·x̂ + β = a·(x − μ) + β`: centring first keeps the precision
/// of maps whose mean is large next to their spread (folding μ into the shift would cancel).
fn channel_maps(stats: &[f32], weight: &[f32], bias: &[f32], eps: f64) -> Vec<(f32, f32, f32)> {
    let c = weight.len();
    (0..c)
        .map(|k| {
            let inv_std = 1.0 / (stats[c + k] as f64 + eps).sqrt();
            (stats[k], (weight[k] as f64 * inv_std) as f32, bias[k])
        })
        .collect()
}

/// The clamp of [`FusedBatchNorm::bn_train_normalize`] on `z`: NaN stays NaN.
#[inline(always)]
fn clamped(z: f32, max: f32) -> f32 {
    if z < 0.0 {
        0.0
    } else if z > max {
        max
    } else {
        z
    }
}

/// Whether the clamp lets the gradient at `z` through: inside `(0, max)`.
#[inline(always)]
fn passes(z: f32, max: f32) -> bool {
    z > 0.0 && z < max
}

fn data(x: FlexTensor) -> FlexTensor {
    x.to_contiguous()
}

fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous float32 tensor")
}

fn check_channels(t: &FlexTensor, shape: &[usize], what: &str) {
    assert!(t.dtype() == DType::F32, "fused BatchNorm: {what} is {:?}, not float32", t.dtype());
    assert_eq!(t.layout().shape().as_slice(), shape, "fused BatchNorm: {what} shape");
}

impl BatchNormKernels for Flex {
    fn bn_stats(x: FlexTensor) -> FlexTensor {
        let x = data(x);
        let (p, v) = (Planes::of(&x), slice(&x));
        let n = p.count();
        let per_channel: Vec<(f32, f32)> = (0..p.c)
            .into_par_iter()
            .map(|c| {
                let sum: f64 = p.of_channel(v, c).map(|pl| plane_stats(pl, None) as f64).sum();
                let mean = (sum / n) as f32;
                let sq: f64 = p.of_channel(v, c).map(|pl| plane_stats(pl, Some(mean)) as f64).sum();
                (mean, (sq / n) as f32)
            })
            .collect();
        let (mean, var): (Vec<f32>, Vec<f32>) = per_channel.into_iter().unzip();
        flex_alloc::from_vec([mean, var].concat(), Shape::new([2, p.c]))
    }

    fn bn_forward(
        x: FlexTensor,
        [weight, bias]: [FlexTensor; 2],
        stats: FlexTensor,
        eps: f64,
        clamp: Option<f32>,
    ) -> FlexTensor {
        let x = data(x);
        let p = Planes::of(&x);
        let (weight, bias, stats) = (data(weight), data(bias), data(stats));
        check_channels(&weight, &[p.c], "weight");
        check_channels(&bias, &[p.c], "bias");
        check_channels(&stats, &[2, p.c], "statistics");
        let maps = channel_maps(slice(&stats), slice(&weight), slice(&bias), eps);
        let mut y = flex_alloc::zeros(x.layout().shape().clone());
        let v = slice(&x);
        p.map(y.storage_mut::<f32>(), |c, i, out| {
            let (mean, a, b) = maps[c];
            plane_forward(&v[i * p.inner..][..p.inner], out, [mean, a, b], clamp);
        });
        y
    }

    fn bn_backward(
        x: FlexTensor,
        [weight, bias]: [FlexTensor; 2],
        stats: FlexTensor,
        eps: f64,
        clamp: Option<f32>,
        dy: FlexTensor,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (x, dy, weight, bias, stats) = (data(x), data(dy), data(weight), data(bias), data(stats));
        let p = Planes::of(&x);
        let (s, w) = (slice(&stats), slice(&weight));
        let mut dx = flex_alloc::zeros(x.layout().shape().clone());
        let (v, g, out) = (slice(&x), slice(&dy), dx.storage_mut::<f32>());
        // The clamp's gradient mask, from z recomputed as the forward computed it.
        let masks: Option<Vec<Mask>> = clamp.map(|max| {
            let maps = channel_maps(s, w, slice(&bias), eps);
            maps.into_iter().map(|(mean, a, b)| Mask { mean, a, b, max }).collect()
        });
        let sums = backward_planes(&p, [v, g], s, w, eps, out, masks.as_deref());
        let dweight: Vec<f32> = (0..p.c).map(|c| (sums[c].1 / (s[p.c + c] as f64 + eps).sqrt()) as f32).collect();
        let dbias: Vec<f32> = sums.iter().map(|&(d, _)| d as f32).collect();
        (dx, flex_alloc::from_vec(dweight, Shape::new([p.c])), flex_alloc::from_vec(dbias, Shape::new([p.c])))
    }
}

/// The clamp's gradient mask on one channel: `dy` passes where `0 < a·(x − μ) + β < max`.
#[derive(Clone, Copy)]
struct Mask {
    mean: f32,
    a: f32,
    b: f32,
    max: f32,
}

impl Mask {
    #[inline(always)]
    fn apply(self, x: f32, d: f32) -> f32 {
        if passes(self.a * (x - self.mean) + self.b, self.max) { d } else { 0.0 }
    }
}

/// The backward's two passes with `dy` masked by the channel's clamp (`masks`, one per
/// channel) or as it is: `dx` into `out`; returns `(Σdy, Σdy·(x − μ))` per channel, summed
/// in f64 across planes.
fn backward_planes(
    p: &Planes,
    [v, g]: [&[f32]; 2],
    s: &[f32],
    w: &[f32],
    eps: f64,
    out: &mut [f32],
    masks: Option<&[Mask]>,
) -> Vec<(f64, f64)> {
    let n = p.count();
    let mask = |c: usize| masks.map(|m| m[c]);
    let sums: Vec<(f64, f64)> = (0..p.c)
        .into_par_iter()
        .map(|c| {
            p.of_channel(v, c).zip(p.of_channel(g, c)).fold((0.0, 0.0), |(sd, sdx), (xp, gp)| {
                let (a, b) = plane_sums(xp, gp, s[c], mask(c));
                (sd + a as f64, sdx + b as f64)
            })
        })
        .collect();
    // dx = k1·dy + k2·(x − μ) + k3 per channel.
    let coefficients: Vec<[f32; 3]> = (0..p.c)
        .map(|c| {
            let inv_std = 1.0 / (s[p.c + c] as f64 + eps).sqrt();
            let (sum_dy, sum_dy_xc) = sums[c];
            let k1 = w[c] as f64 * inv_std;
            let k2 = -(w[c] as f64) * inv_std.powi(3) * sum_dy_xc / n;
            [k1 as f32, k2 as f32, (-k1 * sum_dy / n) as f32]
        })
        .collect();
    p.map(out, |c, i, out| {
        let (xp, gp) = (&v[i * p.inner..][..p.inner], &g[i * p.inner..][..p.inner]);
        plane_dx(xp, gp, out, coefficients[c], s[c], mask(c));
    });
    sums
}

/// Independent partial sums per plane: the adds of a sum in order wait on each other, 8
/// of them fill the vector registers (AVX2: one 8-wide add per step).
const LANES: usize = 8;

/// `(Σ f(x, y), Σ g(x, y))` over two equally long slices, in [`LANES`] partial sums.
#[inline(always)]
fn lane_sums(xs: &[f32], ys: &[f32], f: impl Fn(f32, f32) -> [f32; 2]) -> (f32, f32) {
    let (mut a, mut b) = ([0f32; LANES], [0f32; LANES]);
    let (xc, yc) = (xs.chunks_exact(LANES), ys.chunks_exact(LANES));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (x, y) in xc.zip(yc) {
        for i in 0..LANES {
            let [u, v] = f(x[i], y[i]);
            a[i] += u;
            b[i] += v;
        }
    }
    for (i, (&x, &y)) in xr.iter().zip(yr).enumerate() {
        let [u, v] = f(x, y);
        a[i] += u;
        b[i] += v;
    }
    (a.iter().sum(), b.iter().sum())
}

/// `(Σdy, Σdy·(x − μ))` over one plane, `dy` masked.
#[inline(always)]
fn sums_body(xs: &[f32], gs: &[f32], mean: f32, mask: Option<Mask>) -> (f32, f32) {
    match mask {
        None => lane_sums(xs, gs, |x, d| [d, d * (x - mean)]),
        Some(m) => lane_sums(xs, gs, |x, d| {
            let d = m.apply(x, d);
            [d, d * (x - mean)]
        }),
    }
}

/// `Σx` over one plane, or `Σ(x − μ)²` given `mean` = μ.
#[inline(always)]
fn stats_body(xs: &[f32], mean: Option<f32>) -> f32 {
    match mean {
        None => lane_sums(xs, xs, |x, _| [x, 0.0]).0,
        Some(m) => lane_sums(xs, xs, |x, _| [(x - m) * (x - m), 0.0]).0,
    }
}

/// `y = a·(x − μ) + β` over one plane, clamped if `clamp` is given.
#[inline(always)]
fn forward_body(xs: &[f32], out: &mut [f32], [mean, a, b]: [f32; 3], clamp: Option<f32>) {
    let pairs = out.iter_mut().zip(xs);
    match clamp {
        None => pairs.for_each(|(o, &x)| *o = a * (x - mean) + b),
        Some(max) => pairs.for_each(|(o, &x)| *o = clamped(a * (x - mean) + b, max)),
    }
}

with_avx2!(plane_forward, forward_body, (xs: &[f32], out: &mut [f32], map: [f32; 3], clamp: Option<f32>));
with_avx2!(plane_stats, stats_body, (xs: &[f32], mean: Option<f32>) -> f32);

/// `dx = k1·dy + k2·(x − μ) + k3` over one plane, `dy` masked. The per-channel constants are
/// arguments, so the loop has no lookups and vectorises.
#[inline(always)]
fn dx_body(xs: &[f32], gs: &[f32], out: &mut [f32], [k1, k2, k3]: [f32; 3], mean: f32, mask: Option<Mask>) {
    let triples = out.iter_mut().zip(xs).zip(gs);
    match mask {
        None => triples.for_each(|((o, &x), &d)| *o = k1 * d + k2 * (x - mean) + k3),
        Some(m) => triples.for_each(|((o, &x), &d)| *o = k1 * m.apply(x, d) + k2 * (x - mean) + k3),
    }
}

with_avx2!(plane_sums, sums_body, (xs: &[f32], gs: &[f32], mean: f32, mask: Option<Mask>) -> (f32, f32));
with_avx2!(plane_dx, dx_body, (xs: &[f32], gs: &[f32], out: &mut [f32], k: [f32; 3], mean: f32, mask: Option<Mask>));

#[derive(Debug)]
struct NormalizeBackward;

impl<B: BatchNormKernels> Backward<B, 4> for NormalizeBackward {
    /// Input, weight and bias, statistics (kept alive, not copied), epsilon and clamp.
    type State = (FloatTensor<B>, [FloatTensor<B>; 2], FloatTensor<B>, f64, Option<f32>);

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, affine, stats, eps, clamp) = ops.state;
        let dy = grads.consume::<B>(&ops.node);
        let (dx, dw, db) = B::bn_backward(x, affine, stats, eps, clamp, dy);
        let [px, pw, pb, _] = ops.parents.map(|p| p.map(|n| n.id));
        for (id, grad) in [(px, dx), (pw, dw), (pb, db)] {
            if let Some(id) = id {
                grads.register::<B>(id, grad);
            }
        }
    }
}

impl<B: BatchNormKernels, C: CheckpointStrategy> FusedBatchNorm for Autodiff<B, C> {
    fn bn_batch_stats(x: FloatTensor<Self>) -> FloatTensor<Self> {
        // A new leaf that needs no gradient: the statistics are constants to autodiff (the
        // normalisation's backward accounts for their dependence on `x`).
        FloatTensor::<Self>::new(B::bn_stats(x.into_primitive()))
    }

    fn bn_train_normalize(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        eps: f64,
        clamp: Option<f32>,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), weight.node(), bias.node(), stats.node()];
        let prep = NormalizeBackward.prepare::<C>(nodes).compute_bound().stateful();
        let (x, weight, bias, stats) =
            (x.into_primitive(), weight.into_primitive(), bias.into_primitive(), stats.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => {
                let y = B::bn_forward(x.clone(), [weight.clone(), bias.clone()], stats.clone(), eps, clamp);
                prep.finish((x, [weight, bias], stats, eps, clamp), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::bn_forward(x, [weight, bias], stats, eps, clamp)),
        }
    }
}

#[cfg(test)]
mod tests;
