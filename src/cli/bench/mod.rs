//! `gateshift bench model`: synthetic-input throughput of a model (training step or
//! inference), with warm-up and device synchronisation. `gateshift bench data`: clips/s of
//! the training and test data pipelines on a real list.

mod devices;
mod gsm;
mod profile;
mod stream;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use burn::optim::GradientsParams;
use burn::tensor::{DType, Device, DeviceConfig, Distribution, FloatDType, Int, Tensor};
use clap::{Args, Subcommand};
use gateshift::data::list::{List, ListFormat};
use gateshift::data::transform::FlipMap;
use gateshift::data::{ClipDataset, FrameNaming, FrameOrder, Loader, Mode, Pipeline, Sampling};
use gateshift::model::{Arch, ModelConfig, Recognizer, ShiftPlace, TemporalKind};
use gateshift::ops::{gate_shift, time_shift};
use gateshift::train::optim::{clip_grad_norm, cross_entropy};
use gateshift::train::precision::Precision;
use gateshift::train::sgd::{ParamPolicy, Sgd};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Model throughput on synthetic input.
    Model(ModelBench),
    /// Data pipeline throughput on a list.
    Data(DataBench),
    /// The Gate-Shift Modules of BN-Inception alone: fused kernels against the composed
    /// reference.
    Gsm(gsm::GsmBench),
    /// Streaming inference per frame: online (a causal model, one frame's forward per frame)
    /// against re-scored windows.
    Stream(stream::StreamBench),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchMode {
    Train,
    Infer,
}

#[derive(Args, Debug)]
pub struct ModelBench {
    #[arg(long, value_enum, default_value = "bninception")]
    pub arch: Arch,
    #[arg(long, value_enum, default_value = "gsm")]
    pub temporal: TemporalKind,
    #[arg(long, default_value_t = 8, value_parser = super::at_least_one::<usize>)]
    pub segments: usize,
    /// Clips per batch.
    #[arg(long, default_value_t = 1, value_parser = super::count_up_to(gateshift::limits::MAX_BATCH))]
    pub batch: usize,
    #[arg(long, value_enum, default_value = "infer")]
    pub mode: BenchMode,
    /// fp32, or bf16 (training: mixed precision with fp32 master weights; fast on GPUs,
    /// emulated on most CPUs).
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: Precision,
    /// Input side (default: the backbone's).
    #[arg(long, value_parser = super::at_least_one::<usize>)]
    pub size: Option<usize>,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long, default_value_t = 5, value_parser = super::at_least_one::<usize>)]
    pub iters: usize,
    #[arg(long, default_value = "flex")]
    pub backend: String,
    #[arg(long, default_value_t = 174, value_parser = super::at_least_one::<usize>)]
    pub classes: usize,
    /// GSM implementation: the fused kernels where the backend has them (flex, fp32), or
    /// the composed reference.
    #[arg(long, value_enum, default_value = "fused")]
    pub gsm: GsmImpl,
    /// Training: also time forward + loss, backward, gradient clipping and the SGD step
    /// apart (the device is synchronised between them, which costs a little throughput).
    #[arg(long)]
    pub phases: bool,
    /// Training: how gradients are clipped and applied — `auto` as `train` does it
    /// (`Sgd::step_clipped`: flat on a GPU, per parameter on the CPU), `flat` all parameters
    /// at once (`Sgd::step_flat`), `per-param` one at a time (`clip_grad_norm`, `Sgd::step`).
    #[arg(long, value_enum, default_value = "auto")]
    pub sgd: SgdPath,
    /// Data-parallel scaling: the model on the first of these devices, then on all of them
    /// (one rank each, as `train --devices`): throughput per device and scaling efficiency.
    #[arg(long, value_delimiter = ',', num_args = 1.., conflicts_with_all = ["backend", "phases"])]
    pub devices: Option<Vec<String>>,
    /// Inference: also write the benchmarked model (its very weights) as ONNX to this file, and
    /// beside it `FILE.io.safetensors` with an input batch and gateshift's logits for it (the
    /// other engines of `scripts/cpu_engines.sh` run that file).
    #[arg(long, conflicts_with = "devices")]
    pub onnx: Option<PathBuf>,
    /// Inference: also time every op of the timed forwards and print where the time goes, per
    /// op kind and per op and shape, with GFLOP/s (docs/PERFORMANCE.md).
    #[arg(long, conflicts_with = "devices")]
    pub profile: bool,
    /// With --profile: also write the per-forward profile as JSON to this file.
    #[arg(long, requires = "profile")]
    pub profile_json: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SgdPath {
    Auto,
    Flat,
    PerParam,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GsmImpl {
    Fused,
    Composed,
}

#[derive(Args, Debug)]
pub struct DataBench {
    #[arg(long)]
    pub list: PathBuf,
    #[arg(long)]
    pub root: Option<PathBuf>,
    #[arg(long, default_value = "img_{:05d}.jpg")]
    pub template: String,
    /// Decoding threads (0: decode in the calling thread).
    #[arg(long, default_value_t = 1, value_parser = super::worker_count)]
    pub workers: usize,
    #[arg(long, default_value_t = 8, value_parser = super::at_least_one::<usize>)]
    pub segments: usize,
    #[arg(long, default_value_t = 224, value_parser = super::side)]
    pub size: u32,
    #[arg(long, default_value_t = 256, value_parser = super::side)]
    pub scale: u32,
    /// Clips to read per pipeline (default: the whole list).
    #[arg(long, value_parser = super::at_least_one::<usize>)]
    pub limit: Option<usize>,
}

pub fn run(a: BenchArgs) -> Result<()> {
    match a.command {
        BenchCommand::Model(m) => model(m),
        BenchCommand::Data(d) => data(d),
        BenchCommand::Gsm(g) => gsm::run(g),
        BenchCommand::Stream(s) => stream::run(s),
    }
}

/// Per-phase times of one training step, the device synchronised at each mark (when on).
struct Lap<'a> {
    device: &'a Device,
    on: bool,
    last: Instant,
    times: [f64; 4],
}

