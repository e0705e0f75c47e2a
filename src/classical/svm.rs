//! The kernel SVM (scikit-learn's `SVC`: RBF kernel, `C` = 1, `gamma` =
//! "scale" = 1 / (features x variance of X), one-vs-one over every pair of
//! classes, each pair's dual solved by SMO with libsvm's second-order working
//! set selection and stopping tolerance 1e-3).
//!
//! A pair's kernel matrix is computed whole with one matrix product when it
//! fits in `FULL_KERNEL` values, else row by row on demand into a bounded
//! cache. Pairs are solved in parallel and each is deterministic, so the
//! model does not depend on the thread count.

use super::Matrix;
use crate::kernels::matmul::{MatRef, matmul};
use rayon::prelude::*;

/// Most values of one pair's kernel matrix computed whole (256 MiB); a pair
/// with more members computes rows on demand. The choice depends on the pair
/// alone, so the model does not depend on the thread count.
const FULL_KERNEL: usize = 1 << 26;
/// Most kernel values the pairs being solved at once may hold whole (512
/// MiB): a pair waits for others to finish rather than exceed it.
const FULL_KERNELS: usize = 1 << 27;
/// Most kernel values cached per pair when rows are computed on demand.
const CACHE_VALUES: usize = 1 << 24;
/// libsvm's stopping tolerance on the maximal KKT violation.
const EPS: f64 = 1e-3;
/// libsvm's floor on a non-positive curvature.
const TAU: f64 = 1e-12;
/// Samples per block of the prediction's kernel products.
const QUERIES: usize = 64;

/// Support vectors, their classes, and for each pair of classes (a < b, in
/// order (0,1), (0,2), ..., (1,2), ...) a coefficient per support vector
/// (alpha * y, zero when it is not one of that pair's) and the offset rho:
/// the pair votes a when sum coef K(sv, x) - rho > 0, else b.
#[derive(Clone, Debug, PartialEq)]
pub struct Svm {
    pub support: Matrix,
    pub support_class: Vec<usize>,
    pub coef: Vec<f32>,
    pub rho: Vec<f32>,
    pub gamma: f32,
    pub classes: usize,
}

/// gamma = "scale": 1 / (features x variance of every value of x).
pub fn scale_gamma(x: &Matrix) -> f32 {
    let n = x.data.len().max(1) as f64;
    let mean = x.data.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.data.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    if var > 0.0 { (1.0 / (x.cols as f64 * var)) as f32 } else { 1.0 }
}

/// The class pairs in libsvm's order.
pub fn pairs(classes: usize) -> Vec<(usize, usize)> {
    (0..classes).flat_map(|a| (a + 1..classes).map(move |b| (a, b))).collect()
}

/// Fits the one-vs-one SVM. `c` is the box constraint, `max_iter` bounds
/// SMO's steps per pair.
pub fn fit(x: &Matrix, y: &[usize], classes: usize, c: f64, gamma: f32, max_iter: usize) -> Svm {
    let d = x.cols;
    let norms: Vec<f32> = x.data.chunks_exact(d).map(|r| r.iter().map(|v| v * v).sum()).collect();
    let budget = Budget::new(FULL_KERNELS);
    let solved: Vec<(Vec<usize>, Vec<f64>, f64)> = pairs(classes)
        .into_par_iter()
        .map(|(a, b)| {
            let members: Vec<usize> = (0..x.rows).filter(|&i| y[i] == a || y[i] == b).collect();
            let signs: Vec<f64> = members.iter().map(|&i| if y[i] == a { 1.0 } else { -1.0 }).collect();
            let kernel = Kernel::new(x, &norms, &members, gamma, Some(&budget));
            let (alpha, rho) = smo(kernel, &signs, c, max_iter);
            let coef = alpha.iter().zip(&signs).map(|(a, s)| a * s).collect();
            (members, coef, rho)
        })
        .collect();
    // Support vectors: samples with a non-zero coefficient in any pair, in sample order.
    let mut index_of = vec![usize::MAX; x.rows];
    for (members, coef, _) in &solved {
        for (&i, &c) in members.iter().zip(coef) {
            if c != 0.0 {
                index_of[i] = 0;
            }
        }
    }
    let mut support = Vec::new();
    let mut support_class = Vec::new();
    let mut count = 0;
    for (i, slot) in index_of.iter_mut().enumerate() {
        if *slot == 0 {
            *slot = count;
            count += 1;
            support.extend_from_slice(&x.data[i * d..(i + 1) * d]);
            support_class.push(y[i]);
        }
    }
    let mut coef = vec![0.0f32; solved.len() * count];
    let mut rho = Vec::with_capacity(solved.len());
    for (p, (members, alpha, r)) in solved.iter().enumerate() {
        for (&i, &c) in members.iter().zip(alpha) {
            if c != 0.0 {
                coef[p * count + index_of[i]] = c as f32;
            }
        }
        rho.push(*r as f32);
    }
    Svm { support: Matrix { data: support, rows: count, cols: d }, support_class, coef, rho, gamma, classes }
}

