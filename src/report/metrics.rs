//! The per-epoch record of a training run that reports are drawn from.

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
    pub clips_per_s: f64,
    pub seconds: f64,
}
