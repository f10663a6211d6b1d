#!/usr/bin/python3
"""tests/random_specs.py -- differential tester: random valid specs, generated C vs PyTorch.

Run with Debian's interpreter (/usr/bin/python3; torch, numpy, yaml).

Subcommands
-----------
  gen SEED [--graph]
      Print the random spec of SEED (YAML) and the case around it (target, forced
      schedules are only known after `cnngen --schedules`, see `run`).

  run [--seed S] [--n N] [--graph] [--team] [--jobs J] [--build DIR] [--work DIR] [--cc CC] [--targets LIST] [-v]
      For seeds S .. S+N-1: generate the spec of the seed (gen_spec), pick the case's
      --target (among --targets), a random schedule for some layers (a wisdom file built
      from `cnngen --schedules`, as tests/schedules_check.py does), the OpenMP thread count
      and the batch sizes `check` runs at; generate with build/cnngen, compile as
      tests/tests.mk compiles trainers (cc -O3 -march=native -fopenmp -std=c11 -Werror
      ...), and compare `TRAINER check` with the float64 PyTorch reference of
      tests/torch_ref.py (its `check`: same data, same tolerance, same judgement of
      ill-conditioned batch norms). One line per seed: `seed S: OK|FAIL ...`.
      On a failure it writes WORK/fail-SEED.yaml (the spec, the case in its header
      comment), WORK/fail-SEED.wisdom when schedules were forced, and prints the command
      that reproduces it. Exit 1 if any seed failed.
      With --team, half the seeds that run on 2 threads at a batch of 16 or more (the
      batch-innermost layout a team's replicas need) become a team's case: the batch is
      the replica's, train.batch twice it, the spec generated with `cnngen --team 2`,
      schedules forced on the replica's layers, and the trainer's check, which runs the
      team's replicas with their batch norms' statistics exchanged, at the seed's batches
      and the team's whole batch (the draw of team_of_seed, from a generator of its own:
      the other seeds' cases do not change with the flag).
      Everything (spec, target, schedules, threads, team, batches, data) is a function of
      the seed alone, so `run --seed S --n 1` replays seed S exactly.
      --jobs J (default: the CPU count): J processes of this script side by side, each on
      a few consecutive seeds, their outputs printed whole in seed order.

  emit [--seed S] [--n N] [--graph] [--team] [--syntax] [--jobs J] [--targets LIST] [--build DIR] [--work DIR]
      The generator alone on each seed's case (its spec, target, forced schedules and
      team, exactly as `run` draws them): `cnngen --schedules`, the generation and the
      inference export (`--inference`, without weights) must succeed (with --syntax the
      trainer and inference export must also pass cc -fsyntax-only with the trainers' warnings
      as errors, compiled for the target's ISA: -march=x86-64-v4 for avx512, so its
      intrinsics branches are parsed on any CPU), nothing is run (~0.1 s a seed, where `run` takes seconds), so
      it sweeps thousands of cases for the generator's internal errors (exit 3) and
      rejections of specs PyTorch accepts. Exit 1 if any seed failed; `run --seed S --n 1`
      then replays the seed whole. --jobs cases at a time (default: the CPU count; each
      case is subprocesses), failures reported in seed order.

  check SPEC.yaml... [--target T...] [--wisdom W] [--batch N ...] [--threads K] [--team T] [--build DIR]
      Build, compile and compare spec files (each at each target) (e.g. a fail-SEED.yaml, or a net being
      minimized by hand) with the same machinery. Default batches: torch_ref's default
      ones and train.batch.

What the generator covers (gen_spec): 1-D ([C, L]), 2-D ([C, H, W]) and flat ([F])
inputs; conv1d/conv2d with odd sizes, per-axis kernel/stride/dilation pairs, padding as an
integer, a pair, `valid`, `same` (symmetric and asymmetric: even effective kernels) and
`full`, groups (grouped and depthwise, with channel multipliers), bias on and off;
max/avg pooling with kernel, stride, padding and count_include_pad; flatten; dense with
and without bias; relu, leaky_relu (random slopes), sigmoid, tanh; batchnorm over [F],
[C, L] and [C, H, W] with random eps and momentum (null included); both losses (mse on a
non-flat output too). Batches below 16 and from 16 on (batch-innermost layout), `check`
at partial batches too. Targets: avx512, avx2, generic. The generated C uses GCC vector
extensions, and its only intrinsics are behind `#if defined(__AVX512F__)` with a
portable fallback, so every target compiles and runs on any x86-64 CPU; `--targets
native` restricts the draw to the ISAs /proc/cpuinfo reports (generic always).
No NaN/Inf inputs (their semantics are being changed elsewhere, issue 12 item 1).

Graph specs (issue 11): with `--graph` half the seeds are graph specs (gen_spec(rng,
graph=True), _try_graph_spec): residual blocks (add of a tensor and a branch of
shape-keeping layers, sometimes a tensor read three times), projection shortcuts (two
strided convs added), concatenations of 'same' branches (with the block's input itself
sometimes, `from: input` too), names and indices in `from`, global_avgpool, dropout
(whose mask torch_ref recomputes), in 1-D and 2-D.
"""

