//! The communicator of MPI processes (feature `mpi`, the `mpi` crate over the
//! system's MPI library, e.g. Open MPI).

use super::{Communicator, Watchdog};
use crate::error::{Error, Result};
use mpi::collective::SystemOperation;
use mpi::datatype::Equivalence;
use mpi::environment::{Threading, Universe};
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator as _, CommunicatorCollectives, Root};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// MPI's world communicator. Collectives block; each is watched by a
/// [`Watchdog`], so a rank whose peers stop answering ends within the timeout
/// instead of waiting forever. MPI is finalised when this is dropped.
///
/// ```no_run
/// # fn main() -> keel::Result<()> {
/// use keel::distributed::Mpi;
/// use std::sync::Arc;
/// let mpi = Mpi::init(std::time::Duration::from_secs(120))?;
/// let mut model = keel::prelude::Sequential::new();
/// model.set_communicator(Arc::new(mpi));
/// # Ok(())
/// # }
/// ```
pub struct Mpi {
    calls: Mutex<Calls>,
    rank: usize,
    size: usize,
    watchdog: Watchdog,
}

/// What MPI calls need, behind one lock so that calls never overlap.
struct Calls {
    world: SimpleCommunicator,
    /// Send buffers (MPI all-reduce needs one apart from the result).
    send: Vec<f32>,
    send_f64: Vec<f64>,
    /// Time spent in collectives.
    waited: Duration,
    // Dropped last: finalises MPI.
    _universe: Universe,
}

// SAFETY: MPI is initialised with `Threading::Serialized` (or better) and every
// call goes through the `calls` mutex, so calls from different threads never
// overlap, which is all that level of thread support asks.
unsafe impl Send for Mpi {}
unsafe impl Sync for Mpi {}

impl Mpi {
    /// Initialises MPI (once per process). A collective that waits longer than
    /// `timeout` for the other ranks ends this process with an error naming it.
    pub fn init(timeout: Duration) -> Result<Mpi> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| Error::State("MPI is already initialised in this process".into()))?;
        if threading < Threading::Serialized {
            return Err(Error::State(format!(
                "the MPI library offers thread support {threading:?}; keel needs Serialized (rebuild MPI with thread support)"
            )));
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        let calls =
            Calls { world, send: Vec::new(), send_f64: Vec::new(), waited: Duration::ZERO, _universe: universe };
        Ok(Mpi { calls: Mutex::new(calls), rank, size, watchdog: Watchdog::start(rank, timeout) })
    }

    fn calls(&self) -> std::sync::MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the collective `what` under the watchdog, adding its time to `waited`.
    fn watched(&self, waited: &mut Duration, what: &'static str, collective: impl FnOnce()) {
        let _armed = self.watchdog.guard(what);
        let started = Instant::now();
        collective();
        *waited += started.elapsed();
    }
}

/// values <- their sum over all ranks (MPI needs a send buffer apart from the result).
fn sum_over_ranks<T: Equivalence + Copy>(world: &SimpleCommunicator, send: &mut Vec<T>, values: &mut [T]) {
    send.clear();
    send.extend_from_slice(values);
    world.all_reduce_into(&send[..], values, SystemOperation::sum());
}

impl Communicator for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()> {
        let mut calls = self.calls();
        let Calls { world, send, waited, .. } = &mut *calls;
        self.watched(waited, "all-reduce", || sum_over_ranks(world, send, values));
        Ok(())
    }

    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()> {
        let mut calls = self.calls();
        let Calls { world, send_f64, waited, .. } = &mut *calls;
        self.watched(waited, "all-reduce", || sum_over_ranks(world, send_f64, values));
        Ok(())
    }

    fn broadcast(&self, values: &mut [f32]) -> Result<()> {
        let mut calls = self.calls();
        let Calls { world, waited, .. } = &mut *calls;
        self.watched(waited, "broadcast", || world.process_at_rank(0).broadcast_into(values));
        Ok(())
    }

    fn collective_seconds(&self) -> f64 {
        self.calls().waited.as_secs_f64()
    }
}
