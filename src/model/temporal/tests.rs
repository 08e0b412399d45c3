//! Checks every temporal module's file runs on itself: autodiff against finite differences,
//! and the module inside every backbone family.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Distribution, Tensor, TensorData, Tolerance};

use super::{TemporalKind, TemporalModule};

/// Every float parameter's gradient, flattened in visit order (zeros where none).
struct Grads<'a>(&'a burn::tensor::Gradients, Vec<f32>);

impl ModuleVisitor for Grads<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        match p.grad(self.0) {
            Some(g) => self.1.extend(g.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()),
            None => self.1.extend(std::iter::repeat_n(0.0, p.val().shape().num_elements())),
        }
    }
}

/// Adds `delta` to the `index`-th scalar of the parameters in visit order.
struct Nudge {
    index: usize,
    delta: f32,
    seen: usize,
}

impl ModuleMapper for Nudge {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let n = p.val().shape().num_elements();
        let (start, index, delta) = (self.seen, self.index, self.delta);
        self.seen += n;
        if !(start..start + n).contains(&index) {
            return p;
        }
        p.map(|t| {
            let (dims, device) = (t.shape(), t.device());
            let mut v = t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
            v[index - start] += delta;
            Tensor::from_data(TensorData::new(v, dims.to_vec()), &device)
        })
    }
}

/// `m` as built is the identity: the output is the input, shape and values (within `1e-6`).
pub(crate) fn check_identity<M: TemporalModule>(m: M, dims: [usize; 4]) {
    let x = Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &Device::flex());
    let y = m.forward(x.clone());
    assert_eq!(y.dims(), dims);
    y.into_data().assert_approx_eq::<f32>(&x.into_data(), Tolerance::absolute(1e-6));
}

/// Every float parameter moved to the autodiff device `0` and tracked.
struct ToAutodiff(Device);

impl ModuleMapper for ToAutodiff {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        p.map(|t| Tensor::from_data(t.to_data(), &self.0).require_grad())
    }
}

/// The gradients autodiff gives `m` (built on flex) for `sum(m(x) · r)`, with respect to every
/// parameter and to `x`, agree with central finite differences. Both run on the autodiff
/// device, so a BN in training mode normalises with batch statistics in both (its running
/// statistics, visited as parameters, then have no effect and no gradient).
pub(crate) fn check_gradients<M: TemporalModule>(m: M, dims: [usize; 4]) {
    check_gradients_step(m, dims, 1e-2)
}

/// [`check_gradients`] with central differences of step `eps` (a module whose output curves
/// strongly in its parameters needs a smaller one: GSM's gate through tanh).
pub(crate) fn check_gradients_step<M: TemporalModule>(m: M, dims: [usize; 4], eps: f32) {
    let ad_device = Device::flex().autodiff();
    let x0 = Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &ad_device);
    let r = Tensor::<4>::random(
        m.forward(Tensor::from_data(x0.to_data(), &Device::flex())).dims(),
        Distribution::Normal(0.0, 1.0),
        &ad_device,
    );
    let loss = |m: &M, x: Tensor<4>| -> f64 { (m.forward(x) * r.clone()).sum().into_scalar::<f32>() as f64 };
    let ad = m.map(&mut ToAutodiff(ad_device.clone()));
    let x = x0.clone().require_grad();
    let y = ad.forward(x.clone());
    let grads = (y * r.clone()).sum().backward();
    let mut g = Grads(&grads, Vec::new());
    ad.visit(&mut g);
    let gx = x.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
    let agree = |what: String, numeric: f64, analytic: f32| {
        assert!(
            (numeric - analytic as f64).abs() < 1e-2 * (1.0 + numeric.abs()),
            "{what}: finite difference {numeric}, autodiff {analytic}"
        );
    };
    for (i, &analytic) in g.1.iter().enumerate() {
        let at = |delta| loss(&ad.clone().map(&mut Nudge { index: i, delta, seen: 0 }), x0.clone());
        agree(format!("parameter scalar {i}"), (at(eps) - at(-eps)) / (2.0 * eps as f64), analytic);
    }
    let xv = x0.to_data().try_to_vec::<f32>().unwrap();
    for (i, &analytic) in gx.iter().enumerate() {
        let at = |d: f32| {
            let mut v = xv.clone();
            v[i] += d;
            loss(&ad, Tensor::from_data(TensorData::new(v, dims), &ad_device))
        };
        agree(format!("input {i}"), (at(eps) - at(-eps)) / (2.0 * eps as f64), analytic);
    }
    assert!(!g.1.is_empty(), "no parameter to check");
}

