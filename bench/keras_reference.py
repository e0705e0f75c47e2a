"""The reference workflow in Keras, on the same IDX files keel reads.

Prints one JSON line: s/epoch (median), fit/evaluate/predict timings, peak RSS
and test accuracy. Usage: python bench/keras_reference.py DATA_DIR [--epochs 5] [--threads N] [--model reference|convnet]
"""
import argparse, gzip, json, os, resource, statistics, time

import numpy as np


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndims = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndims).reshape(dims)


def find(data_dir, stem):
    for d in (os.path.join(data_dir, "mnist"), data_dir):
        for name in (stem, stem + ".gz"):
            if os.path.exists(os.path.join(d, name)):
                return os.path.join(d, name)
    raise SystemExit(f"{stem} not found under {data_dir}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data_dir")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--model", choices=["reference", "convnet"], default="reference")
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import keras
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    x_train = read_idx(find(args.data_dir, "train-images-idx3-ubyte")) / 255.0
    y_train = read_idx(find(args.data_dir, "train-labels-idx1-ubyte"))
    x_test = read_idx(find(args.data_dir, "t10k-images-idx3-ubyte")) / 255.0
    y_test = read_idx(find(args.data_dir, "t10k-labels-idx1-ubyte"))
    y_train, y_test = keras.utils.to_categorical(y_train), keras.utils.to_categorical(y_test)
    layers = [keras.Input((28, 28, 1)), keras.layers.Conv2D(32, (3, 3), activation="relu"), keras.layers.MaxPooling2D((2, 2))]
    if args.model == "convnet":  # Keras' "Simple MNIST convnet" example
        layers += [keras.layers.Conv2D(64, (3, 3), activation="relu"), keras.layers.MaxPooling2D((2, 2))]
    layers += [keras.layers.Flatten()]
    if args.model == "convnet":
        layers += [keras.layers.Dropout(0.5)]
    model = keras.Sequential(layers + [keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    times = []
    t0 = time.perf_counter()
    model.fit(x_train.reshape(-1, 28, 28, 1), y_train, epochs=args.epochs, batch_size=128,
              validation_split=0.1, verbose=0, callbacks=[EpochTimer()])
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, acc = model.evaluate(x_test.reshape(-1, 28, 28, 1), y_test, verbose=0)
    evaluate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.predict(x_test.reshape(-1, 28, 28, 1), batch_size=1000, verbose=0)
    predict_s = time.perf_counter() - t0
    print(json.dumps({
        "system": f"keras {keras.__version__} / tensorflow {tf.__version__}", "model": args.model,
        "s_per_epoch": statistics.median(times), "fit_s": fit_s, "evaluate_s": evaluate_s,
        "predict_img_per_s": 10000 / predict_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "test_accuracy": acc,
    }))


if __name__ == "__main__":
    main()
