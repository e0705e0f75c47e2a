//! An operation's tasks over a held pool, with no thread put to sleep.
//!
//! Under a [`Device::stay_warm`](crate::device::Device::stay_warm) hold the
//! pool's other threads spin, looking for work. A rayon join still puts the
//! caller to sleep when it waits more than a few microseconds for the task
//! another thread took (the last of an operation's), and a sleeping thread
//! takes tens of microseconds to wake, more in a virtual machine: on a
//! 2-vCPU guest, several times a step (`keel train` of the reference model
//! 0.41-0.46 -> 0.37-0.39 s/epoch without them; futex calls 7,665 -> 66).
//! Here the caller publishes the operation's tasks instead; the held threads
//! and the caller take them, each from its own run of tasks first (the same
//! samples from one operation to the next: they stay in that thread's
//! cache) and then from the others', and the caller waits for the last one
//! spinning.
//!
//! [`for_each`] (or [`ForEachTask::for_each_task`]) takes any of rayon's
//! indexed parallel iterators (chunks, zips, enumerations) and runs each
//! item once, as rayon's `for_each` would; outside a hold, within another
//! operation's task, or with no thread held, it is rayon's `for_each`.
//! Which thread runs an item never changes what the item computes, so
//! results stay bit-identical.

use rayon::iter::plumbing::{Producer, ProducerCallback};
use rayon::prelude::*;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// The most pieces an operation is split into (its items grouped evenly).
const MAX_PIECES: usize = 64;

/// The most runs of pieces (one a thread, threads past this share).
const MAX_RUNS: usize = 16;

/// The operation in flight, published by the leading thread; null when none.
static JOB: AtomicPtr<Published> = AtomicPtr::new(std::ptr::null_mut());

/// Threads inside a published operation now (the leader excepted): the
/// leader returns only once this is zero and the operation unpublished.
static HELPERS: AtomicUsize = AtomicUsize::new(0);

/// Operations published so far: a helper takes part in each once.
static PUBLISHED: AtomicUsize = AtomicUsize::new(0);

/// The thread that holds the pool warm and leads operations (its [`me`]); 0
/// when none. One hold at a time in the process: a hold asked for beside
/// another (a second caller) holds nothing.
static LEADER: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// A value whose address names this thread while it lives.
    static ME: u8 = const { 0 };
}

/// This thread's name for [`LEADER`] (never 0).
fn me() -> usize {
    ME.with(|me| me as *const u8 as usize)
}

/// A counter on a cache line of its own.
#[repr(align(128))]
struct Padded(AtomicUsize);

/// What a helper needs: the operation's number, and how to take part.
struct Published {
    number: usize,
    job: *const (),
    work: unsafe fn(*const (), usize),
}

/// One operation: its pieces, and a claim counter per run of them.
struct Job<'f, P, F> {
    pieces: [UnsafeCell<Option<P>>; MAX_PIECES],
    /// Run r covers pieces `bounds[r]..bounds[r + 1]`; `next[r]` is its next unclaimed piece.
    next: [Padded; MAX_RUNS],
    bounds: [usize; MAX_RUNS + 1],
    runs: usize,
    f: &'f F,
}

// A piece is taken (and its producer moved out) only by the one thread whose
// claim returned its index; the rest of the job is read-only or atomic.
unsafe impl<P: Send, F: Sync> Sync for Job<'_, P, F> {}

impl<P: Producer, F: Fn(P::Item) + Sync> Job<'_, P, F> {
    /// Runs pieces until none is left: this thread's run first (`index`
    /// chooses it), then each following run's.
    fn work(&self, index: usize) {
        for k in 0..self.runs {
            let r = (index + k) % self.runs;
            loop {
                let i = self.next[r].0.fetch_add(1, Ordering::Relaxed);
                if i >= self.bounds[r + 1] {
                    break;
                }
                // SAFETY: the claim above returned `i` to this thread only.
                let piece = unsafe { (*self.pieces[i].get()).take() };
                piece.expect("each piece is claimed once").into_iter().for_each(self.f);
            }
        }
    }
}

/// `Job::work` for a helper, through the type-erased pointer of [`Published`].
///
/// # Safety
/// `job` points to a live `Job<P, F>`.
unsafe fn work<P: Producer, F: Fn(P::Item) + Sync>(job: *const (), index: usize) {
    unsafe { &*(job as *const Job<P, F>) }.work(index)
}

/// Runs `f` on every item of `iter`, once each, as `iter.for_each(f)` does;
/// over the held threads where this thread holds the pool warm.
pub fn for_each<I, F>(iter: I, f: F)
where
    I: IndexedParallelIterator,
    F: Fn(I::Item) + Sync + Send,
{
    if iter.len() < 2 || !leads() {
        return iter.for_each(f);
    }
    let len = iter.len();
    iter.with_producer(Split { f: &f, len })
}