/// On every backbone family, where its `Spec` places it: the recognizer builds, trains a
/// step's forward, and in inference (BN folded around it, never across it) gives what the
/// unfolded model gives; through a checkpoint (its tensors named by one of `names`) and back,
/// strictly.
pub(crate) fn sits_in_every_backbone(kind: TemporalKind, names: &[&str]) {
    use crate::model::Arch;
    sits_in(kind, names, &[Arch::ResnetMini, Arch::Resnet50, Arch::BnInception, Arch::EfficientnetLite0]);
}

/// [`sits_in_every_backbone`] on the backbones `archs` (on a thread with a main thread's
/// stack: deep backbones' graphs are dropped recursively).
pub(crate) fn sits_in(kind: TemporalKind, names: &[&str], archs: &[crate::model::Arch]) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let archs = archs.to_vec();
    let run = move || sits_in_here(kind, &names, &archs);
    std::thread::Builder::new().stack_size(16 << 20).spawn(run).unwrap().join().unwrap();
}

fn sits_in_here(kind: TemporalKind, names: &[String], archs: &[crate::model::Arch]) {
    use crate::model::ModelConfig;
    let device = Device::flex();
    for &arch in archs {
        let size = if arch == crate::model::Arch::BnInception { 64 } else { 48 };
        let cfg = ModelConfig::new(arch, kind, 2, 5);
        cfg.check().unwrap();
        let model = cfg.init(&device.clone().autodiff());
        let x = Tensor::<4>::random([1, 6, size, size], Distribution::Normal(0.0, 1.0), &device);
        let _ = model.forward(Tensor::from_data(x.to_data(), &device.clone().autodiff()));
        let reference = model.valid().forward(x.clone());
        let scale = reference.clone().abs().max().into_scalar::<f32>();
        assert!(scale.is_finite() && scale > 0.0, "{arch:?}: logits {scale}");
        let reference = reference.into_data();
        let folded = model.inference().forward(x.clone());
        folded.into_data().assert_approx_eq::<f32>(&reference, Tolerance::absolute(1e-4 * scale));
        let sd = crate::checkpoint::state_dict(&model.valid(), &cfg).unwrap();
        let named = |k: &String| names.iter().any(|n| k.contains(n));
        assert!(sd.tensors.keys().any(named), "{arch:?}: the module's tensors are not in the checkpoint");
        let mut fresh = cfg.init(&device);
        crate::checkpoint::load(&mut fresh, &cfg, &sd, crate::checkpoint::Fit::Strict).unwrap();
        fresh.valid().forward(x).into_data().assert_eq(&reference, true);
    }
}

/// `TemporalInit::Perturbed` starts CSN, (2+1)D and MFNet off the identity, the default on it.
#[test]
fn perturbed_starts_leave_the_identity() {
    use super::{TemporalInit, TemporalOpts};
    let device = Device::flex();
    let x = Tensor::<4>::random([8, 16, 3, 3], Distribution::Normal(0.0, 1.0), &device);
    for kind in [TemporalKind::Csn, TemporalKind::R2plus1d, TemporalKind::Mfnet] {
        let moved = |init| {
            let m = kind.build(16, 4, TemporalOpts { init, ..TemporalOpts::default() }, &device).unwrap();
            (m.forward(x.clone()) - x.clone()).abs().max().into_scalar::<f32>()
        };
        assert!(moved(TemporalInit::Identity) < 1e-6, "{kind:?}");
        assert!(moved(TemporalInit::Perturbed) > 0.05, "{kind:?}");
    }
}

