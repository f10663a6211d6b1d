#!/usr/bin/env python3
"""bench/tune.py: time the legal schedules of every layer of a spec on this machine and
record the fastest in a wisdom file (FFTW's wisdom, ATLAS's install-time search).

usage: tune.py SPEC [--wisdom FILE] [--cc CC] [--opt FLAGS] [--libs LIBS] [--reps N]
               [--rep-s S] [--threads T] [--team T] [--decide-team T]

For each layer that has more than one legal schedule (`cnngen --schedules SPEC`), and
once per distinct layer signature, every candidate is generated as that layer alone
(`cnngen --layer N`, its input shape, MSE loss, the spec's batch) with a one-line
wisdom forcing it, compiled against bench/step.c and timed for whole training steps
(forward, dW and dx unless it is the first layer), with a timer around each call of the
layer (bench/layer_profile.py's), so each pass is timed apart too. The candidates are
timed in --reps rounds, one run each a round, the order rotated (so that the machine's
slow minutes fall on all of them), and ranked by their medians. The mix of the passes'
fastest forms ("F|W|X": the forward of F, dW of W, dx of X; compiler/lua/schedule.lua)
is then timed as one more candidate when the generator accepts it. The fastest candidate's line
replaces any line for the same ISA and signature in the wisdom file; other lines are
kept. Against the noise of a shared machine, a fastest candidate that is not the
heuristic's is timed again: the --finalists (3) fastest of the first pass and the
heuristic's, round-robin for --runoff rounds; the fastest median wins, and it replaces
the heuristic's only if that median is higher than the heuristic's. The schedule the
wisdom file already holds for the layer (an earlier run's choice) always goes to that
run-off too, and is timed in the first pass when it is a mix: one noisy run does not
undo an earlier one's finding without a rematch. Layers timed alone do not see the
whole step (caches shared with their neighbours, the threads' barriers): when any layer
changed, each changed signature is checked in the whole network, greedily in the order
of the time it promises: the network with the choices accepted so far and the same plus
this one, both in one binary (bench/ab.py) that times them alternately, 20 x --runoff
pairs of ~0.1 s blocks, half in a process that allocates A's memory first and half in
one that allocates B's first; the choice is kept when the 95 % interval of the
pairs' median ratio and each process's median lie above 1 (bench/ab.py's verdict), else
the heuristic's schedule is recorded for it. Choices that promise less than the check
resolves (RESOLVE, 2 % of the step) are checked in groups that promise that much, kept
or discarded together. `cnngen --wisdom FILE` (or `make trainer`,
which passes build/wisdom.tsv when it exists) then emits those schedules; without a line for a layer, the built-in heuristic
decides. With --decide-team T it times nothing layer by layer: it compares the whole step
as a team of T (cnngen --team T, the replicas' layers tuned by an earlier --team T
--threads 1 run) against the layers split between the threads, and records the network's
choice (`make tune` runs all three on a machine with 2 or more CPUs). Every schedule computes the same function (tests: make schedules-check), so a
wisdom file changes speed, never results beyond float rounding.
"""
import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import ab  # noqa: E402
import layer_profile  # noqa: E402
import ab  # noqa: E402
from ab import CNNGEN, sh  # noqa: E402


# the share of a step below which the whole-network check (bench/ab.py, 40 pairs) cannot
# tell a choice from noise: smaller promises are checked in groups (main)
RESOLVE = 0.02


def native_isa(spec):
    # the generator's own choice of target (--target native), as it prints it
    out = sh([CNNGEN, "--summary", spec] + ab.CNNGEN_EXTRA)
    return out.split("Schedules for target ", 1)[1].split(" ", 1)[0]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def read_wisdom(path):
    lines = []
    if os.path.exists(path):
        with open(path) as f:
            lines = [l.rstrip("\n") for l in f if not l.startswith("#") and l.strip()]
    return lines


def compile_step(c, name, exe, a, timeout=None):
    """Generated C file c (network NAME) compiled with bench/step.c into exe."""
    sh([a.cc] + shlex.split(a.opt) + ["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-I" + os.path.join(ROOT, "runtime"),
        "-DCNNGEN_NO_MAIN", f"-DCG_NET={name}_net", c, os.path.join(ROOT, "bench", "step.c"),
        os.path.join(ROOT, "build", "libcnngen.a")] + shlex.split(a.libs) + ["-o", exe], timeout=timeout)


