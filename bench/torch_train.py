#!/usr/bin/python3
"""Train a cnngen spec's network in PyTorch on Fashion-MNIST the way the generated trainer
does, and print the test accuracy (for the "within 0.5 points of PyTorch" comparison).

Same network (tests/torch_ref.py's build_model: the torch.nn.Sequential whose state_dict
the trainer's .npz files load into), same data (the IDX files in
/usr/share/datasets/fashion-mnist, uint8 / 255), same split (the last --val training images
are the validation set), same hyperparameters (the spec's train: section, overridable
below), same optimizer (torch.optim.SGD / Adam / AdamW with the spec's momentum or betas,
eps, weight_decay), same schedule (StepLR / CosineAnnealingLR stepped once an epoch, after
`warmup` epochs of LinearLR(start_factor=1/(warmup+1)) through SequentialLR, the trainer's
definition), same augmentation of training batches (`augment: {crop: P, flip: true}`: per
sample, zero padding by P and a random PxP-offset crop, then a horizontal flip with
probability 1/2, as torchvision's RandomCrop(padding=P) + RandomHorizontalFlip; drawn from
PyTorch's generator), same minibatches (a fresh permutation every epoch, the last partial
batch kept), same early stopping
(validation loss every epoch, stop after --patience epochs without improvement, restore the
best state_dict incl. batch-norm buffers), model.eval() for validation and test.
Not the same: the initial weights, the permutations and the augmentation draws (PyTorch's
own RNG, --seed).

--checkpoint F saves the whole run (model, optimizer, schedule, best state, RNG) to F after
every epoch and, when F exists, continues from it: a killed run resumes where its last epoch
ended and finishes as the uninterrupted run would have (same RNG stream). --stop-after K ends
the run after K epochs of this invocation (to split a long run, or to test the resume).

usage: /usr/bin/python3 bench/torch_train.py specs/lenet5.yaml [--epochs E] [--lr LR] ...
"""
import argparse
import copy
import gzip
import math
import os
import struct
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import torch_ref  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"
# SequentialLR passes an epoch to the schedulers it switches to (torch 1.13 warns about it)
warnings.filterwarnings("ignore", message="The epoch parameter in `scheduler.step", category=UserWarning)


def read_idx(path):
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    if magic >> 8 != 0x08:
        raise SystemExit(f"{path}: bad IDX magic 0x{magic:08x}")
    nd = magic & 0xFF
    dims = struct.unpack(">" + "I" * nd, data[4:4 + 4 * nd])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * nd).reshape(dims)


def load(prefix, data_dir):
    x = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    x = torch.from_numpy(x.astype(np.float32) / np.float32(255.0)).unsqueeze(1)
    return x, torch.from_numpy(y.astype(np.int64))


def augment(x, crop, flip):
    """x [N, C, H, W]: per sample a random crop of the zero-padded image and a flip with
    probability 1/2 (the trainer's train.augment, with PyTorch's random numbers)."""
    n, _, h, w = x.shape
    if crop:
        xp = nn.functional.pad(x, (crop, crop, crop, crop))
        oy = torch.randint(0, 2 * crop + 1, (n,)).tolist()
        ox = torch.randint(0, 2 * crop + 1, (n,)).tolist()
        x = torch.stack([xp[i, :, oy[i]:oy[i] + h, ox[i]:ox[i] + w] for i in range(n)])
    if flip:
        fl = torch.rand(n) < 0.5
        x = torch.where(fl[:, None, None, None], x.flip(-1), x)
    return x


def make_scheduler(opt, tr):
    """The trainer's cg_lr_warmup_at: `warmup` epochs of lr (e+1)/(warmup+1), then the
    schedule over the remaining epochs; stepped once an epoch."""
    k, e = tr["warmup"], tr["epochs"]
    if tr["schedule"] == "step":
        main = torch.optim.lr_scheduler.StepLR(opt, step_size=tr["step_size"], gamma=tr["gamma"])
    elif tr["schedule"] == "cosine":
        main = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, e - k))
    else:
        main = None
    if not k:
        return main
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / (k + 1), end_factor=1.0,
                                             total_iters=k)
    if main is None:
        main = torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    return torch.optim.lr_scheduler.SequentialLR(opt, [warm, main], milestones=[k])


