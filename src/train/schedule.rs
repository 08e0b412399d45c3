//! The official learning-rate schedules, stepped per epoch: linear warm-up from 0.1·lr to lr
//! over the warm-up epochs, then cosine decay reaching ~0 at the last epoch (GSM, GSF:
//! `WarmupCosineLR`), or ×0.1 at each of the `lr_steps` epochs (TSM's `--lr_type step`).

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

/// How the learning rate falls after the warm-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Cosine decay to ~0 at the last epoch (GSM, GSF).
    #[default]
    Cosine,
    /// ×0.1 at each epoch of `lr_steps` (TSM).
    Step,
}

/// Learning rate of 0-based `epoch` out of `epochs` under the cosine schedule.
pub fn learning_rate(base: f64, epoch: usize, epochs: usize, warmup: usize) -> f64 {
    if epoch < warmup {
        return warmed(base, epoch, warmup);
    }
    let span = epochs.saturating_sub(warmup).max(1) as f64;
    let t = (epoch - warmup) as f64 / span;
    0.5 * base * (1.0 + (PI * t).cos())
}

fn warmed(base: f64, epoch: usize, warmup: usize) -> f64 {
    base * (0.1 + 0.9 * epoch as f64 / warmup as f64)
}

/// Learning rate of 0-based `epoch` under `schedule` (`steps`: the step schedule's epochs,
/// as TSM's `decay = 0.1 ** sum(epoch >= lr_steps)`).
pub fn rate(schedule: Schedule, base: f64, epoch: usize, epochs: usize, warmup: usize, steps: &[usize]) -> f64 {
    match schedule {
        Schedule::Cosine => learning_rate(base, epoch, epochs, warmup),
        Schedule::Step if epoch < warmup => warmed(base, epoch, warmup),
        Schedule::Step => base * 0.1f64.powi(steps.iter().filter(|&&s| epoch >= s).count() as i32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let lr = |e| learning_rate(0.01, e, 50, 10);
        assert!((lr(0) - 0.001).abs() < 1e-12);
        assert!((lr(5) - 0.0055).abs() < 1e-12);
        assert!((lr(10) - 0.01).abs() < 1e-12);
        assert!((lr(30) - 0.005).abs() < 1e-12);
        assert!(lr(49) < 0.01 * 0.002 && lr(49) > 0.0);
        // No warm-up: cosine from the first epoch.
        assert!((learning_rate(0.1, 0, 4, 0) - 0.1).abs() < 1e-12);
        assert!((learning_rate(0.1, 2, 4, 0) - 0.05).abs() < 1e-12);
    }

    #[test]
    fn step_as_tsm() {
        let lr = |e| rate(Schedule::Step, 0.01, e, 50, 0, &[20, 40]);
        assert_eq!((lr(0), lr(19)), (0.01, 0.01));
        assert!((lr(20) - 0.001).abs() < 1e-15 && (lr(39) - 0.001).abs() < 1e-15);
        assert!((lr(40) - 0.0001).abs() < 1e-15 && (lr(49) - 0.0001).abs() < 1e-15);
        assert_eq!(rate(Schedule::Cosine, 0.01, 30, 50, 10, &[]), learning_rate(0.01, 30, 50, 10));
    }
}
