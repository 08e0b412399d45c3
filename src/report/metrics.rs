//! The records of a training run that reports are drawn from: per epoch, and the run's state
//! stored in its checkpoints.

use serde::{Deserialize, Serialize};

/// One line of `metrics.jsonl`: an iteration's scalars or an epoch's.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    Step(StepMetrics),
    Epoch(EpochMetrics),
}

/// One training iteration (one global batch; the SGD step of `iter_size` batches counts each).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepMetrics {
    /// 1-based epoch and iteration within it.
    pub epoch: usize,
    pub iter: usize,
    /// 1-based over the whole run: TensorBoard's step for the `train/*` scalars.
    pub step: u64,
    /// The global batch's mean loss.
    pub loss: f64,
    pub lr: f64,
    /// Clips of the global batch per second of this iteration.
    pub clips_per_s: f64,
    /// Share of the iteration's time spent waiting for the batch from the loader.
    pub data_wait: f64,
    /// Unix time (s) at its end.
    pub time: f64,
}

/// One epoch's metrics (a `"kind": "epoch"` line of `metrics.jsonl`).
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

impl EpochMetrics {
    /// A training pass's metrics (the validation ones empty, `seconds` filled in later).
    pub fn training(epoch: usize, lr: f64, loss: f64, (train_top1, train_top5): (f64, f64), clips_per_s: f64) -> Self {
        Self {
            epoch,
            lr,
            loss,
            train_top1,
            train_top5,
            val_top1: None,
            val_top5: None,
            val_mean_class: None,
            val_noun_top1: None,
            val_action_top1: None,
            clips_per_s,
            seconds: 0.0,
        }
    }
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
    /// Iterations done in those epochs (the global step the next iteration follows).
    #[serde(default)]
    pub steps_done: u64,
    pub best_top1: Option<f64>,
    pub best_epoch: Option<usize>,
    pub history: Vec<EpochMetrics>,
    /// Parameter paths the checkpoint holds momentum buffers for, so that a buffer missing
    /// from the file is an error on resume rather than a silent zero (absent in older runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<Vec<String>>,
}
