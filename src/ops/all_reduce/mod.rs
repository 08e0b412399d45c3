//! A differentiable sum over the ranks of a data-parallel run, for synchronised BatchNorm
//! (`train --sync-bn`): forward, every rank gets the sum of the ranks' tensors; backward, the
//! same for the gradient — every rank's loss depends on the sum, so the adjoint of each
//! rank's input is the sum of the ranks' output gradients (PyTorch's
//! `torch.distributed.nn.functional.all_reduce`; burn's own autodiff all-reduce does the
//! same on its CubeCL collective).
//!
//! The engine is the one of the training thread's rank ([`scope`]); the sum goes through
//! host memory on every backend (`host.rs`): BatchNorm statistics are a few kilobytes per
//! layer. The gradients' sum, megabytes per step, stays on the GPUs where it can (`device.rs`). Every rank must call it in the same order, which one model on every rank gives,
//! forward and backward (burn's tape runs in an order fixed by the graph).

// The generated routing names burn's libtorch backend, which burn 0.22 marks deprecated.
#![cfg_attr(feature = "tch", allow(deprecated))]

#[cfg(feature = "cuda")]
mod cube;
pub mod device;
mod host;
#[cfg(feature = "tch")]
mod nccl;

use std::cell::RefCell;
use std::rc::Rc;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::tensor::Tensor;

use crate::collective::Collective;

thread_local! {
    /// The engine of this thread's rank while a [`Scope`] is alive.
    static ENGINE: RefCell<Option<Rc<dyn Collective>>> = const { RefCell::new(None) };
}

/// While alive, [`sum`] on this thread sums over the ranks of `engine`.
pub struct Scope(());

/// Makes `engine` this thread's for [`sum`] until the returned guard is dropped.
pub fn scope(engine: Rc<dyn Collective>) -> Scope {
    ENGINE.with(|e| *e.borrow_mut() = Some(engine));
    Scope(())
}

impl Drop for Scope {
    fn drop(&mut self) {
        ENGINE.with(|e| *e.borrow_mut() = None);
    }
}

/// Whether this thread sums over ranks (synchronised BatchNorm is on).
pub fn active() -> bool {
    ENGINE.with(|e| e.borrow().is_some())
}

/// The sum of `x` over the ranks, differentiable; `x` itself outside a [`scope`].
pub fn sum<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !active() {
        return x;
    }
    Tensor::from_dispatch(<Dispatch as AllReduceSum>::all_reduce_sum(x.into_dispatch()))
}

/// The op, routed by burn to the backend a tensor lives on (with or without autodiff).
#[backend_extension(Flex, LibTorch: cfg(feature = "tch"), Cube: cfg(any(feature = "cuda", feature = "wgpu")), Autodiff)]
pub trait AllReduceSum: Backend {
    /// `x` summed element-wise over the ranks.
    fn all_reduce_sum(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

#[derive(Debug)]
struct SumBackward;

impl<B: Backend> Backward<B, 1> for SumBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        if let Some(parent) = &ops.parents[0] {
            grads.register::<B>(parent.id, host::sum::<B>(dy));
        }
    }
}

impl<B: Backend, C: CheckpointStrategy> AllReduceSum for Autodiff<B, C> {
    fn all_reduce_sum(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let prep = SumBackward.prepare::<C>([x.node()]).compute_bound();
        prep.stateless(host::sum::<B>(x.into_primitive()))
    }
}

#[cfg(test)]
mod tests;
