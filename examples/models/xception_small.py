"""Writes xception_small.toml: the small Xception-style network of Keras'
"Image classification from scratch" example (make_model((180, 180, 3), 2):
2,731,065 parameters, 8,288 of them non-trainable), with Keras' layer names,
compiled as there: Adam(3e-4), BinaryCrossentropy(from_logits=True).

    python3 examples/models/xception_small.py
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))


class Names:
    """Keras' automatic names: the base name, then base_1, base_2, ..."""

    def __init__(self):
        self.counts = {}

    def __call__(self, base):
        k = self.counts.get(base, 0)
        self.counts[base] = k + 1
        return base if k == 0 else f"{base}_{k}"


def layer(out, names, class_name, base, inputs, **args):
    name = names(base)
    lines = ["", "[[layers]]", f'class_name = "{class_name}"', f'name = "{name}"',
             "inputs = [" + ", ".join(f'"{i}"' for i in inputs) + "]"]
    for key, value in args.items():
        lines.append(f"{key} = " + (f'"{value}"' if isinstance(value, str) else str(value)))
    out.append("\n".join(lines) + "\n")
    return name


def xception_small():
    out = ['# The small Xception-style network of Keras\' "Image classification from scratch" example',
           "# (180x180x3, 2 classes, one logit): 2,731,065 parameters, 8,288 of them non-trainable, as",
           "# Keras. Written by examples/models/xception_small.py.",
           "#   keel train --model examples/models/xception_small.toml --dataset path/to/PetImages",
           'name = "xception_small"', "input_shape = [180, 180, 3]", "seed = 42", ""]
    n = Names()
    x = layer(out, n, "Rescaling", "rescaling", ["input_layer"], scale=1.0 / 255)
    x = layer(out, n, "Conv2D", "conv2d", [x], filters=128, kernel_size=3, strides=2, padding="same")
    x = layer(out, n, "BatchNormalization", "batch_normalization", [x])
    x = layer(out, n, "Activation", "activation", [x], activation="relu")
    previous = x
    for size in [256, 512, 728]:
        x = layer(out, n, "Activation", "activation", [x], activation="relu")
        x = layer(out, n, "SeparableConv2D", "separable_conv2d", [x], filters=size, kernel_size=3, padding="same")
        x = layer(out, n, "BatchNormalization", "batch_normalization", [x])
        x = layer(out, n, "Activation", "activation", [x], activation="relu")
        x = layer(out, n, "SeparableConv2D", "separable_conv2d", [x], filters=size, kernel_size=3, padding="same")
        x = layer(out, n, "BatchNormalization", "batch_normalization", [x])
        x = layer(out, n, "MaxPooling2D", "max_pooling2d", [x], pool_size=3, strides=2, padding="same")
        residual = layer(out, n, "Conv2D", "conv2d", [previous], filters=size, kernel_size=1, strides=2, padding="same")
        x = layer(out, n, "Add", "add", [x, residual])
        previous = x
    x = layer(out, n, "SeparableConv2D", "separable_conv2d", [x], filters=1024, kernel_size=3, padding="same")
    x = layer(out, n, "BatchNormalization", "batch_normalization", [x])
    x = layer(out, n, "Activation", "activation", [x], activation="relu")
    x = layer(out, n, "GlobalAveragePooling2D", "global_average_pooling2d", [x])
    x = layer(out, n, "Dropout", "dropout", [x], rate=0.25)
    layer(out, n, "Dense", "dense", [x], units=1)
    out.append('\n[compile]\noptimizer = { class_name = "Adam", learning_rate = 0.0003 }\n'
               'loss = { class_name = "BinaryCrossentropy", from_logits = true }\nmetrics = ["accuracy"]\n')
    return "\n".join(out)


if __name__ == "__main__":
    with open(os.path.join(HERE, "xception_small.toml"), "w") as f:
        f.write(xception_small())
