"""The reference workflow in PyTorch, set up as Keras does it (glorot-uniform
weights, zero biases, Adam with eps 1e-7, the last 10% held out, reshuffled
each epoch), on the same IDX files keel reads.

Prints one JSON line like keras_reference.py.
Usage: python bench/pytorch_reference.py DATA_DIR [--epochs 5] [--threads N] [--model reference|convnet]
"""
import argparse, json, resource, statistics, time

import numpy as np
import torch
from torch import nn

from keras_reference import find, read_idx


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data_dir")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--model", choices=["reference", "convnet"], default="reference")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    to_tensor = lambda a: torch.from_numpy((a / 255.0).astype(np.float32)).unsqueeze(1)  # (N,1,28,28)
    x_all = to_tensor(read_idx(find(args.data_dir, "train-images-idx3-ubyte")))
    y_all = torch.from_numpy(read_idx(find(args.data_dir, "train-labels-idx1-ubyte")).astype(np.int64))
    x_test = to_tensor(read_idx(find(args.data_dir, "t10k-images-idx3-ubyte")))
    y_test = torch.from_numpy(read_idx(find(args.data_dir, "t10k-labels-idx1-ubyte")).astype(np.int64))
    split = int(np.ceil(len(x_all) * 0.9))
    x_train, y_train, x_val, y_val = x_all[:split], y_all[:split], x_all[split:], y_all[split:]

    if args.model == "convnet":  # Keras' "Simple MNIST convnet" example
        model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(64 * 5 * 5, 10))
    else:
        model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 13 * 13, 10))
    for m in model:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()

    def evaluate(x, y, batch=1000):
        model.eval()
        correct, total = 0, 0.0
        with torch.no_grad():
            for i in range(0, len(x), batch):
                out = model(x[i:i + batch])
                total += loss_fn(out, y[i:i + batch]).item() * len(out)
                correct += (out.argmax(1) == y[i:i + batch]).sum().item()
        return total / len(x), correct / len(x)

    times = []
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(x_train))
        for i in range(0, len(order), 128):
            idx = order[i:i + 128]
            opt.zero_grad()
            loss_fn(model(x_train[idx]), y_train[idx]).backward()
            opt.step()
        evaluate(x_val, y_val)
        times.append(time.perf_counter() - start)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, acc = evaluate(x_test, y_test)
    evaluate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.no_grad():
        model.eval()
        for i in range(0, len(x_test), 1000):
            torch.softmax(model(x_test[i:i + 1000]), 1)
    predict_s = time.perf_counter() - t0
    print(json.dumps({
        "system": f"pytorch {torch.__version__}", "model": args.model,
        "s_per_epoch": statistics.median(times), "fit_s": fit_s, "evaluate_s": evaluate_s,
        "predict_img_per_s": 10000 / predict_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "test_accuracy": acc,
    }))


if __name__ == "__main__":
    main()
