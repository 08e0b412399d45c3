//! The official learning-rate schedule, stepped per epoch: linear warm-up from 0.1·lr to lr
//! over the warm-up epochs, then cosine decay reaching ~0 at the last epoch.

use std::f64::consts::PI;

/// Learning rate of 0-based `epoch` out of `epochs`.
pub fn learning_rate(base: f64, epoch: usize, epochs: usize, warmup: usize) -> f64 {
    if epoch < warmup {
        return base * (0.1 + 0.9 * epoch as f64 / warmup as f64);
    }
    let span = epochs.saturating_sub(warmup).max(1) as f64;
    let t = (epoch - warmup) as f64 / span;
    0.5 * base * (1.0 + (PI * t).cos())
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
}