def build_candidate(spec, index, sig, cand, isa, a, work):
    """cand's single-layer step built with a timer around each call (layer_profile.py):
    (exe, compile s); None when compiling takes too long, or when cand is a mix ("F|W|X")
    the generator does not accept."""
    wis = os.path.join(work, "w.tsv")
    with open(wis, "w") as f:
        f.write(f"{isa}\t{sig}\t{cand}\n")
    d = os.path.join(work, f"l{index}_{re.sub('[^A-Za-z0-9]', '_', cand)}")
    os.makedirs(d, exist_ok=True)
    c = sh([CNNGEN, "--wisdom", wis, "--layer", str(index), spec, "-o", d] + ab.CNNGEN_EXTRA).strip().splitlines()[-1]
    with open(c) as f:
        src = f.read()
    if f"schedule {cand}:" not in src:
        if "|" in cand:
            return None
        sys.exit(f"tune: {c} does not use schedule {cand} (wisdom not applied)")
    name = os.path.splitext(os.path.basename(c))[0]
    pc = os.path.join(d, name + "_prof.c")
    with open(pc, "w") as f:
        f.write(layer_profile.instrument(src, name))
    exe = os.path.join(d, "step")
    t0 = time.time()
    try:
        compile_step(pc, name, exe, a, timeout=a.compile_timeout)
    except subprocess.TimeoutExpired:
        return None
    return exe, time.time() - t0


def time_round_robin(built, index, kind, a):
    """The built candidates [(cand, exe, compile s)] timed in --reps rounds, one run of
    each a round, the order rotated from round to round, so that a slow minute of a
    shared machine falls on all of them alike (timed one after the other, the first
    pass ranked the machine's phases as much as the candidates). Per candidate:
    (median img/s, median img/cpu-s, cand, exe, {pass: median s a call})."""
    runs = {c: ([], [], {}) for c, _, _ in built}
    for k in range(a.reps):
        for j in range(len(built)):
            cand, exe, _ = built[(j + k) % len(built)]
            ips, ipc = run_step(exe, index, a, reps=1, warmup_s=min(a.rep_s, 0.1))
            runs[cand][0].append(ips)
            runs[cand][1].append(ipc)
            for p, v in pass_times(exe, kind).items():
                runs[cand][2].setdefault(p, []).append(v)
    return [(statistics.median(runs[c][0]), statistics.median(runs[c][1]), c, exe,
             {p: statistics.median(v) for p, v in runs[c][2].items()}) for c, exe, _ in built]


def pass_times(exe, kind):
    """Seconds a call of the layer's forward, dW (`_backward`) and dx (`_backward_dx`),
    from the timers the last run of exe wrote (CG_PROF_OUT)."""
    t = {}
    for s, n, _, what in layer_profile.read_rows(exe + ".prof"):
        # (a single-layer step calls dx under "if (dx) ")
        m = re.match(rf"([fb]) (?:if \(dx\) )?\w*{kind}_(forward|backward_dx|backward)\(", what)
        if m:
            key = {"forward": "fwd", "backward": "dw", "backward_dx": "dx"}[m.group(2)]
            t[key] = t.get(key, 0.0) + s / max(n, 1)
    return t


def mix_of(res):
    """The mix "F|W|X" of the candidates whose forward, dW and dx took least a call (each
    pass timed apart, in the candidates' own runs), or None when one candidate has all three
    or a pass was not timed (a first layer has no dx: its X is its W)."""
    pick = []
    for i, p in enumerate(("fwd", "dw", "dx")):
        timed = [(r[4][p], r[2]) for r in res if p in r[4]]
        if not timed:
            if p != "dx":
                return None
            pick.append(pick[1])
            continue
        # a mix (the incumbent, "F|W|X") gives its pass's own candidate
        name = min(timed)[1]
        parts = name.split("|")
        pick.append(parts[i] if len(parts) == 3 else name)
    return None if pick[0] == pick[1] == pick[2] else "|".join(pick)