def evaluate(model, x, y, batch=1000):
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out = model(x[i:i + batch]).flatten(1)
            loss += nn.functional.cross_entropy(out, y[i:i + batch], reduction="sum").item()
            correct += (out.argmax(1) == y[i:i + batch]).sum().item()
    return loss / len(x), correct / len(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("spec")
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--momentum", type=float)
    ap.add_argument("--weight-decay", type=float)
    ap.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
    ap.add_argument("--beta1", type=float)
    ap.add_argument("--beta2", type=float)
    ap.add_argument("--eps", type=float)
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--crop", type=int)
    ap.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--schedule", choices=["constant", "step", "cosine"])
    ap.add_argument("--step-size", type=int)
    ap.add_argument("--gamma", type=float)
    ap.add_argument("--patience", type=int)
    ap.add_argument("--monitor", choices=["loss", "error"])
    ap.add_argument("--val", type=int, default=5000)
    ap.add_argument("--normalize", action="store_true", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save", help="write the restored best state_dict as .npz")
    ap.add_argument("--checkpoint", help="save the run here every epoch; resume from it if it exists")
    ap.add_argument("--stop-after", type=int, default=0,
                    help="end this invocation after this many epochs (0: run to the end)")
    a = ap.parse_args()

    spec = torch_ref.load_spec(a.spec)
    tr = dict(batch=32, epochs=10, lr=0.01, momentum=0.0, weight_decay=0.0,
              schedule="constant", step_size=10, gamma=0.1, patience=5, normalize=False,
              monitor="loss", optimizer="sgd", betas=[0.9, 0.999], eps=1e-8, warmup=0,
              augment={})
    tr.update(spec.get("train") or {})
    tr["beta1"], tr["beta2"] = tr.pop("betas")
    aug = tr.pop("augment") or {}
    tr["crop"], tr["flip"] = int(aug.get("crop", 0)), bool(aug.get("flip", False))
    for k in list(tr):
        v = getattr(a, k, None)
        if v is not None:
            tr[k] = v
    if spec.get("loss", "softmax_cross_entropy") != "softmax_cross_entropy":
        raise SystemExit("torch_train.py: only softmax cross-entropy specs (Fashion-MNIST)")
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)

    x, y = load("train", a.data)
    xt, yt = load("t10k", a.data)
    n = len(x) - a.val
    xtr, ytr, xv, yv = x[:n], y[:n], x[n:], y[n:]
    if tr["normalize"]:
        m, s = xtr.mean().item(), xtr.std(unbiased=False).item()
        xtr, xv, xt = (xtr - m) / s, (xv - m) / s, (xt - m) / s

    model = torch_ref.build_model(spec)
    if tr["optimizer"] == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=tr["lr"], momentum=tr["momentum"],
                              weight_decay=tr["weight_decay"])
        optim = f"SGD momentum {tr['momentum']}"
    else:
        cls = torch.optim.Adam if tr["optimizer"] == "adam" else torch.optim.AdamW
        opt = cls(model.parameters(), lr=tr["lr"], betas=(tr["beta1"], tr["beta2"]),
                  eps=tr["eps"], weight_decay=tr["weight_decay"])
        optim = f"{cls.__name__} betas ({tr['beta1']}, {tr['beta2']}) eps {tr['eps']}"
    sched = make_scheduler(opt, tr)
    B = tr["batch"]
    print(f"torch {torch.__version__}: {spec['name']}, {n} train / {len(xv)} val / {len(xt)} "
          f"test, {tr['epochs']} epochs, batch {B}, lr {tr['lr']} ({tr['schedule']}, warmup "
          f"{tr['warmup']}), {optim}, weight decay {tr['weight_decay']}, augment crop "
          f"{tr['crop']} flip {tr['flip']}, patience {tr['patience']}, {a.threads} threads",
          flush=True)
    best, best_state, best_epoch, bad = math.inf, None, 0, 0
    first, elapsed = 0, 0.0
    setup = dict(tr, spec=spec, seed=a.seed, val=a.val, data=a.data)
    if a.checkpoint and os.path.exists(a.checkpoint):
        try:
            ck = torch.load(a.checkpoint, weights_only=False)
            if not isinstance(ck, dict) or "setup" not in ck:
                raise ValueError("no run saved in it")
        except Exception as e:  # truncated or not a checkpoint: say which file and why
            raise SystemExit(f"{a.checkpoint}: not a torch_train.py checkpoint ({e}); remove it "
                             "to start afresh")
        if ck["setup"] != setup:
            raise SystemExit(f"{a.checkpoint}: saved by a run with other settings or another "
                             "spec; remove it to start afresh")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        if sched:
            sched.load_state_dict(ck["sched"])
        best, best_state, best_epoch, bad = ck["best"], ck["best_state"], ck["best_epoch"], ck["bad"]
        first, elapsed = ck["epoch"], ck["elapsed"]
        torch.set_rng_state(ck["rng"])
        print(f"resumed from {a.checkpoint} after epoch {first}", flush=True)
        if tr["patience"] > 0 and bad >= tr["patience"]:
            first = tr["epochs"]  # the saved run had stopped early: only the test is left
    t0 = time.time() - elapsed
    end = min(tr["epochs"], first + a.stop_after) if a.stop_after else tr["epochs"]
    for ep in range(first, end):
        model.train()
        perm = torch.randperm(n)
        total = 0.0
        for i in range(0, n, B):
            idx = perm[i:i + B]
            xb = xtr[idx]
            if tr["crop"] or tr["flip"]:
                xb = augment(xb, tr["crop"], tr["flip"])
            out = model(xb).flatten(1)
            loss = nn.functional.cross_entropy(out, ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        lr = opt.param_groups[0]["lr"]
        if sched:
            sched.step()
        vl, va = evaluate(model, xv, yv)
        mark = ""
        crit = 1.0 - va if tr["monitor"] == "error" else vl  # the monitored validation objective
        if crit < best:
            best, best_state, best_epoch, bad, mark = crit, copy.deepcopy(model.state_dict()), ep + 1, 0, "  *best"
        else:
            bad += 1
        print(f"epoch {ep + 1}/{tr['epochs']}  train_loss {total / n:.4f}  val_loss {vl:.4f}  "
              f"val_acc {va:.4f}  lr {lr:.4g}  {(ep + 1) * n / (time.time() - t0):.0f} img/s{mark}",
              flush=True)
        if a.checkpoint:
            tmp = a.checkpoint + ".tmp"
            torch.save(dict(setup=setup, model=model.state_dict(), opt=opt.state_dict(),
                            sched=sched.state_dict() if sched else None, best=best,
                            best_state=best_state, best_epoch=best_epoch, bad=bad,
                            epoch=ep + 1, elapsed=time.time() - t0,
                            rng=torch.get_rng_state()), tmp)
            os.replace(tmp, a.checkpoint)
        if tr["patience"] > 0 and bad >= tr["patience"]:
            print("patience exhausted: stopping")
            break
    else:
        if end < tr["epochs"]:
            print(f"stopped after epoch {end} (--stop-after {a.stop_after}); run again with "
                  f"--checkpoint {a.checkpoint} to continue")
            return
    model.load_state_dict(best_state)
    tl, ta = evaluate(model, xt, yt)
    print(f"restored the best parameters: epoch {best_epoch}, validation {tr['monitor']} {best:.4f}")
    print(f"test: {len(xt)} samples  test_loss {tl:.4f}  test_acc {ta:.4f}")
    if a.save:
        np.savez(a.save, **torch_ref.state_dict_numpy(model))


if __name__ == "__main__":
    main()
