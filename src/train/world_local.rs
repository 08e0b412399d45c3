//! The in-process route of [`super::world::World`] (`train --devices D1,D2,…`): one thread
//! per device, the sums done in shared memory. Each rank puts its values in its slot; the
//! last to arrive adds the slots up in rank order (the same result on every rank, whatever
//! the arrival order) and wakes the others.
//!
//! A rank that ends (an error, a panic, a finished run) leaves the group; a rank still
//! waiting, or calling later, gets an error naming it. A rank that neither arrives nor
//! leaves within the timeout (a hung device) makes the others fail naming it too.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::collective::Collective;

/// The ranks of one process's devices.
pub struct Group {
    size: usize,
    names: Vec<String>,
    timeout: Duration,
    state: Mutex<State>,
    woken: Condvar,
}

#[derive(Default)]
struct State {
    /// Completed sums so far.
    generation: u64,
    slots: Vec<Option<Vec<f64>>>,
    result: Vec<f64>,
    /// The first rank to leave, and why.
    left: Option<(usize, String)>,
}

impl Group {
    /// A group of the devices `names` (rank = position); `timeout`: how long a rank waits
    /// for the others in one sum.
    pub fn new(names: Vec<String>, timeout: Duration) -> Arc<Self> {
        let size = names.len();
        let state = State { slots: vec![None; size], ..Default::default() };
        Arc::new(Self { size, names, timeout, state: Mutex::new(state), woken: Condvar::new() })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Rank `rank` leaves (its run ended): `why` is told to the ranks still in a sum.
    pub fn leave(&self, rank: usize, why: &str) {
        let mut s = self.lock();
        if s.left.is_none() {
            s.left = Some((rank, why.to_string()));
        }
        self.woken.notify_all();
    }

    /// The first rank that left, and why.
    pub fn first_to_leave(&self) -> Option<(usize, String)> {
        self.lock().left.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A rank that panicked holding the lock left the state whole (it only copies slices).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn rank_name(&self, rank: usize) -> String {
        format!("rank {rank} ({})", self.names[rank])
    }

    /// Sums `values` over the ranks, in place.
    fn sum(&self, rank: usize, values: &mut [f64]) -> Result<()> {
        let mut s = self.lock();
        if let Some((who, why)) = &s.left {
            bail!("{} stopped: {why}", self.rank_name(*who));
        }
        if let Some(other) = s.slots.iter().flatten().find(|v| v.len() != values.len()) {
            bail!(
                "{}: the ranks are out of step (a sum of {} values met one of {})",
                self.rank_name(rank),
                values.len(),
                other.len()
            );
        }
        s.slots[rank] = Some(values.to_vec());
        let generation = s.generation;
        if s.slots.iter().all(Option::is_some) {
            let mut total = vec![0.0; values.len()];
            for slot in s.slots.iter_mut() {
                for (t, v) in total.iter_mut().zip(slot.take().expect("every slot is filled")) {
                    *t += v;
                }
            }
            (s.result, s.generation) = (total, generation + 1);
            self.woken.notify_all();
        }
        let deadline = Instant::now() + self.timeout;
        while s.generation == generation {
            if let Some((who, why)) = &s.left {
                bail!("{} stopped: {why}", self.rank_name(*who));
            }
            let now = Instant::now();
            if now >= deadline {
                let missing: Vec<String> =
                    (0..self.size).filter(|&r| s.slots[r].is_none()).map(|r| self.rank_name(r)).collect();
                bail!(
                    "{} waited {} s for {} (a hung device?)",
                    self.rank_name(rank),
                    self.timeout.as_secs(),
                    missing.join(", ")
                );
            }
            s = self.woken.wait_timeout(s, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        values.copy_from_slice(&s.result);
        Ok(())
    }
}

/// One rank's handle on its group.
pub struct Member {
    pub rank: usize,
    pub group: Arc<Group>,
}

impl Collective for Member {
    fn sum_f32(&self, values: &mut [f32]) -> Result<()> {
        let mut wide: Vec<f64> = values.iter().map(|&v| v as f64).collect();
        self.group.sum(self.rank, &mut wide)?;
        values.iter_mut().zip(wide).for_each(|(v, w)| *v = w as f32);
        Ok(())
    }

    fn sum_f64(&self, values: &mut [f64]) -> Result<()> {
        self.group.sum(self.rank, values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::all_reduce;
    use burn::tensor::{Device, Tensor};
    use std::rc::Rc;

    fn members(n: usize, timeout: Duration) -> (Arc<Group>, Vec<Member>) {
        let group = Group::new((0..n).map(|i| format!("flex#{i}")).collect(), timeout);
        (group.clone(), (0..n).map(|rank| Member { rank, group: group.clone() }).collect())
    }

    #[test]
    fn three_ranks_sum_many_times() {
        let (_, ms) = members(3, Duration::from_secs(30));
        let handles: Vec<_> = ms
            .into_iter()
            .map(|m| {
                std::thread::spawn(move || {
                    let mut out = Vec::new();
                    for k in 0..200 {
                        let mut v = [m.rank as f64 + k as f64, 1.0];
                        m.sum_f64(&mut v).unwrap();
                        out.push(v);
                    }
                    out
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for (k, v) in results[0].iter().enumerate() {
            assert_eq!(*v, [3.0 + 3.0 * k as f64, 3.0]);
        }
        assert!(results.iter().all(|r| *r == results[0]));
    }

    #[test]
    fn a_rank_that_leaves_fails_the_others_naming_it() {
        let (group, ms) = members(2, Duration::from_secs(30));
        let mut ms = ms.into_iter();
        let (m0, _m1) = (ms.next().unwrap(), ms.next().unwrap());
        let waiter = std::thread::spawn(move || m0.sum_f32(&mut [1.0]));
        std::thread::sleep(Duration::from_millis(50));
        group.leave(1, "out of memory");
        let err = waiter.join().unwrap().unwrap_err().to_string();
        assert_eq!(err, "rank 1 (flex#1) stopped: out of memory");
        assert_eq!(group.first_to_leave().unwrap().0, 1);
    }

    #[test]
    fn a_rank_that_never_arrives_times_out_naming_it() {
        let (_, ms) = members(3, Duration::from_millis(200));
        let started = Instant::now();
        let mut ms = ms.into_iter();
        let (m0, m1) = (ms.next().unwrap(), ms.next().unwrap());
        let other = std::thread::spawn(move || m1.sum_f64(&mut [1.0]));
        let err = m0.sum_f64(&mut [1.0]).unwrap_err().to_string();
        let _ = other.join();
        assert!(err.contains("rank 2 (flex#2)") && err.contains("hung"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// `ops::all_reduce` on two rank threads: rank r holds x_r and the loss L_r = Σ c_r · sum(x); every rank's x gets Σ_r c_r.
    #[test]
    fn all_reduce_sums_over_the_ranks_forward_and_backward() {
        let group = Group::new(vec!["flex".into(), "flex".into()], Duration::from_secs(30));
        let handles: Vec<_> = (0..2usize)
            .map(|rank| {
                let group = group.clone();
                std::thread::spawn(move || {
                    let _scope = all_reduce::scope(Rc::new(Member { rank, group }));
                    assert!(all_reduce::active());
                    let device = Device::flex().autodiff();
                    let x = Tensor::<1>::from_data([1.0 + rank as f32, 10.0], &device).require_grad();
                    let c = Tensor::<1>::from_data([2.0 + rank as f32, -1.0], &device);
                    let y = all_reduce::sum(x.clone());
                    let forward = y.clone().into_data().try_to_vec::<f32>().unwrap();
                    let grads = (y * c).sum().backward();
                    let dx = x.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
                    (forward, dx)
                })
            })
            .collect();
        for h in handles {
            let (forward, dx) = h.join().unwrap();
            assert_eq!(forward, [3.0, 20.0]);
            assert_eq!(dx, [5.0, -2.0]);
        }
        assert!(!all_reduce::active(), "the scope is the thread's");
    }
}
