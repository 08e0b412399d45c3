//! InceptionV3 as in the official GSM code (`model_zoo/bninception/inceptionv3.yaml`,
//! Caffe-converted like BN-Inception): convolutions with bias, BN eps 1e-5, ceil-mode
//! pooling, 229² BGR input minus [104, 117, 128], a 6×6 average pool before the classifier.
//! Official layer ids: conv `X_Conv2D`, its BN `X_batchnorm`, its GSM `gsm_X_Conv2D`
//! (`checkpoint::names` maps them onto `X.conv`, `X.bn`, `X.temporal`). The temporal module
//! sits after `mixed`, `mixed_1`, `mixed_2`, `mixed_4`, `mixed_5`, `mixed_7`, `mixed_9`,
//! `mixed_10` `_conv` and `mixed_3`, `mixed_8` `_tower_conv`, before their BN — the 10
//! official GSM places (fPlanes 64, 64, 64, 64, 192, 192, 192, 192, 320, 320).

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::tensor::{Device, Tensor};

use crate::model::cost;
use crate::model::layers::{ConvBn, ConvSpec, fold_units};
use crate::model::temporal::{TemporalKind, TemporalOpts};
use crate::ops::pool;

/// Feature width after global pooling.
pub const FEATURES: usize = 2048;

/// Builds units for one model: plain ones, and ones hosting the temporal module.
struct Units<'a> {
    temporal: TemporalKind,
    segments: usize,
    opts: TemporalOpts,
    device: &'a Device,
}

impl Units<'_> {
    /// `kernel` = (height, width), `pad` = (height, width) as in the YAML.
    fn rect(&self, cin: usize, cout: usize, kernel: [usize; 2], stride: usize, pad: [usize; 2]) -> ConvBn {
        ConvBn::new(ConvSpec { cin, cout, kernel, stride, padding: pad, bias: true }, 1e-5, self.device)
    }
    fn sq(&self, cin: usize, cout: usize, k: usize, stride: usize, pad: usize) -> ConvBn {
        self.rect(cin, cout, [k, k], stride, [pad, pad])
    }
    fn c1(&self, cin: usize, cout: usize) -> ConvBn {
        self.sq(cin, cout, 1, 1, 0)
    }
    /// A 1x1 unit at one of the official GSM places.
    fn gsm_place(&self, cin: usize, cout: usize) -> ConvBn {
        self.temporal_on(self.c1(cin, cout), cout)
    }
    fn temporal_on(&self, unit: ConvBn, cout: usize) -> ConvBn {
        unit.with_temporal(self.temporal.build(cout, self.segments, self.opts, self.device))
    }
    /// GSF's places differ from GSM's in two blocks: `mixed_3_conv` (instead of
    /// `mixed_3_tower_conv`) and `mixed_6_conv` as well (`inceptionv3_gsf.yaml`).
    fn gsf(&self) -> bool {
        self.temporal == TemporalKind::Gsf
    }
    /// `1×7` (row) or `7×1` (column) unit.
    fn row7(&self, cin: usize, cout: usize) -> ConvBn {
        self.rect(cin, cout, [1, 7], 1, [0, 3])
    }
    fn col7(&self, cin: usize, cout: usize) -> ConvBn {
        self.rect(cin, cout, [7, 1], 1, [3, 0])
    }
}

/// Caffe pooling, 3×3, ceil mode; stride-1 pools are padded by 1 (average counts the padding).
pub(crate) fn avg_pool_3x3_layer() -> AvgPool2d {
    AvgPool2dConfig::new([3, 3])
        .with_strides([1, 1])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_count_include_pad(true)
        .with_ceil_mode(true)
        .init()
}

