#!/usr/bin/env python3
"""bench/ab.py: is B's training step faster than A's? Both in one process, alternately.

usage: bench/ab.py SPEC A B [--pairs N] [--block-s S] [--threads T] [--dx]
                   [--cc CC] [--opt FLAGS] [--libs LIBS]

A and B are each a wisdom file (the schedules `cnngen --wisdom` takes), `-` for the
built-in heuristic, or a generated .c file (an edited copy, for experiments the
generator cannot express yet). Both are compiled into one binary with bench/abstep.c
(their nets renamed), which runs --pairs (40) pairs of blocks of --block-s (0.1) seconds
of training steps, A then B, then B then A, half of them in a process that allocates
A's memory first and half in one that allocates B's first, and prints B's rate over A's:
the median over the pairs, its 95 % interval and each process's median. B is faster
when the interval and both processes' medians lie above 1 (where each side's pages
land moves one process's ratio by a percent or two, either way). A pair's blocks run a
tenth of a second apart in the same process, so the machine's slow and fast spells fall
on both (two step binaries timed in turns meet different spells and different processes'
memory: bench/RESULTS.md, "Two speeds" and session 29). `bench/ab.py SPEC - -` measures the noise floor: an interval that holds 1.
Exit status 0; the verdict is in the output ("B faster", "A faster", "no difference").
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CNNGEN = os.path.join(ROOT, "build", "cnngen")
# options every cnngen call of this process adds (bench/tune.py --team: ["--team", "2"])
CNNGEN_EXTRA = []


def sh(cmd, **kw):
    """cmd's standard output; on failure, exit naming the running script (ab or tune) and
    the command, with its output"""
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        who = os.path.splitext(os.path.basename(sys.argv[0]))[0] or "ab"
        sys.exit(f"{who}: {' '.join(cmd)} failed:\n{r.stderr}{r.stdout}")
    return r.stdout


def source(spec, what, d):
    """the generated .c file for side `what` (wisdom file, '-', or a .c file)"""
    if what.endswith(".c"):
        if not os.path.isfile(what):
            sys.exit(f"ab: {what}: no such file")
        return what
    os.makedirs(d, exist_ok=True)
    cmd = [CNNGEN, spec, "-o", d] + CNNGEN_EXTRA + ([] if what == "-" else ["--wisdom", what])
    return sh(cmd).strip().splitlines()[-1]


def build(a_src, b_src, a, work):
    """the A/B binary of two generated files (a: .cc, .opt, .libs as bench/tune.py's); the
    two files compile side by side"""
    os.makedirs(work, exist_ok=True)
    objs, jobs = [], []
    for tag, c in (("a", a_src), ("b", b_src)):
        name = os.path.splitext(os.path.basename(c))[0]
        ren = [f"-D{name}_{s}=cg_ab_{tag}_{s}" for s in ("net", "forward", "backward", "forward_team", "backward_team")]
        o = os.path.join(work, f"{tag}.o")
        cmd = [a.cc] + shlex.split(a.opt) + ["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-I" + os.path.join(ROOT, "runtime"),
                                            "-DCNNGEN_NO_MAIN"] + ren + ["-c", c, "-o", o]
        jobs.append((cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
        objs.append(o)
    for cmd, pr in jobs:
        out, err = pr.communicate()
        if pr.returncode != 0:
            sys.exit(f"ab: {' '.join(cmd)} failed:\n{err}{out}")
    exe = os.path.join(work, "abstep")
    sh([a.cc] + shlex.split(a.opt) + ["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-I" + os.path.join(ROOT, "runtime"),
       "-DCG_NET_A=cg_ab_a_net", "-DCG_NET_B=cg_ab_b_net", os.path.join(ROOT, "bench", "abstep.c")] + objs +
       [os.path.join(ROOT, "build", "libcnngen.a")] + shlex.split(a.libs) + ["-o", exe])
    return exe


def ci_rank(n):
    """abstep.c's ci_rank: the largest k with P(Binomial(n, 1/2) <= k - 1) <= 0.025"""
    p, cum = 0.5 ** n, 0.0
    for k in range(n + 1):
        cum += p
        if cum > 0.025:
            return k
        p = p * (n - k) / (k + 1)
    return n


def run(exe, threads, pairs=40, block_s=0.1, dx=False):
    """pairs // 2 pairs in each of two processes, A's memory first in one and B's in the
    other (where a side's pages land moves one process's ratio by a percent or two); the
    pooled pairs' median ratio and its 95 % interval, each process's median ratio"""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    half = max(1, pairs // 2)
    procs = []
    for flag in ([], ["--b-first"]):
        out = sh([exe, str(half), "--block-s", str(block_s)] + (["--dx"] if dx else []) + flag, env=env)
        procs.append(json.loads(out.strip().splitlines()[-1]))
    ratios = sorted(x for p in procs for x in p["ratios"])
    n = len(ratios)
    k = ci_rank(n)
    lo = k - 1 if k > 0 else 0
    return {"pairs": n, "steps_per_block": procs[0]["steps_per_block"], "ratio": statistics.median(ratios),
            "ci95": [ratios[lo], ratios[n - 1 - lo]], "process_ratios": [p["ratio"] for p in procs],
            "a_img_per_s": statistics.mean(p["a_img_per_s"] for p in procs),
            "b_img_per_s": statistics.mean(p["b_img_per_s"] for p in procs), "processes": procs}


def verdict(r):
    """B faster: the pooled interval above 1 and each process's median above 1"""
    lo, hi = r["ci95"]
    if lo > 1 and min(r["process_ratios"]) > 1:
        return "B faster"
    if hi < 1 and max(r["process_ratios"]) < 1:
        return "A faster"
    return "no difference"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec")
    ap.add_argument("a", help="wisdom file, '-' (the heuristic) or a generated .c file")
    ap.add_argument("b", help="as A")
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--block-s", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--dx", action="store_true", help="the backward computes dLoss/dx too")
    ap.add_argument("--cc", default="cc")
    ap.add_argument("--opt", default="-O3 -march=native -fopenmp")
    ap.add_argument("--libs", default="-lzip -lz -lm")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cnngen-ab-") as work:
        exe = build(source(a.spec, a.a, os.path.join(work, "a")), source(a.spec, a.b, os.path.join(work, "b")), a, work)
        r = run(exe, a.threads, a.pairs, a.block_s, a.dx)
    lo, hi = r["ci95"]
    print(f"ab: {a.spec}, {a.threads} thread(s), {r['pairs']} pairs of {r['steps_per_block']} step(s): "
          f"A {r['a_img_per_s']:.1f}, B {r['b_img_per_s']:.1f} img/s (medians); "
          f"B/A {r['ratio']:.3f}, 95 % interval [{lo:.3f}, {hi:.3f}], by process "
          f"{', '.join(f'{x:.3f}' for x in r['process_ratios'])}: {verdict(r)}")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
