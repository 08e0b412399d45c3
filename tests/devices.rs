//! Data-parallel training on several devices of one process (`train --devices flex,flex`:
//! two ranks on threads, summing in shared memory): the weights of one device with the
//! global batch; synchronised BatchNorm (`--sync-bn`) equal to one device's BatchNorm, per-
//! device BatchNorm equal to MPI's ranks; a rank that fails stops the other naming it; a
//! job killed with SIGKILL resumes on one device and on two.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::ddp::{relative_difference, relative_difference_of, train_args};
use common::run::{bin, metrics, ok, toy_data};

/// `train_args` on `devices` flex workers (at least one, through `--devices`), BatchNorm
/// frozen or (`bn_training`) training, with `extra` flags.
fn args(data: &Path, out: &Path, batch: usize, epochs: usize, devices: usize, bn_training: bool) -> Vec<String> {
    let mut a = train_args(data, out, batch, epochs);
    if bn_training {
        a.retain(|f| f != "--freeze-bn");
    }
    // One device goes through `--devices flex` too: the same (seeded, eager) initialisation.
    a.extend(["--devices".into(), vec!["flex"; devices.max(1)].join(",")]);
    a
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn two_devices_train_to_the_weights_of_one_with_the_global_batch() {
    let dir = common::tmp("devices-equal");
    let data = toy_data(&dir);
    let (one, two) = (dir.join("one"), dir.join("two"));
    ok(bin().args(args(&data, &one, 4, 2, 0, false)).output().unwrap());
    ok(bin().args(args(&data, &two, 2, 2, 2, false)).output().unwrap());
    let rel = relative_difference(&two.join("last.safetensors"), &one.join("last.safetensors"));
    println!("parity two devices × batch 2 vs one × batch 4, BN frozen: weights rel {rel:.3e} (tol 1e-5)");
    assert!(rel <= 1e-5, "weights differ: {rel:.3e}");
    for (a, b) in metrics(&one).iter().zip(&metrics(&two)) {
        let (l1, l2) = (a["loss"].as_f64().unwrap(), b["loss"].as_f64().unwrap());
        assert!((l1 - l2).abs() <= 1e-5 * l1.abs().max(1.0), "loss {l1} vs {l2}");
        assert_eq!((&a["val_top1"], &a["train_top1"]), (&b["val_top1"], &b["train_top1"]));
    }
    let stored = std::fs::read_to_string(two.join("config.toml")).unwrap();
    assert!(
        stored.contains("devices = [\n    \"flex\",\n    \"flex\",\n]")
            || stored.contains("devices = [\"flex\", \"flex\"]"),
        "{stored}"
    );
}

/// BatchNorm training: with `--sync-bn` two devices give one device's weights (statistics
/// over the global batch, forward and backward); without, each device normalises its own half
/// — the weights differ, and equal those of two MPI ranks (DDP's per-device BatchNorm).
///
/// Over two SGD steps: the two runs differ by float rounding (the statistics are summed in
/// another order). Over longer runs such a difference can be amplified — likely by a discrete
/// choice it flips (a max-pool's maximum between near-equal values, a ReLU's sign) — far past
/// rounding: after 12 steps 0.12 relative in a fresh Debian 13 (glibc 2.41), 2e-6 here.
#[test]
fn synchronised_batch_norm_is_the_global_batch_and_per_device_is_ddp() {
    let dir = common::tmp("devices-syncbn");
    let data = first_clips(&toy_data(&dir), 8);
    let (one, synced, local) = (dir.join("one"), dir.join("synced"), dir.join("local"));
    ok(bin().args(args(&data, &one, 4, 1, 0, true)).output().unwrap());
    let mut a = args(&data, &synced, 2, 1, 2, true);
    a.push("--sync-bn".into());
    ok(bin().args(a).output().unwrap());
    ok(bin().args(args(&data, &local, 2, 1, 2, true)).output().unwrap());
    let one_w = one.join("last.safetensors");
    check_synced(&synced.join("last.safetensors"), &one_w, "two devices");
    let apart = relative_difference(&local.join("last.safetensors"), &one_w);
    println!("per-device BN vs one device: weights rel {apart:.3e} (differs)");
    assert!(apart > 1e-4, "per-device BN should differ from the global batch's: {apart:.3e}");
}

/// A copy of `data`'s lists holding its first `n` training clips (and every validation clip),
/// with absolute paths, in a folder beside it.
fn first_clips(data: &Path, n: usize) -> std::path::PathBuf {
    let short = data.with_file_name("first_clips");
    std::fs::create_dir_all(&short).unwrap();
    for (name, keep) in [("train.txt", n), ("val.txt", usize::MAX)] {
        let text = std::fs::read_to_string(data.join(name)).unwrap();
        let lines: Vec<String> = text.lines().take(keep).map(|l| format!("{}/{l}", data.display())).collect();
        std::fs::write(short.join(name), lines.join("\n") + "\n").unwrap();
    }
    short
}

/// A `--sync-bn` run against one device's: the weights within 1e-5 relative; the optimizer's
/// momentum (a sum of gradients, where the fused BatchNorm of one device and the composed,
/// synchronised one round their float32 sums differently) within 1e-4.
fn check_synced(synced: &Path, one: &Path, what: &str) {
    let weights = relative_difference_of(synced, one, |n| !n.starts_with("optimizer."));
    let momentum = relative_difference_of(synced, one, |n| n.starts_with("optimizer."));
    println!(
        "parity --sync-bn {what} × batch 2 vs one device × 4, BN training: weights rel {weights:.3e} (tol 1e-5), momentum rel {momentum:.3e} (tol 1e-4)"
    );
    assert!(
        weights <= 1e-5 && momentum <= 1e-4,
        "synchronised BN differs from one device: {weights:.3e} / {momentum:.3e}"
    );
}

/// Waits for `job` at most `limit`; its output, or a panic (the job killed) if it hangs.
fn wait(mut job: std::process::Child, limit: Duration, what: &str) -> std::process::Output {
    let started = Instant::now();
    while job.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = job.kill();
            panic!("{what}: still running after {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    job.wait_with_output().unwrap()
}

/// A clip that disappears after the first epoch: the rank whose shard holds it fails, the
/// other stops at its next sum with an error naming that rank — no hang, nothing half
/// written; the run then resumes from its last epoch on one device and on two.
#[test]
fn a_failing_rank_stops_the_other_and_the_run_resumes() {
    let dir = common::tmp("devices-fail");
    let data = toy_data(&dir);
    let run = dir.join("run");
    let job =
        bin().args(args(&data, &run, 2, 40, 2, false)).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    while !run.join("last.safetensors").exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "no epoch finished");
        std::thread::sleep(Duration::from_millis(50));
    }
    let list = std::fs::read_to_string(data.join("train.txt")).unwrap();
    let clip = data.join(list.lines().next().unwrap().split_whitespace().next().unwrap());
    let moved = dir.join("moved");
    std::fs::rename(&clip, &moved).unwrap();
    let removed = Instant::now();
    let out = wait(job, Duration::from_secs(60), "a rank failed");
    let t = text(&out);
    println!(
        "a rank failed: the job stopped {:.1} s after the clip was removed:\n{t}",
        removed.elapsed().as_secs_f64()
    );
    assert!(!out.status.success(), "{t}");
    let name = clip.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        t.contains("(flex)") && t.contains("rank ") && t.contains(&name),
        "the error names the rank and the clip: {t}"
    );
    assert!(!t.contains("panicked"), "{t}");
    std::fs::rename(&moved, &clip).unwrap();
    let done = metrics(&run).len();
    assert!((1..40).contains(&done), "{done}");
    // Resumes on one device (a copy) and on two.
    let copy = dir.join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["last.safetensors", "config.toml", "metrics.jsonl"] {
        std::fs::copy(run.join(f), copy.join(f)).unwrap();
    }
    let short = |d: &Path| vec!["train".to_string(), "--resume".into(), d.display().to_string(), "--quiet".into()];
    let mut one = short(&copy);
    one.extend(["--devices".into(), "flex".into()]);
    ok(bin().args(one).output().unwrap());
    let mut two = short(&run);
    two.extend(["--devices".into(), "flex,flex".into()]);
    ok(bin().args(two).output().unwrap());
    assert_eq!((metrics(&copy).len(), metrics(&run).len()), (40, 40));
}

