//! Every layer, activation and loss: backward against finite differences.

mod common;

use common::{assert_close, backward_into, check_layer, check_layer_reseeded, spaced, uniform};
use keel::activations::Activation;
use keel::layers::*;
use keel::losses::{Loss, LossConfig};
use keel::model::Verbosity;
use keel::prelude::{Adam, FitOptions, Metric, Sequential, Tensor};
use keel::random::{BatchDraws, stream};

const SMOOTH: [Activation; 4] = [Activation::Linear, Activation::Sigmoid, Activation::Tanh, Activation::Softmax];

#[test]
fn conv2d_valid_with_each_smooth_activation() {
    for (i, act) in SMOOTH.into_iter().enumerate() {
        let x = uniform(&mut stream(1, i as u64), 2 * 6 * 5 * 2, -1.0, 1.0);
        check_layer(Conv2D::new(3, (3, 2)).activation(act), &[6, 5, 2], 2, x, 10 + i as u64);
    }
}

#[test]
fn conv2d_same_padding_and_strides() {
    for (i, (strides, padding)) in
        [((1, 1), Padding::Same), ((2, 2), Padding::Same), ((2, 1), Padding::Valid), ((3, 2), Padding::Same)]
            .into_iter()
            .enumerate()
    {
        let x = uniform(&mut stream(2, i as u64), 3 * 7 * 6 * 2, -1.0, 1.0);
        let conv = Conv2D::new(4, (3, 3)).strides(strides).padding(padding).activation(Activation::Tanh);
        check_layer(conv, &[7, 6, 2], 3, x, 20 + i as u64);
    }
}

#[test]
fn conv2d_dilated_and_grouped() {
    let x = |seed, len| uniform(&mut stream(30, seed), len, -1.0, 1.0);
    // Dilation, on the direct-kernel channel counts (which then use im2col) and wider ones.
    check_layer(Conv2D::new(3, (3, 3)).dilation_rate((2, 2)), &[7, 7, 2], 2, x(1, 2 * 98), 360);
    check_layer(Conv2D::new(4, (2, 3)).dilation_rate((2, 1)).padding(Padding::Same), &[6, 6, 6], 2, x(2, 2 * 216), 361);
    // Groups: 6 channels in 3 groups, 6 filters; 8 channels in 2 groups, dilated, with an activation from its input.
    check_layer(Conv2D::new(6, (3, 3)).groups(3).padding(Padding::Same), &[5, 5, 6], 3, x(3, 3 * 150), 362);
    let grouped = Conv2D::new(4, (3, 3)).groups(2).dilation_rate((2, 2)).activation(Activation::Silu);
    check_layer(grouped, &[7, 6, 8], 2, x(4, 2 * 336), 363);
    check_layer(Conv2D::new(4, (3, 3)).groups(4).strides((2, 2)).use_bias(false), &[6, 6, 4], 17, x(5, 17 * 144), 364);
    // 1x1 convolutions read their input as the patches (no unfolding), in small and large batches.
    check_layer(Conv2D::new(5, (1, 1)).activation(Activation::Tanh), &[4, 3, 6], 2, x(6, 2 * 72), 365);
    check_layer(Conv2D::new(3, (1, 1)).padding(Padding::Same), &[3, 3, 7], 18, x(7, 18 * 63), 366);
    // Keras' rules, at build time.
    let err = Conv2D::new(6, (3, 3)).groups(4).build(&[5, 5, 8]).unwrap_err();
    assert!(err.contains("groups 4 must divide the 8 input channels and the 6 filters"), "{err}");
    let err = Conv2D::new(4, (3, 3)).dilation_rate((2, 2)).strides((2, 2)).build(&[9, 9, 1]).unwrap_err();
    assert!(err.contains("cannot both be above 1"), "{err}");
    let err = Conv2D::new(4, (3, 3)).dilation_rate((4, 4)).build(&[8, 8, 1]).unwrap_err();
    assert!(err.contains("dilated by (4, 4) (spanning (9, 9)) does not fit"), "{err}");
}

/// Strided 1x1 convolutions (ResNet's projection shortcuts) unfold by
/// gathering the pixels they read and fold their input gradient back in one
/// pass that also writes the zeros between them; with 16 to 64 filters the
/// products of a task of samples (17 here) run through the register-blocked
/// kernel where the CPU has AVX-512, as those of strided 3x3 windows do.
#[test]
fn strided_pointwise_convolutions() {
    let x = |seed, len| uniform(&mut stream(32, seed), len, -1.0, 1.0);
    let cases = [((7, 5, 16), 16, (2, 2), Padding::Same), ((6, 6, 3), 5, (3, 2), Padding::Valid)];
    for (i, ((h, w, c), filters, strides, padding)) in cases.into_iter().enumerate() {
        let conv = || Conv2D::new(filters, (1, 1)).strides(strides).padding(padding);
        check_layer(conv(), &[h, w, c], 17, x(i as u64, 17 * h * w * c), 370 + i as u64);
        // Without `accumulate`, every value of dx is written, the unread pixels' zeros too.
        let mut layer = conv();
        let out_len = layer.build(&[h, w, c]).unwrap().iter().product::<usize>();
        layer.allocate(17);
        let params = x(10 + i as u64, layer.param_count());
        let (xs, dy) = (x(20 + i as u64, 17 * h * w * c), x(30 + i as u64, 17 * out_len));
        let mut y = vec![0.0; 17 * out_len];
        layer.forward(&params, &xs, &mut y, 17, Mode::Train);
        let mut dxs = [vec![0.0; xs.len()], vec![f32::NAN; xs.len()]];
        for dx in &mut dxs {
            let mut grads = vec![0.0; params.len()];
            backward_into(&mut layer, (&params, &xs, &y), &mut dy.clone(), dx, &mut grads, 17);
        }
        assert_eq!(dxs[0], dxs[1], "case {i}: the input gradient over NaNs");
    }
    let strided = Conv2D::new(32, (3, 3)).strides((2, 2)).padding(Padding::Same).activation(Activation::Tanh);
    check_layer(strided, &[7, 6, 3], 17, x(9, 17 * 126), 372);
}

#[test]
fn a_grouped_convolution_is_separate_convolutions_side_by_side() {
    let (n, groups) = (3, 2);
    let x = uniform(&mut stream(31, 0), n * 5 * 5 * 4, -1.0, 1.0);
    let mut grouped = Conv2D::new(6, (3, 3)).groups(groups);
    grouped.build(&[5, 5, 4]).unwrap();
    let params = uniform(&mut stream(31, 1), grouped.param_count(), -0.5, 0.5);
    let mut y = vec![0.0; n * 9 * 6];
    grouped.forward(&params, &x, &mut y, n, Mode::Infer);
    for k in 0..groups {
        // Group k: input channels 2k..2k+2, filters 3k..3k+3 of the kernel (3, 3, 2, 6) and bias.
        let mut single = Conv2D::new(3, (3, 3));
        single.build(&[5, 5, 2]).unwrap();
        let mut p: Vec<f32> =
            (0..18).flat_map(|tap| (0..3).map(move |f| (tap, f))).map(|(tap, f)| params[tap * 6 + 3 * k + f]).collect();
        p.extend_from_slice(&params[108 + 3 * k..][..3]);
        let xk: Vec<f32> = x.chunks(4).flat_map(|px| px[2 * k..2 * k + 2].to_vec()).collect();
        let mut yk = vec![0.0; n * 9 * 3];
        single.forward(&p, &xk, &mut yk, n, Mode::Infer);
        let got: Vec<f32> = y.chunks(6).flat_map(|px| px[3 * k..3 * k + 3].to_vec()).collect();
        assert_close(&format!("group {k}"), &got, &yk, 1e-5);
    }
}

