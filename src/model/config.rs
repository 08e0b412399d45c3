//! The model configuration: what a recognizer is built from.

use burn::nn::{DropoutConfig, LinearConfig};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::model::backbone::{Arch, Backbone, ShiftPlace};
use crate::model::modality::{self, Modality};
use crate::model::recognizer::Recognizer;
use crate::model::temporal::{TemporalInit, TemporalKind, TemporalOpts};

/// Everything needed to build a recognizer, in one place: the `[model]` section of a run's
/// configuration (`train::config`), the `gateshift.model` record beside a checkpoint's weights
/// (`checkpoint::metadata`) and the model flags of `train`, `test`, `predict`, `stream`,
/// `forward` and `info` (clap, flattened), whose defaults are the official recipe's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct ModelConfig {
    /// Backbone.
    #[arg(long, value_enum, default_value_t = Arch::BnInception)]
    pub arch: Arch,
    /// Temporal module (none: TSN).
    #[arg(long, value_enum, default_value_t = TemporalKind::Gsm)]
    pub temporal: TemporalKind,
    /// Segments (frames) per clip.
    #[arg(long, default_value_t = 8, value_parser = crate::limits::at_least_one::<usize>)]
    pub segments: usize,
    /// Classes (new_fc's outputs); left at 0: from the class names or training list (`train`),
    /// from the checkpoint's new_fc (other commands).
    #[arg(long, default_value_t = 0)]
    pub classes: usize,
    /// EPIC-Kitchens' second head: noun classes, scored by new_fc after the `classes` verb
    /// outputs (one linear layer holds both heads); 0: one head.
    #[serde(default)]
    #[arg(long, default_value_t = 0)]
    pub noun_classes: usize,
    /// Dropout before new_fc.
    #[serde(default = "default_dropout")]
    #[arg(long, default_value_t = default_dropout())]
    pub dropout: f64,
    /// TSM: 1/shift_div of the channels shift each way.
    #[serde(default = "default_shift_div")]
    #[arg(long, default_value_t = default_shift_div())]
    pub shift_div: usize,
    /// TSM on ResNets: where the shift goes (blockres: the residual branch).
    #[serde(default)]
    #[arg(long, value_enum, default_value_t = ShiftPlace::Blockres)]
    pub shift_place: ShiftPlace,
    /// GSF: percentage of channels gated; none: 25 on ResNets, 100 elsewhere (the official
    /// `gsf_ch_ratio`).
    #[serde(default)]
    #[arg(long)]
    pub gsf_ratio: Option<usize>,
    /// GST: 1/gst_alpha of each split 3×3 convolution's outputs come from its spatio-temporal
    /// (3×3×3) half (the official `--alpha`).
    #[serde(default = "default_gst_alpha")]
    #[arg(long, default_value_t = default_gst_alpha())]
    pub gst_alpha: usize,
    /// GST: 2 gives each half its own half of the input channels, 1 all of them (GST-Large;
    /// the official `--beta`).
    #[serde(default = "default_gst_beta")]
    #[arg(long, default_value_t = default_gst_beta())]
    pub gst_beta: usize,
    /// CSN, (2+1)D, MFNet: start as the exact identity (for a pretrained backbone) or the
    /// identity plus noise (from scratch, which an exact identity traps).
    #[serde(default)]
    #[arg(long, value_enum, default_value_t = TemporalInit::Identity)]
    pub temporal_init: TemporalInit,
    /// Input: RGB frames, TSN's RGB difference, or stacked optical flow (`model::modality`;
    /// flow reads `data extract-flow`'s x/y pairs).
    #[serde(default)]
    #[arg(long, value_enum, default_value_t = Modality::Rgb)]
    pub modality: Modality,
    /// RGB difference: differences per segment, of that many + 1 consecutive frames; flow:
    /// consecutive flow fields per segment (TSN's `new_length`).
    #[serde(default = "default_new_length")]
    #[arg(long, default_value_t = default_new_length())]
    pub new_length: usize,
    /// Causal temporal modules, for online (per-frame) inference (`stream --online`): TSM
    /// shifts 1/shift_div of the channels from the previous frame only, GSM takes both gated
    /// halves from the previous frame and gates from the current and two previous ones (a
    /// documented variant, not the paper's module). TSN, TSM and GSM.
    #[serde(default)]
    #[arg(long)]
    pub causal: bool,
}

fn default_new_length() -> usize {
    5
}

fn default_gst_alpha() -> usize {
    4
}
fn default_gst_beta() -> usize {
    2
}

fn default_dropout() -> f64 {
    0.5
}
fn default_shift_div() -> usize {
    8
}

/// The official recipe: BN-Inception + GSM, 8 segments, dropout 0.5; classes unresolved (0).
impl Default for ModelConfig {
    fn default() -> Self {
        Self::new(Arch::BnInception, TemporalKind::Gsm, 8, 0)
    }
}

impl ModelConfig {
    pub fn new(arch: Arch, temporal: TemporalKind, segments: usize, classes: usize) -> Self {
        Self {
            arch,
            temporal,
            segments,
            classes,
            noun_classes: 0,
            dropout: default_dropout(),
            shift_div: default_shift_div(),
            shift_place: ShiftPlace::Blockres,
            gsf_ratio: None,
            gst_alpha: default_gst_alpha(),
            gst_beta: default_gst_beta(),
            temporal_init: TemporalInit::Identity,
            modality: Modality::Rgb,
            new_length: default_new_length(),
            causal: false,
        }
    }

