//! GSF's fusion on `flex`, in the frames' layout. For image `n` (frame t of its clip) and
//! gated channel `c` of half `k` (`C/2` channels each; half 0 reads frame t+1, half 1 frame
//! t−1, zero outside the clip), with `g` the tanh gates and `w` the fusion weights:
//!
//! `z[n, c] = w[n, c] · x[n', c] · g[n', k] + (1 − w[n, c]) · x[n, c] · (1 − g[n, k])`
//!
//! written at `c`'s re-interleaved place (within a half, (2, C/4) → (C/4, 2)). The composition
//! multiplies, subtracts, shifts, weights, adds and re-interleaves op by op on a transposed
//! copy; this reads `x` and `g` once. Backward, with `dz` read at the same places:
//! `dw = Σ dz·(x[n']·g[n'] − x·(1 − g))`, `dx[n] = g[n]·w[m]·dz[m] + (1 − g[n])·(1 − w[n])·dz[n]`
//! (m the frame that reads n), `dg[n, k] = Σ_{c ∈ k} x[n, c]·(w[m]·dz[m] − (1 − w[n])·dz[n])`.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::{Flex, FlexTensor};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::tensor::{DType, Shape, Tensor};
use rayon::prelude::*;

use crate::ops::flex_alloc;

/// The clip length: images `n` and `n ± 1` are neighbours within a clip of `segments` frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fuse {
    pub segments: usize,
}

/// Whether the fused op takes `x`: float32 on flex, unless `GATESHIFT_FUSED_GSF=0`.
pub fn applies(x: &Tensor<4>) -> bool {
    crate::ops::route::switches().fused_gsf && x.dtype() == DType::F32 && crate::backend::is_flex(&x.device())
}

/// The op, routed by burn to the backend a tensor lives on (with or without autodiff).
#[backend_extension(Flex, Autodiff)]
pub trait GsfFuse: Backend {
    /// `x` (B·T, C, H, W) the gated channels, `gate` (B·T, 2, H, W) tanh gates, `weights`
    /// (B·T, C) fusion weights → `z` (B·T, C, H, W), re-interleaved.
    fn gsf_fuse(
        x: FloatTensor<Self>,
        gate: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        f: Fuse,
    ) -> FloatTensor<Self>;
}

/// The fused fusion on high-level tensors (see [`applies`]).
pub fn fuse(x: Tensor<4>, gate: Tensor<4>, weights: Tensor<2>, f: Fuse) -> Tensor<4> {
    crate::ops::profile::timed_map(
        || "gsf fusion".into(),
        x.dims(),
        || {
            let (x, g, w) = (x.into_dispatch(), gate.into_dispatch(), weights.into_dispatch());
            Tensor::from_dispatch(<Dispatch as GsfFuse>::gsf_fuse(x, g, w, f))
        },
    )
}

/// Sizes and neighbours of one call.
#[derive(Clone, Copy)]
struct Plan {
    n: usize,
    c: usize,
    plane: usize,
    t: usize,
}

impl Plan {
    fn new(x: &FlexTensor, gate: &FlexTensor, weights: &FlexTensor, f: Fuse) -> Self {
        let s = x.layout().shape();
        assert_eq!(s.num_dims(), 4, "GSF: the gated map must be 4-D, got {s:?}");
        let (n, c, plane) = (s[0], s[1], s[2] * s[3]);
        assert!(f.segments > 0 && n.is_multiple_of(f.segments), "GSF: {n} frames, {} segments", f.segments);
        assert!(c.is_multiple_of(4), "GSF: {c} gated channels is not a multiple of 4");
        assert_eq!(gate.layout().shape().num_elements(), n * 2 * plane, "GSF: gate shape");
        assert_eq!(weights.layout().shape().num_elements(), n * c, "GSF: fusion weights shape");
        Self { n, c, plane, t: f.segments }
    }

    /// The image channel `c` of image `n` reads its shifted part from, if inside the clip.
    fn source(&self, n: usize, c: usize) -> Option<usize> {
        let t = n % self.t;
        if c < self.c / 2 { (t + 1 < self.t).then_some(n + 1) } else { (t > 0).then(|| n - 1) }
    }

    /// The image that reads channel `c` of image `n` as its shifted part, if any.
    fn reader(&self, n: usize, c: usize) -> Option<usize> {
        let t = n % self.t;
        if c < self.c / 2 { (t > 0).then(|| n - 1) } else { (t + 1 < self.t).then_some(n + 1) }
    }

