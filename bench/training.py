"""Training speed side by side: keel, Keras and PyTorch train the deeper
networks of the speed targets on the same data, in alternating rounds, and
one table gives s/epoch, peak RSS, test accuracy and the ratios.

Rows (--rows, default all):
  mnist_convnet  Keras' "Simple MNIST convnet", batch 128, MNIST (54,000 training images)
  cifar10_cnn    Keras' classic CIFAR-10 CNN (RMSprop 1e-4), batch 32
  cifar10_cnn128 the same at batch 128
  resnet20       ResNet-20 v1 (the Keras CIFAR-10 ResNet example's resnet_v1, depth 20), Adam, batch 128
  mobilenet_v2   MobileNetV2 (alpha 0.35, 32x32x3, 10 classes: Keras applications' architecture), Adam, batch 128

MNIST is read from DATA_DIR/mnist (the IDX files). No CIFAR-10 download is
needed: the script writes CIFAR-shaped binary files (10,000 training and
1,000 test images of 10 classes, a class-dependent colour plus noise) into
--cifar-dir when they are missing, and every system reads those same files.
With validation_split 0.1 each system trains on 90% of the training images.

Usage: python bench/training.py DATA_DIR [--rows resnet20,...] [--epochs 2] [--rounds 1] [--threads 2]
       [--systems keel,keras,pytorch] [--cifar-dir DIR]
       python bench/training.py --worker keras|pytorch ROW DATA_DIR EPOCHS THREADS   (one run; prints JSON)
"""
import argparse, json, os, resource, statistics, sys, tempfile, time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from compare import KEEL, keel_train, run as run_command  # noqa: E402
from keras_reference import find, read_idx  # noqa: E402

MODELS = os.path.join(HERE, "..", "examples", "models")

# row: (keel model file, dataset, batch size, title)
ROWS = {
    "mnist_convnet": ("mnist_convnet.toml", "mnist", 128, "Keras' MNIST convnet, batch 128"),
    "cifar10_cnn": ("cifar10_cnn.toml", "cifar10", 32, "Keras' CIFAR-10 CNN, batch 32"),
    "cifar10_cnn128": ("cifar10_cnn.toml", "cifar10", 128, "Keras' CIFAR-10 CNN, batch 128"),
    "resnet20": ("resnet20.toml", "cifar10", 128, "ResNet-20 v1, batch 128"),
    "mobilenet_v2": ("mobilenet_v2_cifar.toml", "cifar10", 128, "MobileNetV2 (alpha 0.35, 32x32), batch 128"),
}


def write_cifar(data_dir, train=10_000, test=1_000, seed=0):
    """CIFAR-10 binary batches: each record a label byte then 3x32x32 channel-major pixels."""
    folder = os.path.join(data_dir, "cifar10")
    marker = os.path.join(folder, "written-by-keel-bench-v2")
    if os.path.exists(marker):
        return
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 200, (10, 3, 1, 1))  # each class's colour, in every file

    def records(n):
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        pixels = np.clip(colours[labels] + rng.normal(0, 50, (n, 3, 32, 32)), 0, 255).astype(np.uint8)
        return np.concatenate([labels[:, None], pixels.reshape(n, -1)], axis=1).tobytes()

    per = train // 5
    for i in range(1, 6):
        with open(os.path.join(folder, f"data_batch_{i}.bin"), "wb") as f:
            f.write(records(per))
    with open(os.path.join(folder, "test_batch.bin"), "wb") as f:
        f.write(records(test))
    open(marker, "w").close()


def read_data(dataset, data_dir):
    """(x_train, y_train, x_test, y_test): NHWC floats in [0, 1] and class indices."""
    if dataset == "mnist":
        def images(stem):
            return (read_idx(find(data_dir, stem)) / 255.0).astype(np.float32)[..., None]

        def labels(stem):
            return read_idx(find(data_dir, stem)).astype(np.int64)
        return (images("train-images-idx3-ubyte"), labels("train-labels-idx1-ubyte"),
                images("t10k-images-idx3-ubyte"), labels("t10k-labels-idx1-ubyte"))

    def read(names):
        raw = b"".join(open(os.path.join(data_dir, "cifar10", n), "rb").read() for n in names)
        rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3073)
        x = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) / 255.0
        return x.astype(np.float32), rec[:, 0].astype(np.int64)
    x, y = read([f"data_batch_{i}.bin" for i in range(1, 6)])
    xt, yt = read(["test_batch.bin"])
    return x, y, xt, yt


