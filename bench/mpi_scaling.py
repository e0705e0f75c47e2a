#!/usr/bin/env python3
"""1 process x T threads against P processes x (T/P) threads under mpirun.

Trains the same model the same way in both layouts, alternating, and prints
median seconds per epoch, milliseconds per step, the share of the fit spent in
collectives (all-reduce, broadcast; waiting for slower ranks included) and the
test accuracy. Needs keel built with `--features mpi` and Open MPI's mpirun:

    cargo build --release --features mpi
    python3 bench/mpi_scaling.py ../shared/datasets --rounds 3 [--model FILE] [--epochs 5]
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile

KEEL = os.path.join(os.path.dirname(__file__), "..", "target", "release", "keel")


def run(layout, args, data_dir):
    processes, threads = layout
    with tempfile.TemporaryDirectory() as tmp:
        metrics = os.path.join(tmp, "m.json")
        train = [KEEL, "train", "-q", "--threads", str(threads), "--epochs", str(args.epochs),
                 "--batch-size", str(args.batch_size), "--data-dir", data_dir, "--metrics-out", metrics]
        if args.model:
            train += ["--model", args.model]
        if processes > 1:
            train = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
                     "-np", str(processes)] + train
        subprocess.run(train, check=True, stdout=subprocess.DEVNULL)
        with open(metrics) as f:
            report = json.load(f)
    epochs = [e["seconds"] for e in report["history"]]
    steps = len(epochs) * math.ceil(54000 * 1.0 / args.batch_size) if not args.model else None
    fit = report["timings"]["fit_s"]
    return {
        "s_per_epoch": statistics.median(epochs),
        "ms_per_step": 1000 * fit / steps if steps else float("nan"),
        "collective_share": report["timings"].get("fit_collectives_s", 0.0) / fit,
        "accuracy": report["test_accuracy"],
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2, help="threads in all (split between processes)")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--model", help="a model file (default: the reference model)")
    args = p.parse_args()
    layouts = [(1, args.threads), (args.processes, max(1, args.threads // args.processes))]
    results = {layout: [] for layout in layouts}
    for r in range(args.rounds):
        for layout in layouts:
            results[layout].append(run(layout, args, args.data_dir))
            print(f"round {r + 1}, {layout[0]} process(es) x {layout[1]} thread(s): {results[layout][-1]}",
                  file=sys.stderr)
    print("| layout | s/epoch | ms/step | in collectives | test acc |")
    print("|---|---|---|---|---|")
    for (processes, threads), runs in results.items():
        med = lambda k: statistics.median(x[k] for x in runs)
        print(f"| {processes} process(es) x {threads} thread(s) | {med('s_per_epoch'):.2f} | {med('ms_per_step'):.2f} "
              f"| {100 * med('collective_share'):.1f}% | {med('accuracy'):.4f} |")


if __name__ == "__main__":
    main()
