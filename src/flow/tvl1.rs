//! TV-L1 optical flow (Zach, Pock, Bischof 2007), as solved by Sánchez, Meinhardt-Llopis
//! and Facciolo (IPOL 2013) and by OpenCV's `DualTVL1OpticalFlow`, whose defaults are the
//! parameters TSN's and TSM's flow (denseflow) was extracted with.
//!
//! Energy: ∫ λ|ρ(u)| + |∇u₁| + |∇u₂|, with ρ the brightness-constancy residual linearised
//! around the current flow. Coarse to fine over a 0.8× pyramid; at each scale `warps`
//! relinearisations; each alternates the pointwise threshold step (v), the primal step
//! u = v + θ div p and Chambolle's dual step p ← (p + τ/θ ∇u) / (1 + τ/θ |∇u|), with a 5×5
//! median filter on u at every outer iteration, until the mean squared change of u falls
//! below ε².

use super::plane::{Plane, centred_gradient, divergence, downscale, forward_gradient, median5, resize_to, warp_cubic};

/// The solver's parameters; `Default` is OpenCV's (and so denseflow's).
#[derive(Clone, Debug, PartialEq)]
pub struct TvL1 {
    /// Time step of the dual update.
    pub tau: f64,
    /// Weight of the data term: smaller gives smoother flow.
    pub lambda: f64,
    /// Coupling of u and v in the splitting.
    pub theta: f64,
    /// Pyramid levels (fewer when the image gets below 16 pixels).
    pub scales: usize,
    /// Relinearisations per level.
    pub warps: usize,
    /// Stopping threshold on the root mean squared change of u per iteration.
    pub epsilon: f64,
    pub inner_iterations: usize,
    pub outer_iterations: usize,
    /// Size ratio between pyramid levels.
    pub scale_step: f64,
    /// Median filter u (5×5) at each outer iteration.
    pub median: bool,
}

impl Default for TvL1 {
    fn default() -> Self {
        TvL1 {
            tau: 0.25,
            lambda: 0.15,
            theta: 0.3,
            scales: 5,
            warps: 5,
            epsilon: 0.01,
            inner_iterations: 30,
            outer_iterations: 10,
            scale_step: 0.8,
            median: true,
        }
    }
}

/// A dense flow field: pixel (x, y) of the first image moves to (x + u, y + v).
#[derive(Clone, Debug)]
pub struct Flow {
    pub u: Plane,
    pub v: Plane,
}

impl TvL1 {
    /// The flow from `i0` to `i1`, grey levels in [0, 255], the same size (at least 3×3).
    pub fn flow(&self, i0: &Plane, i1: &Plane) -> Flow {
        assert!(i0.w == i1.w && i0.h == i1.h && i0.w >= 3 && i0.h >= 3, "TV-L1 needs two images of one size ≥ 3×3");
        let mut pyramid = vec![(i0.clone(), i1.clone())];
        for _ in 1..self.scales.max(1) {
            let (a, b) = pyramid.last().expect("the finest level");
            let (a, b) = (downscale(a, self.scale_step), downscale(b, self.scale_step));
            if a.w < 16 || a.h < 16 {
                break;
            }
            pyramid.push((a, b));
        }
        let (coarsest, _) = pyramid.last().expect("one level");
        let mut flow = Flow { u: Plane::zeros(coarsest.w, coarsest.h), v: Plane::zeros(coarsest.w, coarsest.h) };
        for level in (0..pyramid.len()).rev() {
            let (a, b) = &pyramid[level];
            if flow.u.w != a.w || flow.u.h != a.h {
                let zoom = (1.0 / self.scale_step) as f32;
                let up = |p: &Plane| {
                    let mut r = resize_to(p, a.w, a.h);
                    r.data.iter_mut().for_each(|x| *x *= zoom);
                    r
                };
                flow = Flow { u: up(&flow.u), v: up(&flow.v) };
            }
            self.one_scale(a, b, &mut flow);
        }
        flow
    }

    /// Refines `flow` at one pyramid level.
    fn one_scale(&self, i0: &Plane, i1: &Plane, flow: &mut Flow) {
        let (w, h) = (i0.w, i0.h);
        let (i1x, i1y) = centred_gradient(i1);
        let mut dual = Dual::new(w, h);
        let l_t = (self.lambda * self.theta) as f32;
        let taut = (self.tau / self.theta) as f32;
        let scaled_epsilon = (self.epsilon * self.epsilon * (w * h) as f64) as f32;
        for _ in 0..self.warps {
            let lin = Linearised::new(i0, i1, &i1x, &i1y, flow);
            let mut error = f32::MAX;
            let mut outer = 0;
            while error > scaled_epsilon && outer < self.outer_iterations {
                if self.median {
                    flow.u = median5(&flow.u);
                    flow.v = median5(&flow.v);
                }
                let mut inner = 0;
                while error > scaled_epsilon && inner < self.inner_iterations {
                    error = primal_step(&lin, &mut dual, flow, l_t, self.theta as f32);
                    dual.step(flow, taut);
                    inner += 1;
                }
                outer += 1;
            }
        }
    }
}