#[test]
fn conv2d_with_many_input_channels_uses_the_matrix_product_path() {
    for (i, (strides, padding)) in
        [((1, 1), Padding::Valid), ((2, 2), Padding::Same), ((1, 2), Padding::Same)].into_iter().enumerate()
    {
        let x = uniform(&mut stream(11, i as u64), 3 * 6 * 5 * 6, -1.0, 1.0);
        let conv = Conv2D::new(3, (3, 2)).strides(strides).padding(padding).activation(Activation::Sigmoid);
        check_layer(conv, &[6, 5, 6], 3, x, 110 + i as u64);
    }
}

#[test]
fn conv2d_without_bias_and_with_many_samples() {
    // 37 samples span several parallel tasks, including a partial one.
    let x = uniform(&mut stream(3, 0), 37 * 5 * 5, -1.0, 1.0);
    check_layer(Conv2D::new(2, (2, 2)).use_bias(false), &[5, 5, 1], 37, x, 30);
}

#[test]
fn conv2d_relu_away_from_the_kink() {
    // Single-channel 1x1 kernel keeps every pre-activation away from zero.
    let x = spaced(&mut stream(4, 0), 2 * 4 * 4, 0.1);
    check_layer(Conv2D::new(1, (1, 1)).activation(Activation::Relu), &[4, 4, 1], 2, x, 40);
}

/// A Conv2D computing the max-pooling after it (as models fuse them) gives
/// the same outputs and gradients as the two layers run separately, whose
/// backward passes are checked against finite differences above. (Finite
/// differences through a conv + pool pair would cross argmax switches.)
fn check_fusion_matches_separate_layers(conv: Conv2D, pool: MaxPooling2D, input: [usize; 3], x: Vec<f32>, seed: u64) {
    let n = x.len() / input.iter().product::<usize>();
    let (mut fused, mut conv, mut pool) = (conv.clone(), conv, pool);
    let conv_shape = conv.build(&input).unwrap();
    fused.build(&input).unwrap();
    let pooled_len = pool.build(&conv_shape).unwrap().iter().product::<usize>() * n;
    let conv_len = conv_shape.iter().product::<usize>() * n;
    assert!(fused.fuse_max_pool(pool.max_pool_window()), "this pair must fuse");
    for layer in [&mut fused as &mut dyn Layer, &mut conv, &mut pool] {
        layer.allocate(n);
    }
    let mut rng = stream(seed, 0);
    // Parameters on a grid of 1/64: with inputs on a coarse grid too, every
    // path's sums are exact, so a window whose largest values tie (or would
    // tie within rounding) picks the same pixel in both.
    let params: Vec<f32> =
        uniform(&mut rng, conv.param_count(), -0.5, 0.5).iter().map(|v| (v * 64.0).round() / 64.0).collect();
    let dy = uniform(&mut rng, pooled_len, -1.0, 1.0);

    let (mut z, mut y) = (vec![0.0; conv_len], vec![0.0; pooled_len]);
    conv.forward(&params, &x, &mut z, n, Mode::Train);
    pool.forward(&[], &z, &mut y, n, Mode::Train);
    let (mut dz, mut dx, mut grads) = (vec![0.0; conv_len], vec![0.0; x.len()], vec![0.0; params.len()]);
    backward_into(&mut pool, (&[], &z, &y), &mut dy.clone(), &mut dz, &mut [], n);
    backward_into(&mut conv, (&params, &x, &z), &mut dz, &mut dx, &mut grads, n);

    let mut fused_y = vec![0.0; pooled_len];
    fused.forward(&params, &x, &mut fused_y, n, Mode::Train);
    let (mut fused_dx, mut fused_grads) = (vec![0.0; x.len()], vec![0.0; params.len()]);
    backward_into(&mut fused, (&params, &x, &fused_y), &mut dy.clone(), &mut fused_dx, &mut fused_grads, n);
    // Both run Winograd's 4x4 tiles on larger shapes, whose transforms round
    // to a few 1e-5 of the largest value, summed in another order here.
    assert_close("fused output", &fused_y, &y, 5e-5);
    assert_close("fused params", &fused_grads, &grads, 5e-5);
    assert_close("fused input", &fused_dx, &dx, 5e-5);
    // At inference the fused layer keeps no winners: the same output, bit for bit.
    let mut inferred = vec![f32::NAN; pooled_len];
    fused.forward(&params, &x, &mut inferred, n, Mode::Infer);
    let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&inferred), bits(&fused_y), "the fused output at inference");
}

/// Stride-1 convolutions on images large enough for the padded-layout path
/// (matrix products over a padded copy, input gradient through the turned
/// kernel): same and valid padding, and few input channels (direct forward
/// pass, gradients through the padded layout for a partial filter block).
#[test]
fn conv2d_stride_one_through_the_padded_layout() {
    // The last two: 16 and 32 channels and filters, the register-blocked kernels where the CPU has AVX-512.
    let cases = [
        ([14, 14, 5], Padding::Same, 3),
        ([15, 15, 4], Padding::Valid, 5),
        ([14, 14, 2], Padding::Same, 3),
        ([6, 6, 16], Padding::Same, 16),
        ([5, 5, 32], Padding::Valid, 32),
    ];
    for (i, (shape, padding, filters)) in cases.into_iter().enumerate() {
        let x = uniform(&mut stream(13, i as u64), 2 * shape.iter().product::<usize>(), -1.0, 1.0);
        let conv = Conv2D::new(filters, (3, 3)).padding(padding).activation(Activation::Tanh);
        check_layer(conv, &shape, 2, x, 130 + i as u64);
    }
}

