//! ONNX export (`gateshift export`, `gateshift::export`).
//!
//! Default tier: every exportable recognizer (TSN, TSM, GSM, GSF on each backbone family, RGB
//! and RGB difference) gives a well-formed graph of standard operators only — every value
//! defined before it is read, the declared input and outputs, the metadata — and the modules
//! without an export are refused by name.
//!
//! Opt-in tier (`scripts/onnx-parity.sh`, which makes a throwaway virtualenv with ONNX Runtime
//! and OpenVINO and runs `cargo test --release --test onnx_export -- --ignored` with
//! `GATESHIFT_PYTHON` set): each model's logits in ONNX Runtime and OpenVINO within 1e-4
//! (relative to the largest logit) of gateshift's own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use gateshift::export::{self, Export};
use gateshift::model::{Arch, Modality, ModelConfig, Recognizer, TemporalKind};
use onnx_protobuf::{Message, ModelProto};

/// The operators an export may use: standard ONNX (default domain), nothing custom.
const STANDARD: &[&str] = &[
    "Conv",
    "Relu",
    "Clip",
    "Mul",
    "Add",
    "Sub",
    "Concat",
    "Reshape",
    "Transpose",
    "Slice",
    "Pad",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "ReduceMean",
    "Gemm",
    "Tanh",
    "Sigmoid",
    "Identity",
];

/// A recognizer in inference form with drawn gates and BN statistics.
fn model(cfg: &ModelConfig, size: usize) -> Recognizer {
    common::models::drawn(cfg, size)
}

fn config(arch: Arch, temporal: TemporalKind, segments: usize) -> ModelConfig {
    let mut cfg = ModelConfig::new(arch, temporal, segments, 7);
    cfg.gsf_ratio = None;
    cfg
}

fn classes(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("class \"{i}\"")).collect()
}

fn export_bytes(m: &Recognizer, cfg: &ModelConfig, size: usize, batch: Option<usize>) -> Vec<u8> {
    let names = classes(cfg.classes);
    export::onnx(m, &Export { config: cfg, size, batch, classes: Some(&names) }).unwrap()
}

/// The cases of both tiers: (what, configuration, input side).
fn cases() -> Vec<(String, ModelConfig, usize)> {
    let mut out = Vec::new();
    let mut add = |cfg: ModelConfig, size: usize| {
        let causal = if cfg.causal { ", causal" } else { "" };
        let what = format!("{} + {} ({}{causal})", cfg.arch.name(), cfg.temporal.label(), cfg.modality.name());
        out.push((what, cfg, size));
    };
    for temporal in [TemporalKind::None, TemporalKind::Tsm, TemporalKind::Gsm, TemporalKind::Gsf] {
        add(config(Arch::ResnetMini, temporal, 4), 64);
        add(config(Arch::BnInception, temporal, 3), 96);
        add(config(Arch::EfficientnetLite0, temporal, 2), 64);
    }
    add(config(Arch::InceptionV3, TemporalKind::Gsm, 2), 101);
    add(config(Arch::InceptionV3, TemporalKind::Gsf, 2), 101);
    let mut block = config(Arch::ResnetMini, TemporalKind::Tsm, 3);
    block.shift_place = gateshift::model::ShiftPlace::Block;
    add(block, 64);
    let mut diff = config(Arch::ResnetMini, TemporalKind::Gsm, 3);
    (diff.modality, diff.new_length) = (Modality::Rgbdiff, 2);
    add(diff, 64);
    let mut flow = config(Arch::ResnetMini, TemporalKind::Tsm, 3);
    (flow.modality, flow.new_length) = (Modality::Flow, 2);
    add(flow, 64);
    let mut flow = config(Arch::BnInception, TemporalKind::None, 2);
    (flow.modality, flow.new_length) = (Modality::Flow, 5);
    add(flow, 96);
    add(config(Arch::ResnetMini, TemporalKind::Gsm, 1), 64);
    let causal = [
        (Arch::ResnetMini, TemporalKind::Tsm, 64),
        (Arch::ResnetMini, TemporalKind::Gsm, 64),
        (Arch::BnInception, TemporalKind::Gsm, 96),
    ];
    for (arch, temporal, size) in causal {
        let mut cfg = config(arch, temporal, 4);
        cfg.causal = true;
        add(cfg, size);
    }
    out
}

