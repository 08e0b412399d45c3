//! Rendering one synthetic clip: a real object image composited over a real photo, moved,
//! scaled, faded or rotated over time, with camera jitter and sensor noise.

use image::RgbImage;
use rand::Rng;
use rand_distr::{Distribution, Normal};

/// A grey-level object image (Fashion-MNIST item: bright object on black), 28×28.
#[derive(Clone, Debug)]
pub struct Sprite {
    pub size: usize,
    pub pixels: Vec<u8>,
}

impl Sprite {
    /// Bilinear sample at (u, v) in sprite pixels; 0 outside.
    fn sample(&self, u: f32, v: f32) -> f32 {
        let n = self.size as f32;
        if u < -0.5 || v < -0.5 || u > n - 0.5 || v > n - 0.5 {
            return 0.0;
        }
        let (x0, y0) = (u.floor(), v.floor());
        let (fx, fy) = (u - x0, v - y0);
        let at = |x: f32, y: f32| -> f32 {
            if x < 0.0 || y < 0.0 || x >= n || y >= n {
                0.0
            } else {
                self.pixels[y as usize * self.size + x as usize] as f32
            }
        };
        let top = at(x0, y0) * (1.0 - fx) + at(x0 + 1.0, y0) * fx;
        let bottom = at(x0, y0 + 1.0) * (1.0 - fx) + at(x0 + 1.0, y0 + 1.0) * fx;
        (top * (1.0 - fy) + bottom * fy) / 255.0
    }
}

/// The object's state in one frame.
#[derive(Clone, Copy, Debug)]
pub struct Pose {
    /// Centre in frame pixels.
    pub cx: f32,
    pub cy: f32,
    /// Side length of the object in frame pixels.
    pub side: f32,
    /// Rotation in radians (clockwise on screen).
    pub angle: f32,
    pub opacity: f32,
}

/// The forward-time motion of each class pair; the pair's second class is its reversal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Motion {
    LeftToRight,
    Upward,
    Approaching,
    Appearing,
    RotatingClockwise,
}

impl Motion {
    /// In the order `--pairs N` takes them.
    pub const ALL: [Motion; 5] =
        [Motion::LeftToRight, Motion::Upward, Motion::Appearing, Motion::Approaching, Motion::RotatingClockwise];

    /// Class names of the pair: (forward, reversed).
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            Self::LeftToRight => ("moving something from left to right", "moving something from right to left"),
            Self::Upward => ("moving something up", "moving something down"),
            Self::Approaching => ("something approaching the camera", "something moving away from the camera"),
            Self::Appearing => ("something appearing", "something disappearing"),
            Self::RotatingClockwise => ("turning something clockwise", "turning something counter-clockwise"),
        }
    }

    /// Poses over `frames` frames of a `size`-pixel frame, forward in time.
    pub fn poses(self, frames: usize, size: f32, rng: &mut impl Rng) -> Vec<Pose> {
        let side = size * rng.random_range(0.32..0.45);
        let margin = side * 0.5;
        let free = |lo: f32, hi: f32, rng: &mut dyn rand::RngCore| -> f32 { lo + (hi - lo) * rng.random::<f32>() };
        let mut base = Pose {
            cx: free(margin, size - margin, rng),
            cy: free(margin, size - margin, rng),
            side,
            angle: rng.random_range(-0.3..0.3),
            opacity: 1.0,
        };
        // Motion spans a random part of the clip; before and after it the object rests.
        let start = rng.random_range(0.0..0.25);
        let end = rng.random_range(0.75..1.0);
        let progress = |i: usize| -> f32 {
            let t = if frames > 1 { i as f32 / (frames - 1) as f32 } else { 0.0 };
            let p = ((t - start) / (end - start)).clamp(0.0, 1.0);
            p * p * (3.0 - 2.0 * p)
        };
        let travel = size * rng.random_range(0.35..0.6);
        let (from, to): (Pose, Pose) = match self {
            Self::LeftToRight => {
                base.cx = free(margin, size - margin - travel, rng);
                (base, Pose { cx: base.cx + travel, cy: base.cy + rng.random_range(-3.0..3.0), ..base })
            }
            Self::Upward => {
                base.cy = free(margin + travel, size - margin, rng);
                (base, Pose { cy: base.cy - travel, cx: base.cx + rng.random_range(-3.0..3.0), ..base })
            }
            Self::Approaching => {
                let small = Pose { side: side * rng.random_range(0.45..0.6), ..base };
                (small, Pose { side: side * rng.random_range(1.3..1.6), ..base })
            }
            Self::Appearing => (Pose { opacity: 0.0, ..base }, base),
            Self::RotatingClockwise => {
                let turn = rng.random_range(1.4..2.6);
                (base, Pose { angle: base.angle + turn, ..base })
            }
        };
        (0..frames)
            .map(|i| {
                let p = progress(i);
                let lerp = |a: f32, b: f32| a + (b - a) * p;
                Pose {
                    cx: lerp(from.cx, to.cx),
                    cy: lerp(from.cy, to.cy),
                    side: lerp(from.side, to.side),
                    angle: lerp(from.angle, to.angle),
                    opacity: lerp(from.opacity, to.opacity),
                }
            })
            .collect()
    }
}

/// Composites `sprite` at `pose` over `frame` in colour `tint` (alpha from the sprite).
pub fn draw(frame: &mut RgbImage, sprite: &Sprite, pose: Pose, tint: [f32; 3]) {
    let (w, h) = frame.dimensions();
    let scale = sprite.size as f32 / pose.side;
    let (sin, cos) = pose.angle.sin_cos();
    let reach = pose.side * std::f32::consts::FRAC_1_SQRT_2 + 1.0;
    let x0 = (pose.cx - reach).floor().max(0.0) as u32;
    let y0 = (pose.cy - reach).floor().max(0.0) as u32;
    let x1 = ((pose.cx + reach).ceil() as u32).min(w);
    let y1 = ((pose.cy + reach).ceil() as u32).min(h);
    let half = sprite.size as f32 / 2.0;
    for y in y0..y1 {
        for x in x0..x1 {
            let (dx, dy) = (x as f32 + 0.5 - pose.cx, y as f32 + 0.5 - pose.cy);
            // Inverse rotation (clockwise on screen) into sprite coordinates.
            let u = (cos * dx + sin * dy) * scale + half - 0.5;
            let v = (-sin * dx + cos * dy) * scale + half - 0.5;
            let a = sprite.sample(u, v);
            if a <= 0.0 {
                continue;
            }
            let alpha = (a * 1.6).min(1.0) * pose.opacity;
            let shade = 0.45 + 0.55 * a;
            let p = frame.get_pixel_mut(x, y);
            for (v, t) in p.0.iter_mut().zip(tint) {
                *v = (*v as f32 * (1.0 - alpha) + t * shade * alpha).clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// Adds Gaussian noise of standard deviation `sigma` to every channel.
pub fn add_noise(frame: &mut RgbImage, sigma: f32, rng: &mut impl Rng) {
    let normal = Normal::new(0.0f32, sigma.max(1e-3)).expect("valid sigma");
    for p in frame.pixels_mut() {
        for c in 0..3 {
            p.0[c] = (p.0[c] as f32 + normal.sample(rng)).clamp(0.0, 255.0) as u8;
        }
    }
}

/// A saturated random colour for the object.
pub fn random_tint(rng: &mut impl Rng) -> [f32; 3] {
    let mut c = [rng.random_range(40.0..255.0), rng.random_range(40.0..255.0), rng.random_range(40.0..255.0)];
    let k = rng.random_range(0..3);
    c[k] = 255.0;
    c
}
