//! Data-parallel training's process group, with PyTorch DDP's semantics: each of `size`
//! ranks trains on its own shard of every global batch (global batch = per-rank batch ×
//! ranks), the gradients are averaged by an all-reduce before the global-norm clip, so every
//! rank takes the same SGD step; BatchNorm statistics stay per rank (DDP's default) and rank
//! 0 alone writes the run folder.
//!
//! Two collective engines: MPI (`--features mpi`, `world_mpi.rs`) for processes started by
//! `mpirun` (Open MPI, MPICH) on one machine or many, over whatever transport the MPI
//! library picks (shared memory, TCP, InfiniBand) — a rank that dies makes `mpirun` end the
//! whole job, naming it; and shared memory between the threads of one process
//! (`world_local.rs`, `train --devices`) — a rank that fails or hangs makes the others fail
//! naming it.

use std::rc::Rc;

use anyhow::{Result, bail};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};

use crate::collective::Collective;
use crate::infer::metrics::{Accuracy, VerbNoun};
use crate::ops::all_reduce::device::DeviceSum;
use crate::train::world_local::Member;

/// This process's place among the ranks of a run.
pub struct World {
    pub rank: usize,
    pub size: usize,
    engine: Option<Rc<dyn Collective>>,
    /// The gradients' sum on the GPUs (NCCL), where the ranks' devices allow it.
    device_sum: Option<DeviceSum>,
}

/// Launcher variables that give the rank count: Open MPI's, then PMI's (MPICH, Slurm).
const SIZE_VARS: &[&str] = &["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"];

/// Launcher variables that give a rank's place among the ranks of its machine: Open MPI's,
/// MPICH's (Hydra), Slurm's.
const LOCAL_RANK_VARS: &[&str] = &["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"];

impl World {
    /// One rank: nothing to reduce.
    pub fn single() -> Self {
        Self { rank: 0, size: 1, engine: None, device_sum: None }
    }

    /// The rank count an MPI launcher gave this process (1 when started alone).
    pub fn launcher_size() -> usize {
        SIZE_VARS.iter().find_map(|v| std::env::var(v).ok()?.parse::<usize>().ok()).unwrap_or(1)
    }

    /// The process group the launcher started this process in: `mpirun -n N gateshift
    /// train …` gives N ranks; started alone, one.
    pub fn from_launcher() -> Result<Self> {
        let size = Self::launcher_size();
        if size <= 1 {
            return Ok(Self::single());
        }
        Self::mpi(size)
    }

    /// The device of this process's rank for `--backend backend`: under an MPI launcher a GPU
    /// backend named without an index (`cuda`, `tch-cuda`) takes the GPU of the rank's place
    /// on its machine (local rank 0 → `:0`, 1 → `:1`, …), as `torchrun`'s `LOCAL_RANK` is used;
    /// an explicit index, or any other backend, is kept.
    pub fn rank_backend(backend: &str, var: impl Fn(&str) -> Option<String>) -> String {
        let launched = SIZE_VARS.iter().any(|v| var(v).and_then(|s| s.parse::<usize>().ok()).is_some_and(|n| n > 1));
        let local = LOCAL_RANK_VARS.iter().find_map(|v| var(v)?.parse::<usize>().ok());
        match (launched, local, backend) {
            (true, Some(local), "cuda" | "tch-cuda") => format!("{backend}:{local}"),
            _ => backend.to_string(),
        }
    }

    #[cfg(feature = "mpi")]
    fn mpi(size: usize) -> Result<Self> {
        let (engine, rank, n) = super::world_mpi::Mpi::start()?;
        if n != size {
            bail!("the launcher says {size} ranks, MPI's world has {n}");
        }
        Ok(Self { rank, size, engine: Some(Rc::new(engine)), device_sum: None })
    }

    #[cfg(not(feature = "mpi"))]
    fn mpi(size: usize) -> Result<Self> {
        bail!("started by an MPI launcher with {size} ranks, but this gateshift was built without `--features mpi`")
    }

