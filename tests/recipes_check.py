#!/usr/bin/python3
"""tests/recipes_check.py -- the training recipes (optimizer, warmup, augment) against PyTorch.

usage: recipes_check.py BUILD_DIR CC

A small conv net (tests/recipes/recipes.yaml, its train: section Adam with warmup, cosine
and crop+flip) is generated and compiled; then for each case below the trainer trains it
some steps from the same initial weights (--weights, written from the PyTorch model) on a
fixed random dataset, and PyTorch trains the same model the same way:

- --mode full: every step is the whole training set (48 samples, in order, accumulated over
  two chunks), so no sample order has to be shared and one epoch is one step;
- the optimizer as torch.optim.SGD / Adam / AdamW with the same hyperparameters;
- the learning rate from SequentialLR([LinearLR(start_factor=1/(K+1), total_iters=K),
  CosineAnnealingLR(T_max=E-K) | StepLR | ConstantLR], milestones=[K]), stepped once an
  epoch; the trainer's log.csv learning rates must equal it;
- augmentation: the draws of the trainer's seeded stream (runtime/augment.h: xoshiro256**
  seeded through splitmix64 with (seed << 32 ^ step) ^ 0xA0761D6478BD642F, per sample
  oy, ox = below(2P+1), then flip = below(2)) are recomputed here in Python and applied
  with torch's own F.pad, slicing and flip, so the transform is checked independently of
  the C kernel.

The trainer's final weights must equal PyTorch's within max|got - ref| <= TOL * max(1,
max|ref|) per tensor. To show the check can fail, each augmented case is also compared
with PyTorch trained without augmentation, which must differ by more than 10 * TOL.
The same for a residual network (tests/recipes/recipes_res.yaml: add, global_avgpool)
with its own train: section (AdamW, warmup, cosine, crop+flip). Exit 1 on any failure.
"""
import os
import subprocess
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torch_ref  # noqa: E402

# SequentialLR passes an epoch to the schedulers it switches to (torch 1.13 warns about it)
warnings.filterwarnings("ignore", message="The epoch parameter in `scheduler.step", category=UserWarning)

TOL = 1e-5
HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recipes")
SPEC = os.path.join(HERE, "recipes.yaml")
# a residual network (add, global_avgpool), trained with its own train: section only
SPEC_RES = os.path.join(HERE, "recipes_res.yaml")
CASE_RES = ("residual net: adamw+warmup2+cosine+crop2+flip (its train: section)", [],
            dict(opt="adamw", lr=0.01, betas=(0.9, 0.999), eps=1e-8, wd=0.05, warmup=2,
                 schedule="cosine", epochs=6, crop=2, flip=True, seed=7))
N = 48  # training samples; --mode full with the compiled batch 32: chunks of 24 and 24
M64 = (1 << 64) - 1

# name, command-line overrides (on top of the spec's train: section), PyTorch's settings
CASES = [
    ("adam+warmup2+cosine+crop2+flip (the spec's train: section)", [],
     dict(opt="adam", lr=0.01, betas=(0.85, 0.995), eps=1e-7, wd=0.01, warmup=2,
          schedule="cosine", epochs=6, crop=2, flip=True, seed=5)),
    ("adamw+warmup3+step+flip", ["--optimizer", "adamw", "--beta1", "0.9", "--beta2", "0.999",
                                 "--eps", "1e-8", "--weight-decay", "0.05", "--warmup", "3",
                                 "--schedule", "step", "--step-size", "2", "--gamma", "0.5",
                                 "--crop", "0", "--epochs", "7", "--seed", "11"],
     dict(opt="adamw", lr=0.01, betas=(0.9, 0.999), eps=1e-8, wd=0.05, warmup=3,
          schedule="step", step_size=2, gamma=0.5, epochs=7, crop=0, flip=True, seed=11)),
    ("sgd+momentum+warmup2+cosine+crop1", ["--optimizer", "sgd", "--momentum", "0.9",
                                           "--weight-decay", "1e-3", "--lr", "0.05",
                                           "--crop", "1", "--no-flip", "--epochs", "6"],
     dict(opt="sgd", lr=0.05, momentum=0.9, wd=1e-3, warmup=2, schedule="cosine", epochs=6,
          crop=1, flip=False, seed=5)),
    ("adam, no augmentation, constant", ["--crop", "0", "--no-flip", "--schedule", "constant",
                                         "--warmup", "0", "--epochs", "5"],
     dict(opt="adam", lr=0.01, betas=(0.85, 0.995), eps=1e-7, wd=0.01, warmup=0,
          schedule="constant", epochs=5, crop=0, flip=False, seed=5)),
]


