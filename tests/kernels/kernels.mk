# The runtime's SIMD kernels built once per instruction-set variant and checked against
# their scalar references on 1 and 2 threads (tests/kernels/check_kernels.c).
KVARIANTS     := avx512 avx2 scalar
KFLAGS_avx512 := -march=native
KFLAGS_avx2   := -march=native -mno-avx512f
KFLAGS_scalar := -march=native -mno-avx512f -mno-avx2 -mno-fma
KSRC          := tests/kernels/check_kernels.c runtime/sgd.c runtime/util.c runtime/loss.c runtime/lanes.c

$(B)/kernels/check_%: $(KSRC) runtime/*.h
	@mkdir -p $(B)/kernels
	$(CC) -std=c11 -D_POSIX_C_SOURCE=200809L $(WARN) -Werror -O2 $(KFLAGS_$*) -fopenmp -DVARIANT='"$*"' \
	  -Iruntime $(KSRC) $(CHECK_LIBS) -o $@

.PHONY: check-kernels
check-kernels: $(KVARIANTS:%=$(B)/kernels/check_%)
	@for v in $(KVARIANTS); do for t in 1 2; do \
	  OMP_NUM_THREADS=$$t $(B)/kernels/check_$$v > $(B)/kernels/$$v.$$t.log 2>&1 || { cat $(B)/kernels/$$v.$$t.log; exit 1; }; \
	  echo "check-kernels: $$v, $$t thread(s): $$(tail -n 1 $(B)/kernels/$$v.$$t.log)"; done; done
