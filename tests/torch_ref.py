#!/usr/bin/python3
"""torch_ref.py -- PyTorch reference for cnngen specs (library + CLI).

Run with Debian's interpreter: /usr/bin/python3 tests/torch_ref.py ...

Subcommands
-----------
  build SPEC.yaml
      Parse + validate the spec, print the equivalent torch.nn.Sequential, a per-layer
      shape / parameter / receptive-field table, and run one training-mode
      forward+backward on random data (batch = smallest legal size) as a smoke test.

  check SPEC.yaml TRAINER WORKDIR [--batch N [N ...]] [--seed S] [--tol T]
                  [--dtype float64|float32] [--timeout SEC] [-v]
      For each batch size (default: 1 -- or 2 when the net has batchnorm -- plus 3,
      all clipped to train.batch; --batch may be repeated or list several values):
        * seed torch (seed S + N), build the model in train() mode with PyTorch's
          default init, then randomize every batchnorm's weight / bias / running_mean /
          running_var / num_batches_tracked so they are non-trivial;
        * X ~ N(0, 1) float32 (shape [N, *input]); T = int64 class indices [N]
          (softmax_cross_entropy) or N(0, 1) float32 [N, out_flat] (mse);
        * write WORKDIR/<name>-b<N>/{W.npz, X.npy, T.npy}; W.npz = state_dict() with the
          exact PyTorch keys, shapes and dtypes (num_batches_tracked: int64 0-d array);
        * reference: output (flattened to [N, out_flat]), mean loss, grad.input and
          grad.<key> for every learnable parameter;
        * run `TRAINER check --weights W.npz --input X.npy --target T.npy --out R.npz`
          and compare every tensor: shape and dtype (float32) must match exactly, and
          max|got - ref| <= tol * max(1, max|ref|)   (tol = 1e-4 by default).
      Prints `check-torch SPEC batch=N: OK (k tensors)` per batch size (on failure one
      line per compared tensor, then `... FAILED`). Exit 0 if all OK, 1 on any
      mismatch / missing key / trainer failure, 2 on usage or spec errors.
      If R.npz additionally holds `state.<key>` arrays (buffers after the training
      forward: running_mean, running_var, num_batches_tracked) they are compared too;
      any other extra key is reported and ignored.

  gen SPEC.yaml WORKDIR [--batch N ...] [--seed S] [--dtype ...]
      Same as check without a trainer: writes W.npz, X.npy, T.npy and the reference
      REF.npz (same keys/layout R.npz must have) into WORKDIR/<name>-b<N>/.

  compare REF.npz R.npz [--tol T]
      Compare two result files with the rule above.

  emulate SPEC.yaml check --weights W.npz --input X.npy --target T.npy --out R.npz
                  [--corrupt KEY] [--drop KEY]
      A float32 PyTorch stand-in for a generated trainer's `check` (loads W.npz with
      load_state_dict(strict=True)); for testing this harness without the C side.

  infer-gen SPEC.yaml DIR [--n N] [--seed S] [--norm]
      For `cnngen --inference` (tests/infer/run.sh): a model as in `check` (PyTorch init,
      batchnorm weights and running statistics randomized) and X ~ N(0, 1) [N, *input]
      (N = 5 by default). Writes DIR/W.npz, X.npy, X.bin (raw float32), P.bin and B.bin
      (every parameter / buffer in the trainer's flat layout, raw float32, counters as
      floats: what NAME_init takes) and REF.npy: the model.eval() forward in float64,
      [N, out_flat] as float32. With --norm also DIR/normalize.npz (random per-channel
      'mean' and 'std', as the trainer writes it) and REF applies it to X first.

  infer-compare DIR OUT... [--tol T]
      Compare each OUT (.npy, or raw float32 .bin) with DIR/REF.npy by the `check` rule
      max|got - ref| <= tol * max(1, max|ref|). Exit 1 on a mismatch.

  selftest [SPECDIR] [--full]
      Builds every spec in SPECDIR (default: specs/ next to tests/), checks that
      names are unique and equal the file stem, that the shape planner agrees with
      PyTorch, fixed facts (lecture_conv1d: 4 parameters, output length 8; vgg16:
      138,357,544 parameters; lecture 2-D table output sizes), that the asymmetric
      `same` module equals nn.Conv2d(padding='same'), and prints a parameter table.
      Exit 1 on any mismatch.

Precision decision (by experiment, see `--dtype`)
------------------------------------------------
The reference is computed in float64 by default: weights and input are generated as
float32 (that is what W.npz / X.npy hold), then the model and data are converted to
float64 exactly (copy of the model, .double()), so the reference is the exact result for
the float32 inputs and only the trainer's own float32 rounding counts against the
tolerance. Measured error of PyTorch's own float32 result against that float64
reference, max over all tensors of max|a-b| / max(1, max|ref|), default batches:
  lecture_*, lenet5, mixed2d, vgg16_cifar:   <= 3e-7
  mixed1d (batchnorm over [C, L] only):       <= 7e-6   (8 seeds x 7 batch sizes)
  vgg16 (3x224x224, batch 1 and 2):           ~1e-5     (about 40 s per reference)
  bnnet, rank-1 BatchNorm1d, batch 2 / 3:     up to 3.6e-4 / 1.8e-4  (!)
  bnnet, batch 4 / 5:                         up to 4e-5 / 6e-5      (30 seeds)
  bnnet, batch 6 / 7 / 8:                     <= 7e-6                (30 seeds)
A batchnorm that normalizes single values per sample (BatchNorm1d over features)
computes its statistics from only N numbers; with small N some feature's batch sigma
is tiny and float32 rounding of its input is amplified by |z|/sigma. So:
  * default batch sizes: (1, 3) without batchnorm, (2, 3) with batchnorm, and (3, 7)
    when a rank-1 batchnorm is present (all clipped to train.batch). Not 2 there: with
    two values x1, x2 per feature, x_hat = +-d/sqrt(d^2 + eps) (d = (x1 - x2)/2) and
    the gradient through the batchnorm is (gamma/sigma) (dy1 - dy2)/2 (1 - x_hat^2), a
    difference of nearly equal numbers of size eps/sigma^2: every gradient below it is
    float32 rounding noise, in PyTorch as in the trainer (the 64/128-channel bnnet
    showed 5x PyTorch-float32's noise there; at batch 3 it is within the plain 1e-4
    limit for seeds 0-4, worst 0.55 of it);
  * float64 reference by default: comparing two independent float32 computations
    doubles the noise; float64 leaves the trainer the whole margin;
  * a tensor over the 1e-4 limit is judged again against PyTorch's own float32 error:
    the trainer passes if it is within F32_FACTOR (2x) of it, i.e. at least as exact
    as PyTorch up to a factor 2 (reported as "ill-conditioned" on the OK line). A
    trainer bug gives errors ~1e-2 and up and still fails.
Confirmed with the generated C trainers: bnnet at batch 2 is off by 1.65e-4 where
PyTorch-float32 itself is off by 1.55e-4 (conditioning, not a bug); elsewhere the worst
err/limit ratio is 0.044.
`--dtype float32` gives the plain float32 PyTorch result instead.

Spec-format notes implemented here (the compiler follows the same rules; see
docs/spec.md): output is always reported flattened to [N, prod(out_shape)]; MSE is
computed on the flattened output; softmax_cross_entropy needs a rank-1 output; dense
needs a rank-1 input (use flatten); `same` padding puts the odd extra on the far
(bottom/right) side, exactly like PyTorch's padding='same'.
"""