pub(crate) fn max_pool_3x3_layer(stride: usize) -> MaxPool2d {
    let pad = if stride == 1 { 1 } else { 0 };
    MaxPool2dConfig::new([3, 3])
        .with_strides([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_ceil_mode(true)
        .init()
}

fn avg_pool_3x3(x: Tensor<4>) -> Tensor<4> {
    pool::avg(&avg_pool_3x3_layer(), x)
}

fn max_pool_3x3(x: Tensor<4>, stride: usize) -> Tensor<4> {
    pool::max(&max_pool_3x3_layer(stride), x)
}

/// 35×35 block (`mixed`, `mixed_1`, `mixed_2`): 1x1 | 1x1→5x5 | 1x1→3x3→3x3 | avg pool→1x1.
#[derive(Module, Debug)]
pub struct BlockA {
    pub conv: ConvBn,
    pub tower_conv: ConvBn,
    pub tower_conv_1: ConvBn,
    pub tower_1_conv: ConvBn,
    pub tower_1_conv_1: ConvBn,
    pub tower_1_conv_2: ConvBn,
    pub tower_2_conv: ConvBn,
}

impl BlockA {
    /// Folds the units' BNs into their convs for inference (`ConvBn::fold_bn`).
    pub fn fold_bn(&mut self) {
        fold_units!(self: conv, tower_conv, tower_conv_1, tower_1_conv, tower_1_conv_1, tower_1_conv_2, tower_2_conv);
    }

    fn new(u: &Units, cin: usize, pool_proj: usize) -> Self {
        Self {
            conv: u.gsm_place(cin, 64),
            tower_conv: u.c1(cin, 48),
            tower_conv_1: u.sq(48, 64, 5, 1, 2),
            tower_1_conv: u.c1(cin, 64),
            tower_1_conv_1: u.sq(64, 96, 3, 1, 1),
            tower_1_conv_2: u.sq(96, 96, 3, 1, 1),
            tower_2_conv: u.c1(cin, pool_proj),
        }
    }
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let a = self.conv.forward(x.clone());
        let b = self.tower_conv_1.forward(self.tower_conv.forward(x.clone()));
        let c = self.tower_1_conv_2.forward(self.tower_1_conv_1.forward(self.tower_1_conv.forward(x.clone())));
        let d = self.tower_2_conv.forward(avg_pool_3x3(x));
        Tensor::cat(vec![a, b, c, d], 1)
    }
}

/// Grid reduction 35→17 (`mixed_3`): 3x3 s2 | 1x1→3x3→3x3 s2 | max pool s2.
#[derive(Module, Debug)]
pub struct BlockB {
    pub conv: ConvBn,
    pub tower_conv: ConvBn,
    pub tower_conv_1: ConvBn,
    pub tower_conv_2: ConvBn,
}

impl BlockB {
    /// Folds the units' BNs into their convs for inference (`ConvBn::fold_bn`).
    pub fn fold_bn(&mut self) {
        fold_units!(self: conv, tower_conv, tower_conv_1, tower_conv_2);
    }

    fn new(u: &Units) -> Self {
        let conv = u.sq(288, 384, 3, 2, 0);
        Self {
            conv: if u.gsf() { u.temporal_on(conv, 384) } else { conv },
            tower_conv: if u.gsf() { u.c1(288, 64) } else { u.gsm_place(288, 64) },
            tower_conv_1: u.sq(64, 96, 3, 1, 1),
            tower_conv_2: u.sq(96, 96, 3, 2, 0),
        }
    }
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let a = self.conv.forward(x.clone());
        let b = self.tower_conv_2.forward(self.tower_conv_1.forward(self.tower_conv.forward(x.clone())));
        Tensor::cat(vec![a, b, max_pool_3x3(x, 2)], 1)
    }
}

/// 17×17 block (`mixed_4`–`mixed_7`): 1x1 | 1x1→7x1→1x7 | 1x1→1x7→7x1→1x7→7x1 |
/// avg pool→1x1, inner width `c` (128, 160, 160, 192).
#[derive(Module, Debug)]
pub struct BlockC {
    pub conv: ConvBn,
    pub tower_conv: ConvBn,
    pub tower_conv_1: ConvBn,
    pub tower_conv_2: ConvBn,
    pub tower_1_conv: ConvBn,
    pub tower_1_conv_1: ConvBn,
    pub tower_1_conv_2: ConvBn,
    pub tower_1_conv_3: ConvBn,
    pub tower_1_conv_4: ConvBn,
    pub tower_2_conv: ConvBn,
}

