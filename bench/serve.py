"""keel serve against FastAPI apps serving the same model, single-image requests.

Three servers on 127.0.0.1, each answering TF Serving's
`POST /v1/models/ref:predict` with `{"instances": [one 28x28x1 image]}`:
(a) `keel serve` on the reference model (`keel train --save`, or --model),
(b) a FastAPI app (uvicorn, one worker) calling Keras' `model.predict` on the same
    architecture, (c) the same app calling onnxruntime on keel's ONNX export.
For each client count (1, 16, 64), a fixed number of requests from
`examples/http_load.rs` (keep-alive connections, one thread per client); prints
requests/s and p50/p99 latency per server, and the ratios.

    python bench/serve.py [--model ref.keel] [--requests 2000] [--clients 1,16,64] [--threads 2]
"""
import argparse, json, os, socket, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")

APP = r'''
import json, os, sys
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
kind, path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
app = FastAPI()
if kind == "keras":
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(32, 3, activation="relu"),
                              keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    predict = lambda x: model.predict(x, verbose=0)
else:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    predict = lambda x: session.run(None, {name: x})[0]

@app.post("/v1/models/ref:predict")
async def serve(request: Request):
    body = json.loads(await request.body())
    x = np.asarray(body["instances"], dtype=np.float32)
    return JSONResponse({"predictions": predict(x).tolist()})
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, proc, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"a server exited early (code {proc.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"no server on port {port} after {seconds} s")


def load(port, body, requests, clients):
    out = subprocess.run([os.path.join(ROOT, "target", "release", "examples", "http_load"), str(port),
                          "/v1/models/ref:predict", body, str(requests), str(clients)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", help="a saved reference model (default: keel train --save one)")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--clients", default="1,16,64")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--servers", default="keel,keras,onnxruntime")
    args = p.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "http_load"], cwd=ROOT, check=True)
    keel = os.path.join(ROOT, "target", "release", "keel")
    tmp = tempfile.mkdtemp()
    model = args.model or os.path.join(tmp, "ref.keel")
    if not args.model:
        subprocess.run([keel, "train", "--quiet", "--save", model], check=True, capture_output=True)
    onnx = os.path.join(tmp, "ref.onnx")
    subprocess.run([keel, "export", model, "--onnx", onnx], check=True, capture_output=True)
    app = os.path.join(tmp, "app.py")
    with open(app, "w") as f:
        f.write(APP)
    import numpy as np
    image = (np.random.default_rng(0).random((28, 28, 1))).round(3).tolist()
    body = os.path.join(tmp, "body.json")
    with open(body, "w") as f:
        json.dump({"instances": [image]}, f)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TF_CPP_MIN_LOG_LEVEL="3")
    servers = {}
    for name in args.servers.split(","):
        port = free_port()
        if name == "keel":
            cmd = [keel, "serve", model, "--name", "ref", "--port", str(port), "--threads", str(args.threads)]
        else:
            cmd = [sys.executable, "-c", f"import sys; sys.argv = ['app', '{name}', '{onnx}', '{args.threads}']; "
                   f"exec(open('{app}').read()); import uvicorn; uvicorn.run(app, host='127.0.0.1', port={port}, log_level='error')"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_ready(port, proc)
        servers[name] = (port, proc)
    rows = []
    try:
        for name, (port, _) in servers.items():
            load(port, body, 50, 4)  # warm-up
        for clients in [int(c) for c in args.clients.split(",")]:
            for name, (port, _) in servers.items():
                r = load(port, body, args.requests, clients)
                rows.append((clients, name, r))
                print(f"{clients:3} clients  {name:12} {r['requests_per_s']:9.1f} req/s  p50 {r['p50_ms']:7.2f} ms  "
                      f"p99 {r['p99_ms']:7.2f} ms  errors {r['errors']}", flush=True)
    finally:
        for _, proc in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
    print(f"\n{args.requests} single-image requests per cell, {args.threads} threads per server\n")
    print("| clients | server | requests/s | p50 ms | p99 ms | errors | keel's requests/s vs it |")
    print("|---|---|---|---|---|---|---|")
    for clients, name, r in rows:
        keel_rps = next((x for c, n, x in rows if c == clients and n == "keel"), r)["requests_per_s"]
        label = {"keel": "keel serve", "keras": "FastAPI + Keras model.predict", "onnxruntime": "FastAPI + onnxruntime"}[name]
        print(f"| {clients} | {label} | {r['requests_per_s']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{r['errors']} | {keel_rps / r['requests_per_s']:.1f}x |")


if __name__ == "__main__":
    main()
