//! Causal models (`--causal`) and online inference (`stream --online`, `infer::online`): the
//! offline causal model reads no later frame, and the online runner — one frame's forward per
//! new frame, the temporal modules' past from a cache — gives the offline causal model's
//! frame scores frame by frame.

mod common;

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use gateshift::infer::online::Online;
use gateshift::model::{Arch, ModelConfig, ShiftPlace, TemporalKind};

fn causal(arch: Arch, temporal: TemporalKind, segments: usize) -> ModelConfig {
    let mut cfg = ModelConfig::new(arch, temporal, segments, 6);
    cfg.causal = true;
    cfg
}

/// The causal configurations checked: TSN, TSM (both ResNet placements) and GSM on each
/// backbone family that hosts them, with an input side each takes.
fn cases() -> Vec<(ModelConfig, usize)> {
    let mut out = Vec::new();
    for temporal in [TemporalKind::None, TemporalKind::Tsm, TemporalKind::Gsm] {
        out.push((causal(Arch::ResnetMini, temporal, 5), 48));
        out.push((causal(Arch::BnInception, temporal, 4), 64));
        out.push((causal(Arch::EfficientnetLite0, temporal, 3), 48));
    }
    let mut block = causal(Arch::ResnetMini, TemporalKind::Tsm, 4);
    block.shift_place = ShiftPlace::Block;
    out.push((block, 48));
    out.push((causal(Arch::InceptionV3, TemporalKind::Gsm, 3), 75));
    out
}

fn frame(x: &Tensor<4>, t: usize) -> Tensor<4> {
    x.clone().narrow(1, 3 * t, 3)
}

