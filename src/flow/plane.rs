//! A single-channel f32 image and the image operations TV-L1 is built from, each with
//! OpenCV's semantics (the reference implementation's: `resize` INTER_LINEAR, `remap`
//! INTER_CUBIC with a constant 0 border and 1/32-pixel map positions, `medianBlur` 5×5
//! with replicated borders, its centred, forward and backward differences), so that the
//! flow agrees with `cv::optflow::DualTVL1OpticalFlow` and not only in spirit.

/// A row-major single-channel image.
#[derive(Clone, Debug, PartialEq)]
pub struct Plane {
    pub w: usize,
    pub h: usize,
    pub data: Vec<f32>,
}

impl Plane {
    pub fn zeros(w: usize, h: usize) -> Self {
        Plane { w, h, data: vec![0.0; w * h] }
    }

    pub fn at(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.w + x]
    }

    /// Rows of `self`, each given to `f` with its index (one pair of frames is one task;
    /// extraction runs pairs in parallel).
    fn fill_rows(&mut self, f: impl Fn(usize, &mut [f32])) {
        let w = self.w;
        self.data.chunks_mut(w).enumerate().for_each(|(y, row)| f(y, row));
    }
}

/// Source position and weight of the next sample for each output index of a linear resize
/// from `src` to `dst` samples, `scale` = source per output sample: OpenCV's centre-aligned
/// mapping, clamped to the edge.
fn linear_taps(src: usize, dst: usize, scale: f64) -> Vec<(usize, f32)> {
    (0..dst)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let s = f.floor();
            let (s, a) = (s as i64, f - s);
            if s < 0 {
                (0, 0.0)
            } else if s as usize >= src - 1 {
                (src - 1, 0.0)
            } else {
                (s as usize, a)
            }
        })
        .collect()
}

/// Bilinear resize to `w`×`h`; `scale` (source pixels per output pixel, per axis) is
/// `1/factor` when the size came from a factor, as `cv::resize(…, fx, fy)`, and the size
/// ratio otherwise.
pub fn resize_linear(src: &Plane, w: usize, h: usize, scale: (f64, f64)) -> Plane {
    let xs = linear_taps(src.w, w, scale.0);
    let ys = linear_taps(src.h, h, scale.1);
    let row = |y: usize| -> Vec<f32> {
        let r = &src.data[y * src.w..(y + 1) * src.w];
        xs.iter().map(|&(s, a)| if a == 0.0 { r[s] } else { r[s] * (1.0 - a) + r[s + 1] * a }).collect()
    };
    let mut out = Plane::zeros(w, h);
    out.fill_rows(|y, dst| {
        let (s, b) = ys[y];
        let r0 = row(s);
        if b == 0.0 {
            dst.copy_from_slice(&r0);
        } else {
            let r1 = row(s + 1);
            for x in 0..w {
                dst[x] = r0[x] * (1.0 - b) + r1[x] * b;
            }
        }
    });
    out
}

/// `cv::resize(src, dst, Size(), f, f, INTER_LINEAR)`: the size rounded, the mapping from
/// the factor itself.
pub fn downscale(src: &Plane, factor: f64) -> Plane {
    let w = (src.w as f64 * factor).round() as usize;
    let h = (src.h as f64 * factor).round() as usize;
    resize_linear(src, w.max(1), h.max(1), (1.0 / factor, 1.0 / factor))
}

/// `cv::resize(src, dst, Size(w, h))`: the mapping from the size ratio.
pub fn resize_to(src: &Plane, w: usize, h: usize) -> Plane {
    resize_linear(src, w, h, (1.0 / (w as f64 / src.w as f64), 1.0 / (h as f64 / src.h as f64)))
}

/// Keys' cubic kernel (a = −0.75, OpenCV's) at fractional offset `x`: weights of the
/// samples at −1, 0, 1, 2.
fn cubic_weights(x: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let c0 = ((A * (x + 1.0) - 5.0 * A) * (x + 1.0) + 8.0 * A) * (x + 1.0) - 4.0 * A;
    let c1 = ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let c2 = ((A + 2.0) * (1.0 - x) - (A + 3.0)) * (1.0 - x) * (1.0 - x) + 1.0;
    [c0, c1, c2, 1.0 - c0 - c1 - c2]
}

