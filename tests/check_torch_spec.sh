#!/bin/sh
# tests/check_torch_spec.sh B PYTHON EVAL_ONLY SPEC: one spec of make check-torch (a job of
# tests/parallel.py): its trainer (B/trainers, gtrainers, ttrainers or, for a team,
# teamtrainers) against PyTorch (tests/torch_ref.py check) in training and --eval mode,
# --eval only when SPEC is one of the words of EVAL_ONLY. Exit 1 if either mode failed.
B=$1 PY=$2 EVAL_ONLY=$3 s=$4
n=$(basename "$s" .yaml)
t=$B/trainers/$n; [ -x "$t" ] || t=$B/gtrainers/$n; [ -x "$t" ] || t=$B/ttrainers/$n
b=; [ -x "$t" ] || { t=$B/teamtrainers/$n; b="--batch 2 3 17 --train-batch"; }
modes="train eval"
case " $EVAL_ONLY " in *" $s "*) modes=eval
  echo "check-torch: $s in inference mode only (see TORCH_EVAL_ONLY in tests/tests.mk)";; esac
fail=0
for mode in $modes; do
  m=; [ $mode = eval ] && m=--eval
  # shellcheck disable=SC2086  # $b: several words
  "$PY" tests/torch_ref.py check "$s" "$t" "$B/torchwork" $m $b || { fail=1; echo "check-torch: FAILED $s $m"; }
done
exit $fail
