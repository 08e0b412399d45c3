//! The training loop and its run folder:
//! `config.toml` (resolved), `last.safetensors` / `best.safetensors` (weights + optimizer
//! state + trainer state, written atomically), the logs of `train::log` (`metrics.jsonl`,
//! TensorBoard events, `train.log`), `curves.png`. Every random choice derives from (seed, epoch, position), so a run resumed
//! from `last` continues exactly as if it had never stopped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::data::list::{List, read_class_names};
use crate::data::transform::FlipMap;
use crate::data::{ClipDataset, Loader, Mode, Pipeline};
use crate::infer::{EvalOptions, evaluate};
use crate::model::{ModelConfig, Recognizer};
use crate::report::progress::progress_bar;
use crate::train::config::TrainConfig;
use crate::train::guard;
use crate::train::log::RunLog;
use crate::train::metrics::Accuracy;
use crate::train::optim::{batch_labels, heads_loss};
use crate::train::run_checkpoint::{initialise, resume, run_checkpoint};
use crate::train::run_dir::{RunDir, Start};
use crate::train::schedule::rate;
use crate::train::seeds::{init_model, mix};
use crate::train::sgd::Sgd;
use crate::train::world::World;

pub use crate::report::RunState;
pub use crate::report::{EpochMetrics, StepMetrics};

/// What a finished (or stopped) run reports.
pub struct Outcome {
    pub state: RunState,
    pub model_config: ModelConfig,
    pub dir: PathBuf,
    pub interrupted: bool,
}

/// Set by a SIGINT handler: stop after the current iteration, save, and exit.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// The datasets of a run.
pub struct RunData {
    pub train: Arc<ClipDataset>,
    pub val: Option<Arc<ClipDataset>>,
    pub classes: usize,
    pub class_names: Option<Vec<String>>,
}

