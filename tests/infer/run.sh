#!/bin/sh
# tests/infer/run.sh -- `make infer-check`: cnngen --inference against PyTorch's
# model.eval() and the trainer's eval-mode forward (its `predict`).
# usage: run.sh BUILD PYTHON SPEC[:norm]...   (a spec's trainer is BUILD/trainers/NAME if
# it exists, else it is built into the work directory)
# The specs run as jobs of tests/parallel.py (run.sh --spec BUILD PYTHON SPEC[:norm] each),
# as many at a time as the machine has cores.
# Per spec, with random weights and non-trivial batch-norm statistics (torch_ref.py
# infer-gen) and 19 samples:
#   a: --weights (parameters baked in), batch 1: gcc -std=c99 -Wall -Wextra -Werror,
#      linked with nothing but -lm; also driven from C++ (g++) through the header
#   b: no weights (NAME_init with the trainer's flat arrays), --batch 16 (batch-innermost
#      forms): clang -std=c99 -march=native -Wall -Wextra -Werror
#   s: NAME_init at --batch 3 (six chunks of 3, then 1), ASan + UBSan at -O0 (at -O1 gcc took
#      47 s on LeNet-5, 78 s on bnnet, clang longer): the arena planned
#      for the forward alone holds everything the layers touch
#   a and b also compile with the other compiler and -march (-fsyntax-only)
#   the outputs of a, b, the C++ driver and the trainer's predict must equal PyTorch's
#   eval forward within 1e-4 * max(1, max|ref|); a and the C++ driver bit for bit.
# SPEC:norm also folds a random per-channel input normalization (--norm).
set -eu
one=; [ "$1" = --spec ] && { one=1; shift; }
B=$1
PY=$2
shift 2
CNNGEN=$B/cnngen
HERE=$(dirname "$0")
W=$B/infer
WARN="-Wall -Wextra -Werror"
N=19
mkdir -p "$W"
fail() { echo "infer-check: FAILED: $*"; exit 1; }
if [ -z "$one" ]; then  # every spec, a job each
  count=$#
  printf '%s\n' "$@" | "$PY" "$HERE/../parallel.py" --name "infer-check: specs" -- "$0" --spec "$B" "$PY" \
    || fail "a spec failed (above)"
  set --
fi
for arg in "$@"; do
  spec=${arg%:norm}
  norm=; [ "$spec" != "$arg" ] && norm=1
  n=$(basename "$spec" .yaml)
  up=$(echo "$n" | tr a-z A-Z)
  d=$W/$n
  rm -rf "$d" && mkdir -p "$d/a" "$d/b" "$d/s"
  "$PY" tests/torch_ref.py infer-gen "$spec" "$d" --n $N ${norm:+--norm} >/dev/null || fail "$n: infer-gen"
  nflag=; [ -n "$norm" ] && nflag="--norm $d/normalize.npz"
  $CNNGEN "$spec" --inference --weights "$d/W.npz" $nflag -o "$d/a" >/dev/null || fail "$n: cnngen --inference --weights"
  $CNNGEN "$spec" --inference --batch 16 $nflag -o "$d/b" >/dev/null || fail "$n: cnngen --inference --batch 16"
  $CNNGEN "$spec" --inference --batch 3 $nflag -o "$d/s" >/dev/null || fail "$n: cnngen --inference --batch 3"
  def="-DNET=$n -DNETUP=$up -DINFER_H=\"${n}_infer.h\""
  gcc -std=c99 -O2 $WARN -c "$d/a/${n}_infer.c" -o "$d/a.o" || fail "$n: gcc (weights baked in)"
  gcc -std=c99 -O2 $WARN -I"$d/a" $def "$HERE/driver.c" "$d/a.o" -lm -o "$d/ya" || fail "$n: gcc driver"
  g++ -std=c++11 -O2 $WARN -I"$d/a" $def -x c++ "$HERE/driver.c" -x none "$d/a.o" -lm -o "$d/yc" || fail "$n: g++ driver"
  clang -std=c99 -O2 -march=native $WARN -I"$d/b" $def -DWITH_INIT "$HERE/driver.c" "$d/b/${n}_infer.c" -lm -o "$d/yb" \
    || fail "$n: clang (NAME_init)"
  clang -std=c99 $WARN -fsyntax-only "$d/a/${n}_infer.c" || fail "$n: clang (weights baked in)"
  gcc -std=c99 -march=native $WARN -fsyntax-only "$d/b/${n}_infer.c" || fail "$n: gcc -march=native (NAME_init)"
  gcc -std=c99 -O0 -g -fsanitize=address,undefined -fno-sanitize-recover=all $WARN -I"$d/s" $def -DWITH_INIT \
    "$HERE/driver.c" "$d/s/${n}_infer.c" -lm -o "$d/ys" || fail "$n: gcc ASan+UBSan"
  "$d/ys" "$d" "$d/Ys.bin" $N || fail "$n: ASan+UBSan"
  "$d/ya" "$d" "$d/Ya.bin" $N || fail "$n: a"
  "$d/yb" "$d" "$d/Yb.bin" $N || fail "$n: b"
  "$d/yc" "$d" "$d/Yc.bin" $N || fail "$n: C++ driver"
  cmp -s "$d/Ya.bin" "$d/Yc.bin" || fail "$n: the C++ driver's outputs differ from the C driver's"
  t=$B/trainers/$n
  if [ ! -x "$t" ]; then
    $CNNGEN "$spec" -o "$d" >/dev/null && \
      gcc -O2 -march=native -std=c11 -Iruntime "$d/$n.c" "$B/libcnngen.a" -lzip -lz -lm -o "$d/$n" || fail "$n: trainer"
    t=$d/$n
  fi
  "$t" predict --weights "$d/W.npz" --input "$d/X.npy" --out "$d/Yt.npy" >/dev/null 2>&1 || fail "$n: trainer predict"
  "$PY" tests/torch_ref.py infer-compare "$d" "$d/Ya.bin" "$d/Yb.bin" "$d/Yc.bin" "$d/Ys.bin" "$d/Yt.npy" > "$d/compare.txt" \
    || { cat "$d/compare.txt"; fail "$n: outputs differ from PyTorch's eval forward"; }
  echo "infer-check: $n${norm:+ (normalized)}: $(grep -c ok "$d/compare.txt") outputs equal PyTorch eval (worst $(sed -n 's/.*max|d|=\([^ ]*\).*/\1/p' "$d/compare.txt" | sort -g | tail -1))"