def keras_model(row, keras, layers):
    if row == "mnist_convnet":
        return keras.Sequential([
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2),
            layers.Flatten(), layers.Dropout(0.5), layers.Dense(10, activation="softmax"),
        ]), "adam", 34_826
    if row.startswith("cifar10_cnn"):
        return keras.Sequential([
            keras.Input((32, 32, 3)),
            layers.Conv2D(32, 3, padding="same", activation="relu"), layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2), layers.Dropout(0.25),
            layers.Conv2D(64, 3, padding="same", activation="relu"), layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2), layers.Dropout(0.25),
            layers.Flatten(), layers.Dense(512, activation="relu"), layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ]), keras.optimizers.RMSprop(learning_rate=1e-4), 1_250_858
    if row == "mobilenet_v2":
        return keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None,
                                              classes=10), "adam", 423_018

    def conv_bn(x, filters, kernel=3, strides=1, activation="relu", bn=True):
        x = layers.Conv2D(filters, kernel, strides=strides, padding="same", kernel_initializer="he_normal",
                          kernel_regularizer=keras.regularizers.l2(1e-4))(x)
        if bn:
            x = layers.BatchNormalization()(x)
        return layers.Activation(activation)(x) if activation else x

    inputs = keras.Input((32, 32, 3))
    x = conv_bn(inputs, 16)
    filters = 16
    for stage in range(3):
        for block in range(3):
            strides = 2 if stage > 0 and block == 0 else 1
            z = conv_bn(x, filters, strides=strides)
            z = conv_bn(z, filters, activation=None)
            if strides == 2:
                x = conv_bn(x, filters, 1, strides, None, bn=False)
            x = layers.Activation("relu")(layers.add([x, z]))
        filters *= 2
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(10, activation="softmax", kernel_initializer="he_normal")(x)
    return keras.Model(inputs, outputs), "adam", 274_442


def keras_run(row, data_dir, epochs, threads):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import keras
    from keras import layers
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    keras.utils.set_random_seed(42)
    _, dataset, batch, _ = ROWS[row]
    x_train, y_train, x_test, y_test = read_data(dataset, data_dir)
    y_train, y_test = keras.utils.to_categorical(y_train, 10), keras.utils.to_categorical(y_test, 10)
    model, optimizer, params = keras_model(row, keras, layers)
    assert model.count_params() == params, model.count_params()
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    times = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    history = model.fit(x_train, y_train, epochs=epochs, batch_size=batch, validation_split=0.1, verbose=0,
                        callbacks=[EpochTimer()])
    _, acc = model.evaluate(x_test, y_test, verbose=0)
    return {"system": f"Keras {keras.__version__} / TF {tf.__version__}", "epoch_s": times,
            "train_accuracy": history.history["accuracy"][-1], "test_accuracy": acc}


