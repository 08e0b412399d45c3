//! Data-parallel training over MPI (`--features mpi`; `mpirun` from Open MPI, all traffic on
//! loopback): two ranks with half the batch each train to the weights of one rank with the
//! whole batch; a rank killed stops the other with an error naming it; the run resumes on
//! one rank and on two.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::ddp::{mpirun, relative_difference, train_args};
use common::run::{bin, ok, toy_data};

#[test]
fn two_ranks_train_to_the_weights_of_one_with_the_global_batch() {
    let Some(mut two) = mpirun(2) else { return };
    let dir = common::tmp("ddp-equal");
    let data = toy_data(&dir);
    let (one_run, two_run) = (dir.join("one"), dir.join("two"));
    // One rank through `--devices flex`: the data-parallel initialisation (seeded, drawn at init).
    ok(bin().args(train_args(&data, &one_run, 4, 2)).args(["--devices", "flex"]).output().unwrap());
    ok(two.args(train_args(&data, &two_run, 2, 2)).output().unwrap());
    let rel = relative_difference(&two_run.join("last.safetensors"), &one_run.join("last.safetensors"));
    println!("parity two ranks × batch 2 vs one rank × batch 4: weights rel {rel:.3e} (tol 1e-5)");
    assert!(rel <= 1e-5, "weights differ: {rel:.3e}");
    let (m1, m2) = (common::run::metrics(&one_run), common::run::metrics(&two_run));
    for (a, b) in m1.iter().zip(&m2) {
        let (l1, l2) = (a["loss"].as_f64().unwrap(), b["loss"].as_f64().unwrap());
        assert!((l1 - l2).abs() <= 1e-5 * l1.abs().max(1.0), "loss {l1} vs {l2}");
        assert_eq!(a["val_top1"], b["val_top1"], "sharded validation, summed");
        assert_eq!(a["train_top1"], b["train_top1"]);
    }
    // Only rank 0 wrote the folder: no second lock, no stray temporaries.
    let names: Vec<String> =
        std::fs::read_dir(&two_run).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.contains("gateshift-tmp")), "{names:?}");
}

/// The pids of the ranks of a job training into `out`, by rank.
fn ranks_of(out: &Path) -> Vec<(usize, u32)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmd.contains(&out.display().to_string())
            || !cmd.contains("gateshift train") && !cmd.contains("gateshift\u{20}train")
        {
            continue;
        }
        let env = String::from_utf8_lossy(&std::fs::read(e.path().join("environ")).unwrap_or_default()).into_owned();
        if let Some(rank) = env.split('\0').find_map(|kv| kv.strip_prefix("OMPI_COMM_WORLD_RANK=")) {
            found.push((rank.parse().unwrap(), pid));
        }
    }
    found.sort();
    found
}

