//! Preprocessing and augmentation layers: what they do to images, that they
//! are the identity at inference where random, and reproducible for a seed.

use keel::layers::Mode;
use keel::prelude::*;
use keel::random::BatchDraws;

fn run(layer: &mut dyn Layer, input: &[usize], x: &[f32], n: usize, mode: Mode) -> Vec<f32> {
    let out = layer.build(input).unwrap();
    layer.allocate(n);
    let mut y = vec![f32::NAN; n * out.iter().product::<usize>()];
    layer.forward(&[], x, &mut y, n, mode);
    y
}

/// n images (h, w, 1) whose pixel values are their flat index (unique).
fn ramp(n: usize, h: usize, w: usize) -> Vec<f32> {
    (0..n * h * w).map(|v| v as f32).collect()
}

#[test]
fn random_flip_flips_some_images_and_none_at_inference() {
    let (n, h, w) = (64, 3, 4);
    let x = ramp(n, h, w);
    let mut flip = RandomFlip::new(FlipMode::Horizontal);
    flip.set_draws(BatchDraws::new(1, 0));
    let y = run(&mut flip, &[h, w, 1], &x, n, Mode::Train);
    let mut flipped = 0;
    for (xs, ys) in x.chunks(h * w).zip(y.chunks(h * w)) {
        let mirrored: Vec<f32> = xs.chunks(w).flat_map(|row| row.iter().rev().copied()).collect();
        assert!(ys == xs || ys == mirrored.as_slice(), "neither kept nor mirrored");
        flipped += (ys == mirrored.as_slice()) as usize;
    }
    assert!((20..=44).contains(&flipped), "{flipped} of 64 flipped");
    assert_eq!(run(&mut flip, &[h, w, 1], &x, n, Mode::Infer), x);
}

#[test]
fn random_crop_pads_crops_and_centres_at_inference() {
    let x = ramp(1, 4, 4);
    let mut crop = RandomCrop::new(2, 2);
    assert_eq!(run(&mut crop, &[4, 4, 1], &x, 1, Mode::Infer), [5.0, 6.0, 9.0, 10.0]);
    let mut padded = RandomCrop::new(4, 4).padding(1);
    padded.set_draws(BatchDraws::new(2, 0));
    assert_eq!(run(&mut padded, &[4, 4, 1], &x, 1, Mode::Infer), x, "same size at inference: the image itself");
    let y = run(&mut padded, &[4, 4, 1], &x, 1, Mode::Train);
    assert!(y.iter().all(|v| *v == 0.0 || x.contains(v)));
    let err = RandomCrop::new(7, 7).build(&[4, 4, 1]).unwrap_err();
    assert!(err.contains("does not fit"), "{err}");
}

#[test]
fn translation_and_rotation_by_zero_are_the_identity_and_move_pixels_otherwise() {
    let x = ramp(2, 5, 5);
    for layer in [&mut RandomTranslation::new(0.0, 0.0) as &mut dyn Layer, &mut RandomRotation::new(0.0)] {
        assert_eq!(run(layer, &[5, 5, 1], &x, 2, Mode::Train), x);
    }
    let mut shift = RandomTranslation::new(0.4, 0.4);
    shift.set_draws(BatchDraws::new(3, 0));
    assert_ne!(run(&mut shift, &[5, 5, 1], &x, 2, Mode::Train), x);
    assert_eq!(run(&mut shift, &[5, 5, 1], &x, 2, Mode::Infer), x);
}

#[test]
fn rescaling_normalization_and_resizing_compute_what_keras_does() {
    let x = vec![0.0, 255.0, 51.0, 102.0];
    let y = run(&mut Rescaling::new(1.0 / 255.0), &[2, 2, 1], &x, 1, Mode::Infer);
    for (got, want) in y.iter().zip([0.0, 1.0, 0.2, 0.4]) {
        assert!((got - want).abs() < 1e-6, "{y:?}");
    }

    let data = Tensor::from_vec(&[4, 1, 1, 2], vec![1.0, 10.0, 3.0, 10.0, 5.0, 30.0, 7.0, 30.0]).unwrap();
    let mut norm = Normalization::new().adapt(&data).unwrap();
    let y = run(&mut norm, &[1, 1, 2], &data.to_f32_vec(), 4, Mode::Infer);
    for c in 0..2 {
        let col: Vec<f32> = y.iter().skip(c).step_by(2).copied().collect();
        let mean = col.iter().sum::<f32>() / 4.0;
        let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "channel {c}: mean {mean}, variance {var}");
    }
    let err = Normalization::new().build(&[2, 2, 3]).unwrap_err();
    assert!(err.contains("call adapt"), "{err}");

    // Doubling 1x2 -> 1x4 with half-pixel centres: [a, 3a/4 + b/4, a/4 + 3b/4, b].
    let y = run(&mut Resizing::new(1, 4), &[1, 2, 1], &[0.0, 8.0], 1, Mode::Infer);
    assert_eq!(y, [0.0, 2.0, 6.0, 8.0]);
}

#[test]
fn augmented_training_is_reproducible_for_a_seed() {
    let train = |seed| {
        let mut model = Sequential::new()
            .seed(seed)
            .add(RandomFlip::new(FlipMode::Horizontal).input_shape([8, 8, 1]))
            .add(RandomTranslation::new(0.1, 0.1))
            .add(RandomRotation::new(0.05))
            .add(RandomCrop::new(8, 8).padding(1))
            .add(Conv2D::new(4, (3, 3)).activation(Activation::Relu))
            .add(Flatten::new())
            .add(Dense::new(2).activation(Activation::Softmax));
        model.compile(Adam::default(), Loss::SparseCategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
        let x = Tensor::from_vec(&[32, 8, 8, 1], (0..32 * 64).map(|i| ((i * 7) % 13) as f32 / 13.0).collect()).unwrap();
        let y = Tensor::from_vec(&[32], (0..32).map(|i| (i % 2) as f32).collect()).unwrap();
        let options =
            FitOptions { epochs: 2, batch_size: 8, verbose: keel::model::Verbosity::Silent, ..FitOptions::default() };
        model.fit(&x, &y, &options).unwrap();
        model.params().unwrap().to_vec()
    };
    assert_eq!(train(5), train(5));
    assert_ne!(train(5), train(6));
}