    /// Where channel `c` is written: within its half, (2, C/4) → (C/4, 2).
    fn out_channel(&self, c: usize) -> usize {
        let (half, quarter) = (self.c / 2, self.c / 4);
        let (k, j) = (c / half, c % half);
        k * half + (j % quarter) * 2 + j / quarter
    }

    fn x<'a>(&self, v: &'a [f32], n: usize, c: usize) -> &'a [f32] {
        &v[(n * self.c + c) * self.plane..][..self.plane]
    }

    fn g<'a>(&self, v: &'a [f32], n: usize, c: usize) -> &'a [f32] {
        let k = c / (self.c / 2);
        &v[(n * 2 + k) * self.plane..][..self.plane]
    }

    fn dz<'a>(&self, v: &'a [f32], n: usize, c: usize) -> &'a [f32] {
        self.x(v, n, self.out_channel(c))
    }
}

fn f32s(t: FlexTensor) -> FlexTensor {
    assert!(t.dtype() == DType::F32, "GSF: the fused fusion is float32, got {:?}", t.dtype());
    t.to_contiguous()
}

fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous float32 tensor")
}

fn forward(x: FlexTensor, gate: FlexTensor, weights: FlexTensor, f: Fuse) -> FlexTensor {
    let (x, gate, weights) = (f32s(x), f32s(gate), f32s(weights));
    let p = Plan::new(&x, &gate, &weights, f);
    let mut z = flex_alloc::zeros(x.layout().shape().clone());
    if p.n * p.c * p.plane == 0 {
        return z;
    }
    let (xv, gv, wv) = (values(&x), values(&gate), values(&weights));
    // Output planes in order; each finds the channel written there.
    let inverse: Vec<usize> = {
        let mut inv = vec![0; p.c];
        (0..p.c).for_each(|c| inv[p.out_channel(c)] = c);
        inv
    };
    z.storage_mut::<f32>().par_chunks_mut(p.plane).enumerate().for_each(|(i, out)| {
        let (n, c) = (i / p.c, inverse[i % p.c]);
        let w = wv[n * p.c + c];
        for ((o, &v), &g) in out.iter_mut().zip(p.x(xv, n, c)).zip(p.g(gv, n, c)) {
            *o = (1.0 - w) * v * (1.0 - g);
        }
        if let Some(s) = p.source(n, c) {
            for ((o, &v), &g) in out.iter_mut().zip(p.x(xv, s, c)).zip(p.g(gv, s, c)) {
                *o += w * v * g;
            }
        }
    });
    z
}

/// `[dx, dgate, dweights]`, each where `wanted`.
fn backward(
    x: &FlexTensor,
    gate: &FlexTensor,
    weights: &FlexTensor,
    dz: FlexTensor,
    f: Fuse,
    wanted: [bool; 3],
) -> [Option<FlexTensor>; 3] {
    let p = Plan::new(x, gate, weights, f);
    let dz = f32s(dz);
    let (xv, gv, wv, dzv) = (values(x), values(gate), values(weights), values(&dz));
    let shape = x.layout().shape().clone();
    // The shifted part's and the residual part's gradients of channel c at image n.
    let shifted = |n: usize, c: usize| p.reader(n, c).map(|m| (wv[m * p.c + c], p.dz(dzv, m, c)));
    let residual = |n: usize, c: usize| (1.0 - wv[n * p.c + c], p.dz(dzv, n, c));
    let dx = wanted[0].then(|| {
        let mut dx = flex_alloc::zeros(shape.clone());
        dx.storage_mut::<f32>().par_chunks_mut(p.plane.max(1)).enumerate().for_each(|(i, out)| {
            let (n, c) = (i / p.c, i % p.c);
            let g = p.g(gv, n, c);
            let (r, dr) = residual(n, c);
            for ((o, &gi), &d) in out.iter_mut().zip(g).zip(dr) {
                *o = (1.0 - gi) * r * d;
            }
            if let Some((w, ds)) = shifted(n, c) {
                for ((o, &gi), &d) in out.iter_mut().zip(g).zip(ds) {
                    *o += gi * w * d;
                }
            }
        });
        dx
    });
    let dgate = wanted[1].then(|| {
        let mut dg = flex_alloc::zeros(Shape::new([p.n, 2, shape[2], shape[3]]));
        let half = p.c / 2;
        dg.storage_mut::<f32>().par_chunks_mut(p.plane.max(1)).enumerate().for_each(|(i, out)| {
            let (n, k) = (i / 2, i % 2);
            for c in k * half..(k + 1) * half {
                let xs = p.x(xv, n, c);
                let (r, dr) = residual(n, c);
                for ((o, &v), &d) in out.iter_mut().zip(xs).zip(dr) {
                    *o -= v * r * d;
                }
                if let Some((w, ds)) = shifted(n, c) {
                    for ((o, &v), &d) in out.iter_mut().zip(xs).zip(ds) {
                        *o += v * w * d;
                    }
                }
            }
        });
        dg
    });
    let dweights = wanted[2].then(|| {
        let sums: Vec<f32> = (0..p.n * p.c)
            .into_par_iter()
            .map(|i| {
                let (n, c) = (i / p.c, i % p.c);
                let d = p.dz(dzv, n, c);
                let (x0, g0) = (p.x(xv, n, c), p.g(gv, n, c));
                let mut sum: f64 =
                    -d.iter().zip(x0).zip(g0).map(|((&d, &v), &g)| (d * v * (1.0 - g)) as f64).sum::<f64>();
                if let Some(s) = p.source(n, c) {
                    let (xs, gs) = (p.x(xv, s, c), p.g(gv, s, c));
                    sum += d.iter().zip(xs).zip(gs).map(|((&d, &v), &g)| (d * v * g) as f64).sum::<f64>();
                }
                sum as f32
            })
            .collect();
        flex_alloc::from_vec(sums, weights.layout().shape().clone())
    });
    [dx, dgate, dweights]
}

