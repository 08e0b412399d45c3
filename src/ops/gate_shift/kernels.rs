//! CPU kernels of the fused GSM's gated shift on plain float32 slices, in the backbone's own
//! `(B·T, C, H, W)` layout — no transpose to (B, C, T, H, W) is ever made: tanh, shift,
//! residual and re-interleave, forward and backward, the forward also on channels-last feature
//! maps (memory order B·T, H, W, C: libtorch's CPU inference, `ops::torch::channels_last`).
//! The gate convolution's CPU kernels are GEMMs (`ops/gate_shift/gate_gemm.rs`).
//!
//! Every kernel is parallel over output planes or frames, so tasks never share an output;
//! on rayon's threads, or on another pool the caller names ([`on_pool`]: libtorch's).

use std::cell::Cell;
use std::ops::Range;

use rayon::prelude::*;

/// A parallel-for over task indices `[0, n)`: calls `body` on disjoint ranges covering them
/// and returns when all are done.
pub type ParallelFor = fn(n: usize, body: &(dyn Fn(Range<usize>) + Sync));

thread_local! {
    /// The pool of the kernels called on this thread; `None`: rayon's.
    static POOL: Cell<Option<ParallelFor>> = const { Cell::new(None) };
}

/// Runs `f` with the kernels it calls on this thread parallelised by `pool`. With libtorch's
/// tensors that is libtorch's own intra-op pool: its OpenMP threads spin-wait after each
/// libtorch op, and rayon's threads would fight them for the same cores.
pub fn on_pool<R>(pool: ParallelFor, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<ParallelFor>);
    impl Drop for Restore {
        fn drop(&mut self) {
            POOL.set(self.0);
        }
    }
    let _restore = Restore(POOL.replace(Some(pool)));
    f()
}

/// A pointer the tasks of one parallel-for share; each writes only its own chunk.
struct SharedOut(*mut f32);
// SAFETY: `for_each_chunk` hands every task a disjoint chunk of the buffer behind it.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    fn get(&self) -> *mut f32 {
        self.0
    }
}

/// `f(n, chunk)` for each `len`-value chunk of `out` (the last may be shorter), in parallel
/// on this thread's pool.
pub(super) fn for_each_chunk(out: &mut [f32], len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let Some(pool) = POOL.get() else {
        out.par_chunks_mut(len).enumerate().for_each(|(n, chunk)| f(n, chunk));
        return;
    };
    let (total, base) = (out.len(), SharedOut(out.as_mut_ptr()));
    pool(total.div_ceil(len), &|range: Range<usize>| {
        for n in range {
            let start = n * len;
            // SAFETY: the pool visits each chunk index once; chunks are disjoint parts of
            // `out`, which is borrowed mutably for the whole call.
            let chunk = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), len.min(total - start)) };
            f(n, chunk);
        }
    });
}

