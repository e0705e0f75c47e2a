//! Linear classifiers over the whole training set: multinomial logistic
//! regression (scikit-learn's `LogisticRegression`, L2, the intercept not
//! penalised) and the linear SVM (`LinearSVC`: squared hinge, one-vs-rest, L2
//! on weights and intercept as liblinear does), both minimised with L-BFGS.
//! The objective and its gradient are two matrix products per evaluation,
//! split over blocks of samples (rayon) and summed in block order, so the
//! result does not depend on the thread count.

use super::Matrix;
use super::lbfgs;
use crate::kernels::matmul::{MatRef, matmul};
use rayon::prelude::*;

/// Samples per block of the objective's products.
const BLOCK: usize = 2048;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearLoss {
    /// Softmax cross-entropy over all classes at once.
    Logistic,
    /// One-vs-rest squared hinge, max(0, 1 - t z)^2 with t = +-1.
    SquaredHinge,
}

/// Weights (features x classes, row-major) and a bias per class.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    pub features: usize,
    pub classes: usize,
}

impl Linear {
    /// Decision values: (n, classes) row-major, x W + b.
    //   x: (n, features) -> (n, classes)
    pub fn decision(&self, x: &Matrix) -> Vec<f32> {
        let (d, k) = (self.features, self.classes);
        let mut z = vec![0.0f32; x.rows * k];
        z.par_chunks_mut(BLOCK * k).zip(x.data.par_chunks(BLOCK * d)).for_each(|(z, x)| {
            let m = x.len() / d;
            matmul(MatRef::new(x, m, d), MatRef::new(&self.weights, d, k), z, false);
            z.chunks_exact_mut(k).for_each(|row| row.iter_mut().zip(&self.bias).for_each(|(z, b)| *z += b));
        });
        z
    }
}

/// Fits the weights minimising the mean loss + ||W||^2 / (2 C n) (and the
/// bias too for the squared hinge), from zeros. Returns the model and how
/// L-BFGS ended.
pub fn fit(
    x: &Matrix,
    y: &[usize],
    classes: usize,
    loss: LinearLoss,
    c: f64,
    max_iter: usize,
    tol: f64,
) -> (Linear, lbfgs::Outcome) {
    let (n, d, k) = (x.rows, x.cols, classes);
    let l2 = 1.0 / (c * n as f64);
    let penalise_bias = loss == LinearLoss::SquaredHinge;
    let mut params = vec![0.0f64; d * k + k];
    let objective = |p: &[f64], grad: &mut [f64]| -> f64 {
        let model = Linear {
            weights: p[..d * k].iter().map(|&v| v as f32).collect(),
            bias: p[d * k..].iter().map(|&v| v as f32).collect(),
            features: d,
            classes: k,
        };
        let partials: Vec<(f64, Vec<f32>, Vec<f64>)> = x
            .data
            .par_chunks(BLOCK * d)
            .zip(y.par_chunks(BLOCK))
            .map(|(xb, yb)| block_loss(&model, xb, yb, loss))
            .collect();
        grad.fill(0.0);
        let mut value = 0.0;
        for (v, gw, gb) in partials {
            value += v;
            grad[..d * k].iter_mut().zip(&gw).for_each(|(g, w)| *g += *w as f64);
            grad[d * k..].iter_mut().zip(&gb).for_each(|(g, b)| *g += b);
        }
        let inv_n = 1.0 / n as f64;
        value *= inv_n;
        grad.iter_mut().for_each(|g| *g *= inv_n);
        let regularised = if penalise_bias { p.len() } else { d * k };
        for (g, w) in grad[..regularised].iter_mut().zip(&p[..regularised]) {
            value += 0.5 * l2 * w * w;
            *g += l2 * w;
        }
        value
    };
    let outcome = lbfgs::minimize(objective, &mut params, max_iter, tol);
    let model = Linear {
        weights: params[..d * k].iter().map(|&v| v as f32).collect(),
        bias: params[d * k..].iter().map(|&v| v as f32).collect(),
        features: d,
        classes: k,
    };
    (model, outcome)
}

