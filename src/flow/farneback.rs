//! Farnebäck's dense optical flow ("Two-Frame Motion Estimation Based on Polynomial
//! Expansion", SCIA 2003), with OpenCV's `calcOpticalFlowFarneback` conventions and
//! defaults as its Python tutorials call it (pyramid 0.5 × 3 levels, 15×15 box window,
//! 3 iterations, n = 5, σ = 1.2): the faster alternative to TV-L1.
//!
//! Each image is locally a quadratic polynomial f(x) ≈ xᵀAx + bᵀx + c, fitted by least
//! squares with a Gaussian applicability over a (2n+1)² neighbourhood (separable filters).
//! A displacement d moves f₁ into f₂; with A = (A₁ + A₂)/2 and Δb = −½(b₂ − b₁) + A·d̃ at the
//! prior d̃, d solves Σ_w AᵀA d = Σ_w AᵀΔb over a box window w. Coarse to fine, levels
//! under 32 pixels skipped; pixels within 5 of the border weigh less (OpenCV's weights).

use super::plane::{Plane, resize_to};
use super::tvl1::Flow;

/// The parameters; `Default` is what OpenCV's tutorials pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Farneback {
    /// Size ratio between pyramid levels.
    pub pyr_scale: f64,
    /// Pyramid levels above the image itself.
    pub levels: usize,
    /// Side of the box window the displacement equations are averaged over.
    pub winsize: usize,
    /// Displacement updates per level.
    pub iterations: usize,
    /// Half-side of the polynomial's neighbourhood.
    pub poly_n: usize,
    /// Standard deviation of its Gaussian applicability.
    pub poly_sigma: f64,
}

impl Default for Farneback {
    fn default() -> Self {
        Farneback { pyr_scale: 0.5, levels: 3, winsize: 15, iterations: 3, poly_n: 5, poly_sigma: 1.2 }
    }
}

/// Levels smaller than this (either side) are skipped.
const MIN_SIZE: f64 = 32.0;
/// Pixels this close to the border weigh less in the displacement equations.
const BORDER: [f32; 5] = [0.14, 0.14, 0.4472, 0.4472, 0.4472];

/// Polynomial coefficients per pixel: b_x, b_y, a_xx, a_yy, a_xy.
type Coefficients = [Plane; 5];

impl Farneback {
    /// The flow from `i0` to `i1` (grey levels, the same size).
    pub fn flow(&self, i0: &Plane, i1: &Plane) -> Flow {
        assert!(i0.w == i1.w && i0.h == i1.h && i0.w >= 3 && i0.h >= 3, "Farneback needs two images of one size ≥ 3×3");
        let mut flow: Option<Flow> = None;
        for k in (0..=self.levels).rev() {
            let scale = self.pyr_scale.powi(k as i32);
            let (w, h) = ((i0.w as f64 * scale).round() as usize, (i0.h as f64 * scale).round() as usize);
            if k > 0 && ((i0.w as f64 * scale) < MIN_SIZE || (i0.h as f64 * scale) < MIN_SIZE) {
                continue;
            }
            let sigma = (1.0 / scale - 1.0) * 0.5;
            let ksize = (((sigma * 5.0).round() as usize) | 1).max(3);
            let level = |img: &Plane| self.expand(&resize_to(&gaussian_blur(img, ksize, sigma), w, h));
            let (r0, r1) = (level(i0), level(i1));
            let mut f = match flow.take() {
                None => Flow { u: Plane::zeros(w, h), v: Plane::zeros(w, h) },
                Some(prev) => {
                    let up = |p: &Plane| {
                        let mut r = resize_to(p, w, h);
                        r.data.iter_mut().for_each(|x| *x /= self.pyr_scale as f32);
                        r
                    };
                    Flow { u: up(&prev.u), v: up(&prev.v) }
                }
            };
            for _ in 0..self.iterations {
                let m = equations(&r0, &r1, &f);
                f = solve(&m, self.winsize);
            }
            flow = Some(f);
        }
        flow.expect("the finest level is never skipped")
    }

