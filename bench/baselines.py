"""keel's classical baselines against scikit-learn on the same images.

For each dataset and method, `keel baseline` and the same scikit-learn
estimator with the same hyper-parameters (scikit-learn's defaults, which keel
uses) are fitted on the same first N training images, scaled to [0, 1], and
scored on the whole test set, alternating keel and scikit-learn in each round.
Prints accuracy, fit and predict seconds for both, and the ratios.

    python bench/baselines.py [--datasets mnist,fashion-mnist] [--methods logistic,...]
        [--rounds 1] [--threads 2] [--svm-limit 10000] [--cnn RUN.json ...] [--markdown]

The datasets are read from $KEEL_DATA_DIR/<name>/ (or /usr/share/datasets/<name>/,
where Debian's dataset-fashion-mnist installs) as IDX files, gzipped or not.
`--cnn` adds `keel train --metrics-out` files to the markdown table.
"""
import argparse, gzip, json, os, subprocess, sys, tempfile, time

import numpy as np

from keras_reference import read_idx as idx

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
METHODS = ["logistic", "linear-svm", "svm", "tree", "forest", "knn"]


def find(dataset, name):
    dirs = [os.path.join(os.environ.get("KEEL_DATA_DIR", ""), dataset), os.path.join("/usr/share/datasets", dataset)]
    for d in dirs:
        for candidate in (name, name + ".gz"):
            if os.path.exists(os.path.join(d, candidate)):
                return os.path.join(d, candidate)
    sys.exit(f"{dataset}: {name} not found in {dirs}; set KEEL_DATA_DIR")


def load(dataset):
    x = idx(find(dataset, "train-images-idx3-ubyte")).reshape(-1, 784).astype(np.float32) / 255.0
    y = idx(find(dataset, "train-labels-idx1-ubyte")).astype(np.int64)
    xt = idx(find(dataset, "t10k-images-idx3-ubyte")).reshape(-1, 784).astype(np.float32) / 255.0
    yt = idx(find(dataset, "t10k-labels-idx1-ubyte")).astype(np.int64)
    return x, y, xt, yt


def estimator(method, threads, seed):
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC, SVC
    from sklearn.tree import DecisionTreeClassifier
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier
    return {
        "logistic": lambda: LogisticRegression(C=1.0, max_iter=100),
        "linear-svm": lambda: LinearSVC(C=1.0),
        "svm": lambda: SVC(C=1.0, kernel="rbf", gamma="scale"),
        "tree": lambda: DecisionTreeClassifier(random_state=seed),
        "forest": lambda: RandomForestClassifier(n_estimators=100, n_jobs=threads, random_state=seed),
        "knn": lambda: KNeighborsClassifier(n_neighbors=5, n_jobs=threads),
    }[method]()


def sklearn_run(method, data, n, threads, seed):
    import warnings
    x, y, xt, yt = data
    model = estimator(method, threads, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at the default max_iter, as keel
        start = time.perf_counter()
        model.fit(x[:n], y[:n])
        fit_s = time.perf_counter() - start
    start = time.perf_counter()
    predicted = model.predict(xt)
    predict_s = time.perf_counter() - start
    return {"accuracy": float((predicted == yt).mean()), "fit_s": fit_s, "predict_s": predict_s}


def keel_run(keel, method, dataset, n, threads, seed):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "m.json")
        subprocess.run([keel, "baseline", "--method", method, "--dataset", dataset, "--limit", str(n),
                        "--threads", str(threads), "--seed", str(seed), "--metrics-out", out],
                       check=True, capture_output=True, text=True)
        with open(out) as f:
            m = json.load(f)
    return {"accuracy": m["test_accuracy"], "fit_s": m["timings"]["fit_s"], "predict_s": m["timings"]["predict_s"],
            "macro_f1": m["macro_f1"], "json": m}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", default="mnist,fashion-mnist")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--svm-limit", type=int, default=10000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--cnn", nargs="*", default=[], help="keel train --metrics-out files, one per dataset, in order")
    p.add_argument("--keel", default=os.path.join(ROOT, "target", "release", "keel"))
    p.add_argument("--out", help="write all figures as JSON here")
    args = p.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if not os.path.exists(args.keel):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    import sklearn
    rows = []
    for d, dataset in enumerate(args.datasets.split(",")):
        data = load(dataset)
        for method in args.methods.split(","):
            n = min(args.svm_limit, len(data[1])) if method == "svm" else len(data[1])
            runs = {"keel": [], "sklearn": []}
            for _ in range(args.rounds):
                runs["keel"].append(keel_run(args.keel, method, dataset, n, args.threads, args.seed))
                runs["sklearn"].append(sklearn_run(method, data, n, args.threads, args.seed))
            best = {k: min(v, key=lambda r: r["fit_s"]) for k, v in runs.items()}
            k, s = best["keel"], best["sklearn"]
            rows.append({"dataset": dataset, "method": method, "samples": n, "keel": {x: k[x] for x in k if x != "json"},
                         "sklearn": s, "keel_json": k["json"]})
            print(f"{dataset:14} {method:11} n={n:6}  accuracy keel {k['accuracy']:.4f} sklearn {s['accuracy']:.4f} "
                  f"({100 * (k['accuracy'] - s['accuracy']):+.2f} pp)  fit s keel {k['fit_s']:.1f} sklearn {s['fit_s']:.1f} "
                  f"({s['fit_s'] / k['fit_s']:.1f}x)  predict s keel {k['predict_s']:.2f} sklearn {s['predict_s']:.2f}",
                  flush=True)
    print(f"\nscikit-learn {sklearn.__version__}, {args.threads} threads, best of {args.rounds} round(s)\n")
    print("| dataset | method | train samples | keel accuracy | scikit-learn accuracy | difference | keel fit s | "
          "scikit-learn fit s | fit speed-up | keel predict s | scikit-learn predict s |")
    print("|---" * 11 + "|")
    for r in rows:
        k, s = r["keel"], r["sklearn"]
        print(f"| {r['dataset']} | {r['method']} | {r['samples']:,} | {k['accuracy']:.4f} | {s['accuracy']:.4f} | "
              f"{100 * (k['accuracy'] - s['accuracy']):+.2f} pp | {k['fit_s']:.1f} | {s['fit_s']:.1f} | "
              f"{s['fit_s'] / k['fit_s']:.1f}x | {k['predict_s']:.2f} | {s['predict_s']:.2f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
