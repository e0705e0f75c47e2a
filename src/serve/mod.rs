//! `keel serve`: a prediction server with TF Serving's REST API (so its
//! clients work unchanged), an image upload route answering as `keel
//! predict --json`, health and Prometheus metrics, and a page to draw a
//! digit on (axum on tokio; the page is embedded).
//!
//! Routes:
//! - `POST /v1/models/NAME:predict` (and `/v1/models/NAME/versions/1:predict`):
//!   `{"instances": [...]}` or `{"inputs": ...}`, answered with
//!   `{"predictions": [[probabilities]...]}` (`{"outputs": ...}` for columnar requests);
//! - `GET /v1/models/NAME`, `GET /v1/models/NAME/metadata`: status, input and output shapes, class names;
//! - `POST /v1/predict[?invert=true&top_k=3]`: PNG/JPEG/BMP bytes, or a multipart upload of one or many;
//! - `GET /healthz`, `GET /metrics`, `GET /` (the page).
//!
//! Errors are `{"error": "..."}` with a 4xx status (5xx when the server
//! cannot answer: 503 when its queue is full, 504 past the request timeout).
//! Concurrent requests are batched ([`batcher`]). No route touches the file
//! system.

pub mod batcher;
pub mod dashboard;
pub mod input;
pub mod metrics;

pub use batcher::{Batcher, Predictor, Refused};
pub use dashboard::{Dashboard, DashboardCallback};