    /// The polynomial expansion of `img`: per pixel the least-squares quadratic under a
    /// Gaussian applicability of σ `poly_sigma` over (2n+1)², borders replicated.
    fn expand(&self, img: &Plane) -> Coefficients {
        let n = self.poly_n as i64;
        let g: Vec<f64> =
            (-n..=n).map(|k| (-(k * k) as f64 / (2.0 * self.poly_sigma * self.poly_sigma)).exp()).collect();
        let total: f64 = g.iter().sum();
        let g: Vec<f64> = g.iter().map(|v| v / total).collect();
        let moment = |p: i32| (-n..=n).zip(&g).map(|(k, gk)| gk * (k as f64).powi(p)).sum::<f64>();
        let (m2, m4) = (moment(2), moment(4));
        // The {1, x², y²} block of the normal equations; x, y and xy decouple.
        let (ig03, ig33) = inverse_entries(m2, m4);
        let (ig11, ig55) = (1.0 / m2, 1.0 / (m2 * m2));
        let (w, h) = (img.w, img.h);
        let at = |x: i64, y: i64| {
            img.data[(y.clamp(0, h as i64 - 1) as usize) * w + x.clamp(0, w as i64 - 1) as usize] as f64
        };
        // Vertical pass: Σ g, Σ k·g, Σ k²·g along y.
        let mut v = vec![[0.0f64; 3]; w * h];
        for y in 0..h as i64 {
            for x in 0..w as i64 {
                let mut s = [0.0; 3];
                for (k, gk) in (-n..=n).zip(&g) {
                    let p = at(x, y + k) * gk;
                    s = [s[0] + p, s[1] + p * k as f64, s[2] + p * (k * k) as f64];
                }
                v[y as usize * w + x as usize] = s;
            }
        }
        let mut out: Coefficients = std::array::from_fn(|_| Plane::zeros(w, h));
        for y in 0..h {
            for x in 0..w as i64 {
                let mut b = [0.0f64; 6];
                for (k, gk) in (-n..=n).zip(&g) {
                    let s = v[y * w + x.saturating_add(k).clamp(0, w as i64 - 1) as usize];
                    let kf = k as f64;
                    b[0] += gk * s[0];
                    b[1] += gk * s[1];
                    b[2] += gk * kf * s[0];
                    b[3] += gk * s[2];
                    b[4] += gk * kf * kf * s[0];
                    b[5] += gk * kf * s[1];
                }
                let i = y * w + x as usize;
                out[0].data[i] = (b[2] * ig11) as f32;
                out[1].data[i] = (b[1] * ig11) as f32;
                out[2].data[i] = (b[0] * ig03 + b[4] * ig33) as f32;
                out[3].data[i] = (b[0] * ig03 + b[3] * ig33) as f32;
                out[4].data[i] = (b[5] * ig55) as f32;
            }
        }
        out
    }
}

/// Entries (1, x²) and (x², x²) of the inverse of the normal equations' block over the basis
/// {1, x², y²}: [[1, m₂, m₂], [m₂, m₄, m₂²], [m₂, m₂², m₄]] (the applicability sums to 1).
fn inverse_entries(m2: f64, m4: f64) -> (f64, f64) {
    let c = m2 * m2;
    let det = m4 * m4 - c * c - m2 * (m2 * m4 - m2 * c) + m2 * (m2 * c - m4 * m2);
    ((m2 * c - m2 * m4) / det, (m4 - m2 * m2) / det)
}

