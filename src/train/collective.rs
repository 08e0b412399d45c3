//! What a collective engine gives data-parallel training (`world.rs`): sums over the ranks.

/// The sums a collective engine provides.
pub trait Collective {
    /// Element-wise sum over the ranks, in place, on every rank.
    fn sum_f32(&self, values: &mut [f32]);
    fn sum_f64(&self, values: &mut [f64]);
}