/// Sizes of one call: clips `b`, segments `t`, channels `c`, plane `h`×`w`.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub b: usize,
    pub t: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Dims {
    /// The sizes of a `(B·T, C, H, W)` feature map cut into `segments`, checked as every
    /// backend's fused kernels need them: 4-D, whole clips, channels a multiple of 4 (the
    /// per-half re-interleave).
    pub fn of_feature_map(shape: &[usize], segments: usize) -> Self {
        assert!(shape.len() == 4, "fused GSM: feature map must be 4-D, got {shape:?}");
        let (bt, c) = (shape[0], shape[1]);
        assert!(segments > 0 && bt.is_multiple_of(segments), "fused GSM: {bt} frames, {segments} segments");
        assert!(c.is_multiple_of(4), "fused GSM: {c} channels is not a multiple of 4");
        Dims { b: bt / segments, t: segments, c, h: shape[2], w: shape[3] }
    }

    pub(super) fn hw(&self) -> usize {
        self.h * self.w
    }

    /// Offset of plane (clip, frame, channel) in a `(B·T, C, H, W)` tensor.
    fn frame_plane(&self, b: usize, t: usize, c: usize) -> usize {
        ((b * self.t + t) * self.c + c) * self.hw()
    }

    /// Offset of the channel vector of position `p` (= y·W + x) of (clip, frame) in a
    /// channels-last `(B·T, C, H, W)` tensor (memory order B·T, H, W, C).
    fn position(&self, b: usize, t: usize, p: usize) -> usize {
        ((b * self.t + t) * self.hw() + p) * self.c
    }

    /// Offset of plane (clip, gate, frame) in a `(B, 2, T, H, W)` tensor.
    fn gate_plane(&self, b: usize, k: usize, t: usize) -> usize {
        ((b * 2 + k) * self.t + t) * self.hw()
    }

    /// Output channel of input channel `c`: the per-half (2, C/4) → (C/4, 2) interleave.
    fn interleaved(&self, c: usize) -> usize {
        let (half, quarter) = (self.c / 2, self.c / 4);
        let (k, j) = (c / half, c % half);
        k * half + (j % quarter) * 2 + j / quarter
    }

    /// The frame half `k` reads from `t`: forward, half 1 takes t+1 and half 2 t−1; backward
    /// (`forward == false`) the opposite side. `None` outside the clip (zero padding).
    fn neighbour(&self, k: usize, t: usize, forward: bool) -> Option<usize> {
        if (k == 0) == forward { (t + 1 < self.t).then_some(t + 1) } else { t.checked_sub(1) }
    }
}

/// `tanh` of every gate logit (the gate `g`), computed once per call.
fn gates(logits: &[f32]) -> Vec<f32> {
    logits.iter().map(|v| v.tanh()).collect()
}

/// Gated shift: `y` (B·T, C, H, W) from `x` (same) and the gate logits (B, 2, T, H, W),
/// one output frame per task; then `post` on each output plane while it is in cache.
pub fn shift_forward(d: Dims, x: &[f32], logits: &[f32], post: Option<&Affine>, y: &mut [f32]) {
    let g = &gates(logits);
    let (hw, half) = (d.hw(), d.c / 2);
    for_each_chunk(y, d.c * hw, |n, out| {
        let (b, t) = (n / d.t, n % d.t);
        for c in 0..d.c {
            let k = c / half;
            let (xs, gs) = (&x[d.frame_plane(b, t, c)..][..hw], &g[d.gate_plane(b, k, t)..][..hw]);
            let o = &mut out[d.interleaved(c) * hw..][..hw];
            match d.neighbour(k, t, true) {
                Some(tn) => {
                    let (xn, gn) = (&x[d.frame_plane(b, tn, c)..][..hw], &g[d.gate_plane(b, k, tn)..][..hw]);
                    for p in 0..hw {
                        o[p] = gn[p] * xn[p] + (xs[p] - gs[p] * xs[p]);
                    }
                }
                None => {
                    for p in 0..hw {
                        o[p] = xs[p] - gs[p] * xs[p];
                    }
                }
            }
            if let Some(a) = post {
                a.plane(d.interleaved(c), o);
            }
        }
    });
}

/// Gated shift on channels-last `x`, written channels-last into `y`: the values of
/// [`shift_forward`], one row of positions (clip, frame, y) per task. Within a half, input
/// channel q·C/4 + i goes to output channel 2i + q (the re-interleave). Then `post` on each
/// position's output vector.
pub fn shift_forward_nhwc(d: Dims, x: &[f32], logits: &[f32], post: Option<&Affine>, y: &mut [f32]) {
    let g = &gates(logits);
    let (half, quarter) = (d.c / 2, d.c / 4);
    for_each_chunk(y, d.w * d.c, |n, out| {
        let (b, t, row) = (n / (d.t * d.h), (n / d.h) % d.t, n % d.h);
        for (col, o) in out.chunks_exact_mut(d.c).enumerate() {
            let p = row * d.w + col;
            let xs = &x[d.position(b, t, p)..][..d.c];
            for k in 0..2 {
                let gs = g[d.gate_plane(b, k, t) + p];
                let next = d
                    .neighbour(k, t, true)
                    .map(|tn| (g[d.gate_plane(b, k, tn) + p], &x[d.position(b, tn, p)..][..d.c]));
                let oh = &mut o[k * half..][..half];
                for q in 0..2 {
                    let c0 = k * half + q * quarter;
                    let src = &xs[c0..][..quarter];
                    match next {
                        Some((gn, xn)) => {
                            for (i, (&v, &vn)) in src.iter().zip(&xn[c0..][..quarter]).enumerate() {
                                oh[2 * i + q] = gn * vn + (v - gs * v);
                            }
                        }
                        None => {
                            for (i, &v) in src.iter().enumerate() {
                                oh[2 * i + q] = v - gs * v;
                            }
                        }
                    }
                }
            }
            if let Some(a) = post {
                a.vector(o);
            }
        }
    });
}

