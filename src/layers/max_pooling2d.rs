use super::LayerConfig;
use super::padding::PoolWindow;
use super::{Backward, Layer, Mode, Padding};
use crate::device::{self, Workspace};
use crate::kernels::Window;

/// 2-D max pooling, as `keras.layers.MaxPooling2D`.
///
/// Arguments: `pool_size`; builder methods `strides` (default: `pool_size`) and
/// `padding` (default valid). No parameters.
///
/// ```
/// use keel::prelude::*;
/// let pool = MaxPooling2D::new((2, 2));
/// ```
#[derive(Clone, Debug)]
pub struct MaxPooling2D {
    window: PoolWindow,
    input_shape: Option<Vec<usize>>,
    /// Where the forward pass keeps each output's winning input.
    ws: Workspace,
}

impl MaxPooling2D {
    /// Pools over windows of `pool_size` (height, width).
    pub fn new(pool_size: (usize, usize)) -> Self {
        MaxPooling2D { window: PoolWindow::new(pool_size), input_shape: None, ws: Workspace::default() }
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

    /// Per-sample input shape when this is the first layer.
    pub fn input_shape(mut self, shape: impl Into<Vec<usize>>) -> Self {
        self.input_shape = Some(shape.into());
        self
    }

    fn geometry(&self) -> Window {
        self.window.geometry().expect("MaxPooling2D used before build")
    }
}

impl Layer for MaxPooling2D {
    fn class_name(&self) -> &'static str {
        "MaxPooling2D"
    }

    fn base_name(&self) -> &'static str {
        "max_pooling2d"
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::MaxPooling2D {
            pool_size: self.window.pool_size.into(),
            strides: self.window.strides.map(Into::into),
            padding: self.window.padding,
        }
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    // (H,W,C) -> (OH,OW,C)
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        self.window.build(input)
    }

    fn max_pool_window(&self) -> Option<Window> {
        self.window.geometry()
    }

    // x: (N,H,W,C) -> y: (N,OH,OW,C);  y = max over each window, argmax recorded (training)
    fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], n: usize, mode: Mode) {
        match mode {
            Mode::Infer => device::current().max_pool_values(&self.geometry(), x, y, n),
            _ => device::current().max_pool_forward(&self.geometry(), x, y, n, &mut self.ws),
        }
    }

    // Differentiates y[i] = x[argmax[i]]:  dx[argmax[i]] += dy[i]
    fn backward(&mut self, pass: Backward) {
        let Some(dx) = pass.dx else { return };
        device::current().max_pool_backward(&self.geometry(), pass.dy, dx, pass.n, &mut self.ws);
    }
}
