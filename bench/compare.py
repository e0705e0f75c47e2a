"""Runs keel, Keras and PyTorch on the reference workflow side by side, in
alternating rounds with the same thread count, and prints a table with the
ratios peer/keel. Each system runs as its own process; peak RSS is that
process's maximum resident set.

Usage: python bench/compare.py DATA_DIR [--rounds 3] [--epochs 5] [--threads 2]
       [--systems keel,keras,pytorch]
"""
import argparse, json, os, statistics, subprocess, sys, tempfile

# keel's peak RSS comes from wait4 on its process; the Python peers report their own.

HERE = os.path.dirname(os.path.abspath(__file__))
# The keel binary every bench script runs: KEEL_BIN, or this checkout's release build.
KEEL = os.environ.get("KEEL_BIN", os.path.join(HERE, "..", "target", "release", "keel"))


def run(cmd, env=None):
    """Runs cmd; returns its stdout. Peers report their own peak RSS."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def keel_train(keel, args):
    """Runs `keel train --quiet ARGS --metrics-out FILE` (stdout discarded); returns its
    metrics JSON and its peak RSS in MB (from wait4 on its process; a forked process's peak
    starts at its parent's resident memory, so callers keep other frameworks out of theirs)."""
    with tempfile.TemporaryDirectory() as tmp:
        metrics = os.path.join(tmp, "m.json")
        pid = os.fork()
        if pid == 0:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.execv(keel, [keel, "train", "--quiet", *args, "--metrics-out", metrics])
        _, status, usage = os.wait4(pid, 0)
        if status != 0:
            sys.exit(f"keel train {' '.join(args)} failed")
        with open(metrics) as f:
            return json.load(f), usage.ru_maxrss / 1024


def run_keel(data_dir, epochs, threads):
    m, rss = keel_train(KEEL, ["--epochs", str(epochs), "--threads", str(threads), "--data-dir", data_dir])
    return {
        "system": "keel",
        "s_per_epoch": statistics.median(e["seconds"] for e in m["history"]),
        "fit_s": m["timings"]["fit_s"],
        "evaluate_s": m["timings"]["evaluate_s"],
        "predict_img_per_s": 10000 / m["timings"]["predict_s"],
        "peak_rss_mb": rss,
        "test_accuracy": m["test_accuracy"],
    }


def run_peer(script, data_dir, epochs, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="2")
    out = run([sys.executable, os.path.join(HERE, script), data_dir, "--epochs", str(epochs),
               "--threads", str(threads)], env=env)
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data_dir")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--systems", default="keel,keras,pytorch")
    args = p.parse_args()
    runners = {
        "keel": lambda: run_keel(args.data_dir, args.epochs, args.threads),
        "keras": lambda: run_peer("keras_reference.py", args.data_dir, args.epochs, args.threads),
        "pytorch": lambda: run_peer("pytorch_reference.py", args.data_dir, args.epochs, args.threads),
    }
    systems = args.systems.split(",")
    results = {s: [] for s in systems}
    for r in range(args.rounds):
        for s in systems:
            res = runners[s]()
            results[s].append(res)
            print(f"round {r + 1} {s}: {json.dumps(res)}", file=sys.stderr)
    med = {s: {k: statistics.median(x[k] for x in rs) for k in rs[0] if k != "system"} for s, rs in results.items()}
    names = {s: results[s][0]["system"] for s in systems}
    keel = med.get("keel")
    print(f"{args.threads} thread(s), {args.epochs} epochs, median of {args.rounds} rounds\n")
    print("| system | s/epoch | fit s | evaluate s | predict img/s | peak RSS MB | test acc | s/epoch vs keel |")
    print("|---|---|---|---|---|---|---|---|")
    for s in systems:
        m = med[s]
        ratio = f"{m['s_per_epoch'] / keel['s_per_epoch']:.1f}x" if keel else "-"
        print(f"| {names[s]} | {m['s_per_epoch']:.2f} | {m['fit_s']:.1f} | {m['evaluate_s']:.2f} | "
              f"{m['predict_img_per_s']:,.0f} | {m['peak_rss_mb']:.0f} | {m['test_accuracy']:.4f} | {ratio} |")


if __name__ == "__main__":
    main()
