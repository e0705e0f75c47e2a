//! Optimizer updates against values computed by hand from Keras' formulas.

use keel::optimizers::{Adam, LearningRateSchedule, Optimizer, RMSprop, SGD, from_name};

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
    assert_eq!((adam.learning_rate(), adam.beta_1, adam.beta_2, adam.epsilon), (1e-3, 0.9, 0.999, 1e-7));
    assert_steps(two_steps(&mut adam), [0.9990000063245154, 0.9987336707920792]);
    assert_eq!(adam.iterations(), 2);
}

#[test]
fn sgd_plain_momentum_and_nesterov() {
    assert_eq!(SGD::default().learning_rate(), 0.01);
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
    assert_eq!(from_name("adamw", None).unwrap().name(), "adamw");
    let err = from_name("adadelta", None).err().expect("unknown names are errors").to_string();
    assert!(err.contains("adadelta") && err.contains("nadam"), "{err}");
    assert!(from_name("adam", Some(-1.0)).is_err());
}

#[path = "../examples/optimizer_steps.rs"]
#[allow(dead_code)]
mod optimizer_steps;

/// Keras 3.15 (TensorFlow backend): the variables after each of three
/// `apply_gradients` calls of `bench/optimizer_steps.py`'s cases (two variables,
/// flattened: 3 values then 2).
const KERAS_STEPS: &[(&str, [[f64; 5]; 3])] = &[
    (
        "adam",
        [
            [0.9990000128746033, -1.999000072479248, 0.49900001287460327, 0.2990000247955322, 0.7009999752044678],
            [0.9987336993217468, -1.9993661642074585, 0.49828192591667175, 0.29816943407058716, 0.7012662887573242],
            [0.9984716773033142, -1.9996718168258667, 0.49786272644996643, 0.29802653193473816, 0.7013276815414429],
        ],
    ),
    (
        "adamw",
        [
            [0.9899601340293884, -1.9899202585220337, 0.4899801015853882, 0.28998807072639465, 0.7099719047546387],
            [0.9872572422027588, -1.9935016632080078, 0.4827796220779419, 0.28167060017585754, 0.7126068472862244],
            [0.9845975637435913, -1.99647855758667, 0.47856831550598145, 0.28023022413253784, 0.7131922245025635],
        ],
    ),
    (
        "adagrad",
        [
            [0.915484607219696, -1.9379826784133911, 0.4021507799625397, 0.20122703909873962, 0.7953462600708008],
            [0.9544095396995544, -2.0158326625823975, 0.3956413269042969, 0.1772538721561432, 0.7523131370544434],
            [0.9466480612754822, -2.0189452171325684, 0.41480761766433716, 0.23564130067825317, 0.7312780022621155],
        ],
    ),
    (
        "nadam",
        [
            [0.9893721342086792, -1.9893721342086792, 0.4893721342086792, 0.28937214612960815, 0.7106278538703918],
            [0.9932980537414551, -1.9981887340545654, 0.4879726767539978, 0.28619349002838135, 0.706701934337616],
            [0.9920394420623779, -1.9989928007125854, 0.48925408720970154, 0.29171037673950195, 0.7046677470207214],
        ],
    ),
    (
        "sgd_clipnorm",
        [
            [0.9687652587890625, -1.9843826293945312, 0.4062957465648651, 0.21055728197097778, 0.7447213530540466],
            [0.9937652349472046, -2.0343825817108154, 0.3962957561016083, 0.16055728495121002, 0.6947213411331177],
            [0.9887652397155762, -2.0363826751708984, 0.42629575729370117, 0.2591966688632965, 0.6782814264297485],
        ],
    ),
    (
        "sgd_global_clipnorm",
        [
            [0.9818181991577148, -1.9909090995788574, 0.44545453786849976, 0.22727273404598236, 0.7363636493682861],
            [1.006818175315857, -2.0409090518951416, 0.4354545474052429, 0.1772727370262146, 0.6863636374473572],
            [1.0035942792892456, -2.042198657989502, 0.4547977149486542, 0.2739885747432709, 0.6702443361282349],
        ],
    ),
    (
        "sgd_clipvalue",
        [
            [0.9700000286102295, -1.975000023841858, 0.4699999988079071, 0.27000001072883606, 0.7300000190734863],
            [0.9950000047683716, -2.005000114440918, 0.46000000834465027, 0.24000000953674316, 0.7000000476837158],
            [0.9900000095367432, -2.007000207901001, 0.49000000953674316, 0.27000001072883606, 0.6750000715255737],
        ],
    ),
    (
        "rmsprop_weight_decay",
        [
            [0.9673773050308228, -1.9663774967193604, 0.46787723898887634, 0.2680772542953491, 0.7309227585792542],
            [0.9811540842056274, -1.9929825067520142, 0.46519261598587036, 0.25975096225738525, 0.7154476642608643],
            [0.9770795106887817, -1.992193341255188, 0.47157129645347595, 0.27933308482170105, 0.7071858644485474],
        ],
    ),
    (
        "adam_cosine_warmup",
        [
            [1.0, -2.0, 0.5, 0.30000001192092896, 0.699999988079071],
            [0.9986683130264282, -2.001830577850342, 0.4964095652103424, 0.2958470582962036, 0.7013316750526428],
            [0.9960481524467468, -2.004887342453003, 0.4922175705432892, 0.29441794753074646, 0.7019455432891846],
        ],
    ),
    (
        "sgd_exponential",
        [
            [0.949999988079071, -1.975000023841858, 0.3499999940395355, 0.10000000894069672, 0.800000011920929],
            [0.9749999642372131, -2.0250000953674316, 0.3400000035762787, 0.05000000819563866, 0.75],
            [0.9724999666213989, -2.0260000228881836, 0.35500001907348633, 0.1250000149011612, 0.737500011920929],
        ],
    ),
    (
        "sgd_piecewise",
        [
            [0.949999988079071, -1.975000023841858, 0.3499999940395355, 0.10000000894069672, 0.800000011920929],
            [0.9549999833106995, -1.9850000143051147, 0.3479999899864197, 0.09000001102685928, 0.7900000214576721],
            [0.9544999599456787, -1.985200047492981, 0.35099998116493225, 0.10500001162290573, 0.7875000238418579],
        ],
    ),
];