impl Svm {
    /// Each sample's share of the pairs' votes per class: (n, classes). Ties
    /// in votes go to the class whose pairs' decision values sum highest (as
    /// scikit-learn's `decision_function_shape="ovr"` ranks them), added as a
    /// small fraction of one vote that never outweighs a whole vote.
    pub fn scores(&self, x: &Matrix) -> Vec<f32> {
        let (d, sv, classes) = (self.support.cols, self.support.rows, self.classes);
        let pairs = pairs(classes);
        let sv_norms: Vec<f32> = self.support.data.chunks_exact(d).map(|r| r.iter().map(|v| v * v).sum()).collect();
        let mut out = vec![0.0f32; x.rows * classes];
        out.par_chunks_mut(QUERIES * classes).zip(x.data.par_chunks(QUERIES * d)).for_each(|(out, q)| {
            let m = q.len() / d;
            let mut k = vec![0.0f32; m * sv];
            let (mut votes, mut confidence, mut raw) =
                (vec![0.0f64; classes], vec![0.0f64; classes], vec![0.0f64; classes]);
            if sv > 0 {
                matmul(MatRef::new(q, m, d), MatRef::new(&self.support.data, sv, d).t(), &mut k, false);
            }
            for (i, (row, scores)) in k.chunks_exact_mut(sv.max(1)).zip(out.chunks_exact_mut(classes)).enumerate() {
                let qn: f32 = q[i * d..(i + 1) * d].iter().map(|v| v * v).sum();
                row.iter_mut()
                    .zip(&sv_norms)
                    .for_each(|(k, n)| *k = (-self.gamma * (qn + n - 2.0 * *k).max(0.0)).exp());
                votes.fill(0.0);
                confidence.fill(0.0);
                for (p, &(a, b)) in pairs.iter().enumerate() {
                    let coef = &self.coef[p * sv..(p + 1) * sv];
                    let f: f64 = coef.iter().zip(row.iter()).map(|(c, k)| (*c as f64) * (*k as f64)).sum::<f64>()
                        - self.rho[p] as f64;
                    if f > 0.0 {
                        votes[a] += 1.0
                    } else {
                        votes[b] += 1.0
                    }
                    confidence[a] += f;
                    confidence[b] -= f;
                }
                // scikit-learn's transform of the confidences into (-1/3, 1/3): below one vote.
                for c in 0..classes {
                    raw[c] = votes[c] + confidence[c] / (3.0 * (confidence[c].abs() + 1.0)) + 1.0 / 3.0;
                }
                let total: f64 = raw.iter().sum();
                scores.iter_mut().zip(&raw).for_each(|(s, r)| *s = (r / total) as f32);
            }
        });
        out
    }
}

