//! Temporal modules: each maps `(batch*segments, C, H, W)` to the same shape, mixing
//! information across the segments of a clip inside a 2D backbone.

mod module;
pub mod online;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::batch_norm::BatchNorm;
pub use module::{PERTURBATION, Place, Spec, TemporalInit, TemporalModule, TemporalOpts};

/// The registry: `TemporalKind` (flags, configs, metadata) and `Temporal` (the module in a
/// backbone) from one list of modules, each delegating to its file's [`TemporalModule`].
macro_rules! temporal_modules {
    ($( $(#[$doc:meta])* $variant:ident($module:ident::$ty:ident) ),* $(,)?) => {
        $( pub mod $module; pub use $module::$ty; )*

        /// Which temporal module a recognizer uses.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
        #[serde(rename_all = "lowercase")]
        pub enum TemporalKind {
            /// TSN: no temporal module, frames are only combined by the consensus.
            None,
            $( $(#[$doc])* $variant, )*
        }

        /// A temporal module placed inside a backbone.
        // Built once per model; the size of the value is irrelevant next to its tensors.
        #[allow(clippy::large_enum_variant)]
        #[derive(Module, Debug)]
        pub enum Temporal {
            $( $variant($ty), )*
        }

        impl TemporalKind {
            /// Every kind, TSN first.
            pub const ALL: &[TemporalKind] = &[TemporalKind::None, $( TemporalKind::$variant, )*];

            /// The module's description; `None` for TSN.
            pub fn spec(self) -> Option<&'static Spec> {
                match self {
                    Self::None => None,
                    $( Self::$variant => Some(&<$ty as TemporalModule>::SPEC), )*
                }
            }

            /// Builds the module for a feature map of `channels` channels (`None` for TSN).
            pub fn build(self, channels: usize, segments: usize, opts: TemporalOpts, device: &Device) -> Option<Temporal> {
                match self {
                    Self::None => None,
                    $( Self::$variant => Some(Temporal::$variant(<$ty as TemporalModule>::build(channels, segments, opts, device))), )*
                }
            }
        }

        impl Temporal {
            pub fn spec(&self) -> &'static Spec {
                match self {
                    $( Self::$variant(_) => &<$ty as TemporalModule>::SPEC, )*
                }
            }

            pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
                match self {
                    $( Self::$variant(m) => TemporalModule::forward(m, x), )*
                }
            }

            /// See [`TemporalModule::forward_unit`].
            pub fn forward_unit(&self, x: Tensor<4>, post: &BatchNorm, max: f32) -> Tensor<4> {
                match self {
                    $( Self::$variant(m) => m.forward_unit(x, post, max), )*
                }
            }

            /// See [`TemporalModule::fold_unit`].
            pub fn fold_unit(&mut self, post: &mut BatchNorm) {
                match self {
                    $( Self::$variant(m) => m.fold_unit(post), )*
                }
            }
        }
    };
}

temporal_modules! {
    /// TSM: a fixed shift of 1/`shift_div` channels forward and backward in time.
    Tsm(tsm::TemporalShift),
    /// GSM: the learned, gated shift of the paper.
    Gsm(gsm::Gsm),
    /// GSF: GSM whose shifted and residual parts are fused with learned per-channel,
    /// per-frame weights (the TPAMI 2023 successor).
    Gsf(gsf::Gsf),
    /// CSN: a channel-separated (depthwise) 3-tap convolution over time, identity-initialised.
    Csn(csn::ChannelSeparated),
    /// (2+1)D / P3D: a 3×1×1 convolution over time on all channels after the spatial one,
    /// identity-initialised.
    R2plus1d(r2plus1d::R2Plus1d),
    /// MFNet: fixed motion filters (next frame shifted in five directions minus this one),
    /// added back with learned per-channel weights that start at zero.
    Mfnet(mfnet::MotionFilter),
    /// GST: a ResNet block's 3×3 convolution split into a spatial and a 3×3×3
    /// spatio-temporal path by channel groups (α = 4, β = 2 as the official code).
    Gst(gst::Gst),
}

#[cfg(test)]
mod tests;

impl TemporalKind {
    /// Its name in flags, configs and metadata (`none` for TSN).
    pub fn name(self) -> &'static str {
        self.spec().map_or("none", |s| s.name)
    }

    /// Its name in reports (`TSN` for none).
    pub fn label(self) -> &'static str {
        self.spec().map_or("TSN", |s| s.label)
    }

    pub fn place(self) -> Option<Place> {
        self.spec().map(|s| s.place)
    }
}
