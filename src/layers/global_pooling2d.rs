use super::{Backward, Layer, LayerConfig, Mode};
use crate::kernels::SAMPLES_PER_TASK;
use crate::kernels::pool::{global_avg_backward, global_avg_forward, global_max_forward, max_pool_backward};
use rayon::prelude::*;

/// Average or maximum over all positions of each channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reduce {
    Average,
    Max,
}

/// (H, W, C) -> (C), by average or maximum: the shared body of the two global poolings.
#[derive(Clone, Debug)]
struct GlobalPool {
    reduce: Reduce,
    /// Positions H*W and channels C per sample.
    positions: usize,
    c: usize,
    /// Max only: flat index (within the sample) of each channel's winner.
    argmax: Vec<u32>,
}

impl GlobalPool {
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let &[h, w, c] = input else {
            return Err(format!("expects input of shape (height, width, channels), got {input:?}"));
        };
        (self.positions, self.c) = (h * w, c);
        Ok(vec![c])
    }

    fn allocate(&mut self, batch: usize) {
        if self.reduce == Reduce::Max {
            self.argmax.resize(batch * self.c, 0);
        }
    }

    // x: (N,H,W,C) -> y: (N,C)
    fn forward(&mut self, x: &[f32], y: &mut [f32], n: usize) {
        let (in_len, c, reduce) = (self.positions * self.c, self.c, self.reduce);
        let (xt, yt) =
            (x[..n * in_len].par_chunks(SAMPLES_PER_TASK * in_len), y[..n * c].par_chunks_mut(SAMPLES_PER_TASK * c));
        let argmax = self.argmax.par_chunks_mut(SAMPLES_PER_TASK * c);
        match reduce {
            Reduce::Average => xt.zip(yt).for_each(|(xt, yt)| {
                for (xs, ys) in xt.chunks_exact(in_len).zip(yt.chunks_exact_mut(c)) {
                    global_avg_forward(xs, ys);
                }
            }),
            Reduce::Max => xt.zip(yt).zip(argmax).for_each(|((xt, yt), at)| {
                for ((xs, ys), a) in xt.chunks_exact(in_len).zip(yt.chunks_exact_mut(c)).zip(at.chunks_exact_mut(c)) {
                    global_max_forward(xs, ys, a);
                }
            }),
        }
    }

    // average: dx = dy / (H*W) everywhere;  max: dx[argmax[c]] = dy[c], zero elsewhere
    fn backward(&mut self, pass: Backward) {
        let Some(dx) = pass.dx else { return };
        let (in_len, c, n) = (self.positions * self.c, self.c, pass.n);
        let dxt = dx[..n * in_len].par_chunks_mut(SAMPLES_PER_TASK * in_len);
        let dyt = pass.dy[..n * c].par_chunks(SAMPLES_PER_TASK * c);
        match self.reduce {
            Reduce::Average => dxt.zip(dyt).for_each(|(dxt, dyt)| {
                for (dxs, dys) in dxt.chunks_exact_mut(in_len).zip(dyt.chunks_exact(c)) {
                    global_avg_backward(dys, dxs);
                }
            }),
            Reduce::Max => {
                dxt.zip(dyt).zip(self.argmax.par_chunks(SAMPLES_PER_TASK * c)).for_each(|((dxt, dyt), at)| {
                    for ((dxs, dys), a) in dxt.chunks_exact_mut(in_len).zip(dyt.chunks_exact(c)).zip(at.chunks_exact(c))
                    {
                        max_pool_backward(dys, a, dxs);
                    }
                })
            }
        }
    }
}

macro_rules! global_pooling_layer {
    ($(#[$doc:meta])* $name:ident, $reduce:expr, $base:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name(GlobalPool);

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl $name {
            /// The layer (keepdims false, as Keras' default).
            pub fn new() -> Self {
                $name(GlobalPool { reduce: $reduce, positions: 0, c: 0, argmax: Vec::new() })
            }
        }

        impl Layer for $name {
            fn class_name(&self) -> &'static str {
                stringify!($name)
            }

            fn base_name(&self) -> &'static str {
                $base
            }

            fn config(&self) -> LayerConfig {
                LayerConfig::$name {}
            }

            // (H,W,C) -> (C)
            fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
                self.0.build(input)
            }

            fn allocate(&mut self, batch: usize) {
                self.0.allocate(batch)
            }

            fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], n: usize, _mode: Mode) {
                self.0.forward(x, y, n)
            }

            fn backward(&mut self, pass: Backward) {
                self.0.backward(pass)
            }
        }
    };
}

global_pooling_layer!(
    /// The mean of each channel over all positions, as `keras.layers.GlobalAveragePooling2D`.
    GlobalAveragePooling2D,
    Reduce::Average,
    "global_average_pooling2d"
);

global_pooling_layer!(
    /// The maximum of each channel over all positions, as `keras.layers.GlobalMaxPooling2D`.
    GlobalMaxPooling2D,
    Reduce::Max,
    "global_max_pooling2d"
);
