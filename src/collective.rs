//! What a collective engine gives data-parallel training (`train::world`) and synchronised
//! BatchNorm (`ops::all_reduce`): sums over the ranks. The engines live in `train/`
//! (`world_mpi.rs`, `world_local.rs`).

use anyhow::Result;

/// The sums a collective engine provides. An error means the group is broken (a rank died,
/// failed or stopped answering): every later call fails too.
pub trait Collective {
    /// Element-wise sum over the ranks, in place, on every rank.
    fn sum_f32(&self, values: &mut [f32]) -> Result<()>;
    fn sum_f64(&self, values: &mut [f64]) -> Result<()>;
}
