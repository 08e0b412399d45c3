//! The fused GSM's kernels in CubeCL, for burn's CubeCL backend (`--features cuda`: CUDA through
//! NVRTC; `--features wgpu`: Vulkan/Metal/WebGPU, and on a machine without a GPU Mesa's
//! lavapipe, which is how they are tested here). The same computations as `ops/gate_shift/kernels.rs`
//! and `ops/gate_shift/cuda.rs` (formulas in `ops/gate_shift/flex.rs`), one unit per output value, reading and
//! writing the element type of the tensors (float32, or bfloat16 where the runtime has it) and
//! computing in float32.
//!
//! Layouts: feature maps (B·T, C, H, W); gate logits (B, 2, T, H, W); gate weight
//! (2, C/2, 3, 3, 3). The weight gradient is a reduction over B·T·H·W: each cube sums its share
//! of positions for one weight in shared memory, and a second kernel adds the cubes' partial
//! sums, so no float atomics are needed (WebGPU has none).
//!
//! The launches, shape checks and burn registration are in `ops/gate_shift/cube_ops.rs`.

use burn::cubecl::prelude::*;

/// Units per cube in every launch.
pub(super) const CUBE_UNITS: u32 = 256;
/// Cubes that share one weight's gradient (each sums a strided share of the positions).
pub(super) const WEIGHT_CHUNKS: u32 = 64;

