#!/bin/sh
# tests/fuzz/cpu_budget.sh SECONDS STATE LOG CMD...: run one libFuzzer harness until it has
# used SECONDS of CPU time (user + system, read from /proc), not of wall time, then stop it
# with SIGINT (libFuzzer prints its final stats and exits 0, keeping the corpus). On a
# shared machine or under `nice`, wall time says nothing about how much fuzzing was done;
# CPU time does.
# STATE keeps the CPU seconds of earlier runs of the same harness: a run stopped part-way
# (SIGTERM to this script, which passes SIGINT on; a script started in the background by a
# non-interactive shell ignores SIGINT itself) counts what it did, and the next
# run goes on with the rest of the budget (the corpus directory carries the inputs over).
# Each run appends to LOG (tests/fuzz/summary.sh sums the runs' final stats).
# Exits with the harness's status when it stops by itself (a crash: non-zero).
set -u
budget=$1; state=$2; log=$3; shift 3
prev=0
[ -s "$state" ] && prev=$(cat "$state")
if [ "$prev" -ge "$budget" ]; then
    echo "cpu $prev s of $budget already used ($state)"
    exit 0
fi
echo "cpu_budget: run from $prev s, $(date -u +%FT%TZ)" >> "$log"
"$@" >> "$log" 2>&1 &
pid=$!
tck=$(getconf CLK_TCK)
cpu=0
stop() { kill -INT "$pid" 2>/dev/null; wait "$pid"; echo $((prev + cpu)) > "$state";
         echo "cpu $((prev + cpu)) s of $budget (stopped from outside)" | tee -a "$log"; exit 0; }
trap stop INT TERM
while kill -0 "$pid" 2>/dev/null; do
    # fields 14-17 of /proc/PID/stat: utime, stime, and those of its reaped children (the
    # spec harness runs each input in a child), in clock ticks (comm has no spaces here)
    t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat" 2>/dev/null) || break
    [ -n "$t" ] && cpu=$((t / tck))
    echo $((prev + cpu)) > "$state"
    if [ $((prev + cpu)) -ge "$budget" ]; then
        kill -INT "$pid"
        wait "$pid"
        echo "cpu $((prev + cpu)) s of $budget (budget reached)" | tee -a "$log"
        exit 0
    fi
    sleep 5 & wait $!
done
wait "$pid"; rc=$?
echo $((prev + cpu)) > "$state"
echo "cpu $((prev + cpu)) s of $budget (harness exited with $rc)" | tee -a "$log"
exit $rc
