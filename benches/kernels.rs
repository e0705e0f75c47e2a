//! `cargo bench`: every kernel of a training step of the reference model, the
//! 32 -> 64 convolution of the bigger CNN, and ResNet-20's stride-1
//! convolutions both ways (unfolded, padded layout), on a batch of 128 through the layer
//! interface the model uses (rayon over the batch, all threads; `RAYON_NUM_THREADS`
//! to change); MobileNetV2's depthwise convolutions forward and backward
//! (register-blocked and tap by tap, one sample) and batch-1 inference's
//! packed product at ResNet-50's shapes, on one thread. Compute-bound kernels report GFLOP/s as criterion's throughput
//! ("Gelem/s" = GFLOP/s, counting multiply and add as 2); memory-bound ones bytes/s.
//! The machine's peak, measured (`print_peak`), is printed first, for comparison.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use keel::device::Buffer;
use keel::kernels::Window;
use keel::layers::{Backward, Layer, Mode};
use keel::losses::Loss;
use keel::optimizers::Optimizer;
use keel::prelude::*;
use keel::random::stream;
use rand::Rng as _;
use std::hint::black_box;

const BATCH: usize = 128;

/// A built layer with its parameters and buffers for one batch, each
/// starting on a cache line as a network's do.
struct Bench {
    layer: Box<dyn Layer>,
    params: Buffer,
    grads: Buffer,
    x: Buffer,
    y: Buffer,
    dy: Buffer,
    dx: Buffer,
}

impl Bench {
    /// `layer` on inputs of shape `input`, optionally computing `pool` itself.
    fn new(mut layer: Box<dyn Layer>, input: &[usize], pool: Option<Window>) -> Bench {
        let mut out = layer.build(input).expect("the benchmark shapes are valid");
        if let Some(p) = pool {
            assert!(layer.fuse_max_pool(pool), "the pool fuses");
            out = vec![p.oh, p.ow, p.c];
        }
        let mut rng = stream(1, 0);
        let mut params = Buffer::zeros(layer.param_count());
        keel::layers::init_weights(&layer.weights(), &mut params, &mut [], &mut rng);
        layer.allocate(BATCH);
        let in_len: usize = input.iter().product::<usize>() * BATCH;
        let out_len: usize = out.iter().product::<usize>() * BATCH;
        let mut random =
            |len: usize| Buffer::from(&(0..len).map(|_| rng.random_range(-1.0..1.0)).collect::<Vec<f32>>()[..]);
        let (x, dy) = (random(in_len), random(out_len));
        let grads = Buffer::zeros(params.len());
        Bench { layer, params, grads, x, y: Buffer::zeros(out_len), dy, dx: Buffer::zeros(in_len) }
    }

    fn forward(&mut self) {
        self.layer.forward(&self.params, &self.x, &mut self.y, BATCH, Mode::Train);
    }

    /// Backward from a fresh dL/dy (backward may use dy as scratch).
    fn backward(&mut self, input_gradient: bool, dy: &[f32]) {
        self.dy.copy_from_slice(dy);
        self.layer.backward(Backward {
            params: &self.params,
            x: &self.x,
            y: &self.y,
            dy: &mut self.dy,
            dx: if input_gradient { Some(&mut self.dx) } else { None },
            accumulate: false,
            grads: &mut self.grads,
            n: BATCH,
        });
    }
}

/// FLOPs of a convolution's forward pass (or of each of its two gradients).
fn conv_flops(out_positions: usize, patch: usize, filters: usize) -> u64 {
    (2 * BATCH * out_positions * patch * filters) as u64
}

/// Prints the machine's peak of f32 multiply-adds, measured rather than
/// derived from the nominal clock and an assumed count of FMA units (a
/// core that boosts beats the first; Zen 4 runs a 16-lane FMA on two
/// 8-lane units, which breaks the second): every thread at once runs
/// independent chains of fused multiply-adds on the widest registers the
/// kernels use.
fn print_peak() {
    let threads = rayon::current_num_threads();
    let per_thread: Vec<Option<(f64, &str)>> = rayon::broadcast(|_| peak::flops());
    let Some((_, registers)) = per_thread[0] else {
        println!("peak: not measured (no AVX2 and FMA here)");
        return;
    };
    let total: f64 = per_thread.iter().flatten().map(|(flops, _)| flops).sum();
    println!(
        "peak (measured, {registers} FMA chains): {threads} threads x {:.0} = {:.0} GFLOP/s",
        total / threads as f64 / 1e9,
        total / 1e9
    );
}