#[test]
fn optimizers_clipping_weight_decay_and_schedules_match_keras() {
    let keel = optimizer_steps::run();
    assert_eq!(keel.len(), KERAS_STEPS.len());
    for (name, want) in KERAS_STEPS {
        let got: Vec<Vec<Vec<f64>>> = serde_json::from_value(keel[*name].clone()).expect("steps of variables");
        for (step, (got, want)) in got.iter().zip(want).enumerate() {
            let got: Vec<f64> = got.concat();
            for (g, w) in got.iter().zip(want) {
                assert!(
                    (g - w).abs() <= 4e-7 * w.abs().max(1.0),
                    "{name}, step {}: got {got:?}, Keras {want:?}",
                    step + 1
                );
            }
        }
    }
}

#[test]
fn schedules_give_keras_rates() {
    // CosineDecay(1.0, 10): 0.5 * (1 + cos(pi * step / 10)), constant after 10 steps.
    let cosine = LearningRateSchedule::cosine_decay(1.0, 10);
    for (step, want) in [(0, 1.0), (5, 0.5), (10, 0.0), (20, 0.0)] {
        assert!((cosine.at(step) - want).abs() < 1e-6, "step {step}: {}", cosine.at(step));
    }
    // alpha: decays to alpha * initial.
    let floor = LearningRateSchedule::CosineDecay {
        initial_learning_rate: 2.0,
        decay_steps: 4,
        alpha: 0.1,
        warmup_target: None,
        warmup_steps: 0,
    };
    assert!((floor.at(4) - 0.2).abs() < 1e-6);
    // Warm-up: linear from 0 to 0.01 over 4 steps, then the cosine from 0.01 over 10.
    let warm = LearningRateSchedule::cosine_decay(0.0, 10).warmup(0.01, 4);
    for (step, want) in [(0, 0.0), (1, 0.0025), (3, 0.0075), (4, 0.01), (9, 0.005), (14, 0.0), (100, 0.0)] {
        assert!((warm.at(step) - want).abs() < 1e-8, "step {step}: {}", warm.at(step));
    }
    let exp = LearningRateSchedule::ExponentialDecay {
        initial_learning_rate: 0.1,
        decay_steps: 4,
        decay_rate: 0.5,
        staircase: false,
    };
    assert!((exp.at(2) - 0.1 * 0.5f32.sqrt()).abs() < 1e-7);
    let stairs = LearningRateSchedule::ExponentialDecay {
        initial_learning_rate: 0.1,
        decay_steps: 4,
        decay_rate: 0.5,
        staircase: true,
    };
    assert_eq!((stairs.at(3), stairs.at(4)), (0.1, 0.05));
    // values[0] while step <= 10, values[1] while step <= 20, values[2] after.
    let piecewise =
        LearningRateSchedule::PiecewiseConstantDecay { boundaries: vec![10, 20], values: vec![1.0, 0.5, 0.1] };
    let rates: Vec<f32> = [0, 10, 11, 20, 21].iter().map(|&s| piecewise.at(s)).collect();
    assert_eq!(rates, [1.0, 1.0, 0.5, 0.5, 0.1]);
}