import argparse
import warnings
import math
import os
import re
import subprocess
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

DEFAULT_TOL = 1e-4
warnings.filterwarnings("ignore", message="Using padding=.same. with even kernel")
TRAIN_DEFAULTS = {"batch": 32, "epochs": 10, "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0,
                  # trainer settings (validated by the compiler; not used by the reference)
                  "mode": "minibatch", "order": "shuffle", "schedule": "constant", "step_size": 10,
                  "gamma": 0.1, "patience": 5, "eval_every": 0, "val": None, "val_frac": None,
                  "seed": 0, "normalize": False, "checkpoint_every": 0, "monitor": "loss",
                  "optimizer": "sgd", "betas": [0.9, 0.999], "eps": 1e-8, "warmup": 0,
                  "augment": {"crop": 0, "flip": False}}
NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")

CONV = ("conv1d", "conv2d")
POOL = ("maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d")
ACT = ("relu", "leaky_relu", "sigmoid", "tanh")
GRAPH = ("add", "concat", "global_avgpool", "dropout")
KINDS = CONV + POOL + ("dense", "flatten", "batchnorm") + ACT + GRAPH
LAYER_KEYS = {
    "conv1d": {"out", "kernel", "stride", "padding", "dilation", "groups", "bias"},
    "conv2d": {"out", "kernel", "stride", "padding", "dilation", "groups", "bias"},
    "maxpool1d": {"kernel", "stride", "padding"},
    "maxpool2d": {"kernel", "stride", "padding"},
    "avgpool1d": {"kernel", "stride", "padding", "count_include_pad"},
    "avgpool2d": {"kernel", "stride", "padding", "count_include_pad"},
    "dense": {"out", "bias"},
    "flatten": set(),
    "relu": set(),
    "sigmoid": set(),
    "tanh": set(),
    "leaky_relu": {"slope"},
    "batchnorm": {"eps", "momentum"},
    "add": set(),
    "concat": set(),
    "global_avgpool": set(),
    "dropout": {"p"},
}
for _k in LAYER_KEYS:
    LAYER_KEYS[_k] = LAYER_KEYS[_k] | {"name", "from"}  # every layer may be named and read `from`
REQUIRED = {"add": ("from",), "concat": ("from",),
            "conv1d": ("out", "kernel"), "conv2d": ("out", "kernel"), "dense": ("out",),
            "maxpool1d": ("kernel",), "maxpool2d": ("kernel",),
            "avgpool1d": ("kernel",), "avgpool2d": ("kernel",)}


class SpecError(Exception):
    pass


# ----------------------------------------------------------------------------- parsing

def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v, what):
    """A real number; YAML 1.1 reads `1e-5` as a string, so accept numeric strings."""
    if isinstance(v, bool):
        raise SpecError(f"{what}: expected a number, got {v!r}")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass
    raise SpecError(f"{what}: expected a number, got {v!r}")


def _tuple(v, nd, what, minimum):
    """int or [h, w] (2-D only) -> tuple of nd ints >= minimum."""
    kind = "positive integer" if minimum == 1 else "non-negative integer"
    form = " or [h, w]" if nd == 2 else " (one integer for a 1-D layer)"
    if _is_int(v):
        vals = (v,) * nd
    elif nd == 2 and isinstance(v, list) and len(v) == nd and all(_is_int(x) for x in v):
        vals = tuple(v)
    else:
        raise SpecError(f"{what}: expected a {kind}{form}, got {v!r}")
    if any(x < minimum for x in vals):
        raise SpecError(f"{what}: expected a {kind}{form}, got {v!r}")
    return vals


def conv_out(i, k, s, lo, hi, d):
    """O = floor((I + p_lo + p_hi - d(k-1) - 1) / s) + 1  (<= 0 means invalid)."""
    return (i + lo + hi - d * (k - 1) - 1) // s + 1


def load_spec(path):
    with open(path) as f:
        spec = yaml.safe_load(f)
    if not isinstance(spec, dict):
        raise SpecError(f"{path}: top level must be a mapping")
    return spec


