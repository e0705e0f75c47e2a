//! Limited-memory BFGS for the smooth convex objectives of the linear
//! baselines (multinomial logistic loss, squared hinge), as scikit-learn's
//! `lbfgs` solver: two-loop recursion over the last `MEMORY` steps, a
//! backtracking line search with the Armijo condition, stop when the largest
//! gradient component is at most `tol` or after `max_iter` iterations.

/// Steps remembered.
const MEMORY: usize = 10;
/// Armijo's sufficient-decrease constant.
const ARMIJO: f64 = 1e-4;
/// Most halvings of the step in one line search.
const MAX_BACKTRACKS: usize = 40;

/// How a minimisation ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outcome {
    pub iterations: usize,
    pub converged: bool,
    pub value: f64,
}

/// Minimises `f` from `x` (updated in place). `f(x, grad)` returns the value
/// at `x` and writes the gradient.
pub fn minimize(mut f: impl FnMut(&[f64], &mut [f64]) -> f64, x: &mut [f64], max_iter: usize, tol: f64) -> Outcome {
    let n = x.len();
    let mut g = vec![0.0; n];
    let mut value = f(x, &mut g);
    let (mut s_hist, mut y_hist, mut rho_hist): (Vec<Vec<f64>>, Vec<Vec<f64>>, Vec<f64>) = (vec![], vec![], vec![]);
    let (mut direction, mut x_new, mut g_new) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let mut alpha = [0.0; MEMORY];
    for iteration in 0..max_iter {
        if max_abs(&g) <= tol {
            return Outcome { iterations: iteration, converged: true, value };
        }
        // Two-loop recursion: direction = -H g.
        direction.iter_mut().zip(&g).for_each(|(d, g)| *d = -g);
        for k in (0..s_hist.len()).rev() {
            alpha[k] = rho_hist[k] * dot(&s_hist[k], &direction);
            axpy(-alpha[k], &y_hist[k], &mut direction);
        }
        let gamma = match s_hist.last() {
            Some(s) => {
                dot(s, y_hist.last().expect("paired"))
                    / dot(y_hist.last().expect("paired"), y_hist.last().expect("paired"))
            }
            None => 1.0 / norm(&g).max(1e-12),
        };
        direction.iter_mut().for_each(|d| *d *= gamma);
        for k in 0..s_hist.len() {
            let beta = rho_hist[k] * dot(&y_hist[k], &direction);
            axpy(alpha[k] - beta, &s_hist[k], &mut direction);
        }
        let mut slope = dot(&g, &direction);
        if slope >= 0.0 {
            // Not a descent direction (rounding): restart from steepest descent.
            s_hist.clear();
            y_hist.clear();
            rho_hist.clear();
            let scale = norm(&g).max(1e-12);
            direction.iter_mut().zip(&g).for_each(|(d, g)| *d = -g / scale);
            slope = dot(&g, &direction);
        }
        let mut step = 1.0;
        let mut accepted = None;
        for _ in 0..MAX_BACKTRACKS {
            x_new.iter_mut().zip(x.iter().zip(&direction)).for_each(|(xn, (x, d))| *xn = x + step * d);
            let v = f(&x_new, &mut g_new);
            if v.is_finite() && v <= value + ARMIJO * step * slope {
                accepted = Some(v);
                break;
            }
            step *= 0.5;
        }
        let Some(v) = accepted else {
            // No decrease along the direction: as good as the precision allows.
            return Outcome { iterations: iteration + 1, converged: true, value };
        };
        let s: Vec<f64> = x_new.iter().zip(x.iter()).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-10 * dot(&y, &y).max(f64::MIN_POSITIVE) {
            if s_hist.len() == MEMORY {
                s_hist.remove(0);
                y_hist.remove(0);
                rho_hist.remove(0);
            }
            s_hist.push(s);
            y_hist.push(y);
            rho_hist.push(1.0 / sy);
        }
        let decrease = value - v;
        x.copy_from_slice(&x_new);
        g.copy_from_slice(&g_new);
        value = v;
        if decrease <= f64::EPSILON * value.abs().max(1.0) {
            return Outcome { iterations: iteration + 1, converged: true, value };
        }
    }
    Outcome { iterations: max_iter, converged: max_abs(&g) <= tol, value }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimises_the_rosenbrock_function() {
        let mut x = vec![-1.2, 1.0];
        let out = minimize(
            |x, g| {
                let (a, b) = (x[0], x[1]);
                g[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
                g[1] = 200.0 * (b - a * a);
                (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2)
            },
            &mut x,
            500,
            1e-8,
        );
        assert!(out.converged, "{out:?}");
        assert!((x[0] - 1.0).abs() < 1e-5 && (x[1] - 1.0).abs() < 1e-5, "{x:?}");
    }

    #[test]
    fn solves_a_quadratic_in_few_iterations() {
        // f(x) = sum_i (i + 1) (x_i - i)^2
        let mut x = vec![0.0; 20];
        let out = minimize(
            |x, g| {
                let mut v = 0.0;
                for (i, (x, g)) in x.iter().zip(g.iter_mut()).enumerate() {
                    let w = (i + 1) as f64;
                    v += w * (x - i as f64).powi(2);
                    *g = 2.0 * w * (x - i as f64);
                }
                v
            },
            &mut x,
            200,
            1e-9,
        );
        assert!(out.converged && out.iterations < 60, "{out:?}");
        assert!(x.iter().enumerate().all(|(i, v)| (v - i as f64).abs() < 1e-8), "{x:?}");
    }
}
