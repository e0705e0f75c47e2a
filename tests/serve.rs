//! `keel serve`'s server in process, on 127.0.0.1 and a free port: every
//! route, every error case, dynamic batching, 503 under a full queue,
//! graceful shutdown, and a bounded load test. Requests go through a plain
//! HTTP/1.1 client over a TCP stream, so what is tested is what goes over
//! the wire.

mod synthetic;

use keel::prelude::*;
use keel::serve::{ModelCard, Predictor, ServeOptions, Server};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request; (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("the server accepts");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading a large body: ignore a broken pipe.
    let _ = stream.write_all(body);
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("an answer, not a dropped connection");
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete HTTP answer");
    let head = String::from_utf8_lossy(&answer[..end]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let mut body = answer[end + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[line + 2..line + 2 + size]);
        raw = &raw[line + 4 + size..];
    }
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

fn post_json(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let (status, body) = http(addr, "POST", path, "application/json", body.to_string().as_bytes());
    (status, json_of(&body))
}

fn model() -> Model {
    let mut model = synthetic::small_cnn(3, 4, Activation::Softmax);
    model.build().unwrap();
    model
}

fn start(options: ServeOptions) -> (Server, Model) {
    let mut served = model();
    let card = ModelCard::of_model(&mut served).unwrap();
    let server =
        Server::start(Box::new(served), card, ServeOptions { port: 0, name: "digits".into(), ..options }).unwrap();
    (server, model())
}

/// Instance i: an 8x8x1 image as nested lists, and its flat values.
fn instance(i: usize) -> (Value, Vec<f32>) {
    let flat: Vec<f32> = (0..64).map(|k| ((k * 7 + i * 13) % 29) as f32 / 29.0).collect();
    let nested: Vec<Vec<Vec<f32>>> = flat.chunks(8).map(|row| row.iter().map(|&v| vec![v]).collect()).collect();
    (json!(nested), flat)
}

fn expected(model: &mut Model, flat: &[f32], n: usize) -> Vec<f32> {
    model.class_probabilities(&Tensor::from_vec(&[n, 8, 8, 1], flat.to_vec()).unwrap()).unwrap().to_f32_vec()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32))
        .collect()
}

fn png(pixels: &[u8], w: u32, h: u32) -> Vec<u8> {
    let image = image::GrayImage::from_raw(w, h, pixels.to_vec()).unwrap();
    let mut bytes = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    bytes
}

