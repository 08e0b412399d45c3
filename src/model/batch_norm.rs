//! BatchNorm with PyTorch's exact semantics and parameter names, its routes (libtorch's
//! kernels, the fused flex op, the composed reference: `ops::batch_norm::path`), and its two
//! inference forms: folded into the convolution before it, or affine.

use burn::module::{Flag, Module, Param, RunningState};
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Device, Tensor};

use crate::ops::batch_norm::{self as bn_ops, Path};
use crate::ops::{clamp, route};

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
            Path::Synced => self.forward_synced(x),
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
        self.update_running(mean, var, count(&dims), &device);
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
        self.update_running(mean.detach().reshape([channels]), var.detach().reshape([channels]), count(&dims), &device);
        out
    }

    /// Training mode with the statistics of the global batch, every rank's (PyTorch's
    /// `SyncBatchNorm`): the composed route's two passes, each per-channel sum taken over the
    /// ranks by `ops::all_reduce::sum`, which autodiff differentiates through (its backward
    /// sums the ranks' gradients of the statistics).
    fn forward_synced<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let (device, dims, dtype) = (x.device(), x.dims(), x.dtype());
        let channels = dims[1];
        let axes: Vec<usize> = (0..D).filter(|&d| d != 1).collect();
        let mut stat_shape = [1usize; D];
        stat_shape[1] = channels;
        // The sums and this rank's count in one all-reduce: the global count comes with them.
        // In float32 (a bf16 count would be off by up to 0.4%).
        let local = Tensor::<1>::from_data([count(&dims) as f32], &device);
        let channel_sums = x.clone().sum_dims(&axes).reshape([channels]).cast(DType::F32);
        let sums = crate::ops::all_reduce::sum(Tensor::cat(vec![channel_sums, local], 0));
        let n = sums.clone().narrow(0, channels, 1).into_scalar::<f64>();
        let mean = sums.narrow(0, 0, channels).div_scalar(n).cast(dtype);
        let centered = x - mean.clone().reshape(stat_shape);
        let var = crate::ops::all_reduce::sum(centered.clone().powi_scalar(2).sum_dims(&axes).reshape([channels]))
            .div_scalar(n);
        let inv_std = var.clone().add_scalar(self.epsilon).sqrt().recip().reshape(stat_shape);
        let scale = self.weight.val().reshape(stat_shape);
        let shift = self.bias.val().reshape(stat_shape);
        let out = centered * inv_std * scale + shift;
        self.update_running(mean.detach(), var.detach(), n, &device);
        out
    }

    /// PyTorch's running-statistics rule from the batch mean and biased variance (C) over `n`
    /// values per channel: the variance enters unbiased (times n / (n − 1)), in the
    /// statistics' own dtype.
    fn update_running(&self, batch_mean: Tensor<1>, batch_var: Tensor<1>, n: f64, device: &Device) {
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

/// Values per channel of a map of sizes `dims` (every axis but 1).
fn count(dims: &[usize]) -> f64 {
    (dims.iter().product::<usize>() / dims[1].max(1)) as f64
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
    /// (`ops::gate_shift::unit`). Not for training: the statistics are gone.
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
