//! A layer's architecture as data: its class and Keras arguments, no weights.
//! Saved model files and `--model` files describe layers in this form, e.g.
//! `{"class_name": "Conv2D", "filters": 32, "kernel_size": [3, 3], "activation": "relu"}`.

use super::{
    ActivationLayer, Conv2D, Dense, Dropout, Flatten, FlipMode, Layer, MaxPooling2D, Normalization, Padding,
    RandomCrop, RandomFlip, RandomRotation, RandomTranslation, Rescaling, Resizing,
};
use crate::activations::Activation;
use crate::kernels::resample::Fill;
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
        #[serde(default)]
        activation: Activation,
        #[serde(default = "yes")]
        use_bias: bool,
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
            LayerConfig::Conv2D { filters, kernel_size, strides, padding, activation, use_bias } => Box::new(
                Conv2D::new(count("filters", filters, MAX_FILTERS)?, window("kernel_size", kernel_size)?)
                    .strides(window("strides", strides)?)
                    .padding(padding)
                    .activation(activation)
                    .use_bias(use_bias),
            ),
            LayerConfig::MaxPooling2D { pool_size, strides, padding } => {
                let mut pool = MaxPooling2D::new(window("pool_size", pool_size)?).padding(padding);
                if let Some(s) = strides {
                    pool = pool.strides(window("strides", s)?);
                }
                Box::new(pool)
            }
            LayerConfig::Flatten {} => Box::new(Flatten::new()),
            LayerConfig::Dense { units, activation, use_bias } => {
                Box::new(Dense::new(count("units", units, MAX_UNITS)?).activation(activation).use_bias(use_bias))
            }
            LayerConfig::Activation { activation } => Box::new(ActivationLayer::new(activation)),
            LayerConfig::Dropout { rate } => {
                if !(0.0..1.0).contains(&rate) {
                    return Err(format!("Dropout rate {rate} must be in [0, 1)"));
                }
                Box::new(Dropout::new(rate))
            }
            LayerConfig::Rescaling { scale, offset } => Box::new(Rescaling::new(scale).offset(offset)),
            LayerConfig::Normalization { ref mean, ref variance } => {
                count("channels", mean.len(), MAX_FILTERS)?;
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
                Box::new(RandomTranslation::new(height_factor, width_factor).fill_mode(fill_mode))
            }
            LayerConfig::RandomRotation { factor, fill_mode } => {
                Box::new(RandomRotation::new(factor).fill_mode(fill_mode))
            }
        })
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
        let huge = LayerConfig::Dense { units: usize::MAX, activation: Activation::Linear, use_bias: true };
        assert!(huge.to_layer().err().unwrap().contains("units"));
        let zero = LayerConfig::Conv2D {
            filters: 4,
            kernel_size: Pair(0, 3),
            strides: Pair(1, 1),
            padding: Padding::Valid,
            activation: Activation::Linear,
            use_bias: true,
        };
        assert!(zero.to_layer().err().unwrap().contains("kernel_size"));
        assert!(LayerConfig::Dropout { rate: 1.0 }.to_layer().is_err());
    }
}
