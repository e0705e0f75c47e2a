"""keel's optimizers, clipping, weight decay and learning-rate schedules against
Keras on the same inputs: three steps on two variables from fixed gradients.

Runs Keras here and keel's `optimizer_steps` example, and prints, per case, the
largest difference between the two (relative to the value). Usage:

    python bench/optimizer_steps.py            # compare (needs keras, and cargo to build the example)
    python bench/optimizer_steps.py --keras    # print Keras' values as JSON
"""
import json, os, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))

# The same cases as examples/optimizer_steps.rs.
START = [[1.0, -2.0, 0.5], [0.3, 0.7]]
GRADS = [
    [[0.5, -0.25, 1.5], [2.0, -1.0]],
    [[-0.25, 0.5, 0.1], [0.5, 0.5]],
    [[0.05, 0.02, -0.3], [-1.5, 0.25]],
]


def cases(keras):
    o, s = keras.optimizers, keras.optimizers.schedules
    return {
        "adam": lambda: o.Adam(),
        "adamw": lambda: o.AdamW(learning_rate=0.01, weight_decay=0.004),
        "adagrad": lambda: o.Adagrad(learning_rate=0.1),
        "nadam": lambda: o.Nadam(learning_rate=0.01),
        "sgd_clipnorm": lambda: o.SGD(learning_rate=0.1, clipnorm=1.0),
        "sgd_global_clipnorm": lambda: o.SGD(learning_rate=0.1, global_clipnorm=1.0),
        "sgd_clipvalue": lambda: o.SGD(learning_rate=0.1, clipvalue=0.3),
        "rmsprop_weight_decay": lambda: o.RMSprop(learning_rate=0.01, weight_decay=0.1),
        "adam_cosine_warmup": lambda: o.Adam(
            learning_rate=s.CosineDecay(0.0, decay_steps=10, warmup_target=0.01, warmup_steps=2)
        ),
        "sgd_exponential": lambda: o.SGD(
            learning_rate=s.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5, staircase=True)
        ),
        "sgd_piecewise": lambda: o.SGD(learning_rate=s.PiecewiseConstantDecay([0, 1], [0.1, 0.02, 0.01])),
    }


def keras_values():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    out = {}
    for name, make in cases(keras).items():
        opt = make()
        variables = [keras.Variable(v, dtype="float32") for v in START]
        steps = []
        for grads in GRADS:
            opt.apply_gradients(zip([keras.ops.convert_to_tensor(g, dtype="float32") for g in grads], variables))
            steps.append([[float(x) for x in keras.ops.convert_to_numpy(v)] for v in variables])
        out[name] = steps
    return out


def keel_values():
    root = os.path.join(HERE, "..")
    run = subprocess.run(
        ["cargo", "run", "--release", "--quiet", "--example", "optimizer_steps"],
        cwd=root, check=True, capture_output=True, text=True,
    )
    return json.loads(run.stdout)


def main():
    if "--keras" in sys.argv:
        print(json.dumps(keras_values()))
        return
    keras, keel = keras_values(), keel_values()
    print(f"{'case':24} {'max |keel - keras| / max(1, |keras|)':>40}")
    worst = 0.0
    for name, steps in keras.items():
        diff = max(
            abs(a - b) / max(1.0, abs(b))
            for ks, rs in zip(keel[name], steps)
            for kv, rv in zip(ks, rs)
            for a, b in zip(kv, rv)
        )
        worst = max(worst, diff)
        print(f"{name:24} {diff:>40.2e}")
    print(f"worst: {worst:.2e}")


if __name__ == "__main__":
    main()
