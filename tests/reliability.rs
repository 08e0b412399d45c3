//! The second-round reliability corpus (docs/RELIABILITY.md): every case generated here,
//! each defect class with cases of its own beyond the one reported — checkpoint formats
//! decided by validation, outputs that are not regular files, run folders shared by two
//! processes, colliding extraction folders, divergence, worker panics, hangs, values that
//! size allocations, files that lie about their sizes, list entries that look like URLs or
//! options, and state that was silently lost.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use burn::tensor::{Device, TensorData};
use common::run::{bin, ok, toy_data, train_cmd_epochs};
use common::torch_file::{self, Spec};
use gateshift::checkpoint::{self, StateDict};
use gateshift::model::{Arch, ModelConfig, TemporalKind};

/// The command failed, saying each of `needles`, without a panic.
fn fails(out: Output, needles: &[&str]) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "should have failed:\n{text}");
    assert!(!text.contains("panicked"), "panicked:\n{text}");
    for n in needles {
        assert!(text.contains(n), "{n:?} missing from:\n{text}");
    }
    text
}

fn err<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.expect_err("should have failed"))
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
}

/// A small model's checkpoint (ResNet-Mini + GSM, 4 segments, 4 classes).
fn tiny_checkpoint(path: &Path, metadata: &[(&str, &str)]) -> StateDict {
    let cfg = ModelConfig::new(Arch::ResnetMini, TemporalKind::Gsm, 4, 4);
    let mut sd = checkpoint::state_dict(&cfg.init(&Device::flex()), &cfg).unwrap();
    for (k, v) in metadata {
        sd.metadata.insert(k.to_string(), v.to_string());
    }
    sd.write_safetensors(path).unwrap();
    sd
}

// ---------- 1. checkpoint format decided by validation, not a magic byte ----------

/// Safetensors files read back whatever their header length, including every length whose
/// first byte is 0x80 (pickle's protocol byte) or 'P' (ZIP's): a property over the 256
/// values of the first byte, on files laid out by hand (any writer may leave the header
/// unpadded) and on our own checkpoints (padded to 8 bytes, as safetensors does).
#[test]
fn safetensors_read_back_for_every_header_length() {
    let dir = common::tmp("header-lengths");
    let path = dir.join("ckpt.safetensors");
    let data: Vec<u8> = [1.0f32, -2.0, 3.5].iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut seen = [false; 256];
    for pad in 0..300 {
        let header = format!(
            r#"{{"__metadata__":{{"gateshift.run":"{}"}},"new_fc.bias":{{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}}}"#,
            "x".repeat(pad)
        );
        let bytes = [&(header.len() as u64).to_le_bytes()[..], header.as_bytes(), &data].concat();
        std::fs::write(&path, &bytes).unwrap();
        let sd = StateDict::read(&path).unwrap_or_else(|e| panic!("header length {}: {e:#}", header.len()));
        assert_eq!(sd.tensors["new_fc.bias"].as_slice::<f32>().unwrap(), &[1.0, -2.0, 3.5]);
        assert_eq!(sd.metadata["gateshift.run"].len(), pad);
        seen[bytes[0] as usize] = true;
    }
    assert!(seen.iter().all(|&s| s), "not every first byte was tried");
    let mut tensors = BTreeMap::new();
    tensors.insert("new_fc.bias".to_string(), TensorData::new(vec![1.0f32, -2.0, 3.5], [3]));
    let mut lengths = std::collections::BTreeSet::new();
    for pad in 0..300 {
        let metadata = BTreeMap::from([("gateshift.run".to_string(), "x".repeat(pad))]);
        checkpoint::safetensors::write(&path, &tensors, &metadata).unwrap();
        lengths.insert(std::fs::read(&path).unwrap()[0]);
        assert_eq!(StateDict::read(&path).unwrap().metadata["gateshift.run"].len(), pad);
    }
    assert!(lengths.contains(&0x80) && lengths.contains(&b'P'), "{lengths:?}");
}