def run_step(exe, index, a, reps=None, warmup_s=None):
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), CG_PROF_OUT=exe + ".prof")
    flags = [] if index == 0 else ["--dx"]
    out = sh([exe, "0", str(reps or a.reps), "--rep-s", str(a.rep_s), "--warmup-s", str(a.rep_s if warmup_s is None else warmup_s)]
             + flags, env=env)
    r = json.loads(out.strip().splitlines()[-1])
    # ranked by the median wall-clock rate (what a training run sees: a candidate that
    # keeps one core busy must not beat one that keeps two busy); images per CPU-second
    # are printed too: far below the wall rate x threads means the machine was not idle
    per_cpu = [v / max(c, 1e-3) for v, c in zip(r["runs"], r["cpu_per_wall"])]
    return r["img_per_s"], statistics.median(per_cpu)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec")
    ap.add_argument("--wisdom", default=os.path.join(ROOT, "build", "wisdom.tsv"))
    ap.add_argument("--cc", default="cc")
    ap.add_argument("--opt", default="-O3 -march=native -fopenmp")
    ap.add_argument("--libs", default="-lzip -lz -lm")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rep-s", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--runoff", type=int, default=2,
                    help="rounds of the run-off between the fastest candidates and the heuristic's (0: none)")
    ap.add_argument("--finalists", type=int, default=3,
                    help="how many of the first pass's fastest candidates go to the run-off (default 3)")
    ap.add_argument("--compile-timeout", type=float, default=120,
                    help="seconds; a candidate that takes longer to compile is not timed")
    ap.add_argument("--team", type=int, default=0,
                    help="the layers of one replica of a team of T (cnngen --team T: batch / T), "
                         "timed as such on --threads (1 for a team's replica)")
    ap.add_argument("--decide-team", type=int, default=0, metavar="T",
                    help="only decide whether the whole step is faster as a team of T (the replicas' "
                         "layers tuned already: --team T --threads 1) and record it (decide_team)")
    a = ap.parse_args()
    if a.decide_team:
        decide_team(a, native_isa(a.spec))
        return
    if a.team:
        ab.CNNGEN_EXTRA[:] = ["--team", str(a.team)]
    isa = native_isa(a.spec)
    listing = sh([CNNGEN, "--schedules", a.spec] + ab.CNNGEN_EXTRA)
    lines = read_wisdom(a.wisdom)
    done = set()
    chosen, heur_of, gain_of, rate_of = {}, {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="cnngen-tune-") as work:
        for row in listing.splitlines():
            index, sig, cands = row.split("\t")
            if sig in done:
                continue
            done.add(sig)
            skipped = [c.rstrip("!") for c in cands.split(",") if c.endswith("!")]
            cands = [c for c in cands.split(",") if not c.endswith("!")]
            if skipped:
                print(f"tune: layer {index}: not timed (code over the tuner's budget): {', '.join(skipped)}", flush=True)
            if len(cands) < 2:
                continue
            built, kind = [], sig.split(":")[0]
            # the schedule an earlier run recorded for this layer (the incumbent) is
            # timed too when it is a mix of passes ("F|W|X", not in the listing), and
            # always goes to the run-off: on a noisy machine one run's first pass must
            # not undo what earlier runs found without a rematch
            inc = next((l.split("\t")[2] for l in lines if l.startswith(f"{isa}\t{sig}\t")), None)
            if inc and inc not in cands and "|" in inc:
                cands = cands + [inc]
            for cand in cands:
                b = build_candidate(a.spec, int(index), sig, cand, isa, a, work)
                if b is None:
                    print(f"tune: layer {index} {cand:<18} not timed: " + ("a mix the generator does not accept"
                          if "|" in cand else f"compiling took over {a.compile_timeout:g} s"), flush=True)
                    continue
                built.append((cand,) + b)
            if not built:
                continue
            res = time_round_robin(built, int(index), kind, a)
            tcs = {c: tc for c, _, tc in built}
            for ips, ipc, cand, exe, pt in res:
                print(f"tune: layer {index} {cand:<18} {ips:10.1f} img/s  {ipc:10.1f} img/cpu-s  (compiled in {tcs[cand]:.1f} s)  " +
                      " ".join(f"{p} {1e3 * pt[p]:.3f}" for p in ("fwd", "dw", "dx") if p in pt) + " ms", flush=True)
            # each pass's fastest form, whichever candidate it came from, as a candidate of
            # its own (when the generator accepts the mix: schedule.lua's compose), timed
            # in rounds with the fastest of the first pass
            mix = mix_of(res)
            if mix in {r[2] for r in res}:
                mix = None  # the incumbent, timed already
            b = mix and build_candidate(a.spec, int(index), sig, mix, isa, a, work)
            if b:
                top = max(res)
                r2 = time_round_robin([(mix,) + b, (top[2], top[3], tcs[top[2]])], int(index), kind, a)
                # on the first pass's scale: the mix's rate relative to the fastest's in the same rounds
                f = top[0] / r2[1][0]
                res.append((r2[0][0] * f, r2[0][1] * f) + r2[0][2:])
                ips, ipc = r2[0][0], r2[0][1]
                print(f"tune: layer {index} {mix:<18} {ips:10.1f} img/s  {ipc:10.1f} img/cpu-s  (the passes' fastest; "
                      f"{top[2]} {r2[1][0]:.1f} in the same rounds)", flush=True)
            elif mix:
                print(f"tune: layer {index} {mix}: a mix the generator does not accept", flush=True)
            best = max(res)
            heur = res[0]
            inc_r = next((r for r in res if r[2] == inc and r is not heur), None)
            gain = best[0] / heur[0]
            heur_rate = heur[0]  # img/s of the layer-alone step with the heuristic's choice
            if (best is not heur or inc_r) and a.runoff > 0:
                # a run-off against noise (a shared machine moves rates by 10-30 % from one
                # minute to the next, and one slow minute can sink the true winner in the
                # first pass): the FINALISTS fastest candidates and the heuristic's choice
                # timed again round-robin, the order rotated each round; the fastest median
                # over all rounds wins, and replaces the heuristic only if its median is higher
                fin = sorted(res, key=lambda r: -r[0])[:a.finalists]
                if inc_r and inc_r not in fin:
                    fin.append(inc_r)
                if heur not in fin:
                    fin.append(heur)
                rates = {r[2]: [r[0]] for r in fin}
                for k in range(a.runoff):
                    for j in range(len(fin)):
                        r = fin[(j + k) % len(fin)]
                        rates[r[2]].append(run_step(r[3], int(index), a)[0])
                med = {c: statistics.median(v) for c, v in rates.items()}
                best = max(fin, key=lambda r: med[r[2]])
                print(f"tune: layer {index} run-off, medians of {a.runoff + 1}: " +
                      ", ".join(f"{r[2]} {med[r[2]]:.1f}" for r in fin) + " img/s", flush=True)
                gain = med[best[2]] / med[heur[2]]
                heur_rate = med[heur[2]]
                if gain <= 1.0:
                    best = heur
                    gain = 1.0
            print(f"tune: layer {index} {sig}: {best[2]} ({gain:.2f}x the heuristic's {heur[2]})", flush=True)
            chosen[sig] = best[2]
            heur_of[sig] = heur[2]
            gain_of[sig] = gain
            rate_of[sig] = heur_rate
        changed = [sig for sig in chosen if chosen[sig] != heur_of[sig]]
        if changed and a.runoff > 0:
            # Each changed signature checked in the whole network, greedily (alone, or in a
            # group of small ones: below): the network with the choices accepted so far (A)
            # against the same plus this signature's or group's (B), both in one process (bench/ab.py, bench/abstep.c: 20 x
            # runoff pairs of ~0.1 s blocks, the order swapped every pair, half in a process
            # that allocates A first, half in one that allocates B first); accepted when
            # the 95 % interval of the pairs' median ratio and both processes' medians lie
            # above 1 (ab.verdict). Signatures in the order of the time they promise
            # (layers x the time a step the layer alone saves). A layer timed
            # alone does not see its neighbours' caches, and one choice that loses in the
            # network no longer sinks the others with it, as the single all-or-nothing
            # check did (session 28's run a: 0.92x, every choice discarded). Two builds
            # timed in turns, as that check did in 9 rounds, compared the machine's
            # spells more than the code here (an A/A ranged 0.88-1.21 a round on Zen 3;
            # in one process its interval is about +-2 %: bench/RESULTS.md, session 29).
            count = {}
            for row in listing.splitlines():
                g = row.split("\t")[1]
                count[g] = count.get(g, 0) + 1
            order = sorted(changed, key=lambda g: -count[g] * (1 - 1 / gain_of[g]) / rate_of[g])
            # A choice that promises less of the step than the check resolves (RESOLVE:
            # the pairs' interval is about +-1 %) goes in a group with the next ones until
            # the group promises that much, and the group is checked as one (kept or
            # recorded as the heuristic's together): one at a time, a layer that saves
            # 0.5 % of the step could never show it (session 36: four such, each above 1,
            # all thrown away).
            # The promise: count x the time the layer alone saves a step, over the
            # network's step in the last check (the first choice is checked alone).
            accepted, pending, net_ips = {}, [], None
            cur = ab.source(a.spec, "-", os.path.join(work, "net_0"))  # the network of the accepted choices

            def promise(g):
                return count[g] * (1 - 1 / gain_of[g]) / rate_of[g] * net_ips if net_ips else 1.0

            k = 0
            for j, sig in enumerate(order):
                pending.append(sig)
                if sum(promise(g) for g in pending) < RESOLVE and j + 1 < len(order):
                    continue
                k += 1
                group, pending = pending, []
                wb = os.path.join(work, f"net_{k}.tsv")
                with open(wb, "w") as f:
                    f.write("".join(f"{isa}\t{g}\t{chosen[g]}\n" for g in list(accepted) + group))
                src = ab.source(a.spec, wb, os.path.join(work, f"net_{k}"))
                r = ab.run(ab.build(cur, src, a, os.path.join(work, f"ab{k}")), a.threads, pairs=max(8, 20 * a.runoff))
                ok = ab.verdict(r) == "B faster"
                what = ", ".join(f"{g} {heur_of[g]} -> {chosen[g]} ({count[g]} layer(s)"
                                 + (f", promised {100 * promise(g):.1f} %" if net_ips else "") + ")" for g in group)
                net_ips = r["b_img_per_s"] if ok else r["a_img_per_s"]
                if ok:
                    cur = src
                    for g in group:
                        accepted[g] = chosen[g]
                print(f"tune: whole network, {what} on top of {len(accepted) - (len(group) if ok else 0)} accepted: "
                      f"{ab_summary(r)}: {'kept' if ok else 'the heuristic recorded'}", flush=True)
            for sig in changed:
                if sig not in accepted:
                    chosen[sig] = heur_of[sig]
    keep = [l for l in lines if not any(l.startswith(f"{isa}\t{sig}\t") for sig in chosen)]
    keep += [f"{isa}\t{sig}\t{cand}" for sig, cand in chosen.items()]
    write_wisdom(a.wisdom, keep)
    print(f"tune: {len(chosen)} signature(s) written to {a.wisdom}")