impl<'a> Lap<'a> {
    fn new(device: &'a Device, on: bool) -> Self {
        Self { device, on, last: Instant::now(), times: [0.0; 4] }
    }

    fn mark(&mut self, phase: usize) -> Result<()> {
        if self.on {
            self.device.sync().map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let now = Instant::now();
            self.times[phase] = (now - self.last).as_secs_f64();
            self.last = now;
        }
        Ok(())
    }
}

/// How the backbone's layers ran on `device`: BN folded into convolutions (inference,
/// `Recognizer::inference`), and on libtorch whether convolution and BN were single libtorch
/// ops and in which memory order.
fn layer_notes(device: &Device, infer: bool) -> String {
    let mut notes = String::new();
    let probe = Tensor::<4>::zeros([1, 1, 1, 1], device);
    if infer && gateshift::model::layers::fold_enabled() {
        notes.push_str(" · BN folded");
    }
    #[cfg(feature = "tch")]
    if gateshift::ops::torch::applies(&probe) {
        let order = if gateshift::ops::torch::channels_last(&probe) { "channels-last" } else { "NCHW" };
        notes.push_str(&format!(" · libtorch conv/BN, {order}"));
    }
    let _ = probe;
    notes
}

/// Flag combinations `bench model` refuses, and its outputs checked (no two one file),
/// before any work.
fn check_flags(a: &ModelBench) -> Result<()> {
    if a.mode == BenchMode::Infer && (a.phases || a.sgd != SgdPath::Auto) {
        anyhow::bail!("--phases and --sgd time parts of a training step: they need --mode train");
    }
    if a.onnx.is_some() && (a.mode != BenchMode::Infer || a.precision != Precision::Fp32) {
        anyhow::bail!("--onnx writes the fp32 inference model: it needs --mode infer and --precision fp32");
    }
    if a.mode == BenchMode::Train && a.profile {
        anyhow::bail!(
            "--profile times the ops of an inference forward: it needs --mode infer (--phases splits a step)"
        );
    }
    // The ONNX model, its input and logits, and the profile: four outputs, no two one file.
    let io = a.onnx.as_ref().map(|p| p.with_extension("io.safetensors"));
    let outputs: Vec<&std::path::Path> =
        [&a.onnx, &io, &a.profile_json].into_iter().flatten().map(|p| p.as_path()).collect();
    gateshift::io::check_outputs(&outputs, &[])?;
    Ok(())
}