/// Gated shift backward: `dx` from `dy`, and the gradient of the gate logits into `da`. Each
/// frame's task also sums its two gate gradients, scattered into `da` afterwards.
pub fn shift_backward(d: Dims, x: &[f32], logits: &[f32], dy: &[f32], dx: &mut [f32], da: &mut [f32]) {
    let g = &gates(logits);
    let (hw, half) = (d.hw(), d.c / 2);
    let grad_out = |b: usize, t: usize, c: usize| &dy[d.frame_plane(b, t, d.interleaved(c))..][..hw];
    let dg: Vec<Vec<f32>> = dx
        .par_chunks_mut(d.c * hw)
        .enumerate()
        .map(|(n, dxf)| {
            let (b, t) = (n / d.t, n % d.t);
            let mut dg = vec![0f32; 2 * hw];
            for c in 0..d.c {
                let k = c / half;
                let (dz, xs) = (grad_out(b, t, c), &x[d.frame_plane(b, t, c)..][..hw]);
                let gs = &g[d.gate_plane(b, k, t)..][..hw];
                let o = &mut dxf[c * hw..][..hw];
                let acc = &mut dg[k * hw..][..hw];
                match d.neighbour(k, t, false) {
                    Some(tp) => {
                        let dzs = grad_out(b, tp, c);
                        for p in 0..hw {
                            o[p] = (dz[p] - gs[p] * dz[p]) + gs[p] * dzs[p];
                            acc[p] += xs[p] * (dzs[p] - dz[p]);
                        }
                    }
                    None => {
                        for p in 0..hw {
                            o[p] = dz[p] - gs[p] * dz[p];
                            acc[p] -= xs[p] * dz[p];
                        }
                    }
                }
            }
            dg
        })
        .collect();
    for (n, dg) in dg.iter().enumerate() {
        let (b, t) = (n / d.t, n % d.t);
        for k in 0..2 {
            let row = d.gate_plane(b, k, t);
            for p in 0..hw {
                let gv = g[row + p];
                da[row + p] = dg[k * hw + p] * (1.0 - gv * gv);
            }
        }
    }
}

/// An inference BatchNorm in affine form followed by its activation, per channel `c`:
/// `min(max(scale[c]·v + shift[c], 0), max)` — ReLU with `max` = ∞, ReLU6 with 6.
#[derive(Clone, Copy, Debug)]
pub struct Affine<'a> {
    pub scale: &'a [f32],
    pub shift: &'a [f32],
    pub max: f32,
}

impl Affine<'_> {
    /// Applies channel `c`'s map to a plane of its values.
    pub(crate) fn plane(&self, c: usize, values: &mut [f32]) {
        let (s, b) = (self.scale[c], self.shift[c]);
        for v in values {
            *v = (*v * s + b).max(0.0).min(self.max);
        }
    }

    /// Applies every channel's map to one position's channel vector.
    pub(crate) fn vector(&self, values: &mut [f32]) {
        for ((v, &s), &b) in values.iter_mut().zip(self.scale).zip(self.shift) {
            *v = (*v * s + b).max(0.0).min(self.max);
        }
    }
}

