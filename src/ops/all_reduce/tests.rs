//! One rank: the sum is the tensor. Two ranks on threads: `train::world_local`'s tests.

use burn::tensor::{Device, Tensor};

use super::sum;

/// Outside a scope the sum is the identity (one rank).
#[test]
fn without_a_scope_the_sum_is_the_tensor() {
    let x = Tensor::<1>::from_data([1.0f32, 2.0], &Device::flex());
    assert_eq!(sum(x.clone()).into_data(), x.into_data());
}

/// CPU ranks have no on-device route: their gradients are summed in host memory.
#[test]
fn cpu_ranks_sum_in_host_memory() {
    let flex = Device::flex();
    assert!(super::device::Plan::new(&[flex.clone(), flex.clone()]).unwrap().is_none());
    assert!(super::device::Plan::new(&[flex]).unwrap().is_none());
    assert!(super::device::Plan::new(&[]).unwrap().is_none());
}
