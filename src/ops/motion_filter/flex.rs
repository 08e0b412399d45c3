//! MFNet's motion branch on `flex`. Image `n` (frame t of its clip), channel `c` of direction
//! `(dy, dx)`:
//!
//! `y[n, c, h, w] = x[n, c, h, w] + α_c · (x[n+1, c, h+dy, w+dx] − x[n, c, h, w])`
//!
//! the next frame's value zero outside the map, and `y = x` on a clip's last frame. The
//! composition narrows five channel groups, shifts each with two concatenations, subtracts,
//! pads the last frame and concatenates the groups back: about ten passes over the map where
//! this makes one. Backward, also one pass:
//! `dx[n] = dy[n]·(1 − α·[t < T−1]) + α · unshift_d(dy[n−1])` (for t ≥ 1) and
//! `dα_c = Σ dy · (shift_d(x[n+1]) − x[n])`, summed over the images in order.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::{Flex, FlexTensor};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::tensor::{DType, Shape, Tensor};
use rayon::prelude::*;

use crate::ops::autodiff::{self, OpGeometry, WeightedKernels};
use crate::ops::flex_alloc;

/// The clip length and each channel's direction: channel `c` of `channels` compares with the
/// next frame read at `(h + dy, w + dx)` of its group's direction (`mfnet::group`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Motion {
    pub segments: usize,
    pub directions: &'static [(isize, isize)],
}

/// The channels of direction group `g` of `n` groups over `c` channels: near-equal and
/// contiguous (`mfnet::group` is this for MFNet's five directions).
pub fn group(c: usize, g: usize, n: usize) -> std::ops::Range<usize> {
    (g * c / n)..((g + 1) * c / n)
}

impl Motion {
    /// The direction of channel `c` of `channels`: the one whose [`group`] holds it.
    fn direction(&self, c: usize, channels: usize) -> (isize, isize) {
        let n = self.directions.len();
        let g = (0..n).find(|&g| group(channels, g, n).contains(&c)).unwrap_or(n - 1);
        self.directions[g]
    }
}

impl OpGeometry for Motion {
    const OP: &'static str = "MFNet motion branch";
    fn inference_only(&self) -> bool {
        false
    }
}

/// Whether the fused op takes `x`: float32 on flex, unless `GATESHIFT_FUSED_MFNET=0`.
pub fn applies(x: &Tensor<4>) -> bool {
    crate::ops::route::switches().fused_mfnet && x.dtype() == DType::F32 && crate::backend::is_flex(&x.device())
}

/// The op, routed by burn to the backend a tensor lives on (with or without autodiff).
#[backend_extension(Flex, Autodiff)]
pub trait MotionBranch: Backend {
    /// `x` (B·T, C, H, W), `alpha` (C), `bias` unused (C zeros) → the same shape as `x`.
    fn motion_branch(
        x: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        motion: Motion,
    ) -> FloatTensor<Self>;
}

/// `x + α ⊙ m` in one pass (see [`applies`]).
pub fn motion_branch(x: Tensor<4>, alpha: Tensor<1>, motion: Motion) -> Tensor<4> {
    let bias = alpha.zeros_like();
    let (x, a, b) = (x.into_dispatch(), alpha.into_dispatch(), bias.into_dispatch());
    Tensor::from_dispatch(<Dispatch as MotionBranch>::motion_branch(x, a, b, motion))
}

impl MotionBranch for Flex {
    fn motion_branch(x: FlexTensor, alpha: FlexTensor, bias: FlexTensor, motion: Motion) -> FlexTensor {
        Self::weighted_forward(x, alpha, bias, motion)
    }
}

impl<B: WeightedKernels<Motion>, C: CheckpointStrategy> MotionBranch for Autodiff<B, C> {
    fn motion_branch(
        x: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        motion: Motion,
    ) -> FloatTensor<Self> {
        autodiff::weighted::<B, C, Motion>(x, alpha, bias, motion)
    }
}

/// The sizes of one call: images, channels, height, width.
fn dims(x: &FlexTensor, alpha: &FlexTensor, motion: Motion) -> [usize; 4] {
    let s = x.layout().shape();
    assert_eq!(s.num_dims(), 4, "MFNet: the feature map must be 4-D, got {s:?}");
    let [n, c, h, w] = [s[0], s[1], s[2], s[3]];
    assert!(
        motion.segments > 0 && n.is_multiple_of(motion.segments),
        "MFNet: {n} frames, {} segments",
        motion.segments
    );
    assert_eq!(alpha.layout().shape().num_elements(), c, "MFNet: α has a weight per channel");
    [n, c, h, w]
}

fn f32s(t: FlexTensor) -> FlexTensor {
    assert!(t.dtype() == DType::F32, "MFNet: the fused branch is float32, got {:?}", t.dtype());
    t.to_contiguous()
}

/// The columns `w` of a row whose `w + dx` lies in `0..width`.
fn columns(width: usize, dx: isize) -> std::ops::Range<usize> {
    let start = (-dx).clamp(0, width as isize) as usize;
    let end = (width as isize - dx).clamp(0, width as isize) as usize;
    start..end.max(start)
}

/// `plane + a·(shift(next) − plane)` of one plane, or the plane itself without a next frame.
fn plane_forward(
    x: &[f32],
    next: Option<&[f32]>,
    [h, w]: [usize; 2],
    (dy, dx): (isize, isize),
    a: f32,
    out: &mut [f32],
) {
    let Some(next) = next else {
        out.copy_from_slice(x);
        return;
    };
    let cols = columns(w, dx);
    for row in 0..h {
        let (xr, yr) = (&x[row * w..][..w], &mut out[row * w..][..w]);
        for (y, &v) in yr.iter_mut().zip(xr) {
            *y = v - a * v;
        }
        let from = row as isize + dy;
        if (0..h as isize).contains(&from) && !cols.is_empty() {
            let src = &next[from as usize * w..][..w];
            let src = &src[(cols.start as isize + dx) as usize..][..cols.len()];
            for (y, &s) in yr[cols.clone()].iter_mut().zip(src) {
                *y += a * s;
            }
        }
    }
}