/// The graph is well formed: standard operators, every input defined before it is read, the
/// declared input and outputs, the model's records.
fn check_graph(what: &str, bytes: &[u8], cfg: &ModelConfig, size: usize, batch: Option<usize>) {
    let model = ModelProto::parse_from_bytes(bytes).unwrap_or_else(|e| panic!("{what}: does not parse: {e}"));
    assert!(model.opset_import.iter().all(|o| o.domain.is_empty()), "{what}: a custom domain");
    let graph = model.graph.as_ref().unwrap();
    let mut defined: BTreeSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    defined.insert("frames");
    for node in &graph.node {
        assert!(STANDARD.contains(&node.op_type.as_str()), "{what}: operator {}", node.op_type);
        assert!(node.domain.is_empty(), "{what}: {} in domain {}", node.op_type, node.domain);
        for input in &node.input {
            assert!(defined.contains(input.as_str()), "{what}: {} reads {input} before it is defined", node.name);
        }
        defined.extend(node.output.iter().map(String::as_str));
    }
    let dims = |v: &onnx_protobuf::ValueInfoProto| -> Vec<String> {
        let Some(onnx_protobuf::type_proto::Value::TensorType(t)) = &v.type_.value else {
            panic!("{what}: no tensor type")
        };
        t.shape.dim.iter().map(|d| format!("{:?}", d.value.as_ref().unwrap())).collect()
    };
    let b = batch.map_or("DimParam(\"batch\")".to_string(), |b| format!("DimValue({b})"));
    let c = cfg.input_channels();
    let want = [b.clone(), format!("DimValue({c})"), format!("DimValue({size})"), format!("DimValue({size})")];
    assert_eq!(dims(&graph.input[0]), want, "{what}: input");
    let outputs: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(outputs, ["logits", "frame_scores"], "{what}");
    assert_eq!(dims(&graph.output[0]), [b, format!("DimValue({})", cfg.classes)], "{what}: logits");
    let props: BTreeMap<&str, &str> = model.metadata_props.iter().map(|p| (p.key.as_str(), p.value.as_str())).collect();
    let stored: ModelConfig = serde_json::from_str(props["gateshift.model"]).unwrap();
    assert_eq!(&stored, cfg, "{what}: gateshift.model");
    let names: Vec<String> = serde_json::from_str(props["gateshift.classes"]).unwrap();
    assert_eq!(names, classes(cfg.classes), "{what}");
    let input: serde_json::Value = serde_json::from_str(props["gateshift.input"]).unwrap();
    assert_eq!(input["segments"], cfg.segments, "{what}");
    assert_eq!(input["size"], size, "{what}");
    if cfg.modality == Modality::Flow {
        // One mean and std for the x and y planes: TSN's flow normalisation.
        assert_eq!(input["mean"], serde_json::json!([cfg.arch.input().flow().0]), "{what}");
        assert!(input.get("channel_order").is_none(), "{what}");
    } else {
        assert_eq!(input["channel_order"], if cfg.arch.input().bgr { "BGR" } else { "RGB" }, "{what}");
    }
}

/// Every exportable recognizer gives a well-formed graph, with a dynamic or a fixed batch;
/// BatchNorms are folded (no unit reaches ONNX as a separate normalisation where its conv
/// could take it: TSN's graphs have no `Mul`).
#[test]
fn every_exportable_recognizer_gives_a_well_formed_graph() {
    for (what, cfg, size) in cases() {
        let m = model(&cfg, size);
        for batch in [None, Some(3)] {
            let bytes = export_bytes(&m, &cfg, size, batch);
            check_graph(&what, &bytes, &cfg, size, batch);
            if cfg.temporal == TemporalKind::None && cfg.modality == Modality::Rgb {
                let graph = ModelProto::parse_from_bytes(&bytes).unwrap().graph.unwrap();
                assert!(graph.node.iter().all(|n| n.op_type != "Mul"), "{what}: an unfolded BN");
            }
        }
    }
}

/// `x` through the exported graph in tract (a fixed batch: tract wants concrete shapes): the
/// logits.
fn tract_logits(bytes: &[u8], x: &Tensor<4>) -> Vec<f32> {
    tract_outputs(bytes, x).remove(0)
}