/// The RBF kernel between the members of one pair.
struct Kernel<'a> {
    /// The members' samples, (members, features).
    gathered: Vec<f32>,
    d: usize,
    norms: &'a [f32],
    members: &'a [usize],
    gamma: f32,
    /// Rows computed so far (all of them up front when they fit).
    rows: Vec<Option<Vec<f32>>>,
    /// Rows cached, oldest first, for eviction.
    order: std::collections::VecDeque<usize>,
    /// The share of the memory budget the whole matrix holds.
    held: Option<Held<'a>>,
}

/// Kernel values that may be held at once, shared by the pairs being solved.
struct Budget {
    free: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

/// Values taken from a [`Budget`], given back on drop.
struct Held<'a> {
    budget: &'a Budget,
    values: usize,
}

impl Budget {
    fn new(values: usize) -> Budget {
        Budget { free: std::sync::Mutex::new(values), freed: std::sync::Condvar::new() }
    }

    /// Waits until `values` (at most the budget) are free, then takes them.
    fn acquire(&self, values: usize) -> Held<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free < values {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= values;
        Held { budget: self, values }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        *self.budget.free.lock().unwrap_or_else(|e| e.into_inner()) += self.values;
        self.budget.freed.notify_all();
    }
}

impl<'a> Kernel<'a> {
    fn new(x: &'a Matrix, norms: &'a [f32], members: &'a [usize], gamma: f32, budget: Option<&'a Budget>) -> Self {
        let (l, d) = (members.len(), x.cols);
        let gathered: Vec<f32> = members.iter().flat_map(|&i| x.data[i * d..(i + 1) * d].iter().copied()).collect();
        let mut kernel =
            Kernel { gathered, d, norms, members, gamma, rows: vec![None; l], order: Default::default(), held: None };
        if l * l <= FULL_KERNEL {
            kernel.held = budget.map(|b| b.acquire(l * l));
            let mut all = vec![0.0f32; l * l];
            let g = MatRef::new(&kernel.gathered, l, d);
            matmul(g, g.t(), &mut all, false);
            for (r, row) in all.chunks_exact_mut(l.max(1)).enumerate() {
                kernel.finish_row(r, row);
                kernel.rows[r] = Some(row.to_vec());
            }
        }
        kernel
    }

    /// Turns dot products with member `r` into kernel values.
    fn finish_row(&self, r: usize, row: &mut [f32]) {
        let nr = self.norms[self.members[r]];
        for (k, &j) in row.iter_mut().zip(self.members) {
            *k = (-self.gamma * (nr + self.norms[j] - 2.0 * *k).max(0.0)).exp();
        }
    }

    fn row(&mut self, r: usize) -> &[f32] {
        if self.rows[r].is_none() {
            let (l, d) = (self.members.len(), self.d);
            let mut row = vec![0.0f32; l];
            let xr = MatRef::new(&self.gathered[r * d..(r + 1) * d], 1, d);
            matmul(xr, MatRef::new(&self.gathered, l, d).t(), &mut row, false);
            self.finish_row(r, &mut row);
            let capacity = (CACHE_VALUES / self.members.len().max(1)).max(2);
            while self.order.len() >= capacity {
                let old = self.order.pop_front().expect("non-empty");
                self.rows[old] = None;
            }
            self.rows[r] = Some(row);
            self.order.push_back(r);
        }
        self.rows[r].as_deref().expect("computed above")
    }
}

