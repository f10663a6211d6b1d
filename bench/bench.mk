# ---- `make bench` (issues 4, 10): generated trainers vs PyTorch on this machine; not part
# of `make test`, which depends on nothing below. bench/run.py builds each trainer with
# $(OPT) (and, for the AVX2 rows, -march=haswell), runs bench/step.c and bench/torch_bench.py,
# prints the table and writes bench/results/<date>-<host>.json and bench/results/latest.md.
# PyTorch: Debian's python3-torch on OpenBLAS (libopenblas0-pthread, installed here when
# missing) and PyPI's current torch (eager and torch.compile) in $(BENCH_VENV).
# Extra arguments: make bench BENCH_ARGS="--only lenet5 --reps 7"
BENCH_ARGS ?=
BENCH_VENV ?= $(B)/bench-venv
.PHONY: bench-deps
$(B)/bench:
	mkdir -p $@
$(B)/bench/fma_peak: bench/fma_peak.c | $(B)/bench
	$(CC) $(OPT) -std=c11 $< -o $@
$(B)/bench/xcore: bench/xcore.c | $(B)/bench
	$(CC) -O2 -std=c11 -pthread $< -o $@
bench-deps:
	@dpkg-query -W -f='$${Status}' libopenblas0-pthread 2>/dev/null | grep -q 'install ok installed' || \
	 { echo "bench: installing libopenblas0-pthread (the system BLAS Debian's python3-torch calls)"; \
	   SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	   DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	     -o DPkg::Lock::Timeout=600 libopenblas0-pthread || \
	   echo "bench: could not install libopenblas0-pthread; Debian's torch keeps the BLAS it has"; }
	@bench/pypi_torch.sh $(BENCH_VENV) $(PYTHON)
bench: all $(B)/bench/fma_peak $(B)/bench/xcore bench-deps
	$(PYTHON) bench/run.py --cc "$(CC)" --opt "$(OPT)" --libs "$(RT_LIBS)" --fma-peak $(B)/bench/fma_peak \
	  --xcore $(B)/bench/xcore \
	  --venv $(BENCH_VENV) $(BENCH_ARGS)
	@$(MAKE) --no-print-directory bench-mpi

# ---- specs/resnet18.yaml against torchvision's ResNet-18 (torchvision from PyPI in the
# bench's virtual environment): its state dict converted to npz, the eval forwards compared
.PHONY: resnet18-check
resnet18-check: $(B)/trainers/resnet18 bench-deps
	@$(BENCH_VENV)/bin/python -c 'import torchvision' 2>/dev/null || \
	 $(BENCH_VENV)/bin/python -m pip install -q --disable-pip-version-check torchvision pillow
	$(BENCH_VENV)/bin/python bench/resnet18_torchvision.py $(B)/trainers/resnet18 $(B)/resnet18tv

# ---- the MPI row (issue 13): 2 ranks x 1 thread against 1 process x 2 threads, the
# allreduce of VGG-16-CIFAR's gradients, the scaling model (bench/mpi_bench.py ->
# bench/results/mpi-latest.md). Skipped with a note when Open MPI is not installed.
.PHONY: bench-mpi
bench-mpi: all $(B)/libcnngen_mpi.a
	@if command -v $(MPICC) >/dev/null && command -v mpirun >/dev/null; then \
	  $(PYTHON) bench/mpi_bench.py --mpicc "$(MPICC)" --opt "$(OPT)" --libs "$(RT_LIBS)" $(BENCH_MPI_ARGS); \
	 else echo "bench-mpi: Open MPI is not installed (./deps.sh installs openmpi-bin, libopenmpi-dev); no MPI row"; fi
