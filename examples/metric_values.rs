//! Every metric on given probabilities and one-hot targets, for
//! `bench/metrics_vs_sklearn.py`: reads `{"probs": [...], "targets": [...],
//! "width": C}` (flat, row-major) from the file named by the first argument
//! and prints `{metric name: value(s)}` as JSON.
//!
//! Run: cargo run --release --example metric_values -- FILE.json
use keel::metrics::{F1Average, Metric};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("give the JSON file to read")?;
    let input: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let floats = |key: &str| -> Vec<f32> {
        input[key]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_f64()).map(|v| v as f32).collect())
            .unwrap_or_default()
    };
    let (probs, targets) = (floats("probs"), floats("targets"));
    let width = input["width"].as_u64().ok_or("width missing")? as usize;
    let samples = (probs.len() / width) as f64;
    let metrics = [
        ("categorical_accuracy", Metric::CategoricalAccuracy),
        ("top_5", Metric::TopKCategoricalAccuracy(5)),
        ("precision", Metric::Precision),
        ("recall", Metric::Recall),
        ("f1_none", Metric::F1Score(F1Average::None)),
        ("f1_macro", Metric::F1Score(F1Average::Macro)),
        ("f1_weighted", Metric::F1Score(F1Average::Weighted)),
        ("auc", Metric::Auc { multi_label: false }),
        ("auc_multi_label", Metric::Auc { multi_label: true }),
    ];
    let mut out = serde_json::Map::new();
    for (name, metric) in metrics {
        let mut state = vec![0.0; metric.state_len(width)];
        metric.update(&probs, &targets, width, false, &mut state);
        out.insert(name.into(), serde_json::json!(metric.results(&state, samples, width)));
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
