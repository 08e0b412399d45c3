//! Per-op wall time for `bench model --profile`: while [`collect`] runs, every op of `ops::`
//! the model calls adds its time and FLOPs under a key that names the op and its shapes
//! (`conv 3x3/1 192>64 28x28`), so a profile lines up with another engine's per-layer one by
//! shape. Only the outermost op of a nested call counts (a fused unit, not the GEMM inside
//! it); what runs outside `ops::` (burn's concat, reshapes, adds) is the forward's rest. Off,
//! [`timed`] costs one thread-local check.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Instant;

use burn::tensor::Tensor;

/// Calls, seconds and floating-point operations summed under one key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Entry {
    pub calls: usize,
    pub seconds: f64,
    pub flops: f64,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<String, Entry>,
    depth: usize,
}

thread_local! {
    static PROFILE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// Runs `f` with the profile on; returns its result and the entries by key.
pub fn collect<R>(f: impl FnOnce() -> R) -> (R, BTreeMap<String, Entry>) {
    PROFILE.with(|p| *p.borrow_mut() = Some(State::default()));
    let r = f();
    let state = PROFILE.with(|p| p.borrow_mut().take()).unwrap_or_default();
    (r, state.entries)
}

/// `f()`, timed when a profile is collecting and no other op of this thread is being timed,
/// under the key and FLOPs `key` gives for its result. The op's output is computed when `f`
/// returns (flex is eager; on asynchronous backends the time is that of queueing).
pub fn timed<R>(key: impl FnOnce(&R) -> (String, f64), f: impl FnOnce() -> R) -> R {
    let outermost = PROFILE.with(|p| match p.borrow_mut().as_mut() {
        Some(s) => {
            s.depth += 1;
            s.depth == 1
        }
        None => false,
    });
    if !outermost {
        let r = f();
        PROFILE.with(|p| {
            if let Some(s) = p.borrow_mut().as_mut() {
                s.depth = s.depth.saturating_sub(1);
            }
        });
        return r;
    }
    let start = Instant::now();
    let r = f();
    let seconds = start.elapsed().as_secs_f64();
    PROFILE.with(|p| {
        if let Some(s) = p.borrow_mut().as_mut() {
            s.depth -= 1;
            let (key, flops) = key(&r);
            let e = s.entries.entry(key).or_default();
            e.calls += 1;
            e.seconds += seconds;
            e.flops += flops;
        }
    });
    r
}

/// `f()`, timed under `{op()} {C}>{C'} {H}x{W}` from the dims of its input `x` (N, C, H, W)
/// and output (no FLOPs counted: memory-bound ops); `op` is called only while profiling.
pub fn timed_map(op: impl FnOnce() -> String, x: [usize; 4], f: impl FnOnce() -> Tensor<4>) -> Tensor<4> {
    timed(|y: &Tensor<4>| (format!("{} {}>{} {}x{}", op(), x[1], y.dims()[1], x[2], x[3]), 0.0), f)
}

/// The key of a 2D convolution: kernel, stride, channels in > out (`/g` when grouped) and the
/// input's plane, e.g. `conv 3x3/2 192>64 28x28`; and its multiply-adds × 2 for `images`
/// images of output plane `out`.
pub fn conv_key(weight: [usize; 4], groups: usize, stride: usize, cin: usize, plane: [usize; 2]) -> String {
    let [cout, _, kh, kw] = weight;
    let grouped = if groups > 1 { format!("/g{groups}") } else { String::new() };
    format!("conv {kh}x{kw}/{stride} {cin}>{cout}{grouped} {}x{}", plane[0], plane[1])
}

/// 2 · multiply-adds of a convolution with `weight` giving `outputs` values.
pub fn conv_flops(weight: [usize; 4], outputs: usize) -> f64 {
    let [_, cin_per_group, kh, kw] = weight;
    2.0 * (cin_per_group * kh * kw) as f64 * outputs as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_outermost_op_counts_and_off_records_nothing() {
        let ((), entries) = collect(|| {
            timed(|_| ("outer".into(), 10.0), || timed(|_| ("inner".into(), 1.0), || ()));
            timed(|_| ("outer".into(), 10.0), || ());
        });
        assert_eq!(entries.keys().collect::<Vec<_>>(), ["outer"]);
        assert_eq!((entries["outer"].calls, entries["outer"].flops), (2, 20.0));
        assert_eq!(timed(|_| unreachable!(), || 7), 7);
    }
}
