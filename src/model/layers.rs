//! Building blocks shared by the backbones: a BatchNorm with PyTorch's exact semantics and
//! names, and the Caffe-style "conv → (temporal module) → BN → ReLU" unit.

use burn::module::{Flag, Module, Param, RunningState};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use crate::model::cost;
use crate::model::temporal::{Temporal, TemporalShift};
use crate::ops::batch_norm::{self as bn_ops, Path};
pub use crate::ops::clamp;
use crate::ops::{conv as conv_ops, route};

/// BatchNorm over dimension 1 with PyTorch's parameter names (`weight`, `bias`,
/// `running_mean`, `running_var`) and PyTorch's running-statistics rule: the running
/// variance is updated with the *unbiased* batch variance (burn's own BatchNorm uses the
/// biased one, which would drift from the official checkpoints after one step).
#[derive(Module, Debug)]
pub struct BatchNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub running_mean: RunningState<Tensor<1>>,
    pub running_var: RunningState<Tensor<1>>,
    /// Training mode flag, disabled by `Module::valid` and by partial BN.
    pub training: Param<Flag>,
    pub momentum: f64,
    pub epsilon: f64,
    /// Already folded into the convolution before it ([`BatchNorm::fold_into`]): an identity
    /// in inference.
    pub folded: bool,
    /// In affine form ([`BatchNorm::into_affine`]): in inference `weight · x + bias`.
    pub affine: bool,
}

impl BatchNorm {
    /// PyTorch defaults: weight 1, bias 0, mean 0, var 1, momentum 0.1, eps 1e-5.
    pub fn new(num_features: usize, device: &Device) -> Self {
        Self::with_epsilon(num_features, 1e-5, device)
    }

    pub fn with_epsilon(num_features: usize, epsilon: f64, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([num_features], device)),
            bias: Param::from_tensor(Tensor::zeros([num_features], device)),
            running_mean: RunningState::new(Tensor::zeros([num_features], device)),
            running_var: RunningState::new(Tensor::ones([num_features], device)),
            training: Param::from_bool(true),
            momentum: 0.1,
            epsilon,
            folded: false,
            affine: false,
        }
    }

    /// Batch statistics (and a running-stat update) in training mode on an autodiff
    /// device; running statistics otherwise.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let training = self.in_training(&x);
        if self.folded && !training {
            return x;
        }
        match bn_ops::path(&x, training) {
            Path::Library => self.forward_library(x),
            Path::Fused => self.forward_fused(x, None),
            Path::Composed => self.forward_composed(x),
        }
    }

    /// `clamp(BN(x), 0, max)`: ReLU with ∞, ReLU6 with 6. In training on flex the activation
    /// goes inside the fused BN's passes, forward and backward (`ops::batch_norm::flex`).
    pub fn forward_clamp<const D: usize>(&self, x: Tensor<D>, max: f32) -> Tensor<D> {
        if bn_ops::path(&x, self.in_training(&x)) == Path::Fused {
            return self.forward_fused(x, Some(max));
        }
        clamp(self.forward(x), max)
    }

    /// Batch statistics: training mode on an autodiff device.
    fn in_training<const D: usize>(&self, x: &Tensor<D>) -> bool {
        x.device().is_autodiff() && self.training.is_enabled()
    }

    /// Training mode in two passes forward and two backward (`ops::batch_norm::flex`, float32),
    /// what `forward_composed` computes op by op; with `clamp`, the activation in them too.
    fn forward_fused<const D: usize>(&self, x: Tensor<D>, clamp: Option<f32>) -> Tensor<D> {
        let (device, dims) = (x.device(), x.dims());
        let channels = dims[1];
        let stats = bn_ops::batch_stats(x.clone());
        let y = bn_ops::normalize(x, [self.weight.val(), self.bias.val()], stats.clone(), self.epsilon, clamp);
        let mean = stats.clone().slice([0..1, 0..channels]).reshape([channels]);
        let var = stats.slice([1..2, 0..channels]).reshape([channels]);
        self.update_running(mean, var, &dims, &device);
        y
    }

    /// The reference: burn tensor ops, on every backend.
    pub(crate) fn forward_composed<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let device = x.device();
        if !(device.is_autodiff() && self.training.is_enabled()) {
            // Running statistics keep their own dtype (fp32 under bf16 mixed precision).
            let dtype = x.dtype();
            return burn::tensor::module::batch_norm(
                x,
                self.weight.val(),
                self.bias.val(),
                self.running_mean.value().to_device(&device).cast(dtype),
                self.running_var.value().to_device(&device).cast(dtype),
                self.epsilon,
            );
        }
        let dims = x.dims();
        let channels = dims[1];
        // Batch statistics over every axis but the channel axis, composed from plain ops so
        // that autodiff derives the exact backward.
        let axes: Vec<usize> = (0..D).filter(|&d| d != 1).collect();
        let mut stat_shape = [1usize; D];
        stat_shape[1] = channels;
        let mean = x.clone().mean_dims(&axes);
        let centered = x - mean.clone();
        let var = centered.clone().powi_scalar(2).mean_dims(&axes);
        let inv_std = var.clone().add_scalar(self.epsilon).sqrt().recip();
        let scale = self.weight.val().reshape(stat_shape);
        let shift = self.bias.val().reshape(stat_shape);
        let out = centered * inv_std * scale + shift;
        self.update_running(mean.detach().reshape([channels]), var.detach().reshape([channels]), &dims, &device);
        out
    }

    /// PyTorch's running-statistics rule from the batch mean and biased variance (C) of a map
    /// of sizes `dims`: the variance enters unbiased (times n / (n − 1), n the values per
    /// channel), in the statistics' own dtype.
    fn update_running(&self, batch_mean: Tensor<1>, batch_var: Tensor<1>, dims: &[usize], device: &Device) {
        let n = (dims.iter().product::<usize>() / dims[1]) as f64;
        let unbiased = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
        let m = self.momentum;
        let running_mean = self.running_mean.value_sync().to_device(device);
        let running_var = self.running_var.value_sync().to_device(device);
        let dtype = running_mean.dtype();
        let running_mean = running_mean.mul_scalar(1.0 - m) + batch_mean.cast(dtype).mul_scalar(m);
        let running_var = running_var.mul_scalar(1.0 - m) + batch_var.cast(dtype).mul_scalar(m * unbiased);
        self.running_mean.update(running_mean.detach());
        self.running_var.update(running_var.detach());
    }

    /// The same on a library's batch-norm kernels (libtorch, `ops::batch_norm::Path::Library`):
    /// one op forward and backward; in training its statistics pass also updates the running
    /// statistics (libtorch's rule is PyTorch's: momentum, unbiased variance).
    pub(crate) fn forward_library<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let device = x.device();
        let (weight, bias) = (self.weight.val(), self.bias.val());
        let training = device.is_autodiff() && self.training.is_enabled();
        let (mean, var) = if training {
            (self.running_mean.value_sync(), self.running_var.value_sync())
        } else {
            (self.running_mean.value(), self.running_var.value())
        };
        // A fresh (2, C) tensor: in training libtorch writes the updated statistics into it.
        let stats = Tensor::stack::<2>(vec![mean.to_device(&device), var.to_device(&device)], 0);
        if !training {
            return bn_ops::library_eval(x, weight, bias, stats, self.epsilon);
        }
        let y = bn_ops::library_train(x, weight, bias, stats.clone(), self.momentum, self.epsilon);
        let channels = stats.dims()[1];
        self.running_mean.update(stats.clone().slice([0..1, 0..channels]).reshape([channels]).detach());
        self.running_var.update(stats.slice([1..2, 0..channels]).reshape([channels]).detach());
        y
    }
}

