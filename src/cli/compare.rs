//! `keel compare RUN.json...`: the `--metrics-out` files of `keel train`,
//! `keel evaluate` and `keel baseline` runs as one table (best test accuracy
//! first) and, with `--plots`, one bar chart.

use super::write_json;
use keel::plots::{self, Scored};
use keel::prelude::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// Files written by --metrics-out of keel train, evaluate or baseline.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// text (aligned columns), markdown or json.
    #[arg(long, default_value = "text", value_parser = ["text", "markdown", "json"])]
    format: String,
    /// Write comparison.png and comparison.svg (accuracy and macro F1 bars) into this directory.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Also write the table as JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Largest metrics file read.
const MAX_FILE: u64 = 64 << 20;

/// One run's row.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    name: String,
    dataset: Option<String>,
    train_samples: Option<u64>,
    test_samples: Option<u64>,
    accuracy: f64,
    macro_f1: Option<f64>,
    fit_s: Option<f64>,
    images_per_s: Option<f64>,
}

pub fn run(args: &CompareArgs) -> keel::Result<()> {
    if let Some(dir) = &args.plots {
        keel::io::check_output_dir(dir, "--plots")?;
    }
    if let Some(path) = &args.out {
        keel::io::check_output_file(path, "--out")?;
    }
    let mut rows = args.runs.iter().map(|p| read_row(p)).collect::<keel::Result<Vec<Row>>>()?;
    rows.sort_by(|a, b| b.accuracy.total_cmp(&a.accuracy));
    let differ = |values: Vec<String>| {
        let mut v = values;
        v.sort();
        v.dedup();
        (v.len() > 1).then(|| v.join(", "))
    };
    if let Some(sets) = differ(rows.iter().filter_map(|r| r.dataset.clone()).collect()) {
        eprintln!("warning: the runs are on different datasets ({sets}); their figures do not compare");
    }
    if let Some(sizes) = differ(rows.iter().filter_map(|r| r.test_samples.map(|n| n.to_string())).collect()) {
        eprintln!("warning: the runs were tested on different numbers of samples ({sizes})");
    }
    let table = json!(rows
        .iter()
        .map(|r| json!({
            "name": r.name, "dataset": r.dataset, "train_samples": r.train_samples, "test_samples": r.test_samples,
            "test_accuracy": r.accuracy, "macro_f1": r.macro_f1, "fit_s": r.fit_s, "predict_images_per_s": r.images_per_s,
        }))
        .collect::<Vec<_>>());
    match args.format.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&table).expect("JSON values serialise")),
        format => print!("{}", render(&rows, format == "markdown")),
    }
    if let Some(path) = &args.out {
        write_json(path, &table)?;
    }
    if let Some(dir) = &args.plots {
        let scored: Vec<Scored> =
            rows.iter().map(|r| Scored { name: r.name.clone(), accuracy: r.accuracy, macro_f1: r.macro_f1 }).collect();
        let path = plots::comparison(&scored, dir)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The table, as aligned text or markdown.
fn render(rows: &[Row], markdown: bool) -> String {
    let header = ["classifier", "train samples", "test accuracy", "macro F1", "fit s", "predict images/s"];
    let number = |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    let count = |v: Option<u64>| v.map_or("-".to_string(), thousands);
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                count(r.train_samples),
                format!("{:.4}", r.accuracy),
                number(r.macro_f1, 4),
                number(r.fit_s, 1),
                r.images_per_s.map_or("-".into(), |v| thousands(v.round() as u64)),
            ]
        })
        .collect();
    let mut out = String::new();
    if markdown {
        out += &format!("| {} |\n|{}\n", header.join(" | "), "---|".repeat(header.len()));
        for row in &cells {
            out += &format!("| {} |\n", row.join(" | "));
        }
        return out;
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| cells.iter().map(|r| r[c].len()).chain([header[c].len()]).max().unwrap_or(0))
        .collect();
    let line = |cols: Vec<&str>| {
        let text: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(c, v)| if c == 0 { format!("{v:<w$}", w = widths[c]) } else { format!("{v:>w$}", w = widths[c]) })
            .collect();
        text.join("  ").trim_end().to_string() + "\n"
    };
    out += &line(header.to_vec());
    for row in &cells {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

fn thousands(n: u64) -> String {
    keel::utils::thousands(n as usize)
}

/// A run's row from its metrics file.
fn read_row(path: &Path) -> keel::Result<Row> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut text = String::new();
    file.take(MAX_FILE + 1).read_to_string(&mut text).map_err(|e| Error::io(path, e))?;
    let bad = |what: String| Error::InvalidArgument(format!("{}: {what}", path.display()));
    if text.len() as u64 > MAX_FILE {
        return Err(bad(format!("larger than {} MiB; not a metrics file", MAX_FILE >> 20)));
    }
    let value: Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON ({e}); give files written by --metrics-out")))?;
    let number = |v: Option<&Value>| v.and_then(Value::as_f64).filter(|v| v.is_finite() && *v >= 0.0);
    let at = |keys: &[&str]| keys.iter().try_fold(&value, |v, k| v.get(k));
    let accuracy = number(value.get("test_accuracy")).filter(|a| *a <= 1.0).ok_or_else(|| {
        bad("has no test_accuracy between 0 and 1; give files written by --metrics-out of keel train, evaluate or baseline (with a test split)".into())
    })?;
    let stem = || path.file_stem().map_or("run".into(), |s| s.to_string_lossy().into_owned());
    let name = match (value.get("name").and_then(Value::as_str), at(&["config", "model"]).and_then(Value::as_str)) {
        (Some(name), _) => name.to_string(),
        (None, Some("reference")) => "CNN (reference model)".into(),
        (None, Some(model)) => {
            format!("CNN ({})", Path::new(model).file_stem().map_or(model.into(), |s| s.to_string_lossy()))
        }
        (None, None) => stem(),
    };
    let dataset = value.get("dataset").or(at(&["config", "dataset"])).and_then(Value::as_str).map(String::from);
    let test_samples = number(value.get("test_samples")).map(|v| v as u64);
    let predict_s = number(at(&["timings", "predict_s"])).filter(|s| *s > 0.0);
    let images_per_s = number(value.get("predict_images_per_s")).or_else(|| Some(test_samples? as f64 / predict_s?));
    Ok(Row {
        name,
        dataset,
        train_samples: number(value.get("train_samples")).map(|v| v as u64),
        test_samples,
        accuracy,
        macro_f1: number(value.get("macro_f1")).or(number(at(&["report", "macro_avg", "f1"]))),
        fit_s: number(at(&["timings", "fit_s"])),
        images_per_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_group_digits() {
        let rows = vec![Row {
            name: "forest (pixels)".into(),
            dataset: Some("mnist".into()),
            train_samples: Some(60000),
            test_samples: Some(10000),
            accuracy: 0.9701,
            macro_f1: Some(0.97),
            fit_s: Some(12.34),
            images_per_s: Some(123456.7),
        }];
        let text = render(&rows, false);
        assert!(text.contains("forest (pixels)") && text.contains("60,000") && text.contains("123,457"), "{text}");
        let md = render(&rows, true);
        assert!(md.starts_with("| classifier |") && md.contains("| 0.9701 |"), "{md}");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
    }
}
