#!/usr/bin/env python3
"""bench/resnet18_torchvision.py -- specs/resnet18.yaml is torchvision's ResNet-18.

usage: VENV/bin/python bench/resnet18_torchvision.py TRAINER WORKDIR [--n N] [--seed S]

Runs in the bench's virtual environment (torchvision from PyPI; `make resnet18-check`
installs it there). Builds torchvision.models.resnet18() (its own initialization, seeded;
batch-norm running statistics made non-trivial), converts its state dict to the
trainer's npz -- the keys are the module paths with dots as underscores
(layer1.0.conv1.weight -> layer1_0_conv1.weight), which is how the spec names its
layers -- and compares the trainer's inference-mode forward (`TRAINER check --eval`) on
N random images with torchvision's model.eval() forward in float64.
Exit 0 when every output is within 1e-4 * max(1, max|ref|).
"""
import argparse
import os
import subprocess
import sys

import numpy as np
import torch
import torchvision


def convert(sd):
    out = {}
    for k, v in sd.items():
        mod, _, leaf = k.rpartition(".")
        key = mod.replace(".", "_") + "." + leaf
        a = v.detach().cpu().numpy()
        out[key] = np.array(int(a), dtype=np.int64) if leaf == "num_batches_tracked" else a.astype(np.float32)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trainer")
    ap.add_argument("workdir")
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    torch.manual_seed(a.seed)
    m = torchvision.models.resnet18()
    g = torch.Generator().manual_seed(a.seed + 1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                c = mod.num_features
                mod.weight.copy_(torch.rand(c, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(c, generator=g) * 0.1)
                mod.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    w = convert(m.state_dict())
    np.savez(os.path.join(a.workdir, "W.npz"), **w)
    x = torch.randn(a.n, 3, 224, 224, generator=g)
    t = torch.randint(0, 1000, (a.n,), generator=g)
    np.save(os.path.join(a.workdir, "X.npy"), x.numpy())
    np.save(os.path.join(a.workdir, "T.npy"), t.numpy().astype(np.int64))
    m64 = m.double().eval()
    with torch.no_grad():
        ref = m64(x.double()).numpy()
    r = os.path.join(a.workdir, "R.npz")
    cmd = [a.trainer, "check", "--eval", "--weights", os.path.join(a.workdir, "W.npz"),
           "--input", os.path.join(a.workdir, "X.npy"), "--target", os.path.join(a.workdir, "T.npy"), "--out", r]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    got = np.load(r)["output"]
    err = float(np.max(np.abs(got - ref)))
    lim = 1e-4 * max(1.0, float(np.max(np.abs(ref))))
    ok = got.shape == ref.shape and err <= lim
    print(f"resnet18: torchvision {torchvision.__version__} (torch {torch.__version__}) state dict -> {len(w)} "
          f"tensors; eval forward on {a.n} images: max |cnngen - torchvision| = {err:.3g} "
          f"(limit {lim:.3g}, max |logit| {float(np.max(np.abs(ref))):.3g}): {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