done
[ -n "$one" ] && exit 0
# NaN and Inf as in PyTorch (relu keeps NaN, max pooling takes it), at batch 1 and 16
d=$W/nan
rm -rf "$d" && mkdir -p "$d/1" "$d/16"
for b in 1 16; do
  $CNNGEN tests/infer/nan_net.yaml --inference --batch $b -o "$d/$b" >/dev/null || fail "nan_net: cnngen --batch $b"
  gcc -std=c99 -O2 -march=native $WARN -I"$d/$b" "$HERE/nan.c" "$d/$b/nan_net_infer.c" -lm -o "$d/$b/nan" \
    || fail "nan_net: gcc --batch $b"
  "$d/$b/nan" || fail "nan_net --batch $b: NaN/Inf differ from PyTorch's"
done
# wrong weights or normalization, a missing file: an error with a message, nothing written
d=$W/errors
rm -rf "$d" && mkdir -p "$d"
"$PY" tests/torch_ref.py infer-gen tests/nets/t_c2_dw.yaml "$d/w" --n 1 --norm >/dev/null || fail "infer-gen t_c2_dw"
if $CNNGEN tests/nets/t_c2_k3p0.yaml --inference --weights "$d/w/W.npz" -o "$d" 2>"$d/err.txt"; then
  fail "t_c2_dw's weights accepted for t_c2_k3p0"
fi
grep -q "tensor '0.weight' has shape (3, 1, 3, 3), expected" "$d/err.txt" || fail "wrong message for wrong weights: $(cat "$d/err.txt")"
expect_error() { # message, then the arguments
  msg=$1; shift
  if $CNNGEN "$@" -o "$d" 2>"$d/err.txt"; then fail "accepted: cnngen $*"; fi
  grep -q "$msg" "$d/err.txt" || fail "cnngen $*: expected '$msg', got: $(cat "$d/err.txt")"
}
expect_error "nonexistent.npz: cannot open" tests/nets/t_c2_dw.yaml --inference --weights "$d/nonexistent.npz"
expect_error "normalization has 3 channels, network 't_c2_k3p0' has 2" tests/nets/t_c2_k3p0.yaml --inference \
  --norm "$d/w/normalize.npz"
[ -z "$(ls "$d" | grep -v 'err.txt\|^w$')" ] || fail "files written on error"
echo "infer-check: $count specs: exported forwards equal PyTorch's model.eval() and the trainer's predict; NaN/Inf as PyTorch's"