/// [`for_each`] as a method of rayon's indexed parallel iterators.
pub trait ForEachTask: IndexedParallelIterator {
    /// Runs `f` on every item, once each, over the held threads where this
    /// thread holds the pool warm (else rayon's `for_each`).
    fn for_each_task<F: Fn(Self::Item) + Sync + Send>(self, f: F) {
        for_each(self, f)
    }
}

impl<I: IndexedParallelIterator> ForEachTask for I {}

/// Whether this thread leads: it holds the pool warm, a thread is held (or
/// on its way: it takes part in what is published by then), and no
/// operation of its own is in flight (a task's inner loops run rayon's way).
fn leads() -> bool {
    let held = super::SPINNING.load(Ordering::Acquire) + super::STARTING.load(Ordering::Acquire);
    leading() && held > 0 && JOB.load(Ordering::Relaxed).is_null()
}

/// Whether this thread holds the pool warm.
pub(super) fn leading() -> bool {
    LEADER.load(Ordering::Acquire) == me()
}

/// Makes this thread the one that leads operations, where no thread does
/// (a hold starts); whether it does now.
pub(super) fn try_lead() -> bool {
    LEADER.compare_exchange(0, me(), Ordering::AcqRel, Ordering::Acquire).is_ok()
}

/// No thread leads (the hold ended, on whichever thread dropped it).
pub(super) fn end_lead() {
    LEADER.store(0, Ordering::Release);
}

/// The callback that receives the iterator's producer.
struct Split<'f, F> {
    f: &'f F,
    len: usize,
}

impl<T, F: Fn(T) + Sync> ProducerCallback<T> for Split<'_, F> {
    type Output = ();

    fn callback<P: Producer<Item = T>>(self, producer: P) {
        let pieces = self.len.min(MAX_PIECES);
        let threads = rayon::current_num_threads();
        let runs = threads.min(pieces).min(MAX_RUNS);
        let mut job = Job {
            pieces: std::array::from_fn(|_| UnsafeCell::new(None)),
            next: std::array::from_fn(|_| Padded(AtomicUsize::new(0))),
            bounds: [pieces; MAX_RUNS + 1],
            runs,
            f: self.f,
        };
        // Pieces of len / pieces items (the first len % pieces one more).
        let mut rest = Some(producer);
        for i in 0..pieces {
            let size = self.len / pieces + usize::from(i < self.len % pieces);
            let (piece, after) = rest.take().expect("split in order").split_at(size);
            *job.pieces[i].get_mut() = Some(piece);
            rest = Some(after);
        }
        for r in 0..runs {
            job.bounds[r] = r * pieces / runs;
            job.next[r].0.store(job.bounds[r], Ordering::Relaxed);
        }
        let number = PUBLISHED.fetch_add(1, Ordering::Relaxed) + 1;
        let published = Published { number, job: &job as *const Job<P, F> as *const (), work: work::<P, F> };
        let _unpublish = Unpublish;
        JOB.store(&published as *const Published as *mut Published, Ordering::SeqCst);
        job.work(rayon::current_thread_index().unwrap_or(0));
    }
}

/// Ends the published operation (also on a panic in the leader's share):
/// no helper enters it after this, and the leader waits for those inside.
struct Unpublish;

impl Drop for Unpublish {
    fn drop(&mut self) {
        JOB.store(std::ptr::null_mut(), Ordering::SeqCst);
        while HELPERS.load(Ordering::SeqCst) != 0 {
            std::hint::spin_loop();
        }
    }
}

/// A held thread's turn: takes part in the published operation if there is
/// one it has not (`last` is the number of the last it took part in).
/// Whether it did.
pub(super) fn help(index: usize, last: &mut usize) -> bool {
    if JOB.load(Ordering::Relaxed).is_null() || PUBLISHED.load(Ordering::Relaxed) == *last {
        return false;
    }
    HELPERS.fetch_add(1, Ordering::SeqCst);
    let _leave = Leave;
    // The leader, having unpublished, waits for HELPERS to drop to zero: a
    // job seen here stays alive until `_leave` drops.
    let published = JOB.load(Ordering::SeqCst);
    if published.is_null() {
        return false;
    }
    // SAFETY: as above, `published` and its job outlive this call.
    let Published { number, job, work } = unsafe { &*published };
    if *number == *last {
        return false;
    }
    *last = *number;
    // SAFETY: the leader published `work` instantiated for the type `job` points to.
    unsafe { work(*job, index) };
    true
}

/// Leaves the operation (also when a task panics, so the leader never waits forever).
struct Leave;

