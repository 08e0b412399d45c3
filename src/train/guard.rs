//! The divergence guard: a run's state is saved only if it can go on training. A loss that
//! stays finite while the weights grow towards 1e30 writes finite numbers that give NaN at
//! the next step, so "finite" alone is not enough. Before the state after an epoch replaces
//! `last`:
//! - the epoch's mean training loss must stay below [`DIVERGED`] times chance (ln classes):
//!   a diverging run's loss leaves chance by orders of magnitude long before it is NaN;
//! - every tensor of the state must be finite;
//! - a training-mode forward of the epoch's last batch, on a copy built from the state, must
//!   give a finite loss and finite BN statistics (a batch variance can overflow while the
//!   normalised output stays finite).

use anyhow::{Result, bail};
use burn::tensor::{DType, Device, Int, Tensor};

use crate::checkpoint::{self, StateDict};
use crate::model::ModelConfig;
use crate::precision::{self, Precision};
use crate::train::optim::heads_loss;

/// How many times the chance-level loss (ln classes, at least 1) an epoch's mean training
/// loss may reach. A run that starts at chance and learns stays below it; a diverging one
/// passes it within an epoch or two.
pub const DIVERGED: f64 = 20.0;

/// A batch the state is tried on: input and labels on the training device.
pub type Probe = (Tensor<4>, Tensor<2, Int>);

/// The first tensor holding a non-finite value, and that value.
fn first_non_finite(sd: &StateDict) -> Option<(&str, f32)> {
    sd.tensors.iter().find_map(|(name, data)| {
        let values = data.as_slice::<f32>().ok().filter(|_| data.dtype() == DType::F32)?;
        values.iter().find(|v| !v.is_finite()).map(|&bad| (name.as_str(), bad))
    })
}

/// Checks the state `sd` (weights, statistics, momentum) after epoch `epoch` (1-based); the
/// error says what went bad. The run's own model is not touched: the forward runs on a copy
/// (its BN statistics update there), so training continues bit for bit as without the check.
pub fn check(
    sd: &StateDict,
    cfg: &ModelConfig,
    epoch_loss: f64,
    probe: &Probe,
    precision: Precision,
    epoch: usize,
) -> Result<()> {
    let bound = DIVERGED * (cfg.classes as f64).ln().max(1.0);
    if epoch_loss.is_nan() || epoch_loss >= bound {
        bail!(
            "epoch {epoch}'s mean training loss is {epoch_loss:.4e}, over {DIVERGED}× chance ({bound:.1}): training diverged"
        );
    }
    if let Some((name, bad)) = first_non_finite(sd) {
        bail!("after epoch {epoch}, {name} holds {bad}: training diverged");
    }
    let (input, labels) = probe;
    let device: Device = input.device();
    let mut copy = cfg.init(&device);
    checkpoint::load(&mut copy, cfg, sd, checkpoint::Fit::Strict)?;
    let loss = heads_loss(precision::forward(&copy, input.clone(), precision), labels.clone(), &cfg.heads());
    let loss = loss.into_scalar::<f32>();
    if !loss.is_finite() {
        bail!("after epoch {epoch} the weights give a loss of {loss} on the epoch's last batch: training diverged");
    }
    // BN's batch variance can overflow while the normalised output stays finite: the copy's
    // running statistics, just updated by that forward, must be finite too.
    let after = checkpoint::state_dict(&copy, cfg)?;
    if let Some((name, bad)) = first_non_finite(&after) {
        bail!("after epoch {epoch} the next step would make {name} {bad}: training diverged");
    }
    Ok(())
}
