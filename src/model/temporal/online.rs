//! Online (per-frame) inference of the causal modules, as TSM's online demo: the 2D network
//! runs once per new frame, and each causal module takes what it needs of earlier frames from
//! a cache instead of recomputing them, so a frame costs one frame's forward.
//!
//! While [`step`] runs the network on one frame of each stream, every causal module call takes
//! the next slot of the cache (the calls come in the same order every frame) and leaves its
//! own features there for the next frame. Before a stream's first frame the past is zeros, as
//! the offline causal model pads the clip's start.

use std::cell::RefCell;

use burn::tensor::Tensor;

/// What the causal modules keep of earlier frames: per call slot, its last frames' features
/// (oldest first).
#[derive(Default)]
pub struct Cache {
    slots: Vec<Vec<Tensor<4>>>,
    next: usize,
}

impl Cache {
    /// Slots in use (one per causal module call, GSM takes two).
    pub fn slots(&self) -> usize {
        self.slots.len()
    }
}

thread_local! {
    static ACTIVE: RefCell<Option<Cache>> = const { RefCell::new(None) };
}

/// Puts the cache back into the caller's hands however the forward ends.
struct Restore<'a>(&'a mut Cache);

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        if let Some(c) = ACTIVE.with(|a| a.borrow_mut().take()) {
            *self.0 = c;
        }
    }
}

/// Runs `forward` — the network on one frame of each stream — with `cache` as the past.
pub fn step<R>(cache: &mut Cache, forward: impl FnOnce() -> R) -> R {
    let mut active = std::mem::take(cache);
    active.next = 0;
    ACTIVE.with(|a| *a.borrow_mut() = Some(active));
    let _restore = Restore(cache);
    forward()
}

/// Whether a [`step`] is running on this thread: the causal modules then see one frame.
pub fn active() -> bool {
    ACTIVE.with(|a| a.borrow().is_some())
}

/// This call slot's features of the `depth` previous frames (oldest first; zeros before the
/// stream's first frame), keeping `current` as the newest.
pub(crate) fn history(current: Tensor<4>, depth: usize) -> Vec<Tensor<4>> {
    ACTIVE.with(|a| {
        let mut a = a.borrow_mut();
        let cache = a.as_mut().expect("online::history outside online::step");
        let i = cache.next;
        cache.next += 1;
        if cache.slots.len() == i {
            cache.slots.push(vec![current.zeros_like(); depth]);
        }
        let slot = &mut cache.slots[i];
        assert_eq!(slot.len(), depth, "causal module call {i} changed its history depth");
        assert_eq!(slot[0].dims(), current.dims(), "causal module call {i}: the frame changed shape mid-stream");
        let past = slot.clone();
        slot.remove(0);
        slot.push(current);
        past
    })
}
