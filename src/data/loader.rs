//! The parallel loader: worker threads decode and augment samples, a bounded window of
//! samples is in flight, and batches come out in order. Every sample draws its randomness
//! from its own RNG seeded by (seed, epoch, position), so batches are identical for any
//! worker count. A sample that fails is an error — or, with `skip_bad`, a counted skip.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::dataset::{Clip, ClipDataset};
use crate::limits;

/// One assembled batch: `(batch, views, segments·3, H, W)` floats in `data`.
#[derive(Clone, Debug)]
pub struct Batch {
    pub data: Vec<f32>,
    pub labels: Vec<usize>,
    /// The second head's labels (EPIC-Kitchens' nouns), for samples that have one.
    pub nouns: Vec<usize>,
    /// Dataset indices of the samples.
    pub indices: Vec<usize>,
    /// Views per sample (test crops × clips; 1 in training).
    pub views: usize,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// The RNG of the sample at `position` of epoch `epoch`.
pub fn sample_rng(seed: u64, epoch: usize, position: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(((epoch as u64) << 32) | position as u64);
    rng
}

/// Sample `index` (at `pos` in the epoch's order) with its own RNG. A panic while loading it
/// (a bug, or a file no check foresaw) becomes this sample's error, naming it, instead of a
/// worker that silently dies and leaves the batch waiting forever.
fn load(ds: &ClipDataset, index: usize, seed: u64, epoch: usize, pos: usize) -> Result<Clip> {
    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut rng = sample_rng(seed, epoch, pos);
        ds.get(index, &mut rng)
    }));
    attempt.unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(anyhow::anyhow!("loading {} failed inside gateshift (a bug, please report it): {why}", ds.describe(index)))
    })
}

/// (position in this loader's order, position whose RNG the sample draws from, index).
type Job = (usize, usize, usize);
type Done = (usize, usize, Result<Clip>);

/// Iterates over one epoch's batches.
pub struct Loader {
    order: Vec<usize>,
    batch_size: usize,
    skip_bad: bool,
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    window: usize,
    issued: usize,
    next: usize,
    ready: BTreeMap<usize, (usize, Result<Clip>)>,
    /// Samples handed out in batches so far.
    yielded: usize,
    /// Samples skipped under `skip_bad`, with their errors.
    pub skipped: Vec<String>,
    /// A shard of a global order: local position p is global position `offset + step·p`.
    shard: (usize, usize),
}