# ---- the trainer's augmentation stream (runtime/util.c, runtime/augment.c) ----
def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return x, z ^ (z >> 31)


class Xoshiro:
    def __init__(self, seed):
        self.s = []
        x = seed & M64
        for _ in range(4):
            x, z = splitmix64(x)
            self.s.append(z)

    def next(self):
        s = self.s
        rotl = lambda v, k: ((v << k) | (v >> (64 - k))) & M64  # noqa: E731
        result = (rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return result

    def below(self, n):
        lim = M64 - M64 % n
        while True:
            v = self.next()
            if v < lim:
                return v % n


def augment_stream(seed, step):
    return Xoshiro((((seed & 0xFFFFFFFF) << 32) ^ step) ^ 0xA0761D6478BD642F)


def augment(x, seed, step, crop, flip):
    """x [N, C, H, W]: the trainer's step-`step` draws, applied with torch's pad/slice/flip."""
    if not crop and not flip:
        return x
    r = augment_stream(seed, step)
    H, W = x.shape[2], x.shape[3]
    out = []
    for i in range(x.shape[0]):
        oy = ox = crop
        if crop:
            oy, ox = r.below(2 * crop + 1), r.below(2 * crop + 1)
        fl = r.below(2) if flip else 0
        s = F.pad(x[i:i + 1], (crop, crop, crop, crop))[:, :, oy:oy + H, ox:ox + W]
        out.append(s.flip(-1) if fl else s)
    return torch.cat(out)


# ---- PyTorch training the same way ----
def torch_train(spec, w0, x, y, c, use_augment=True):
    model = torch_ref.build_model(spec)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in w0.items()})
    model.train()
    if c["opt"] == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=c["lr"], momentum=c["momentum"],
                              weight_decay=c["wd"])
    else:
        cls = torch.optim.Adam if c["opt"] == "adam" else torch.optim.AdamW
        opt = cls(model.parameters(), lr=c["lr"], betas=c["betas"], eps=c["eps"],
                  weight_decay=c["wd"])
    K, E = c["warmup"], c["epochs"]
    if c["schedule"] == "cosine":
        main = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=E - K)
    elif c["schedule"] == "step":
        main = torch.optim.lr_scheduler.StepLR(opt, step_size=c["step_size"], gamma=c["gamma"])
    else:
        main = torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    if K:
        warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / (K + 1), end_factor=1.0,
                                                 total_iters=K)
        sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, main], milestones=[K])
    else:
        sched = main
    lrs = []
    for step in range(E):  # --mode full: an epoch is one step over every sample
        xa = augment(x, c["seed"], step, c["crop"], c["flip"]) if use_augment else x
        lrs.append(opt.param_groups[0]["lr"])
        opt.zero_grad()
        F.cross_entropy(model(xa).flatten(1), y).backward()
        opt.step()
        sched.step()
    return torch_ref.state_dict_numpy(model), lrs


def max_rel_diff(got, ref):
    worst = 0.0
    for k, r in ref.items():
        if k.endswith("num_batches_tracked"):
            continue
        d = float(np.max(np.abs(got[k].astype(np.float64) - r))) / max(1.0, float(np.max(np.abs(r))))
        worst = max(worst, d)
    return worst


