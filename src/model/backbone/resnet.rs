//! ResNet-18/34/50/101 in torchvision's layout (`conv1`, `bn1`, `layerN.i.convK`, `bnK`,
//! `downsample.{0,1}`), ImageNet-normalised RGB input. Temporal module placement:
//! - TSM `blockres` (official default): shift the residual branch's input, i.e. wrap `conv1`;
//! - TSM `block`: shift the block's input (identity path too);
//! - GSM: on `conv1`'s output, before `bn1` — mirroring BN-Inception, where GSM sits between
//!   a branch's first conv and its BN;
//! - GSF: on the branch's last conv before its BN, as the official GSF code (bottleneck
//!   `conv3`, all `planes·4` channels, 25% gated by default); in basic blocks (ResNet-18/34,
//!   Mini; not in the official code) likewise on `conv2`.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::cost;
use crate::model::layers::{BatchNorm, ConvSpec, conv_bn, conv_bn_add_relu, conv_bn_relu, conv2d, shift_conv_bn_relu};
use crate::model::temporal::{Gst, Place, Temporal, TemporalKind, TemporalOpts, gst};
use crate::ops::pool;

/// Where TSM's shift goes in a residual block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum ShiftPlace {
    #[default]
    Blockres,
    Block,
}

/// The 1×1 projection on the identity path (`downsample.0` conv, `downsample.1` BN).
#[derive(Module, Debug)]
pub struct Downsample {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

/// A basic (two 3×3) or bottleneck (1×1, 3×3, 1×1) residual block.
#[derive(Module, Debug)]
pub struct Block {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub conv3: Option<Conv2d>,
    pub bn3: Option<BatchNorm>,
    pub downsample: Option<Downsample>,
    pub temporal: Option<Temporal>,
    pub shift_block: bool,
}

/// ReLU(BN(conv(x))) with the temporal module `t` sitting in the unit: between the conv and
/// its BN, or (GST) as the spatio-temporal half of the convolution.
fn unit_with(t: &Temporal, conv: &Conv2d, bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    match t {
        Temporal::Gst(g) => bn.forward_clamp(g.forward_split(conv, x), f32::INFINITY),
        t => t.forward_unit(conv2d(conv, x), bn, f32::INFINITY),
    }
}

impl Block {
    /// Which convolution's unit the temporal module sits in, between the conv and its BN: 1
    /// (`conv1`: GSM; (2+1)D in basic blocks) or 2 (`conv2`, the bottleneck's 3×3: (2+1)D).
    pub(crate) fn unit_of_temporal(&self) -> Option<usize> {
        match self.temporal.as_ref()?.spec().place {
            Place::AfterConv => Some(1),
            Place::AfterSpatialConv | Place::SplitsSpatialConv => Some(if self.conv3.is_some() { 2 } else { 1 }),
            _ => None,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let place = self.temporal.as_ref().map(|t| t.spec().place);
        let unit = self.unit_of_temporal();
        let x = match (&self.temporal, place, self.shift_block) {
            (Some(t), Some(Place::Shift), true) => t.forward(x),
            _ => x,
        };
        let y = match (&self.temporal, place, self.shift_block) {
            // The residual shift: the shifted map feeds `conv1` alone (TSM's convolution reads
            // it through the shift).
            (Some(Temporal::Tsm(t)), _, false) => shift_conv_bn_relu(t, &self.conv1, &self.bn1, x.clone()),
            (Some(t), Some(Place::Shift), false) => conv_bn_relu(&self.conv1, &self.bn1, t.forward(x.clone())),
            (Some(t), _, _) if unit == Some(1) => unit_with(t, &self.conv1, &self.bn1, x.clone()),
            _ => conv_bn_relu(&self.conv1, &self.bn1, x.clone()),
        };
        let (last_conv, last_bn, y) = match (&self.conv3, &self.bn3, &self.temporal) {
            (Some(conv3), Some(bn3), Some(t)) if unit == Some(2) => {
                (conv3, bn3, unit_with(t, &self.conv2, &self.bn2, y))
            }
            (Some(conv3), Some(bn3), _) => (conv3, bn3, conv_bn_relu(&self.conv2, &self.bn2, y)),
            _ => (&self.conv2, &self.bn2, y),
        };
        let identity = match &self.downsample {
            Some(d) => conv_bn(&d.conv, &d.bn, x),
            None => x,
        };
        match (&self.temporal, place) {
            // GSF sits on the branch's last conv, before its BN (official: bottleneck `conv3`).
            (Some(t), Some(Place::AfterLastConv)) => relu(last_bn.forward(t.forward(conv2d(last_conv, y))) + identity),
            _ => conv_bn_add_relu(last_conv, last_bn, y, identity),
        }
    }

    /// Folds each BN into the conv before it for inference, where no temporal module sits
    /// between them (GSF after the last conv); with GSM after `conv1`, GSM's BN and `bn1` go
    /// to affine form instead (`Gsm::forward_unit`).
    pub fn fold_bn(&mut self) {
        let place = self.temporal.as_ref().map(|t| t.spec().place);
        let unit = self.unit_of_temporal();
        match &mut self.temporal {
            Some(t) if unit == Some(1) => t.fold_unit(&mut self.bn1),
            _ => self.bn1.fold_into(&mut self.conv1),
        }
        let gsf = place == Some(Place::AfterLastConv);
        match (&mut self.conv3, &mut self.bn3) {
            (Some(conv3), Some(bn3)) => {
                match &mut self.temporal {
                    Some(t) if unit == Some(2) => t.fold_unit(&mut self.bn2),
                    _ => self.bn2.fold_into(&mut self.conv2),
                }
                if !gsf {
                    bn3.fold_into(conv3);
                }
            }
            _ if !gsf => self.bn2.fold_into(&mut self.conv2),
            _ => {}
        }
        if let Some(d) = &mut self.downsample {
            d.bn.fold_into(&mut d.conv);
        }
    }
}

/// Stem width of ResNet-Mini; its pooled features have 8× this many channels.
pub const MINI_WIDTH: usize = 32;

#[derive(Module, Debug)]
pub struct ResNet {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub maxpool: MaxPool2d,
    pub layer1: Vec<Block>,
    pub layer2: Vec<Block>,
    pub layer3: Vec<Block>,
    pub layer4: Vec<Block>,
}

impl ResNet {
    /// Folds every BN that directly follows a conv into it, for inference.
    pub fn fold_bn(&mut self) {
        self.bn1.fold_into(&mut self.conv1);
        for block in [&mut self.layer1, &mut self.layer2, &mut self.layer3, &mut self.layer4].into_iter().flatten() {
            block.fold_bn();
        }
    }