fn max_abs(d: &TensorData) -> f32 {
    d.try_to_vec::<f32>().unwrap().iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// Frame by frame, the online runner's scores equal the offline causal model's (1e-4 of the
/// largest score), for two streams at once.
#[test]
fn online_scores_equal_the_offline_causal_model_frame_by_frame() {
    for (cfg, size) in cases() {
        let what = format!("causal {} + {}", cfg.arch.name(), cfg.temporal.label());
        let model = common::models::drawn(&cfg, size);
        let t = cfg.segments;
        let x = Tensor::<4>::random([2, 3 * t, size, size], Distribution::Normal(0.0, 1.0), &Device::flex());
        let offline = model.forward_frames(x.clone());
        let scale = max_abs(&offline.to_data());
        let mut online = Online::new(&model, &cfg).unwrap();
        for i in 0..t {
            let got = online.push(frame(&x, i));
            let want = offline.clone().narrow(1, i, 1).reshape([2, cfg.classes]);
            let err = max_abs(&(got - want).into_data());
            assert!(err <= 1e-4 * scale, "{what}: frame {i} online is {err:.2e} off (scale {scale:.2e})");
        }
        assert_eq!(online.frames(), t);
        // The past came from the cache: one entry per TSM, two per GSM, none for TSN.
        assert_eq!(online.cached() > 0, cfg.temporal != TemporalKind::None, "{what}: {} cached", online.cached());
    }
}

/// The offline causal model reads no later frame: changing frames after t leaves frames ≤ t
/// exactly as they were; the bidirectional model does not have that property.
#[test]
fn the_causal_model_reads_no_later_frame() {
    for (cfg, size) in cases() {
        let what = format!("causal {} + {}", cfg.arch.name(), cfg.temporal.label());
        let model = common::models::drawn(&cfg, size);
        let t = cfg.segments;
        let x = Tensor::<4>::random([1, 3 * t, size, size], Distribution::Normal(0.0, 1.0), &Device::flex());
        let changed = Tensor::cat(
            vec![
                x.clone().narrow(1, 0, 6),
                Tensor::random([1, 3 * (t - 2), size, size], Distribution::Default, &Device::flex()),
            ],
            1,
        );
        let (a, b) = (model.forward_frames(x), model.forward_frames(changed));
        let first = |s: Tensor<3>| s.narrow(1, 0, 2).into_data();
        first(a.clone()).assert_eq(&first(b.clone()), true);
        if cfg.temporal != TemporalKind::None {
            assert!(a.narrow(1, 2, 1).into_data() != b.narrow(1, 2, 1).into_data(), "{what}: frame 2 did not change");
        }
    }
    let mut bidirectional = causal(Arch::ResnetMini, TemporalKind::Gsm, 4);
    bidirectional.causal = false;
    let model = common::models::drawn(&bidirectional, 48);
    let x = Tensor::<4>::random([1, 12, 48, 48], Distribution::Normal(0.0, 1.0), &Device::flex());
    let changed = Tensor::cat(vec![x.clone().narrow(1, 0, 9), Tensor::zeros([1, 3, 48, 48], &Device::flex())], 1);
    let (a, b) = (model.forward_frames(x), model.forward_frames(changed));
    assert!(a.narrow(1, 2, 1).into_data() != b.narrow(1, 2, 1).into_data(), "GSM's frame 2 reads frame 3");
}

/// What online inference cannot run is refused by name: a bidirectional module, RGB
/// difference; `--causal` with a module that has no causal variant.
#[test]
fn what_cannot_run_online_is_refused() {
    let mut cfg = causal(Arch::ResnetMini, TemporalKind::Tsm, 3);
    cfg.causal = false;
    let model = common::models::drawn(&cfg, 48);
    let e = Online::new(&model, &cfg).err().unwrap().to_string();
    assert!(e.contains("causal") && e.contains("TSM"), "{e}");
    let mut diff = causal(Arch::ResnetMini, TemporalKind::Gsm, 3);
    (diff.modality, diff.new_length) = (gateshift::model::Modality::Rgbdiff, 2);
    let model = common::models::drawn(&diff, 48);
    assert!(Online::new(&model, &diff).is_err());
    for temporal in
        [TemporalKind::Gsf, TemporalKind::Csn, TemporalKind::R2plus1d, TemporalKind::Mfnet, TemporalKind::Gst]
    {
        let e = causal(Arch::ResnetMini, temporal, 3).check().unwrap_err().to_string();
        assert!(e.contains("--causal") && e.contains(temporal.label()), "{e}");
    }
}

/// Through the binary: `train --causal` records the variant, `stream --online` scores every
/// frame of a clip once (JSON lines, one per frame) and reports the per-frame latency; a
/// bidirectional checkpoint and window flags are refused with the reason.
#[test]
fn train_causal_then_stream_online() {
    use common::run::{bin, ok, toy_data, train_cmd_epochs};
    let dir = common::tmp("online");
    let data = toy_data(&dir);
    let (causal_run, plain_run) = (dir.join("causal"), dir.join("plain"));
    ok(train_cmd_epochs(&data, &causal_run, 1).arg("--causal").output().unwrap());
    ok(train_cmd_epochs(&data, &plain_run, 1).output().unwrap());
    assert!(std::fs::read_to_string(causal_run.join("config.toml")).unwrap().contains("causal = true"));
    let first = std::fs::read_to_string(data.join("val.txt")).unwrap();
    let mut fields = first.lines().next().unwrap().split(' ');
    let folder = data.join(fields.next().unwrap());
    let frames: usize = fields.next().unwrap().parse().unwrap();
    let stream = |run: &std::path::Path, extra: &[&str]| {
        bin()
            .arg("stream")
            .arg(&folder)
            .arg("--checkpoint")
            .arg(run.join("last.safetensors"))
            .args(extra)
            .output()
            .unwrap()
    };
    let out = stream(&causal_run, &["--online", "--json", "--input-size", "32", "--scale-size", "32"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), frames, "one line per frame");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["frames"], serde_json::json!([i, i + 1]));
        let p: f64 = l["top"].as_array().unwrap().iter().map(|c| c["probability"].as_f64().unwrap()).sum();
        assert!(p > 0.0 && p <= 1.0 + 1e-5, "{l}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ms per frame"), "{stderr}");
    let refused = |out: std::process::Output, says: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success() && stderr.contains(says), "{stderr}");
    };
    refused(stream(&plain_run, &["--online"]), "train --causal");
    refused(stream(&causal_run, &["--online", "--window", "3"]), "--window and --stride do not apply");
}
