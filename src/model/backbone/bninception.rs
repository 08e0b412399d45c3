//! BN-Inception as in the official GSM/TSN code (Caffe-converted): convolutions with bias,
//! BN eps 1e-5, ceil-mode pooling, 224² BGR input minus [104, 117, 128]. The temporal
//! module sits after `inception_{3a,3b,4a,4b,4c,4d,5a,5b}_1x1` and
//! `inception_{3c,4e}_3x3_reduce`, before their BN — the 10 official GSM places.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::tensor::{Device, Tensor};

use crate::model::cost;
use crate::model::layers::{ConvBn, ConvSpec};
use crate::model::temporal::{TemporalKind, TemporalOpts};
use crate::ops::pool;

/// Feature width after global pooling.
pub const FEATURES: usize = 1024;

/// A four-branch block (1x1 | 3x3_reduce→3x3 | double_3x3 | pool→pool_proj).
pub(crate) struct Mixed<'a> {
    pub b1x1: &'a ConvBn,
    pub b3x3: [&'a ConvBn; 2],
    pub double: [&'a ConvBn; 3],
    pub pool_proj: &'a ConvBn,
    pub max_pool: bool,
}

#[derive(Module, Debug)]
pub struct BnInception {
    pub conv1_7x7_s2: ConvBn,
    pub conv2_3x3_reduce: ConvBn,
    pub conv2_3x3: ConvBn,
    pub inception_3a_1x1: ConvBn,
    pub inception_3a_3x3_reduce: ConvBn,
    pub inception_3a_3x3: ConvBn,
    pub inception_3a_double_3x3_reduce: ConvBn,
    pub inception_3a_double_3x3_1: ConvBn,
    pub inception_3a_double_3x3_2: ConvBn,
    pub inception_3a_pool_proj: ConvBn,
    pub inception_3b_1x1: ConvBn,
    pub inception_3b_3x3_reduce: ConvBn,
    pub inception_3b_3x3: ConvBn,
    pub inception_3b_double_3x3_reduce: ConvBn,
    pub inception_3b_double_3x3_1: ConvBn,
    pub inception_3b_double_3x3_2: ConvBn,
    pub inception_3b_pool_proj: ConvBn,
    pub inception_3c_3x3_reduce: ConvBn,
    pub inception_3c_3x3: ConvBn,
    pub inception_3c_double_3x3_reduce: ConvBn,
    pub inception_3c_double_3x3_1: ConvBn,
    pub inception_3c_double_3x3_2: ConvBn,
    pub inception_4a_1x1: ConvBn,
    pub inception_4a_3x3_reduce: ConvBn,
    pub inception_4a_3x3: ConvBn,
    pub inception_4a_double_3x3_reduce: ConvBn,
    pub inception_4a_double_3x3_1: ConvBn,
    pub inception_4a_double_3x3_2: ConvBn,
    pub inception_4a_pool_proj: ConvBn,
    pub inception_4b_1x1: ConvBn,
    pub inception_4b_3x3_reduce: ConvBn,
    pub inception_4b_3x3: ConvBn,
    pub inception_4b_double_3x3_reduce: ConvBn,
    pub inception_4b_double_3x3_1: ConvBn,
    pub inception_4b_double_3x3_2: ConvBn,
    pub inception_4b_pool_proj: ConvBn,
    pub inception_4c_1x1: ConvBn,
    pub inception_4c_3x3_reduce: ConvBn,
    pub inception_4c_3x3: ConvBn,
    pub inception_4c_double_3x3_reduce: ConvBn,
    pub inception_4c_double_3x3_1: ConvBn,
    pub inception_4c_double_3x3_2: ConvBn,
    pub inception_4c_pool_proj: ConvBn,
    pub inception_4d_1x1: ConvBn,
    pub inception_4d_3x3_reduce: ConvBn,
    pub inception_4d_3x3: ConvBn,
    pub inception_4d_double_3x3_reduce: ConvBn,
    pub inception_4d_double_3x3_1: ConvBn,
    pub inception_4d_double_3x3_2: ConvBn,
    pub inception_4d_pool_proj: ConvBn,
    pub inception_4e_3x3_reduce: ConvBn,
    pub inception_4e_3x3: ConvBn,
    pub inception_4e_double_3x3_reduce: ConvBn,
    pub inception_4e_double_3x3_1: ConvBn,
    pub inception_4e_double_3x3_2: ConvBn,
    pub inception_5a_1x1: ConvBn,
    pub inception_5a_3x3_reduce: ConvBn,
    pub inception_5a_3x3: ConvBn,
    pub inception_5a_double_3x3_reduce: ConvBn,
    pub inception_5a_double_3x3_1: ConvBn,
    pub inception_5a_double_3x3_2: ConvBn,
    pub inception_5a_pool_proj: ConvBn,
    pub inception_5b_1x1: ConvBn,
    pub inception_5b_3x3_reduce: ConvBn,
    pub inception_5b_3x3: ConvBn,
    pub inception_5b_double_3x3_reduce: ConvBn,
    pub inception_5b_double_3x3_1: ConvBn,
    pub inception_5b_double_3x3_2: ConvBn,
    pub inception_5b_pool_proj: ConvBn,
    pub pool_s2: MaxPool2d,
    pub pool_avg: AvgPool2d,
    pub pool_max: MaxPool2d,
}

impl BnInception {
    pub fn new(temporal: TemporalKind, segments: usize, opts: TemporalOpts, device: &Device) -> Self {
        let u = |cin, cout, k, s, p| ConvBn::new(ConvSpec::new(cin, cout, k, s, p), 1e-5, device);
        // The 10 official GSM places: the first conv of a branch, before its BN.
        let ut = |cin, cout| u(cin, cout, 1, 1, 0).with_temporal(temporal.build(cout, segments, opts, device));
        let (pool_avg, pool_max) = Self::branch_pools();
        Self {
            conv1_7x7_s2: u(3, 64, 7, 2, 3),
            conv2_3x3_reduce: u(64, 64, 1, 1, 0),
            conv2_3x3: u(64, 192, 3, 1, 1),
            inception_3a_1x1: ut(192, 64),
            inception_3a_3x3_reduce: u(192, 64, 1, 1, 0),
            inception_3a_3x3: u(64, 64, 3, 1, 1),
            inception_3a_double_3x3_reduce: u(192, 64, 1, 1, 0),
            inception_3a_double_3x3_1: u(64, 96, 3, 1, 1),
            inception_3a_double_3x3_2: u(96, 96, 3, 1, 1),
            inception_3a_pool_proj: u(192, 32, 1, 1, 0),
            inception_3b_1x1: ut(256, 64),
            inception_3b_3x3_reduce: u(256, 64, 1, 1, 0),
            inception_3b_3x3: u(64, 96, 3, 1, 1),
            inception_3b_double_3x3_reduce: u(256, 64, 1, 1, 0),
            inception_3b_double_3x3_1: u(64, 96, 3, 1, 1),
            inception_3b_double_3x3_2: u(96, 96, 3, 1, 1),
            inception_3b_pool_proj: u(256, 64, 1, 1, 0),
            inception_3c_3x3_reduce: ut(320, 128),
            inception_3c_3x3: u(128, 160, 3, 2, 1),
            inception_3c_double_3x3_reduce: u(320, 64, 1, 1, 0),
            inception_3c_double_3x3_1: u(64, 96, 3, 1, 1),
            inception_3c_double_3x3_2: u(96, 96, 3, 2, 1),
            inception_4a_1x1: ut(576, 224),
            inception_4a_3x3_reduce: u(576, 64, 1, 1, 0),
            inception_4a_3x3: u(64, 96, 3, 1, 1),
            inception_4a_double_3x3_reduce: u(576, 96, 1, 1, 0),
            inception_4a_double_3x3_1: u(96, 128, 3, 1, 1),
            inception_4a_double_3x3_2: u(128, 128, 3, 1, 1),
            inception_4a_pool_proj: u(576, 128, 1, 1, 0),
            inception_4b_1x1: ut(576, 192),
            inception_4b_3x3_reduce: u(576, 96, 1, 1, 0),
            inception_4b_3x3: u(96, 128, 3, 1, 1),
            inception_4b_double_3x3_reduce: u(576, 96, 1, 1, 0),
            inception_4b_double_3x3_1: u(96, 128, 3, 1, 1),
            inception_4b_double_3x3_2: u(128, 128, 3, 1, 1),
            inception_4b_pool_proj: u(576, 128, 1, 1, 0),
            inception_4c_1x1: ut(576, 160),
            inception_4c_3x3_reduce: u(576, 128, 1, 1, 0),
            inception_4c_3x3: u(128, 160, 3, 1, 1),
            inception_4c_double_3x3_reduce: u(576, 128, 1, 1, 0),
            inception_4c_double_3x3_1: u(128, 160, 3, 1, 1),
            inception_4c_double_3x3_2: u(160, 160, 3, 1, 1),
            inception_4c_pool_proj: u(576, 128, 1, 1, 0),
            inception_4d_1x1: ut(608, 96),
            inception_4d_3x3_reduce: u(608, 128, 1, 1, 0),
            inception_4d_3x3: u(128, 192, 3, 1, 1),
            inception_4d_double_3x3_reduce: u(608, 160, 1, 1, 0),
            inception_4d_double_3x3_1: u(160, 192, 3, 1, 1),
            inception_4d_double_3x3_2: u(192, 192, 3, 1, 1),
            inception_4d_pool_proj: u(608, 128, 1, 1, 0),
            inception_4e_3x3_reduce: ut(608, 128),
            inception_4e_3x3: u(128, 192, 3, 2, 1),
            inception_4e_double_3x3_reduce: u(608, 192, 1, 1, 0),
            inception_4e_double_3x3_1: u(192, 256, 3, 1, 1),
            inception_4e_double_3x3_2: u(256, 256, 3, 2, 1),
            inception_5a_1x1: ut(1056, 352),
            inception_5a_3x3_reduce: u(1056, 192, 1, 1, 0),
            inception_5a_3x3: u(192, 320, 3, 1, 1),
            inception_5a_double_3x3_reduce: u(1056, 160, 1, 1, 0),
            inception_5a_double_3x3_1: u(160, 224, 3, 1, 1),
            inception_5a_double_3x3_2: u(224, 224, 3, 1, 1),
            inception_5a_pool_proj: u(1056, 128, 1, 1, 0),
            inception_5b_1x1: ut(1024, 352),
            inception_5b_3x3_reduce: u(1024, 192, 1, 1, 0),
            inception_5b_3x3: u(192, 320, 3, 1, 1),
            inception_5b_double_3x3_reduce: u(1024, 192, 1, 1, 0),
            inception_5b_double_3x3_1: u(192, 224, 3, 1, 1),
            inception_5b_double_3x3_2: u(224, 224, 3, 1, 1),
            inception_5b_pool_proj: u(1024, 128, 1, 1, 0),
            pool_s2: MaxPool2dConfig::new([3, 3]).with_strides([2, 2]).with_ceil_mode(true).init(),
            pool_avg,
            pool_max,
        }
    }

    /// The pooling branches' 3×3 stride-1 pools (Caffe's ceil mode, padding 1; the average
    /// counts the padding).
    fn branch_pools() -> (AvgPool2d, MaxPool2d) {
        let avg = AvgPool2dConfig::new([3, 3])
            .with_strides([1, 1])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_count_include_pad(true)
            .with_ceil_mode(true)
            .init();
        let max = MaxPool2dConfig::new([3, 3])
            .with_strides([1, 1])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_ceil_mode(true)
            .init();
        (avg, max)
    }

    /// `(N, 3, 224, 224)` → `(N, 1024)` pooled features.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.conv1_7x7_s2.forward(x);
        let x = pool::max(&self.pool_s2, x);
        let x = self.conv2_3x3.forward(self.conv2_3x3_reduce.forward(x));
        let x = pool::max(&self.pool_s2, x);
        cost::stage("inception_3");
        let x = self.mixed(x, self.block_3a());
        let x = self.mixed(x, self.block_3b());
        let x = self.reduction(
            x,
            [&self.inception_3c_3x3_reduce, &self.inception_3c_3x3],
            [&self.inception_3c_double_3x3_reduce, &self.inception_3c_double_3x3_1, &self.inception_3c_double_3x3_2],
        );
        cost::stage("inception_4");
        let x = self.mixed(x, self.block_4(0));
        let x = self.mixed(x, self.block_4(1));
        let x = self.mixed(x, self.block_4(2));
        let x = self.mixed(x, self.block_4(3));
        let x = self.reduction(
            x,
            [&self.inception_4e_3x3_reduce, &self.inception_4e_3x3],
            [&self.inception_4e_double_3x3_reduce, &self.inception_4e_double_3x3_1, &self.inception_4e_double_3x3_2],
        );
        cost::stage("inception_5");
        let x = self.mixed(x, self.block_5(false));
        let x = self.mixed(x, self.block_5(true));
        // Global average pooling (the official AvgPool2d(7) on the 7×7 map at 224²).
        x.mean_dims(&[2, 3])
    }

    /// Folds every unit's BN into its conv for inference (not where GSM sits between them).
    pub fn fold_bn(&mut self) {
        for unit in self.units_mut() {
            unit.fold_bn();
        }
    }

    fn units_mut(&mut self) -> [&mut ConvBn; 69] {
        [
            &mut self.conv1_7x7_s2,
            &mut self.conv2_3x3_reduce,
            &mut self.conv2_3x3,
            &mut self.inception_3a_1x1,
            &mut self.inception_3a_3x3_reduce,
            &mut self.inception_3a_3x3,
            &mut self.inception_3a_double_3x3_reduce,
            &mut self.inception_3a_double_3x3_1,
            &mut self.inception_3a_double_3x3_2,
            &mut self.inception_3a_pool_proj,
            &mut self.inception_3b_1x1,
            &mut self.inception_3b_3x3_reduce,
            &mut self.inception_3b_3x3,
            &mut self.inception_3b_double_3x3_reduce,
            &mut self.inception_3b_double_3x3_1,
            &mut self.inception_3b_double_3x3_2,
            &mut self.inception_3b_pool_proj,
            &mut self.inception_3c_3x3_reduce,
            &mut self.inception_3c_3x3,
            &mut self.inception_3c_double_3x3_reduce,
            &mut self.inception_3c_double_3x3_1,
            &mut self.inception_3c_double_3x3_2,
            &mut self.inception_4a_1x1,
            &mut self.inception_4a_3x3_reduce,
            &mut self.inception_4a_3x3,
            &mut self.inception_4a_double_3x3_reduce,
            &mut self.inception_4a_double_3x3_1,
            &mut self.inception_4a_double_3x3_2,
            &mut self.inception_4a_pool_proj,
            &mut self.inception_4b_1x1,
            &mut self.inception_4b_3x3_reduce,
            &mut self.inception_4b_3x3,
            &mut self.inception_4b_double_3x3_reduce,
            &mut self.inception_4b_double_3x3_1,
            &mut self.inception_4b_double_3x3_2,
            &mut self.inception_4b_pool_proj,
            &mut self.inception_4c_1x1,
            &mut self.inception_4c_3x3_reduce,
            &mut self.inception_4c_3x3,
            &mut self.inception_4c_double_3x3_reduce,
            &mut self.inception_4c_double_3x3_1,
            &mut self.inception_4c_double_3x3_2,
            &mut self.inception_4c_pool_proj,
            &mut self.inception_4d_1x1,
            &mut self.inception_4d_3x3_reduce,
            &mut self.inception_4d_3x3,
            &mut self.inception_4d_double_3x3_reduce,
            &mut self.inception_4d_double_3x3_1,
            &mut self.inception_4d_double_3x3_2,
            &mut self.inception_4d_pool_proj,
            &mut self.inception_4e_3x3_reduce,
            &mut self.inception_4e_3x3,
            &mut self.inception_4e_double_3x3_reduce,
            &mut self.inception_4e_double_3x3_1,
            &mut self.inception_4e_double_3x3_2,
            &mut self.inception_5a_1x1,
            &mut self.inception_5a_3x3_reduce,
            &mut self.inception_5a_3x3,
            &mut self.inception_5a_double_3x3_reduce,
            &mut self.inception_5a_double_3x3_1,
            &mut self.inception_5a_double_3x3_2,
            &mut self.inception_5a_pool_proj,
            &mut self.inception_5b_1x1,
            &mut self.inception_5b_3x3_reduce,
            &mut self.inception_5b_3x3,
            &mut self.inception_5b_double_3x3_reduce,
            &mut self.inception_5b_double_3x3_1,
            &mut self.inception_5b_double_3x3_2,
            &mut self.inception_5b_pool_proj,
        ]
    }

    fn mixed(&self, x: Tensor<4>, m: Mixed<'_>) -> Tensor<4> {
        let a = m.b1x1.forward(x.clone());
        let b = m.b3x3[1].forward(m.b3x3[0].forward(x.clone()));
        let c = m.double[2].forward(m.double[1].forward(m.double[0].forward(x.clone())));
        let pooled = if m.max_pool { pool::max(&self.pool_max, x) } else { pool::avg(&self.pool_avg, x) };
        let d = m.pool_proj.forward(pooled);
        Tensor::cat(vec![a, b, c, d], 1)
    }

    /// A reduction block: 3x3_reduce→3x3 s2 | double_3x3 (s2) | max pool s2.
    fn reduction(&self, x: Tensor<4>, b3x3: [&ConvBn; 2], double: [&ConvBn; 3]) -> Tensor<4> {
        let a = b3x3[1].forward(b3x3[0].forward(x.clone()));
        let b = double[2].forward(double[1].forward(double[0].forward(x.clone())));
        let c = pool::max(&self.pool_s2, x);
        Tensor::cat(vec![a, b, c], 1)
    }

    pub(crate) fn block_3a(&self) -> Mixed<'_> {
        Mixed {
            b1x1: &self.inception_3a_1x1,
            b3x3: [&self.inception_3a_3x3_reduce, &self.inception_3a_3x3],
            double: [
                &self.inception_3a_double_3x3_reduce,
                &self.inception_3a_double_3x3_1,
                &self.inception_3a_double_3x3_2,
            ],
            pool_proj: &self.inception_3a_pool_proj,
            max_pool: false,
        }
    }

    pub(crate) fn block_3b(&self) -> Mixed<'_> {
        Mixed {
            b1x1: &self.inception_3b_1x1,
            b3x3: [&self.inception_3b_3x3_reduce, &self.inception_3b_3x3],
            double: [
                &self.inception_3b_double_3x3_reduce,
                &self.inception_3b_double_3x3_1,
                &self.inception_3b_double_3x3_2,
            ],
            pool_proj: &self.inception_3b_pool_proj,
            max_pool: false,
        }
    }

    /// Blocks 4a–4d.
    pub(crate) fn block_4(&self, i: usize) -> Mixed<'_> {
        let s = self;
        let units = [
            [
                &s.inception_4a_1x1,
                &s.inception_4a_3x3_reduce,
                &s.inception_4a_3x3,
                &s.inception_4a_double_3x3_reduce,
                &s.inception_4a_double_3x3_1,
                &s.inception_4a_double_3x3_2,
                &s.inception_4a_pool_proj,
            ],
            [
                &s.inception_4b_1x1,
                &s.inception_4b_3x3_reduce,
                &s.inception_4b_3x3,
                &s.inception_4b_double_3x3_reduce,
                &s.inception_4b_double_3x3_1,
                &s.inception_4b_double_3x3_2,
                &s.inception_4b_pool_proj,
            ],
            [
                &s.inception_4c_1x1,
                &s.inception_4c_3x3_reduce,
                &s.inception_4c_3x3,
                &s.inception_4c_double_3x3_reduce,
                &s.inception_4c_double_3x3_1,
                &s.inception_4c_double_3x3_2,
                &s.inception_4c_pool_proj,
            ],
            [
                &s.inception_4d_1x1,
                &s.inception_4d_3x3_reduce,
                &s.inception_4d_3x3,
                &s.inception_4d_double_3x3_reduce,
                &s.inception_4d_double_3x3_1,
                &s.inception_4d_double_3x3_2,
                &s.inception_4d_pool_proj,
            ],
        ];
        let u = units[i];
        Mixed { b1x1: u[0], b3x3: [u[1], u[2]], double: [u[3], u[4], u[5]], pool_proj: u[6], max_pool: false }
    }

    /// Blocks 5a (average pool branch) and 5b (max pool branch).
    pub(crate) fn block_5(&self, b: bool) -> Mixed<'_> {
        let s = self;
        let u = if b {
            [
                &s.inception_5b_1x1,
                &s.inception_5b_3x3_reduce,
                &s.inception_5b_3x3,
                &s.inception_5b_double_3x3_reduce,
                &s.inception_5b_double_3x3_1,
                &s.inception_5b_double_3x3_2,
                &s.inception_5b_pool_proj,
            ]
        } else {
            [
                &s.inception_5a_1x1,
                &s.inception_5a_3x3_reduce,
                &s.inception_5a_3x3,
                &s.inception_5a_double_3x3_reduce,
                &s.inception_5a_double_3x3_1,
                &s.inception_5a_double_3x3_2,
                &s.inception_5a_pool_proj,
            ]
        };
        Mixed { b1x1: u[0], b3x3: [u[1], u[2]], double: [u[3], u[4], u[5]], pool_proj: u[6], max_pool: b }
    }
}
