"""ResNet-20 v1 (the classic Keras CIFAR-10 ResNet example's resnet_v1, depth
20, with global average pooling) trained by keel, Keras and PyTorch side by
side, on the same CIFAR-10 binary files: s/epoch at batch 128, peak RSS and
test accuracy, in alternating rounds.

No CIFAR-10 download is needed: the script writes CIFAR-shaped files
(cifar10/data_batch_*.bin, test_batch.bin: 10,000 training and 1,000 test
images of 10 classes, a class-dependent colour plus noise) into --data-dir
when they are missing, and every system reads those same files. With
validation_split 0.1 each system trains on 9,000 images per epoch.

Usage: python bench/resnet20.py [--data-dir DIR] [--epochs 2] [--rounds 1] [--threads 2]
       [--systems keel,keras,pytorch]
       python bench/resnet20.py --worker keras|pytorch DATA_DIR EPOCHS THREADS   (one run; prints JSON)
"""
import argparse, json, os, resource, statistics, subprocess, sys, tempfile, time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
KEEL = os.path.join(HERE, "..", "target", "release", "keel")
MODEL = os.path.join(HERE, "..", "examples", "models", "resnet20.toml")
BATCH = 128


def write_cifar(data_dir, train=10_000, test=1_000, seed=0):
    """CIFAR-10 binary batches: each record a label byte then 3x32x32 channel-major pixels."""
    folder = os.path.join(data_dir, "cifar10")
    if os.path.exists(os.path.join(folder, "test_batch.bin")):
        return
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)

    def records(n):
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        colours = rng.integers(40, 200, (10, 3, 1, 1))
        pixels = np.clip(colours[labels] + rng.normal(0, 50, (n, 3, 32, 32)), 0, 255).astype(np.uint8)
        return np.concatenate([labels[:, None], pixels.reshape(n, -1)], axis=1).tobytes()

    per = train // 5
    for i in range(1, 6):
        with open(os.path.join(folder, f"data_batch_{i}.bin"), "wb") as f:
            f.write(records(per))
    with open(os.path.join(folder, "test_batch.bin"), "wb") as f:
        f.write(records(test))


def read_cifar(data_dir):
    """(x_train, y_train, x_test, y_test): NHWC floats in [0, 1] and class indices."""
    def read(names):
        raw = b"".join(open(os.path.join(data_dir, "cifar10", n), "rb").read() for n in names)
        rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3073)
        return rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) / 255.0, rec[:, 0].astype(np.int64)
    x, y = read([f"data_batch_{i}.bin" for i in range(1, 6)])
    xt, yt = read(["test_batch.bin"])
    return x.astype(np.float32), y, xt.astype(np.float32), yt


def keras_run(data_dir, epochs, threads):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import keras
    from keras import layers
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    keras.utils.set_random_seed(42)
    x_train, y_train, x_test, y_test = read_cifar(data_dir)
    y_train, y_test = keras.utils.to_categorical(y_train, 10), keras.utils.to_categorical(y_test, 10)

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
    model = keras.Model(inputs, outputs)
    assert model.count_params() == 274_442, model.count_params()
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    times = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    model.fit(x_train, y_train, epochs=epochs, batch_size=BATCH, validation_split=0.1, verbose=0,
              callbacks=[EpochTimer()])
    _, acc = model.evaluate(x_test, y_test, verbose=0)
    return {"system": f"Keras {keras.__version__} / TF {tf.__version__}", "epoch_s": times, "test_accuracy": acc}