import argparse
import concurrent.futures
import contextlib
import io
import math
import os
import random
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL_TARGETS = ("avx512", "avx2", "generic")
ACTS = ("relu", "leaky_relu", "sigmoid", "tanh")
MAX_MACS = 60000          # multiply-adds of one sample's forward, all layers
MAX_ACT = 4000            # floats of one sample's activation after any layer


# ----------------------------------------------------------------------------- specs

def _pair_or_int(rng, vals, nd, p_pair=0.3):
    """An int (both axes) or, for 2-D layers, sometimes an [h, w] pair."""
    if nd == 2 and rng.random() < p_pair:
        return [rng.choice(vals), rng.choice(vals)]
    return rng.choice(vals)


def _axes(v, nd):
    return list(v) if isinstance(v, list) else [v] * nd


def _conv_out(size, k, s, lo, hi, d):
    return torch_ref.conv_out(size, k, s, lo, hi, d)


def _gen_conv(rng, shape):
    nd = len(shape) - 1
    cin, sp = shape[0], list(shape[1:])
    for _ in range(40):
        k = _pair_or_int(rng, [1, 2, 3, 3, 3, 4, 5], nd)
        ks = _axes(k, nd)
        args = {}
        r = rng.random()
        if r < 0.35:
            out = rng.randint(1, 13)
        elif r < 0.55:
            out = rng.choice([cin, 2 * cin])
        else:
            out = rng.randint(2, 8)
        g = 1
        r = rng.random()
        if r < 0.15 and cin > 1:
            g = cin                                  # depthwise (x channel multiplier)
            out = cin * rng.choice([1, 1, 2])
        elif r < 0.3:
            divs = [d for d in range(2, cin + 1) if cin % d == 0]
            if divs:
                g = rng.choice(divs)
                out = g * rng.randint(1, max(1, 8 // g))
        stride = 1 if rng.random() < 0.55 else _pair_or_int(rng, [1, 2, 3], nd)
        dil = 1 if rng.random() < 0.65 else _pair_or_int(rng, [1, 2, 3], nd)
        ss, ds = _axes(stride, nd), _axes(dil, nd)
        r = rng.random()
        if r < 0.2:
            pad = 0 if rng.random() < 0.5 else "valid"
        elif r < 0.4 and all(x == 1 for x in ss):
            pad = "same"
        elif r < 0.5:
            pad = "full"
        else:
            pad = _pair_or_int(rng, [0, 1, 1, 2, 3], nd)
        if pad == "full" and any(x > 1 for x in ss) and rng.random() < 0.5:
            pad = 1
        # resolve padding like the spec does
        if pad in ("valid", 0):
            lo = hi = [0] * nd
        elif pad == "full":
            lo = hi = [d * (kk - 1) for d, kk in zip(ds, ks)]
        elif pad == "same":
            tot = [d * (kk - 1) for d, kk in zip(ds, ks)]
            lo, hi = [t // 2 for t in tot], [t - t // 2 for t in tot]
        else:
            lo = hi = _axes(pad, nd)
        o = [_conv_out(i, kk, s, a, b, d) for i, kk, s, a, b, d in zip(sp, ks, ss, lo, hi, ds)]
        if any(x < 1 for x in o):
            continue
        args["out"] = out
        args["kernel"] = k
        if stride != 1 or rng.random() < 0.1:
            args["stride"] = stride
        if pad != 0 or rng.random() < 0.1:
            args["padding"] = pad
        if dil != 1:
            args["dilation"] = dil
        if g != 1:
            args["groups"] = g
        if rng.random() < 0.3:
            args["bias"] = False
        macs = out * (cin // g) * math.prod(ks) * math.prod(o)
        return {f"conv{nd}d": args}, [out] + o, macs
    return None


def _gen_pool(rng, shape):
    nd = len(shape) - 1
    sp = list(shape[1:])
    kind = ("maxpool" if rng.random() < 0.5 else "avgpool") + f"{nd}d"
    for _ in range(40):
        k = _pair_or_int(rng, [1, 2, 2, 3, 3, 4], nd)
        ks = _axes(k, nd)
        args = {"kernel": k}
        stride = ks
        if rng.random() < 0.45:
            stride = _pair_or_int(rng, [1, 1, 2, 3], nd)
            args["stride"] = stride
        ss = _axes(stride, nd)
        pad = 0
        if rng.random() < 0.4:
            pad = _pair_or_int(rng, [0, 1, 2], nd)
            if any(p * 2 > kk for p, kk in zip(_axes(pad, nd), ks)):
                pad = [kk // 2 for kk in ks] if nd == 2 else ks[0] // 2
            args["padding"] = pad
        ps = _axes(pad, nd)
        if kind.startswith("avg") and rng.random() < 0.4:
            args["count_include_pad"] = rng.random() < 0.5
        o = [_conv_out(i, kk, s, p, p, 1) for i, kk, s, p in zip(sp, ks, ss, ps)]
        if any(x < 1 for x in o):
            continue
        return {kind: args}, [shape[0]] + o, shape[0] * math.prod(ks) * math.prod(o)
    return None


def _gen_act(rng):
    a = rng.choice(ACTS)
    if a == "leaky_relu" and rng.random() < 0.6:
        return {a: {"slope": rng.choice([0.1, 0.2, 0.3, 0.05, -0.1, 1.5])}}
    return a


def _gen_bn(rng):
    args = {}
    if rng.random() < 0.3:
        args["eps"] = rng.choice([1.0e-3, 1.0e-4, 0.01])
    if rng.random() < 0.4:
        args["momentum"] = rng.choice([None, 0.2, 0.5, 1.0, 0.0])
    return {"batchnorm": args} if args else "batchnorm"


def _gen_dense(rng, f):
    out = rng.choice([1, 2, 3, 5, 7, 10, 16, 17, 24])
    args = {"out": out}
    if rng.random() < 0.25:
        args["bias"] = False
    return {"dense": args}, [out], out * f


def _gen_input(rng):
    r = rng.random()
    if r < 0.15:
        return [rng.randint(1, 40)]
    if r < 0.5:
        return [rng.randint(1, 6), rng.choice([rng.randint(3, 15), rng.randint(16, 40)])]
    h = rng.randint(3, 12)
    w = rng.choice([rng.randint(3, 12), rng.randint(16, 22)])
    return [rng.randint(1, 5), h, w]


def gen_spec(rng, graph=False, name="fz"):
    """A valid random spec (a dict in the spec format) drawn from rng (random.Random).

    graph=True: a graph spec (issue 11: named layers, `from:`, `add`, `concat`,
    `global_avgpool`, `dropout`), see _try_graph_spec."""
    for _ in range(100):
        spec = _try_graph_spec(rng, name) if graph else _try_spec(rng, name)
        if spec is not None:
            return spec
    raise RuntimeError("gen_spec: no valid spec in 100 tries")


# ---- graph specs: blocks of branches joined by add / concat, every output read

def _same_layer(rng, shape, out=None):
    """A layer that keeps the spatial size: a stride-1 conv ('same' padding, odd or even
    kernel, dilation, groups) with `out` channels, or (out None) also an activation,
    batch norm, dropout or a stride-1 pool. -> (layer dict/str, out shape, macs)."""
    nd = len(shape) - 1
    cin = shape[0]
    r = rng.random()
    if out is None and nd >= 1 and r < 0.45:
        r2 = rng.random()
        if r2 < 0.4:
            return _gen_act(rng), shape, 0
        if r2 < 0.6:
            return _gen_bn(rng), shape, 0
        if r2 < 0.8:
            return {"dropout": {"p": rng.choice([0.1, 0.25, 0.5])}}, shape, 0
        kind = rng.choice(["maxpool", "avgpool"]) + f"{nd}d"
        args = {"kernel": 3, "stride": 1, "padding": 1}
        if kind.startswith("avg") and rng.random() < 0.5:
            args["count_include_pad"] = False
        return {kind: args}, shape, cin * 9
    if nd == 0:  # flat: dense
        o = out or rng.choice([4, 6, 8, shape[0]])
        return {"dense": {"out": o}}, [o], o * shape[0]
    o = out or rng.choice([cin, cin, 2 * cin, rng.randint(1, 8)])
    k = rng.choice([1, 3, 3, 2, 4, 5])
    d = rng.choice([1, 1, 2]) if k > 1 else 1
    args = {"out": o, "kernel": k, "padding": "same"}
    if k % 2 == 1 and rng.random() < 0.5:
        args["padding"] = d * (k - 1) // 2
    if d > 1:
        args["dilation"] = d
    if cin == o and cin > 1 and rng.random() < 0.25:
        args["groups"] = cin
    if rng.random() < 0.3:
        args["bias"] = False
    if any(sz < 1 for sz in shape[1:]):
        return None
    return {f"conv{nd}d": args}, [o] + list(shape[1:]), o * (cin // args.get("groups", 1)) * k ** nd * math.prod(shape[1:])


def _try_graph_spec(rng, name):
    """Layers are appended with their shapes; `ref(j)` names layer j (by `name` or
    by index, at random); a block starts from a tensor T and ends with a layer that
    reads every branch it opened, so no output is left unread (dead code is an error):
      residual  T -> k shape-keeping layers -> add [T, last] (sometimes a third reader)
      project   T -> conv (stride s) ; T -> 1x1 conv (stride s) ; add [both]
      concat    T -> 2..3 branches of 'same' convs / pools (other channel counts),
                concat [branches] (with T itself sometimes)
      chain     one or two plain layers (conv / pool / activation / batch norm / dropout)
    then global_avgpool, flatten, dropout, dense, or mse on any shape."""
    r = rng.random()
    if r < 0.1:
        inp = [rng.randint(2, 24)]
    elif r < 0.4:
        inp = [rng.randint(1, 4), rng.randint(3, 20)]
    else:
        inp = [rng.randint(1, 4), rng.randint(3, 10), rng.choice([rng.randint(3, 10), rng.randint(16, 18)])]
    layers, shapes, macs = [], [], 0
    names = {}

    def add(layer, shape, m=0):
        nonlocal macs
        if rng.random() < 0.3 or (isinstance(layer, dict) and next(iter(layer)) in ("add", "concat") and rng.random() < 0.3):
            nm = f"t{len(layers)}"
            if isinstance(layer, str):
                layer = {layer: {}}
            next(iter(layer.values()))["name"] = nm
            names[len(layers)] = nm
        layers.append(layer)
        shapes.append(list(shape))
        macs += m
        return len(layers) - 1

    def ref(j):
        if j < 0:
            return "input"
        return names[j] if j in names and rng.random() < 0.8 else j

    def frm(layer, j):
        """make `layer` read tensor j (omitted when j is the previous layer)"""
        if j == len(layers) - 1 and rng.random() < 0.7:
            return layer
        if isinstance(layer, str):
            layer = {layer: {}}
        next(iter(layer.values()))["from"] = ref(j)
        return layer

    def shape_of(j):
        return list(inp) if j < 0 else shapes[j]

    cur = -1
    for _ in range(rng.randint(1, 4)):
        if macs > MAX_MACS:
            break
        T = cur
        S = shape_of(T)
        kind = rng.random()
        if kind < 0.35:  # residual
            first = True
            last = T
            for _ in range(rng.randint(1, 3)):
                item = _same_layer(rng, shape_of(last), out=S[0] if rng.random() < 0.5 else None)
                if item is None or item[1] != S and item[1][0] != S[0]:
                    continue
                layer, sh, m = item
                if sh != S:
                    continue
                last = add(frm(layer, T) if first else layer, sh, m)
                first = False
            if last == T:
                continue
            srcs = [T, last]
            if rng.random() < 0.3:  # a tensor read three times
                item = _same_layer(rng, S, out=S[0])
                if item is not None and item[1] == S:
                    srcs.append(add(frm(item[0], T), item[1], item[2]))
            rng.shuffle(srcs)
            cur = add({"add": {"from": [ref(j) for j in srcs]}}, S)
        elif kind < 0.5 and len(S) >= 2:  # projection shortcut
            o = rng.randint(1, 8)
            k = rng.choice([1, 3, 5])
            st = rng.choice([1, 2])
            a = add(frm({f"conv{len(S) - 1}d": {"out": o, "kernel": k, "stride": st, "padding": (k - 1) // 2}}, T),
                    [o] + [(x - 1) // st + 1 for x in S[1:]], o * S[0] * k ** (len(S) - 1) * math.prod(S[1:]))
            if rng.random() < 0.5:
                a = add(_gen_act(rng), shapes[a])
            b = add(frm({f"conv{len(S) - 1}d": {"out": o, "kernel": 1, "stride": st, "bias": rng.random() < 0.5}}, T),
                    shapes[a], o * S[0] * math.prod(S[1:]))
            cur = add({"add": {"from": [ref(a), ref(b)] if rng.random() < 0.5 else [ref(b), ref(a)]}}, shapes[a])
        elif kind < 0.7:  # concat of branches (dense ones on a flat tensor)
            outs = []
            for _ in range(rng.randint(1, 3)):
                item = _same_layer(rng, S, out=rng.randint(1, 6) if rng.random() < 0.7 else None)
                if item is None:
                    continue
                outs.append(add(frm(item[0], T), item[1], item[2]))
            if T not in outs and (len(outs) < 2 or rng.random() < 0.3):
                outs.append(T)
            if len(outs) < 2:
                continue
            rng.shuffle(outs)
            c = sum(shape_of(j)[0] for j in outs)
            cur = add({"concat": {"from": [ref(j) for j in outs]}}, [c] + S[1:])
        else:  # plain layers
            for _ in range(rng.randint(1, 2)):
                sh = shape_of(cur)
                if len(sh) >= 2 and rng.random() < 0.1:
                    cur = add(frm("flatten", cur), [math.prod(sh)])
                    continue
                if len(sh) >= 2 and rng.random() < 0.6:
                    item = _gen_conv(rng, sh) if rng.random() < 0.7 else _gen_pool(rng, sh)
                else:
                    item = _same_layer(rng, sh)
                if item is None:
                    continue
                layer, sh2, m = item
                if math.prod(sh2) > MAX_ACT:
                    continue
                cur = add(frm(layer, cur), sh2, m)
        if math.prod(shape_of(cur)) > MAX_ACT:
            return None
    if cur == -1:
        return None
    loss = "mse" if rng.random() < 0.35 else "softmax_cross_entropy"
    sh = shape_of(cur)
    if len(sh) >= 2 and (loss != "mse" or rng.random() < 0.5):
        if rng.random() < 0.6:
            cur = add("global_avgpool", [sh[0]] + [1] * (len(sh) - 1))
        cur = add("flatten", [math.prod(shape_of(cur))])
    if rng.random() < 0.4:
        cur = add({"dropout": {"p": rng.choice([0.2, 0.5])}}, shape_of(cur))
    if loss == "softmax_cross_entropy" and not (len(shape_of(cur)) == 1 and shape_of(cur)[0] >= 2):
        if len(shape_of(cur)) > 1:
            cur = add("flatten", [math.prod(shape_of(cur))])
        o = rng.choice([2, 3, 5, 10])
        cur = add({"dense": {"out": o}}, [o], o * shape_of(cur)[0])
    if macs > 2 * MAX_MACS:
        return None
    batch = rng.choice([1, 2, 3, 5, 8, 13]) if rng.random() < 0.55 else rng.choice([16, 17, 20, 32])
    spec = {"name": name, "input": inp, "layers": layers, "loss": loss, "train": {"batch": batch}}
    try:
        recs, _ = torch_ref.parse_layers(dict(spec))
    except torch_ref.SpecError:
        return None
    # every output but the last is read (dead code is an error)
    read = {q for r in recs for q in r["inputs"]}
    if any(i not in read for i in range(len(recs) - 1)):
        return None
    if torch_ref.min_batch(dict(spec)) > batch:
        spec["train"]["batch"] = 2
    return spec


def _try_spec(rng, name):
    inp = _gen_input(rng)
    shape = list(inp)
    layers, macs = [], 0
    n_target = rng.randint(1, 7)
    loss = "mse" if rng.random() < 0.4 else "softmax_cross_entropy"
    while len(layers) < n_target:
        rank = len(shape)
        r = rng.random()
        item = None
        if rank >= 2:
            if r < 0.4:
                item = _gen_conv(rng, shape)
            elif r < 0.55:
                item = _gen_pool(rng, shape)
            elif r < 0.75:
                a = _gen_act(rng)
                item = (a, shape, 0)
            elif r < 0.87:
                item = (_gen_bn(rng), shape, 0)
            else:
                item = ("flatten", [math.prod(shape)], 0)
        else:
            if r < 0.45:
                item = _gen_dense(rng, shape[0])
            elif r < 0.75:
                item = (_gen_act(rng), shape, 0)
            elif r < 0.9:
                item = (_gen_bn(rng), shape, 0)
            else:
                item = ("flatten", shape, 0)
        if item is None:
            continue
        layer, shape2, m = item
        if math.prod(shape2) > MAX_ACT or macs + m > MAX_MACS:
            break
        layers.append(layer)
        shape, macs = list(shape2), macs + m
    if loss == "softmax_cross_entropy" and not (len(shape) == 1 and shape[0] >= 2):
        if len(shape) > 1:
            layers.append("flatten")
            shape = [math.prod(shape)]
        out = rng.choice([2, 3, 5, 10])
        if macs + out * shape[0] > 2 * MAX_MACS:
            return None
        layers.append({"dense": {"out": out}})
        shape = [out]
    if not layers:
        return None
    # batch: below 16 ([N][C][H][W] layout) or from 16 (batch-innermost lanes)
    batch = rng.choice([1, 2, 3, 5, 7, 8, 13, 15]) if rng.random() < 0.55 else rng.choice([16, 17, 20, 31, 32, 40])
    spec = {"name": name, "input": inp, "layers": layers, "loss": loss, "train": {"batch": batch}}
    try:
        torch_ref.parse_layers(dict(spec))
    except torch_ref.SpecError:
        return None
    if torch_ref.min_batch(dict(spec)) > batch:
        spec["train"]["batch"] = batch = 2
    return spec


def _yaml_val(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_yaml_val(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_yaml_val(x)}" for k, x in v.items()) + "}"
    return str(v)


def to_yaml(spec, header=()):
    out = [f"# {h}" for h in header]
    out.append(f"name: {spec['name']}")
    out.append(f"input: {_yaml_val(spec['input'])}")
    out.append("layers:")
    for layer in spec["layers"]:
        if isinstance(layer, str):
            out.append(f"  - {layer}")
        else:
            (k, v), = layer.items()
            out.append(f"  - {k}: {_yaml_val(v)}")
    out.append(f"loss: {spec['loss']}")
    out.append(f"train: {_yaml_val(spec['train'])}")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- cases

def native_targets():
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = " " + line.split(":", 1)[1].strip() + " "
                    break
    except OSError:
        pass
    t = ["generic"]
    if " avx2 " in flags:
        t.insert(0, "avx2")
    if " avx512f " in flags:
        t.insert(0, "avx512")
    return t


def check_batches(rng, spec):
    """Batch sizes `check` runs at: the smallest legal one, one in between, the full one."""
    b = spec["train"]["batch"]
    lo = torch_ref.min_batch(dict(spec))
    if torch_ref.has_rank1_batchnorm(dict(spec)):
        lo = min(b, max(lo, 3))  # float32 conditioning, see torch_ref.py's docstring
    out = [lo]
    if b > lo + 1:
        out.append(rng.randint(lo + 1, b - 1))
    if b not in out:
        out.append(b)
    return out


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def pick_schedules(rng, cnngen, target, spec_path, team=None):
    """Wisdom lines forcing a random legal schedule on some layers (others: heuristic);
    with a team, the replica's layers (their signatures carry the replica's batch)."""
    p = run([cnngen, "--target", target, "--schedules", spec_path] + (["--team", str(team)] if team else []))
    if p.returncode != 0:
        raise RuntimeError(f"cnngen --schedules failed:\n{p.stdout}")
    lines, forced = [], []
    for row in p.stdout.splitlines():
        index, sig, cands = row.split("\t")
        if rng.random() < 0.5:
            # candidates over the code budget ("!") are legal but slow to compile: rarely
            c_all = cands.split(",")
            c_ok = [c for c in c_all if not c.endswith("!")]
            cand = rng.choice(c_all if not c_ok or rng.random() < 0.1 else c_ok).rstrip("!")
            lines.append(f"{target}\t{sig}\t{cand}\n")
            forced.append(f"{index}:{cand}")
    return lines, forced


def generate(cnngen, target, spec_path, work, wisdom=None, team=None):
    """cnngen on a case (a replica of a team of `team` with --team) -> the process"""
    return run([cnngen, "--target", target, spec_path, "-o", work] + (["--wisdom", wisdom] if wisdom else [])
               + (["--team", str(team)] if team else []))


# the trainers' language and warnings (tests/tests.mk compiles them so), errors at -Werror
TRAINER_CFLAGS = ["-std=c11", "-Wall", "-Wextra", "-Wshadow", "-Wno-unused-parameter", "-Werror"]


def build_and_check(spec_path, spec, work, a, target, wisdom, batches, threads, seed, team=None):
    """-> (ok, message). Generates, compiles, runs torch_ref's check."""
    os.makedirs(work, exist_ok=True)
    p = generate(os.path.join(a.build, "cnngen"), target, spec_path, work, wisdom, team)
    if p.returncode != 0:
        return False, "cnngen failed: " + p.stdout.strip()[-2000:]
    c = os.path.join(work, spec["name"] + ".c")
    exe = os.path.join(work, spec["name"])
    p = run([a.cc, "-O3", "-march=native", "-fopenmp", *TRAINER_CFLAGS, "-I" + os.path.join(ROOT, "runtime"), c,
             os.path.join(a.build, "libcnngen.a"), "-lzip", "-lz", "-lm", "-o", exe])
    if p.returncode != 0:
        return False, "does not compile:\n" + p.stdout[-3000:]
    ns = argparse.Namespace(spec=spec_path, trainer=exe, workdir=work, batch=batches, train_batch=False, seed=seed,
                            dtype="float64", tol=torch_ref.DEFAULT_TOL, timeout=300, verbose=False)
    env_old = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["OMP_WAIT_POLICY"] = "passive"
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            rc = torch_ref.cmd_check(ns)
    finally:
        for k, v in env_old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return rc == 0, buf.getvalue()


def describe_layers(spec):
    return ",".join(layer if isinstance(layer, str) else next(iter(layer)) for layer in spec["layers"])


def case_of_seed(seed, targets, graph=False):
    rng = random.Random(seed)
    # with --graph, half the seeds are graph specs
    spec = gen_spec(rng, graph=graph and rng.random() < 0.5, name=f"fz{seed}")
    target = rng.choice(targets)
    threads = rng.choice([1, 1, 2])
    batches = check_batches(rng, spec)
    return rng, spec, target, threads, batches


def team_of_seed(seed, spec, threads):
    """2 (cnngen --team 2, the spec's batch a replica's) for half the seeds whose case
    runs on 2 threads at a batch of 16 or more, else None; drawn from a generator of its
    own, so that the rest of every seed's case is the same with and without run --team."""
    if threads != 2 or spec["train"]["batch"] < 16:
        return None
    return 2 if random.Random(f"team {seed}").random() < 0.5 else None


def prepare_case(seed, targets, a, d):
    """Seed's case, as run and emit draw it, its spec written into d and its forced
    schedules into d/wisdom.tsv: -> (spec, spec_path, target, threads, batches, team,
    wisdom lines, forced, wisdom path or None). Raises when cnngen --schedules fails."""
    rng, spec, target, threads, batches = case_of_seed(seed, targets, a.graph)
    os.makedirs(d, exist_ok=True)
    team = team_of_seed(seed, spec, threads) if a.team else None
    if team:  # the drawn batch is a replica's; check the team's whole batch too
        spec["train"]["batch"] *= team
        batches = batches + [spec["train"]["batch"]]
    spec_path = os.path.join(d, spec["name"] + ".yaml")
    with open(spec_path, "w") as f:
        f.write(to_yaml(spec))
    wis_lines, forced = pick_schedules(rng, os.path.join(a.build, "cnngen"), target, spec_path, team)
    wisdom = None
    if wis_lines:
        wisdom = os.path.join(d, "wisdom.tsv")
        with open(wisdom, "w") as f:
            f.writelines(wis_lines)
    return spec, spec_path, target, threads, batches, team, wis_lines, forced, wisdom


def cmd_gen(a):
    _, spec, target, threads, batches = case_of_seed(a.seed, resolve_targets(a.targets), a.graph)
    sys.stdout.write(to_yaml(spec, [f"random_specs.py seed {a.seed}: target {target}, "
                                    f"check batches {batches}, {threads} thread(s)"]))
    return 0


def resolve_targets(s):
    if s == "native":
        return native_targets()
    t = [x for x in s.split(",") if x]
    bad = [x for x in t if x not in ALL_TARGETS]
    if bad or not t:
        raise SystemExit(f"random_specs.py: --targets: expected a list of {','.join(ALL_TARGETS)} or native")
    return t


SEED_LINE = re.compile(r"^seed (\d+): (OK|FAIL) ")


def run_parallel(a):
    """`run` over a.jobs processes of this script, each on a run of consecutive seeds (a
    few per process, so each imports torch a few times only), their outputs printed whole
    in seed order. A seed no process reported on (a process died) is a failure."""
    chunk = max(1, min(8, -(-a.n // (4 * a.jobs))))
    starts = list(range(a.seed, a.seed + a.n, chunk))
    draw = ["--targets", a.targets] + ["--graph"] * a.graph + ["--team"] * a.team  # what the cases are
    flags = draw + ["--build", a.build, "--work", a.work, "--cc", a.cc, "--jobs", "1"] + ["--keep"] * a.keep + ["-v"] * a.verbose

    def one(start):
        k = min(chunk, a.seed + a.n - start)
        p = run([sys.executable, os.path.abspath(__file__), "run", "--seed", str(start), "--n", str(k)] + flags)
        return start, k, p.returncode, p.stdout

    nfail, t_all = 0, time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=a.jobs) as pool:
        for start, k, rc, out in pool.map(one, starts):
            seen = {}
            for line in out.splitlines(keepends=True):
                m = SEED_LINE.match(line)
                if m:
                    seen[int(m.group(1))] = m.group(2)
                if not line.startswith("random_specs: "):  # the process's own total
                    sys.stdout.write(line)
            lost = [x for x in range(start, start + k) if x not in seen]
            nfail += sum(v == "FAIL" for v in seen.values()) + len(lost)
            if lost:
                which = f"seed {lost[0]}" if len(lost) == 1 else f"seeds {lost[0]}..{lost[-1]}"
                print(f"{which}: FAIL: no result (the process exited with status {rc}); "
                      f"reproduce: {sys.executable} tests/random_specs.py run --seed {lost[0]} --n {len(lost)} --jobs 1 "
                      + " ".join(draw))
            sys.stdout.flush()
    targets = resolve_targets(a.targets)
    print(f"random_specs: {a.n - nfail} passed, {nfail} failed (seeds {a.seed}..{a.seed + a.n - 1}, "
          f"targets {','.join(targets)}, {a.jobs} processes, {time.time() - t_all:.0f}s)")
    return 1 if nfail else 0


def cmd_run(a):
    targets = resolve_targets(a.targets)
    os.makedirs(a.work, exist_ok=True)
    if a.jobs > 1 and a.n > 1:
        return run_parallel(a)
    nfail = 0
    t_all = time.time()
    for seed in range(a.seed, a.seed + a.n):
        t0 = time.time()
        d = os.path.join(a.work, f"s{seed}")
        # the case is drawn before anything can fail, so that a failure still names it
        _, spec, target, threads, batches = case_of_seed(seed, targets, a.graph)
        team, wis_lines, forced, wisdom = None, [], [], None
        try:
            spec, spec_path, target, threads, batches, team, wis_lines, forced, wisdom = prepare_case(seed, targets, a, d)
            ok, msg = build_and_check(spec_path, spec, d, a, target, wisdom, batches, threads, seed, team)
        except Exception as e:  # a crash of the harness or the tools is a failure of the seed
            ok, msg = False, f"exception: {type(e).__name__}: {e}\n"
        case = (f"target {target}, batch {spec['train']['batch']}, check batches {batches}, "
                f"{threads} thread(s){', team of ' + str(team) if team else ''}, forced schedules [{' '.join(forced)}]")
        line = f"seed {seed}: {'OK  ' if ok else 'FAIL'} {describe_layers(spec)} {spec['loss']} | {case} ({time.time() - t0:.1f}s)"
        print(line, flush=True)
        if ok:
            if a.verbose:
                print(msg, end="")
            if not a.keep:
                subprocess.run(["rm", "-rf", d])
            continue
        nfail += 1
        print(msg, end="" if msg.endswith("\n") else "\n")
        fail = os.path.join(a.work, f"fail-{seed}.yaml")
        rel = os.path.relpath
        hdr = [f"random_specs.py seed {seed}: FAILED ({case})",
               f"reproduce: {sys.executable} tests/random_specs.py run --seed {seed} --n 1 --targets {a.targets}{' --graph' if a.graph else ''}{' --team' if a.team else ''}"]
        if wisdom:
            wf = os.path.join(a.work, f"fail-{seed}.wisdom")
            with open(wf, "w") as f:
                f.writelines(wis_lines)
        with open(fail, "w") as f:
            f.write(to_yaml(spec, hdr))
        chk = (f"{sys.executable} tests/random_specs.py check {rel(fail)} --target {target}"
               f"{' --wisdom ' + rel(wf) if wisdom else ''} --batch {' '.join(map(str, batches))} --threads {threads} --seed {seed}"
               f"{' --team ' + str(team) if team else ''}")
        print(f"seed {seed}: wrote {rel(fail)}; reproduce: {sys.executable} tests/random_specs.py run --seed {seed} "
              f"--n 1 --targets {a.targets}{' --graph' if a.graph else ''}{' --team' if a.team else ''}   or: {chk}", flush=True)
    print(f"random_specs: {a.n - nfail} passed, {nfail} failed (seeds {a.seed}..{a.seed + a.n - 1}, "
          f"targets {','.join(targets)}, {time.time() - t_all:.0f}s)")
    return 1 if nfail else 0


# the ISA a target's generated code is compiled for, so that its intrinsics branches
# (#if defined(__AVX512F__) ...) are parsed too, whatever CPU runs the check
SYNTAX_MARCH = {"avx512": ["-march=x86-64-v4"], "avx2": ["-march=x86-64-v3"], "generic": []}


def syntax_check(cc, target, path):
    """cc -fsyntax-only on one generated file, the trainers' warnings as errors, for target's ISA."""
    p = run([cc, "-fsyntax-only", *TRAINER_CFLAGS, *SYNTAX_MARCH[target], "-I" + os.path.join(ROOT, "runtime"), path])
    return p.returncode == 0, f"{cc} -fsyntax-only ({target}) {os.path.basename(path)}: " + p.stdout


def emit_case(a, targets, cnngen, seed):
    """-> None when seed's case generates (and, with --syntax, compiles), else the report
    to print. Everything it runs is a subprocess, so cases run on threads side by side."""
    d = os.path.join(a.work, f"e{seed}")
    _, spec, target, threads, batches = case_of_seed(seed, targets, a.graph)
    team, forced = None, []
    try:
        spec, spec_path, target, threads, batches, team, _, forced, wisdom = prepare_case(seed, targets, a, d)
        p = generate(cnngen, target, spec_path, d, wisdom, team)
        ok, msg = p.returncode == 0, p.stdout
        if ok and a.syntax:  # the front end's warnings, as the trainers are compiled (-Werror)
            ok, msg = syntax_check(a.cc, target, os.path.join(d, spec["name"] + ".c"))
        if ok:  # and the inference export of the same spec (docs/inference.md)
            p = run([cnngen, "--target", target, "--inference", spec_path, "-o", d])
            ok, msg = p.returncode == 0, "cnngen --inference: " + p.stdout
        if ok and a.syntax:
            ok, msg = syntax_check(a.cc, target, os.path.join(d, spec["name"] + "_infer.c"))
    except Exception as e:  # cnngen --schedules failed, or the harness
        ok, msg = False, f"{type(e).__name__}: {e}"
    if ok:
        subprocess.run(["rm", "-rf", d])
        return None
    return (f"seed {seed}: FAIL {describe_layers(spec)} | target {target}, batch {spec['train']['batch']}"
            f"{', team of ' + str(team) if team else ''}, forced schedules [{' '.join(forced)}]\n{msg.strip()[-2000:]}\n"
            f"seed {seed}: kept in {os.path.relpath(d)}; reproduce: {sys.executable} tests/random_specs.py run "
            f"--seed {seed} --n 1 --targets {a.targets}{' --graph' if a.graph else ''}{' --team' if a.team else ''}")


def cmd_emit(a):
    targets = resolve_targets(a.targets)
    os.makedirs(a.work, exist_ok=True)
    cnngen = os.path.join(a.build, "cnngen")
    nfail, t_all = 0, time.time()
    seeds = range(a.seed, a.seed + a.n)
    # --jobs cases at a time; the reports come out in seed order
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        for report in pool.map(lambda s: emit_case(a, targets, cnngen, s), seeds):
            if report is not None:
                nfail += 1
                print(report, flush=True)
    print(f"random_specs emit: {a.n - nfail} generated, {nfail} failed (seeds {a.seed}..{a.seed + a.n - 1}, "
          f"{a.jobs} at a time, {time.time() - t_all:.0f}s)")
    return 1 if nfail else 0


def cmd_check(a):
    nfail = 0
    for path in a.spec:
        spec = torch_ref.load_spec(path)
        _, tr = torch_ref.parse_layers(spec)
        # default: torch_ref's batches and the full one (batch-innermost code, whole vectors)
        batches = a.batch or sorted(set(torch_ref.default_batches(spec, tr)) | {tr["batch"]})
        for target in a.target:
            d = os.path.join(a.work, f"check-{spec['name']}-{target}")
            ok, msg = build_and_check(path, spec, d, a, target, a.wisdom, batches, a.threads, a.seed, a.team)
            if not ok or a.verbose:
                print(msg, end="")
            print(f"{path}: {'OK' if ok else 'FAILED'} (target {target}, batches {batches})", flush=True)
            nfail += not ok
    return 1 if nfail else 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="random_specs.py", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--build", default=os.path.join(ROOT, "build"))
        p.add_argument("--work", default=None)
        p.add_argument("--cc", default=os.environ.get("CC", "cc"))

    p = sub.add_parser("gen")
    p.add_argument("seed", type=int)
    p.add_argument("--targets", default=",".join(ALL_TARGETS))
    p.add_argument("--graph", action="store_true", help="half the seeds are graph specs")
    p.set_defaults(fn=cmd_gen)
    p = sub.add_parser("run")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--targets", default=",".join(ALL_TARGETS),
                   help="comma list of avx512,avx2,generic, or native (the CPU's own)")
    p.add_argument("--keep", action="store_true", help="keep the work folders of passing seeds")
    p.add_argument("--graph", action="store_true",
                   help="half the seeds are graph specs (from:, add, concat, global_avgpool, dropout)")
    p.add_argument("--team", action="store_true",
                   help="half the seeds on 2 threads with a replica batch >= 16 generated with cnngen --team 2")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="processes side by side, each on a few consecutive seeds (default: the CPU count)")
    common(p)
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("emit")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--targets", default=",".join(ALL_TARGETS))
    p.add_argument("--graph", action="store_true")
    p.add_argument("--team", action="store_true")
    p.add_argument("--syntax", action="store_true",
                   help="also cc -fsyntax-only -Wall -Wextra -Wshadow -Werror on the generated trainer and inference export, for the target's ISA (~0.4 s a case)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="cases run side by side (default: the CPU count)")
    common(p)
    p.set_defaults(fn=cmd_emit)
    p = sub.add_parser("check")
    p.add_argument("spec", nargs="+")
    p.add_argument("--target", nargs="+", default=["generic"], choices=ALL_TARGETS)
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--wisdom")
    p.add_argument("--batch", type=int, nargs="+")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--team", type=int, help="cnngen --team T (the spec's train.batch is the team's)")
    p.add_argument("--seed", type=int, default=0)
    common(p)
    p.set_defaults(fn=cmd_check)
    a = ap.parse_args(argv)
    if getattr(a, "work", "x") is None:
        a.work = os.path.join(a.build, "fuzz-diff")
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