/// Per pixel the displacement equations at the prior `flow`: AᵀA (xx, xy, yy) and AᵀΔb (x, y),
/// border pixels down-weighted; a prior leading outside the image uses A₁ alone and Δb = A·d̃.
fn equations(r0: &Coefficients, r1: &Coefficients, flow: &Flow) -> [Plane; 5] {
    let (w, h) = (r0[0].w, r0[0].h);
    let mut m: [Plane; 5] = std::array::from_fn(|_| Plane::zeros(w, h));
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let (dx, dy) = (flow.u.data[i], flow.v.data[i]);
            let (fx, fy) = (x as f32 + dx, y as f32 + dy);
            let (x1, y1) = (fx.floor(), fy.floor());
            let (ax, ay) = (fx - x1, fy - y1);
            let inside = x1 >= 0.0 && y1 >= 0.0 && (x1 as usize) < w - 1 && (y1 as usize) < h - 1;
            let r = |c: usize| r0[c].data[i];
            let (mut bx, mut by, axx, ayy, axy) = if inside {
                let j = y1 as usize * w + x1 as usize;
                let s = |c: usize| {
                    let p = &r1[c].data;
                    (1.0 - ax) * (1.0 - ay) * p[j]
                        + ax * (1.0 - ay) * p[j + 1]
                        + (1.0 - ax) * ay * p[j + w]
                        + ax * ay * p[j + w + 1]
                };
                (s(0), s(1), (r(2) + s(2)) * 0.5, (r(3) + s(3)) * 0.5, (r(4) + s(4)) * 0.25)
            } else {
                (0.0, 0.0, r(2), r(3), r(4) * 0.5)
            };
            bx = (r(0) - bx) * 0.5 + axx * dx + axy * dy;
            by = (r(1) - by) * 0.5 + axy * dx + ayy * dy;
            let edge = |p: usize, n: usize| {
                let low = if p < BORDER.len() { BORDER[p] } else { 1.0 };
                low * if p + BORDER.len() >= n { BORDER[n - 1 - p] } else { 1.0 }
            };
            let k = edge(x, w) * edge(y, h);
            let (bx, by, axx, ayy, axy) = (bx * k, by * k, axx * k, ayy * k, axy * k);
            m[0].data[i] = axx * axx + axy * axy;
            m[1].data[i] = (axx + ayy) * axy;
            m[2].data[i] = ayy * ayy + axy * axy;
            m[3].data[i] = axx * bx + axy * by;
            m[4].data[i] = axy * bx + ayy * by;
        }
    }
    m
}

/// The displacement solving the equations averaged over a `size`² box (borders replicated):
/// d = (Σ AᵀA + 10⁻³)⁻¹ Σ AᵀΔb.
fn solve(m: &[Plane; 5], size: usize) -> Flow {
    let (w, h) = (m[0].w, m[0].h);
    let sums: Vec<Plane> = m.iter().map(|p| box_mean(p, size)).collect();
    let mut flow = Flow { u: Plane::zeros(w, h), v: Plane::zeros(w, h) };
    for i in 0..w * h {
        let [gxx, gxy, gyy, hx, hy] = [0, 1, 2, 3, 4].map(|c| sums[c].data[i] as f64);
        let idet = 1.0 / (gxx * gyy - gxy * gxy + 1e-3);
        flow.u.data[i] = ((gyy * hx - gxy * hy) * idet) as f32;
        flow.v.data[i] = ((gxx * hy - gxy * hx) * idet) as f32;
    }
    flow
}

/// The mean over a `size`² box around each pixel, borders replicated: running sums, a
/// sample entering and one leaving per step.
fn box_mean(p: &Plane, size: usize) -> Plane {
    let (w, h, r) = (p.w, p.h, (size / 2) as i64);
    let scale = 1.0 / (size * size) as f64;
    let clamp = |v: i64, n: usize| v.clamp(0, n as i64 - 1) as usize;
    let mut vertical = vec![0.0f64; w * h];
    for x in 0..w {
        let mut s: f64 = (-r..=r).map(|k| p.data[clamp(k, h) * w + x] as f64).sum();
        for y in 0..h as i64 {
            vertical[y as usize * w + x] = s;
            s += p.data[clamp(y + r + 1, h) * w + x] as f64 - p.data[clamp(y - r, h) * w + x] as f64;
        }
    }
    let mut out = Plane::zeros(w, h);
    for y in 0..h {
        let row = &vertical[y * w..(y + 1) * w];
        let mut s: f64 = (-r..=r).map(|k| row[clamp(k, w)]).sum();
        for x in 0..w as i64 {
            out.data[y * w + x as usize] = (s * scale) as f32;
            s += row[clamp(x + r + 1, w)] - row[clamp(x - r, w)];
        }
    }
    out
}

