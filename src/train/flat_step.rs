//! One training update over all parameters at once: gradient clipping (`clip_grad_norm_`)
//! and SGD (`torch.optim.SGD`, the official per-parameter policies) on the gradients,
//! parameters and momentum buffers concatenated into flat vectors.
//!
//! Per element it is the arithmetic of [`optim::clip_grad_norm`](super::optim::clip_grad_norm)
//! followed by [`Sgd::step`], in about fifteen tensor ops instead of about ten per parameter
//! (over 3000 for BN-Inception + GSM's 318 tensors). On a GPU each op is a kernel launch and a
//! host-side dispatch, so the per-parameter version costs far more than its arithmetic; this
//! is what PyTorch's multi-tensor ("foreach") SGD avoids too. The clip coefficient stays on
//! the device (no host read), as in `clip_grad_norm_`. On the CPU the per-parameter version
//! is faster, and [`Sgd::step_clipped`] takes it there.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{DType, Tensor};

use super::sgd::Sgd;

/// One parameter's place in the flat vectors.
struct Entry {
    path: String,
    offset: usize,
    dims: Vec<usize>,
}

/// The parameters that have a gradient, in visit order, with their flattened values and
/// gradients; frozen ones (partial BN) count in the norm but are not updated.
#[derive(Default)]
struct Collect<'a> {
    grads: Option<&'a GradientsParams>,
    frozen: &'a [String],
    path: Vec<String>,
    entries: HashMap<ParamId, Entry>,
    /// (path, element count) in flat order.
    order: Vec<(String, usize)>,
    values: Vec<Tensor<1>>,
    updated_grads: Vec<Tensor<1>>,
    frozen_grads: Vec<Tensor<1>>,
    numel: usize,
    dtypes: Vec<DType>,
}

impl ModuleVisitor for Collect<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some(grad) = self.grads.and_then(|g| g.get::<D>(param.id)) else { return };
        let path = self.path.join(".");
        let dims = grad.dims().to_vec();
        let n: usize = dims.iter().product();
        if self.frozen.contains(&path) {
            self.frozen_grads.push(grad.reshape([n]));
            return;
        }
        let value = param.val().inner();
        self.dtypes.extend([value.dtype(), grad.dtype()]);
        self.values.push(value.reshape([n]));
        self.updated_grads.push(grad.reshape([n]));
        self.order.push((path.clone(), n));
        self.entries.insert(param.id, Entry { path, offset: self.numel, dims });
        self.numel += n;
    }
}

/// The device of the module's first float parameter.
fn first_param_device<M: Module>(model: &M) -> Option<burn::tensor::Device> {
    struct First(Option<burn::tensor::Device>);
    impl ModuleVisitor for First {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if self.0.is_none() {
                self.0 = Some(p.val().device());
            }
        }
    }
    let mut first = First(None);
    model.visit(&mut first);
    first.0
}

/// Puts each updated parameter's slice of the flat vector back in the module.
struct Assign<'a> {
    entries: &'a HashMap<ParamId, Entry>,
    flat: Tensor<1>,
}

impl ModuleMapper for Assign<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(e) = self.entries.get(&param.id) else { return param };
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let n: usize = e.dims.iter().product();
        let dims: [usize; D] = e.dims.clone().try_into().expect("parameter rank");
        let mut value = Tensor::from_inner(self.flat.clone().narrow(0, e.offset, n).reshape(dims));
        if require_grad {
            value = value.require_grad();
        }
        Param::from_mapped_value(id, value, mapper)
    }
}

impl Sgd {
    /// Clips the gradients to a global norm of `max_norm` (coefficient clamped at 1, as
    /// `clip_grad_norm_`), then takes one SGD step with learning rate `lr`: on a GPU all
    /// parameters at once ([`Sgd::step_flat`]); on the CPU one parameter at a time, which is
    /// faster there (BN-Inception + GSM, 2 cores, `bench model --phases --sgd`: clip + SGD
    /// 86–88 ms per parameter against 117–165 ms flat on flex, 43–46 against 73–78 on `tch`;
    /// cache-resident small ops beat passes over 40 MB vectors), as is a model whose
    /// parameters are not all float32.
    pub fn step_clipped<M: Module>(&mut self, lr: f64, model: M, mut grads: GradientsParams, max_norm: f64) -> M {
        let on_gpu = first_param_device(&model).is_some_and(|d| !crate::backend::is_host_cpu(&d));
        if on_gpu {
            return self.step_flat(lr, model, grads, max_norm);
        }
        super::optim::clip_grad_norm(&model, &mut grads, max_norm);
        self.step(lr, model, grads)
    }

