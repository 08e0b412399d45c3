//! The GSM gate convolution (3×3×3, 2 groups, 1 output each, zero padding 1) on CPU as
//! GEMMs, so that its multiply-adds run at the speed of the backbone's convolutions.
//!
//! A group's C/2 input channels meet 27 taps. Per frame `u` and gate `k`, one GEMM gives every
//! tap's contribution at every position, `P[u,k] = W_k (27 × C/2) · X_k[u] (C/2 × H·W)`; an
//! output plane (clip, gate, frame `t`) then sums 27 rows of `P`, each shifted by its tap's
//! offset: `a[t](y, x) = b_k + Σ_{dt,dy,dx} P[t+dt−1, k][dt,dy,dx](y+dy−1, x+dx−1)`, zero outside
//! the clip and the plane. Those sums cost 1/(C/2) of the GEMM's work.
//!
//! Backward, per frame and gate: `dP` (27 × H·W) is the gate gradient `da` copied 27 times,
//! each copy shifted the other way; then `dX_k[u] = W_kᵀ · dP` and `dW_k += dP · X_k[u]ᵀ`, two more
//! GEMMs. The weight gradient's per-frame parts are summed in a fixed order, so results do not
//! depend on the thread count.
//!
//! `X_k[u]` is read in place, whether the map is `(B·T, C, H, W)` in NCHW memory order (rows
//! of H·W) or channels-last (libtorch's CPU inference; rows of one value at stride C).
//!
//! The forward's taps take a scratch of T·54·H·W values, one clip at a time, kept by the
//! calling thread for the next call (`im2col::with_scratch`): 21.7 MB at EfficientNet-Lite0's
//! first GSM (8 segments, 112²), 1.4 MB at BN-Inception's largest.

use gemm::{Parallelism, gemm};

use super::kernels::{Dims, for_each_chunk};
use crate::ops::conv::im2col::with_scratch;

/// Memory order of a `(B·T, C, H, W)` feature map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Nchw,
    /// B·T, H, W, C.
    ChannelsLast,
}

/// A matrix inside a slice: element (row, col) at `row·rs + col·cs`.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// Checks that a `rows` × `cols` matrix at these strides fits in `data`.
    fn new(data: &'a [f32], rs: usize, cs: usize, [rows, cols]: [usize; 2]) -> Self {
        assert!(rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < data.len(), "matrix outside its slice");
        Mat { data, rs, cs }
    }
}

/// `dst (m, n) = [dst +] a (m, k) · b (k, n)`, each at its own strides, on this thread.
fn matmul(dst: &mut [f32], (rs, cs): (usize, usize), accumulate: bool, a: Mat, b: Mat, [m, k, n]: [usize; 3]) {
    Mat::new(dst, rs, cs, [m, n]);
    Mat::new(a.data, a.rs, a.cs, [m, k]);
    Mat::new(b.data, b.rs, b.cs, [k, n]);
    // SAFETY: every matrix lies inside its slice (checked above); `dst` is borrowed mutably.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            cs as isize,
            rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// `W_k`: gate `k`'s weights (2, C/2, 3, 3, 3) as a (27, C/2) matrix.
fn weights(weight: &[f32], k: usize, half: usize) -> Mat<'_> {
    Mat::new(&weight[k * half * 27..], 1, 27, [27, half])
}

/// `X_k[b, u]`: the (C/2, H·W) matrix of gate `k`'s channels in frame `u` of clip `b`.
fn channels<'a>(d: Dims, layout: Layout, r: &'a [f32], b: usize, u: usize, k: usize) -> Mat<'a> {
    let (half, hw, frame) = (d.c / 2, d.hw(), (b * d.t + u) * d.c * d.hw());
    match layout {
        Layout::Nchw => Mat::new(&r[frame + k * half * hw..], hw, 1, [half, hw]),
        Layout::ChannelsLast => Mat::new(&r[frame + k * half..], 1, d.c, [half, hw]),
    }
}

/// `out[y, x] += p0[y', x−1] + p1[y', x] + p2[y', x+1]` for row `y` of a `w`-wide plane, where
/// `y'` is the source row (the three taps of one kernel row).
#[inline(always)]
fn add_row(out: &mut [f32], [p0, p1, p2]: [&[f32]; 3], w: usize) {
    if w == 1 {
        out[0] += p1[0];
        return;
    }
    out[0] += p1[0] + p2[1];
    out[w - 1] += p0[w - 2] + p1[w - 1];
    let n = w - 2;
    let (o, l, m, r) = (&mut out[1..][..n], &p0[..n], &p1[1..][..n], &p2[2..][..n]);
    for i in 0..n {
        o[i] += l[i] + m[i] + r[i];
    }
}

