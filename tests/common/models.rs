//! Recognizers with every path carrying a signal, for tests that compare two ways of running
//! one model (ONNX export, online inference).

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Distribution, Tensor};
use gateshift::model::{ModelConfig, Recognizer};

/// Parameters that start at zero (GSM's gate, BN biases) drawn instead.
struct DrawZeros;

impl ModuleMapper for DrawZeros {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        p.map(|t| {
            if t.clone().abs().max().into_scalar::<f32>() > 0.0 {
                return t;
            }
            Tensor::random(t.shape(), Distribution::Normal(0.0, 0.2), &t.device())
        })
    }
}

/// `cfg`'s recognizer in inference form, with drawn gates and BN statistics from one training
/// forward on `size`² input (so that folding has something to fold).
pub fn drawn(cfg: &ModelConfig, size: usize) -> Recognizer {
    cfg.check().unwrap();
    let ad = Device::flex().autodiff();
    let m = cfg.init(&ad).map(&mut DrawZeros);
    let x = Tensor::<4>::random([2, cfg.input_channels(), size, size], Distribution::Normal(1.0, 2.0), &ad);
    let _ = m.forward(x);
    m.valid().inference()
}
