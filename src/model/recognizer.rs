//! The TSN-style recognizer: every sampled frame goes through the 2D backbone (which may
//! hold temporal modules), then dropout and `new_fc`; the per-frame class scores are
//! averaged over the segments (average consensus).

use burn::module::Module;
use burn::nn::{Dropout, Linear};
use burn::tensor::{DType, Tensor};

use crate::model::backbone::Backbone;
use crate::model::{cost, modality};

#[derive(Module, Debug)]
pub struct Recognizer {
    pub base_model: Backbone,
    pub dropout: Dropout,
    pub new_fc: Linear,
    pub num_segments: usize,
    /// What a segment's input is (`model::modality`): RGB, RGB difference or flow.
    #[module(skip)]
    pub input: modality::Input,
}

impl Recognizer {
    /// The model for inference: `valid()` (no autodiff, BN on running statistics), with every
    /// BN that directly follows a convolution folded into it once (`GATESHIFT_FOLD_BN=0`
    /// keeps them apart). Same outputs, one pass over each such feature map fewer. Not for
    /// training or saving as a trainable checkpoint: the folded BNs no longer hold statistics.
    pub fn inference(&self) -> Self {
        let mut model = self.valid();
        if crate::model::layers::fold_enabled() {
            model.base_model.fold_bn();
        }
        model
    }

