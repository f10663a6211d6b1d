#!/usr/bin/env python3
"""bench/layer_profile.py: where a training step's time goes, per generated call.

usage: bench/layer_profile.py SPEC [--steps N] [--threads T] [--opt FLAGS] [--top K]
                              [--wisdom FILE] [--team T]

Generates SPEC's C, wraps every statement of its <net>_forward and <net>_backward in a
wall-clock timer (the layer functions run their own OpenMP loops, so wall time is the
cost), builds it with bench/step.c and the release flags, runs N timed steps after a
warm-up and prints each call's median-free mean time per step, its share of the step and,
for convolutions, its GFLOP/s. The instrumented build is a copy under build/profile/; the
generated file in generated/ is not touched. Timers cost ~50 ns a call: negligible next to
the layers of a network worth profiling.
"""
import argparse
import os
import re
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PRELUDE = r"""
#include <time.h>
#define CG_PROF_MAX 1024
double cg_prof_s[CG_PROF_MAX];
long cg_prof_n[CG_PROF_MAX];
const char *cg_prof_what[CG_PROF_MAX];
static double cg_prof_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
#ifdef CG_PROF_TEAM
#include <omp.h>
/* a team: every replica runs the instrumented code; thread 0's calls are the ones timed */
#define CG_PROF_MINE() (omp_get_thread_num() == 0)
#else
#define CG_PROF_MINE() 1
#endif
#define CG_PROF(k, what, stmt) do { double t0_ = cg_prof_now(); stmt; if (CG_PROF_MINE()) { \
    cg_prof_s[k] += cg_prof_now() - t0_; cg_prof_n[k]++; cg_prof_what[k] = what; } } while (0)
"""

DUMP = r"""
#include <stdio.h>
__attribute__((destructor)) static void cg_prof_dump(void)
{
    FILE *f = fopen(getenv("CG_PROF_OUT") ? getenv("CG_PROF_OUT") : "/dev/stderr", "w");
    if (!f) return;
    for (int k = 0; k < CG_PROF_MAX; k++)
        if (cg_prof_n[k]) fprintf(f, "%d\t%ld\t%.9f\t%s\n", k, cg_prof_n[k], cg_prof_s[k], cg_prof_what[k]);
    fclose(f);
}
"""


def instrument(src, net):
    out, k, inside = [], 0, None
    # a team's code (cnngen --team): the layers are in NAME_forward_team / _backward_team,
    # NAME_forward / _backward only call those
    team = "_team" if f"void {net}_forward_team(" in src else ""
    for line in src.splitlines():
        m = re.match(rf"void {net}_(forward|backward){team}\(", line)
        if m:
            inside = m.group(1)
        elif inside and line == "}":
            inside = None
        s = line.strip()
        if inside and s.endswith(";") and not s.startswith("/*") and not s.startswith("(void)"):
            what = inside[0] + " " + re.sub(r"/\*.*?\*/", "", s).strip()
            what = what.replace("\\", "\\\\").replace('"', '\\"')
            indent = line[:len(line) - len(line.lstrip())]
            line = f'{indent}CG_PROF({k}, "{what[:110]}", {s[:-1]});'
            k += 1
        out.append(line)
    text = "\n".join(out) + "\n"
    # the prelude after the includes; the dump at the end
    i = text.find("\n", text.rfind("#include")) + 1
    return text[:i] + PRELUDE + text[i:] + DUMP


def read_rows(tsv):
    """The timers' dump (CG_PROF_OUT): (seconds, calls, statement number, statement) a row."""
    rows = []
    with open(tsv) as f:
        for line in f:
            k, n, s, what = line.rstrip("\n").split("\t", 3)
            rows.append((float(s), int(n), int(k), what))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("spec")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--opt", default="-O3 -march=native -fopenmp")
    p.add_argument("--cc", default="gcc")
    p.add_argument("--wisdom", default="")
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--dx", action="store_true", help="step.c --dx")
    p.add_argument("--team", type=int, default=0,
                   help="generate for a team of T replicas (cnngen --team T) and time thread 0's")
    a = p.parse_args()
    if a.team:
        a.threads = a.team
    d = os.path.join(ROOT, "build", "profile")
    os.makedirs(d, exist_ok=True)
    gen = [os.path.join(ROOT, "build", "cnngen"), a.spec, "-o", d] + (["--wisdom", a.wisdom] if a.wisdom else []) \
        + (["--team", str(a.team)] if a.team else [])
    c = subprocess.run(gen, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    name = os.path.splitext(os.path.basename(c))[0]
    src = open(c).read()
    pc = os.path.join(d, name + "_prof.c")
    open(pc, "w").write(instrument(src, name))
    exe = os.path.join(d, "prof_" + name)
    subprocess.run([a.cc] + shlex.split(a.opt) + ["-std=c11", "-D_POSIX_C_SOURCE=200809L",
                    "-I" + os.path.join(ROOT, "runtime"), "-I" + d, "-DCNNGEN_NO_MAIN",
                    *(["-DCG_PROF_TEAM"] if a.team else []), f"-DCG_NET={name}_net", pc, os.path.join(ROOT, "bench", "step.c"),
                    os.path.join(ROOT, "build", "libcnngen.a"), "-lm", "-lz", "-o", exe], check=True)
    tsv = os.path.join(d, name + "_prof.tsv")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), CG_PROF_OUT=tsv)
    r = subprocess.run([exe, str(a.steps), "1", "--warmup-s", "0"] + (["--dx"] if a.dx else [])
                       + (["--team", str(a.team)] if a.team else []),
                       env=env, capture_output=True, text=True, check=True)
    rows = read_rows(tsv)
    total = sum(r[0] for r in rows)
    steps = max(r[1] for r in rows)
    print(f"{name}: {steps} steps (warm-up included), {1e3 * total / steps:.2f} ms a step in the timed calls, "
          + (f"a team of {a.team}, thread 0's replica" if a.team else f"{a.threads} threads"))
    # per function kind: group by the called function's name
    kinds = {}
    for s, n, k, what in rows:
        m = re.match(r"(\w) (?:for .*?\) )?\(?(\w+)", what)
        key = (what[0], re.sub(r"^l\d+_", "", m.group(2)) if m else what)
        kinds[key] = kinds.get(key, 0.0) + s
    print("\nby kind:")
    for (ph, kind), s in sorted(kinds.items(), key=lambda x: -x[1]):
        print(f"  {'fwd' if ph == 'f' else 'bwd'} {kind:28s} {1e3 * s / steps:8.3f} ms  {100 * s / total:5.1f} %")
    print(f"\ntop {a.top} calls:")
    for s, n, k, what in sorted(rows, reverse=True)[:a.top]:
        print(f"  {1e3 * s / steps:8.3f} ms  {100 * s / total:5.1f} %  {what}")
    print(r.stdout.strip().splitlines()[-1][:300])


if __name__ == "__main__":
    sys.exit(main())