/// A task of 16 samples with 16 to 256 channels and filters runs through
/// Winograd's tiles, forward and for both gradients (where the CPU has
/// AVX-512): the same outputs and gradients, to rounding, as the samples run
/// one at a time (too few tiles for them: the padded layout's products, whose
/// backward passes are checked against finite differences above). Even and
/// odd output sides, several filter blocks; with and without padding, the
/// tiles read the samples in place, zeros outside them (the input gradient's
/// transposed window pads by 2 where the forward one has none).
#[test]
fn conv2d_over_a_task_of_samples_matches_sample_by_sample() {
    // The last two: 100 positions, so the forward pass finishes its outputs
    // (the ReLU) in groups of 11 samples and a last group of 5, through tiles
    // and (strided) through the unfolded patches, which every pass unfolds in
    // groups of 9 samples and a last one of 7.
    let cases = [
        ([8, 8, 32], Padding::Same, 32, Activation::Linear, 1),
        ([7, 9, 48], Padding::Same, 80, Activation::Linear, 1),
        ([9, 9, 32], Padding::Valid, 48, Activation::Linear, 1),
        ([10, 10, 16], Padding::Same, 16, Activation::Relu, 1),
        ([20, 20, 16], Padding::Same, 16, Activation::Relu, 2),
    ];
    for (i, (input, padding, filters, act, stride)) in cases.into_iter().enumerate() {
        let (n, len) = (16, input.iter().product::<usize>());
        let mut conv = Conv2D::new(filters, (3, 3)).padding(padding).activation(act).strides((stride, stride));
        let out_len = conv.build(&input).unwrap().iter().product::<usize>();
        let mut rng = stream(15, i as u64);
        let params = uniform(&mut rng, conv.param_count(), -0.5, 0.5);
        let (x, dy) = (uniform(&mut rng, n * len, -1.0, 1.0), uniform(&mut rng, n * out_len, -1.0, 1.0));
        // `held`: another reader's gradient, which dx holds and the pass adds to.
        let mut run = |n: usize, x: &[f32], dy: &[f32], held: Option<&[f32]>| {
            conv.allocate(n);
            let mut y = vec![0.0; n * out_len];
            conv.forward(&params, x, &mut y, n, Mode::Train);
            let (mut dx, mut grads) = (held.map_or(vec![0.0; x.len()], <[f32]>::to_vec), vec![0.0; params.len()]);
            let dy = &mut dy.to_vec();
            conv.backward(Backward {
                params: &params,
                x,
                y: &y,
                dy,
                dx: Some(&mut dx),
                accumulate: held.is_some(),
                grads: &mut grads,
                n,
            });
            (y, dx, grads)
        };
        let (y, dx, grads) = run(n, &x, &dy, None);
        let held = uniform(&mut rng, n * len, -1.0, 1.0);
        let (_, sum, again) = run(n, &x, &dy, Some(&held));
        let want: Vec<f32> = held.iter().zip(&dx).map(|(h, d)| h + d).collect();
        assert_close("input gradient added", &sum, &want, 1e-5);
        assert_eq!(grads, again, "weight gradients when adding");
        let (mut each_y, mut each_dx, mut each_grads) = (Vec::new(), Vec::new(), vec![0.0; params.len()]);
        for s in 0..n {
            let (ys, dxs, gs) = run(1, &x[s * len..][..len], &dy[s * out_len..][..out_len], None);
            each_y.extend(ys);
            each_dx.extend(dxs);
            each_grads.iter_mut().zip(gs).for_each(|(a, g)| *a += g);
        }
        // The task runs Winograd's 4x4 tiles, whose transforms (constants up to
        // 8 and down to 1/24) round to about 1e-4 of the largest value over
        // 256 channels (2x2 tiles: 1e-5).
        assert_close("outputs", &y, &each_y, 1e-4);
        assert_close("input gradient", &dx, &each_dx, 1e-4);
        assert_close("parameter gradients", &grads, &each_grads, 2e-4);
    }
}

#[test]
fn conv2d_reads_a_task_for_winograd_in_place_like_sample_by_sample() {
    // A task of 16 24x24x16 samples, whose tiles read the input itself (zeros
    // outside it, across the samples' borders), against the samples one by
    // one, which take batch 1's paths (the gradients, summed over many more
    // positions than above, round further apart than the per-sample check allows).
    let (input, n) = ([24, 24, 16], 16);
    let len = input.iter().product::<usize>();
    let mut conv = Conv2D::new(16, (3, 3)).padding(Padding::Same);
    let out_len = conv.build(&input).unwrap().iter().product::<usize>();
    let mut rng = stream(16, 0);
    let params = uniform(&mut rng, conv.param_count(), -0.5, 0.5);
    let x = uniform(&mut rng, n * len, -1.0, 1.0);
    let mut run = |n: usize, x: &[f32]| {
        conv.allocate(n);
        let mut y = vec![0.0; n * out_len];
        conv.forward(&params, x, &mut y, n, Mode::Train);
        y
    };
    let y = run(n, &x);
    let each: Vec<f32> = x.chunks_exact(len).flat_map(|xs| run(1, xs)).collect();
    assert_close("outputs", &y, &each, 1e-4);
}

#[test]
fn conv2d_with_fused_max_pooling_matches_separate_layers() {
    // Direct path (1 channel), tanh, 2x2 pooling, a partial filter block, tasks of 16 and a partial one.
    let x = uniform(&mut stream(12, 0), 20 * 8 * 8, -1.0, 1.0);
    let conv = Conv2D::new(5, (3, 3)).activation(Activation::Tanh);
    check_fusion_matches_separate_layers(conv, MaxPooling2D::new((2, 2)), [8, 8, 1], x, 120);
    // Matrix-product path (6 channels), same padding, overlapping 3x3/2 pooling, sigmoid.
    let x = uniform(&mut stream(12, 1), 3 * 7 * 7 * 6, -1.0, 1.0);
    let conv = Conv2D::new(3, (3, 3)).padding(Padding::Same).activation(Activation::Sigmoid);
    check_fusion_matches_separate_layers(conv, MaxPooling2D::new((3, 3)).strides((2, 2)), [7, 7, 6], x, 121);
    // 16 channels, 32 filters (the padded layout's register-blocked kernels where the CPU has AVX-512).
    let x = uniform(&mut stream(12, 3), 18 * 8 * 8 * 16, -1.0, 1.0);
    let conv = Conv2D::new(32, (3, 3)).activation(Activation::Relu);
    check_fusion_matches_separate_layers(conv, MaxPooling2D::new((2, 2)), [8, 8, 16], x, 123);
    // Keras' MNIST convnet's second convolution: 32 channels, 64 filters.
    let x = uniform(&mut stream(12, 4), 17 * 9 * 9 * 32, -1.0, 1.0);
    let conv = Conv2D::new(64, (3, 3)).activation(Activation::Relu);
    check_fusion_matches_separate_layers(conv, MaxPooling2D::new((2, 2)), [9, 9, 32], x, 124);
    // Outputs of 20x20x32 (Winograd's 4x4 tiles): the forward pass computes 10
    // samples at a time, then 6, then the partial task's 4.
    let x = uniform(&mut stream(12, 5), 20 * 22 * 22 * 32, -1.0, 1.0);
    let conv = Conv2D::new(32, (3, 3)).activation(Activation::Relu);
    check_fusion_matches_separate_layers(conv, MaxPooling2D::new((2, 2)), [22, 22, 32], x, 125);
    // ReLU, the reference model's shape (Winograd's F(2, 3) along rows where the
    // separate layers sum directly: inputs on a grid of 1/8, so both sums are exact).
    let x: Vec<f32> =
        uniform(&mut stream(12, 2), 2 * 28 * 28, 0.0, 1.0).iter().map(|v| (v * 8.0).floor() / 8.0).collect();
    let conv = Conv2D::new(32, (3, 3)).activation(Activation::Relu);
    check_fusion_matches_separate_layers(conv, MaxPooling2D::new((2, 2)), [28, 28, 1], x, 122);
}

#[test]
fn max_pooling2d_valid_same_and_strided() {
    let cases = [
        ((2, 2), None, Padding::Valid, [6, 6, 3]),
        ((2, 2), None, Padding::Same, [5, 7, 2]),
        ((3, 3), Some((2, 2)), Padding::Valid, [7, 7, 2]),
        ((3, 2), Some((1, 2)), Padding::Same, [5, 5, 1]),
    ];
    for (i, (pool, strides, padding, shape)) in cases.into_iter().enumerate() {
        let n = 3;
        let x = spaced(&mut stream(5, i as u64), n * shape.iter().product::<usize>(), 0.05);
        let mut layer = MaxPooling2D::new(pool).padding(padding);
        if let Some(s) = strides {
            layer = layer.strides(s);
        }
        check_layer(layer, &shape, n, x, 50 + i as u64);
    }
}