/// The input gradient of one plane: `dy·(1 − a·[has next]) + a·unshift(dy of the frame before)`.
fn plane_dx(
    dy: &[f32],
    before: Option<&[f32]>,
    has_next: bool,
    [h, w]: [usize; 2],
    (sy, sx): (isize, isize),
    a: f32,
    out: &mut [f32],
) {
    let keep = if has_next { 1.0 - a } else { 1.0 };
    for (o, &g) in out.iter_mut().zip(dy) {
        *o = keep * g;
    }
    let Some(before) = before else { return };
    // This plane's (row, col) was read by the frame before at (row − dy, col − dx).
    let cols = columns(w, -sx);
    for row in 0..h {
        let at = row as isize - sy;
        if !(0..h as isize).contains(&at) || cols.is_empty() {
            continue;
        }
        let src = &before[at as usize * w..][..w];
        let src = &src[(cols.start as isize - sx) as usize..][..cols.len()];
        for (o, &g) in out[row * w..][cols.clone()].iter_mut().zip(src) {
            *o += a * g;
        }
    }
}

/// `Σ dy · (shift(next) − x)` over one plane.
fn plane_dalpha(x: &[f32], next: &[f32], dy: &[f32], [h, w]: [usize; 2], (sy, sx): (isize, isize)) -> f64 {
    let mut sum: f64 = -x.iter().zip(dy).map(|(&v, &g)| (v * g) as f64).sum::<f64>();
    let cols = columns(w, sx);
    for row in 0..h {
        let from = row as isize + sy;
        if !(0..h as isize).contains(&from) || cols.is_empty() {
            continue;
        }
        let src = &next[from as usize * w..][..w];
        let src = &src[(cols.start as isize + sx) as usize..][..cols.len()];
        sum += dy[row * w..][cols.clone()].iter().zip(src).map(|(&g, &s)| (g * s) as f64).sum::<f64>();
    }
    sum
}

impl WeightedKernels<Motion> for Flex {
    fn weighted_forward(x: FlexTensor, alpha: FlexTensor, _bias: FlexTensor, motion: Motion) -> FlexTensor {
        let (x, alpha) = (f32s(x), f32s(alpha));
        let [n, c, h, w] = dims(&x, &alpha, motion);
        let mut y = flex_alloc::zeros(Shape::new([n, c, h, w]));
        let plane = h * w;
        if n * c * plane == 0 {
            return y;
        }
        let (xv, av) = (x.as_slice::<f32>().expect("float32"), alpha.as_slice::<f32>().expect("float32"));
        let t = motion.segments;
        y.storage_mut::<f32>().par_chunks_mut(plane).enumerate().for_each(|(i, out)| {
            let (image, ch) = (i / c, i % c);
            let next = (image % t + 1 < t).then(|| &xv[(i + c) * plane..][..plane]);
            let d = motion.direction(ch, c);
            plane_forward(&xv[i * plane..][..plane], next, [h, w], d, av[ch], out);
        });
        y
    }

    fn weighted_backward(
        x: FlexTensor,
        alpha: FlexTensor,
        dy: FlexTensor,
        motion: Motion,
        wanted: [bool; 3],
    ) -> [Option<FlexTensor>; 3] {
        let (x, alpha, dy) = (f32s(x), f32s(alpha), f32s(dy));
        let [n, c, h, w] = dims(&x, &alpha, motion);
        let plane = h * w;
        let (xv, av, dyv) = (
            x.as_slice::<f32>().expect("float32"),
            alpha.as_slice::<f32>().expect("float32"),
            dy.as_slice::<f32>().expect("float32"),
        );
        assert_eq!(dyv.len(), xv.len(), "MFNet: output gradient size");
        let t = motion.segments;
        let dx = wanted[0].then(|| {
            let mut dx = flex_alloc::zeros(Shape::new([n, c, h, w]));
            if plane > 0 {
                dx.storage_mut::<f32>().par_chunks_mut(plane).enumerate().for_each(|(i, out)| {
                    let (image, ch) = (i / c, i % c);
                    let before = (image % t > 0).then(|| &dyv[(i - c) * plane..][..plane]);
                    let d = motion.direction(ch, c);
                    plane_dx(&dyv[i * plane..][..plane], before, image % t + 1 < t, [h, w], d, av[ch], out);
                });
            }
            dx
        });
        // Per channel, the images in order: the same sum whatever the thread count.
        let dalpha = wanted[1].then(|| {
            let sums: Vec<f32> = (0..c)
                .into_par_iter()
                .map(|ch| {
                    let d = motion.direction(ch, c);
                    let frames = (0..n).filter(|image| image % t + 1 < t);
                    let at = |image: usize| (image * c + ch) * plane;
                    let per = frames.map(|m| {
                        plane_dalpha(
                            &xv[at(m)..][..plane],
                            &xv[at(m + 1)..][..plane],
                            &dyv[at(m)..][..plane],
                            [h, w],
                            d,
                        )
                    });
                    per.sum::<f64>() as f32
                })
                .collect();
            flex_alloc::from_vec(sums, Shape::new([c]))
        });
        [dx, dalpha, None]
    }
}
