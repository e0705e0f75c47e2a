//! Synchronous data-parallel training across processes.
//!
//! A model given a [`Communicator`] (`model.set_communicator(...)`) trains as
//! one of N ranks: `fit` broadcasts rank 0's weights and optimizer state,
//! splits every global batch into N contiguous parts ([`shard`]), sums the
//! gradients (already divided by the global batch size) with one all-reduce
//! over the flat gradient buffer before each optimizer step, and sums loss
//! and metrics the same way; validation and `evaluate` shard their samples
//! and sum their results. Every rank shuffles with the same seed and draws
//! each sample's dropout mask and augmentation from a stream of its position
//! in the epoch ([`crate::random::BatchDraws`]), so N ranks train the same
//! model as one process, up to the order of float summation. Only rank 0
//! prints progress; writing files is left to the caller (the CLI writes
//! from rank 0 only).
//!
//! With the `mpi` feature, `Mpi` is the communicator of processes started
//! by `mpirun` (Open MPI or any MPI the `mpi` crate builds against).

#[cfg(feature = "mpi")]
mod mpi;
mod watchdog;

#[cfg(feature = "mpi")]
pub use mpi::Mpi;
pub use watchdog::Watchdog;

use crate::error::{Error, Result};
use std::ops::Range;

/// The collective operations data-parallel training needs. Every rank must
/// call the same operations in the same order, with buffers of equal length.
pub trait Communicator: Send + Sync {
    /// This process's rank, 0-based.
    fn rank(&self) -> usize;

    /// Number of ranks.
    fn size(&self) -> usize;

    /// Replaces `values` by their element-wise sum over all ranks.
    fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()>;

    /// Replaces `values` by their element-wise sum over all ranks, in f64
    /// (losses, metric counts, sample counts).
    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()>;

    /// Replaces `values` on every rank by rank 0's.
    fn broadcast(&self, values: &mut [f32]) -> Result<()>;

    /// Seconds spent in collectives so far, waiting for slower ranks included
    /// (0 where not measured).
    fn collective_seconds(&self) -> f64 {
        0.0
    }
}

/// The contiguous part of `0..len` that `rank` of `size` ranks works on; the
/// parts' lengths differ by at most one and cover `0..len` in rank order.
pub fn shard(len: usize, rank: usize, size: usize) -> Range<usize> {
    len * rank / size..len * (rank + 1) / size
}

/// Checks that every rank holds the same `values` (sizes of the data, of
/// the model): when one differs, every rank returns an error (so none waits
/// for the others), naming `what` and the values.
pub fn check_same(comm: &dyn Communicator, what: &str, values: &[f64]) -> Result<()> {
    let root = rank0_values(comm, values)?;
    let mut differing = [(root != values) as u8 as f64];
    comm.all_reduce_sum_f64(&mut differing)?;
    if root != values {
        return Err(Error::InvalidArgument(format!(
            "rank {} has {what} {values:?} but rank 0 has {root:?}; every rank must load the same data and model",
            comm.rank()
        )));
    }
    if differing[0] > 0.0 {
        return Err(Error::InvalidArgument(format!(
            "{} rank(s) have other {what} than rank {}'s {values:?}; every rank must load the same data and model",
            differing[0],
            comm.rank()
        )));
    }
    Ok(())
}

/// Rank 0's `value`, on every rank.
pub fn broadcast_u64(comm: &dyn Communicator, value: u64) -> Result<u64> {
    // Two 32-bit halves: exact in f64.
    let halves = rank0_values(comm, &[(value >> 32) as f64, (value & 0xFFFF_FFFF) as f64])?;
    Ok(((halves[0] as u64) << 32) | halves[1] as u64)
}

/// Rank 0's `values` on every rank: a sum to which the other ranks add zeros.
fn rank0_values(comm: &dyn Communicator, values: &[f64]) -> Result<Vec<f64>> {
    let mut root = if comm.rank() == 0 { values.to_vec() } else { vec![0.0; values.len()] };
    comm.all_reduce_sum_f64(&mut root)?;
    Ok(root)
}

/// Where a launcher (mpirun, mpiexec, srun with PMI) started this process as
/// one of several ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub size: usize,
    /// Ranks on this host, to share its cores between them.
    pub local_size: usize,
}

/// The rank and size a launcher gave this process, read from the
/// environment variables Open MPI and PMI-based launchers (MPICH, Intel MPI,
/// Slurm) set; `None` when started on its own.
pub fn launched() -> Option<Launch> {
    let var = |names: &[&str]| names.iter().find_map(|n| std::env::var(n).ok()?.trim().parse::<usize>().ok());
    let size = var(&["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"])?;
    let rank = var(&["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"]).unwrap_or(0);
    let local_size = var(&["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE"]).unwrap_or(1);
    Some(Launch { rank, size, local_size: local_size.max(1) })
}