    /// [`Sgd::step_clipped`] on the flat vectors, whatever the device.
    pub fn step_flat<M: Module>(&mut self, lr: f64, model: M, mut grads: GradientsParams, max_norm: f64) -> M {
        let frozen = self.frozen.clone();
        let mut c = Collect { grads: Some(&grads), frozen: &frozen, ..Default::default() };
        model.visit(&mut c);
        if c.values.is_empty() || c.dtypes.iter().any(|&d| d != DType::F32) {
            super::optim::clip_grad_norm(&model, &mut grads, max_norm);
            return self.step(lr, model, grads);
        }
        let device = c.values[0].device();
        let g = Tensor::cat(std::mem::take(&mut c.updated_grads), 0);
        let w = Tensor::cat(std::mem::take(&mut c.values), 0);
        // Global norm over every gradient (frozen ones included, as clip_grad_norm sees them).
        let mut sq = g.clone().powi_scalar(2).sum();
        for f in std::mem::take(&mut c.frozen_grads) {
            sq = sq + f.to_device(&device).powi_scalar(2).sum();
        }
        let coef = sq.sqrt().add_scalar(1e-6).recip().mul_scalar(max_norm).clamp_max(1.0);
        let mut d_p = g * coef;
        // Per-element learning-rate and decay multipliers of the official policy.
        let (lr_mult, decay_mult) = self.multiplier_vectors(&c.order, &c.entries, c.numel, &device);
        if self.weight_decay != 0.0 {
            d_p = d_p + w.clone() * decay_mult.mul_scalar(self.weight_decay);
        }
        if self.momentum != 0.0 {
            let previous = self.take_flat_buffer(&c.order, &device);
            d_p = previous.mul_scalar(self.momentum) + d_p;
            self.flat_buffer = Some((c.order.clone(), d_p.clone()));
        }
        let updated = w - d_p * lr_mult.mul_scalar(lr);
        model.map(&mut Assign { entries: &c.entries, flat: updated })
    }

    /// (lr multiplier, decay multiplier) per element, cached for the parameter layout.
    fn multiplier_vectors(
        &mut self,
        order: &[(String, usize)],
        entries: &HashMap<ParamId, Entry>,
        numel: usize,
        device: &burn::tensor::Device,
    ) -> (Tensor<1>, Tensor<1>) {
        if let Some((paths, lr, decay)) = &self.flat_multipliers
            && paths == order
            && lr.device() == *device
        {
            return (lr.clone(), decay.clone());
        }
        let (mut lr, mut decay) = (vec![0f32; numel], vec![0f32; numel]);
        for e in entries.values() {
            let (l, d) = self.policy.multipliers(&e.path);
            let n: usize = e.dims.iter().product();
            lr[e.offset..e.offset + n].fill(l as f32);
            decay[e.offset..e.offset + n].fill(d as f32);
        }
        let lr = Tensor::<1>::from_floats(lr.as_slice(), device);
        let decay = Tensor::<1>::from_floats(decay.as_slice(), device);
        self.flat_multipliers = Some((order.to_vec(), lr.clone(), decay.clone()));
        (lr, decay)
    }

    /// The momentum buffers of `order` as one flat vector: the flat buffer of the last step if
    /// it has this layout, else the per-parameter buffers concatenated, zeros where a parameter
    /// has none yet (so that its buffer starts as its first gradient, as in PyTorch:
    /// 0·momentum + d_p = d_p exactly).
    fn take_flat_buffer(&mut self, order: &[(String, usize)], device: &burn::tensor::Device) -> Tensor<1> {
        if let Some((layout, buf)) = self.flat_buffer.take() {
            if layout == order {
                return buf.to_device(device);
            }
            self.flat_buffer = Some((layout, buf));
            self.unflatten_buffers();
        }
        let parts: Vec<Tensor<1>> = order
            .iter()
            .map(|(path, n)| match self.buffers.remove(path) {
                Some(b) => b.to_device(device),
                None => Tensor::zeros([*n], device),
            })
            .collect();
        Tensor::cat(parts, 0)
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;

    use super::*;
    use crate::model::{Arch, ModelConfig, Recognizer, TemporalKind};
    use crate::train::optim::clip_grad_norm;
    use crate::train::sgd::ParamPolicy;

    const FROZEN: &str = "base_model.ResNet.bn1.weight";

    /// The same deterministic gradient for every parameter on both sides: `scale`·sin of a
    /// per-parameter, per-element, per-step phase (the same ids, since one model is a clone
    /// of the other). Real gradients would differ in their last bits between the two sides
    /// once the parameters do, and a random network amplifies that.
    fn grads(model: &Recognizer, step: usize, scale: f32) -> GradientsParams {
        struct Fill {
            grads: GradientsParams,
            index: usize,
            step: usize,
            scale: f32,
        }
        impl ModuleVisitor for Fill {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                let v = p.val().inner();
                let n: usize = v.dims().iter().product();
                let phase = (self.index * 7 + self.step * 3) as f32;
                let data: Vec<f32> = (0..n).map(|i| self.scale * (phase + 0.37 * i as f32).sin()).collect();
                let g = Tensor::<1>::from_floats(data.as_slice(), &v.device()).reshape(v.dims());
                self.grads.register::<D>(p.id, g);
                self.index += 1;
            }
        }
        let mut fill = Fill { grads: GradientsParams::new(), index: 0, step, scale };
        model.visit(&mut fill);
        fill.grads
    }

