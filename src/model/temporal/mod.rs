//! Temporal modules: each maps `(batch*segments, C, H, W)` to the same shape, mixing
//! information across the segments of a clip inside a 2D backbone.

pub mod gsf;
pub mod gsm;
pub mod tsm;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

pub use gsf::Gsf;
pub use gsm::Gsm;
pub use tsm::TemporalShift;

/// Which temporal module a recognizer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TemporalKind {
    /// TSN: no temporal module, frames are only combined by the consensus.
    None,
    /// TSM: a fixed shift of 1/`shift_div` channels forward and backward in time.
    Tsm,
    /// GSM: the learned, gated shift of the paper.
    Gsm,
    /// GSF: GSM whose shifted and residual parts are fused with learned per-channel,
    /// per-frame weights (the TPAMI 2023 successor).
    Gsf,
}

/// Hyper-parameters of the temporal modules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemporalOpts {
    /// TSM: 1/`shift_div` of the channels shift each way.
    pub shift_div: usize,
    /// GSF: percentage of the channels gated (the official `gsf_ch_ratio`).
    pub gsf_ratio: usize,
}

impl TemporalKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Tsm => "tsm",
            Self::Gsm => "gsm",
            Self::Gsf => "gsf",
        }
    }

    /// Builds the module for a feature map of `channels` channels (`None` for TSN).
    pub fn build(self, channels: usize, segments: usize, opts: TemporalOpts, device: &Device) -> Option<Temporal> {
        match self {
            Self::None => None,
            Self::Tsm => Some(Temporal::Tsm(TemporalShift::new(segments, opts.shift_div))),
            Self::Gsm => Some(Temporal::Gsm(Gsm::new(channels, segments, device))),
            Self::Gsf => Some(Temporal::Gsf(Gsf::new(channels, segments, opts.gsf_ratio, device))),
        }
    }
}

/// A temporal module placed inside a backbone.
// Built once per model; the size of the value is irrelevant next to its tensors.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Temporal {
    Gsm(Gsm),
    Tsm(TemporalShift),
    Gsf(Gsf),
}

impl Temporal {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Self::Gsm(m) => m.forward(x),
            Self::Tsm(m) => m.forward(x),
            Self::Gsf(m) => m.forward(x),
        }
    }
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