#[test]
fn dense_on_vectors_and_on_the_last_axis() {
    for (i, act) in SMOOTH.into_iter().enumerate() {
        let x = uniform(&mut stream(6, i as u64), 4 * 7, -1.0, 1.0);
        check_layer(Dense::new(5).activation(act), &[7], 4, x, 60 + i as u64);
    }
    // (3, 4) per sample: applied to each of the 3 rows.
    let x = uniform(&mut stream(6, 9), 2 * 3 * 4, -1.0, 1.0);
    check_layer(Dense::new(3).activation(Activation::Tanh), &[3, 4], 2, x, 69);
    // More inputs than one weight-gradient task covers (256 features).
    let x = uniform(&mut stream(6, 10), 2 * 300, -1.0, 1.0);
    check_layer(Dense::new(2), &[300], 2, x, 70);
    // More units than the narrow kernels take: the general matrix product.
    let x = uniform(&mut stream(6, 11), 3 * 9, -1.0, 1.0);
    check_layer(Dense::new(20).activation(Activation::Tanh), &[9], 3, x, 71);
    // The general product's gradients by tasks of 256 input features (the last narrower).
    let x = uniform(&mut stream(6, 12), 2 * 300, -1.0, 1.0);
    check_layer(Dense::new(20), &[300], 2, x, 72);
    // Fewer input features than one such task: the input gradient by tasks of rows.
    let x = uniform(&mut stream(6, 13), 2 * 30, -1.0, 1.0);
    check_layer(Dense::new(150), &[30], 2, x, 73);
    // A batch of one task of rows and 256 units or more: the forward pass by blocks of units.
    let x = uniform(&mut stream(6, 14), 2 * 9, -1.0, 1.0);
    check_layer(Dense::new(300).activation(Activation::Softmax), &[9], 2, x, 74);
    // Two tasks of rows, but fewer rows than units: by blocks of units too.
    let x = uniform(&mut stream(6, 15), 20 * 5, -1.0, 1.0);
    check_layer(Dense::new(260), &[5], 20, x, 75);
    // More input features than a task of the gradients takes, over two tasks
    // of rows: the input gradient by blocks of features, gathered by rows.
    let x = uniform(&mut stream(6, 16), 20 * 140, -1.0, 1.0);
    check_layer(Dense::new(20), &[140], 20, x, 76);
}

#[test]
fn activation_layers() {
    for (i, act) in SMOOTH.into_iter().enumerate() {
        let x = uniform(&mut stream(7, i as u64), 3 * 6, -2.0, 2.0);
        check_layer(ActivationLayer::new(act), &[6], 3, x, 80 + i as u64);
    }
    let x = spaced(&mut stream(7, 9), 3 * 6, 0.1);
    check_layer(ActivationLayer::new(Activation::Relu), &[6], 3, x, 89);
}

#[test]
fn flatten() {
    let x = uniform(&mut stream(8, 0), 2 * 3 * 2 * 2, -1.0, 1.0);
    check_layer(Flatten::new(), &[3, 2, 2], 2, x, 90);
}

#[test]
fn dropout_backward_uses_the_forward_mask_and_inference_is_identity() {
    let (n, len, rate) = (4, 500, 0.3);
    let mut layer = Dropout::new(rate);
    layer.build(&[len]).unwrap();
    layer.allocate(n);
    layer.set_draws(BatchDraws::new(9, 0));
    let x = spaced(&mut stream(9, 1), n * len, 0.01);
    let mut y = vec![0.0; n * len];
    layer.forward(&[], &x, &mut y, n, Mode::Train);
    let dropped = y.iter().filter(|v| **v == 0.0).count() as f32 / (n * len) as f32;
    assert!((dropped - rate).abs() < 0.05, "dropped fraction {dropped}");
    let mask: Vec<f32> = y.iter().zip(&x).map(|(y, x)| y / x).collect();
    for m in &mask {
        assert!(*m == 0.0 || (m - 1.0 / (1.0 - rate)).abs() < 1e-4, "mask value {m}");
    }
    let dy = uniform(&mut stream(9, 2), n * len, -1.0, 1.0);
    let mut dx = vec![0.0; n * len];
    backward_into(&mut layer, (&[], &x, &y), &mut dy.clone(), &mut dx, &mut [], n);
    let want: Vec<f32> = dy.iter().zip(&mask).map(|(d, m)| d * m).collect();
    assert_close("dropout dx", &dx, &want, 1e-4);
    layer.forward(&[], &x, &mut y, n, Mode::Infer);
    assert_eq!(y, x);
}

/// d(loss/rows)/d(out) of `loss.compute` against central differences.
fn check_loss(loss: impl Into<LossConfig>, out: &[f32], target: &[f32], width: usize, from_logits: bool) {
    let loss = loss.into();
    let rows = (out.len() / width) as f64;
    let mut grad = vec![0.0; out.len()];
    let value = loss.compute(out, target, &mut grad, width, from_logits);
    assert!(value.is_finite());
    let eps = 1e-3f32;
    let mut scratch = vec![0.0; out.len()];
    let numeric: Vec<f32> = (0..out.len())
        .map(|i| {
            let mut o = out.to_vec();
            o[i] += eps;
            let up = loss.compute(&o, target, &mut scratch, width, from_logits);
            o[i] -= 2.0 * eps;
            let down = loss.compute(&o, target, &mut scratch, width, from_logits);
            ((up - down) / rows / (2.0 * eps as f64)) as f32
        })
        .collect();
    assert_close(&format!("{loss} from_logits={from_logits}"), &grad, &numeric, 1e-2);
}

#[test]
fn losses_from_logits_and_from_probabilities() {
    let (rows, width) = (5, 4);
    let mut rng = stream(10, 0);
    let logits = uniform(&mut rng, rows * width, -2.0, 2.0);
    let probs = uniform(&mut rng, rows * width, 0.1, 0.9);
    let classes: Vec<f32> = (0..rows).map(|i| (i % width) as f32).collect();
    let one_hot: Vec<f32> = (0..rows * width).map(|i| if i % width == i / width % width { 1.0 } else { 0.0 }).collect();
    let binary: Vec<f32> = (0..rows * width).map(|i| (i % 3 == 0) as u8 as f32).collect();
    for from_logits in [true, false] {
        let out = if from_logits { &logits } else { &probs };
        check_loss(Loss::CategoricalCrossentropy, out, &one_hot, width, from_logits);
        check_loss(Loss::SparseCategoricalCrossentropy, out, &classes, width, from_logits);
        check_loss(Loss::BinaryCrossentropy, out, &binary, width, from_logits);
        check_loss(Loss::CategoricalCrossentropy.label_smoothing(0.2), out, &one_hot, width, from_logits);
        check_loss(Loss::BinaryCrossentropy.label_smoothing(0.2), out, &binary, width, from_logits);
    }
    // from_logits in the loss itself: the outputs are logits whatever the caller says.
    check_loss(Loss::SparseCategoricalCrossentropy.from_logits(true), &logits, &classes, width, false);
    check_loss(Loss::BinaryCrossentropy.from_logits(true), &logits, &binary, width, false);
    check_loss(Loss::MeanSquaredError, &logits, &probs, width, false);
}

