"""Writes MobileNetV2 model files with Keras applications' architecture
(keras.applications.MobileNetV2: layer names, _make_divisible, correct_pad,
BatchNormalization momentum 0.999 / epsilon 1e-3, ReLU(6.)).

    python3 examples/models/mobilenet_v2.py   # writes the two files below

mobilenet_v2.toml: 224x224x3, alpha 1.0, 1000 classes (3,538,984 parameters, as Keras);
mobilenet_v2_cifar.toml: 32x32x3, alpha 0.35, 10 classes, to train on CIFAR-10 here.
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def make_divisible(v, divisor=8):
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def layer(class_name, name, inputs, **args):
    lines = ["", "[[layers]]", f'class_name = "{class_name}"', f'name = "{name}"', f'inputs = ["{inputs}"]']
    for key, value in args.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, str) and not value.startswith("["):
            value = f'"{value}"'
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def mobilenet_v2(name, size, alpha, classes, comment):
    out = [comment, f'name = "{name}"', f"input_shape = [{size}, {size}, 3]", "seed = 42", ""]
    bn = dict(momentum=0.999, epsilon=1e-3)
    first = make_divisible(32 * alpha)
    out.append(layer("Conv2D", "Conv1", "input_layer", filters=first, kernel_size=3, strides=2, padding="same", use_bias=False))
    out.append(layer("BatchNormalization", "bn_Conv1", "Conv1", **bn))
    out.append(layer("ReLU", "Conv1_relu", "bn_Conv1", max_value=6.0))
    x, channels, side = "Conv1_relu", first, (size + 1) // 2
    blocks = [(16, 1, 1), (24, 2, 6), (24, 1, 6), (32, 2, 6), (32, 1, 6), (32, 1, 6), (64, 2, 6), (64, 1, 6),
              (64, 1, 6), (64, 1, 6), (96, 1, 6), (96, 1, 6), (96, 1, 6), (160, 2, 6), (160, 1, 6), (160, 1, 6),
              (320, 1, 6)]
    for block_id, (filters, stride, expansion) in enumerate(blocks):
        pointwise = make_divisible(int(filters * alpha))
        inputs, y = x, x
        prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
        if block_id:
            out.append(layer("Conv2D", prefix + "expand", y, filters=expansion * channels, kernel_size=1, padding="same", use_bias=False))
            out.append(layer("BatchNormalization", prefix + "expand_BN", prefix + "expand", **bn))
            out.append(layer("ReLU", prefix + "expand_relu", prefix + "expand_BN", max_value=6.0))
            y = prefix + "expand_relu"
        if stride == 2:
            adjust = 1 - side % 2  # correct_pad: one less before on even sizes
            out.append(layer("ZeroPadding2D", prefix + "pad", y, padding=f"[[{1 - adjust}, 1], [{1 - adjust}, 1]]"))
            y = prefix + "pad"
            side = (side + 1) // 2
        out.append(layer("DepthwiseConv2D", prefix + "depthwise", y, kernel_size=3, strides=stride,
                         padding="same" if stride == 1 else "valid", use_bias=False))
        out.append(layer("BatchNormalization", prefix + "depthwise_BN", prefix + "depthwise", **bn))
        out.append(layer("ReLU", prefix + "depthwise_relu", prefix + "depthwise_BN", max_value=6.0))
        out.append(layer("Conv2D", prefix + "project", prefix + "depthwise_relu", filters=pointwise, kernel_size=1, padding="same", use_bias=False))
        out.append(layer("BatchNormalization", prefix + "project_BN", prefix + "project", **bn))
        x = prefix + "project_BN"
        if channels == pointwise and stride == 1:
            out.append("\n[[layers]]\nclass_name = \"Add\"\n" + f'name = "{prefix}add"\ninputs = ["{inputs}", "{x}"]\n')
            x = prefix + "add"
        channels = pointwise
    last = make_divisible(1280 * alpha) if alpha > 1.0 else 1280
    out.append(layer("Conv2D", "Conv_1", x, filters=last, kernel_size=1, use_bias=False))
    out.append(layer("BatchNormalization", "Conv_1_bn", "Conv_1", **bn))
    out.append(layer("ReLU", "out_relu", "Conv_1_bn", max_value=6.0))
    out.append(layer("GlobalAveragePooling2D", "global_average_pooling2d", "out_relu"))
    out.append(layer("Dense", "predictions", "global_average_pooling2d", units=classes, activation="softmax"))
    out.append('\n[compile]\noptimizer = { class_name = "Adam", learning_rate = 0.001 }\n'
               'loss = "categorical_crossentropy"\nmetrics = ["accuracy"]\n')
    return "\n".join(out)


if __name__ == "__main__":
    files = {
        "mobilenet_v2.toml": mobilenet_v2(
            "mobilenetv2_1.00_224", 224, 1.0, 1000,
            "# Keras applications' MobileNetV2 (alpha 1.0, 224x224x3, 1000 classes): 3,538,984 parameters,\n"
            "# 34,112 of them non-trainable, as Keras. Written by examples/models/mobilenet_v2.py.\n"
            "#   keel summary --model examples/models/mobilenet_v2.toml"),
        "mobilenet_v2_cifar.toml": mobilenet_v2(
            "mobilenetv2_0.35_32", 32, 0.35, 10,
            "# MobileNetV2 (alpha 0.35) for 32x32x3 inputs and 10 classes, to train on CIFAR-10.\n"
            "# Written by examples/models/mobilenet_v2.py.\n"
            "#   keel train --model examples/models/mobilenet_v2_cifar.toml --dataset cifar10")
        + '\n[data]\ndataset = "cifar10"\n\n[fit]\nepochs = 5\nbatch_size = 128\nvalidation_split = 0.1\n',
    }
    for name, text in files.items():
        with open(os.path.join(HERE, name), "w") as f:
            f.write(text)
