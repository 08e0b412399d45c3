//! `gateshift explain`: its gate statistics against the gate tensors of the official code and
//! of the model itself, its files, `--list`, and models without gates.

mod common;

use std::path::Path;
use std::process::Command;

use burn::tensor::{Tensor, TensorData};
use common::run::{bin, ok, toy_data};
use gateshift::checkpoint::{self, Fit, StateDict};
use gateshift::infer::explain;
use gateshift::model::{Arch, ModelConfig, TemporalKind, probe};

/// On the official GSM BN-Inception checkpoint and the official input, the first layer's gates
/// are the official code's `gsm_inception_3a_1x1` tanh gates, and its mean |g| per half is
/// theirs.
#[test]
fn gates_are_the_official_gates() {
    let Some(io) = common::fixture("gsm_bninception_seg8_io.safetensors") else { return };
    let device = common::device();
    let cfg = ModelConfig::new(Arch::BnInception, TemporalKind::Gsm, 8, 174);
    let sd = StateDict::read(&common::shared().unwrap().join("fixtures/gsm_bninception_seg8.pth.tar")).unwrap();
    let mut model = cfg.init(&device);
    checkpoint::load(&mut model, &cfg, &sd, Fit::Strict).unwrap();
    let model = Box::new(model.inference());
    let input: Tensor<4> = Tensor::from_data(io["input"].clone(), &device);
    let (_, layers) = explain::forward(&model, input).unwrap();
    assert_eq!(layers.len(), 10, "BN-Inception has 10 GSM layers");
    let official = &io["act.base_model.gsm_inception_3a_1x1.tanh"];
    let shape = official.shape().to_vec();
    let values: Vec<f32> = official.clone().convert::<f32>().try_into_vec().unwrap();
    let first = &values[..layers[0].gate.len()];
    let worst = first.iter().zip(&layers[0].gate).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("gsm_inception_3a_1x1 gates {shape:?}: largest difference {worst:.2e}");
    assert!(worst < 1e-4);
    let per_half = values.len() / shape[0] / 2;
    for half in 0..2 {
        let mut sum = 0.0f64;
        for b in 0..shape[0] {
            sum += values[(b * 2 + half) * per_half..][..per_half].iter().map(|v| v.abs() as f64).sum::<f64>();
        }
        let official_mean = sum / (shape[0] * per_half) as f64;
        let ours = layers[0].halves[half].mean_abs_gate;
        println!("half {half}: mean |g| {ours:.6} (official {official_mean:.6})");
        assert!((ours - official_mean).abs() < 1e-5);
    }
}

fn train(data: &Path, out: &Path, temporal: &str) {
    ok(common::run::train_cmd_model(data, out, 2, "0:1", temporal).output().unwrap());
}

fn explain_cmd(checkpoint: &Path, out: &Path) -> Command {
    let mut c = bin();
    c.arg("explain").arg("--checkpoint").arg(checkpoint).arg("--out").arg(out);
    c
}

/// A trained GSM run: `explain` on a clip writes the grids, the strip, the report and
/// `gates.json`, whose statistics are those of the model's own gate tensors on the same input
/// (tapped, and checked to be the gates the module applied by recomposing its output);
/// `--list` writes the routed share by class and layer; a TSN run has nothing to explain.
#[test]
fn explain_reports_the_models_own_gates() {
    let dir = common::tmp("explain");
    let data = toy_data(&dir);
    let (gsm, tsn) = (dir.join("gsm"), dir.join("tsn"));
    train(&data, &gsm, "gsm");
    let ckpt = gsm.join("last.safetensors");
    let clip = data.join("frames/val/00_00000");
    let out = dir.join("explained");
    let text = ok(explain_cmd(&ckpt, &out).arg(&clip).output().unwrap());
    println!("{text}");
    let files = ["gates_half1.png", "gates_half2.png", "report.md", "gates.json"];
    for f in files.iter().chain(common::ffmpeg().then_some(&"gates.mp4")) {
        assert!(out.join(f).metadata().is_ok_and(|m| m.len() > 0), "{f} missing");
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("gates.json")).unwrap()).unwrap();
    let reported = json["layers"].as_array().unwrap();
    // A recognizer by value needs more than a test thread's default stack.
    let (c, k) = (ckpt.clone(), clip.clone());
    let big = std::thread::Builder::new().stack_size(32 << 20);
    let own = big.spawn(move || own_gate_statistics(&c, &k)).unwrap().join().unwrap();
    println!("own gate statistics per layer (mean |g|, routed): {own:?}");
    assert_eq!(reported.len(), own.len());
    for (r, (mean_abs, routed)) in reported.iter().zip(&own) {
        for half in 0..2 {
            let h = &r["halves"][half];
            let (a, b) = (h["mean_abs_gate"].as_f64().unwrap(), h["routed"].as_f64().unwrap());
            assert!((a - mean_abs[half]).abs() < 1e-6 && (b - routed[half]).abs() < 1e-6, "{r}: {own:?}");
        }
    }
    // Over the validation list: every class, every layer.
    let by_class = dir.join("by_class");
    ok(explain_cmd(&ckpt, &by_class).arg("--list").arg(data.join("val.txt")).output().unwrap());
    let csv = std::fs::read_to_string(by_class.join("routing.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4 * own.len(), "{csv}");
    assert!(by_class.join("routing.png").is_file() && by_class.join("report.md").is_file());
    // Refusals: an output folder that is a file, an input that is not there.
    let file = dir.join("a_file");
    std::fs::write(&file, "mine").unwrap();
    let o = explain_cmd(&ckpt, &file).arg(&clip).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not a folder"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
    let o = explain_cmd(&ckpt, &out).arg(dir.join("nothing.mp4")).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("nothing.mp4"));
    // TSN: nothing to explain, nothing written.
    train(&data, &tsn, "none");
    let empty = dir.join("tsn_explained");
    let text = ok(explain_cmd(&tsn.join("last.safetensors"), &empty).arg(&clip).output().unwrap());
    assert!(text.contains("nothing to explain") && !empty.exists(), "{text}");
}

