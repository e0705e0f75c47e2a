//! Three optimizer steps on two variables from fixed gradients, for each of
//! the cases `bench/optimizer_steps.py` runs in Keras: prints the variables
//! after every step as JSON ({case: [[var0, var1] per step]}).
//!
//! Run: cargo run --release --example optimizer_steps

use keel::optimizers::{Adagrad, Adam, AdamW, LearningRateSchedule, Nadam, Optimizer, RMSprop, SGD};
use std::ops::Range;

/// The variables' starting values and each step's gradients (two variables, flat).
const START: [f32; 5] = [1.0, -2.0, 0.5, 0.3, 0.7];
const GRADS: [[f32; 5]; 3] =
    [[0.5, -0.25, 1.5, 2.0, -1.0], [-0.25, 0.5, 0.1, 0.5, 0.5], [0.05, 0.02, -0.3, -1.5, 0.25]];

fn cases() -> Vec<(&'static str, Box<dyn Optimizer>)> {
    let warmup = LearningRateSchedule::cosine_decay(0.0, 10).warmup(0.01, 2);
    let exponential = LearningRateSchedule::ExponentialDecay {
        initial_learning_rate: 0.1,
        decay_steps: 2,
        decay_rate: 0.5,
        staircase: true,
    };
    let piecewise =
        LearningRateSchedule::PiecewiseConstantDecay { boundaries: vec![0, 1], values: vec![0.1, 0.02, 0.01] };
    vec![
        ("adam", Box::new(Adam::default())),
        ("adamw", Box::new(AdamW::new(0.01).weight_decay(0.004))),
        ("adagrad", Box::new(Adagrad::new(0.1))),
        ("nadam", Box::new(Nadam::new(0.01))),
        ("sgd_clipnorm", Box::new(SGD::new(0.1).clipnorm(1.0))),
        ("sgd_global_clipnorm", Box::new(SGD::new(0.1).global_clipnorm(1.0))),
        ("sgd_clipvalue", Box::new(SGD::new(0.1).clipvalue(0.3))),
        ("rmsprop_weight_decay", Box::new(RMSprop::new(0.01).weight_decay(0.1))),
        ("adam_cosine_warmup", Box::new(Adam::default().schedule(warmup))),
        ("sgd_exponential", Box::new(SGD::default().schedule(exponential))),
        ("sgd_piecewise", Box::new(SGD::default().schedule(piecewise))),
    ]
}

/// Every case's variables after each step.
pub fn run() -> serde_json::Map<String, serde_json::Value> {
    let variables: [Range<usize>; 2] = [0..3, 3..5];
    let mut out = serde_json::Map::new();
    for (name, mut optimizer) in cases() {
        let mut params = START;
        let mut steps = Vec::new();
        for grads in &GRADS {
            optimizer.step_ranges(&mut params, grads, &variables);
            steps.push(vec![params[0..3].to_vec(), params[3..5].to_vec()]);
        }
        out.insert(name.into(), serde_json::json!(steps));
    }
    out
}

fn main() {
    println!("{}", serde_json::Value::Object(run()));
}
