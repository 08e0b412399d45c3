//! The official loss and gradient clipping: cross-entropy and `clip_grad_norm_` on the
//! *global* gradient norm (burn's own clipping is per tensor).

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;
use burn::tensor::{DType, Int, Tensor};

/// Mean cross-entropy of `logits` (batch, classes) against integer `labels` (batch).
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let [b, _] = logits.dims();
    let picked = log_softmax(logits, 1).gather(1, labels.reshape([b, 1]));
    picked.mean().neg()
}

/// The loss of a model with one or more heads: the cross-entropy of each head's slice of
/// `logits` (batch, Σ classes) against its column of `labels` (batch, heads), summed, as the
/// verb + noun loss of two-head EPIC-Kitchens models. One head: plain cross-entropy.
pub fn heads_loss(logits: Tensor<2>, labels: Tensor<2, Int>, heads: &[usize]) -> Tensor<1> {
    let [b, _] = logits.dims();
    if heads.len() == 1 {
        return cross_entropy(logits, labels.reshape([b]));
    }
    let mut offset = 0;
    let mut total: Option<Tensor<1>> = None;
    for (h, &k) in heads.iter().enumerate() {
        let head = cross_entropy(logits.clone().narrow(1, offset, k), labels.clone().narrow(1, h, 1).reshape([b]));
        total = Some(match total {
            Some(t) => t + head,
            None => head,
        });
        offset += k;
    }
    total.expect("at least one head")
}

/// The labels of a batch as `(batch, heads)` integers: the class, and the noun for a second
/// head; a sample without the noun a two-head model needs is an error.
pub fn batch_labels(
    batch: &crate::data::Batch,
    heads: usize,
    device: &burn::tensor::Device,
) -> anyhow::Result<Tensor<2, Int>> {
    let b = batch.len();
    if heads > 1 && batch.nouns.len() != b {
        anyhow::bail!(
            "a two-head (verb, noun) model needs a noun label on every sample ({} of {b} have one)",
            batch.nouns.len()
        );
    }
    let mut values = Vec::with_capacity(b * heads);
    for i in 0..b {
        values.push(batch.labels[i] as i64);
        if heads > 1 {
            values.push(batch.nouns[i] as i64);
        }
    }
    Ok(Tensor::from_data(burn::tensor::TensorData::new(values, [b, heads]), device))
}

/// Global L2 norm of all gradients; if above `max_norm`, scales every gradient by
/// `max_norm / (norm + 1e-6)` exactly as `torch.nn.utils.clip_grad_norm_`. Returns the
/// pre-clip norm. The squares are summed on the device and read once: on a GPU a read per
/// parameter would make the host wait for the device some three hundred times a step (318 for BN-Inception + GSM).
pub fn clip_grad_norm<M: Module>(model: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let mut sq = SquaredNorm { grads, total: None };
    model.visit(&mut sq);
    let Some(total) = sq.total else { return 0.0 };
    let norm = f64::from(total.sqrt().into_scalar::<f32>());
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        model.visit(&mut Scale { grads, coef });
    }
    norm
}

/// The running sum of every gradient's squares, a float32 (1) tensor on the device.
struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let sq = g.cast(DType::F32).powi_scalar(2).sum();
            self.total = Some(match self.total.take() {
                Some(t) => {
                    let device = t.device();
                    t + sq.to_device(&device)
                }
                None => sq,
            });
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    coef: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register::<D>(param.id, g.mul_scalar(self.coef));
        }
    }
}

/// Number of learnable parameters (BN running statistics excluded).
pub fn learnable_params<M: Module>(model: &M) -> usize {
    let running = |p: &str| p.ends_with(".running_mean") || p.ends_with(".running_var");
    let shapes = crate::checkpoint::parameter_shapes(model, false);
    shapes.iter().filter(|(p, _)| !running(p)).map(|(_, s)| s.iter().product::<usize>()).sum()
}
