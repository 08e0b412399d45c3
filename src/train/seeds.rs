//! A run's seeds: the seed of every iteration, and the model's start drawn from the run's
//! seed alone (so that a run is reproducible whatever the process drew before it).

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

use crate::model::{ModelConfig, Recognizer};

/// Seeds for everything random in iteration `iter` of `epoch`.
pub fn mix(seed: u64, epoch: usize, iter: usize) -> u64 {
    let mut x = seed ^ ((epoch as u64) << 40) ^ (iter as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

/// The model's random initialisation. For data-parallel `ranks` (and any `--devices` run),
/// from `seed`: the backend's generator seeded and drawn from under one lock, as rank
/// threads share it (rank 0's draw is then
/// broadcast, `World::broadcast_parameters`).
pub fn init_model(model_cfg: &ModelConfig, device: &Device, seed: u64, ranks: bool) -> Recognizer {
    if !ranks {
        // A single rank: burn's lazy draw at the first forward (seeded by the first
        // iteration), as runs always had; what a module draws while it is built (GST's
        // `Tconv`, a perturbed identity) follows the seed too, not the process's history.
        device.seed(mix(seed, usize::MAX, usize::MAX));
        return model_cfg.init(device);
    }
    /// burn draws a parameter's initial value on its first use: drawn here, under the lock.
    struct Draw;
    impl burn::module::ModuleVisitor for Draw {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let _ = param.val();
        }
    }
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = INIT.lock().unwrap_or_else(|p| p.into_inner());
    device.seed(mix(seed, usize::MAX, usize::MAX));
    let model = model_cfg.init(device);
    model.visit(&mut Draw);
    model
}
