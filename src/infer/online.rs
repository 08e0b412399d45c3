//! Online inference (`stream --online`): a causal recognizer (`--causal`) scores every new
//! frame with one frame's forward through the 2D network, its temporal modules reading the
//! earlier frames' features from a cache (`model::temporal::online`), as TSM's online demo.
//! Frame t's scores equal the offline causal model's frame-t scores on the same frames
//! (`Recognizer::forward_frames`), as `tests/online.rs` checks.

use anyhow::{Result, bail};
use burn::tensor::Tensor;

use crate::model::temporal::online::{self, Cache};
use crate::model::{Modality, ModelConfig, Recognizer, TemporalKind};

/// A causal recognizer and what its modules keep of the frames so far.
pub struct Online<'a> {
    model: &'a Recognizer,
    cache: Cache,
    frames: usize,
}

impl<'a> Online<'a> {
    /// Refuses a model that reads later frames (not `--causal`) or more than one frame per
    /// step (RGB difference).
    pub fn new(model: &'a Recognizer, config: &ModelConfig) -> Result<Self> {
        if !config.causal && config.temporal != TemporalKind::None {
            bail!(
                "online inference needs a causal model: {} reads later frames; train one with \
                 `train --causal`, or use windows (stream without --online)",
                config.temporal.label()
            );
        }
        if config.modality != Modality::Rgb {
            bail!(
                "online inference takes RGB models; an RGB-difference model reads {} frames per step",
                config.frames_per_segment()
            );
        }
        Ok(Self { model, cache: Cache::default(), frames: 0 })
    }

    /// Class scores `(streams, classes)` of the next frame of each stream `(streams, 3, H, W)`.
    pub fn push(&mut self, frame: Tensor<4>) -> Tensor<2> {
        let dtype = self.model.new_fc.weight.val().dtype();
        let model = self.model;
        let scores = online::step(&mut self.cache, || model.frame_scores(frame.cast(dtype)));
        self.frames += 1;
        scores
    }

    /// Cache entries the model's causal modules keep (one per TSM, two per GSM; none for TSN).
    pub fn cached(&self) -> usize {
        self.cache.slots()
    }

    /// Frames scored so far.
    pub fn frames(&self) -> usize {
        self.frames
    }
}