/// Content decides, never the name; files that are neither say so, naming the file.
#[test]
fn formats_are_told_apart_by_content() {
    let dir = common::tmp("formats");
    let st = dir.join("weights.pth");
    tiny_checkpoint(&st, &[]);
    StateDict::read(&st).expect("safetensors named .pth");
    let pth = dir.join("weights.safetensors");
    torch_file::plain(&pth, &[("fc.bias", &[2], vec![0.5, 1.5])], Some("state_dict"));
    assert_eq!(StateDict::read(&pth).unwrap().tensors["fc.bias"].as_slice::<f32>().unwrap(), &[0.5, 1.5]);
    // GSF's container: weights under `model_state_dict`, beside other entries.
    let gsf = dir.join("gsf.pth.tar");
    torch_file::plain(&gsf, &[("module.fc.bias", &[1], vec![7.0])], Some("model_state_dict"));
    assert_eq!(StateDict::read(&gsf).unwrap().tensors["fc.bias"].as_slice::<f32>().unwrap(), &[7.0]);
    // A JSON file, a header length pointing past the end, 8 bytes of 0x80.
    for (name, bytes) in [
        ("config.json", b"{\"a\": 1}".to_vec()),
        ("short.safetensors", [&200u64.to_le_bytes()[..], b"{\"x\":"].concat()),
        ("eighty.pth", vec![0x80; 8]),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let m = err(StateDict::read(&path));
        assert!(m.contains(name), "{m}");
    }
    let m = err(StateDict::read(&dir.join("short.safetensors")));
    assert!(m.contains("truncated safetensors"), "{m}");
}

// ---------- 2. outputs that are not regular files ----------

fn scores_file(dir: &Path) -> PathBuf {
    let path = dir.join("scores.jsonl");
    std::fs::write(
        &path,
        "{\"index\":0,\"label\":1,\"scores\":[0.1,0.9]}\n{\"index\":1,\"label\":0,\"scores\":[0.7,0.3]}\n",
    )
    .unwrap();
    path
}

fn ensemble(scores: &Path, out: &Path) -> Command {
    let mut c = bin();
    c.arg("ensemble").arg(scores).arg(scores).arg("--out").arg(out);
    c
}

#[test]
fn outputs_write_through_devices_fifos_and_symlinks() {
    let dir = common::tmp("outputs");
    let scores = scores_file(&dir);
    // Standard output, as a path: the lines arrive on stdout, nothing is replaced.
    let text = ok(ensemble(&scores, Path::new("/dev/stdout")).output().unwrap());
    assert_eq!(text.matches("\"label\":").count(), 2, "{text}");
    let text = ok(ensemble(&scores, Path::new("-")).output().unwrap());
    assert!(text.contains("\"index\":1"), "{text}");
    // A device that cannot take the bytes is an error naming it, and stays a device.
    fails(ensemble(&scores, Path::new("/dev/full")).output().unwrap(), &["/dev/full"]);
    ok(ensemble(&scores, Path::new("/dev/null")).output().unwrap());
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
    // A FIFO with a reader gets the bytes and stays a FIFO; without one, an error at once.
    let fifo = dir.join("out.fifo");
    mkfifo(&fifo);
    fails(ensemble(&scores, &fifo).output().unwrap(), &["no reader"]);
    let reader = Command::new("cat").arg(&fifo).stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    ok(ensemble(&scores, &fifo).output().unwrap());
    let got = reader.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout).lines().count(), 2);
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    // A symlink stays a symlink; its target gets the output.
    let target = dir.join("target.jsonl");
    std::fs::write(&target, "old").unwrap();
    let link = dir.join("link.jsonl");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    ok(ensemble(&scores, &link).output().unwrap());
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(&target).unwrap().lines().count(), 2);
    // Standard output itself on a full device: an error, not a panic in println!.
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = bin().args(["info", "--arch", "resnet-mini", "--temporal", "gsm"]).stdout(full).output().unwrap();
    fails(out, &["cannot write to standard output"]);
    // A folder, or a path under a file, is refused before any work.
    fails(ensemble(&scores, &dir).output().unwrap(), &["is a directory"]);
    fails(ensemble(&scores, &target.join("x.jsonl")).output().unwrap(), &["x.jsonl", "Not a directory"]);
}

// ---------- 3. run folders: one process, one run ----------

