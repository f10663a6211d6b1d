#!/usr/bin/python3
"""tests/random_specs.py -- differential tester: random valid specs, generated C vs PyTorch.

Run with Debian's interpreter (/usr/bin/python3; torch, numpy, yaml).

Subcommands
-----------
  gen SEED
      Print the random spec of SEED (YAML) and the case around it (target, forced
      schedules are only known after `cnngen --schedules`, see `run`).

  run [--seed S] [--n N] [--build DIR] [--work DIR] [--cc CC] [--targets LIST] [-v]
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
      Everything (spec, target, schedules, threads, batches, data) is a function of the
      seed alone, so `run --seed S --n 1` replays seed S exactly.

  check SPEC.yaml... [--target T...] [--wisdom W] [--batch N ...] [--threads K] [--build DIR]
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

Graph specs (issue 11: `from:`, `add`, `concat`, `global_avgpool`, `dropout`): the hook
is gen_spec(rng, graph=True), which raises NotImplementedError until the compiler and
tests/torch_ref.py accept them; implement _gen_graph_layers there and a `--graph` flag.
"""

import argparse
import contextlib
import io
import math
import os
import random
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

    graph=True is the hook for issue 11's graph specs (named layers, `from:`, `add`,
    `concat`, `global_avgpool`, `dropout`): not implemented until they land on main."""
    if graph:
        raise NotImplementedError("graph specs (issue 11) are not supported yet: add _gen_graph_layers here "
                                  "once cnngen and tests/torch_ref.py accept them")
    for _ in range(100):
        spec = _try_spec(rng, name)
        if spec is not None:
            return spec
    raise RuntimeError("gen_spec: no valid spec in 100 tries")


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


def pick_schedules(rng, cnngen, target, spec_path):
    """Wisdom lines forcing a random legal schedule on some layers (others: heuristic)."""
    p = run([cnngen, "--target", target, "--schedules", spec_path])
    if p.returncode != 0:
        raise RuntimeError(f"cnngen --schedules failed:\n{p.stdout}")
    lines, forced = [], []
    for row in p.stdout.splitlines():
        index, sig, cands = row.split("\t")
        if rng.random() < 0.5:
            cand = rng.choice(cands.split(",")).rstrip("!")
            lines.append(f"{target}\t{sig}\t{cand}\n")
            forced.append(f"{index}:{cand}")
    return lines, forced


def build_and_check(spec_path, spec, work, a, target, wisdom, batches, threads, seed):
    """-> (ok, message). Generates, compiles, runs torch_ref's check."""
    os.makedirs(work, exist_ok=True)
    cnngen = os.path.join(a.build, "cnngen")
    cmd = [cnngen, "--target", target, spec_path, "-o", work]
    if wisdom:
        cmd[1:1] = ["--wisdom", wisdom]
    p = run(cmd)
    if p.returncode != 0:
        return False, "cnngen failed: " + p.stdout.strip()[-2000:]
    c = os.path.join(work, spec["name"] + ".c")
    exe = os.path.join(work, spec["name"])
    p = run([a.cc, "-O3", "-march=native", "-fopenmp", "-std=c11", "-Wall", "-Wextra", "-Wshadow",
             "-Wno-unused-parameter", "-Werror", "-I" + os.path.join(ROOT, "runtime"), c,
             os.path.join(a.build, "libcnngen.a"), "-lzip", "-lz", "-lm", "-o", exe])
    if p.returncode != 0:
        return False, "does not compile:\n" + p.stdout[-3000:]
    ns = argparse.Namespace(spec=spec_path, trainer=exe, workdir=work, batch=batches, seed=seed,
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
    spec = gen_spec(rng, graph=graph, name=f"fz{seed}")
    target = rng.choice(targets)
    threads = rng.choice([1, 1, 2])
    batches = check_batches(rng, spec)
    return rng, spec, target, threads, batches


def cmd_gen(a):
    _, spec, target, threads, batches = case_of_seed(a.seed, resolve_targets(a.targets))
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


def cmd_run(a):
    targets = resolve_targets(a.targets)
    os.makedirs(a.work, exist_ok=True)
    cnngen = os.path.join(a.build, "cnngen")
    nfail = 0
    t_all = time.time()
    for seed in range(a.seed, a.seed + a.n):
        t0 = time.time()
        rng, spec, target, threads, batches = case_of_seed(seed, targets)
        d = os.path.join(a.work, f"s{seed}")
        os.makedirs(d, exist_ok=True)
        spec_path = os.path.join(d, spec["name"] + ".yaml")
        with open(spec_path, "w") as f:
            f.write(to_yaml(spec))
        wis_lines, forced, wisdom = [], [], None
        try:
            wis_lines, forced = pick_schedules(rng, cnngen, target, spec_path)
            if wis_lines:
                wisdom = os.path.join(d, "wisdom.tsv")
                with open(wisdom, "w") as f:
                    f.writelines(wis_lines)
            ok, msg = build_and_check(spec_path, spec, d, a, target, wisdom, batches, threads, seed)
        except Exception as e:  # a crash of the harness or the tools is a failure of the seed
            ok, msg = False, f"exception: {type(e).__name__}: {e}\n"
        case = (f"target {target}, batch {spec['train']['batch']}, check batches {batches}, "
                f"{threads} thread(s), forced schedules [{' '.join(forced)}]")
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
               f"reproduce: {sys.executable} tests/random_specs.py run --seed {seed} --n 1 --targets {a.targets}"]
        if wisdom:
            wf = os.path.join(a.work, f"fail-{seed}.wisdom")
            with open(wf, "w") as f:
                f.writelines(wis_lines)
        with open(fail, "w") as f:
            f.write(to_yaml(spec, hdr))
        chk = (f"{sys.executable} tests/random_specs.py check {rel(fail)} --target {target}"
               f"{' --wisdom ' + rel(wf) if wisdom else ''} --batch {' '.join(map(str, batches))} --threads {threads} --seed {seed}")
        print(f"seed {seed}: wrote {rel(fail)}; reproduce: {sys.executable} tests/random_specs.py run --seed {seed} "
              f"--n 1 --targets {a.targets}   or: {chk}", flush=True)
    print(f"random_specs: {a.n - nfail} passed, {nfail} failed (seeds {a.seed}..{a.seed + a.n - 1}, "
          f"targets {','.join(targets)}, {time.time() - t_all:.0f}s)")
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
            ok, msg = build_and_check(path, spec, d, a, target, a.wisdom, batches, a.threads, a.seed)
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
    p.set_defaults(fn=cmd_gen)
    p = sub.add_parser("run")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--targets", default=",".join(ALL_TARGETS),
                   help="comma list of avx512,avx2,generic, or native (the CPU's own)")
    p.add_argument("--keep", action="store_true", help="keep the work folders of passing seeds")
    p.add_argument("-v", "--verbose", action="store_true")
    common(p)
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("check")
    p.add_argument("spec", nargs="+")
    p.add_argument("--target", nargs="+", default=["generic"], choices=ALL_TARGETS)
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--wisdom")
    p.add_argument("--batch", type=int, nargs="+")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    common(p)
    p.set_defaults(fn=cmd_check)
    a = ap.parse_args(argv)
    if getattr(a, "work", "x") is None:
        a.work = os.path.join(a.build, "fuzz-diff")
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
