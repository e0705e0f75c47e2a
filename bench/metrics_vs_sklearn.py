"""keel's metrics against scikit-learn and Keras on the same predictions.

Random softmax outputs for 10 classes (a model that is right about 60% of the
time), one-hot targets; keel's values come from its `metric_values` example.
Prints each metric from each system and the largest difference. keel's AUC,
like Keras', sums trapezoids over 200 thresholds; scikit-learn's is exact, so
they differ by the thresholds' resolution.

    python bench/metrics_vs_sklearn.py [--samples 5000]
"""
import argparse, json, os, subprocess, tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def data(n, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes))
    logits[np.arange(n), labels] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return probs.astype(np.float32), np.eye(classes, dtype=np.float32)[labels]


def keel_values(probs, targets):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"probs": probs.ravel().tolist(), "targets": targets.ravel().tolist(), "width": probs.shape[1]}, f)
    run = subprocess.run(["cargo", "run", "--release", "--quiet", "--example", "metric_values", "--", f.name],
                         cwd=os.path.join(HERE, ".."), check=True, capture_output=True, text=True)
    os.unlink(f.name)
    return json.loads(run.stdout)


def sklearn_values(probs, targets):
    from sklearn import metrics as m
    y, pred = targets.argmax(1), probs.argmax(1)
    return {
        "categorical_accuracy": [m.accuracy_score(y, pred)],
        "top_5": [m.top_k_accuracy_score(y, probs, k=5)],
        # Keras' Precision/Recall: every value thresholded at 0.5, pooled.
        "precision": [m.precision_score(targets.ravel(), probs.ravel() > 0.5)],
        "recall": [m.recall_score(targets.ravel(), probs.ravel() > 0.5)],
        "f1_none": list(m.f1_score(y, pred, average=None)),
        "f1_macro": [m.f1_score(y, pred, average="macro")],
        "f1_weighted": [m.f1_score(y, pred, average="weighted")],
        "auc": [m.roc_auc_score(targets.ravel(), probs.ravel())],
        "auc_multi_label": [m.roc_auc_score(y, probs, multi_class="ovr", average="macro")],
    }


def keras_values(probs, targets):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    out = {}
    for name, metric in [("precision", keras.metrics.Precision()), ("recall", keras.metrics.Recall()),
                         ("f1_macro", keras.metrics.F1Score(average="macro")),
                         ("auc", keras.metrics.AUC()), ("auc_multi_label", keras.metrics.AUC(multi_label=True)),
                         ("top_5", keras.metrics.TopKCategoricalAccuracy(k=5))]:
        metric.update_state(targets, probs)
        out[name] = [float(np.asarray(metric.result()))]
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=5000)
    args = parser.parse_args()
    probs, targets = data(args.samples)
    keel = keel_values(probs, targets)
    others = {"scikit-learn": sklearn_values(probs, targets)}
    try:
        others["Keras"] = keras_values(probs, targets)
    except ImportError:
        pass
    print(f"{'metric':22} {'keel':>10} " + " ".join(f"{k:>14}" for k in others) + "   max |difference|")
    for name, values in keel.items():
        refs = [o.get(name) for o in others.values()]
        diff = max((max(abs(a - b) for a, b in zip(values, r)) for r in refs if r), default=float("nan"))
        cells = " ".join(f"{r[0]:>14.6f}" if r else f"{'':>14}" for r in refs)
        print(f"{name:22} {values[0]:>10.6f} {cells}   {diff:.2e}")


if __name__ == "__main__":
    main()
