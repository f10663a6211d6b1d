#!/usr/bin/python3
"""torch_bench.py -- PyTorch side of `make bench`: the same network, batch and step as
bench/step.c, timed the same way.

usage: PYTHON bench/torch_bench.py SPEC.yaml [--mode train|train_dx|fwd]
           [--threads 1,2] [--reps 5] [--rep-s 0.4] [--warmup-s 1.0] [--tunables both|off|on]
           [--openblas 1,2] [--compile] [--isa avx2] [--ieee-subnormals]
           [--formats auto|contiguous|channels_last|contiguous,channels_last]

PYTHON is the interpreter whose torch is measured: Debian's /usr/bin/python3
(python3-torch) or the PyPI virtual environment's (build/bench-venv/bin/python).

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
Execution: eager, or with --compile the model under torch.compile (inductor backend: C++/
OpenMP kernels built with g++; the optimizer step stays eager, as `model =
torch.compile(model)` users have it). Compilation happens in the warm-up (first_step_s).
Subnormals: torch.set_flush_denormal(True) right after import (before any thread is
started), as the cnngen side sets FTZ|DAZ; --ieee-subnormals keeps IEEE on both sides.
Timing: warm-up of the first step plus at least --warmup-s seconds (and 3 steps), steps per repetition
calibrated to about --rep-s seconds, --reps repetitions, median img/s.
Memory formats: --formats auto (the default) times the model and input in PyTorch's
default contiguous (NCHW) format and again in torch.channels_last (NHWC: the model moved
with .to(memory_format=...), the input made contiguous in it) when the spec's input is
[C, H, W]; oneDNN's and inductor's convolutions may prefer either, and which one wins
depends on the build and the machine (Debian's 1.13 eager ran ResNet-20 b64 1.3x faster
in channels_last on a Zen 4, bench/RESULTS.md session 41). 1-D and dense nets: contiguous.
Configurations: torch.set_num_threads(t) for each t in --threads (in one process, 1 then 2),
in a fresh process (as installed) and again with GLIBC_TUNABLES=glibc.malloc.mmap_max=0:
glibc.malloc.trim_threshold=17179869184 (glibc reads it at startup, hence the subprocess):
without it glibc hands PyTorch's large tensors back to the kernel every step and they are
page-faulted in again. --openblas 1,2 multiplies the configurations by
OPENBLAS_NUM_THREADS (OpenBLAS's own pthreads, separate from torch's OpenMP threads: Debian's
build calls the system BLAS, libblas.so.3); --isa avx2 limits oneDNN and ATen's kernels to
AVX2 (ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2), MKL's too
(MKL_ENABLE_INSTRUCTIONS=AVX2) and inductor's to 256-bit vectors (cpp.simdlen 8). Every configuration names its
build (Debian or PyPI), torch version, execution mode, BLAS and threads. Prints one JSON
object: every configuration and the best.
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
ISA_ENV = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}


def blas_name(torch):
    """The BLAS torch's matrix products run on: its own (MKL in PyPI's wheels) or, when it
    was built against the generic libblas.so.3 (Debian), the library that name resolves to."""
    info = torch.__config__.show()
    if "BLAS_INFO=mkl" in info:
        return "MKL"
    if "BLAS_INFO=generic" not in info:
        return "?"
    path = ""
    with open("/proc/self/maps") as f:
        for line in f:
            if "libblas.so" in line or "libopenblas" in line:
                path = os.path.realpath(line.split()[-1])
                break
    if "openblas" in path:
        return "OpenBLAS " + os.path.basename(os.path.dirname(path)).replace("openblas-", "")
    return "reference BLAS" if path else "?"


def run_child(a):
    """One process (one import, one set of environment variables): every thread count of
    --threads in turn, each with a fresh model (and compilation); one JSON line each."""
    import torch
    flushed = False if a.ieee_subnormals else torch.set_flush_denormal(True)
    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    import torch_ref

    spec = torch_ref.load_spec(a.spec)
    for fmt, threads in ((f, int(t)) for f in formats(a.formats, spec) for t in a.threads.split(",")):
        r = measure(torch, torch_ref, spec, threads, fmt == "channels_last", a)
        r.update({"threads": threads, "memory_format": fmt, "tunables": bool(os.environ.get("GLIBC_TUNABLES")),
                  "openblas_threads": int(os.environ.get("OPENBLAS_NUM_THREADS", "0")),
                  "build": "Debian" if torch.__file__.startswith("/usr/lib/") else "PyPI",
                  "exec": "compile" if a.compile else "eager", "blas": blas_name(torch),
                  "isa": a.isa or "native", "flush_denormal": flushed, "torch": torch.__version__,
                  "maxrss_kb": vmhwm_kb()})
        print(json.dumps(r), flush=True)


def formats(arg, spec):
    """The memory formats --formats names for this spec (auto: channels_last too when the
    input is [C, H, W], the only rank torch.channels_last applies to)."""
    if arg == "auto":
        return ["contiguous", "channels_last"] if len(spec["input"]) == 3 else ["contiguous"]
    out = arg.split(",")
    if "channels_last" in out and len(spec["input"]) != 3:
        sys.exit(f"torch_bench.py: channels_last needs a [C, H, W] input; {spec.get('name')} has {spec['input']}")
    return out


def measure(torch, torch_ref, spec, threads, channels_last, a):
    torch.set_num_threads(threads)
    recs, _ = torch_ref.parse_layers(spec)
    train = dict(torch_ref.TRAIN_DEFAULTS, **(spec.get("train") or {}))
    batch = a.batch or int(train["batch"])
    torch.manual_seed(1)
    model = torch_ref.build_model(spec).float().train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9,
                          weight_decay=float(train["weight_decay"]))
    if a.compile:
        # the generated C++ kernels name their OpenMP thread count: make it this run's
        import torch._dynamo
        import torch._inductor.config
        torch._dynamo.reset()
        torch._inductor.config.cpp.threads = threads
        if a.isa == "avx2":  # inductor's own kernels: 8-float (256-bit) vectors
            torch._inductor.config.cpp.simdlen = 8
        model = torch.compile(model, backend="inductor")
    x = torch.rand(batch, *spec["input"])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
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
    # warm-up: the first step (torch.compile compiles there), then --warmup-s more
    while warm < 3 or time.perf_counter() - t0 - t_first < a.warmup_s:
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
    return {"mode": a.mode, "batch": batch, "steps": steps,
            "img_per_s": round(statistics.median(runs), 1),
            "runs": [round(r, 1) for r in runs], "cpu_per_wall": [round(u, 3) for u in util],
            "minflt": faults,
            "warmup": {"steps": warm, "s": round(t_warm, 4), "first_step_s": round(t_first, 6),
                       "minflt": ru1.ru_minflt - ru0.ru_minflt}}


def vmhwm_kb():
    """Peak RSS of this process image (VmHWM); ru_maxrss would include the parent's."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


