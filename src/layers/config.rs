//! A layer's architecture as data: its class and Keras arguments, no weights.
//! Saved model files and `--model` files describe layers in this form, e.g.
//! `{"class_name": "Conv2D", "filters": 32, "kernel_size": [3, 3], "activation": "relu"}`.

use super::{
    ActivationLayer, Add, AveragePooling2D, BatchNormalization, Concatenate, Conv2D, Cropping2D, Dense,
    DepthwiseConv2D, Dropout, ELU, Flatten, FlipMode, GlobalAveragePooling2D, GlobalMaxPooling2D, Interpolation, Layer,
    LeakyReLU, MaxPooling2D, Multiply, Normalization, PReLU, Padding, RandomCrop, RandomFlip, RandomRotation,
    RandomTranslation, ReLU, Rescaling, Reshape, Resizing, SeparableConv2D, SpatialDropout2D, UpSampling2D,
    ZeroPadding2D,
};
use crate::activations::Activation;
use crate::initializers::Initializer;
use crate::kernels::resample::Fill;
use crate::regularizers::Regularizer;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest window, stride or kernel side accepted from a description. Bounds
/// keep shape and parameter arithmetic far from overflow on untrusted files.
const MAX_WINDOW: usize = 1 << 10;
const MAX_FILTERS: usize = 1 << 16;
const MAX_UNITS: usize = 1 << 24;
const MAX_SIDE: usize = 1 << 14;

/// Keras' `(height, width)` arguments: written `[3, 3]`, or `3` for both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair(pub usize, pub usize);

impl From<Pair> for (usize, usize) {
    fn from(p: Pair) -> Self {
        (p.0, p.1)
    }
}

impl From<(usize, usize)> for Pair {
    fn from((a, b): (usize, usize)) -> Self {
        Pair(a, b)
    }
}

impl Serialize for Pair {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        [self.0, self.1].serialize(s)
    }
}

impl<'de> Deserialize<'de> for Pair {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "an integer or a list of two integers, e.g. 3 or [3, 3]")]
        enum Repr {
            One(usize),
            Two([usize; 2]),
        }
        Ok(match Repr::deserialize(d)? {
            Repr::One(a) => Pair(a, a),
            Repr::Two([a, b]) => Pair(a, b),
        })
    }
}

/// ZeroPadding2D's `padding`: written `1` (all sides), `[1, 2]` (rows, columns)
/// or `[[top, bottom], [left, right]]`, as Keras takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Padding2D(pub [[usize; 2]; 2]);

impl Serialize for Padding2D {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Padding2D {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(
            untagged,
            expecting = "an integer, a list of two integers or two lists of two integers, e.g. 1, [1, 2] or [[1, 1], [2, 2]]"
        )]
        enum Repr {
            One(usize),
            Two([usize; 2]),
            Four([[usize; 2]; 2]),
        }
        Ok(Padding2D(match Repr::deserialize(d)? {
            Repr::One(a) => [[a, a], [a, a]],
            Repr::Two([a, b]) => [[a, a], [b, b]],
            Repr::Four(p) => p,
        }))
    }
}

fn leaky_slope() -> f32 {
    0.3
}

fn unit_alpha() -> f32 {
    1.0
}

fn one() -> usize {
    1
}

fn is_one_by_one(p: &Pair) -> bool {
    *p == Pair(1, 1)
}

fn is_one(v: &usize) -> bool {
    *v == 1
}

fn two_by_two() -> Pair {
    Pair(2, 2)
}

fn minus_one() -> i64 {
    -1
}

fn batch_norm_momentum() -> f32 {
    0.99
}

fn batch_norm_epsilon() -> f32 {
    1e-3
}

fn one_by_one() -> Pair {
    Pair(1, 1)
}