#[test]
fn two_trainings_on_one_folder_and_foreign_folders() {
    let dir = common::tmp("run-lock");
    let data = toy_data(&dir);
    let run = dir.join("run");
    // Two real processes at once: one trains, the other is refused; the folder holds one run.
    let a = train_cmd_epochs(&data, &run, 2).args(["--lr", "0.02"]).stderr(Stdio::piped()).spawn().unwrap();
    let b = train_cmd_epochs(&data, &run, 2).args(["--lr", "0.03"]).stderr(Stdio::piped()).spawn().unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() != b.status.success(), "exactly one may run: {a:?} {b:?}");
    let loser = if a.status.success() { &b } else { &a };
    let text = String::from_utf8_lossy(&loser.stderr);
    assert!(text.contains("in use by another gateshift process") || text.contains("is not empty"), "{text}");
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let sd = StateDict::read(&run.join("last.safetensors")).unwrap();
    assert_eq!(sd.metadata["gateshift.train_config"], config, "config.toml is not the weights' run");
    // A folder holding a run (or anything) is refused, nothing in it touched.
    let before = std::fs::read(run.join("last.safetensors")).unwrap();
    fails(train_cmd_epochs(&data, &run, 1).output().unwrap(), &["is not empty", "--overwrite", "--resume"]);
    assert_eq!(std::fs::read(run.join("last.safetensors")).unwrap(), before);
    // Files of an earlier run but no `last`: refused too; --overwrite replaces them and
    // leaves the user's own files.
    let partial = dir.join("partial");
    std::fs::create_dir(&partial).unwrap();
    for f in ["config.toml", "metrics.jsonl", "best.safetensors", "notes.md"] {
        std::fs::write(partial.join(f), "earlier").unwrap();
    }
    fails(train_cmd_epochs(&data, &partial, 1).output().unwrap(), &["is not empty"]);
    assert_eq!(std::fs::read_to_string(partial.join("best.safetensors")).unwrap(), "earlier");
    fails(bin().arg("train").arg("--resume").arg(&partial).output().unwrap(), &["no last.safetensors"]);
    ok(train_cmd_epochs(&data, &partial, 1).arg("--overwrite").output().unwrap());
    assert_eq!(std::fs::read_to_string(partial.join("notes.md")).unwrap(), "earlier");
    StateDict::read(&partial.join("last.safetensors")).unwrap();
}

/// `synth` writes `train.txt`, `val.txt`, `classes.txt` and `frames/`: into a folder that
/// holds anything but an earlier synth dataset it refuses to write.
#[test]
fn synth_leaves_foreign_folders_alone() {
    let dir = common::tmp("synth-foreign");
    let (objects, photos) = common::toy_synth_sources(&dir);
    let synth = |out: &Path| {
        bin()
            .args(["synth", "--pairs", "1", "--train-per-class", "1", "--val-per-class", "1", "--size", "32"])
            .args(["--min-frames", "4", "--max-frames", "4", "--out"])
            .arg(out)
            .arg("--objects")
            .arg(&objects)
            .arg("--backgrounds")
            .arg(&photos)
            .output()
            .unwrap()
    };
    let mine = dir.join("my dataset");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("train.txt"), "my/own 30 2\n").unwrap();
    fails(synth(&mine), &["not empty", "synth.toml"]);
    assert_eq!(std::fs::read_to_string(mine.join("train.txt")).unwrap(), "my/own 30 2\n");
    let fresh = dir.join("synth");
    ok(synth(&fresh));
    ok(synth(&fresh)); // an earlier synth dataset is regenerated in place
}

// ---------- 4. extraction folders that collide ----------

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg").args(["-v", "error", "-y"]).args(args).output().unwrap();
    assert!(out.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn test_video(path: &Path, frames: usize, extra: &[&str]) {
    let f = frames.to_string();
    let mut args = vec!["-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-frames:v", &f, "-pix_fmt", "yuv420p"];
    args.extend_from_slice(extra);
    args.push(path.to_str().unwrap());
    ffmpeg(&args);
}

#[test]
fn extract_frames_keeps_videos_sharing_a_name_apart() {
    if !common::ffmpeg() {
        return;
    }
    let dir = common::tmp("extract");
    for (sub, n) in [("a", 5), ("b", 7)] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        test_video(&dir.join(sub).join("clip.mp4"), n, &[]);
    }
    std::fs::write(dir.join("videos.txt"), "a/clip.mp4 0\nb/clip.mp4 1\n").unwrap();
    let out = dir.join("frames");
    ok(bin().args(["data", "extract-frames"]).arg(dir.join("videos.txt")).arg("--out").arg(&out).output().unwrap());
    let list = std::fs::read_to_string(out.join("list.txt")).unwrap();
    assert_eq!(list, "a/clip 5 0\nb/clip 7 1\n");
    assert_eq!(std::fs::read_dir(out.join("a/clip")).unwrap().count(), 5);
    assert_eq!(std::fs::read_dir(out.join("b/clip")).unwrap().count(), 7);
    // The same video twice, and a second extraction into folders that hold frames: refused.
    std::fs::write(dir.join("twice.txt"), "a/clip.mp4 0\na/clip.mp4 1\n").unwrap();
    let again = dir.join("again");
    fails(
        bin().args(["data", "extract-frames"]).arg(dir.join("twice.txt")).arg("--out").arg(&again).output().unwrap(),
        &["twice.txt:1 and", "twice.txt:2"],
    );
    fails(
        bin().args(["data", "extract-frames"]).arg(dir.join("videos.txt")).arg("--out").arg(&out).output().unwrap(),
        &["already holds files"],
    );
    assert_eq!(std::fs::read_dir(out.join("a/clip")).unwrap().count(), 5);
}