/// Map positions are rounded to this fraction of a pixel, as OpenCV's remap tables.
const SUBPIXEL: f32 = 32.0;

/// `src` sampled at (x + u, y + v) for every pixel, bicubic; taps outside the image read 0
/// (OpenCV's default constant border).
pub fn warp_cubic(src: &Plane, u: &Plane, v: &Plane) -> Plane {
    let table: Vec<[f32; 4]> = (0..SUBPIXEL as usize).map(|k| cubic_weights(k as f32 / SUBPIXEL)).collect();
    let tap = |x: i64, y: i64| -> f32 {
        if x < 0 || y < 0 || x >= src.w as i64 || y >= src.h as i64 { 0.0 } else { src.at(x as usize, y as usize) }
    };
    let mut out = Plane::zeros(src.w, src.h);
    out.fill_rows(|y, dst| {
        for (x, d) in dst.iter_mut().enumerate() {
            let i = y * src.w + x;
            // Fixed point as OpenCV: round to 1/32 px (saturating), integer part and fraction.
            let fx = ((x as f32 + u.data[i]) * SUBPIXEL).round_ties_even() as i64;
            let fy = ((y as f32 + v.data[i]) * SUBPIXEL).round_ties_even() as i64;
            let (sx, sy) = (fx.div_euclid(SUBPIXEL as i64) - 1, fy.div_euclid(SUBPIXEL as i64) - 1);
            let wx = table[fx.rem_euclid(SUBPIXEL as i64) as usize];
            let wy = table[fy.rem_euclid(SUBPIXEL as i64) as usize];
            let mut sum = 0.0f32;
            for (r, wr) in wy.iter().enumerate() {
                for (c, wc) in wx.iter().enumerate() {
                    sum += tap(sx + c as i64, sy + r as i64) * (wr * wc);
                }
            }
            *d = sum;
        }
    });
    out
}

/// Median of each 5×5 neighbourhood, the border replicated.
pub fn median5(src: &Plane) -> Plane {
    let (w, h) = (src.w as i64, src.h as i64);
    let mut out = Plane::zeros(src.w, src.h);
    out.fill_rows(|y, dst| {
        let mut window = [0.0f32; 25];
        for (x, d) in dst.iter_mut().enumerate() {
            let mut k = 0;
            for dy in -2..=2i64 {
                let yy = (y as i64 + dy).clamp(0, h - 1) as usize;
                for dx in -2..=2i64 {
                    window[k] = src.at((x as i64 + dx).clamp(0, w - 1) as usize, yy);
                    k += 1;
                }
            }
            *d = *window.select_nth_unstable_by(12, f32::total_cmp).1;
        }
    });
    out
}

/// Centred differences, halved one-sided ones at the borders (the reference's image
/// gradient).
pub fn centred_gradient(src: &Plane) -> (Plane, Plane) {
    let (w, h) = (src.w, src.h);
    let mut dx = Plane::zeros(w, h);
    let mut dy = Plane::zeros(w, h);
    dx.fill_rows(|y, row| {
        for (x, d) in row.iter_mut().enumerate() {
            *d = 0.5 * (src.at((x + 1).min(w - 1), y) - src.at(x.saturating_sub(1), y));
        }
    });
    dy.fill_rows(|y, row| {
        for (x, d) in row.iter_mut().enumerate() {
            *d = 0.5 * (src.at(x, (y + 1).min(h - 1)) - src.at(x, y.saturating_sub(1)));
        }
    });
    (dx, dy)
}

/// Forward differences, 0 on the last column (x) and row (y).
pub fn forward_gradient(src: &Plane, dx: &mut Plane, dy: &mut Plane) {
    let (w, h) = (src.w, src.h);
    dx.fill_rows(|y, row| {
        for (x, d) in row.iter_mut().enumerate() {
            *d = if x + 1 < w { src.at(x + 1, y) - src.at(x, y) } else { 0.0 };
        }
    });
    dy.fill_rows(|y, row| {
        for (x, d) in row.iter_mut().enumerate() {
            *d = if y + 1 < h { src.at(x, y + 1) - src.at(x, y) } else { 0.0 };
        }
    });
}

