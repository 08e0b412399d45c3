//! Motion for the flow stream of two-stream networks: dense optical flow, TV-L1 (`tvl1.rs`)
//! or Farnebäck's (`farneback.rs`), on the grey levels of consecutive frames (`plane.rs`: the
//! image operations with OpenCV's semantics); or the motion vectors compressed video stores
//! (`motion_vectors.rs`), as they are or accumulated back to the I-frame as CoViAR
//! (`accumulated.rs`); and denseflow's quantisation of a field to TSN's two grey images.
//! Stored by `data::flow::extract`, computed on demand by `data::live_flow`.

pub mod accumulated;
pub mod farneback;
pub mod motion_vectors;
pub mod plane;
pub mod tvl1;

use image::{GrayImage, RgbImage};

pub use farneback::Farneback;
pub use plane::Plane;
pub use tvl1::{Flow, TvL1};

/// A dense flow algorithm with its parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum Solver {
    /// TV-L1: what TSN's and TSM's flow was made with; seconds a pair on a CPU.
    TvL1(TvL1),
    /// Farnebäck's polynomial expansion: about 100× faster, coarser.
    Farneback(Farneback),
}

impl Default for Solver {
    fn default() -> Self {
        Self::TvL1(TvL1::default())
    }
}

impl Solver {
    /// The flow from `i0` to `i1` (grey levels, one size).
    pub fn flow(&self, i0: &Plane, i1: &Plane) -> Flow {
        match self {
            Self::TvL1(s) => s.flow(i0, i1),
            Self::Farneback(s) => s.flow(i0, i1),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::TvL1(_) => "TV-L1",
            Self::Farneback(_) => "Farneback",
        }
    }
}

/// Grey levels of an RGB frame, as OpenCV's `cvtColor(…, COLOR_BGR2GRAY)` on 8-bit images
/// (the reference converts before computing flow): Y = 0.299 R + 0.587 G + 0.114 B in 14-bit
/// fixed point, rounded.
pub fn grey(img: &RgbImage) -> Plane {
    let data = img
        .pixels()
        .map(|p| {
            let [r, g, b] = p.0.map(u32::from);
            ((r * 4899 + g * 9617 + b * 1868 + (1 << 13)) >> 14) as f32
        })
        .collect();
    Plane { w: img.width() as usize, h: img.height() as usize, data }
}

/// denseflow's quantisation of one flow component: [−bound, bound] → [0, 255], clipped,
/// rounded half to even.
pub fn quantise(value: f32, bound: f32) -> u8 {
    if value > bound {
        255
    } else if value < -bound {
        0
    } else {
        (255.0 * (value as f64 + bound as f64) / (2.0 * bound as f64)).round_ties_even() as u8
    }
}

/// The inverse of [`quantise`] up to its step: the flow a stored grey level stands for.
pub fn dequantise(level: u8, bound: f32) -> f32 {
    level as f32 / 255.0 * 2.0 * bound - bound
}

/// The two grey images TSN stores for one flow field.
pub fn to_images(flow: &Flow, bound: f32) -> (GrayImage, GrayImage) {
    let image = |p: &Plane| {
        let bytes = p.data.iter().map(|&v| quantise(v, bound)).collect();
        GrayImage::from_raw(p.w as u32, p.h as u32, bytes).expect("one byte per pixel")
    };
    (image(&flow.u), image(&flow.v))
}

/// Average end-point error between two flows over the pixels at least `margin` from the
/// border.
pub fn end_point_error(a: &Flow, b: &Flow, margin: usize) -> f64 {
    let (w, h) = (a.u.w, a.u.h);
    assert!(b.u.w == w && b.u.h == h, "flows of different sizes");
    let (mut sum, mut n) = (0.0f64, 0usize);
    for y in margin..h.saturating_sub(margin) {
        for x in margin..w.saturating_sub(margin) {
            let du = (a.u.at(x, y) - b.u.at(x, y)) as f64;
            let dv = (a.v.at(x, y) - b.v.at(x, y)) as f64;
            sum += du.hypot(dv);
            n += 1;
        }
    }
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth texture with detail at several scales, moved by (dx, dy) pixels.
    pub fn texture(w: usize, h: usize, dx: f32, dy: f32) -> Plane {
        let f = |x: f32, y: f32| {
            128.0
                + 50.0 * (0.21 * x + 0.05 * y).sin()
                + 40.0 * (0.13 * y - 0.07 * x).cos()
                + 25.0 * (0.37 * x).sin() * (0.31 * y).cos()
        };
        let data = (0..w * h).map(|i| f((i % w) as f32 - dx, (i / w) as f32 - dy)).collect();
        Plane { w, h, data }
    }

    #[test]
    fn a_known_translation_is_recovered() {
        for (dx, dy) in [(1.5f32, -0.75f32), (-3.0, 2.0), (0.0, 0.0)] {
            let (a, b) = (texture(96, 72, 0.0, 0.0), texture(96, 72, dx, dy));
            let flow = TvL1::default().flow(&a, &b);
            let truth = Flow {
                u: Plane { w: 96, h: 72, data: vec![dx; 96 * 72] },
                v: Plane { w: 96, h: 72, data: vec![dy; 96 * 72] },
            };
            let epe = end_point_error(&flow, &truth, 10);
            assert!(epe < 0.1, "shift ({dx}, {dy}): EPE {epe}");
        }
    }

    #[test]
    fn quantisation_is_denseflows() {
        assert_eq!((quantise(-20.0, 20.0), quantise(0.0, 20.0), quantise(20.0, 20.0)), (0, 128, 255));
        assert_eq!((quantise(-1e9, 20.0), quantise(f32::INFINITY, 20.0)), (0, 255));
        // 127.5 rounds to even.
        assert_eq!(quantise(0.0, 20.0), 128);
        assert!((dequantise(quantise(3.3, 20.0), 20.0) - 3.3).abs() <= 20.0 / 255.0);
        let img = RgbImage::from_pixel(1, 1, image::Rgb([255, 0, 0]));
        assert_eq!(grey(&img).data[0], 76.0);
    }
}
