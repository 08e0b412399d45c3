//! GST, Grouped Spatial-Temporal aggregation (Luo & Yuille, "Grouped Spatial-Temporal
//! Aggregation for Efficient Action Recognition", ICCV 2019; official code chenxuluo/GST-video,
//! `GST.py`): a ResNet block's 3×3 convolution split in two by channel groups —
//!
//! `out = cat(conv2(x[:, :C/β]), Tconv(x[:, C/β:]))`  (β = 2; with β = 1 both read all of x)
//!
//! where `conv2` is the spatial 1×3×3 convolution giving (α−1)/α of the output channels and
//! `Tconv` a 3×3×3 spatio-temporal one giving the other 1/α (zero padded in time at the clip
//! ends), both with the block's stride; BN and ReLU follow the concatenation. The official
//! defaults are α = 4, β = 2 ("GST"; β = 1 is "GST-Large"), on ResNet-50.
//!
//! The spatial half is the block's own `conv2` (official name `conv2`, shape (C·(α−1)/α, C/β,
//! 3, 3)); this module is the spatio-temporal half (official `Tconv`). In basic blocks
//! (ResNet-18/34, ResNet-Mini) the split unit is `conv1`, the first 3×3.

use burn::module::{Module, Param};
use burn::nn::PaddingConfig3d;
use burn::nn::conv::{Conv2d, Conv3d};
use burn::tensor::{Device, Distribution, Tensor};

use super::module::{Place, Spec, TemporalModule, TemporalOpts};
use crate::model::cost;

/// The spatio-temporal half of a GST split convolution.
#[derive(Module, Debug)]
pub struct Gst {
    /// (C_out/α, C_in/β, 3, 3, 3): the official `Tconv.weight`.
    pub weight: Param<Tensor<5>>,
    /// The block's stride, in space only.
    pub stride: usize,
    /// β: 2 splits the input channels between the halves, 1 gives both all of them.
    pub beta: usize,
    pub num_segments: usize,
}

/// The two halves' channel counts for a unit of `cin` → `cout` channels: (spatial input,
/// spatial output, temporal input, temporal output).
pub fn split(cin: usize, cout: usize, alpha: usize, beta: usize) -> [usize; 4] {
    let temporal_out = cout / alpha;
    let temporal_in = if beta == 2 { cin - cin / 2 } else { cin };
    [cin / beta, cout - temporal_out, temporal_in, temporal_out]
}

impl Gst {
    /// The temporal half of a `cin` → `cout` unit, drawn as the official code draws every
    /// convolution (Kaiming normal, fan-out, ReLU gain).
    pub fn new(cin: usize, cout: usize, segments: usize, opts: TemporalOpts, device: &Device) -> Self {
        let [_, _, tin, tout] = split(cin, cout, opts.gst_alpha, opts.gst_beta);
        let std = (2.0 / (tout * 27).max(1) as f64).sqrt();
        let weight = Tensor::random([tout, tin, 3, 3, 3], Distribution::Normal(0.0, std), device);
        Self { weight: Param::from_tensor(weight), stride: 1, beta: opts.gst_beta, num_segments: segments }
    }

