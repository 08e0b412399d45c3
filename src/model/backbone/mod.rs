//! 2D backbones applied to every frame; each can host a temporal module.

pub mod bninception;
pub mod efficientnet;
pub mod inceptionv3;
pub mod resnet;

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::temporal::{TemporalKind, TemporalOpts};
pub use bninception::BnInception;
pub use efficientnet::{EfficientNet, Lite};
pub use inceptionv3::InceptionV3;
pub use resnet::{ResNet, ShiftPlace};

/// The backbone architectures gateshift knows, by their official `arch` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    #[value(name = "bninception", alias = "BNInception")]
    BnInception,
    /// InceptionV3 of the official GSM code (229² input).
    #[value(name = "inceptionv3", alias = "InceptionV3")]
    #[serde(rename = "inceptionv3")]
    InceptionV3,
    Resnet18,
    Resnet34,
    Resnet50,
    Resnet101,
    /// ResNet-Mini: gateshift's small backbone for CPU training (see `resnet::ResNet::mini`).
    #[value(name = "resnet-mini")]
    #[serde(rename = "resnet-mini")]
    ResnetMini,
    #[value(name = "efficientnet-lite0")]
    #[serde(rename = "efficientnet-lite0")]
    EfficientnetLite0,
    #[value(name = "efficientnet-lite1")]
    #[serde(rename = "efficientnet-lite1")]
    EfficientnetLite1,
    #[value(name = "efficientnet-lite2")]
    #[serde(rename = "efficientnet-lite2")]
    EfficientnetLite2,
}

