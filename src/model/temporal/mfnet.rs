//! MFNet-style fixed motion filters (Lee, Kim, Kang, Lee, "Motion Feature Network: Fixed
//! Motion Filter for Action Recognition", ECCV 2018): motion features are differences between
//! a frame's features and the next frame's, the latter shifted one pixel in a fixed direction —
//! filters that are not learned. Here the channels are split into five groups, one per
//! direction (none, up, down, left, right), and the motion branch is added back with a learned
//! per-channel weight:
//!
//! `m[t, c] = shift_{d(c)}(x[t+1, c]) − x[t, c]` (`m` = 0 on the last frame),
//! `y = x + α ⊙ m`,  `α = 0` at the start, so an ImageNet backbone starts unchanged.
//!
//! It sits where GSM does (between a branch's first convolution and its BN).

use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Tensor};

use super::module::{PERTURBATION, Place, Spec, TemporalInit, TemporalModule, TemporalOpts};
use crate::model::cost;
use crate::ops::motion_filter::{self, Motion};

/// The directions of the fixed filters, (dy, dx): the next frame's feature at (h + dy, w + dx)
/// is compared with this frame's at (h, w).
pub const DIRECTIONS: [(isize, isize); 5] = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)];

/// The motion branch on a feature map of `alpha.dims()[0]` channels.
#[derive(Module, Debug)]
pub struct MotionFilter {
    /// (C): each channel's weight of its motion feature.
    pub alpha: Param<Tensor<1>>,
    pub num_segments: usize,
}

/// The channels of direction group `g` of `c` channels: five near-equal contiguous groups.
pub fn group(c: usize, g: usize) -> std::ops::Range<usize> {
    motion_filter::group(c, g, DIRECTIONS.len())
}

/// `x` (…, H, W) read at (h + dy, w + dx), zero outside the map.
fn shifted(x: Tensor<5>, (dy, dx): (isize, isize)) -> Tensor<5> {
    let shift = |x: Tensor<5>, dim: usize, d: isize| -> Tensor<5> {
        let len = x.dims()[dim];
        let k = d.unsigned_abs();
        if k == 0 {
            return x;
        }
        if k >= len {
            return x.zeros_like();
        }
        let pad = x.clone().narrow(dim, 0, k).zeros_like();
        match d > 0 {
            true => Tensor::cat(vec![x.narrow(dim, k, len - k), pad], dim),
            false => Tensor::cat(vec![pad, x.narrow(dim, 0, len - k)], dim),
        }
    };
    shift(shift(x, 3, dy), 4, dx)
}

impl MotionFilter {
    /// No motion at the start: every α zero.
    pub fn new(channels: usize, num_segments: usize, device: &Device) -> Self {
        Self::with_init(channels, num_segments, TemporalInit::Identity, device)
    }

    /// No motion, or ([`TemporalInit::Perturbed`]) α drawn from N(0, 0.3).
    pub fn with_init(channels: usize, num_segments: usize, init: TemporalInit, device: &Device) -> Self {
        let alpha = match init {
            TemporalInit::Identity => Tensor::zeros([channels], device),
            TemporalInit::Perturbed => Tensor::random([channels], Distribution::Normal(0.0, PERTURBATION), device),
        };
        Self { alpha: Param::from_tensor(alpha), num_segments }
    }

    /// The motion features `m`, `(batch, segments, C, H, W)`.
    pub fn motion(&self, x: Tensor<5>) -> Tensor<5> {
        let [_, t, c, _, _] = x.dims();
        if t < 2 {
            return x.zeros_like();
        }
        let groups: Vec<Tensor<5>> = DIRECTIONS
            .iter()
            .enumerate()
            .filter(|(g, _)| !group(c, *g).is_empty())
            .map(|(g, &d)| {
                let r = group(c, g);
                let xg = x.clone().narrow(2, r.start, r.len());
                let next = shifted(xg.clone().narrow(1, 1, t - 1), d);
                let diff = next - xg.clone().narrow(1, 0, t - 1);
                Tensor::cat(vec![diff, xg.narrow(1, 0, 1).zeros_like()], 1)
            })
            .collect();
        Tensor::cat(groups, 2)
    }

    /// `(batch·segments, C, H, W)` → the same shape: one fused pass where it applies
    /// (`ops::motion_filter`, float32 on flex), [`MotionFilter::forward_composed`] otherwise.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if motion_filter::applies(&x) && self.alpha.val().dtype() == x.dtype() {
            let [bt, c, h, w] = x.dims();
            if cost::is_recording() {
                cost::add((bt * c * h * w) as u64);
            }
            let motion = Motion { segments: self.num_segments, directions: &DIRECTIONS };
            return motion_filter::motion_branch(x, self.alpha.val(), motion);
        }
        self.forward_composed(x)
    }

    /// The reference: [`MotionFilter::motion`] op by op, weighted and added.
    pub fn forward_composed(&self, x: Tensor<4>) -> Tensor<4> {
        let [bt, c, h, w] = x.dims();
        let t = self.num_segments;
        assert_eq!(bt % t, 0, "MFNet: {bt} frames is not a multiple of {t} segments");
        assert_eq!(c, self.alpha.dims()[0], "MFNet built for {} channels got {c}", self.alpha.dims()[0]);
        if cost::is_recording() {
            cost::add((bt * c * h * w) as u64);
        }
        let m = self.motion(x.clone().reshape([bt / t, t, c, h, w])).reshape([bt, c, h, w]);
        let alpha = self.alpha.val().cast(x.dtype()).reshape([1, c, 1, 1]);
        x + m * alpha
    }
}

