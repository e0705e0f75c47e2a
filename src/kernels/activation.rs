//! Activations in place over slices; backward works from the output y, which
//! every layer keeps, so no pre-activation buffer is needed.

use multiversion::multiversion;

use crate::activations::Activation;

/// z: (rows, width) -> y = f(z + bias), in place, row by row so each row is
/// read and written once. `width` is the softmax axis and the bias length.
#[multiversion(targets = "simd")]
pub fn forward(act: Activation, z: &mut [f32], bias: Option<&[f32]>, width: usize) {
    for row in z.chunks_exact_mut(width) {
        if let Some(b) = bias {
            super::add_assign(row, b);
        }
        activate_row(act, row);
    }
}

/// z: (rows, width) -> y = f(z * scale + shift), in place, row by row: a
/// per-channel affine map (a BatchNormalization at inference) and the activation in one pass.
/// With a residual r (rows, width): y = f((z * scale + shift) + r), the Add after the map too.
#[multiversion(targets = "simd")]
pub fn forward_affine(
    act: Activation,
    z: &mut [f32],
    scale: &[f32],
    shift: &[f32],
    residual: Option<&[f32]>,
    width: usize,
) {
    let (scale, shift) = (&scale[..width], &shift[..width]);
    match residual {
        None => {
            for row in z.chunks_exact_mut(width) {
                for ((v, &a), &b) in row.iter_mut().zip(scale).zip(shift) {
                    *v = *v * a + b;
                }
                activate_row(act, row);
            }
        }
        Some(r) => {
            assert!(r.len() >= z.len() / width * width, "residual shorter than the output");
            for (row, r) in z.chunks_exact_mut(width).zip(r.chunks_exact(width)) {
                for (((v, &a), &b), &r) in row.iter_mut().zip(scale).zip(shift).zip(r) {
                    *v = (*v * a + b) + r;
                }
                activate_row(act, row);
            }
        }
    }
}

/// One row of [`forward`] after the bias.
#[inline(always)]
fn activate_row(act: Activation, row: &mut [f32]) {
    match act {
        Activation::Linear => {}
        Activation::Relu => row.iter_mut().for_each(|v| *v = v.max(0.0)),
        Activation::Sigmoid => row.iter_mut().for_each(|v| *v = sigmoid(*v)),
        Activation::Tanh => row.iter_mut().for_each(|v| *v = v.tanh()),
        Activation::Softmax => softmax_row(row),
        Activation::Relu6 => row.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
        Activation::LeakyRelu => row.iter_mut().for_each(|v| *v = if *v > 0.0 { *v } else { LEAKY_SLOPE * *v }),
        Activation::Elu => row.iter_mut().for_each(|v| *v = if *v > 0.0 { *v } else { v.exp_m1() }),
        Activation::Softplus => row.iter_mut().for_each(|v| *v = softplus(*v)),
        Activation::HardSigmoid => row.iter_mut().for_each(|v| *v = ((*v + 3.0) / 6.0).clamp(0.0, 1.0)),
        Activation::Silu => row.iter_mut().for_each(|v| *v *= sigmoid(*v)),
        Activation::Gelu => row.iter_mut().for_each(|v| *v *= 0.5 * (1.0 + libm::erff(*v * FRAC_1_SQRT_2))),
        Activation::HardSilu => row.iter_mut().for_each(|v| *v *= ((*v + 3.0) / 6.0).clamp(0.0, 1.0)),
    }
}

use std::f32::consts::FRAC_1_SQRT_2;

/// dy -> dy * f'(z), in place, from the input z: the activations whose
/// derivative needs it (`Activation::needs_input`).
#[multiversion(targets = "simd")]
pub fn backward_from_input(act: Activation, z: &[f32], dy: &mut [f32]) {
    match act {
        // f = z s, s = sigmoid(z)  =>  f' = s (1 + z (1 - s))
        Activation::Silu => {
            for (d, &z) in dy.iter_mut().zip(z) {
                let s = sigmoid(z);
                *d *= s * (1.0 + z * (1.0 - s));
            }
        }
        // f = z Phi(z)  =>  f' = Phi(z) + z phi(z)
        Activation::Gelu => {
            let inv_sqrt_2pi = 0.5 * std::f32::consts::FRAC_2_SQRT_PI * FRAC_1_SQRT_2;
            for (d, &z) in dy.iter_mut().zip(z) {
                let cdf = 0.5 * (1.0 + libm::erff(z * FRAC_1_SQRT_2));
                *d *= cdf + z * inv_sqrt_2pi * (-0.5 * z * z).exp();
            }
        }
        // f = z clamp((z + 3) / 6, 0, 1)  =>  f' = 0 below -3, 1 above 3, (2z + 3) / 6 between
        Activation::HardSilu => {
            for (d, &z) in dy.iter_mut().zip(z) {
                *d *= if z <= -3.0 {
                    0.0
                } else if z >= 3.0 {
                    1.0
                } else {
                    (2.0 * z + 3.0) / 6.0
                };
            }
        }
        Activation::Linear => {}
        other => unreachable!("{other} is differentiated from its output (kernels::activation::backward)"),
    }
}

/// leaky_relu's slope below zero (Keras 3's default `negative_slope`).
pub const LEAKY_SLOPE: f32 = 0.2;

