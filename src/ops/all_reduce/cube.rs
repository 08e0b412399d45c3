//! The sum over the ranks on burn's CubeCL CUDA tensors (`cuda:N`, `--features cuda`): burn's
//! own collective, `burn::tensor::distributed::all_reduce`, which CubeCL's CUDA runtime serves
//! with NCCL (a communicator per device, made on first use by every rank at once).

use anyhow::{Result, bail};
use burn::tensor::distributed::{ReduceOperation, all_reduce};
use burn::tensor::{Device, Tensor};

/// The ranks' GPUs, in rank order.
#[derive(Clone)]
pub struct Plan {
    devices: Vec<Device>,
}

impl Plan {
    /// A group over `devices` (one rank each), or why NCCL cannot serve it.
    pub fn new(devices: Vec<Device>) -> Result<Self> {
        // SAFETY: only tries to open the shared library.
        if !unsafe { cudarc::nccl::sys::is_culib_present() } {
            bail!(
                "NCCL (libnccl.so) is not on the library path: add the folder that holds it to \
                 LD_LIBRARY_PATH"
            );
        }
        Ok(Self { devices })
    }

    /// `x` (on one of the plan's devices) summed over the ranks, as a new tensor.
    pub fn sum(&self, x: Tensor<1>) -> Result<Tensor<1>> {
        Ok(all_reduce(x, ReduceOperation::Sum, self.devices.clone()).resolve())
    }
}
