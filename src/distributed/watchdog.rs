//! Bounded waits for blocking collectives: a rank whose peer died, hangs or
//! was stopped would otherwise wait in an all-reduce forever.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A thread that ends the process with an error when an operation armed with
/// [`Watchdog::guard`] has not finished within the timeout. Ending the
/// process is the one way out of a blocking MPI call; the launcher (mpirun)
/// then stops the other ranks.
pub struct Watchdog {
    armed: Arc<Mutex<Option<(Instant, &'static str)>>>,
}

/// Disarms the watchdog when dropped.
pub struct Guard<'a>(&'a Watchdog);

impl Watchdog {
    /// Starts the watchdog of `rank`: an operation still running after
    /// `timeout` prints an error naming it and exits with code 1.
    pub fn start(rank: usize, timeout: Duration) -> Self {
        let armed: Arc<Mutex<Option<(Instant, &'static str)>>> = Arc::default();
        let watched = Arc::clone(&armed);
        let poll = (timeout / 10).clamp(Duration::from_millis(10), Duration::from_millis(250));
        std::thread::Builder::new()
            .name("keel-watchdog".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(poll);
                    let late = *watched.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some((since, what)) = late.filter(|(since, _)| since.elapsed() > timeout) {
                        eprintln!(
                            "error: rank {rank}: {what} waited {:.1} s for the other ranks (timeout {} s): a rank died, \
                             hangs or was stopped; ending this rank so that the launcher stops the job \
                             (raise --mpi-timeout / KEEL_MPI_TIMEOUT if steps legitimately take longer)",
                            since.elapsed().as_secs_f64(),
                            timeout.as_secs_f64()
                        );
                        std::process::exit(1);
                    }
                    if Arc::strong_count(&watched) == 1 {
                        return;
                    }
                }
            })
            .expect("the watchdog thread starts");
        Watchdog { armed }
    }

    /// Arms the watchdog for `what` until the guard is dropped.
    pub fn guard(&self, what: &'static str) -> Guard<'_> {
        *self.armed.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), what));
        Guard(self)
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        *self.0.armed.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}
