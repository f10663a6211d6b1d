#!/usr/bin/python3
"""tests/parallel.py -- run a make test part's jobs side by side, each job's output whole.

usage: parallel.py [-j N] [--name NAME] -- CMD [ARG...]  < jobs

Each line of standard input is a job: CMD ARG... and then the line's words. N jobs run at
a time (default: the CPU count). A job's output (stdout and stderr together) is held and
printed whole, in the order of the input, once the job and every job before it have
ended, so the log reads as if the jobs had run one after the other. The exit status is 1
if any job failed (nonzero status, or it could not be started), after a line naming
them; 0 otherwise.
"""
import argparse
import concurrent.futures
import os
import subprocess
import sys


def run_job(argv):
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        return p.returncode, p.stdout.decode(errors="replace")
    except OSError as e:
        return 127, f"parallel.py: cannot run {' '.join(argv)}: {e}\n"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="parallel.py", description=__doc__.split("\n")[0])
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--name", default="parallel.py")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("no command after --")
    jobs = [cmd + line.split() for line in sys.stdin if line.strip()]
    failed = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        for job, (rc, out) in zip(jobs, pool.map(run_job, jobs)):
            sys.stdout.write(out)
            sys.stdout.flush()
            if rc != 0:
                failed.append(" ".join(job[len(cmd):]) or " ".join(job))
    if failed:
        print(f"{a.name}: {len(failed)} of {len(jobs)} FAILED: {', '.join(failed)}")
        return 1
    print(f"{a.name}: {len(jobs)} of {len(jobs)} passed ({max(1, a.jobs)} at a time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