fn model(a: ModelBench) -> Result<()> {
    check_flags(&a)?;
    gate_shift::set_enabled(a.gsm == GsmImpl::Fused);
    if let Some(names) = &a.devices {
        if a.precision != Precision::Fp32 {
            anyhow::bail!("--devices times fp32");
        }
        return devices::scaling(&a, names);
    }
    let mut base = gateshift::backend::device(&a.backend)?;
    if (a.precision, a.mode) == (Precision::Bf16, BenchMode::Infer) {
        // Inference in bf16: weights and activations created as bf16 on the device.
        base.configure(DeviceConfig::default().float_dtype(FloatDType::BF16))
            .map_err(|e| anyhow::anyhow!("backend {} cannot run bf16: {e:?}", a.backend))?;
    }
    let device = if a.mode == BenchMode::Train { base.clone().autodiff() } else { base.clone() };
    let mut cfg = ModelConfig::new(a.arch, a.temporal, a.segments, a.classes);
    cfg.shift_place = ShiftPlace::Blockres;
    let size = a.size.unwrap_or(a.arch.input().size);
    cfg.check()?;
    a.arch.check_input_size(size)?;
    let mut model = cfg.init(&device);
    if a.mode == BenchMode::Infer {
        model = model.inference();
    }
    if let Some(path) = &a.onnx {
        write_onnx(&a, &cfg, &model, size, path)?;
    }
    let mut profile = a.profile.then(|| profile::Profile::new(a.iters));
    let (mut times, mut phase_times) = iterations(&a, &base, &device, model, size, profile.as_mut())?;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    say!(
        "{} + {}{} · {:?} · batch {} × {} × {size}² · {} · backend {}{}: median {:.1} ms/iter (mean {:.1}) · {:.2} clips/s",
        a.arch.name(),
        a.temporal.name(),
        temporal_route(&a, &base),
        a.mode,
        a.batch,
        a.segments,
        a.precision.name(),
        a.backend,
        layer_notes(&device, a.mode == BenchMode::Infer),
        1e3 * median,
        1e3 * mean,
        a.batch as f64 / median
    )?;
    if a.phases && a.mode == BenchMode::Train {
        let names = ["forward + loss", "backward", "clip", "sgd"];
        let medians: Vec<String> = names
            .iter()
            .zip(&mut phase_times)
            .map(|(n, t)| {
                t.sort_by(f64::total_cmp);
                format!("{n} {:.1}", 1e3 * t[t.len() / 2])
            })
            .collect();
        say!("phases (median ms, synchronised): {}", medians.join(" · "))?;
    }
    if let Some(p) = &profile {
        p.print(16)?;
        if let Some(path) = &a.profile_json {
            p.write_json(path)?;
        }
    }
    memory_report(&a.backend, &base)
}

/// `--onnx`: the inference model as ONNX, and an input batch with gateshift's logits beside it.
fn write_onnx(
    a: &ModelBench,
    cfg: &ModelConfig,
    model: &Recognizer,
    size: usize,
    path: &std::path::Path,
) -> Result<()> {
    // The outputs were checked (and told apart) before any work, in `model`.
    let io = path.with_extension("io.safetensors");
    let e = gateshift::export::Export { config: cfg, size, batch: None, classes: None };
    gateshift::io::write_atomic(path, &gateshift::export::onnx(model, &e)?)?;
    let device = model.new_fc.weight.val().device();
    let x = Tensor::<4>::random([a.batch, cfg.input_channels(), size, size], Distribution::Normal(0.0, 1.0), &device);
    let logits = model.forward(x.clone());
    let tensors = [("input".to_string(), x.into_data()), ("logits".to_string(), logits.into_data())].into();
    gateshift::checkpoint::safetensors::write(&io, &tensors, &Default::default())?;
    eprintln!("wrote {} and {}", path.display(), io.display());
    Ok(())
}

/// Seconds per timed iteration, and per training phase (forward + loss, backward, clip, SGD).
type Times = (Vec<f64>, [Vec<f64>; 4]);

/// The warm-up and timed iterations of `bench model`.
fn iterations(
    a: &ModelBench,
    base: &Device,
    device: &Device,
    mut model: Recognizer,
    size: usize,
    mut profile: Option<&mut profile::Profile>,
) -> Result<Times> {
    let mut sgd = Sgd::new(0.9, 5e-4, ParamPolicy::Official);
    let shape = [a.batch, 3 * a.segments, size, size];
    let mut times = Vec::new();
    let mut phase_times: [Vec<f64>; 4] = Default::default();
    for i in 0..a.warmup + a.iters {
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), device);
        base.sync().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let t = Instant::now();
        match a.mode {
            BenchMode::Infer if i >= a.warmup && profile.is_some() => {
                let (y, entries) = gateshift::ops::profile::collect(|| model.forward(x).into_data());
                drop(y);
                if let Some(p) = profile.as_mut() {
                    p.add(entries, t.elapsed().as_secs_f64());
                }
            }
            BenchMode::Infer => {
                let y = model.forward(x);
                let _ = y.into_data();
            }
            BenchMode::Train => {
                let lap;
                (model, lap) = train_step(a, base, &mut sgd, model, x)?;
                if i >= a.warmup {
                    for (all, t) in phase_times.iter_mut().zip(lap.times) {
                        all.push(t);
                    }
                }
            }
        }
        base.sync().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        if i >= a.warmup {
            times.push(t.elapsed().as_secs_f64());
        } else {
            // The first iterations include kernel compilation and autotuning on GPU backends.
            eprintln!("warm-up {}: {:.1} ms", i + 1, 1e3 * t.elapsed().as_secs_f64());
        }
    }
    Ok((times, phase_times))
}

