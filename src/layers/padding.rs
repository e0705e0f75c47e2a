//! Keras' `padding=` argument and the output sizes it implies.

use crate::error::Error;
use std::str::FromStr;

/// How a sliding window treats the borders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    /// No padding: the window stays inside the input; output = floor((in - k) / s) + 1.
    #[default]
    Valid,
    /// Pad so that output = ceil(in / s), the extra row/column going after (as TensorFlow).
    Same,
}

impl Padding {
    /// (output size, padding before) along one axis, or `None` when the window
    /// does not fit.
    pub fn resolve(self, input: usize, kernel: usize, stride: usize) -> Option<(usize, usize)> {
        match self {
            Padding::Valid => (input >= kernel).then(|| ((input - kernel) / stride + 1, 0)),
            Padding::Same => {
                let out = input.div_ceil(stride);
                let total = ((out.saturating_sub(1)) * stride + kernel).saturating_sub(input);
                (input > 0).then_some((out, total / 2))
            }
        }
    }

    /// Keras' name for it.
    pub fn name(self) -> &'static str {
        match self {
            Padding::Valid => "valid",
            Padding::Same => "same",
        }
    }
}

impl FromStr for Padding {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "valid" => Ok(Padding::Valid),
            "same" => Ok(Padding::Same),
            _ => Err(Error::InvalidArgument(format!("unknown padding '{s}'; expected 'valid' or 'same'"))),
        }
    }
}

/// One axis of a window: (input, padding before, outputs, kernel, stride, dilation).
pub(crate) type Axis = (usize, usize, usize, usize, usize, usize);

/// The padding `((top, bottom), (left, right))` of a ZeroPadding2D taken into
/// the window (rows and columns) over its output: per axis, (input, padding
/// before) over the unpadded input, the same outputs. None where a window
/// would then lie wholly in padding (or the input vanishes).
pub(crate) fn absorb_padding(axes: [Axis; 2], pad: ((usize, usize), (usize, usize))) -> Option<[(usize, usize); 2]> {
    let axis = |(input, before, outputs, kernel, stride, dilation): Axis, (pad_before, pad_after): (usize, usize)| {
        let input = input.checked_sub(pad_before + pad_after).filter(|&i| i > 0)?;
        let before = before + pad_before;
        let span = (kernel - 1) * dilation + 1;
        let after = ((outputs - 1) * stride + span).saturating_sub(input + before);
        (before < span && after < span).then_some((input, before))
    };
    Some([axis(axes[0], pad.0)?, axis(axes[1], pad.1)?])
}

/// The window geometry for an (H,W,C) input, or a message saying why it does not fit.
pub(crate) fn window(
    input: &[usize],
    kernel: (usize, usize),
    strides: (usize, usize),
    padding: Padding,
) -> Result<crate::kernels::Window, String> {
    dilated_window(input, kernel, strides, (1, 1), padding)
}

/// [`window`] with taps `dilation` apart: the window spans (k - 1) * d + 1.
pub(crate) fn dilated_window(
    input: &[usize],
    kernel: (usize, usize),
    strides: (usize, usize),
    dilation: (usize, usize),
    padding: Padding,
) -> Result<crate::kernels::Window, String> {
    let &[h, w, c] = input else {
        return Err(format!("expects input of shape (height, width, channels), got {input:?}"));
    };
    if [kernel.0, kernel.1, strides.0, strides.1, dilation.0, dilation.1].contains(&0) {
        return Err(format!("window {kernel:?}, strides {strides:?} and dilation {dilation:?} must be positive"));
    }
    let span = ((kernel.0 - 1) * dilation.0 + 1, (kernel.1 - 1) * dilation.1 + 1);
    let too_small = || {
        let dilated =
            if dilation == (1, 1) { String::new() } else { format!(" dilated by {dilation:?} (spanning {span:?})") };
        format!("window {kernel:?}{dilated} does not fit input {input:?} with padding '{}'", padding.name())
    };
    let (oh, pt) = padding.resolve(h, span.0, strides.0).ok_or_else(too_small)?;
    let (ow, pl) = padding.resolve(w, span.1, strides.1).ok_or_else(too_small)?;
    let (kh, kw, sh, sw, dh, dw) = (kernel.0, kernel.1, strides.0, strides.1, dilation.0, dilation.1);
    Ok(crate::kernels::Window { h, w, c, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow })
}

/// A pooling layer's window arguments, Keras' `pool_size`, `strides` (default:
/// the pool size) and `padding`, and its geometry once built.
#[derive(Clone, Debug)]
pub(crate) struct PoolWindow {
    pub pool_size: (usize, usize),
    pub strides: Option<(usize, usize)>,
    pub padding: Padding,
    g: Option<crate::kernels::Window>,
}

impl PoolWindow {
    pub fn new(pool_size: (usize, usize)) -> Self {
        PoolWindow { pool_size, strides: None, padding: Padding::Valid, g: None }
    }

    // (H,W,C) -> (OH,OW,C)
    pub fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let g = window(input, self.pool_size, self.strides.unwrap_or(self.pool_size), self.padding)?;
        self.g = Some(g);
        Ok(vec![g.oh, g.ow, g.c])
    }

    /// The geometry (after `build`).
    pub fn geometry(&self) -> Option<crate::kernels::Window> {
        self.g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_sizes_match_tensorflow() {
        assert_eq!(Padding::Valid.resolve(28, 3, 1), Some((26, 0)));
        assert_eq!(Padding::Valid.resolve(26, 2, 2), Some((13, 0)));
        assert_eq!(Padding::Valid.resolve(13, 2, 2), Some((6, 0)));
        assert_eq!(Padding::Valid.resolve(2, 3, 1), None);
        assert_eq!(Padding::Same.resolve(28, 3, 1), Some((28, 1)));
        assert_eq!(Padding::Same.resolve(5, 3, 2), Some((3, 1)));
        assert_eq!(Padding::Same.resolve(6, 3, 2), Some((3, 0)));
        assert_eq!(Padding::Same.resolve(13, 2, 2), Some((7, 0)));
    }
}