#[test]
fn schedules_and_clipping_refuse_bad_arguments() {
    let bad = [
        LearningRateSchedule::cosine_decay(0.1, 0),
        LearningRateSchedule::PiecewiseConstantDecay { boundaries: vec![10], values: vec![1.0] },
        LearningRateSchedule::PiecewiseConstantDecay { boundaries: vec![10, 5], values: vec![1.0, 0.5, 0.1] },
        LearningRateSchedule::cosine_decay(f32::NAN, 10),
    ];
    for schedule in bad {
        let err = schedule.check().expect_err("a bad schedule is refused").to_string();
        assert!(err.contains(schedule.class_name()), "{err}");
    }
    // Only one clipping at a time, as Keras.
    let config = Adam::default().clipnorm(1.0).clipvalue(0.5).config();
    let err = config.to_optimizer().err().expect("two clippings are refused").to_string();
    assert!(err.contains("only one of clipnorm, clipvalue and global_clipnorm"), "{err}");
    for bad in [-1.0, 0.0, f32::NAN] {
        let err = SGD::new(0.1).clipnorm(bad).config().to_optimizer().err().expect("refused").to_string();
        assert!(err.contains("clipnorm must be a positive number"), "{err}");
    }
}

#[test]
fn a_scheduled_learning_rate_is_not_settable() {
    let mut adam = Adam::default().schedule(LearningRateSchedule::cosine_decay(0.01, 100));
    let err = adam.set_learning_rate(0.1).expect_err("as in Keras").to_string();
    assert!(err.contains("CosineDecay schedule"), "{err}");
    // The rate is the schedule's at the step count (which a resume restores).
    adam.set_iterations(50);
    assert!((adam.learning_rate() - 0.005).abs() < 1e-8);
    let mut constant = Adam::default();
    constant.set_learning_rate(0.1).expect("a constant rate can be changed");
    assert_eq!(constant.learning_rate(), 0.1);
}

/// A model file's `[compile]` with the given optimizer and loss lines.
fn compile_section(optimizer: &str, loss: &str) -> Result<keel::prelude::Model, String> {
    let text = format!(
        "input_shape = [4]\n[[layers]]\nclass_name = \"Dense\"\nunits = 3\nactivation = \"softmax\"\n\
         [compile]\noptimizer = {optimizer}\nloss = {loss}\nmetrics = [\"accuracy\"]\n"
    );
    let architecture: keel::model::Architecture = toml::from_str(&text).map_err(|e| e.to_string())?;
    keel::prelude::Model::from_architecture(&architecture).map_err(|e| e.to_string())
}

