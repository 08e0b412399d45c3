//! SGD with momentum exactly as `torch.optim.SGD` (no dampening, L2 weight decay added to
//! the gradient), with the official per-parameter policies, and a momentum state keyed by
//! parameter *path* so that it survives a checkpoint round trip (`--resume`).

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// Which learning-rate / weight-decay multipliers each parameter gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum ParamPolicy {
    /// The official `get_optim_policies`: conv/linear weights lr×1 with decay; their biases
    /// lr×2 without decay; BatchNorm weights and biases lr×1 without decay.
    #[default]
    Official,
    /// Every parameter lr×1 with decay (plain `SGD(model.parameters())`).
    Uniform,
}

impl ParamPolicy {
    /// (lr multiplier, decay multiplier) for the parameter at `path`.
    pub fn multipliers(self, path: &str) -> (f64, f64) {
        if self == Self::Uniform {
            return (1.0, 1.0);
        }
        let mut parts = path.rsplit('.');
        let leaf = parts.next().unwrap_or("");
        let parent = parts.next().unwrap_or("");
        let is_bn = parent.starts_with("bn");
        match (leaf, is_bn) {
            (_, true) => (1.0, 0.0),
            ("bias", false) => (2.0, 0.0),
            _ => (1.0, 1.0),
        }
    }
}

/// The parameters of a flat update, in order: (path, element count).
pub(super) type Layout = Vec<(String, usize)>;

/// SGD state: hyper-parameters and one momentum buffer per parameter path.
#[derive(Clone, Debug)]
pub struct Sgd {
    pub momentum: f64,
    pub weight_decay: f64,
    pub policy: ParamPolicy,
    /// Parameter paths that are frozen (partial BN): never updated.
    pub frozen: Vec<String>,
    /// Flattened momentum buffers (rank-erased so one map holds every parameter).
    pub(super) buffers: BTreeMap<String, Tensor<1>>,
    /// The buffers of the last [`Sgd::step_clipped`] as one vector, with its layout ((path,
    /// element count) in order); the per-parameter map holds none of those paths meanwhile.
    pub(super) flat_buffer: Option<(Layout, Tensor<1>)>,
    /// Per-element (lr, decay) multipliers of `step_clipped`, for the layout they were built for.
    pub(super) flat_multipliers: Option<(Layout, Tensor<1>, Tensor<1>)>,
}

impl Sgd {
    pub fn new(momentum: f64, weight_decay: f64, policy: ParamPolicy) -> Self {
        Self {
            momentum,
            weight_decay,
            policy,
            frozen: Vec::new(),
            buffers: BTreeMap::new(),
            flat_buffer: None,
            flat_multipliers: None,
        }
    }

    /// Moves the flat buffer of `step_clipped` into the per-parameter map.
    pub(super) fn unflatten_buffers(&mut self) {
        let Some((layout, buf)) = self.flat_buffer.take() else { return };
        let mut offset = 0;
        for (path, n) in layout {
            self.buffers.insert(path, buf.clone().narrow(0, offset, n));
            offset += n;
        }
    }

    /// One update of every parameter that has a gradient in `grads`, one parameter at a time
    /// (see [`Sgd::step_clipped`] for all at once).
    pub fn step<M: Module>(&mut self, lr: f64, model: M, grads: GradientsParams) -> M {
        self.unflatten_buffers();
        let mut mapper = Mapper { sgd: self, lr, grads, path: Vec::new() };
        model.map(&mut mapper)
    }

    /// The momentum buffers by parameter path (for checkpoints).
    pub fn state(&self) -> BTreeMap<String, TensorData> {
        let mut state: BTreeMap<String, TensorData> =
            self.buffers.iter().map(|(k, v)| (k.clone(), v.to_data())).collect();
        if let Some((layout, buf)) = &self.flat_buffer {
            let mut offset = 0;
            for (path, n) in layout {
                state.insert(path.clone(), buf.clone().narrow(0, offset, *n).to_data());
                offset += n;
            }
        }
        state
    }

    /// Restores momentum buffers saved by [`Sgd::state`].
    pub fn load_state(&mut self, buffers: BTreeMap<String, TensorData>, device: &Device) {
        self.flat_buffer = None;
        self.buffers = buffers
            .into_iter()
            .map(|(k, v)| {
                let n = v.num_elements();
                (k, Tensor::<1>::from_data(v, device).reshape([n]))
            })
            .collect();
    }
}

struct Mapper<'a> {
    sgd: &'a mut Sgd,
    lr: f64,
    grads: GradientsParams,
    path: Vec<String>,
}

impl ModuleMapper for Mapper<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let path = self.path.join(".");
        if self.sgd.frozen.iter().any(|f| f == &path) {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let (lr_mult, decay_mult) = self.sgd.policy.multipliers(&path);
        let require_grad = tensor.is_require_grad();
        let value = tensor.inner();
        let device = value.device();
        let mut d_p = grad.to_device(&device);
        let decay = self.sgd.weight_decay * decay_mult;
        if decay != 0.0 {
            d_p = d_p + value.clone().mul_scalar(decay);
        }
        if self.sgd.momentum != 0.0 {
            let dims = d_p.dims();
            d_p = match self.sgd.buffers.remove(&path) {
                Some(buf) => buf.to_device(&device).reshape(dims).mul_scalar(self.sgd.momentum) + d_p,
                None => d_p,
            };
            let n = d_p.shape().num_elements();
            self.sgd.buffers.insert(path, d_p.clone().reshape([n]));
        }
        let updated = value - d_p.mul_scalar(self.lr * lr_mult);
        let mut updated = Tensor::from_inner(updated);
        if require_grad {
            updated = updated.require_grad();
        }
        Param::from_mapped_value(id, updated, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_policy_multipliers() {
        let p = ParamPolicy::Official;
        assert_eq!(p.multipliers("base_model.conv1.weight"), (1.0, 1.0));
        assert_eq!(p.multipliers("new_fc.bias"), (2.0, 0.0));
        assert_eq!(p.multipliers("base_model.inception_3a_1x1.bn.weight"), (1.0, 0.0));
        assert_eq!(p.multipliers("base_model.layer1.0.bn2.bias"), (1.0, 0.0));
        assert_eq!(p.multipliers("base_model.layer1.0.downsample.bn.weight"), (1.0, 0.0));
        assert_eq!(p.multipliers("base_model.layer1.0.temporal.conv3D.bias"), (2.0, 0.0));
        assert_eq!(ParamPolicy::Uniform.multipliers("new_fc.bias"), (1.0, 1.0));
    }
}
