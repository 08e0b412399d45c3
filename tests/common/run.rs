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
    train_cmd_model(data, out, epochs, flip_swap, "gsm")
}

/// Training ResNet-Mini with the temporal module `temporal`.
pub fn train_cmd_model(data: &Path, out: &Path, epochs: usize, flip_swap: &str, temporal: &str) -> Command {
    let mut c = bin();
    c.args(["train", "--arch", "resnet-mini", "--temporal", temporal, "--segments", "4", "--epochs"])
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

/// metrics.jsonl's lines of `kind` ("epoch" or "step") without the wall-clock fields. A line
/// torn by a kill can only be the last one, and is left out.
pub fn lines(run: &Path, kind: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all.iter()
        .enumerate()
        .filter_map(|(i, l)| match serde_json::from_str::<serde_json::Value>(l) {
            Ok(v) => Some(v),
            Err(e) if i + 1 == all.len() => {
                println!("torn last line of metrics.jsonl left out ({e})");
                None
            }
            Err(e) => panic!("metrics.jsonl line {}: {e}: {l}", i + 1),
        })
        .filter(|v| v["kind"] == kind)
        .map(|mut v| {
            let o = v.as_object_mut().unwrap();
            for wall_clock in ["seconds", "clips_per_s", "data_wait", "time"] {
                o.remove(wall_clock);
            }
            v
        })
        .collect()
}

/// The epoch lines of metrics.jsonl without the wall-clock fields.
pub fn metrics(run: &Path) -> Vec<serde_json::Value> {
    lines(run, "epoch")
}

/// Waits until `run` has logged an epoch (panics after two minutes or when `child` exits).
pub fn wait_for_an_epoch(run: &Path, child: &mut std::process::Child) {
    let start = std::time::Instant::now();
    while metrics(run).is_empty() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("training exited early: {status}");
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(120), "no epoch finished");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