/// `out = a(x)` over a `(B·T, C, H, W)` map in one pass, in `x`'s memory order
/// (`channels_last`: B·T, H, W, C).
pub fn affine_act(d: Dims, x: &[f32], a: &Affine, channels_last: bool, out: &mut [f32]) {
    let hw = d.hw();
    if channels_last {
        for_each_chunk(out, d.w * d.c, |n, row| {
            row.copy_from_slice(&x[n * d.w * d.c..][..row.len()]);
            for v in row.chunks_exact_mut(d.c) {
                a.vector(v);
            }
        });
    } else {
        for_each_chunk(out, hw, |n, plane| {
            plane.copy_from_slice(&x[n * hw..][..hw]);
            a.plane(n % d.c, plane);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gate_shift::gate_gemm::{self, Layout};

    /// Deterministic pseudo-random values in [-1, 1).
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// (B·T, C, H, W) in NCHW memory order → NHWC memory order.
    fn to_nhwc(d: Dims, v: &[f32]) -> Vec<f32> {
        let (n, hw) = (d.b * d.t, d.hw());
        let mut out = vec![0f32; v.len()];
        for f in 0..n {
            for c in 0..d.c {
                for p in 0..hw {
                    out[(f * hw + p) * d.c + c] = v[(f * d.c + c) * hw + p];
                }
            }
        }
        out
    }

    /// The channels-last shift gives the NCHW one's values exactly, at sizes with and without
    /// a vector tail.
    #[test]
    fn channels_last_shift_matches() {
        for d in [Dims { b: 2, t: 4, c: 12, h: 5, w: 3 }, Dims { b: 1, t: 8, c: 40, h: 4, w: 6 }] {
            let n = d.b * d.t * d.c * d.hw();
            let (x, logits) = (values(n, 1), values(d.b * 2 * d.t * d.hw(), 2));
            let (mut y, mut y_nhwc) = (vec![0f32; n], vec![0f32; n]);
            shift_forward(d, &x, &logits, None, &mut y);
            shift_forward_nhwc(d, &to_nhwc(d, &x), &logits, None, &mut y_nhwc);
            assert_eq!(to_nhwc(d, &y), y_nhwc, "shift output");
        }
    }

    /// A pool of three scoped threads with uneven ranges, to check that the chunking covers
    /// every task once whatever ranges a pool hands out.
    fn three_threads(n: usize, body: &(dyn Fn(Range<usize>) + Sync)) {
        let cuts = [0, n / 5, n / 2, n];
        std::thread::scope(|s| {
            for w in cuts.windows(2) {
                let range = w[0]..w[1];
                s.spawn(move || body(range));
            }
        });
    }

    /// Every kernel that takes another pool gives rayon's results bit for bit on it.
    #[test]
    fn kernels_on_another_pool_match_rayon() {
        let d = Dims { b: 2, t: 4, c: 12, h: 5, w: 3 };
        let n = d.b * d.t * d.c * d.hw();
        let gate_len = d.b * 2 * d.t * d.hw();
        let (x, weight, bias, da) = (values(n, 1), values(d.c * 27, 2), values(2, 3), values(gate_len, 4));
        let x_nhwc = to_nhwc(d, &x);
        let run = || {
            let mut out = vec![vec![0f32; gate_len], vec![0f32; gate_len], vec![0f32; n], vec![0f32; n], vec![0f32; n]];
            gate_gemm::forward(d, Layout::Nchw, &x, &weight, &bias, &mut out[0]);
            gate_gemm::forward(d, Layout::ChannelsLast, &x_nhwc, &weight, &bias, &mut out[1]);
            shift_forward(d, &x, &da, None, &mut out[2]);
            shift_forward_nhwc(d, &x_nhwc, &da, None, &mut out[3]);
            let (dw, db) = gate_gemm::backward(d, &x, &weight, &da, &mut out[4]);
            out.push(dw);
            out.push(db);
            out
        };
        let reference = run();
        assert!(reference.iter().all(|v| v.iter().any(|&x| x != 0.0)));
        assert_eq!(on_pool(three_threads, run), reference);
        // The pool is this thread's only for the duration of `on_pool`.
        assert!(POOL.get().is_none());
    }
}