fn yes() -> bool {
    true
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// One layer's class and arguments; argument names and defaults are Keras'.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "class_name", deny_unknown_fields)]
pub enum LayerConfig {
    Conv2D {
        filters: usize,
        kernel_size: Pair,
        #[serde(default = "one_by_one")]
        strides: Pair,
        #[serde(default)]
        padding: Padding,
        #[serde(default = "one_by_one", skip_serializing_if = "is_one_by_one")]
        dilation_rate: Pair,
        #[serde(default = "one", skip_serializing_if = "is_one")]
        groups: usize,
        #[serde(default)]
        activation: Activation,
        #[serde(default = "yes")]
        use_bias: bool,
        #[serde(default, skip_serializing_if = "is_default")]
        kernel_initializer: Initializer,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kernel_regularizer: Option<Regularizer>,
    },
    DepthwiseConv2D {
        kernel_size: Pair,
        #[serde(default = "one_by_one")]
        strides: Pair,
        #[serde(default)]
        padding: Padding,
        #[serde(default = "one")]
        depth_multiplier: usize,
        #[serde(default = "one_by_one")]
        dilation_rate: Pair,
        #[serde(default)]
        activation: Activation,
        #[serde(default = "yes")]
        use_bias: bool,
        #[serde(default, skip_serializing_if = "is_default")]
        depthwise_initializer: Initializer,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        depthwise_regularizer: Option<Regularizer>,
    },
    MaxPooling2D {
        pool_size: Pair,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        strides: Option<Pair>,
        #[serde(default, skip_serializing_if = "is_default")]
        padding: Padding,
    },
    Flatten {},
    Dense {
        units: usize,
        #[serde(default)]
        activation: Activation,
        #[serde(default = "yes")]
        use_bias: bool,
        #[serde(default, skip_serializing_if = "is_default")]
        kernel_initializer: Initializer,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kernel_regularizer: Option<Regularizer>,
    },
    Activation {
        activation: Activation,
    },
    Dropout {
        rate: f32,
    },
    Rescaling {
        scale: f32,
        #[serde(default)]
        offset: f32,
    },
    Normalization {
        mean: Vec<f32>,
        variance: Vec<f32>,
    },
    Resizing {
        height: usize,
        width: usize,
    },
    RandomFlip {
        #[serde(default)]
        mode: FlipMode,
    },
    RandomCrop {
        height: usize,
        width: usize,
        #[serde(default, skip_serializing_if = "is_default")]
        padding: usize,
    },
    RandomTranslation {
        height_factor: f32,
        width_factor: f32,
        #[serde(default)]
        fill_mode: Fill,
    },
    RandomRotation {
        factor: f32,
        #[serde(default)]
        fill_mode: Fill,
    },
    BatchNormalization {
        #[serde(default = "minus_one")]
        axis: i64,
        #[serde(default = "batch_norm_momentum")]
        momentum: f32,
        #[serde(default = "batch_norm_epsilon")]
        epsilon: f32,
        #[serde(default = "yes")]
        center: bool,
        #[serde(default = "yes")]
        scale: bool,
    },
    Add {},
    Concatenate {
        #[serde(default = "minus_one")]
        axis: i64,
    },
    GlobalAveragePooling2D {},
    GlobalMaxPooling2D {},
    AveragePooling2D {
        pool_size: Pair,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        strides: Option<Pair>,
        #[serde(default, skip_serializing_if = "is_default")]
        padding: Padding,
    },
    ZeroPadding2D {
        padding: Padding2D,
    },
    Reshape {
        target_shape: Vec<i64>,
    },
    ReLU {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_value: Option<f32>,
        #[serde(default)]
        negative_slope: f32,
        #[serde(default)]
        threshold: f32,
    },
    LeakyReLU {
        #[serde(default = "leaky_slope")]
        negative_slope: f32,
    },
    ELU {
        #[serde(default = "unit_alpha")]
        alpha: f32,
    },
    SeparableConv2D {
        filters: usize,
        kernel_size: Pair,
        #[serde(default = "one_by_one")]
        strides: Pair,
        #[serde(default)]
        padding: Padding,
        #[serde(default = "one")]
        depth_multiplier: usize,
        #[serde(default = "one_by_one")]
        dilation_rate: Pair,
        #[serde(default)]
        activation: Activation,
        #[serde(default = "yes")]
        use_bias: bool,
        #[serde(default, skip_serializing_if = "is_default")]
        depthwise_initializer: Initializer,
        #[serde(default, skip_serializing_if = "is_default")]
        pointwise_initializer: Initializer,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        depthwise_regularizer: Option<Regularizer>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pointwise_regularizer: Option<Regularizer>,
    },
    Multiply {},
    Cropping2D {
        cropping: Padding2D,
    },
    UpSampling2D {
        #[serde(default = "two_by_two")]
        size: Pair,
        #[serde(default)]
        interpolation: Interpolation,
    },
    SpatialDropout2D {
        rate: f32,
    },
    PReLU {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        shared_axes: Vec<usize>,
    },
}

impl LayerConfig {
    /// The layer this describes, after checking every argument is in range.
    pub fn to_layer(&self) -> Result<Box<dyn Layer>, String> {
        let window = |what: &str, p: Pair| {
            if (1..=MAX_WINDOW).contains(&p.0) && (1..=MAX_WINDOW).contains(&p.1) {
                Ok(p.into())
            } else {
                Err(format!("{what} [{}, {}] must be between 1 and {MAX_WINDOW}", p.0, p.1))
            }
        };
        let count = |what: &str, v: usize, max: usize| {
            if (1..=max).contains(&v) { Ok(v) } else { Err(format!("{what} {v} must be between 1 and {max}")) }
        };
        Ok(match *self {
            LayerConfig::Conv2D {
                filters,
                kernel_size,
                strides,
                padding,
                dilation_rate,
                groups,
                activation,
                use_bias,
                kernel_initializer,
                kernel_regularizer,
            } => {
                let mut conv =
                    Conv2D::new(count("filters", filters, MAX_FILTERS)?, window("kernel_size", kernel_size)?)
                        .strides(window("strides", strides)?)
                        .padding(padding)
                        .dilation_rate(window("dilation_rate", dilation_rate)?)
                        .groups(count("groups", groups, MAX_FILTERS)?)
                        .activation(activation)
                        .use_bias(use_bias)
                        .kernel_initializer(kernel_initializer);
                if let Some(r) = kernel_regularizer {
                    conv = conv.kernel_regularizer(r.check()?);
                }
                Box::new(conv)
            }
            LayerConfig::DepthwiseConv2D {
                kernel_size,
                strides,
                padding,
                depth_multiplier,
                dilation_rate,
                activation,
                use_bias,
                depthwise_initializer,
                depthwise_regularizer,
            } => {
                let mut conv = DepthwiseConv2D::new(window("kernel_size", kernel_size)?)
                    .strides(window("strides", strides)?)
                    .padding(padding)
                    .depth_multiplier(count("depth_multiplier", depth_multiplier, MAX_FILTERS)?)
                    .dilation_rate(window("dilation_rate", dilation_rate)?)
                    .activation(activation)
                    .use_bias(use_bias)
                    .depthwise_initializer(depthwise_initializer);
                if let Some(r) = depthwise_regularizer {
                    conv = conv.depthwise_regularizer(r.check()?);
                }
                Box::new(conv)
            }
            LayerConfig::MaxPooling2D { pool_size, strides, padding } => {
                let mut pool = MaxPooling2D::new(window("pool_size", pool_size)?).padding(padding);
                if let Some(s) = strides {
                    pool = pool.strides(window("strides", s)?);
                }
                Box::new(pool)
            }
            LayerConfig::Flatten {} => Box::new(Flatten::new()),
            LayerConfig::Dense { units, activation, use_bias, kernel_initializer, kernel_regularizer } => {
                let mut dense = Dense::new(count("units", units, MAX_UNITS)?)
                    .activation(activation)
                    .use_bias(use_bias)
                    .kernel_initializer(kernel_initializer);
                if let Some(r) = kernel_regularizer {
                    dense = dense.kernel_regularizer(r.check()?);
                }
                Box::new(dense)
            }
            LayerConfig::Activation { activation } => Box::new(ActivationLayer::new(activation)),
            LayerConfig::Dropout { rate } => {
                if !(0.0..1.0).contains(&rate) {
                    return Err(format!("Dropout rate {rate} must be in [0, 1)"));
                }
                Box::new(Dropout::new(rate))
            }
            LayerConfig::Rescaling { scale, offset } => {
                finite("scale", &[scale])?;
                finite("offset", &[offset])?;
                Box::new(Rescaling::new(scale).offset(offset))
            }
            LayerConfig::Normalization { ref mean, ref variance } => {
                count("channels", mean.len(), MAX_FILTERS)?;
                finite("mean", mean)?;
                finite("variance", variance)?;
                if let Some(v) = variance.iter().find(|v| **v < 0.0) {
                    return Err(format!("variance {v} is negative; variances are at least 0"));
                }
                Box::new(Normalization::with_statistics(mean.clone(), variance.clone()))
            }
            LayerConfig::Resizing { height, width } => {
                Box::new(Resizing::new(count("height", height, MAX_SIDE)?, count("width", width, MAX_SIDE)?))
            }
            LayerConfig::RandomFlip { mode } => Box::new(RandomFlip::new(mode)),
            LayerConfig::RandomCrop { height, width, padding } => {
                if padding > MAX_WINDOW {
                    return Err(format!("padding {padding} must be at most {MAX_WINDOW}"));
                }
                Box::new(
                    RandomCrop::new(count("height", height, MAX_SIDE)?, count("width", width, MAX_SIDE)?)
                        .padding(padding),
                )
            }
            LayerConfig::RandomTranslation { height_factor, width_factor, fill_mode } => {
                finite("height_factor and width_factor", &[height_factor, width_factor])?;
                Box::new(RandomTranslation::new(height_factor, width_factor).fill_mode(fill_mode))
            }
            LayerConfig::RandomRotation { factor, fill_mode } => {
                finite("factor", &[factor])?;
                Box::new(RandomRotation::new(factor).fill_mode(fill_mode))
            }
            LayerConfig::BatchNormalization { axis, momentum, epsilon, center, scale } => {
                last_axis(axis)?;
                if !(0.0..1.0).contains(&momentum) {
                    return Err(format!("momentum {momentum} must be in [0, 1)"));
                }
                if !(epsilon.is_finite() && epsilon > 0.0) {
                    return Err(format!("epsilon {epsilon} must be a positive number"));
                }
                Box::new(BatchNormalization::new().momentum(momentum).epsilon(epsilon).center(center).scale(scale))
            }
            LayerConfig::Add {} => Box::new(Add::new()),
            LayerConfig::Concatenate { axis } => {
                last_axis(axis)?;
                Box::new(Concatenate::new())
            }
            LayerConfig::GlobalAveragePooling2D {} => Box::new(GlobalAveragePooling2D::new()),
            LayerConfig::GlobalMaxPooling2D {} => Box::new(GlobalMaxPooling2D::new()),
            LayerConfig::AveragePooling2D { pool_size, strides, padding } => {
                let mut pool = AveragePooling2D::new(window("pool_size", pool_size)?).padding(padding);
                if let Some(s) = strides {
                    pool = pool.strides(window("strides", s)?);
                }
                Box::new(pool)
            }
            LayerConfig::ZeroPadding2D { padding: Padding2D(p) } => {
                if p.iter().flatten().any(|&v| v > MAX_WINDOW) {
                    return Err(format!("padding {p:?} must be at most {MAX_WINDOW} on each side"));
                }
                Box::new(ZeroPadding2D::new(((p[0][0], p[0][1]), (p[1][0], p[1][1]))))
            }
            LayerConfig::ReLU { max_value, negative_slope, threshold } => {
                finite("threshold", &[threshold])?;
                non_negative("negative_slope", negative_slope)?;
                let mut relu = ReLU::new().negative_slope(negative_slope).threshold(threshold);
                if let Some(m) = max_value {
                    non_negative("max_value", m)?;
                    relu = relu.max_value(m);
                }
                Box::new(relu)
            }
            LayerConfig::LeakyReLU { negative_slope } => {
                non_negative("negative_slope", negative_slope)?;
                Box::new(LeakyReLU::new(negative_slope))
            }
            LayerConfig::ELU { alpha } => {
                finite("alpha", &[alpha])?;
                Box::new(ELU::new(alpha))
            }
            LayerConfig::SeparableConv2D {
                filters,
                kernel_size,
                strides,
                padding,
                depth_multiplier,
                dilation_rate,
                activation,
                use_bias,
                depthwise_initializer,
                pointwise_initializer,
                depthwise_regularizer,
                pointwise_regularizer,
            } => {
                let mut conv =
                    SeparableConv2D::new(count("filters", filters, MAX_FILTERS)?, window("kernel_size", kernel_size)?)
                        .strides(window("strides", strides)?)
                        .padding(padding)
                        .depth_multiplier(count("depth_multiplier", depth_multiplier, MAX_FILTERS)?)
                        .dilation_rate(window("dilation_rate", dilation_rate)?)
                        .activation(activation)
                        .use_bias(use_bias)
                        .depthwise_initializer(depthwise_initializer)
                        .pointwise_initializer(pointwise_initializer);
                if let Some(r) = depthwise_regularizer {
                    conv = conv.depthwise_regularizer(r.check()?);
                }
                if let Some(r) = pointwise_regularizer {
                    conv = conv.pointwise_regularizer(r.check()?);
                }
                Box::new(conv)
            }
            LayerConfig::Multiply {} => Box::new(Multiply::new()),
            LayerConfig::Cropping2D { cropping: Padding2D(p) } => {
                if p.iter().flatten().any(|&v| v > MAX_SIDE) {
                    return Err(format!("cropping {p:?} must be at most {MAX_SIDE} on each side"));
                }
                Box::new(Cropping2D::new(((p[0][0], p[0][1]), (p[1][0], p[1][1]))))
            }
            LayerConfig::UpSampling2D { size, interpolation } => {
                Box::new(UpSampling2D::new(window("size", size)?).interpolation(interpolation))
            }
            LayerConfig::SpatialDropout2D { rate } => {
                if !(0.0..1.0).contains(&rate) {
                    return Err(format!("SpatialDropout2D rate {rate} must be in [0, 1)"));
                }
                Box::new(SpatialDropout2D::new(rate))
            }
            LayerConfig::PReLU { ref shared_axes } => {
                if shared_axes.len() > 8 || shared_axes.iter().any(|&a| !(1..=8).contains(&a)) {
                    return Err(format!("shared_axes {shared_axes:?} must be axes from 1 to 8"));
                }
                Box::new(PReLU::new().shared_axes(shared_axes.clone()))
            }
            LayerConfig::Reshape { ref target_shape } => {
                if target_shape.is_empty() || target_shape.len() > 8 {
                    return Err(format!("target_shape {target_shape:?} must have 1 to 8 dimensions"));
                }
                if target_shape.iter().any(|&d| d != -1 && !(1..=MAX_UNITS as i64).contains(&d)) {
                    return Err(format!(
                        "target_shape {target_shape:?} must hold sizes from 1 to {MAX_UNITS}, or -1 for one inferred size"
                    ));
                }
                Box::new(Reshape::new(target_shape.clone()))
            }
        })
    }
}

/// Refuses negative, NaN and infinite values.
fn non_negative(what: &str, v: f32) -> Result<(), String> {
    if v.is_finite() && v >= 0.0 { Ok(()) } else { Err(format!("{what} {v} must be a non-negative number")) }
}

/// Refuses NaN and infinite argument values.
fn finite(what: &str, values: &[f32]) -> Result<(), String> {
    match values.iter().find(|v| !v.is_finite()) {
        Some(v) => Err(format!("{what} holds {v}; give finite numbers")),
        None => Ok(()),
    }
}

/// keel normalises and concatenates on the last axis (channels), Keras' default.
fn last_axis(axis: i64) -> Result<(), String> {
    if axis == -1 {
        Ok(())
    } else {
        Err(format!("axis {axis} is not supported: keel works on the last axis (channels); use axis = -1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layer_round_trips_through_its_config() {
        let configs = [
            r#"{"class_name": "Conv2D", "filters": 8, "kernel_size": 3, "strides": [2, 1], "padding": "same", "activation": "relu", "use_bias": false}"#,
            r#"{"class_name": "MaxPooling2D", "pool_size": [2, 3], "strides": 1}"#,
            r#"{"class_name": "Flatten"}"#,
            r#"{"class_name": "Dense", "units": 10, "activation": "softmax"}"#,
            r#"{"class_name": "Activation", "activation": "tanh"}"#,
            r#"{"class_name": "Dropout", "rate": 0.25}"#,
            r#"{"class_name": "Rescaling", "scale": 0.5, "offset": -1.0}"#,
            r#"{"class_name": "Normalization", "mean": [0.5], "variance": [0.25]}"#,
            r#"{"class_name": "Resizing", "height": 16, "width": 12}"#,
            r#"{"class_name": "RandomFlip", "mode": "horizontal"}"#,
            r#"{"class_name": "RandomCrop", "height": 6, "width": 6, "padding": 2}"#,
            r#"{"class_name": "RandomTranslation", "height_factor": 0.1, "width_factor": 0.2, "fill_mode": "constant"}"#,
            r#"{"class_name": "RandomRotation", "factor": 0.05}"#,
            r#"{"class_name": "Conv2D", "filters": 8, "kernel_size": 3, "kernel_initializer": "he_normal", "kernel_regularizer": {"class_name": "L2", "l2": 0.0001}}"#,
            r#"{"class_name": "Dense", "units": 3, "kernel_initializer": "he_uniform", "kernel_regularizer": {"class_name": "L2", "l2": 0.01}}"#,
            r#"{"class_name": "BatchNormalization", "momentum": 0.9, "epsilon": 0.001, "center": false}"#,
            r#"{"class_name": "Add"}"#,
            r#"{"class_name": "ReLU", "max_value": 6.0, "negative_slope": 0.1, "threshold": 0.5}"#,
            r#"{"class_name": "LeakyReLU", "negative_slope": 0.2}"#,
            r#"{"class_name": "ELU", "alpha": 0.5}"#,
            r#"{"class_name": "DepthwiseConv2D", "kernel_size": 3, "padding": "same", "depth_multiplier": 2, "dilation_rate": [1, 2], "activation": "relu6", "use_bias": false}"#,
            r#"{"class_name": "SeparableConv2D", "filters": 16, "kernel_size": 3, "strides": 2, "padding": "same", "depth_multiplier": 2, "activation": "silu", "use_bias": false, "pointwise_initializer": "he_normal", "depthwise_regularizer": {"class_name": "L2", "l2": 0.0001}}"#,
            r#"{"class_name": "Multiply"}"#,
            r#"{"class_name": "Conv2D", "filters": 8, "kernel_size": 3, "padding": "same", "dilation_rate": [2, 1], "groups": 4}"#,
            r#"{"class_name": "Cropping2D", "cropping": [[1, 2], [0, 3]]}"#,
            r#"{"class_name": "UpSampling2D", "size": [2, 3], "interpolation": "bilinear"}"#,
            r#"{"class_name": "SpatialDropout2D", "rate": 0.2}"#,
            r#"{"class_name": "PReLU", "shared_axes": [1, 2]}"#,
            r#"{"class_name": "Concatenate"}"#,
            r#"{"class_name": "GlobalAveragePooling2D"}"#,
            r#"{"class_name": "GlobalMaxPooling2D"}"#,
            r#"{"class_name": "AveragePooling2D", "pool_size": 2, "strides": 1, "padding": "same"}"#,
            r#"{"class_name": "ZeroPadding2D", "padding": [[1, 2], [0, 3]]}"#,
            r#"{"class_name": "Reshape", "target_shape": [4, -1]}"#,
        ];
        for text in configs {
            let config: LayerConfig = serde_json::from_str(text).unwrap();
            let layer = config.to_layer().unwrap();
            assert_eq!(layer.config(), config, "{text}");
            let again: LayerConfig = serde_json::from_str(&serde_json::to_string(&config).unwrap()).unwrap();
            assert_eq!(again, config);
        }
    }

    #[test]
    fn unknown_classes_and_arguments_are_named_with_the_valid_ones() {
        let err = serde_json::from_str::<LayerConfig>(r#"{"class_name": "Conv3D", "filters": 8}"#).unwrap_err();
        assert!(err.to_string().contains("unknown variant `Conv3D`"), "{err}");
        assert!(err.to_string().contains("Conv2D"), "{err}");
        let err = serde_json::from_str::<LayerConfig>(r#"{"class_name": "Dense", "unit": 8}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `unit`"), "{err}");
        assert!(err.to_string().contains("units"), "{err}");
    }

    #[test]
    fn out_of_range_arguments_are_refused() {
        let huge = LayerConfig::Dense {
            units: usize::MAX,
            activation: Activation::Linear,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            kernel_regularizer: None,
        };
        assert!(huge.to_layer().err().unwrap().contains("units"));
        let zero = LayerConfig::Conv2D {
            filters: 4,
            kernel_size: Pair(0, 3),
            strides: Pair(1, 1),
            padding: Padding::Valid,
            dilation_rate: Pair(1, 1),
            groups: 1,
            activation: Activation::Linear,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            kernel_regularizer: None,
        };
        assert!(zero.to_layer().err().unwrap().contains("kernel_size"));
        assert!(LayerConfig::Dropout { rate: 1.0 }.to_layer().is_err());
        let text = r#"{"class_name": "BatchNormalization", "axis": 1}"#;
        let err = serde_json::from_str::<LayerConfig>(text).unwrap().to_layer().err().unwrap();
        assert!(err.contains("axis = -1"), "{err}");
        let text = r#"{"class_name": "BatchNormalization", "momentum": 1.5}"#;
        assert!(serde_json::from_str::<LayerConfig>(text).unwrap().to_layer().err().unwrap().contains("momentum"));
        let text = r#"{"class_name": "Dense", "units": 2, "kernel_regularizer": {"class_name": "L2", "l2": -1}}"#;
        assert!(serde_json::from_str::<LayerConfig>(text).unwrap().to_layer().err().unwrap().contains("L2"));
        let text = r#"{"class_name": "Rescaling", "scale": NaN}"#.replace("NaN", "1e999");
        assert!(serde_json::from_str::<LayerConfig>(&text).map_or(true, |c| c.to_layer().is_err()));
        let nan = LayerConfig::Normalization { mean: vec![f32::NAN], variance: vec![1.0] };
        assert!(nan.to_layer().err().unwrap().contains("mean holds NaN"));
        let negative = LayerConfig::Normalization { mean: vec![0.0], variance: vec![-1.0] };
        assert!(negative.to_layer().err().unwrap().contains("negative"));
        let text = r#"{"class_name": "Reshape", "target_shape": [-1, -1]}"#;
        let mut layer = serde_json::from_str::<LayerConfig>(text).unwrap().to_layer().unwrap();
        assert!(layer.build(&[4, 4]).unwrap_err().contains("at most one -1"));
    }
}
