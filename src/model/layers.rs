//! Building blocks shared by the backbones: the Caffe-style "conv → (temporal module) → BN →
//! ReLU" unit and the conv + BN (+ activation, + residual) compositions, each booking its
//! multiply-accumulates and leaving the kernel route to `ops::conv`.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

pub use crate::model::batch_norm::{BatchNorm, fold_enabled};
use crate::model::cost;
use crate::model::temporal::{Temporal, TemporalShift};
pub use crate::ops::clamp;
use crate::ops::conv as conv_ops;

/// BN(conv(x)); a BN folded by [`BatchNorm::fold_into`] is skipped in inference.
pub fn conv_bn(conv: &Conv2d, bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    bn.forward(conv2d(conv, x))
}

/// ReLU(BN(conv(x))). With the BN folded, in inference, the ReLU goes into the convolution:
/// on flex applied to each output tile as the GEMM writes it (`ops::conv::gemm`, `Geometry::max`),
/// on libtorch one call where `ops::torch::conv2d_relu` applies (cuDNN's fused
/// convolution). Either way one pass over the unit's output fewer.
pub fn conv_bn_relu(conv: &Conv2d, bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    conv_bn_clamp(conv, bn, x, f32::INFINITY)
}

/// ReLU(BN(conv(x)) + residual), the end of a residual block. With the BN folded, in
/// inference, `ops::conv::conv2d_add_relu` (on flex one op: the residual and bias pre-fill the
/// output the GEMMs add to, clamped per tile).
pub fn conv_bn_add_relu(conv: &Conv2d, bn: &BatchNorm, x: Tensor<4>, residual: Tensor<4>) -> Tensor<4> {
    if bn.folded && !x.device().is_autodiff() {
        let y = conv_ops::conv2d_add_relu(conv, x, residual);
        book(conv, &y);
        return y;
    }
    relu(conv_bn(conv, bn, x) + residual)
}

/// `clamp(BN(conv(x)), 0, max)`: ReLU with ∞, ReLU6 with 6; see [`conv_bn_relu`]. With the BN
/// folded, in inference, `ops::conv::conv2d_clamp` applies the clamp inside the convolution.
pub fn conv_bn_clamp(conv: &Conv2d, bn: &BatchNorm, x: Tensor<4>, max: f32) -> Tensor<4> {
    if bn.folded && !x.device().is_autodiff() {
        let y = conv_ops::conv2d_clamp(conv, x, max);
        book(conv, &y);
        return y;
    }
    bn.forward_clamp(conv2d(conv, x), max)
}

/// ReLU(BN(conv(TSM(x)))): ResNet's residual shift, where the shifted map feeds only the
/// branch's first convolution. Where that convolution can read `x` through the shift
/// (`ops::conv::conv2d_shifted`) the shifted map is never written, forward or backward;
/// elsewhere the shift, then [`conv_bn_relu`].
pub fn shift_conv_bn_relu(tsm: &TemporalShift, conv: &Conv2d, bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    let channels = x.dims()[1];
    if channels / tsm.shift_div == 0 || !tsm.readable_through() {
        return conv_bn_relu(conv, bn, tsm.forward(x));
    }
    let inference = bn.folded && !x.device().is_autodiff();
    match conv_ops::conv2d_shifted(conv, &x, tsm.shift(channels), inference.then_some(f32::INFINITY)) {
        Some(y) => {
            book(conv, &y);
            if inference { y } else { bn.forward_clamp(y, f32::INFINITY) }
        }
        None => conv_bn_relu(conv, bn, tsm.forward(x)),
    }
}

/// Geometry of a 2D convolution, as written in the official layer lists.
#[derive(Clone, Copy, Debug)]
pub struct ConvSpec {
    pub cin: usize,
    pub cout: usize,
    pub kernel: [usize; 2],
    pub stride: usize,
    pub padding: [usize; 2],
    pub bias: bool,
}

impl ConvSpec {
    /// Square kernel `k`, stride `s`, padding `p`.
    pub fn new(cin: usize, cout: usize, k: usize, s: usize, p: usize) -> Self {
        Self { cin, cout, kernel: [k, k], stride: s, padding: [p, p], bias: true }
    }
    pub fn no_bias(mut self) -> Self {
        self.bias = false;
        self
    }
    pub fn init(&self, device: &Device) -> Conv2d {
        Conv2dConfig::new([self.cin, self.cout], self.kernel)
            .with_stride([self.stride, self.stride])
            .with_padding(PaddingConfig2d::Explicit(self.padding[0], self.padding[1], self.padding[0], self.padding[1]))
            .with_bias(self.bias)
            .init(device)
    }
}

/// Runs a convolution (on the route `ops::conv` picks) and books its multiply-accumulates in
/// the cost counter.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let y = conv_ops::conv2d(conv, x);
    book(conv, &y);
    y
}

/// Books the multiply-accumulates of `conv` giving `y` while the cost counter records.
pub(crate) fn book(conv: &Conv2d, y: &Tensor<4>) {
    if cost::is_recording() {
        let [n, cout, h, w] = y.dims();
        let [_, cin_g, kh, kw] = conv.weight.dims();
        cost::add((n * cout * h * w * cin_g * kh * kw) as u64);
    }
}