    fn frozen_value(model: &Recognizer) -> Vec<f32> {
        match &model.base_model {
            crate::model::backbone::Backbone::ResNet(r) => r.bn1.weight.val().into_data().try_to_vec::<f32>().unwrap(),
            _ => unreachable!("ResNet-Mini"),
        }
    }

    fn params(model: &Recognizer) -> Vec<Vec<f32>> {
        struct All(Vec<Vec<f32>>);
        impl ModuleVisitor for All {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                self.0.push(p.val().into_data().convert::<f32>().try_to_vec::<f32>().unwrap());
            }
        }
        let mut all = All(Vec::new());
        model.visit(&mut all);
        all.0
    }

    /// Three steps of the flat update give the per-parameter clip + SGD's parameters and
    /// momentum buffers: official policy, a frozen parameter, the first step clipped (its
    /// gradient norm is far above 20) and the others not, and a per-parameter step in between.
    #[test]
    fn flat_step_matches_clip_then_sgd() {
        // burn's derived `Module::map` of the whole recognizer (every backbone inlined) has a
        // frame of about 0.8 MB; with this test's own it needs more than a test thread's 2 MB.
        std::thread::Builder::new().stack_size(16 << 20).spawn(flat_step_body).unwrap().join().unwrap();
    }

    fn flat_step_body() {
        let device = Device::flex().autodiff();
        let mut cfg = ModelConfig::new(Arch::ResnetMini, TemporalKind::Gsm, 2, 5);
        cfg.dropout = 0.0; // both sides must see the same gradients
        let model = cfg.init(&device);
        let new_sgd = || {
            let mut sgd = Sgd::new(0.9, 5e-4, ParamPolicy::Official);
            sgd.frozen = vec![FROZEN.into()];
            sgd
        };
        let frozen_before = frozen_value(&model);
        let (mut a, mut b) = (model.clone(), model);
        let (mut sgd_a, mut sgd_b) = (new_sgd(), new_sgd());
        for (step, scale) in [1.0f32, 1e-3, 1e-3].into_iter().enumerate() {
            let mut ga = grads(&a, step, scale);
            clip_grad_norm(&a, &mut ga, 20.0);
            a = sgd_a.step(0.01, a, ga);
            let gb = grads(&b, step, scale);
            b = if step == 1 {
                let mut gb = gb;
                clip_grad_norm(&b, &mut gb, 20.0);
                sgd_b.step(0.01, b, gb)
            } else {
                sgd_b.step_flat(0.01, b, gb, 20.0)
            };
            for (pa, pb) in params(&a).iter().zip(params(&b)) {
                for (va, vb) in pa.iter().zip(&pb) {
                    assert!((va - vb).abs() <= 1e-6 * (1.0 + va.abs()), "step {step}: {va} vs {vb}");
                }
            }
        }
        assert_eq!(frozen_value(&b), frozen_before, "a frozen parameter is never updated");
        let (sa, sb) = (sgd_a.state(), sgd_b.state());
        assert_eq!(sa.keys().collect::<Vec<_>>(), sb.keys().collect::<Vec<_>>());
        assert!(!sa.contains_key(FROZEN) && sa.contains_key("base_model.ResNet.bn1.bias"), "frozen: no buffer");
        for (k, va) in &sa {
            let (va, vb) = (va.try_to_vec::<f32>().unwrap(), sb[k].try_to_vec::<f32>().unwrap());
            for (x, y) in va.iter().zip(&vb) {
                assert!((x - y).abs() <= 1e-6 * (1.0 + x.abs()), "buffer {k}: {x} vs {y}");
            }
        }
    }
}