def pytorch_run(data_dir, epochs, threads):
    import torch
    from torch import nn
    torch.set_num_threads(threads)
    torch.manual_seed(42)
    x, y, xt, yt = read_cifar(data_dir)
    n_train = int(np.ceil(len(x) * 0.9))
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    xv, yv = to_t(x[n_train:]), torch.from_numpy(y[n_train:])
    x, y, xt, yt = to_t(x[:n_train]), torch.from_numpy(y[:n_train]), to_t(xt), torch.from_numpy(yt)

    def conv(cin, cout, k=3, s=1):
        c = nn.Conv2d(cin, cout, k, s, padding="same" if s == 1 else k // 2)
        nn.init.kaiming_normal_(c.weight)
        nn.init.zeros_(c.bias)
        return c

    def bn(c):  # Keras' defaults: momentum 0.99, epsilon 1e-3
        return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)

    class Block(nn.Module):
        def __init__(self, cin, cout, s):
            super().__init__()
            self.c1, self.b1, self.c2, self.b2 = conv(cin, cout, 3, s), bn(cout), conv(cout, cout), bn(cout)
            self.short = conv(cin, cout, 1, s) if s != 1 else None

        def forward(self, x):
            z = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
            return torch.relu((self.short(x) if self.short is not None else x) + z)

    blocks, cin = [], 16
    for stage, cout in enumerate([16, 32, 64]):
        for block in range(3):
            blocks.append(Block(cin, cout, 2 if stage > 0 and block == 0 else 1))
            cin = cout
    head = nn.Linear(64, 10)
    nn.init.kaiming_normal_(head.weight)
    model = nn.Sequential(conv(3, 16), bn(16), nn.ReLU(), *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    kernels = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
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
        for i in range(0, len(x), BATCH):
            idx = order[i:i + BATCH]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx]) + 1e-4 * sum((w * w).sum() for w in kernels)
            loss.backward()
            opt.step()
        evaluate(xv, yv)
        times.append(time.perf_counter() - start)
    return {"system": f"PyTorch {torch.__version__}", "epoch_s": times, "test_accuracy": evaluate(xt, yt)}


def keel_run(data_dir, epochs, threads):
    with tempfile.TemporaryDirectory() as tmp:
        metrics = os.path.join(tmp, "m.json")
        pid = os.fork()
        if pid == 0:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.execv(KEEL, [KEEL, "train", "--quiet", "--model", MODEL, "--data-dir", data_dir, "--epochs",
                            str(epochs), "--batch-size", str(BATCH), "--threads", str(threads),
                            "--metrics-out", metrics])
        _, status, usage = os.wait4(pid, 0)
        if status != 0:
            sys.exit("keel train failed")
        with open(metrics) as f:
            m = json.load(f)
    return {"system": "keel", "epoch_s": [e["seconds"] for e in m["history"]],
            "test_accuracy": m["test_accuracy"], "peak_rss_mb": usage.ru_maxrss / 1024}


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        system, data_dir, epochs, threads = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        result = {"keras": keras_run, "pytorch": pytorch_run}[system](data_dir, epochs, threads)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "keel-bench-cifar"))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--systems", default="keel,keras,pytorch")
    args = p.parse_args()
    write_cifar(args.data_dir)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TF_CPP_MIN_LOG_LEVEL="2")

    def peer(system):
        cmd = [sys.executable, __file__, "--worker", system, args.data_dir, str(args.epochs), str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            sys.exit(f"{system} failed:\n{proc.stderr[-2000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    systems = args.systems.split(",")
    results = {s: [] for s in systems}
    for r in range(args.rounds):
        for s in systems:
            res = keel_run(args.data_dir, args.epochs, args.threads) if s == "keel" else peer(s)
            results[s].append(res)
            print(f"round {r + 1} {s}: {json.dumps(res)}", file=sys.stderr)
    # s/epoch: the median over rounds of each run's median epoch (the first epoch includes warm-up).
    med = {s: {"s_per_epoch": statistics.median(statistics.median(x["epoch_s"]) for x in rs),
               "peak_rss_mb": statistics.median(x["peak_rss_mb"] for x in rs),
               "test_accuracy": statistics.median(x["test_accuracy"] for x in rs)} for s, rs in results.items()}
    keel = med.get("keel")
    print(f"ResNet-20 v1, batch {BATCH}, 9,000 training images, {args.threads} thread(s), "
          f"{args.epochs} epochs, median of {args.rounds} round(s)\n")
    print("| system | s/epoch | peak RSS MB | test acc | s/epoch vs keel |")
    print("|---|---|---|---|---|")
    for s in systems:
        m = med[s]
        ratio = f"{m['s_per_epoch'] / keel['s_per_epoch']:.2f}x" if keel else "-"
        print(f"| {results[s][0]['system']} | {m['s_per_epoch']:.1f} | {m['peak_rss_mb']:.0f} | "
              f"{m['test_accuracy']:.4f} | {ratio} |")


if __name__ == "__main__":
    main()