// ---------- 5. divergence: what is saved can go on training ----------

/// Runs made to diverge for certain, whatever the float environment: SGD with momentum μ = 0.9
/// on the decayed weights multiplies them, per step, by the larger root of
/// z² − (1 + μ − x)z + μ with x = lr × weight decay, which is stable only for x < 2(1 + μ) = 3.8.
/// The warm-up runs the first epoch at 0.1 × lr. So x = 20 keeps epoch 1 stable (x = 2,
/// |z| ≈ 0.95) and grows the weights about 18× per step from epoch 2 on; x = 1000 grows them
/// about 98× per step from the first. (A large learning rate alone diverges or not depending on
/// rounding: lr 0.3 did on Debian 12 and did not on Debian 13.) The run stops with a message,
/// and whatever `last` then holds is finite, trains on, and is from before things went bad.
#[test]
fn a_diverging_run_keeps_only_a_state_that_trains() {
    let dir = common::tmp("diverge");
    let data = toy_data(&dir);
    // (lr × weight decay, whether an epoch finishes before the run diverges)
    for (x, keeps) in [(20.0, true), (1000.0, false)] {
        let run = dir.join(format!("x{x}"));
        let decay = format!("{}", x / 0.01);
        let out = train_cmd_epochs(&data, &run, 6)
            .args(["--lr", "0.01", "--weight-decay", &decay, "--clip-gradient", "inf"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        println!("lr × decay {x}: {}", text.lines().last().unwrap_or(""));
        assert!(!out.status.success() && text.contains("training diverged"), "lr × decay {x} must diverge:\n{text}");
        let last = run.join("last.safetensors");
        if !keeps {
            assert!(!last.exists() && text.contains("nothing was saved"), "{text}");
            continue;
        }
        let sd = StateDict::read(&last).expect("last is finite");
        let done = serde_json::from_str::<serde_json::Value>(&sd.metadata["gateshift.run"]).unwrap()["epochs_done"]
            .as_u64()
            .unwrap();
        assert!((1..6).contains(&done), "epoch 1 is stable, the run cannot finish: {done}");
        assert!(text.contains(&format!("after epoch {done})")), "the message names the kept epoch:\n{text}");
        // The kept state trains: one more epoch from it in a new run is finite.
        let again = dir.join(format!("again{x}"));
        let out = train_cmd_epochs(&data, &again, 1).args(["--lr", "1e-4", "--init"]).arg(&last).output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "the kept state of lr × decay {x} (epoch {done}) does not train: {text}");
    }
}

// ---------- 6. worker panics and mixed frame sizes ----------

#[test]
fn a_panic_while_loading_is_an_error_naming_the_sample_not_a_hang() {
    use gateshift::data::{ClipDataset, FrameNaming, List, ListFormat, Loader, Pipeline};
    let dir = common::tmp("panic");
    let frames = dir.join("clip");
    std::fs::create_dir_all(&frames).unwrap();
    for i in 1..=4 {
        image::RgbImage::new(40, 30).save(frames.join(format!("img_{i:05}.png"))).unwrap();
    }
    let list = List::parse("clip 4 0\n", &dir.join("l.txt"), Some(&dir), ListFormat::Auto, None).unwrap();
    // Two crops is no test protocol: the crop code panics on it. The loader must turn that
    // into an error for this sample, with any worker count.
    let pipeline = Pipeline::test(gateshift::model::Arch::ResnetMini.input(), 16, 20, 4, 2, 1);
    let naming = FrameNaming::new("img_{:05d}.png", 1).unwrap();
    let ds = std::sync::Arc::new(ClipDataset { list, naming, pipeline });
    for workers in [1, 3] {
        let start = Instant::now();
        let mut loader = Loader::new(ds.clone(), vec![0], 1, workers, 2, 0, 0, false).unwrap();
        let m = err(loader.next_batch().unwrap());
        assert!(m.contains("l.txt:1") && m.contains("please report"), "{m}");
        assert!(start.elapsed() < Duration::from_secs(30));
    }
}

#[test]
fn mixed_frame_sizes_and_huge_counts_are_named() {
    let dir = common::tmp("mixed");
    let ckpt = dir.join("tiny.safetensors");
    tiny_checkpoint(&ckpt, &[]);
    let clip = dir.join("clip");
    std::fs::create_dir_all(&clip).unwrap();
    for i in 1..=8u32 {
        // 0-based frame 3, one of the four test-time segment centres (1, 3, 5, 7).
        let (w, h) = if i == 4 { (30, 40) } else { (40, 30) };
        image::RgbImage::new(w, h).save(clip.join(format!("img_{i:05}.png"))).unwrap();
    }
    let test = |list: &str| {
        std::fs::write(dir.join("list.txt"), list).unwrap();
        bin()
            .args(["test", "--input-size", "32", "--template", "img_{:05d}.png", "--checkpoint"])
            .arg(&ckpt)
            .arg("--list")
            .arg(dir.join("list.txt"))
            .output()
            .unwrap()
    };
    fails(test("clip 8 0\n"), &["list.txt:1", "differ in shape", "frame 1 is 48×36, frame 3 is 36×48"]);
    fails(test("clip 18446744073709551615 0\n"), &["list.txt:1", "frame count"]);
    fails(test("clip 99999999999999 8 0\n"), &["list.txt:1", "frame offset"]);
}

// ---------- 7. no waiting forever ----------

#[test]
fn silent_servers_and_fifos_end_in_bounded_time() {
    if !common::ffmpeg() {
        return;
    }
    let dir = common::tmp("timeouts");
    // An HTTP server that accepts and never answers.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/live.mp4", server.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let conns: Vec<_> = server.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(8));
        drop(conns);
    });
    let start = Instant::now();
    let stream = |input: &str| {
        bin().args(["stream", input, "--checkpoint", "absent.safetensors", "--timeout", "1"]).output().unwrap()
    };
    fails(stream(&url), &[&url]);
    assert!(start.elapsed() < Duration::from_secs(7), "took {:?}", start.elapsed());
    drop(held);
    // A FIFO nobody writes to, as a live source: the same timeout.
    let fifo = dir.join("feed.fifo");
    mkfifo(&fifo);
    let start = Instant::now();
    fails(stream(&format!("file:{}", fifo.display())), &["within 1 s"]);
    assert!(start.elapsed() < Duration::from_secs(7));
    // Where no live source is expected, a FIFO is refused at once: a frame, a list entry, predict.
    let frames = dir.join("clip");
    std::fs::create_dir_all(&frames).unwrap();
    for i in [1, 3, 4, 5, 6, 7, 8] {
        image::RgbImage::new(40, 30).save(frames.join(format!("img_{i:05}.png"))).unwrap();
    }
    // 0-based frame 1: a segment centre at test time.
    mkfifo(&frames.join("img_00002.png"));
    let ckpt = dir.join("tiny.safetensors");
    tiny_checkpoint(&ckpt, &[]);
    std::fs::write(dir.join("list.txt"), "clip 8 0\n").unwrap();
    let start = Instant::now();
    let out = bin()
        .args(["test", "--input-size", "32", "--template", "img_{:05d}.png", "--checkpoint"])
        .arg(&ckpt)
        .arg("--list")
        .arg(dir.join("list.txt"))
        .output()
        .unwrap();
    fails(out, &["img_00002.png", "FIFO"]);
    std::fs::write(dir.join("videos.txt"), "feed.fifo 0\n").unwrap();
    fails(bin().args(["data", "check"]).arg(dir.join("videos.txt")).output().unwrap(), &["feed.fifo", "FIFO"]);
    fails(bin().arg("predict").arg(&fifo).arg("--checkpoint").arg(&ckpt).output().unwrap(), &["FIFO"]);
    assert!(start.elapsed() < Duration::from_secs(60));
}

