//! Running the `gateshift` binary in tests: a tiny synthetic dataset (toy objects and photo,
//! 32 px) and a training command on it that takes seconds.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gateshift"))
}

pub fn ok(out: Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "command failed:\n{text}");
    text
}

pub fn toy_data(dir: &Path) -> PathBuf {
    let (objects, photos) = super::toy_synth_sources(dir);
    let data = dir.join("data");
    ok(bin()
        .args(["synth", "--pairs", "2", "--train-per-class", "6", "--val-per-class", "2", "--size", "32"])
        .args(["--min-frames", "6", "--max-frames", "10", "--out"])
        .arg(&data)
        .arg("--objects")
        .arg(&objects)
        .arg("--backgrounds")
        .arg(&photos)
        .output()
        .unwrap());
    data
}

pub fn train_cmd(data: &Path, out: &Path) -> Command {
    train_cmd_epochs(data, out, 4)
}

pub fn train_cmd_epochs(data: &Path, out: &Path, epochs: usize) -> Command {
    train_cmd_swap(data, out, epochs, "0:1")
}

/// Training with `flip_swap` as the label swaps under flipping.
pub fn train_cmd_swap(data: &Path, out: &Path, epochs: usize, flip_swap: &str) -> Command {
    let mut c = bin();
    c.args(["train", "--arch", "resnet-mini", "--temporal", "gsm", "--segments", "4", "--epochs"])
        .arg(epochs.to_string())
        .args(["--batch-size", "4", "--input-size", "32", "--scale-size", "32", "--workers", "2", "--seed", "3"])
        .args(["--warmup-epochs", "1", "--flip-swap", flip_swap, "--quiet", "--train-list"])
        .arg(data.join("train.txt"))
        .arg("--val-list")
        .arg(data.join("val.txt"))
        .arg("--class-names")
        .arg(data.join("classes.txt"))
        .arg("--out")
        .arg(out);
    c
}

/// metrics.jsonl without the wall-clock fields.
pub fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("seconds");
            o.remove("clips_per_s");
            v
        })
        .collect()
}
