//! Dynamic batching, as TF Serving's batching does it: requests wait in a
//! bounded queue; one thread owns the classifier, takes the first waiting
//! request, gathers more until `max_batch` instances or `batch_timeout`
//! after the first, predicts them as one batch and answers each request
//! with its rows. A full queue refuses at once (the server answers 503)
//! rather than growing without bound.

use super::metrics::Metrics;
use crate::error::Result;
use crate::tensor::Tensor;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

/// What the server predicts with: (n, input shape...) -> (n, classes).
pub trait Predictor: Send {
    fn predict(&mut self, x: &Tensor) -> Result<Tensor>;
}

impl Predictor for crate::model::Model {
    fn predict(&mut self, x: &Tensor) -> Result<Tensor> {
        self.class_probabilities(x)
    }
}

impl Predictor for crate::classical::Baseline {
    fn predict(&mut self, x: &Tensor) -> Result<Tensor> {
        self.scores(x)
    }
}

/// One request's instances (n rows of `row` values) and where its answer goes.
struct Job {
    values: Vec<f32>,
    rows: usize,
    reply: tokio::sync::oneshot::Sender<std::result::Result<Vec<f32>, String>>,
}

/// The sending side: submit instances, await their probabilities.
#[derive(Clone)]
pub struct Batcher {
    queue: SyncSender<Job>,
}

/// Why a request got no answer.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// The queue is full: try again later (503).
    Busy,
    /// The classifier failed (500), with its message.
    Failed(String),
}

impl Batcher {
    /// Starts the batching thread over `predictor`, taking inputs of `shape`
    /// (one instance). Ends when every `Batcher` clone is dropped, after
    /// answering what is queued.
    pub fn start(
        predictor: Box<dyn Predictor>,
        shape: Vec<usize>,
        max_batch: usize,
        batch_timeout: Duration,
        queue: usize,
        metrics: Arc<Metrics>,
    ) -> (Batcher, std::thread::JoinHandle<()>) {
        let (tx, rx) = sync_channel(queue);
        let thread = std::thread::Builder::new()
            .name("keel-batcher".into())
            .spawn(move || run(predictor, rx, shape, max_batch.max(1), batch_timeout, metrics))
            .expect("the batching thread starts");
        (Batcher { queue: tx }, thread)
    }

    /// Queues `rows` instances (`values`, row after row) and waits for their
    /// class probabilities, row after row.
    pub async fn predict(&self, values: Vec<f32>, rows: usize) -> std::result::Result<Vec<f32>, Refused> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        match self.queue.try_send(Job { values, rows, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(Refused::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(Refused::Failed("the server is shutting down".into())),
        }
        match answer.await {
            Ok(Ok(values)) => Ok(values),
            Ok(Err(message)) => Err(Refused::Failed(message)),
            Err(_) => Err(Refused::Failed("the batching thread stopped".into())),
        }
    }
}

fn run(
    mut predictor: Box<dyn Predictor>,
    queue: Receiver<Job>,
    shape: Vec<usize>,
    max_batch: usize,
    batch_timeout: Duration,
    metrics: Arc<Metrics>,
) {
    while let Ok(first) = queue.recv() {
        let deadline = Instant::now() + batch_timeout;
        let mut rows = first.rows;
        let mut jobs = vec![first];
        while rows < max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            match queue.recv_timeout(left) {
                Ok(job) => {
                    rows += job.rows;
                    jobs.push(job);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        metrics.batch(rows);
        let mut values = Vec::with_capacity(jobs.iter().map(|j| j.values.len()).sum());
        jobs.iter().for_each(|j| values.extend_from_slice(&j.values));
        let mut batch_shape = vec![rows];
        batch_shape.extend_from_slice(&shape);
        let answer = Tensor::from_vec(&batch_shape, values).and_then(|x| predictor.predict(&x));
        match answer {
            Ok(probabilities) => {
                let width = probabilities.row_len();
                let all = probabilities.to_f32_vec();
                let mut at = 0;
                for job in jobs {
                    let part = all[at * width..(at + job.rows) * width].to_vec();
                    at += job.rows;
                    // A client that went away no longer waits for its answer.
                    let _ = job.reply.send(Ok(part));
                }
            }
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(e.to_string()));
                }
            }
        }
    }
}
