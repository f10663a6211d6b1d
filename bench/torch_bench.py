#!/usr/bin/python3
"""torch_bench.py -- PyTorch side of `make bench`: the same network, batch and step as
bench/step.c, timed the same way.

usage: /usr/bin/python3 bench/torch_bench.py SPEC.yaml [--mode train|train_dx|fwd]
           [--threads 1,2] [--reps 5] [--rep-s 0.4] [--warmup-s 1.0] [--tunables both|off|on]

Network: tests/torch_ref.py's build_model (layer i of the spec = module i of the
Sequential), PyTorch's default init, float32, model.train().
Data: uniform [0, 1) inputs of shape [batch, *input], labels i % classes (cross-entropy on
the flattened output) or zero targets (MSE on the flattened output), like bench/step.c.
Modes:
  train     optimizer.zero_grad(), forward, loss, backward, optimizer.step() with
            torch.optim.SGD(lr=0.001, momentum=0.9, weight_decay=<spec's>); the input does
            not require grad (a trainer's first layer computes no dL/dx) -- = step.c
  train_dx  the same with x.requires_grad_(True), so backward also computes dL/dx
            -- = step.c --dx (the single-layer "fwd+bwd" rows)
  fwd       forward only, model.train(), under torch.no_grad() (PyTorch at its best:
            no autograd graph is recorded) -- = step.c --fwd
Timing: warm-up of at least --warmup-s seconds (and 3 steps), steps per repetition
calibrated to about --rep-s seconds, --reps repetitions, median img/s.
Configurations: torch.set_num_threads(t) for each t in --threads, each in a fresh process
(as installed) and again with GLIBC_TUNABLES=glibc.malloc.mmap_max=0:
glibc.malloc.trim_threshold=17179869184 (glibc reads it at startup, hence the subprocess):
without it glibc hands PyTorch's large tensors back to the kernel every step and they are
page-faulted in again. Prints one JSON object: every configuration and the best.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184"


def run_child(a):
    import torch
    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    import torch_ref

    torch.set_num_threads(a.threads)
    spec = torch_ref.load_spec(a.spec)
    recs, _ = torch_ref.parse_layers(spec)
    train = dict(torch_ref.TRAIN_DEFAULTS, **(spec.get("train") or {}))
    batch = a.batch or int(train["batch"])
    torch.manual_seed(1)
    model = torch_ref.build_model(spec).float().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9,
                          weight_decay=float(train["weight_decay"]))
    x = torch.rand(batch, *spec["input"])
    if a.mode == "train_dx":
        x.requires_grad_(True)
    out_flat = 1
    for d in recs[-1]["out_shape"]:
        out_flat *= d
    mse = spec.get("loss", "softmax_cross_entropy") == "mse"
    if mse:
        target = torch.zeros(batch, out_flat)
        lossf = torch.nn.functional.mse_loss
    else:
        target = torch.arange(batch) % out_flat
        lossf = torch.nn.functional.cross_entropy

    if a.mode == "fwd":
        def step():
            with torch.no_grad():
                model(x)
    else:
        def step():
            opt.zero_grad()
            if x.grad is not None:
                x.grad = None
            loss = lossf(model(x).flatten(1), target)
            loss.backward()
            opt.step()

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    t_first = None
    warm = 0
    while warm < 3 or time.perf_counter() - t0 < a.warmup_s:
        t = time.perf_counter()
        step()
        if t_first is None:
            t_first = time.perf_counter() - t
        warm += 1
    t_warm = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    k = max(1, warm // 2)
    t = time.perf_counter()
    for _ in range(k):
        step()
    per_step = (time.perf_counter() - t) / k
    steps = max(1, round(a.rep_s / per_step))
    runs, util, faults = [], [], []
    for _ in range(a.reps):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t = time.perf_counter()
        for _ in range(steps):
            step()
        dt = time.perf_counter() - t
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        runs.append(steps * batch / dt)
        util.append((r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / dt)
        faults.append(r1.ru_minflt - r0.ru_minflt)
    print(json.dumps({
        "threads": a.threads, "tunables": bool(os.environ.get("GLIBC_TUNABLES")),
        "torch": torch.__version__, "mode": a.mode, "batch": batch, "steps": steps,
        "img_per_s": round(statistics.median(runs), 1),
        "runs": [round(r, 1) for r in runs], "cpu_per_wall": [round(u, 3) for u in util],
        "minflt": faults,
        "warmup": {"steps": warm, "s": round(t_warm, 4), "first_step_s": round(t_first, 6),
                   "minflt": ru1.ru_minflt - ru0.ru_minflt},
        "maxrss_kb": vmhwm_kb()}))


def vmhwm_kb():
    """Peak RSS of this process image (VmHWM); ru_maxrss would include the parent's."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("spec")
    p.add_argument("--mode", choices=("train", "train_dx", "fwd"), default="train")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--batch", type=int, default=0)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--rep-s", type=float, default=0.4)
    p.add_argument("--warmup-s", type=float, default=1.0)
    p.add_argument("--tunables", choices=("both", "off", "on"), default="both")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        a.threads = int(a.threads)
        run_child(a)
        return
    configs = []
    for tun in {"both": (False, True), "off": (False,), "on": (True,)}[a.tunables]:
        for t in (int(s) for s in a.threads.split(",")):
            env = dict(os.environ)
            env.pop("GLIBC_TUNABLES", None)
            if tun:
                env["GLIBC_TUNABLES"] = TUNABLES
            # the thread count is torch.set_num_threads'; keep OpenMP from spinning up more
            env["OMP_NUM_THREADS"] = str(t)
            cmd = [sys.executable, os.path.abspath(__file__), a.spec, "--child", "--mode", a.mode,
                   "--threads", str(t), "--batch", str(a.batch), "--reps", str(a.reps),
                   "--rep-s", str(a.rep_s), "--warmup-s", str(a.warmup_s)]
            r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
            configs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    best = max(configs, key=lambda c: c["img_per_s"])
    print(json.dumps({"spec": a.spec, "mode": a.mode, "configs": configs,
                      "best": {"img_per_s": best["img_per_s"], "threads": best["threads"],
                               "tunables": best["tunables"]}}))


if __name__ == "__main__":
    main()
