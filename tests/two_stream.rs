//! The flow stream and late fusion through the binary: a TSN flow network trained on
//! `data extract-flow`'s fields, tested on them, run by `predict` on stored fields and on a
//! video (whose flow it computes), fused with an RGB network by `predict --streams`; and the
//! refusals around them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::run::{bin, ok, toy_data, train_cmd_model};

/// `extract-flow` of the toy data's lists into `flow/` (`flow/train.txt`, `flow/val.txt`).
fn extract(data: &Path, flow: &Path) {
    for split in ["train", "val"] {
        ok(bin()
            .args(["data", "extract-flow"])
            .arg(data.join(format!("{split}.txt")))
            .arg("--out")
            .arg(flow)
            .arg("--out-list")
            .arg(flow.join(format!("{split}.txt")))
            .output()
            .unwrap());
    }
}

/// A TSN flow network on the lists in `lists` (the toy data's classes): ResNet-Mini, 4
/// segments of 5 fields, one epoch.
fn train_flow(data: &Path, lists: &Path, out: &Path) -> Command {
    let mut c = bin();
    c.args(["train", "--arch", "resnet-mini", "--temporal", "none", "--segments", "4", "--epochs", "1"])
        .args(["--batch-size", "4", "--input-size", "32", "--scale-size", "32", "--workers", "2", "--seed", "3"])
        .args(["--warmup-epochs", "1", "--flip-swap", "0:1", "--quiet", "--modality", "flow", "--train-list"])
        .arg(lists.join("train.txt"))
        .arg("--val-list")
        .arg(lists.join("val.txt"))
        .arg("--class-names")
        .arg(data.join("classes.txt"))
        .arg("--out")
        .arg(out);
    c
}