/// Every output of the exported graph on `x` in tract, in the graph's order.
fn tract_outputs(bytes: &[u8], x: &Tensor<4>) -> Vec<Vec<f32>> {
    use tract_onnx::prelude::*;
    let dims = x.dims();
    let model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .and_then(|m| m.with_input_fact(0, f32::fact(dims).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .unwrap();
    let values = x.to_data().convert::<f32>().try_into_vec::<f32>().unwrap();
    let input: tract_onnx::prelude::Tensor =
        tract_ndarray::ArrayD::from_shape_vec(dims.to_vec(), values).unwrap().into();
    let out = model.run(tvec!(input.into())).unwrap();
    out.iter().map(|o| o.to_plain_array_view::<f32>().unwrap().iter().copied().collect()).collect()
}

/// Largest absolute difference relative to the largest absolute value of `want`.
fn relative_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0 && scale.is_finite(), "degenerate reference logits (max |x| = {scale})");
    got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

/// Every exportable recognizer's graph computes gateshift's logits in an ONNX runtime (tract,
/// pure Rust), within 1e-4 of the largest logit.
#[test]
fn every_exported_graph_gives_gateshifts_logits_in_tract() {
    for (what, cfg, size) in cases() {
        let m = model(&cfg, size);
        let x =
            Tensor::<4>::random([2, cfg.input_channels(), size, size], Distribution::Normal(0.0, 1.0), &Device::flex());
        let want = m.forward(x.clone()).into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
        let got = tract_logits(&export_bytes(&m, &cfg, size, Some(2)), &x);
        let err = relative_error(&got, &want);
        eprintln!("{what}: tract relative error {err:.2e}");
        assert!(err <= 1e-4, "{what}: tract's logits are {err:.2e} off gateshift's");
    }
}

/// Modules without an export, and impossible requests, are refused by name.
#[test]
fn what_cannot_be_exported_is_refused_by_name() {
    for (temporal, label) in [
        (TemporalKind::Csn, "CSN"),
        (TemporalKind::R2plus1d, "(2+1)D"),
        (TemporalKind::Mfnet, "MFNet"),
        (TemporalKind::Gst, "GST"),
    ] {
        let cfg = config(Arch::ResnetMini, temporal, 2);
        let m = model(&cfg, 48);
        let e = export::onnx(&m, &Export { config: &cfg, size: 48, batch: None, classes: None }).unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains(label) && e.contains("not implemented"), "{e}");
    }
    let cfg = config(Arch::BnInception, TemporalKind::Gsm, 2);
    let m = model(&cfg, 96);
    let e = export::onnx(&m, &Export { config: &cfg, size: 112, batch: None, classes: None }).unwrap_err();
    assert!(format!("{e:#}").contains("112"), "{e:#}");
    let e = export::onnx(&m, &Export { config: &cfg, size: 96, batch: Some(0), classes: None }).unwrap_err();
    assert!(format!("{e:#}").contains("--batch"), "{e:#}");
}

/// The Python with ONNX Runtime, OpenVINO and safetensors the opt-in tier runs.
fn python() -> PathBuf {
    let p = std::env::var_os("GATESHIFT_PYTHON").unwrap_or_else(|| {
        panic!(
            "the ONNX parity tier needs GATESHIFT_PYTHON: a Python with onnxruntime, openvino and \
             safetensors (scripts/onnx-parity.sh makes one)"
        )
    });
    PathBuf::from(p)
}

/// Writes `model.onnx` and `io.safetensors` (a drawn input and gateshift's logits) under
/// `dir` and has `scripts/onnx_check.py` run them in ONNX Runtime and OpenVINO.
fn check_in_runtimes(what: &str, m: &Recognizer, cfg: &ModelConfig, size: usize, batch: usize, dir: &Path) {
    let onnx = dir.join("model.onnx");
    let io = dir.join("io.safetensors");
    std::fs::write(&onnx, export_bytes(m, cfg, size, None)).unwrap();
    let x =
        Tensor::<4>::random([batch, cfg.input_channels(), size, size], Distribution::Normal(0.0, 1.0), &Device::flex());
    let logits = m.forward(x.clone());
    let tensors: BTreeMap<String, TensorData> =
        [("input".to_string(), x.into_data()), ("logits".to_string(), logits.into_data())].into();
    gateshift::checkpoint::safetensors::write(&io, &tensors, &BTreeMap::new()).unwrap();
    run_check(what, &onnx, &io);
}

fn run_check(what: &str, onnx: &Path, io: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/onnx_check.py");
    let out = Command::new(python()).arg(script).arg(onnx).arg(io).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{what}:\n{text}");
    assert!(out.status.success(), "{what}: ONNX Runtime / OpenVINO parity failed:\n{text}");
}

