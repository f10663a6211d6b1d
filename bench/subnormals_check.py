#!/usr/bin/python3
"""subnormals_check.py -- does flushing subnormals to zero change a trainer's `check`?

usage: /usr/bin/python3 bench/subnormals_check.py WORKDIR SPEC.yaml=TRAINER ...

For every spec: tests/torch_ref.py check (the trainer with its default, FTZ|DAZ, against
PyTorch in float64), then the same cases again with `TRAINER check --ieee-subnormals`, and
the two R.npz compared element by element. Prints per case: the PyTorch verdict, how many
float32 values differ between FTZ and IEEE and by how much at most, and how many nonzero
subnormal values the IEEE run produced. Exit 1 if a PyTorch check failed.
"""
import glob
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = np.finfo(np.float32).tiny  # smallest normal float32, 1.18e-38


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    work, failed, total_diff = sys.argv[1], 0, 0
    for pair in sys.argv[2:]:
        spec, trainer = pair.split("=", 1)
        name = os.path.splitext(os.path.basename(trainer))[0]
        wd = os.path.join(work, name)
        p = subprocess.run([sys.executable, os.path.join(HERE, "..", "tests", "torch_ref.py"), "check",
                            spec, trainer, wd], stdout=subprocess.PIPE, text=True)
        verdict = "OK" if p.returncode == 0 else "FAILED"
        failed += p.returncode != 0
        for d in sorted(glob.glob(os.path.join(wd, "*-b*"))):
            ieee = os.path.join(d, "R_ieee.npz")
            subprocess.run([trainer, "check", "--weights", os.path.join(d, "W.npz"), "--input",
                            os.path.join(d, "X.npy"), "--target", os.path.join(d, "T.npy"), "--out", ieee,
                            "--ieee-subnormals"], check=True, stdout=subprocess.DEVNULL)
            ndiff, maxdiff, nsub, n = 0, 0.0, 0, 0
            with np.load(os.path.join(d, "R.npz")) as f, np.load(ieee) as g:
                for k in f.files:
                    a, b = f[k].astype(np.float32).ravel(), g[k].astype(np.float32).ravel()
                    ndiff += int(np.sum(a.view(np.uint32) != b.view(np.uint32)))
                    maxdiff = max(maxdiff, float(np.max(np.abs(a - b), initial=0.0)))
                    nsub += int(np.sum((b != 0) & (np.abs(b) < TINY)))
                    n += a.size
            total_diff += ndiff
            print(f"{os.path.basename(d)}: torch {verdict}; FTZ vs IEEE: {ndiff} of {n} values differ "
                  f"(max |diff| {maxdiff:.3g}); IEEE run holds {nsub} subnormals", flush=True)
    print(f"subnormals_check: {len(sys.argv) - 2} specs, {failed} failed against PyTorch, "
          f"{total_diff} values differ between FTZ and IEEE")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
