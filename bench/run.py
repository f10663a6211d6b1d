#!/usr/bin/python3
"""run.py -- `make bench`: cnngen's generated trainers against PyTorch on this machine.

For every workload (issue 4's list and issue 10's MLP): generate the C with build/cnngen,
compile it with bench/step.c and build/libcnngen.a with the release flags (OPT, default
-O3 -march=native -fopenmp), time it with OMP_NUM_THREADS=1 and 2 (the faster counts), then
time the same network in PyTorch (bench/torch_bench.py). Medians of --reps (>= 5)
repetitions each. Rows with a target are swept --sweep-rounds (3) times, interleaved: a
round times every configuration of both sides once (cnngen tuned and heuristic on 1 and 2
threads, every PyTorch build with all its configurations), the next round in the reverse
order, and a configuration's figure is the median of its rounds. This machine's speed
moves up to 1.7x from one minute to the next; timed one after the other, each side would
meet its own minutes and the best of PyTorch's 16-32 configurations the fastest of them.

PyTorch at its best is the anchor: the fastest of every build and configuration measured,
  - Debian's python3-torch (eager), calling the system BLAS (OpenBLAS, libopenblas0-pthread,
    which `make bench` installs), x OPENBLAS_NUM_THREADS 1/2,
  - PyPI's current torch (`make bench` keeps it in build/bench-venv, bench/pypi_torch.sh),
    eager and torch.compile (inductor),
each x torch.set_num_threads 1/2 x glibc malloc tunables off/on x memory format
(contiguous, and torch.channels_last for nets with a [C, H, W] input) (the forward-only
rows, which have no target, without torch.compile). Every row names the
build, version, execution mode, BLAS, threads and memory format of its PyTorch. When PyPI cannot be
reached the bench says so and measures Debian's build alone.

Subnormals: both sides flush them to zero (step.c: cg_flush_subnormals, as the trainers
do; PyTorch: torch.set_flush_denormal(True)); --ieee-subnormals keeps IEEE on both.

AVX2 rows (unless --no-avx2): every row with a target again with the trainer and the
runtime built with -march=haswell, against PyTorch's best configuration limited to AVX2
(ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2, MKL_ENABLE_INSTRUCTIONS=AVX2, inductor
cpp.simdlen 8); target: 0.8 x the native row's ratio.
On a machine without AVX-512 both builds are nearly the same code.

Effective GFLOP/s = img/s x 2 x forward multiply-adds per image (`cnngen --summary`)
x 3 for a training step (forward + input gradient + weight gradient) or x 1 for a forward
row. The network rows do not compute the first layer's input gradient (neither side does:
a trainer does not need it), so their x 3 is the nominal count; the single-layer fwd+bwd
rows compute it on both sides (step.c --dx, x.requires_grad_()), so x 3 is exact there.
Fraction of peak = that / the 2-thread FMA peak measured by bench/fma_peak.c in this run
(best of its 5 repetitions at the start and 5 more after every row: load can only lower
a peak).

The machine must be otherwise idle: before each measurement the harness waits (up to
--quiet-wait seconds) until other processes use < 0.1 core, and during each measurement it
records the CPU time the rest of the machine used (/proc/stat busy time minus the
benchmark's own) and the CPU share its own threads got (process CPU time / wall / threads);
rows with > 0.1 core of foreign load, or whose counted 1-thread run got < 0.9 of its core,
are marked NOISY. With two
cores, a competing process makes OpenMP's spinning barriers descheduled for whole
scheduler slices: 2-thread runs then slow down 10-100x.

Tuning (unless --no-tune): before measuring a spec, bench/tune.py times every candidate
schedule of its layers on this machine and writes the winners to --wisdom
(build/bench/wisdom.tsv); the row's cnngen figure is the build with that wisdom, and the
build with the built-in heuristics is measured alongside. The table's "target needs"
column is the target x PyTorch's effective GFLOP/s as a share of the FMA peak: a miss
above 100 % is marked "(above peak)".

Checked before timed (unless --no-check): every build made with this run's wisdom (the
tuned build of a row with a target, its team build) is generated again as a trainer,
compiled with the same flags and compared with PyTorch in float64 by tests/torch_ref.py
check at its default batches (2 and 3 with batch norm; a team's replicas split them).
The heuristic builds are the code make test's check-torch covers; the wisdom's schedules
are each covered by schedules-check, but not in this combination. A build that differs
from PyTorch stops the bench: its speed would mean nothing. At the full batch (every lane
of the batch-innermost code holding a sample) the check runs on the spec's smooth twin,
each ReLU a tanh (the same layers, so the same schedules from the wisdom; the ReLU
fusions aside, the same code): at batch 33-64 some of ResNet-20's ~10^5 ReLU inputs a
layer lie within float32 rounding of zero, and a sign that flips there moves an early
layer's weight gradient past the limit, in heuristic and tuned builds alike, for some
seeds and not others (bench/RESULTS.md, session 45).

Writes bench/results/<date>-<host>.json and bench/results/latest.md; prints the table.
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import shlex
import socket
import statistics
import subprocess
import sys
import time

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
PY = "/usr/bin/python3"

# name, spec, mode, issue 4's PyTorch best (value, unit), target ratio (None: no target)
WORKLOADS = [
    ("LeNet-5, batch 1 (single-sample SGD)", "bench/specs/lenet5_b1.yaml", "train", (1740, "img/s"), 10.0),
    ("LeNet-5, batch 64", "specs/lenet5.yaml", "train", (12250, "img/s"), 5.0),
    ("batch-norm net, batch 64", "specs/bnnet.yaml", "train", (1990, "img/s"), 3.0),
    ("VGG-16 on 3x32x32, batch 32", "specs/vgg16_cifar.yaml", "train", (131, "img/s"), 1.2),
    ("MLP 256->512->512->16, batch 128", "bench/specs/mlp.yaml", "train", None, 1.5),
    ("ResNet-20 (1x28x28), batch 64", "bench/specs/resnet20_b64.yaml", "train", None, 1.5),
    ("3x3 conv 64->64 on 56x56, batch 8, fwd", "bench/specs/conv64.yaml", "fwd", None, None),
    ("3x3 conv 64->64 on 56x56, batch 8, fwd+bwd", "bench/specs/conv64.yaml", "train_dx", (346, "GFLOP/s"), 1.0),
    ("3x3 conv 3->64 on 224x224, batch 4, fwd", "bench/specs/conv3_224.yaml", "fwd", None, None),
    ("3x3 conv 3->64 on 224x224, batch 4, fwd+bwd", "bench/specs/conv3_224.yaml", "train_dx", (79, "GFLOP/s"), 1.5),
    ("5x5 conv 1->6 pad 2 on 28x28, batch 64, fwd", "bench/specs/conv5.yaml", "fwd", None, None),
    ("5x5 conv 1->6 pad 2 on 28x28, batch 64, fwd+bwd", "bench/specs/conv5.yaml", "train_dx", (20.5, "GFLOP/s"), 3.0),
]
RSS_NETS = ("lenet5", "vgg16_cifar")
# training rows also timed as a team of 2 (cnngen --team 2: two replicas of half the batch,
# one a thread, batch norm's statistics summed over the team; runtime/team.c), a third
# thread setting besides 1 and 2 threads: the fastest of the three counts
TEAM_NETS = ("resnet20_b64",)
TEAM = 2
# code-size and compile-time budgets (issue 10 item 5, issue 11): name, spec, limits on the
# generator's CPU seconds, the C file's bytes, and gcc -O2's CPU seconds (None: no limit)
BUDGETS = [
    ("LeNet-5", "specs/lenet5.yaml", None, None, 5.0),
    ("VGG-16 (224)", "specs/vgg16.yaml", None, None, 30.0),
    ("ResNet-18 (224)", "specs/resnet18.yaml", 1.0, None, 60.0),
    ("31x31 kernel on 256x256", "bench/specs/k31.yaml", None, 5e6, None),
]
# check_build's lines, for the report
CHECKED = []
STEP_FLAGS = {"train": [], "train_dx": ["--dx"], "fwd": ["--fwd"]}
AVX2_MARCH = "haswell"
AVX2_TARGET = 0.8  # x the native row's ratio


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT, **kw).stdout


# ---------------------------------------------------------------- machine load

def cpu_busy():
    """(busy, total) jiffies over all CPUs; busy includes steal (the hypervisor's share)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v[:8]) - idle, sum(v[:8])


HZ = os.sysconf("SC_CLK_TCK")


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


QUIET = {"budget": 0.0, "waited": 0.0}
BUDGET_ROWS = []


def wait_quiet(max_wait, threshold=0.1):
    """Wait until the rest of the machine uses < threshold cores (0.5 s samples), at most
    max_wait seconds this time and --quiet-budget seconds over the whole run."""
    t0 = time.time()
    while True:
        t = time.time()
        b0, _ = cpu_busy()
        time.sleep(0.5)
        b1, _ = cpu_busy()
        load = (b1 - b0) / HZ / 0.5
        left = min(max_wait - (time.time() - t0), QUIET["budget"] - QUIET["waited"])
        if load < threshold or left <= 0:
            QUIET["waited"] += time.time() - t
            return load
        log(f"  waiting for a quiet machine: other processes use {load:.2f} cores")
        time.sleep(max(0.0, min(2.0, left)))
        QUIET["waited"] += time.time() - t


def measured(cmd, env=None):
    """Run cmd; return (stdout, foreign cores during the run)."""
    b0, _ = cpu_busy()
    c0 = children_cpu()
    t0 = time.time()
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env).stdout
    wall = time.time() - t0
    b1, _ = cpu_busy()
    foreign = max(0.0, ((b1 - b0) / HZ - (children_cpu() - c0)) / wall)
    return out, foreign