/// One block's summed loss, and its gradient sums for the weights and biases.
//   xb: (m, d), yb: (m) -> (loss, (d, k), (k))
fn block_loss(model: &Linear, xb: &[f32], yb: &[usize], loss: LinearLoss) -> (f64, Vec<f32>, Vec<f64>) {
    let (d, k, m) = (model.features, model.classes, yb.len());
    let mut z = vec![0.0f32; m * k];
    matmul(MatRef::new(xb, m, d), MatRef::new(&model.weights, d, k), &mut z, false);
    let mut value = 0.0f64;
    let mut gb = vec![0.0f64; k];
    for (row, &label) in z.chunks_exact_mut(k).zip(yb) {
        row.iter_mut().zip(&model.bias).for_each(|(z, b)| *z += b);
        match loss {
            LinearLoss::Logistic => {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
                let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
                value += max + sum.ln() - row[label] as f64;
                for (c, v) in row.iter_mut().enumerate() {
                    let p = (*v as f64 - max).exp() / sum;
                    *v = (p - f64::from(c == label)) as f32;
                }
            }
            LinearLoss::SquaredHinge => {
                for (c, v) in row.iter_mut().enumerate() {
                    let t = if c == label { 1.0 } else { -1.0 };
                    let margin = 1.0 - t * *v as f64;
                    if margin > 0.0 {
                        value += margin * margin;
                        *v = (-2.0 * t * margin) as f32;
                    } else {
                        *v = 0.0;
                    }
                }
            }
        }
        gb.iter_mut().zip(row.iter()).for_each(|(g, r)| *g += *r as f64);
    }
    let mut gw = vec![0.0f32; d * k];
    matmul(MatRef::new(xb, m, d).t(), MatRef::new(&z, m, k), &mut gw, false);
    (value, gw, gb)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gradient the objective reports equals finite differences of its value.
    #[test]
    fn gradients_match_finite_differences() {
        let (n, d, k) = (37, 5, 3);
        let data: Vec<f32> = (0..n * d).map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5).collect();
        let x = Matrix { data, rows: n, cols: d };
        let y: Vec<usize> = (0..n).map(|i| (i * 5) % k).collect();
        for loss in [LinearLoss::Logistic, LinearLoss::SquaredHinge] {
            let p: Vec<f64> = (0..d * k + k).map(|i| ((i * 31) % 17) as f64 / 17.0 - 0.5).collect();
            let value = |p: &[f64]| {
                let model = Linear {
                    weights: p[..d * k].iter().map(|&v| v as f32).collect(),
                    bias: p[d * k..].iter().map(|&v| v as f32).collect(),
                    features: d,
                    classes: k,
                };
                block_loss(&model, &x.data, &y, loss)
            };
            let (_, gw, gb) = value(&p);
            let analytic: Vec<f64> = gw.iter().map(|&v| v as f64).chain(gb).collect();
            for i in 0..p.len() {
                let h = 1e-2;
                let (mut plus, mut minus) = (p.clone(), p.clone());
                plus[i] += h;
                minus[i] -= h;
                let numeric = (value(&plus).0 - value(&minus).0) / (2.0 * h);
                assert!(
                    (numeric - analytic[i]).abs() < 2e-2 * numeric.abs().max(1.0),
                    "{loss:?} param {i}: {numeric} vs {}",
                    analytic[i]
                );
            }
        }
    }

    #[test]
    fn separates_two_clusters() {
        let n = 200;
        let data: Vec<f32> = (0..n)
            .flat_map(|i| {
                let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
                [sign * (1.0 + (i % 7) as f32 * 0.1), (i % 5) as f32 * 0.2 - 0.4]
            })
            .collect();
        let x = Matrix { data, rows: n, cols: 2 };
        let y: Vec<usize> = (0..n).map(|i| i % 2).collect();
        for loss in [LinearLoss::Logistic, LinearLoss::SquaredHinge] {
            let (model, outcome) = fit(&x, &y, 2, loss, 1.0, 200, 1e-6);
            assert!(outcome.iterations > 0);
            let z = model.decision(&x);
            let right = z.chunks(2).zip(&y).filter(|(z, y)| usize::from(z[1] > z[0]) == **y).count();
            assert_eq!(right, n, "{loss:?}");
        }
    }
}