/// How a backbone expects its input pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InputSpec {
    pub size: usize,
    /// Channel order BGR (Caffe) instead of RGB.
    pub bgr: bool,
    /// Pixel scale before mean/std: 255 for 0–255 input, 1 for 0–1.
    pub range: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl InputSpec {
    /// TSN's normalisation of a flow plane for this backbone, `(mean, std)` in the spec's
    /// pixel range (tsn-pytorch and TSM `models.py`: BN-Inception mean 128, std 1; ResNet
    /// mean 0.5, std the mean of the RGB stds): the middle of the range and the mean std.
    pub fn flow(&self) -> (f32, f32) {
        let mean = if self.range == 255.0 { 128.0 } else { 0.5 * self.range };
        (mean, self.std.iter().sum::<f32>() / 3.0)
    }
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Self::BnInception => "bninception",
            Self::InceptionV3 => "inceptionv3",
            Self::Resnet18 => "resnet18",
            Self::Resnet34 => "resnet34",
            Self::Resnet50 => "resnet50",
            Self::Resnet101 => "resnet101",
            Self::ResnetMini => "resnet-mini",
            Self::EfficientnetLite0 => "efficientnet-lite0",
            Self::EfficientnetLite1 => "efficientnet-lite1",
            Self::EfficientnetLite2 => "efficientnet-lite2",
        }
    }

    /// Parses the `arch` string stored in official checkpoints ("BNInception", "resnet50").
    pub fn from_official(s: &str) -> Option<Self> {
        <Self as clap::ValueEnum>::from_str(s, true).ok()
    }

    pub fn resnet_depth(self) -> Option<usize> {
        match self {
            Self::Resnet18 => Some(18),
            Self::Resnet34 => Some(34),
            Self::Resnet50 => Some(50),
            Self::Resnet101 => Some(101),
            _ => None,
        }
    }

    /// The EfficientNet-Lite variant, if this is one.
    pub fn lite(self) -> Option<Lite> {
        match self {
            Self::EfficientnetLite0 => Some(Lite::Lite0),
            Self::EfficientnetLite1 => Some(Lite::Lite1),
            Self::EfficientnetLite2 => Some(Lite::Lite2),
            _ => None,
        }
    }

    /// GSF's default gated-channel percentage: the official 25 for ResNets (the GSF code's
    /// `resnet50` default), 100 elsewhere (its BN-Inception / InceptionV3 runs).
    pub fn gsf_ratio(self) -> usize {
        if self.resnet_depth().is_some() || self == Self::ResnetMini { 25 } else { 100 }
    }

    pub fn features(self) -> usize {
        if self.lite().is_some() {
            return efficientnet::FEATURES;
        }
        match (self, self.resnet_depth()) {
            (Self::InceptionV3, _) => inceptionv3::FEATURES,
            (Self::ResnetMini, _) => resnet::MINI_WIDTH * 8,
            (_, Some(d)) => ResNet::features(d),
            (_, None) => bninception::FEATURES,
        }
    }

    /// Refuses an input side the backbone cannot take, naming sizes it can. The reduction
    /// blocks of BN-Inception (`inception_3c`, `4e`) and InceptionV3 (`mixed_3`, `mixed_8`)
    /// concatenate a stride-2 convolution with a ceil-mode pooling, whose output sizes agree
    /// only on maps of one parity: BN-Inception's stem output side must be a multiple of 4
    /// (224 gives 28), InceptionV3's must be odd at both reductions (229 gives 27, then 13),
    /// and InceptionV3's unpadded stem convolutions need at least 3 × 3 to work on.
    pub fn check_input_size(self, size: usize) -> anyhow::Result<()> {
        if size == 0 {
            anyhow::bail!("input size must be positive");
        }
        let (name, takes, why): (&str, fn(usize) -> bool, &str) = match self {
            Self::BnInception => (
                "BN-Inception",
                bninception_takes,
                "its reduction blocks need the 28²-stage map (224 → 28) to be a multiple of 4 on each side",
            ),
            Self::InceptionV3 => (
                "InceptionV3",
                inceptionv3_takes,
                "its reduction blocks need odd maps at the 35²- and 17²-stages (229 → 27 → 13), \
                 and its unpadded stem convolutions at least 3 × 3",
            ),
            _ => return Ok(()),
        };
        if !takes(size) {
            let near: Vec<String> =
                (size.saturating_sub(16)..=size + 16).filter(|&s| s > 0 && takes(s)).map(|s| s.to_string()).collect();
            let near = if near.is_empty() { "none within 16".to_string() } else { near.join(", ") };
            anyhow::bail!("{name} cannot take {size}² input: {why}; sizes near {size} that work: {near}");
        }
        Ok(())
    }

    pub fn input(self) -> InputSpec {
        match self {
            Self::BnInception => {
                InputSpec { size: 224, bgr: true, range: 255.0, mean: [104.0, 117.0, 128.0], std: [1.0, 1.0, 1.0] }
            }
            Self::InceptionV3 => {
                InputSpec { size: 229, bgr: true, range: 255.0, mean: [104.0, 117.0, 128.0], std: [1.0, 1.0, 1.0] }
            }
            Self::EfficientnetLite0 | Self::EfficientnetLite1 | Self::EfficientnetLite2 => {
                let size = self.lite().map_or(224, |l| l.scaling().2);
                InputSpec { size, bgr: false, range: 255.0, mean: [127.0; 3], std: [128.0; 3] }
            }
            Self::ResnetMini => {
                InputSpec { size: 64, bgr: false, range: 1.0, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }
            }
            _ => {
                InputSpec { size: 224, bgr: false, range: 1.0, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }
            }
        }
    }
}

/// One of the backbones; the variant name is not part of checkpoint paths.
// Built once per model; the size of the value is irrelevant next to its tensors.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Backbone {
    BnInception(BnInception),
    InceptionV3(InceptionV3),
    ResNet(ResNet),
    EfficientNet(EfficientNet),
}

impl Backbone {
    pub fn new(
        arch: Arch,
        temporal: TemporalKind,
        place: ShiftPlace,
        segments: usize,
        opts: TemporalOpts,
        device: &Device,
    ) -> Self {
        if let Some(lite) = arch.lite() {
            return Self::EfficientNet(EfficientNet::new(lite, temporal, segments, opts, device));
        }
        match (arch, arch.resnet_depth()) {
            (Arch::InceptionV3, _) => Self::InceptionV3(InceptionV3::new(temporal, segments, opts, device)),
            (Arch::ResnetMini, _) => Self::ResNet(ResNet::mini(temporal, place, segments, opts, device)),
            (_, Some(depth)) => Self::ResNet(ResNet::new(depth, temporal, place, segments, opts, device)),
            (_, None) => Self::BnInception(BnInception::new(temporal, segments, opts, device)),
        }
    }

