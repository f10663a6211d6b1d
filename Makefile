# cnngen — YAML CNN spec -> shape-specialized C trainer.
# make            build build/cnngen and build/libcnngen.a
# make test       every test (Check suites, bad specs, regen-check, check-torch)
# make demo       train LeNet-5 on Fashion-MNIST
# make trainer SPEC=path.yaml OUT=dir   generate + compile dir/<name>
# make install PREFIX=/usr/local   cnngen, libcnngen.a, include/cnngen/*.h, cnngen.pc
CC      ?= cc
CXX     ?= c++
PREFIX  ?= /usr/local
B       := build
WARN    := -Wall -Wextra -Wshadow -Wno-unused-parameter
CFLAGS  ?= -O2 -g
OPT     ?= -O3 -march=native -fopenmp
ifeq ($(SANITIZE),1)
  CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer
  LDFLAGS += -fsanitize=address,undefined
endif
ALL_CFLAGS = -std=c11 -D_POSIX_C_SOURCE=200809L $(WARN) $(CFLAGS)
# Library flags come from pkg-config when it answers, else from Debian's fixed paths.
# They are read when the Makefile is parsed, so every target that first installs the
# packages (demo, test, accuracy) runs ./deps.sh and then a fresh make
# (the *-run targets): a first `make demo` on a bare machine parses after the install.
PKG_CONFIG  ?= pkg-config
pc = $(shell $(PKG_CONFIG) $(1) 2>/dev/null || echo $(2))
LUA_CFLAGS  := $(call pc,--cflags lua5.4 yaml-0.1,-I/usr/include/lua5.4)
LUA_LIBS    := $(call pc,--libs lua5.4 yaml-0.1,-llua5.4 -lyaml)
RT_LIBS     := $(call pc,--libs libzip zlib,-lzip -lz) -lm
CHECK_LIBS  := $(call pc,--libs check,-lcheck_pic -pthread -lrt -lsubunit) -lm