# ---------------------------------------------------------------- pieces

def macs(spec):
    out = sh(["build/cnngen", "--summary", spec])
    m = re.search(r"multiply-adds per sample \(forward\):\s*([\d,]+)", out)
    return int(m.group(1).replace(",", ""))


def cpu_of(cmd):
    """Run cmd; its CPU seconds (user + system) and wall seconds."""
    c0, t0 = children_cpu(), time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return children_cpu() - c0, time.time() - t0


def budgets(a):
    """Generation time, C size and gcc -O2 compile time of the budget specs (default
    target, as a user gets it); CPU seconds, so that a shared machine does not inflate them."""
    out = []
    for label, spec, gen_max, size_max, cc_max in BUDGETS:
        name = os.path.splitext(os.path.basename(spec))[0]
        d = os.path.join(a.build, "budget", name)
        os.makedirs(d, exist_ok=True)
        gen, _ = cpu_of(["build/cnngen", spec, "-o", d])
        c = os.path.join(d, name + ".c")
        size = os.path.getsize(c)
        cc, _ = cpu_of([a.cc, "-O2", "-march=native", "-fopenmp", "-std=c11", "-D_POSIX_C_SOURCE=200809L",
                        "-Iruntime", "-c", c, "-o", os.path.join(d, name + ".o")])
        r = {"label": label, "spec": spec, "gen_cpu_s": round(gen, 2), "c_bytes": size,
             "cc_cpu_s": round(cc, 1), "gen_max": gen_max, "size_max": size_max, "cc_max": cc_max}
        r["pass"] = ((gen_max is None or gen <= gen_max) and (size_max is None or size < size_max)
                     and (cc_max is None or cc <= cc_max))
        log(f"bench: budget {label}: generated in {gen:.2f} CPU-s, {size / 1e6:.2f} MB of C, "
            f"gcc -O2 {cc:.1f} CPU-s: {'PASS' if r['pass'] else 'MISS'}")
        out.append(r)
    return out


def budget_table(rows):
    def lim(v, fmt):
        return f" (≤ {fmt(v)})" if v is not None else ""
    lines = ["| spec | generation, CPU s | C | gcc -O2, CPU s | result |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} (`{r['spec']}`) | {r['gen_cpu_s']:.2f}{lim(r['gen_max'], lambda v: f'{v:g}')} | "
                     f"{r['c_bytes'] / 1e6:.2f} MB{' (< %g MB)' % (r['size_max'] / 1e6) if r['size_max'] else ''} | "
                     f"{r['cc_cpu_s']:.1f}{lim(r['cc_max'], lambda v: f'{v:g}')} | {'PASS' if r['pass'] else 'MISS'} |")
    return "\n".join(lines)


def tune(spec, a, team=0):
    """bench/tune.py on this machine: every candidate schedule of every distinct layer of
    spec timed, the winners written to a.wisdom (kept across runs, one line per ISA and
    layer signature). Returns the seconds it took."""
    wait_quiet(a.quiet_wait)
    t0 = time.time()
    out = sh([PY, "bench/tune.py", spec, "--wisdom", a.wisdom, "--cc", a.cc, "--opt", a.opt, "--libs", a.libs,
              "--reps", "3", "--rep-s", "0.25"]
             # a team's replica: its layers at batch / team, on one thread
             + (["--team", str(team), "--threads", "1"] if team else []))
    for line in out.splitlines():
        if "x the heuristic" in line or line.startswith("tune: whole network"):
            log("  " + line)
    return time.time() - t0


def schedules(spec, wisdom=None):
    """The schedule of each layer, as `cnngen --summary` prints it (layer index -> name)."""
    out = sh(["build/cnngen", "--summary", spec] + (["--wisdom", wisdom] if wisdom else []))
    got = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\d+)\s+(\w+)\s.*\s(\S+)\s*$", line.replace(" (wisdom)", ""))
        if m and m.group(2) != "layer" and "Schedules" not in line:
            got[int(m.group(1))] = m.group(3)
    return got


def generate(spec, d, wisdom=None, team=0):
    """build/cnngen on spec into d (with wisdom's schedules, for one of a team) -> the .c"""
    return sh(["build/cnngen", spec, "-o", d] + (["--wisdom", wisdom] if wisdom else [])
              + (["--team", str(team)] if team else [])).strip().splitlines()[-1]


