use super::padding::PoolWindow;
use super::{Backward, Layer, LayerConfig, Mode, Padding};
use crate::device;
use crate::kernels::Window;

/// 2-D average pooling, as `keras.layers.AveragePooling2D`: arguments
/// `pool_size`; builder methods `strides` (default: `pool_size`) and `padding`
/// (default valid; with same padding a window averages only the inputs inside
/// the image, as TensorFlow). No parameters.
#[derive(Clone, Debug)]
pub struct AveragePooling2D {
    window: PoolWindow,
}

impl AveragePooling2D {
    /// Averages over windows of `pool_size` (height, width).
    pub fn new(pool_size: (usize, usize)) -> Self {
        AveragePooling2D { window: PoolWindow::new(pool_size) }
    }

    /// Step of the window; defaults to the pool size.
    pub fn strides(mut self, strides: (usize, usize)) -> Self {
        self.window.strides = Some(strides);
        self
    }

    /// Border handling.
    pub fn padding(mut self, padding: Padding) -> Self {
        self.window.padding = padding;
        self
    }

    fn geometry(&self) -> Window {
        self.window.geometry().expect("AveragePooling2D used before build")
    }
}

impl Layer for AveragePooling2D {
    fn class_name(&self) -> &'static str {
        "AveragePooling2D"
    }

    fn base_name(&self) -> &'static str {
        "average_pooling2d"
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::AveragePooling2D {
            pool_size: self.window.pool_size.into(),
            strides: self.window.strides.map(Into::into),
            padding: self.window.padding,
        }
    }

    // (H,W,C) -> (OH,OW,C)
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        self.window.build(input)
    }

    // x: (N,H,W,C) -> y: (N,OH,OW,C);  y = mean of each window's inputs
    fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], n: usize, _mode: Mode) {
        device::current().avg_pool_forward(&self.geometry(), x, y, n);
    }

    // dx[i] = sum over windows w covering i of dy[w] / |w|
    fn backward(&mut self, pass: Backward) {
        let Some(dx) = pass.dx else { return };
        device::current().avg_pool_backward(&self.geometry(), pass.dy, dx, pass.n);
    }
}