/// Solves min 1/2 a'Qa - e'a, 0 <= a <= c, y'a = 0 with Q_ij = y_i y_j K_ij.
/// Returns the alphas and rho.
fn smo(mut kernel: Kernel, y: &[f64], c: f64, max_iter: usize) -> (Vec<f64>, f64) {
    let l = y.len();
    let mut alpha = vec![0.0f64; l];
    let mut grad = vec![-1.0f64; l];
    let diag: Vec<f64> = (0..l).map(|i| kernel.row(i)[i] as f64).collect();
    let up = |a: f64, y: f64| (y > 0.0 && a < c) || (y < 0.0 && a > 0.0);
    let low = |a: f64, y: f64| (y > 0.0 && a > 0.0) || (y < 0.0 && a < c);
    for _ in 0..max_iter {
        // i: the most violating index of I_up.
        let (mut i, mut gmax) = (usize::MAX, f64::NEG_INFINITY);
        for t in 0..l {
            if up(alpha[t], y[t]) && -y[t] * grad[t] > gmax {
                (i, gmax) = (t, -y[t] * grad[t]);
            }
        }
        if i == usize::MAX {
            break;
        }
        // j: the second-order choice among I_low.
        let ki: Vec<f32> = kernel.row(i).to_vec();
        let (mut j, mut gmin, mut best) = (usize::MAX, f64::INFINITY, f64::INFINITY);
        for t in 0..l {
            if !low(alpha[t], y[t]) {
                continue;
            }
            let v = -y[t] * grad[t];
            gmin = gmin.min(v);
            let b = gmax - v;
            if b > 0.0 {
                let a = (diag[i] + diag[t] - 2.0 * ki[t] as f64).max(TAU);
                if -(b * b) / a < best {
                    (j, best) = (t, -(b * b) / a);
                }
            }
        }
        if gmax - gmin < EPS || j == usize::MAX {
            break;
        }
        let kj: Vec<f32> = kernel.row(j).to_vec();
        let (old_i, old_j) = (alpha[i], alpha[j]);
        let qij = y[i] * y[j] * ki[j] as f64;
        if y[i] != y[j] {
            let quad = (diag[i] + diag[j] + 2.0 * qij).max(TAU);
            let delta = (-grad[i] - grad[j]) / quad;
            let diff = alpha[i] - alpha[j];
            alpha[i] += delta;
            alpha[j] += delta;
            if diff > 0.0 {
                if alpha[j] < 0.0 {
                    (alpha[j], alpha[i]) = (0.0, diff);
                }
            } else if alpha[i] < 0.0 {
                (alpha[i], alpha[j]) = (0.0, -diff);
            }
            if diff > 0.0 {
                if alpha[i] > c {
                    (alpha[i], alpha[j]) = (c, c - diff);
                }
            } else if alpha[j] > c {
                (alpha[j], alpha[i]) = (c, c + diff);
            }
        } else {
            let quad = (diag[i] + diag[j] - 2.0 * qij).max(TAU);
            let delta = (grad[i] - grad[j]) / quad;
            let sum = alpha[i] + alpha[j];
            alpha[i] -= delta;
            alpha[j] += delta;
            if sum > c {
                if alpha[i] > c {
                    (alpha[i], alpha[j]) = (c, sum - c);
                }
            } else if alpha[j] < 0.0 {
                (alpha[j], alpha[i]) = (0.0, sum);
            }
            if sum > c {
                if alpha[j] > c {
                    (alpha[j], alpha[i]) = (c, sum - c);
                }
            } else if alpha[i] < 0.0 {
                (alpha[i], alpha[j]) = (0.0, sum);
            }
        }
        let (di, dj) = (alpha[i] - old_i, alpha[j] - old_j);
        for t in 0..l {
            grad[t] += y[t] * (y[i] * ki[t] as f64 * di + y[j] * kj[t] as f64 * dj);
        }
    }
    // rho: the mean of y G over free alphas, else the middle of the feasible interval.
    let (mut free_sum, mut free) = (0.0, 0usize);
    let (mut ub, mut lb) = (f64::INFINITY, f64::NEG_INFINITY);
    for t in 0..l {
        let yg = y[t] * grad[t];
        if alpha[t] > 0.0 && alpha[t] < c {
            free_sum += yg;
            free += 1;
        } else if (alpha[t] >= c && y[t] < 0.0) || (alpha[t] <= 0.0 && y[t] > 0.0) {
            ub = ub.min(yg);
        } else {
            lb = lb.max(yg);
        }
    }
    let rho = if free > 0 {
        free_sum / free as f64
    } else if ub.is_finite() && lb.is_finite() {
        (ub + lb) / 2.0
    } else {
        0.0
    };
    (alpha, rho)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three clusters on a ring, with a class inside another's gap: the RBF
    /// SVM separates them; its dual solution satisfies the KKT conditions.
    #[test]
    fn separates_clusters_and_meets_the_kkt_conditions() {
        let n = 90;
        let data: Vec<f32> = (0..n)
            .flat_map(|i| {
                let class = i % 3;
                let angle = class as f32 * 2.1 + (i / 3) as f32 * 0.01;
                let radius = 1.0 + (i % 7) as f32 * 0.02;
                [radius * angle.cos(), radius * angle.sin()]
            })
            .collect();
        let x = Matrix { data, rows: n, cols: 2 };
        let y: Vec<usize> = (0..n).map(|i| i % 3).collect();
        let model = fit(&x, &y, 3, 1.0, scale_gamma(&x), 100_000);
        let scores = model.scores(&x);
        for (i, row) in scores.chunks(3).enumerate() {
            let best = (0..3).max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a))).unwrap();
            assert_eq!(best, y[i], "sample {i}: {row:?}");
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
        }
        assert!(model.support.rows < n, "every sample is a support vector");

        // KKT on one pair, solved directly.
        let members: Vec<usize> = (0..n).filter(|&i| y[i] < 2).collect();
        let signs: Vec<f64> = members.iter().map(|&i| if y[i] == 0 { 1.0 } else { -1.0 }).collect();
        let norms: Vec<f32> = x.data.chunks(2).map(|r| r[0] * r[0] + r[1] * r[1]).collect();
        let (alpha, rho) = smo(Kernel::new(&x, &norms, &members, 0.5, None), &signs, 1.0, 100_000);
        assert!(alpha.iter().zip(&signs).map(|(a, s)| a * s).sum::<f64>().abs() < 1e-9);
        let mut kernel = Kernel::new(&x, &norms, &members, 0.5, None);
        for t in 0..members.len() {
            let f: f64 = (0..members.len()).map(|s| alpha[s] * signs[s] * kernel.row(t)[s] as f64).sum::<f64>() - rho;
            let margin = signs[t] * f;
            if alpha[t] < 1e-9 {
                assert!(margin > 1.0 - 1e-2, "sample {t}: alpha 0 but margin {margin}");
            } else if alpha[t] > 1.0 - 1e-9 {
                assert!(margin < 1.0 + 1e-2, "sample {t}: alpha C but margin {margin}");
            } else {
                assert!((margin - 1.0).abs() < 1e-2, "sample {t}: free alpha but margin {margin}");
            }
        }
    }

    /// Rows computed on demand equal the whole matrix's.
    #[test]
    fn on_demand_rows_equal_the_full_kernel() {
        let data: Vec<f32> = (0..40 * 3).map(|i| ((i * 37) % 23) as f32 / 23.0).collect();
        let x = Matrix { data, rows: 40, cols: 3 };
        let norms: Vec<f32> = x.data.chunks(3).map(|r| r.iter().map(|v| v * v).sum()).collect();
        let members: Vec<usize> = (0..40).step_by(2).collect();
        let mut full = Kernel::new(&x, &norms, &members, 0.7, None);
        let empty = Kernel::new(&x, &norms, &members[..0], 0.7, None);
        let gathered = full.gathered.clone();
        let mut lazy = Kernel { rows: vec![None; members.len()], gathered, members: &members, ..empty };
        for r in 0..members.len() {
            let (a, b) = (full.row(r).to_vec(), lazy.row(r).to_vec());
            assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-5), "row {r}");
        }
    }
}
