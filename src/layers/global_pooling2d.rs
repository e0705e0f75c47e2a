use super::{Backward, Layer, LayerConfig, Mode};
use crate::device::{self, Workspace};

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
    /// Max only: where the forward pass keeps each channel's winner.
    ws: Workspace,
}

impl GlobalPool {
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let &[h, w, c] = input else {
            return Err(format!("expects input of shape (height, width, channels), got {input:?}"));
        };
        (self.positions, self.c) = (h * w, c);
        Ok(vec![c])
    }

    // x: (N,H,W,C) -> y: (N,C)
    fn forward(&mut self, x: &[f32], y: &mut [f32], n: usize) {
        let max = self.reduce == Reduce::Max;
        device::current().global_pool_forward(max, self.positions, self.c, x, y, n, &mut self.ws);
    }

    // average: dx = dy / (H*W) everywhere;  max: dx[argmax[c]] = dy[c], zero elsewhere
    fn backward(&mut self, pass: Backward) {
        let Some(dx) = pass.dx else { return };
        let max = self.reduce == Reduce::Max;
        device::current().global_pool_backward(max, self.positions, self.c, pass.dy, dx, pass.n, &mut self.ws);
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
                $name(GlobalPool { reduce: $reduce, positions: 0, c: 0, ws: Workspace::default() })
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
