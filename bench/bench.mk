# ---- `make bench` (issue 4): generated trainers vs PyTorch on this machine; not part of
# `make test`. bench/run.py builds each trainer with $(OPT), runs bench/step.c and
# bench/torch_bench.py, prints the table and writes bench/results/<date>-<host>.json and
# bench/results/latest.md. Extra arguments: make bench BENCH_ARGS="--only lenet5 --reps 7"
BENCH_ARGS ?=
$(B)/bench:
	mkdir -p $@
$(B)/bench/fma_peak: bench/fma_peak.c | $(B)/bench
	$(CC) $(OPT) -std=c11 $< -o $@
bench: all $(B)/bench/fma_peak
	$(PYTHON) bench/run.py --cc "$(CC)" --opt "$(OPT)" --libs "$(RT_LIBS)" --fma-peak $(B)/bench/fma_peak $(BENCH_ARGS)
