//! CPU kernels of the fused GSM on plain float32 slices, in the backbone's own
//! `(B·T, C, H, W)` layout — no transpose to (B, C, T, H, W) is ever made:
//! - the gate convolution (3×3×3, 2 groups, 2 outputs, zero padding 1, bias) forward and
//!   backward, as 3×3 plane stencils accumulated over the channels and the 3 frames;
//! - the gated shift (tanh, shift, residual, re-interleave) forward and backward;
//! - both forwards also on channels-last feature maps (memory order B·T, H, W, C: libtorch's
//!   CPU inference, `torch_layers::channels_last`), as dot products over channel vectors.
//!
//! Every kernel is parallel over output planes or frames, so tasks never share an output;
//! on rayon's threads, or on another pool the caller names ([`on_pool`]: libtorch's).

use std::cell::Cell;
use std::ops::Range;

use rayon::prelude::*;

pub use super::gsm_unit::Affine;

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

    /// Frame `t + dt − 1` of a 3-tap temporal kernel, if inside the clip.
    fn tap(&self, t: usize, dt: usize) -> Option<usize> {
        (t + dt).checked_sub(1).filter(|&u| u < self.t)
    }
}

/// `acc[y, x] += Σ_{dy,dx} k[dy·3+dx] · src[y+dy−1, x+dx−1]` over an `h`×`w` plane, zero
/// outside. Compiled twice: for AVX2 (chosen at run time where the CPU has it) and baseline.
fn stencil_acc(acc: &mut [f32], src: &[f32], k: &[f32], h: usize, w: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { stencil_acc_avx2(acc, src, k, h, w) };
    }
    stencil_acc_body(acc, src, k, h, w)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn stencil_acc_avx2(acc: &mut [f32], src: &[f32], k: &[f32], h: usize, w: usize) {
    stencil_acc_body(acc, src, k, h, w)
}

#[inline(always)]
fn stencil_acc_body(acc: &mut [f32], src: &[f32], k: &[f32], h: usize, w: usize) {
    for y in 0..h {
        let out = &mut acc[y * w..][..w];
        for dy in 0..3 {
            let Some(sy) = (y + dy).checked_sub(1).filter(|&s| s < h) else { continue };
            let row = &src[sy * w..][..w];
            let (k0, k1, k2) = (k[dy * 3], k[dy * 3 + 1], k[dy * 3 + 2]);
            if w == 1 {
                out[0] += k1 * row[0];
                continue;
            }
            out[0] += k1 * row[0] + k2 * row[1];
            out[w - 1] += k0 * row[w - 2] + k1 * row[w - 1];
            // Interior: equal-length windows, so the loop has no bounds checks and vectorises.
            let n = w - 2;
            let (o, l, m, r) = (&mut out[1..][..n], &row[..n], &row[1..][..n], &row[2..][..n]);
            for i in 0..n {
                o[i] += k0 * l[i] + k1 * m[i] + k2 * r[i];
            }
        }
    }
}

/// `[Σ_{y,x} a[y, x] · b[y+dy−1, x+dx−1]` for each of the 9 offsets], zero outside.
fn stencil_dots(a: &[f32], b: &[f32], h: usize, w: usize) -> [f32; 9] {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { stencil_dots_avx2(a, b, h, w) };
    }
    stencil_dots_body(a, b, h, w)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn stencil_dots_avx2(a: &[f32], b: &[f32], h: usize, w: usize) -> [f32; 9] {
    stencil_dots_body(a, b, h, w)
}

/// Sum of `a[i]·b[i]` in 8 independent lanes (so it vectorises without reassociation).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}

#[inline(always)]
fn stencil_dots_body(a: &[f32], b: &[f32], h: usize, w: usize) -> [f32; 9] {
    let mut out = [0f32; 9];
    for dy in 0..3 {
        for y in 0..h {
            let Some(sy) = (y + dy).checked_sub(1).filter(|&s| s < h) else { continue };
            let (ra, rb) = (&a[y * w..][..w], &b[sy * w..][..w]);
            out[dy * 3] += dot(&ra[1..], &rb[..w - 1]);
            out[dy * 3 + 1] += dot(ra, rb);
            out[dy * 3 + 2] += dot(&ra[..w - 1], &rb[1..]);
        }
    }
    out
}