impl Loader {
    /// Loads `order` (dataset indices) in batches of `batch_size` with `workers` threads;
    /// at most `prefetch` samples beyond the current one are in flight. Counts over
    /// [`crate::limits`] are refused, and a worker thread that cannot start is an error.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dataset: Arc<ClipDataset>,
        order: Vec<usize>,
        batch_size: usize,
        workers: usize,
        prefetch: usize,
        seed: u64,
        epoch: usize,
        skip_bad: bool,
    ) -> Result<Self> {
        let workers = limits::at_most("loader workers", workers, limits::MAX_WORKERS)?.max(1);
        let prefetch = limits::at_most("prefetch", prefetch, limits::MAX_PREFETCH)?.max(1);
        let batch_size = limits::at_most("batch size", batch_size, limits::MAX_BATCH)?.max(1);
        let (jobs_tx, jobs_rx) = unbounded::<Job>();
        let (done_tx, done_rx) = bounded::<Done>(prefetch + workers);
        let mut handles = Vec::with_capacity(workers);
        for k in 0..workers {
            let (rx, tx, ds) = (jobs_rx.clone(), done_tx.clone(), dataset.clone());
            let worker = std::thread::Builder::new().name(format!("loader-{k}")).spawn(move || {
                while let Ok((pos, rng_pos, index)) = rx.recv() {
                    let r = load(&ds, index, seed, epoch, rng_pos);
                    if tx.send((pos, index, r)).is_err() {
                        break;
                    }
                }
            });
            handles.push(worker.with_context(|| format!("starting loader worker {} of {workers}", k + 1))?);
        }
        Ok(Self {
            order,
            batch_size,
            skip_bad,
            jobs: Some(jobs_tx),
            done: done_rx,
            workers: handles,
            window: prefetch,
            issued: 0,
            next: 0,
            ready: BTreeMap::new(),
            yielded: 0,
            skipped: Vec::new(),
            shard: (0, 1),
        })
    }

    /// This loader's order is rank `rank`'s shard (every `size`-th sample from `rank`) of a
    /// global order: each sample draws its augmentation from the RNG of its global position,
    /// so a sample is augmented alike whatever the number of ranks.
    pub fn sharded(mut self, rank: usize, size: usize) -> Self {
        self.shard = (rank, size.max(1));
        self
    }

    /// Batches in this epoch (the last one may be short).
    pub fn num_batches(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }

    fn issue(&mut self) {
        let Some(jobs) = &self.jobs else { return };
        while self.issued < self.order.len() && self.issued < self.next + self.window {
            let global = self.shard.0 + self.shard.1 * self.issued;
            let _ = jobs.send((self.issued, global, self.order[self.issued]));
            self.issued += 1;
        }
    }

    /// The next sample in order.
    fn next_sample(&mut self) -> Option<(usize, Result<Clip>)> {
        if self.next >= self.order.len() {
            return None;
        }
        self.issue();
        while !self.ready.contains_key(&self.next) {
            match self.done.recv() {
                Ok((pos, index, r)) => {
                    self.ready.insert(pos, (index, r));
                }
                Err(_) => return Some((self.order[self.next], Err(anyhow::anyhow!("loader workers stopped")))),
            }
        }
        let item = self.ready.remove(&self.next);
        self.next += 1;
        item
    }

    /// The next batch; `None` at the end of the epoch.
    pub fn next_batch(&mut self) -> Option<Result<Batch>> {
        let mut batch =
            Batch { data: Vec::new(), labels: Vec::new(), nouns: Vec::new(), indices: Vec::new(), views: 0 };
        while batch.len() < self.batch_size {
            let Some((index, r)) = self.next_sample() else { break };
            match r {
                Ok(clip) => {
                    if batch.views != 0 && batch.views != clip.views {
                        return Some(Err(anyhow::anyhow!(
                            "sample {index} has {} views, batch has {}",
                            clip.views,
                            batch.views
                        )));
                    }
                    batch.views = clip.views;
                    if batch.data.is_empty() {
                        // Reserve the whole batch once and take the first clip without a copy.
                        let mut data = clip.data;
                        let rest = (self.batch_size - 1).min(self.order.len() - self.next);
                        data.reserve(data.len() * rest);
                        batch.data = data;
                    } else {
                        batch.data.extend_from_slice(&clip.data);
                    }
                    batch.labels.push(clip.label);
                    batch.nouns.extend(clip.noun);
                    batch.indices.push(index);
                }
                Err(e) if self.skip_bad => self.skipped.push(format!("{e:#}")),
                Err(e) => return Some(Err(e)),
            }
        }
        self.yielded += batch.len();
        if !batch.is_empty() {
            return Some(Ok(batch));
        }
        if self.yielded == 0 && !self.skipped.is_empty() {
            return Some(Err(anyhow::anyhow!(
                "every one of the {} samples was unreadable (--skip-bad skips some, not all); the first: {}",
                self.skipped.len(),
                self.skipped[0]
            )));
        }
        None
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.jobs = None;
        // Unblock workers waiting to send, then join them.
        while self.done.try_recv().is_ok() {}
        for w in self.workers.drain(..) {
            while !w.is_finished() {
                while self.done.try_recv().is_ok() {}
                std::thread::yield_now();
            }
            let _ = w.join();
        }
    }
}

/// Prints the samples skipped under `--skip-bad` (first 20 in full).
pub fn report_skips(skipped: &[String]) {
    if skipped.is_empty() {
        return;
    }
    eprintln!("skipped {} unreadable sample(s) (--skip-bad):", skipped.len());
    for s in skipped.iter().take(20) {
        eprintln!("  {s}");
    }
    if skipped.len() > 20 {
        eprintln!("  ... and {} more", skipped.len() - 20);
    }
}