    /// Refuses configurations gateshift cannot build, with the reason: no segments or
    /// classes, a dropout that is not a probability, a GSF ratio outside 1..=100 or a TSM
    /// shift of more than half the channels each way.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.segments == 0 || self.classes == 0 {
            anyhow::bail!("segments and classes must be at least 1, got {} and {}", self.segments, self.classes);
        }
        crate::limits::at_most("segments", self.segments, crate::limits::MAX_SEGMENTS)?;
        crate::limits::at_most("classes", self.classes, crate::limits::MAX_CLASSES)?;
        crate::limits::at_most("noun_classes", self.noun_classes, crate::limits::MAX_CLASSES)?;
        if !(0.0..1.0).contains(&self.dropout) {
            anyhow::bail!("dropout must be a probability in [0, 1), got {}", self.dropout);
        }
        if self.temporal == TemporalKind::Gsf {
            let r = self.temporal_opts().gsf_ratio;
            if r == 0 || r > 100 {
                anyhow::bail!("--gsf-ratio must be a percentage in 1..=100, got {r}");
            }
        }
        if self.temporal == TemporalKind::Gst {
            self.check_gst()?;
        }
        if self.modality == Modality::Rgb && self.new_length != default_new_length() {
            anyhow::bail!(
                "--new-length {} applies to --modality rgbdiff and flow only; RGB reads one frame per segment",
                self.new_length
            );
        }
        if self.modality != Modality::Rgb && !(1..=crate::limits::MAX_NEW_LENGTH).contains(&self.new_length) {
            anyhow::bail!("--new-length must be in 1..={}, got {}", crate::limits::MAX_NEW_LENGTH, self.new_length);
        }
        if self.causal && !matches!(self.temporal, TemporalKind::None | TemporalKind::Tsm | TemporalKind::Gsm) {
            anyhow::bail!(
                "--causal applies to TSN, TSM and GSM; {} looks at later frames and has no causal variant",
                self.temporal.label()
            );
        }
        if self.temporal == TemporalKind::Tsm && self.shift_div < 2 {
            // 1/shift_div of the channels shift each way, so at most half may.
            anyhow::bail!("--shift-div must be at least 2, got {}", self.shift_div);
        }
        Ok(())
    }

    /// GST splits a ResNet block's 3×3 convolution: other backbones have none to split, and
    /// every unit's outputs (multiples of the stage-1 width) must divide by α.
    fn check_gst(&self) -> anyhow::Result<()> {
        let width = match self.arch {
            crate::model::Arch::ResnetMini => crate::model::backbone::resnet::MINI_WIDTH,
            a if a.resnet_depth().is_some() => 64,
            a => anyhow::bail!(
                "--temporal gst splits a ResNet block's 3×3 convolution; --arch {} has none (use a resnet)",
                a.name()
            ),
        };
        if !(2..=width).contains(&self.gst_alpha) || !width.is_multiple_of(self.gst_alpha) {
            anyhow::bail!("--gst-alpha must divide {width} and be at least 2, got {}", self.gst_alpha);
        }
        if !matches!(self.gst_beta, 1 | 2) {
            anyhow::bail!("--gst-beta must be 1 or 2, got {}", self.gst_beta);
        }
        Ok(())
    }

    /// new_fc's outputs: the classes, then the nouns of a second head.
    pub fn outputs(&self) -> usize {
        self.classes + self.noun_classes
    }

    /// The heads' class counts, in new_fc's output order: `[classes]` or `[verbs, nouns]`.
    pub fn heads(&self) -> Vec<usize> {
        if self.noun_classes > 0 { vec![self.classes, self.noun_classes] } else { vec![self.classes] }
    }

    /// The temporal modules' hyper-parameters, defaults resolved.
    pub fn temporal_opts(&self) -> TemporalOpts {
        TemporalOpts {
            shift_div: self.shift_div,
            gsf_ratio: self.gsf_ratio.unwrap_or(self.arch.gsf_ratio()),
            gst_alpha: self.gst_alpha,
            gst_beta: self.gst_beta,
            init: self.temporal_init,
            causal: self.causal,
        }
    }

    /// What a segment's input is: the modality with its `new_length`.
    pub fn input(&self) -> modality::Input {
        match self.modality {
            Modality::Rgb => modality::Input::RGB,
            m => modality::Input::new(m, self.new_length),
        }
    }

    /// Images each segment reads: 1, `new_length` + 1 for RGB difference, `new_length` flow
    /// fields.
    pub fn frames_per_segment(&self) -> usize {
        self.input().frames_per_segment()
    }

    /// Channels of one clip as the loaders give it: `segments · frames per segment · planes`.
    pub fn input_channels(&self) -> usize {
        self.segments * self.input().channels_per_segment()
    }

    pub fn init(&self, device: &Device) -> Recognizer {
        let mut base_model =
            Backbone::new(self.arch, self.temporal, self.shift_place, self.segments, self.temporal_opts(), device);
        let channels = self.input().backbone_channels();
        if channels != 3 {
            base_model.widen_input(channels);
        }
        Recognizer {
            base_model,
            dropout: DropoutConfig::new(self.dropout).init(),
            new_fc: LinearConfig::new(self.arch.features(), self.outputs()).init(device),
            num_segments: self.segments,
            input: self.input(),
        }
    }
}