#[test]
fn cross_entropy_from_logits_is_stable_and_matches_the_definition() {
    // Logits that overflow a naive softmax.
    let logits = [1000.0, -1000.0, 0.0];
    let mut grad = [0.0; 3];
    let loss = Loss::CategoricalCrossentropy.compute(&logits, &[0.0, 1.0, 0.0], &mut grad, 3, true);
    assert!((loss - 2000.0).abs() < 1e-3, "loss {loss}");
    assert!(grad.iter().all(|g| g.is_finite()));
    // Moderate logits: equals -log(softmax) computed directly.
    let z = [0.5f32, -1.0, 2.0];
    let p: Vec<f64> = z.iter().map(|v| (*v as f64).exp()).collect();
    let want = -(p[2] / p.iter().sum::<f64>()).ln();
    let got = Loss::CategoricalCrossentropy.compute(&z, &[0.0, 0.0, 1.0], &mut grad, 3, true);
    assert!((got - want).abs() < 1e-5);
    // Probabilities of exactly 0 are clipped, not log(0).
    let clipped = Loss::CategoricalCrossentropy.compute(&[0.0, 1.0], &[1.0, 0.0], &mut [0.0; 2], 2, false);
    assert!((clipped - (-(1e-7f64).ln())).abs() < 0.1, "{clipped}");
    let bce = Loss::BinaryCrossentropy.compute(&[80.0, -80.0], &[0.0, 1.0], &mut [0.0; 2], 2, true);
    assert!((bce - 80.0).abs() < 1e-3, "{bce}");
}

#[test]
fn label_smoothing_and_from_logits_match_keras_definitions() {
    // CategoricalCrossentropy(label_smoothing=0.1): t = [0, 0, 1] -> [0.1/3, 0.1/3, 0.9 + 0.1/3].
    let z = [0.5f32, -1.0, 2.0];
    let lse = z.iter().map(|v| (*v as f64).exp()).sum::<f64>().ln();
    let t = [0.1 / 3.0, 0.1 / 3.0, 0.9 + 0.1 / 3.0];
    let want: f64 = t.iter().zip(&z).map(|(t, z)| -t * (*z as f64 - lse)).sum();
    let smoothed = Loss::CategoricalCrossentropy.label_smoothing(0.1);
    let mut grad = [0.0; 3];
    let got = smoothed.compute(&z, &[0.0, 0.0, 1.0], &mut grad, 3, true);
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    // dL/dz = softmax(z) - t
    for ((g, t), z) in grad.iter().zip(t).zip(z) {
        assert!((*g as f64 - (((z as f64) - lse).exp() - t)).abs() < 1e-6);
    }
    // The same from probabilities, and SparseCategoricalCrossentropy(from_logits=True) on logits.
    let p: Vec<f32> = z.iter().map(|v| ((*v as f64) - lse).exp() as f32).collect();
    let from_probs = smoothed.compute(&p, &[0.0, 0.0, 1.0], &mut grad, 3, false);
    assert!((from_probs - want).abs() < 1e-5, "{from_probs} vs {want}");
    let sparse = Loss::SparseCategoricalCrossentropy.from_logits(true).compute(&z, &[2.0], &mut grad, 3, false);
    assert!((sparse - (lse - 2.0)).abs() < 1e-5);
    // BinaryCrossentropy(label_smoothing=0.2): t = 1 -> 0.9, t = 0 -> 0.1.
    let q = [0.7f32, 0.2];
    let want = -(0.9 * 0.7f64.ln() + 0.1 * 0.3f64.ln() + 0.1 * 0.2f64.ln() + 0.9 * 0.8f64.ln()) / 2.0;
    let got = Loss::BinaryCrossentropy.label_smoothing(0.2).compute(&q, &[1.0, 0.0], &mut [0.0; 2], 2, false);
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    // Arguments a loss does not have are refused.
    assert!(Loss::SparseCategoricalCrossentropy.label_smoothing(0.1).check().is_err());
    assert!(Loss::CategoricalCrossentropy.label_smoothing(1.5).check().is_err());
    assert!(Loss::MeanSquaredError.from_logits(true).check().is_err());
}

#[test]
fn from_logits_trains_a_linear_head_and_refuses_a_softmax_one() {
    let mut model = Sequential::new().add(Dense::new(3).input_shape([4]));
    model.compile(Adam::default(), Loss::SparseCategoricalCrossentropy.from_logits(true), &[Metric::Accuracy]).unwrap();
    let x = Tensor::from_vec(&[6, 4], (0..24).map(|i| (i % 5) as f32 / 5.0).collect()).unwrap();
    let y = Tensor::from_vec(&[6], vec![0.0, 1.0, 2.0, 0.0, 1.0, 2.0]).unwrap();
    let history =
        model.fit(&x, &y, &FitOptions { epochs: 2, verbose: Verbosity::Silent, ..FitOptions::default() }).unwrap();
    let accuracy = history.epochs[1].get("accuracy").unwrap();
    assert!((0.0..=1.0).contains(&accuracy));
    // predict returns the logits (as Keras), which need not sum to 1.
    let out = model.predict(&x).unwrap().to_f32_vec();
    assert!(out.chunks(3).any(|r| (r.iter().sum::<f32>() - 1.0).abs() > 1e-3), "{out:?}");

    let mut softmax = Sequential::new().add(Dense::new(3).activation(Activation::Softmax).input_shape([4]));
    let err = softmax
        .compile(Adam::default(), Loss::SparseCategoricalCrossentropy.from_logits(true), &[])
        .expect_err("softmax outputs are not logits")
        .to_string();
    assert!(err.contains("from_logits") && err.contains("'dense'") && err.contains("softmax"), "{err}");
}

#[test]
fn preprocessing_layers_backward_match_finite_differences() {
    let shape = [5, 6, 2];
    let x = |seed| uniform(&mut stream(seed, 0), 3 * 60, -1.0, 1.0);
    check_layer(Rescaling::new(0.5).offset(-1.0), &shape, 3, x(1), 201);
    check_layer(Normalization::with_statistics(vec![0.5, -1.0], vec![4.0, 0.25]), &shape, 3, x(2), 202);
    check_layer(Resizing::new(7, 4), &shape, 3, x(3), 203);
}

#[test]
fn augmentation_layers_backward_match_finite_differences_for_their_draws() {
    use keel::kernels::resample::Fill;
    let shape = [5, 6, 2];
    let x = |seed| uniform(&mut stream(seed, 0), 4 * 60, -1.0, 1.0);
    let reseed = |l: &mut dyn Layer| l.set_draws(BatchDraws::new(99, 0));
    check_layer_reseeded(RandomFlip::new(FlipMode::HorizontalAndVertical), &shape, 4, x(4), 204, reseed);
    check_layer_reseeded(RandomCrop::new(4, 5).padding(2), &shape, 4, x(5), 205, reseed);
    for fill in [Fill::Reflect, Fill::Constant, Fill::Nearest] {
        check_layer_reseeded(RandomTranslation::new(0.3, 0.2).fill_mode(fill), &shape, 4, x(6), 206, reseed);
        check_layer_reseeded(RandomRotation::new(0.1).fill_mode(fill), &shape, 4, x(7), 207, reseed);
    }
}

#[test]
fn batch_normalization_with_batch_statistics_and_frozen() {
    // Training: batch statistics over (samples, rows), on image and vector inputs.
    let x = uniform(&mut stream(30, 0), 3 * 4 * 3 * 5, -1.0, 2.0);
    check_layer(BatchNormalization::new(), &[4, 3, 5], 3, x, 300);
    let x = uniform(&mut stream(30, 1), 6 * 4, -2.0, 1.0);
    check_layer(BatchNormalization::new().center(false), &[4], 6, x, 301);
    let x = uniform(&mut stream(30, 2), 6 * 4, -2.0, 1.0);
    check_layer(BatchNormalization::new().scale(false), &[4], 6, x, 302);
    // Frozen (as Keras 3): the moving statistics, a fixed affine map.
    let mut frozen = BatchNormalization::new();
    frozen.set_trainable(false);
    let x = uniform(&mut stream(30, 3), 3 * 2 * 2 * 3, -1.0, 1.0);
    check_layer(frozen, &[2, 2, 3], 3, x, 303);
}

