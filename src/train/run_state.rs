//! A run's trainer state, stored in its checkpoints: sizes, epochs done, best epoch, history.

use serde::{Deserialize, Serialize};

use crate::report::EpochMetrics;

/// Trainer state stored in checkpoints.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunState {
    /// Network input side and pre-crop short side the run trained with (test and predict
    /// default to them).
    #[serde(default)]
    pub input_size: u32,
    #[serde(default)]
    pub scale_size: u32,
    pub epochs_done: usize,
    pub best_top1: Option<f64>,
    pub best_epoch: Option<usize>,
    pub history: Vec<EpochMetrics>,
    /// Parameter paths the checkpoint holds momentum buffers for, so that a buffer missing
    /// from the file is an error on resume rather than a silent zero (absent in older runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<Vec<String>>,
}