def ab_summary(r):
    """bench/ab.py's result r in words: B's and A's rates, the pairs' median ratio, its
    95 % interval and each process's median"""
    lo, hi = r["ci95"]
    return (f"{r['b_img_per_s']:.1f} vs {r['a_img_per_s']:.1f} img/s in one process, median ratio of {r['pairs']} "
            f"pairs {r['ratio']:.3f}x (95 % interval {lo:.3f}-{hi:.3f}; by process "
            f"{', '.join(f'{x:.3f}' for x in r['process_ratios'])})")


def write_wisdom(path, lines):
    """the wisdom file, sorted, replaced in one step"""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"# cnngen wisdom: isa<TAB>layer or net signature<TAB>schedule or team=T; timed on {cpu_model()}\n")
        f.write("\n".join(sorted(lines)) + "\n")
    os.replace(tmp, path)


def decide_team(a, isa):
    """Is the whole training step faster as a team of T replicas (cnngen --team T, each
    ceil(batch / T) samples on one thread) than with each layer's work split between the
    threads? Both with the wisdom's schedules, in one binary (bench/ab.py, 20 x --runoff
    pairs). The network's line ("net:NAME:bB:HASH", cnngen --net-signature) records
    team=T when the team is faster by ab.py's verdict, team=1 otherwise; `cnngen --wisdom`
    then emits the team without --team. Whether it pays depends on the network and on
    where the host puts the cores (bench/RESULTS.md, sessions 37-39), so it is measured."""
    T = a.decide_team
    sig = sh([CNNGEN, "--net-signature", a.spec]).strip()
    lines = [l for l in read_wisdom(a.wisdom) if not l.startswith(f"{isa}\t{sig}\t")]
    chk = subprocess.run([CNNGEN, "--check", "--team", str(T), a.spec], capture_output=True, text=True)
    if T < 2 or chk.returncode != 0:
        why = "a team needs 2 or more threads" if T < 2 else chk.stderr.strip().splitlines()[0]
        print(f"tune: {sig}: no team of {T}: {why}", flush=True)
        choice = 1
    else:
        with tempfile.TemporaryDirectory(prefix="cnngen-tune-") as work:
            wa, wb = os.path.join(work, "plain.tsv"), os.path.join(work, "team.tsv")
            with open(wa, "w") as f:
                f.write("".join(l + "\n" for l in lines))
            with open(wb, "w") as f:
                f.write("".join(l + "\n" for l in lines) + f"{isa}\t{sig}\tteam={T}\n")
            src_a = ab.source(a.spec, wa, os.path.join(work, "plain"))
            src_b = ab.source(a.spec, wb, os.path.join(work, "team"))
            r = ab.run(ab.build(src_a, src_b, a, os.path.join(work, "ab")), a.threads, pairs=max(8, 20 * a.runoff))
            choice = T if ab.verdict(r) == "B faster" else 1
            print(f"tune: whole network, a team of {T} against the layers split between {a.threads} threads: "
                  f"{ab_summary(r)}: {'the team recorded' if choice > 1 else 'no team recorded'}", flush=True)
    write_wisdom(a.wisdom, lines + [f"{isa}\t{sig}\tteam={choice}"])
    print(f"tune: {sig} team={choice} written to {a.wisdom}")


if __name__ == "__main__":
    main()