/// A clip batch's sizes: B clips of T frames, C channels, H × W.
#[derive(CubeLaunch, CubeType)]
pub(super) struct ClipDims {
    pub b: usize,
    pub t: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

/// Where value `i` of a (B·T, C, H·W) feature map sits: clip, frame, channel, plane position.
#[derive(CubeType)]
struct FeaturePos {
    b: usize,
    t: usize,
    c: usize,
    p: usize,
}

#[cube]
fn feature_pos(i: usize, dims: &ClipDims) -> FeaturePos {
    let hw = dims.h * dims.w;
    let frame_channel = i / hw;
    let frame = frame_channel / dims.c;
    FeaturePos { b: frame / dims.t, t: frame % dims.t, c: frame_channel % dims.c, p: i % hw }
}

/// Channel `c`'s place after the per-half (2, C/4) → (C/4, 2) re-interleave.
#[cube]
fn interleaved(c: usize, channels: usize) -> usize {
    let half = channels / 2;
    let quarter = channels / 4;
    let k = c / half;
    let j = c % half;
    k * half + (j % quarter) * 2 + j / quarter
}

#[cube(launch_unchecked)]
pub(super) fn gate_conv_fwd<F: Float>(
    r: &Tensor<F>,
    weight: &Tensor<F>,
    bias: &Tensor<F>,
    out: &mut Tensor<F>,
    dims: ClipDims,
    #[define(F)] _dtype: ElemType,
) {
    let (b_n, t_n, c_n, h_n, w_n) = (dims.b, dims.t, dims.c, dims.h, dims.w);
    let i = ABSOLUTE_POS;
    if i >= b_n * 2 * t_n * h_n * w_n {
        terminate!();
    }
    let x = i % w_n;
    let mut q = i / w_n;
    let y = q % h_n;
    q /= h_n;
    let t = q % t_n;
    q /= t_n;
    let k = q % 2;
    let b = q / 2;
    let half = c_n / 2;
    let hw = h_n * w_n;
    let mut acc = f32::cast_from(bias[k]);
    for j in 0..half {
        for dt in 0..3usize {
            // Frame t + dt − 1, inside the clip.
            if t + dt >= 1 && t + dt <= t_n {
                let u = t + dt - 1;
                let plane = ((b * t_n + u) * c_n + k * half + j) * hw;
                let kw = ((k * half + j) * 3 + dt) * 9;
                for dy in 0..3usize {
                    if y + dy >= 1 && y + dy <= h_n {
                        let row = plane + (y + dy - 1) * w_n;
                        for dx in 0..3usize {
                            if x + dx >= 1 && x + dx <= w_n {
                                acc += f32::cast_from(weight[kw + dy * 3 + dx]) * f32::cast_from(r[row + x + dx - 1]);
                            }
                        }
                    }
                }
            }
        }
    }
    out[i] = F::cast_from(acc);
}

#[cube(launch_unchecked)]
pub(super) fn gate_conv_bwd_input<F: Float>(
    da: &Tensor<F>,
    weight: &Tensor<F>,
    dr: &mut Tensor<F>,
    dims: ClipDims,
    #[define(F)] _dtype: ElemType,
) {
    let (b_n, t_n, c_n, h_n, w_n) = (dims.b, dims.t, dims.c, dims.h, dims.w);
    let i = ABSOLUTE_POS;
    if i >= b_n * t_n * c_n * h_n * w_n {
        terminate!();
    }
    let x = i % w_n;
    let mut q = i / w_n;
    let y = q % h_n;
    q /= h_n;
    let c = q % c_n;
    q /= c_n;
    let u = q % t_n;
    let b = q / t_n;
    let half = c_n / 2;
    let k = c / half;
    let hw = h_n * w_n;
    let mut acc = 0.0f32;
    for dt in 0..3usize {
        // Output frame t = u + 1 − dt reads this frame through tap dt.
        if u + 1 >= dt && u + 1 - dt < t_n {
            let plane = ((b * 2 + k) * t_n + u + 1 - dt) * hw;
            let kw = (c * 3 + dt) * 9;
            for dy in 0..3usize {
                if y + 1 >= dy && y + 1 - dy < h_n {
                    let row = plane + (y + 1 - dy) * w_n;
                    for dx in 0..3usize {
                        if x + 1 >= dx && x + 1 - dx < w_n {
                            acc += f32::cast_from(weight[kw + dy * 3 + dx]) * f32::cast_from(da[row + x + 1 - dx]);
                        }
                    }
                }
            }
        }
    }
    dr[i] = F::cast_from(acc);
}

/// Cube (w, chunk), w = kj·28 + tap for channel kj = k·C/2 + j, taps 0..27 the weights and 27
/// the bias: the sum of its tap's products over a strided share of the positions, into
/// `partial[w · chunks + chunk]`.
#[cube(launch_unchecked)]
pub(super) fn gate_conv_bwd_weight_partial<F: Float>(
    r: &Tensor<F>,
    da: &Tensor<F>,
    partial: &mut Tensor<f32>,
    dims: ClipDims,
    #[define(F)] _dtype: ElemType,
) {
    let (b_n, t_n, c_n, h_n, w_n) = (dims.b, dims.t, dims.c, dims.h, dims.w);
    let widx = CUBE_POS_X as usize;
    let chunk = CUBE_POS_Y as usize;
    let chunks = CUBE_COUNT_Y as usize;
    let units = CUBE_DIM_X as usize;
    let unit = UNIT_POS_X as usize;
    let kj = widx / 28;
    let tap = widx % 28;
    let half = c_n / 2;
    let k = kj / half;
    let hw = h_n * w_n;
    let n = b_n * t_n * hw;
    let dt = tap / 9;
    let dy = (tap % 9) / 3;
    let dx = tap % 3;
    let mut acc = 0.0f32;
    let mut p = chunk * units + unit;
    while p < n {
        let x = p % w_n;
        let mut q = p / w_n;
        let y = q % h_n;
        q /= h_n;
        let t = q % t_n;
        let b = q / t_n;
        let g = f32::cast_from(da[((b * 2 + k) * t_n + t) * hw + y * w_n + x]);
        if tap == 27 {
            acc += g;
        } else if t + dt >= 1 && t + dt <= t_n && y + dy >= 1 && y + dy <= h_n && x + dx >= 1 && x + dx <= w_n {
            let src = ((b * t_n + t + dt - 1) * c_n + kj) * hw + (y + dy - 1) * w_n + x + dx - 1;
            acc += g * f32::cast_from(r[src]);
        }
        p += chunks * units;
    }
    let mut shared = Shared::new_slice(CUBE_UNITS as usize);
    shared[unit] = acc;
    sync_cube();
    let mut stride = units / 2;
    while stride > 0 {
        if unit < stride {
            let other = shared[unit + stride];
            shared[unit] += other;
        }
        sync_cube();
        stride /= 2;
    }
    if unit == 0 {
        partial[widx * chunks + chunk] = shared[0];
    }
}

/// One unit per weight (C·27 of them) and bias (2): adds the cubes' partial sums.
#[cube(launch_unchecked)]
pub(super) fn gate_conv_bwd_weight_finish<F: Float>(
    partial: &Tensor<f32>,
    dweight: &mut Tensor<F>,
    dbias: &mut Tensor<F>,
    channels: u32,
    chunks: u32,
    #[define(F)] _dtype: ElemType,
) {
    let c_n = channels as usize;
    let chunks = chunks as usize;
    let o = ABSOLUTE_POS;
    if o >= c_n * 27 + 2 {
        terminate!();
    }
    // The bias of half k sums the gate gradient once: tap 27 of the half's first channel.
    let widx = if o < c_n * 27 { (o / 27) * 28 + o % 27 } else { (o - c_n * 27) * (c_n / 2) * 28 + 27 };
    let mut acc = 0.0f32;
    for c in 0..chunks {
        acc += partial[widx * chunks + c];
    }
    if o < c_n * 27 {
        dweight[o] = F::cast_from(acc);
    } else {
        dbias[o - c_n * 27] = F::cast_from(acc);
    }
}

#[cube(launch_unchecked)]
pub(super) fn shift_fwd<F: Float>(
    x: &Tensor<F>,
    a: &Tensor<F>,
    out: &mut Tensor<F>,
    dims: ClipDims,
    #[define(F)] _dtype: ElemType,
) {
    let (b_n, t_n, c_n, h_n, w_n) = (dims.b, dims.t, dims.c, dims.h, dims.w);
    let hw = h_n * w_n;
    let i = ABSOLUTE_POS;
    if i >= b_n * t_n * c_n * hw {
        terminate!();
    }
    let f = feature_pos(i, &dims);
    let (b, t, c, p) = (f.b, f.t, f.c, f.p);
    let k = c / (c_n / 2);
    let g = f32::cast_from(a[((b * 2 + k) * t_n + t) * hw + p]).tanh();
    let xs = f32::cast_from(x[i]);
    let mut v = xs - g * xs;
    // Half 1 takes frame t + 1, half 2 frame t − 1; zero outside the clip.
    if (k == 0 && t + 1 < t_n) || (k == 1 && t >= 1) {
        let tn = if k == 0 { t + 1 } else { t - 1 };
        let gn = f32::cast_from(a[((b * 2 + k) * t_n + tn) * hw + p]).tanh();
        v += gn * f32::cast_from(x[((b * t_n + tn) * c_n + c) * hw + p]);
    }
    out[((b * t_n + t) * c_n + interleaved(c, c_n)) * hw + p] = F::cast_from(v);
}

#[cube(launch_unchecked)]
pub(super) fn shift_bwd_input<F: Float>(
    a: &Tensor<F>,
    dy: &Tensor<F>,
    dx: &mut Tensor<F>,
    dims: ClipDims,
    #[define(F)] _dtype: ElemType,
) {
    let (b_n, t_n, c_n, h_n, w_n) = (dims.b, dims.t, dims.c, dims.h, dims.w);
    let hw = h_n * w_n;
    let i = ABSOLUTE_POS;
    if i >= b_n * t_n * c_n * hw {
        terminate!();
    }
    let f = feature_pos(i, &dims);
    let (b, t, c, p) = (f.b, f.t, f.c, f.p);
    let k = c / (c_n / 2);
    let oc = interleaved(c, c_n);
    let g = f32::cast_from(a[((b * 2 + k) * t_n + t) * hw + p]).tanh();
    let dz = f32::cast_from(dy[((b * t_n + t) * c_n + oc) * hw + p]);
    let mut v = dz - g * dz;
    // This frame feeds frame t − 1 (half 1) or t + 1 (half 2).
    if (k == 0 && t >= 1) || (k == 1 && t + 1 < t_n) {
        let tp = if k == 0 { t - 1 } else { t + 1 };
        v += g * f32::cast_from(dy[((b * t_n + tp) * c_n + oc) * hw + p]);
    }
    dx[i] = F::cast_from(v);
}

#[cube(launch_unchecked)]
pub(super) fn shift_bwd_gate<F: Float>(
    x: &Tensor<F>,
    a: &Tensor<F>,
    dy: &Tensor<F>,
    da: &mut Tensor<F>,
    dims: ClipDims,
    #[define(F)] _dtype: ElemType,
) {
    let (b_n, t_n, c_n, h_n, w_n) = (dims.b, dims.t, dims.c, dims.h, dims.w);
    let hw = h_n * w_n;
    let i = ABSOLUTE_POS;
    if i >= b_n * 2 * t_n * hw {
        terminate!();
    }
    let p = i % hw;
    let mut q = i / hw;
    let t = q % t_n;
    q /= t_n;
    let k = q % 2;
    let b = q / 2;
    let half = c_n / 2;
    let inside = (k == 0 && t >= 1) || (k == 1 && t + 1 < t_n);
    // The frame this one's gate reads from, wrapped into the clip where it is outside (unused).
    let tp = if k == 0 { (t + t_n - 1) % t_n } else { (t + 1) % t_n };
    let mut acc = 0.0f32;
    for j in 0..half {
        let c = k * half + j;
        let oc = interleaved(c, c_n);
        let xs = f32::cast_from(x[((b * t_n + t) * c_n + c) * hw + p]);
        let dz = f32::cast_from(dy[((b * t_n + t) * c_n + oc) * hw + p]);
        let mut dzs = 0.0f32;
        if inside {
            dzs = f32::cast_from(dy[((b * t_n + tp) * c_n + oc) * hw + p]);
        }
        acc += xs * (dzs - dz);
    }
    let g = f32::cast_from(a[i]).tanh();
    da[i] = F::cast_from(acc * (1.0f32 - g * g));
}