def build_step(spec, a, march=None, wisdom=None, team=0):
    """The step binary: release flags, or with march (the AVX2 rows) -march=MARCH for the
    trainer and the runtime alike (runtime/*.c compiled in, not the native libcnngen.a);
    with wisdom, the schedules the tuner chose on this machine."""
    name = os.path.splitext(os.path.basename(spec))[0]
    d = os.path.join(a.build, name + (f"_team{team}" if team else "") + ("_tuned" if wisdom else ""))
    os.makedirs(d, exist_ok=True)
    c = generate(spec, d, wisdom, team)
    opt = shlex.split(a.opt)
    rt = ["build/libcnngen.a"]
    if march:
        opt = [f for f in opt if not f.startswith("-march=")] + [f"-march={march}"]
        rt = sorted(os.path.join("runtime", f) for f in os.listdir(os.path.join(ROOT, "runtime"))
                    if f.endswith(".c"))
    exe = os.path.join(d, "step_" + name + (f"_{march}" if march else "") + (f"_team{team}" if team else "")
                       + ("_tuned" if wisdom else ""))
    cmd = ([a.cc] + opt + ["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-Iruntime",
           "-DCNNGEN_NO_MAIN", f"-DCG_NET={name}_net", c, "bench/step.c"] + rt
           + shlex.split(a.libs) + ["-o", exe])
    sh(cmd)
    return name, exe


def smooth_twin(spec, s, d):
    """The spec (path spec, loaded s) with every relu a tanh (names kept), written into d:
    the same layers and shapes, so the same schedules from a wisdom file, and no ReLU
    kinks. -> its path, or None when the spec has no relu."""
    n = 0
    for i, layer in enumerate(s["layers"]):
        if layer == "relu":
            s["layers"][i], n = "tanh", n + 1
        elif isinstance(layer, dict) and "relu" in layer:
            s["layers"][i], n = {"tanh": layer["relu"]}, n + 1
    if not n:
        return None
    path = os.path.join(d, os.path.basename(spec))
    with open(path, "w") as f:
        f.write(f"# {spec} with every relu a tanh (bench/run.py's smooth_twin)\n")
        yaml.safe_dump(s, f, sort_keys=False)
    return path


