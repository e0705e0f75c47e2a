//! The pages in a real browser (Debian's chromium, driven through
//! chromedriver by the WebDriver client fantoccini): digit strokes drawn
//! with the mouse on `keel serve`'s page and an uploaded image are answered
//! with exactly what `keel predict` says of the same pixels; the training
//! dashboard's curves gain points while `keel train --dashboard` runs.
//!
//! They need chromium and chromedriver (`apt-get install chromium
//! chromium-driver`; `KEEL_CHROMIUM`, `KEEL_CHROMEDRIVER` name other
//! binaries). Without them each test says so and passes, unless
//! `KEEL_BROWSER_TESTS=required` (as CI sets), when it fails.
//! `KEEL_SCREENSHOTS=DIR` saves the pages' screenshots there (the README's).

mod synthetic;

use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
use fantoccini::{Client, ClientBuilder, Locator};
use keel::prelude::*;
use keel::serve::{ModelCard, ServeOptions, Server};
use serde_json::{Value, json};
use std::io::BufRead;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The first of `env` and `candidates` that exists, else one on the PATH named `name`.
fn find_binary(env: &str, candidates: &[&str], name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).collect::<Vec<_>>())
        .unwrap_or_default();
    candidates.iter().map(PathBuf::from).chain(on_path).find(|p| p.is_file())
}

