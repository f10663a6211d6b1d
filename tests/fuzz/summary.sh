#!/bin/sh
# tests/fuzz/summary.sh [FUZZ_DIR]: the long fuzzing runs so far (make fuzz-long-TARGET), a
# table row per harness: CPU seconds over its runs (TARGET-long.cpu), runs, inputs executed
# (libFuzzer's final stats summed over the runs that printed them), corpus files kept, and
# crash/leak/timeout artifacts left in FUZZ_DIR.
d=${1:-build/fuzz}
echo "| harness | CPU time | runs | executions | corpus files | crashes, leaks, timeouts |"
echo "|---|---|---|---|---|---|"
for t in spec npy npz idx csv checkpoint; do
    [ -f "$d/$t-long.cpu" ] || continue
    cpu=$(cat "$d/$t-long.cpu")
    runs=$(grep -c '^cpu_budget: run' "$d/$t-long.log" 2>/dev/null)
    ex=$(grep -a 'stat::number_of_executed_units' "$d/$t-long.log" 2>/dev/null | awk '{s += $2} END {print s + 0}')
    corpus=$(ls "$d/corpus/$t" 2>/dev/null | wc -l)
    bad=$(ls "$d" | grep -cE "^$t-(crash|leak|timeout|oom)-")
    printf '| %s | %d min %02d s | %s | %s | %s | %s |\n' "$t" $((cpu / 60)) $((cpu % 60)) "${runs:-0}" "$ex" "$corpus" "$bad"
done