/// Per GSM layer, (mean |g|, Σ|g·x| / Σ|x|) of each half, from the gate and input tensors the
/// model taps while it runs the clip `explain` ran; each layer's output is checked to be its
/// input routed by exactly those gates.
fn own_gate_statistics(ckpt: &Path, clip: &Path) -> Vec<([f64; 2], [f64; 2])> {
    use gateshift::data::list::{Entry, List, ListFormat};
    use gateshift::data::{ClipDataset, FrameNaming, Pipeline};
    use rand::SeedableRng;
    let device = common::device();
    let p = gateshift::infer::Predictor::open(ckpt, Default::default(), &device, |sd| {
        use gateshift::checkpoint::metadata;
        metadata::get::<ModelConfig>(&sd.metadata, metadata::MODEL).map(|c| c.expect("a run checkpoint"))
    })
    .unwrap();
    let (size, scale) = p.input_sizes(None, None).unwrap();
    let frames = FrameNaming::new("img_{:05d}.jpg", 1).unwrap();
    let n = frames.count(clip).unwrap();
    let entry =
        Entry { path: clip.into(), start: 0, num_frames: Some(n), label: 0, noun: None, line: 0, is_video: false };
    let list = List { file: clip.into(), format: ListFormat::Auto, entries: vec![entry] };
    let ds = ClipDataset { list, naming: frames, pipeline: Pipeline::for_model(&p.config, size, scale, 1, 1) };
    let data = ds.get(0, &mut rand::rngs::StdRng::seed_from_u64(0)).unwrap().data;
    let (t, s) = (p.config.segments, size as usize);
    let x = Tensor::<4>::from_data(TensorData::new(data, [1, t * 3, s, s]), &device);
    let (_, taps) = probe::capture(|| p.model.forward(x));
    let of = |name: &str| -> Vec<(Vec<usize>, Vec<f32>)> {
        let d = taps.iter().filter(|(n, _)| n == name);
        d.map(|(_, d)| (d.shape().to_vec(), d.clone().convert::<f32>().try_into_vec().unwrap())).collect()
    };
    let (xs, gates, outs) = (of("gsm.x"), of("gsm.tanh"), of("gsm"));
    assert!(!xs.is_empty() && xs.len() == gates.len() && xs.len() == outs.len());
    xs.iter().zip(&gates).zip(&outs).map(|((x, g), y)| check_and_measure(x, g, y)).collect()
}

/// Checks that `y` = GSM(x) under gates `g` (half 1's gated part from t+1, half 2's from
/// t−1, residual kept, each half re-interleaved) and measures the gates.
fn check_and_measure(
    (xs, x): &(Vec<usize>, Vec<f32>),
    (_, g): &(Vec<usize>, Vec<f32>),
    (_, y): &(Vec<usize>, Vec<f32>),
) -> ([f64; 2], [f64; 2]) {
    let [t, c, h, w] = xs[..] else { panic!("{xs:?}") };
    let hw = h * w;
    let (mut abs_g, mut gx, mut ax) = ([0.0f64; 2], [0.0f64; 2], [0.0f64; 2]);
    for half in 0..2 {
        for f in 0..t {
            let gate = &g[(half * t + f) * hw..][..hw];
            abs_g[half] += gate.iter().map(|v| v.abs() as f64).sum::<f64>();
            for k in 0..c / 2 {
                let ch = half * c / 2 + k;
                // The half viewed as (2, C/4) and transposed: channel i·C/4 + j goes to 2·j + i.
                let out_ch = half * c / 2 + (k % (c / 4)) * 2 + k / (c / 4);
                let src = if half == 0 { f + 1 } else { f.wrapping_sub(1) };
                for p in 0..hw {
                    let xv = x[(f * c + ch) * hw + p];
                    let moved = if src < t { x[(src * c + ch) * hw + p] * g[(half * t + src) * hw + p] } else { 0.0 };
                    let want = moved + xv - xv * gate[p];
                    let got = y[(f * c + out_ch) * hw + p];
                    assert!((want - got).abs() <= 1e-4 * (1.0 + want.abs()), "GSM output {got} is not {want}");
                    gx[half] += (xv * gate[p]).abs() as f64;
                    ax[half] += xv.abs() as f64;
                }
            }
        }
    }
    let n = (t * hw) as f64;
    ([abs_g[0] / n, abs_g[1] / n], [gx[0] / ax[0], gx[1] / ax[1]])
}