/// Divergence by backward differences, the adjoint of [`forward_gradient`]: at the first
/// column (row) the field's own value.
pub fn divergence(px: &Plane, py: &Plane, div: &mut Plane) {
    div.fill_rows(|y, row| {
        for (x, d) in row.iter_mut().enumerate() {
            let ddx = if x > 0 { px.at(x, y) - px.at(x - 1, y) } else { px.at(x, y) };
            let ddy = if y > 0 { py.at(x, y) - py.at(x, y - 1) } else { py.at(x, y) };
            *d = ddx + ddy;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: usize, h: usize) -> Plane {
        Plane { w, h, data: (0..w * h).map(|i| ((i % w) * 3 + (i / w) * 7) as f32).collect() }
    }

    #[test]
    fn resize_keeps_a_linear_ramp_inside() {
        let p = ramp(20, 10);
        let d = downscale(&p, 0.8);
        assert_eq!((d.w, d.h), (16, 8));
        // Output (1, 1) samples source (1.375, 1.375): 3·1.375 + 7·1.375.
        assert!((d.at(1, 1) - 13.75).abs() < 1e-4, "{}", d.at(1, 1));
        let up = resize_to(&d, 20, 10);
        assert_eq!((up.w, up.h), (20, 10));
    }

    #[test]
    fn cubic_warp_is_exact_on_whole_pixels_and_zero_outside() {
        let p = ramp(8, 6);
        let shift = |c: f32| Plane { w: 8, h: 6, data: vec![c; 48] };
        let same = warp_cubic(&p, &shift(0.0), &shift(0.0));
        // Interior pixels exactly; the border ones see the zero outside through the kernel's
        // negative lobes only when off-grid, so whole pixels are exact everywhere.
        assert!(same.data.iter().zip(&p.data).all(|(a, b)| (a - b).abs() < 1e-4));
        let moved = warp_cubic(&p, &shift(1.0), &shift(0.0));
        assert!((moved.at(2, 2) - p.at(3, 2)).abs() < 1e-4);
        assert_eq!(moved.at(7, 2), 0.0);
        // Half a pixel on a ramp: the mean of the neighbours (the kernel is symmetric).
        let half = warp_cubic(&p, &shift(0.5), &shift(0.0));
        assert!((half.at(3, 2) - 0.5 * (p.at(3, 2) + p.at(4, 2))).abs() < 1e-3);
        assert!(cubic_weights(0.3).iter().sum::<f32>() == 1.0);
    }

    #[test]
    fn median_removes_an_outlier_and_divergence_is_minus_the_adjoint_of_the_gradient() {
        let mut p = Plane::zeros(7, 7);
        p.data[24] = 100.0;
        assert_eq!(median5(&p).at(3, 3), 0.0);
        // Σ ∇u · p = −Σ u div p for the forward gradient and this divergence.
        let u = ramp(5, 4);
        // p vanishing where the gradient is forced to 0 (last column for x, last row for y).
        let px = Plane {
            w: 5,
            h: 4,
            data: (0..20).map(|i| if i % 5 == 4 { 0.0 } else { (i as f32 * 0.37).sin() }).collect(),
        };
        let py =
            Plane { w: 5, h: 4, data: (0..20).map(|i| if i >= 15 { 0.0 } else { (i as f32 * 0.91).cos() }).collect() };
        let (mut gx, mut gy) = (Plane::zeros(5, 4), Plane::zeros(5, 4));
        forward_gradient(&u, &mut gx, &mut gy);
        let mut div = Plane::zeros(5, 4);
        divergence(&px, &py, &mut div);
        let lhs: f32 = (0..20).map(|i| gx.data[i] * px.data[i] + gy.data[i] * py.data[i]).sum();
        let rhs: f32 = (0..20).map(|i| u.data[i] * div.data[i]).sum();
        assert!((lhs + rhs).abs() < 1e-3, "{lhs} vs {rhs}");
        let (cx, cy) = centred_gradient(&u);
        assert_eq!((cx.at(2, 2), cy.at(2, 2)), (3.0, 7.0));
        assert_eq!((cx.at(0, 0), cy.at(0, 0)), (1.5, 3.5));
    }
}
