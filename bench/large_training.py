"""Training steps at ImageNet size, side by side: keel, Keras and PyTorch on the
same networks (random weights, random images), a small batch, the same number
of threads: seconds per step (forward, backward and an Adam update), median of
several steps after warm-up steps (Keras traces its graph in the first).
PyTorch's networks are written here (or in training.py) with Keras' layers:
trainable parameter counts asserted equal to Keras'.

    cargo build --release && python bench/large_training.py [--models resnet50,mobilenet_v2,xception_small]
        [--batch 8] [--threads 2] [--runs 5]
"""
import argparse, json, multiprocessing, os, subprocess

import numpy as np

from compare import KEEL  # bench/ is on the path
from inference import timed
from training import pytorch_mobilenet_v2

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")


def keel(name, batch, threads, runs):
    """`keel bench --train` on the model file: its compiled loss, or Adam and categorical cross-entropy."""
    model = os.path.join(ROOT, "examples", "models", f"{name}.toml")
    out = subprocess.run([KEEL, "bench", "--model", model, "--batch", str(batch), "--train", "--runs", str(runs),
                          "--threads", str(threads), "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["rows"][0]["train_s_per_step"]


def xception_small(keras, layers):
    """Keras' "Image classification from scratch" make_model((180, 180, 3), 2), as
    examples/models/xception_small.py writes it for keel."""
    inputs = keras.Input(shape=(180, 180, 3))
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.Conv2D(128, 3, strides=2, padding="same")(x)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    previous = x
    for size in [256, 512, 728]:
        x = layers.Activation("relu")(x)
        x = layers.BatchNormalization()(layers.SeparableConv2D(size, 3, padding="same")(x))
        x = layers.Activation("relu")(x)
        x = layers.BatchNormalization()(layers.SeparableConv2D(size, 3, padding="same")(x))
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        x = layers.add([x, layers.Conv2D(size, 1, strides=2, padding="same")(previous)])
        previous = x
    x = layers.BatchNormalization()(layers.SeparableConv2D(1024, 3, padding="same")(x))
    x = layers.GlobalAveragePooling2D()(layers.Activation("relu")(x))
    outputs = layers.Dense(1)(layers.Dropout(0.25)(x))
    return keras.Model(inputs, outputs)


def keras_step(name, batch, threads, runs):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    from keras import layers
    rng = np.random.default_rng(0)
    if name == "xception_small":
        model = xception_small(keras, layers)
        model.compile(keras.optimizers.Adam(3e-4), keras.losses.BinaryCrossentropy(from_logits=True))
        x = rng.random((batch, 180, 180, 3), dtype=np.float32) * 255
        y = (np.arange(batch) % 2).astype(np.float32).reshape(batch, 1)
    else:
        make = {"resnet50": keras.applications.ResNet50, "mobilenet_v2": keras.applications.MobileNetV2}[name]
        model = make(weights=None)
        model.compile(keras.optimizers.Adam(), "categorical_crossentropy")
        x = rng.random((batch, 224, 224, 3), dtype=np.float32)
        y = np.eye(1000, dtype=np.float32)[np.arange(batch) % 1000]
    return timed(lambda: model.train_on_batch(x, y), runs, warmup=2)


def pytorch_resnet50(torch, nn):
    """Keras applications' ResNet50 (v1: the stride in each stack's first 1x1 convolution,
    convolutions with biases, BatchNormalization epsilon 1.001e-5), 1000 classes."""
    def conv_bn(cin, cout, k, s=1, relu=True):
        layers = [nn.Conv2d(cin, cout, k, s, padding=k // 2), nn.BatchNorm2d(cout, eps=1.001e-5)]
        return nn.Sequential(*layers, *([nn.ReLU()] if relu else []))

    class Block(nn.Module):
        def __init__(self, cin, filters, stride, shortcut):
            super().__init__()
            self.body = nn.Sequential(conv_bn(cin, filters, 1, stride), conv_bn(filters, filters, 3),
                                      conv_bn(filters, 4 * filters, 1, relu=False))
            self.short = conv_bn(cin, 4 * filters, 1, stride, relu=False) if shortcut else None

        def forward(self, x):
            return torch.relu(self.body(x) + (self.short(x) if self.short is not None else x))

    layers, cin = [conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, padding=1)], 64
    for filters, blocks, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
        for b in range(blocks):
            layers.append(Block(cin, filters, stride if b == 0 else 1, b == 0))
            cin = 4 * filters
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000))


def pytorch_imagenet(torch, nn, name):
    """Keras applications' ResNet50 or MobileNetV2 (alpha 1.0) for PyTorch, 1000 classes, and
    Keras' count of its trainable parameters."""
    if name == "resnet50":
        return pytorch_resnet50(torch, nn), 25_583_592

    def bn(c, momentum=0.99):
        return nn.BatchNorm2d(c, eps=1e-3, momentum=1 - momentum)
    return pytorch_mobilenet_v2(nn, bn, nn.Linear, alpha=1.0, classes=1000), 3_504_872


def pytorch_xception_small(torch, nn):
    """xception_small() for PyTorch: SeparableConv2D as a depthwise convolution without a bias
    and a pointwise one with it; one logit."""
    def separable(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False), nn.Conv2d(cin, cout, 1))

    def bn(c):
        return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)

    class Block(nn.Module):
        def __init__(self, cin, size):
            super().__init__()
            self.body = nn.Sequential(nn.ReLU(), separable(cin, size), bn(size), nn.ReLU(), separable(size, size),
                                      bn(size), nn.MaxPool2d(3, 2, padding=1))
            self.residual = nn.Conv2d(cin, size, 1, 2)

        def forward(self, x):
            return self.body(x) + self.residual(x)

    layers, cin = [nn.Conv2d(3, 128, 3, 2, padding=1), bn(128), nn.ReLU()], 128
    for size in [256, 512, 728]:
        layers.append(Block(cin, size))
        cin = size
    layers += [separable(728, 1024), bn(1024), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.25),
               nn.Linear(1024, 1)]
    return nn.Sequential(*layers)