/// Whether [`crate::model::Recognizer::inference`] folds BatchNorms into the convolutions
/// before them (default on; `GATESHIFT_FOLD_BN=0` turns it off, to compare or to time both).
pub fn fold_enabled() -> bool {
    route::switches().fold_bn
}

impl BatchNorm {
    /// Folds this BN, normalising with its running statistics (a per-channel affine map),
    /// into `conv`, once, for inference: with s = γ / √(σ² + ε), weights W·s per output
    /// channel and bias (b − μ)·s + β. Computed in float64 on the host and rounded once to
    /// the conv's dtype (in float32 this took TSM ResNet-101's logits from 1.1e-4 to 7.5e-5 of
    /// the official code's, docs/FIDELITY.md). The BN itself becomes an identity — γ 1, β 0, μ 0,
    /// σ² 1 − ε, and `folded`, so that inference skips it — and the pair computes what it
    /// did: one pass over the feature map fewer per unit, no per-forward cost. (Not through
    /// [`BatchNorm::into_affine`]: (b − μ)·s + β keeps the cancellation of a conv bias close to
    /// the BN mean exact, b·s + (β − μ·s) does not; BN-Inception's deepest activation moved
    /// from 7.0e-5 to 7.8e-5 of the official one that way.)
    pub fn fold_into(&mut self, conv: &mut Conv2d) {
        if self.folded {
            return;
        }
        let weight = conv.weight.val();
        let device = weight.device();
        let [cout, ..] = weight.dims();
        let shape = weight.shape();
        let stat_dtype = self.running_var.value().dtype();
        let w_dtype = weight.dtype();
        let mean = self.running_mean.value();
        // Computed in float64 on the host and rounded once: the folded weights are as close
        // to W·s as float32 can hold (a deep network adds up every rounding).
        let host = |t: Tensor<1>| t.into_data().convert::<f64>().try_to_vec::<f64>().expect("float data");
        let (gamma, beta, mu, var) =
            (host(self.weight.val()), host(self.bias.val()), host(mean.clone()), host(self.running_var.value()));
        let b = conv.bias.as_ref().map(|b| host(b.val()));
        let scale: Vec<f64> = gamma.iter().zip(&var).map(|(g, v)| g / (v + self.epsilon).sqrt()).collect();
        let w: Vec<f64> = weight.into_data().convert::<f64>().try_to_vec::<f64>().expect("float data");
        let per = w.len() / cout;
        let folded_w: Vec<f32> = w.iter().enumerate().map(|(i, x)| (x * scale[i / per]) as f32).collect();
        let folded_b: Vec<f32> =
            (0..cout).map(|o| ((b.as_ref().map_or(0.0, |b| b[o]) - mu[o]) * scale[o] + beta[o]) as f32).collect();
        let folded_w = Tensor::<4>::from_data(burn::tensor::TensorData::new(folded_w, shape), &device);
        let folded_b = Tensor::<1>::from_data(burn::tensor::TensorData::new(folded_b, [cout]), &device);
        conv.weight = Param::from_tensor(folded_w.cast(w_dtype).detach());
        conv.bias = Some(Param::from_tensor(folded_b.cast(w_dtype).detach()));
        let (affine_dtype, ones) = (self.weight.val().dtype(), Tensor::<1>::ones([cout], &device));
        self.weight = Param::from_tensor(ones.clone().cast(affine_dtype));
        let mean = mean.to_device(&device);
        self.bias = Param::from_tensor(mean.clone().zeros_like().cast(affine_dtype));
        self.running_mean = RunningState::new(mean.zeros_like());
        self.running_var = RunningState::new(ones.mul_scalar(1.0 - self.epsilon).cast(stat_dtype));
        self.folded = true;
        self.affine = true;
    }

