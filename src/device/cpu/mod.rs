//! The CPU device: rayon over fixed tasks (under a hold, `team` runs the
//! same tasks over the held threads), the kernels of `kernels/`.
//!
//! Work is split over the batch in fixed tasks of [`SAMPLES_PER_TASK`] samples
//! (elementwise passes: fixed chunks of [`CHUNK`] values; a batch under one
//! task, a large image at a small batch, within its samples: bands of rows,
//! blocks of output channels or of pixels, or a few samples a task), never by
//! thread count, and partial sums (weight gradients, batch statistics) are
//! added in task order, so results are bit-identical whatever the number of
//! threads.

mod conv;
mod dense;
mod elementwise;
mod norm;
mod pool;
pub(crate) mod team;

use super::{
    Buffer, ChannelSums, ConvOp, DenseOp, DepthwiseOp, Device, Pad2D, ProductOp, ResampleOp, Warm, WeightGrads,
    Workspace,
};
use crate::activations::Activation;
use crate::kernels::Window;
use crate::kernels::activation::Rectifier;
use crate::kernels::batch_norm::InputGrad;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Samples per parallel task.
pub const SAMPLES_PER_TASK: usize = 16;

/// Values per parallel task of an elementwise pass.
pub const CHUNK: usize = 1 << 14;

/// Number of tasks a batch of `n` samples is split into.
pub fn task_count(n: usize) -> usize {
    n.div_ceil(SAMPLES_PER_TASK)
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Buffer> = const { std::cell::RefCell::new(Buffer::new()) };
}

/// Runs `f` with a per-thread scratch buffer of `len` values. It grows to the
/// largest size asked for and is then reused: no allocation in steady state,
/// and memory bounded by the number of threads, not by the batch size.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        f(&mut buf[..len])
    })
}

/// The workspace slot where an operation keeps its pre-activation z when its
/// activation needs its input (silu, gelu, hard_silu): the operation runs
/// linear, keeps z, and applies the activation to y; backward turns dy into
/// dz from z first, then runs linear.
const PREACTIVATION: usize = 4;

/// y = act(z) after a linear run that wrote z to `y`, keeping z in the workspace.
fn activate_keeping_input(act: Activation, y: &mut [f32], width: usize, ws: &mut Workspace) {
    let z = kept_input(ws, y.len());
    z.copy_from_slice(y);
    elementwise::activation_forward(act, y, width);
}

/// The workspace's pre-activation buffer, `len` values.
fn kept_input(ws: &mut Workspace, len: usize) -> &mut [f32] {
    let mut lens = [0; PREACTIVATION + 1];
    lens[PREACTIVATION] = len;
    let [.., z] = ws.f32s(lens);
    z
}

/// dy -> dz = dy * act'(z) from the z `activate_keeping_input` kept.
fn through_kept_input(act: Activation, dy: &mut [f32], ws: &mut Workspace) {
    let z = kept_input(ws, dy.len());
    elementwise::activation_backward_from_input(act, z, dy);
}

/// Block-major rows (blocks of `block` columns, `m` rows each, the last block
/// possibly narrower) -> y: (rows, cols) row-major, row r from block row `row_of(r)`.
fn gather_blocks(blocks: &[f32], m: usize, block: usize, cols: usize, row_of: impl Fn(usize) -> usize, y: &mut [f32]) {
    for (r, row) in y.chunks_exact_mut(cols).enumerate() {
        let at = row_of(r);
        for (b, dst) in row.chunks_mut(block).enumerate() {
            dst.copy_from_slice(&blocks[b * m * block + at * dst.len()..][..dst.len()]);
        }
    }
}

/// The CPU, with rayon's global thread pool (`keel::set_threads`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

/// Holds released so far: a held thread stops once it changes.
static RELEASED: AtomicUsize = AtomicUsize::new(0);

/// Threads looking for work under a hold now, in every pool; and how many
/// times a thread has started to.
static SPINNING: AtomicUsize = AtomicUsize::new(0);
static HOLDS: AtomicUsize = AtomicUsize::new(0);

/// Threads asked to look for work that have not started to yet.
static STARTING: AtomicUsize = AtomicUsize::new(0);

/// How long a held thread looks for work and finds none before it returns to
/// the pool (to sleep) anyway. rayon may run the holding job on a thread
/// that is itself waiting inside a join, when a hold starts while another
/// caller's work is in flight: the join then resumes after at most this
/// idle time rather than when the hold drops, which could be never if the
/// hold's owner waits on that join. Long enough to span the serial
/// stretches inside a batch, far shorter than a batch of any real model.
const IDLE_LIMIT: Duration = Duration::from_micros(500);