/// A BatchNormalization with a ReLU (or ReLU6) fused in, which takes the
/// activation's gradient from the recomputed normalisation rather than from
/// its output, gives bit for bit the outputs and gradients of the two layers
/// run separately (each checked against finite differences above): on few
/// channels, and on more than one run of the gate's 64 (80).
#[test]
fn batch_normalization_with_a_fused_relu_matches_separate_layers() {
    for (i, act) in [Activation::Relu, Activation::Relu6, Activation::Sigmoid].into_iter().enumerate() {
        for (shape, n) in [([4, 3, 5], 3), ([2, 2, 80], 5)] {
            let (mut fused, mut bn, mut relu) =
                (BatchNormalization::new(), BatchNormalization::new(), ActivationLayer::new(act));
            assert!(fused.fuse_activation(Some(act)));
            fused.build(&shape).unwrap();
            bn.build(&shape).unwrap();
            relu.build(&shape).unwrap();
            for layer in [&mut fused as &mut dyn Layer, &mut bn, &mut relu] {
                layer.allocate(n);
            }
            let len = n * shape.iter().product::<usize>();
            let mut rng = stream(310 + i as u64, shape[2] as u64);
            // gamma and beta of both signs, and inputs spread so that about
            // half the values pass ReLU and some are cut at 6.
            let params = uniform(&mut rng, bn.param_count(), -4.0, 4.0);
            let x = uniform(&mut rng, len, -3.0, 3.0);
            let dy = uniform(&mut rng, len, -1.0, 1.0);

            let (mut z, mut y) = (vec![0.0; len], vec![0.0; len]);
            bn.forward(&params, &x, &mut z, n, Mode::Train);
            relu.forward(&[], &z, &mut y, n, Mode::Train);
            let (mut dz, mut dx, mut grads) = (vec![0.0; len], vec![0.0; len], vec![0.0; params.len()]);
            backward_into(&mut relu, (&[], &z, &y), &mut dy.clone(), &mut dz, &mut [], n);
            backward_into(&mut bn, (&params, &x, &z), &mut dz, &mut dx, &mut grads, n);

            let mut fused_y = vec![0.0; len];
            fused.forward(&params, &x, &mut fused_y, n, Mode::Train);
            let (mut fused_dx, mut fused_grads) = (vec![0.0; len], vec![0.0; params.len()]);
            let values = (&params[..], &x[..], &fused_y[..]);
            backward_into(&mut fused, values, &mut dy.clone(), &mut fused_dx, &mut fused_grads, n);
            let what = format!("{act} on {shape:?}");
            assert_eq!(fused_y, y, "{what}: outputs");
            let cut = y.iter().filter(|&&v| v <= 0.0 || v >= 6.0).count();
            assert!(
                act == Activation::Sigmoid || cut > len / 8 && cut < len - len / 8,
                "{what}: the data must cross the kinks ({cut} of {len} cut)"
            );
            assert_eq!(fused_grads, grads, "{what}: parameter gradients");
            assert_eq!(fused_dx, dx, "{what}: input gradients");
        }
    }
}

#[test]
fn batch_normalization_moving_statistics_follow_keras() {
    let (n, c) = (4, 2);
    let mut bn = BatchNormalization::new().momentum(0.9);
    bn.build(&[c]).unwrap();
    bn.allocate(n);
    let x = [1.0, 10.0, 3.0, 10.0, 5.0, 14.0, 7.0, 14.0];
    let params = [1.0, 1.0, 0.0, 0.0]; // gamma, beta
    let mut state = vec![0.0, 0.0, 1.0, 1.0]; // moving mean, moving variance
    let mut y = vec![0.0; n * c];
    bn.forward_stateful(&params, &mut state, &x, &mut y, n, Mode::Train);
    // Batch mean (4, 12), biased variance (5, 4): moving = 0.9 * moving + 0.1 * batch.
    assert_close("moving statistics", &state, &[0.4, 1.2, 0.9 + 0.5, 0.9 + 0.4], 1e-6);
    let first = (1.0 - 4.0) / (5.0f32 + 1e-3).sqrt();
    assert!((y[0] - first).abs() < 1e-5, "{} vs {first}", y[0]);
    // Inference uses the moving statistics and leaves them alone.
    let before = state.clone();
    bn.forward_stateful(&params, &mut state, &x, &mut y, n, Mode::Infer);
    assert_eq!(state, before);
    assert!((y[0] - (1.0 - 0.4) / (1.4f32 + 1e-3).sqrt()).abs() < 1e-5);
}

#[test]
fn pooling_padding_and_reshape_layers() {
    let cases: [(AveragePooling2D, [usize; 3]); 3] = [
        (AveragePooling2D::new((2, 2)), [4, 6, 2]),
        (AveragePooling2D::new((3, 3)).strides((2, 2)).padding(Padding::Same), [5, 4, 3]),
        (AveragePooling2D::new((2, 3)).strides((1, 2)), [3, 7, 1]),
    ];
    for (i, (layer, shape)) in cases.into_iter().enumerate() {
        let x = uniform(&mut stream(31, i as u64), 2 * shape.iter().product::<usize>(), -1.0, 1.0);
        check_layer(layer, &shape, 2, x, 310 + i as u64);
    }
    let x = uniform(&mut stream(32, 0), 3 * 4 * 5 * 6, -1.0, 1.0);
    check_layer(GlobalAveragePooling2D::new(), &[4, 5, 6], 3, x, 320);
    let x = spaced(&mut stream(32, 1), 3 * 4 * 5 * 6, 0.05);
    check_layer(GlobalMaxPooling2D::new(), &[4, 5, 6], 3, x, 321);
    let x = uniform(&mut stream(33, 0), 2 * 3 * 4 * 2, -1.0, 1.0);
    check_layer(ZeroPadding2D::new(((1, 2), (0, 3))), &[3, 4, 2], 2, x, 330);
    let x = uniform(&mut stream(33, 1), 2 * 24, -1.0, 1.0);
    check_layer(Reshape::new([2, -1, 3]), &[4, 6], 2, x, 331);
}

/// A merge layer's forward and each input's gradient against central differences
/// of L = sum(r * forward(xs)).
fn check_merge(mut layer: impl Layer, shapes: &[Vec<usize>], n: usize, seed: u64) {
    let out_shape = layer.build_inputs(shapes).expect("merge builds");
    layer.allocate(n);
    let mut rng = stream(seed, 0);
    let xs: Vec<Vec<f32>> =
        shapes.iter().map(|s| uniform(&mut rng, n * s.iter().product::<usize>(), -1.0, 1.0)).collect();
    let out_len = n * out_shape.iter().product::<usize>();
    let r = uniform(&mut rng, out_len, -1.0, 1.0);
    let objective = |layer: &mut dyn Layer, xs: &[Vec<f32>]| -> f64 {
        let views: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
        let mut y = vec![0.0; out_len];
        layer.forward_inputs(&[], &views, &mut y, n, Mode::Train);
        y.iter().zip(&r).map(|(y, r)| (*y as f64) * (*r as f64)).sum()
    };
    objective(&mut layer, &xs);
    let views: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
    for k in 0..xs.len() {
        let mut dx = vec![f32::NAN; xs[k].len()];
        layer.backward_input(k, &views, &r, &mut dx, n);
        let numeric: Vec<f32> = (0..xs[k].len())
            .map(|i| {
                let eps = 1e-2f32;
                let mut plus = xs.clone();
                plus[k][i] += eps;
                let mut minus = xs.clone();
                minus[k][i] -= eps;
                ((objective(&mut layer, &plus) - objective(&mut layer, &minus)) / (2.0 * eps as f64)) as f32
            })
            .collect();
        assert_close(&format!("{} input {k}", layer.class_name()), &dx, &numeric, 2e-3);
    }
}

