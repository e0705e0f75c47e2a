"""Training steps at ImageNet size, side by side: keel and Keras on the same
networks (random weights, random images), a small batch, the same number of
threads: seconds per step (forward, backward and an Adam update), median of
several steps after warm-up steps (Keras traces its graph in the first).

    cargo build --release && python bench/large_training.py [--models resnet50,mobilenet_v2,xception_small]
        [--batch 8] [--threads 2] [--runs 5]
"""
import argparse, json, os, statistics, subprocess, time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
KEEL = os.environ.get("KEEL_BIN", os.path.join(ROOT, "target", "release", "keel"))


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
    for _ in range(2):
        model.train_on_batch(x, y)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet50,mobilenet_v2,xception_small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"{'model':16} {'batch':>5} {'keel (s/step)':>14} {'Keras 3 / TF (s/step)':>22} {'keel vs Keras':>14}")
    for name in args.models.split(","):
        ours = keel(name, args.batch, args.threads, args.runs)
        try:
            theirs = keras_step(name, args.batch, args.threads, args.runs)
        except ImportError:
            theirs = float("nan")
        print(f"{name:16} {args.batch:>5} {ours:>14.3f} {theirs:>22.3f} {theirs / ours:>13.2f}x")


if __name__ == "__main__":
    main()