#[test]
fn every_route_answers_and_every_mistake_is_a_clear_4xx() {
    let (server, mut model) = start(ServeOptions { max_body: 64 << 10, max_instances: 4, ..Default::default() });
    let addr = server.addr();
    assert!(addr.ip().is_loopback());
    assert_eq!(http(addr, "GET", "/healthz", "text/plain", b""), (200, b"ok\n".to_vec()));
    let (status, page) = http(addr, "GET", "/", "text/plain", b"");
    let page = String::from_utf8(page).unwrap();
    assert!(
        status == 200
            && page.contains("<canvas")
            && page.contains("digits")
            && !page.contains("http://")
            && !page.contains("https://")
    );
    let (status, body) = http(addr, "GET", "/v1/models/digits", "text/plain", b"");
    assert_eq!((status, json_of(&body)["model_version_status"][0]["state"].clone()), (200, json!("AVAILABLE")));
    let (status, body) = http(addr, "GET", "/v1/models/digits/metadata", "text/plain", b"");
    let meta = json_of(&body);
    assert_eq!(status, 200);
    assert_eq!(meta["keel"]["input_shape"], json!([8, 8, 1]));
    assert_eq!(meta["keel"]["class_names"], json!(["0", "1", "2", "3"]));
    let dims = &meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]["input"]["tensor_shape"]
        ["dim"];
    assert_eq!(dims[1]["size"], "8");

    // Row format and columnar format, as TF Serving answers them.
    let (a, fa) = instance(0);
    let (b, fb) = instance(1);
    let (status, answer) = post_json(addr, "/v1/models/digits:predict", &json!({"instances": [a, b]}));
    assert_eq!(status, 200, "{answer}");
    let want = expected(&mut model, &[fa.clone(), fb.clone()].concat(), 2);
    assert_eq!(floats(&answer["predictions"]), want);
    let (status, answer) = post_json(addr, "/v1/models/digits/versions/1:predict", &json!({"inputs": {"x": [a]}}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(floats(&answer["outputs"]), expected(&mut model, &fa, 1));

    // Image bytes (b64 in JSON, raw, multipart), prepared as keel predict prepares them.
    let pixels: Vec<u8> = (0..64).map(|k| (k * 4) as u8).collect();
    let image = png(&pixels, 8, 8);
    let scaled: Vec<f32> = pixels.iter().map(|&b| (b as f64 * (1.0f64 / 255.0) as f32 as f64) as f32).collect();
    let want = expected(&mut model, &scaled, 1);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&image);
    let (status, answer) = post_json(addr, "/v1/models/digits:predict", &json!({"instances": [{"b64": b64}]}));
    assert_eq!((status, floats(&answer["predictions"])), (200, want.clone()));
    let (status, body) = http(addr, "POST", "/v1/predict?top_k=2", "image/png", &image);
    let answer = json_of(&body);
    assert_eq!(status, 200, "{answer}");
    let probabilities: Vec<f32> =
        answer[0]["probabilities"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert_eq!(probabilities, want);
    assert_eq!(answer[0]["top"].as_array().unwrap().len(), 2);
    let boundary = "XbOuNdArY";
    let mut multipart = Vec::new();
    for name in ["a.png", "b.png"] {
        multipart.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n").as_bytes());
        multipart.extend(&image);
        multipart.extend(b"\r\n");
    }
    multipart.extend(format!("--{boundary}--\r\n").as_bytes());
    let (status, body) =
        http(addr, "POST", "/v1/predict", &format!("multipart/form-data; boundary={boundary}"), &multipart);
    let answer = json_of(&body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer[0]["file"].clone(), answer[1]["file"].clone()), (json!("a.png"), json!("b.png")));

    // Mistakes: each a 4xx with a JSON error naming it.
    let error = |status: u16, body: Vec<u8>, want: u16, needle: &str| {
        let body = json_of(&body);
        assert_eq!(status, want, "{body}");
        let message = body["error"].as_str().unwrap();
        assert!(message.contains(needle), "{message}");
    };
    let (s, b) = http(addr, "POST", "/v1/models/digits:predict", "application/json", b"{\"instances\": [");
    error(s, b, 400, "not valid JSON");
    let (s, b) = http(addr, "POST", "/v1/models/digits:predict", "application/json", b"{\"instances\": [NaN]}");
    error(s, b, 400, "not valid JSON");
    let (s, b) = http(addr, "POST", "/v1/models/digits:predict", "application/json", b"{\"instances\": [[[1, 2]]]}");
    error(s, b, 400, "shape [8, 8, 1]");
    let five = json!({"instances": vec![a.clone(); 5]}).to_string();
    let (s, b) = http(addr, "POST", "/v1/models/digits:predict", "application/json", five.as_bytes());
    error(s, b, 400, "at most 4");
    let (s, b) = http(addr, "POST", "/v1/models/mnist:predict", "application/json", b"{\"instances\": []}");
    error(s, b, 404, "Servable not found");
    let (s, b) = http(addr, "POST", "/v1/models/digits:classify", "application/json", b"{}");
    error(s, b, 400, "not supported");
    let (s, b) = http(addr, "POST", "/v1/predict", "application/json", b"{}");
    error(s, b, 415, "not an image");
    let (s, b) = http(addr, "POST", "/v1/predict", "image/png", b"not a png at all");
    error(s, b, 400, "PNG, JPEG or BMP");
    let (s, b) = http(addr, "POST", "/v1/models/digits:predict", "application/json", &vec![b' '; 100 << 10]);
    error(s, b, 413, "--max-body");
    let (s, b) = http(addr, "GET", "/etc/passwd", "text/plain", b"");
    error(s, b, 404, "no such route");
    let (s, b) = http(addr, "POST", "/v1/predict?top_k=zero", "image/png", &image);
    error(s, b, 400, "top_k");

    // Every answer is counted.
    let (status, metrics) = http(addr, "GET", "/metrics", "text/plain", b"");
    let metrics = String::from_utf8(metrics).unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("keel_requests_total{route=\"/v1/models/{target}\",status=\"200\"}"), "{metrics}");
    assert!(
        metrics.contains("keel_errors_total ") && metrics.contains("keel_request_seconds_bucket{le=\"+Inf\"}"),
        "{metrics}"
    );
    server.shutdown().unwrap();
    assert!(TcpStream::connect(addr).is_err(), "still listening after shutdown");
}