// ---------- 8. values that would panic ----------

#[test]
fn values_that_panicked_are_refused_by_name() {
    let dir = common::tmp("values");
    let ckpt = dir.join("tiny.safetensors");
    tiny_checkpoint(&ckpt, &[]);
    let c = ckpt.to_str().unwrap();
    let run = |args: &[&str]| bin().args(args).output().unwrap();
    fails(run(&["predict", ".", "--checkpoint", c, "--crops", "2"]), &["--crops", "1, 3, 5 or 10"]);
    fails(run(&["predict", ".", "--checkpoint", c, "--crops", "0"]), &["--crops"]);
    fails(run(&["stream", ".", "--checkpoint", c, "--window", "9223372036854775808"]), &["--window"]);
    fails(run(&["stream", ".", "--checkpoint", c, "--window", "100000"]), &["--window", "at most 1024"]);
    fails(run(&["test", "--checkpoint", c, "--list", "x", "--workers", "100000"]), &["--workers", "at most"]);
    fails(run(&["synth", "--size", "4294967295", "--out", "x"]), &["--size", "at most 8192"]);
    fails(run(&["bench", "data", "--list", "x", "--size", "100000"]), &["--size"]);
    // A config asking for a loader queue of 10¹² samples.
    let cfg = dir.join("run.toml");
    std::fs::write(&cfg, "[data]\ntrain_list = \"t.txt\"\nprefetch = 1000000000000\n").unwrap();
    fails(run(&["train", "--config", cfg.to_str().unwrap(), "--out", dir.join("r").to_str().unwrap()]), &["prefetch"]);
    // Checkpoint metadata declaring 10¹² segments.
    let model = r#"{"arch":"resnet-mini","temporal":"gsm","segments":1000000000000,"classes":4,"dropout":0.0,"shift_div":8,"shift_place":"blockres","gsf_ratio":null}"#;
    let path = dir.join("segments.safetensors");
    tiny_checkpoint(&path, &[("gateshift.model", model)]);
    let f = dir.join("frames");
    std::fs::create_dir_all(&f).unwrap();
    image::RgbImage::new(40, 30).save(f.join("img_00001.png")).unwrap();
    let out = bin().arg("predict").arg(&f).args(["--template", "img_{:05d}.png", "--checkpoint"]).arg(&path).output();
    fails(out.unwrap(), &["segments 1000000000000", "segments.safetensors"]);
}