/// A core's FLOP/s of fused multiply-adds, measured.
mod peak {
    /// Independent chains: more than an FMA's latency (4 cycles) times two units.
    const CHAINS: usize = 12;
    /// Multiply-adds per chain: about 0.1 s on a 3.5 GHz core.
    const ROUNDS: usize = 30_000_000;

    /// FLOP/s on this thread (a multiply-add counting 2 per lane) and the
    /// registers measured; none without AVX2 and FMA.
    pub fn flops() -> Option<(f64, &'static str)> {
        #[cfg(target_arch = "x86_64")]
        match keel::kernels::isa() {
            // SAFETY: the CPU has the instruction set (`isa`).
            Some(keel::kernels::Isa::Avx512) => return Some((unsafe { x86::avx512() }, "16-lane")),
            Some(keel::kernels::Isa::Avx2) => return Some((unsafe { x86::avx2() }, "8-lane")),
            None => {}
        }
        None
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use super::{CHAINS, ROUNDS};
        use std::arch::x86_64::*;
        use std::hint::black_box;
        use std::time::Instant;

        /// `$name()`: the FLOP/s of CHAINS x ROUNDS multiply-adds on `$lanes`-lane
        /// registers `$vector`, one function per instruction set (the caller
        /// checks `$feature`).
        macro_rules! fma_chains {
            ($name:ident, $feature:literal, $vector:ty, $lanes:literal, $set1:ident, $fmadd:ident) => {
                #[target_feature(enable = $feature)]
                pub unsafe fn $name() -> f64 {
                    let mut acc: [$vector; CHAINS] = std::array::from_fn(|i| $set1(black_box(i as f32 * 1e-3)));
                    let (b, c) = ($set1(black_box(0.999_999)), $set1(black_box(1e-7)));
                    let start = Instant::now();
                    for _ in 0..ROUNDS {
                        for a in &mut acc {
                            *a = $fmadd(*a, b, c);
                        }
                    }
                    let seconds = start.elapsed().as_secs_f64();
                    black_box(acc);
                    (ROUNDS * CHAINS * 2 * $lanes) as f64 / seconds
                }
            };
        }
        fma_chains!(avx512, "avx512f", __m512, 16, _mm512_set1_ps, _mm512_fmadd_ps);
        fma_chains!(avx2, "avx2,fma", __m256, 8, _mm256_set1_ps, _mm256_fmadd_ps);
    }
}

