//! The `gateshift` binary: forward parity, strict/partial loading, info figures.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use gateshift::checkpoint::StateDict;

fn gateshift(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gateshift")).args(args).output().expect("binary runs")
}

fn tmp(name: &str) -> common::Tmp {
    common::tmp_file(&format!("cli-{name}"))
}

fn forward_matches(ckpt: &Path, io: &Path, extra: &[&str], what: &str) {
    let out = tmp(&format!("{what}.safetensors"));
    let mut args = vec!["forward", "--checkpoint", ckpt.to_str().unwrap(), "--input", io.to_str().unwrap()];
    args.extend_from_slice(&["--output", out.to_str().unwrap()]);
    args.extend_from_slice(extra);
    let o = gateshift(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let logits = gateshift::checkpoint::safetensors::read(&out).unwrap().0;
    let reference = gateshift::checkpoint::safetensors::read(io).unwrap().0;
    common::check_data(what, &logits["logits"], &reference["logits"], 1e-4);
}

#[test]
fn forward_reproduces_official_logits() {
    let Some(shared) = common::shared() else { return };
    let f = shared.join("fixtures");
    forward_matches(
        &f.join("gsm_bninception_seg8.pth.tar"),
        &f.join("gsm_bninception_seg8_io.safetensors"),
        &["--arch", "bninception", "--temporal", "gsm", "--segments", "8"],
        "cli forward bninception+gsm",
    );
    forward_matches(
        &f.join("tsm_resnet18_shift8_blockres_seg8.pth.tar"),
        &f.join("tsm_resnet18_shift8_blockres_seg8_io.safetensors"),
        &["--arch", "resnet18", "--temporal", "tsm"],
        "cli forward resnet18+tsm",
    );
    // Converted to safetensors, the same checkpoint gives the same logits.
    let st = tmp("gsm.safetensors");
    let o = gateshift(&["convert", f.join("gsm_bninception_seg8.pth.tar").to_str().unwrap(), st.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    forward_matches(
        &st,
        &f.join("gsm_bninception_seg8_io.safetensors"),
        &["--arch", "bninception", "--temporal", "gsm"],
        "cli forward converted safetensors",
    );
}

#[test]
fn renamed_or_reshaped_tensor_is_named_in_the_error() {
    let Some(shared) = common::shared() else { return };
    let ckpt = shared.join("fixtures/tsm_resnet18_shift8_blockres_seg8.pth.tar");
    let io = shared.join("fixtures/tsm_resnet18_shift8_blockres_seg8_io.safetensors");
    let sd = StateDict::read(&ckpt).unwrap();
    let run = |sd: &StateDict, name: &str, extra: &[&str]| {
        let path = tmp(name);
        sd.write_safetensors(&path).unwrap();
        let mut args = vec!["forward", "--checkpoint", path.to_str().unwrap(), "--arch", "resnet18"];
        args.extend_from_slice(&["--temporal", "tsm", "--input", io.to_str().unwrap()]);
        let out = tmp("x.safetensors");
        args.extend_from_slice(&["--output", out.to_str().unwrap()]);
        args.extend_from_slice(extra);
        gateshift(&args)
    };

    let mut renamed = sd.clone();
    let t = renamed.tensors.remove("base_model.layer2.0.bn1.weight").unwrap();
    renamed.tensors.insert("base_model.layer2.0.bn_one.weight".into(), t);
    let o = run(&renamed, "renamed.safetensors", &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("base_model.layer2.0.bn1.weight") && err.contains("base_model.layer2.0.bn_one.weight"),
        "{err}"
    );

    let mut reshaped = sd.clone();
    let w = reshaped.tensors["base_model.layer3.1.conv2.weight"].clone();
    let values = w.convert::<f32>().try_to_vec::<f32>().unwrap();
    let cut = burn::tensor::TensorData::new(values[..256 * 255 * 9].to_vec(), [256, 255, 3, 3]);
    reshaped.tensors.insert("base_model.layer3.1.conv2.weight".into(), cut);
    let o = run(&reshaped, "reshaped.safetensors", &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("base_model.layer3.1.conv2.weight") && err.contains("255"), "{err}");

    // A backbone-only state dict loads with --partial, which lists what it left alone.
    let mut backbone = sd.clone();
    backbone.tensors.retain(|k, _| !k.starts_with("new_fc"));
    let o = run(&backbone, "backbone.safetensors", &[]);
    assert!(!o.status.success(), "strict load must refuse a backbone-only file");
    let o = run(&backbone, "backbone.safetensors", &["--partial"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("left at initial value: new_fc.weight") && err.contains("new_fc.bias"), "{err}");
}

#[test]
fn truncated_checkpoint_is_a_clear_error() {
    let Some(shared) = common::shared() else { return };
    let bytes = std::fs::read(shared.join("fixtures/tsm_resnet18_shift8_blockres_seg8.pth.tar")).unwrap();
    let path = tmp("truncated.pth.tar");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let o = gateshift(&["convert", path.to_str().unwrap(), tmp("t.safetensors").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("truncated.pth.tar"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A stored input whose channels do not match the segments is refused with the file named and
/// the segment count it would fit, not a panic.
#[test]
fn forward_input_of_other_segments_is_a_clear_error() {
    let Some(shared) = common::shared() else { return };
    let input = tmp("sixteen_segments.safetensors");
    let mut tensors = std::collections::BTreeMap::new();
    tensors.insert("input".to_string(), burn::tensor::TensorData::new(vec![0f32; 48 * 64 * 64], [1, 48, 64, 64]));
    gateshift::checkpoint::safetensors::write(&input, &tensors, &Default::default()).unwrap();
    let ckpt = shared.join("fixtures/tsm_resnet18_shift8_blockres_seg8.pth.tar");
    let (ckpt, input_s, out) = (ckpt.to_str().unwrap(), input.to_str().unwrap(), tmp("o.safetensors"));
    let args = ["forward", "--checkpoint", ckpt, "--arch", "resnet18", "--temporal", "tsm", "--input", input_s];
    let o = gateshift(&[&args[..], &["--output", out.to_str().unwrap()]].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("sixteen_segments.safetensors"), "{err}");
    assert!(err.contains("48 channels") && err.contains("--segments 16") && !err.contains("panicked"), "{err}");
}

/// An input side BN-Inception cannot take is refused up front, with sizes that work.
#[test]
fn unusable_input_size_is_a_clear_error() {
    let o = gateshift(&["bench", "model", "--arch", "bninception", "--size", "112", "--iters", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("112") && err.contains("128"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Settings that cannot be built, would be ignored or would silently train something else are
/// refused before any work, with the setting named: zero counts at the command line, a
/// checkpoint's flags given with a pretrained `--model` (or its `--window` without one), and in the training
/// configuration a dropout that is not a probability, momentum ≥ 1, a negative clip bound
/// (it would flip the gradient's sign) or a scale smaller than the crop.
#[test]
fn nonsense_settings_are_refused_naming_the_setting() {
    let cases: [(&[&str], &str); 10] = [
        (&["bench", "model", "--segments", "0"], "--segments"),
        (&["predict", "clip.mp4", "--checkpoint", "c.safetensors", "--window", "8"], "--window applies to --model"),
        (&["stream", "clip.mp4", "--model", "i3d-kinetics400", "--segments", "8"], "cannot be used with"),
        (&["bench", "model", "--arch", "resnet-mini", "--iters", "0"], "--iters"),
        (&["info", "--arch", "resnet-mini", "--temporal", "gsm", "--classes", "0"], "--classes"),
        (&["predict", "clip.mp4", "--topk", "0"], "--topk"),
        (&["train", "--train-list", "x.txt", "--dropout", "1.5"], "dropout"),
        (&["train", "--train-list", "x.txt", "--momentum", "1"], "momentum"),
        (&["train", "--train-list", "x.txt", "--clip-gradient=-1"], "clip_gradient"),
        (&["train", "--train-list", "x.txt", "--input-size", "64", "--scale-size", "32"], "scale_size 32"),
    ];
    for (args, says) in cases {
        let o = gateshift(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says) && !err.contains("panicked"), "{args:?}: {err}");
    }
}

/// A checkpoint whose gateshift metadata (model config, run record, class names) does not
/// parse is refused naming the file and the record; before, the record was ignored and
/// defaults (8 segments, default sizes, no names) took its place.
#[test]
fn unparsable_checkpoint_metadata_is_an_error_naming_the_file() {
    use gateshift::model::{Arch, ModelConfig, TemporalKind};
    let cfg = ModelConfig::new(Arch::ResnetMini, TemporalKind::Gsm, 4, 6);
    let mut sd = gateshift::checkpoint::state_dict(&cfg.init(&burn::tensor::Device::flex()), &cfg).unwrap();
    sd.metadata.insert("gateshift.classes".into(), serde_json::to_string(&["a", "b", "c", "d", "e", "f"]).unwrap());
    let input = tmp("meta_input.safetensors");
    let mut tensors = std::collections::BTreeMap::new();
    tensors.insert("input".to_string(), burn::tensor::TensorData::new(vec![0f32; 12 * 32 * 32], [1, 12, 32, 32]));
    gateshift::checkpoint::safetensors::write(&input, &tensors, &Default::default()).unwrap();
    let forward = |sd: &StateDict, name: &str| {
        let path = tmp(name);
        sd.write_safetensors(&path).unwrap();
        let (ckpt, input) = (path.to_str().unwrap().to_string(), input.to_str().unwrap());
        let out = tmp("meta_out.safetensors");
        gateshift(&["forward", "--checkpoint", &ckpt, "--input", input, "--output", out.to_str().unwrap()])
    };
    let o = forward(&sd, "meta_ok.safetensors");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for key in ["gateshift.model", "gateshift.run", "gateshift.classes"] {
        let mut broken = sd.clone();
        broken.metadata.insert(key.into(), "{\"arch\": ".into());
        let name = format!("meta_{key}.safetensors");
        let o = forward(&broken, &name);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(&name) && err.contains(key), "{key}: {err}");
    }
}

fn info(args: &[&str]) -> (f64, f64) {
    let o = gateshift(&[&["info"], args].concat());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let params: f64 =
        text.lines().find(|l| l.starts_with("parameters")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let macs: f64 =
        text.lines().find(|l| l.starts_with("total")).unwrap().split_whitespace().nth(2).unwrap().parse().unwrap();
    println!("info {args:?}: {params} parameters, {macs} GMACs/frame");
    (params, macs)
}

#[test]
fn info_agrees_with_the_official_layer_list() {
    let (p_gsm, m_gsm) = info(&["--arch", "bninception", "--temporal", "gsm", "--classes", "174", "--segments", "8"]);
    let (p_tsn, m_tsn) = info(&["--arch", "bninception", "--temporal", "none", "--classes", "174", "--segments", "8"]);
    let within = |x: f64, target: f64| (x - target).abs() <= 0.02 * target;
    assert!(within(m_tsn, 2.03), "BN-Inception {m_tsn} GMACs/frame");
    assert!(within(m_gsm - m_tsn, 0.0106), "GSM adds {} GMACs/frame", m_gsm - m_tsn);
    assert!(within(p_gsm - p_tsn, 51_000.0), "GSM adds {} parameters", p_gsm - p_tsn);
    assert!(within(p_gsm, 10.5e6), "total {p_gsm} parameters");
}

#[test]
fn check_gsm_module_runs_fused_and_composed() {
    let Some(_) = common::fixture("gsm_module.safetensors") else { return };
    let fixture = common::shared().unwrap().join("fixtures/gsm_module.safetensors");
    let out = gateshift(&["check", "gsm-module", fixture.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    print!("{stdout}");
    for path in ["fused", "composed"] {
        assert_eq!(stdout.lines().filter(|l| l.starts_with(path) && l.ends_with(" ok")).count(), 12, "{path}");
    }
    assert!(stdout.contains("all 24 checks pass"));
}

/// Training: fused against composed; inference also the whole unit, op by op against fused.
#[test]
fn bench_gsm_compares_fused_and_composed() {
    for (mode, columns) in [("train", 3), ("infer", 5)] {
        let out = gateshift(&["bench", "gsm", "--iters", "1", "--mode", mode]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        print!("{stdout}");
        let rows: Vec<&str> = stdout.lines().filter(|l| l.ends_with('×')).collect();
        assert_eq!(rows.len(), 11, "{mode}: 10 places and the total");
        // Label, the times, the ratios: `columns` numbers after the label's last word.
        let numbers = rows[10].split_whitespace().skip(2).count();
        assert_eq!(numbers, columns + usize::from(mode == "infer"), "{mode}: {}", rows[10]);
    }
    // flex has float32 kernels only: bf16 is refused with a message, not run composed.
    let out = gateshift(&["bench", "gsm", "--iters", "1", "--precision", "bf16"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("no bf16 fused GSM kernels"), "{stderr}");
}

/// `check backend` on the one backend every build has: the whole comparison pipeline (state
/// dict to another device, both steps, every gradient) and its report. Against itself every
/// error is exactly zero; an unknown backend is an error, not a panic.
#[test]
fn check_backend_compares_every_gradient() {
    let out = gateshift(&["check", "backend", "--backend", "flex", "--arch", "resnet-mini", "--size", "32", "--bf16"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    print!("{stdout}");
    assert!(stdout.contains("logits") && stdout.contains("rel 0.000e0"), "{stdout}");
    assert!(stdout.contains("38 gradients; largest relative error 0.000e0"), "{stdout}");
    // Inference (BN folded) against itself: exact in fp32; bf16 off by its rounding, not 0.
    let line = |name: &str| stdout.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_string();
    assert!(line("inference logits, fp32").contains("rel 0.000e0  tol 1e-4  ok"), "{stdout}");
    let bf16 = line("inference logits, bf16");
    assert!(bf16.ends_with("ok") && !bf16.contains("rel 0.000e0"), "{stdout}");
    let out = gateshift(&["check", "backend", "--backend", "nonesuch"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not compiled into this binary"));
}

/// `train --help` documents every flag and shows its default; the defaults shown are the
/// official recipe's (`TrainConfig::default()`), so a change there shows here.
#[test]
fn train_help_documents_every_flag_with_its_default() {
    let out = gateshift(&["train", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let mut flags = 0;
    let lines: Vec<&str> = help.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if !t.starts_with("--") || t.starts_with("--help") {
            continue;
        }
        flags += 1;
        // The flag's paragraph: up to the next flag.
        let paragraph: Vec<&str> =
            lines[i + 1..].iter().take_while(|l| !l.trim_start().starts_with("--")).copied().collect();
        let text = paragraph.join(" ");
        assert!(text.trim().len() > 12, "{t}: no help text");
        assert!(text.contains("[default: "), "{t}: no default shown in {text:?}");
    }
    assert!(flags >= 44, "only {flags} flags found in train --help");
    for expected in
        ["[default: 0.01]", "[default: 60]", "[default: 0.0005]", "[default: gsm]", "[default: bninception]"]
    {
        assert!(help.contains(expected), "train --help lacks {expected}");
    }
}

/// Two outputs of one command naming one file (as written or through a link) are refused
/// before any work, naming both: before, the output written last silently replaced the other.
#[test]
fn two_outputs_naming_one_file_are_refused_before_work() {
    let dir = tempfile::tempdir().unwrap();
    let (json, link) = (dir.path().join("r.json"), dir.path().join("link.json"));
    std::fs::write(&json, "keep").unwrap();
    std::os::unix::fs::symlink(&json, &link).unwrap();
    let (json_s, link_s) = (json.to_str().unwrap(), link.to_str().unwrap());
    let missing = dir.path().join("missing.safetensors");
    let cases: [Vec<&str>; 3] = [
        vec![
            "test",
            "--checkpoint",
            missing.to_str().unwrap(),
            "--list",
            "none.txt",
            "--json",
            json_s,
            "--dump-scores",
            link_s,
        ],
        vec!["bench", "model", "--arch", "resnet-mini", "--onnx", json_s, "--profile", "--profile-json", json_s],
        vec!["bench", "model", "--arch", "resnet-mini", "--onnx", link_s, "--profile", "--profile-json", json_s],
    ];
    for args in cases {
        let o = gateshift(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains("same file") && err.contains("r.json"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(std::fs::read_to_string(&json).unwrap(), "keep", "{args:?}");
    }
}
