//! `keel serve MODEL.keel`: the model behind TF Serving's REST API, with a
//! page to draw a digit on (see `keel::serve`).

use super::classifier::Classifier;
use keel::serve::{ModelCard, ServeOptions, Server};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// A .keel model file (or a baseline saved by keel baseline --save).
    model: PathBuf,
    /// Address to listen on; 127.0.0.1 keeps the server to this machine (0.0.0.0 opens it to the network).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port (TF Serving's REST port by default; 0 picks a free one).
    #[arg(long, default_value_t = 8501)]
    port: u16,
    /// The model's name in /v1/models/NAME [default: the file's name without .keel].
    #[arg(long)]
    name: Option<String>,
    /// Most instances predicted together.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// How long the first request of a batch waits for others to join it, microseconds (0: a batch
    /// is what queued while the model was busy, so a lone request never waits).
    #[arg(long, default_value_t = 0)]
    batch_timeout_us: u64,
    /// Requests that may wait for the model; beyond it the server answers 503 at once.
    #[arg(long, default_value_t = 512)]
    queue: usize,
    /// Largest request body, bytes.
    #[arg(long, default_value_t = 4 << 20)]
    max_body: usize,
    /// Longest wait for a prediction before the server answers 504, seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Worker threads of the model (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(args: &ServeArgs) -> keel::Result<()> {
    let name = match &args.name {
        Some(name) => name.clone(),
        None => args.model.file_stem().map_or("model".into(), |s| s.to_string_lossy().into_owned()),
    };
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return Err(keel::Error::InvalidArgument(format!(
            "--timeout must be a positive number of seconds, got {}",
            args.timeout
        )));
    }
    let options = ServeOptions {
        host: args.host,
        port: args.port,
        name,
        max_batch: args.max_batch,
        batch_timeout: Duration::from_micros(args.batch_timeout_us),
        queue: args.queue,
        max_body: args.max_body,
        request_timeout: Duration::from_secs_f64(args.timeout),
        ..Default::default()
    };
    super::with_threads(args.threads, |threads| {
        let (predictor, card): (Box<dyn keel::serve::Predictor>, ModelCard) = match Classifier::load(&args.model)? {
            Classifier::Network(mut model) => {
                let card = ModelCard::of_model(&mut model)?;
                (model, card)
            }
            Classifier::Baseline(baseline) => {
                let card = ModelCard::of_baseline(&baseline);
                (baseline, card)
            }
        };
        let name = options.name.clone();
        let server = Server::start(predictor, card, options)?;
        let addr = server.addr();
        println!("Serving {} as '{name}' on {threads} thread(s) at http://{addr}/", args.model.display());
        println!("  POST http://{addr}/v1/models/{name}:predict   (TF Serving REST: {{\"instances\": [...]}})");
        println!("  POST http://{addr}/v1/predict                 (image files, as keel predict --json)");
        println!("  GET  http://{addr}/metrics, /healthz; Ctrl-C stops it");
        server.wait()
    })
}