#[test]
fn model_files_take_recipes_with_keras_names() {
    let model = compile_section(
        r#"{ class_name = "AdamW", weight_decay = 0.004, clipnorm = 1.0, learning_rate = { class_name = "CosineDecay", initial_learning_rate = 0.0, decay_steps = 1000, warmup_target = 0.003, warmup_steps = 100 } }"#,
        r#"{ class_name = "CategoricalCrossentropy", label_smoothing = 0.1 }"#,
    )
    .unwrap();
    let optimizer = model.optimizer().unwrap();
    assert_eq!((optimizer.name(), optimizer.learning_rate()), ("adamw", 0.0));
    // Saved and read back (JSON in .keel files) to the same recipe.
    let json = serde_json::to_string(&model.architecture().unwrap()).unwrap();
    assert!(json.contains(r#""class_name":"CosineDecay""#) && json.contains(r#""label_smoothing":0.1"#), "{json}");
    assert!(json.contains(r#""weight_decay":0.004"#) && json.contains(r#""clipnorm":1.0"#), "{json}");
    let again = keel::prelude::Model::from_architecture(&serde_json::from_str(&json).unwrap()).unwrap();
    assert_eq!(serde_json::to_string(&again.architecture().unwrap()).unwrap(), json);
    // Plain names still work, for every optimizer.
    for class in ["Adam", "AdamW", "SGD", "RMSprop", "Adagrad", "Nadam"] {
        let model = compile_section(&format!("{{ class_name = \"{class}\" }}"), "\"categorical_crossentropy\"");
        assert!(model.is_ok(), "{class}: {:?}", model.err());
    }
    let sparse = compile_section(
        r#"{ class_name = "SGD", learning_rate = { class_name = "PiecewiseConstantDecay", boundaries = [100], values = [0.1, 0.01] } }"#,
        r#"{ class_name = "SparseCategoricalCrossentropy", from_logits = true }"#,
    );
    // from_logits with a softmax layer is refused at build time.
    assert!(sparse.err().expect("refused").contains("from_logits"));
}

#[test]
fn bad_recipes_in_model_files_are_clear_errors() {
    let loss = "\"categorical_crossentropy\"";
    let cases = [
        (r#"{ class_name = "Adam", beta1 = 0.9 }"#, loss, "Adam has no argument 'beta1'"),
        (r#"{ class_name = "Adam", clipnorm = 1.0, clipvalue = 0.5 }"#, loss, "only one of clipnorm"),
        (r#"{ class_name = "AdamW", weight_decay = -1.0 }"#, loss, "weight_decay must be a non-negative number"),
        (r#"{ class_name = "SGD", learning_rate = { class_name = "LinearDecay" } }"#, loss, "LinearDecay"),
        (
            r#"{ class_name = "SGD", learning_rate = { class_name = "CosineDecay", initial_learning_rate = 0.1, decay_steps = 0 } }"#,
            loss,
            "decay_steps must be > 0",
        ),
        (
            r#"{ class_name = "SGD", learning_rate = { class_name = "ExponentialDecay", initial_learning_rate = 0.1 } }"#,
            loss,
            "decay_steps",
        ),
        (
            r#"{ class_name = "Adam" }"#,
            r#"{ class_name = "SparseCategoricalCrossentropy", label_smoothing = 0.1 }"#,
            "label_smoothing",
        ),
        (r#"{ class_name = "Adam" }"#, r#"{ class_name = "Hinge" }"#, "unknown loss 'Hinge'"),
        (r#"{ class_name = "Adam" }"#, r#"{ class_name = "CategoricalCrossentropy", smoothing = 0.1 }"#, "smoothing"),
    ];
    for (optimizer, loss, want) in cases {
        let err = compile_section(optimizer, loss).err().unwrap_or_else(|| panic!("{optimizer} {loss} must fail"));
        assert!(err.contains(want), "{optimizer} / {loss}: {err}");
    }
}

/// The rules run over whole chunks of parameters in the CPU's widest vectors:
/// each value must come out as it does alone (the scalar loop), bit for bit.
#[test]
fn vector_updates_match_each_value_updated_alone() {
    let n = 1000;
    let values = |seed: f32| -> Vec<f32> { (0..n).map(|i| (i as f32 * 0.37 + seed).sin() * 2.0).collect() };
    type Make = fn() -> Box<dyn Optimizer>;
    let cases: [(&str, Make); 4] = [
        ("adam", || Box::new(Adam::default())),
        ("nadam", || from_name("nadam", None).unwrap()),
        ("rmsprop", || Box::new(RMSprop::new(0.01))),
        ("rmsprop with momentum", || Box::new(RMSprop::new(0.01).momentum(0.5))),
    ];
    let (start, grads) = (values(0.5), [values(0.0), values(1.0), values(2.0)]);
    for (name, make) in cases {
        let (mut all, mut params) = (make(), start.clone());
        for g in &grads {
            all.step(&mut params, g);
        }
        for (i, got) in params.iter().enumerate() {
            let (mut one, mut p) = (make(), [start[i]]);
            for g in &grads {
                one.step(&mut p, &[g[i]]);
            }
            assert_eq!(got.to_bits(), p[0].to_bits(), "{name}: value {i}");
        }
    }
}