impl BlockC {
    /// Folds the units' BNs into their convs for inference (`ConvBn::fold_bn`).
    pub fn fold_bn(&mut self) {
        fold_units!(self:
            conv, tower_conv, tower_conv_1, tower_conv_2, tower_1_conv, tower_1_conv_1, tower_1_conv_2,
            tower_1_conv_3, tower_1_conv_4, tower_2_conv
        );
    }

    fn new(u: &Units, c: usize, gsm: bool) -> Self {
        Self {
            conv: if gsm { u.gsm_place(768, 192) } else { u.c1(768, 192) },
            tower_conv: u.c1(768, c),
            tower_conv_1: u.col7(c, c),
            tower_conv_2: u.row7(c, 192),
            tower_1_conv: u.c1(768, c),
            tower_1_conv_1: u.row7(c, c),
            tower_1_conv_2: u.col7(c, c),
            tower_1_conv_3: u.row7(c, c),
            tower_1_conv_4: u.col7(c, 192),
            tower_2_conv: u.c1(768, 192),
        }
    }
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let a = self.conv.forward(x.clone());
        let b = self.tower_conv_2.forward(self.tower_conv_1.forward(self.tower_conv.forward(x.clone())));
        let mut c = self.tower_1_conv.forward(x.clone());
        for unit in [&self.tower_1_conv_1, &self.tower_1_conv_2, &self.tower_1_conv_3, &self.tower_1_conv_4] {
            c = unit.forward(c);
        }
        let d = self.tower_2_conv.forward(avg_pool_3x3(x));
        Tensor::cat(vec![a, b, c, d], 1)
    }
}

/// Grid reduction 17→8 (`mixed_8`): 1x1→3x3 s2 | 1x1→7x1→1x7→3x3 s2 | max pool s2.
#[derive(Module, Debug)]
pub struct BlockD {
    pub tower_conv: ConvBn,
    pub tower_conv_1: ConvBn,
    pub tower_1_conv: ConvBn,
    pub tower_1_conv_1: ConvBn,
    pub tower_1_conv_2: ConvBn,
    pub tower_1_conv_3: ConvBn,
}

impl BlockD {
    /// Folds the units' BNs into their convs for inference (`ConvBn::fold_bn`).
    pub fn fold_bn(&mut self) {
        fold_units!(self: tower_conv, tower_conv_1, tower_1_conv, tower_1_conv_1, tower_1_conv_2, tower_1_conv_3);
    }

    fn new(u: &Units) -> Self {
        Self {
            tower_conv: u.gsm_place(768, 192),
            tower_conv_1: u.sq(192, 320, 3, 2, 0),
            tower_1_conv: u.c1(768, 192),
            tower_1_conv_1: u.col7(192, 192),
            tower_1_conv_2: u.row7(192, 192),
            tower_1_conv_3: u.sq(192, 192, 3, 2, 0),
        }
    }
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let a = self.tower_conv_1.forward(self.tower_conv.forward(x.clone()));
        let mut b = self.tower_1_conv.forward(x.clone());
        for unit in [&self.tower_1_conv_1, &self.tower_1_conv_2, &self.tower_1_conv_3] {
            b = unit.forward(b);
        }
        Tensor::cat(vec![a, b, max_pool_3x3(x, 2)], 1)
    }
}

/// 8×8 block (`mixed_9`, `mixed_10`): 1x1 | 1x1→(3x1, 1x3) | 1x1→3x3→(3x1, 1x3) |
/// pool→1x1 (average in `mixed_9`, max in `mixed_10`).
#[derive(Module, Debug)]
pub struct BlockE {
    pub conv: ConvBn,
    pub tower_conv: ConvBn,
    pub tower_mixed_conv: ConvBn,
    pub tower_mixed_conv_1: ConvBn,
    pub tower_1_conv: ConvBn,
    pub tower_1_conv_1: ConvBn,
    pub tower_1_mixed_conv: ConvBn,
    pub tower_1_mixed_conv_1: ConvBn,
    pub tower_2_conv: ConvBn,
    pub max_pool: bool,
}