    /// Every how many blocks of a stage TSM's residual shift sits, as the official
    /// `make_temporal_shift`: every block, but every second one (blocks 0, 2, 4, …) when the
    /// third stage has 23 or more blocks (ResNet-101, -152). `block` placement shifts every block.
    pub fn residual_shift_round(blocks: [usize; 4]) -> usize {
        if blocks[2] >= 23 { 2 } else { 1 }
    }

    /// Whether block `index` of a stage of `arch` carries TSM's shift (see
    /// [`ResNet::residual_shift_round`]).
    pub fn shifts_block(arch: crate::model::Arch, place: ShiftPlace, index: usize) -> bool {
        let blocks = arch.resnet_depth().and_then(Self::layout).map_or([1; 4], |(b, _)| b);
        place == ShiftPlace::Block || index.is_multiple_of(Self::residual_shift_round(blocks))
    }

    /// Blocks per stage and whether blocks are bottlenecks, for depth 18/34/50/101/152.
    pub fn layout(depth: usize) -> Option<([usize; 4], bool)> {
        Some(match depth {
            18 => ([2, 2, 2, 2], false),
            34 => ([3, 4, 6, 3], false),
            50 => ([3, 4, 6, 3], true),
            101 => ([3, 4, 23, 3], true),
            152 => ([3, 8, 36, 3], true),
            _ => return None,
        })
    }

    /// Feature width after global pooling.
    pub fn features(depth: usize) -> usize {
        match Self::layout(depth) {
            Some((_, true)) => 2048,
            _ => 512,
        }
    }

    pub fn new(
        depth: usize,
        temporal: TemporalKind,
        place: ShiftPlace,
        segments: usize,
        opts: TemporalOpts,
        device: &Device,
    ) -> Self {
        let (blocks, bottleneck) = Self::layout(depth).unwrap_or_else(|| panic!("unsupported ResNet depth {depth}"));
        Self::with_layout(blocks, bottleneck, 64, temporal, place, segments, opts, device)
    }

    /// ResNet-Mini, the small CPU-trainable backbone: one basic block per stage, stage widths
    /// 32·(1, 2, 4, 8), meant for 64–112 px input (≈ 0.1 GMACs per 112² frame).
    pub fn mini(
        temporal: TemporalKind,
        place: ShiftPlace,
        segments: usize,
        opts: TemporalOpts,
        device: &Device,
    ) -> Self {
        Self::with_layout([1; 4], false, MINI_WIDTH, temporal, place, segments, opts, device)
    }

