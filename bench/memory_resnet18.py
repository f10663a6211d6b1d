#!/usr/bin/env python3
"""bench/memory_resnet18.py -- the memory one training step of torchvision's ResNet-18
takes in PyTorch on the CPU, for comparison with cnngen's planned workspace
(`cnngen --summary specs/resnet18.yaml`).

usage: VENV/bin/python bench/memory_resnet18.py [--batch 32] [--threads 2]

Peak RSS over three steps minus the RSS before the first (libraries, model and batch)
minus gradients and momentum: the activations and temporaries a step holds at its peak,
comparable with cnngen's workspace.
"""
import argparse
import re

import torch
import torch.nn.functional as F
import torchvision


def status(key):
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M).group(1)) * 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    m = torchvision.models.resnet18().train()
    x = torch.randn(a.batch, 3, 224, 224)
    t = torch.randint(0, 1000, (a.batch,))
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=False)
        F.cross_entropy(m(x), t).backward()
        opt.step()
    nparam = sum(p.numel() for p in m.parameters())
    before = status("VmRSS")  # libraries, the model and the batch; no step yet
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    for _ in range(3):
        step()
    peak = status("VmHWM")
    state = 2 * nparam * 4  # gradients and momentum, allocated by the first step
    print(f"pytorch {torch.__version__}: ResNet-18 batch {a.batch}, 3 training steps: peak RSS {peak / 2**20:.0f} MiB; "
          f"{(peak - before - state) / 2**20:.0f} MiB above the {before / 2**20:.0f} MiB before the first step "
          f"once gradients and momentum ({state / 2**20:.0f} MiB) are subtracted: the step's working memory")


if __name__ == "__main__":
    main()