#[test]
fn concurrent_requests_are_batched_and_answered_as_one_by_one() {
    let options = ServeOptions { max_batch: 64, batch_timeout: Duration::from_millis(30), ..Default::default() };
    let (server, mut model) = start(options);
    let addr = server.addr();
    let clients = 16;
    let answers: Vec<(usize, Vec<f32>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                scope.spawn(move || {
                    let (nested, _) = instance(i);
                    let (status, answer) =
                        post_json(addr, "/v1/models/digits:predict", &json!({"instances": [nested]}));
                    assert_eq!(status, 200, "{answer}");
                    (i, floats(&answer["predictions"]))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, got) in answers {
        let (_, flat) = instance(i);
        let want = expected(&mut model, &flat, 1);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-6, "request {i}: {got:?} vs {want:?}");
        }
    }
    let (_, metrics) = http(addr, "GET", "/metrics", "text/plain", b"");
    let metrics = String::from_utf8(metrics).unwrap();
    let batches: u64 =
        metrics.lines().find_map(|l| l.strip_prefix("keel_batch_size_count ")).and_then(|v| v.parse().ok()).unwrap();
    assert!(
        batches < clients as u64,
        "{clients} concurrent requests ran as {batches} batches: nothing was batched\n{metrics}"
    );
    server.shutdown().unwrap();
}

/// A predictor that holds each batch until told to go on.
struct Gate {
    started: std::sync::mpsc::Sender<()>,
    go: Arc<Mutex<std::sync::mpsc::Receiver<()>>>,
}

impl Predictor for Gate {
    fn predict(&mut self, x: &Tensor) -> keel::Result<Tensor> {
        let _ = self.started.send(());
        let _ = self.go.lock().unwrap().recv_timeout(Duration::from_secs(20));
        Ok(Tensor::from_vec(&[x.rows(), 4], vec![0.25; x.rows() * 4]).unwrap())
    }
}

#[test]
fn a_full_queue_answers_503_at_once_and_shutdown_finishes_requests_in_flight() {
    let (started_tx, started) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel();
    let gate = Gate { started: started_tx, go: Arc::new(Mutex::new(go_rx)) };
    let card = ModelCard::of_model(&mut model()).unwrap();
    let options = ServeOptions {
        port: 0,
        name: "digits".into(),
        queue: 1,
        max_batch: 1,
        batch_timeout: Duration::ZERO,
        ..Default::default()
    };
    let server = Server::start(Box::new(gate), card, options).unwrap();
    let addr = server.addr();
    let (nested, _) = instance(0);
    let body = json!({"instances": [nested]});
    std::thread::scope(|scope| {
        // The first request is being predicted (held at the gate).
        let first = scope.spawn(|| post_json(addr, "/v1/models/digits:predict", &body));
        started.recv_timeout(Duration::from_secs(10)).expect("the first request reaches the model");
        // Five more: one waits in the queue (of 1), four are refused at once.
        let (answered, answers) = std::sync::mpsc::channel();
        let others: Vec<_> = (0..5)
            .map(|_| {
                let answered = answered.clone();
                let body = &body;
                scope.spawn(move || answered.send(post_json(addr, "/v1/models/digits:predict", body)).unwrap())
            })
            .collect();
        for _ in 0..4 {
            let (status, answer) = answers.recv_timeout(Duration::from_secs(10)).expect("refused at once, not held");
            assert_eq!(status, 503, "{answer}");
            assert!(answer["error"].as_str().unwrap().contains("busy"), "{answer}");
        }
        // Shut down while two are in flight: both still get their answers.
        let stopping = scope.spawn(|| server.shutdown());
        std::thread::sleep(Duration::from_millis(100));
        go.send(()).unwrap();
        let (status, answer) = first.join().unwrap();
        assert_eq!(status, 200, "{answer}");
        started.recv_timeout(Duration::from_secs(10)).expect("the queued request reaches the model");
        go.send(()).unwrap();
        let (status, answer) = answers.recv_timeout(Duration::from_secs(10)).expect("the queued request is answered");
        assert_eq!((status, floats(&answer["predictions"])), (200, vec![0.25; 4]));
        others.into_iter().for_each(|t| t.join().unwrap());
        stopping.join().unwrap().unwrap();
    });
    assert!(TcpStream::connect(addr).is_err());
}

