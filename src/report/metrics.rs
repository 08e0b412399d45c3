//! The records of a training run that reports are drawn from: per epoch, and the run's state
//! stored in its checkpoints.

use serde::{Deserialize, Serialize};

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochMetrics {
    /// 1-based epoch.
    pub epoch: usize,
    pub lr: f64,
    pub loss: f64,
    pub train_top1: f64,
    pub train_top5: f64,
    pub val_top1: Option<f64>,
    pub val_top5: Option<f64>,
    pub val_mean_class: Option<f64>,
    /// Two-head (verb, noun) models: noun and action top-1 (`val_top1` is the verb's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_noun_top1: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_action_top1: Option<f64>,
    pub clips_per_s: f64,
    pub seconds: f64,
}

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