/// The data term linearised at the flow u₀ of one warp: I₁ and its gradient sampled at
/// x + u₀, |∇I₁|² and the residual's constant part ρ_c = I₁(x+u₀) − ∇I₁·u₀ − I₀.
struct Linearised {
    ix: Plane,
    iy: Plane,
    grad: Plane,
    rho_c: Plane,
}

impl Linearised {
    fn new(i0: &Plane, i1: &Plane, i1x: &Plane, i1y: &Plane, flow: &Flow) -> Self {
        let iw = warp_cubic(i1, &flow.u, &flow.v);
        let ix = warp_cubic(i1x, &flow.u, &flow.v);
        let iy = warp_cubic(i1y, &flow.u, &flow.v);
        let n = i0.data.len();
        let grad = (0..n).map(|i| ix.data[i] * ix.data[i] + iy.data[i] * iy.data[i]).collect();
        let rho_c = (0..n)
            .map(|i| iw.data[i] - ix.data[i] * flow.u.data[i] - iy.data[i] * flow.v.data[i] - i0.data[i])
            .collect();
        Linearised {
            grad: Plane { w: i0.w, h: i0.h, data: grad },
            rho_c: Plane { w: i0.w, h: i0.h, data: rho_c },
            ix,
            iy,
        }
    }
}

/// The dual variables p₁ = (p11, p12) of u₁ and p₂ = (p21, p22) of u₂, with scratch planes.
struct Dual {
    p: [Plane; 4],
    div: [Plane; 2],
    grad: [Plane; 4],
}

impl Dual {
    fn new(w: usize, h: usize) -> Self {
        let z = || Plane::zeros(w, h);
        Dual { p: [z(), z(), z(), z()], div: [z(), z()], grad: [z(), z(), z(), z()] }
    }

    /// p ← (p + τ/θ ∇u) / (1 + τ/θ |∇u|) for both flow components.
    fn step(&mut self, flow: &Flow, taut: f32) {
        let [gx1, gy1, gx2, gy2] = &mut self.grad;
        forward_gradient(&flow.u, gx1, gy1);
        forward_gradient(&flow.v, gx2, gy2);
        for c in 0..2 {
            let (gx, gy) = (&self.grad[2 * c].data, &self.grad[2 * c + 1].data);
            let [a, b] = self.p.get_disjoint_mut([2 * c, 2 * c + 1]).expect("two planes");
            for i in 0..gx.len() {
                let ng = 1.0 + taut * gx[i].hypot(gy[i]);
                a.data[i] = (a.data[i] + taut * gx[i]) / ng;
                b.data[i] = (b.data[i] + taut * gy[i]) / ng;
            }
        }
    }
}

/// The threshold step v = u + TH(ρ) and the primal step u = v + θ div p, in place; returns
/// Σ|Δu|² over the image (summed in order, in f32, as the reference).
fn primal_step(lin: &Linearised, dual: &mut Dual, flow: &mut Flow, l_t: f32, theta: f32) -> f32 {
    let [p11, p12, p21, p22] = &dual.p;
    let [d1, d2] = &mut dual.div;
    divergence(p11, p12, d1);
    divergence(p21, p22, d2);
    let mut error = 0.0f32;
    for i in 0..flow.u.data.len() {
        let (ix, iy, grad) = (lin.ix.data[i], lin.iy.data[i], lin.grad.data[i]);
        let (u1, u2) = (flow.u.data[i], flow.v.data[i]);
        let rho = lin.rho_c.data[i] + (ix * u1 + iy * u2);
        let (e1, e2) = if rho < -l_t * grad {
            (l_t * ix, l_t * iy)
        } else if rho > l_t * grad {
            (-l_t * ix, -l_t * iy)
        } else if grad > f32::EPSILON {
            let fi = -rho / grad;
            (fi * ix, fi * iy)
        } else {
            (0.0, 0.0)
        };
        let n1 = u1 + e1 + theta * d1.data[i];
        let n2 = u2 + e2 + theta * d2.data[i];
        error += (n1 - u1) * (n1 - u1) + (n2 - u2) * (n2 - u2);
        flow.u.data[i] = n1;
        flow.v.data[i] = n2;
    }
    error
}
