//! Helpers for tests against `../shared` (reference fixtures of the official code).
#![allow(dead_code)]

pub mod ddp;
pub mod models;
pub mod run;
pub mod torch_file;
pub mod weights;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

/// The device parity tests run on: `$GATESHIFT_TEST_BACKEND` (any `--backend` name this build
/// has, e.g. `wgpu` or `cuda` with those features; see `scripts/test-cubecl.sh`), else flex.
pub fn device() -> burn::tensor::Device {
    let name = std::env::var("GATESHIFT_TEST_BACKEND").unwrap_or_else(|_| "flex".into());
    gateshift::backend::device(&name).unwrap_or_else(|e| panic!("GATESHIFT_TEST_BACKEND={name}: {e}"))
}

pub fn fixture(name: &str) -> Option<BTreeMap<String, TensorData>> {
    let path = shared()?.join("fixtures").join(name);
    Some(gateshift::checkpoint::safetensors::read(&path).expect("fixture readable").0)
}

/// `(max |a − b|, max |b|)` over all elements.
pub fn errors(actual: &TensorData, reference: &TensorData) -> (f32, f32) {
    gateshift::parity::max_errors(actual, reference).unwrap()
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

/// The real action clips in `../shared/assets/clips` and ffmpeg, or `None` with a reason.
pub fn clips() -> Option<PathBuf> {
    let dir = std::env::var_os("GATESHIFT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"))
        .join("assets/clips");
    if !dir.is_dir() {
        println!("SKIPPED: real clips not found at {}", dir.display());
        return None;
    }
    if !gateshift::data::video::available() {
        println!("SKIPPED: ffmpeg/ffprobe not installed (scripts/setup.sh installs them)");
        return None;
    }
    Some(dir)
}

/// Whether ffmpeg and ffprobe can run (tests that make their own videos need nothing else);
/// prints why not.
pub fn ffmpeg() -> bool {
    let ok = gateshift::data::video::available();
    if !ok {
        println!("SKIPPED: ffmpeg/ffprobe not installed (scripts/setup.sh installs them)");
    }
    ok
}

/// A fresh temporary folder for one test, removed when the test passes and kept (its path
/// printed) when it fails, so that a failure can be looked into.
pub fn tmp(name: &str) -> Tmp {
    let d = std::env::temp_dir().join(format!("gateshift-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Tmp(d)
}

/// A path for one temporary file, removed as [`tmp`]'s folders are.
pub fn tmp_file(name: &str) -> Tmp {
    Tmp(std::env::temp_dir().join(format!("gateshift-test-{}-{name}", std::process::id())))
}

/// The folder of [`tmp`] or the file of [`tmp_file`]; derefs to its path.
pub struct Tmp(PathBuf);

impl std::ops::Deref for Tmp {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Tmp {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for Tmp {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept for inspection: {}", self.0.display());
        } else if self.0.is_dir() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Writes toy synth sources into `dir`: a Fashion-MNIST-format IDX pair (gzipped, 12 items
/// of bright rectangles) and one 300×300 colour photo. Returns (objects dir, photos dir).
pub fn toy_synth_sources(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    use std::io::Write;
    let objects = dir.join("objects");
    let photos = dir.join("photos");
    std::fs::create_dir_all(&objects).unwrap();
    std::fs::create_dir_all(&photos).unwrap();
    let n = 12usize;
    let mut bytes = Vec::new();
    for v in [0x803u32, n as u32, 28, 28] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    for i in 0..n {
        for y in 0..28 {
            for x in 0..28 {
                let inside = (4 + i % 4..24).contains(&y) && (6..22 - i % 5).contains(&x);
                bytes.push(if inside { 200 + (x * 2) as u8 } else { 0 });
            }
        }
    }
    for name in ["train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"] {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).unwrap();
        std::fs::write(objects.join(name), gz.finish().unwrap()).unwrap();
    }
    let photo = image::RgbImage::from_fn(300, 300, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 200) as u8])
    });
    photo.save(photos.join("gradient.png")).unwrap();
    (objects, photos)
}
