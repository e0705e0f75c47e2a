"""Training speed with and without `keel train --dashboard`, in alternating rounds.

Each round trains the same model three ways and reads the s/epoch that keel
prints: without the dashboard; with it and one event-stream client reading
every event (what the page receives); with it and the page open in headless
chromium (which draws the charts on the same two cores). Needs only the
standard library, keel built in release, and chromium for the third column.

    KEEL_DATA_DIR=../shared/datasets python3 bench/dashboard.py [--rounds 3] [--epochs 5] [--model FILE]
"""

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request

KEEL = os.path.join(os.path.dirname(__file__), "..", "target", "release", "keel")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def train(args, client):
    """One run; its s/epoch. `client`: None, "events" or "chromium"."""
    cmd = [KEEL, "train", "--epochs", str(args.epochs), "--threads", str(args.threads)]
    if args.model:
        cmd += ["--model", args.model]
    if client:
        cmd += ["--dashboard", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reader = browser = None
    if client:
        line = proc.stderr.readline()
        while not line.startswith("Dashboard: "):
            if not line:
                raise SystemExit("keel did not print the dashboard's address")
            line = proc.stderr.readline()
        url = line.split(" ", 1)[1].strip()
        if client == "events":
            def read_all():
                with urllib.request.urlopen(url + "events") as stream:
                    for _ in stream:
                        pass
            reader = threading.Thread(target=read_all, daemon=True)
            reader.start()
        else:
            profile = tempfile.mkdtemp()
            browser = subprocess.Popen(
                [args.chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", url],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    per_epoch = None
    for line in proc.stdout:
        found = re.search(r"\(([0-9.]+)s/epoch\)", line)
        if found:
            per_epoch = float(found.group(1))
            break
    if client:
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    if browser:
        browser.kill()
        browser.wait()
        shutil.rmtree(profile, ignore_errors=True)
    if per_epoch is None:
        raise SystemExit(f"no s/epoch in keel's output: {' '.join(cmd)}")
    return per_epoch


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", help="a model file (default: the reference model)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    clients = [None, "events"] + (["chromium"] if os.path.exists(args.chromium) else [])
    times = {c: [] for c in clients}
    for r in range(args.rounds):
        for c in clients:
            times[c].append(train(args, c))
            print(f"round {r + 1}: {c or 'no dashboard'}: {times[c][-1]:.2f} s/epoch", flush=True)
    base = statistics.median(times[None])
    names = {None: "no dashboard", "events": "--dashboard, event stream read", "chromium": "--dashboard, page open in chromium"}
    print("\n| run | s/epoch (median) | runs | vs no dashboard |\n|---|---|---|---|")
    for c in clients:
        med = statistics.median(times[c])
        runs = ", ".join(f"{t:.2f}" for t in times[c])
        print(f"| {names[c]} | {med:.2f} | {runs} | {med / base:.3f}x |")


if __name__ == "__main__":
    main()
