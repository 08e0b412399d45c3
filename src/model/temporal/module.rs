//! What every temporal module is to the rest of the model: its description ([`Spec`],
//! [`Place`]), the [`TemporalModule`] interface, its hyper-parameters, and the two zero-padded
//! time shifts the shift-based modules share.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::model::batch_norm::BatchNorm;

/// Where a temporal module sits in a backbone (the official placements).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// Shifts a block's input or its residual branch's (TSM); in ResNets `ShiftPlace` says which.
    Shift,
    /// Between a branch's first convolution and its BN (GSM's places).
    AfterConv,
    /// As `AfterConv`, except in ResNet blocks: on the last convolution, before its BN (GSF).
    AfterLastConv,
    /// As `AfterConv`, except in ResNet bottlenecks: on the 3×3 convolution, before its BN
    /// ((2+1)D's temporal convolution follows the spatial one).
    AfterSpatialConv,
    /// Half of a ResNet block's split 3×3 convolution (GST): the module's `forward` is the
    /// spatio-temporal half, which the block concatenates with its own, narrower spatial
    /// convolution. ResNets only (`ModelConfig::check`).
    SplitsSpatialConv,
}

/// What the backbones, the checkpoint names and the commands know of a temporal module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Its name in flags, configs and checkpoint metadata (`gsm`).
    pub name: &'static str,
    /// Its name in reports (`GSM`).
    pub label: &'static str,
    /// Its tensors' name in official checkpoints (`gsm_X` beside a Caffe layer `X`, `.gsm.` in a
    /// ResNet block); `None`: it has no tensors.
    pub official: Option<&'static str>,
    pub place: Place,
}

/// A temporal module: `(batch·segments, C, H, W)` → the same shape, mixing the segments
/// (GST's, half of a split convolution, gives its share of the unit's output channels).
pub trait TemporalModule: Module {
    const SPEC: Spec;
    /// The module for a feature map of `channels` channels and `segments` frames per clip.
    fn build(channels: usize, segments: usize, opts: TemporalOpts, device: &Device) -> Self;
    fn forward(&self, x: Tensor<4>) -> Tensor<4>;
    /// `clamp(post(self(x)), 0, max)`: the unit the module sits in (its BN and ReLU / ReLU6),
    /// which a module may fuse.
    fn forward_unit(&self, x: Tensor<4>, post: &BatchNorm, max: f32) -> Tensor<4> {
        post.forward_clamp(self.forward(x), max)
    }
    /// Readies that unit for inference (`Recognizer::inference`); by default nothing: no BN
    /// folds across a module.
    fn fold_unit(&mut self, _post: &mut BatchNorm) {}
}

/// Hyper-parameters of the temporal modules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemporalOpts {
    /// TSM: 1/`shift_div` of the channels shift each way.
    pub shift_div: usize,
    /// GSF: percentage of the channels gated (the official `gsf_ch_ratio`).
    pub gsf_ratio: usize,
    /// GST: 1/`gst_alpha` of a split unit's output channels come from the spatio-temporal half.
    pub gst_alpha: usize,
    /// GST: 2 splits the unit's input channels between the halves, 1 gives both all of them.
    pub gst_beta: usize,
    /// How the modules that can start as the identity (CSN, (2+1)D, MFNet) start.
    pub init: TemporalInit,
    /// TSM and GSM: the causal variant (`ModelConfig::causal`), which reads no later frame.
    pub causal: bool,
}

/// The start of the modules that can be the identity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TemporalInit {
    /// Exactly the identity: a pretrained backbone starts unchanged.
    #[default]
    Identity,
    /// The identity plus noise in the temporal weights (N(0, 0.3) relative to the identity's
    /// 1): trained from scratch, an exact identity is a saddle its temporal weights barely
    /// leave (CSN's side taps moved by 1e-3 in the demo's 12 epochs and it stayed at TSN's
    /// accuracy); perturbed, they learn.
    Perturbed,
}

/// Relative scale of [`TemporalInit::Perturbed`]'s noise.
pub const PERTURBATION: f64 = 0.3;

/// The official defaults: TSM 1/8 each way, GSF 25% (its ResNet default), GST α = 4, β = 2.
impl Default for TemporalOpts {
    fn default() -> Self {
        Self { shift_div: 8, gsf_ratio: 25, gst_alpha: 4, gst_beta: 2, init: TemporalInit::Identity, causal: false }
    }
}

/// `y[t] = Z₀[t−1] + Z₁[t] + Z₂[t+1]` (zero outside the clip) of three taps stacked along the
/// channels of `z` (`(B·T, 3·C, H, W)`, tap k's channel c at `k·C + c`): `(B·T, C, H, W)`. One
/// pass where `ops::tap_sum` applies, the composition otherwise (its reference).
pub(crate) fn sum_taps(z: Tensor<4>, segments: usize) -> Tensor<4> {
    if crate::ops::tap_sum::applies(&z) {
        return crate::ops::tap_sum::tap_sum(z, segments);
    }
    sum_taps_composed(z, segments)
}

/// [`sum_taps`] op by op.
pub(crate) fn sum_taps_composed(z: Tensor<4>, segments: usize) -> Tensor<4> {
    let [bt, c3, h, w] = z.dims();
    let c = c3 / 3;
    let z = z.reshape([bt / segments, segments, 3, c, h * w]);
    let tap = |k: usize| z.clone().narrow(2, k, 1);
    (from_past(tap(0), 1) + tap(1) + from_future(tap(2), 1)).reshape([bt, c, h, w])
}

/// `x` shifted one step to the past along `dim` (frame t takes frame t+1), zero at the end.
pub(crate) fn from_future<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    let len = x.dims()[dim];
    // One zero frame of x's own dtype (bf16 models need it to match).
    let zeros = x.clone().narrow(dim, 0, 1).zeros_like();
    if len == 1 {
        return zeros;
    }
    Tensor::cat(vec![x.narrow(dim, 1, len - 1), zeros], dim)
}

/// `x` shifted one step to the future along `dim` (frame t takes frame t-1), zero at the start.
pub(crate) fn from_past<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    let len = x.dims()[dim];
    // One zero frame of x's own dtype (bf16 models need it to match).
    let zeros = x.clone().narrow(dim, 0, 1).zeros_like();
    if len == 1 {
        return zeros;
    }
    Tensor::cat(vec![zeros, x.narrow(dim, 0, len - 1)], dim)
}
