//! ONNX export (opset 13): any keel model becomes a graph that onnxruntime,
//! tract and the like run with the same outputs as `model.predict`.
//!
//! The graph's input is named `input`, shaped `(N, H, W, C)` (channels last,
//! as keel and Keras; N is a free dimension), float32, scaled as in training.
//! Its output, `output`, is `(N, ...)` as `predict` returns: probabilities for
//! a softmax classifier. ONNX convolutions and pooling are channels-first, so
//! runs of them are wrapped in Transpose nodes; Dropout and the random
//! augmentations (the identity at inference) are left out.

mod proto;

use crate::activations::Activation;
use crate::error::Result;
use crate::io::write_atomic;
use crate::layers::{Interpolation, LayerConfig, Padding, Padding2D, Pair};
use crate::model::{Model, WeightInfo};
use prost::Message;
use proto::*;
use std::collections::HashMap;
use std::path::Path;

/// The ONNX operator set the graph is written for.
pub const OPSET: i64 = 13;
/// ONNX IR version matching opset 13.
const IR_VERSION: i64 = 7;

impl Model {
    /// Writes the model as an ONNX file (see the module documentation for its
    /// input and output), atomically.
    ///
    /// ```no_run
    /// # fn f(model: &keel::model::Model) -> keel::Result<()> {
    /// model.export_onnx("model.onnx")?;
    /// # Ok(()) }
    /// ```
    pub fn export_onnx(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), &self.to_onnx()?.encode_to_vec())
    }

    fn to_onnx(&self) -> Result<ModelProto> {
        let shapes = self.shapes()?;
        let params = self.params()?;
        let weights = self.weights()?;
        let state = self.state()?;
        let mut g = Graph {
            nodes: Vec::new(),
            initializers: Vec::new(),
            current: "input".into(),
            channels_first: false,
            transposed: HashMap::new(),
        };
        // Each value's tensor name and layout: the input, then each node's output.
        let mut values: Vec<(String, bool)> = vec![("input".into(), false)];
        for node in &self.nodes {
            let (layer, name) = (&node.layer, node.name.as_str());
            let input = &shapes[node.inputs[0]];
            let rank4 = input.len() == 3;
            (g.current, g.channels_first) = values[node.inputs[0]].clone();
            let weight = |w: &str| weights.iter().find(|info| info.name == format!("{name}/{w}"));
            let values_of = |w: &WeightInfo| -> Vec<f32> {
                if w.state { state[w.range.clone()].to_vec() } else { params[w.range.clone()].to_vec() }
            };
            match layer.config() {
                LayerConfig::Conv2D { kernel_size, strides, padding, dilation_rate, groups, activation, .. } => {
                    let kernel = weight("kernel").expect("Conv2D has a kernel");
                    let &[kh, kw, c, f] = kernel.shape.as_slice() else { unreachable!("Conv2D kernels are 4-D") };
                    // Keras (KH, KW, C, F) -> ONNX (F, C, KH, KW).
                    let hwio = &params[kernel.range.clone()];
                    let mut oihw = vec![0.0f32; hwio.len()];
                    for (i, &v) in hwio.iter().enumerate() {
                        let (o, rest) = (i % f, i / f);
                        let (ci, rest) = (rest % c, rest / c);
                        let (x, y) = (rest % kw, rest / kw);
                        oihw[((o * c + ci) * kh + y) * kw + x] = v;
                    }
                    g.set_channels_first(true);
                    let mut inputs =
                        vec![g.current.clone(), g.constant(&format!("{name}/kernel"), &[f, c, kh, kw], oihw)];
                    if let Some(bias) = weight("bias") {
                        inputs.push(g.constant(&bias.name, &bias.shape, params[bias.range.clone()].to_vec()));
                    }
                    let (d, k) = (dilation_rate, kernel_size);
                    let span = Pair((k.0 - 1) * d.0 + 1, (k.1 - 1) * d.1 + 1);
                    let mut attributes = window_attributes(input, span, strides, padding);
                    attributes[0] = ints("kernel_shape", &[k.0 as i64, k.1 as i64]);
                    attributes.push(ints("dilations", &[d.0 as i64, d.1 as i64]));
                    attributes.push(int("group", groups as i64));
                    g.node("Conv", name, inputs, attributes);
                    g.activation(activation, name);
                }
                LayerConfig::DepthwiseConv2D { strides, padding, dilation_rate, activation, .. } => {
                    let kernel = weight("depthwise_kernel").expect("DepthwiseConv2D has a kernel");
                    let bias = weight("bias").map(|b| (b.name.clone(), b.shape.clone(), values_of(b)));
                    let window = (strides, padding, dilation_rate);
                    depthwise(&mut g, name, input, (&kernel.shape, &params[kernel.range.clone()]), bias, window);
                    g.activation(activation, name);
                }
                LayerConfig::SeparableConv2D { strides, padding, dilation_rate, activation, .. } => {
                    let kernel = weight("depthwise_kernel").expect("SeparableConv2D has a depthwise kernel");
                    let window = (strides, padding, dilation_rate);
                    let depthwise_name = format!("{name}/depthwise");
                    depthwise(
                        &mut g,
                        &depthwise_name,
                        input,
                        (&kernel.shape, &params[kernel.range.clone()]),
                        None,
                        window,
                    );
                    // Keras (1, 1, C*M, F) -> ONNX (F, C*M, 1, 1).
                    let pointwise = weight("pointwise_kernel").expect("SeparableConv2D has a pointwise kernel");
                    let &[_, _, cm, f] = pointwise.shape.as_slice() else { unreachable!("pointwise kernels are 4-D") };
                    let io = &params[pointwise.range.clone()];
                    let oi: Vec<f32> = (0..f * cm).map(|k| io[(k % cm) * f + k / cm]).collect();
                    let mut inputs = vec![g.current.clone(), g.constant(&pointwise.name, &[f, cm, 1, 1], oi)];
                    if let Some(bias) = weight("bias") {
                        inputs.push(g.constant(&bias.name, &bias.shape, params[bias.range.clone()].to_vec()));
                    }
                    g.node("Conv", name, inputs, vec![ints("kernel_shape", &[1, 1])]);
                    g.activation(activation, name);
                }
                LayerConfig::MaxPooling2D { pool_size, strides, padding } => {
                    let attributes = window_attributes(input, pool_size, strides.unwrap_or(pool_size), padding);
                    g.set_channels_first(true);
                    g.node("MaxPool", name, vec![g.current.clone()], attributes);
                }
                LayerConfig::Flatten {} => {
                    g.set_channels_first(false);
                    g.node("Flatten", name, vec![g.current.clone()], vec![int("axis", 1)]);
                }
                LayerConfig::Dense { activation, .. } => {
                    g.set_channels_first(false);
                    let kernel = weight("kernel").expect("Dense has a kernel");
                    let w = g.constant(&kernel.name, &kernel.shape, params[kernel.range.clone()].to_vec());
                    g.node("MatMul", &format!("{name}/matmul"), vec![g.current.clone(), w], vec![]);
                    if let Some(bias) = weight("bias") {
                        let b = g.constant(&bias.name, &bias.shape, params[bias.range.clone()].to_vec());
                        g.node("Add", &format!("{name}/bias_add"), vec![g.current.clone(), b], vec![]);
                    }
                    g.activation(activation, name);
                }
                LayerConfig::Activation { activation } => g.activation(activation, name),
                LayerConfig::Rescaling { scale, offset } => {
                    let (s, o) = (
                        g.constant(&format!("{name}/scale"), &[], vec![scale]),
                        g.constant(&format!("{name}/offset"), &[], vec![offset]),
                    );
                    g.node("Mul", &format!("{name}/mul"), vec![g.current.clone(), s], vec![]);
                    g.node("Add", &format!("{name}/add"), vec![g.current.clone(), o], vec![]);
                }
                LayerConfig::Normalization { mean, variance } => {
                    // As the layer computes it: (x - mean) * (1 / max(sqrt(variance), eps)).
                    g.set_channels_first(false);
                    let inverse: Vec<f32> = variance.iter().map(|v| 1.0 / v.sqrt().max(1e-7)).collect();
                    let c = mean.len();
                    let m = g.constant(&format!("{name}/mean"), &[c], mean);
                    let inv = g.constant(&format!("{name}/inverse_std"), &[c], inverse);
                    g.node("Sub", &format!("{name}/sub"), vec![g.current.clone(), m], vec![]);
                    g.node("Mul", &format!("{name}/mul"), vec![g.current.clone(), inv], vec![]);
                }
                LayerConfig::Resizing { height, width } => {
                    let attributes =
                        vec![string("mode", "linear"), string("coordinate_transformation_mode", "half_pixel")];
                    resize(&mut g, name, (height, width), attributes);
                }
                LayerConfig::RandomCrop { height, width, padding } => {
                    // At inference: the centre window of the padded image.
                    let (h, w) = (input[0] + 2 * padding, input[1] + 2 * padding);
                    if (h - height, w - width) != (2 * padding, 2 * padding) {
                        g.set_channels_first(false);
                        if padding > 0 {
                            let p = padding as i64;
                            let pads = g.int64s(&format!("{name}/pads"), &[0, p, p, 0, 0, p, p, 0]);
                            g.node("Pad", &format!("{name}/pad"), vec![g.current.clone(), pads], vec![]);
                        }
                        let (top, left) = (((h - height) / 2) as i64, ((w - width) / 2) as i64);
                        let starts = g.int64s(&format!("{name}/starts"), &[top, left]);
                        let ends = g.int64s(&format!("{name}/ends"), &[top + height as i64, left + width as i64]);
                        let axes = g.int64s(&format!("{name}/axes"), &[1, 2]);
                        g.node("Slice", name, vec![g.current.clone(), starts, ends, axes], vec![]);
                    }
                }
                // Random augmentations and dropout are the identity at inference.
                LayerConfig::Dropout { .. }
                | LayerConfig::SpatialDropout2D { .. }
                | LayerConfig::RandomFlip { .. }
                | LayerConfig::RandomTranslation { .. }
                | LayerConfig::RandomRotation { .. } => {}
                LayerConfig::BatchNormalization { epsilon, .. } => {
                    let c = input[input.len() - 1];
                    let get = |w: &str, default: f32| weight(w).map_or(vec![default; c], values_of);
                    let (gamma, beta) = (get("gamma", 1.0), get("beta", 0.0));
                    let (mean, var) = (get("moving_mean", 0.0), get("moving_variance", 1.0));
                    if rank4 || input.len() == 1 {
                        // ONNX's BatchNormalization: channels on axis 1.
                        g.set_channels_first(rank4);
                        let inputs = vec![
                            g.current.clone(),
                            g.constant(&format!("{name}/gamma"), &[c], gamma),
                            g.constant(&format!("{name}/beta"), &[c], beta),
                            g.constant(&format!("{name}/moving_mean"), &[c], mean),
                            g.constant(&format!("{name}/moving_variance"), &[c], var),
                        ];
                        g.node("BatchNormalization", name, inputs, vec![float("epsilon", epsilon)]);
                    } else {
                        // Other ranks: y = x * a + b on the last axis.
                        let a: Vec<f32> = (0..c).map(|i| gamma[i] / (var[i] + epsilon).sqrt()).collect();
                        let b: Vec<f32> = (0..c).map(|i| beta[i] - mean[i] * a[i]).collect();
                        let (a, b) =
                            (g.constant(&format!("{name}/a"), &[c], a), g.constant(&format!("{name}/b"), &[c], b));
                        g.node("Mul", &format!("{name}/mul"), vec![g.current.clone(), a], vec![]);
                        g.node("Add", &format!("{name}/add"), vec![g.current.clone(), b], vec![]);
                    }
                }
                LayerConfig::Add {} | LayerConfig::Multiply {} | LayerConfig::Concatenate { .. } => {
                    // Every input in the first one's layout.
                    let layout = g.channels_first;
                    let mut inputs = Vec::new();
                    for &v in &node.inputs {
                        (g.current, g.channels_first) = values[v].clone();
                        g.set_channels_first(layout && shapes[v].len() == 3);
                        inputs.push(g.current.clone());
                    }
                    if let LayerConfig::Add {} = layer.config() {
                        g.node(if inputs.len() == 2 { "Add" } else { "Sum" }, name, inputs, vec![]);
                    } else if let LayerConfig::Multiply {} = layer.config() {
                        // (N, 1, 1, C) broadcasts against (N, H, W, C), and (N, C, 1, 1) against (N, C, H, W).
                        let mut product = inputs[0].clone();
                        for (k, other) in inputs.iter().enumerate().skip(1) {
                            let step = if k + 1 == inputs.len() { name.to_string() } else { format!("{name}/{k}") };
                            g.node("Mul", &step, vec![product, other.clone()], vec![]);
                            product = g.current.clone();
                        }
                    } else {
                        let axis = if layout { 1 } else { -1 };
                        g.node("Concat", name, inputs, vec![int("axis", axis)]);
                    }
                }
                LayerConfig::GlobalAveragePooling2D {} | LayerConfig::GlobalMaxPooling2D {} => {
                    g.set_channels_first(true);
                    let op = if matches!(layer.config(), LayerConfig::GlobalMaxPooling2D {}) {
                        "GlobalMaxPool"
                    } else {
                        "GlobalAveragePool"
                    };
                    g.node(op, &format!("{name}/pool"), vec![g.current.clone()], vec![]);
                    g.node("Flatten", name, vec![g.current.clone()], vec![int("axis", 1)]);
                    g.channels_first = false;
                }
                LayerConfig::AveragePooling2D { pool_size, strides, padding } => {
                    let mut attributes = window_attributes(input, pool_size, strides.unwrap_or(pool_size), padding);
                    attributes.push(int("count_include_pad", 0));
                    g.set_channels_first(true);
                    g.node("AveragePool", name, vec![g.current.clone()], attributes);
                }
                LayerConfig::Cropping2D { cropping: Padding2D([[t, b], [l, r]]) } => {
                    let (h, w) = (input[0] as i64, input[1] as i64);
                    let (t, b, l, r) = (t as i64, b as i64, l as i64, r as i64);
                    let starts = g.int64s(&format!("{name}/starts"), &[t, l]);
                    let ends = g.int64s(&format!("{name}/ends"), &[h - b, w - r]);
                    let axes = g.int64s(&format!("{name}/axes"), if g.channels_first { &[2, 3] } else { &[1, 2] });
                    g.node("Slice", name, vec![g.current.clone(), starts, ends, axes], vec![]);
                }
                LayerConfig::UpSampling2D { size, interpolation } => {
                    let attributes = match interpolation {
                        Interpolation::Nearest => vec![
                            string("mode", "nearest"),
                            string("coordinate_transformation_mode", "asymmetric"),
                            string("nearest_mode", "floor"),
                        ],
                        Interpolation::Bilinear => {
                            vec![string("mode", "linear"), string("coordinate_transformation_mode", "half_pixel")]
                        }
                    };
                    resize(&mut g, name, (input[0] * size.0, input[1] * size.1), attributes);
                }
                LayerConfig::PReLU { .. } => {
                    // alpha in Keras' shape broadcasts against (N, ..., C).
                    g.set_channels_first(false);
                    let alpha = weight("alpha").expect("PReLU has alpha");
                    let slope = g.constant(&alpha.name, &alpha.shape, params[alpha.range.clone()].to_vec());
                    g.node("PRelu", name, vec![g.current.clone(), slope], vec![]);
                }
                LayerConfig::ZeroPadding2D { padding: Padding2D([[t, b], [l, r]]) } => {
                    let (t, b, l, r) = (t as i64, b as i64, l as i64, r as i64);
                    let pads = if g.channels_first { [0, 0, t, l, 0, 0, b, r] } else { [0, t, l, 0, 0, b, r, 0] };
                    let pads = g.int64s(&format!("{name}/pads"), &pads);
                    g.node("Pad", name, vec![g.current.clone(), pads], vec![]);
                }
                LayerConfig::LeakyReLU { negative_slope } => {
                    g.node("LeakyRelu", name, vec![g.current.clone()], vec![float("alpha", negative_slope)]);
                }
                LayerConfig::ELU { alpha } => g.node("Elu", name, vec![g.current.clone()], vec![float("alpha", alpha)]),
                LayerConfig::ReLU { max_value, negative_slope, threshold } => {
                    // x from the threshold up, negative_slope * (x - threshold) below, at most max_value.
                    let x = g.current.clone();
                    if threshold == 0.0 && negative_slope == 0.0 {
                        g.node("Relu", &format!("{name}/relu"), vec![x], vec![]);
                    } else {
                        let t = g.constant(&format!("{name}/threshold"), &[], vec![threshold]);
                        let s = g.constant(&format!("{name}/negative_slope"), &[], vec![negative_slope]);
                        g.node("Sub", &format!("{name}/shifted"), vec![x.clone(), t.clone()], vec![]);
                        let shifted = g.current.clone();
                        g.node("Mul", &format!("{name}/below"), vec![shifted, s], vec![]);
                        let below = g.current.clone();
                        g.node("GreaterOrEqual", &format!("{name}/above"), vec![x.clone(), t], vec![]);
                        let above = g.current.clone();
                        g.node("Where", &format!("{name}/where"), vec![above, x, below], vec![]);
                    }
                    if let Some(m) = max_value {
                        let m = g.constant(&format!("{name}/max_value"), &[], vec![m]);
                        g.node("Min", &format!("{name}/min"), vec![g.current.clone(), m], vec![]);
                    }
                }
                LayerConfig::Reshape { .. } => {
                    g.set_channels_first(false);
                    let mut dims = vec![0i64]; // 0: the batch size, copied from the input
                    dims.extend(shapes[values.len()].iter().map(|&d| d as i64));
                    let shape = g.int64s(&format!("{name}/shape"), &dims);
                    g.node("Reshape", name, vec![g.current.clone(), shape], vec![]);
                }
            }
            values.push((g.current.clone(), g.channels_first));
        }
        (g.current, g.channels_first) = values[self.network_output()].clone();
        g.set_channels_first(false);
        g.node("Identity", "output", vec![g.current.clone()], vec![]);
        let graph = GraphProto {
            node: g.nodes,
            name: self.name().to_string(),
            initializer: g.initializers,
            input: vec![value_info("input", &shapes[0])],
            output: vec![value_info("output", self.output_shape()?)],
        };
        Ok(ModelProto {
            ir_version: IR_VERSION,
            producer_name: "keel".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: "input: (N, H, W, C) float32 scaled as in training; output: as keel's predict".into(),
            graph: Some(graph),
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
            metadata_props: self
                .data_info()
                .map(|info| {
                    vec![StringStringEntryProto {
                        key: "class_names".into(),
                        value: serde_json::to_string(&info.class_names).expect("strings serialise"),
                    }]
                })
                .unwrap_or_default(),
        })
    }
}