    /// `(N, 3, H, W)` → `(N, F)` pooled features.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let y = match self {
            Self::BnInception(m) => m.forward(x),
            Self::InceptionV3(m) => m.forward(x),
            Self::ResNet(m) => m.forward(x),
            Self::EfficientNet(m) => m.forward(x),
        };
        y.flatten(1, 3)
    }

    /// The first convolution, which reads the frames.
    pub fn stem_mut(&mut self) -> &mut Conv2d {
        match self {
            Self::BnInception(m) => &mut m.conv1_7x7_s2.conv,
            Self::InceptionV3(m) => &mut m.conv.conv,
            Self::ResNet(m) => &mut m.conv1,
            Self::EfficientNet(m) => &mut m.conv_stem.conv,
        }
    }

    /// The first convolution made to take `channels` inputs (a multiple of 3), each with the
    /// mean of its RGB kernel (`modality::widen_kernel`).
    pub fn widen_input(&mut self, channels: usize) {
        let stem = self.stem_mut();
        let weight = stem.weight.clone();
        stem.weight = weight.map(|w| crate::model::modality::widen_kernel(w, channels).detach());
    }

    /// Folds each BN that directly follows a convolution into it (`BatchNorm::fold_into`):
    /// for inference only, see `Recognizer::inference`.
    pub fn fold_bn(&mut self) {
        match self {
            Self::BnInception(m) => m.fold_bn(),
            Self::InceptionV3(m) => m.fold_bn(),
            Self::ResNet(m) => m.fold_bn(),
            Self::EfficientNet(m) => m.fold_bn(),
        }
    }
}

/// Whether BN-Inception's stem (7×7 stride-2 convolution, two ceil-mode 3×3 stride-2 poolings)
/// turns a `size` side into a map its two reduction blocks can halve twice.
/// Whether InceptionV3's layers fit a `size`² input (see [`Arch::check_input_size`]).
fn inceptionv3_takes(size: usize) -> bool {
    let conv = |h: usize, stride: usize| (h >= 3).then(|| (h - 3) / stride + 1);
    let pool = |h: usize| (h >= 3).then(|| (h - 3).div_ceil(2) + 1);
    let reduce = |h: usize| (h >= 3 && h % 2 == 1).then(|| (h - 3) / 2 + 1);
    let stem = conv(size, 2).and_then(|h| conv(h, 1)).and_then(pool).and_then(|h| conv(h, 1)).and_then(pool);
    stem.and_then(reduce).and_then(reduce).is_some()
}

fn bninception_takes(size: usize) -> bool {
    let conv = (size + 2 * 3 - 7) / 2 + 1;
    let pool = |h: usize| if h < 3 { 0 } else { (h - 3).div_ceil(2) + 1 };
    let stage = pool(pool(conv));
    stage >= 4 && stage % 4 == 0
}

#[cfg(test)]
mod tests {
    use super::Arch;

    #[test]
    fn bninception_input_sizes() {
        for ok in [224, 192, 160, 128, 100, 96, 32] {
            assert!(Arch::BnInception.check_input_size(ok).is_ok(), "{ok}");
        }
        for bad in [112, 120, 0] {
            assert!(Arch::BnInception.check_input_size(bad).is_err(), "{bad}");
        }
        let msg = Arch::BnInception.check_input_size(112).unwrap_err().to_string();
        assert!(msg.contains("112") && msg.contains("128"), "{msg}");
        assert!(Arch::Resnet18.check_input_size(112).is_ok());
    }

    #[test]
    fn inceptionv3_input_sizes() {
        for ok in [229, 299, 197, 165, 133, 101, 75, 69] {
            assert!(Arch::InceptionV3.check_input_size(ok).is_ok(), "{ok}");
        }
        for bad in [224, 228, 40, 77, 100, 3, 1] {
            assert!(Arch::InceptionV3.check_input_size(bad).is_err(), "{bad}");
        }
        let msg = Arch::InceptionV3.check_input_size(224).unwrap_err().to_string();
        assert!(msg.contains("InceptionV3") && msg.contains("224") && msg.contains("229"), "{msg}");
    }
}
