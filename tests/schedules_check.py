#!/usr/bin/python3
"""tests/schedules_check.py -- every legal schedule of every layer gives PyTorch's numbers.

usage: schedules_check.py BUILD_DIR CC SPEC [SPEC ...]

For each spec, `cnngen --schedules` lists the layers with more than one legal schedule
(forms and register tiles, compiler/lua/schedule.lua). For each such layer and each of
its candidates, a one-line wisdom file forces that candidate (the other layers keep the
heuristic's choice); the trainer is generated with it, the generated C is checked to
name the candidate in the layer's comment (so the wisdom really took effect), it is
compiled, and its `check` (output, loss, grad.input, every parameter gradient) is
compared with the float64 PyTorch reference of tests/torch_ref.py at batch 1 (2 with
batch norm) and the spec's batch. Exit 1 on any failure. The references are computed
once per spec and batch. Mixes of three candidates' passes ("F|W|X", which the tuner
writes: mixes() below) are checked the same way when the generator accepts them; the
check fails if it accepts none of them in the whole run.
The candidates of a spec's layers are checked in rounds: round r forces the r-th
candidate of every layer that has one, all in one trainer (one compile for a candidate
of each layer, where the compiles took most of the time); a round that fails is checked
again one candidate at a time, which is what the report names. Mixes run alone.
Rounds are checked as many at a time as the machine has cores (each in a directory of
its own); the output and the counts follow the listing's order.
"""
import os
import re
import subprocess
import concurrent.futures
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import torch_ref  # noqa: E402

TOL = 1e-4


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def mixes(cands):
    """Schedules mixing three candidates' passes ("F|W|X", schedule.lua) to check too: the
    Xeon tuner's F(4x4) forward and dx with the direct dW, and one rotation of the list
    (the generator refuses the mixes its layer module does not accept)."""
    out = []
    if "lanes+wino4" in cands and "lanes" in cands:
        out.append("lanes+wino4|lanes|lanes+wino4")
    n = len(cands)
    if n >= 3:
        m = f"{cands[-1]}|{cands[0]}|{cands[n // 2]}"
        if m not in out:
            out.append(m)
    return out


def one(cnngen, cc, lib, work, isa, spec, spec_path, cases, index, sig, cand):
    """Generate, compile and check one schedule of one layer: ("pass" | "refused" |
    "fail", lines to print)."""
    d = f"{spec['name']}_l{index}_{re.sub('[^A-Za-z0-9]', '_', cand)}"
    return check(cnngen, cc, lib, work, isa, spec, spec_path, cases, [(index, sig, cand)], d)


def one_round(cnngen, cc, lib, work, isa, spec, spec_path, cases, forced, r):
    """A round: the r-th candidate of every layer that has one, forced together in one
    trainer, so that a spec's candidates take as many compiles as its longest list, not
    their sum. -> [(candidate, status, lines)] per forced candidate: all "pass" when the
    round passes, else each candidate checked alone (the report names the culprit). A
    round of one candidate (a mix; r None) is that candidate alone."""
    if len(forced) > 1:
        status, _ = check(cnngen, cc, lib, work, isa, spec, spec_path, cases, forced, f"{spec['name']}_round{r}")
        if status == "pass":
            return [(cand, "pass", []) for _, _, cand in forced]
    return [(cand, *one(cnngen, cc, lib, work, isa, spec, spec_path, cases, index, sig, cand))
            for index, sig, cand in forced]


