//! The TSN-style recognizer: every sampled frame goes through the 2D backbone (which may
//! hold temporal modules), then dropout and `new_fc`; the per-frame class scores are
//! averaged over the segments (average consensus).

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::backbone::{Arch, Backbone, ShiftPlace};
use crate::model::cost;
use crate::model::temporal::{TemporalKind, TemporalOpts};

/// Everything needed to build a recognizer; stored beside checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub temporal: TemporalKind,
    pub segments: usize,
    pub classes: usize,
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    #[serde(default = "default_shift_div")]
    pub shift_div: usize,
    #[serde(default)]
    pub shift_place: ShiftPlace,
    /// GSF: percentage of channels gated (default: the official one for the backbone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gsf_ratio: Option<usize>,
}

fn default_dropout() -> f64 {
    0.5
}
fn default_shift_div() -> usize {
    8
}

impl ModelConfig {
    pub fn new(arch: Arch, temporal: TemporalKind, segments: usize, classes: usize) -> Self {
        Self {
            arch,
            temporal,
            segments,
            classes,
            dropout: default_dropout(),
            shift_div: default_shift_div(),
            shift_place: ShiftPlace::Blockres,
            gsf_ratio: None,
        }
    }

    /// Refuses configurations gateshift cannot build, with the reason (GSF gates a
    /// multiple of 4 channels at every place: `--gsf-ratio` must allow that).
    pub fn check(&self) -> anyhow::Result<()> {
        if self.temporal == TemporalKind::Gsf {
            let r = self.temporal_opts().gsf_ratio;
            if r == 0 || r > 100 {
                anyhow::bail!("--gsf-ratio must be a percentage in 1..=100, got {r}");
            }
        }
        Ok(())
    }

    /// The temporal modules' hyper-parameters, defaults resolved.
    pub fn temporal_opts(&self) -> TemporalOpts {
        TemporalOpts { shift_div: self.shift_div, gsf_ratio: self.gsf_ratio.unwrap_or(self.arch.gsf_ratio()) }
    }

    pub fn init(&self, device: &Device) -> Recognizer {
        Recognizer {
            base_model: Backbone::new(
                self.arch,
                self.temporal,
                self.shift_place,
                self.segments,
                self.temporal_opts(),
                device,
            ),
            dropout: DropoutConfig::new(self.dropout).init(),
            new_fc: LinearConfig::new(self.arch.features(), self.classes).init(device),
            num_segments: self.segments,
        }
    }
}

#[derive(Module, Debug)]
pub struct Recognizer {
    pub base_model: Backbone,
    pub dropout: Dropout,
    pub new_fc: Linear,
    pub num_segments: usize,
}

impl Recognizer {
    /// `(batch, segments·3, H, W)` → `(batch, classes)` logits.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<2> {
        let frames = self.forward_frames(input);
        let [b, _, k] = frames.dims();
        frames.mean_dim(1).reshape([b, k])
    }

    /// Per-frame class scores `(batch, segments, classes)` before the consensus.
    pub fn forward_frames(&self, input: Tensor<4>) -> Tensor<3> {
        let [b, c, h, w] = input.dims();
        let t = self.num_segments;
        assert_eq!(c, t * 3, "input has {c} channels, expected segments·3 = {}", t * 3);
        let features = self.base_model.forward(input.reshape([b * t, 3, h, w]));
        cost::stage("new_fc");
        let scores = self.new_fc.forward(self.dropout.forward(features));
        if cost::is_recording() {
            let [n, f] = scores.dims();
            cost::add((n * f * self.new_fc.weight.dims()[0]) as u64);
        }
        let k = scores.dims()[1];
        scores.reshape([b, t, k])
    }
}