def parse_layers(spec):
    """Validate a spec dict; return a list of layer records (dicts) with shapes.

    Each record: kind, index, in_shape, out_shape, params (learnable count), rf, jump
    (per spatial axis, None after flatten/dense), plus the resolved keys.
    """
    unknown = set(spec) - {"name", "input", "layers", "loss", "train"}
    if unknown:
        raise SpecError(f"unknown top-level key(s): {sorted(unknown)}")
    name = spec.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > 48:
        raise SpecError(f"name: expected a C identifier [a-z_][a-z0-9_]*, got {name!r}")
    inp = spec.get("input")
    if not (isinstance(inp, list) and 1 <= len(inp) <= 3 and all(_is_int(x) and x > 0 for x in inp)):
        raise SpecError(f"input: expected [C, H, W], [C, L] or [N] of positive integers, got {inp!r}")
    loss = spec.setdefault("loss", "softmax_cross_entropy")
    if loss not in ("softmax_cross_entropy", "mse"):
        raise SpecError(f"loss: expected softmax_cross_entropy or mse, got {loss!r}")
    train = spec.get("train", {}) or {}
    if not isinstance(train, dict):
        raise SpecError(f"train: expected a mapping, got {train!r}")
    bad = set(train) - set(TRAIN_DEFAULTS)
    if bad:
        raise SpecError(f"train: unknown key(s) {sorted(bad)}")
    tr = dict(TRAIN_DEFAULTS)
    for k, v in train.items():
        if k in ("batch", "epochs"):
            if not _is_int(v) or v < 1:
                raise SpecError(f"train.{k}: expected a positive integer, got {v!r}")
            tr[k] = v
        elif k not in ("lr", "momentum", "weight_decay"):
            tr[k] = v  # trainer-only setting, checked by the compiler
        else:
            x = _num(v, f"train.{k}")
            if (k == "lr" and x <= 0) or x < 0 or (k == "momentum" and x >= 1):
                raise SpecError(f"train.{k}: out of range, got {v!r}")
            tr[k] = x
    layers = spec.get("layers")
    if not isinstance(layers, list) or not layers:
        raise SpecError("layers: expected a non-empty list")

    shape = tuple(inp)
    rf = [1] * (len(shape) - 1) if len(shape) > 1 else None
    jump = [1] * (len(shape) - 1) if len(shape) > 1 else None
    recs = []
    names = {}
    outs = {-1: (tuple(inp), rf, jump)}  # producer index -> (shape, rf, jump); -1 the input
    for i, entry in enumerate(layers):
        if isinstance(entry, str):
            kind, args = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            kind, args = next(iter(entry.items()))
            args = {} if args is None else args
        else:
            raise SpecError(f"layers[{i}]: expected a layer name or a one-key mapping, got {entry!r}")
        if kind not in KINDS:
            raise SpecError(f"layers[{i}]: unknown layer kind {kind!r} (expected one of {', '.join(KINDS)})")
        if not isinstance(args, dict):
            raise SpecError(f"layers[{i}] {kind}: expected a mapping of options, got {args!r}")
        bad = set(args) - LAYER_KEYS[kind]
        if bad:
            raise SpecError(f"layers[{i}] {kind}: unknown key(s) {sorted(bad)}")
        for r in REQUIRED.get(kind, ()):
            if r not in args:
                raise SpecError(f"layers[{i}] {kind}: missing required key {r!r}")
        w = f"layers[{i}] {kind}"

        def resolve(r):
            if r == "input":
                return -1
            if _is_int(r) and not isinstance(r, bool):
                if not 0 <= r < i:
                    raise SpecError(f"{w}: from: {r} is not an earlier layer")
                return r
            if isinstance(r, str) and r in names:
                return names[r]
            raise SpecError(f"{w}: from: unknown or later layer {r!r}")
        if kind in ("add", "concat"):
            frm = args.get("from")
            if not isinstance(frm, list) or len(frm) < 2:
                raise SpecError(f"{w}: from: expected a list of two or more layers, got {frm!r}")
            inputs = [resolve(r) for r in frm]
        elif "from" in args:
            inputs = [resolve(args["from"])]
        else:
            inputs = [i - 1]
        nm = args.get("name")
        if nm is not None:
            if not isinstance(nm, str) or not NAME_RE.match(nm) or nm == "input" or nm in names:
                raise SpecError(f"{w}: name: bad or duplicate name {nm!r}")
            names[nm] = i
        shape, rf, jump = outs[inputs[0]]
        rf = list(rf) if rf is not None else None
        jump = list(jump) if jump is not None else None
        for q in inputs[1:]:
            _, rf2, jump2 = outs[q]
            if rf is not None and rf2 is not None:
                rf = [max(a, b) for a, b in zip(rf, rf2)]
                jump = [max(a, b) for a, b in zip(jump, jump2)]
            else:
                rf = jump = None
        rec = {"kind": kind, "index": i, "in_shape": shape, "params": 0, "inputs": inputs, "name": nm,
               "in_shapes": [outs[q][0] for q in inputs]}
        rank = len(shape)

        if kind in CONV or kind in POOL:
            nd = 1 if kind.endswith("1d") else 2
            if rank != nd + 1:
                raise SpecError(f"{w}: needs a [C, {'L' if nd == 1 else 'H, W'}] input, got {list(shape)}")
            cin, sp = shape[0], shape[1:]
            k = _tuple(args["kernel"], nd, f"{kind}.kernel", 1)
            if kind in CONV:
                s = _tuple(args.get("stride", 1), nd, f"{kind}.stride", 1)
                d = _tuple(args.get("dilation", 1), nd, f"{kind}.dilation", 1)
            else:
                s = _tuple(args.get("stride", args["kernel"]), nd, f"{kind}.stride", 1)
                d = (1,) * nd
            pad = args.get("padding", 0)
            if kind in CONV and pad in ("valid", "same", "full"):
                if pad == "valid":
                    lo = hi = (0,) * nd
                elif pad == "full":
                    lo = hi = tuple(dd * (kk - 1) for dd, kk in zip(d, k))
                else:
                    if any(x != 1 for x in s):
                        raise SpecError(f"{kind}.padding: 'same' requires stride 1, got stride {list(s)}")
                    tot = [dd * (kk - 1) for dd, kk in zip(d, k)]
                    lo = tuple(t // 2 for t in tot)
                    hi = tuple(t - t // 2 for t in tot)
            else:
                if isinstance(pad, str):
                    raise SpecError(f"{kind}.padding: expected a non-negative integer"
                                    f"{', [h, w]' if nd == 2 else ''}"
                                    f"{', valid, same or full' if kind in CONV else ''}, got {pad!r}")
                lo = hi = _tuple(pad, nd, f"{kind}.padding", 0)
                if kind in POOL and any(p * 2 > kk for p, kk in zip(lo, k)):
                    raise SpecError(f"{kind}.padding: must be at most half the kernel, got {pad!r} for kernel {list(k)}")
            rec.update(nd=nd, kernel=k, stride=s, dilation=d, pad_lo=lo, pad_hi=hi, padding_spec=pad)
            out_sp = tuple(conv_out(ii, kk, ss, pl, ph, dd)
                           for ii, kk, ss, pl, ph, dd in zip(sp, k, s, lo, hi, d))
            if any(o < 1 for o in out_sp):
                raise SpecError(f"{w}: output size {list(out_sp)} < 1 for input {list(shape)}")
            if kind in CONV:
                out = args["out"]
                if not _is_int(out) or out < 1:
                    raise SpecError(f"{kind}.out: expected a positive integer, got {out!r}")
                g = args.get("groups", 1)
                if not _is_int(g) or g < 1 or cin % g or out % g:
                    raise SpecError(f"{kind}.groups: expected a positive integer dividing in ({cin}) and out ({out}) channels, got {g!r}")
                b = args.get("bias", True)
                if not isinstance(b, bool):
                    raise SpecError(f"{kind}.bias: expected true or false, got {b!r}")
                rec.update(cin=cin, out=out, groups=g, bias=b)
                rec["params"] = out * (cin // g) * math.prod(k) + (out if b else 0)
                oshape = (out,) + out_sp
            else:
                cip = True
                if kind.startswith("avg"):
                    cip = args.get("count_include_pad", True)
                    if not isinstance(cip, bool):
                        raise SpecError(f"{kind}.count_include_pad: expected true or false, got {cip!r}")
                rec["count_include_pad"] = cip
                oshape = (cin,) + out_sp
            if rf is not None:
                for a in range(nd):
                    keff = d[a] * (k[a] - 1) + 1
                    rf[a] = rf[a] + (keff - 1) * jump[a]
                    jump[a] = jump[a] * s[a]
        elif kind == "dense":
            if rank != 1:
                raise SpecError(f"{w}: needs a rank-1 input (insert flatten), got {list(shape)}")
            out = args["out"]
            if not _is_int(out) or out < 1:
                raise SpecError(f"dense.out: expected a positive integer, got {out!r}")
            b = args.get("bias", True)
            if not isinstance(b, bool):
                raise SpecError(f"dense.bias: expected true or false, got {b!r}")
            rec.update(cin=shape[0], out=out, bias=b)
            rec["params"] = out * shape[0] + (out if b else 0)
            oshape = (out,)
            rf = jump = None
        elif kind == "flatten":
            oshape = (math.prod(shape),)
            rf = jump = None
        elif kind == "batchnorm":
            eps = _num(args.get("eps", 1e-5), "batchnorm.eps")
            if eps <= 0:
                raise SpecError(f"batchnorm.eps: expected a positive number, got {args['eps']!r}")
            mom = args.get("momentum", 0.1)
            if mom is not None:
                mom = _num(mom, "batchnorm.momentum")
                if not 0 <= mom <= 1:
                    raise SpecError(f"batchnorm.momentum: expected a number in [0, 1] or null, got {mom!r}")
            rec.update(eps=eps, momentum=mom, features=shape[0], bn_rank=rank)
            rec["params"] = 2 * shape[0]
            oshape = shape
        elif kind == "leaky_relu":
            rec["slope"] = _num(args.get("slope", 0.01), "leaky_relu.slope")
            oshape = shape
        elif kind == "add":
            if any(tuple(s2) != tuple(shape) for s2 in rec["in_shapes"]):
                raise SpecError(f"{w}: shapes differ: {rec['in_shapes']}")
            oshape = shape
        elif kind == "concat":
            if any(len(s2) != len(shape) or tuple(s2[1:]) != tuple(shape[1:]) for s2 in rec["in_shapes"]):
                raise SpecError(f"{w}: only the first axis may differ: {rec['in_shapes']}")
            oshape = (sum(s2[0] for s2 in rec["in_shapes"]),) + tuple(shape[1:])
        elif kind == "global_avgpool":
            if rank < 2:
                raise SpecError(f"{w}: needs a [C, H, W] or [C, L] input, got {list(shape)}")
            oshape = (shape[0],) + (1,) * (rank - 1)
            rec["nd"] = rank - 1
        elif kind == "dropout":
            pv = _num(args.get("p", 0.5), "dropout.p")
            if not 0 <= pv < 1:
                raise SpecError(f"dropout.p: expected a number in [0, 1), got {pv!r}")
            rec["p"] = pv
            oshape = shape
        else:  # relu sigmoid tanh
            oshape = shape
        rec["out_shape"] = oshape
        rec["rf"] = list(rf) if rf is not None else None
        rec["jump"] = list(jump) if jump is not None else None
        recs.append(rec)
        outs[i] = (tuple(oshape), rf, jump)
        shape = oshape
    read = {q for r in recs for q in r["inputs"]}
    for r in recs[:-1]:
        if r["index"] not in read:
            raise SpecError(f"layers[{r['index']}] {r['kind']}: output never read (dead code)")
    if loss == "softmax_cross_entropy" and len(shape) != 1:
        raise SpecError(f"loss: softmax_cross_entropy needs a rank-1 network output (add flatten/dense), got {list(shape)}")
    if loss == "softmax_cross_entropy" and shape[0] < 2:
        raise SpecError("loss: softmax_cross_entropy needs at least 2 output classes")
    return recs, tr


# ----------------------------------------------------------------------------- modules

class PadConv1d(nn.Conv1d):
    """nn.Conv1d whose forward first zero-pads asymmetrically (pad_lo, pad_hi).

    Subclassing keeps the state_dict keys `i.weight` / `i.bias`."""

    def __init__(self, *a, pad_lo=(0,), pad_hi=(0,), **kw):
        super().__init__(*a, padding=0, **kw)
        self.pad_lo, self.pad_hi = tuple(pad_lo), tuple(pad_hi)

    def forward(self, x):
        return super().forward(F.pad(x, (self.pad_lo[0], self.pad_hi[0])))

    def extra_repr(self):
        return super().extra_repr() + f", pad_lo={self.pad_lo}, pad_hi={self.pad_hi}"


class PadConv2d(nn.Conv2d):
    """nn.Conv2d whose forward first zero-pads asymmetrically; F.pad takes the last
    axis first: (w_lo, w_hi, h_lo, h_hi)."""

    def __init__(self, *a, pad_lo=(0, 0), pad_hi=(0, 0), **kw):
        super().__init__(*a, padding=0, **kw)
        self.pad_lo, self.pad_hi = tuple(pad_lo), tuple(pad_hi)

    def forward(self, x):
        return super().forward(F.pad(x, (self.pad_lo[1], self.pad_hi[1], self.pad_lo[0], self.pad_hi[0])))

    def extra_repr(self):
        return super().extra_repr() + f", pad_lo={self.pad_lo}, pad_hi={self.pad_hi}"


def _layer_module(r):
    kind = r["kind"]
    if kind in CONV:
        nd = r["nd"]
        kw = dict(stride=r["stride"], dilation=r["dilation"], groups=r["groups"], bias=r["bias"])
        if r["pad_lo"] != r["pad_hi"]:
            cls = PadConv1d if nd == 1 else PadConv2d
            return cls(r["cin"], r["out"], r["kernel"], pad_lo=r["pad_lo"], pad_hi=r["pad_hi"], **kw)
        cls = nn.Conv1d if nd == 1 else nn.Conv2d
        return cls(r["cin"], r["out"], r["kernel"], padding=r["pad_lo"], **kw)
    if kind.startswith("maxpool"):
        cls = nn.MaxPool1d if r["nd"] == 1 else nn.MaxPool2d
        return cls(r["kernel"], stride=r["stride"], padding=r["pad_lo"])
    if kind.startswith("avgpool"):
        cls = nn.AvgPool1d if r["nd"] == 1 else nn.AvgPool2d
        return cls(r["kernel"], stride=r["stride"], padding=r["pad_lo"],
                   count_include_pad=r["count_include_pad"])
    if kind == "dense":
        return nn.Linear(r["cin"], r["out"], bias=r["bias"])
    if kind == "flatten":
        return nn.Flatten()
    if kind == "batchnorm":
        cls = nn.BatchNorm2d if r["bn_rank"] == 3 else nn.BatchNorm1d
        return cls(r["features"], eps=r["eps"], momentum=r["momentum"])
    if kind == "relu":
        return nn.ReLU()
    if kind == "leaky_relu":
        return nn.LeakyReLU(r["slope"])
    if kind == "sigmoid":
        return nn.Sigmoid()
    if kind == "tanh":
        return nn.Tanh()
    if kind == "add":
        return Add()
    if kind == "concat":
        return Concat()
    if kind == "global_avgpool":
        return nn.AdaptiveAvgPool2d(1) if r["nd"] == 2 else nn.AdaptiveAvgPool1d(1)
    if kind == "dropout":
        return Dropout(r["p"], r["index"])
    raise AssertionError(kind)


def dropout_mask(seed, index, n, size, p):
    """The generated dropout's mask, [n, size] float64 (0 or 1/(1-p)): a hash of the
    step's seed (the forward's `training` argument), the layer index, the sample and
    the element (compiler/lua/layers/graph.lua has the C twin)."""
    M32 = np.uint64(0xFFFFFFFF)

    def mix(h):
        h = h & M32
        h ^= h >> np.uint64(16)
        h = (h * np.uint64(0x7feb352d)) & M32
        h ^= h >> np.uint64(15)
        h = (h * np.uint64(0x846ca68b)) & M32
        h ^= h >> np.uint64(16)
        return h
    sd = mix(np.uint64((seed ^ ((index + 1) * 0x85ebca6b)) & 0xFFFFFFFF))
    idx = np.arange(n, dtype=np.uint64)[:, None] * np.uint64(size) + np.arange(size, dtype=np.uint64)[None, :]
    h = mix(((idx * np.uint64(0x9e3779b1)) & M32) ^ sd)
    keep = int(math.floor(p * 16777216 + 0.5))
    return np.where((h >> np.uint64(8)) >= np.uint64(keep), 1.0 / (1.0 - p), 0.0)


class Add(nn.Module):
    def forward(self, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class Concat(nn.Module):
    def forward(self, *xs):
        return torch.cat(xs, dim=1)


class Dropout(nn.Dropout):
    """nn.Dropout whose training mask is the generated code's (dropout_mask), so that a
    training forward compares bit for bit in the mask; DROPOUT_SEED is the `training`
    argument the trainer's `check` passes."""
    SEED = 1

    def __init__(self, p, index):
        super().__init__(p)
        self.index = index

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        n, size = x.shape[0], x[0].numel()
        m = torch.from_numpy(dropout_mask(Dropout.SEED, self.index, n, size, self.p)).to(x.dtype)
        return x * m.reshape(x.shape)


class GraphNet(nn.Module):
    """A spec with `from:` / add / concat: each layer a child under its key (its
    `name`, else its index), run in order, each reading the outputs it names."""

    def __init__(self, recs):
        super().__init__()
        self.plan = []
        for r in recs:
            key = r["name"] or str(r["index"])
            self.add_module(key, _layer_module(r))
            self.plan.append((key, r["inputs"]))

    def forward(self, x):
        outs = {-1: x}
        y = x
        for i, (key, inputs) in enumerate(self.plan):
            y = getattr(self, key)(*[outs[q] for q in inputs])
            outs[i] = y
        return y


def build_model(spec):
    """spec dict (as loaded from YAML) -> torch.nn.Sequential (index i == layer i), or
    a GraphNet when a layer is named or reads `from` an earlier layer."""
    recs, _ = parse_layers(spec)
    if any(r["name"] or r["inputs"] != [r["index"] - 1] for r in recs):
        return GraphNet(recs)
    return nn.Sequential(*[_layer_module(r) for r in recs])


def param_count(model):
    """Number of learnable scalars (buffers such as running_mean excluded)."""
    return sum(p.numel() for p in model.parameters())


def min_batch(spec):
    """Smallest batch PyTorch accepts in train mode: batchnorm needs > 1 value per
    channel (N * spatial > 1)."""
    recs, _ = parse_layers(spec)
    m = 1
    for r in recs:
        if r["kind"] == "batchnorm" and math.prod(r["in_shape"][1:]) == 1:
            m = 2
    return m


def has_batchnorm(spec):
    return any(r["kind"] == "batchnorm" for r in parse_layers(spec)[0])


def randomize_batchnorm(model, gen):
    """Make BN affine params and running stats non-trivial (default: 1, 0, 0, 1, 0)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.5)
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
                m.num_batches_tracked.fill_(int(torch.randint(0, 10, (1,), generator=gen)))


def state_dict_numpy(model):
    out = {}
    for k, v in model.state_dict().items():
        a = v.detach().cpu().numpy()
        if k.endswith("num_batches_tracked"):
            a = np.array(int(a), dtype=np.int64)  # 0-d int64
        else:
            a = a.astype(np.float32)
        out[k] = a
    return out


def make_case(spec, n, seed):
    """-> (model float32 train-mode, W dict, X np.float32, T np)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1000003)
    model = build_model(spec)
    model.train()
    randomize_batchnorm(model, gen)
    recs, _ = parse_layers(spec)
    x = torch.randn((n,) + tuple(spec["input"]), generator=gen, dtype=torch.float32)
    out_flat = math.prod(recs[-1]["out_shape"])
    if spec["loss"] == "softmax_cross_entropy":
        t = torch.randint(0, out_flat, (n,), generator=gen, dtype=torch.int64)
    else:
        t = torch.randn((n, out_flat), generator=gen, dtype=torch.float32)
    return model, state_dict_numpy(model), x.numpy(), t.numpy()


def reference(spec, model, x, t, dtype="float64", eval_mode=False):
    """Training-mode forward + backward. Returns dict of float32 numpy arrays with the
    keys R.npz must hold, plus state.<key> for buffers after the forward.
    eval_mode: model.eval() forward only; output and loss."""
    tdt = torch.float64 if dtype == "float64" else torch.float32
    import copy
    m = copy.deepcopy(model).to(tdt)
    if eval_mode:
        m.eval()
        with torch.no_grad():
            out = m(torch.from_numpy(np.array(x)).to(tdt)).flatten(1)
            if spec["loss"] == "softmax_cross_entropy":
                loss = nn.CrossEntropyLoss()(out, torch.from_numpy(np.array(t)))
            else:
                loss = nn.MSELoss()(out, torch.from_numpy(np.array(t)).to(tdt))
        return {"output": out.numpy().astype(np.float32), "loss": loss.numpy().astype(np.float32)}
    m.train()
    xt = torch.from_numpy(np.array(x)).to(tdt).requires_grad_(True)
    out = m(xt).flatten(1)
    if spec["loss"] == "softmax_cross_entropy":
        loss = nn.CrossEntropyLoss()(out, torch.from_numpy(np.array(t)))
    else:
        loss = nn.MSELoss()(out, torch.from_numpy(np.array(t)).to(tdt))
    m.zero_grad()
    loss.backward()
    res = {"output": out.detach(), "loss": loss.detach(), "grad.input": xt.grad}
    for k, p in m.named_parameters():
        res["grad." + k] = p.grad
    f32 = {k: v.cpu().numpy().astype(np.float32) for k, v in res.items()}
    for k, v in m.state_dict().items():
        if k.endswith(("running_mean", "running_var")):
            f32["state." + k] = v.cpu().numpy().astype(np.float32)
        elif k.endswith("num_batches_tracked"):
            f32["state." + k] = np.array(int(v), dtype=np.int64)
    return f32


def required_keys(ref):
    return [k for k in ref if not k.startswith("state.")]


def compare(ref, got, tol=DEFAULT_TOL, f32=None):
    """-> (ok, lines, ncompared). Required keys must exist; state.* only if present.
    f32: optional float32 PyTorch result; its own error is shown per tensor (diagnostic
    only: tells a trainer bug from an ill-conditioned case)."""
    lines, ok, n = [], True, 0
    for k in ref:
        r = ref[k]
        if k not in got:
            if k.startswith("state."):
                continue
            lines.append(f"  {k:<28} MISSING from result (expected shape {list(r.shape)})")
            ok = False
            continue
        g = got[k]
        n += 1
        want_dtype = np.int64 if r.dtype == np.int64 else np.float32
        if g.shape != r.shape:
            lines.append(f"  {k:<28} SHAPE {list(g.shape)} != expected {list(r.shape)}")
            ok = False
            continue
        if g.dtype != want_dtype:
            lines.append(f"  {k:<28} DTYPE {g.dtype} != expected {np.dtype(want_dtype)}")
            ok = False
            continue
        rr, gg = r.astype(np.float64), g.astype(np.float64)
        scale = max(1.0, float(np.max(np.abs(rr))) if rr.size else 1.0)
        if not np.all(np.isfinite(gg)):
            lines.append(f"  {k:<28} FAIL non-finite values in result")
            ok = False
            continue
        err = float(np.max(np.abs(gg - rr))) if rr.size else 0.0
        limit = tol * scale
        diag = ""
        if f32 is not None and k in f32:
            # Ill-conditioned tensors (batch norm over few values): PyTorch's own float32
            # result strays from the exact one too. The trainer must then be at least
            # as exact as PyTorch, within a factor F32_FACTOR.
            e32 = float(np.max(np.abs(f32[k].astype(np.float64) - rr))) if rr.size else 0.0
            limit = max(limit, F32_FACTOR * e32)
            diag = f" (torch-f32 max|d|={e32:.3e})"
        good = err <= limit
        ok &= good
        lines.append(f"  {k:<28} {'ok  ' if good else 'FAIL'} max|d|={err:.3e} "
                     f"limit={limit:.3e} shape={list(r.shape)}{diag}")
    for k in got:
        if k not in ref:
            lines.append(f"  {k:<28} (extra key in result, ignored)")
    return ok, lines, n


def has_rank1_batchnorm(spec):
    """True if some batchnorm normalizes single values per sample (BatchNorm1d over
    features, or over a 1x1 spatial map): its statistics use only N values."""
    return any(r["kind"] == "batchnorm" and math.prod(r["in_shape"][1:]) == 1
               for r in parse_layers(spec)[0])


WELL_CONDITIONED_BATCH = 7
F32_FACTOR = 2.0


def default_batches(spec, tr):
    """(1, 3) without batchnorm; (2, 3) with batchnorm; (3, 7) with a rank-1 batchnorm
    (float32 conditioning, see the module docstring); clipped to train.batch."""
    if has_rank1_batchnorm(spec):
        cand = (3, WELL_CONDITIONED_BATCH)
    elif has_batchnorm(spec):
        cand = (2, 3)
    else:
        cand = (1, 3)
    out = []
    for b in cand:
        b = min(b, tr["batch"])
        if b not in out and b >= min_batch(spec):
            out.append(b)
    return out


# ----------------------------------------------------------------------------- CLI

def _fmt_shape(s):
    return "x".join(str(v) for v in s)


def describe(spec):
    recs, tr = parse_layers(spec)
    lines = [f"{'#':>3} {'layer':<11} {'in':>12} {'out':>12} {'params':>12} {'rf':>8} {'jump':>6}"]
    for r in recs:
        rf = "x".join(map(str, r["rf"])) if r["rf"] else "-"
        jp = "x".join(map(str, r["jump"])) if r["jump"] else "-"
        lines.append(f"{r['index']:>3} {r['kind']:<11} {_fmt_shape(r['in_shape']):>12} "
                     f"{_fmt_shape(r['out_shape']):>12} {r['params']:>12,} {rf:>8} {jp:>6}")
    return lines


def cmd_build(a):
    spec = load_spec(a.spec)
    model = build_model(spec)
    recs, tr = parse_layers(spec)
    print(model)
    print("\n".join(describe(spec)))
    n = max(min_batch(spec), 2 if has_batchnorm(spec) else 1)
    n = min(n, tr["batch"])
    model, w, x, t = make_case(spec, n, 0)
    ref = reference(spec, model, x, t, "float32")
    print(f"{spec['name']}: input {list(spec['input'])} -> output {list(recs[-1]['out_shape'])}, "
          f"{param_count(model):,} parameters, loss {spec['loss']}, train {tr}")
    print(f"forward+backward batch={n}: loss={float(ref['loss']):.6f}, "
          f"{len(required_keys(ref))} tensors, all finite: "
          f"{all(np.all(np.isfinite(v)) for v in ref.values())}")
    return 0


def _write_case(d, w, x, t):
    os.makedirs(d, exist_ok=True)
    np.savez(os.path.join(d, "W.npz"), **w)
    np.save(os.path.join(d, "X.npy"), x)
    np.save(os.path.join(d, "T.npy"), t)


def _batches(a, spec, tr):
    if a.batch:
        bs = []
        for b in a.batch:
            if b < 1 or b > tr["batch"]:
                raise SpecError(f"--batch {b}: must be in 1..train.batch ({tr['batch']})")
            if b < min_batch(spec):
                raise SpecError(f"--batch {b}: batchnorm over single values needs batch >= {min_batch(spec)}")
            if b not in bs:
                bs.append(b)
    else:
        bs = default_batches(spec, tr)
    if a.train_batch and tr["batch"] not in bs:
        bs.append(tr["batch"])
    return bs


def cmd_gen(a):
    spec = load_spec(a.spec)
    _, tr = parse_layers(spec)
    for n in _batches(a, spec, tr):
        model, w, x, t = make_case(spec, n, a.seed + n)
        d = os.path.join(a.workdir, f"{spec['name']}-b{n}")
        _write_case(d, w, x, t)
        np.savez(os.path.join(d, "REF.npz"), **reference(spec, model, x, t, a.dtype))
        print(f"wrote {d}/{{W.npz,X.npy,T.npy,REF.npz}}")
    return 0


def cmd_check(a):
    spec = load_spec(a.spec)
    _, tr = parse_layers(spec)
    batches = _batches(a, spec, tr)
    trainer = a.trainer
    if os.sep not in trainer and not os.path.exists(trainer):
        trainer = os.path.join(".", trainer)
    if not os.path.isfile(trainer) or not os.access(trainer, os.X_OK):
        print(f"check-torch {a.spec}: FAILED: trainer {a.trainer!r} not found or not executable",
              file=sys.stderr)
        return 1
    all_ok = True
    for n in batches:
        tag = f"check-torch {a.spec} batch={n}"
        model, w, x, t = make_case(spec, n, a.seed + n)
        d = os.path.abspath(os.path.join(a.workdir, f"{spec['name']}-b{n}"))
        _write_case(d, w, x, t)
        rpath = os.path.join(d, "R.npz")
        if os.path.exists(rpath):
            os.remove(rpath)
        ref = reference(spec, model, x, t, a.dtype, eval_mode=getattr(a, "eval", False))
        cmd = [trainer, "check", "--weights", os.path.join(d, "W.npz"),
               "--input", os.path.join(d, "X.npy"), "--target", os.path.join(d, "T.npy"),
               "--out", rpath] + (["--eval"] if getattr(a, "eval", False) else [])
        try:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=a.timeout)
        except subprocess.TimeoutExpired:
            print(f"{tag}: FAILED: trainer timed out after {a.timeout}s: {' '.join(cmd)}")
            all_ok = False
            continue
        except OSError as e:
            print(f"{tag}: FAILED: cannot run trainer: {e}")
            all_ok = False
            continue
        outtxt = p.stdout.decode(errors="replace").rstrip()
        if a.verbose and outtxt:
            print(outtxt)
        if p.returncode != 0:
            print(f"{tag}: FAILED: trainer exited with status {p.returncode}: {' '.join(cmd)}")
            for line in outtxt.splitlines()[-20:]:
                print(f"  | {line}")
            all_ok = False
            continue
        try:
            with np.load(rpath) as z:
                got = {k: z[k] for k in z.files}
        except Exception as e:  # missing / corrupt file
            print(f"{tag}: FAILED: cannot read {rpath}: {e}")
            all_ok = False
            continue
        ok, lines, ncmp = compare(ref, got, a.tol)
        if ok:
            if a.verbose:
                print("\n".join(lines))
            print(f"{tag}: OK ({ncmp} tensors)")
        else:
            if a.dtype == "float64":  # judge again against PyTorch's own float32 error
                f32 = reference(spec, model, x, t, "float32")
                ok, lines, ncmp = compare(ref, got, a.tol, f32)
            if ok:
                print(f"{tag}: OK ({ncmp} tensors; ill-conditioned, within {F32_FACTOR:g}x "
                      "PyTorch float32's own error)")
                continue
            print("\n".join(lines))
            print(f"{tag}: FAILED (workdir {d})")
            all_ok = False
    return 0 if all_ok else 1


def flat_layout(model):
    """(params, buffers) as the trainer's flat arrays: state_dict order, learnable tensors
    into params, running statistics and counters (as floats) into buffers."""
    names = {k for k, _ in model.named_parameters()}
    ps, bs = [], []
    for k, v in model.state_dict().items():
        a = v.detach().cpu().numpy().astype(np.float32).ravel()
        (ps if k in names else bs).append(a)
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.float32)
    return cat(ps), cat(bs)


def cmd_infer_gen(a):
    spec = load_spec(a.spec)
    recs, _ = parse_layers(spec)
    model, w, x, _ = make_case(spec, a.n, a.seed)
    os.makedirs(a.dir, exist_ok=True)
    np.savez(os.path.join(a.dir, "W.npz"), **w)
    np.save(os.path.join(a.dir, "X.npy"), x)
    x.astype(np.float32).tofile(os.path.join(a.dir, "X.bin"))
    p, b = flat_layout(model)
    p.tofile(os.path.join(a.dir, "P.bin"))
    b.tofile(os.path.join(a.dir, "B.bin"))
    xin = torch.from_numpy(x).double()
    npath = os.path.join(a.dir, "normalize.npz")
    if a.norm:
        c = spec["input"][0]  # channels, or features of a rank-1 input
        gen = torch.Generator().manual_seed(a.seed + 77)
        mean = (torch.randn(c, generator=gen) * 0.5).numpy().astype(np.float32)
        std = (torch.rand(c, generator=gen) * 1.5 + 0.5).numpy().astype(np.float32)
        np.savez(npath, mean=mean, std=std)
        shape = (1, c) + (1,) * (len(spec["input"]) - 1)
        m64 = torch.from_numpy(mean).double().reshape(shape)
        inv = torch.from_numpy((np.float32(1) / std).astype(np.float32)).double().reshape(shape)
        xin = (xin - m64) * inv
    elif os.path.exists(npath):
        os.remove(npath)  # a stale one would make the trainer's predict normalize
    import copy
    m = copy.deepcopy(model).double()
    m.eval()
    with torch.no_grad():
        ref = m(xin).flatten(1).numpy().astype(np.float32)
    np.save(os.path.join(a.dir, "REF.npy"), ref)
    print(f"wrote {a.dir}/{{W.npz,X.npy,X.bin,P.bin,B.bin,REF.npy}}{' and normalize.npz' if a.norm else ''}")
    return 0


def cmd_infer_compare(a):
    ref = np.load(os.path.join(a.dir, "REF.npy"))
    ok = True
    for f in a.out:
        got = np.load(f) if f.endswith(".npy") else np.fromfile(f, dtype=np.float32)
        if got.size != ref.size:
            print(f"infer-compare {f}: FAIL {got.size} values, expected {ref.size} {list(ref.shape)}")
            ok = False
            continue
        got = got.reshape(ref.shape).astype(np.float64)
        limit = a.tol * max(1.0, float(np.max(np.abs(ref))))
        err = float(np.max(np.abs(got - ref))) if np.all(np.isfinite(got)) else math.inf
        good = err <= limit
        ok &= good
        print(f"infer-compare {f}: {'ok  ' if good else 'FAIL'} max|d|={err:.3e} limit={limit:.3e}")
    return 0 if ok else 1


def cmd_compare(a):
    with np.load(a.ref) as z:
        ref = {k: z[k] for k in z.files}
    with np.load(a.result) as z:
        got = {k: z[k] for k in z.files}
    ok, lines, n = compare(ref, got, a.tol)
    print("\n".join(lines))
    print(f"compare {a.result}: {'OK' if ok else 'FAILED'} ({n} tensors)")
    return 0 if ok else 1


def cmd_emulate(a):
    """Stand-in trainer: `torch_ref.py emulate SPEC check --weights W --input X
    --target T --out R` does what the generated trainer's `check` must do, in float32
    PyTorch, loading W.npz strictly. --corrupt KEY perturbs one result tensor,
    --drop KEY omits it (harness self-tests)."""
    spec = load_spec(a.spec)
    model = build_model(spec)
    with np.load(a.weights) as z:
        w = {k: torch.from_numpy(z[k]) for k in z.files}
    sd = model.state_dict()
    for k, v in w.items():
        if k in sd and (tuple(v.shape) != tuple(sd[k].shape) or v.dtype != sd[k].dtype):
            print(f"emulate: {a.weights}: {k}: shape {list(v.shape)} {v.dtype}, "
                  f"expected {list(sd[k].shape)} {sd[k].dtype}", file=sys.stderr)
            return 1
    try:
        model.load_state_dict(w, strict=True)
    except RuntimeError as e:
        print(f"emulate: {a.weights}: {e}", file=sys.stderr)
        return 1
    x, t = np.load(a.input), np.load(a.target)
    res = reference(spec, model, x, t, "float32")
    res = {k: v for k, v in res.items() if not k.startswith("state.")}
    if a.corrupt:
        res[a.corrupt] = res[a.corrupt] + np.float32(1e-2)
    if a.drop:
        del res[a.drop]
    np.savez(a.out, **res)
    return 0


def cmd_selftest(a):
    specdir = a.specdir or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "specs")
    files = sorted(f for f in os.listdir(specdir) if f.endswith(".yaml"))
    fails = []

    def expect(cond, msg):
        if not cond:
            fails.append(msg)
            print(f"selftest: FAIL: {msg}")

    # asymmetric 'same' padding == PyTorch's own padding='same'
    torch.manual_seed(0)
    for k, d in (((4, 2), (1, 1)), ((3, 2), (2, 1)), ((2, 5), (3, 2))):
        ref = nn.Conv2d(3, 4, k, padding="same", dilation=d)
        tot = [dd * (kk - 1) for dd, kk in zip(d, k)]
        mine = PadConv2d(3, 4, k, dilation=d, pad_lo=[t // 2 for t in tot], pad_hi=[t - t // 2 for t in tot])
        mine.load_state_dict(ref.state_dict())
        xx = torch.randn(2, 3, 9, 8)
        expect(torch.allclose(ref(xx), mine(xx), atol=1e-6), f"PadConv2d != Conv2d(padding='same') k={k} d={d}")
    ref1 = nn.Conv1d(2, 3, 4, padding="same", dilation=3)
    mine1 = PadConv1d(2, 3, 4, dilation=3, pad_lo=(4,), pad_hi=(5,))
    mine1.load_state_dict(ref1.state_dict())
    xx = torch.randn(2, 2, 11)
    expect(torch.allclose(ref1(xx), mine1(xx), atol=1e-6), "PadConv1d != Conv1d(padding='same')")

    # lecture 2-D table: (input size, conv output size) of conv_arithmetic's GIFs
    table = {"lecture_k3p0": (4, 2), "lecture_k4p2": (5, 6), "lecture_half": (5, 5),
             "lecture_full": (5, 7), "lecture_k3s2p0": (5, 2), "lecture_k3s2p1_odd": (5, 3),
             "lecture_k3s2p1_even": (6, 3), "lecture_k3d2": (7, 3)}
    names = {}
    rows = []
    for f in files:
        path = os.path.join(specdir, f)
        try:
            spec = load_spec(path)
            recs, tr = parse_layers(spec)
            model = build_model(spec)
        except (SpecError, yaml.YAMLError) as e:
            expect(False, f"{f}: {e}")
            continue
        name = spec["name"]
        expect(name == f[:-5], f"{f}: name {name!r} != file stem")
        expect(name not in names, f"{f}: duplicate name {name!r} (also {names.get(name)})")
        names[name] = f
        pc = param_count(model)
        expect(pc == sum(r["params"] for r in recs), f"{name}: planner params != torch params")
        # planner shapes == torch shapes, layer by layer (float32 forward, train mode)
        n = max(min_batch(spec), 2 if has_batchnorm(spec) else 1)
        n = min(n, tr["batch"])
        if name != "vgg16" or a.full:
            h = torch.randn((n,) + tuple(spec["input"]))
            model.train()
            for r, mod in zip(recs, model):
                h = mod(h)
                expect(tuple(h.shape[1:]) == tuple(r["out_shape"]),
                       f"{name} layer {r['index']} {r['kind']}: torch {list(h.shape[1:])} != planner {list(r['out_shape'])}")
            loss = h.flatten(1).square().mean()
            loss.backward()
            expect(all(p.grad is not None for p in model.parameters()), f"{name}: missing grads")
        if name == "lecture_conv1d":
            expect(pc == 4, f"lecture_conv1d has {pc} parameters, expected 4")
            expect(recs[0]["out_shape"] == (1, 8), f"lecture_conv1d conv output {recs[0]['out_shape']}, expected (1, 8)")
        if name == "vgg16":
            expect(pc == 138357544, f"vgg16 has {pc:,} parameters, expected 138,357,544")
        if name in table:
            i, o = table[name]
            expect(recs[0]["in_shape"][1:] == (i, i) and recs[0]["out_shape"][1:] == (o, o),
                   f"{name}: conv {recs[0]['in_shape']} -> {recs[0]['out_shape']}, lecture says {i}x{i} -> {o}x{o}")
        rows.append((name, _fmt_shape(spec["input"]), _fmt_shape(recs[-1]["out_shape"]), len(recs),
                     pc, spec["loss"], tr["batch"]))
    for nm in list(table) + ["lecture_conv1d", "vgg16"]:
        expect(nm in names, f"spec {nm} missing from {specdir}")
    print(f"{'name':<22} {'input':>10} {'output':>8} {'layers':>6} {'params':>13} {'loss':<22} batch")
    for r in rows:
        print(f"{r[0]:<22} {r[1]:>10} {r[2]:>8} {r[3]:>6} {r[4]:>13,} {r[5]:<22} {r[6]}")
    print(f"selftest: {'OK' if not fails else 'FAILED'} ({len(rows)} specs, {len(fails)} failures)")
    return 0 if not fails else 1


def main(argv=None):
    ap = argparse.ArgumentParser(prog="torch_ref.py", description="PyTorch reference for cnngen specs")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("build", help="print the torch.nn.Sequential for a spec")
    p.add_argument("spec")
    p.set_defaults(fn=cmd_build)

    def common(p):
        p.add_argument("--batch", type=int, nargs="+", action="extend", default=None,
                       help="batch size(s); repeatable")
        p.add_argument("--train-batch", action="store_true",
                       help="also the spec's train.batch (a team's whole batch)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                       help="precision of the PyTorch reference (default float64)")

    p = sub.add_parser("check", help="compare a generated trainer's `check` with PyTorch")
    p.add_argument("spec")
    p.add_argument("trainer")
    p.add_argument("workdir")
    common(p)
    p.add_argument("--tol", type=float, default=DEFAULT_TOL)
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--eval", action="store_true",
                   help="inference mode (model.eval(), the trainer's check --eval): output and loss")
    p.set_defaults(fn=cmd_check)
    p = sub.add_parser("gen", help="write W.npz X.npy T.npy REF.npz without a trainer")
    p.add_argument("spec")
    p.add_argument("workdir")
    common(p)
    p.set_defaults(fn=cmd_gen)
    p = sub.add_parser("compare", help="compare REF.npz with R.npz")
    p.add_argument("ref")
    p.add_argument("result")
    p.add_argument("--tol", type=float, default=DEFAULT_TOL)
    p.set_defaults(fn=cmd_compare)
    p = sub.add_parser("emulate", help="PyTorch stand-in for a generated trainer")
    p.add_argument("spec")
    p.add_argument("subcmd", choices=("check",))
    p.add_argument("--weights", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--corrupt")
    p.add_argument("--drop")
    p.set_defaults(fn=cmd_emulate)
    p = sub.add_parser("infer-gen", help="weights, inputs and model.eval() outputs for cnngen --inference")
    p.add_argument("spec")
    p.add_argument("dir")
    p.add_argument("--n", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--norm", action="store_true")
    p.set_defaults(fn=cmd_infer_gen)
    p = sub.add_parser("infer-compare", help="compare inference outputs with REF.npy")
    p.add_argument("dir")
    p.add_argument("out", nargs="+")
    p.add_argument("--tol", type=float, default=DEFAULT_TOL)
    p.set_defaults(fn=cmd_infer_compare)
    p = sub.add_parser("selftest", help="parameter counts, shapes, lecture facts")
    p.add_argument("specdir", nargs="?")
    p.add_argument("--full", action="store_true", help="also run vgg16 forward/backward")
    p.set_defaults(fn=cmd_selftest)
    a = ap.parse_args(argv)
    try:
        return a.fn(a)
    except SpecError as e:
        print(f"torch_ref.py: {getattr(a, 'spec', '')}: {e}", file=sys.stderr)
        return 2
    except (OSError, yaml.YAMLError) as e:
        print(f"torch_ref.py: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
