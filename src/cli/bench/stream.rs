//! `gateshift bench stream`: the cost of streaming inference per frame, online (a causal
//! model, one frame's forward per new frame, `infer::online`) against windows (the model
//! re-scoring its last `segments` frames, as `stream` does without `--online`).

use std::time::Instant;

use anyhow::Result;
use burn::tensor::{Distribution, Tensor};
use clap::Args;
use gateshift::infer::online::Online;
use gateshift::model::{Arch, ModelConfig, TemporalKind};

#[derive(Args, Debug)]
pub struct StreamBench {
    #[arg(long, value_enum, default_value = "bninception")]
    pub arch: Arch,
    /// none, tsm or gsm: the modules with a causal variant.
    #[arg(long, value_enum, default_value = "gsm")]
    pub temporal: TemporalKind,
    /// Frames per window (the model's segments).
    #[arg(long, default_value_t = 8, value_parser = super::super::count_up_to(gateshift::limits::MAX_SEGMENTS))]
    pub segments: usize,
    /// Input side (default: the backbone's).
    #[arg(long, value_parser = super::super::side)]
    pub size: Option<u32>,
    /// Frames timed per mode (after two warm-up frames).
    #[arg(long, default_value_t = 16, value_parser = super::super::at_least_one::<usize>)]
    pub frames: usize,
    #[arg(long, default_value = "flex")]
    pub backend: String,
}

pub fn run(a: StreamBench) -> Result<()> {
    let device = gateshift::backend::device(&a.backend)?;
    let size = a.size.map_or(a.arch.input().size, |s| s as usize);
    a.arch.check_input_size(size)?;
    let mut cfg = ModelConfig::new(a.arch, a.temporal, a.segments, 174);
    cfg.causal = true;
    cfg.check()?;
    let causal = cfg.init(&device).inference();
    let window = ModelConfig { causal: false, ..cfg.clone() }.init(&device).inference();
    let frame = || Tensor::<4>::random([1, 3, size, size], Distribution::Normal(0.0, 1.0), &device);
    let mut online = Online::new(&causal, &cfg)?;
    let online_ms = time(a.frames, || {
        let _ = online.push(frame()).into_data();
    });
    let clip = Tensor::<4>::random([1, 3 * a.segments, size, size], Distribution::Normal(0.0, 1.0), &device);
    let window_ms = time(a.frames, || {
        let _ = window.forward(clip.clone()).into_data();
    });
    let what = format!("{} + {} ({} frames, {size}², {})", a.arch.name(), a.temporal.label(), a.segments, a.backend);
    say!("{what}")?;
    say!("  online (causal, one frame's forward):   {online_ms:8.1} ms per frame (median of {})", a.frames)?;
    say!("  window (last {} frames, every frame):    {window_ms:8.1} ms per frame", a.segments)?;
    for stride in [4, 16] {
        let per = window_ms / stride as f64;
        say!("  window every {stride:>2} frames:               {per:8.1} ms per frame, scores {stride} frames apart")?;
    }
    Ok(())
}

/// Median milliseconds of `iters` calls of `f` after two warm-up calls (`f` syncs by reading
/// its result back).
fn time(iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    f();
    let mut ms: Vec<f64> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            1e3 * t.elapsed().as_secs_f64()
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}