def check_build(spec, a, wisdom, team=0):
    """The build's generated code as a trainer (same flags) against PyTorch in float64
    (tests/torch_ref.py check): at its default batches, and at train.batch (every lane
    full) the spec's smooth twin when it has ReLUs, else the spec itself; exits the bench
    when they differ. -> a line for the report."""
    name = os.path.splitext(os.path.basename(spec))[0]
    what = f"{name}{f' (team of {team})' if team else ''} with {os.path.relpath(wisdom, ROOT) if wisdom else 'no wisdom'}"
    verdicts = []
    d0 = os.path.join(a.build, "check", name + (f"_team{team}" if team else ""))
    os.makedirs(os.path.join(d0, "twin"), exist_ok=True)
    with open(os.path.join(ROOT, spec)) as f:
        s = yaml.safe_load(f)
    twin = smooth_twin(spec, s, os.path.join(d0, "twin"))
    full = int(s["train"]["batch"])
    cases = [(spec, d0, [])]
    if twin:
        cases.append((twin, os.path.join(d0, "twin"), ["--batch", str(full)]))
    else:
        cases[0] = (spec, d0, ["--batch"] + [str(b) for b in (2, 3, full) if b <= full])
    for sp, d, batches in cases:
        c = generate(sp, d, wisdom, team)
        exe = os.path.join(d, name)
        sh([a.cc] + shlex.split(a.opt) + ["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-Iruntime", c, "build/libcnngen.a"]
           + shlex.split(a.libs) + ["-o", exe])
        env = dict(os.environ, OMP_NUM_THREADS=str(max(team, 1)))
        r = subprocess.run([PY, "tests/torch_ref.py", "check", sp, exe, os.path.join(d, "work")] + batches, cwd=ROOT,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            sys.exit(f"bench: {what}{' (its smooth twin)' if sp == twin else ''} differs from PyTorch; not timed:\n"
                     f"{r.stdout[-6000:]}")
        verdicts += [l[len("check-torch "):].replace(sp, "its smooth twin" if sp == twin else spec)
                     for l in r.stdout.splitlines() if l.startswith("check-torch ")]
    log(f"bench: {what}: " + "; ".join(verdicts))
    return f"{what}: " + "; ".join(verdicts)


def run_cnngen(exe, mode, threads, a, team=0):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    wait_quiet(a.quiet_wait)
    out, foreign = measured([exe, "0", str(a.reps), "--rep-s", str(a.rep_s), "--warmup-s", str(a.warmup_s)]
                            + STEP_FLAGS[mode] + ["--ieee-subnormals"] * a.ieee_subnormals
                            + (["--team", str(team)] if team else []), env)
    r = json.loads(out.strip().splitlines()[-1])
    r["foreign_cores"] = round(foreign, 3)
    return r


def torch_builds(a):
    """The PyTorch builds to measure: [(label, interpreter, torch_bench.py arguments)], and a
    note when PyPI's is missing."""
    builds = [("Debian eager", PY, ["--openblas", "1,2"])]
    vpy = os.path.join(a.venv, "bin", "python")
    status = a.venv + ".status"
    if os.path.exists(status) or not os.path.exists(vpy):
        why = " ".join(open(status).read().split()) if os.path.exists(status) else f"{vpy} does not exist"
        return builds, f"PyPI's torch could not be used ({why}); Debian's python3-torch only."
    note = " ".join(open(a.venv + ".note").read().split()) if os.path.exists(a.venv + ".note") else ""
    return builds + [("PyPI eager", vpy, []), ("PyPI compile", vpy, ["--compile"])], note


def run_torch(spec, mode, a, python, extra):
    """bench/torch_bench.py under one interpreter: its configurations and best."""
    wait_quiet(a.quiet_wait)
    out, foreign = measured([python, "bench/torch_bench.py", spec, "--mode", mode, "--reps", str(a.reps),
                             "--rep-s", str(a.rep_s), "--warmup-s", str(a.torch_warmup_s)]
                            + ["--ieee-subnormals"] * a.ieee_subnormals + extra)
    r = json.loads(out.strip().splitlines()[-1])
    for c in r["configs"]:
        c["foreign_cores"] = round(foreign, 3)
    return r


def torch_best(configs):
    best = max(configs, key=lambda c: c["img_per_s"])
    return {"configs": configs, "best": {k: best[k] for k in CONFIG_KEYS},
            "foreign_cores": max(c["foreign_cores"] for c in configs)}


def merge_runs(runs):
    """One configuration's results from several sweep rounds as one: img/s the median of
    the rounds' medians (each round's in round_img_per_s), CPU shares and repetitions
    pooled, the worst foreign load and the largest peak memory."""
    m = dict(runs[-1])
    m["round_img_per_s"] = [r["img_per_s"] for r in runs]
    m["round_xcore_ns"] = [r.get("xcore_ns") for r in runs]
    m["img_per_s"] = round(statistics.median(m["round_img_per_s"]), 1)
    for k in ("runs", "cpu_per_wall"):
        if all(k in r for r in runs):
            m[k] = [v for r in runs for v in r[k]]
    for k in ("foreign_cores", "maxrss_kb"):
        if all(k in r for r in runs):
            m[k] = max(r[k] for r in runs)
    return m


def sweep(jobs, rounds, probe=lambda: None):
    """Run every job (name, fn) once a round for `rounds` rounds, the order reversed every
    other round, so that cnngen's and PyTorch's configurations all meet the shared
    machine's slow and fast minutes (its speed moves up to 1.7x between minutes,
    bench/RESULTS.md session 23) instead of each side being timed in its own minutes.
    probe() runs before every job; its value is kept in the job's result (and each of its
    configs) as xcore_ns. Returns {name: [result of each round]}."""
    out = {name: [] for name, _ in jobs}
    for i in range(rounds):
        for name, fn in (jobs if i % 2 == 0 else jobs[::-1]):
            # the cores' distance just before the job (bench/xcore.c): on a 2-vCPU VM
            # near and far placements differ 1.6x for a 2-thread step (session 37)
            ns = probe()
            r = fn()
            for k in (r.get("configs") or [r]):
                k["xcore_ns"] = ns
            out[name].append(r)
        if rounds > 1:
            log(f"  sweep round {i + 1} of {rounds} done")
    return out


def run_torch_isa(spec, mode, a, builds, best, isa):
    """PyTorch's best configuration again, its kernels limited to isa (None: as measured).
    Its process runs 1 thread, then 2, as the sweep's does, and the best's thread count is
    kept: Debian's 1.13 in channels_last ran ResNet-20 b64 on 2 threads at ~700 img/s in a
    process of its own and ~820 after a 1-thread run in the same process (session 41)."""
    python = {"Debian": PY}.get(best["build"]) or os.path.join(a.venv, "bin", "python")
    extra = ["--tunables", "on" if best["tunables"] else "off",
             "--formats", best["memory_format"]]
    extra += ["--isa", isa] if isa else []
    extra += ["--openblas", str(best["openblas_threads"])] if best["openblas_threads"] else []
    extra += ["--compile"] if best["exec"] == "compile" else []
    r = run_torch(spec, mode, a, python, extra)
    r["configs"] = [c for c in r["configs"] if c["threads"] == best["threads"]]
    r["foreign_cores"] = r["configs"][0]["foreign_cores"]
    r["best"] = {k: r["configs"][0][k] for k in CONFIG_KEYS}
    return r


CONFIG_KEYS = ("img_per_s", "threads", "memory_format", "tunables", "openblas_threads", "build", "exec",
               "blas", "isa", "torch", "flush_denormal")


def torch_config_text(t):
    """e.g. 'PyPI 2.5.1 compile, MKL, 2 thr, tunables on' """
    s = f"{t['build']} {t['torch']} {t['exec']}, {t['blas']}, {t['threads']} thr"
    if t.get("openblas_threads"):
        s += f" (OpenBLAS {t['openblas_threads']})"
    s += f", tunables {'on' if t['tunables'] else 'off'}"
    if t.get("memory_format", "contiguous") != "contiguous":
        s += f", {t['memory_format']}"
    if t.get("isa", "native") != "native":
        s += f", {t['isa'].upper()} only"
    return s


def fma_peak(a):
    out, foreign = measured([a.fma_peak])
    r = json.loads(out)
    r["foreign_cores"] = round(foreign, 3)
    return r


def xcore(a):
    """The first two CPUs' distance now: a cache line's round trip in ns (bench/xcore.c),
    None when not measurable. Never fails the bench."""
    try:
        out = subprocess.run([a.xcore], check=True, stdout=subprocess.PIPE, text=True,
                             cwd=ROOT, timeout=30).stdout
        return json.loads(out).get("round_trip_ns")
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def machine_info(a):
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    flags = open("/proc/cpuinfo").read()
    try:
        commit = sh(["git", "rev-parse", "--short", "HEAD"]).strip()
        dirty = bool(sh(["git", "status", "--porcelain", "--untracked-files=no"]).strip())
    except Exception:
        commit, dirty = "?", False
    return {"host": socket.gethostname(), "cpu": model, "cpus": os.cpu_count(),
            "avx512f": " avx512f" in flags, "kernel": platform.release(),
            "cc": sh([a.cc, "--version"]).splitlines()[0], "opt": a.opt,
            "commit": commit + ("-dirty" if dirty else ""),
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


# ---------------------------------------------------------------- report

def thr_text(c):
    """cnngen's thread setting as the tables show it: 1, 2, or "team of 2" """
    return f"team of {c['team']}" if c.get("team") else str(c["threads"])


def fmt_int(v):
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def result_text(r, peak2=None):
    res = ("PASS" if r["ratio"] >= r["target"] else "MISS") if r["target"] and r["ratio"] == r["ratio"] else ""
    if res == "MISS" and peak2 and (r.get("target_gflops") or 0) > peak2:
        res += " (above peak)"
    return (res + " NOISY").strip() if r["noisy"] else res


def needs_text(r, peak2):
    """The target as arithmetic: target x PyTorch's effective GFLOP/s, and its share of
    the 2-thread FMA peak (> 100 %: out of reach for any schedule of the same multiply-adds)."""
    g = r.get("target_gflops")
    return f"{g:.0f} ({100 * g / peak2:.0f}%)" if g else "—"


def table(rows, peak2):
    tuned = any(r.get("tuning") for r in rows)
    head = ["workload", "cnngen img/s (thr)" + (", tuned" if tuned else "")] + \
        (["heuristic schedules img/s (thr)"] if tuned else []) + \
        ["PyTorch best img/s", "PyTorch's best configuration", "ratio"] + \
        (["ratio in alternating rounds"] if any(r.get("rounds") for r in rows) else []) + \
        ["target", "result", "cnngen GFLOP/s", "% of 2-thr peak", "PyTorch GFLOP/s",
         "target needs GFLOP/s (% of peak)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        c, t, h = r["cnngen"], r["torch"], r.get("cnngen_heuristic")
        lines.append("| " + " | ".join([
            r["workload"],
            f"{fmt_int(c['img_per_s'])} ({thr_text(c)})"] +
            ([f"{fmt_int(h['img_per_s'])} ({h['threads']})" if h else
              "(same schedules)" if r.get("tuning") else "(not tuned)"] if tuned else []) + [
            fmt_int(t["img_per_s"]), torch_config_text(t) if t["threads"] else "—",
            f"{r['ratio']:.2f}×"] +
            ([f"{r['rounds']['ratio']:.2f}× ({len(r['rounds']['cnngen'])})" if r.get("rounds") else "—"]
             if any(q.get("rounds") for q in rows) else []) + [
            f"≥ {r['target']:g}×" if r["target"] else "—", result_text(r, peak2),
            f"{r['cnngen_gflops']:.1f}",
            f"{100 * r['cnngen_gflops'] / peak2:.0f}%",
            f"{r['torch_gflops']:.1f}", needs_text(r, peak2)]) + " |")
    return "\n".join(lines)


def avx2_table(rows):
    head = ["workload", f"cnngen -march={AVX2_MARCH} img/s (thr)", "PyTorch AVX2 img/s", "its configuration",
            "ratio", "native ratio", "target", "result"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        c, t = r["cnngen"], r["torch"]
        lines.append("| " + " | ".join([
            r["workload"], f"{fmt_int(c['img_per_s'])} ({thr_text(c)})", fmt_int(t["img_per_s"]),
            torch_config_text(t), f"{r['ratio']:.2f}×", f"{r['native_ratio']:.2f}×",
            f"≥ {r['target']:.2f}× ({AVX2_TARGET:g} × native)", result_text(r)]) + " |")
    return "\n".join(lines)


def builds_table(rows):
    """Each PyTorch build's best per workload: which PyTorch is fastest where."""
    labels = []
    for r in rows:
        for k in r["torch_runs"]:
            lab = f"{k['build']} {k['torch']} {k['exec']} ({k['blas']})"
            if lab not in labels:
                labels.append(lab)
    lines = ["| workload | " + " | ".join(labels) + " |", "|" + "---|" * (len(labels) + 1)]
    for r in rows:
        cells = []
        for lab in labels:
            ks = [k for k in r["torch_runs"] if f"{k['build']} {k['torch']} {k['exec']} ({k['blas']})" == lab]
            if not ks:
                cells.append("—")
                continue
            b = max(ks, key=lambda k: k["img_per_s"])
            ob = f", OpenBLAS {b['openblas_threads']}" if b["openblas_threads"] else ""
            mf = ", channels_last" if b.get("memory_format") == "channels_last" else ""
            cells.append(f"{fmt_int(b['img_per_s'])} ({b['threads']} thr{ob}, tunables "
                         f"{'on' if b['tunables'] else 'off'}{mf})")
        lines.append("| " + r["workload"] + " | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rss_lines(rss):
    out = []
    for n, v in rss.items():
        out.append(f"- {n}: cnngen step peak RSS {v['maxrss_kb'] / 1024:.1f} MiB = "
                   f"{v['ratio']:.2f}× the planned minimum {v['planned_bytes'] / 2**20:.1f} MiB "
                   f"(params + grads + momentum + buffers + workspace + one batch; the process "
                   f"before allocating held {v['rss_start_kb'] / 1024:.1f} MiB: "
                   f"{(v['maxrss_kb'] - v['rss_start_kb']) * 1024 / v['planned_bytes']:.2f}× above that); "
                   f"PyTorch's process peaked at {v['torch_maxrss_kb'] / 1024:.0f} MiB")
    return out


def measure_row(workload, spec, mode, exe, m, target, a, torch_jobs, peak2, exe_h=None, rerun=None, exe_team=None):
    """cnngen on 1 and 2 threads against PyTorch: torch_jobs, a list of functions each
    returning a run_torch-like {"configs": [...]} (one a build). exe is the build that
    counts (tuned when tuning); exe_h, when given, the heuristic build, measured alongside
    for the record. Rows with a target are swept in --sweep-rounds interleaved rounds
    (sweep()): every configuration's img/s is the median of its rounds. rerun(best), when
    given: PyTorch's best configuration run once more (img/s), for --rounds rounds
    alternating with cnngen. exe_team, when given: the same network generated for a team of
    TEAM, timed as a third thread setting ("team")."""
    rounds = a.sweep_rounds if target else 1
    jobs = [(("cg", t), (lambda t=t: run_cnngen(exe, mode, t, a))) for t in (1, 2)]
    if exe_team:
        jobs += [(("cg", "team"), (lambda: run_cnngen(exe_team, mode, TEAM, a, team=TEAM)))]
    nthr = {1: 1, 2: 2, "team": TEAM}
    run_of = {1: lambda: run_cnngen(exe, mode, 1, a), 2: lambda: run_cnngen(exe, mode, 2, a),
              "team": lambda: run_cnngen(exe_team, mode, TEAM, a, team=TEAM)}
    if exe_h:
        jobs += [(("h", t), (lambda t=t: run_cnngen(exe_h, mode, t, a))) for t in (1, 2)]
    if not a.no_torch:
        jobs += [(("torch", i), f) for i, f in enumerate(torch_jobs)]
    res = sweep(jobs, rounds, lambda: xcore(a))
    cg = {t: merge_runs(res[("cg", t)]) for t in ((1, 2, "team") if exe_team else (1, 2))}
    best_t = max(cg, key=lambda t: cg[t]["img_per_s"])
    c = cg[best_t]
    def ns_text(v):
        return f" @{v:.0f} ns" if isinstance(v, (int, float)) else ""
    rtext = (lambda r: " (rounds " + ", ".join(f"{v:,.1f}{ns_text(n)}" for v, n in
                                                zip(r["round_img_per_s"], r["round_xcore_ns"])) + ")"
             if rounds > 1 else "")
    log(f"  cnngen  {cg[1]['img_per_s']:>10,.1f} img/s (1 thr)  {cg[2]['img_per_s']:>10,.1f} (2 thr)"
        + (f"  {cg['team']['img_per_s']:>10,.1f} (team of {TEAM})" if exe_team else "")
        + ("  tuned" if exe_h else "") + rtext(cg[best_t]))
    heur = None
    if exe_h:
        ch = {t: merge_runs(res[("h", t)]) for t in (1, 2)}
        bh = max(ch, key=lambda t: ch[t]["img_per_s"])
        heur = {"img_per_s": ch[bh]["img_per_s"], "threads": bh}
        log(f"  cnngen  {ch[1]['img_per_s']:>10,.1f} img/s (1 thr)  {ch[2]['img_per_s']:>10,.1f} (2 thr)  heuristic"
            + rtext(ch[bh]))
    if a.no_torch:
        t = {"best": {"img_per_s": float("nan"), "threads": 0, "tunables": False}, "configs": []}
    else:
        # the same configuration in every round: matched by everything but its speed
        byconf = {}
        for i in range(len(torch_jobs)):
            for r in res[("torch", i)]:
                for k in r["configs"]:
                    byconf.setdefault(tuple(k.get(f) for f in CONFIG_KEYS if f != "img_per_s"), []).append(k)
        t = torch_best([merge_runs(v) for v in byconf.values()])
        for k in t["configs"]:
            log(f"  pytorch {k['img_per_s']:>10,.1f} img/s ({torch_config_text(k)})" + rtext(k))
    tb = t["best"]
    flops = 2.0 * m * (1 if mode == "fwd" else 3)
    foreign = max([k["foreign_cores"] for k in cg.values()] + [t.get("foreign_cores", 0)])
    # CPU the counted runs actually got: process CPU time / wall / threads (1.0 = every
    # thread ran the whole time; spinning OpenMP barriers keep it near 1.0 when idle)
    cpu_share = statistics.median(c["cpu_per_wall"]) / nthr[best_t]
    tbest = [k for k in t["configs"] if k["img_per_s"] == tb["img_per_s"]]
    torch_share = (statistics.median(tbest[0]["cpu_per_wall"]) / tbest[0]["threads"]) if tbest else 1.0
    row = {
        "workload": workload, "spec": spec, "mode": mode, "batch": c["batch"],
        "macs_per_image": m, "flops_per_image": flops,
        "cnngen": {"img_per_s": c["img_per_s"], "threads": nthr[best_t], "team": TEAM if best_t == "team" else 0,
                   "config": best_t,
                   "flush_subnormals": c.get("flush_subnormals")},
        "sweep_rounds": rounds,
        "torch": tb,
        "ratio": c["img_per_s"] / tb["img_per_s"] if tb["img_per_s"] else float("nan"),
        "cnngen_gflops": c["img_per_s"] * flops * 1e-9,
        "torch_gflops": tb["img_per_s"] * flops * 1e-9,
        "target": target,
        "cnngen_heuristic": heur,
        # the roofline: what the target asks for, against what the FMA units can do
        "target_gflops": (target * tb["img_per_s"] * flops * 1e-9) if target and tb["img_per_s"] else None,
        "max_foreign_cores": foreign, "cnngen_cpu_share": round(cpu_share, 3),
        "torch_cpu_share": round(torch_share, 3),
        # a 1-thread run must own its core; 2-thread runs may legitimately sleep in
        # serial parts, so for them only the foreign load counts
        "noisy": foreign > 0.1 or (best_t == 1 and cpu_share < 0.9)
        or (bool(tbest) and tbest[0]["threads"] == 1 and torch_share < 0.9),
        "cnngen_runs": cg, "torch_runs": t["configs"],
    }
    log(f"  ratio {row['ratio']:.2f}x" + (f" (target {target:.2f}x)" if target else "")
        + f", cnngen {row['cnngen_gflops']:.1f} GFLOP/s ({100 * row['cnngen_gflops'] / peak2:.0f}% of the peak so far)"
        + ("  NOISY" if row["noisy"] else ""))
    if rerun and a.rounds > 0 and tb["img_per_s"] == tb["img_per_s"]:
        # each side above was timed in its own minutes, and a shared machine's speed moves
        # 10-70 % from one minute to the next (bench/RESULTS.md, session 19): the two
        # again, alternately, so that both meet the same phases; for the record (the
        # result above stays the sequential ratio)
        cs, ts, cn, tn = [], [], [], []
        for _ in range(a.rounds):
            tn.append(xcore(a))
            ts.append(rerun(tb))
            cn.append(xcore(a))
            cs.append(run_of[best_t]()["img_per_s"])
        row["rounds"] = {"cnngen": cs, "torch": ts, "ratio": statistics.median(cs) / statistics.median(ts),
                         "cnngen_xcore_ns": cn, "torch_xcore_ns": tn}
        log(f"  in {a.rounds} alternating rounds: cnngen {', '.join(f'{v:.1f}{ns_text(n)}' for v, n in zip(cs, cn))}, "
            f"pytorch {', '.join(f'{v:.1f}{ns_text(n)}' for v, n in zip(ts, tn))} img/s: "
            f"ratio of medians {row['rounds']['ratio']:.2f}x")
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cc", default=os.environ.get("CC", "cc"))
    p.add_argument("--opt", default="-O3 -march=native -fopenmp")
    p.add_argument("--libs", default="-lzip -lz -lm")
    p.add_argument("--build", default=os.path.join(ROOT, "build", "bench"))
    p.add_argument("--fma-peak", default=os.path.join(ROOT, "build", "bench", "fma_peak"))
    p.add_argument("--xcore", default=os.path.join(ROOT, "build", "bench", "xcore"),
                   help="bench/xcore.c's binary: the two CPUs' distance before every timed job")
    p.add_argument("--venv", default=os.path.join(ROOT, "build", "bench-venv"),
                   help="virtual environment with PyPI's torch (bench/pypi_torch.sh)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--rep-s", type=float, default=0.5, help="seconds per timed repetition")
    p.add_argument("--warmup-s", type=float, default=1.0, help="cnngen warm-up seconds")
    p.add_argument("--torch-warmup-s", type=float, default=1.5,
                   help="PyTorch warm-up seconds (after its first step, which compiles under torch.compile)")
    p.add_argument("--quiet-wait", type=float, default=30,
                   help="max seconds to wait for an idle machine before each measurement")
    p.add_argument("--quiet-budget", type=float, default=240,
                   help="max seconds of such waiting over the whole run")
    p.add_argument("--only", default="", help="comma-separated spec names (e.g. lenet5,conv64; "
                   "'budgets' for the code-size and compile-time table)")
    p.add_argument("--no-fwd", dest="fwd", action="store_false",
                   help="leave out the forward-only rows (they have no target)")
    p.add_argument("--no-budgets", dest="budgets", action="store_false",
                   help="leave out the code-size and compile-time budgets")
    p.add_argument("--no-tune", dest="tune", action="store_false",
                   help="the built-in schedule heuristics only (default: tune each spec on this machine "
                        "first, bench/tune.py, and measure both the tuned and the heuristic build)")
    p.add_argument("--tune-only", default="",
                   help="comma-separated spec names to tune (default: every one; VGG-16's tuning takes minutes)")
    p.add_argument("--wisdom", default=os.path.join(ROOT, "build", "bench", "wisdom.tsv"),
                   help="the tuner's wisdom file for the bench (default build/bench/wisdom.tsv)")
    p.add_argument("--sweep-rounds", type=int, default=3,
                   help="rows with a target: every configuration of both sides timed once a round for this many "
                        "rounds, interleaved, the order reversed every other round; each one's img/s is the "
                        "median of its rounds (1: one sequential sweep)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rows with a target: cnngen and PyTorch's best configuration timed again alternately, "
                        "this many rounds, for the record (0: not)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-compile", action="store_true", help="leave torch.compile out (PyPI eager only)")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="time the tuned builds without comparing them with PyTorch first (check_build)")
    p.add_argument("--no-team", action="store_true", help=f"no team-of-{TEAM} build of {', '.join(TEAM_NETS)}")
    p.add_argument("--no-avx2", action="store_true", help="no -march=haswell rows")
    p.add_argument("--ieee-subnormals", action="store_true",
                   help="keep IEEE subnormals on both sides (default: flushed to zero on both)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    a = p.parse_args()
    if a.reps < 5:
        p.error("--reps must be at least 5 (medians of at least 5 repetitions)")
    if a.sweep_rounds < 1:
        p.error("--sweep-rounds must be at least 1")
    os.makedirs(a.build, exist_ok=True)
    QUIET["budget"] = a.quiet_budget
    t_start = time.time()

    info = machine_info(a)
    builds, pypi_note = torch_builds(a)
    if a.no_compile:
        builds = [b for b in builds if "--compile" not in b[2]]
    if pypi_note:
        log("bench: " + pypi_note)
    log(f"bench: {info['cpu']}, {info['cpus']} CPUs, {info['cc']}, {info['opt']}, PyTorch builds: "
        + ", ".join(b[0] for b in builds) + f", commit {info['commit']}")
    wait_quiet(a.quiet_wait)
    peak = fma_peak(a)
    # the peak is an upper bound that load can only lower: take the best repetition, of
    # this run and of one more after every row (a 2-core VM gave 118 GFLOP/s on 2 threads,
    # its 1-thread peak, for the few seconds of one measurement: bench/RESULTS.md, session 23)
    peak1, peak2 = max(peak["runs"]["1"]), max(peak["runs"]["2"])
    peak["best"] = {"1": peak1, "2": peak2}
    log(f"bench: FMA peak ({peak['isa']}) {peak1:.0f} GFLOP/s on 1 thread, {peak2:.0f} on 2")

    def repeak():
        more = fma_peak(a)
        for t in ("1", "2"):
            peak["runs"][t] += more["runs"][t]
            peak["best"][t] = max(peak["runs"][t])
        return peak["best"]["2"]

    only = set(filter(None, a.only.split(",")))
    rows, avx2_rows, rss, built = [], [], {}, {}
    for workload, spec, mode, ref, target in WORKLOADS:
        stem = os.path.splitext(os.path.basename(spec))[0]
        if only and stem not in only:
            continue
        if mode == "fwd" and not a.fwd:
            continue
        if spec not in built:
            exe_h, tuned, tune_s = None, None, 0.0
            if a.tune and (not a.tune_only or stem in a.tune_only.split(",")):
                log(f"bench: tuning {spec} (bench/tune.py -> {os.path.relpath(a.wisdom, ROOT)})")
                tune_s = tune(spec, a)
                tuned = {"seconds": round(tune_s, 1), "heuristic": schedules(spec),
                         "tuned": schedules(spec, a.wisdom)}
                tuned["changed"] = sorted(k for k in tuned["tuned"] if tuned["tuned"][k] != tuned["heuristic"].get(k))
                # the same schedules: one build, measured once
                exe_h = build_step(spec, a)[1] if tuned["changed"] else None
            name, exe = build_step(spec, a, wisdom=a.wisdom if tuned else None)
            # the code this run's wisdom chose, against PyTorch before it is timed
            check = a.check and tuned and target and mode != "fwd"
            if check:
                CHECKED.append(check_build(spec, a, a.wisdom))
            exe_team = None
            if stem in TEAM_NETS and not a.no_team:
                if tuned:
                    log(f"bench: tuning {spec} for a team of {TEAM} (its replicas' layers, one thread)")
                    tuned["team_seconds"] = round(tune(spec, a, team=TEAM), 1)
                exe_team = build_step(spec, a, wisdom=a.wisdom if tuned else None, team=TEAM)[1]
                if check:
                    CHECKED.append(check_build(spec, a, a.wisdom, team=TEAM))
            built[spec] = (name, exe, macs(spec), exe_h, tuned, exe_team)
        name, exe, m, exe_h, tuned, exe_team = built[spec]
        log(f"bench: {workload}")
        # the forward-only rows have no target: PyTorch eager only there (saves compile time)
        row_builds = builds if target else [b for b in builds if "--compile" not in b[2]]
        row = measure_row(workload, spec, mode, exe, m, target, a,
                          [(lambda b=b: run_torch(spec, mode, a, b[1], b[2])) for b in row_builds], peak2, exe_h,
                          (lambda best: run_torch_isa(spec, mode, a, builds, best, None)["best"]["img_per_s"])
                          if target else None, exe_team if mode == "train" else None)
        row["tuning"] = tuned
        if ref:
            row["issue_torch_img_per_s"] = ref[0] if ref[1] == "img/s" else ref[0] * 1e9 / row["flops_per_image"]
        rows.append(row)
        c, cg = row["cnngen"], row["cnngen_runs"]
        if name in RSS_NETS and mode == "train":
            v = dict((k, cg[c["config"]][k]) for k in ("maxrss_kb", "rss_start_kb", "planned_bytes"))
            v["maxrss_kb"] = max(cg[1]["maxrss_kb"], cg[2]["maxrss_kb"])
            v["ratio"] = v["maxrss_kb"] * 1024 / v["planned_bytes"]
            v["torch_maxrss_kb"] = max((k["maxrss_kb"] for k in row["torch_runs"]), default=0)
            rss[name] = v
        if target and not a.no_avx2 and not a.no_torch:
            log(f"bench: {workload}, -march={AVX2_MARCH} against PyTorch limited to AVX2")
            _, exe2 = build_step(spec, a, march=AVX2_MARCH, wisdom=a.wisdom if row.get("tuning") else None)
            r2 = measure_row(workload, spec, mode, exe2, m, AVX2_TARGET * row["ratio"], a,
                             [lambda: run_torch_isa(spec, mode, a, builds, row["torch"], "avx2")], peak2)
            r2["native_ratio"] = row["ratio"]
            avx2_rows.append(r2)
        peak2 = repeak()
        report(a, info, peak, builds, pypi_note, rows, avx2_rows, rss, time.time() - t_start, False)

    if a.budgets and (not only or "budgets" in only):
        BUDGET_ROWS.extend(budgets(a))
    report(a, info, peak, builds, pypi_note, rows, avx2_rows, rss, time.time() - t_start, True)


def report(a, info, peak, builds, pypi_note, rows, avx2_rows, rss, elapsed, done):
    """Write bench/results/<date>-<host>.json and latest.md (after every row, so that an
    interrupted run leaves what it measured) and, when done, print the tables."""
    peak1, peak2 = peak["best"]["1"], peak["best"]["2"]
    for r in rows + avx2_rows:  # against the best peak of the whole run so far
        r["fraction_of_peak_2t"] = r["cnngen_gflops"] / peak2
    tab = table(rows, peak2) if rows else ""
    btab = builds_table(rows) if not a.no_torch else ""
    atab = avx2_table(avx2_rows) if avx2_rows else ""
    rl = rss_lines(rss)
    noisy = [r["workload"] for r in rows if r["noisy"]] + [r["workload"] + " (AVX2)" for r in avx2_rows if r["noisy"]]
    versions = sorted({f"{k['build']} {k['torch']}" for r in rows for k in r["torch_runs"]})
    sub = ("IEEE subnormals kept on both sides (--ieee-subnormals)" if a.ieee_subnormals else
           "subnormals flushed to zero on both sides (cnngen FTZ|DAZ, torch.set_flush_denormal(True))")
    head = (f"Machine: {info['cpu']} ({info['cpus']} CPUs, {'with' if info['avx512f'] else 'without'} AVX-512, "
            f"host `{info['host']}`, Linux {info['kernel']}); "
            f"{info['cc']} `{info['opt']}`; PyTorch {', '.join(versions) or '—'}; cnngen commit {info['commit']}; "
            f"{info['date']}.\n"
            + (pypi_note + "\n" if pypi_note else "") +
            f"FMA peak ({peak['isa']}, bench/fma_peak.c, best of its {len(peak['runs']['2'])} repetitions, 5 at the start and "
            f"5 after every row): {peak1:.0f} GFLOP/s on 1 thread, "
            f"{peak2:.0f} GFLOP/s on 2.\n"
            f"Medians of {a.reps} repetitions of ~{a.rep_s:g} s after warm-up"
            + (f"; rows with a target: every configuration of both sides timed once in each of {a.sweep_rounds} "
               f"interleaved rounds (the order reversed every other round), its figure the median of its rounds"
               if a.sweep_rounds > 1 else "") + "; cnngen best of "
            f"OMP_NUM_THREADS=1/2"
            + ("" if a.no_team else f" and, for {', '.join(TEAM_NETS)}'s training, a team of {TEAM} (cnngen --team {TEAM}: "
               f"{TEAM} replicas of batch / {TEAM}, one a thread, batch norm's statistics summed over them; runtime/team.c)")
            + f"; PyTorch best of {', '.join(b[0] for b in builds)} x set_num_threads 1/2 "
            f"(Debian's also x OPENBLAS_NUM_THREADS 1/2) x glibc malloc tunables off/on "
            f"x memory format contiguous/channels_last ([C, H, W] inputs) "
            f"(fwd rows: eager builds only); {sub}. "
            f"GFLOP/s = img/s x 2 x forward MACs x 3 (training step) or x 1 (fwd). "
            + (f"`make bench` took {elapsed / 60:.1f} min." if done else
               f"**Partial: {len(rows)} of the rows so far, after {elapsed / 60:.1f} min (the run was still going).**"))
    md = ["# `make bench` — latest results", "", head, "", tab, ""]
    tl, seen = [], set()
    for r in rows:
        tu = r.get("tuning")
        if tu and r["spec"] not in seen:
            seen.add(r["spec"])
            ch = ", ".join(f"{k}: {tu['heuristic'].get(k)} -> {tu['tuned'][k]}" for k in tu["changed"])
            tl.append(f"- `{r['spec']}`: tuned in {tu['seconds'] / 60:.1f} min; "
                      + (f"layers changed from the heuristic's schedule: {ch}" if ch else "the heuristic's schedules kept"))
    if tl:
        md += ["Tuning on this machine before measuring (bench/tune.py: every candidate schedule of every distinct "
               "layer timed, the fastest kept; the ratio is the tuned build's, the heuristic build is measured "
               "alongside):", ""] + tl + [""]
    if CHECKED:
        md += ["Checked against PyTorch before timed (tests/torch_ref.py check, float64 reference: the spec at its "
               "default batches, its smooth twin, each ReLU a tanh, at the full batch; bench/run.py's check_build):", ""] + [f"- {c}" for c in CHECKED] + [""]
    if any(r.get("rounds") for r in rows):
        md += ["\"ratio in alternating rounds\": after the sweep, cnngen (its best thread count) and PyTorch's best "
               "configuration timed again one after the other for --rounds rounds (in parentheses), the ratio of their "
               "medians: both sides meet the machine's same slow and fast minutes. For the record; the result column "
               "is the sweep's ratio (its best configurations' medians over the sweep's rounds). " + "; ".join(
                   f"{r['workload']}: cnngen {', '.join(fmt_int(v) for v in r['rounds']['cnngen'])}, PyTorch "
                   f"{', '.join(fmt_int(v) for v in r['rounds']['torch'])} img/s" for r in rows if r.get("rounds")) + ".", ""]
    def ns_list(v):
        return ", ".join("—" if n is None else f"{n:.0f}" for n in v)
    xl = []
    for r in rows:
        if r.get("sweep_rounds", 1) < 2:
            continue
        c = r["cnngen_runs"][r["cnngen"]["config"]]
        tb = [k for k in r["torch_runs"] if k["img_per_s"] == r["torch"]["img_per_s"]]
        if not any(n is not None for n in c.get("round_xcore_ns", [])):
            continue
        t = f"{r['workload']}: the sweep's rounds, cnngen {ns_list(c['round_xcore_ns'])}"
        if tb and tb[0].get("round_xcore_ns"):
            t += f", PyTorch's best {ns_list(tb[0]['round_xcore_ns'])}"
        if r.get("rounds") and "cnngen_xcore_ns" in r["rounds"]:
            t += (f"; alternating rounds, cnngen {ns_list(r['rounds']['cnngen_xcore_ns'])}, PyTorch "
                  f"{ns_list(r['rounds']['torch_xcore_ns'])}")
        xl.append(t)
    if xl:
        md += ["The two CPUs' distance before each timed run (bench/xcore.c: a cache line's round trip between "
               "threads pinned to them, ns; on a 2-vCPU Zen 4 VM ~55 on one CCX and ~340 across CCDs, where a "
               "2-thread cnngen step ran 1.6x slower: bench/RESULTS.md, session 37): " + "; ".join(xl) + ".", ""]
    if any(r.get("target_gflops") for r in rows):
        md += ["\"target needs\" is the target times PyTorch's effective GFLOP/s: above 100 % of the FMA peak, no "
               "schedule of the same multiply-adds can reach it on this machine (only fewer multiplies could: "
               "Winograd or FFT convolution); \"(above peak)\" marks those misses.", ""]
    if btab:
        md += ["Each PyTorch build at its best (threads, OpenBLAS threads, malloc tunables, memory format when channels_last):", "", btab, ""]
    if atab:
        md += [f"AVX2 build: the trainer and runtime with -march={AVX2_MARCH}, against PyTorch's best "
               "configuration above limited to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2, "
               "MKL_ENABLE_INSTRUCTIONS=AVX2, inductor cpp.simdlen 8):",
               "", atab, ""]
    if BUDGET_ROWS:
        md += [f"Code size and compile time (default target, {info['cc']}; CPU seconds):", "",
               budget_table(BUDGET_ROWS), ""]
    if rl:
        md += ["Peak resident memory (VmHWM of the step process, the larger of its 1- and 2-thread runs):", ""] + rl + [""]
    if noisy:
        md[2:2] = [f"**Warning: {len(noisy)} of {len(rows) + len(avx2_rows)} rows are NOISY: other processes "
                   "used CPU while they were measured; their numbers are not the machine's.**", ""]
        md += ["NOISY: other processes used > 0.1 core while these rows were measured: "
               + "; ".join(noisy) + ".", ""]
    info["quiet_wait_s"] = round(QUIET["waited"], 1)
    result = {"machine": info, "fma_peak": peak, "args": vars(a), "elapsed_s": round(elapsed, 1), "complete": done,
              "pypi_note": pypi_note, "rows": rows, "avx2_rows": avx2_rows, "rss": rss, "budgets": BUDGET_ROWS}
    os.makedirs(a.out, exist_ok=True)
    fn = os.path.join(a.out, f"{datetime.date.today().isoformat()}-{info['host']}.json")
    with open(fn, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    with open(os.path.join(a.out, "latest.md"), "w") as f:
        f.write("\n".join(md))
    if not done:
        return
    print()
    print("\n".join(md[2:]))
    print(f"bench: wrote {os.path.relpath(fn, ROOT)} and {os.path.relpath(os.path.join(a.out, 'latest.md'), ROOT)}")



if __name__ == "__main__":
    main()
