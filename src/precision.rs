//! bf16 mixed precision: fp32 master weights, a bf16 working copy for forward and backward.
//! The casts are part of the autodiff graph, so the gradients arrive on the fp32 masters,
//! which the optimiser updates; BN running statistics stay fp32 (`layers::BatchNorm`).

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{FloatDType, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::Recognizer;

/// Arithmetic precision of training and inference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    /// Training: bf16 forward and backward from fp32 master weights; inference: bf16 throughout.
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Bf16 => "bf16",
        }
    }
}

/// The training forward pass in the chosen precision; logits are fp32 either way.
pub fn forward(model: &Recognizer, x: Tensor<4>, precision: Precision) -> Tensor<2> {
    match precision {
        Precision::Fp32 => model.forward(x),
        Precision::Bf16 => forward_bf16(model, x),
    }
}

/// Casts the trainable float parameters of a module. Buffers that take no gradient (BN
/// running statistics) are left alone: burn maps them in place, shared with the module the
/// copy was cloned from, and they must stay fp32.
pub struct CastFloats(pub FloatDType);

impl ModuleMapper for CastFloats {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|t| if t.is_require_grad() { t.cast(dtype) } else { t })
    }
}

/// Casts every float tensor of a module, buffers included (inference in bf16 throughout).
pub struct CastAll(pub FloatDType);

impl ModuleMapper for CastAll {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}

/// The model for inference in `precision` (`test`, `predict`, `stream`, `forward`):
/// [`Recognizer::inference`] (BN folded in fp32, once), then for bf16 every float tensor cast
/// to bf16 — weights and activations in bf16, f32 clips in and f32 scores out
/// (`Recognizer::forward_frames` casts at both ends).
pub fn inference(model: &Recognizer, precision: Precision) -> Recognizer {
    cast(model.inference(), precision)
}

/// `model` with every float tensor in `precision` (bf16: cast; fp32: as it is).
pub fn cast<M: Module>(model: M, precision: Precision) -> M {
    match precision {
        Precision::Fp32 => model,
        Precision::Bf16 => model.map(&mut CastAll(FloatDType::BF16)),
    }
}

/// Logits (fp32) of `model` computed in bf16.
pub fn forward_bf16(model: &Recognizer, x: Tensor<4>) -> Tensor<2> {
    let half = model.clone().map(&mut CastFloats(FloatDType::BF16));
    half.forward(x.cast(FloatDType::BF16)).cast(FloatDType::F32)
}

#[cfg(test)]
mod tests {
    use burn::optim::GradientsParams;
    use burn::tensor::{Distribution, Int, Tensor};

    use super::*;
    use crate::model::{Arch, ModelConfig, TemporalKind};
    use crate::train::optim::cross_entropy;

    /// `‖b − a‖ / ‖a‖`.
    fn relative_l2(a: &[f32], b: &[f32]) -> f64 {
        let norm = |v: &mut dyn Iterator<Item = f32>| v.map(|x| (x as f64).powi(2)).sum::<f64>().sqrt();
        norm(&mut a.iter().zip(b).map(|(a, b)| b - a)) / norm(&mut a.iter().copied())
    }

    #[test]
    fn bf16_gradients_reach_the_fp32_masters() {
        let device = crate::backend::device("flex").unwrap().autodiff();
        let mut cfg = ModelConfig::new(Arch::ResnetMini, TemporalKind::Gsm, 4, 5);
        cfg.dropout = 0.0;
        let model = cfg.init(&device);
        let x = Tensor::<4>::random([2, 12, 32, 32], Distribution::Normal(0.0, 1.0), &device);
        let labels = Tensor::<1, Int>::from_ints([1, 3], &device);
        let grad_of = |logits: Tensor<2>| {
            let grads = GradientsParams::from_grads(cross_entropy(logits, labels.clone()).backward(), &model);
            grads.get::<2>(model.new_fc.weight.id).expect("a gradient for new_fc").into_data()
        };
        let full = grad_of(model.forward(x.clone()));
        let mixed = grad_of(forward_bf16(&model, x));
        // Weights and BN running statistics of the master stay fp32 (a checkpoint of it has
        // only fp32 tensors).
        let sd = crate::checkpoint::state_dict(&model, &cfg).unwrap();
        assert!(sd.tensors.values().all(|t| t.dtype() == burn::tensor::DType::F32));
        assert_eq!(mixed.dtype(), burn::tensor::DType::F32, "master gradients are fp32");
        let (full, mixed) = (full.try_into_vec::<f32>().unwrap(), mixed.try_into_vec::<f32>().unwrap());
        // bf16 keeps 8 significant bits: a few per cent after a dozen layers (2.5% on average,
        // 3.6% at most in 300 random models; the largest single entry reached 14%, so the
        // bound is on the whole gradient).
        let rel = relative_l2(&full, &mixed);
        assert!(rel < 0.08, "bf16 gradient off by {rel} of its norm");
        assert!(rel > 0.0, "bf16 gradient equals the fp32 one: nothing ran in bf16");
    }

    /// A bf16 inference model takes f32 clips, computes in bf16 and returns f32 scores close
    /// to the fp32 ones; the model it came from keeps its fp32 weights.
    #[test]
    fn bf16_inference_takes_and_gives_f32() {
        let device = crate::backend::device("flex").unwrap();
        let cfg = ModelConfig::new(Arch::ResnetMini, TemporalKind::Gsm, 4, 5);
        let model = cfg.init(&device);
        let x = Tensor::<4>::random([2, 12, 32, 32], Distribution::Normal(0.0, 1.0), &device);
        let full = inference(&model, Precision::Fp32).forward(x.clone());
        let half_model = inference(&model, Precision::Bf16);
        assert_eq!(half_model.new_fc.weight.val().dtype(), burn::tensor::DType::BF16);
        assert_eq!(model.new_fc.weight.val().dtype(), burn::tensor::DType::F32);
        let half = half_model.forward(x);
        assert_eq!(half.dtype(), burn::tensor::DType::F32);
        let (full, half) =
            (full.into_data().try_into_vec::<f32>().unwrap(), half.into_data().try_into_vec::<f32>().unwrap());
        let scale = full.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let err = full.iter().zip(&half).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(scale > 0.0 && err / scale < 5e-2, "bf16 scores off by {} of {scale}", err / scale);
        assert!(err > 0.0, "bf16 scores equal the fp32 ones: nothing ran in bf16");
    }
}