/// The graph being written: its nodes, constants, the name of the latest
/// output, whether that output is channels-first, and the transposes made so
/// far (a value read in both layouts is transposed once).
struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    current: String,
    channels_first: bool,
    transposed: HashMap<String, String>,
}

impl Graph {
    /// Appends `op` reading `inputs`; its output becomes the current tensor.
    fn node(&mut self, op: &str, name: &str, inputs: Vec<String>, attribute: Vec<AttributeProto>) {
        let output = if name == "output" { name.to_string() } else { format!("{name}/{}", op.to_lowercase()) };
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![output.clone()],
            name: output.clone(),
            op_type: op.into(),
            attribute,
        });
        self.current = output;
    }

    /// A float constant; returns its name.
    fn constant(&mut self, name: &str, shape: &[usize], values: Vec<f32>) -> String {
        self.initializers.push(TensorProto {
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: DATA_TYPE_FLOAT,
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name.into()
    }

    /// An int64 constant (shapes, pads, slice bounds); returns its name.
    fn int64s(&mut self, name: &str, values: &[i64]) -> String {
        self.initializers.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: DATA_TYPE_INT64,
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name.into()
    }

    /// Transposes the current 4-D tensor between (N,H,W,C) and (N,C,H,W) when
    /// it is not already in the wanted layout.
    fn set_channels_first(&mut self, wanted: bool) {
        if self.channels_first == wanted {
            return;
        }
        let perm = if wanted { vec![0, 3, 1, 2] } else { vec![0, 2, 3, 1] };
        let name = format!("{}/{}", self.current, if wanted { "to_nchw" } else { "to_nhwc" });
        if let Some(done) = self.transposed.get(&name) {
            self.current = done.clone();
        } else {
            let source = self.current.clone();
            self.node("Transpose", &name, vec![source], vec![ints("perm", &perm)]);
            self.transposed.insert(name, self.current.clone());
        }
        self.channels_first = wanted;
    }

    fn activation(&mut self, activation: Activation, layer: &str) {
        let (op, attributes) = match activation {
            Activation::Linear => return,
            Activation::Relu => ("Relu", vec![]),
            Activation::Sigmoid => ("Sigmoid", vec![]),
            Activation::Tanh => ("Tanh", vec![]),
            Activation::Softmax => {
                // Softmax is over keel's last axis, the channels.
                self.set_channels_first(false);
                ("Softmax", vec![int("axis", -1)])
            }
            Activation::Relu6 => {
                let (lo, hi) = (
                    self.constant(&format!("{layer}/min"), &[], vec![0.0]),
                    self.constant(&format!("{layer}/max"), &[], vec![6.0]),
                );
                self.node("Clip", layer, vec![self.current.clone(), lo, hi], vec![]);
                return;
            }
            Activation::LeakyRelu => ("LeakyRelu", vec![float("alpha", crate::kernels::activation::LEAKY_SLOPE)]),
            Activation::Elu => ("Elu", vec![float("alpha", 1.0)]),
            Activation::Softplus => ("Softplus", vec![]),
            Activation::HardSigmoid => ("HardSigmoid", vec![float("alpha", 1.0 / 6.0), float("beta", 0.5)]),
            // x * sigmoid(x), x * hard_sigmoid(x)
            Activation::Silu | Activation::HardSilu => {
                let x = self.current.clone();
                let gate = format!("{layer}/gate");
                if activation == Activation::Silu {
                    self.node("Sigmoid", &gate, vec![x.clone()], vec![]);
                } else {
                    let attributes = vec![float("alpha", 1.0 / 6.0), float("beta", 0.5)];
                    self.node("HardSigmoid", &gate, vec![x.clone()], attributes);
                }
                let gate = self.current.clone();
                self.node("Mul", layer, vec![x, gate], vec![]);
                return;
            }
            // 0.5 x (1 + erf(x / sqrt 2))
            Activation::Gelu => {
                let x = self.current.clone();
                let scale = self.constant(&format!("{layer}/inv_sqrt2"), &[], vec![std::f32::consts::FRAC_1_SQRT_2]);
                let (one, half) = (
                    self.constant(&format!("{layer}/one"), &[], vec![1.0]),
                    self.constant(&format!("{layer}/half"), &[], vec![0.5]),
                );
                self.node("Mul", &format!("{layer}/scaled"), vec![x.clone(), scale], vec![]);
                self.node("Erf", &format!("{layer}/erf"), vec![self.current.clone()], vec![]);
                self.node("Add", &format!("{layer}/cdf2"), vec![self.current.clone(), one], vec![]);
                self.node("Mul", &format!("{layer}/x_cdf2"), vec![x, self.current.clone()], vec![]);
                self.node("Mul", layer, vec![self.current.clone(), half], vec![]);
                return;
            }
        };
        self.node(op, layer, vec![self.current.clone()], attributes);
    }
}

/// A depthwise convolution: Keras' kernel (KH, KW, C, M) as an ONNX Conv
/// with one group per input channel, kernel (C*M, 1, KH, KW).
fn depthwise(
    g: &mut Graph,
    name: &str,
    input: &[usize],
    (shape, hwcm): (&[usize], &[f32]),
    bias: Option<(String, Vec<usize>, Vec<f32>)>,
    (strides, padding, dilation_rate): (Pair, Padding, Pair),
) {
    let &[kh, kw, c, m] = shape else { unreachable!("depthwise kernels are 4-D") };
    let mut oihw = vec![0.0f32; hwcm.len()];
    for (i, &v) in hwcm.iter().enumerate() {
        let (o, tap) = (i % (c * m), i / (c * m));
        oihw[o * kh * kw + tap] = v;
    }
    g.set_channels_first(true);
    let mut inputs = vec![g.current.clone(), g.constant(&format!("{name}/kernel"), &[c * m, 1, kh, kw], oihw)];
    if let Some((bias_name, bias_shape, values)) = bias {
        inputs.push(g.constant(&bias_name, &bias_shape, values));
    }
    let effective = Pair((kh - 1) * dilation_rate.0 + 1, (kw - 1) * dilation_rate.1 + 1);
    let mut attributes = window_attributes(input, effective, strides, padding);
    attributes[0] = ints("kernel_shape", &[kh as i64, kw as i64]);
    attributes.push(ints("dilations", &[dilation_rate.0 as i64, dilation_rate.1 as i64]));
    attributes.push(int("group", c as i64));
    g.node("Conv", name, inputs, attributes);
}

/// An ONNX Resize of the current (N, C, H, W) value to `height` x `width`.
fn resize(g: &mut Graph, name: &str, (height, width): (usize, usize), attributes: Vec<AttributeProto>) {
    g.set_channels_first(true);
    // sizes = (N, C) of the input, then (height, width).
    let input = g.current.clone();
    g.node("Shape", &format!("{name}/shape"), vec![input.clone()], vec![]);
    let (start, end) = (g.int64s(&format!("{name}/start"), &[0]), g.int64s(&format!("{name}/end"), &[2]));
    g.node("Slice", &format!("{name}/batch_channels"), vec![g.current.clone(), start, end], vec![]);
    let hw = g.int64s(&format!("{name}/height_width"), &[height as i64, width as i64]);
    g.node("Concat", &format!("{name}/sizes"), vec![g.current.clone(), hw], vec![int("axis", 0)]);
    let sizes = g.current.clone();
    g.node("Resize", name, vec![input, String::new(), String::new(), sizes], attributes);
}

/// kernel_shape, strides and pads (top, left, bottom, right; TensorFlow's
/// "same" puts the odd one after) of a window over an (H, W, C) input.
fn window_attributes(input: &[usize], kernel: Pair, strides: Pair, padding: Padding) -> Vec<AttributeProto> {
    let pads = |size: usize, k: usize, s: usize| -> (usize, usize) {
        let (out, before) = padding.resolve(size, k, s).expect("built models have windows that fit");
        let total = ((out - 1) * s + k).saturating_sub(size);
        (before, total - before)
    };
    let (top, bottom) = pads(input[0], kernel.0, strides.0);
    let (left, right) = pads(input[1], kernel.1, strides.1);
    vec![
        ints("kernel_shape", &[kernel.0 as i64, kernel.1 as i64]),
        ints("strides", &[strides.0 as i64, strides.1 as i64]),
        ints("pads", &[top as i64, left as i64, bottom as i64, right as i64]),
    ]
}

fn float(name: &str, f: f32) -> AttributeProto {
    AttributeProto { name: name.into(), f, r#type: ATTRIBUTE_FLOAT, ..AttributeProto::default() }
}

fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: name.into(), i, r#type: ATTRIBUTE_INT, ..AttributeProto::default() }
}

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), ints: values.to_vec(), r#type: ATTRIBUTE_INTS, ..AttributeProto::default() }
}

fn string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        s: value.as_bytes().to_vec(),
        r#type: ATTRIBUTE_STRING,
        ..AttributeProto::default()
    }
}

/// A float tensor of shape (N, sample...) with N free.
fn value_info(name: &str, sample: &[usize]) -> ValueInfoProto {
    let mut dim = vec![Dimension { value: Some(DimensionValue::DimParam("N".into())) }];
    dim.extend(sample.iter().map(|&d| Dimension { value: Some(DimensionValue::DimValue(d as i64)) }));
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto { elem_type: DATA_TYPE_FLOAT, shape: Some(TensorShapeProto { dim }) }),
        }),
    }
}
