//! The sum over the ranks on libtorch's CUDA tensors (`tch-cuda:N`, `--features tch`): NCCL,
//! through cudarc's bindings, one communicator per rank thread. libtorch queues its kernels
//! on the device's legacy default stream, so NCCL runs on that stream too, after the kernels
//! that wrote its input.

// burn 0.22 marks its libtorch backend deprecated; `tch` still uses it.
#![allow(deprecated)]

use anyhow::{Context, Result, anyhow, bail};
use burn::backend::libtorch::TchTensor;
use burn::backend::{BackendTensor, DispatchTensorKind};
use burn::tensor::Tensor;
use cudarc::driver::CudaContext;
use cudarc::nccl::{Comm, Id, ReduceOp};

/// What the ranks share to form one NCCL group: its unique id (made once, before they start).
#[derive(Clone, Copy)]
pub struct Plan {
    id: Id,
    size: usize,
}

impl Plan {
    /// A new group of `size` ranks, or why NCCL cannot serve it.
    pub fn new(size: usize) -> Result<Self> {
        // SAFETY: only tries to open the shared library.
        if !unsafe { cudarc::nccl::sys::is_culib_present() } {
            bail!(
                "NCCL (libnccl.so) is not on the library path: add the folder that holds it (a pip \
                 torch has it in site-packages/nvidia/nccl/lib, as libnccl.so.2: link it as \
                 libnccl.so) to LD_LIBRARY_PATH"
            );
        }
        let id = Id::new().map_err(|e| anyhow!("ncclGetUniqueId: {e:?}"))?;
        Ok(Self { id, size })
    }

    /// Rank `rank` on the GPU `ordinal` joins the group; every rank must join at once (NCCL's
    /// `ncclCommInitRank` returns when all have).
    pub fn join(&self, rank: usize, ordinal: usize) -> Result<Rank> {
        let ctx = CudaContext::new(ordinal).map_err(|e| anyhow!("CUDA device {ordinal}: {e:?}"))?;
        ctx.bind_to_thread().map_err(|e| anyhow!("CUDA device {ordinal}: {e:?}"))?;
        let comm = Comm::from_rank(ctx.default_stream(), rank, self.size, self.id)
            .map_err(|e| anyhow!("ncclCommInitRank (rank {rank} of {}): {e:?}", self.size))?;
        Ok(Rank { comm })
    }
}

/// One rank's NCCL communicator (it stays on the rank's thread).
pub struct Rank {
    comm: Comm,
}

impl Rank {
    /// `x` (float32, on this rank's GPU) summed over the ranks, as a new tensor.
    pub fn sum(&self, x: Tensor<1>) -> Result<Tensor<1>> {
        let mut t = x.into_dispatch();
        let DispatchTensorKind::LibTorch(BackendTensor::Float(input)) = &t.kind else {
            bail!("NCCL sums libtorch tensors; this one is on another backend");
        };
        let input = input.tensor.contiguous();
        if input.kind() != tch::Kind::Float || !input.device().is_cuda() {
            bail!("NCCL sum of a {:?} tensor on {:?}: expected float32 on a GPU", input.kind(), input.device());
        }
        let output = input.empty_like();
        let stream = self.comm.stream();
        let n = input.numel();
        // SAFETY: both pointers are float32 CUDA allocations of `n` elements held alive by
        // `input` and `output` until the stream has finished with them (synchronised below);
        // the slices are leaked so that cudarc never frees libtorch's memory.
        let reduced = unsafe {
            let send = stream.upgrade_device_ptr::<f32>(input.data_ptr() as u64, n);
            let mut recv = stream.upgrade_device_ptr::<f32>(output.data_ptr() as u64, n);
            let reduced = self.comm.all_reduce(&send, &mut recv, &ReduceOp::Sum);
            let _ = (send.leak(), recv.leak());
            reduced
        };
        reduced.map_err(|e| anyhow!("ncclAllReduce: {e:?}"))?;
        stream.synchronize().map_err(|e| anyhow!("{e:?}")).context("waiting for ncclAllReduce")?;
        t.kind = DispatchTensorKind::LibTorch(BackendTensor::Float(TchTensor::new(output)));
        Ok(Tensor::from_dispatch(t))
    }
}