    /// Rank `member.rank` of the devices of this process (`train --devices`), summing the
    /// gradients on its GPU with `device_sum` if given, in host memory otherwise.
    pub fn local(member: Member, device_sum: Option<DeviceSum>) -> Self {
        let (rank, size) = (member.rank, member.group.size());
        Self { rank, size, engine: Some(Rc::new(member)), device_sum }
    }

    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// The engine, for the sums inside the model (synchronised BatchNorm, `ops::all_reduce`).
    pub fn engine(&self) -> Option<Rc<dyn Collective>> {
        self.engine.clone()
    }

    pub fn sum_f32(&self, values: &mut [f32]) -> Result<()> {
        match &self.engine {
            Some(e) => e.sum_f32(values),
            None => Ok(()),
        }
    }

    pub fn sum_f64(&self, values: &mut [f64]) -> Result<()> {
        match &self.engine {
            Some(e) => e.sum_f64(values),
            None => Ok(()),
        }
    }

    /// Whether `flag` is set on any rank (Ctrl-C reaches the ranks at different moments).
    pub fn any(&self, flag: bool) -> Result<bool> {
        let mut v = [flag as u8 as f64];
        self.sum_f64(&mut v)?;
        Ok(v[0] > 0.0)
    }

    /// Checks that every rank holds the same `values` (the configuration and data a run was
    /// started with): ranks launched with different settings or lists would shard different
    /// orders and silently train on something else.
    pub fn check_agree(&self, what: &str, values: &[f64]) -> Result<()> {
        if self.size == 1 {
            return Ok(());
        }
        let mut sums: Vec<f64> = values.iter().flat_map(|&v| [v, v * v]).collect();
        self.sum_f64(&mut sums)?;
        let n = self.size as f64;
        for (k, pair) in sums.chunks(2).enumerate() {
            // Equal on every rank exactly when the variance over the ranks is 0.
            let (mean, mean_sq) = (pair[0] / n, pair[1] / n);
            if (mean_sq - mean * mean).abs() > 1e-9 * mean_sq.abs().max(1.0)
                || (values[k] - mean).abs() > 1e-9 * mean.abs().max(1.0)
            {
                bail!(
                    "rank {} of {}: the ranks disagree on {what} (value {k}): start every rank with the same configuration and data",
                    self.rank,
                    self.size
                );
            }
        }
        Ok(())
    }

    /// This rank's share of `order`: positions `rank, rank + size, …` (PyTorch's
    /// `DistributedSampler` on an order already shuffled by seed and epoch), so that batch k
    /// of every rank together is batch k of one rank with a global batch `size` times larger.
    /// As there, the order is padded with its own start to a multiple of `size`: every rank
    /// gets as many samples, hence as many batches and all-reduces (uneven shards would leave
    /// one rank waiting for a step the others never take).
    pub fn shard<T: Clone>(&self, order: &[T]) -> Vec<T> {
        let total = order.len().div_ceil(self.size) * self.size;
        order.iter().cycle().take(total).skip(self.rank).step_by(self.size).cloned().collect()
    }

    /// Makes every rank's parameters rank 0's (DDP's broadcast at the start of a run): the
    /// ranks of one process draw their initialisation from one generator in turn, and a
    /// difference would stay for the whole run.
    pub fn broadcast_parameters<M: Module>(&self, model: M) -> Result<M> {
        if self.size == 1 {
            return Ok(model);
        }
        let mut gather = Gather(Vec::new());
        model.visit(&mut gather);
        if gather.0.is_empty() {
            return Ok(model);
        }
        let flat = Tensor::cat(gather.0, 0).into_data().convert::<f32>();
        let mut values = flat.try_into_vec::<f32>().map_err(|e| anyhow::anyhow!("parameters to the host: {e:?}"))?;
        if !self.is_root() {
            values.fill(0.0);
        }
        self.sum_f32(&mut values)?;
        Ok(model.map(&mut Scatter { values, offset: 0 }))
    }

