//! The live training dashboard of `keel train --dashboard`: a page with the
//! loss and accuracy curves as they move (training every few batches,
//! validation every epoch), the epoch's progress, the ETA and the learning
//! rate, and when training ends the test scores, the confusion matrix and
//! the misclassified images (the pictures `--plots` writes).
//!
//! Training publishes events through [`DashboardCallback`]; the page follows
//! them as server-sent events. Every event keeps its index as its id, so a
//! page opened late is sent everything so far and a reconnecting one resumes
//! where it stopped. Publishing is a short lock and a notification, at most
//! every [`POINT_INTERVAL`] between epochs, so training does not wait on the
//! page.
//!
//! Routes: `GET /` (the page), `GET /events` (`text/event-stream`: `start`,
//! `batch`, `epoch`, `trained`, `end`), `GET /plots/NAME.svg|png`, `GET /healthz`.

use super::{Server, bind};
use crate::callbacks::{Callback, Control, FitParams};
use crate::error::Result;
use crate::model::{History, Logs, Model};
use crate::plots::Picture;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Least time between two training points within an epoch.
pub const POINT_INTERVAL: Duration = Duration::from_millis(250);

/// Events kept at most (about seven hours of points); past it, batch points
/// are dropped and epoch events still kept.
const MAX_EVENTS: usize = 100_000;

/// What the page is sent, and whether the dashboard is closing.
struct Board {
    events: Mutex<Events>,
    /// The number of events published, for the streams waiting on the next.
    published: tokio::sync::watch::Sender<usize>,
}

#[derive(Default)]
struct Events {
    /// (kind, JSON data), in order.
    list: Vec<(&'static str, String)>,
    pictures: Vec<Picture>,
    closed: bool,
}

impl Board {
    fn lock(&self) -> MutexGuard<'_, Events> {
        self.events.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish(&self, kind: &'static str, data: &Value) {
        let mut events = self.lock();
        if kind == "batch" && events.list.len() >= MAX_EVENTS {
            return;
        }
        events.list.push((kind, data.to_string()));
        let published = events.list.len();
        drop(events);
        self.published.send_replace(published);
    }