/// Gate convolution: `r` (B·T, C, H, W), `weight` (2, C/2, 3, 3, 3), `bias` (2) → logits
/// (B, 2, T, H, W), one output plane per task.
pub fn gate_conv_forward(d: Dims, r: &[f32], weight: &[f32], bias: &[f32], out: &mut [f32]) {
    let (hw, half) = (d.hw(), d.c / 2);
    for_each_chunk(out, hw, |n, acc| {
        let (b, k, t) = (n / (2 * d.t), (n / d.t) % 2, n % d.t);
        acc.fill(bias[k]);
        for j in 0..half {
            for dt in 0..3 {
                let Some(u) = d.tap(t, dt) else { continue };
                let kernel = &weight[((k * half + j) * 3 + dt) * 9..][..9];
                stencil_acc(acc, &r[d.frame_plane(b, u, k * half + j)..][..hw], kernel, d.h, d.w);
            }
        }
    });
}

/// Gate convolution on a channels-last `r`: the same logits (B, 2, T, H, W) as
/// [`gate_conv_forward`], one output row (clip, gate, frame, y) per task, each tap a dot
/// product of a weight vector with a position's channel vector.
pub fn gate_conv_forward_nhwc(d: Dims, r: &[f32], weight: &[f32], bias: &[f32], out: &mut [f32]) {
    let half = d.c / 2;
    // Weights regrouped as (gate, tap, channel), so that each tap's weights are contiguous.
    let mut taps = vec![0f32; 2 * 27 * half];
    for k in 0..2 {
        for j in 0..half {
            for tap in 0..27 {
                taps[(k * 27 + tap) * half + j] = weight[(k * half + j) * 27 + tap];
            }
        }
    }
    for_each_chunk(out, d.w, |n, row| {
        let (y, t, k, b) = (n % d.h, (n / d.h) % d.t, (n / (d.h * d.t)) % 2, n / (2 * d.h * d.t));
        gate_row_nhwc(d, r, &taps, bias[k], (b, k, t, y), row);
    });
}

