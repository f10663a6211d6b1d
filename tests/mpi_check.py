#!/usr/bin/python3
"""mpi_check.py -- data-parallel training over MPI (issue 13) against one process.

Run by `make mpi-check`: /usr/bin/python3 tests/mpi_check.py BUILD_DIR
BUILD_DIR holds lenet5 and bnnet trainers built with MPI (mpicc + libcnngen_mpi.a).

On 704 synthetic 1x28x28 samples (640 training, 64 validation: one epoch of 10 steps
at the global batch 64), same seed and initial weights (W0.npz, written here):

  LeNet-5: `mpirun -np 2` and the same binary as one process (no mpirun); the weights
     after 10 steps agree within 1e-5 relative (max |a - b| / max |b| per tensor).
  bnnet: per-rank batch statistics (DistributedDataParallel's default) make 2 ranks a
     different computation from one process over the whole batch, so the reference is
     a float64 PyTorch replay of the same 10 steps with each rank's half of every batch
     normalized by its own statistics and each rank's running buffers kept apart, then
     averaged (what the trainer does at evaluation and checkpoint time). Tolerance:
     every tensor within 4x the error of the same replay in float32 PyTorch, or 1e-5.
     A fixed bound does not work here: with shards of 32 samples the batch-norm backward
     cancels heavily (a bias feeding a batch norm has a gradient that is zero in exact
     arithmetic), and from step 2 on some tensors (5.bias, 4.weight) carry 1e-3..1e-2
     relative float32 error in PyTorch itself; cnngen's are as small or smaller. The
     one-process run is checked the same way against the whole-batch replay, and the
     2-rank run must be much closer to its own replay than to that one (per-rank and
     whole-batch statistics differ by ~0.8 relative after 10 steps: not round-off).
  LeNet-5 generated with --team 2 under `mpirun -np 2` (each rank's 32 samples split by
     its 2 replicas) against the one process: 1e-5 as well.
  determinism: a second 2-rank run gives the same bits.
  resume: 2 ranks killed by --max-steps 5 after a checkpoint, then `--resume` under
     mpirun: the final weights equal the uninterrupted run's bit for bit.
  a rank killed by SIGKILL: mpirun ends the job (non-zero, within 60 s) and says so;
     the last checkpoint loads and the run resumes from it under mpirun; resumed by one
     process instead, it is refused (the rank count is in the checkpoint) and kept.
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_ref  # noqa: E402

N_TRAIN, N_VAL, BATCH, SEED = 640, 64, 64, 3
LR, MOM, WD = 0.05, 0.9, 5e-4
TOL_LENET, BN_FACTOR = 1e-5, 4
FAILS = []


def mpirun(np_):
    cmd = ["mpirun", "--oversubscribe", "-np", str(np_), "--mca", "btl", "self,vader",
           "-x", "OMP_NUM_THREADS", "-x", "OMP_WAIT_POLICY"]
    if os.geteuid() == 0:
        cmd.insert(1, "--allow-run-as-root")
    return cmd


def env():
    e = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive",
             OMPI_MCA_btl_vader_single_copy_mechanism="none")  # no CMA/ptrace in containers
    return e


def check(cond, what):
    print(f"mpi-check: {'ok' if cond else 'FAILED'}: {what}")
    if not cond:
        FAILS.append(what)


def run(cmd, **kw):
    p = subprocess.run(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=kw.pop("timeout", 600), **kw)
    if p.returncode != 0:
        print(p.stdout)
        raise SystemExit(f"mpi-check: FAILED: {' '.join(cmd)} exited {p.returncode}")
    return p.stdout


def load(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def rel_diff(a, b, keys):
    """worst over keys of max|a - b| / max|b| (b the reference)"""
    w, wk = 0.0, None
    for k in keys:
        x, y = a[k].astype(np.float64), b[k].astype(np.float64)
        d = float(np.abs(x - y).max() / max(float(np.abs(y).max()), 1e-30))
        if d > w:
            w, wk = d, k
    return w, wk


def as_accurate(got, ref, f32, keys):
    """per tensor: |got - ref| <= BN_FACTOR x |f32 - ref| (PyTorch's own float32 error
    on the same computation), or <= TOL_LENET; returns the failures and the worst ratio"""
    bad, worst = [], (0.0, None)
    for k in keys:
        r = ref[k].astype(np.float64)
        s = max(float(np.abs(r).max()), 1e-30)
        e = float(np.abs(got[k].astype(np.float64) - r).max()) / s
        t = float(np.abs(f32[k].astype(np.float64) - r).max()) / s
        if e > max(BN_FACTOR * t, TOL_LENET):
            bad.append(f"{k}: {e:.2e} > {BN_FACTOR} x {t:.2e}")
        if e / max(t, TOL_LENET) > worst[0]:
            worst = (e / max(t, TOL_LENET), f"{k}: {e:.2e} vs PyTorch float32 {t:.2e}")
    return bad, worst


def bitwise(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def train_args(data, out, w0, extra=(), epochs=1):
    return ["train", "--data", data, "--val", str(N_VAL), "--epochs", str(epochs), "--batch",
            str(BATCH), "--seed", str(SEED), "--lr", str(LR), "--momentum", str(MOM),
            "--weight-decay", str(WD), "--schedule", "constant", "--patience", "0",
            "--weights", w0, "--checkpoint-every", "5", "--plain", "--no-plot", "--quiet",
            "--out", out, *extra]


def replay(spec, w0, x, y, perm, shards, dtype=torch.float64, steps=N_TRAIN // BATCH):
    """PyTorch (float64: the reference; float32: its own round-off): the 10 SGD steps, every batch cut into `shards` contiguous parts,
    each normalized by its own batch statistics, loss sum_r (m_r / m) mean_r; running
    buffers per shard, averaged at the end. shards=1: one process."""
    torch.manual_seed(0)
    model = torch_ref.build_model(spec).to(dtype)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in w0.items()}, strict=True)
    model.train()
    bufkeys = [k for k, _ in model.named_buffers()]
    bufs = [{k: v.clone() for k, v in model.named_buffers()} for _ in range(shards)]
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOM, weight_decay=WD)
    for k in range(steps):
        idx = perm[k * BATCH:(k + 1) * BATCH]
        opt.zero_grad()
        loss = 0
        for r in range(shards):
            lo = r * BATCH // shards
            hi = (r + 1) * BATCH // shards
            for n in bufkeys:  # this shard's own running buffers (updated in place)
                mod, attr = n.rsplit(".", 1)
                setattr(model.get_submodule(mod), attr, bufs[r][n])
            xb = torch.from_numpy(x[idx[lo:hi]]).to(dtype)
            yb = torch.from_numpy(y[idx[lo:hi]])
            out = model(xb).reshape(hi - lo, -1)
            loss = loss + torch.nn.functional.cross_entropy(out, yb) * ((hi - lo) / BATCH)
        loss.backward()
        opt.step()
    res = {k: v.detach().double().numpy() for k, v in model.named_parameters()}
    for n in bufkeys:
        if n.endswith("num_batches_tracked"):
            res[n] = bufs[0][n].numpy()
        else:
            res[n] = (sum(b[n] for b in bufs) / shards).double().numpy()
    return res


def children_named(ppid, name):
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
            comm = st[st.index("(") + 1:st.rindex(")")]
            pp = int(st[st.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            continue
        if pp == ppid and comm == name:
            out.append(int(p))
    return out


def rank_of(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            for kv in f.read().split(b"\0"):
                if kv.startswith(b"OMPI_COMM_WORLD_RANK="):
                    return int(kv.split(b"=")[1])
    except OSError:
        pass
    return -1


def main():
    bdir = os.path.abspath(sys.argv[1])
    work = os.path.join(bdir, "work")
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(1)
    x = rng.random((N_TRAIN + N_VAL, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, N_TRAIN + N_VAL).astype(np.int64)
    data = os.path.join(work, "d.npz")
    np.savez(data, x=x, y=y)
    t0 = time.time()

    for name in ("lenet5", "bnnet"):
        spec = torch_ref.load_spec(os.path.join("specs", name + ".yaml"))
        torch.manual_seed(SEED)
        model = torch_ref.build_model(spec)
        w0 = torch_ref.state_dict_numpy(model)
        w0p = os.path.join(work, name + "-W0.npz")
        np.savez(w0p, **w0)
        tr = os.path.join(bdir, name)
        d = {k: os.path.join(work, f"{name}-{k}") for k in ("one", "two", "again", "cut")}
        run([tr] + train_args(data, d["one"], w0p))
        run(mpirun(2) + [tr] + train_args(data, d["two"], w0p))
        one, two = load(d["one"] + "/last.npz"), load(d["two"] + "/last.npz")
        params = [k for k in one if not ("running" in k or "num_batches" in k)]
        moved, _ = rel_diff(w0, one, params)
        check(moved > 1e-3, f"{name}: 10 steps change the weights (by {moved:.3g} relative)")
        ck1, ck2 = load(d["one"] + "/checkpoint.npz"), load(d["two"] + "/checkpoint.npz")
        check(np.array_equal(ck1["perm"], ck2["perm"]),
              f"{name}: one process and 2 ranks draw the same permutation")
        if name == "lenet5":
            w, k = rel_diff(two, one, params)
            check(w <= TOL_LENET, f"{name}: 2 ranks vs one process after 10 steps: max relative "
                                  f"difference {w:.2e} ({k}) <= {TOL_LENET:g}")
            # a team of 2 in each rank (cnngen --team 2): 2 ranks x 2 replicas of 16 samples
            # against the plain process
            tt = os.path.join(bdir, "team", name)
            run(mpirun(2) + [tt] + train_args(data, d["two"] + "-team", w0p))
            team = load(d["two"] + "-team/last.npz")
            w, k = rel_diff(team, one, params)
            check(w <= TOL_LENET, f"{name}: 2 ranks, each a team of 2, vs one process after 10 steps: "
                                  f"max relative difference {w:.2e} ({k}) <= {TOL_LENET:g}")
            # the other sample orders: independent draws, and --mode full (10 steps of the
            # whole training set in chunks of 64: 5 chunks a rank); random crops and flips
            # (each rank skips the augmentation draws of the samples before its shard, so
            # every sample is augmented as in one process; the run must differ from the
            # plain one); AdamW: each gradient element divided by its running RMS, which
            # amplifies the float32 round-off of small elements (the ranks sum in another
            # order): 1e-4 there (measured 3.5e-5), the 1e-5 bar is SGD's
            for what, extra, epochs, tol in (
                    ("--order random", ["--order", "random"], 1, TOL_LENET),
                    ("--mode full", ["--mode", "full"], 10, TOL_LENET),
                    ("--crop 2 --flip", ["--crop", "2", "--flip"], 1, TOL_LENET),
                    ("--optimizer adamw --lr 0.002", ["--optimizer", "adamw"], 1, 1e-4)):
                o1, o2 = d["one"] + "-" + extra[1], d["two"] + "-" + extra[1]
                a1 = train_args(data, o1, w0p, extra, epochs)
                a2 = train_args(data, o2, w0p, extra, epochs)
                if "adamw" in extra:
                    a1[a1.index("--lr") + 1] = a2[a2.index("--lr") + 1] = "0.002"
                run([tr] + a1)
                run(mpirun(2) + [tr] + a2)
                a1, a2 = load(o1 + "/last.npz"), load(o2 + "/last.npz")
                w, k = rel_diff(a2, a1, params)
                mv, _ = rel_diff(w0, a1, params)
                other, _ = rel_diff(a1, one, params)
                check(w <= tol and mv > 1e-3 and other > 1e-3,
                      f"{name} {what}: 2 ranks vs one process after 10 steps: {w:.2e} ({k}) "
                      f"<= {tol:g} (and {other:.2g} from the plain run)")
        else:
            perm = ck2["perm"].astype(np.int64)
            xs, ys = x[:N_TRAIN], y[:N_TRAIN]
            keys = [k for k in one if "num_batches" not in k]
            for got, S, who in ((two, 2, "2 ranks"), (one, 1, "one process")):
                ref = replay(spec, w0, xs, ys, perm, S)
                f32 = replay(spec, w0, xs, ys, perm, S, torch.float32)
                bad, worst = as_accurate(got, ref, f32, keys)
                check(not bad, f"{name}: {who} vs the float64 PyTorch replay with "
                               f"{'per-rank' if S == 2 else 'whole-batch'} statistics, every "
                               f"tensor within {BN_FACTOR} x PyTorch float32's own error "
                               f"(worst {worst[1]}){': ' + '; '.join(bad) if bad else ''}")
                if S == 2:
                    w2, _ = rel_diff(two, ref, params)
                else:
                    wx, _ = rel_diff(two, ref, params)
            wo, ko = rel_diff(two, one, params)
            check(wx > 5 * w2, f"{name}: per-rank statistics are visible: 2 ranks vs the "
                               f"whole-batch replay {wx:.2e} > 5 x {w2:.2e} (vs per-rank)")
            nb = [k for k in two if "num_batches" in k]
            check(all(int(two[k]) == int(one[k]) == N_TRAIN // BATCH for k in nb),
                  f"{name}: num_batches_tracked = {N_TRAIN // BATCH} on 2 ranks as on one")
            print(f"mpi-check: {name}: 2 ranks vs one process (per-rank vs whole-batch "
                  f"statistics): {wo:.2e} ({ko}), not round-off")
        run(mpirun(2) + [tr] + train_args(data, d["again"], w0p))
        check(bitwise(two, load(d["again"] + "/last.npz")),
              f"{name}: two 2-rank runs give the same bits")
        run(mpirun(2) + [tr] + train_args(data, d["cut"], w0p, ["--max-steps", "5"]))
        run(mpirun(2) + [tr] + train_args(data, d["cut"], w0p, ["--resume"]))
        check(bitwise(two, load(d["cut"] + "/last.npz")),
              f"{name}: 2 ranks stopped after step 5 and resumed under mpirun = uninterrupted, "
              f"bit for bit")

    # a rank killed: mpirun ends the job, the last checkpoint stays loadable
    name, tr = "lenet5", os.path.join(bdir, "lenet5")
    out = os.path.join(work, "killed")
    w0p = os.path.join(work, "lenet5-W0.npz")
    args = train_args(data, out, w0p, epochs=1000)
    ckpt = os.path.join(out, "checkpoint.npz")
    if os.path.exists(ckpt):
        os.remove(ckpt)
    p = subprocess.Popen(mpirun(2) + [tr] + args, env=env(), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not os.path.exists(ckpt) and time.time() < deadline and p.poll() is None:
        time.sleep(0.1)
    time.sleep(0.5)
    victims = [c for c in children_named(p.pid, name) if rank_of(c) == 1]
    check(len(victims) == 1, "found rank 1 of the running job")
    if victims:
        os.kill(victims[0], signal.SIGKILL)
        try:
            msg, _ = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            msg, _ = p.communicate()
            check(False, "mpirun ended the job within 60 s of a rank's SIGKILL")
        else:
            check(p.returncode != 0 and "signal 9" in msg,
                  f"mpirun ended the job (exit {p.returncode}) and named the signal: "
                  f"{[l for l in msg.splitlines() if 'signal' in l][:1]}")
        ck = load(ckpt)
        check(int(ck["pos"][2]) % 5 == 0 and int(ck["pos"][2]) > 0,
              f"the last checkpoint loads (step {int(ck['pos'][2])})")
        run(mpirun(2) + [tr] + args + ["--resume", "--max-steps", "5"])
        ck2 = load(ckpt)
        check(int(ck2["pos"][2]) == int(ck["pos"][2]) + 5,
              "the job resumes from it under mpirun (5 more steps)")
        # the same checkpoint in one process: refused, naming the rank counts; untouched
        q = subprocess.run([tr] + args + ["--resume", "--max-steps", "5"], env=env(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ck3 = load(ckpt)
        check(q.returncode != 0 and "over 2 ranks, this run has 1" in q.stdout
              and int(ck3["pos"][2]) == int(ck2["pos"][2]),
              f"a 2-rank checkpoint resumed by one process is refused, the checkpoint kept "
              f"(exit {q.returncode}: {[l for l in q.stdout.splitlines() if 'ranks' in l][:1]})")
    else:
        p.kill()
        p.communicate()

    print(f"mpi-check: {time.time() - t0:.0f} s")
    if FAILS:
        print(f"mpi-check: FAILED: {len(FAILS)} check(s)")
        return 1
    print("mpi-check: mpirun -np 2 agrees with one process (LeNet-5 within 1e-5; bnnet with "
          "per-rank batch norm with its PyTorch replay to float32 round-off), deterministic, "
          "resumes bit for bit, and a killed rank ends the job")
    return 0


if __name__ == "__main__":
    sys.exit(main())
