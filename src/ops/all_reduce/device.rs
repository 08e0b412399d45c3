//! The sum of a flat float32 tensor over the ranks of `train --devices`, on the GPUs
//! themselves: NCCL, through burn's collective for CubeCL's `cuda:N` (`cube.rs`) and through
//! cudarc for libtorch's `tch-cuda:N` (`nccl.rs`). Everything else — flex and wgpu ranks,
//! mixed devices, MPI ranks, `GATESHIFT_DEVICE_ALL_REDUCE=0` — sums in host memory through
//! the group's [`Collective`](crate::collective::Collective).

use anyhow::Result;
use burn::tensor::{Device, Tensor};

/// How the ranks of one group sum on their devices; made once, before the ranks start.
#[derive(Clone)]
pub enum Plan {
    #[cfg(feature = "cuda")]
    Cube(super::cube::Plan),
    #[cfg(feature = "tch")]
    Nccl(super::nccl::Plan, Vec<usize>),
}

/// One rank's end of a [`Plan`].
pub enum DeviceSum {
    #[cfg(feature = "cuda")]
    Cube(super::cube::Plan),
    #[cfg(feature = "tch")]
    Nccl(super::nccl::Rank),
}

/// The NCCL-capable kind of GPU a device is, and its ordinal.
#[derive(Clone, Copy, PartialEq)]
#[cfg_attr(not(any(feature = "cuda", feature = "tch")), allow(dead_code))]
enum Gpu {
    Cube(usize),
    Torch(usize),
}

impl Gpu {
    #[allow(deprecated)] // burn 0.22 marks its libtorch backend deprecated; `tch` still uses it
    fn of(device: &Device) -> Option<Self> {
        #[cfg(any(feature = "cuda", feature = "tch"))]
        use burn::backend::DispatchDevice;
        match device.clone().inner().as_dispatch() {
            #[cfg(feature = "cuda")]
            DispatchDevice::Cube(cubecl::Device::Cuda(d)) => Some(Self::Cube(d.index)),
            #[cfg(feature = "tch")]
            DispatchDevice::LibTorch(burn::backend::LibTorchDevice::Cuda(i)) => Some(Self::Torch(*i)),
            _ => None,
        }
    }

    #[cfg_attr(not(feature = "tch"), allow(dead_code))]
    fn ordinal(self) -> usize {
        match self {
            Self::Cube(i) | Self::Torch(i) => i,
        }
    }

    fn same_kind(self, other: Self) -> bool {
        matches!((self, other), (Self::Cube(_), Self::Cube(_)) | (Self::Torch(_), Self::Torch(_)))
    }
}

/// The GPUs of `devices` when NCCL can join them: all of one kind, each a different GPU (NCCL
/// refuses two ranks on one GPU, which a one-GPU test of the route asks for).
fn gpus(devices: &[Device]) -> Option<Vec<Gpu>> {
    let gpus: Vec<Gpu> = devices.iter().map(Gpu::of).collect::<Option<_>>()?;
    let distinct = gpus.iter().enumerate().all(|(i, g)| !gpus[..i].contains(g));
    (distinct && gpus.iter().all(|g| g.same_kind(gpus[0]))).then_some(gpus)
}

impl Plan {
    /// The on-device route for ranks on `devices` (one each, in rank order), `None` for the
    /// host route; an error when the devices ask for NCCL and it cannot be had (the message
    /// says how to get it, or to choose the host route).
    pub fn new(devices: &[Device]) -> Result<Option<Self>> {
        if devices.len() < 2 || !crate::ops::route::switches().device_all_reduce {
            return Ok(None);
        }
        let Some(gpus) = gpus(devices) else { return Ok(None) };
        let fail =
            |e: anyhow::Error| anyhow::anyhow!("{e:#}; or sum through host memory with GATESHIFT_DEVICE_ALL_REDUCE=0");
        Ok(match gpus[0] {
            #[cfg(feature = "cuda")]
            Gpu::Cube(_) => Some(Self::Cube(super::cube::Plan::new(devices.to_vec()).map_err(fail)?)),
            #[cfg(feature = "tch")]
            Gpu::Torch(_) => {
                let ordinals = gpus.iter().map(|g| g.ordinal()).collect();
                Some(Self::Nccl(super::nccl::Plan::new(gpus.len()).map_err(fail)?, ordinals))
            }
            #[allow(unreachable_patterns)]
            _ => {
                let _ = fail;
                None
            }
        })
    }

    /// Rank `rank` joins: every rank of the plan at once, each on its own thread.
    pub fn join(&self, rank: usize) -> Result<DeviceSum> {
        let _ = rank;
        match self {
            #[cfg(feature = "cuda")]
            Self::Cube(plan) => Ok(DeviceSum::Cube(plan.clone())),
            #[cfg(feature = "tch")]
            Self::Nccl(plan, ordinals) => Ok(DeviceSum::Nccl(plan.join(rank, ordinals[rank])?)),
            #[allow(unreachable_patterns)]
            _ => unreachable!("no on-device route is compiled in"),
        }
    }
}

impl DeviceSum {
    /// `x`, float32 on this rank's GPU, summed over the ranks.
    pub fn sum(&self, x: Tensor<1>) -> Result<Tensor<1>> {
        let _ = &x;
        match self {
            #[cfg(feature = "cuda")]
            Self::Cube(plan) => plan.sum(x),
            #[cfg(feature = "tch")]
            Self::Nccl(rank) => rank.sum(x),
            #[allow(unreachable_patterns)]
            _ => unreachable!("no on-device route is compiled in"),
        }
    }
}