#[test]
fn separable_prelu_cropping_and_upsampling_layers() {
    let x = |seed, len| uniform(&mut stream(seed, 0), len, -1.0, 1.0);
    check_layer(SeparableConv2D::new(3, (3, 3)), &[5, 6, 2], 2, x(1, 2 * 60), 350);
    let same = SeparableConv2D::new(4, (3, 2)).padding(Padding::Same).strides((2, 2)).depth_multiplier(2);
    check_layer(same.activation(Activation::Tanh).use_bias(false), &[6, 5, 3], 3, x(2, 3 * 90), 351);
    check_layer(
        SeparableConv2D::new(2, (2, 2)).dilation_rate((2, 2)).activation(Activation::Silu),
        &[5, 5, 2],
        2,
        x(3, 100),
        352,
    );
    // PReLU away from its kink at 0, per value and with shared axes.
    check_layer(PReLU::new(), &[3, 4], 2, spaced(&mut stream(4, 0), 24, 0.1), 353);
    check_layer(PReLU::new().shared_axes(vec![1, 2]), &[3, 2, 4], 3, spaced(&mut stream(5, 0), 72, 0.1), 354);
    let mut prelu = PReLU::new().shared_axes(vec![1, 2]);
    prelu.build(&[5, 5, 8]).unwrap();
    assert_eq!(prelu.weights()[0].shape, [1, 1, 8]);
    assert!(PReLU::new().shared_axes(vec![4]).build(&[5, 5, 8]).unwrap_err().contains("shared axis 4"));
    check_layer(Cropping2D::new(((1, 0), (2, 1))), &[5, 6, 2], 2, x(6, 120), 355);
    let err = Cropping2D::symmetric(3).build(&[5, 6, 2]).unwrap_err();
    assert!(err.contains("removes more than the 5x6 input"), "{err}");
    check_layer(UpSampling2D::new((2, 3)), &[3, 2, 2], 2, x(7, 24), 356);
    check_layer(UpSampling2D::new((2, 2)).interpolation(Interpolation::Bilinear), &[3, 3, 2], 2, x(8, 36), 357);
    // Nearest repeats each pixel.
    let mut up = UpSampling2D::new((2, 2));
    up.build(&[1, 2, 1]).unwrap();
    up.allocate(1);
    let mut y = vec![0.0; 8];
    up.forward(&[], &[1.0, 2.0], &mut y, 1, Mode::Infer);
    assert_eq!(y, [1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]);
}

#[test]
fn spatial_dropout_drops_whole_channels() {
    let (n, shape, rate) = (6, [4, 4, 50], 0.4);
    let mut layer = SpatialDropout2D::new(rate);
    layer.build(&shape).unwrap();
    layer.allocate(n);
    layer.set_draws(BatchDraws::new(3, 0));
    let x = spaced(&mut stream(3, 1), n * 800, 0.01);
    let mut y = vec![0.0; n * 800];
    layer.forward(&[], &x, &mut y, n, Mode::Train);
    // Each (sample, channel) is dropped at every position or scaled at every position.
    let mut dropped = 0;
    for s in 0..n {
        for c in 0..50 {
            let ratios: Vec<f32> = (0..16).map(|p| y[s * 800 + p * 50 + c] / x[s * 800 + p * 50 + c]).collect();
            assert!(ratios.iter().all(|r| (r - ratios[0]).abs() < 1e-5), "{ratios:?}");
            assert!(ratios[0] == 0.0 || (ratios[0] - 1.0 / (1.0 - rate)).abs() < 1e-4);
            dropped += (ratios[0] == 0.0) as usize;
        }
    }
    assert!((dropped as f32 / 300.0 - rate).abs() < 0.1, "dropped {dropped} of 300 channels");
    let dy = uniform(&mut stream(3, 2), n * 800, -1.0, 1.0);
    let mut dx = vec![0.0; n * 800];
    backward_into(&mut layer, (&[], &x, &y), &mut dy.clone(), &mut dx, &mut [], n);
    let want: Vec<f32> = dy.iter().zip(y.iter().zip(&x)).map(|(d, (y, x))| d * y / x).collect();
    assert_close("spatial dropout dx", &dx, &want, 1e-3);
    layer.forward(&[], &x, &mut y, n, Mode::Infer);
    assert_eq!(y, x);
    assert!(SpatialDropout2D::new(0.1).build(&[16]).unwrap_err().contains("height, width, channels"));
}

#[test]
fn merge_layers() {
    check_merge(Add::new(), &[vec![3, 2, 4], vec![3, 2, 4]], 3, 340);
    check_merge(Add::new(), &[vec![5], vec![5], vec![5]], 2, 341);
    check_merge(Concatenate::new(), &[vec![2, 2, 3], vec![2, 2, 1], vec![2, 2, 2]], 3, 342);
    check_merge(Multiply::new(), &[vec![3, 2, 4], vec![3, 2, 4]], 3, 343);
    // Squeeze-and-excitation: one value per channel broadcast over the positions.
    check_merge(Multiply::new(), &[vec![3, 2, 4], vec![1, 1, 4], vec![3, 2, 4]], 2, 344);
    check_merge(Multiply::new(), &[vec![1, 1, 3], vec![2, 2, 3]], 3, 345);
    let err = Multiply::new().build_inputs(&[vec![4, 4, 2], vec![4, 1, 2]]).unwrap_err();
    assert!(err.contains("(None, 4, 1, 2)") && err.contains("one value per channel"), "{err}");
    let err = Add::new().build_inputs(&[vec![4, 4, 2], vec![4, 4, 3]]).unwrap_err();
    assert!(err.contains("(None, 4, 4, 2)") && err.contains("(None, 4, 4, 3)"), "{err}");
    let err = Concatenate::new().build_inputs(&[vec![4, 4, 2], vec![4, 5, 3]]).unwrap_err();
    assert!(err.contains("every axis but the last"), "{err}");
    assert!(Add::new().build_inputs(&[vec![3]]).unwrap_err().contains("at least 2 inputs"));
    assert!(Dense::new(3).build_inputs(&[vec![3], vec![3]]).unwrap_err().contains("takes one input, got 2"));
}

