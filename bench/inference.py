"""ImageNet-size inference, side by side: keel, onnxruntime running keel's own
ONNX export of the same network and weights, PyTorch (eager, inference mode) and
Keras (keras.applications), random weights, on the same number of threads:
batch 1 latency (ms) and batch 32 throughput (images/s), median of several runs.
PyTorch's networks are large_training.py's (Keras' layers, trainable parameter
counts asserted equal to Keras'); each peer runs in a process of its own.

    cargo build --release && python bench/inference.py [--models resnet50,mobilenet_v2] [--threads 2] [--runs 5]
"""
import argparse, json, multiprocessing, os, statistics, subprocess, tempfile, time

import numpy as np

from compare import KEEL  # bench/ is on the path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")


def timed(fn, runs, warmup=1):
    """Median seconds of `runs` calls of `fn` after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def keel(name, threads, runs, onnx_path):
    """`keel bench` on the model file; `keel export` writes the same network and weights as ONNX."""
    model = os.path.join(ROOT, "examples", "models", f"{name}.toml")
    subprocess.run([KEEL, "export", "--model", model, "--onnx", onnx_path], check=True, capture_output=True)
    out = subprocess.run([KEEL, "bench", "--model", model, "--batch", "1,32", "--runs", str(runs),
                          "--threads", str(threads), "--json"], check=True, capture_output=True, text=True).stdout
    rows = {r["batch"]: r for r in json.loads(out)["rows"]}
    return rows[1]["latency_ms_p50"], rows[32]["images_per_s"]


def onnxruntime(path, threads, runs):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    results = []
    for batch in (1, 32):
        x = np.random.default_rng(0).random([batch] + shape[1:], dtype=np.float32)
        results.append(timed(lambda: session.run(None, {inp.name: x}), runs))
    return results[0] * 1000, 32 / results[1]


def keras_model(name, threads, runs):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    make = {"resnet50": keras.applications.ResNet50, "mobilenet_v2": keras.applications.MobileNetV2}[name]
    model = make(weights=None)
    results = []
    for batch in (1, 32):
        x = np.random.default_rng(0).random((batch, 224, 224, 3), dtype=np.float32)
        results.append(timed(lambda: model(x, training=False), runs))
    return results[0] * 1000, 32 / results[1]


def pytorch_model(name, threads, runs):
    import torch
    from torch import nn
    from large_training import pytorch_imagenet
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, trainable = pytorch_imagenet(torch, nn, name)
    count = sum(p.numel() for p in model.parameters())
    assert count == trainable, f"{name}: {count} trainable parameters, Keras' {trainable}"
    model.eval()
    results = []
    for batch in (1, 32):
        x = torch.from_numpy(np.random.default_rng(0).random((batch, 3, 224, 224), dtype=np.float32))
        with torch.inference_mode():
            results.append(timed(lambda: model(x), runs))
    return results[0] * 1000, 32 / results[1]


def peer(fn, *args):
    """fn(*args) in a process of its own: TensorFlow and PyTorch do not share one, and the
    caller stays small (a process it forks, such as keel's in training.py, starts with the
    caller's resident memory in its peak RSS). None where the framework is not installed."""
    try:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            return pool.apply(fn, args)
    except ImportError:
        return None


def run(name, threads, runs):
    """{system: (batch-1 ms, batch-32 images/s)} for `name`: keel, and those of onnxruntime
    (on keel's export), PyTorch and Keras that are installed."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.onnx")
        rows = {"keel": keel(name, threads, runs, path)}
        peers = [("onnxruntime (keel's ONNX)", onnxruntime, path), ("PyTorch", pytorch_model, name),
                 ("Keras 3 / TensorFlow", keras_model, name)]
        for system, fn, what in peers:
            result = peer(fn, what, threads, runs)
            if result is not None:
                rows[system] = result
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet50,mobilenet_v2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"{'model':14} {'system':26} {'batch 1 (ms)':>13} {'batch 32 (images/s)':>20}")
    for name in args.models.split(","):
        for system, (ms, ips) in run(name, args.threads, args.runs).items():
            print(f"{name:14} {system:26} {ms:>13.1f} {ips:>20.1f}")


if __name__ == "__main__":
    main()
