//! Multiply-accumulate counting. Layers report their MACs while a count is being recorded
//! (`gateshift info` runs one forward pass under `record`); nothing is booked otherwise.

use std::cell::RefCell;

thread_local! {
    static COUNTER: RefCell<Option<Vec<(String, u64)>>> = const { RefCell::new(None) };
}

/// Runs `f` with counting on; returns its result and the MACs booked per stage, in order.
pub fn record<R>(f: impl FnOnce() -> R) -> (R, Vec<(String, u64)>) {
    COUNTER.with(|c| *c.borrow_mut() = Some(vec![("stem".to_string(), 0)]));
    let r = f();
    let stages = COUNTER.with(|c| c.borrow_mut().take()).unwrap_or_default();
    (r, stages.into_iter().filter(|(_, m)| *m > 0).collect())
}

pub fn is_recording() -> bool {
    COUNTER.with(|c| c.borrow().is_some())
}

/// Starts a new stage: MACs booked from now on are attributed to `name`.
pub fn stage(name: &str) {
    COUNTER.with(|c| {
        if let Some(v) = c.borrow_mut().as_mut() {
            v.push((name.to_string(), 0));
        }
    });
}

pub fn add(macs: u64) {
    COUNTER.with(|c| {
        if let Some(v) = c.borrow_mut().as_mut()
            && let Some(last) = v.last_mut()
        {
            last.1 += macs;
        }
    });
}