/// Gate convolution: `r` (B·T, C, H, W) in `layout`, `weight` (2, C/2, 3, 3, 3), `bias` (2) →
/// logits (B, 2, T, H, W).
pub fn forward(d: Dims, layout: Layout, r: &[f32], weight: &[f32], bias: &[f32], out: &mut [f32]) {
    let (hw, half, plane) = (d.hw(), d.c / 2, 27 * d.hw());
    // One clip at a time, so that the taps' scratch is T·54·H·W values however large the batch.
    with_scratch(1, 2 * d.t * plane, |taps| {
        for (b, clip) in out.chunks_mut(2 * d.t * hw).enumerate() {
            for_each_chunk(taps, plane, |n, p| {
                let (u, k) = (n / 2, n % 2);
                matmul(p, (hw, 1), false, weights(weight, k, half), channels(d, layout, r, b, u, k), [27, half, hw]);
            });
            let taps = &*taps;
            for_each_chunk(clip, hw, |n, acc| {
                let (k, t) = (n / d.t, n % d.t);
                acc.fill(bias[k]);
                for dt in 0..3 {
                    let Some(u) = (t + dt).checked_sub(1).filter(|&u| u < d.t) else { continue };
                    let p = &taps[(u * 2 + k) * plane..][..plane];
                    for y in 0..d.h {
                        for dy in 0..3 {
                            let Some(sy) = (y + dy).checked_sub(1).filter(|&s| s < d.h) else { continue };
                            let row = |dx: usize| &p[((dt * 3 + dy) * 3 + dx) * hw + sy * d.w..][..d.w];
                            add_row(&mut acc[y * d.w..][..d.w], [row(0), row(1), row(2)], d.w);
                        }
                    }
                }
            });
        }
    });
}

/// Gradients of the gate convolution from `da` (B, 2, T, H, W): `dr` (B·T, C, H, W) written
/// into `dr`, `(dweight, dbias)` returned. NCHW memory order.
pub fn backward(d: Dims, r: &[f32], weight: &[f32], da: &[f32], dr: &mut [f32]) -> (Vec<f32>, Vec<f32>) {
    let (hw, half) = (d.hw(), d.c / 2);
    // `dP` of (frame n/2, gate n%2), in this thread's scratch; built twice (for dr, then for
    // dweight), which costs 1/(C/2) of a GEMM each time and spares sharing it between tasks.
    let with_dp = |n: usize, f: &mut dyn FnMut(Mat, Mat)| {
        let (frame, k) = (n / 2, n % 2);
        let (b, u) = (frame / d.t, frame % d.t);
        with_scratch(0, 27 * hw, |dp| {
            tap_gradients(d, &da[(b * 2 + k) * d.t * hw..][..d.t * hw], u, dp);
            f(Mat::new(dp, hw, 1, [27, hw]), channels(d, Layout::Nchw, r, b, u, k))
        })
    };
    // dX_k[u] = W_kᵀ (C/2, 27) · dP: half a frame of dr per task.
    for_each_chunk(dr, half * hw, |n, dx| {
        let w = weights(weight, n % 2, half);
        with_dp(n, &mut |dp, _| {
            matmul(dx, (hw, 1), false, Mat { data: w.data, rs: w.cs, cs: w.rs }, dp, [half, 27, hw])
        });
    });
    // dW_k's part from frame u: dP · X_k[u]ᵀ, as (C/2, 27) like the weight; summed in order.
    let mut parts = vec![0f32; d.b * d.t * 2 * half * 27];
    for_each_chunk(&mut parts, half * 27, |n, part| {
        with_dp(n, &mut |dp, x| {
            matmul(part, (1, 27), false, dp, Mat { data: x.data, rs: x.cs, cs: x.rs }, [27, hw, half])
        });
    });
    let mut dweight = vec![0f32; 2 * half * 27];
    for (n, part) in parts.chunks(half * 27).enumerate() {
        let sum = &mut dweight[(n % 2) * half * 27..][..half * 27];
        sum.iter_mut().zip(part).for_each(|(s, v)| *s += v);
    }
    let dbias =
        (0..2).map(|k| (0..d.b).map(|b| da[(b * 2 + k) * d.t * hw..][..d.t * hw].iter().sum::<f32>()).sum()).collect();
    (dweight, dbias)
}