    /// Averages `grads` over the ranks (sum, then ÷ size), in one all-reduce of all of them:
    /// on the GPUs where the ranks' devices allow it, in host memory otherwise.
    pub fn average_gradients<M: Module>(&self, model: &M, grads: &mut GradientsParams) -> Result<()> {
        if self.size == 1 {
            return Ok(());
        }
        let mut collect = Flatten { grads, parts: Vec::new(), ids: Vec::new() };
        model.visit(&mut collect);
        let Flatten { parts, ids, .. } = collect;
        if parts.is_empty() {
            return Ok(());
        }
        let flat = Tensor::cat(parts, 0).cast(burn::tensor::DType::F32);
        let summed = match &self.device_sum {
            Some(device) => device.sum(flat)?,
            None => self.sum_on_host(flat)?,
        };
        let averaged = summed.mul_scalar(1.0 / self.size as f32);
        let mut offset = 0;
        for (id, dims) in ids {
            let n: usize = dims.iter().product();
            register(grads, id, averaged.clone().slice(offset..offset + n), &dims);
            offset += n;
        }
        Ok(())
    }

    /// `flat` summed over the ranks through host memory, back on its device.
    fn sum_on_host(&self, flat: Tensor<1>) -> Result<Tensor<1>> {
        let device = flat.device();
        let data = flat.into_data().convert::<f32>();
        let mut values = data.try_into_vec::<f32>().map_err(|e| anyhow::anyhow!("gradients to the host: {e:?}"))?;
        self.sum_f32(&mut values)?;
        let n = values.len();
        Ok(Tensor::<1>::from_data(TensorData::new(values, [n]), &device))
    }

    /// Sums a two-head evaluation's counters over the ranks.
    pub fn reduce_verb_noun(&self, vn: &mut VerbNoun) -> Result<()> {
        self.reduce_accuracy(&mut vn.verb)?;
        self.reduce_accuracy(&mut vn.noun)?;
        let mut v = [vn.action_top1 as f64, vn.action_top5 as f64];
        self.sum_f64(&mut v)?;
        (vn.action_top1, vn.action_top5) = (v[0] as usize, v[1] as usize);
        Ok(())
    }

    /// Sums `acc`'s counters (and confusion matrix) over the ranks.
    pub fn reduce_accuracy(&self, acc: &mut Accuracy) -> Result<()> {
        if self.size == 1 {
            return Ok(());
        }
        let mut v: Vec<f64> = [acc.count, acc.top1, acc.top5].iter().map(|&c| c as f64).collect();
        v.extend(acc.confusion.iter().flatten().map(|&c| c as f64));
        self.sum_f64(&mut v)?;
        (acc.count, acc.top1, acc.top5) = (v[0] as usize, v[1] as usize, v[2] as usize);
        for (cell, &s) in acc.confusion.iter_mut().flatten().zip(&v[3..]) {
            *cell = s as usize;
        }
        Ok(())
    }
}

/// Each gradient flattened, in visit order (the same on every rank: one model).
struct Flatten<'a> {
    grads: &'a GradientsParams,
    parts: Vec<Tensor<1>>,
    ids: Vec<(ParamId, Vec<usize>)>,
}

impl ModuleVisitor for Flatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some(grad) = self.grads.get::<D>(param.id) else { return };
        let dims = grad.dims().to_vec();
        self.parts.push(grad.reshape([dims.iter().product::<usize>()]));
        self.ids.push((param.id, dims));
    }
}

/// Every parameter flattened, in visit order.
struct Gather(Vec<Tensor<1>>);

impl ModuleVisitor for Gather {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val().detach();
        let n = t.shape().num_elements();
        self.0.push(t.reshape([n]).cast(burn::tensor::DType::F32));
    }
}

/// Sets every parameter, in visit order, from `values`.
struct Scatter {
    values: Vec<f32>,
    offset: usize,
}

