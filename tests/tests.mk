# Test rules, included by the top-level Makefile.
#   make test         everything below, in order
#   make check-unit   the Check suites (tests/check_*.c) linked with the test nets
#   make check-torch  every spec in specs/ against PyTorch (tests/torch_ref.py)
#   make regen-check  generated/ equals the generator's output
#   make fuzz-diff    SEED=S N=K random specs, generated C against PyTorch (tests/random_specs.py)
PYTHON    ?= /usr/bin/python3
TEST_NETS := $(wildcard tests/nets/*.yaml)
TNET_C    := $(TEST_NETS:tests/nets/%.yaml=$(B)/tnets/%.c)
TNET_O    := $(TNET_C:.c=.o)
CHECK_SRC := $(wildcard tests/check_*.c)
BIG_SPECS := specs/vgg16.yaml specs/resnet18.yaml
TRAINERS  := $(patsubst specs/%.yaml,$(B)/trainers/%,$(filter-out $(BIG_SPECS),$(SPECS)))
# graph test nets checked against PyTorch in training and inference mode besides specs/
GRAPH_NETS := $(wildcard tests/nets/t_g_*.yaml)
# teams (cnngen --team 2): their trainers' check runs the team's code
TEAM_NETS  := $(wildcard tests/nets/t_team_*.yaml)
# a team's code is OpenMP's: -fopenmp unless OPT already has it
TEAM_OMP   := $(if $(findstring -fopenmp,$(OPT)),,-fopenmp)

.PHONY: test check-unit check-torch
TEST_PARTS := build-nopkgconfig embed-check check-unit check-kernels regen-check warn-check sanitize-check fuzz-smoke emit-check golden-check check-torch schedules-check check-threads infer-check recipes-check mpi-check diff-check
test-run: all $(TEST_PARTS)
	@echo "make test: every part passed ($(TEST_PARTS))"
	@echo "test: $(words $(TEST_PARTS)) passed, 0 failed"

# the build does not depend on pkg-config's answers: with PKG_CONFIG=false (every
# query fails) a clean build dir still gives the compiler, the runtime and a trainer
# that runs (the fallbacks are Debian's fixed paths)
.PHONY: build-nopkgconfig
build-nopkgconfig:
	@rm -rf $(B)/nopc
	@$(MAKE) --no-print-directory -s B=$(B)/nopc PKG_CONFIG=false all >/dev/null
	@$(MAKE) --no-print-directory -s B=$(B)/nopc PKG_CONFIG=false trainer SPEC=specs/lecture_conv1d.yaml OUT=$(B)/nopc/t >/dev/null
	@$(B)/nopc/t/lecture_conv1d --help >/dev/null
	@echo "build-nopkgconfig: compiler, runtime and a trainer built and run with PKG_CONFIG=false"

# the embedding API as a user gets it: `make install` into a scratch prefix, then the C
# and the C++ program of examples/train_embed/ built with that prefix's pkg-config flags
# only (no -Iruntime), linked with a trainer compiled -DCNNGEN_NO_MAIN, and run
EMBED_PREFIX := $(abspath $(B)/embedding/prefix)
.PHONY: embed-check
embed-check: all
	@rm -rf $(B)/embedding && mkdir -p $(B)/embedding/run
	@$(MAKE) --no-print-directory -s install PREFIX=$(EMBED_PREFIX) >/dev/null
	@set -e; export PKG_CONFIG_PATH=$(EMBED_PREFIX)/lib/pkgconfig; \
	 cf="$$($(PKG_CONFIG) --cflags cnngen)"; lf="$$($(PKG_CONFIG) --libs cnngen)"; e=examples/train_embed; \
	 $(EMBED_PREFIX)/bin/cnngen $$e/tiny.yaml -o $(B)/embedding/gen >/dev/null; \
	 $(CC) -std=c11 -pedantic $(WARN) -Werror -O2 $$cf -DCNNGEN_NO_MAIN -c $(B)/embedding/gen/tiny.c -o $(B)/embedding/tiny.o; \
	 $(CC) -std=c11 -pedantic $(WARN) -Werror -O2 $$cf -I$(B)/embedding/gen $$e/train_embed.c $(B)/embedding/tiny.o $$lf -o $(B)/embedding/train_embed; \
	 $(CXX) -std=c++11 -pedantic -Wall -Wextra -Werror -O2 $$cf -I$(B)/embedding/gen $$e/train_embed.cpp $(B)/embedding/tiny.o $$lf -o $(B)/embedding/train_embed_cpp; \
	 OMP_NUM_THREADS=1 $(B)/embedding/train_embed $(B)/embedding/run; OMP_NUM_THREADS=1 $(B)/embedding/train_embed_cpp $(B)/embedding/run; \
	 test -f $(B)/embedding/run/final.npz
	@echo "embed-check: installed headers and cnngen.pc build the C and C++ examples of examples/train_embed; both train"

# test nets: generated, compiled without main, registered in one table
# (t_team_* with --team: the team entry points, tests/check_team.c; a net with a
# tests/nets/NAME.wisdom with the tuner-only schedules it forces, so that check_all's
# naive reference and finite differences see them too)
$(B)/tnets/%.c: tests/nets/%.yaml $(B)/cnngen $(wildcard tests/nets/*.wisdom) | $(B)/tnets
	$(B)/cnngen $< $(if $(filter t_team_%,$*),--team 2) $(if $(wildcard tests/nets/$*.wisdom),--wisdom tests/nets/$*.wisdom) \
	  -o $(B)/tnets >/dev/null
$(B)/tnets/%.o: $(B)/tnets/%.c
	$(CC) -std=c11 $(WARN) -Werror $(CFLAGS) -Iruntime -DCNNGEN_NO_MAIN -c $< -o $@
# a team net's replicas are threads of its OpenMP code
$(B)/tnets/t_team_%.o: $(B)/tnets/t_team_%.c
	$(CC) -std=c11 $(WARN) -Werror $(CFLAGS) -fopenmp -Iruntime -DCNNGEN_NO_MAIN -c $< -o $@
$(B)/tnets/registry.c: $(TEST_NETS) | $(B)/tnets
	@{ echo '#include "cnngen.h"'; \
	   for f in $(notdir $(TEST_NETS:.yaml=)); do echo "extern const cg_net $${f}_net;"; done; \
	   echo 'const cg_net *const cg_test_nets[] = {'; \
	   for f in $(notdir $(TEST_NETS:.yaml=)); do echo "    &$${f}_net,"; done; \
	   echo '    0};'; } > $@
$(B)/tnets:
	mkdir -p $@

$(B)/check_all: $(CHECK_SRC) tests/test_nets.h $(TNET_O) $(B)/tnets/registry.c $(B)/libcnngen.a $(B)/cnngen
	$(CC) $(ALL_CFLAGS) -Iruntime -Itests -DCNNGEN_BIN='"$(B)/cnngen"' $(CHECK_SRC) $(TNET_O) $(B)/tnets/registry.c \
	  $(B)/libcnngen.a $(RT_LIBS) $(CHECK_LIBS) $(LDFLAGS) -fopenmp -o $@

check-unit: $(B)/check_all
	$(B)/check_all

# every shipped spec (VGG-16 and ResNet-18 at 224x224 too: compiled at -O1 to keep CI short)
$(B)/trainers/%: specs/%.yaml $(B)/cnngen $(B)/libcnngen.a
	@mkdir -p $(B)/trainers
	$(B)/cnngen $< -o $(B)/trainers >/dev/null
	$(CC) $(OPT) $(WARN) -Werror -std=c11 -Iruntime $@.c $(B)/libcnngen.a $(RT_LIBS) $(LDFLAGS) -o $@
$(BIG_SPECS:specs/%.yaml=$(B)/trainers/%): $(B)/trainers/%: specs/%.yaml $(B)/cnngen $(B)/libcnngen.a
	@mkdir -p $(B)/trainers
	$(B)/cnngen $< -o $(B)/trainers >/dev/null
	$(CC) -O1 -march=native $(WARN) -Werror -std=c11 -Iruntime $@.c $(B)/libcnngen.a $(RT_LIBS) $(LDFLAGS) -o $@
$(B)/gtrainers/%: tests/nets/%.yaml $(B)/cnngen $(B)/libcnngen.a
	@mkdir -p $(B)/gtrainers
	$(B)/cnngen $< -o $(B)/gtrainers >/dev/null
	$(CC) $(OPT) $(WARN) -Werror -std=c11 -Iruntime $@.c $(B)/libcnngen.a $(RT_LIBS) $(LDFLAGS) -o $@
# a team's trainer: the team's check from 2 samples (a replica of one) to the team's
# whole batch (train.batch: beyond one replica's)
$(B)/teamtrainers/%: tests/nets/%.yaml $(B)/cnngen $(B)/libcnngen.a
	@mkdir -p $(B)/teamtrainers
	$(B)/cnngen $< --team 2 -o $(B)/teamtrainers >/dev/null
	$(CC) $(OPT) $(TEAM_OMP) $(WARN) -Werror -std=c11 -Iruntime $@.c $(B)/libcnngen.a $(RT_LIBS) $(LDFLAGS) -o $@
# nets for check-torch only: kinks (relu) past layer 0, where check-unit's finite
# differences are not defined (tests/check_layers.c), e.g. relu fused after add; nets
# too large for them (t_cvw_big: many channels)
TORCH_NETS := $(wildcard tests/torchnets/*.yaml)
$(B)/ttrainers/%: tests/torchnets/%.yaml $(B)/cnngen $(B)/libcnngen.a
	@mkdir -p $(B)/ttrainers
	$(B)/cnngen $< -o $(B)/ttrainers >/dev/null
	$(CC) $(OPT) $(WARN) -Werror -std=c11 -Iruntime $@.c $(B)/libcnngen.a $(RT_LIBS) $(LDFLAGS) -o $@

# every spec in training mode (forward, loss, every gradient) and inference mode
# (model.eval(): running statistics, no dropout; output and loss); the graph test nets too.
# ResNet-18 (224x224) is compared in inference mode only: at batch 2 or 3 some of its
# 75,000 last-block ReLU inputs lie within float32 rounding of zero, and one flipping
# sign moves a gradient past the limit while PyTorch-float32 happens not to flip (seed 0
# fails on layer4_1_conv2, seed 7 passes). ResNet-20 has the same layer kinds and is
# compared in training mode.
TORCH_EVAL_ONLY := specs/resnet18.yaml
check-torch: $(TRAINERS) $(BIG_SPECS:specs/%.yaml=$(B)/trainers/%) $(GRAPH_NETS:tests/nets/%.yaml=$(B)/gtrainers/%) \
  $(TORCH_NETS:tests/torchnets/%.yaml=$(B)/ttrainers/%) $(TEAM_NETS:tests/nets/%.yaml=$(B)/teamtrainers/%)
	@# a job a spec, NPROC at a time (tests/parallel.py: each one's output whole, in order)
	@for s in $(SPECS) $(GRAPH_NETS) $(TORCH_NETS) $(TEAM_NETS); do echo $$s; done | OMP_WAIT_POLICY=passive \
	  $(PYTHON) tests/parallel.py -j $(NPROC) --name "check-torch: specs (training and --eval mode)" \
	  -- tests/check_torch_spec.sh $(B) $(PYTHON) "$(TORCH_EVAL_ONLY)"

# generated code + runtime under AddressSanitizer and UndefinedBehaviorSanitizer,
# checked against PyTorch on specs that cover every layer kind
SAN_SPECS := mixed1d mixed2d lecture_k3s2p1_odd lecture_full lecture_conv1d res_block
# (lenet5 and bnnet are left out: their batch-innermost code takes ASan+UBSan tens of
# minutes to compile; mixed1d covers the batch-innermost emitters)
SAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
# link a generated trainer $@.c with the runtime's sources, instrumented
SAN_LINK = $(CC) -std=c11 -D_POSIX_C_SOURCE=200809L $(WARN) $(SAN_FLAGS) -Iruntime $@.c $(RT_SRC) $(RT_LIBS) -o $@
.PHONY: sanitize-check
$(B)/san/%: specs/%.yaml $(B)/cnngen $(RT_SRC) runtime/*.h
	@mkdir -p $(B)/san
	$(B)/cnngen $< -o $(B)/san >/dev/null
	$(SAN_LINK)
# the tuner-only schedules (channel blocks inside the positions, the large Winograd dW,
# a mix of passes)
# through a wisdom file: the generated code must name them
$(B)/san/t_cbi_ln: tests/nets/t_cbi_ln.yaml tests/nets/t_cbi_ln.wisdom $(B)/cnngen $(RT_SRC) runtime/*.h
	@mkdir -p $(B)/san
	$(B)/cnngen $< --wisdom tests/nets/t_cbi_ln.wisdom -o $(B)/san >/dev/null
	@grep -q "schedule lanes+cbi|lanes|lanes: .*(from wisdom)" $@.c && grep -q "schedule lanes+cbi+wino+dwl: .*(from wisdom)" $@.c || \
	  { echo "sanitize-check: tests/nets/t_cbi_ln.wisdom did not take effect in $@.c"; exit 1; }
	$(SAN_LINK)
# Winograd dW's GEMM form (lanes+wino4+dw4g, lanes+wino+dwg; tuner-only)
$(B)/san/t_wino_g_ln: tests/nets/t_wino_g_ln.yaml tests/nets/t_wino_g_ln.wisdom $(B)/cnngen $(RT_SRC) runtime/*.h
	@mkdir -p $(B)/san
	$(B)/cnngen $< --wisdom tests/nets/t_wino_g_ln.wisdom -o $(B)/san >/dev/null
	@grep -q "schedule lanes+wino4+dw4g: .*(from wisdom)" $@.c && grep -q "schedule lanes+wino+dwg: .*(from wisdom)" $@.c || \
	  { echo "sanitize-check: tests/nets/t_wino_g_ln.wisdom did not take effect in $@.c"; exit 1; }
	$(SAN_LINK)
# Winograd on channels-last copies (wv+wino, cv+wino; tuner-only, conv_cvw.lua)
$(B)/san/t_cvw_loop: tests/nets/t_cvw_loop.yaml tests/nets/t_cvw_loop.wisdom $(B)/cnngen $(RT_SRC) runtime/*.h
	@mkdir -p $(B)/san
	$(B)/cnngen $< --wisdom tests/nets/t_cvw_loop.wisdom -o $(B)/san >/dev/null
	@grep -q "schedule wv+wino: .*(from wisdom)" $@.c && grep -q "schedule cv+wino+dw: .*(from wisdom)" $@.c || \
	  { echo "sanitize-check: tests/nets/t_cvw_loop.wisdom did not take effect in $@.c"; exit 1; }
	$(SAN_LINK) -fopenmp
# the same with many channels: the blocked product (conv_cvw.lua's product_blocked)
$(B)/san/t_cvw_big: tests/torchnets/t_cvw_big.yaml tests/torchnets/t_cvw_big.wisdom $(B)/cnngen $(RT_SRC) runtime/*.h
	@mkdir -p $(B)/san
	$(B)/cnngen $< --wisdom tests/torchnets/t_cvw_big.wisdom -o $(B)/san >/dev/null
	@grep -q "schedule cv+wino+dw: .*(from wisdom)" $@.c && grep -q "schedule cv+wino: .*(from wisdom)" $@.c && \
	  grep -q "blocked product" $@.c && grep -q "blocked dW" $@.c || { echo "sanitize-check: t_cvw_big is not the blocked product in $@.c"; exit 1; }
	$(SAN_LINK) -fopenmp
# a team (cnngen --team 2: the replicas' threads, batch norm's and dropout's team code),
# its check from replicas of one sample to the team's batch
$(B)/san/t_team_drop_ln: tests/nets/t_team_drop_ln.yaml $(B)/cnngen $(RT_SRC) runtime/*.h
	@mkdir -p $(B)/san
	$(B)/cnngen $< --team 2 -o $(B)/san >/dev/null
	$(SAN_LINK) -fopenmp
sanitize-check: $(SAN_SPECS:%=$(B)/san/%) $(B)/san/t_cbi_ln $(B)/san/t_wino_g_ln $(B)/san/t_cvw_loop $(B)/san/t_cvw_big \
  $(B)/san/t_team_drop_ln
	@for n in $(SAN_SPECS); do \
	  ASAN_OPTIONS=detect_leaks=1 $(PYTHON) tests/torch_ref.py check specs/$$n.yaml $(B)/san/$$n $(B)/sanwork || exit 1; \
	done; ASAN_OPTIONS=detect_leaks=1 $(PYTHON) tests/torch_ref.py check tests/nets/t_cbi_ln.yaml $(B)/san/t_cbi_ln $(B)/sanwork || exit 1; \
	ASAN_OPTIONS=detect_leaks=1 $(PYTHON) tests/torch_ref.py check tests/nets/t_wino_g_ln.yaml $(B)/san/t_wino_g_ln \
	  $(B)/sanwork --batch 3 17 || exit 1; \
	ASAN_OPTIONS=detect_leaks=1 $(PYTHON) tests/torch_ref.py check tests/nets/t_cvw_loop.yaml $(B)/san/t_cvw_loop \
	  $(B)/sanwork --batch 1 3 || exit 1; \
	ASAN_OPTIONS=detect_leaks=1 $(PYTHON) tests/torch_ref.py check tests/torchnets/t_cvw_big.yaml $(B)/san/t_cvw_big \
	  $(B)/sanwork --batch 1 2 || exit 1; \
	ASAN_OPTIONS=detect_leaks=1 $(PYTHON) tests/torch_ref.py check tests/nets/t_team_drop_ln.yaml $(B)/san/t_team_drop_ln \
	  $(B)/sanwork --batch 2 3 17 --train-batch || exit 1; \
	echo "sanitize-check: $(words $(SAN_SPECS)) trainers, t_cbi_ln's, t_wino_g_ln's, t_cvw_loop's and t_cvw_big's forced schedules and a team's trainer clean under ASan+UBSan and equal to PyTorch"

# every legal schedule (form and register tile) of every layer of these specs, forced
# one at a time through a wisdom file, against PyTorch (tests/schedules_check.py)
SCHED_SPECS := specs/lecture_conv1d.yaml specs/lecture_full.yaml specs/lecture_k3d2.yaml specs/lecture_k3s2p1_odd.yaml \
  specs/mixed2d.yaml specs/mixed1d.yaml bench/specs/lenet5_b1.yaml tests/nets/t_c2_groups_ln.yaml \
  tests/nets/t_c2_axes_ln.yaml tests/nets/t_c2_bigpad_loop_ln.yaml tests/nets/t_c2_full_dil_ln.yaml tests/nets/t_c2_dw_loop_ln.yaml \
  tests/nets/t_c2_notap.yaml tests/nets/t_c2_notap_ln.yaml tests/nets/t_c2_notap_loop.yaml \
  tests/nets/t_c1_notap_nobias.yaml tests/nets/t_c1_notap_nobias_ln.yaml tests/nets/t_c1_padonly_ln.yaml tests/nets/t_c2_dilrows_ln.yaml tests/nets/t_dense_gemm_ln.yaml tests/nets/t_dense_gemm_loop.yaml \
  tests/nets/t_fuse_dense_kb_ln.yaml tests/nets/t_c2_wvband_loop.yaml tests/nets/t_fuse_bwd.yaml tests/nets/t_fuse_bwd_loop.yaml \
  tests/nets/t_fuse_bwd_ln.yaml tests/nets/t_fuse_bwd_kb_ln.yaml \
  tests/nets/t_fuse_bwd_conv_ln.yaml tests/nets/t_wino_ln.yaml tests/nets/t_wino_rs1_ln.yaml tests/nets/t_cbi_ln.yaml \
  tests/nets/t_wino_g_ln.yaml tests/nets/t_cvw_loop.yaml tests/torchnets/t_cvw_big.yaml tests/nets/t_dense_rows_loop.yaml tests/nets/t_cvs_loop.yaml
.PHONY: schedules-check
schedules-check: $(B)/cnngen $(B)/libcnngen.a
	$(PYTHON) tests/schedules_check.py $(B) $(CC) $(SCHED_SPECS)

# the training recipes (train.optimizer adam/adamw/sgd, warmup, augment crop/flip) against
# PyTorch trained the same way for a few steps from the same weights, the augmentation's
# draws recomputed in Python and applied with torch's pad/slice/flip (tests/recipes_check.py)
.PHONY: recipes-check
recipes-check: $(B)/cnngen $(B)/libcnngen.a
	$(PYTHON) tests/recipes_check.py $(B) $(CC)

include tests/fuzz/fuzz.mk
include tests/golden/golden.mk

# 1 and 2 threads give the same bits: parallel loops split disjoint outputs and every
# reduction (dW tiles, batch-norm statistics, the loss) runs in a fixed order whatever
# the thread count. One training-mode forward/backward at the full batch, per spec.
THREAD_SPECS := specs/lenet5.yaml specs/bnnet.yaml specs/vgg16_cifar.yaml bench/specs/conv64.yaml bench/specs/conv3_224.yaml \
  tests/nets/t_g_res_ln.yaml bench/specs/resnet20_b64.yaml tests/nets/t_pool_par_loop.yaml tests/nets/t_cvs_loop.yaml
.PHONY: check-threads
check-threads: $(B)/cnngen $(B)/libcnngen.a
	@for s in $(THREAD_SPECS); do n=$$(basename $$s .yaml); d=$(B)/threads/$$n; mkdir -p $$d; \
	  $(B)/cnngen $$s -o $$d >/dev/null || exit 1; \
	  if [ ! -x $$d/$$n ] || [ $$d/$$n.c -nt $$d/$$n ] || [ $(B)/libcnngen.a -nt $$d/$$n ]; then \
	    $(CC) $(OPT) -std=c11 -Iruntime $$d/$$n.c $(B)/libcnngen.a $(RT_LIBS) $(LDFLAGS) -o $$d/$$n || exit 1; fi; \
	  b=$$(sed -n 's/^#define [A-Z0-9_]*_BATCH \([0-9]*\).*/\1/p' $$d/$$n.h); \
	  $(PYTHON) tests/torch_ref.py gen $$s $$d --batch $$b >/dev/null || exit 1; w=$$d/$$n-b$$b; \
	  for t in 1 2; do OMP_NUM_THREADS=$$t $$d/$$n check --weights $$w/W.npz --input $$w/X.npy \
	    --target $$w/T.npy --out $$w/R$$t.npz >/dev/null || exit 1; done; \
	  $(PYTHON) tests/torch_ref.py compare $$w/R1.npz $$w/R2.npz --tol 0 >/dev/null \
	    || { echo "check-threads: $$n batch $$b: 1 and 2 threads differ"; exit 1; }; \
	  echo "check-threads: $$n batch $$b: 1 and 2 threads bitwise equal"; done

# cnngen --inference: every layer kind, batch norm folded and not, baked-in weights and
# NAME_init, batch 1 and batch-innermost, gcc/clang/C++, against PyTorch's model.eval()
# and the trainer's predict (tests/infer/run.sh)
INFER_SPECS := specs/lenet5.yaml:norm specs/bnnet.yaml specs/mixed1d.yaml:norm specs/mixed2d.yaml \
  specs/res_block.yaml:norm tests/nets/t_g_res_loop.yaml tests/nets/t_g_res_ln.yaml tests/nets/t_g_cat1d.yaml:norm \
  tests/infer/bn_any.yaml:norm tests/nets/t_bn_f.yaml:norm tests/nets/t_bn_cl.yaml tests/nets/t_bn_chw.yaml \
  tests/nets/t_c2_dw.yaml tests/nets/t_c1_groups_loop.yaml tests/nets/t_c2_wv_loop.yaml \
  tests/nets/t_flatten_last.yaml tests/nets/t_act_smooth_ln.yaml tests/nets/t_mp2_k3s2p1.yaml \
  tests/nets/t_ap2_k3s2p1.yaml tests/nets/t_fuse_wv_loop.yaml tests/nets/t_fuse_bn_ln.yaml:norm \
  tests/infer/cl_forms.yaml:norm
.PHONY: infer-check
infer-check: $(B)/cnngen $(B)/libcnngen.a $(B)/trainers/lenet5 $(B)/trainers/bnnet $(B)/trainers/mixed1d $(B)/trainers/mixed2d
	@tests/infer/run.sh $(B) $(PYTHON) $(INFER_SPECS)

# data-parallel training over MPI (issue 13): LeNet-5 and bnnet built with MPI=1, 10 steps
# under `mpirun --oversubscribe -np 2` against one process and a PyTorch replay with
# per-rank batch norm; determinism, --resume under mpirun, a killed rank (tests/mpi_check.py)
MPI_CHECK_NETS := lenet5 bnnet
$(B)/mpi-check/%: specs/%.yaml $(B)/cnngen $(B)/libcnngen.a $(B)/libcnngen_mpi.a
	@mkdir -p $(B)/mpi-check
	$(B)/cnngen $< -o $(B)/mpi-check >/dev/null
	$(MPICC) $(OPT) $(WARN) -Werror -std=c11 -Iruntime $@.c -Wl,-u,cg_comm_world $(B)/libcnngen_mpi.a $(B)/libcnngen.a $(RT_LIBS) $(LDFLAGS) -o $@
# and LeNet-5 as a team of 2 in each rank (cnngen --team 2: replicas of 16 samples)
$(B)/mpi-check/team/lenet5: specs/lenet5.yaml $(B)/cnngen $(B)/libcnngen.a $(B)/libcnngen_mpi.a
	@mkdir -p $(B)/mpi-check/team
	$(B)/cnngen $< --team 2 -o $(B)/mpi-check/team >/dev/null
	$(MPICC) $(OPT) $(TEAM_OMP) $(WARN) -Werror -std=c11 -Iruntime $@.c -Wl,-u,cg_comm_world $(B)/libcnngen_mpi.a $(B)/libcnngen.a $(RT_LIBS) $(LDFLAGS) -o $@
# what make test builds before its parts run, on every core (make's own dependencies
# order it; the parts then run one at a time, their compilers' work already done)
TEST_BUILD = $(B)/check_all $(TRAINERS) $(BIG_SPECS:specs/%.yaml=$(B)/trainers/%) \
  $(GRAPH_NETS:tests/nets/%.yaml=$(B)/gtrainers/%) $(TORCH_NETS:tests/torchnets/%.yaml=$(B)/ttrainers/%) \
  $(TEAM_NETS:tests/nets/%.yaml=$(B)/teamtrainers/%) $(SAN_SPECS:%=$(B)/san/%) $(B)/san/t_cbi_ln \
  $(B)/san/t_wino_g_ln $(B)/san/t_cvw_loop $(B)/san/t_cvw_big $(B)/san/t_team_drop_ln $(MPI_CHECK_NETS:%=$(B)/mpi-check/%) $(B)/mpi-check/team/lenet5 \
  $(FUZZ_TARGETS:%=$(FZ)/fuzz_%)
.PHONY: test-build
test-build: all $(TEST_BUILD)
.PHONY: mpi-check
mpi-check: $(MPI_CHECK_NETS:%=$(B)/mpi-check/%) $(B)/mpi-check/team/lenet5
	$(PYTHON) tests/mpi_check.py $(B)/mpi-check

# differential tester (tests/random_specs.py): random valid specs -- every layer kind,
# graph specs (residual, projection, concat, global pooling, dropout) for half the seeds,
# 1-D/2-D/flat, odd sizes, padding/stride/dilation/groups, batch norm, both losses,
# batches below and from 16, targets avx512/avx2/generic, random legal schedules, teams
# (cnngen --team 2: half the seeds on 2 threads at a batch from 16, that batch a replica's) --
# generated, compiled as trainers are (-O3 -march=native -Werror) and compared with
# PyTorch in float64. `make fuzz-diff SEED=1 N=100` runs more; a failure is written to
# $(B)/fuzz-diff/fail-SEED.yaml with the command that reproduces it.
# diff-check: a fixed seed set plus the nets the tester found bugs with (each at every
# target, compiled at the trainer's flags: the relu one is a miscompilation at -O3 only)
# 45 seeds: a process a core (random_specs.py run --jobs), 76 s on 2 cores of Zen 3 (139 s one at a time)
SEED ?= 1
N    ?= 100
DIFF_SEED := 1
DIFF_N    := 45
DIFF_NETS := tests/nets/t_act_relu14.yaml tests/nets/t_mp2_k1.yaml tests/nets/t_mp2_k1_ln.yaml tests/nets/t_c2_pad1x1_loop.yaml tests/nets/t_c2_notap_loop.yaml tests/nets/t_c2_notap.yaml tests/nets/t_c1_notap_nobias.yaml tests/torchnets/t_relu_shared_ln.yaml tests/torchnets/t_avgpool1d_nb.yaml
# emit-check: the generator alone on EMIT_N of the tester's cases (spec, target, forced
# schedules, team) and their inference export, nothing compiled: any internal error or
# rejection fails (72 s for 1,000, a case a core on 2 cores of Zen 3; seed 45240's crash, b07acbe, takes the
# same sweep 2 s to show)
# and EMIT_SYNTAX_N more with --syntax: trainer and inference export through clang's front
# end at -Werror for the target's ISA (x86-64-v4 for avx512, whatever this CPU has; clang
# alone warned in 29b4d74), 54 s for 200 on 2 cores
EMIT_SEED := 1
EMIT_N    := 1000
EMIT_SYNTAX_N := 200
.PHONY: fuzz-diff diff-check emit-check
emit-check: $(B)/cnngen
	@$(PYTHON) tests/random_specs.py emit --graph --team --seed $(EMIT_SEED) --n $(EMIT_N) --build $(B) --work $(B)/emit-check \
	  || { echo "emit-check: FAILED (the cases are kept in $(B)/emit-check)"; exit 1; }
	@$(PYTHON) tests/random_specs.py emit --graph --team --syntax --cc clang --seed $$(($(EMIT_SEED) + $(EMIT_N))) \
	  --n $(EMIT_SYNTAX_N) --build $(B) --work $(B)/emit-check \
	  || { echo "emit-check: FAILED with --syntax (the cases are kept in $(B)/emit-check)"; exit 1; }
fuzz-diff: $(B)/cnngen $(B)/libcnngen.a
	$(PYTHON) tests/random_specs.py run --graph --team --seed $(SEED) --n $(N) --build $(B) --cc $(CC)
diff-check: $(B)/cnngen $(B)/libcnngen.a
	@$(PYTHON) tests/random_specs.py check $(DIFF_NETS) --target avx512 avx2 generic --build $(B) --cc $(CC) \
	  --work $(B)/diff-check/nets || { echo "diff-check: FAILED on a net of DIFF_NETS"; exit 1; }
	@$(PYTHON) tests/random_specs.py run --graph --team --seed $(DIFF_SEED) --n $(DIFF_N) --build $(B) --cc $(CC) --work $(B)/diff-check \
	  || { echo "diff-check: FAILED (see $(B)/diff-check/fail-*.yaml)"; exit 1; }
	@echo "diff-check: $(words $(DIFF_NETS)) nets x 3 targets and $(DIFF_N) random specs (seeds $(DIFF_SEED)..) equal to PyTorch"