/// Folds each named [`ConvBn`] unit of a block for inference (`ConvBn::fold_bn`):
/// `fold_units!(self: conv, tower_conv)`.
macro_rules! fold_units {
    ($block:ident: $($unit:ident),* $(,)?) => {
        $( $block.$unit.fold_bn(); )*
    };
}
pub(crate) use fold_units;

/// One Caffe-style unit: conv, then the optional temporal module (GSM sits between a
/// branch's first conv and its BN in the official code), then BN and ReLU.
/// Official checkpoint names: `X.weight` (conv), `X_bn.*` (BN), `gsm_X.*` (GSM);
/// `checkpoint::names` maps them onto `X.conv.*`, `X.bn.*`, `X.temporal.*`.
#[derive(Module, Debug)]
pub struct ConvBn {
    pub conv: Conv2d,
    pub temporal: Option<Temporal>,
    pub bn: BatchNorm,
}

impl ConvBn {
    pub fn new(spec: ConvSpec, bn_eps: f64, device: &Device) -> Self {
        Self { conv: spec.init(device), temporal: None, bn: BatchNorm::with_epsilon(spec.cout, bn_eps, device) }
    }
    pub fn with_temporal(mut self, temporal: Option<Temporal>) -> Self {
        self.temporal = temporal;
        self
    }
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match &self.temporal {
            Some(t) => t.forward_unit(conv2d(&self.conv, x), &self.bn, f32::INFINITY),
            None => conv_bn_relu(&self.conv, &self.bn, x),
        }
    }

    /// Readies the unit for inference: the BN folded into the conv; with a temporal module
    /// between them, whatever the module does with its unit (GSM: both BNs in affine form,
    /// which `Gsm::forward_unit` fuses into GSM's passes).
    pub fn fold_bn(&mut self) {
        match &mut self.temporal {
            None => self.bn.fold_into(&mut self.conv),
            Some(t) => t.fold_unit(&mut self.bn),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use burn::module::{Param, RunningState};
    use burn::tensor::{Distribution, Tolerance};

    /// A BN with non-trivial running statistics and affine parameters, in inference mode.
    pub(crate) fn trained_bn(c: usize, device: &Device) -> BatchNorm {
        let mut bn = BatchNorm::with_epsilon(c, 1e-3, device);
        let rand = |lo, hi| Tensor::<1>::random([c], Distribution::Uniform(lo, hi), device);
        bn.weight = Param::from_tensor(rand(-2.0, 2.0));
        bn.bias = Param::from_tensor(rand(-1.0, 1.0));
        bn.running_mean = RunningState::new(rand(-0.5, 0.5));
        bn.running_var = RunningState::new(rand(0.1, 3.0));
        bn.valid()
    }

    /// The folded convolution computes BN(conv(x)) with and without a conv bias, grouped or
    /// not; the folded BN is then skipped, and folding twice changes nothing.
    #[test]
    fn folded_conv_equals_conv_then_bn() {
        let device = Device::flex();
        for (bias, groups) in [(true, 1), (false, 1), (false, 4)] {
            let conv = Conv2dConfig::new([8, 12], [3, 3])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_groups(groups)
                .with_bias(bias)
                .init(&device);
            let bn = trained_bn(12, &device);
            let x = Tensor::<4>::random([2, 8, 9, 11], Distribution::Normal(0.0, 1.0), &device);
            let reference = conv_bn(&conv, &bn, x.clone());
            let (mut folded_conv, mut folded_bn) = (conv.clone(), bn.clone());
            folded_bn.fold_into(&mut folded_conv);
            assert!(folded_bn.folded && folded_conv.bias.is_some());
            let tol = Tolerance::absolute(1e-4);
            conv2d(&folded_conv, x.clone()).to_data().assert_approx_eq::<f32>(&reference.to_data(), tol);
            let once = conv_bn(&folded_conv, &folded_bn, x.clone());
            once.to_data().assert_approx_eq::<f32>(&reference.to_data(), tol);
            folded_bn.fold_into(&mut folded_conv);
            conv_bn(&folded_conv, &folded_bn, x).to_data().assert_eq(&once.to_data(), true);
        }
    }

    /// A folded BN is an identity with its own parameters too (so a folded model computes
    /// the same without the skip), and is skipped only in inference: in training it
    /// normalises with batch statistics like any BN.
    #[test]
    fn folded_bn_is_skipped_only_in_inference() {
        let device = Device::flex();
        let mut bn = trained_bn(6, &device);
        let mut conv = ConvSpec::new(4, 6, 1, 1, 0).init(&device);
        bn.fold_into(&mut conv);
        let x = Tensor::<4>::random([3, 6, 5, 5], Distribution::Normal(2.0, 3.0), &device);
        bn.forward(x.clone()).to_data().assert_eq(&x.to_data(), true);
        let mut unskipped = bn.clone();
        unskipped.folded = false;
        unskipped.forward(x.clone()).to_data().assert_approx_eq::<f32>(&x.to_data(), Tolerance::absolute(1e-4));

        let ad = device.autodiff();
        let training = bn.clone().to_device(&ad).train();
        let y = training.forward(Tensor::<4>::from_data(x.to_data(), &ad));
        let mean = y.mean().into_scalar::<f32>();
        assert!(mean.abs() < 1e-4, "training BN output mean {mean}: batch statistics were not used");
    }
}