use crate::error::{Error, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use input::{Form, InputSpec};
use metrics::Metrics;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub host: IpAddr,
    /// 0 picks a free port.
    pub port: u16,
    /// The model's name in `/v1/models/NAME`.
    pub name: String,
    /// Most instances predicted as one batch.
    pub max_batch: usize,
    /// How long the first request of a batch waits for others.
    pub batch_timeout: Duration,
    /// Requests waiting for the model at most; more are refused with 503.
    pub queue: usize,
    /// Largest request body, bytes.
    pub max_body: usize,
    /// Most pixels an uploaded image may claim.
    pub max_pixels: u64,
    /// Most instances in one request.
    pub max_instances: usize,
    /// Longest wait for a prediction before 504.
    pub request_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8501,
            name: "keel".into(),
            max_batch: 64,
            batch_timeout: Duration::ZERO,
            queue: 512,
            max_body: 4 << 20,
            max_pixels: 4096 * 4096,
            max_instances: 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// What the server tells about its model.
#[derive(Clone, Debug)]
pub struct ModelCard {
    /// One instance's shape, e.g. [28, 28, 1].
    pub input_shape: Vec<usize>,
    pub class_names: Vec<String>,
    /// Input = pixel byte * scale.
    pub scale: f32,
    /// "network" or "baseline".
    pub kind: String,
    /// The summary table (or the baseline's description).
    pub summary: String,
    pub params: usize,
    /// The last epoch's validation (else training) accuracy, when the model has a History.
    pub last_accuracy: Option<f64>,
}

impl ModelCard {
    /// The card of a network.
    pub fn of_model(model: &mut crate::model::Model) -> Result<ModelCard> {
        let classes = model.output_shape()?.iter().product::<usize>().max(2);
        let last = model.history().epochs.last();
        let accuracy = last.and_then(|e| {
            e.logs
                .iter()
                .find(|(k, _)| k.starts_with("val_") && k.ends_with("accuracy"))
                .or_else(|| e.logs.iter().find(|(k, _)| k.ends_with("accuracy")))
                .map(|(_, v)| *v)
        });
        Ok(ModelCard {
            input_shape: model.shapes()?[0].clone(),
            class_names: model.class_names(classes),
            scale: model.data_info().map_or(1.0 / 255.0, |i| i.scale),
            kind: "network".into(),
            summary: model.summary_string()?,
            params: model.count_params()?,
            last_accuracy: accuracy,
        })
    }

    /// The card of a classical baseline.
    pub fn of_baseline(baseline: &crate::classical::Baseline) -> ModelCard {
        ModelCard {
            input_shape: baseline.input_shape().to_vec(),
            class_names: baseline.class_names(),
            scale: baseline.data_info().scale,
            kind: "baseline".into(),
            summary: baseline.describe(),
            params: 0,
            last_accuracy: None,
        }
    }
}

struct Shared {
    options: ServeOptions,
    card: ModelCard,
    spec: InputSpec,
    batcher: Batcher,
    metrics: Arc<Metrics>,
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Server {
    /// Binds `options.host:options.port` and serves `predictor` from
    /// background threads until [`Server::shutdown`], SIGINT or SIGTERM.
    pub fn start(predictor: Box<dyn Predictor>, card: ModelCard, options: ServeOptions) -> Result<Server> {
        if options.name.is_empty() || !options.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(Error::InvalidArgument(format!(
                "--name '{}' must be letters, digits, '-', '_' or '.'",
                options.name
            )));
        }
        if options.max_batch == 0 || options.queue == 0 || options.max_body == 0 || options.max_instances == 0 {
            return Err(Error::InvalidArgument(
                "--max-batch, --queue, --max-body and --max-instances must be at least 1".into(),
            ));
        }
        let listener = bind(options.host, options.port, "--port")?;
        let metrics = Arc::new(Metrics::default());
        let spec = InputSpec {
            shape: card.input_shape.clone(),
            scale: card.scale,
            max_pixels: options.max_pixels,
            max_instances: options.max_instances,
        };
        let (batcher, batching) = Batcher::start(
            predictor,
            card.input_shape.clone(),
            options.max_batch,
            options.batch_timeout,
            options.queue,
            metrics.clone(),
        );
        let app = router(Arc::new(Shared { options, card, spec, batcher, metrics }));
        // Every request has its answer: the batching thread ends with the last sender.
        Server::spawn(listener, app, 2, || {}, move || drop(batching.join()))
    }

    /// Serves `app` on `listener` from a background thread running a tokio
    /// runtime with `workers` threads, until [`Server::shutdown`], SIGINT or
    /// SIGTERM. `stopping` runs when the shutdown begins (then requests in
    /// flight finish, so endless responses must end on it); `after` runs
    /// once the runtime is gone.
    pub(crate) fn spawn(
        listener: std::net::TcpListener,
        app: Router,
        workers: usize,
        stopping: impl FnOnce() + Send + 'static,
        after: impl FnOnce() + Send + 'static,
    ) -> Result<Server> {
        let addr = listener.local_addr().map_err(|e| Error::State(format!("cannot read the bound address: {e}")))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("keel-serve".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers)
                    .enable_all()
                    .build()
                    .map_err(|e| Error::State(format!("cannot start the server's runtime: {e}")))?;
                let served = runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .map_err(|e| Error::State(format!("cannot listen on {addr}: {e}")))?;
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            tokio::select! {
                                _ = stopped => {}
                                _ = signal() => {}
                            }
                            stopping();
                        })
                        .await
                        .map_err(|e| Error::State(format!("the server stopped: {e}")))
                });
                drop(runtime);
                after();
                served
            })
            .map_err(|e| Error::State(format!("cannot start the server thread: {e}")))?;
        Ok(Server { addr, stop: Some(stop), thread: Some(thread) })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections, lets requests in flight finish, and waits.
    pub fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join()
    }

    /// Waits until the server stops (SIGINT or SIGTERM).
    pub fn wait(mut self) -> Result<()> {
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::State("the server thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.join();
    }
}

/// A listening socket on `host:port` (port 0: a free one); `flag` is the option to change when it is taken.
pub(crate) fn bind(host: IpAddr, port: u16, flag: &str) -> Result<std::net::TcpListener> {
    let addr = SocketAddr::new(host, port);
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        Error::InvalidArgument(format!("cannot listen on {addr}: {e}; give another {flag} (or stop what uses it)"))
    })?;
    listener.set_nonblocking(true).map_err(|e| Error::State(format!("cannot set up {addr}: {e}")))?;
    Ok(listener)
}

/// SIGINT or SIGTERM.
async fn signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_text))
        .route("/v1/models/{target}", get(status).post(predict))
        .route("/v1/models/{name}/metadata", get(metadata))
        .route("/v1/models/{name}/versions/{target}", get(status_version).post(predict_version))
        .route("/v1/predict", post(predict_images))
        .fallback(|| async {
            error(StatusCode::NOT_FOUND, "no such route; see GET / for the page and /v1/models/NAME for the API".into())
        })
        .layer(DefaultBodyLimit::max(shared.options.max_body))
        .layer(middleware::from_fn_with_state(shared.clone(), track))
        .with_state(shared)
}