fn conv(c: &mut Criterion) {
    print_peak();
    let mut group = c.benchmark_group("conv2d");
    // Reference model: 28x28x1 -> 26x26x32 (direct kernel), and fused with 2x2 max-pooling.
    let first = || Box::new(Conv2D::new(32, (3, 3)).activation(Activation::Relu)) as Box<dyn Layer>;
    let flops = conv_flops(26 * 26, 9, 32);
    group.throughput(Throughput::Elements(flops));
    let mut plain = Bench::new(first(), &[28, 28, 1], None);
    group.bench_function("forward 28x28x1->32", |b| b.iter(|| plain.forward()));
    let mut pooling = MaxPooling2D::new((2, 2));
    pooling.build(&[26, 26, 32]).expect("valid shape");
    let mut fused = Bench::new(first(), &[28, 28, 1], pooling.max_pool_window());
    group.bench_function("forward+relu+maxpool 28x28x1->32", |b| b.iter(|| fused.forward()));
    // The two fused kernels themselves, sample by sample on this thread: the
    // direct sums, and Winograd's F(2, 3) along rows (the one the layer takes).
    {
        use keel::kernels::{conv_direct, conv_pool_winograd};
        let g = Window { h: 28, w: 28, c: 1, kh: 3, kw: 3, sh: 1, sw: 1, dh: 1, dw: 1, pt: 0, pl: 0, oh: 26, ow: 26 };
        let pool = Window { h: 26, w: 26, c: 32, kh: 2, kw: 2, sh: 2, sw: 2, oh: 13, ow: 13, ..g };
        let mut rng = stream(3, 0);
        let x: Vec<f32> = (0..BATCH * 784).map(|_| rng.random_range(0.0..1.0)).collect();
        let kernel: Vec<f32> = (0..9 * 32).map(|_| rng.random_range(-0.3..0.3)).collect();
        let mut wp = vec![0.0; conv_direct::padded_len(9, 32)];
        conv_direct::pad_filters(&kernel, Some(&[0.01; 32]), 32, &mut wp);
        let (mut y, mut a) = (vec![0.0; 13 * 13 * 32], vec![0; 13 * 13 * 32]);
        let mut planes = vec![0.0; conv_pool_winograd::planes_len(&g)];
        group.bench_function("forward+relu+maxpool 28x28x1->32, direct kernel, 1 thread", |b| {
            b.iter(|| {
                for xs in black_box(&x).chunks_exact(784) {
                    conv_direct::conv_relu_pool2x2(&g, &pool, xs, &wp, 32, true, &mut y, &mut a);
                }
            })
        });
        group.bench_function("forward+relu+maxpool 28x28x1->32, winograd F(2,3) rows, 1 thread", |b| {
            b.iter(|| {
                for xs in black_box(&x).chunks_exact(784) {
                    let winners = Some(&mut a[..]);
                    conv_pool_winograd::conv_relu_pool2x2(&g, &pool, xs, &wp, 32, true, &mut planes, &mut y, winners);
                }
            })
        });
        // At inference: no winners to find.
        group.bench_function("forward+relu+maxpool 28x28x1->32, winograd F(2,3) rows, no winners, 1 thread", |b| {
            b.iter(|| {
                for xs in black_box(&x).chunks_exact(784) {
                    conv_pool_winograd::conv_relu_pool2x2(&g, &pool, xs, &wp, 32, true, &mut planes, &mut y, None);
                }
            })
        });
    }
    fused.forward();
    let dy = fused.dy.clone();
    group.bench_function("weight gradient (through the pool) 28x28x1->32", |b| {
        b.iter(|| fused.backward(false, black_box(&dy)))
    });
    // The bigger CNN's second convolution: 13x13x32 -> 11x11x64 (im2col + gemm).
    let second = Box::new(Conv2D::new(64, (3, 3)).activation(Activation::Relu));
    let mut deep = Bench::new(second, &[13, 13, 32], None);
    let flops = conv_flops(11 * 11, 9 * 32, 64);
    group.throughput(Throughput::Elements(flops));
    group.bench_function("forward 13x13x32->64", |b| b.iter(|| deep.forward()));
    deep.forward();
    let dy = deep.dy.clone();
    group.throughput(Throughput::Elements(2 * flops));
    group.bench_function("weight+input gradients 13x13x32->64", |b| b.iter(|| deep.backward(true, black_box(&dy))));
    group.throughput(Throughput::Elements(flops));
    group.bench_function("weight gradient only 13x13x32->64", |b| b.iter(|| deep.backward(false, black_box(&dy))));
    group.finish();
}