def pytorch_model(row, torch, nn):
    """The row's network with Keras' initialisers and layer defaults; (model, optimizer, L2-penalised kernels)."""
    def conv(cin, cout, k=3, s=1, padding="same", init=nn.init.xavier_uniform_):
        c = nn.Conv2d(cin, cout, k, s, padding=padding if s == 1 else k // 2)
        init(c.weight)
        nn.init.zeros_(c.bias)
        return c

    def dense(cin, cout, init=nn.init.xavier_uniform_):
        d = nn.Linear(cin, cout)
        init(d.weight)
        nn.init.zeros_(d.bias)
        return d

    if row == "mnist_convnet":
        model = nn.Sequential(conv(1, 32, padding="valid"), nn.ReLU(), nn.MaxPool2d(2),
                              conv(32, 64, padding="valid"), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Dropout(0.5), dense(1600, 10))
        return model, torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7), []
    if row.startswith("cifar10_cnn"):
        model = nn.Sequential(conv(3, 32), nn.ReLU(), conv(32, 32, padding="valid"), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Dropout(0.25),
                              conv(32, 64), nn.ReLU(), conv(64, 64, padding="valid"), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Dropout(0.25),
                              nn.Flatten(), dense(2304, 512), nn.ReLU(), nn.Dropout(0.5), dense(512, 10))
        return model, torch.optim.RMSprop(model.parameters(), lr=1e-4, alpha=0.9, eps=1e-7), []

    he = nn.init.kaiming_normal_

    def bn(c, momentum=0.99):  # Keras' defaults: momentum 0.99, epsilon 1e-3
        return nn.BatchNorm2d(c, eps=1e-3, momentum=1 - momentum)

    if row == "mobilenet_v2":
        model = pytorch_mobilenet_v2(nn, bn, dense)
        trainable = sum(p.numel() for p in model.parameters())
        assert trainable == 408_938, trainable  # Keras': 423,018 less the moving means and variances
        return model, torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7), []

    class Block(nn.Module):
        def __init__(self, cin, cout, s):
            super().__init__()
            self.c1, self.b1 = conv(cin, cout, 3, s, init=he), bn(cout)
            self.c2, self.b2 = conv(cout, cout, init=he), bn(cout)
            self.short = conv(cin, cout, 1, s, init=he) if s != 1 else None

        def forward(self, x):
            z = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
            return torch.relu((self.short(x) if self.short is not None else x) + z)

    blocks, cin = [], 16
    for stage, cout in enumerate([16, 32, 64]):
        for block in range(3):
            blocks.append(Block(cin, cout, 2 if stage > 0 and block == 0 else 1))
            cin = cout
    model = nn.Sequential(conv(3, 16, init=he), bn(16), nn.ReLU(), *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          dense(64, 10, init=he))
    kernels = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    return model, torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7), kernels