/// `GaussianBlur(src, (k, k), σ)` with a reflected border (…cb|abcd|cb…); σ ≤ 0 takes the
/// standard small binomial kernels.
fn gaussian_blur(src: &Plane, k: usize, sigma: f64) -> Plane {
    let kernel: Vec<f64> = match (k, sigma > 0.0) {
        (3, false) => vec![0.25, 0.5, 0.25],
        (5, false) => vec![0.0625, 0.25, 0.375, 0.25, 0.0625],
        _ => {
            let s = if sigma > 0.0 { sigma } else { 0.3 * ((k as f64 - 1.0) * 0.5 - 1.0) + 0.8 };
            let c = (k as f64 - 1.0) / 2.0;
            let g: Vec<f64> = (0..k).map(|i| (-((i as f64 - c).powi(2)) / (2.0 * s * s)).exp()).collect();
            let t: f64 = g.iter().sum();
            g.into_iter().map(|v| v / t).collect()
        }
    };
    let r = (k / 2) as i64;
    let reflect = |v: i64, n: usize| {
        let n = n as i64;
        if n == 1 {
            return 0;
        }
        let period = 2 * (n - 1);
        let m = v.rem_euclid(period);
        (if m < n { m } else { period - m }) as usize
    };
    let (w, h) = (src.w, src.h);
    let mut tmp = Plane::zeros(w, h);
    for y in 0..h {
        for x in 0..w as i64 {
            let s: f64 = (-r..=r).zip(&kernel).map(|(d, g)| g * src.data[y * w + reflect(x + d, w)] as f64).sum();
            tmp.data[y * w + x as usize] = s as f32;
        }
    }
    let mut out = Plane::zeros(w, h);
    for y in 0..h as i64 {
        for x in 0..w {
            let s: f64 = (-r..=r).zip(&kernel).map(|(d, g)| g * tmp.data[reflect(y + d, h) * w + x] as f64).sum();
            out.data[y as usize * w + x] = s as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::end_point_error;

    /// A smooth texture moved by (dx, dy) pixels.
    fn texture(w: usize, h: usize, dx: f32, dy: f32) -> Plane {
        let f = |x: f32, y: f32| {
            128.0
                + 50.0 * (0.21 * x + 0.05 * y).sin()
                + 40.0 * (0.13 * y - 0.07 * x).cos()
                + 25.0 * (0.37 * x).sin() * (0.31 * y).cos()
        };
        Plane { w, h, data: (0..w * h).map(|i| f((i % w) as f32 - dx, (i / w) as f32 - dy)).collect() }
    }

    /// A translated texture's flow is the translation, away from the border.
    #[test]
    fn recovers_a_translation() {
        for (dx, dy) in [(1.5, -0.75), (-3.0, 2.0), (0.0, 0.0)] {
            let (i0, i1) = (texture(96, 80, 0.0, 0.0), texture(96, 80, dx, dy));
            let flow = Farneback::default().flow(&i0, &i1);
            let (w, h) = (96, 80);
            let truth = Flow { u: Plane { w, h, data: vec![dx; w * h] }, v: Plane { w, h, data: vec![dy; w * h] } };
            let epe = end_point_error(&flow, &truth, 12);
            assert!(epe < 0.1, "({dx}, {dy}): EPE {epe}");
        }
    }

    /// The polynomial expansion of a quadratic is the quadratic (inside the border).
    #[test]
    fn expands_a_quadratic_exactly() {
        let (w, h) = (24, 24);
        let q = |x: f32, y: f32| 3.0 + 0.5 * x - 0.25 * y + 0.02 * x * x + 0.03 * y * y - 0.01 * x * y;
        let img = Plane { w, h, data: (0..w * h).map(|i| q((i % w) as f32, (i / w) as f32)).collect() };
        let r = Farneback::default().expand(&img);
        let (x, y) = (12.0f32, 11.0f32);
        let i = 11 * w + 12;
        // Around (x, y): b = ∇q there, A = the quadratic part.
        let want = [0.5 + 0.04 * x - 0.01 * y, -0.25 + 0.06 * y - 0.01 * x, 0.02, 0.03, -0.01];
        for (c, want) in want.iter().enumerate() {
            assert!((r[c].data[i] - want).abs() < 1e-4, "coefficient {c}: {} vs {want}", r[c].data[i]);
        }
    }
}
