//! Training, resuming, testing and predicting through the `gateshift` binary on a tiny
//! synthetic dataset (toy objects and photo, 32 px): a run killed with SIGKILL and resumed
//! ends bitwise equal to an uninterrupted run; `test` and `predict` outputs are well formed.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::run::{bin, metrics, ok, toy_data, train_cmd, train_cmd_epochs, train_cmd_swap};

use gateshift::checkpoint::StateDict;

#[test]
fn killed_run_resumes_to_identical_weights_then_test_and_predict() {
    let dir = common::tmp("resume");
    let data = toy_data(&dir);
    // Uninterrupted reference run.
    let a = dir.join("run_a");
    ok(train_cmd(&data, &a).output().unwrap());
    for f in ["config.toml", "last.safetensors", "best.safetensors", "metrics.jsonl", "curves.png", "train.log"] {
        assert!(a.join(f).is_file(), "run folder lacks {f}");
    }
    assert_eq!(metrics(&a).len(), 4);
    // Same run, SIGKILLed after its first epoch was saved, then resumed.
    let b = dir.join("run_b");
    let mut child = train_cmd(&data, &b).spawn().unwrap();
    common::run::wait_for_an_epoch(&b, &mut child);
    std::thread::sleep(Duration::from_millis(150));
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    let done = metrics(&b).len();
    assert!(done < 4, "the run finished before it could be killed");
    // A setting that would change the run is refused, not ignored; --workers may differ
    // (the loader gives the same batches for any worker count).
    let out = bin().arg("train").arg("--resume").arg(&b).args(["--epochs", "9", "--lr", "0.5"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("optim.epochs, optim.lr"), "{text}");
    ok(bin().arg("train").arg("--resume").arg(&b).args(["--quiet", "--workers", "1"]).output().unwrap());
    assert_eq!(metrics(&a), metrics(&b), "metrics differ after resume (killed after {done} epoch(s))");
    // Every iteration is logged once, the replayed epoch's included, with the same losses.
    let (sa, sb) = (common::run::lines(&a, "step"), common::run::lines(&b, "step"));
    assert_eq!(sa, sb, "iteration lines differ after resume");
    let steps: Vec<u64> = sa.iter().map(|v| v["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (1..=steps.len() as u64).collect::<Vec<_>>());
    let log = std::fs::read_to_string(b.join("train.log")).unwrap();
    assert!(log.contains("resuming") && log.contains("finished") && log.contains("epoch   4"), "{log}");
    let (wa, wb) =
        (StateDict::read(&a.join("last.safetensors")).unwrap(), StateDict::read(&b.join("last.safetensors")).unwrap());
    assert_eq!(wa.tensors.keys().collect::<Vec<_>>(), wb.tensors.keys().collect::<Vec<_>>());
    for (k, t) in &wa.tensors {
        assert_eq!(t.as_bytes(), wb.tensors[k].as_bytes(), "tensor {k} differs after resume");
    }
    println!("killed after {done} epoch(s), resumed: {} tensors bitwise equal", wa.tensors.len());

    // `test` with the frame-order diagnostic, JSON, confusion matrix and score dump.
    let ckpt = a.join("last.safetensors");
    let json = dir.join("test.json");
    let out = ok(bin()
        .args(["test", "--input-size", "32", "--frame-order", "shuffle", "--checkpoint"])
        .arg(&ckpt)
        .arg("--list")
        .arg(data.join("val.txt"))
        .arg("--json")
        .arg(&json)
        .arg("--confusion")
        .arg(dir.join("cm"))
        .arg("--dump-scores")
        .arg(dir.join("scores.jsonl"))
        .output()
        .unwrap());
    println!("{out}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["videos"], 8);
    assert!(report["drop"].is_number() && report["normal_top1"].is_number());
    assert!(dir.join("cm.csv").is_file() && dir.join("cm.png").is_file() && dir.join("cm_per_class.csv").is_file());
    assert_eq!(std::fs::read_to_string(dir.join("scores.jsonl")).unwrap().lines().count(), 8);
    // Ensembling a score file with itself reproduces its accuracy.
    let ens = ok(bin().arg("ensemble").arg(dir.join("scores.jsonl")).arg(dir.join("scores.jsonl")).output().unwrap());
    let top1 = format!("top-1 {:.2}%", 100.0 * report["top1"].as_f64().unwrap());
    assert!(ens.contains(&top1), "{ens} vs {top1}");

    // `test` reads video lists too.
    if let Some(clips) = common::clips() {
        let list = dir.join("videos.txt");
        std::fs::write(
            &list,
            "v_SoccerJuggling_g23_c01.avi 0\nbasketball.mp4 1\nTrumanShow_wave_f_nm_np1_fr_med_26.avi 2\n",
        )
        .unwrap();
        let out = ok(bin()
            .args(["test", "--input-size", "32", "--checkpoint"])
            .arg(&ckpt)
            .arg("--list")
            .arg(&list)
            .arg("--root")
            .arg(&clips)
            .output()
            .unwrap());
        assert!(out.contains("3 videos"), "{out}");
        // `train` reads video lists too: one epoch straight from the mp4/avi files.
        let vrun = dir.join("video_run");
        ok(bin()
            .args(["train", "--arch", "resnet-mini", "--temporal", "tsm", "--segments", "4", "--epochs", "1"])
            .args(["--batch-size", "3", "--input-size", "32", "--scale-size", "36", "--workers", "2", "--quiet"])
            .arg("--train-list")
            .arg(&list)
            .arg("--val-list")
            .arg(&list)
            .arg("--root")
            .arg(&clips)
            .arg("--out")
            .arg(&vrun)
            .output()
            .unwrap());
        assert_eq!(metrics(&vrun).len(), 1);
    }

    // `predict` on a frame folder, then on a real clip where present.
    let names: Vec<String> =
        std::fs::read_to_string(data.join("classes.txt")).unwrap().lines().map(String::from).collect();
    let first = std::fs::read_to_string(data.join("val.txt"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let mut inputs = vec![data.join(first)];
    if let Some(clips) = common::clips() {
        inputs.push(clips.join("v_SoccerJuggling_g23_c01.avi"));
    }
    for input in inputs {
        let out = bin()
            .arg("predict")
            .arg(&input)
            .arg("--checkpoint")
            .arg(&ckpt)
            .args(["--json", "--topk", "5"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let top = v["top"].as_array().unwrap();
        assert_eq!(top.len(), 4, "4 classes, top-5 lists all 4");
        let sum: f64 = top.iter().map(|t| t["probability"].as_f64().unwrap()).sum();
        assert!(sum <= 1.0 + 1e-4 && sum > 0.99, "probabilities sum to {sum}");
        assert!(top.iter().all(|t| names.contains(&t["label"].as_str().unwrap().to_string())));
        let plain = ok(bin().arg("predict").arg(&input).arg("--checkpoint").arg(&ckpt).output().unwrap());
        println!("{plain}");
        // bf16 inference: the same classes, probabilities within bf16's rounding.
        let out = bin()
            .arg("predict")
            .arg(&input)
            .arg("--checkpoint")
            .arg(&ckpt)
            .args(["--json", "--topk", "5", "--precision", "bf16"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let half: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let prob = |v: &serde_json::Value, label: &serde_json::Value| {
            v["top"].as_array().unwrap().iter().find(|t| &t["label"] == label).unwrap()["probability"].as_f64().unwrap()
        };
        for t in top {
            let (full, bf16) = (prob(&v, &t["label"]), prob(&half, &t["label"]));
            assert!((full - bf16).abs() < 0.02, "{}: fp32 {full} bf16 {bf16}", t["label"]);
        }
    }
}

/// An input given on the command line that cannot be read is named alone (no "list line"), a
/// flip label swap naming a class the data does not have is refused before training, and
/// class names of another count than the model's classes are refused.
#[test]
fn unreadable_predict_input_and_bad_flip_swap_are_clear_errors() {
    let dir = common::tmp("refusals");
    let data = toy_data(&dir);
    let out = train_cmd_swap(&data, &dir.join("swap_run"), 1, "0:1,2:9").output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("\"2:9\"") && text.contains("outside the 4 classes"), "{text}");
    assert!(!dir.join("swap_run/last.safetensors").exists());
    let run = dir.join("run");
    ok(train_cmd_epochs(&data, &run, 1).output().unwrap());
    let garbage = dir.join("not a video.mp4");
    std::fs::write(&garbage, b"\x00\x00\x00\x18ftypmp42 no video here").unwrap();
    let out =
        bin().arg("predict").arg(&garbage).arg("--checkpoint").arg(run.join("last.safetensors")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("not a video.mp4") && !text.contains("list line"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    // Class names that do not match the model's classes are refused, naming the file.
    let names = dir.join("three names.txt");
    std::fs::write(&names, "a\nb\nc\n").unwrap();
    let out = bin()
        .arg("test")
        .arg("--checkpoint")
        .arg(run.join("last.safetensors"))
        .arg("--list")
        .arg(data.join("val.txt"))
        .arg("--class-names")
        .arg(&names)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("three names.txt holds 3 class names"), "{text}");
}

#[test]
fn nan_loss_stops_with_a_message_and_sigint_stops_cleanly() {
    let dir = common::tmp("nan");
    let data = toy_data(&dir);
    // A learning rate that blows the weights up: the loss turns non-finite.
    let run = dir.join("nan_run");
    let out = train_cmd(&data, &run).args(["--lr", "1e12", "--clip-gradient", "1e30"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a NaN run must fail");
    assert!(text.contains("loss became") && text.contains("nothing was saved"), "{text}");
    println!("NaN run: {}", text.trim());
    // SIGINT after the first epoch: stops, says how to resume, keeps a loadable checkpoint.
    let run = dir.join("int_run");
    let mut child = train_cmd_epochs(&data, &run, 40).stderr(std::process::Stdio::piped()).spawn().unwrap();
    common::run::wait_for_an_epoch(&run, &mut child);
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("--resume"), "{text}");
    let sd = StateDict::read(&run.join("last.safetensors")).unwrap();
    let done = metrics(&run).len();
    assert!((1..40).contains(&done), "{done} epochs done");
    assert!(sd.metadata.contains_key("gateshift.run"));
    println!("SIGINT after {done} epoch(s): {}", text.trim());
}

/// The TensorBoard tier (`scripts/tensorboard-check.sh`): TensorBoard's own reader reads the
/// event files of a run and of a run killed and resumed, with the scalars and steps of their
/// metrics.jsonl (`scripts/tensorboard_check.py`).
#[test]
#[ignore = "opt-in tier: scripts/tensorboard-check.sh (TensorBoard in a throwaway virtualenv)"]
fn tensorboard_reads_the_event_files() {
    let python = std::env::var_os("GATESHIFT_PYTHON").expect("GATESHIFT_PYTHON: a Python with tensorboard");
    let check = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tensorboard_check.py");
    let dir = common::tmp("tensorboard");
    let data = toy_data(&dir);
    let (a, b) = (dir.join("run_a"), dir.join("run_b"));
    ok(train_cmd(&data, &a).output().unwrap());
    let mut child = train_cmd(&data, &b).spawn().unwrap();
    common::run::wait_for_an_epoch(&b, &mut child);
    child.kill().unwrap();
    let _ = child.wait();
    ok(bin().arg("train").arg("--resume").arg(&b).arg("--quiet").output().unwrap());
    for run in [&a, &b] {
        let out = ok(Command::new(&python).arg(&check).arg(run).output().unwrap());
        println!("{}: {}", run.display(), out.trim());
    }
}