/// The official GSM BN-Inception checkpoint (`../shared/fixtures`), exported, gives the
/// official code's logits in ONNX Runtime and OpenVINO; so do TSM ResNet-50, GSF (ResNet-50
/// and BN-Inception), TSN, InceptionV3 and EfficientNet-Lite at their own input sizes, and
/// every case of the default tier.
#[test]
#[ignore = "opt-in tier: scripts/onnx-parity.sh (ONNX Runtime and OpenVINO in a throwaway virtualenv)"]
fn onnx_runtime_and_openvino_give_gateshifts_logits() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    let official = fixtures.join("gsm_bninception_seg8.pth.tar");
    assert!(official.exists(), "the official GSM fixture {} is missing", official.display());
    let onnx = dir.path().join("gsm_official.onnx");
    let status = Command::new(env!("CARGO_BIN_EXE_gateshift"))
        .args(["export", "--arch", "bninception", "--temporal", "gsm", "--segments", "8", "--checkpoint"])
        .arg(&official)
        .arg("--onnx")
        .arg(&onnx)
        .status()
        .unwrap();
    assert!(status.success());
    run_check("official GSM BN-Inception", &onnx, &fixtures.join("gsm_bninception_seg8_io.safetensors"));
    // (backbone, module, input side, side of the forward that sets the BN statistics)
    let full = [
        (Arch::Resnet50, TemporalKind::Tsm, 224, 64),
        (Arch::Resnet50, TemporalKind::Gsf, 224, 64),
        (Arch::Resnet50, TemporalKind::None, 224, 64),
        (Arch::BnInception, TemporalKind::Gsf, 224, 96),
        (Arch::BnInception, TemporalKind::None, 224, 96),
        (Arch::InceptionV3, TemporalKind::Gsm, 229, 101),
        (Arch::EfficientnetLite0, TemporalKind::Tsm, 224, 64),
    ];
    for (arch, temporal, size, stats) in full {
        let cfg = config(arch, temporal, 8);
        let what = format!("{} + {} at {size}²", arch.name(), temporal.label());
        check_in_runtimes(&what, &model(&cfg, stats), &cfg, size, 1, dir.path());
    }
    for (what, cfg, size) in cases() {
        check_in_runtimes(&what, &model(&cfg, size), &cfg, size, 2, dir.path());
    }
}

/// `gateshift export` on the official TSM ResNet-18 checkpoint: the graph gives the official
/// code's logits (fixture) in tract, stores the class names given, and an output that is the
/// checkpoint itself (or a link to it) is refused with the checkpoint intact.
#[test]
fn export_command_on_an_official_checkpoint() {
    let Some(shared) = common::shared() else { return };
    let fixtures = shared.join("fixtures");
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("tsm.pth.tar");
    std::fs::copy(fixtures.join("tsm_resnet18_shift8_blockres_seg8.pth.tar"), &checkpoint).unwrap();
    let labels = dir.path().join("labels.txt");
    let names: Vec<String> = (0..174).map(|i| format!("action {i}")).collect();
    std::fs::write(&labels, names.join("\n")).unwrap();
    let export = |out: &Path| {
        Command::new(env!("CARGO_BIN_EXE_gateshift"))
            .args(["export", "--arch", "resnet18", "--temporal", "tsm", "--segments", "8", "--batch", "2"])
            .arg("--checkpoint")
            .arg(&checkpoint)
            .arg("--labels")
            .arg(&labels)
            .arg("--onnx")
            .arg(out)
            .output()
            .unwrap()
    };
    let onnx = dir.path().join("out/tsm.onnx");
    let out = export(&onnx);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&onnx).unwrap();
    let model = ModelProto::parse_from_bytes(&bytes).unwrap();
    let classes = model.metadata_props.iter().find(|p| p.key == "gateshift.classes").unwrap();
    assert_eq!(serde_json::from_str::<Vec<String>>(&classes.value).unwrap(), names);

    let (io, _) =
        gateshift::checkpoint::safetensors::read(&fixtures.join("tsm_resnet18_shift8_blockres_seg8_io.safetensors"))
            .unwrap();
    let x = Tensor::<4>::from_data(io["input"].clone().convert::<f32>(), &Device::flex());
    let want = io["logits"].clone().convert::<f32>().try_into_vec::<f32>().unwrap();
    let err = relative_error(&tract_logits(&bytes, &x), &want);
    assert!(err <= 1e-4, "official TSM ResNet-18 through ONNX: {err:.2e} off the official logits");

    let before = std::fs::read(&checkpoint).unwrap();
    let link = dir.path().join("link.pth");
    std::os::unix::fs::symlink(&checkpoint, &link).unwrap();
    for target in [&checkpoint, &link] {
        let out = export(target);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("refusing to write over it"), "{stderr}");
    }
    assert!(std::fs::read(&checkpoint).unwrap() == before, "the checkpoint changed");
}