fn gate_row_nhwc(d: Dims, r: &[f32], taps: &[f32], bias: f32, at: (usize, usize, usize, usize), row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { gate_row_nhwc_avx2(d, r, taps, bias, at, row) };
    }
    gate_row_nhwc_body(d, r, taps, bias, at, row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn gate_row_nhwc_avx2(d: Dims, r: &[f32], taps: &[f32], bias: f32, at: (usize, usize, usize, usize), row: &mut [f32]) {
    gate_row_nhwc_body(d, r, taps, bias, at, row)
}

#[inline(always)]
fn gate_row_nhwc_body(d: Dims, r: &[f32], taps: &[f32], bias: f32, at: (usize, usize, usize, usize), row: &mut [f32]) {
    let (b, k, t, y) = at;
    let half = d.c / 2;
    let body = half - half % 8;
    for (x, o) in row.iter_mut().enumerate() {
        // 8 lanes summed over every tap and channel, reduced once per output.
        let mut lanes = [0f32; 8];
        let mut tail = 0f32;
        for dt in 0..3 {
            let Some(u) = d.tap(t, dt) else { continue };
            for dy in 0..3 {
                let Some(sy) = (y + dy).checked_sub(1).filter(|&s| s < d.h) else { continue };
                for dx in 0..3 {
                    let Some(sx) = (x + dx).checked_sub(1).filter(|&s| s < d.w) else { continue };
                    let v = &r[d.position(b, u, sy * d.w + sx) + k * half..][..half];
                    let wk = &taps[(k * 27 + dt * 9 + dy * 3 + dx) * half..][..half];
                    for (vc, wc) in v[..body].chunks_exact(8).zip(wk[..body].chunks_exact(8)) {
                        for l in 0..8 {
                            lanes[l] += wc[l] * vc[l];
                        }
                    }
                    for i in body..half {
                        tail += wk[i] * v[i];
                    }
                }
            }
        }
        *o = bias + (lanes.iter().sum::<f32>() + tail);
    }
}

/// Gradients of the gate convolution from `da` (B, 2, T, H, W): `dr` (B·T, C, H, W) into
/// `dr`, and `(dweight, dbias)` returned.
pub fn gate_conv_backward(d: Dims, r: &[f32], weight: &[f32], da: &[f32], dr: &mut [f32]) -> (Vec<f32>, Vec<f32>) {
    let (hw, half) = (d.hw(), d.c / 2);
    // dr: each input plane gathers the flipped stencil of the gate gradients it fed.
    for_each_chunk(dr, hw, |n, acc| {
        let (b, u, c) = (n / (d.t * d.c), (n / d.c) % d.t, n % d.c);
        let (k, j) = (c / half, c % half);
        acc.fill(0.0);
        for dt in 0..3 {
            // Output frame t read input frame u through tap dt when u = t + dt − 1.
            let Some(t) = (u + 1).checked_sub(dt).filter(|&t| t < d.t) else { continue };
            let kernel = &weight[((k * half + j) * 3 + dt) * 9..][..9];
            let mut flipped = [0f32; 9];
            for (f, v) in flipped.iter_mut().zip(kernel.iter().rev()) {
                *f = *v;
            }
            stencil_acc(acc, &da[d.gate_plane(b, k, t)..][..hw], &flipped, d.h, d.w);
        }
    });
    // dweight: one task per (gate, input channel), 27 sums over clips, frames and pixels.
    let dweight: Vec<f32> = (0..2 * half)
        .into_par_iter()
        .flat_map_iter(|kj| {
            let (k, j) = (kj / half, kj % half);
            let mut g = [0f32; 27];
            for b in 0..d.b {
                for t in 0..d.t {
                    let dplane = &da[d.gate_plane(b, k, t)..][..hw];
                    for dt in 0..3 {
                        let Some(u) = d.tap(t, dt) else { continue };
                        let dots = stencil_dots(dplane, &r[d.frame_plane(b, u, k * half + j)..][..hw], d.h, d.w);
                        for (acc, v) in g[dt * 9..][..9].iter_mut().zip(dots) {
                            *acc += v;
                        }
                    }
                }
            }
            g
        })
        .collect();
    let dbias = (0..2)
        .map(|k| (0..d.b * d.t).map(|n| da[d.gate_plane(n / d.t, k, n % d.t)..][..hw].iter().sum::<f32>()).sum())
        .collect();
    (dweight, dbias)
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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The channels-last forwards give the NCHW ones' values (the shift exactly; the gate
    /// convolution up to summation order), at sizes with and without a vector tail.
    #[test]
    fn channels_last_forwards_match() {
        for d in [Dims { b: 2, t: 4, c: 12, h: 5, w: 3 }, Dims { b: 1, t: 8, c: 40, h: 4, w: 6 }] {
            let n = d.b * d.t * d.c * d.hw();
            let (x, weight, bias) = (values(n, 1), values(2 * d.c / 2 * 27, 2), values(2, 3));
            let gate_len = d.b * 2 * d.t * d.hw();
            let (mut logits, mut logits_nhwc) = (vec![0f32; gate_len], vec![0f32; gate_len]);
            gate_conv_forward(d, &x, &weight, &bias, &mut logits);
            gate_conv_forward_nhwc(d, &to_nhwc(d, &x), &weight, &bias, &mut logits_nhwc);
            for (a, b) in logits.iter().zip(&logits_nhwc) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "gate logits {a} vs {b}");
            }
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
            gate_conv_forward(d, &x, &weight, &bias, &mut out[0]);
            gate_conv_forward_nhwc(d, &x_nhwc, &weight, &bias, &mut out[1]);
            shift_forward(d, &x, &da, None, &mut out[2]);
            shift_forward_nhwc(d, &x_nhwc, &da, None, &mut out[3]);
            let (dw, db) = gate_conv_backward(d, &x, &weight, &da, &mut out[4]);
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
