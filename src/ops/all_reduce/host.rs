//! The sum through host memory, on any backend: read the tensor, sum it with the thread's
//! collective engine, write it back on the tensor's device in its dtype.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, TensorMetadata};
use burn::tensor::TensorData;

use super::{AllReduceSum, ENGINE};

/// `x` summed over the ranks of this thread's engine. A broken group (a rank that failed or
/// stopped answering) cannot be reported through a tensor op: it panics with the engine's
/// error, which the rank's thread reports as its failure (`train::devices`).
pub fn sum<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let (device, dtype, shape) = (x.device(), x.dtype(), x.shape());
    let data = burn::tensor::try_read_sync(B::float_into_data(x))
        .expect("a blocking read on this platform")
        .unwrap_or_else(|e| panic!("all-reduce: reading the tensor: {e:?}"));
    let mut values: Vec<f32> =
        data.convert::<f32>().try_into_vec::<f32>().unwrap_or_else(|e| panic!("all-reduce: {e:?}"));
    let engine = ENGINE.with(|e| e.borrow().clone()).expect("all-reduce outside a scope");
    if let Err(e) = engine.sum_f32(&mut values) {
        panic!("{e:#}");
    }
    B::float_from_data(TensorData::new(values, shape).convert_dtype(dtype), &device)
}

impl AllReduceSum for Flex {
    fn all_reduce_sum(x: FloatTensor<Self>) -> FloatTensor<Self> {
        sum::<Self>(x)
    }
}

#[cfg(feature = "tch")]
#[allow(deprecated)] // burn 0.22 marks its libtorch backend deprecated; `tch` still uses it
impl AllReduceSum for burn::backend::LibTorch {
    fn all_reduce_sum(x: FloatTensor<Self>) -> FloatTensor<Self> {
        sum::<Self>(x)
    }
}

#[cfg(any(feature = "cuda", feature = "wgpu"))]
impl AllReduceSum for burn::backend::Cube {
    fn all_reduce_sum(x: FloatTensor<Self>) -> FloatTensor<Self> {
        sum::<Self>(x)
    }
}