def pytorch_step(name, batch, threads, runs):
    import torch
    from torch import nn
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    if name == "xception_small":
        model, trainable = pytorch_xception_small(torch, nn), 2_722_777
        x = torch.from_numpy(rng.random((batch, 3, 180, 180), dtype=np.float32))  # Rescaling's [0, 1]
        y = torch.from_numpy((np.arange(batch) % 2).astype(np.float32).reshape(batch, 1))
        loss_fn = nn.BCEWithLogitsLoss()
    else:
        model, trainable = pytorch_imagenet(torch, nn, name)
        x = torch.from_numpy(rng.random((batch, 3, 224, 224), dtype=np.float32))
        y = torch.from_numpy(np.arange(batch) % 1000)
        loss_fn = nn.CrossEntropyLoss()
    count = sum(p.numel() for p in model.parameters())
    assert count == trainable, f"{name}: {count} trainable parameters, Keras' {trainable}"
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return timed(step, runs, warmup=2)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet50,mobilenet_v2,xception_small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"{'model':16} {'batch':>5} {'keel (s/step)':>14} {'Keras 3 / TF':>13} {'PyTorch':>9} "
          f"{'keel vs fastest peer':>21}")
    for name in args.models.split(","):
        ours = keel(name, args.batch, args.threads, args.runs)
        peers = []
        for peer in (keras_step, pytorch_step):
            # A process each: TensorFlow and PyTorch do not load into one process.
            try:
                with multiprocessing.get_context("spawn").Pool(1) as pool:
                    peers.append(pool.apply(peer, (name, args.batch, args.threads, args.runs)))
            except ImportError:
                peers.append(float("nan"))
        fastest = min((p for p in peers if p == p), default=float("nan"))
        print(f"{name:16} {args.batch:>5} {ours:>14.3f} {peers[0]:>13.3f} {peers[1]:>9.3f} {fastest / ours:>20.2f}x")


if __name__ == "__main__":
    main()
