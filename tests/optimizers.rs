//! Optimizer updates against values computed by hand from Keras' formulas.

use keel::optimizers::{Adam, Optimizer, RMSprop, SGD, from_name};

/// Two steps on one parameter starting at 1.0 with gradients 0.5 then -0.25.
fn two_steps(opt: &mut dyn Optimizer) -> [f32; 2] {
    let mut p = [1.0f32];
    opt.step(&mut p, &[0.5]);
    let first = p[0];
    opt.step(&mut p, &[-0.25]);
    [first, p[0]]
}

fn assert_steps(got: [f32; 2], want: [f64; 2]) {
    for (g, w) in got.iter().zip(want) {
        assert!((*g as f64 - w).abs() < 2e-7, "got {got:?}, want {want:?}");
    }
}

#[test]
fn adam_matches_keras_update() {
    // alpha_t = lr sqrt(1 - b2^t) / (1 - b1^t); m, v moving averages; p -= alpha_t m / (sqrt(v) + eps)
    let mut adam = Adam::default();
    assert_eq!((adam.learning_rate, adam.beta_1, adam.beta_2, adam.epsilon), (1e-3, 0.9, 0.999, 1e-7));
    assert_steps(two_steps(&mut adam), [0.9990000063245154, 0.9987336707920792]);
    assert_eq!(adam.iterations(), 2);
}

#[test]
fn sgd_plain_momentum_and_nesterov() {
    assert_eq!(SGD::default().learning_rate, 0.01);
    // p -= lr g
    assert_steps(two_steps(&mut SGD::new(0.1)), [0.95, 0.975]);
    // m = 0.9 m - lr g; p += m:  m1 = -0.05, m2 = -0.045 + 0.025 = -0.02
    assert_steps(two_steps(&mut SGD::new(0.1).momentum(0.9)), [0.95, 0.93]);
    // p += 0.9 m - lr g:  p1 = 1 - 0.045 - 0.05, p2 = p1 + 0.9 * -0.02 + 0.025
    let nesterov = SGD::new(0.1).momentum(0.9).nesterov(true);
    assert_steps(two_steps(&mut { nesterov }), [0.905, 0.912]);
}

#[test]
fn rmsprop_matches_keras_update() {
    // v = 0.9 v + 0.1 g^2; p -= lr g / sqrt(v + eps)
    let mut rms = RMSprop::new(0.01);
    assert_steps(two_steps(&mut rms), [0.9683772866436797, 0.983121456617157]);
    // With momentum: m = mu m + step; p -= m
    let mut rms = RMSprop::new(0.01).momentum(0.5);
    let [first, second] = two_steps(&mut rms);
    let step1 = 1.0 - 0.9683772866436797;
    let step2 = 0.9683772866436797 - 0.983121456617157;
    assert!((first as f64 - (1.0 - step1)).abs() < 2e-7);
    assert!((second as f64 - (first as f64 - (0.5 * step1 + step2))).abs() < 2e-7);
}

#[test]
fn optimizers_by_name() {
    assert_eq!(from_name("adam", None).unwrap().learning_rate(), 1e-3);
    assert_eq!(from_name("SGD", Some(0.5)).unwrap().learning_rate(), 0.5);
    assert_eq!(from_name("rmsprop", None).unwrap().name(), "rmsprop");
    let err = from_name("adagrad", None).err().expect("unknown names are errors").to_string();
    assert!(err.contains("adagrad") && err.contains("adam"), "{err}");
    assert!(from_name("adam", Some(-1.0)).is_err());
}