/// ResNet-20's 3x3 stride-1 'same' convolutions, one task of 16 samples on one
/// thread (as the device runs them): unfolding (im2col + one matrix product,
/// the reference path) against the padded layout ([`Wide`]: KH products) and
/// Winograd's F(2x2, 3x3) and F(4x4, 3x3) tiles over it (forward and weight
/// gradient, the kernel's transform included).
fn conv_stride1(c: &mut Criterion) {
    use keel::kernels::conv_wide::Wide;
    use keel::kernels::im2col::{col2im_add, im2col};
    use keel::kernels::matmul::{MatRef, matmul};
    use keel::kernels::winograd::Winograd;
    const TASK: usize = 16;
    let mut group = c.benchmark_group("conv2d 3x3 stride 1, 16 samples, 1 thread");
    for (side, ch) in [(32, 16), (16, 32), (8, 64)] {
        let g = Window {
            h: side,
            w: side,
            c: ch,
            kh: 3,
            kw: 3,
            sh: 1,
            sw: 1,
            dh: 1,
            dw: 1,
            pt: 1,
            pl: 1,
            oh: side,
            ow: side,
        };
        let wide = Wide::of(&g).expect("stride 1");
        let t = wide.transposed(ch);
        let (p, k, f) = (g.positions(), g.patch_len(), ch);
        let mut rng = stream(2, 0);
        let mut values = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let (x, w, dz, bias) = (values(TASK * p * ch), values(k * f), values(TASK * p * f), values(f));
        let mut cols = vec![0.0; TASK * p * k];
        let mut y = vec![0.0; TASK * p * f];
        let mut dw = vec![0.0; k * f];
        let mut dx = vec![0.0; TASK * p * ch];
        let mut xp = vec![0.0; wide.padded_len(TASK).max(t.padded_len(TASK))];
        let mut wide_out = vec![0.0; wide.rows(TASK).max(t.rows(TASK)) * f];
        let mut turned = vec![0.0; k * f];
        group.throughput(Throughput::Elements(conv_flops(p, k, f) / (BATCH / TASK) as u64));
        let shape = format!("{side}x{side}x{ch}->{f}");
        group.bench_function(format!("forward {shape}, unfolding"), |b| {
            b.iter(|| {
                for (xs, cs) in x.chunks_exact(p * ch).zip(cols.chunks_exact_mut(p * k)) {
                    im2col(&g, xs, cs);
                }
                matmul(MatRef::new(&cols, TASK * p, k), MatRef::new(&w, k, f), &mut y, false);
            })
        });
        group.bench_function(format!("forward {shape}, padded layout"), |b| {
            b.iter(|| {
                wide.pad(&x, &mut xp);
                wide.forward(&xp, &w, f, 0..wide.rows(TASK), &mut wide_out);
                wide.compact(&wide_out, f, Some(&bias), false, &mut y);
            })
        });
        for m in [2, 4] {
            let wino = Winograd::with_tiles(&wide, f, m).expect("3x3, channels in 16s");
            let (mut u, mut wino_scratch) = (vec![0.0; wino.kernel_len()], vec![0.0; wino.scratch_len()]);
            group.bench_function(format!("forward {shape}, winograd {m}x{m}"), |b| {
                b.iter(|| {
                    wino.transform_kernel(&w, &mut u);
                    wino.forward(&x, u[..].into(), TASK, Some(&bias), &mut wino_scratch, &mut y);
                })
            });
            group.bench_function(format!("weight gradient {shape}, winograd {m}x{m}"), |b| {
                b.iter(|| {
                    u.fill(0.0);
                    wino.weight_grad(&x, &dz, TASK, &mut wino_scratch, &mut u, None);
                    dw.fill(0.0);
                    wino.kernel_grad(&u, &mut dw);
                })
            });
        }
        group.bench_function(format!("weight gradient {shape}, unfolding"), |b| {
            b.iter(|| {
                for (xs, cs) in x.chunks_exact(p * ch).zip(cols.chunks_exact_mut(p * k)) {
                    im2col(&g, xs, cs);
                }
                matmul(MatRef::new(&cols, TASK * p, k).t(), MatRef::new(&dz, TASK * p, f), &mut dw, false);
            })
        });
        group.bench_function(format!("weight gradient {shape}, padded layout"), |b| {
            b.iter(|| {
                wide.pad(&x, &mut xp);
                dw.fill(0.0);
                wide.weight_grad_real(&xp, &dz, f, TASK, &mut wide_out, &mut dw);
            })
        });
        group.bench_function(format!("input gradient {shape}, unfolding"), |b| {
            b.iter(|| {
                matmul(MatRef::new(&dz, TASK * p, f), MatRef::new(&w, k, f).t(), &mut cols, false);
                dx.fill(0.0);
                for (dxs, dc) in dx.chunks_exact_mut(p * ch).zip(cols.chunks_exact(p * k)) {
                    col2im_add(&g, dc, dxs);
                }
            })
        });
        group.bench_function(format!("input gradient {shape}, padded layout"), |b| {
            b.iter(|| {
                wide.turn_kernel(&w, f, &mut turned);
                t.pad(&dz, &mut xp);
                t.forward(&xp, &turned, ch, 0..t.rows(TASK), &mut wide_out);
                t.compact(&wide_out, ch, None, false, &mut dx);
            })
        });
    }
    group.finish();
}