    /// The spatio-temporal half on `x` (`(batch·segments, C_in/β, H, W)`, the input's last
    /// channels): `(batch·segments, C_out/α, H/stride, W/stride)`. Computed in the frames'
    /// layout as three 2D convolutions, one per temporal tap, in one GEMM convolution with
    /// their outputs stacked — `Zₖ = W[:, :, k] ⊛ x` — then `y[t] = Z₀[t−1] + Z₁[t] + Z₂[t+1]`
    /// (zero outside the clip): the 3×3×3 convolution's MACs without its transposes.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [bt, c, _, _] = x.dims();
        let t = self.num_segments;
        assert_eq!(bt % t, 0, "GST: {bt} frames is not a multiple of {t} segments");
        let [co, ci, kt, kh, kw] = self.weight.dims();
        assert_eq!(c, ci, "GST's Tconv takes {ci} channels, got {c}");
        // (C_out, C_in, 3, 3, 3) → (3·C_out, C_in, 3, 3): tap k's kernels are outputs k·C_out…
        let taps = self.weight.val().permute([2, 0, 1, 3, 4]).reshape([kt * co, ci, kh, kw]);
        let z = crate::ops::conv::conv2d_weight(x, taps, self.stride, 1);
        let [_, _, ho, wo] = z.dims();
        if cost::is_recording() {
            cost::add((bt * co * ho * wo * c * 27) as u64);
        }
        super::module::sum_taps(z, t)
    }

    /// The reference: the official `Tconv`, a Conv3d on the clip transposed to
    /// `(batch, C_in/β, segments, H, W)`.
    pub fn forward_conv3d(&self, x: Tensor<4>) -> Tensor<4> {
        let [bt, c, h, w] = x.dims();
        let t = self.num_segments;
        let s = self.stride;
        let conv = Conv3d {
            weight: self.weight.clone(),
            bias: None,
            stride: [1, s, s],
            kernel_size: [3, 3, 3],
            dilation: [1, 1, 1],
            groups: 1,
            padding: PaddingConfig3d::Explicit(1, 1, 1),
        };
        let clip = x.reshape([bt / t, t, c, h, w]).swap_dims(1, 2);
        let y = crate::ops::conv::conv3d(&conv, clip);
        let [_, co, _, ho, wo] = y.dims();
        y.swap_dims(1, 2).reshape([bt, co, ho, wo])
    }

    /// The whole split unit before its BN: `cat(spatial(x[:, :C/β]), self(x[:, C/β:]))`.
    pub fn forward_split(&self, spatial: &Conv2d, x: Tensor<4>) -> Tensor<4> {
        let c = x.dims()[1];
        let (left, right) = match self.beta {
            2 => (x.clone().narrow(1, 0, c / 2), x.narrow(1, c / 2, c - c / 2)),
            _ => (x.clone(), x),
        };
        let a = crate::ops::conv::conv2d(spatial, left);
        if cost::is_recording() {
            let [n, co, ho, wo] = a.dims();
            let [_, ci, kh, kw] = spatial.weight.dims();
            cost::add((n * co * ho * wo * ci * kh * kw) as u64);
        }
        Tensor::cat(vec![a, self.forward(right)], 1)
    }
}

impl TemporalModule for Gst {
    const SPEC: Spec = Spec { name: "gst", label: "GST", official: Some("Tconv"), place: Place::SplitsSpatialConv };

    /// The temporal half of a square unit (`channels` → `channels`, stride 1); ResNets build
    /// theirs with the unit's own channels and stride.
    fn build(channels: usize, segments: usize, opts: TemporalOpts, device: &Device) -> Self {
        Gst::new(channels, channels, segments, opts, device)
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        Gst::forward(self, x)
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Distribution, TensorData, Tolerance};

    use super::*;
    use crate::model::temporal::tests::{check_gradients, sits_in};
    use crate::model::{Arch, ModelConfig, TemporalKind};

    fn opts(alpha: usize, beta: usize) -> TemporalOpts {
        TemporalOpts { gst_alpha: alpha, gst_beta: beta, ..TemporalOpts::default() }
    }

    /// The official channel arithmetic: ResNet-50's layer1 conv2 (64 → 64) with α = 4, β = 2
    /// is conv2 (48, 32, 3, 3) and Tconv (16, 32, 3, 3, 3); β = 1 reads all 64 in both.
    #[test]
    fn splits_channels_as_the_official_code() {
        assert_eq!(split(64, 64, 4, 2), [32, 48, 32, 16]);
        assert_eq!(split(64, 64, 4, 1), [64, 48, 64, 16]);
        assert_eq!(split(32, 64, 4, 2), [16, 48, 16, 16]);
        let g = Gst::new(64, 64, 8, opts(4, 2), &Device::flex());
        assert_eq!(g.weight.dims(), [16, 32, 3, 3, 3]);
    }

