//! Activation taps for parity checks: while `capture` runs, modules that call `tap` record
//! their outputs in order (e.g. every GSM output and gate). Off, `tap` costs one check.

use std::cell::RefCell;

use burn::tensor::Tensor;
use burn::tensor::TensorData;

thread_local! {
    static TAPS: RefCell<Option<Vec<(String, TensorData)>>> = const { RefCell::new(None) };
}

/// Runs `f` with taps on; returns its result and the tapped `(name, data)` pairs in order.
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, Vec<(String, TensorData)>) {
    TAPS.with(|t| *t.borrow_mut() = Some(Vec::new()));
    let r = f();
    let taps = TAPS.with(|t| t.borrow_mut().take()).unwrap_or_default();
    (r, taps)
}

/// Whether a capture is running (lets callers skip work done only for a tap).
pub fn active() -> bool {
    TAPS.with(|t| t.borrow().is_some())
}

pub fn tap<const D: usize>(name: &str, x: &Tensor<D>) {
    TAPS.with(|t| {
        if let Some(v) = t.borrow_mut().as_mut() {
            // Copied out at once: burn's CubeCL wgpu backend hands back data that is read from
            // the device when first touched, and activations held untouched while the forward
            // goes on were seen to hold a later layer's values there (docs/RELIABILITY.md).
            let d = x.to_data();
            let owned = TensorData::from_bytes_vec(d.as_bytes().to_vec(), d.shape().clone(), d.dtype());
            v.push((name.to_string(), owned));
        }
    });
}
