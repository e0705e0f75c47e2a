//! Finite-difference checking shared by the gradient tests.

use keel::layers::{Backward, Layer, Mode};
use keel::random::{Rng, stream};
use rand::Rng as _;

/// Uniform values in [lo, hi).
pub fn uniform(rng: &mut Rng, len: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(lo..hi)).collect()
}

/// Distinct values at least `gap` apart, shuffled: no ties for max-pooling and
/// no kink of ReLU within a finite-difference step.
pub fn spaced(rng: &mut Rng, len: usize, gap: f32) -> Vec<f32> {
    use rand::seq::SliceRandom;
    let mut v: Vec<f32> = (0..len).map(|i| (i as f32 - len as f32 / 2.0) * gap + gap / 2.0).collect();
    v.shuffle(rng);
    v
}

/// Asserts `analytic` matches `numeric` within a relative tolerance.
pub fn assert_close(what: &str, analytic: &[f32], numeric: &[f32], tol: f32) {
    assert_eq!(analytic.len(), numeric.len(), "{what}: lengths differ");
    for (i, (a, n)) in analytic.iter().zip(numeric).enumerate() {
        let scale = 1.0f32.max(a.abs()).max(n.abs());
        assert!((a - n).abs() <= tol * scale, "{what}[{i}]: analytic {a} vs numeric {n}");
    }
}

/// `layer`'s backward pass over `n` samples, from its parameters, input and
/// output (`params`, `x`, `y`) and dL/dy (`dy`, scratch afterwards): dL/dx
/// written into `dx` (not added to), dL/dparams into `grads`.
pub fn backward_into<L: Layer + ?Sized>(
    layer: &mut L,
    (params, x, y): (&[f32], &[f32], &[f32]),
    dy: &mut [f32],
    dx: &mut [f32],
    grads: &mut [f32],
    n: usize,
) {
    layer.backward(Backward { params, x, y, dy, dx: Some(dx), accumulate: false, grads, n });
}

/// Checks a layer's backward pass against central differences of
/// L = sum(r * forward(x)) for random r, for every parameter and input value.
pub fn check_layer(layer: impl Layer, input_shape: &[usize], n: usize, x: Vec<f32>, seed: u64) {
    check_layer_reseeded(layer, input_shape, n, x, seed, |_| {});
}

/// [`check_layer`] calling `reseed` before every forward pass, so that a
/// random layer (augmentation) makes the same draws every time.
pub fn check_layer_reseeded(
    mut layer: impl Layer,
    input_shape: &[usize],
    n: usize,
    x: Vec<f32>,
    seed: u64,
    reseed: impl Fn(&mut dyn Layer),
) {
    let out_shape = layer.build(input_shape).expect("layer builds");
    layer.allocate(n);
    let in_len: usize = input_shape.iter().product::<usize>() * n;
    let out_len: usize = out_shape.iter().product::<usize>() * n;
    assert_eq!(x.len(), in_len);
    let mut rng = stream(seed, 7);
    let params = uniform(&mut rng, layer.param_count(), -0.5, 0.5);
    let r = uniform(&mut rng, out_len, -1.0, 1.0);

    let objective = |layer: &mut dyn Layer, params: &[f32], x: &[f32]| -> f64 {
        let mut y = vec![0.0; out_len];
        reseed(layer);
        layer.forward(params, x, &mut y, n, Mode::Train);
        y.iter().zip(&r).map(|(y, r)| (*y as f64) * (*r as f64)).sum()
    };

    let mut y = vec![0.0; out_len];
    reseed(&mut layer);
    layer.forward(&params, &x, &mut y, n, Mode::Train);
    let mut dy = r.clone();
    let mut dx = vec![0.0; in_len];
    let mut grads = vec![f32::NAN; params.len()];
    backward_into(&mut layer, (&params, &x, &y), &mut dy, &mut dx, &mut grads, n);
    if layer.accumulates_input_gradient() {
        // Added into a buffer that holds another reader's gradient: those
        // values plus the same input gradient, and the same weight gradients.
        let held = uniform(&mut rng, in_len, -1.0, 1.0);
        let (mut dy, mut sum, mut again) = (r.clone(), held.clone(), vec![f32::NAN; params.len()]);
        let pass = Backward {
            params: &params,
            x: &x,
            y: &y,
            dy: &mut dy,
            dx: Some(&mut sum),
            accumulate: true,
            grads: &mut again,
            n,
        };
        layer.backward(pass);
        let want: Vec<f32> = held.iter().zip(&dx).map(|(h, d)| h + d).collect();
        assert_close(&format!("{} input gradient added", layer.class_name()), &sum, &want, 1e-5);
        assert_eq!(grads, again, "{}: weight gradients when adding", layer.class_name());
    }

    let eps = 1e-2f32;
    let numeric = |f: &mut dyn FnMut(f32) -> f64| ((f(eps) - f(-eps)) / (2.0 * eps as f64)) as f32;
    let mut num_grads = vec![0.0; params.len()];
    for i in 0..params.len() {
        num_grads[i] = numeric(&mut |d| {
            let mut p = params.clone();
            p[i] += d;
            objective(&mut layer, &p, &x)
        });
    }
    let mut num_dx = vec![0.0; in_len];
    for i in 0..in_len {
        num_dx[i] = numeric(&mut |d| {
            let mut xp = x.clone();
            xp[i] += d;
            objective(&mut layer, &params, &xp)
        });
    }
    assert_close(&format!("{} params", layer.class_name()), &grads, &num_grads, 2e-3);
    assert_close(&format!("{} input", layer.class_name()), &dx, &num_dx, 2e-3);
}
