//! `gateshift stream`: windows over real clips (video file, `file:` URL, frame folder), the
//! same scores as `predict` where a window is the whole input, and clear errors.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const TSM: &str = "tsm_resnet18_shift8_blockres_seg8.pth.tar";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gateshift"))
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// `stream INPUT --json` with the official TSM ResNet-18 fixture checkpoint: one object per window.
fn stream_tsm(input: &str, ckpt: &Path, extra: &[&str]) -> Vec<Value> {
    let out = ok(bin()
        .args(["stream", input, "--json", "--topk", "5", "--checkpoint"])
        .arg(ckpt)
        .args(["--arch", "resnet18", "--temporal", "tsm"])
        .args(extra)
        .output()
        .unwrap());
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn predict_tsm(input: &Path, ckpt: &Path, extra: &[&str]) -> Value {
    let out = ok(bin()
        .arg("predict")
        .arg(input)
        .args(["--json", "--topk", "5", "--checkpoint"])
        .arg(ckpt)
        .args(["--arch", "resnet18", "--temporal", "tsm"])
        .args(extra)
        .output()
        .unwrap());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Top-k of `stream` and `predict` name the same classes with the same probabilities.
fn assert_same_top(stream: &Value, predict: &Value) {
    let (s, p) = (stream["top"].as_array().unwrap(), predict["top"].as_array().unwrap());
    assert_eq!(s.len(), p.len());
    for (a, b) in s.iter().zip(p) {
        assert_eq!(a["class"], b["class"], "stream {stream} against predict {predict}");
        let (x, y) = (a["probability"].as_f64().unwrap(), b["probability"].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-6, "probability {x} against {y}");
    }
}

fn frames(windows: &[Value]) -> Vec<(u64, u64)> {
    windows.iter().map(|w| (w["frames"][0].as_u64().unwrap(), w["frames"][1].as_u64().unwrap())).collect()
}

#[test]
fn windows_slide_over_a_video_and_a_file_url() {
    let (Some(shared), Some(clips)) = (common::shared(), common::clips()) else { return };
    let ckpt = shared.join("fixtures").join(TSM);
    let clip = clips.join("v_SoccerJuggling_g23_c01.avi"); // 240 frames at 29.97 fps
    let windows = stream_tsm(clip.to_str().unwrap(), &ckpt, &["--window", "64", "--stride", "48"]);
    // Due every 48 frames from frame 64 on, then the last 64 frames.
    assert_eq!(frames(&windows), vec![(0, 64), (48, 112), (96, 160), (144, 208), (176, 240)]);
    for w in &windows {
        let seconds = w["seconds"].as_array().expect("a video reports times");
        let end = seconds[1].as_f64().unwrap();
        assert!((end - w["frames"][1].as_f64().unwrap() * 1001.0 / 30000.0).abs() < 1e-9, "{w}");
        let top: f64 = w["top"].as_array().unwrap().iter().map(|t| t["probability"].as_f64().unwrap()).sum();
        assert!(top > 0.0 && top <= 1.0 + 1e-6, "{w}");
    }
    // The same input as a URL goes through the live-source path (no frame count): same scores.
    let url = format!("file:{}", clip.display());
    let live = stream_tsm(&url, &ckpt, &["--window", "64", "--stride", "48"]);
    assert_eq!(frames(&live), frames(&windows));
    for (a, b) in live.iter().zip(&windows) {
        assert_same_top(a, b);
    }
}

#[test]
fn a_window_over_the_whole_input_scores_like_predict() {
    let (Some(shared), Some(clips)) = (common::shared(), common::clips()) else { return };
    let ckpt = shared.join("fixtures").join(TSM);
    let clip = clips.join("TrumanShow_wave_f_nm_np1_fr_med_26.avi"); // 48 frames decode (49 packets)
    let windows = stream_tsm(clip.to_str().unwrap(), &ckpt, &["--window", "100", "--stride", "100"]);
    assert_eq!(frames(&windows), vec![(0, 48)]);
    assert_same_top(&windows[0], &predict_tsm(&clip, &ckpt, &[]));

    // A frame folder (PNG frames written here), with and without a frame rate.
    let dir = common::tmp("stream-frames");
    for i in 0..20u32 {
        let img =
            image::RgbImage::from_fn(96, 72, |x, y| image::Rgb([(x * 2 + i) as u8, (y * 3) as u8, (i * 10) as u8]));
        img.save(dir.join(format!("img_{:05}.png", i + 1))).unwrap();
    }
    let template = ["--template", "img_{:05d}.png"];
    let whole = stream_tsm(dir.to_str().unwrap(), &ckpt, &[&["--window", "32"][..], &template].concat());
    assert_eq!(frames(&whole), vec![(0, 20)]);
    assert!(whole[0].get("seconds").is_none(), "no frame rate, no times: {}", whole[0]);
    assert_same_top(&whole[0], &predict_tsm(&dir, &ckpt, &template));
    let timed = stream_tsm(
        dir.to_str().unwrap(),
        &ckpt,
        &[&["--window", "8", "--stride", "4", "--fps", "10"][..], &template].concat(),
    );
    assert_eq!(frames(&timed), vec![(0, 8), (4, 12), (8, 16), (12, 20)]);
    assert_eq!(timed[3]["seconds"], serde_json::json!([1.2, 2.0]));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Kinetics-400 I3D (real weights): a clip shorter than the window is looped exactly as
/// `predict --model i3d-kinetics400` does it, and the text output names the classes.
#[test]
fn i3d_streams_like_predict() {
    let Some(clips) = common::clips() else { return };
    if !gateshift::assets::I3D_KINETICS400.is_cached(&gateshift::assets::cache_dir()) {
        println!("SKIPPED: asset i3d-kinetics400 is not cached (run `gateshift assets fetch`)");
        return;
    }
    let clip = clips.join("TrumanShow_wave_f_nm_np1_fr_med_26.avi");
    let run = |cmd: &str, json: bool| {
        let mut c = bin();
        c.args([cmd, "--model", "i3d-kinetics400", "--window", "64", "--topk", "3"]).arg(&clip);
        if json {
            c.arg("--json");
        }
        ok(c.output().unwrap()).stdout
    };
    let streamed: Value = serde_json::from_slice(&run("stream", true)).unwrap();
    let predicted: Value = serde_json::from_slice(&run("predict", true)).unwrap();
    assert_same_top(&streamed, &predicted);
    let text = String::from_utf8(run("stream", false)).unwrap();
    let label = predicted["top"][0]["label"].as_str().unwrap();
    assert!(text.contains("frames     0–47") && text.contains(label), "{text}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let Some(shared) = common::shared() else { return };
    let ckpt = shared.join("fixtures").join(TSM);
    let dir = common::tmp("stream-errors");
    let fail = |input: &str, extra: &[&str]| {
        let out = bin()
            .args(["stream", input, "--checkpoint"])
            .arg(&ckpt)
            .args(["--arch", "resnet18", "--temporal", "tsm"])
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{input} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = dir.join("nothing-here.mp4");
    let msg = fail(missing.to_str().unwrap(), &[]);
    assert!(msg.contains("nothing-here.mp4") && msg.contains("neither a video file"), "{msg}");
    if gateshift::data::video::available() {
        let corrupt = dir.join("corrupt.mp4");
        std::fs::write(&corrupt, b"this is not a video at all").unwrap();
        let msg = fail(corrupt.to_str().unwrap(), &[]);
        assert!(msg.contains("corrupt.mp4"), "{msg}");
    }
    let msg = fail(dir.to_str().unwrap(), &["--window", "0"]);
    assert!(msg.contains("--window"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}
