#!/bin/sh
# bench/pypi_torch.sh VENV PYTHON -- `make bench`'s PyTorch from PyPI: the current `torch`
# (plus numpy and pyyaml for tests/torch_ref.py) in a virtual environment VENV under build/,
# created with PYTHON's venv module and brought up to date on every run (a no-op when it
# is). Only the default PyPI index is used; the Linux wheel pulls NVIDIA's CUDA wheels as
# dependencies (several GB, unused here: the bench runs on the CPU).
# Never fails: when PyPI cannot be reached (or the install fails) it writes the reason to
# VENV.status and exits 0, and bench/run.py measures Debian's python3-torch only -- or,
# when an earlier run left a working torch in VENV, to VENV.note, and that torch is used.
venv=$1 python=${2:-/usr/bin/python3}
status=$venv.status
rm -f "$status" "$venv.note"
if [ ! -x "$venv/bin/python" ]; then
    rm -rf "$venv"
    # the status file exists only when PyPI's torch cannot be used (bench/run.py reads it)
    if ! "$python" -m venv "$venv" >"$status.log" 2>&1; then
        { cat "$status.log"; echo "cannot create a virtual environment with $python -m venv (python3-venv missing?)"; } >"$status"
        rm -rf "$venv"
        exit 0
    fi
fi
pip="$venv/bin/python -m pip --disable-pip-version-check --timeout 20 --retries 1"
echo "bench: bringing PyPI's torch up to date in $venv (first time: a few GB of wheels)"
# pip install --upgrade keeps an installed torch without a word when the index cannot be
# reached: ask the index first
if $pip index versions torch >"$status.log" 2>&1 &&
   $pip install -q --upgrade torch numpy pyyaml >>"$status.log" 2>&1 &&
   "$venv/bin/python" -c 'import torch, numpy, yaml' >>"$status.log" 2>&1; then
    echo "bench: PyPI torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)')"
elif "$venv/bin/python" -c 'import torch, numpy, yaml' >/dev/null 2>&1; then
    echo "PyPI could not be reached to update torch ($(tail -1 "$status.log")); using the torch" \
         "$("$venv/bin/python" -c 'import torch; print(torch.__version__)') already in $venv" >"$venv.note"
    cat "$venv.note"
else
    echo "PyPI's torch is not available: pip install torch failed ($(tail -1 "$status.log"))" >"$status"
    cat "$status"
fi
exit 0