/// DepthwiseConv2D's forward pass and gradients over one sample at
/// MobileNetV2's shapes (3x3, same padding), one thread: the register-blocked
/// paths against the tap-by-tap references.
fn depthwise(c: &mut Criterion) {
    use keel::kernels::depthwise::*;
    let mut group = c.benchmark_group("depthwise_conv2d 3x3, 1 sample, 1 thread");
    for (side, ch, stride) in [(112, 96, 2), (56, 144, 1), (14, 384, 1), (7, 960, 1)] {
        let out = side / stride;
        let pad = if stride == 1 { 1 } else { 0 };
        let g = Depthwise {
            h: side,
            w: side,
            c: ch,
            kh: 3,
            kw: 3,
            m: 1,
            sh: stride,
            sw: stride,
            dh: 1,
            dw: 1,
            pt: pad,
            pl: pad,
            oh: out,
            ow: out,
        };
        let mut rng = stream(3, 0);
        let mut values = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let (x, w, bias, dz) = (values(side * side * ch), values(9 * ch), values(ch), values(out * out * ch));
        let (mut y, mut dx) = (vec![0.0; out * out * ch], vec![0.0; side * side * ch]);
        let (mut dw, mut db) = (vec![0.0; 9 * ch], vec![0.0; ch]);
        group.throughput(Throughput::Elements((2 * out * out * ch * 9) as u64));
        let shape = format!("{side}x{side}x{ch}/{stride}");
        group.bench_function(format!("forward {shape}, register-blocked"), |b| {
            b.iter(|| forward(&g, black_box(&x), &w, Some(&bias), &mut y))
        });
        group.bench_function(format!("forward {shape}, tap by tap"), |b| {
            b.iter(|| forward_reference(&g, black_box(&x), &w, Some(&bias), &mut y))
        });
        group.bench_function(format!("weight gradient {shape}, by taps"), |b| {
            b.iter(|| weight_grad(&g, black_box(&x), &dz, &mut dw, &mut db))
        });
        group.bench_function(format!("weight gradient {shape}, tap by tap"), |b| {
            b.iter(|| weight_grad_reference(&g, black_box(&x), &dz, &mut dw, &mut db))
        });
        group.bench_function(format!("input gradient {shape}, by taps"), |b| {
            b.iter(|| input_grad(&g, black_box(&dz), &w, &mut dx))
        });
        group.bench_function(format!("input gradient {shape}, tap by tap"), |b| {
            b.iter(|| input_grad_reference(&g, black_box(&dz), &w, &mut dx))
        });
    }
    group.finish();
}

/// The packed product of batch-1 inference at ResNet-50's 7x7 and 14x14
/// shapes (positions x K x filters), one thread: the kernel packed once and
/// kept in cache, and streamed from memory as inference reads it (a
/// different copy each call, 256 MiB of them, as every layer's weights are
/// read once per image).
fn packed_product(c: &mut Criterion) {
    use keel::kernels::matmul::{MatRef, matmul};
    use keel::kernels::packed::{Packed, matmul_packed, pack, packed_len};
    let mut group = c.benchmark_group("packed product, batch-1 shapes, 1 thread");
    for (m, k, n) in [(49, 512, 2048), (49, 4608, 512), (196, 256, 1024)] {
        let mut rng = stream(4, 0);
        let mut values = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let (a, b) = (values(m * k), values(k * n));
        let copies = ((256 << 20) / (4 * packed_len(k, n))).max(2);
        let packed: Vec<Vec<f32>> = (0..copies)
            .map(|_| {
                let mut p = vec![0.0; packed_len(k, n)];
                pack(&b, k, n, &mut p);
                p
            })
            .collect();
        let mut out = vec![0.0; m * n];
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let shape = format!("{m}x{k}x{n}");
        let a = MatRef::new(&a, m, k);
        group.bench_function(format!("{shape}, kernel in cache"), |bench| {
            let p = Packed::new(&packed[0], k, n);
            bench.iter(|| matmul_packed(a, p, 0..k, 0..n, &mut out, n, false))
        });
        let mut next = 0;
        group.bench_function(format!("{shape}, kernel streamed"), |bench| {
            bench.iter(|| {
                next = (next + 1) % copies;
                matmul_packed(a, Packed::new(&packed[next], k, n), 0..k, 0..n, &mut out, n, false)
            })
        });
        // The general product over the same shapes, packing the kernel as it goes.
        let kernels: Vec<Vec<f32>> = (0..copies).map(|_| b.clone()).collect();
        group.bench_function(format!("{shape}, kernel streamed, general product"), |bench| {
            bench.iter(|| {
                next = (next + 1) % copies;
                matmul(a, MatRef::new(&kernels[next], k, n), &mut out, false)
            })
        });
    }
    group.finish();
}

