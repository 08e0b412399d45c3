//! `train --devices D1,D2,…`: data-parallel training on several devices of one process
//! (the GPUs of one machine; or several flex workers, which is how it is tested on a CPU).
//! Each device is one rank on its own thread, with its own model copy, loader and autodiff
//! graph; the ranks sum through shared memory (`world_local.rs`) exactly as MPI ranks do,
//! so the run is the one `mpirun -n N` gives with one device per process.
//!
//! A rank that fails (an error, a panic) leaves the group: the others stop at their next
//! collective with an error naming it, and the run fails with the first rank's own error. A
//! rank that hangs makes the others fail after `collective_timeout_s`; the process then
//! ends without waiting for it.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Result, anyhow};

use crate::train::config::TrainConfig;
use crate::train::run_dir::Start;
use crate::train::trainer::{Outcome, train_rank};
use crate::train::world::World;
use crate::train::world_local::{Group, Member};

/// Stack of a rank's thread: the main thread's 8 MiB, as deep backbones' graphs are built
/// and dropped recursively.
const STACK: usize = 8 << 20;

/// How long the other ranks get to stop once one has failed, before the process reports the
/// failure without them (a rank hung inside a kernel never returns).
const GRACE: Duration = Duration::from_secs(30);

/// Trains `cfg` on each of `cfg.devices`, one rank per device; rank 0's outcome.
pub fn train_on_devices(cfg: &TrainConfig, dir: &Path, start: Start, show_progress: bool) -> Result<Outcome> {
    let names = cfg.devices.clone();
    for name in &names {
        // Every device opens before any rank starts (a typo fails here, naming it).
        crate::backend::device(name).map_err(|e| anyhow!("--devices {}: {e:#}", names.join(",")))?;
    }
    if show_progress {
        let global = cfg.optim.batch_size * names.len();
        eprintln!("data-parallel on {} devices ({}): global batch {global}", names.len(), names.join(", "));
    }
    let group = Group::new(names.clone(), Duration::from_secs(cfg.collective_timeout_s));
    let cfg = Arc::new(cfg.clone());
    let (tx, rx) = mpsc::channel();
    for (rank, name) in names.iter().enumerate() {
        let (cfg, group, tx, name, dir) = (cfg.clone(), group.clone(), tx.clone(), name.clone(), dir.to_path_buf());
        std::thread::Builder::new()
            .name(format!("rank {rank}"))
            .stack_size(STACK)
            .spawn(move || {
                let result = run_rank(&cfg, &dir, start, show_progress && rank == 0, &name, rank, &group);
                let _ = tx.send((rank, result));
            })
            .map_err(|e| anyhow!("starting the thread of rank {rank}: {e}"))?;
    }
    drop(tx);
    collect(&names, &group, &rx)
}

/// One rank's run; it leaves the group when it ends, however it ends.
fn run_rank(
    cfg: &TrainConfig,
    dir: &Path,
    start: Start,
    show: bool,
    name: &str,
    rank: usize,
    group: &Arc<Group>,
) -> Result<Outcome> {
    let world = World::local(Member { rank, group: group.clone() });
    let run = std::panic::AssertUnwindSafe(|| train_rank(cfg, dir, start, show, name, world));
    let result = std::panic::catch_unwind(run).unwrap_or_else(|p| Err(anyhow!("panicked: {}", panic_text(&*p))));
    let why = match &result {
        Ok(_) => "its run ended".to_string(),
        Err(e) => format!("{e:#}"),
    };
    group.leave(rank, &why);
    result
}

/// The ranks' results: rank 0's outcome if all succeeded; otherwise the error of the rank
/// that failed first (the others' errors only name it).
fn collect(names: &[String], group: &Group, rx: &mpsc::Receiver<(usize, Result<Outcome>)>) -> Result<Outcome> {
    let mut results: Vec<Option<Result<Outcome>>> = names.iter().map(|_| None).collect();
    let mut failed = false;
    while results.iter().any(Option::is_none) {
        let next = if failed { rx.recv_timeout(GRACE).ok() } else { rx.recv().ok() };
        let Some((rank, result)) = next else { break };
        failed |= result.is_err();
        results[rank] = Some(result);
    }
    let first = group.first_to_leave().map(|(rank, _)| rank);
    let culprit = first.filter(|&r| matches!(results[r], Some(Err(_)))).or_else(|| {
        results.iter().position(|r| matches!(r, Some(Err(_)))).or_else(|| results.iter().position(Option::is_none))
    });
    match culprit {
        Some(rank) => match results[rank].take() {
            Some(Err(e)) => Err(e.context(format!("rank {rank} ({})", names[rank]))),
            _ => Err(anyhow!(
                "rank {rank} ({}) did not stop within {} s of another's failure",
                names[rank],
                GRACE.as_secs()
            )),
        },
        None => results[0].take().expect("every rank answered"),
    }
}

/// The message of a caught panic.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}
