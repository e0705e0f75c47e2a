//! k nearest neighbours (scikit-learn's `KNeighborsClassifier`: Euclidean
//! distance, uniform weights, brute force). Fitting keeps the training set;
//! predicting finds each query's k nearest training samples with one matrix
//! product per block of queries (|q|^2 - 2 q.t + |t|^2, the query's own norm
//! dropped as it ranks nothing), and answers the neighbours' class fractions.

use super::Matrix;
use crate::kernels::matmul::{MatRef, matmul};
use rayon::prelude::*;

/// Queries per matrix product.
const QUERIES: usize = 64;

#[derive(Clone, Debug, PartialEq)]
pub struct Knn {
    pub samples: Matrix,
    pub labels: Vec<usize>,
    pub classes: usize,
    pub k: usize,
}

impl Knn {
    /// Class fractions among each query's k nearest samples: (n, classes).
    /// Equal distances rank the earlier training sample first.
    pub fn scores(&self, x: &Matrix) -> Vec<f32> {
        let (d, classes, train) = (self.samples.cols, self.classes, self.samples.rows);
        let norms: Vec<f32> = self.samples.data.chunks_exact(d).map(|r| r.iter().map(|v| v * v).sum()).collect();
        let k = self.k.min(train);
        let mut out = vec![0.0f32; x.rows * classes];
        out.par_chunks_mut(QUERIES * classes).zip(x.data.par_chunks(QUERIES * d)).for_each(|(out, q)| {
            let m = q.len() / d;
            let mut dots = vec![0.0f32; m * train];
            matmul(MatRef::new(q, m, d), MatRef::new(&self.samples.data, train, d).t(), &mut dots, false);
            let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
            for (row, scores) in dots.chunks_exact(train).zip(out.chunks_exact_mut(classes)) {
                best.clear();
                for (j, (&dot, &norm)) in row.iter().zip(&norms).enumerate() {
                    let distance = norm - 2.0 * dot;
                    if best.len() == k && distance >= best[k - 1].0 {
                        continue;
                    }
                    let at = best.partition_point(|&(d, _)| d <= distance);
                    best.insert(at, (distance, j));
                    best.truncate(k);
                }
                for &(_, j) in &best {
                    scores[self.labels[j]] += 1.0 / k as f32;
                }
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path ranks neighbours as the plain distance definition does.
    #[test]
    fn matches_plain_distances() {
        let (n, d, k, classes) = (150, 6, 5, 3);
        let data: Vec<f32> = (0..n * d).map(|i| ((i * 7919) % 101) as f32 / 101.0).collect();
        let labels: Vec<usize> = (0..n).map(|i| (i * 7) % classes).collect();
        let model = Knn { samples: Matrix { data, rows: n, cols: d }, labels: labels.clone(), classes, k };
        let queries: Vec<f32> = (0..20 * d).map(|i| ((i * 104729) % 89) as f32 / 89.0).collect();
        let q = Matrix { data: queries, rows: 20, cols: d };
        let fast = model.scores(&q);
        for (i, query) in q.data.chunks(d).enumerate() {
            let mut order: Vec<(f32, usize)> = model
                .samples
                .data
                .chunks(d)
                .enumerate()
                .map(|(j, t)| (t.iter().zip(query).map(|(a, b)| (a - b) * (a - b)).sum(), j))
                .collect();
            order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut expected = vec![0.0f32; classes];
            order.iter().take(k).for_each(|&(_, j)| expected[labels[j]] += 1.0 / k as f32);
            for c in 0..classes {
                assert!(
                    (fast[i * classes + c] - expected[c]).abs() < 1e-6,
                    "query {i}: {:?} vs {expected:?}",
                    &fast[i * classes..(i + 1) * classes]
                );
            }
        }
    }
}