impl Drop for Leave {
    fn drop(&mut self) {
        HELPERS.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;
    use crate::device::cpu::Cpu;
    use crate::device::cpu::tests::one_hold_at_a_time;
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    /// Under the caller's hold, its held threads put to work again (they
    /// stop when idle, as a busy test machine can make them); whether this
    /// thread leads operations now (tries for at most ten seconds).
    fn rewarm() -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            drop(Cpu.stay_warm());
            if leads() {
                return true;
            }
            std::thread::yield_now();
        }
        false
    }

    /// Runs `test` in a pool of two under a hold of its own (one such test at a time).
    fn under_a_hold(test: impl FnOnce(crate::device::Warm) + Send) {
        let _serial = one_hold_at_a_time();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        pool.install(|| {
            let warm = Cpu.stay_warm();
            assert!(warm.0.is_some() && leading(), "no hold within a pool of two");
            test(warm)
        });
    }

    /// Under a hold every item runs once, whichever thread runs it, for
    /// fewer items than pieces, more, and one; an operation inside a task
    /// runs rayon's way; and the held thread takes part.
    #[test]
    fn every_item_runs_once_over_the_held_threads() {
        under_a_hold(|warm| {
            let leader = rayon::current_thread_index();
            for len in [1, 2, 3, 63, 64, 65, 1000] {
                assert!(rewarm(), "no thread held");
                let mut y = vec![0u64; len * 7];
                let x: Vec<u64> = (0..len as u64 * 7).collect();
                for_each(y.par_chunks_mut(7).zip(x.par_chunks(7)).enumerate(), |(i, (y, x))| {
                    // An inner operation, as a task with bands of its own runs.
                    for_each(y.par_iter_mut().zip(x), |(y, &x)| *y += x * x + i as u64);
                });
                let want: Vec<u64> = (0..len as u64 * 7).map(|v| v * v + v / 7).collect();
                assert_eq!(y, want, "{len} items");
                assert!(JOB.load(Ordering::SeqCst).is_null() && HELPERS.load(Ordering::SeqCst) == 0);
            }
            // The held thread takes part in a published operation: the
            // leader's first task waits (a while) for it to take a task.
            let (start, mut helped) = (Instant::now(), false);
            while !helped && start.elapsed() < Duration::from_secs(30) {
                assert!(rewarm(), "no thread held");
                let (by, waited) = (AtomicBool::new(false), AtomicBool::new(false));
                let mut y = vec![0u8; 64];
                for_each(y.par_iter_mut(), |_| {
                    let published = !JOB.load(Ordering::SeqCst).is_null();
                    if rayon::current_thread_index() != leader {
                        by.fetch_or(published, Ordering::SeqCst);
                    } else if !waited.swap(true, Ordering::SeqCst) {
                        let wait = Instant::now();
                        while !by.load(Ordering::SeqCst) && wait.elapsed() < Duration::from_millis(100) {
                            std::thread::yield_now();
                        }
                    }
                });
                helped = by.load(Ordering::SeqCst);
            }
            assert!(helped, "the held thread never took part in a published operation");
            drop(warm);
            assert!(!leads(), "led after the hold dropped");
        });
    }

    /// A hold dropped on another thread ends its thread's lead there too:
    /// that thread takes the next hold as a hold of its own.
    #[test]
    fn a_hold_dropped_elsewhere_ends_the_lead() {
        under_a_hold(|warm| {
            std::thread::spawn(move || drop(warm)).join().unwrap();
            assert!(!leading(), "still led after the hold dropped on another thread");
            assert!(Cpu.stay_warm().0.is_some(), "no hold of its own after");
        });
    }

    /// A panic in the leader's share of a published operation reaches the
    /// caller once every helper has left, and the next operation runs.
    #[test]
    fn a_panicking_task_unpublishes_the_operation() {
        under_a_hold(|_warm| {
            assert!(rewarm(), "no thread held");
            let (published, began) = (AtomicBool::new(false), AtomicBool::new(false));
            let caught = std::panic::catch_unwind(|| {
                let (mut y, leader) = (vec![0u8; 64], rayon::current_thread_index());
                for_each(y.par_iter_mut(), |y| {
                    *y = 1;
                    published.fetch_or(!JOB.load(Ordering::SeqCst).is_null(), Ordering::SeqCst);
                    // Only here: a panic on a held thread aborts, as any in a rayon spawn does.
                    if rayon::current_thread_index() == leader {
                        began.store(true, Ordering::SeqCst);
                        panic!("a task of the leader's");
                    }
                    // A helper leaves the leader a task (a while), however the threads are scheduled.
                    let wait = Instant::now();
                    while !began.load(Ordering::SeqCst) && wait.elapsed() < Duration::from_secs(1) {
                        std::thread::yield_now();
                    }
                });
            });
            assert!(caught.is_err(), "the panic was lost");
            assert!(published.load(Ordering::SeqCst), "the operation ran rayon's way");
            assert!(JOB.load(Ordering::SeqCst).is_null() && HELPERS.load(Ordering::SeqCst) == 0);
            let mut y = vec![0u8; 64];
            for_each(y.par_iter_mut(), |y| *y = 2);
            assert!(y.iter().all(|&v| v == 2));
        });
    }
}