/// A fixed number of requests at a fixed concurrency against 127.0.0.1:
/// every one answered, none lost. (Timing belongs to bench/serve.py.)
#[test]
fn a_bounded_load_test_loses_nothing() {
    let (server, _) = start(ServeOptions::default());
    let addr = server.addr();
    let (clients, per_client) = (8, 25);
    let ok: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                scope.spawn(move || {
                    (0..per_client)
                        .filter(|r| {
                            let (nested, _) = instance(c * per_client + r);
                            let (status, answer) =
                                post_json(addr, "/v1/models/digits:predict", &json!({"instances": [nested]}));
                            status == 200 && answer["predictions"][0].as_array().is_some_and(|p| p.len() == 4)
                        })
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(ok, clients * per_client);
    server.shutdown().unwrap();
}

#[test]
fn bad_options_are_refused_before_listening() {
    let card = ModelCard::of_model(&mut model()).unwrap();
    let bad_name = ServeOptions { port: 0, name: "a/b".into(), ..Default::default() };
    let e = Server::start(Box::new(model()), card.clone(), bad_name).err().unwrap().to_string();
    assert!(e.contains("--name"), "{e}");
    let first = Server::start(Box::new(model()), card.clone(), ServeOptions { port: 0, ..Default::default() }).unwrap();
    let taken = ServeOptions { port: first.addr().port(), ..Default::default() };
    let e = Server::start(Box::new(model()), card, taken).err().unwrap().to_string();
    assert!(e.contains("another --port"), "{e}");
    first.shutdown().unwrap();
}

/// Opens `GET /events` (resuming after `last_id`) and reads until the `end`
/// event has arrived; the rest is read by `finish` once the stream ends.
fn open_events(addr: SocketAddr, last_id: Option<usize>) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("the dashboard accepts");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let resume = last_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    write!(stream, "GET /events HTTP/1.1\r\nHost: {addr}\r\n{resume}Connection: close\r\n\r\n").unwrap();
    let (mut raw, mut buffer) = (Vec::new(), [0u8; 4096]);
    while !String::from_utf8_lossy(&raw).contains("event: end") {
        let n = stream.read(&mut buffer).expect("events keep coming");
        assert!(n > 0, "the stream ended before the end event: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buffer[..n]);
    }
    (stream, raw)
}

/// Reads an event stream to its end: (id, kind, data) of each event.
fn finish_events((mut stream, mut raw): (TcpStream, Vec<u8>)) -> Vec<(usize, String, Value)> {
    stream.read_to_end(&mut raw).expect("the stream ends when the dashboard stops");
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(String::from_utf8_lossy(&raw[..end]).contains("text/event-stream"));
    let body = String::from_utf8(dechunk(&raw[end + 4..])).unwrap();
    body.split("\n\n")
        .filter(|event| event.contains("event: "))
        .map(|event| {
            let field = |name: &str| event.lines().find_map(|l| l.strip_prefix(name)).unwrap().to_string();
            (field("id: ").parse().unwrap(), field("event: "), serde_json::from_str(&field("data: ")).unwrap())
        })
        .collect()
}

/// The training dashboard: every event of a run, in order, for a page
/// opened after training; a reconnecting page resumes after its last event;
/// the pictures; stopping ends the streams.
#[test]
fn the_dashboard_streams_a_runs_progress_and_its_pictures() {
    let dashboard = keel::serve::Dashboard::start("127.0.0.1".parse().unwrap(), 0).unwrap();
    let addr = dashboard.addr();
    let (x, y) = synthetic::stripes(96, 4, 1);
    let mut model = synthetic::small_cnn(5, 4, Activation::Softmax);
    model.compile(Adam::default(), Loss::SparseCategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    let mut live = dashboard.callback("stripes");
    let options = synthetic::quiet(3, 16, 0.25);
    model.fit_with_callbacks(&x, &y, &options, &mut [&mut live]).unwrap();
    let curves = keel::plots::curves_picture(model.history()).unwrap();
    dashboard.finish(json!({"test_accuracy": 0.75}), vec![curves]);

    let (status, svg) = http(addr, "GET", "/plots/curves.svg", "text/plain", b"");
    assert!(status == 200 && svg.starts_with(b"<svg"), "{status}");
    let (status, png) = http(addr, "GET", "/plots/curves.png", "text/plain", b"");
    assert!(status == 200 && png.starts_with(b"\x89PNG"), "{status}");
    assert_eq!(http(addr, "GET", "/plots/confusion_matrix.svg", "text/plain", b"").0, 404);
    let (status, page) = http(addr, "GET", "/", "text/plain", b"");
    assert!(status == 200 && String::from_utf8_lossy(&page).contains("EventSource(\"/events\")"));

    let whole = open_events(addr, None);
    let resumed = open_events(addr, Some(3));
    let mut after_stop = dashboard.callback("stopped");
    dashboard.shutdown().unwrap();
    // Training under a stopped dashboard (Ctrl-C) ends after its first batch.
    let history = model.fit_with_callbacks(&x, &y, &options, &mut [&mut after_stop]).unwrap();
    assert!(history.epochs.is_empty());
    let events = finish_events(whole);
    let ids: Vec<usize> = events.iter().map(|e| e.0).collect();
    assert_eq!(ids, (0..events.len()).collect::<Vec<_>>());
    let kinds: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(kinds[0], "start");
    assert_eq!(&kinds[kinds.len() - 2..], ["trained", "end"]);
    let start = &events[0].2;
    assert_eq!(
        (start["title"].as_str(), start["epochs"].as_u64(), start["steps"].as_u64()),
        (Some("stripes"), Some(3), Some(5))
    );
    assert_eq!(start["samples"], 72);
    // Each epoch: its first and last batch at least, then its logs.
    let epochs: Vec<&Value> = events.iter().filter(|e| e.1 == "epoch").map(|e| &e.2).collect();
    assert_eq!(epochs.len(), 3);
    for (k, epoch) in epochs.iter().enumerate() {
        let logged = &model.history().epochs[k].logs;
        assert_eq!(epoch["logs"]["val_accuracy"].as_f64(), logged.get("val_accuracy").copied());
        let batches: Vec<u64> = events
            .iter()
            .filter(|e| e.1 == "batch" && e.2["epoch"] == k + 1)
            .map(|e| e.2["batch"].as_u64().unwrap())
            .collect();
        assert!(batches.first() == Some(&1) && batches.last() == Some(&5), "epoch {}: {batches:?}", k + 1);
        let last = events.iter().rfind(|e| e.1 == "batch" && e.2["epoch"] == k + 1).unwrap();
        assert_eq!(last.2["logs"]["loss"].as_f64(), logged.get("loss").copied());
        assert_eq!(last.2["x"].as_f64(), Some(k as f64 + 1.0));
    }
    assert_eq!(events.last().unwrap().2["pictures"], json!(["curves"]));
    let resumed = finish_events(resumed);
    assert_eq!(resumed.first().map(|e| e.0), Some(4));
    assert_eq!(resumed.len(), events.len() - 4);
    assert!(TcpStream::connect(addr).is_err());
}