#[test]
fn ensemble_refuses_score_files_it_cannot_average() {
    let dir = common::tmp("ensemble");
    let good = scores_file(&dir);
    let case = |name: &str, text: &str, says: &[&str]| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        fails(bin().arg("ensemble").arg(&path).arg(&good).output().unwrap(), says);
    };
    case("empty.jsonl", "", &["empty.jsonl holds no score lines"]);
    case("blank.jsonl", "\n\n", &["blank.jsonl holds no score lines"]);
    case("label.jsonl", "{\"index\":0,\"label\":7,\"scores\":[0.1,0.9]}\n", &["label.jsonl:1", "label 7"]);
    case("none.jsonl", "{\"index\":0,\"label\":0,\"scores\":[]}\n", &["none.jsonl:1"]);
    case(
        "ragged.jsonl",
        "{\"index\":0,\"label\":0,\"scores\":[1,2]}\n{\"index\":1,\"label\":0,\"scores\":[1]}\n",
        &["ragged.jsonl:2"],
    );
}

/// `--weights`: the weighted mean of the files' scores (a zero weight leaves a file out);
/// weights that are not one per file, negative, not finite or all zero are refused by name.
#[test]
fn ensemble_weights_the_streams() {
    let dir = common::tmp("ensemble-weights");
    let good = scores_file(&dir);
    // Every video wrong in the second file.
    let wrong = dir.join("wrong.jsonl");
    std::fs::write(
        &wrong,
        "{\"index\":0,\"label\":1,\"scores\":[0.9,0.1]}\n{\"index\":1,\"label\":0,\"scores\":[0.2,0.8]}\n",
    )
    .unwrap();
    let run = |w: &str| {
        let out = dir.join(format!("fused{w}.jsonl"));
        let text = ok(bin()
            .arg("ensemble")
            .arg(&good)
            .arg(&wrong)
            .args(["--weights", w, "--out"])
            .arg(&out)
            .output()
            .unwrap());
        let lines = std::fs::read_to_string(&out).unwrap();
        let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
        (text, first["scores"][1].as_f64().unwrap())
    };
    let (text, s) = run("1,0");
    assert!(text.contains("top-1 100.00%") && (s - 0.9).abs() < 1e-6, "{text} {s}");
    let (text, s) = run("0,2");
    assert!(text.contains("top-1 0.00%") && (s - 0.1).abs() < 1e-6, "{text} {s}");
    let (_, s) = run("1,1.5");
    assert!((s - (0.9 + 1.5 * 0.1) / 2.5).abs() < 1e-6, "{s}");
    for (w, says) in [("1", "1 weights for 2"), ("1,-1", "-1 is not"), ("1,nan", "NaN is not"), ("0,0", "all 0")] {
        fails(bin().arg("ensemble").arg(&good).arg(&wrong).args(["--weights", w]).output().unwrap(), &[says]);
    }
}

// ---------- 9. small files that ask for huge memory ----------