/// SIGKILL of the whole two-device job after an epoch: `--resume` on two devices gives the
/// weights of a job never interrupted.
#[test]
fn a_killed_job_resumes_exactly() {
    let dir = common::tmp("devices-kill");
    let data = toy_data(&dir);
    let (run, full) = (dir.join("run"), dir.join("full"));
    let mut job =
        bin().args(args(&data, &run, 2, 4, 2, false)).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let started = Instant::now();
    while !run.join("last.safetensors").exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "no epoch finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    job.kill().unwrap();
    job.wait().unwrap();
    let done = metrics(&run).len();
    if done < 4 {
        ok(bin().args(["train", "--resume"]).arg(&run).args(["--quiet", "--devices", "flex,flex"]).output().unwrap());
    }
    ok(bin().args(args(&data, &full, 2, 4, 2, false)).output().unwrap());
    let rel = relative_difference(&run.join("last.safetensors"), &full.join("last.safetensors"));
    println!("killed after epoch {done} and resumed vs uninterrupted: weights rel {rel:.3e}");
    assert!(rel <= 1e-6, "{rel:.3e}");
}

/// Refused before any rank starts: a device that does not open, and `--devices` under an MPI
/// launcher.
#[test]
fn bad_device_lists_are_refused() {
    let dir = common::tmp("devices-bad");
    let data = toy_data(&dir);
    let mut a = train_args(&data, &dir.join("run"), 2, 1);
    a.extend(["--devices".into(), "flex,warp9".into()]);
    let out = bin().args(&a).output().unwrap();
    assert!(!out.status.success() && text(&out).contains("warp9"), "{}", text(&out));
    let out = bin().args(&a).env("OMPI_COMM_WORLD_SIZE", "2").output().unwrap();
    assert!(!out.status.success() && text(&out).contains("--devices and an MPI launcher"), "{}", text(&out));
}

/// `bench model --devices`: the throughput of one device and of all, and the scaling.
#[test]
fn bench_reports_the_scaling_of_devices() {
    let out = bin()
        .args(["bench", "model", "--arch", "resnet-mini", "--segments", "4", "--batch", "1", "--size", "32"])
        .args(["--mode", "train", "--warmup", "1", "--iters", "2", "--devices", "flex,flex"])
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    println!("{t}");
    let efficiency =
        t.split("scaling efficiency ").nth(1).and_then(|r| r.split('%').next()).and_then(|v| v.parse::<f64>().ok());
    assert!(efficiency.is_some_and(|e| e > 0.0 && e.is_finite()), "{t}");
    assert!(t.contains("one device") && t.contains("2 devices") && t.contains("per device"), "{t}");
}
