"""Every row of the speed targets with one command, in one table: the reference
workflow (compare.py: the tutorial's model on MNIST, 5 epochs), the deeper
networks' training (training.py's rows, the same epochs for every system) and
ImageNet-size inference (inference.py: ResNet-50 and MobileNetV2, random
weights), keel against Keras and PyTorch and, for inference, onnxruntime
running keel's own ONNX export. Each round runs every row for every system in
turn, so that a slow phase of a shared machine falls on all of them; a figure
is the median over rounds (of each run's median epoch or step), a ratio is the
fastest peer's figure against keel's, and the target column holds the ratio
the target names (against Keras for the reference workflow, onnxruntime for
inference) with whether it is met. Peak RSS is each training process's.

    cargo build --release && python bench/speed.py DATA_DIR [--rounds 1] [--epochs 3] [--threads 2]
        [--runs 20] [--parts reference,training,inference] [--rows resnet20,...] [--cifar-dir DIR]

DATA_DIR holds mnist/ (the IDX files); the CIFAR-shaped files are training.py's.
"""
import argparse, json, os, statistics, sys, tempfile

import compare  # bench/ is on the path
import inference
import training

KERAS, TORCH, ORT = "Keras 3 / TF", "PyTorch", "onnxruntime"
PEERS = (KERAS, TORCH, ORT)
INFERENCE_MODELS = {"resnet50": "ResNet-50", "mobilenet_v2": "MobileNetV2"}
INFERENCE_NAMES = {"keel": "keel", "Keras 3 / TensorFlow": KERAS, "PyTorch": TORCH, "onnxruntime (keel's ONNX)": ORT}


def reference_round(data_dir, threads):
    """{system: (s/epoch, peak RSS MB, test accuracy)} of one round of the reference workflow."""
    runs = {"keel": lambda: compare.run_keel(data_dir, 5, threads),
            KERAS: lambda: compare.run_peer("keras_reference.py", data_dir, 5, threads),
            TORCH: lambda: compare.run_peer("pytorch_reference.py", data_dir, 5, threads)}
    return {s: (lambda m: (m["s_per_epoch"], m["peak_rss_mb"], m["test_accuracy"]))(run()) for s, run in runs.items()}


def training_round(row, data_dir, cifar_dir, epochs, threads):
    """{system: (s/epoch, peak RSS MB, test accuracy)} of one round of a training row."""
    out = {}
    for system, name in (("keel", "keel"), ("keras", KERAS), ("pytorch", TORCH)):
        m = training.run(system, row, data_dir, cifar_dir, epochs, threads)
        out[name] = (statistics.median(m["epoch_s"]), m["peak_rss_mb"], m["test_accuracy"])
    return out


def median_of(rounds):
    """{system: tuple of medians over the rounds}, for systems every round has."""
    systems = set.intersection(*(set(r) for r in rounds))
    return {s: tuple(statistics.median(r[s][i] for r in rounds) for i in range(len(rounds[0][s]))) for s in systems}


def ratio_cell(keel, peers, lower_is_better):
    """The fastest peer's figure against keel's, as "N.NNx (peer)"."""
    if not peers:
        return "-", None
    best = min(peers, key=peers.get) if lower_is_better else max(peers, key=peers.get)
    r = peers[best] / keel if lower_is_better else keel / peers[best]
    return f"{r:.2f}x ({best})", r


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data_dir", help="a directory holding mnist/ (the IDX files)")
    p.add_argument("--parts", default="reference,training,inference")
    p.add_argument("--rows", default=",".join(training.ROWS), help="training.py's rows")
    p.add_argument("--cifar-dir", default=os.path.join(tempfile.gettempdir(), "keel-bench-cifar"))
    p.add_argument("--epochs", type=int, default=3, help="epochs of each training row")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=20, help="timed inference runs per batch size")
    args = p.parse_args()
    parts, rows = args.parts.split(","), args.rows.split(",")
    for part in parts:
        if part not in ("reference", "training", "inference"):
            sys.exit(f"unknown part {part!r}: choose from reference, training, inference")
    for row in rows:
        if row not in training.ROWS:
            sys.exit(f"unknown row {row!r}: choose from {', '.join(training.ROWS)}")
    if "training" in parts:
        training.write_cifar(args.cifar_dir)

    # Each round: every part, every row, every system (keys: "reference", training's rows,
    # "inference MODEL").
    results = {}
    for r in range(args.rounds):
        found = {}
        if "reference" in parts:
            found["reference"] = reference_round(args.data_dir, args.threads)
        if "training" in parts:
            for row in rows:
                found[row] = training_round(row, args.data_dir, args.cifar_dir, args.epochs, args.threads)
        if "inference" in parts:
            for name in INFERENCE_MODELS:
                systems = inference.run(name, args.threads, args.runs)
                found["inference " + name] = {INFERENCE_NAMES[s]: v for s, v in systems.items()}
        for key, value in found.items():
            results.setdefault(key, []).append(value)
            print(f"round {r + 1} {key}: {json.dumps(value)}", file=sys.stderr)

    print(f"{args.threads} thread(s), median of {args.rounds} round(s); training rows {args.epochs} epochs "
          "(s/epoch: each run's median epoch), the reference workflow 5; inference the median of "
          f"{args.runs} runs\n")
    print(f"| row | unit | keel | {' | '.join(PEERS)} | keel vs fastest peer | target | "
          "peak RSS keel / leanest peer (MB) | test accuracy keel / Keras / PyTorch |")
    print("|---|---|---|---|---|---|---|---|---|---|")

    def line(title, unit, m, lower, target, memory=True):
        peers = {s: m[s][0] for s in PEERS if s in m}
        cell, _ = ratio_cell(m["keel"][0], peers, lower)
        named, goal = target
        if named in peers:
            r = peers[named] / m["keel"][0] if lower else m["keel"][0] / peers[named]
            target_cell = f"{goal}x {named}: {r:.2f}x, {'met' if r >= goal else 'missed'}"
        else:
            target_cell = f"{goal}x {named}: -"
        figures = " | ".join(f"{m[s][0]:.2f}" if s in m else "-" for s in ("keel", *PEERS))
        rss = acc = "-"
        if memory:
            lean = min((m[s][1] for s in peers), default=None)
            rss = f"{m['keel'][1]:.0f} / {lean:.0f} ({lean / m['keel'][1]:.1f}x)" if lean else "-"
            acc = " / ".join(f"{m[s][2]:.4f}" if s in m else "-" for s in ("keel", KERAS, TORCH))
        print(f"| {title} | {unit} | {figures} | {cell} | {target_cell} | {rss} | {acc} |")

    if "reference" in results:
        line("the reference model, MNIST, batch 128", "s/epoch", median_of(results["reference"]), True, (KERAS, 12))
    for row in rows:
        if row in results:
            m = median_of(results[row])
            fastest = min((s for s in (KERAS, TORCH) if s in m), key=lambda s: m[s][0])
            line(training.ROWS[row][3], "s/epoch", m, True, (fastest, 2))
    for name, title in INFERENCE_MODELS.items():
        if "inference " + name in results:
            rounds = results["inference " + name]
            m1 = median_of([{s: (v[0],) for s, v in r.items()} for r in rounds])
            m32 = median_of([{s: (v[1],) for s, v in r.items()} for r in rounds])
            line(f"{title} 224x224, batch 1", "ms", m1, True, (ORT, 1), memory=False)
            line(f"{title} 224x224, batch 32", "images/s", m32, False, (ORT, 1), memory=False)


if __name__ == "__main__":
    main()