LUA_SRC := $(wildcard compiler/lua/*.lua) $(wildcard compiler/lua/layers/*.lua)
RT_SRC  := $(wildcard runtime/*.c)
RT_OBJ  := $(RT_SRC:runtime/%.c=$(B)/rt/%.o)
SPECS   := $(wildcard specs/*.yaml)

.PHONY: warn-check all test check-torch regen regen-check demo trainer install clean deps bench demo-run test-run
all: $(B)/cnngen $(B)/libcnngen.a

deps:
	./deps.sh
# `make X` for a target that needs the Debian packages: install them, then re-read the
# Makefile (so the pkg-config answers above are those of the installed packages)
demo accuracy:
	./deps.sh
	@$(MAKE) --no-print-directory $@-run
# make test: the files its parts run (test nets, trainers, sanitizer and MPI builds:
# TEST_BUILD in tests/tests.mk) built first on every core, then the parts one at a time
NPROC := $(shell nproc 2>/dev/null || echo 1)
test:
	./deps.sh
	@$(MAKE) --no-print-directory -j$(NPROC) --output-sync=target test-build
	@$(MAKE) --no-print-directory -j1 test-run

$(B)/embed: compiler/embed.c | $(B)
	$(CC) $(ALL_CFLAGS) $< -o $@
$(B)/lua_sources.c: $(B)/embed $(LUA_SRC)
	$(B)/embed compiler/lua $(LUA_SRC) > $@.tmp && mv $@.tmp $@
# runtime/npy.c (npz through libzip) reads --weights / --norm for `cnngen --inference`
CNNGEN_RT := runtime/npy.c runtime/util.c
$(B)/cnngen: compiler/main.c compiler/version.h $(B)/lua_sources.c $(CNNGEN_RT) runtime/npy.h runtime/util.h | $(B)
	$(CC) $(ALL_CFLAGS) $(LUA_CFLAGS) -I$(B) -Icompiler -Iruntime compiler/main.c $(CNNGEN_RT) $(B)/lua_sources.c $(LDFLAGS) $(LUA_LIBS) $(RT_LIBS) -o $@

# the runtime library is built without OpenMP, so that a generated trainer links with
# or without -fopenmp (the threads live in the generated code's CG_PARALLEL_FOR loops)
RT_OPT := $(filter-out -fopenmp,$(OPT))
$(B)/rt/%.o: runtime/%.c runtime/*.h | $(B)/rt
	$(CC) $(ALL_CFLAGS) $(RT_OPT) -Iruntime -c $< -o $@
$(B)/libcnngen.a: $(RT_OBJ)
	rm -f $@ && ar rcs $@ $^

$(B) $(B)/rt:
	mkdir -p $@

# ---- the main job: train LeNet-5 on Fashion-MNIST (Debian's dataset-fashion-mnist)
# with early stopping; prints the test accuracy and where curve.png / best.npz are.
DEMO_OUT  ?= $(B)/demo
DEMO_ARGS ?=
demo-run: all
	$(MAKE) --no-print-directory trainer SPEC=specs/lenet5.yaml OUT=$(DEMO_OUT)
	@rm -f $(DEMO_OUT)/checkpoint.npz
	$(DEMO_OUT)/lenet5 train --out $(DEMO_OUT) $(DEMO_ARGS) | tee $(DEMO_OUT)/train.txt
	@acc=$$(sed -n 's/.*test_acc \([0-9.]*\).*/\1/p' $(DEMO_OUT)/train.txt | tail -1); \
	 echo; echo "demo: LeNet-5 test accuracy $$(awk -v a=$$acc 'BEGIN{printf "%.2f%%", 100*a}') on Fashion-MNIST's 10,000 test images"; \
	 echo "demo: best weights (loads into torch.nn.Sequential): $(DEMO_OUT)/best.npz"; \
	 if [ -f $(DEMO_OUT)/curve.png ]; then echo "demo: training/validation curve: $(DEMO_OUT)/curve.png"; \
	 else echo "demo: no curve.png (gnuplot missing); the curve's data: $(DEMO_OUT)/log.csv"; fi
	@echo "demo: export for inference (self-contained C): $(B)/cnngen specs/lenet5.yaml --inference --weights $(DEMO_OUT)/best.npz -o DIR"
	@echo "demo: make embed builds examples/embed/classify with it and classifies a test image"

# ---- examples/embed: the demo's best.npz exported with --inference, one test image classified
EMBED_OUT ?= $(B)/embed-example
FMNIST    ?= /usr/share/datasets/fashion-mnist
.PHONY: embed
embed: $(B)/cnngen
	@test -f $(DEMO_OUT)/best.npz || { echo "embed: no $(DEMO_OUT)/best.npz: run make demo first"; exit 1; }
	@mkdir -p $(EMBED_OUT)
	$(B)/cnngen specs/lenet5.yaml --inference --weights $(DEMO_OUT)/best.npz \
	  $$([ -f $(DEMO_OUT)/normalize.npz ] && echo --norm $(DEMO_OUT)/normalize.npz) -o $(EMBED_OUT)
	$(CC) -std=c99 -O2 -march=native -Wall -Wextra -I$(EMBED_OUT) examples/embed/classify.c $(EMBED_OUT)/lenet5_infer.c -lm -o $(EMBED_OUT)/classify
	zcat $(FMNIST)/t10k-images-idx3-ubyte.gz | tail -c +17 | head -c 784 > $(EMBED_OUT)/test0.u8
	$(EMBED_OUT)/classify $(EMBED_OUT)/test0.u8

# ---- accuracy bars: LeNet-5 and bnnet trained by the generated trainers and by PyTorch
# (bench/torch_train.py) with the spec's hyperparameters; long (bnnet: tens of minutes; resnet20:
# 30 epochs with augmentation, hours on 2 cores: ACC_SPECS="lenet5 bnnet" leaves it out)
# Both halves checkpoint (the trainer every 100 steps, PyTorch every epoch). ACC_RESUME=1:
# a run killed or stopped part-way continues where it was, and a half whose log already
# ends with its test accuracy is not run again; without it every run starts from scratch
# (its logs and checkpoints removed first).
ACC_OUT   ?= $(B)/accuracy
ACC_SPECS ?= lenet5 bnnet resnet20
ACC_RESUME ?=
.PHONY: accuracy accuracy-run
accuracy-run: all
	@mkdir -p $(ACC_OUT)
	@for n in $(ACC_SPECS); do \
	  c=$(ACC_OUT)/$$n.cnngen.txt; t=$(ACC_OUT)/$$n.torch.txt; \
	  [ -n "$(ACC_RESUME)" ] || rm -f $$c $$t $(ACC_OUT)/$$n/checkpoint.npz $(ACC_OUT)/$$n.torch.ckpt; \
	  if grep -q test_acc $$c 2>/dev/null; then echo "accuracy: $$c is finished, kept"; else \
	    $(MAKE) --no-print-directory trainer SPEC=specs/$$n.yaml OUT=$(ACC_OUT)/$$n >/dev/null || exit 1; \
	    if [ -f $(ACC_OUT)/$$n/checkpoint.npz ]; then r=--resume; else r=; : > $$c; fi; \
	    $(ACC_OUT)/$$n/$$n train --plain --checkpoint-every 100 $$r --out $(ACC_OUT)/$$n >> $$c || exit 1; \
	  fi; \
	  if grep -q test_acc $$t 2>/dev/null; then echo "accuracy: $$t is finished, kept"; else \
	    [ -f $(ACC_OUT)/$$n.torch.ckpt ] || : > $$t; \
	    $(PYTHON) bench/torch_train.py specs/$$n.yaml --checkpoint $(ACC_OUT)/$$n.torch.ckpt >> $$t || exit 1; \
	  fi; \
	done; \
	for n in $(ACC_SPECS); do \
	  c=$$(sed -n 's/.*test_acc \([0-9.]*\).*/\1/p' $(ACC_OUT)/$$n.cnngen.txt | tail -1); \
	  t=$$(sed -n 's/.*test_acc \([0-9.]*\).*/\1/p' $(ACC_OUT)/$$n.torch.txt | tail -1); \
	  awk -v n=$$n -v c=$$c -v t=$$t 'BEGIN{printf "accuracy: %-8s cnngen %.2f%%  pytorch %.2f%%  difference %+.2f points\n", n, 100*c, 100*t, 100*(c-t)}'; \
	done

# ---- generated code -------------------------------------------------------
# generated/ is written for one fixed target (AVX-512 register tiles), so that it does
# not depend on the machine that regenerates it
REGEN_TARGET := --target avx512
regen: $(B)/cnngen
	@for s in $(SPECS); do $(B)/cnngen $(REGEN_TARGET) $$s -o generated >/dev/null || exit 1; done
regen-check: $(B)/cnngen
	@rm -rf $(B)/regen && mkdir -p $(B)/regen
	@for s in $(SPECS); do $(B)/cnngen $(REGEN_TARGET) $$s -o $(B)/regen >/dev/null || exit 1; done
	@if diff -ru generated $(B)/regen; then echo "regen-check: generated/ is up to date"; \
	 else echo "regen-check: FAILED: generated/ differs from the generator's output (run 'make regen' and commit)"; exit 1; fi

SPEC ?=
OUT  ?= .
# MPI=1: the trainer is built with mpicc and linked with the runtime's MPI part
# (runtime/mpi.c -> build/libcnngen_mpi.a; -u pulls its cg_comm_world in before the
# single-process one of libcnngen.a). Without MPI=1 nothing is built or linked with MPI.
MPI   ?=
MPICC ?= mpicc
$(B)/mpi:
	mkdir -p $@
$(B)/mpi/mpi.o: runtime/mpi.c runtime/comm.h | $(B)/mpi
	$(MPICC) $(ALL_CFLAGS) $(RT_OPT) -DCNNGEN_MPI -Iruntime -c $< -o $@
$(B)/libcnngen_mpi.a: $(B)/mpi/mpi.o
	rm -f $@ && ar rcs $@ $^
ifeq ($(MPI),1)
TRAINER_CC   := $(MPICC)
TRAINER_DEPS := $(B)/libcnngen_mpi.a
TRAINER_MPI  := -Wl,-u,cg_comm_world $(B)/libcnngen_mpi.a
else
TRAINER_CC   := $(CC)
endif
# schedules timed on this machine (make tune); used by make trainer when present
WISDOM ?= $(B)/wisdom.tsv
WISDOM_OPT = $(if $(wildcard $(WISDOM)),--wisdom $(WISDOM))
trainer: $(B)/cnngen $(B)/libcnngen.a $(TRAINER_DEPS)
	@test -n "$(SPEC)" || { echo "usage: make trainer SPEC=path/to/spec.yaml OUT=dir [MPI=1] [TEAM=T]"; exit 2; }
	@mkdir -p $(OUT)
	@c=$$($(B)/cnngen $(WISDOM_OPT) $(if $(TEAM),--team $(TEAM),$(if $(filter 1,$(MPI)),--team 1)) $(SPEC) -o $(OUT)) && \
	 echo "$(TRAINER_CC) $(OPT) -std=c11 -Iruntime $$c $(TRAINER_MPI) $(B)/libcnngen.a -o $${c%.c}" && \
	 $(TRAINER_CC) $(OPT) $(WARN) -std=c11 -Iruntime $$c $(TRAINER_MPI) $(B)/libcnngen.a $(RT_LIBS) $(LDFLAGS) -o $${c%.c}

# ---- time every legal schedule of SPEC's layers on this machine, keep the fastest
# in $(WISDOM) (bench/tune.py); make trainer then uses them
.PHONY: tune
tune: all
	@test -n "$(SPEC)" || { echo "usage: make tune SPEC=path/to/spec.yaml [WISDOM=file]"; exit 2; }
	$(PYTHON) bench/tune.py $(SPEC) --wisdom $(WISDOM) --cc "$(CC)" --opt "$(OPT)" --libs "$(RT_LIBS)"
	@# then a team of nproc replicas (cnngen --team): its layers at batch / T on one thread,
	@# and the whole step against the above; the wisdom records which is faster here
	@# (--decide-team records team=1, with the reason, when there can be no team)
	@T=$$(nproc); if [ $$T -ge 2 ] && $(B)/cnngen --check --team $$T $(SPEC) 2>/dev/null; then \
	  $(PYTHON) bench/tune.py $(SPEC) --wisdom $(WISDOM) --cc "$(CC)" --opt "$(OPT)" --libs "$(RT_LIBS)" --team $$T --threads 1 \
	  || exit 1; fi; \
	$(PYTHON) bench/tune.py $(SPEC) --wisdom $(WISDOM) --cc "$(CC)" --opt "$(OPT)" --libs "$(RT_LIBS)" --decide-team $$T

include tests/tests.mk
include tests/kernels/kernels.mk

# every committed generated file compiles cleanly with both compilers; every generated
# header and runtime header compiles as C++ too (extern "C", no zero-size arrays)
# test nets checked for every target, with their wisdom file when they have one: the
# GEMM-form Winograd dW, a dx whose warning clang alone gave (gcc was silent), and
# Winograd on channels-last copies (cv+wino, wv+wino)
WARN_NETS := tests/nets/t_wino_g_ln.yaml tests/nets/t_c2_dilrows_ln.yaml tests/nets/t_cvw_loop.yaml tests/torchnets/t_cvw_big.yaml
# each generated file is compiled generic, for this CPU and for AVX-512 (x86-64-v4), so
# the AVX-512 branches are checked on AVX2 machines too
WARN_MARCH := "" -march=native -march=x86-64-v4
warn-check: $(B)/cnngen
	@for f in generated/*.c; do \
	  for cc in gcc clang; do for m in $(WARN_MARCH); do \
	    $$cc -std=c11 $$m -Wall -Wextra -Werror -Iruntime -Igenerated -DCNNGEN_NO_MAIN -fsyntax-only $$f || exit 1; done; done; \
	done; echo "warn-check: generated/*.c compile with gcc and clang at -Wall -Wextra -Werror (generic, -march=native and AVX-512's -march=x86-64-v4, whatever the CPU)"
	@rm -rf $(B)/warn-avx2 && mkdir -p $(B)/warn-avx2 && for s in $(SPECS); do \
	  c=$$($(B)/cnngen --target avx2 $$s -o $(B)/warn-avx2) || exit 1; \
	  for cc in gcc clang; do $$cc -std=c11 -mavx2 -mfma -Wall -Wextra -Werror -Iruntime -DCNNGEN_NO_MAIN -fsyntax-only $$c || exit 1; done; \
	done; echo "warn-check: every spec generated for --target avx2 compiles with gcc and clang at -Wall -Wextra -Werror"
	@for n in $(WARN_NETS); do w=$${n%.yaml}.wisdom; [ -f $$w ] && w="--wisdom $$w" || w=; \
	  for t in avx512 avx2 generic; do \
	  c=$$($(B)/cnngen --target $$t $$w $$n -o $(B)/warn-nets/$$t) || exit 1; \
	  for cc in gcc clang; do for m in $(WARN_MARCH); do \
	    $$cc -std=c11 $$m -Wall -Wextra -Werror -Iruntime -DCNNGEN_NO_MAIN -fsyntax-only $$c || exit 1; done; done; \
	done; done; echo "warn-check: $(WARN_NETS) (with their wisdom) compile with gcc and clang at -Wall -Wextra -Werror for every target"
	@for f in $(filter-out runtime/mpi.c,$(RT_SRC)); do for cc in gcc clang; do for m in "" -march=x86-64-v3 -march=x86-64-v4; do \
	  $$cc -std=c11 -D_POSIX_C_SOURCE=200809L $$m $(WARN) -Werror -Iruntime -fsyntax-only $$f || exit 1; \
	done; done; done; echo "warn-check: runtime/*.c compile with gcc and clang at -Wall -Wextra -Werror for generic, AVX2 (x86-64-v3) and AVX-512 (x86-64-v4) kernels"
	@for h in generated/*.h runtime/*.h; do for cxx in g++ clang++; do \
	  echo "#include \"$$(basename $$h)\"" | $$cxx -x c++ -std=c++11 -Wall -Wextra -pedantic -Werror -Iruntime -Igenerated -fsyntax-only - || exit 1; \
	done; done; echo "warn-check: generated/*.h and runtime/*.h compile as C++11 with g++ and clang++ at -Wall -Wextra -pedantic -Werror"

# MPI=1 also installs libcnngen_mpi.a and cnngen-mpi.pc:
#   mpicc -O3 -march=native net.c $(pkg-config --cflags --libs cnngen-mpi) -o net
install: all $(TRAINER_DEPS)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include/cnngen
	install -m 755 $(B)/cnngen $(DESTDIR)$(PREFIX)/bin/cnngen
	install -m 644 $(B)/libcnngen.a $(DESTDIR)$(PREFIX)/lib/libcnngen.a
	install -m 644 runtime/*.h $(DESTDIR)$(PREFIX)/include/cnngen/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|'"$$(sed -n 's/.*"\(.*\)".*/\1/p' compiler/version.h)"'|' \
	  runtime/cnngen.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/cnngen.pc
	@if [ "$(MPI)" = 1 ]; then \
	  install -m 644 $(B)/libcnngen_mpi.a $(DESTDIR)$(PREFIX)/lib/libcnngen_mpi.a && \
	  sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|'"$$(sed -n 's/.*"\(.*\)".*/\1/p' compiler/version.h)"'|' \
	    runtime/cnngen-mpi.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/cnngen-mpi.pc && \
	  echo "installed the MPI part; build with: mpicc -O3 -march=native net.c \$$(pkg-config --cflags --libs cnngen-mpi) -o net"; fi
	@echo "installed; build a trainer with: cc -O3 -march=native net.c \$$(pkg-config --cflags --libs cnngen) -o net"

clean:
	rm -rf $(B)
include bench/bench.mk
