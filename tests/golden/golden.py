#!/usr/bin/python3
"""Numeric golden regression for the generated trainers.

For a spec, the trainer built by tests.mk (build/trainers/NAME) trains from its seeded
initialisation on 4 fixed samples (numpy RandomState(1234), written as a .npz) for 5 steps
of minibatch SGD (batch 4 = the whole set, so every step sees the same samples; lr 0.01,
momentum 0.9, weight decay 1e-4, seed 1). The loss after each step (log.csv) and, per
tensor of the final weights (last.npz), the sum, L2 norm and largest magnitude are compared
with tests/golden/NAME.json.

  golden.py check  SPEC.yaml TRAINER WORKDIR   exit 1 on a difference beyond tolerance
  golden.py update SPEC.yaml TRAINER WORKDIR   rewrite tests/golden/NAME.json

Tolerances (relative): losses 1e-4, L2 norms and max-abs 1e-3, sums 1e-3 of the larger of
|sum| and the L2 norm (sums of tensors near zero cancel). Enough for gcc vs clang, AVX-512
vs AVX2 and OpenMP, tight enough for any change to what a layer computes.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import numpy as np

N, STEPS = 4, 5
ARGS = ["--mode", "minibatch", "--batch", str(N), "--order", "shuffle", "--epochs", str(STEPS),
        "--lr", "0.01", "--momentum", "0.9", "--weight-decay", "1e-4", "--schedule", "constant",
        "--val", "0", "--patience", "0", "--eval-every", "1", "--seed", "1", "--no-normalize",
        "--checkpoint-every", "0", "--quiet", "--no-plot", "--plain"]
TOL_LOSS, TOL_NORM, TOL_SUM = 1e-4, 1e-3, 1e-3
HERE = os.path.dirname(os.path.abspath(__file__))


def net_info(trainer):
    head = subprocess.run([trainer, "--help"], capture_output=True, text=True).stdout.splitlines()[0]
    m = re.search(r"input ([0-9x]+), output (\d+), .*?, (softmax cross-entropy|mse) loss", head)
    if not m:
        sys.exit(f"golden: cannot read the net's shapes from '{head}'")
    return [int(v) for v in m.group(1).split("x")], int(m.group(2)), m.group(3)


def run(spec, trainer, work):
    name = os.path.splitext(os.path.basename(spec))[0]
    shape, out, loss = net_info(trainer)
    rng = np.random.RandomState(1234)
    x = rng.standard_normal([N] + shape).astype(np.float32)
    if loss == "mse":
        y = rng.standard_normal([N, out]).astype(np.float32)
    else:
        y = (np.arange(N) % out).astype(np.int64)
    d = os.path.join(work, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    np.savez(os.path.join(d, "data.npz"), x=x, y=y)
    r = subprocess.run([trainer, "train", "--data", os.path.join(d, "data.npz"), "--out", d] + ARGS,
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"golden: {name}: the trainer failed ({r.returncode}): {r.stderr.strip()}")
    losses = []
    with open(os.path.join(d, "log.csv")) as f:
        next(f)
        for line in f:
            losses.append(float(line.split(",")[2]))
    if len(losses) != STEPS:
        sys.exit(f"golden: {name}: {len(losses)} log rows, expected {STEPS}")
    tensors = {}
    w = np.load(os.path.join(d, "last.npz"))
    for k in w.files:
        a = w[k].astype(np.float64).ravel()
        tensors[k] = {"sum": float(a.sum()), "l2": float(np.sqrt((a * a).sum())),
                      "maxabs": float(np.abs(a).max()) if a.size else 0.0}
    return name, {"spec": os.path.relpath(spec), "samples": N, "steps": STEPS, "args": " ".join(ARGS),
                  "loss": losses, "tensors": tensors}


def rel(a, b, scale):
    return abs(a - b) / max(scale, 1e-12)


def compare(name, want, got):
    bad = []
    for i, (a, b) in enumerate(zip(want["loss"], got["loss"])):
        if rel(a, b, abs(a)) > TOL_LOSS:
            bad.append(f"loss after step {i + 1}: golden {a:.9g}, now {b:.9g}")
    if set(want["tensors"]) != set(got["tensors"]):
        bad.append(f"tensors differ: golden {sorted(want['tensors'])}, now {sorted(got['tensors'])}")
    for k in sorted(set(want["tensors"]) & set(got["tensors"])):
        w, g = want["tensors"][k], got["tensors"][k]
        for f in ("l2", "maxabs"):
            if rel(w[f], g[f], abs(w[f])) > TOL_NORM:
                bad.append(f"{k} {f}: golden {w[f]:.9g}, now {g[f]:.9g}")
        if rel(w["sum"], g["sum"], max(abs(w["sum"]), w["l2"])) > TOL_SUM:
            bad.append(f"{k} sum: golden {w['sum']:.9g}, now {g['sum']:.9g}")
    return bad


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("check", "update"):
        sys.exit(__doc__)
    mode, spec, trainer, work = sys.argv[1:]
    name, got = run(spec, trainer, work)
    path = os.path.join(HERE, name + ".json")
    if mode == "update":
        with open(path, "w") as f:
            json.dump(got, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"golden: wrote {os.path.relpath(path)} (losses {got['loss'][0]:.6g} -> {got['loss'][-1]:.6g})")
        return
    if not os.path.exists(path):
        sys.exit(f"golden: {name}: no {os.path.relpath(path)} (make golden-update)")
    with open(path) as f:
        want = json.load(f)
    bad = compare(name, want, got)
    if bad:
        print(f"golden: {name}: FAILED, {len(bad)} differences beyond tolerance:")
        for b in bad[:20]:
            print("  " + b)
        sys.exit(1)
    print(f"golden: {name}: {STEPS} losses and {len(got['tensors'])} tensors within tolerance")


if __name__ == "__main__":
    main()