#[test]
fn checkpoints_cannot_claim_more_than_they_hold() {
    let dir = common::tmp("pth-bombs");
    let f = |v: u32| (0..v).map(|i| i as f32).collect::<Vec<f32>>();
    // A stride-0 view: 2³⁰ elements read from one.
    let path = dir.join("stride0.pth");
    let spec = Spec { key: "w", storage: "0", numel: 1, offset: 0, shape: &[1 << 30], stride: &[0] };
    torch_file::write(&path, &torch_file::pickle(&[spec], None), &[("0", 1f32.to_le_bytes().to_vec())], false);
    assert!(std::fs::metadata(&path).unwrap().len() < 2048);
    let m = err(StateDict::read(&path));
    assert!(m.contains("stride0.pth") && m.contains("more than"), "{m}");
    // Eight tensors declaring 2 GiB each over tiny storages.
    let path = dir.join("declared.pth");
    let keys: Vec<String> = (0..8).map(|i| i.to_string()).collect();
    let specs: Vec<Spec> = keys
        .iter()
        .map(|k| Spec { key: k, storage: k, numel: 1 << 29, offset: 0, shape: &[1 << 29], stride: &[1] })
        .collect();
    let storages: Vec<(&str, Vec<u8>)> = keys.iter().map(|k| (k.as_str(), vec![0u8; 16])).collect();
    torch_file::write(&path, &torch_file::pickle(&specs, None), &storages, false);
    let m = err(StateDict::read(&path));
    assert!(m.contains("declared.pth") && m.contains("more than"), "{m}");
    // A deflate bomb: 64 MiB of zeros in a ~64 KiB file.
    let path = dir.join("bomb.pth");
    let spec = Spec { key: "w", storage: "0", numel: 1 << 24, offset: 0, shape: &[1 << 24], stride: &[1] };
    torch_file::write(&path, &torch_file::pickle(&[spec], None), &[("0", vec![0u8; 1 << 26])], true);
    let m = err(StateDict::read(&path));
    assert!(m.contains("bomb.pth") && m.contains("more than"), "{m}");
    // The same layouts at honest sizes read.
    let path = dir.join("honest.pth");
    torch_file::plain(&path, &[("w", &[3, 2], f(6)), ("b", &[3], f(3))], None);
    let sd = StateDict::read(&path).unwrap();
    assert_eq!(sd.tensors["w"].as_slice::<f32>().unwrap(), f(6).as_slice());
    // `module.x` beside `x`: which is meant cannot be known.
    let path = dir.join("both.pth");
    torch_file::plain(&path, &[("module.fc.bias", &[1], f(1)), ("fc.bias", &[1], f(1))], Some("state_dict"));
    let m = err(StateDict::read(&path));
    assert!(m.contains("both module.fc.bias and fc.bias"), "{m}");
}

/// A JPEG whose header claims 20000×20000 (its SOF0 patched), a PNG claiming 65500², and a
/// frame that is a symlink to /dev/zero: each refused before any pixel buffer exists.
#[test]
fn frames_cannot_claim_more_than_the_pixel_cap() {
    use gateshift::data::rawframes::read_rgb;
    let dir = common::tmp("frame-bombs");
    let mut jpeg = Vec::new();
    image::RgbImage::new(16, 16).write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline JPEG");
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0x4E, 0x20, 0x4E, 0x20]); // height, width 20000
    assert!(jpeg.len() < 1000);
    std::fs::write(dir.join("huge.jpg"), &jpeg).unwrap();
    let m = err(read_rgb(&dir.join("huge.jpg")));
    assert!(m.contains("huge.jpg") && m.contains("20000×20000"), "{m}");
    let mut png = Vec::new();
    image::RgbImage::new(4, 4).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    png[16..24].copy_from_slice(&[0, 0, 0xFF, 0xDC, 0, 0, 0xFF, 0xDC]); // IHDR 65500×65500
    std::fs::write(dir.join("huge.png"), &png).unwrap();
    let m = err(read_rgb(&dir.join("huge.png")));
    assert!(m.contains("huge.png"), "{m}");
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.jpg")).unwrap();
    let m = err(read_rgb(&dir.join("zero.jpg")));
    assert!(m.contains("zero.jpg") && m.contains("character device"), "{m}");
}

// ---------- 10. list entries are files, never protocols or options ----------

