#!/bin/sh
# tests/infer/latency.sh -- LeNet-5 single-image latency: cnngen --inference (batch 1)
# against the trainer's eval-mode forward (bench/specs/lenet5_b1.yaml, the trainer's
# batch-1 forms) and PyTorch's model.eval() forward (1 thread, no_grad). Not in make test.
# usage: tests/infer/latency.sh [BUILD] [PYTHON]
set -eu
B=${1:-build}
PY=${2:-/usr/bin/python3}
OPT="-O3 -march=native"
d=$B/infer/latency
mkdir -p "$d"
$B/cnngen specs/lenet5.yaml --inference -o "$d" >/dev/null
$B/cnngen bench/specs/lenet5_b1.yaml -o "$d" >/dev/null
cc -std=c99 $OPT -c "$d/lenet5_infer.c" -o "$d/lenet5_infer.o"
cc -std=c11 $OPT -Iruntime -DCNNGEN_NO_MAIN -c "$d/lenet5_b1.c" -o "$d/lenet5_b1.o"
cc -std=c11 $OPT -Iruntime -I"$d" -DNET=lenet5 -DNETUP=LENET5 -DINFER_H='"lenet5_infer.h"' \
  -DTNET=lenet5_b1 -DTNETUP=LENET5_B1 -DTRAINER_H='"lenet5_b1.h"' tests/infer/latency.c \
  "$d/lenet5_infer.o" "$d/lenet5_b1.o" "$B/libcnngen.a" -lzip -lz -lm -o "$d/latency"
echo "code size (size -A .text of lenet5_infer.o, -O3 -march=native): $(size -A "$d/lenet5_infer.o" | awk '$1 == ".text" {print $2}') bytes"
echo "arena: $(sed -n 's/.*LENET5_INFER_ARENA ((size_t)\([0-9]*\)).*/\1/p' "$d/lenet5_infer.h") floats"
"$d/latency"
"$PY" - <<'PYEOF'
import statistics, sys, time
sys.path.insert(0, "tests")
import torch, torch_ref
torch.set_num_threads(1)
m = torch_ref.build_model(torch_ref.load_spec("specs/lenet5.yaml")).eval()
x = torch.rand(1, 1, 28, 28)
ts = []
with torch.no_grad():
    for _ in range(200): m(x)
    for r in range(9):
        t0 = time.perf_counter()
        for _ in range(2000): m(x)
        ts.append((time.perf_counter() - t0) / 2000)
print(f"PyTorch eval()      {1e6 * statistics.median(ts):8.2f} us/sample (1 thread, no_grad, median of 9 x 2000)")
PYEOF