/// ln(1 + e^x) without overflow for large x.
fn softplus(x: f32) -> f32 {
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

/// dy -> dz = dy * f'(z), in place, from y = f(z).
#[multiversion(targets = "simd")]
pub fn backward(act: Activation, y: &[f32], dy: &mut [f32], width: usize) {
    match act {
        Activation::Linear => {}
        // y = max(z, 0)  =>  dz = dy where y > 0
        Activation::Relu => {
            for (d, &y) in dy.iter_mut().zip(y) {
                *d = if y > 0.0 { *d } else { 0.0 };
            }
        }
        // y = 1 / (1 + e^-z)  =>  dz = dy * y * (1 - y)
        Activation::Sigmoid => {
            for (d, &y) in dy.iter_mut().zip(y) {
                *d *= y * (1.0 - y);
            }
        }
        // y = tanh(z)  =>  dz = dy * (1 - y^2)
        Activation::Tanh => {
            for (d, &y) in dy.iter_mut().zip(y) {
                *d *= 1.0 - y * y;
            }
        }
        // The others, elementwise from y (see `derivative_from_output`).
        Activation::Relu6
        | Activation::LeakyRelu
        | Activation::Elu
        | Activation::Softplus
        | Activation::HardSigmoid => {
            for (d, &y) in dy.iter_mut().zip(y) {
                *d *= derivative_from_output(act, y);
            }
        }
        Activation::Silu | Activation::Gelu | Activation::HardSilu => {
            unreachable!("{act} is differentiated from its input (kernels::activation::backward_from_input)")
        }
        // y_i = e^z_i / sum_j e^z_j  =>  dz_i = y_i * (dy_i - sum_j dy_j y_j)
        Activation::Softmax => {
            for (d, y) in dy.chunks_exact_mut(width).zip(y.chunks_exact(width)) {
                let dot: f32 = d.iter().zip(y).map(|(a, b)| a * b).sum();
                for (di, &yi) in d.iter_mut().zip(y) {
                    *di = yi * (*di - dot);
                }
            }
        }
    }
}

/// f'(z) of an elementwise activation from its output y = f(z), one value at
/// a time (for sparse updates such as a fused pooling's backward pass).
/// Softmax is not elementwise: it is never asked for here.
#[inline]
pub fn derivative_from_output(act: Activation, y: f32) -> f32 {
    match act {
        Activation::Linear | Activation::Softmax => 1.0,
        Activation::Relu => (y > 0.0) as u8 as f32,
        Activation::Sigmoid => y * (1.0 - y),
        Activation::Tanh => 1.0 - y * y,
        // y = clamp(z, 0, 6)
        Activation::Relu6 => (y > 0.0 && y < 6.0) as u8 as f32,
        // y = z or 0.2 z: the sign of y is that of z
        Activation::LeakyRelu => {
            if y > 0.0 {
                1.0
            } else {
                LEAKY_SLOPE
            }
        }
        // y = e^z - 1 below zero: f' = e^z = y + 1
        Activation::Elu => {
            if y > 0.0 {
                1.0
            } else {
                y + 1.0
            }
        }
        // y = ln(1 + e^z): f' = sigmoid(z) = 1 - e^-y
        Activation::Softplus => -(-y).exp_m1(),
        // y = clamp((z + 3) / 6, 0, 1)
        Activation::HardSigmoid => (y > 0.0 && y < 1.0) as u8 as f32 / 6.0,
        Activation::Silu | Activation::Gelu | Activation::HardSilu => {
            unreachable!("{act} needs its input: layers keep the pre-activation and never fuse it")
        }
    }
}

/// Logistic function without overflow for large |x|.
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Softmax of one row in place, shifted by the max so exp never overflows.
pub fn softmax_row(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// log(sum(exp(row))), computed stably.
pub fn log_sum_exp(row: &[f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    max + row.iter().map(|&v| (v - max).exp()).sum::<f32>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_survives_huge_logits() {
        let mut row = [1000.0, 0.0, -1000.0];
        softmax_row(&mut row);
        assert_eq!(row[0], 1.0);
        assert!(row.iter().all(|v| v.is_finite()));
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + 2f32.ln())).abs() < 1e-3);
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert_eq!(sigmoid(1000.0), 1.0);
    }
}

/// The rectifier layers' functions (ReLU with max_value, negative_slope and
/// threshold; ELU), as functions of x with their derivatives.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rectifier {
    /// max_value if x >= max_value; x if threshold <= x; negative_slope * (x - threshold) below.
    Relu { max_value: Option<f32>, negative_slope: f32, threshold: f32 },
    /// alpha * (e^x - 1) for x <= 0.
    Elu { alpha: f32 },
}

impl Rectifier {
    #[inline]
    pub fn value(self, x: f32) -> f32 {
        match self {
            Rectifier::Relu { max_value, negative_slope, threshold } => {
                if max_value.is_some_and(|m| x >= m) {
                    max_value.unwrap_or(x)
                } else if x >= threshold {
                    x
                } else {
                    negative_slope * (x - threshold)
                }
            }
            Rectifier::Elu { alpha } => {
                if x > 0.0 {
                    x
                } else {
                    alpha * x.exp_m1()
                }
            }
        }
    }

    #[inline]
    pub fn derivative(self, x: f32) -> f32 {
        match self {
            Rectifier::Relu { max_value, negative_slope, threshold } => {
                if max_value.is_some_and(|m| x >= m) {
                    0.0
                } else if x >= threshold {
                    1.0
                } else {
                    negative_slope
                }
            }
            Rectifier::Elu { alpha } => {
                if x > 0.0 {
                    1.0
                } else {
                    alpha * x.exp()
                }
            }
        }
    }
}