def build_trainer(build, cc, spec_path, work):
    spec = torch_ref.load_spec(spec_path)
    subprocess.run([os.path.join(build, "cnngen"), spec_path, "-o", work], check=True,
                   stdout=subprocess.DEVNULL)
    exe = os.path.join(work, spec["name"])
    subprocess.run([cc, "-O2", "-march=native", "-std=c11", "-Wall", "-Wextra", "-Werror",
                    "-Iruntime", exe + ".c", os.path.join(build, "libcnngen.a"), "-lzip", "-lz",
                    "-lm", "-o", exe], check=True)
    return spec, exe


def run_cases(spec, exe, work, cases):
    """Each case: the trainer and PyTorch from the same initial weights and data; returns the
    number of failures."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch_ref.build_model(spec)
    w0 = torch_ref.state_dict_numpy(model)
    wpath = os.path.join(work, spec["name"] + "-W0.npz")
    np.savez(wpath, **w0)
    g = np.random.default_rng(3)
    xn = g.standard_normal((N,) + tuple(spec["input"])).astype(np.float32)
    yn = g.integers(0, 5, N).astype(np.int64)
    xpath, ypath = (os.path.join(work, f"{spec['name']}-{v}.npy") for v in "XY")
    np.save(xpath, xn)
    np.save(ypath, yn)
    x, y = torch.from_numpy(xn), torch.from_numpy(yn)

    fails = 0
    for i, (label, args, c) in enumerate(cases):
        out = os.path.join(work, f"{spec['name']}-case{i}")
        cmd = [exe, "train", "--data-x", xpath, "--data-y", ypath, "--val", "0", "--mode", "full",
               "--weights", wpath, "--out", out, "--quiet", "--no-plot"] + args
        env = dict(os.environ, OMP_NUM_THREADS="1")
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if p.returncode != 0:
            print(f"recipes-check: {label}: trainer failed: {p.stderr.strip()}")
            fails += 1
            continue
        got = dict(np.load(os.path.join(out, "final.npz")))
        ref, lrs = torch_train(spec, w0, x, y, c)
        d = max_rel_diff(got, ref)
        log = np.genfromtxt(os.path.join(out, "log.csv"), delimiter=",", names=True)
        lr_log = np.atleast_1d(log["lr"])
        lr_ok = len(lr_log) == len(lrs) and np.allclose(lr_log, lrs, rtol=1e-6, atol=0)
        ok = d <= TOL and lr_ok
        extra = ""
        if c["crop"] or c["flip"]:
            ref_plain, _ = torch_train(spec, w0, x, y, c, use_augment=False)
            d_plain = max_rel_diff(got, ref_plain)
            extra = f"; PyTorch without augmentation differs by {d_plain:.2e}"
            if d_plain <= 10 * TOL:
                ok = False
                extra += " (too close: augmentation not shown to matter)"
        print(f"recipes-check: {label}: {c['epochs']} steps, max weight difference {d:.2e} "
              f"(tol {TOL:g}), lr schedule {'equal' if lr_ok else 'DIFFERENT'} "
              f"({', '.join(f'{v:.4g}' for v in lr_log)}){extra}{'' if ok else '  FAILED'}")
        if not lr_ok:
            print(f"  trainer lr {list(lr_log)}\n  PyTorch lr {lrs}")
        fails += not ok
    return fails


def main():
    build, cc = sys.argv[1], sys.argv[2]
    work = os.path.join(build, "recipes")
    os.makedirs(work, exist_ok=True)
    fails = 0
    for spec_path, cases in ((SPEC, CASES), (SPEC_RES, [CASE_RES])):
        spec, exe = build_trainer(build, cc, spec_path, work)
        fails += run_cases(spec, exe, work, cases)
    total = len(CASES) + 1
    print(f"recipes-check: {total - fails} passed, {fails} failed")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
