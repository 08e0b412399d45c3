//! Ranks on the devices of one process: `train --devices D1,D2,…` (the GPUs of one machine,
//! or several flex workers, which is how it is tested on a CPU) and `bench model --devices`.
//! Each device is one rank on its own thread, with its own model copy, loader and autodiff
//! graph; the ranks sum through shared memory (`world_local.rs`) exactly as MPI ranks do, so
//! the run is the one `mpirun -n N` gives with one device per process.
//!
//! On GPUs of one kind (`cuda:N`, `tch-cuda:N`) the gradients are summed by NCCL on the
//! devices (`ops::all_reduce::device`); the metrics and the failure bookkeeping stay here.
//!
//! A rank that fails (an error, a panic) leaves the group: the others stop at their next
//! collective with an error naming it, and the run fails with the first rank's own error. A
//! rank that hangs makes the others fail after the collective timeout; the process then
//! ends without waiting for it.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Result, anyhow};

use crate::ops::all_reduce::device::Plan;
use crate::train::world::World;
use crate::train::world_local::{Group, Member};

/// Stack of a rank's thread: the main thread's 8 MiB, as deep backbones' graphs are built
/// and dropped recursively.
const STACK: usize = 8 << 20;

/// How long the other ranks get to stop once one has failed, before the process reports the
/// failure without them (a rank hung inside a kernel never returns).
const GRACE: Duration = Duration::from_secs(30);

/// Runs `rank(r, device, world)` for each of the devices `names` on its own thread, the
/// ranks of one group; each rank's value in rank order, or the first failure's error.
pub fn on_devices<T, F>(names: &[String], timeout: Duration, rank: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize, &str, World) -> Result<T> + Send + Sync + 'static,
{
    // Every device opens before any rank starts (a typo fails here, naming it).
    let devices = names
        .iter()
        .map(|name| crate::backend::device(name).map_err(|e| anyhow!("--devices {}: {e:#}", names.join(","))))
        .collect::<Result<Vec<_>>>()?;
    let plan = Plan::new(&devices).map_err(|e| anyhow!("--devices {}: {e:#}", names.join(",")))?;
    let group = Group::new(names.to_vec(), timeout);
    let rank = Arc::new(rank);
    let (tx, rx) = mpsc::channel();
    for (r, name) in names.iter().enumerate() {
        let (group, tx, name, rank, plan) = (group.clone(), tx.clone(), name.clone(), rank.clone(), plan.clone());
        std::thread::Builder::new()
            .name(format!("rank {r}"))
            .stack_size(STACK)
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| {
                    let device_sum = plan.map(|p| p.join(r)).transpose()?;
                    rank(r, &name, World::local(Member { rank: r, group: group.clone() }, device_sum))
                });
                let result =
                    std::panic::catch_unwind(run).unwrap_or_else(|p| Err(anyhow!("panicked: {}", panic_text(&*p))));
                // Leaving, however the run ended, wakes any rank waiting for this one.
                group.leave(r, &result.as_ref().map_or_else(|e| format!("{e:#}"), |_| "its run ended".into()));
                let _ = tx.send((r, result));
            })
            .map_err(|e| anyhow!("starting the thread of rank {r}: {e}"))?;
    }
    drop(tx);
    collect(names, &group, &rx)
}

/// The ranks' results in rank order; otherwise the error of the rank that failed first (the
/// others' errors only name it).
fn collect<T>(names: &[String], group: &Group, rx: &mpsc::Receiver<(usize, Result<T>)>) -> Result<Vec<T>> {
    let mut results: Vec<Option<Result<T>>> = names.iter().map(|_| None).collect();
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
        None => Ok(results.into_iter().map(|r| r.expect("every rank answered").expect("no rank failed")).collect()),
    }
}

/// The message of a caught panic.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}
