#!/bin/sh
# tests/fuzz/cpu_budget.sh SECONDS LOG CMD...: run one libFuzzer harness until it has used
# SECONDS of CPU time (user + system, read from /proc), not of wall time, then stop it with
# SIGINT (libFuzzer prints its final stats and exits 0, keeping the corpus). On a shared
# machine, under `nice`, or paused with SIGSTOP, wall time says nothing about how much
# fuzzing was done; CPU time does. Exits with the harness's status when it stops by itself
# (a crash: non-zero); prints "cpu N s" at the end.
set -u
budget=$1; log=$2; shift 2
"$@" > "$log" 2>&1 &
pid=$!
tck=$(getconf CLK_TCK)
cpu=0
while kill -0 "$pid" 2>/dev/null; do
    # fields 14 and 15 of /proc/PID/stat: utime, stime in clock ticks (comm has no spaces here)
    t=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null) || break
    [ -n "$t" ] && cpu=$((t / tck))
    if [ "$cpu" -ge "$budget" ]; then
        kill -INT "$pid"
        wait "$pid"
        echo "cpu $cpu s (budget reached)" >> "$log"
        echo "cpu $cpu s"
        exit 0
    fi
    sleep 5
done
wait "$pid"; rc=$?
echo "cpu $cpu s (harness exited with $rc)" >> "$log"
echo "cpu $cpu s, exit $rc"
exit $rc