#[test]
fn list_entries_reach_ffmpeg_as_files() {
    if !common::ffmpeg() {
        return;
    }
    let dir = common::tmp("protocols");
    test_video(&dir.join("a.mp4"), 6, &[]);
    test_video(&dir.join("b.mp4"), 6, &[]);
    // Files whose names look like a protocol or an option are read as the files they are.
    std::fs::copy(dir.join("a.mp4"), dir.join("-report.mp4")).unwrap();
    std::fs::copy(dir.join("a.mp4"), dir.join("concat:a.mp4|b.mp4")).unwrap();
    std::fs::write(dir.join("ok.txt"), "-report.mp4 0\nconcat:a.mp4|b.mp4 1\n").unwrap();
    let out = bin().current_dir(&dir).args(["data", "check", "ok.txt", "--segments", "2"]).output().unwrap();
    ok(out);
    assert!(
        !std::fs::read_dir(&dir).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with("ffprobe-"))
    );
    // A protocol naming something that is no local file opens nothing.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    server.set_nonblocking(true).unwrap();
    let url = format!("http://{}/x.mp4", server.local_addr().unwrap());
    std::fs::write(dir.join("bad.txt"), format!("subfile,,start,0,end,100,,:a.mp4 0\n{url} 1\nconcat:b.mp4|a.mp4 0\n"))
        .unwrap();
    let out = bin().current_dir(&dir).args(["data", "check", "bad.txt", "--segments", "2"]).output().unwrap();
    let text = fails(out, &["bad.txt:1", "bad.txt:2", "bad.txt:3", "3 problem(s)"]);
    assert!(server.accept().is_err(), "a list entry reached the network:\n{text}");
}

// ---------- 11. state that was silently lost ----------

#[test]
fn resume_refuses_damaged_run_state() {
    let dir = common::tmp("resume-state");
    let data = toy_data(&dir);
    let run = dir.join("run");
    ok(train_cmd_epochs(&data, &run, 1).output().unwrap());
    let last = run.join("last.safetensors");
    let pristine = std::fs::read(&last).unwrap();
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let resume = || bin().arg("train").arg("--resume").arg(&run).arg("--quiet").output().unwrap();
    let rewrite = |edit: &dyn Fn(&mut StateDict)| {
        std::fs::write(&last, &pristine).unwrap();
        let mut sd = StateDict::read(&last).unwrap();
        edit(&mut sd);
        sd.write_safetensors(&last).unwrap();
    };
    // config.toml cut off after the first line of a section (the run's batch size 4 and
    // warm-up 1 would silently become the defaults 8 and 10).
    let optim = config.find("[optim]").unwrap();
    let cut = optim + config[optim..].match_indices('\n').nth(1).unwrap().0 + 1;
    std::fs::write(run.join("config.toml"), &config[..cut]).unwrap();
    fails(resume(), &["config.toml does not match", "optim.batch_size"]);
    std::fs::write(run.join("config.toml"), &config).unwrap();
    // A momentum buffer missing, or of another shape.
    let momentum = |sd: &StateDict| sd.tensors.keys().find(|k| k.starts_with("optimizer.momentum.")).unwrap().clone();
    rewrite(&|sd| {
        let k = momentum(sd);
        sd.tensors.remove(&k);
    });
    fails(resume(), &["momentum buffers of 1 parameter(s) are missing"]);
    rewrite(&|sd| {
        let k = momentum(sd);
        let n = sd.tensors[&k].num_elements();
        sd.tensors.insert(k, TensorData::new(vec![0f32; n + 1], [n + 1]));
    });
    fails(resume(), &["has shape", "its parameter has"]);
    rewrite(&|sd| {
        sd.tensors.insert("optimizer.momentum.base_model.nowhere.weight".into(), TensorData::new(vec![0f32], [1]));
    });
    fails(resume(), &["nowhere", "does not have"]);
    // The writer of a temporary checkpoint was killed: its file goes at the next start.
    std::fs::write(&last, &pristine).unwrap();
    let stale = run.join(".last.safetensors.gateshift-tmp.999999.0");
    let legacy = run.join(".best.safetensors.tmp.999999");
    std::fs::write(&legacy, b"half a checkpoint of an earlier version").unwrap();
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    let out = bin().arg("train").arg("--resume").arg(&run).args(["--quiet"]).output().unwrap();
    ok(out);
    assert!(!stale.exists() && !legacy.exists(), "a dead writer's temporary file was left");
}

#[test]
fn skip_bad_with_every_sample_bad_is_an_error() {
    let dir = common::tmp("all-bad");
    let ckpt = dir.join("tiny.safetensors");
    tiny_checkpoint(&ckpt, &[]);
    std::fs::write(dir.join("list.txt"), "gone1 8 0\ngone2 8 1\n").unwrap();
    let out = bin()
        .args(["test", "--input-size", "32", "--skip-bad", "--checkpoint"])
        .arg(&ckpt)
        .arg("--list")
        .arg(dir.join("list.txt"))
        .output()
        .unwrap();
    fails(out, &["every one of the 2 samples was unreadable"]);
}
