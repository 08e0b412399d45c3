//! Two ranks on threads: the sum forward, and backward the sum of the ranks' gradients.

use std::rc::Rc;
use std::time::Duration;

use burn::tensor::{Device, Tensor};

use super::{active, scope, sum};
use crate::train::world_local::{Group, Member};

/// Rank r holds x_r and the loss L_r = Σ c_r · sum(x); every rank's x gets Σ_r c_r.
#[test]
fn the_sum_and_its_gradient_are_over_the_ranks() {
    let group = Group::new(vec!["flex".into(), "flex".into()], Duration::from_secs(30));
    let handles: Vec<_> = (0..2usize)
        .map(|rank| {
            let group = group.clone();
            std::thread::spawn(move || {
                let _scope = scope(Rc::new(Member { rank, group }));
                assert!(active());
                let device = Device::flex().autodiff();
                let x = Tensor::<1>::from_data([1.0 + rank as f32, 10.0], &device).require_grad();
                let c = Tensor::<1>::from_data([2.0 + rank as f32, -1.0], &device);
                let y = sum(x.clone());
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
    assert!(!active(), "the scope is the thread's");
}

/// Outside a scope the sum is the identity (one rank).
#[test]
fn without_a_scope_the_sum_is_the_tensor() {
    let x = Tensor::<1>::from_data([1.0f32, 2.0], &Device::flex());
    assert_eq!(sum(x.clone()).into_data(), x.into_data());
}