impl BlockE {
    /// Folds the units' BNs into their convs for inference (`ConvBn::fold_bn`).
    pub fn fold_bn(&mut self) {
        fold_units!(self:
            conv, tower_conv, tower_mixed_conv, tower_mixed_conv_1, tower_1_conv, tower_1_conv_1, tower_1_mixed_conv,
            tower_1_mixed_conv_1, tower_2_conv
        );
    }

    fn new(u: &Units, cin: usize, max_pool: bool) -> Self {
        Self {
            conv: u.gsm_place(cin, 320),
            tower_conv: u.c1(cin, 384),
            tower_mixed_conv: u.rect(384, 384, [3, 1], 1, [1, 0]),
            tower_mixed_conv_1: u.rect(384, 384, [1, 3], 1, [0, 1]),
            tower_1_conv: u.c1(cin, 448),
            tower_1_conv_1: u.sq(448, 384, 3, 1, 1),
            tower_1_mixed_conv: u.rect(384, 384, [3, 1], 1, [1, 0]),
            tower_1_mixed_conv_1: u.rect(384, 384, [1, 3], 1, [0, 1]),
            tower_2_conv: u.c1(cin, 192),
            max_pool,
        }
    }
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let a = self.conv.forward(x.clone());
        let t = self.tower_conv.forward(x.clone());
        let (b1, b2) = (self.tower_mixed_conv.forward(t.clone()), self.tower_mixed_conv_1.forward(t));
        let t1 = self.tower_1_conv_1.forward(self.tower_1_conv.forward(x.clone()));
        let (c1, c2) = (self.tower_1_mixed_conv.forward(t1.clone()), self.tower_1_mixed_conv_1.forward(t1));
        let pooled = if self.max_pool { max_pool_3x3(x, 1) } else { avg_pool_3x3(x) };
        let d = self.tower_2_conv.forward(pooled);
        Tensor::cat(vec![a, b1, b2, c1, c2, d], 1)
    }
}

#[derive(Module, Debug)]
pub struct InceptionV3 {
    pub conv: ConvBn,
    pub conv_1: ConvBn,
    pub conv_2: ConvBn,
    pub conv_3: ConvBn,
    pub conv_4: ConvBn,
    pub mixed: BlockA,
    pub mixed_1: BlockA,
    pub mixed_2: BlockA,
    pub mixed_3: BlockB,
    pub mixed_4: BlockC,
    pub mixed_5: BlockC,
    pub mixed_6: BlockC,
    pub mixed_7: BlockC,
    pub mixed_8: BlockD,
    pub mixed_9: BlockE,
    pub mixed_10: BlockE,
}

impl InceptionV3 {
    /// Folds the BN of every unit into its conv for inference (`ConvBn::fold_bn`).
    pub fn fold_bn(&mut self) {
        fold_units!(self:
            conv, conv_1, conv_2, conv_3, conv_4, mixed, mixed_1, mixed_2, mixed_3, mixed_4, mixed_5, mixed_6,
            mixed_7, mixed_8, mixed_9, mixed_10
        );
    }

    pub fn new(temporal: TemporalKind, segments: usize, opts: TemporalOpts, device: &Device) -> Self {
        let u = Units { temporal, segments, opts, device };
        Self {
            conv: u.sq(3, 32, 3, 2, 0),
            conv_1: u.sq(32, 32, 3, 1, 0),
            conv_2: u.sq(32, 64, 3, 1, 1),
            conv_3: u.c1(64, 80),
            conv_4: u.sq(80, 192, 3, 1, 0),
            mixed: BlockA::new(&u, 192, 32),
            mixed_1: BlockA::new(&u, 256, 64),
            mixed_2: BlockA::new(&u, 288, 64),
            mixed_3: BlockB::new(&u),
            mixed_4: BlockC::new(&u, 128, true),
            mixed_5: BlockC::new(&u, 160, true),
            mixed_6: BlockC::new(&u, 160, u.gsf()),
            mixed_7: BlockC::new(&u, 192, true),
            mixed_8: BlockD::new(&u),
            mixed_9: BlockE::new(&u, 1280, false),
            mixed_10: BlockE::new(&u, 2048, true),
        }
    }