#[test]
fn a_killed_rank_stops_the_job_and_the_run_resumes_on_one_rank_and_two() {
    let Some(mut two) = mpirun(2) else { return };
    let dir = common::tmp("ddp-kill");
    let data = toy_data(&dir);
    let run = dir.join("run");
    let mut job =
        two.args(train_args(&data, &run, 2, 12)).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    while !run.join("last.safetensors").exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "no epoch finished");
        std::thread::sleep(Duration::from_millis(100));
    }
    let ranks = ranks_of(&run);
    assert_eq!(ranks.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1], "{ranks:?}");
    let killed = Instant::now();
    assert!(Command::new("kill").args(["-9", &ranks[1].1.to_string()]).status().unwrap().success());
    let out = loop {
        if let Some(_status) = job.try_wait().unwrap() {
            break job.wait_with_output().unwrap();
        }
        assert!(killed.elapsed() < Duration::from_secs(60), "the surviving rank did not stop within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("rank 1") && text.contains("signal 9"), "the error names the rank: {text}");
    println!("rank 1 killed: the job stopped after {:.1} s", killed.elapsed().as_secs_f64());
    // The run resumes from its last checkpoint: on one rank (a copy), and on two.
    let copy = dir.join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["last.safetensors", "config.toml", "metrics.jsonl"] {
        std::fs::copy(run.join(f), copy.join(f)).unwrap();
    }
    ok(bin().args(["train", "--resume"]).arg(&copy).arg("--quiet").output().unwrap());
    ok(mpirun(2).unwrap().args(["train", "--resume"]).arg(&run).arg("--quiet").output().unwrap());
    assert_eq!(common::run::metrics(&copy).len(), 12);
    assert_eq!(common::run::metrics(&run).len(), 12);
    // Killed and resumed on two ranks: the weights of a job never interrupted.
    let full = dir.join("full");
    ok(mpirun(2).unwrap().args(train_args(&data, &full, 2, 12)).output().unwrap());
    let rel = relative_difference(&run.join("last.safetensors"), &full.join("last.safetensors"));
    assert!(rel <= 1e-6, "killed and resumed vs uninterrupted: {rel:.3e}");
}

/// Ranks started with different settings (rank 1 given another `--lr`) are refused by every
/// rank before training, instead of sharding two different orders. Rank 1's flag is added by
/// a shell on each rank rather than by MPMD (`mpirun -n 1 … : -n 1 …`), which Open MPI 5.0.7's
/// launcher (Debian 13) answers with a segmentation fault of its own.
#[test]
fn ranks_that_disagree_are_refused() {
    if mpirun(1).is_none() {
        return;
    }
    let dir = common::tmp("ddp-disagree");
    let data = toy_data(&dir);
    let mut job = Command::new("mpirun");
    job.args(["--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-n", "2", "sh", "-c"])
        .arg(r#"if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then exec "$0" "$@" --lr 0.02; else exec "$0" "$@"; fi"#)
        .arg(env!("CARGO_BIN_EXE_gateshift"))
        .args(train_args(&data, &dir.join("run"), 2, 1));
    let out = job.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && text.contains("ranks disagree"), "{text}");
    assert!(!dir.join("run/last.safetensors").exists());
}

/// Ctrl-C reaching one rank only (signals arrive at different moments): both ranks stop at
/// the same iteration, the run folder keeps the last finished epoch, and it resumes.
#[test]
fn an_interrupt_of_one_rank_stops_both_together() {
    let Some(mut two) = mpirun(2) else { return };
    let dir = common::tmp("ddp-sigint");
    let data = toy_data(&dir);
    let run = dir.join("run");
    let job = two.args(train_args(&data, &run, 2, 12)).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    while !run.join("last.safetensors").exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "no epoch finished");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ranks = ranks_of(&run);
    assert!(Command::new("kill").args(["-INT", &ranks[1].1.to_string()]).status().unwrap().success());
    let out = job.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && text.contains("interrupted"), "{text}");
    assert!(!text.contains("signal 9") && !text.contains("signal 15"), "a rank was killed instead of stopping: {text}");
    let done = common::run::metrics(&run).len();
    assert!(done < 12, "{done}");
    ok(mpirun(2).unwrap().args(["train", "--resume"]).arg(&run).arg("--quiet").output().unwrap());
    assert_eq!(common::run::metrics(&run).len(), 12);
}

/// A training list that does not divide by the ranks (21 clips, 2 ranks, batch 2: unpadded,
/// 6 batches on one rank and 5 on the other): the shards are padded to the same length, so no
/// rank waits for a step the other never takes.
#[test]
fn uneven_lists_do_not_hang() {
    let Some(mut two) = mpirun(2) else { return };
    let dir = common::tmp("ddp-uneven");
    let data = toy_data(&dir);
    let lines: Vec<String> =
        std::fs::read_to_string(data.join("train.txt")).unwrap().lines().map(String::from).collect();
    assert_eq!(lines.len(), 24);
    std::fs::write(data.join("train.txt"), lines[..21].join("\n") + "\n").unwrap();
    let mut job = two
        .args(train_args(&data, &dir.join("run"), 2, 1))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while job.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = job.kill();
            panic!("two ranks on 21 clips hung");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = job.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(common::run::metrics(&dir.join("run")).len(), 1);
}
