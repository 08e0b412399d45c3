//! TSN's RGB-difference modality end to end through the binary: a model trained on the
//! differences of consecutive frames is saved with its modality, and `test`, `predict`,
//! `stream` and `info` take it from the checkpoint; the data path hands each segment its
//! `new_length + 1` consecutive frames.

mod common;

use common::run::{bin, metrics, ok, toy_data};
use gateshift::checkpoint::StateDict;
use serde_json::Value;

#[test]
fn an_rgb_difference_model_trains_tests_predicts_and_streams() {
    let dir = common::tmp("rgbdiff");
    let data = toy_data(&dir);
    let run = dir.join("run");
    ok(bin()
        .args(["train", "--arch", "resnet-mini", "--temporal", "none", "--segments", "3"])
        .args(["--modality", "rgbdiff", "--new-length", "2", "--epochs", "2", "--batch-size", "4"])
        .args(["--input-size", "32", "--scale-size", "32", "--workers", "2", "--seed", "3", "--quiet"])
        .arg("--train-list")
        .arg(data.join("train.txt"))
        .arg("--val-list")
        .arg(data.join("val.txt"))
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap());
    let epochs = metrics(&run);
    assert_eq!(epochs.len(), 2);
    assert!(epochs.iter().all(|m| m["loss"].as_f64().is_some_and(f64::is_finite)), "{epochs:?}");
    // The first convolution takes 2 differences × 3 colours; the modality is recorded.
    let ckpt = run.join("last.safetensors");
    let sd = StateDict::read(&ckpt).unwrap();
    assert_eq!(sd.tensors["base_model.conv1.weight"].shape()[1], 6);
    assert!(std::fs::read_to_string(run.join("config.toml")).unwrap().contains("rgbdiff"));

    // `test` and `predict` without modality flags: both from the checkpoint.
    let json = dir.join("test.json");
    ok(bin()
        .args(["test", "--input-size", "32", "--checkpoint"])
        .arg(&ckpt)
        .arg("--list")
        .arg(data.join("val.txt"))
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap());
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["videos"], 8);
    let first = std::fs::read_to_string(data.join("val.txt")).unwrap();
    let folder = data.join(first.split(' ').next().unwrap());
    let stdout = |cmd: &str, extra: &[&str]| -> String {
        let mut c = bin();
        c.arg(cmd).arg(&folder).args(["--json", "--topk", "2", "--checkpoint"]).arg(&ckpt).args(extra);
        let out = c.output().unwrap();
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let predicted: Value = serde_json::from_str(&stdout("predict", &[])).unwrap();
    // A window longer than the clip holds all of it: the same frames, the same scores.
    let streamed: Vec<Value> =
        stdout("stream", &["--window", "64"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(streamed.len(), 1, "{streamed:?}");
    let (s, p) = (streamed[0]["top"].as_array().unwrap(), predicted["top"].as_array().unwrap());
    for (a, b) in s.iter().zip(p) {
        assert_eq!(a["class"], b["class"], "stream {s:?} against predict {p:?}");
        let (x, y) = (a["probability"].as_f64().unwrap(), b["probability"].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-5, "probability {x} against {y}");
    }
    // `info` counts the wider first layer; overriding the checkpoint's modality is refused.
    let info = ok(bin()
        .args(["info", "--arch", "resnet-mini", "--temporal", "none", "--segments", "3", "--classes", "4"])
        .args(["--modality", "rgbdiff", "--new-length", "2"])
        .output()
        .unwrap());
    assert!(info.contains("rgbdiff"), "{info}");
    let out =
        bin().arg("predict").arg(&folder).arg("--checkpoint").arg(&ckpt).args(["--modality", "rgb"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    // The stored new_length 2 does not fit RGB: refused, naming both settings.
    assert!(!out.status.success() && text.contains("--new-length 2") && text.contains("rgbdiff"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