    /// A ResNet with `blocks` per stage, basic or bottleneck blocks, and stage widths
    /// `width`·(1, 2, 4, 8) (64 is torchvision's).
    #[allow(clippy::too_many_arguments)]
    pub fn with_layout(
        blocks: [usize; 4],
        bottleneck: bool,
        width: usize,
        temporal: TemporalKind,
        place: ShiftPlace,
        segments: usize,
        opts: TemporalOpts,
        device: &Device,
    ) -> Self {
        let expansion = if bottleneck { 4 } else { 1 };
        let round = if place == ShiftPlace::Block { 1 } else { Self::residual_shift_round(blocks) };
        let mut cin = width;
        let mut stage = |n: usize, planes: usize, stride: usize| -> Vec<Block> {
            (0..n)
                .map(|i| {
                    let s = if i == 0 { stride } else { 1 };
                    let cout = planes * expansion;
                    let downsample = (s != 1 || cin != cout).then(|| Downsample {
                        conv: ConvSpec::new(cin, cout, 1, s, 0).no_bias().init(device),
                        bn: BatchNorm::new(cout, device),
                    });
                    let (mut conv1, mut conv2, conv3) = if bottleneck {
                        (
                            ConvSpec::new(cin, planes, 1, 1, 0),
                            ConvSpec::new(planes, planes, 3, s, 1),
                            Some(ConvSpec::new(planes, cout, 1, 1, 0)),
                        )
                    } else {
                        (ConvSpec::new(cin, planes, 3, s, 1), ConvSpec::new(planes, planes, 3, 1, 1), None)
                    };
                    let temporal = match temporal.place() {
                        Some(Place::Shift) if !i.is_multiple_of(round) => None,
                        Some(Place::Shift) => temporal.build(cin, segments, opts, device),
                        Some(Place::AfterLastConv) if bottleneck => temporal.build(cout, segments, opts, device),
                        Some(Place::SplitsSpatialConv) => {
                            // GST: the 3×3 unit keeps its spatial share; the module is the rest.
                            let unit = if bottleneck { &mut conv2 } else { &mut conv1 };
                            let mut gst = Gst::new(unit.cin, unit.cout, segments, opts, device);
                            gst.stride = s;
                            let [spatial_in, spatial_out, ..] =
                                gst::split(unit.cin, unit.cout, opts.gst_alpha, opts.gst_beta);
                            (unit.cin, unit.cout) = (spatial_in, spatial_out);
                            Some(Temporal::Gst(gst))
                        }
                        _ => temporal.build(planes, segments, opts, device),
                    };
                    cin = cout;
                    Block {
                        conv1: conv1.no_bias().init(device),
                        bn1: BatchNorm::new(planes, device),
                        conv2: conv2.no_bias().init(device),
                        bn2: BatchNorm::new(planes, device),
                        conv3: conv3.map(|c| c.no_bias().init(device)),
                        bn3: conv3.map(|c| BatchNorm::new(c.cout, device)),
                        downsample,
                        temporal,
                        shift_block: place == ShiftPlace::Block,
                    }
                })
                .collect()
        };
        let layer1 = stage(blocks[0], width, 1);
        let layer2 = stage(blocks[1], width * 2, 2);
        let layer3 = stage(blocks[2], width * 4, 2);
        let layer4 = stage(blocks[3], width * 8, 2);
        Self {
            conv1: ConvSpec::new(3, width, 7, 2, 3).no_bias().init(device),
            bn1: BatchNorm::new(width, device),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1,
            layer2,
            layer3,
            layer4,
        }
    }

    /// Runs the stem and the four stages, returning each stage's output.
    pub fn forward_stages(&self, x: Tensor<4>) -> [Tensor<4>; 4] {
        let x = pool::max(&self.maxpool, conv_bn_relu(&self.conv1, &self.bn1, x));
        let run = |name: &str, blocks: &[Block], x: Tensor<4>| {
            cost::stage(name);
            blocks.iter().fold(x, |x, b| b.forward(x))
        };
        let l1 = run("layer1", &self.layer1, x);
        let l2 = run("layer2", &self.layer2, l1.clone());
        let l3 = run("layer3", &self.layer3, l2.clone());
        let l4 = run("layer4", &self.layer4, l3.clone());
        [l1, l2, l3, l4]
    }

    /// `(N, 3, H, W)` → `(N, C, 1, 1)` globally average-pooled features.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, _, l4] = self.forward_stages(x);
        l4.mean_dims(&[2, 3])
    }
}
