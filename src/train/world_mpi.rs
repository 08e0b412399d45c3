//! The MPI route of [`super::world::World`] (`--features mpi`): the rsmpi bindings over the
//! system's MPI library (Debian's Open MPI, `scripts/setup.sh`); all-reduce with
//! `MPI_SUM` on the world communicator.

use anyhow::{Result, bail};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::traits::{Communicator, CommunicatorCollectives};

use crate::collective::Collective;

/// An initialised MPI environment (finalised when dropped).
pub struct Mpi {
    universe: Universe,
}

impl Mpi {
    /// Initialises MPI: the engine, this process's rank and the world size.
    pub fn start() -> Result<(Self, usize, usize)> {
        let Some(universe) = mpi::initialize() else {
            bail!("MPI was already initialised in this process");
        };
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok((Self { universe }, rank, size))
    }
}

impl Collective for Mpi {
    // MPI's default error handler ends the whole job on a failed collective (`mpirun` names the
    // rank that died), so a call that returns has succeeded.
    fn sum_f32(&self, values: &mut [f32]) -> Result<()> {
        let input = values.to_vec();
        self.universe.world().all_reduce_into(&input[..], values, SystemOperation::sum());
        Ok(())
    }

    fn sum_f64(&self, values: &mut [f64]) -> Result<()> {
        let input = values.to_vec();
        self.universe.world().all_reduce_into(&input[..], values, SystemOperation::sum());
        Ok(())
    }
}