/// `predict --json` probabilities by class.
fn probabilities(args: &[&std::ffi::OsStr]) -> Vec<f64> {
    let out = bin().arg("predict").args(args).arg("--json").output().unwrap();
    assert!(out.status.success(), "predict {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let top = json["top"].as_array().unwrap();
    let mut p = vec![0.0; top.len()];
    for t in top {
        p[t["class"].as_u64().unwrap() as usize] = t["probability"].as_f64().unwrap();
    }
    p
}

/// The first validation clip as an H.264 video.
fn video_of_first_clip(data: &Path, dir: &Path) -> (PathBuf, String) {
    let val = std::fs::read_to_string(data.join("val.txt")).unwrap();
    let clip = val.lines().next().unwrap().split_whitespace().next().unwrap().to_string();
    let video = dir.join("clip.mp4");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-framerate", "10", "-i"])
        .arg(data.join(&clip).join("img_%05d.jpg"))
        .args(["-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p"])
        .arg(&video)
        .status()
        .unwrap();
    assert!(status.success());
    (video, clip)
}

#[test]
fn a_flow_network_trains_tests_predicts_and_fuses_with_rgb() {
    assert!(common::ffmpeg(), "ffmpeg is needed (scripts/setup.sh installs it)");
    let dir = common::tmp("two-stream");
    let data = toy_data(&dir);
    let flow = dir.join("flow");
    extract(&data, &flow);
    let (flow_run, rgb_run) = (dir.join("flow-run"), dir.join("rgb-run"));
    ok(train_flow(&data, &flow, &flow_run).output().unwrap());
    ok(train_cmd_model(&data, &rgb_run, 1, "0:1", "none").output().unwrap());
    let flow_ckpt = flow_run.join("last.safetensors");
    let info = ok(bin()
        .args(["info", "--arch", "resnet-mini", "--temporal", "none", "--modality", "flow", "--segments", "4"])
        .output()
        .unwrap());
    assert!(info.contains("flow: 5 x/y fields per segment, 10 channels"), "{info}");
    let test = ok(bin()
        .arg("test")
        .arg("--checkpoint")
        .arg(&flow_ckpt)
        .arg("--list")
        .arg(flow.join("val.txt"))
        .output()
        .unwrap());
    assert!(test.contains("top-1"), "{test}");

    // Stored fields (JPEG) and fields computed from a lossless video of the same frames agree
    // up to the JPEG round trip.
    let (video, clip) = video_of_first_clip(&data, &dir);
    let ckpt = flow_ckpt.as_os_str();
    let stored = probabilities(&[flow.join(&clip).as_os_str(), "--checkpoint".as_ref(), ckpt]);
    let computed = probabilities(&[video.as_os_str(), "--checkpoint".as_ref(), ckpt]);
    for (s, c) in stored.iter().zip(&computed) {
        assert!((s - c).abs() < 0.03, "stored {stored:?} computed {computed:?}");
    }

    // Late fusion: (p_rgb + 1.5 p_flow) / 2.5, and the weights given.
    let rgb =
        probabilities(&[video.as_os_str(), "--checkpoint".as_ref(), rgb_run.join("last.safetensors").as_os_str()]);
    let streams = format!("rgb={},flow={}", rgb_run.join("last.safetensors").display(), flow_ckpt.display());
    for (weights, (wr, wf)) in [(None, (1.0, 1.5)), (Some("3,1"), (3.0, 1.0)), (Some("1e300,1e300"), (1.0, 1.0))] {
        let mut args: Vec<&std::ffi::OsStr> = vec![video.as_os_str(), "--streams".as_ref(), streams.as_ref()];
        if let Some(w) = weights {
            args.push(std::ffi::OsStr::new("--stream-weights"));
            args.push(std::ffi::OsStr::new(w));
        }
        let fused = probabilities(&args);
        for k in 0..fused.len() {
            let expected = (wr * rgb[k] + wf * computed[k]) / (wr + wf);
            assert!((fused[k] - expected).abs() < 1e-4, "{weights:?}: {fused:?} vs {expected} at {k}");
        }
    }

    // Refused: streams named for the wrong networks, weights that do not fit, one stream.
    let refused = |args: &[&str], says: &str| {
        let out = bin().arg("predict").arg(&video).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{args:?}: {err}");
    };
    let swapped = format!("rgb={},flow={}", flow_ckpt.display(), rgb_run.join("last.safetensors").display());
    refused(&["--streams", &swapped], "is a flow network");
    // The second stream's checkpoint is wrong: refused before the first stream runs.
    let second = format!(
        "rgb={},flow={}",
        rgb_run.join("last.safetensors").display(),
        rgb_run.join("last.safetensors").display()
    );
    let out = bin().arg("predict").arg(&video).args(["--streams", &second]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("flow=") && !err.contains("stream rgb ("), "{err}");
    refused(&["--streams", &streams, "--stream-weights", "1"], "1 weights for 2 streams");
    refused(&["--streams", &streams, "--stream-weights", "1,nan"], "finite");
    refused(&["--streams", &streams, "--stream-weights", "0,0"], "not all zero");
    refused(&["--streams", &streams, "--stream-weights", "1e308,1e308"], "sum overflows");
    refused(&["--streams", &format!("flow={}", flow_ckpt.display())], "two or more");
    refused(&["--streams", &format!("{streams},flow=x")], "flow stream twice");
    refused(&["--streams", &format!("{streams},depth=x")], "not a stream");
    // An RGB frame folder is no flow input.
    let out = bin().arg("predict").arg(data.join(&clip)).arg("--checkpoint").arg(&flow_ckpt).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no flow fields"), "{err}");
}

#[test]
fn flow_training_refuses_videos_and_one_file_templates() {
    let dir = common::tmp("flow-refusals");
    let data = toy_data(&dir);
    // A video list: flow is computed once by extract-flow, not every epoch.
    let videos = dir.join("videos");
    std::fs::create_dir_all(&videos).unwrap();
    std::fs::write(videos.join("train.txt"), "a.mp4 0\nb.mp4 1\n").unwrap();
    std::fs::copy(data.join("val.txt"), videos.join("val.txt")).unwrap();
    let out = train_flow(&data, &videos, &dir.join("run")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("extract-flow") && err.contains("train.txt:1"), "{err}");
    assert!(!dir.join("run").join("last.safetensors").exists());
    // A template naming one file per field cannot hold x and y.
    let mut c = train_flow(&data, &data, &dir.join("run2"));
    c.args(["--template", "x_{:05d}.jpg"]);
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("{}_{:05d}.jpg"), "{err}");
    // new_length in range.
    for bad in ["0", "1000000"] {
        let mut c = train_flow(&data, &data, &dir.join("run3"));
        c.args(["--new-length", bad]);
        let out = c.output().unwrap();
        assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--new-length"));
    }
}
