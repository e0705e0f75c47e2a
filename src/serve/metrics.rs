//! The server's counters, in Prometheus' text format (`GET /metrics`):
//! requests per route and status, a latency histogram, a batch size
//! histogram.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the latency buckets, seconds.
const LATENCY: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
/// Upper bounds of the batch size buckets.
const BATCH: [u64; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

#[derive(Default)]
pub struct Metrics {
    /// (route, status) -> count, in first-seen order.
    requests: Mutex<Vec<((String, u16), u64)>>,
    latency: [AtomicU64; LATENCY.len() + 1],
    latency_sum_us: AtomicU64,
    batches: [AtomicU64; BATCH.len() + 1],
    batch_instances: AtomicU64,
}

impl Metrics {
    /// Counts one answered request.
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        {
            let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
            match requests.iter_mut().find(|((r, s), _)| r == route && *s == status) {
                Some((_, n)) => *n += 1,
                None => requests.push(((route.to_string(), status), 1)),
            }
        }
        let bucket = LATENCY.iter().position(|&b| seconds <= b).unwrap_or(LATENCY.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Counts one batch of `instances`.
    pub fn batch(&self, instances: usize) {
        let bucket = BATCH.iter().position(|&b| instances as u64 <= b).unwrap_or(BATCH.len());
        self.batches[bucket].fetch_add(1, Ordering::Relaxed);
        self.batch_instances.fetch_add(instances as u64, Ordering::Relaxed);
    }

    /// Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out += "# HELP keel_requests_total Requests answered, by route and HTTP status.\n# TYPE keel_requests_total counter\n";
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut errors = 0;
        for ((route, status), n) in &requests {
            out += &format!("keel_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}\n");
            if *status >= 400 {
                errors += n;
            }
        }
        out += &format!(
            "# HELP keel_errors_total Requests answered with a 4xx or 5xx status.\n# TYPE keel_errors_total counter\nkeel_errors_total {errors}\n"
        );
        let latency: Vec<String> = LATENCY.iter().map(f64::to_string).collect();
        let sum = self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        histogram(&mut out, "keel_request_seconds", "Time from request to answer.", &latency, &self.latency, sum);
        let batch: Vec<String> = BATCH.iter().map(u64::to_string).collect();
        let sum = self.batch_instances.load(Ordering::Relaxed) as f64;
        histogram(&mut out, "keel_batch_size", "Instances per prediction batch.", &batch, &self.batches, sum);
        out
    }
}

/// One histogram in Prometheus' format: cumulative buckets (`bounds`, then
/// +Inf, from per-bucket `counts`), sum and count.
fn histogram(out: &mut String, name: &str, help: &str, bounds: &[String], counts: &[AtomicU64], sum: f64) {
    *out += &format!("# HELP {name} {help}\n# TYPE {name} histogram\n");
    let mut cumulative = 0;
    for (bound, count) in bounds.iter().map(String::as_str).chain(["+Inf"]).zip(counts) {
        cumulative += count.load(Ordering::Relaxed);
        *out += &format!("{name}_bucket{{le=\"{bound}\"}} {cumulative}\n");
    }
    *out += &format!("{name}_sum {sum}\n{name}_count {cumulative}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let m = Metrics::default();
        m.request("predict", 200, 0.002);
        m.request("predict", 200, 0.02);
        m.request("predict", 400, 10.0);
        m.batch(3);
        let text = m.render();
        assert!(text.contains("keel_requests_total{route=\"predict\",status=\"200\"} 2"), "{text}");
        assert!(text.contains("keel_errors_total 1"), "{text}");
        assert!(text.contains("keel_request_seconds_bucket{le=\"0.0025\"} 1"), "{text}");
        assert!(text.contains("keel_request_seconds_bucket{le=\"0.025\"} 2"), "{text}");
        assert!(text.contains("keel_request_seconds_bucket{le=\"+Inf\"} 3"), "{text}");
        assert!(
            text.contains("keel_batch_size_bucket{le=\"2\"} 0") && text.contains("keel_batch_size_bucket{le=\"4\"} 1"),
            "{text}"
        );
    }
}