/// The fused tap sum ((2+1)D's and GST's temporal taps) gives the composition's output and
/// input gradient (within 1e-6), with one and several clips and one segment.
#[test]
fn the_fused_tap_sum_matches_the_composition() {
    use super::module::{sum_taps, sum_taps_composed};
    let device = Device::flex().autodiff();
    for [b, t, c, h, w] in [[2, 3, 4, 3, 5], [1, 1, 2, 2, 2], [1, 4, 1, 1, 1]] {
        let z = Tensor::<4>::random([b * t, 3 * c, h, w], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let r = Tensor::<4>::random([b * t, c, h, w], Distribution::Normal(0.0, 1.0), &device);
        let run = |fused: bool| {
            let y = if fused { sum_taps(z.clone(), t) } else { sum_taps_composed(z.clone(), t) };
            let grads = (y.clone() * r.clone()).sum().backward();
            (y, z.grad(&grads).unwrap())
        };
        let ((y, dz), (y_ref, dz_ref)) = (run(true), run(false));
        y.into_data().assert_approx_eq::<f32>(&y_ref.into_data(), Tolerance::absolute(1e-6));
        dz.into_data().assert_approx_eq::<f32>(&dz_ref.into_data(), Tolerance::absolute(1e-6));
    }
}

/// Causal TSM's fused shift (`Shift::causal`, which the convolution also reads through)
/// equals its composition of burn ops, forward and backward.
#[test]
fn causal_tsm_fused_equals_its_composition() {
    use super::{TemporalOpts, TemporalShift};
    let device = Device::flex();
    let opts = TemporalOpts { causal: true, shift_div: 4, ..TemporalOpts::default() };
    let tsm = TemporalShift::build(16, 3, opts, &device);
    assert!(tsm.causal);
    let ad = device.autodiff();
    let x = Tensor::<4>::random([6, 16, 3, 3], Distribution::Normal(0.0, 1.0), &ad).require_grad();
    let r = Tensor::<4>::random([6, 16, 3, 3], Distribution::Normal(0.0, 1.0), &ad);
    let fused = tsm.forward(x.clone());
    let composed = tsm.forward_composed(x.clone());
    fused.to_data().assert_approx_eq::<f32>(&composed.to_data(), Tolerance::absolute(1e-6));
    let g = |y: Tensor<4>| x.grad(&(y * r.clone()).sum().backward()).unwrap().into_data();
    g(fused).assert_approx_eq::<f32>(&g(composed), Tolerance::absolute(1e-6));
}

/// Causal GSM (which runs through burn's ops, not the fused kernels) has true gradients.
/// Central differences with a step of 1e-3: at 1e-2 a gate weight's difference quotient is
/// off by up to 40% on some draws (tanh of logits that move by ≈ 4 × the step), for the
/// bidirectional composition too; at 1e-3 they agree.
#[test]
fn causal_gsm_gradients_against_finite_differences() {
    use super::{Gsm, TemporalOpts};
    let device = Device::flex();
    let mut gsm = Gsm::build(8, 3, TemporalOpts { causal: true, ..TemporalOpts::default() }, &device);
    assert!(gsm.causal);
    // Gate logits of order 1 (the inputs are ≈ 4 after the biased BN): tanh off saturation.
    let w = Tensor::<5>::random([2, 4, 3, 3, 3], Distribution::Normal(0.0, 0.05), &device);
    gsm.conv3D.weight = Param::from_tensor(w);
    gsm.bn.bias = Param::from_tensor(Tensor::ones([8], &device).mul_scalar(4.0));
    check_gradients_step(gsm, [6, 8, 3, 3], 1e-3);
}