fn list_root(cfg: &TrainConfig, list: &Path) -> PathBuf {
    cfg.data.root.clone().unwrap_or_else(|| list.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// Reads the lists and class names and builds the training and validation pipelines.
pub fn load_data(cfg: &TrainConfig) -> Result<RunData> {
    let d = &cfg.data;
    let class_names = d.class_names.as_deref().map(read_class_names).transpose()?;
    let known = (cfg.model.net.classes > 0).then_some(cfg.model.net.classes).or(class_names.as_ref().map(Vec::len));
    let train = List::read(&d.train_list, Some(&list_root(cfg, &d.train_list)), d.list_format, known)?;
    let val = d.val_list.as_ref().map(|v| List::read(v, Some(&list_root(cfg, v)), d.list_format, known)).transpose()?;
    let classes = known.unwrap_or_else(|| train.num_classes().max(val.as_ref().map_or(0, List::num_classes)));
    for list in std::iter::once(&train).chain(&val) {
        list.check_nouns(cfg.model.net.noun_classes)?;
    }
    let spec = cfg.model.net.arch.input();
    let base = Pipeline {
        spec,
        size: cfg.input_size(),
        segments: cfg.model.net.segments,
        sampling: d.sampling,
        interval: d.interval,
        mode: Mode::Train { scale: cfg.scale_size(), flip: d.flip, flip_map: FlipMap::parse(&d.flip_swap, classes)? },
        order: Default::default(),
        input: cfg.model.net.input(),
        live_flow: Default::default(),
    };
    if cfg.model.net.modality == crate::model::Modality::Flow {
        for list in std::iter::once(&train).chain(&val) {
            if let Some(e) = list.entries.iter().find(|e| e.is_video) {
                bail!(
                    "{}: {} is a video; a flow network trains on flow fields computed once: run \
                     `gateshift data extract-flow {}` and train on the list it writes",
                    e.origin(&list.file),
                    e.path.display(),
                    list.file.display()
                );
            }
        }
    }
    let naming = cfg.naming()?;
    let val = val.map(|list| {
        let pipeline = Pipeline {
            mode: Mode::Test { scale: cfg.scale_size(), crops: cfg.val_crops, clips: 1 },
            order: cfg.val_order,
            ..base.clone()
        };
        Arc::new(ClipDataset { list, naming: naming.clone(), pipeline })
    });
    Ok(RunData { train: Arc::new(ClipDataset { list: train, naming, pipeline: base }), val, classes, class_names })
}

/// Trains `cfg` into the folder `dir`: a new run, or (`Start::Resume`) the continuation of
/// the one there. The folder is locked for the whole run. With `devices`, one rank per
/// device in this process (`train::devices`); started by `mpirun`, this process's rank.
pub fn train(cfg: &TrainConfig, dir: &Path, start: Start, show_progress: bool) -> Result<Outcome> {
    cfg.validate()?;
    if !cfg.devices.is_empty() {
        if World::launcher_size() > 1 {
            bail!(
                "--devices and an MPI launcher together: start one process per device (mpirun -n N, no --devices) or one process with --devices"
            );
        }
        return train_on_devices(cfg, dir, start, show_progress);
    }
    let backend = World::rank_backend(&cfg.backend, |v| std::env::var(v).ok());
    train_rank(cfg, dir, start, show_progress, &backend, World::from_launcher()?)
}

/// `train --devices`: one rank per device on threads of this process (`train::devices`);
/// rank 0's outcome.
fn train_on_devices(cfg: &TrainConfig, dir: &Path, start: Start, show_progress: bool) -> Result<Outcome> {
    let names = cfg.devices.clone();
    if show_progress {
        let global = cfg.optim.batch_size * names.len();
        eprintln!("data-parallel on {} devices ({}): global batch {global}", names.len(), names.join(", "));
    }
    let (shared, dir) = (Arc::new(cfg.clone()), dir.to_path_buf());
    let timeout = std::time::Duration::from_secs(cfg.collective_timeout_s);
    let mut outcomes = crate::train::devices::on_devices(&names, timeout, move |rank, name, world| {
        train_rank(&shared, &dir, start, show_progress && rank == 0, name, world)
    })?;
    Ok(outcomes.swap_remove(0))
}

/// One rank's run on the device `backend`: rank 0 alone owns and writes the run folder.
pub fn train_rank(
    cfg: &TrainConfig,
    dir: &Path,
    start: Start,
    show_progress: bool,
    backend: &str,
    world: World,
) -> Result<Outcome> {
    let data = load_data(cfg)?;
    let model_cfg = cfg.model_config(data.classes);
    model_cfg.check()?;
    let device = crate::backend::device(backend)?.autodiff();
    if backend.starts_with("wgpu") && world.is_root() {
        eprintln!(
            "warning: on wgpu, burn 0.22.1's convolution weight gradient is wrong for large \
             batch × position reductions (docs/FIDELITY.md); train on flex, tch or tch-cuda"
        );
    }
    if world.size > 1 && cfg.data.skip_bad {
        // A skipped sample shortens one rank's epoch by a batch: its peers would wait for it.
        bail!("data.skip_bad is not supported with several ranks: run `gateshift data check` and fix the list");
    }
    // Synchronised BatchNorm: the BatchNorms of this thread's model sum over the ranks.
    let _sync_bn = world.engine().filter(|_| cfg.optim.sync_bn).map(crate::ops::all_reduce::scope);
    let _lock = if world.is_root() { Some(RunDir::open(dir, start)?) } else { None };
    let mut model = init_model(&model_cfg, &device, cfg.seed, world.size > 1 || !cfg.devices.is_empty());
    let mut sgd = Sgd::new(cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.policy);
    let last = dir.join("last.safetensors");
    let resumed = start == Start::Resume;
    let mut state = if resumed {
        resume(&last, cfg, &model_cfg, &mut model, &mut sgd, &device)?
    } else {
        initialise(cfg, &model_cfg, &mut model)?;
        RunState::default()
    };
    let show_progress = show_progress && world.is_root();
    let mut log = RunLog::silent(show_progress);
    if world.is_root() {
        log = RunLog::open(dir, &state, resumed, show_progress)?;
        let (done, ranks) = (state.epochs_done, world.size);
        log.say(&match resumed {
            true => format!("resuming {} after epoch {done} on {ranks} rank(s)", dir.display()),
            false => format!("training {} into {} on {ranks} rank(s)", describe_model(&model_cfg), dir.display()),
        });
    }
    let mut model = world.broadcast_parameters(model)?;
    if world.is_root() {
        crate::io::write_atomic(&dir.join("config.toml"), cfg.to_toml()?.as_bytes())?;
    }
    world.check_agree("the configuration, the lists and the starting epoch", &fingerprint(cfg, &data, &state))?;
    state.input_size = cfg.input_size();
    state.scale_size = cfg.scale_size();
    if cfg.optim.partial_bn || cfg.optim.freeze_bn {
        let (m, frozen) = crate::train::partial_bn::partial_bn(model, cfg.optim.freeze_bn);
        model = m;
        sgd.frozen = frozen;
    }
    let mut run = Run { cfg, data, model_cfg, device, model: Some(model), sgd, dir, last, show_progress, world, log };
    let interrupted = match run.epochs(&mut state) {
        Ok(interrupted) => interrupted,
        Err(e) => {
            run.log.note(&format!("stopped: {e:#}"));
            return Err(e);
        }
    };
    run.log.note(if interrupted { "stopped by Ctrl-C" } else { "finished" });
    Ok(Outcome { state, model_config: run.model_cfg, dir: dir.to_path_buf(), interrupted })
}

/// "bninception + gsm, 8 segments, 174 classes" for the log.
fn describe_model(m: &ModelConfig) -> String {
    format!("{} + {}, {} segments, {} classes", m.arch.name(), m.temporal.name(), m.segments, m.classes)
}

/// Everything an epoch of a run works with.
struct Run<'a> {
    cfg: &'a TrainConfig,
    data: RunData,
    model_cfg: ModelConfig,
    device: Device,
    /// Always `Some`: taken for the moment an optimizer step consumes it.
    model: Option<Recognizer>,
    sgd: Sgd,
    dir: &'a Path,
    last: PathBuf,
    show_progress: bool,
    world: World,
    log: RunLog,
}

/// What a pass accumulates batch by batch.
struct Batches {
    acc: Accuracy,
    accum: GradientsAccumulator<Recognizer>,
    /// Batches whose gradients wait for the SGD step (`iter_size`).
    pending: usize,
    /// The last batch, for the divergence guard.
    probe: Option<guard::Probe>,
}

/// What one pass over the training list gave: its metrics (validation still empty), when it
/// started, and its last batch (for the divergence guard).
struct Pass {
    metrics: EpochMetrics,
    started: Instant,
    probe: guard::Probe,
    /// Iterations (global batches) it took.
    iters: u64,
}

impl Run<'_> {
    fn model(&self) -> &Recognizer {
        self.model.as_ref().expect("the model is back after every step")
    }

    /// The epochs left after `state`; `state` follows them. Returns whether Ctrl-C stopped them.
    fn epochs(&mut self, state: &mut RunState) -> Result<bool> {
        for epoch in state.epochs_done..self.cfg.optim.epochs {
            let Some(pass) = self.train_epoch(epoch, state)? else {
                return Ok(true);
            };
            *state = self.end_epoch(epoch, state, pass)?;
            if self.world.any(STOP.load(Ordering::SeqCst))? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// One pass over the training list (0-based `epoch`); `None` when stopped by Ctrl-C (the
    /// epoch is then incomplete: `last` still holds the state after the previous one, from
    /// which --resume replays this epoch exactly).
    fn train_epoch(&mut self, epoch: usize, state: &RunState) -> Result<Option<Pass>> {
        let o = &self.cfg.optim;
        let started = Instant::now();
        let lr = rate(o.schedule, o.lr, epoch, o.epochs, o.warmup_epochs, &o.lr_steps);
        let n = self.data.train.len();
        let mut loader = self.loader(epoch)?;
        let bar = progress_bar(self.show_progress, n as u64, &format!("epoch {}/{}", epoch + 1, o.epochs));
        let mut pass = Batches {
            acc: Accuracy::new(self.data.classes),
            accum: GradientsAccumulator::new(),
            pending: 0,
            probe: None,
        };
        let (mut loss_sum, mut seen, mut iter) = (0.0, 0usize, 0);
        let mut waiting = Instant::now();
        while let Some(batch) = loader.next_batch() {
            let waited = waiting.elapsed().as_secs_f64();
            let global = self.batch_step(batch?, (epoch, iter, lr), state, &mut pass)?;
            let loss_value = global[0] / global[1];
            (loss_sum, seen, iter) = (loss_sum + global[0], seen + global[1] as usize, iter + 1);
            let took = waiting.elapsed().as_secs_f64().max(1e-9);
            let s = StepMetrics {
                epoch: epoch + 1,
                iter,
                step: state.steps_done + iter as u64,
                loss: loss_value,
                lr,
                clips_per_s: global[1] / took,
                data_wait: (waited / took).min(1.0),
                time: crate::train::log::now(),
            };
            self.log_step(&s, loss_sum / seen as f64)?;
            bar.inc(global[1] as u64);
            let rate = seen as f64 / started.elapsed().as_secs_f64();
            bar.set_message(format!("loss {:.3} · {rate:.1} clips/s", loss_sum / seen as f64));
            if global[2] > 0.0 {
                crate::data::loader::report_skips(&loader.skipped);
                bar.finish_and_clear();
                let (last, done) = (self.last.display(), state.epochs_done);
                let line = format!("interrupted in epoch {}: {last} holds the state after epoch {done}", epoch + 1);
                eprintln!("{line}");
                self.log.note(&line);
                return Ok(None);
            }
            waiting = Instant::now();
        }
        crate::data::loader::report_skips(&loader.skipped);
        bar.finish_and_clear();
        self.world.reduce_accuracy(&mut pass.acc)?;
        let clips_per_s = seen as f64 / started.elapsed().as_secs_f64();
        let top = (pass.acc.top1(), pass.acc.top5());
        let metrics = EpochMetrics::training(epoch + 1, lr, loss_sum / seen.max(1) as f64, top, clips_per_s);
        let probe = pass.probe.ok_or_else(|| anyhow::anyhow!("epoch {} trained on no batch", epoch + 1))?;
        Ok(Some(Pass { metrics, started, probe, iters: iter as u64 }))
    }

    /// One batch of a pass: forward, backward (and the SGD step when due), training accuracy.
    /// Returns the global batch's summed loss, its clips and whether any rank was stopped.
    fn batch_step(
        &mut self,
        batch: crate::data::Batch,
        (epoch, iter, lr): (usize, usize, f64),
        state: &RunState,
        pass: &mut Batches,
    ) -> Result<[f64; 3]> {
        let cfg = self.cfg;
        let b = batch.len();
        let seed = mix(cfg.seed, epoch, iter);
        self.device.seed(seed);
        crate::model::dropout::seed(seed ^ mix(self.world.rank as u64, 0, 0));
        let (size, channels) = (cfg.input_size() as usize, cfg.model.net.input_channels());
        let labels = batch_labels(&batch, self.model_cfg.heads().len(), &self.device)?;
        let input = Tensor::<4>::from_data(TensorData::new(batch.data, [b, channels, size, size]), &self.device);
        pass.probe = Some((input.clone(), labels.clone()));
        let (logits, loss) = self.step(input, labels, lr, &mut pass.accum, &mut pass.pending)?;
        // Read once the step is queued, so that a GPU is not left idle while the host
        // queues the backward. A non-finite loss has spoilt the weights in memory by then;
        // they are dropped unsaved. Summed over the ranks with Ctrl-C: every rank sees the
        // global batch's loss and whether any was interrupted, so all stop together.
        let stop = STOP.load(Ordering::SeqCst) as u8 as f64;
        let mut global = [loss.into_scalar::<f32>() as f64 * b as f64, b as f64, stop];
        self.world.sum_f64(&mut global)?;
        let loss_value = global[0] / global[1];
        if !loss_value.is_finite() {
            bail!(
                "loss became {loss_value} in epoch {} iteration {iter}: stopping; {}",
                epoch + 1,
                kept(&self.last, state)
            );
        }
        let scores: Vec<f32> =
            logits.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        // Training accuracy is the first head's (the class, or the verb).
        for (row, &l) in scores.chunks(self.model_cfg.outputs()).zip(&batch.labels) {
            pass.acc.add(&row[..self.data.classes], l);
        }
        Ok(global)
    }

    /// One iteration into the logs: every one into `metrics.jsonl` and the TensorBoard
    /// events, every `print_freq`-th into `train.log`.
    fn log_step(&mut self, s: &StepMetrics, epoch_loss: f64) -> Result<()> {
        self.log.step(s)?;
        let every = self.cfg.print_freq;
        if every > 0 && s.iter.is_multiple_of(every) {
            self.log.note(&format!(
                "epoch {} iter {} · loss {:.4} (epoch mean {epoch_loss:.4}) · lr {:.5} · {:.1} clips/s · data wait {:.0}%",
                s.epoch,
                s.iter,
                s.loss,
                s.lr,
                s.clips_per_s,
                100.0 * s.data_wait
            ));
        }
        Ok(())
    }

    /// The epoch's training batches: the list shuffled by seed and epoch, and of that order
    /// this rank's shard (batch k of all ranks together is global batch k).
    fn loader(&self, epoch: usize) -> Result<Loader> {
        let (cfg, d) = (self.cfg, &self.cfg.data);
        let mut order: Vec<usize> = (0..self.data.train.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(cfg.seed, epoch, usize::MAX)));
        let order = self.world.shard(&order);
        let loader = Loader::new(
            self.data.train.clone(),
            order,
            cfg.optim.batch_size,
            d.workers,
            d.prefetch,
            cfg.seed,
            epoch,
            d.skip_bad,
        )?;
        Ok(loader.sharded(self.world.rank, self.world.size))
    }

    /// Forward and backward of one batch, gradients accumulated; the SGD step once
    /// `iter_size` batches are in. Returns the logits and the loss.
    fn step(
        &mut self,
        input: Tensor<4>,
        labels: Tensor<2, Int>,
        lr: f64,
        accum: &mut GradientsAccumulator<Recognizer>,
        pending: &mut usize,
    ) -> Result<(Tensor<2>, Tensor<1>)> {
        let o = &self.cfg.optim;
        let logits = crate::precision::forward(self.model(), input, self.cfg.precision);
        let loss = heads_loss(logits.clone(), labels, &self.model_cfg.heads());
        let grads = GradientsParams::from_grads(loss.clone().div_scalar(o.iter_size as f64).backward(), self.model());
        accum.accumulate(self.model(), grads);
        *pending += 1;
        if *pending == o.iter_size {
            let mut grads = accum.grads();
            self.world.average_gradients(self.model(), &mut grads)?;
            let model = self.model.take().expect("the model is back after every step");
            self.model = Some(self.sgd.step_clipped(lr, model, grads, o.clip_gradient));
            *pending = 0;
        }
        Ok((logits, loss))
    }

    /// After a pass: validation when due, then the divergence guard, then `last` (and `best`),
    /// the metrics and the curves. Returns the run's state after the epoch.
    fn end_epoch(&mut self, epoch: usize, state: &RunState, pass: Pass) -> Result<RunState> {
        let (cfg, o) = (self.cfg, &self.cfg.optim);
        let mut m = pass.metrics;
        let eval_now = (epoch + 1).is_multiple_of(cfg.eval_every.max(1)) || epoch + 1 == o.epochs;
        if let (Some(val), true) = (&self.data.val, eval_now) {
            let bar = progress_bar(self.show_progress, val.len() as u64, "validate");
            let inference = self.model().inference();
            let (workers, skip) = (cfg.data.workers, cfg.data.skip_bad);
            let device = self.device.clone().inner();
            let options = EvalOptions {
                batch_size: o.batch_size,
                workers,
                seed: cfg.seed,
                skip_bad: skip,
                progress: Some(&bar),
                shard: (self.world.rank, self.world.size),
                ..Default::default()
            };
            let mut ev = evaluate(&inference, val.clone(), &self.model_cfg.heads(), &device, &options)?;
            bar.finish_and_clear();
            self.world.reduce_accuracy(&mut ev.accuracy)?;
            if let Some(vn) = &mut ev.verb_noun {
                self.world.reduce_verb_noun(vn)?;
            }
            (m.val_top1, m.val_top5) = (Some(ev.accuracy.top1()), Some(ev.accuracy.top5()));
            m.val_mean_class = Some(ev.accuracy.mean_class());
            if let Some(vn) = &ev.verb_noun {
                (m.val_noun_top1, m.val_action_top1) = (Some(vn.noun.top1()), Some(vn.action_top1()));
            }
        }
        m.seconds = pass.started.elapsed().as_secs_f64();
        self.log.say(&describe(&m));
        let mut next = state.clone();
        (next.epochs_done, next.steps_done) = (epoch + 1, state.steps_done + pass.iters);
        // Two heads: the best epoch is the one with the best action accuracy.
        let score = m.val_action_top1.or(m.val_top1);
        let improved = score.is_some_and(|v| next.best_top1.is_none_or(|b| v > b));
        if improved {
            (next.best_top1, next.best_epoch) = (score, Some(epoch + 1));
        }
        let loss = m.loss;
        next.history.push(m);
        let names = self.data.class_names.as_ref();
        let sd = run_checkpoint(self.model(), &self.model_cfg, cfg, &self.sgd, &mut next, names)?;
        guard::check(&sd, &self.model_cfg, loss, &pass.probe, cfg.precision, epoch + 1)
            .with_context(|| format!("not saved; {}", kept(&self.last, state)))?;
        if !self.world.is_root() {
            return Ok(next);
        }
        if improved {
            sd.write_safetensors(&self.dir.join("best.safetensors"))?;
        }
        sd.write_safetensors(&self.last)?;
        self.log.epoch(next.history.last().expect("this epoch's metrics"))?;
        let title = format!("{} {}", self.model_cfg.arch.name(), self.model_cfg.temporal.name());
        crate::report::plot::curves(&next.history, &self.dir.join("curves.png"), &title)?;
        Ok(next)
    }
}

/// What every rank of a data-parallel run must agree on: the resolved configuration (a
/// 48-bit hash of its TOML), the list lengths and the epoch it starts from.
fn fingerprint(cfg: &TrainConfig, data: &RunData, state: &RunState) -> [f64; 4] {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    cfg.to_toml().unwrap_or_default().hash(&mut h);
    let val = data.val.as_ref().map_or(0, |v| v.len());
    [(h.finish() >> 16) as f64, data.train.len() as f64, val as f64, state.epochs_done as f64]
}

/// Which checkpoint holds the last good state of a run that went bad.
fn kept(last: &Path, state: &RunState) -> String {
    if state.epochs_done > 0 {
        format!("{} keeps the last good state (after epoch {})", last.display(), state.epochs_done)
    } else {
        "no epoch had finished, so nothing was saved".to_string()
    }
}

/// One human-readable line for an epoch.
pub fn describe(m: &EpochMetrics) -> String {
    let val = match (m.val_top1, m.val_top5) {
        (Some(a), Some(b)) => format!(" · val top-1 {:.1}% top-5 {:.1}%", 100.0 * a, 100.0 * b),
        _ => String::new(),
    };
    format!(
        "epoch {:>3} · lr {:.5} · loss {:.4} · train top-1 {:.1}%{val} · {:.1} clips/s · {:.0} s",
        m.epoch,
        m.lr,
        m.loss,
        100.0 * m.train_top1,
        m.clips_per_s,
        m.seconds
    )
}
