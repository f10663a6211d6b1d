#!/usr/bin/env python3
"""bench/memory_resnet18.py -- the memory one training step of torchvision's ResNet-18
takes in PyTorch on the CPU, for comparison with cnngen's planned workspace
(`cnngen --summary specs/resnet18.yaml`).

usage: VENV/bin/python bench/memory_resnet18.py [--batch 32] [--threads 2]

Peak RSS during a step minus the RSS before it (model, gradients, momentum and the batch
already allocated by a first step); the peak is reset through /proc/self/clear_refs.
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
    step()
    step()
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    step()
    peak = status("VmHWM")
    print(f"pytorch {torch.__version__}: ResNet-18 batch {a.batch} training step: peak RSS {peak / 2**20:.0f} MiB, "
          f"{(peak - before) / 2**20:.0f} MiB above the {before / 2**20:.0f} MiB before the step")


if __name__ == "__main__":
    main()