def check(cnngen, cc, lib, work, isa, spec, spec_path, cases, forced, dname):
    """Generate with every (layer index, signature, candidate) of forced in one wisdom
    file, compile, check: ("pass" | "refused" | "fail", lines). "refused" only for a lone
    mix the generator does not accept."""
    out = []
    mix = len(forced) == 1 and "|" in forced[0][2]
    tag = f"{spec['name']} " + ", ".join(f"layer {i} {c}" for i, _, c in forced)
    d = os.path.join(work, dname)
    os.makedirs(d, exist_ok=True)
    wis = os.path.join(d, "wisdom.tsv")
    with open(wis, "w") as f:
        f.writelines(f"{isa}\t{sig}\t{cand}\n" for _, sig, cand in forced)
    g = run([cnngen, "--wisdom", wis, spec_path, "-o", d])
    if g.returncode != 0:
        return "fail", [f"schedules-check: {tag}: FAILED: cnngen: {g.stderr}"]
    c = g.stdout.strip().splitlines()[-1]
    with open(c) as f:
        text = f.read()
    for index, _, cand in forced:
        if f"/* layer {index}: " not in text or f" * schedule {cand}: " not in text.split(f"/* layer {index}: ", 1)[1].split("\n", 2)[1]:
            if mix:
                return "refused", []  # a mix the generator does not accept: the heuristic's schedule instead
            return "fail", [f"schedules-check: {tag}: FAILED: {c} does not name schedule {cand} for layer {index}"]
    exe = c[:-2]
    b = run([cc, "-O1", "-march=native", "-std=c11", "-Wall", "-Wextra", "-Werror", "-Iruntime", c, lib,
             "-lzip", "-lz", "-lm", "-o", exe])
    if b.returncode != 0:
        return "fail", [f"schedules-check: {tag}: FAILED: does not compile:\n{b.stderr[-2000:]}"]
    ok = True
    for n, (cd, ref) in cases.items():
        r = os.path.join(d, f"R{n}.npz")
        p = run([exe, "check", "--weights", os.path.join(cd, "W.npz"), "--input", os.path.join(cd, "X.npy"),
                 "--target", os.path.join(cd, "T.npy"), "--out", r], timeout=300)
        if p.returncode != 0:
            out.append(f"schedules-check: {tag} batch {n}: FAILED: check exited {p.returncode}: {p.stdout}{p.stderr}")
            ok = False
            continue
        with np.load(r) as z:
            got = {k: z[k] for k in z.files}
        good, lines, _ = torch_ref.compare(ref, got, TOL)
        if not good:
            out += lines
            out.append(f"schedules-check: {tag} batch {n}: FAILED against PyTorch")
            ok = False
    return ("pass" if ok else "fail"), out


def main():
    build, cc, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
    cnngen = os.path.join(build, "cnngen")
    lib = os.path.join(build, "libcnngen.a")
    work = os.path.join(build, "schedules")
    os.makedirs(work, exist_ok=True)
    isa = None
    npass = nfail = nmix = nrefused = 0
    jobs = []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
    for spec_path in specs:
        spec = torch_ref.load_spec(spec_path)
        _, tr = torch_ref.parse_layers(spec)
        batches = torch_ref.default_batches(spec, tr)
        cases = {}
        for n in batches:
            model, w, x, t = torch_ref.make_case(spec, n, 7 + n)
            d = os.path.abspath(os.path.join(work, f"{spec['name']}-b{n}"))
            torch_ref._write_case(d, w, x, t)
            cases[n] = (d, torch_ref.reference(spec, model, x, t, "float64"))
        listing = run([cnngen, "--schedules", spec_path])
        if listing.returncode != 0:
            print(f"schedules-check: {spec_path}: cnngen --schedules failed:\n{listing.stderr}")
            pool.shutdown(cancel_futures=True)
            return 1
        if isa is None:
            s = run([cnngen, "--summary", spec_path]).stdout
            isa = s.split("Schedules for target ", 1)[1].split(" ", 1)[0]
        rows = []
        for row in listing.stdout.splitlines():
            index, sig, cands = row.split("\t")
            cands = [c.rstrip("!") for c in cands.split(",")]  # "!": over the code budget, legal all the same
            rows.append((index, sig, cands))
            for m in mixes(cands):  # a mix in a round of its own: the generator may refuse it
                jobs.append(pool.submit(one_round, cnngen, cc, lib, work, isa, spec, spec_path, cases,
                                        [(index, sig, m)], None))
        for r in range(max((len(c) for _, _, c in rows), default=0)):
            forced = [(index, sig, cands[r]) for index, sig, cands in rows if r < len(cands)]
            jobs.append(pool.submit(one_round, cnngen, cc, lib, work, isa, spec, spec_path, cases, forced, r))
    for job in jobs:  # in submission order: the output reads as a serial run's
        for cand, status, lines in job.result():
            if lines:
                print("\n".join(lines))
            if status == "pass":
                npass += 1
                nmix += "|" in cand
            elif status == "refused":
                nrefused += 1
            else:
                nfail += 1
    print(f"schedules-check: {npass} passed, {nfail} failed (every legal schedule of every layer, target {isa}; "
          f"{nmix} of them mixes of passes, {nrefused} mixes refused; {len(jobs)} rounds and mixes)")
    if nmix == 0:
        print("schedules-check: FAILED: the generator accepted none of the mixes of passes")
        return 1
    return 1 if nfail else 0


if __name__ == "__main__":
    sys.exit(main())