/// One training step on the batch `x` (labels 0), its phases timed if `--phases`.
fn train_step<'a>(
    a: &ModelBench,
    base: &'a Device,
    sgd: &mut Sgd,
    model: Recognizer,
    x: Tensor<4>,
) -> Result<(Recognizer, Lap<'a>)> {
    let mut lap = Lap::new(base, a.phases);
    let labels = Tensor::<1, Int>::zeros([a.batch], &x.device());
    let loss = cross_entropy(gateshift::train::precision::forward(&model, x, a.precision), labels);
    lap.mark(0)?;
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    lap.mark(1)?;
    // `auto` and `flat` clip inside the step: their time is all under "sgd".
    let model = match a.sgd {
        SgdPath::Auto => sgd.step_clipped(0.01, model, grads, 20.0),
        SgdPath::Flat => sgd.step_flat(0.01, model, grads, 20.0),
        SgdPath::PerParam => {
            let mut grads = grads;
            clip_grad_norm(&model, &mut grads, 20.0);
            lap.mark(2)?;
            sgd.step(0.01, model, grads)
        }
    };
    lap.mark(3)?;
    Ok((model, lap))
}

/// " (fused)" or " (composed)": which route the temporal module took.
fn temporal_route(a: &ModelBench, base: &Device) -> &'static str {
    let dtype = if a.precision == Precision::Bf16 { DType::BF16 } else { DType::F32 };
    match a.temporal {
        TemporalKind::Gsm if a.gsm == GsmImpl::Fused && gate_shift::available(base, dtype) => " (fused)",
        TemporalKind::Gsm => " (composed)",
        // GATESHIFT_FUSED_TSM=0 runs the composed shift, for comparison.
        TemporalKind::Tsm if time_shift::available(base, dtype) => " (fused)",
        TemporalKind::Tsm => " (composed)",
        _ => "",
    }
}

/// Peak host memory, and the device memory the backend reports.
fn memory_report(backend: &str, base: &Device) -> Result<()> {
    if let Some(peak) = peak_rss_mib() {
        say!("peak RSS {peak:.0} MiB")?;
    }
    // Backends that report their device memory pool (CubeCL): what it holds after the last
    // iteration, a lower bound of the run's peak.
    if let Some(pool) = base.memory_pool_usage() {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        say!(
            "device memory pool: {:.0} MiB reserved, {:.0} MiB in use after the last iteration",
            mib(pool.bytes_reserved),
            mib(pool.bytes_in_use)
        )?;
    }
    if let Some(bytes) = gateshift::backend::cuda_memory_in_use(backend) {
        say!(
            "GPU memory in use after the run (device-wide, CUDA context included): {:.0} MiB",
            bytes as f64 / (1024.0 * 1024.0)
        )?;
    }
    Ok(())
}

/// Peak resident memory of this process (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn data(a: DataBench) -> Result<()> {
    let root = a.root.clone().unwrap_or_else(|| a.list.parent().map(|p| p.to_path_buf()).unwrap_or_default());
    let list = List::read(&a.list, Some(&root), ListFormat::Auto, None)?;
    let n = a.limit.unwrap_or(list.entries.len()).min(list.entries.len());
    let spec = Arch::BnInception.input();
    for (name, mode) in [
        ("train", Mode::Train { scale: a.scale, flip: true, flip_map: FlipMap::default() }),
        ("test", Mode::Test { scale: a.scale, crops: 1, clips: 1 }),
    ] {
        let pipeline = Pipeline {
            spec,
            size: a.size,
            segments: a.segments,
            sampling: Sampling::Tsn,
            interval: 2,
            mode,
            order: FrameOrder::Normal,
            input: gateshift::model::modality::Input::RGB,
            live_flow: Default::default(),
        };
        let ds = Arc::new(ClipDataset { list: list.clone(), naming: FrameNaming::new(&a.template, 1)?, pipeline });
        let t = Instant::now();
        let mut loader = Loader::new(ds, (0..n).collect(), 1, a.workers, 4 * a.workers, 0, 0, false)?;
        let mut clips = 0;
        while let Some(b) = loader.next_batch() {
            clips += b?.len();
        }
        let s = t.elapsed().as_secs_f64();
        let rate = clips as f64 / s;
        // `--workers 0` decodes in the calling thread.
        let who = match a.workers {
            0 => "in the calling thread".to_string(),
            w => format!("with {w} worker(s) · {:.1} clips/s per worker", rate / w as f64),
        };
        say!(
            "{name:<5} pipeline: {clips} clips × {} frames at {}² in {s:.2} s · {rate:.1} clips/s {who}",
            a.segments,
            a.size
        )?;
    }
    Ok(())
}
