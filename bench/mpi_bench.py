#!/usr/bin/python3
"""mpi_bench.py -- `make bench-mpi` (and the MPI row of `make bench`): data-parallel
training over Open MPI on this machine (issue 13).

For each network (default LeNet-5 and VGG-16-CIFAR at their spec batch) it builds
bench/mpi_step.c with mpicc against build/libcnngen_mpi.a + build/libcnngen.a and runs
  1 process x 2 threads   (OMP_NUM_THREADS=2, no mpirun: no communication)
  2 ranks   x 1 thread    (mpirun -np 2, OMP_NUM_THREADS=1), the runtime's rank-order sum
  2 ranks   x 1 thread    the same with CNNGEN_ALLREDUCE=mpi (one MPI_Allreduce)
at the same global batch, and reports img/s, the per-step compute and allreduce times
(medians), the allreduce alone (after a barrier), and an MPI_Iallreduce left running
during one step's compute: the MPI_Wait after it shows how much of it progressed.

Then the scaling model for VGG-16-CIFAR: N machines like this one, each computing a
batch of 32 a step (weak scaling: global batch 32 N) in the measured compute time Tc of
1 process x 2 threads, joined by a ring allreduce of the gradient buffer (B bytes) over a
network of bandwidth W:
    Tcomm = 2 (N - 1) / N x B / W,   step = Tc + Tcomm,   efficiency = Tc / step,
    speed-up = N x efficiency.
(Latency, 2 (N - 1) messages of ~10-50 us, adds < 7 ms at N = 64: left out.) Overlapping
the allreduce with the backward (bucketed MPI_Iallreduce) can at best hide Tcomm, i.e.
gain Tcomm / step.

Writes bench/results/mpi-latest.md and prints it.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
NETS = {"lenet5": "specs/lenet5.yaml", "vgg16_cifar": "specs/vgg16_cifar.yaml"}


def sh(cmd, env=None):
    p = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    if p.returncode != 0:
        sys.exit(f"mpi_bench: {' '.join(cmd)} failed:\n{p.stdout}{p.stderr}")
    return p.stdout


def mpirun(n):
    cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(n), "--mca", "btl",
           "self,vader", "-x", "OMP_NUM_THREADS", "-x", "CNNGEN_ALLREDUCE"]
    if os.geteuid() == 0:
        cmd.insert(1, "--allow-run-as-root")
    return cmd


def build(name, a):
    d = os.path.join(a.build, name)
    os.makedirs(d, exist_ok=True)
    c = sh(["build/cnngen", NETS[name], "-o", d]).strip().splitlines()[-1]
    exe = os.path.join(d, "mpi_step_" + name)
    sh([a.mpicc] + shlex.split(a.opt) + ["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-Iruntime",
       "-DCNNGEN_NO_MAIN", f"-DCG_NET={name}_net", c, "bench/mpi_step.c",
       "-Wl,-u,cg_comm_world", "build/libcnngen_mpi.a", "build/libcnngen.a"]
       + shlex.split(a.libs) + ["-o", exe])
    return exe


def run(exe, ranks, threads, steps, alg=None, comm_only=False, warm=3):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="passive")
    env.pop("CNNGEN_ALLREDUCE", None)
    if alg:
        env["CNNGEN_ALLREDUCE"] = alg
    else:
        env["CNNGEN_ALLREDUCE"] = "rank-order"
    cmd = ([] if ranks == 1 else mpirun(ranks)) + [exe, str(steps), str(warm)] + ["comm"] * comm_only
    return json.loads(sh(cmd, env).strip().splitlines()[-1])


def load():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mpicc", default="mpicc")
    p.add_argument("--opt", default="-O3 -march=native -fopenmp")
    p.add_argument("--libs", default="-lzip -lz -lm")
    p.add_argument("--build", default=os.path.join(ROOT, "build", "bench-mpi"))
    p.add_argument("--only", default="", help="comma-separated: lenet5,vgg16_cifar")
    p.add_argument("--steps", type=int, default=0, help="timed steps (0: 200 LeNet-5, 6 VGG)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "mpi-latest.md"))
    a = p.parse_args()
    only = [n for n in a.only.split(",") if n] or list(NETS)
    rows, res = [], {}
    for name in only:
        exe = build(name, a)
        steps = a.steps or (200 if name == "lenet5" else 6)
        for ranks, threads, alg in ((1, 2, None), (2, 1, None), (2, 1, "mpi")):
            r = run(exe, ranks, threads, steps, alg, warm=3 if name == "lenet5" else 1)
            r["load"] = load()
            res[(name, ranks, alg)] = r
            rows.append(r)
            print(json.dumps(r), flush=True)
        if name == "vgg16_cifar":  # the allreduce alone, many times (no compute between)
            for alg in (None, "mpi"):
                r = run(exe, 2, 1, 30, alg, comm_only=True)
                r["load"] = load()
                res[(name, "comm", alg)] = r
                rows.append(r)
                print(json.dumps(r), flush=True)
    lines = ["# Data-parallel training over Open MPI (bench/mpi_bench.py)", "",
             f"Open MPI: {sh(['mpirun', '--version']).splitlines()[0]}; "
             f"{os.cpu_count()} cores; shared memory (btl vader). Medians per step; "
             "load = 1-minute load average after the run (the 2-core machine was shared: "
             "numbers above ~2 mean the measurement competed with other work).", "",
             "| network | ranks x threads | allreduce | img/s | step ms | compute ms | "
             "allreduce ms (in step) | allreduce alone ms | Iallreduce during compute: wait ms "
             "| gradient MB | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["comm_only"]:
            lines.append(f"| {r['net']}: allreduce only (30 x) | {r['ranks']} x {r['threads']} | "
                         f"{r['allreduce']} | | | | | {r['allreduce_alone_ms']:.2f} | | "
                         f"{r['allreduce_bytes'] / 1e6:.1f} | {r['load']} |")
            continue
        lines.append(f"| {r['net']} b{r['batch']} | {r['ranks']} x {r['threads']} | "
                     f"{r['allreduce']} | {r['img_per_s']:,.1f} | {r['step_ms']:.1f} | "
                     f"{r['compute_ms']:.1f} | {r['allreduce_ms']:.2f} | "
                     f"{r['allreduce_alone_ms']:.2f} | "
                     f"{r['iallreduce_wait_ms']:.2f} (compute {r['iallreduce_compute_ms']:.0f}) | "
                     f"{r['allreduce_bytes'] / 1e6:.1f} | "
                     f"{r['load']} |")
    v1 = res.get(("vgg16_cifar", 1, None))
    v2 = res.get(("vgg16_cifar", 2, None))
    if v1:
        tc = v1["compute_ms"] + v1["update_ms"]
        nbytes = v1["allreduce_bytes"]
        lines += ["", f"## Scaling model: VGG-16-CIFAR, {v1['params']:,} parameters "
                  f"({nbytes / 1e6:.1f} MB of gradients a step)", "",
                  f"Compute a step of batch 32 on one machine like this one (1 process x 2 "
                  f"threads, measured): Tc = {tc:.0f} ms. Ring allreduce: Tcomm = 2(N-1)/N x "
                  f"{nbytes / 1e6:.1f} MB / bandwidth; weak scaling (batch 32 a machine).", "",
                  "| machines | network | Tcomm ms | step ms | efficiency | speed-up | "
                  "overlap could gain |", "|---|---|---|---|---|---|---|"]
        for n in (2, 8, 64):
            for gbit in (10, 100):
                tcomm = 2 * (n - 1) / n * nbytes / (gbit * 1e9 / 8) * 1e3
                step = tc + tcomm
                lines.append(f"| {n} | {gbit} Gb/s | {tcomm:.1f} | {step:.0f} | "
                             f"{100 * tc / step:.1f} % | {n * tc / step:.1f}x | "
                             f"{100 * tcomm / step:.1f} % |")
        if v2:
            lines += ["", f"On this machine (2 ranks, shared memory) the allreduce of the "
                      f"{nbytes / 1e6:.1f} MB took {v2['allreduce_alone_ms']:.1f} ms alone and "
                      f"{v2['allreduce_ms']:.1f} ms inside the step (including waiting for the "
                      f"slower rank), against a compute of {v2['compute_ms']:.0f} ms a step: "
                      f"{100 * v2['allreduce_alone_ms'] / (v2['compute_ms'] + v2['allreduce_alone_ms']):.1f} % "
                      "of the step is what overlapping could hide here."]
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
