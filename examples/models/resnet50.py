"""Writes resnet50.toml: Keras applications' ResNet50 (keras.applications.ResNet50,
include_top, 224x224x3, 1000 classes: 25,636,712 parameters, 53,120 of them
non-trainable), with Keras' layer names.

    python3 examples/models/resnet50.py
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
EPSILON = 1.001e-5  # Keras' ResNet BatchNormalization epsilon


def layer(class_name, name, inputs, **args):
    lines = ["", "[[layers]]", f'class_name = "{class_name}"', f'name = "{name}"',
             "inputs = [" + ", ".join(f'"{i}"' for i in inputs) + "]"]
    for key, value in args.items():
        lines.append(f"{key} = " + (f'"{value}"' if isinstance(value, str) and not value.startswith("[") else str(value)))
    return "\n".join(lines) + "\n"


def conv_bn(out, name, x, filters, kernel, strides=1, padding="valid", relu=True):
    out.append(layer("Conv2D", name + "_conv", [x], filters=filters, kernel_size=kernel, strides=strides, padding=padding))
    out.append(layer("BatchNormalization", name + "_bn", [name + "_conv"], epsilon=EPSILON))
    if relu:
        out.append(layer("Activation", name + "_relu", [name + "_bn"], activation="relu"))
        return name + "_relu"
    return name + "_bn"


def block1(out, x, filters, stride, conv_shortcut, name):
    shortcut = conv_bn(out, name + "_0", x, 4 * filters, 1, stride, relu=False) if conv_shortcut else x
    y = conv_bn(out, name + "_1", x, filters, 1, stride)
    y = conv_bn(out, name + "_2", y, filters, 3, padding="same")
    y = conv_bn(out, name + "_3", y, 4 * filters, 1, relu=False)
    out.append(layer("Add", name + "_add", [shortcut, y]))
    out.append(layer("Activation", name + "_out", [name + "_add"], activation="relu"))
    return name + "_out"


def resnet50():
    out = ["# Keras applications' ResNet50 (224x224x3, 1000 classes): 25,636,712 parameters, 53,120 of them",
           "# non-trainable, as Keras. Written by examples/models/resnet50.py.",
           "#   keel summary --model examples/models/resnet50.toml",
           'name = "resnet50"', "input_shape = [224, 224, 3]", "seed = 42", ""]
    out.append(layer("ZeroPadding2D", "conv1_pad", ["input_layer"], padding="[[3, 3], [3, 3]]"))
    x = conv_bn(out, "conv1", "conv1_pad", 64, 7, 2)
    out.append(layer("ZeroPadding2D", "pool1_pad", [x], padding="[[1, 1], [1, 1]]"))
    out.append(layer("MaxPooling2D", "pool1_pool", ["pool1_pad"], pool_size=3, strides=2))
    x = "pool1_pool"
    for stage, (filters, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], start=2):
        for b in range(1, blocks + 1):
            x = block1(out, x, filters, stride if b == 1 else 1, b == 1, f"conv{stage}_block{b}")
    out.append(layer("GlobalAveragePooling2D", "avg_pool", [x]))
    out.append(layer("Dense", "predictions", ["avg_pool"], units=1000, activation="softmax"))
    out.append('\n[compile]\noptimizer = { class_name = "Adam", learning_rate = 0.001 }\n'
               'loss = "categorical_crossentropy"\nmetrics = ["accuracy"]\n')
    return "\n".join(out)


if __name__ == "__main__":
    with open(os.path.join(HERE, "resnet50.toml"), "w") as f:
        f.write(resnet50())