type AppState = State<Arc<Shared>>;

/// Counts every answer by route and status, with its latency.
async fn track(State(shared): AppState, path: Option<MatchedPath>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = path.map_or("other".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    shared.metrics.request(&route, response.status().as_u16(), start.elapsed().as_secs_f64());
    response
}

fn error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// The page, with the model's name (letters, digits, '-', '_', '.' only) filled in.
async fn page(State(shared): AppState) -> Html<String> {
    Html(include_str!("page.html").replace("{{NAME}}", &shared.options.name))
}

async fn metrics_text(State(shared): AppState) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], shared.metrics.render()).into_response()
}

/// 404 unless `name` is the served model's.
fn check_name(shared: &Shared, name: &str) -> Option<Response> {
    if name == shared.options.name {
        None
    } else {
        Some(error(
            StatusCode::NOT_FOUND,
            format!("Servable not found for request: Latest({name}); this server serves '{}'", shared.options.name),
        ))
    }
}

async fn status(State(shared): AppState, Path(target): Path<String>) -> Response {
    if let Some(r) = check_name(&shared, &target) {
        return r;
    }
    axum::Json(json!({
        "model_version_status": [{ "version": "1", "state": "AVAILABLE", "status": { "error_code": "OK", "error_message": "" } }]
    }))
    .into_response()
}

async fn status_version(state: AppState, Path((name, version)): Path<(String, String)>) -> Response {
    if version != "1" {
        return error(
            StatusCode::NOT_FOUND,
            format!("Servable not found for request: Specific({name}, {version}); version 1 is served"),
        );
    }
    status(state, Path(name)).await
}

async fn metadata(State(shared): AppState, Path(name): Path<String>) -> Response {
    if let Some(r) = check_name(&shared, &name) {
        return r;
    }
    let card = &shared.card;
    let dims = |shape: &[usize]| -> Vec<Value> {
        std::iter::once(json!({"size": "-1"})).chain(shape.iter().map(|d| json!({"size": d.to_string()}))).collect()
    };
    let tensor = |name: &str, shape: &[usize]| json!({ "dtype": "DT_FLOAT", "tensor_shape": { "dim": dims(shape), "unknown_rank": false }, "name": name });
    axum::Json(json!({
        "model_spec": { "name": shared.options.name, "signature_name": "", "version": "1" },
        "metadata": { "signature_def": { "signature_def": { "serving_default": {
            "inputs": { "input": tensor("input", &card.input_shape) },
            "outputs": { "output": tensor("output", &[card.class_names.len()]) },
            "method_name": "tensorflow/serving/predict",
        } } } },
        "keel": {
            "kind": card.kind,
            "input_shape": card.input_shape,
            "class_names": card.class_names,
            "scale": card.scale,
            "params": card.params,
            "last_accuracy": card.last_accuracy,
            "summary": card.summary,
            "max_batch": shared.options.max_batch,
        },
    }))
    .into_response()
}

async fn predict_version(
    state: AppState,
    Path((name, target)): Path<(String, String)>,
    body: std::result::Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    match target.split_once(':') {
        Some(("1", verb)) => predict(state, Path(format!("{name}:{verb}")), body).await,
        _ => error(
            StatusCode::NOT_FOUND,
            format!(
                "Servable not found for request: Specific({name}, {target}); POST /v1/models/{name}/versions/1:predict"
            ),
        ),
    }
}

async fn predict(
    State(shared): AppState,
    Path(target): Path<String>,
    body: std::result::Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let Some((name, verb)) = target.split_once(':') else {
        return error(StatusCode::NOT_FOUND, format!("POST /v1/models/{target}:predict to predict with the model"));
    };
    if let Some(r) = check_name(&shared, name) {
        return r;
    }
    if verb != "predict" {
        return error(StatusCode::BAD_REQUEST, format!("'{verb}' is not supported; this server answers :predict"));
    }
    let body = match body {
        Ok(body) => body,
        Err(e) => return body_error(&shared, e),
    };
    let (values, rows, form) = match input::parse_predict(&body, &shared.spec) {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match run(&shared, values, rows).await {
        Ok(probabilities) => {
            let width = shared.card.class_names.len();
            let rows: Vec<&[f32]> = probabilities.chunks(width.max(1)).collect();
            let key = if form == Form::Rows { "predictions" } else { "outputs" };
            axum::Json(json!({ key: rows })).into_response()
        }
        Err(response) => *response,
    }
}

fn body_error(shared: &Shared, e: axum::extract::rejection::BytesRejection) -> Response {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {} bytes (--max-body)", shared.options.max_body),
        )
    } else {
        error(e.status(), format!("cannot read the request body: {e}"))
    }
}

