//! `bench model --devices D1,D2,…`: data-parallel throughput. The model runs on the first
//! device alone, then on all of them, one rank per device on its own thread as `train
//! --devices` runs them (training: gradients averaged by the in-process all-reduce after each
//! backward); reported are clips/s in all, per device, and the scaling efficiency — the
//! throughput of N devices over N times that of one.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use burn::optim::GradientsParams;
use burn::tensor::{Distribution, Int, Tensor};
use gateshift::model::{ModelConfig, ShiftPlace};
use gateshift::train::devices::on_devices;
use gateshift::train::optim::cross_entropy;
use gateshift::train::sgd::{ParamPolicy, Sgd};
use gateshift::train::world::World;

use super::{BenchMode, ModelBench};

/// Times one device, then all of `names`, and reports the scaling.
pub fn scaling(a: &ModelBench, names: &[String]) -> Result<()> {
    let one = group_rate(a, &names[..1])?;
    let all = group_rate(a, names)?;
    let n = names.len() as f64;
    say!(
        "{} + {} · {:?} · batch {} per device × {} × {}² · devices {}: one device {one:.2} clips/s · {} devices {all:.2} clips/s ({:.2} per device) · scaling efficiency {:.0}%",
        a.arch.name(),
        a.temporal.name(),
        a.mode,
        a.batch,
        a.segments,
        a.size.unwrap_or(a.arch.input().size),
        names.join(","),
        names.len(),
        all / n,
        100.0 * all / (n * one)
    )?;
    Ok(())
}

/// Clips per second of `names` together: the global batch over the median iteration time.
fn group_rate(a: &ModelBench, names: &[String]) -> Result<f64> {
    let (mode, arch, temporal, segments, classes, batch) = (a.mode, a.arch, a.temporal, a.segments, a.classes, a.batch);
    let size = a.size.unwrap_or(arch.input().size);
    let iters = a.warmup + a.iters;
    let times = on_devices(names, Duration::from_secs(600), move |_, name, world| {
        let mut cfg = ModelConfig::new(arch, temporal, segments, classes);
        cfg.shift_place = ShiftPlace::Blockres;
        rank_times(&world, &cfg, name, mode, batch, size, iters)
    })?;
    // The ranks step together; an iteration lasts as long as its slowest rank.
    let mut per_iter: Vec<f64> = (a.warmup..iters).map(|i| times.iter().map(|t| t[i]).fold(0.0, f64::max)).collect();
    per_iter.sort_by(f64::total_cmp);
    Ok((a.batch * names.len()) as f64 / per_iter[per_iter.len() / 2])
}

/// One rank's seconds per iteration (warm-up included) on the device `name`.
fn rank_times(
    world: &World,
    cfg: &ModelConfig,
    name: &str,
    mode: BenchMode,
    batch: usize,
    size: usize,
    iters: usize,
) -> Result<Vec<f64>> {
    let base = gateshift::backend::device(name)?;
    let train = mode == BenchMode::Train;
    let device = if train { base.clone().autodiff() } else { base.clone() };
    let mut model = world.broadcast_parameters(cfg.init(&device))?;
    if !train {
        model = model.inference();
    }
    let mut sgd = Sgd::new(0.9, 5e-4, ParamPolicy::Official);
    let shape = [batch, 3 * cfg.segments, size, size];
    let sync = |d: &burn::tensor::Device| d.sync().map_err(|e| anyhow!("{e:?}"));
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        sync(&base)?;
        let t = Instant::now();
        if train {
            let labels = Tensor::<1, Int>::zeros([batch], &device);
            let loss = cross_entropy(model.forward(x), labels);
            let mut grads = GradientsParams::from_grads(loss.backward(), &model);
            world.average_gradients(&model, &mut grads)?;
            model = sgd.step_clipped(0.01, model, grads, 20.0);
        } else {
            let _ = model.forward(x).into_data();
        }
        sync(&base)?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(times)
}