/// The kernels a backend provides so that `Autodiff<B>` can differentiate the op.
pub trait GsfFuseKernels: Backend {
    fn fuse_forward(
        x: FloatTensor<Self>,
        gate: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        f: Fuse,
    ) -> FloatTensor<Self>;
    fn fuse_backward(
        x: FloatTensor<Self>,
        gate: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        dz: FloatTensor<Self>,
        f: Fuse,
        wanted: [bool; 3],
    ) -> [Option<FloatTensor<Self>>; 3];
}

impl GsfFuseKernels for Flex {
    fn fuse_forward(x: FlexTensor, gate: FlexTensor, weights: FlexTensor, f: Fuse) -> FlexTensor {
        forward(x, gate, weights, f)
    }

    fn fuse_backward(
        x: FlexTensor,
        gate: FlexTensor,
        weights: FlexTensor,
        dz: FlexTensor,
        f: Fuse,
        wanted: [bool; 3],
    ) -> [Option<FlexTensor>; 3] {
        let (x, gate, weights) = (f32s(x), f32s(gate), f32s(weights));
        backward(&x, &gate, &weights, dz, f, wanted)
    }
}

impl GsfFuse for Flex {
    fn gsf_fuse(x: FlexTensor, gate: FlexTensor, weights: FlexTensor, f: Fuse) -> FlexTensor {
        forward(x, gate, weights, f)
    }
}

#[derive(Debug)]
struct FuseBackward;

impl<B: GsfFuseKernels> Backward<B, 3> for FuseBackward {
    /// The three inputs (kept alive, not copied) and the clip length.
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, Fuse);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, gate, weights, f) = ops.state;
        let dz = grads.consume::<B>(&ops.node);
        let ids = ops.parents.map(|p| p.map(|n| n.id));
        let computed = B::fuse_backward(x, gate, weights, dz, f, ids.map(|id| id.is_some()));
        crate::ops::autodiff::register::<B, 3>(grads, ids, computed);
    }
}

impl<B: GsfFuseKernels, C: CheckpointStrategy> GsfFuse for Autodiff<B, C> {
    fn gsf_fuse(
        x: FloatTensor<Self>,
        gate: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        f: Fuse,
    ) -> FloatTensor<Self> {
        let prep = FuseBackward.prepare::<C>([x.node(), gate.node(), weights.node()]).compute_bound().stateful();
        let (x, gate, weights) = (x.into_primitive(), gate.into_primitive(), weights.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => {
                let z = B::fuse_forward(x.clone(), gate.clone(), weights.clone(), f);
                prep.finish((x, gate, weights, f), z)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fuse_forward(x, gate, weights, f)),
        }
    }
}