/// Predicts through the batcher, within the request timeout.
async fn run(shared: &Shared, values: Vec<f32>, rows: usize) -> std::result::Result<Vec<f32>, Box<Response>> {
    match tokio::time::timeout(shared.options.request_timeout, shared.batcher.predict(values, rows)).await {
        Ok(Ok(probabilities)) => Ok(probabilities),
        Ok(Err(Refused::Busy)) => Err(Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the server is busy ({} requests wait for the model); retry shortly", shared.options.queue),
        ))),
        Ok(Err(Refused::Failed(message))) => Err(Box::new(error(StatusCode::INTERNAL_SERVER_ERROR, message))),
        Err(_) => Err(Box::new(error(
            StatusCode::GATEWAY_TIMEOUT,
            format!("no prediction within {:?}", shared.options.request_timeout),
        ))),
    }
}

#[derive(serde::Deserialize)]
struct ImageQuery {
    #[serde(default)]
    invert: bool,
    #[serde(default = "three")]
    top_k: usize,
}

fn three() -> usize {
    3
}

/// Image files in, `keel predict --json` out.
async fn predict_images(
    State(shared): AppState,
    query: std::result::Result<Query<ImageQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(StatusCode::BAD_REQUEST, "the query takes invert=true|false and top_k=N".into());
    };
    if query.top_k == 0 {
        return error(StatusCode::BAD_REQUEST, "top_k must be at least 1".into());
    }
    let content_type =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let mut files: Vec<(String, Bytes)> = Vec::new();
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = match axum::extract::Multipart::from_request(request, &shared).await {
            Ok(m) => m,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("not a readable multipart upload: {e}")),
        };
        loop {
            match multipart.next_field().await {
                Ok(Some(field)) => {
                    let name = field.file_name().or(field.name()).unwrap_or("upload").to_string();
                    match field.bytes().await {
                        Ok(bytes) => files.push((name, bytes)),
                        Err(e) => {
                            return error(e.status(), format!("cannot read the upload '{name}': {}", e.body_text()));
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => return error(e.status(), format!("cannot read the upload: {}", e.body_text())),
            }
        }
        if files.is_empty() {
            return error(StatusCode::BAD_REQUEST, "the upload holds no files".into());
        }
    } else if ["image/png", "image/jpeg", "image/bmp", "application/octet-stream"]
        .iter()
        .any(|t| content_type.starts_with(t))
    {
        match Bytes::from_request(request, &shared).await {
            Ok(body) => files.push(("-".into(), body)),
            Err(e) => return body_error(&shared, e),
        }
    } else {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content type '{content_type}' is not an image; send image/png, image/jpeg, image/bmp or multipart/form-data"
            ),
        );
    }
    if files.len() > shared.options.max_instances {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{} files; at most {} per request", files.len(), shared.options.max_instances),
        );
    }
    let mut values = Vec::new();
    for (name, bytes) in &files {
        match input::image_input(bytes, &shared.spec, query.invert) {
            Ok(pixels) => values.extend(pixels),
            Err(message) => return error(StatusCode::BAD_REQUEST, format!("{name}: {message}")),
        }
    }
    let probabilities = match run(&shared, values, files.len()).await {
        Ok(p) => p,
        Err(response) => return *response,
    };
    let names = &shared.card.class_names;
    let answer: Vec<Value> = files
        .iter()
        .zip(probabilities.chunks(names.len().max(1)))
        .map(|((file, _), p)| {
            let mut order: Vec<usize> = (0..p.len()).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
            order.truncate(query.top_k);
            let top: Vec<Value> =
                order.iter().map(|&i| json!({"index": i, "class": names[i], "probability": p[i]})).collect();
            json!({"file": file, "probabilities": p, "top": top})
        })
        .collect();
    axum::Json(Value::Array(answer)).into_response()
}