    /// `(batch, segments·3, H, W)` (RGB difference: `segments·(L+1)·3`; flow: `segments·2L`) →
    /// `(batch, classes)`
    /// logits.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<2> {
        let frames = self.forward_frames(input);
        let [b, _, k] = frames.dims();
        frames.mean_dim(1).reshape([b, k])
    }

    /// Per-frame class scores `(batch, segments, classes)` before the consensus. The input is
    /// cast to the model's float type (a bf16 model, `precision::inference`, takes the
    /// loaders' f32 clips; RGB differences are taken before the cast) and the scores come
    /// back as f32.
    pub fn forward_frames(&self, input: Tensor<4>) -> Tensor<3> {
        let dtype = self.new_fc.weight.val().dtype();
        let b = input.dims()[0];
        let t = self.num_segments;
        let input = self.input.to_backbone(input, t);
        let scores = self.frame_scores(input.cast(dtype));
        let k = scores.dims()[1];
        scores.reshape([b, t, k])
    }

    /// Class scores `(N, classes)` (f32) of `N` frames `(N, C, H, W)` in the model's float
    /// type, each frame through the backbone and `new_fc`: the segments of clips
    /// ([`Recognizer::forward_frames`]), or one new frame per stream of a causal model online
    /// (`infer::online`, inside `temporal::online::step`).
    pub fn frame_scores(&self, frames: Tensor<4>) -> Tensor<2> {
        let features = self.base_model.forward(frames);
        cost::stage("new_fc");
        let scores = self.new_fc.forward(crate::model::dropout::forward(&self.dropout, features));
        if cost::is_recording() {
            let [n, f] = scores.dims();
            cost::add((n * f * self.new_fc.weight.dims()[0]) as u64);
        }
        scores.cast(DType::F32)
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Module;
    use burn::tensor::{Device, Distribution, Tensor, Tolerance};

    use crate::model::ModelConfig;
    use crate::model::{Arch, TemporalKind};

    /// Configurations that cannot be built are refused with the setting named, before any
    /// tensor is made (they used to panic inside burn: a zero-sized reshape or dropout's own
    /// assertion).
    #[test]
    fn check_refuses_what_cannot_be_built() {
        let ok = ModelConfig::new(Arch::ResnetMini, TemporalKind::Tsm, 8, 10);
        ok.check().unwrap();
        let refused = |edit: &dyn Fn(&mut ModelConfig), says: &str| {
            let mut c = ok.clone();
            edit(&mut c);
            let e = c.check().expect_err(says).to_string();
            assert!(e.contains(says), "{e:?} should mention {says:?}");
        };
        refused(&|c| c.segments = 0, "segments");
        refused(&|c| c.classes = 0, "classes");
        refused(&|c| c.segments = 1_000_000_000_000, "segments 1000000000000");
        refused(&|c| c.classes = usize::MAX, "classes");
        for p in [1.0, 1.5, -0.1, f64::NAN] {
            refused(&|c| c.dropout = p, "dropout");
        }
        refused(&|c| c.shift_div = 1, "--shift-div");
        refused(&|c| c.new_length = 3, "applies to --modality rgbdiff and flow only");
        for modality in [crate::model::Modality::Rgbdiff, crate::model::Modality::Flow] {
            for l in [0, 65, usize::MAX] {
                refused(&|c| (c.modality, c.new_length) = (modality, l), "--new-length");
            }
        }
        refused(
            &|c| {
                c.temporal = TemporalKind::Gsf;
                c.gsf_ratio = Some(0);
            },
            "--gsf-ratio",
        );
    }

    /// `inference()` folds BNs into convolutions without changing the outputs, on every
    /// backbone and wherever a temporal module sits (between a conv and its BN nothing is
    /// folded). The BNs first get non-trivial running statistics from one training forward.
    #[test]
    fn folding_keeps_outputs() {
        let device = Device::flex();
        let cases = [
            (Arch::BnInception, TemporalKind::Gsm, 64),
            (Arch::BnInception, TemporalKind::None, 64),
            (Arch::InceptionV3, TemporalKind::Gsf, 139),
            (Arch::ResnetMini, TemporalKind::Gsm, 48),
            (Arch::ResnetMini, TemporalKind::Tsm, 48),
            (Arch::ResnetMini, TemporalKind::Gsf, 48),
            (Arch::Resnet50, TemporalKind::Gsf, 48),
            (Arch::EfficientnetLite0, TemporalKind::Gsm, 48),
        ];
        for (arch, temporal, size) in cases {
            let cfg = ModelConfig::new(arch, temporal, 2, 5);
            let model = cfg.init(&device.clone().autodiff());
            let x = Tensor::<4>::random([2, 6, size, size], Distribution::Normal(0.0, 1.0), &device);
            let _ = model
                .forward(Tensor::from_data(x.to_data(), &device.clone().autodiff()).mul_scalar(3.0).add_scalar(1.0));
            let reference = model.valid().forward(x.clone());
            let folded = model.inference();
            let y = folded.forward(x);
            let scale = reference.clone().abs().max().into_scalar::<f32>();
            let what = format!("{} + {:?}", arch.name(), temporal);
            assert!(scale > 0.0, "{what}: zero logits");
            y.to_data().assert_approx_eq::<f32>(&reference.to_data(), Tolerance::absolute(1e-4 * scale));
        }
    }

    /// Every backbone family takes RGB-difference input: a first layer of 3·L channels, the
    /// segments' scores from their differences (a still clip gives what zeros give).
    #[test]
    fn every_backbone_takes_rgb_differences() {
        let device = Device::flex();
        for (arch, size) in
            [(Arch::BnInception, 64), (Arch::InceptionV3, 139), (Arch::ResnetMini, 48), (Arch::EfficientnetLite0, 48)]
        {
            let mut cfg = ModelConfig::new(arch, TemporalKind::Tsm, 2, 5);
            (cfg.modality, cfg.new_length) = (crate::model::Modality::Rgbdiff, 2);
            cfg.check().unwrap();
            let mut model = cfg.init(&device).valid();
            assert_eq!(model.base_model.stem_mut().weight.dims()[1], 6, "{arch:?}");
            let still = Tensor::<4>::ones([1, cfg.input_channels(), size, size], &device).mul_scalar(3.0);
            let zeros = Tensor::<4>::zeros([1, cfg.input_channels(), size, size], &device);
            let (a, b) = (model.forward(still), model.forward(zeros));
            assert_eq!(a.dims(), [1, 5]);
            a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-5));
        }
    }
}