    /// `(N, 3, 229, 229)` → `(N, 2048, 1, 1)` pooled features.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.conv_2.forward(self.conv_1.forward(self.conv.forward(x)));
        let x = max_pool_3x3(x, 2);
        let x = self.conv_4.forward(self.conv_3.forward(x));
        let x = max_pool_3x3(x, 2);
        cost::stage("mixed (35×35)");
        let x = self.mixed_2.forward(self.mixed_1.forward(self.mixed.forward(x)));
        let x = self.mixed_3.forward(x);
        cost::stage("mixed_4 (17×17)");
        let x = self.mixed_7.forward(self.mixed_6.forward(self.mixed_5.forward(self.mixed_4.forward(x))));
        let x = self.mixed_8.forward(x);
        cost::stage("mixed_9 (8×8)");
        let x = self.mixed_10.forward(self.mixed_9.forward(x));
        // The official AvgPool2d(6) (`top_cls_pool`) on the 6×6 map at 229²; other input
        // sizes (where the official flatten would fail) get a global average.
        x.mean_dims(&[2, 3])
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use crate::checkpoint;
    use crate::model::{Arch, ModelConfig, TemporalKind};
    use crate::train::optim::learnable_params;

    #[test]
    fn shapes_and_parameter_count() {
        let device = crate::backend::device("flex").unwrap();
        let tsn = ModelConfig::new(Arch::InceptionV3, TemporalKind::None, 2, 1000);
        let model = tsn.init(&device);
        // Keras' InceptionV3 (same layers, 1000-way fc) has 23,817,352 trainable parameters
        // with bias-free convs and scale-free BN; the Caffe conversion adds a conv bias and
        // a BN scale on each of its 17,216 BN channels.
        assert_eq!(learnable_params(&model), 23_817_352 + 2 * 17_216);
        let x = burn::tensor::Tensor::<4>::random([1, 2 * 3, 229, 229], Distribution::Normal(0.0, 50.0), &device);
        let feats = model.base_model.forward(x.reshape([2, 3, 229, 229]));
        assert_eq!(feats.dims(), [2, super::FEATURES]);
    }

    #[test]
    fn gsm_checkpoint_names_are_official_and_round_trip() {
        let device = crate::backend::device("flex").unwrap();
        let cfg = ModelConfig::new(Arch::InceptionV3, TemporalKind::Gsm, 8, 174);
        let model = cfg.init(&device);
        let sd = checkpoint::state_dict(&model, &cfg).unwrap();
        let keys: Vec<&String> = sd.tensors.keys().collect();
        let convs = keys.iter().filter(|k| k.ends_with("_Conv2D.weight") && !k.contains("gsm_")).count();
        assert_eq!(convs, 94, "convolutions of inceptionv3.yaml");
        let gsm: Vec<&str> = keys
            .iter()
            .filter_map(|k| k.strip_prefix("base_model.gsm_")?.strip_suffix("_Conv2D.conv3D.weight"))
            .collect();
        let mut expected = [
            "mixed_conv",
            "mixed_1_conv",
            "mixed_2_conv",
            "mixed_3_tower_conv",
            "mixed_4_conv",
            "mixed_5_conv",
            "mixed_7_conv",
            "mixed_8_tower_conv",
            "mixed_9_conv",
            "mixed_10_conv",
        ];
        expected.sort_unstable();
        assert_eq!(gsm, expected);
        // fPlane of each GSM: its BN3d width.
        assert_eq!(sd.tensors["base_model.gsm_mixed_8_tower_conv_Conv2D.bn.weight"].shape().to_vec(), vec![192]);
        assert_eq!(sd.tensors["base_model.gsm_mixed_10_conv_Conv2D.bn.weight"].shape().to_vec(), vec![320]);
        assert!(sd.tensors.contains_key("base_model.mixed_10_tower_1_mixed_conv_1_batchnorm.running_var"));
        let mut fresh = cfg.init(&device);
        let report = checkpoint::load(&mut fresh, &cfg, &sd, crate::checkpoint::Fit::Strict).unwrap();
        assert!(report.missing.is_empty() && report.unused.is_empty());
    }
}