    /// Ends every event stream (after what is published), so the server can stop.
    fn close(&self) {
        self.lock().closed = true;
        self.published.send_modify(|_| {});
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// A running dashboard server.
pub struct Dashboard {
    board: Arc<Board>,
    server: Server,
}

impl Dashboard {
    /// Listens on `host:port` (0: a free port) and serves the page from a
    /// background thread until [`Dashboard::shutdown`], SIGINT or SIGTERM.
    pub fn start(host: IpAddr, port: u16) -> Result<Dashboard> {
        let listener = bind(host, port, "--dashboard PORT")?;
        let board =
            Arc::new(Board { events: Mutex::new(Events::default()), published: tokio::sync::watch::Sender::new(0) });
        let app = Router::new()
            .route("/", get(|| async { Html(include_str!("dashboard.html")) }))
            .route("/events", get(events))
            .route("/plots/{file}", get(picture))
            .route("/healthz", get(|| async { "ok\n" }))
            .fallback(|| async { (StatusCode::NOT_FOUND, "no such route; the dashboard is at GET /\n") })
            .with_state(board.clone());
        let closing = board.clone();
        // One worker: the page needs little, and training keeps the cores.
        let server = Server::spawn(listener, app, 1, move || closing.close(), || {})?;
        Ok(Dashboard { board, server })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The callback that sends `fit`'s progress to the page; `title` names the run.
    pub fn callback(&self, title: impl Into<String>) -> DashboardCallback {
        DashboardCallback {
            board: self.board.clone(),
            title: title.into(),
            params: None,
            started: Instant::now(),
            epoch: 0,
            epoch_started: Instant::now(),
            last_point: None,
        }
    }

    /// Shows the run's results (`results`: test scores, as JSON) and `pictures`
    /// (served as `/plots/NAME.svg` and `.png`).
    pub fn finish(&self, results: Value, pictures: Vec<Picture>) {
        let names: Vec<&str> = pictures.iter().map(|p| p.name).collect();
        let data = json!({ "results": results, "pictures": names });
        self.board.lock().pictures = pictures;
        self.board.publish("end", &data);
    }

    /// Whether the dashboard was stopped (SIGINT or SIGTERM).
    pub fn is_closed(&self) -> bool {
        self.board.is_closed()
    }

    /// Serves until SIGINT or SIGTERM.
    pub fn wait(self) -> Result<()> {
        self.server.wait()
    }

    /// Ends the page's event streams and stops the server.
    pub fn shutdown(self) -> Result<()> {
        self.board.close();
        self.server.shutdown()
    }
}

/// Sends `fit`'s progress to a [`Dashboard`]: a point of the running
/// training loss and metrics on the first and last batch of every epoch and
/// at most every [`POINT_INTERVAL`] between, and every epoch's logs. When the
/// dashboard is stopped (Ctrl-C), training stops after the batch.
pub struct DashboardCallback {
    board: Arc<Board>,
    title: String,
    params: Option<FitParams>,
    started: Instant,
    epoch: usize,
    epoch_started: Instant,
    last_point: Option<Instant>,
}

fn learning_rate(model: &Model) -> Option<f32> {
    model.optimizer().map(|o| o.learning_rate())
}

impl Callback for DashboardCallback {
    fn set_params(&mut self, params: &FitParams) {
        self.params = Some(*params);
    }

    fn on_train_begin(&mut self, model: &mut Model) -> Result<()> {
        self.started = Instant::now();
        let params =
            self.params.unwrap_or(FitParams { epochs: 0, initial_epoch: 0, steps: 0, batch_size: 0, samples: 0 });
        let data = json!({
            "title": self.title,
            "epochs": params.epochs,
            "initial_epoch": params.initial_epoch,
            "steps": params.steps,
            "batch_size": params.batch_size,
            "samples": params.samples,
            "params": model.count_params()?,
            "summary": model.summary_string()?,
            "learning_rate": learning_rate(model),
        });
        self.board.publish("start", &data);
        Ok(())
    }

    fn on_epoch_begin(&mut self, _model: &mut Model, epoch: usize) -> Result<()> {
        self.epoch = epoch;
        self.epoch_started = Instant::now();
        self.last_point = None;
        Ok(())
    }

    fn on_batch_end(&mut self, model: &mut Model, batch: usize, logs: &Logs) -> Result<Control> {
        if self.board.is_closed() {
            eprintln!("\nThe dashboard was stopped: training stops after this batch");
            return Ok(Control::Stop);
        }
        let Some(params) = self.params else { return Ok(Control::Continue) };
        let now = Instant::now();
        let due = self.last_point.is_none_or(|last| now - last >= POINT_INTERVAL);
        if !(due || batch == params.steps) {
            return Ok(Control::Continue);
        }
        self.last_point = Some(now);
        let steps = params.steps.max(1);
        let done = (self.epoch - params.initial_epoch - 1) * steps + batch;
        let total = (params.epochs - params.initial_epoch) * steps;
        let elapsed = (now - self.started).as_secs_f64();
        let data = json!({
            "epoch": self.epoch,
            "batch": batch,
            "x": (self.epoch - 1) as f64 + batch as f64 / steps as f64,
            "logs": logs,
            "learning_rate": learning_rate(model),
            "elapsed_s": elapsed,
            "eta_s": elapsed * (total - done) as f64 / done.max(1) as f64,
        });
        self.board.publish("batch", &data);
        Ok(Control::Continue)
    }

    fn on_epoch_end(&mut self, model: &mut Model, epoch: usize, logs: &Logs) -> Result<Control> {
        let data = json!({
            "epoch": epoch,
            "logs": logs,
            "seconds": self.epoch_started.elapsed().as_secs_f64(),
            "learning_rate": learning_rate(model),
            "elapsed_s": self.started.elapsed().as_secs_f64(),
        });
        self.board.publish("epoch", &data);
        Ok(Control::Continue)
    }

    fn on_train_end(&mut self, _model: &mut Model, history: &History) -> Result<()> {
        let data = json!({ "epochs": history.epochs.len(), "seconds": self.started.elapsed().as_secs_f64() });
        self.board.publish("trained", &data);
        Ok(())
    }
}

/// The events from the one after `Last-Event-ID` (else the first), then each
/// as it is published, until the dashboard closes.
async fn events(
    State(board): State<Arc<Board>>,
    headers: HeaderMap,
) -> Sse<impl futures_util::Stream<Item = std::result::Result<Event, std::convert::Infallible>>> {
    let from = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(0, |last| last + 1);
    let published = board.published.subscribe();
    let stream = futures_util::stream::unfold((board, from, published), |(board, next, mut published)| async move {
        loop {
            let (event, closed) = {
                let events = board.lock();
                (events.list.get(next).cloned(), events.closed)
            };
            if let Some((kind, data)) = event {
                let event = Event::default().event(kind).id(next.to_string()).data(data);
                return Some((Ok(event), (board, next + 1, published)));
            }
            if closed || published.changed().await.is_err() {
                return None;
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// `/plots/NAME.svg` or `.png`, once training has ended.
async fn picture(State(board): State<Arc<Board>>, Path(file): Path<String>) -> Response {
    let events = board.lock();
    let found = file.rsplit_once('.').and_then(|(name, ext)| {
        let picture = events.pictures.iter().find(|p| p.name == name)?;
        match ext {
            "svg" => Some(([(header::CONTENT_TYPE, "image/svg+xml")], picture.svg.clone().into_bytes())),
            "png" => Some(([(header::CONTENT_TYPE, "image/png")], picture.png.clone())),
            _ => None,
        }
    });
    match found {
        Some(answer) => answer.into_response(),
        None => (StatusCode::NOT_FOUND, format!("no picture '{file}' (yet): they come when training ends\n"))
            .into_response(),
    }
}
