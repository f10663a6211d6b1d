# Fuzzing (libFuzzer + ASan + UBSan, clang), included by tests/tests.mk.
#   make fuzz                 every harness for FUZZ_SECONDS (default 60) each, one after another
#   make fuzz-spec ...        one harness (spec npy npz idx csv checkpoint)
#   make fuzz-smoke           FUZZ_SMOKE_SECONDS (default 5) each: part of make test
#   make fuzz-long-spec ...   one harness until it has used FUZZ_CPU_SECONDS (default 1800) of
#                             CPU time over its runs (tests/fuzz/cpu_budget.sh; nice it freely)
#   make fuzz-summary         the long runs so far: CPU time, runs, executions, corpus, crashes
# Seeds: tests/fuzz/<target>/ (the spec harness also reads specs/, tests/bad/, tests/nets/).
# New inputs go to build/fuzz/corpus/<target>/, crashes to build/fuzz/<target>-crash-*;
# reproduce one with build/fuzz/fuzz_<target> FILE.
FUZZ_CC            ?= clang
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 5
FUZZ_ARGS          ?=
FUZZ_TARGETS       := spec npy npz idx csv checkpoint
FUZZ_SAN   := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Wno-unused-function $(FUZZ_SAN)
FUZZ_RT     = $(patsubst runtime/%.c,$(B)/fuzz/rt/%.o,$(filter-out runtime/main.c,$(RT_SRC)))
FZ          = $(B)/fuzz
# per target: extra read-only seed directories and libFuzzer options
FUZZ_SEEDS_spec       := specs tests/bad tests/nets tests/torchnets
FUZZ_OPTS_spec        := -dict=tests/fuzz/spec.dict -max_len=4096
FUZZ_OPTS_npy         := -max_len=2048
FUZZ_OPTS_npz         := -max_len=8192
FUZZ_OPTS_idx         := -max_len=2048
FUZZ_OPTS_csv         := -max_len=2048
FUZZ_OPTS_checkpoint  := -max_len=16384 -dict=tests/fuzz/checkpoint.dict
# ASan: a failed huge malloc is an error the loaders report, not a crash
FUZZ_ENV := ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1

.PHONY: fuzz fuzz-smoke fuzz-build $(FUZZ_TARGETS:%=fuzz-%) $(FUZZ_TARGETS:%=fuzz-long-%)
FUZZ_CPU_SECONDS ?= 1800
# wall seconds an input may take: generous, as a nice-d run on a busy machine can wait
# that long for a core (a real hang still trips it)
FUZZ_LONG_TIMEOUT ?= 120
fuzz-build: $(FUZZ_TARGETS:%=$(FZ)/fuzz_%)

$(FZ) $(FZ)/rt:
	mkdir -p $@ $(FUZZ_TARGETS:%=$(FZ)/corpus/%)

# the runtime once, instrumented (coverage + sanitizers), for the loader harnesses
$(FZ)/rt/%.o: runtime/%.c runtime/*.h | $(FZ)/rt
	$(FUZZ_CC) $(subst -fsanitize=fuzzer,-fsanitize=fuzzer-no-link,$(FUZZ_CFLAGS)) -Iruntime -c $< -o $@

$(FZ)/fuzz_spec: tests/fuzz/fuzz_spec.c compiler/main.c compiler/version.h $(B)/lua_sources.c | $(FZ)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -DCNNGEN_FUZZ -DCNNGEN_MAX_NODES=20000 $(LUA_CFLAGS) -I$(B) -Icompiler tests/fuzz/fuzz_spec.c \
	  compiler/main.c $(B)/lua_sources.c $(LUA_LIBS) -lm -o $@
$(FZ)/fuzz_npy $(FZ)/fuzz_idx $(FZ)/fuzz_csv: $(FZ)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_common.h $(FUZZ_RT) | $(FZ)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Iruntime $< $(FUZZ_RT) $(RT_LIBS) -o $@
$(FZ)/fuzz_npz $(FZ)/fuzz_checkpoint: $(FZ)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_common.h $(FUZZ_RT) $(B)/tnets/t_train_bn.c | $(FZ)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Iruntime -DCNNGEN_NO_MAIN $< $(B)/tnets/t_train_bn.c $(FUZZ_RT) $(RT_LIBS) -o $@

# fuzz-<target>: run for FUZZ_SECONDS, one job (the machine is shared)
$(FUZZ_TARGETS:%=fuzz-%): fuzz-%: $(FZ)/fuzz_%
	@echo "fuzz: $* for $(FUZZ_SECONDS)s"
	@$(FUZZ_ENV) $(FZ)/fuzz_$* -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2560 \
	  -malloc_limit_mb=2048 -print_final_stats=1 -artifact_prefix=$(FZ)/$*- $(FUZZ_OPTS_$*) $(FUZZ_ARGS) \
	  $(FZ)/corpus/$* tests/fuzz/$* $(FUZZ_SEEDS_$*) > $(FZ)/$*.log 2>&1 \
	  || { tail -60 $(FZ)/$*.log; echo "fuzz: $* FAILED (log: $(FZ)/$*.log)"; exit 1; }
	@grep -aE "stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added" $(FZ)/$*.log \
	  | tr '\n' ' ' | sed 's/stat:://g; s/^/fuzz: $* /'; echo " corpus $$(ls $(FZ)/corpus/$* | wc -l) files"

fuzz: $(FUZZ_TARGETS:%=fuzz-%)

.PHONY: fuzz-summary
fuzz-summary:
	@tests/fuzz/summary.sh $(FZ)

# fuzz-long-<target>: a CPU-time budget instead of a wall-time one (issue 12: 30 CPU-minutes
# an entry point), counted over runs in build/fuzz/<target>-long.cpu (delete it to start
# over); stopping one (kill -TERM its cpu_budget.sh) keeps what it did
$(FUZZ_TARGETS:%=fuzz-long-%): fuzz-long-%: $(FZ)/fuzz_%
	@echo "fuzz: $* for $(FUZZ_CPU_SECONDS) CPU-s"
	@$(FUZZ_ENV) tests/fuzz/cpu_budget.sh $(FUZZ_CPU_SECONDS) $(FZ)/$*-long.cpu $(FZ)/$*-long.log \
	  $(FZ)/fuzz_$* -timeout=$(FUZZ_LONG_TIMEOUT) \
	  -rss_limit_mb=2560 -malloc_limit_mb=2048 -print_final_stats=1 -artifact_prefix=$(FZ)/$*- $(FUZZ_OPTS_$*) \
	  $(FUZZ_ARGS) $(FZ)/corpus/$* tests/fuzz/$* $(FUZZ_SEEDS_$*) \
	  || { tail -60 $(FZ)/$*-long.log; echo "fuzz: $* FAILED (log: $(FZ)/$*-long.log)"; exit 1; }
	@grep -aE "stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added" $(FZ)/$*-long.log \
	  | tr '\n' ' ' | sed 's/stat:://g; s/^/fuzz: $* /'; echo " corpus $$(ls $(FZ)/corpus/$* | wc -l) files"

fuzz-smoke: fuzz-build
	@for t in $(FUZZ_TARGETS); do \
	  $(MAKE) --no-print-directory fuzz-$$t FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS) || exit 1; done
	@echo "fuzz-smoke: $(words $(FUZZ_TARGETS)) harnesses ran $(FUZZ_SMOKE_SECONDS)s each without a crash"