def make_divisible(v, divisor=8):
    """Keras applications' channel rounding (as examples/models/mobilenet_v2.py)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def pytorch_mobilenet_v2(nn, bn, dense, alpha=0.35, classes=10):
    """Keras applications' MobileNetV2 for 32x32x3: ReLU6, BatchNormalization momentum 0.999, convolutions
    without biases, Glorot-uniform kernels. Stride-2 convolutions pad 1 on every side where Keras pads
    0 before and 1 after: the same shapes and work."""
    def conv_bn(cin, cout, k=1, s=1, groups=1, relu6=True):
        c = nn.Conv2d(cin, cout, k, s, padding=k // 2, groups=groups, bias=False)
        nn.init.xavier_uniform_(c.weight)
        return nn.Sequential(c, bn(cout, 0.999), *([nn.ReLU6()] if relu6 else []))

    class Inverted(nn.Module):
        def __init__(self, cin, cout, stride, expansion):
            super().__init__()
            mid = cin * expansion
            expand = [conv_bn(cin, mid)] if expansion != 1 else []
            self.body = nn.Sequential(*expand, conv_bn(mid, mid, 3, stride, groups=mid), conv_bn(mid, cout, relu6=False))
            self.residual = cin == cout and stride == 1

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    blocks = [(16, 1, 1), (24, 2, 6), (24, 1, 6), (32, 2, 6), (32, 1, 6), (32, 1, 6), (64, 2, 6), (64, 1, 6),
              (64, 1, 6), (64, 1, 6), (96, 1, 6), (96, 1, 6), (96, 1, 6), (160, 2, 6), (160, 1, 6), (160, 1, 6),
              (320, 1, 6)]
    cin = make_divisible(32 * alpha)
    layers = [conv_bn(3, cin, 3, 2)]
    for filters, stride, expansion in blocks:
        cout = make_divisible(int(filters * alpha))
        layers.append(Inverted(cin, cout, stride, expansion))
        cin = cout
    layers += [conv_bn(cin, 1280), nn.AdaptiveAvgPool2d(1), nn.Flatten(), dense(1280, classes)]
    return nn.Sequential(*layers)


def pytorch_run(row, data_dir, epochs, threads):
    import torch
    from torch import nn
    torch.set_num_threads(threads)
    torch.manual_seed(42)
    _, dataset, batch, _ = ROWS[row]
    x, y, xt, yt = read_data(dataset, data_dir)
    n_train = int(np.ceil(len(x) * 0.9))
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    xv, yv = to_t(x[n_train:]), torch.from_numpy(y[n_train:])
    x, y, xt, yt = to_t(x[:n_train]), torch.from_numpy(y[:n_train]), to_t(xt), torch.from_numpy(yt)
    model, opt, kernels = pytorch_model(row, torch, nn)
    loss_fn = nn.CrossEntropyLoss()

    def evaluate(xs, ys):
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(xs[i:i + 500]).argmax(1) for i in range(0, len(xs), 500)])
        model.train()
        return (pred == ys).float().mean().item()

    times = []
    for epoch in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(x))
        correct = 0
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            opt.zero_grad()
            out = model(x[idx])
            correct += (out.argmax(1) == y[idx]).sum().item()
            loss = loss_fn(out, y[idx])
            if kernels:
                loss = loss + 1e-4 * sum((w * w).sum() for w in kernels)
            loss.backward()
            opt.step()
        evaluate(xv, yv)
        times.append(time.perf_counter() - start)
    return {"system": f"PyTorch {torch.__version__}", "epoch_s": times, "train_accuracy": correct / len(x),
            "test_accuracy": evaluate(xt, yt)}


def keel_run(row, data_dir, epochs, threads):
    model, _, batch, _ = ROWS[row]
    m, rss = keel_train(KEEL, ["--model", os.path.join(MODELS, model), "--data-dir", data_dir, "--epochs",
                               str(epochs), "--batch-size", str(batch), "--threads", str(threads)])
    return {"system": "keel", "epoch_s": [e["seconds"] for e in m["history"]],
            "train_accuracy": m["history"][-1]["accuracy"], "test_accuracy": m["test_accuracy"], "peak_rss_mb": rss}


def run(system, row, data_dir, cifar_dir, epochs, threads):
    """One run of `row` by `system` (keel, keras or pytorch; a peer in a process of its own):
    its epochs' seconds, train and test accuracy, and peak RSS. MNIST rows read data_dir,
    the others the CIFAR-shaped files in cifar_dir (written by write_cifar)."""
    data_dir = data_dir if ROWS[row][1] == "mnist" else cifar_dir
    if system == "keel":
        return keel_run(row, data_dir, epochs, threads)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, __file__, "--worker", system, row, data_dir, str(epochs), str(threads)]
    return json.loads(run_command(cmd, env).strip().splitlines()[-1])


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        system, row, data_dir, epochs, threads = sys.argv[2:7]
        result = {"keras": keras_run, "pytorch": pytorch_run}[system](row, data_dir, int(epochs), int(threads))
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    p = argparse.ArgumentParser()
    p.add_argument("data_dir", help="a directory holding mnist/ (the IDX files)")
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--cifar-dir", default=os.path.join(tempfile.gettempdir(), "keel-bench-cifar"))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--systems", default="keel,keras,pytorch")
    args = p.parse_args()
    rows, systems = args.rows.split(","), args.systems.split(",")
    for row in rows:
        if row not in ROWS:
            sys.exit(f"unknown row {row!r}: choose from {', '.join(ROWS)}")
    write_cifar(args.cifar_dir)
    results = {(row, s): [] for row in rows for s in systems}
    for r in range(args.rounds):
        for row in rows:
            for s in systems:
                res = run(s, row, args.data_dir, args.cifar_dir, args.epochs, args.threads)
                results[row, s].append(res)
                print(f"round {r + 1} {row} {s}: {json.dumps(res)}", file=sys.stderr)
    print(f"Training, {args.threads} thread(s), {args.epochs} epochs, median of {args.rounds} round(s); "
          "s/epoch is each run's median epoch (the first includes warm-up); train acc is the last epoch's\n")
    print("| model | system | s/epoch | peak RSS MB | train acc | test acc | s/epoch vs keel | RSS vs keel |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        med = {s: {k: statistics.median(f(x) for x in results[row, s]) for k, f in (
            ("s", lambda x: statistics.median(x["epoch_s"])), ("rss", lambda x: x["peak_rss_mb"]),
            ("train", lambda x: x["train_accuracy"]), ("acc", lambda x: x["test_accuracy"]))} for s in systems}
        keel = med.get("keel")
        for s in systems:
            m = med[s]
            ratio = f"{m['s'] / keel['s']:.2f}x" if keel else "-"
            rss = f"{m['rss'] / keel['rss']:.2f}x" if keel else "-"
            print(f"| {ROWS[row][3]} | {results[row, s][0]['system']} | {m['s']:.2f} | {m['rss']:.0f} | "
                  f"{m['train']:.4f} | {m['acc']:.4f} | {ratio} | {rss} |")


if __name__ == "__main__":
    main()