    /// Shapes with the stride, and the temporal half against its definition on one pixel:
    /// `y[t] = Σₖ W[:, :, k, 1, 1]·x[t−1+k]` (a 1×1 map sees only the kernel's centre).
    #[test]
    fn shapes_and_the_temporal_sum() {
        let device = Device::flex();
        let mut g = Gst::new(4, 8, 3, opts(4, 2), &device);
        g.stride = 2;
        let x = Tensor::<4>::random([6, 2, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        assert_eq!(g.forward(x).dims(), [6, 2, 4, 4]);
        g.stride = 1;
        let (t, ci, co) = (3, 2, 2);
        let xs: Vec<f32> = (0..t * ci).map(|i| i as f32 * 0.5 - 1.0).collect();
        let y = g.forward(Tensor::from_data(TensorData::new(xs.clone(), [t, ci, 1, 1]), &device));
        let w = g.weight.val().into_data().try_to_vec::<f32>().unwrap();
        let at = |o: usize, i: usize, k: usize| w[(((o * ci + i) * 3 + k) * 3 + 1) * 3 + 1];
        let x = |f: isize, i: usize| if (0..t as isize).contains(&f) { xs[f as usize * ci + i] } else { 0.0 };
        let expected: Vec<f32> = (0..t as isize)
            .flat_map(|f| {
                let (x, at) = (&x, &at);
                (0..co).map(move |o| (0..3).flat_map(|k| (0..ci).map(move |i| at(o, i, k) * x(f - 1 + k as isize, i))).sum())
            })
            .collect();
        y.into_data().assert_approx_eq::<f32>(&TensorData::new(expected, [t, co, 1, 1]), Tolerance::absolute(1e-4));
    }

    /// The three stacked 2D convolutions give the official Conv3d's output, with and without
    /// the stride, in inference and under autodiff (its gradients too).
    #[test]
    fn stacked_taps_match_the_conv3d() {
        for device in [Device::flex(), Device::flex().autodiff()] {
            for stride in [1, 2] {
                let mut g = Gst::new(6, 8, 3, opts(4, 2), &device);
                g.stride = stride;
                let x = Tensor::<4>::random([6, 3, 7, 6], Distribution::Normal(0.0, 1.0), &device);
                let x = if device.is_autodiff() { x.require_grad() } else { x };
                let (y, reference) = (g.forward(x.clone()), g.forward_conv3d(x.clone()));
                assert_eq!(y.dims(), reference.dims());
                let close = Tolerance::absolute(1e-4);
                y.clone().into_data().assert_approx_eq::<f32>(&reference.clone().into_data(), close);
                if device.is_autodiff() {
                    let r = Tensor::<4>::random(y.dims(), Distribution::Normal(0.0, 1.0), &device);
                    let (a, b) = ((y * r.clone()).sum().backward(), (reference * r).sum().backward());
                    let (da, db) = (x.grad(&a).unwrap(), x.grad(&b).unwrap());
                    da.into_data().assert_approx_eq::<f32>(&db.into_data(), close);
                    let (wa, wb) = (g.weight.grad(&a).unwrap(), g.weight.grad(&b).unwrap());
                    wa.into_data().assert_approx_eq::<f32>(&wb.into_data(), close);
                }
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        check_gradients(Gst::new(3, 4, 2, opts(2, 1), &Device::flex()), [4, 3, 3, 3]);
    }

    /// In ResNets' basic (ResNet-Mini, ResNet-18) and bottleneck (ResNet-50) blocks, with the
    /// official names (`conv2` the spatial half, `Tconv` the other); GST-Large (β = 1) too.
    #[test]
    fn sits_in_resnets() {
        sits_in(TemporalKind::Gst, &[".Tconv."], &[Arch::ResnetMini, Arch::Resnet18, Arch::Resnet50]);
        let mut cfg = ModelConfig::new(Arch::Resnet50, TemporalKind::Gst, 2, 5);
        cfg.gst_beta = 1;
        let model = cfg.init(&Device::flex());
        let block = match &model.base_model {
            crate::model::backbone::Backbone::ResNet(r) => &r.layer1[0],
            _ => unreachable!(),
        };
        assert_eq!(block.conv2.weight.dims(), [48, 64, 3, 3]);
        let x = Tensor::<4>::random([2, 6, 48, 48], Distribution::Normal(0.0, 1.0), &Device::flex());
        assert_eq!(model.valid().forward(x).dims(), [2, 5]);
    }

    /// What cannot be built is refused with the reason: other backbones, α and β out of range.
    #[test]
    fn refuses_what_it_cannot_build() {
        let check = |arch, alpha, beta| {
            let mut cfg = ModelConfig::new(arch, TemporalKind::Gst, 8, 5);
            (cfg.gst_alpha, cfg.gst_beta) = (alpha, beta);
            cfg.check().map_err(|e| e.to_string())
        };
        assert!(check(Arch::BnInception, 4, 2).unwrap_err().contains("ResNet"));
        assert!(check(Arch::Resnet50, 1, 2).unwrap_err().contains("--gst-alpha"));
        assert!(check(Arch::Resnet50, 3, 2).unwrap_err().contains("--gst-alpha"));
        assert!(check(Arch::Resnet50, 4, 3).unwrap_err().contains("--gst-beta"));
        assert!(check(Arch::ResnetMini, 64, 2).is_err());
        check(Arch::ResnetMini, 32, 1).unwrap();
    }
}