/// EPIC's two heads (one `new_fc` for verbs, then nouns) export as `logits` (the verbs) and
/// `noun_logits`, each the matching part of gateshift's logits.
#[test]
fn two_heads_export_as_two_outputs() {
    let mut cfg = config(Arch::ResnetMini, TemporalKind::Gsm, 3);
    cfg.noun_classes = 4;
    let m = model(&cfg, 48);
    let bytes = export_bytes(&m, &cfg, 48, Some(1));
    let graph = ModelProto::parse_from_bytes(&bytes).unwrap().graph.unwrap();
    let outputs: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(outputs, ["logits", "noun_logits", "frame_scores"]);
    let x = Tensor::<4>::random([1, 9, 48, 48], Distribution::Normal(0.0, 1.0), &Device::flex());
    let want = m.forward(x.clone()).into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
    let out = tract_outputs(&bytes, &x);
    assert!(relative_error(&out[0], &want[..7]) <= 1e-4, "verbs");
    assert!(relative_error(&out[1], &want[7..]) <= 1e-4, "nouns");
}

/// `bench model --profile` times the same convolutions and pools the exported graph holds,
/// by kernel and stride (the premise of `scripts/cpu_profile.py`'s join with OpenVINO's
/// per-layer profile), and each temporal module once: its ONNX nodes carry the module's
/// scope. GSM runs as one fused unit (its gate convolution in the `gsm/` scope); TSM in
/// ResNet-18's basic blocks as one shift op (its `tsm/` nodes end in one `Concat`).
#[test]
fn bench_profile_lines_up_with_the_exported_graph() {
    let dir = tempfile::tempdir().unwrap();
    for (arch, temporal, size) in [("bninception", "gsm", "128"), ("resnet18", "tsm", "64")] {
        let (onnx, json) = (dir.path().join(format!("{arch}.onnx")), dir.path().join(format!("{arch}.json")));
        let out = Command::new(env!("CARGO_BIN_EXE_gateshift"))
            .args(["bench", "model", "--arch", arch, "--temporal", temporal, "--size", size, "--segments", "4"])
            .args(["--iters", "2", "--warmup", "0", "--profile", "--onnx"])
            .arg(&onnx)
            .arg("--profile-json")
            .arg(&json)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            stdout.contains("profile (ms per forward, 2 forwards)") && stdout.contains("costliest shapes"),
            "{stdout}"
        );
        let graph = ModelProto::parse_from_bytes(&std::fs::read(&onnx).unwrap()).unwrap().graph.unwrap();
        let weights: BTreeMap<&str, &[i64]> =
            graph.initializer.iter().map(|t| (t.name.as_str(), t.dims.as_slice())).collect();
        let mut want: BTreeMap<String, usize> = BTreeMap::new();
        for node in &graph.node {
            let scope = node.name.split_once('/').map(|(s, _)| s);
            let ints = |name: &str| node.attribute.iter().find(|a| a.name == name).map(|a| a.ints.clone());
            let kind = match (node.op_type.as_str(), scope) {
                ("Conv", Some("gsm")) => "gsm unit".to_string(),
                ("Concat", Some("tsm")) => "time shift".to_string(),
                ("Conv", None) => {
                    let w = weights[node.input[1].as_str()];
                    format!("conv {}x{}/{}", w[2], w[3], ints("strides").map_or(1, |s| s[0]))
                }
                ("MaxPool" | "AveragePool", _) => {
                    let pool = if node.op_type == "MaxPool" { "maxpool" } else { "avgpool" };
                    let k = ints("kernel_shape").unwrap();
                    format!("{pool} {}x{}/{}", k[0], k[1], ints("strides").map_or(1, |s| s[0]))
                }
                _ => continue,
            };
            *want.entry(kind).or_default() += 1;
        }
        let profile: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        let mut got: BTreeMap<String, usize> = BTreeMap::new();
        for (key, e) in profile["ops"].as_object().unwrap() {
            let end = key.split(' ').position(|w| w.contains('>')).unwrap();
            let kind = key.split(' ').take(end).collect::<Vec<_>>().join(" ");
            *got.entry(kind).or_default() += e["calls"].as_u64().unwrap() as usize;
            assert!(e["ms"].as_f64().unwrap() > 0.0, "{key}: no time");
        }
        assert_eq!(got, want, "{arch} + {temporal}: profiled ops against the exported graph's");
        let total = profile["total_ms"].as_f64().unwrap();
        let ops: f64 = profile["ops"].as_object().unwrap().values().map(|e| e["ms"].as_f64().unwrap()).sum();
        assert!(ops > 0.5 * total && ops <= total, "{arch}: ops {ops} ms of {total} ms");
    }
}