    /// Puts this BN in affine form for inference, once: γ' = γ / √(σ² + ε) and
    /// β' = β − μ·γ', running mean 0 and variance 1 − ε, so that its forward computes the same
    /// per-channel map (to rounding) and fused kernels read γ' and β' as scale and shift
    /// (`temporal::gsm_unit`). Not for training: the statistics are gone.
    pub fn into_affine(&mut self) {
        if self.affine {
            return;
        }
        let weight = self.weight.val();
        let (device, affine_dtype) = (weight.device(), weight.dtype());
        let [c] = weight.dims();
        let stat_dtype = self.running_var.value().dtype();
        let mean = self.running_mean.value().to_device(&device);
        let var = self.running_var.value().to_device(&device);
        let scale = weight.cast(stat_dtype) * var.add_scalar(self.epsilon).sqrt().recip();
        let shift = self.bias.val().cast(stat_dtype) - mean.clone() * scale.clone();
        self.weight = Param::from_tensor(scale.cast(affine_dtype).detach());
        self.bias = Param::from_tensor(shift.cast(affine_dtype).detach());
        self.running_mean = RunningState::new(mean.zeros_like());
        let ones = Tensor::<1>::ones([c], &device).cast(stat_dtype);
        self.running_var = RunningState::new(ones.mul_scalar(1.0 - self.epsilon));
        self.affine = true;
    }
}

/// BN(conv(x)); a BN folded by [`BatchNorm::fold_into`] is skipped in inference.
pub fn conv_bn(conv: &Conv2d, bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    bn.forward(conv2d(conv, x))
}

/// ReLU(BN(conv(x))). With the BN folded, in inference, the ReLU goes into the convolution:
/// on flex applied to each output tile as the GEMM writes it (`conv_gemm`, `Geometry::max`),
/// on libtorch one call where `torch_layers::conv2d_relu` applies (cuDNN's fused
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
    if channels / tsm.shift_div == 0 {
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
            Some(Temporal::Gsm(g)) => g.forward_unit(conv2d(&self.conv, x), &self.bn, f32::INFINITY),
            Some(t) => self.bn.forward_clamp(t.forward(conv2d(&self.conv, x)), f32::INFINITY),
            None => conv_bn_relu(&self.conv, &self.bn, x),
        }
    }

    /// Readies the unit for inference: the BN folded into the conv; with GSM between them,
    /// both BNs in affine form instead (`Gsm::forward_unit` then fuses them into GSM's passes).
    pub fn fold_bn(&mut self) {
        match &mut self.temporal {
            None => self.bn.fold_into(&mut self.conv),
            Some(Temporal::Gsm(g)) => {
                g.bn.into_affine();
                self.bn.into_affine();
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
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