impl ModuleMapper for Scatter {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| {
            let (dims, n, dtype, device) = (t.dims(), t.shape().num_elements(), t.dtype(), t.device());
            let data = TensorData::new(self.values[self.offset..self.offset + n].to_vec(), [n]);
            self.offset += n;
            let value = Tensor::<1>::from_data(data, &device).reshape(dims).cast(dtype);
            if t.is_require_grad() { value.require_grad() } else { value }
        })
    }
}

/// Registers `flat` reshaped to `dims` as the gradient of `id`.
fn register(grads: &mut GradientsParams, id: ParamId, flat: Tensor<1>, dims: &[usize]) {
    match dims.len() {
        1 => grads.register(id, flat),
        2 => grads.register::<2>(id, flat.reshape([dims[0], dims[1]])),
        3 => grads.register::<3>(id, flat.reshape([dims[0], dims[1], dims[2]])),
        4 => grads.register::<4>(id, flat.reshape([dims[0], dims[1], dims[2], dims[3]])),
        5 => grads.register::<5>(id, flat.reshape([dims[0], dims[1], dims[2], dims[3], dims[4]])),
        r => unreachable!("a parameter of rank {r}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_interleave_and_cover_the_global_order() {
        let order: Vec<usize> = (0..10).rev().collect();
        let shard = |rank, size| World { rank, size, engine: None, device_sum: None }.shard(&order);
        assert_eq!(shard(0, 2), [9, 7, 5, 3, 1]);
        assert_eq!(shard(1, 2), [8, 6, 4, 2, 0]);
        // Batch k of each rank (2 per rank) is batch k of one rank with 4 per batch.
        let (a, b) = (shard(0, 2), shard(1, 2));
        let mut first: Vec<usize> = a[..2].iter().chain(&b[..2]).copied().collect();
        first.sort();
        let mut global = order[..4].to_vec();
        global.sort();
        assert_eq!(first, global);
        assert_eq!(shard(0, 1), order);
        // 10 over 3 ranks: padded to 12 with the order's start, 4 each.
        let shard3: Vec<Vec<usize>> = (0..3).map(|r| shard(r, 3)).collect();
        assert_eq!(shard3, [vec![9, 6, 3, 0], vec![8, 5, 2, 9], vec![7, 4, 1, 8]]);
        assert!(World { rank: 1, size: 4, engine: None, device_sum: None }.shard::<usize>(&[]).is_empty());
    }

    #[test]
    fn launched_ranks_take_the_gpu_of_their_local_rank() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let ompi = env(&[("OMPI_COMM_WORLD_SIZE", "4"), ("OMPI_COMM_WORLD_LOCAL_RANK", "1")]);
        assert_eq!(World::rank_backend("cuda", ompi), "cuda:1");
        assert_eq!(World::rank_backend("tch-cuda", ompi), "tch-cuda:1");
        // An explicit index, a CPU backend, or no launcher: as given.
        assert_eq!(World::rank_backend("cuda:3", ompi), "cuda:3");
        assert_eq!(World::rank_backend("flex", ompi), "flex");
        assert_eq!(World::rank_backend("cuda", env(&[])), "cuda");
        assert_eq!(World::rank_backend("cuda", env(&[("PMI_SIZE", "1"), ("MPI_LOCALRANKID", "0")])), "cuda");
        let slurm = env(&[("PMI_SIZE", "8"), ("SLURM_LOCALID", "5")]);
        assert_eq!(World::rank_backend("tch-cuda", slurm), "tch-cuda:5");
        assert_eq!(World::rank_backend("cuda", env(&[("PMI_SIZE", "8"), ("SLURM_LOCALID", "x")])), "cuda");
    }

    #[test]
    fn a_single_rank_needs_no_engine() {
        let w = World::single();
        let mut v = [1.0f32, 2.0];
        w.sum_f32(&mut v).unwrap();
        assert_eq!(v, [1.0, 2.0]);
        assert!(w.is_root());
    }
}
