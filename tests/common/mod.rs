//! Helpers for tests against `../shared` (reference fixtures of the official code).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::{Tensor, TensorData};

/// The shared folder (`$GATESHIFT_SHARED` or `../shared`), or `None` with a printed reason.
pub fn shared() -> Option<PathBuf> {
    let dir = std::env::var_os("GATESHIFT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    if dir.join("fixtures").is_dir() {
        Some(dir)
    } else {
        println!("SKIPPED: reference fixtures not found at {} (set GATESHIFT_SHARED)", dir.display());
        None
    }
}

pub fn fixture(name: &str) -> Option<BTreeMap<String, TensorData>> {
    let path = shared()?.join("fixtures").join(name);
    Some(gateshift::checkpoint::safetensors::read(&path).expect("fixture readable").0)
}

/// `(max |a − b|, max |b|)` over all elements.
pub fn errors(actual: &TensorData, reference: &TensorData) -> (f32, f32) {
    assert_eq!(actual.shape(), reference.shape(), "shape mismatch");
    let a = actual.clone().convert::<f32>();
    let r = reference.clone().convert::<f32>();
    let a = a.as_slice::<f32>().unwrap();
    let r = r.as_slice::<f32>().unwrap();
    let err = a.iter().zip(r).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    let scale = r.iter().map(|y| y.abs()).fold(0.0, f32::max);
    (err, scale)
}

/// Asserts `max|err| ≤ tol · max|ref|` and prints the measured figure.
pub fn check<const D: usize>(what: &str, actual: &Tensor<D>, reference: &TensorData, tol: f32) {
    check_data(what, &actual.to_data(), reference, tol)
}

pub fn check_data(what: &str, actual: &TensorData, reference: &TensorData, tol: f32) {
    let (err, scale) = errors(actual, reference);
    let rel = err / scale.max(f32::MIN_POSITIVE);
    println!("parity {what:<48} max|err| {err:.3e}  max|ref| {scale:.3e}  rel {rel:.3e}  (tol {tol:.0e})");
    assert!(rel <= tol, "{what}: relative error {rel:.3e} above {tol:.0e}");
}