#[test]
fn the_other_activations_away_from_their_kinks() {
    // Values spaced 0.1 apart, none within the finite-difference step of a
    // kink (0 for the ReLUs and ELU, 6 for relu6, -3 and 3 for hard_sigmoid).
    let smooth = [Activation::Elu, Activation::Softplus, Activation::LeakyRelu];
    for (i, act) in smooth.into_iter().enumerate() {
        let x = spaced(&mut stream(13, i as u64), 3 * 8, 0.1);
        check_layer(ActivationLayer::new(act), &[8], 3, x, 130 + i as u64);
    }
    for (i, act) in [Activation::Relu6, Activation::HardSigmoid].into_iter().enumerate() {
        // Spread over -8..8 so both flat parts and the slope are crossed.
        let x: Vec<f32> = (0..48).map(|k| -7.95 + k as f32 / 3.0).collect();
        check_layer(ActivationLayer::new(act), &[16], 3, x, 140 + i as u64);
    }
    // The ones differentiated from their input: as layers, and inside the
    // layers with weights (which keep the pre-activation).
    for (i, act) in [Activation::Silu, Activation::Gelu, Activation::HardSilu].into_iter().enumerate() {
        let x: Vec<f32> = (0..48).map(|k| -5.95 + k as f32 / 4.0).collect();
        check_layer(ActivationLayer::new(act), &[16], 3, x, 160 + i as u64);
        let x = uniform(&mut stream(13, 20 + i as u64), 2 * 5 * 5 * 2, -1.0, 1.0);
        check_layer(Conv2D::new(3, (3, 3)).activation(act), &[5, 5, 2], 2, x.clone(), 170 + i as u64);
        check_layer(DepthwiseConv2D::new((3, 3)).activation(act), &[5, 5, 2], 2, x, 175 + i as u64);
        let x = uniform(&mut stream(13, 30 + i as u64), 3 * 6, -1.0, 1.0);
        check_layer(Dense::new(4).activation(act), &[6], 3, x, 180 + i as u64);
    }
    // Fused into the layers that apply activations themselves.
    let x = uniform(&mut stream(13, 9), 2 * 5 * 5 * 2, -1.0, 1.0);
    check_layer(Conv2D::new(3, (3, 3)).activation(Activation::Softplus), &[5, 5, 2], 2, x, 150);
    let x = uniform(&mut stream(13, 10), 3 * 6, -1.0, 1.0);
    check_layer(Dense::new(4).activation(Activation::Elu), &[6], 3, x, 151);
}

#[test]
fn activations_have_keras_names_and_values() {
    for act in Activation::ALL {
        assert_eq!(act.name().parse::<Activation>().unwrap(), act);
        assert_eq!(serde_json::to_string(&act).unwrap(), format!("\"{}\"", act.name()));
    }
    let err = "swishy".parse::<Activation>().unwrap_err().to_string();
    assert!(err.contains("hard_sigmoid") && err.contains("relu6"), "{err}");
    let values = |act: Activation, x: &[f32]| {
        let mut y = x.to_vec();
        keel::kernels::activation::forward(act, &mut y, None, x.len());
        y
    };
    assert_eq!(values(Activation::Relu6, &[-1.0, 3.0, 7.0]), [0.0, 3.0, 6.0]);
    assert_eq!(values(Activation::LeakyRelu, &[-1.0, 2.0]), [-0.2, 2.0]);
    assert_eq!(values(Activation::HardSigmoid, &[-4.0, 0.0, 1.5, 4.0]), [0.0, 0.5, 0.75, 1.0]);
    let elu = values(Activation::Elu, &[-1.0, 1.0]);
    assert!((elu[0] - (-1.0f32).exp_m1()).abs() < 1e-7 && elu[1] == 1.0);
    let softplus = values(Activation::Softplus, &[0.0, 100.0]);
    assert!((softplus[0] - 2f32.ln()).abs() < 1e-6 && softplus[1] == 100.0);
    // Keras 3: silu(1) = 1 * sigmoid(1); gelu(1) = Phi(1) (exact); hard_silu(1) = 1 * 4/6.
    let silu = values(Activation::Silu, &[1.0, -2.0]);
    assert!((silu[0] - 0.731_058_6).abs() < 1e-6 && (silu[1] + 0.238_405_84).abs() < 1e-6, "{silu:?}");
    let gelu = values(Activation::Gelu, &[1.0, -1.0, 0.0]);
    assert!(
        (gelu[0] - 0.841_344_7).abs() < 1e-6 && (gelu[1] + 0.158_655_26).abs() < 1e-6 && gelu[2] == 0.0,
        "{gelu:?}"
    );
    assert_eq!(values(Activation::HardSilu, &[-4.0, 1.0, 4.0]), [-0.0, 1.0 * 4.0 / 6.0, 4.0]);
    assert_eq!(
        ["swish", "hard_swish"].map(|s| s.parse::<Activation>().unwrap()),
        [Activation::Silu, Activation::HardSilu]
    );
}

#[test]
fn depthwise_conv2d_with_multipliers_strides_padding_and_dilation() {
    let cases = [
        (DepthwiseConv2D::new((3, 3)), [6, 5, 3]),
        (DepthwiseConv2D::new((3, 2)).depth_multiplier(2).activation(Activation::Tanh), [5, 6, 2]),
        (DepthwiseConv2D::new((3, 3)).strides((2, 2)).padding(Padding::Same).use_bias(false), [7, 6, 4]),
        (DepthwiseConv2D::new((2, 3)).dilation_rate((2, 1)).padding(Padding::Same).depth_multiplier(3), [6, 6, 1]),
        (DepthwiseConv2D::new((3, 3)).dilation_rate((2, 2)).activation(Activation::Softplus), [7, 8, 2]),
    ];
    for (i, (layer, shape)) in cases.into_iter().enumerate() {
        let x = uniform(&mut stream(14, i as u64), 3 * shape.iter().product::<usize>(), -1.0, 1.0);
        check_layer(layer, &shape, 3, x, 160 + i as u64);
    }
    let mut too_wide = DepthwiseConv2D::new((3, 3)).dilation_rate((3, 3));
    let err = too_wide.build(&[5, 5, 2]).unwrap_err();
    assert!(err.contains("spans 7x7, more than the 5x5 input"), "{err}");
    assert!(DepthwiseConv2D::new((3, 3)).depth_multiplier(0).build(&[5, 5, 2]).unwrap_err().contains("positive"));
}

#[test]
fn relu_family_layers_away_from_their_kinks() {
    // x over -7.95..8 in steps of 1/3: never within the finite-difference step
    // of 0, of the 0.5 threshold (0.38 and 0.71 are nearest) or of max_value 6.
    let x: Vec<f32> = (0..48).map(|k| -7.95 + k as f32 / 3.0).collect();
    check_layer(ReLU::new(), &[16], 3, x.clone(), 170);
    check_layer(ReLU::new().max_value(6.0), &[16], 3, x.clone(), 171);
    check_layer(ReLU::new().negative_slope(0.1).threshold(0.5).max_value(6.0), &[16], 3, x.clone(), 172);
    check_layer(LeakyReLU::default(), &[16], 3, x.clone(), 173);
    check_layer(ELU::new(0.7), &[16], 3, x, 174);
    let y = |layer: &mut dyn Layer, x: &[f32]| {
        layer.build(&[x.len()]).unwrap();
        let mut y = vec![0.0; x.len()];
        layer.forward(&[], x, &mut y, 1, Mode::Infer);
        y
    };
    let relu = &mut ReLU::new().negative_slope(0.1).threshold(0.5).max_value(6.0);
    assert_eq!(y(relu, &[-1.5, 0.25, 1.0, 7.0]), [-0.2, -0.025, 1.0, 6.0]);
    assert_eq!(y(&mut LeakyReLU::default(), &[-1.0, 2.0]), [-0.3, 2.0]);
}