/// `dP` (27, H·W) of input frame `u` from one clip-gate's `da` (T, H, W): tap (dt, dy, dx) at
/// (y, x) received `da[u−dt+1](y−dy+1, x−dx+1)`, zero outside.
fn tap_gradients(d: Dims, da: &[f32], u: usize, dp: &mut [f32]) {
    let (h, w, hw) = (d.h, d.w, d.hw());
    for (tap, out) in dp.chunks_mut(hw).enumerate() {
        let (dt, dy, dx) = (tap / 9, (tap / 3) % 3, tap % 3);
        let Some(t) = (u + 1).checked_sub(dt).filter(|&t| t < d.t) else {
            out.fill(0.0);
            continue;
        };
        let plane = &da[t * hw..][..hw];
        for y in 0..h {
            let row = &mut out[y * w..][..w];
            let Some(sy) = (y + 1).checked_sub(dy).filter(|&s| s < h) else {
                row.fill(0.0);
                continue;
            };
            let src = &plane[sy * w..][..w];
            // row[x] = src[x − dx + 1]
            match dx {
                0 => {
                    row[..w - 1].copy_from_slice(&src[1..]);
                    row[w - 1] = 0.0;
                }
                1 => row.copy_from_slice(src),
                _ => {
                    row[1..].copy_from_slice(&src[..w - 1]);
                    row[0] = 0.0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// The gate convolution by its definition, in f64: logits (B, 2, T, H, W), and the
    /// gradients of Σ logits·da.
    fn reference(d: Dims, r: &[f32], weight: &[f32], bias: &[f32], da: &[f32]) -> [Vec<f64>; 4] {
        let (half, hw) = (d.c / 2, d.hw());
        let mut logits = vec![0f64; d.b * 2 * d.t * hw];
        let (mut dr, mut dw, mut db) = (vec![0f64; r.len()], vec![0f64; weight.len()], vec![0f64; 2]);
        for b in 0..d.b {
            for k in 0..2 {
                for t in 0..d.t {
                    for y in 0..d.h {
                        for x in 0..d.w {
                            let o = ((b * 2 + k) * d.t + t) * hw + y * d.w + x;
                            logits[o] = bias[k] as f64;
                            db[k] += da[o] as f64;
                            for j in 0..half {
                                for tap in 0..27 {
                                    let (dt, dy, dx) = (tap / 9, (tap / 3) % 3, tap % 3);
                                    let (u, sy, sx) = (t + dt, y + dy, x + dx);
                                    if u < 1 || u > d.t || sy < 1 || sy > d.h || sx < 1 || sx > d.w {
                                        continue;
                                    }
                                    let i = ((b * d.t + u - 1) * d.c + k * half + j) * hw + (sy - 1) * d.w + sx - 1;
                                    let wi = (k * half + j) * 27 + tap;
                                    logits[o] += weight[wi] as f64 * r[i] as f64;
                                    dr[i] += weight[wi] as f64 * da[o] as f64;
                                    dw[wi] += r[i] as f64 * da[o] as f64;
                                }
                            }
                        }
                    }
                }
            }
        }
        [logits, dr, dw, db]
    }

    fn to_channels_last(d: Dims, v: &[f32]) -> Vec<f32> {
        let (hw, mut out) = (d.hw(), vec![0f32; v.len()]);
        for f in 0..d.b * d.t {
            for c in 0..d.c {
                for p in 0..hw {
                    out[(f * hw + p) * d.c + c] = v[(f * d.c + c) * hw + p];
                }
            }
        }
        out
    }

    fn assert_close(what: &str, got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let scale = want.iter().fold(1f64, |m, v| m.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((*g as f64 - w).abs() <= 1e-5 * scale, "{what}[{i}]: {g} against {w}");
        }
    }

    /// Forward (both memory orders) and backward against the definition, on planes 1 wide or
    /// high, clips of 1 and 2 frames and several clips.
    #[test]
    fn gemm_gate_conv_matches_its_definition() {
        for d in [
            Dims { b: 2, t: 4, c: 12, h: 5, w: 3 },
            Dims { b: 1, t: 8, c: 40, h: 4, w: 6 },
            Dims { b: 3, t: 2, c: 8, h: 1, w: 7 },
            Dims { b: 1, t: 1, c: 4, h: 6, w: 1 },
        ] {
            let n = d.b * d.t * d.c * d.hw();
            let gates = d.b * 2 * d.t * d.hw();
            let (r, weight, bias, da) = (values(n, 1), values(d.c * 27, 2), values(2, 3), values(gates, 4));
            let [logits, dr, dw, db] = reference(d, &r, &weight, &bias, &da);
            let mut out = vec![f32::NAN; gates];
            forward(d, Layout::Nchw, &r, &weight, &bias, &mut out);
            assert_close("logits", &out, &logits);
            out.fill(f32::NAN);
            forward(d, Layout::ChannelsLast, &to_channels_last(d, &r), &weight, &bias, &mut out);
            assert_close("logits, channels-last", &out, &logits);
            let mut got_dr = vec![f32::NAN; n];
            let (got_dw, got_db) = backward(d, &r, &weight, &da, &mut got_dr);
            assert_close("dr", &got_dr, &dr);
            assert_close("dweight", &got_dw, &dw);
            assert_close("dbias", &got_db, &db);
        }
    }
}