/// Puts the pool's threads but the caller's to looking for work until the
/// hold numbered `hold` is released (or they find none for `IDLE_LIMIT`).
fn spin(caller: usize, hold: usize) {
    STARTING.fetch_add(rayon::current_num_threads() - 1, Ordering::AcqRel);
    rayon::spawn_broadcast(move |thread| {
        if thread.index() == caller {
            return;
        }
        SPINNING.fetch_add(1, Ordering::AcqRel);
        STARTING.fetch_sub(1, Ordering::AcqRel);
        HOLDS.fetch_add(1, Ordering::AcqRel);
        let mut idle_since: Option<Instant> = None;
        let mut last = 0;
        while RELEASED.load(Ordering::Acquire) == hold {
            // Runs the caller's operation's tasks or any job the pool has, else spins.
            if team::help(thread.index(), &mut last) || rayon::yield_now() == Some(rayon::Yield::Executed) {
                idle_since = None;
            } else if idle_since.get_or_insert_with(Instant::now).elapsed() > IDLE_LIMIT {
                break;
            } else {
                std::hint::spin_loop();
            }
        }
        SPINNING.fetch_sub(1, Ordering::AcqRel);
    });
}

impl Device for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }

    /// The pool's other threads look for work without pause until the guard
    /// drops (or they have found none for `IDLE_LIMIT`), instead of going
    /// to sleep between operations: a sleeping thread takes tens of
    /// microseconds to wake (more in a virtual machine), paid at every
    /// operation that follows a serial stretch of the model's loop (a step
    /// of the reference model has several). Operations under the hold run
    /// their tasks over these threads (`team`). Only from within the pool,
    /// whose caller's thread stays free for the serial work; from outside
    /// it (tests, a caller without a pool) nothing is held. A hold asked
    /// for within the caller's own (a batch's within its epoch's) holds the
    /// threads again where they had stopped, idle past `IDLE_LIMIT`.
    fn stay_warm(&self) -> Warm {
        let Some(caller) = rayon::current_thread_index().filter(|_| rayon::current_num_threads() > 1) else {
            return Warm::cold();
        };
        if team::leading() {
            if SPINNING.load(Ordering::Acquire) + STARTING.load(Ordering::Acquire) == 0 {
                spin(caller, RELEASED.load(Ordering::Acquire));
            }
            return Warm::cold();
        }
        if !team::try_lead() {
            return Warm::cold();
        }
        spin(caller, RELEASED.load(Ordering::Acquire));
        Warm::until(|| {
            // Held threads stop before another hold can begin (and count from the new number).
            RELEASED.fetch_add(1, Ordering::AcqRel);
            team::end_lead();
        })
    }

    fn copy(&self, x: &[f32], y: &mut [f32], len: usize) {
        elementwise::copy(x, y, len)
    }

    fn activation_forward(&self, act: Activation, z: &mut [f32], width: usize) {
        elementwise::activation_forward(act, z, width)
    }

    fn activation_backward(&self, act: Activation, y: &[f32], dy: &mut [f32], width: usize) {
        elementwise::activation_backward(act, y, dy, width)
    }

    fn activation_backward_from_input(&self, act: Activation, z: &[f32], dy: &mut [f32]) {
        elementwise::activation_backward_from_input(act, z, dy)
    }

    fn rectifier_forward(&self, f: Rectifier, x: &[f32], y: &mut [f32], len: usize) {
        elementwise::rectifier_forward(f, x, y, len)
    }

    fn rectifier_backward(&self, f: Rectifier, x: &[f32], dy: &[f32], dx: &mut [f32], len: usize) {
        elementwise::rectifier_backward(f, x, dy, dx, len)
    }

    fn scale_shift(
        &self,
        x: &[f32],
        ab: (&[f32], &[f32]),
        residual: Option<&[f32]>,
        act: Activation,
        y: &mut [f32],
        len: usize,
    ) {
        elementwise::scale_shift(x, ab, residual, act, y, len)
    }

    fn add_to(&self, x: &[f32], y: &mut [f32], len: usize) {
        elementwise::add_to(x, y, len)
    }

    fn add(&self, xs: &[&[f32]], y: &mut [f32], len: usize, act: Activation) {
        elementwise::add(xs, y, len, act)
    }

    fn multiply_forward(&self, op: &ProductOp, xs: &[&[f32]], y: &mut [f32], n: usize) {
        elementwise::multiply_forward(op, xs, y, n)
    }

    fn multiply_backward(&self, op: &ProductOp, k: usize, xs: &[&[f32]], dy: &[f32], dx: &mut [f32], n: usize) {
        elementwise::multiply_backward(op, k, xs, dy, dx, n)
    }

    fn prelu_forward(&self, x: &[f32], alpha: &[f32], map: &[u32], y: &mut [f32], n: usize) {
        elementwise::prelu_forward(x, alpha, map, y, n)
    }

    fn prelu_backward(
        &self,
        x: &[f32],
        alpha: &[f32],
        map: &[u32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        dalpha: &mut [f32],
        n: usize,
        ws: &mut Workspace,
    ) {
        elementwise::prelu_backward(x, alpha, map, dy, dx, dalpha, n, ws)
    }

    fn concat_forward(&self, xs: &[&[f32]], widths: &[usize], y: &mut [f32], rows: usize) {
        elementwise::concat_forward(xs, widths, y, rows)
    }

    fn concat_backward(&self, k: usize, widths: &[usize], dy: &[f32], dx: &mut [f32], rows: usize) {
        elementwise::concat_backward(k, widths, dy, dx, rows)
    }

    fn pad2d_forward(&self, p: &Pad2D, x: &[f32], y: &mut [f32], n: usize) {
        elementwise::pad2d_forward(p, x, y, n)
    }

    fn pad2d_backward(&self, p: &Pad2D, dy: &[f32], dx: &mut [f32], n: usize) {
        elementwise::pad2d_backward(p, dy, dx, n)
    }

    fn resample_forward(&self, op: &ResampleOp, x: &[f32], y: &mut [f32], n: usize) {
        elementwise::resample_forward(op, x, y, n)
    }

    fn resample_backward(&self, op: &ResampleOp, dy: &[f32], dx: &mut [f32], n: usize) {
        elementwise::resample_backward(op, dy, dx, n)
    }

    fn dense_forward(&self, op: &DenseOp, x: &[f32], y: &mut [f32], n: usize, ws: &mut Workspace) {
        dense::forward(op, x, y, n, ws)
    }

    fn dense_backward(&self, op: &DenseOp, pass: WeightGrads, ws: &mut Workspace) {
        dense::backward(op, pass, ws)
    }

    fn conv2d_forward(&self, op: &ConvOp, x: &[f32], y: &mut [f32], n: usize, ws: &mut Workspace) {
        conv::forward(op, x, y, n, ws, None);
    }

    fn conv2d_forward_moments(
        &self,
        op: &ConvOp,
        x: &[f32],
        y: &mut [f32],
        n: usize,
        ws: &mut Workspace,
        sums: &mut [f64],
    ) -> bool {
        conv::forward(op, x, y, n, ws, Some(sums))
    }

    fn conv2d_backward(&self, op: &ConvOp, pass: WeightGrads, ws: &mut Workspace) {
        conv::backward(op, pass, ws)
    }

    fn depthwise_forward(&self, op: &DepthwiseOp, x: &[f32], y: &mut [f32], n: usize, ws: &mut Workspace) {
        conv::depthwise_forward(op, x, y, n, ws)
    }

    fn depthwise_backward(&self, op: &DepthwiseOp, pass: WeightGrads, ws: &mut Workspace) {
        conv::depthwise_backward(op, pass, ws)
    }

    fn max_pool_forward(&self, g: &Window, x: &[f32], y: &mut [f32], n: usize, ws: &mut Workspace) {
        pool::max_forward(g, x, y, n, ws)
    }

    fn max_pool_values(&self, g: &Window, x: &[f32], y: &mut [f32], n: usize) {
        pool::max_values(g, x, y, n)
    }

    fn max_pool_backward(&self, g: &Window, dy: &[f32], dx: &mut [f32], n: usize, ws: &mut Workspace) {
        pool::max_backward(g, dy, dx, n, ws)
    }

    fn avg_pool_forward(&self, g: &Window, x: &[f32], y: &mut [f32], n: usize) {
        pool::avg_forward(g, x, y, n)
    }

    fn avg_pool_backward(&self, g: &Window, dy: &[f32], dx: &mut [f32], n: usize) {
        pool::avg_backward(g, dy, dx, n)
    }

    fn global_pool_forward(
        &self,
        max: bool,
        positions: usize,
        c: usize,
        x: &[f32],
        y: &mut [f32],
        n: usize,
        ws: &mut Workspace,
    ) {
        pool::global_forward(max, positions, c, x, y, n, ws)
    }

    fn global_pool_backward(
        &self,
        max: bool,
        positions: usize,
        c: usize,
        dy: &[f32],
        dx: &mut [f32],
        n: usize,
        ws: &mut Workspace,
    ) {
        pool::global_backward(max, positions, c, dy, dx, n, ws)
    }

    fn channel_sums(
        &self,
        what: ChannelSums,
        x: &[f32],
        c: usize,
        sample_len: usize,
        len: usize,
        sums: &mut [f64],
        ws: &mut Workspace,
    ) {
        norm::channel_sums(what, x, c, sample_len, len, sums, ws)
    }

    fn batch_norm_input_grad(&self, grad: &InputGrad, x: &[f32], dy: &[f32], dx: &mut [f32], len: usize) {
        norm::input_grad(grad, x, dy, dx, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;
    use std::sync::{Mutex, MutexGuard, mpsc};

    /// Waits (at most a minute) for `done`; whether it came.
    fn within_a_minute(done: impl Fn() -> bool) -> bool {
        let start = Instant::now();
        while !done() && start.elapsed() < Duration::from_secs(60) {
            std::thread::yield_now();
        }
        done()
    }

    /// Serialises the tests that hold the pool warm: there is one hold in the
    /// process, and a test that found another test's would hold nothing.
    pub(super) fn one_hold_at_a_time() -> MutexGuard<'static, ()> {
        static SERIAL: Mutex<()> = Mutex::new(());
        SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Within a pool the hold puts the other thread to looking for work,
    /// where it runs the caller's jobs; the thread gives up once idle for a
    /// while even while held (what bounds a hold nested in a join), and
    /// when the guard drops. A hold within a hold holds nothing more than
    /// the stopped threads again; outside any pool, nothing.
    #[test]
    fn staying_warm_runs_the_callers_work_and_ends_by_itself() {
        let _serial = one_hold_at_a_time();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        pool.install(|| {
            let entered = HOLDS.load(Ordering::Acquire);
            let warm = Cpu.stay_warm();
            assert!(warm.0.is_some(), "no hold within a pool of two");
            assert!(Cpu.stay_warm().0.is_none(), "a hold within a hold held threads again");
            let sum: u64 = (0..10_000u32).into_par_iter().with_max_len(100).map(|i| i as u64 * i as u64).sum();
            assert_eq!(sum, (0..10_000u64).map(|i| i * i).sum::<u64>());
            assert!(within_a_minute(|| HOLDS.load(Ordering::Acquire) > entered), "the other thread was never held");
            assert!(within_a_minute(|| SPINNING.load(Ordering::Acquire) == 0), "an idle thread stayed held");
            // A batch's hold within its epoch's holds the stopped thread again.
            let held = HOLDS.load(Ordering::Acquire);
            assert!(Cpu.stay_warm().0.is_none(), "a batch's hold within the epoch's is a hold of its own");
            assert!(within_a_minute(|| HOLDS.load(Ordering::Acquire) > held), "the stopped thread was not held again");
            drop(warm);
            let _again = Cpu.stay_warm();
            assert!(within_a_minute(|| HOLDS.load(Ordering::Acquire) > entered + 1), "a second hold held nothing");
        });
        assert!(
            within_a_minute(|| SPINNING.load(Ordering::Acquire) == 0),
            "a thread stayed held after the guard dropped"
        );
        assert!(Cpu.stay_warm().0.is_none(), "held outside any pool");
    }

    /// A gradient's second contribution, added by chunks over the threads:
    /// the serial sum's values, across several chunks and a partial one.
    #[test]
    fn add_to_adds_every_value() {
        let len = 3 * CHUNK + 123;
        let x: Vec<f32> = (0..len).map(|i| (i % 97) as f32 * 0.25 - 7.0).collect();
        let mut y: Vec<f32> = (0..len + 5).map(|i| (i % 13) as f32 * 1.5).collect();
        let mut want = y.clone();
        crate::kernels::add_assign(&mut want[..len], &x);
        rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap().install(|| Cpu.add_to(&x, &mut y, len));
        // Bit for bit, and nothing past `len` touched.
        assert_eq!(y, want);
    }

    /// Holds taken batch after batch while background jobs with joins of
    /// their own run in the pool (as prefetching does): a held thread that
    /// rayon runs inside one of their joins must not stall them for good.
    #[test]
    fn holds_beside_background_joins_finish() {
        let _serial = one_hold_at_a_time();
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
            let total = pool.install(|| {
                let mut total = 0u64;
                for step in 0..1_000u64 {
                    let (sent, background) = mpsc::channel();
                    rayon::spawn(move || {
                        let s: u64 = (0..2_000u32).into_par_iter().with_max_len(50).map(|i| i as u64 ^ step).sum();
                        sent.send(s).unwrap();
                    });
                    let _warm = Cpu.stay_warm();
                    total += (0..2_000u32).into_par_iter().with_max_len(50).map(|i| i as u64 * step).sum::<u64>();
                    // Waits the rayon way, running the pool's jobs meanwhile.
                    let mut got = background.try_recv();
                    while got.is_err() {
                        rayon::yield_now();
                        got = background.try_recv();
                    }
                    total += got.unwrap();
                }
                total
            });
            done.send(total).unwrap();
        });
        let expected: u64 = (0..1_000u64)
            .map(|step| (0..2_000u64).map(|i| i * step).sum::<u64>() + (0..2_000u64).map(|i| i ^ step).sum::<u64>())
            .sum();
        assert_eq!(finished.recv_timeout(Duration::from_secs(120)), Ok(expected), "holds and background joins stalled");
    }
}
