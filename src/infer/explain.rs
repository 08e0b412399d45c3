//! What the gates of GSM (and GSF) route, for `gateshift explain`: one forward of a clip with
//! the modules' own activations tapped (`probe`: each module's input and its tanh gates), and
//! per layer how much of each channel half the gates send through time.
//!
//! GSM splits a layer's (gated) channels in two halves with one tanh gate map each. Half 1's
//! gated part `g₁·x` comes to frame t from frame t+1 — it carries features *back* in time;
//! half 2's `g₂·x` comes from frame t−1 — *forward* in time; `x − g·x` stays. The share a half
//! routes is `Σ|g·x| / Σ|x|` over its channels, frames and positions: 0 with every gate shut,
//! 1 with every gate at ±1.

use anyhow::{Result, bail};
use burn::tensor::{Tensor, TensorData};

use crate::model::{Recognizer, TemporalKind};
use crate::probe;
pub use crate::report::routing::{Half, Layer, halves};

/// Whether a model of this temporal kind has gates to show.
pub fn has_gates(kind: TemporalKind) -> bool {
    matches!(kind, TemporalKind::Gsm | TemporalKind::Gsf)
}

/// One forward of `input` `(B, T·3, H, W)` (the recognizer's input): the logits `(B, classes)` and every gated layer,
/// in the order the network runs them.
pub fn forward(model: &Recognizer, input: Tensor<4>) -> Result<(Tensor<2>, Vec<Layer>)> {
    let (logits, taps) = probe::capture(|| model.forward(input));
    let mut layers = Vec::new();
    let mut pending: Option<TensorData> = None;
    for (name, data) in taps {
        let Some((module, what)) = name.split_once('.') else { continue };
        match what {
            "x" => pending = Some(data),
            "tanh" => {
                let Some(x) = pending.take() else { bail!("{module}: gates tapped without the module's input") };
                layers.push(layer(module, layers.len(), &x, &data)?);
            }
            _ => {}
        }
    }
    Ok((logits, layers))
}

/// A layer's statistics from its input `x` `(B·T, Cg, H, W)` and tanh gates `(B, 2, T, H, W)`.
pub fn layer(module: &str, index: usize, x: &TensorData, gate: &TensorData) -> Result<Layer> {
    let (xs, gs) = (x.shape().to_vec(), gate.shape().to_vec());
    let [bt, c, h, w] = xs[..] else { bail!("{module} input of shape {xs:?}") };
    let [b, 2, t, gh, gw] = gs[..] else { bail!("{module} gates of shape {gs:?}") };
    if b * t != bt || (gh, gw) != (h, w) || !c.is_multiple_of(2) {
        bail!("{module}: input {xs:?} and gates {gs:?} do not match");
    }
    let x = x.clone().convert::<f32>().try_into_vec::<f32>().map_err(|e| anyhow::anyhow!("{module} input: {e:?}"))?;
    let g =
        gate.clone().convert::<f32>().try_into_vec::<f32>().map_err(|e| anyhow::anyhow!("{module} gates: {e:?}"))?;
    let hw = h * w;
    let halves = [0, 1].map(|k| {
        let (mut gx, mut ax) = (vec![0.0f64; t], vec![0.0f64; t]);
        let (mut sum, mut sum_abs) = (0.0f64, 0.0f64);
        for bi in 0..b {
            for f in 0..t {
                let gmap = &g[((bi * 2 + k) * t + f) * hw..][..hw];
                sum += gmap.iter().map(|&v| v as f64).sum::<f64>();
                sum_abs += gmap.iter().map(|&v| v.abs() as f64).sum::<f64>();
                for ch in k * c / 2..(k + 1) * c / 2 {
                    let xmap = &x[((bi * t + f) * c + ch) * hw..][..hw];
                    for (&xv, &gv) in xmap.iter().zip(gmap) {
                        gx[f] += (xv * gv).abs() as f64;
                        ax[f] += xv.abs() as f64;
                    }
                }
            }
        }
        let n = (b * t * hw) as f64;
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        Half {
            mean_gate: sum / n,
            mean_abs_gate: sum_abs / n,
            routed: ratio(gx.iter().sum(), ax.iter().sum()),
            routed_per_frame: gx.iter().zip(&ax).map(|(&a, &b)| ratio(a, b)).collect(),
        }
    });
    let gate = g[..2 * t * hw].to_vec();
    Ok(Layer { module: module.to_string(), index, channels: c, frames: t, height: h, width: w, halves, gate })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    use crate::model::{Arch, ModelConfig};

    /// Gates set by hand (zero weights, biases atanh(0.5) and atanh(−0.25)) give exactly those
    /// gates in every layer, and routed shares |g| of each half; the layers are GSM's, in order.
    #[test]
    fn hand_set_gates_are_reported_as_set() {
        let device = Device::flex();
        for kind in [TemporalKind::Gsm, TemporalKind::Gsf] {
            let cfg = ModelConfig::new(Arch::ResnetMini, kind, 4, 3);
            let model = set_gate_biases(cfg.init(&device), [0.5f32.atanh(), (-0.25f32).atanh()]).inference();
            let x = Tensor::<4>::random([1, 12, 32, 32], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
            let (logits, layers) = forward(&model, x).unwrap();
            assert_eq!(logits.dims(), [1, 3]);
            assert!(!layers.is_empty() && layers.iter().all(|l| l.module == kind.name()), "{kind:?}");
            check_hand_set(&layers);
        }
    }

    fn check_hand_set(layers: &[Layer]) {
        for l in layers {
            let [a, b] = &l.halves;
            assert!((a.mean_gate - 0.5).abs() < 1e-6 && (b.mean_gate + 0.25).abs() < 1e-6, "{l:?}");
            assert!((a.routed - 0.5).abs() < 1e-6 && (b.routed - 0.25).abs() < 1e-6, "{l:?}");
            assert!(a.routed_per_frame.iter().all(|r| (r - 0.5).abs() < 1e-6));
            assert_eq!(l.gate.len(), 2 * l.frames * l.height * l.width);
        }
    }

    fn set_gate_biases(model: Recognizer, bias: [f32; 2]) -> Recognizer {
        use burn::module::{ModuleMapper, Param};
        use burn::tensor::Tensor;
        struct Bias([f32; 2], Vec<String>);
        impl ModuleMapper for Bias {
            fn enter_module(&mut self, name: &str, _: &str) {
                self.1.push(name.to_string());
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.1.pop();
            }
            fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
                let conv3d = self.1.iter().any(|n| n == "conv3D");
                let name = self.1.last().cloned().unwrap_or_default();
                let bias = self.0;
                p.map(|t| match (conv3d, name.as_str()) {
                    (true, "bias") => Tensor::<1>::from_floats(bias, &t.device()).reshape(t.dims()),
                    (true, "weight") => t.zeros_like(),
                    _ => t,
                })
            }
        }
        burn::module::Module::map(model, &mut Bias(bias, Vec::new()))
    }
}