fn max_pool(c: &mut Criterion) {
    let mut group = c.benchmark_group("max_pooling2d");
    let mut bench = Bench::new(Box::new(MaxPooling2D::new((2, 2))), &[26, 26, 32], None);
    // Bytes read and written: the input, the output, the argmax indices.
    let bytes = (bench.x.len() + 2 * bench.y.len()) * 4;
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("forward 26x26x32", |b| b.iter(|| bench.forward()));
    bench.forward();
    let dy = bench.dy.clone();
    group.bench_function("backward 26x26x32", |b| b.iter(|| bench.backward(true, black_box(&dy))));
    group.finish();
}

fn dense(c: &mut Criterion) {
    let mut group = c.benchmark_group("dense");
    for units in [10, 128] {
        let mut bench = Bench::new(Box::new(Dense::new(units)), &[5408], None);
        let flops = (2 * BATCH * 5408 * units) as u64;
        group.throughput(Throughput::Elements(flops));
        group.bench_function(BenchmarkId::new("forward 5408->", units), |b| b.iter(|| bench.forward()));
        bench.forward();
        let dy = bench.dy.clone();
        group.throughput(Throughput::Elements(2 * flops));
        group.bench_function(BenchmarkId::new("weight+input gradients 5408->", units), |b| {
            b.iter(|| bench.backward(true, black_box(&dy)))
        });
    }
    group.finish();
}

fn loss_and_optimizer(c: &mut Criterion) {
    let mut group = c.benchmark_group("step");
    let mut rng = stream(2, 0);
    let logits: Vec<f32> = (0..BATCH * 10).map(|_| rng.random_range(-3.0..3.0)).collect();
    let mut targets = vec![0.0; BATCH * 10];
    for (i, row) in targets.chunks_mut(10).enumerate() {
        row[i % 10] = 1.0;
    }
    let mut grad = vec![0.0; BATCH * 10];
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("softmax cross-entropy 128x10 (samples/s)", |b| {
        b.iter(|| Loss::CategoricalCrossentropy.compute(black_box(&logits), &targets, &mut grad, 10, true))
    });
    // A batch of MNIST-sized byte images to floats, a row at a time as `fit` gathers them.
    let table = keel::kernels::ByteTable::new(std::array::from_fn(|b| b as f32 / 255.0));
    let bytes: Vec<u8> = (0..BATCH * 784).map(|_| rng.random_range(0..=255)).collect();
    let mut floats = vec![0.0; BATCH * 784];
    group.throughput(Throughput::Elements((BATCH * 784) as u64));
    group.bench_function("byte images to floats 128x784 (values/s)", |b| {
        b.iter(|| {
            for (row, out) in black_box(&bytes).chunks_exact(784).zip(floats.chunks_exact_mut(784)) {
                table.look_up(row, out);
            }
        })
    });
    let mut params: Vec<f32> = (0..54_410).map(|_| rng.random_range(-0.1..0.1)).collect();
    let grads: Vec<f32> = (0..54_410).map(|_| rng.random_range(-0.01..0.01)).collect();
    let mut adam = Adam::default();
    // Read params, grads, m, v; write params, m, v.
    group.throughput(Throughput::Bytes(54_410 * 4 * 7));
    group.bench_function("adam 54,410 parameters", |b| b.iter(|| adam.step(&mut params, black_box(&grads))));
    group.finish();
}

criterion_group!(benches, conv, conv_stride1, depthwise, packed_product, max_pool, dense, loss_and_optimizer);
criterion_main!(benches);