/// One browser at a time: the tests share two cores with each other and with training.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A headless chromium session and the chromedriver behind it.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Browser {
    /// None (after saying why) when chromium or chromedriver is missing and not required.
    async fn start() -> Option<Browser> {
        let chromium = find_binary("KEEL_CHROMIUM", &["/usr/bin/chromium", "/usr/bin/chromium-browser"], "chromium");
        let chromedriver = find_binary("KEEL_CHROMEDRIVER", &["/usr/bin/chromedriver"], "chromedriver");
        let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
            let message = "no chromium or chromedriver: install Debian's chromium and chromium-driver (or set KEEL_CHROMIUM and KEEL_CHROMEDRIVER)";
            assert!(std::env::var("KEEL_BROWSER_TESTS").as_deref() != Ok("required"), "{message}");
            eprintln!("skipped: {message}");
            return None;
        };
        let turn = ONE_AT_A_TIME.lock().await;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        // No network beyond 127.0.0.1 here: the flags keep chromium from reaching out.
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1400,1000".into(),
            "--force-device-scale-factor=1".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let options = json!({ "binary": chromium, "args": args });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(capabilities);
        // A loaded machine may make chromium's first start time out: it gets three tries.
        let mut tries = 0;
        let client = loop {
            match builder.connect(&format!("http://127.0.0.1:{port}")).await {
                Ok(client) => break client,
                Err(e) if tries < 2 => {
                    eprintln!("chromium did not start ({e}); trying again");
                    tries += 1;
                }
                Err(e) => panic!("chromedriver cannot start a chromium session: {e}"),
            }
        };
        Some(Browser { client, driver, _profile: profile, _turn: turn })
    }

    async fn run(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Polls `script` until it returns true.
    async fn wait_until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.run(script).await != json!(true) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a screenshot of the whole page as DIR/NAME when KEEL_SCREENSHOTS=DIR.
    async fn screenshot(&self, name: &str) {
        if let Some(dir) = std::env::var_os("KEEL_SCREENSHOTS") {
            let height = self.run("return document.documentElement.scrollHeight").await.as_u64().unwrap();
            self.client.set_window_size(1400, height as u32 + 140).await.unwrap();
            let png = self.client.screenshot().await.unwrap();
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(Path::new(&dir).join(name), png).unwrap();
        }
    }

    async fn close(mut self) {
        self.client.clone().close().await.unwrap();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The reference model: trained for one epoch on MNIST's first 10,000 images
/// when KEEL_DATA_DIR has MNIST (then it reads digits), else untrained.
fn digits_model(dir: &Path) -> (PathBuf, bool) {
    let mut model = synthetic::reference_model(42);
    model.compile(Adam::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    let trained = std::env::var_os("KEEL_DATA_DIR").is_some();
    if trained {
        let ((x, y), _) = keel::datasets::mnist::load_data().unwrap();
        let x = (x.slice_rows(0, 10_000).unwrap() / 255.0).reshape(&[-1, 28, 28, 1]).unwrap();
        let y = keel::utils::to_categorical(&y.slice_rows(0, 10_000).unwrap(), Some(10)).unwrap();
        model.fit(&x, &y, &synthetic::quiet(1, 128, 0.0)).unwrap();
    }
    let path = dir.join("digits.keel");
    model.save(&path).unwrap();
    (path, trained)
}

/// `keel predict --json MODEL IMAGE`: the image's probabilities.
fn keel_predict(model: &Path, image: &Path) -> Vec<f32> {
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["predict", "--json"])
        .args([model, image])
        .output()
        .expect("keel runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    floats(&answer[0]["probabilities"])
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}")).iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn assert_same(page: &[f32], predicted: &[f32]) {
    assert_eq!(page.len(), predicted.len());
    for (i, (a, b)) in page.iter().zip(predicted).enumerate() {
        assert!((a - b).abs() <= 1e-5, "class {i}: the page shows {a}, keel predict says {b}");
    }
}

fn argmax(p: &[f32]) -> usize {
    (0..p.len()).fold(0, |best, i| if p[i] > p[best] { i } else { best })
}

/// What the page shows: its model input (grey bytes), the probabilities and the class it names.
async fn shown(browser: &Browser) -> (Vec<u8>, Vec<f32>, usize) {
    let state = browser
        .run(
            "const c = document.getElementById('input');
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
             return { pixels: Array.from(d).filter((_, i) => i % 4 === 0),
                      probabilities: JSON.parse(document.getElementById('bars').dataset.probabilities),
                      shown: Number(document.getElementById('answer').dataset.class) };",
        )
        .await;
    let pixels = state["pixels"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
    (pixels, floats(&state["probabilities"]), state["shown"].as_u64().unwrap() as usize)
}

fn start_server(model: &Path) -> Server {
    let mut served = Model::load(model).unwrap();
    let card = ModelCard::of_model(&mut served).unwrap();
    Server::start(Box::new(served), card, ServeOptions { port: 0, name: "digits".into(), ..Default::default() })
        .unwrap()
}

/// A "1" drawn with the mouse on the page's canvas: the page answers live
/// with what `keel predict` says of the 28x28 input the page made.
#[tokio::test]
async fn a_digit_drawn_on_the_page_is_answered_as_keel_predict_does() {
    let Some(browser) = Browser::start().await else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (model, trained) = digits_model(tmp.path());
    let server = start_server(&model);
    browser.client.goto(&format!("http://{}/", server.addr())).await.unwrap();
    browser.wait_until("the model's metadata", "return document.querySelectorAll('#bars .bar').length === 10").await;

    // A slightly slanted stroke down the middle of the 280x280 pad, in steps.
    let pad = browser.client.find(Locator::Css("#pad")).await.unwrap();
    let step = |x: f64, y: f64| PointerAction::MoveToElement {
        element: pad.clone(),
        duration: Some(Duration::from_millis(20)),
        x,
        y,
    };
    let mut stroke = MouseActions::new("mouse".into())
        .then(step(12.0, -95.0))
        .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT });
    for k in 1..=10 {
        stroke = stroke.then(step(12.0 - 2.0 * k as f64, -95.0 + 19.0 * k as f64));
    }
    stroke = stroke.then(PointerAction::Up { button: MOUSE_BUTTON_LEFT });
    browser.client.perform_actions(stroke).await.unwrap();
    browser
        .wait_until(
            "the answer to the last stroke",
            "return !pending && !again && document.getElementById('answer').dataset.class !== ''",
        )
        .await;
    let (pixels, probabilities, class) = shown(&browser).await;
    assert!(pixels.iter().filter(|&&p| p > 128).count() > 20, "the stroke reached the model's input");
    assert_eq!(class, argmax(&probabilities), "the page names the most likely class");
    let image = tmp.path().join("drawn.png");
    image::GrayImage::from_raw(28, 28, pixels).unwrap().save(&image).unwrap();
    assert_same(&probabilities, &keel_predict(&model, &image));
    if trained {
        assert_eq!(class, 1, "a vertical stroke reads as a 1: {probabilities:?}");
    }
    browser.screenshot("serve-page.png").await;

    // Clear empties the answer.
    browser.client.find(Locator::Css("#clear")).await.unwrap().click().await.unwrap();
    browser.wait_until("the cleared answer", "return document.getElementById('answer').dataset.class === ''").await;
    browser.close().await;
    server.shutdown().unwrap();
}

/// An image file chosen in the page's file input is answered as `keel
/// predict` answers that file (decoded, resized, scaled the same way).
#[tokio::test]
async fn an_uploaded_image_is_answered_as_keel_predict_does() {
    let Some(browser) = Browser::start().await else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (model, trained) = digits_model(tmp.path());
    let server = start_server(&model);
    // A ring, drawn at twice MNIST's size: the server resizes it.
    let ring = image::GrayImage::from_fn(56, 56, |x, y| {
        let r = ((x as f32 - 27.5).powi(2) + (y as f32 - 27.5).powi(2)).sqrt();
        image::Luma([if (12.0..19.0).contains(&r) { 255 } else { 0 }])
    });
    let file = tmp.path().join("ring.png");
    ring.save(&file).unwrap();
    browser.client.goto(&format!("http://{}/", server.addr())).await.unwrap();
    browser.wait_until("the model's metadata", "return document.querySelectorAll('#bars .bar').length === 10").await;
    let input = browser.client.find(Locator::Css("#file")).await.unwrap();
    input.send_keys(file.to_str().unwrap()).await.unwrap();
    browser.wait_until("the upload's answer", "return document.getElementById('answer').dataset.class !== ''").await;
    let (_, probabilities, class) = shown(&browser).await;
    assert_eq!(class, argmax(&probabilities));
    assert_same(&probabilities, &keel_predict(&model, &file));
    if trained {
        assert_eq!(class, 0, "a ring reads as a 0: {probabilities:?}");
    }
    browser.close().await;
    server.shutdown().unwrap();
}

/// `keel train --dashboard`: the page's curves gain points while training
/// runs, every epoch gets its validation point and row, and the confusion
/// matrix and misclassified images appear at the end. SIGTERM then stops
/// the command cleanly.
#[tokio::test]
async fn the_dashboards_curves_gain_points_while_training_runs() {
    let Some(browser) = Browser::start().await else { return };
    let tmp = tempfile::tempdir().unwrap();
    // The reference model on MNIST when KEEL_DATA_DIR has it, else Keras'
    // MNIST convnet on a few synthetic digits: a few seconds either way.
    let convnet = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/models/mnist_convnet.toml");
    let mut train = Command::new(env!("CARGO_BIN_EXE_keel"));
    train.args(["train", "--epochs", "3", "--dashboard", "0", "--quiet"]).env("KEEL_OFFLINE", "1");
    if std::env::var_os("KEEL_DATA_DIR").is_none() {
        synthetic::write_synthetic_mnist(&tmp.path().join("mnist"), 4000, 200);
        train.args(["--model", convnet, "--batch-size", "32", "--threads", "1", "--data-dir"]).arg(tmp.path());
    }
    let mut train = train.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("keel runs");
    let mut stderr = std::io::BufReader::new(train.stderr.take().unwrap()).lines();
    let url = loop {
        let line = stderr.next().expect("keel prints the dashboard's address").unwrap();
        if let Some(url) = line.strip_prefix("Dashboard: ") {
            break url.to_string();
        }
    };
    browser.client.goto(&url).await.unwrap();
    // Point counts seen while training ran.
    let mut seen: Vec<u64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let state = browser
            .run(
                "return { points: Number(document.getElementById('loss-chart').dataset.points),
                          status: document.getElementById('status').textContent };",
            )
            .await;
        let status = state["status"].as_str().unwrap().to_string();
        if status.starts_with("trained") || status.starts_with("finished") {
            break;
        }
        let points = state["points"].as_u64().unwrap();
        if status.starts_with("training") && seen.last() != Some(&points) {
            seen.push(points);
        }
        assert!(Instant::now() < deadline, "training did not end: {status}");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert!(seen.len() >= 3 && seen.windows(2).all(|w| w[0] < w[1]), "the curves grew while training: {seen:?}");
    browser.wait_until("the end of the run", "return document.getElementById('status').className === 'finished'").await;
    browser
        .wait_until(
            "the confusion matrix",
            "const img = document.getElementById('picture-confusion_matrix'); return img !== null && img.complete && img.naturalWidth > 0",
        )
        .await;
    let end = browser
        .run(
            "return { val: Number(document.getElementById('loss-chart').dataset.valPoints),
                      rows: document.querySelectorAll('#epochs tbody tr').length,
                      scores: document.getElementById('scores').textContent,
                      misclassified: document.getElementById('picture-misclassified') !== null };",
        )
        .await;
    assert_eq!((end["val"].as_u64(), end["rows"].as_u64()), (Some(3), Some(3)), "{end}");
    let accuracy = end["scores"].as_str().unwrap().strip_prefix("test accuracy ").and_then(|s| s.get(..6));
    assert!(accuracy.and_then(|a| a.parse::<f64>().ok()).is_some_and(|a| (0.0..=1.0).contains(&a)), "{end}");
    assert_eq!(end["misclassified"], json!(true));
    browser.screenshot("dashboard.png").await;
    browser.close().await;
    // SIGTERM: the dashboard stops and the command ends successfully.
    let stopped = Command::new("kill").args(["-TERM", &train.id().to_string()]).status().unwrap();
    assert!(stopped.success());
    let status = train.wait().unwrap();
    assert!(status.success(), "{status}");
}