CONFIG_KEYS = ("img_per_s", "threads", "memory_format", "tunables", "openblas_threads", "build", "exec",
               "blas", "isa", "torch", "flush_denormal")


def config_of(c):
    """The fields that name a configuration (and its speed)."""
    return {k: c[k] for k in CONFIG_KEYS}


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
    p.add_argument("--openblas", default="", help="OPENBLAS_NUM_THREADS values, e.g. 1,2 (default: unset)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (inductor)")
    p.add_argument("--isa", choices=sorted(ISA_ENV), default="", help="limit oneDNN and ATen to this ISA")
    p.add_argument("--ieee-subnormals", action="store_true", help="no torch.set_flush_denormal(True)")
    p.add_argument("--formats", default="auto", choices=("auto", "contiguous", "channels_last",
                                                          "contiguous,channels_last"),
                   help="memory formats to time (auto: channels_last too for [C, H, W] inputs)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        run_child(a)
        return
    configs = []
    blas_threads = [int(s) for s in a.openblas.split(",") if s] or [0]
    for tun in {"both": (False, True), "off": (False,), "on": (True,)}[a.tunables]:
        for ob in blas_threads:
            env = dict(os.environ)
            for k in ("GLIBC_TUNABLES", "OPENBLAS_NUM_THREADS", *ISA_ENV["avx2"]):
                env.pop(k, None)
            if tun:
                env["GLIBC_TUNABLES"] = TUNABLES
            if ob:
                env["OPENBLAS_NUM_THREADS"] = str(ob)
            env.update(ISA_ENV.get(a.isa, {}))
            # the thread count is torch.set_num_threads'; keep OpenMP from starting more
            env["OMP_NUM_THREADS"] = str(max(int(s) for s in a.threads.split(",")))
            cmd = [sys.executable, os.path.abspath(__file__), a.spec, "--child", "--mode", a.mode,
                   "--threads", a.threads, "--batch", str(a.batch), "--reps", str(a.reps),
                   "--rep-s", str(a.rep_s), "--warmup-s", str(a.warmup_s), "--formats", a.formats]
            cmd += ["--compile"] * a.compile + ["--ieee-subnormals"] * a.ieee_subnormals
            cmd += ["--isa", a.isa] if a.isa else []
            r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
            configs += [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    best = max(configs, key=lambda c: c["img_per_s"])
    print(json.dumps({"spec": a.spec, "mode": a.mode, "configs": configs, "best": config_of(best)}))


if __name__ == "__main__":
    main()