impl TemporalModule for MotionFilter {
    const SPEC: Spec = Spec { name: "mfnet", label: "MFNet", official: Some("mfnet"), place: Place::AfterConv };

    fn build(channels: usize, segments: usize, opts: TemporalOpts, device: &Device) -> Self {
        MotionFilter::with_init(channels, segments, opts.init, device)
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        MotionFilter::forward(self, x)
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{TensorData, Tolerance};

    use super::*;
    use crate::model::temporal::tests::{check_gradients, check_identity, sits_in_every_backbone};

    #[test]
    fn starts_as_the_identity() {
        check_identity(MotionFilter::new(7, 4, &Device::flex()), [8, 7, 3, 5]);
    }

    /// Each channel's motion feature, element by element from the definition.
    #[test]
    fn motion_follows_the_definition() {
        let device = Device::flex();
        let (t, c, h, w) = (3, 6, 3, 4);
        let xs: Vec<f32> = (0..t * c * h * w).map(|i| ((i * 37 % 101) as f32) * 0.1).collect();
        let m = MotionFilter::new(c, t, &device);
        let got = m.motion(Tensor::from_data(TensorData::new(xs.clone(), [1, t, c, h, w]), &device));
        let x = |f: usize, ch: usize, y: isize, z: isize| -> f32 {
            if (0..h as isize).contains(&y) && (0..w as isize).contains(&z) {
                xs[((f * c + ch) * h + y as usize) * w + z as usize]
            } else {
                0.0
            }
        };
        let mut expected = Vec::new();
        for f in 0..t {
            for ch in 0..c {
                let g = (0..DIRECTIONS.len()).find(|&g| group(c, g).contains(&ch)).unwrap();
                let (dy, dx) = DIRECTIONS[g];
                for y in 0..h as isize {
                    for z in 0..w as isize {
                        expected.push(if f + 1 < t { x(f + 1, ch, y + dy, z + dx) - x(f, ch, y, z) } else { 0.0 });
                    }
                }
            }
        }
        got.into_data().assert_approx_eq::<f32>(&TensorData::new(expected, [1, t, c, h, w]), Tolerance::absolute(1e-5));
    }

    /// Fewer channels than directions, and one segment: no empty group, no motion.
    #[test]
    fn small_maps_and_single_frames() {
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 3, 1, 1], Distribution::Normal(0.0, 1.0), &device);
        let mut m = MotionFilter::new(3, 2, &device);
        m.alpha = Param::from_tensor(Tensor::ones([3], &device));
        assert_eq!(m.forward(x.clone()).dims(), [2, 3, 1, 1]);
        m.num_segments = 1;
        m.forward(x.clone()).into_data().assert_eq(&x.into_data(), true);
    }

    /// The fused branch gives the composition's output and gradients (input and α), for
    /// channel counts that leave groups empty or uneven and for one-pixel maps.
    #[test]
    fn the_fused_branch_matches_the_composition() {
        let device = Device::flex().autodiff();
        for [n, c, h, w, t] in [[6, 7, 4, 5, 3], [4, 3, 2, 3, 2], [3, 11, 1, 1, 3], [2, 5, 3, 3, 1]] {
            let mut m = MotionFilter::new(c, t, &device);
            m.alpha = Param::from_tensor(Tensor::random([c], Distribution::Normal(0.0, 1.0), &device).require_grad());
            let x = Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let r = Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &device);
            let (fused, composed) = (m.forward(x.clone()), m.forward_composed(x.clone()));
            let close = Tolerance::absolute(1e-5);
            fused.clone().into_data().assert_approx_eq::<f32>(&composed.clone().into_data(), close);
            let (a, b) = ((fused * r.clone()).sum().backward(), (composed * r).sum().backward());
            x.grad(&a).unwrap().into_data().assert_approx_eq::<f32>(&x.grad(&b).unwrap().into_data(), close);
            let (da, db) = (m.alpha.grad(&a).unwrap(), m.alpha.grad(&b).unwrap());
            da.into_data().assert_approx_eq::<f32>(&db.into_data(), Tolerance::absolute(1e-4));
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let device = Device::flex();
        let mut m = MotionFilter::new(5, 2, &device);
        m.alpha = Param::from_tensor(Tensor::random([5], Distribution::Normal(0.0, 1.0), &device));
        check_gradients(m, [4, 5, 3, 3]);
    }

    #[test]
    fn sits_in_every_backbone_where_its_spec_places_it() {
        sits_in_every_backbone(crate::model::TemporalKind::Mfnet, &["mfnet", ".temporal."]);
    }
}
